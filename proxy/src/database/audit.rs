//! The audit log of the database API: every write is a structured log line
//! (`guildnet_proxy::database::audit`) and a row of the `guildnet.guildnet_audit` table of
//! the database's own servers — who, what, where, when and what came of it — so the log
//! lives with the data and is read back at `GET /api/databases/{namespace}/{name}/audit`.

use jiff::Timestamp;
use jiff::fmt::temporal::DateTimePrinter;
use serde::Serialize;
use serde_json::Value;

use guildnet_api::database::facts::{AUDIT_DATABASE, AUDIT_TABLE};
use guildnet_rethinkdb::{ErrorClass, Reql, Term};

/// One write, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    /// When it was answered (RFC 3339, UTC, always to the nanosecond, so the newest sort
    /// last as text too).
    pub at: String,
    /// Who asked: the user name as authenticated.
    pub user: String,
    /// What: `database.create`, `database.drop`, `table.create`, `table.drop`,
    /// `rows.insert`, `rows.import`, `row.replace`, `row.update`, `row.delete`.
    pub action: &'static str,
    /// The database written to.
    pub database: String,
    /// The table, for a table or row write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The row's key, for a write of one row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    /// What the server answered: rows changed, or the error.
    pub outcome: Value,
}

impl Entry {
    /// A write by `user` now.
    pub fn now(user: &str, action: &'static str, database: &str) -> Self {
        Self {
            at: DateTimePrinter::new()
                .precision(Some(9))
                .timestamp_to_string(&Timestamp::now()),
            user: user.to_owned(),
            action,
            database: database.to_owned(),
            table: None,
            key: None,
            outcome: Value::Null,
        }
    }
}

/// Records `entry` for the GuildDatabase `namespace/name`: a log line always, then a row in
/// the audit table, made (with its database) when missing. A failure to write the row is
/// logged; the write it records has happened either way.
pub async fn record(db: &impl Reql, namespace: &str, name: &str, entry: &Entry) {
    let key = entry.key.as_ref().map(|key| key.to_string());
    tracing::info!(
        target: "guildnet_proxy::database::audit",
        namespace,
        name,
        user = entry.user,
        action = entry.action,
        database = entry.database,
        table = entry.table,
        key,
        outcome = %entry.outcome,
        "database write"
    );
    let mut inserted = db
        .run(Term::insert(AUDIT_DATABASE, AUDIT_TABLE, entry))
        .await;
    if inserted
        .as_ref()
        .is_err_and(|e| e.class() == ErrorClass::SchemaMissing)
    {
        // Either may exist already (another replica made it meanwhile): that is fine.
        let _ = db.run(Term::db_create(AUDIT_DATABASE)).await;
        let _ = db
            .run(Term::table_create(AUDIT_DATABASE, AUDIT_TABLE, "id"))
            .await;
        inserted = db
            .run(Term::insert(AUDIT_DATABASE, AUDIT_TABLE, entry))
            .await;
    }
    if let Err(error) = inserted {
        tracing::warn!(namespace, name, %error, "could not write the audit row");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the terms sent; answers `missing` with "does not exist" once (a recording,
    /// not a server: what is tested is the order of the terms).
    struct Recording {
        sent: Mutex<Vec<Term>>,
        missing: Mutex<bool>,
    }

    impl Reql for Recording {
        async fn run(&self, term: Term) -> Result<Value, guildnet_rethinkdb::Error> {
            self.sent.lock().unwrap().push(term);
            if std::mem::take(&mut *self.missing.lock().unwrap()) {
                return Err(guildnet_rethinkdb::Error::Query {
                    kind: guildnet_rethinkdb::QueryErrorKind::NonExistence,
                    message: "Database `guildnet` does not exist.".into(),
                });
            }
            Ok(serde_json::json!({"inserted": 1}))
        }
    }

    #[tokio::test]
    async fn the_audit_table_is_made_when_missing_and_the_row_written_again() {
        let db = Recording {
            sent: Mutex::default(),
            missing: Mutex::new(true),
        };
        let mut entry = Entry::now("alice", "row.delete", "shop");
        entry.table = Some("items".into());
        entry.key = Some("a-7".into());
        record(&db, "team", "inventory", &entry).await;
        let sent = db.sent.into_inner().unwrap();
        let insert = Term::insert(AUDIT_DATABASE, AUDIT_TABLE, &entry);
        assert_eq!(
            sent,
            [
                insert.clone(),
                Term::db_create(AUDIT_DATABASE),
                Term::table_create(AUDIT_DATABASE, AUDIT_TABLE, "id"),
                insert,
            ]
        );
        let row = serde_json::to_value(&entry).unwrap();
        assert_eq!(row["user"], "alice");
        assert_eq!(row["key"], "a-7");
        // Fixed width: text order is time order.
        let at = row["at"].as_str().unwrap();
        assert_eq!(at.len(), "2026-12-04T19:45:12.123456789Z".len(), "{at}");
    }
}
