//! One connection per GuildDatabase, made when its schema is first applied and kept while
//! it works; after a failed attempt the next waits longer (1 s doubling to a minute). A
//! connection is dropped when its database is gone or its admin password changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guildnet_api::GuildDatabase;
use guildnet_rethinkdb::{Connection, ErrorClass, Options};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;

use super::schema::Unavailable;
use crate::metrics::Metrics;

/// How long connecting (TCP and handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a server may take to answer one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The connection of each GuildDatabase whose schema is applied.
#[derive(Default)]
pub struct Connections {
    slots: Mutex<HashMap<ObjectRef<GuildDatabase>, Slot>>,
}

struct Slot {
    /// The database it is for (a database made again under the same name is another).
    uid: String,
    password: String,
    connection: Option<Arc<Connection>>,
    failures: u32,
    /// After a failure: when to try again, and what failed.
    backoff: Option<(Instant, Unavailable)>,
}

/// How long to wait after `failures` failed attempts in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

impl Connections {
    /// The working connection of `db` (`uid`) as `admin` with `password`, or a new one to
    /// the first of `servers` that takes it; while backing off, the last failure.
    pub async fn get(
        &self,
        db: &ObjectRef<GuildDatabase>,
        uid: &str,
        password: &str,
        servers: &[SocketAddr],
        metrics: &Metrics,
    ) -> Result<Arc<Connection>, Unavailable> {
        let failures = {
            let mut slots = self.slots.lock().unwrap();
            match slots.get(db) {
                Some(slot) if slot.uid == uid && slot.password == password => {
                    if let Some(connection) = slot.connection.as_ref().filter(|c| !c.is_broken()) {
                        return Ok(connection.clone());
                    }
                    if let Some((at, failure)) = &slot.backoff
                        && Instant::now() < *at
                    {
                        return Err(Unavailable {
                            retry_in: Some(*at - Instant::now()),
                            ..failure.clone()
                        });
                    }
                    slot.failures
                }
                _ => {
                    slots.remove(db);
                    0
                }
            }
        };
        let mut failure = Unavailable {
            class: ErrorClass::Unreachable,
            message: "no ready server has an address yet".into(),
            retry_in: None,
        };
        for server in servers {
            let options = Options {
                addr: server.to_string(),
                user: "admin".into(),
                password: password.into(),
                connect_timeout: CONNECT_TIMEOUT,
                query_timeout: QUERY_TIMEOUT,
            };
            match Connection::open(&options).await {
                Ok(connection) => {
                    let connection = Arc::new(connection);
                    self.slots.lock().unwrap().insert(
                        db.clone(),
                        Slot {
                            uid: uid.into(),
                            password: password.into(),
                            connection: Some(connection.clone()),
                            failures: 0,
                            backoff: None,
                        },
                    );
                    return Ok(connection);
                }
                Err(error) => {
                    metrics.connection_error(error.class());
                    failure = Unavailable::from(&error);
                    // A refused password is refused by every server: no use trying more.
                    if error.class() == ErrorClass::AuthenticationFailed {
                        break;
                    }
                }
            }
        }
        let failures = failures + 1;
        let wait = backoff(failures);
        self.slots.lock().unwrap().insert(
            db.clone(),
            Slot {
                uid: uid.into(),
                password: password.into(),
                connection: None,
                failures,
                backoff: Some((Instant::now() + wait, failure.clone())),
            },
        );
        Err(Unavailable {
            retry_in: Some(wait),
            ..failure
        })
    }

    /// Closes the connection of `db`: it stopped answering, or nothing is declared any more.
    /// The next [`get`](Self::get) connects at once.
    pub fn close(&self, db: &ObjectRef<GuildDatabase>) {
        let mut slots = self.slots.lock().unwrap();
        if let Some(slot) = slots.get_mut(db) {
            slot.connection = None;
            slot.backoff = None;
        }
    }

    /// Closes the connections of databases `databases` no longer has (deleted, or made
    /// again under the same name).
    pub fn keep_only(&self, databases: &Store<GuildDatabase>) {
        self.slots.lock().unwrap().retain(|db, slot| {
            databases
                .get(db)
                .is_some_and(|d| d.metadata.uid.as_deref() == Some(slot.uid.as_str()))
        });
    }

    /// How many databases have a slot (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn metrics() -> Metrics {
        Metrics::new(reflector::store().0)
    }

    #[test]
    fn attempts_back_off_from_a_second_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_attempt_is_not_repeated_until_its_backoff_ends() {
        // Nothing listens on this loopback address: refused at once.
        let nobody: SocketAddr = "127.0.29.1:9".parse().unwrap();
        let connections = Connections::default();
        let db = ObjectRef::new("app").within("team-a");
        let metrics = metrics();
        let first = connections
            .get(&db, "u-1", "pw", &[nobody], &metrics)
            .await
            .unwrap_err();
        assert_eq!(first.class, ErrorClass::Unreachable);
        assert_eq!(first.retry_in, Some(Duration::from_secs(1)));
        // Within the backoff: the same failure, no new attempt.
        let again = connections
            .get(&db, "u-1", "pw", &[nobody], &metrics)
            .await
            .unwrap_err();
        assert_eq!(again.message, first.message);
        assert!(again.retry_in.unwrap() <= Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        let third = connections
            .get(&db, "u-1", "pw", &[nobody], &metrics)
            .await
            .unwrap_err();
        assert_eq!(third.retry_in, Some(Duration::from_secs(2)));
        // A new admin password is tried at once.
        let fresh = connections
            .get(&db, "u-1", "new", &[nobody], &metrics)
            .await
            .unwrap_err();
        assert_eq!(fresh.retry_in, Some(Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn a_database_that_is_gone_has_its_slot_dropped() {
        let nobody: SocketAddr = "127.0.29.1:9".parse().unwrap();
        let connections = Connections::default();
        let metrics = metrics();
        for name in ["kept", "deleted"] {
            let db = ObjectRef::new(name).within("team-a");
            let _ = connections
                .get(&db, &format!("uid-{name}"), "pw", &[nobody], &metrics)
                .await;
        }
        let (store, mut writer) = reflector::store::<GuildDatabase>();
        let mut kept = GuildDatabase::new("kept", Default::default());
        kept.metadata.namespace = Some("team-a".into());
        kept.metadata.uid = Some("uid-kept".into());
        writer.apply_watcher_event(&Event::Apply(kept));
        connections.keep_only(&store);
        assert_eq!(connections.len(), 1);
    }
}
