//! One connection per database server group, made when first needed and kept while it
//! works; after a failed attempt the next waits longer (1 s doubling to a minute). A
//! connection is dropped when its key is gone, or made again under the same name (another
//! `uid`), or its password changes. The operator and the proxy each keep one pool.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Connection, Error, ErrorClass, Options};

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why no connection could be had: what failed, and when it will be tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// The class of the failure.
    pub class: ErrorClass,
    /// What failed.
    pub message: String,
    /// When a new connection will be tried (backing off), if not at once.
    pub retry_in: Option<Duration>,
}

impl From<&Error> for Unavailable {
    fn from(error: &Error) -> Self {
        Self {
            class: error.class(),
            message: error.to_string(),
            retry_in: None,
        }
    }
}

/// How to reach the servers of one key.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The object the connection is for (one made again under the same name is another).
    pub uid: &'a str,
    /// The user to connect as, e.g. `admin`.
    pub user: &'a str,
    /// Its password.
    pub password: &'a str,
    /// The servers' driver addresses, tried in order.
    pub servers: &'a [SocketAddr],
}

/// The connections of each key, with their backoff.
pub struct Pool<K> {
    slots: Mutex<HashMap<K, Slot>>,
    connect_timeout: Duration,
    query_timeout: Duration,
}

struct Slot {
    uid: String,
    user: String,
    password: String,
    connection: Option<Arc<Connection>>,
    failures: u32,
    /// After a failure: when to try again, and what failed.
    backoff: Option<(Instant, Unavailable)>,
}

impl Slot {
    fn is_for(&self, target: &Target<'_>) -> bool {
        self.uid == target.uid && self.user == target.user && self.password == target.password
    }
}

/// How long to wait after `failures` failed attempts in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

impl<K: Eq + Hash + Clone> Pool<K> {
    /// An empty pool whose connections connect within `connect_timeout` and wait at most
    /// `query_timeout` for each answer.
    pub fn new(connect_timeout: Duration, query_timeout: Duration) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            connect_timeout,
            query_timeout,
        }
    }

    /// The working connection of `key` to `target`, or a new one to the first of its
    /// servers that takes it; while backing off, the last failure. Each failed connection
    /// attempt is told to `failed` (for metrics).
    pub async fn get(
        &self,
        key: &K,
        target: Target<'_>,
        failed: impl Fn(ErrorClass),
    ) -> Result<Arc<Connection>, Unavailable> {
        let failures = {
            let mut slots = self.slots.lock().unwrap();
            match slots.get(key) {
                Some(slot) if slot.is_for(&target) => {
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
                    slots.remove(key);
                    0
                }
            }
        };
        let mut failure = Unavailable {
            class: ErrorClass::Unreachable,
            message: "no ready server has an address yet".into(),
            retry_in: None,
        };
        let slot = |connection: Option<Arc<Connection>>, failures, backoff| Slot {
            uid: target.uid.into(),
            user: target.user.into(),
            password: target.password.into(),
            connection,
            failures,
            backoff,
        };
        for server in target.servers {
            let options = Options {
                addr: server.to_string(),
                user: target.user.into(),
                password: target.password.into(),
                connect_timeout: self.connect_timeout,
                query_timeout: self.query_timeout,
            };
            match Connection::open(&options).await {
                Ok(connection) => {
                    let connection = Arc::new(connection);
                    self.slots
                        .lock()
                        .unwrap()
                        .insert(key.clone(), slot(Some(connection.clone()), 0, None));
                    return Ok(connection);
                }
                Err(error) => {
                    failed(error.class());
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
            key.clone(),
            slot(
                None,
                failures,
                Some((Instant::now() + wait, failure.clone())),
            ),
        );
        Err(Unavailable {
            retry_in: Some(wait),
            ..failure
        })
    }

    /// Closes the connection of `key`: it stopped answering, or is not needed any more.
    /// The next [`get`](Self::get) connects at once.
    pub fn close(&self, key: &K) {
        let mut slots = self.slots.lock().unwrap();
        if let Some(slot) = slots.get_mut(key) {
            slot.connection = None;
            slot.backoff = None;
        }
    }

    /// Keeps the connections of the keys (with the uid they were made for) `keep` says
    /// yes to, and closes the others.
    pub fn retain(&self, keep: impl Fn(&K, &str) -> bool) {
        self.slots
            .lock()
            .unwrap()
            .retain(|key, slot| keep(key, &slot.uid));
    }

    /// How many keys have a connection or a backoff.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }

    /// Whether no key has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool<&'static str> {
        Pool::new(Duration::from_secs(5), Duration::from_secs(10))
    }

    fn target<'a>(uid: &'a str, password: &'a str, servers: &'a [SocketAddr]) -> Target<'a> {
        Target {
            uid,
            user: "admin",
            password,
            servers,
        }
    }

    #[test]
    fn attempts_back_off_from_a_second_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_attempt_is_not_repeated_until_its_backoff_ends() {
        // Nothing listens on this loopback address: refused at once.
        let nobody: [SocketAddr; 1] = ["127.0.29.1:9".parse().unwrap()];
        let pool = pool();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let count = |_| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let first = pool
            .get(&"app", target("u-1", "pw", &nobody), count)
            .await
            .unwrap_err();
        assert_eq!(first.class, ErrorClass::Unreachable);
        assert_eq!(first.retry_in, Some(Duration::from_secs(1)));
        // Within the backoff: the same failure, no new attempt.
        let again = pool
            .get(&"app", target("u-1", "pw", &nobody), count)
            .await
            .unwrap_err();
        assert_eq!(again.message, first.message);
        assert!(again.retry_in.unwrap() <= Duration::from_secs(1));
        assert_eq!(attempts.load(std::sync::atomic::Ordering::Relaxed), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        let third = pool
            .get(&"app", target("u-1", "pw", &nobody), count)
            .await
            .unwrap_err();
        assert_eq!(third.retry_in, Some(Duration::from_secs(2)));
        // A new password (or a new object under the same name) is tried at once.
        for (uid, password) in [("u-1", "new"), ("u-2", "new")] {
            let fresh = pool
                .get(&"app", target(uid, password, &nobody), count)
                .await
                .unwrap_err();
            assert_eq!(fresh.retry_in, Some(Duration::from_secs(1)));
        }
        assert_eq!(attempts.load(std::sync::atomic::Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn keys_that_are_gone_have_their_slots_dropped() {
        let nobody: [SocketAddr; 1] = ["127.0.29.1:9".parse().unwrap()];
        let pool = pool();
        for (key, uid) in [("kept", "uid-kept"), ("deleted", "uid-deleted")] {
            let _ = pool.get(&key, target(uid, "pw", &nobody), |_| ()).await;
        }
        pool.retain(|key, uid| *key == "kept" && uid == "uid-kept");
        assert_eq!(pool.len(), 1);
    }
}
