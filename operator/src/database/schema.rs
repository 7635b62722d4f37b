//! The declared schema, kept in a database's servers through [`Reql`]: databases and tables
//! made when missing (a table dropped out of band is made again), users' passwords set and
//! their grants applied when they changed. Nothing undeclared is ever dropped or changed.
//! Every failure is kept with what it was about, so the status lists them.

use data_encoding::HEXLOWER;
use guildnet_api::database::facts::Reason;
use guildnet_api::database::{AppliedUser, Database, DatabaseUser};
use guildnet_rethinkdb::{ErrorClass, Reql, Term, Unavailable};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::metrics::Metrics;

/// What the servers are asked to hold.
pub struct Declared<'a> {
    /// `spec.databases`.
    pub databases: &'a [Database],
    /// `spec.users`, each with its password as read from its Secret (or why not).
    pub users: Vec<(&'a DatabaseUser, Result<String, String>)>,
}

/// One declared thing that is not in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What it is about, e.g. `table shop.items`.
    pub about: String,
    /// The reason a status gives for it.
    pub reason: Reason,
    /// Why.
    pub message: String,
}

/// What applying found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// What is not in place.
    pub failures: Vec<Failure>,
    /// The declared users as now applied (a user that failed keeps its earlier entry).
    pub users: Vec<AppliedUser>,
}

/// What a reconcile found of the declared schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// No databases or users are declared: no connection is made.
    NothingDeclared,
    /// No server is ready yet.
    NoServerReady,
    /// No connection, or the servers' databases could not be listed.
    Unavailable(Unavailable),
    /// Applied, with what is not in place.
    Applied(Outcome),
}

/// The reason of a failure of `class`.
pub fn reason_of(class: ErrorClass) -> Reason {
    match class {
        ErrorClass::Unreachable => Reason::Unreachable,
        ErrorClass::AuthenticationFailed => Reason::AuthenticationFailed,
        ErrorClass::SchemaMissing => Reason::SchemaMissing,
        ErrorClass::ServerError => Reason::ServerError,
    }
}

/// Makes the servers hold `declared`. `applied` is the status' record of the users, and
/// `key` the admin password, which keys the digests of what was applied.
pub async fn apply(
    reql: &impl Reql,
    declared: &Declared<'_>,
    applied: &[AppliedUser],
    key: &str,
    metrics: &Metrics,
) -> Result<Outcome, guildnet_rethinkdb::Error> {
    let existing: Vec<String> = names(reql.run(Term::db_list()).await, metrics)?;
    let mut outcome = Outcome::default();
    let run = async |operation: &'static str, about: String, term: Term| {
        let result = reql.run(term).await;
        metrics.schema_operation(operation, result.is_ok());
        result.map(|_| ()).map_err(|error| {
            metrics.connection_error(error.class());
            Failure {
                about,
                reason: reason_of(error.class()),
                message: error.to_string(),
            }
        })
    };
    let mut failures = Vec::new();
    for database in declared.databases {
        let name = &database.name;
        if !existing.contains(name)
            && let Err(failure) = run(
                "create_database",
                format!("database {name}"),
                Term::db_create(name),
            )
            .await
        {
            failures.push(failure);
            continue;
        }
        let tables = match names(reql.run(Term::table_list(name)).await, metrics) {
            Ok(tables) => tables,
            Err(error) => {
                failures.push(Failure {
                    about: format!("database {name}"),
                    reason: reason_of(error.class()),
                    message: error.to_string(),
                });
                continue;
            }
        };
        for table in database.tables.iter().filter(|t| !tables.contains(&t.name)) {
            let term = Term::table_create(name, &table.name, table.primary_key());
            let about = format!("table {name}.{}", table.name);
            if let Err(failure) = run("create_table", about, term).await {
                failures.push(failure);
            }
        }
    }
    for (user, password) in &declared.users {
        let earlier = applied.iter().find(|a| a.name == user.name);
        let password = match password {
            Ok(password) => password,
            Err(why) => {
                failures.push(Failure {
                    about: format!("user {}", user.name),
                    reason: Reason::UserSecretMissing,
                    message: why.clone(),
                });
                outcome.users.extend(earlier.cloned());
                continue;
            }
        };
        let digest = digest(key, user, password);
        if earlier.is_some_and(|a| a.digest == digest) {
            outcome.users.extend(earlier.cloned());
            continue;
        }
        let about = || format!("user {}", user.name);
        let mut result = run(
            "set_password",
            about(),
            Term::user_set_password(&user.name, password),
        )
        .await;
        for grant in &user.grants {
            if result.is_err() {
                break;
            }
            let term = Term::grant(
                &grant.database,
                &user.name,
                grant.read,
                grant.write,
                grant.config,
            );
            let about = format!("user {} on {}", user.name, grant.database);
            result = run("grant", about, term).await;
        }
        match result {
            Ok(()) => outcome.users.push(AppliedUser {
                name: user.name.clone(),
                digest,
            }),
            Err(failure) => {
                failures.push(failure);
                outcome.users.extend(earlier.cloned());
            }
        }
    }
    outcome.failures = failures;
    Ok(outcome)
}

/// A list of names from a `dbList` or `tableList`, the failure counted.
fn names(
    result: Result<serde_json::Value, guildnet_rethinkdb::Error>,
    metrics: &Metrics,
) -> Result<Vec<String>, guildnet_rethinkdb::Error> {
    let value = result.inspect_err(|e| metrics.connection_error(e.class()))?;
    serde_json::from_value(value).map_err(|e| {
        metrics.connection_error(ErrorClass::ServerError);
        guildnet_rethinkdb::Error::Protocol(format!("a list of names that is not one: {e}"))
    })
}

/// HMAC-SHA256 keyed with `key` of the user's name, password and grants: equal exactly when
/// the same were applied with the same admin password.
fn digest(key: &str, user: &DatabaseUser, password: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    let applied = serde_json::json!([user.name, password, user.grants]);
    mac.update(applied.to_string().as_bytes());
    HEXLOWER.encode(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    //! A recording [`Reql`] (no server needed) answers `dbList`/`tableList` from a map and
    //! keeps every term sent; the term shapes themselves are checked against the RethinkDB
    //! documentation in `guildnet-rethinkdb`.
    use super::*;
    use guildnet_api::database::Grant;
    use guildnet_rethinkdb::{Error, QueryErrorKind};
    use serde_json::{Value, json};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recording {
        tables: Mutex<BTreeMap<String, Vec<String>>>,
        sent: Mutex<Vec<Value>>,
        /// Terms (by their JSON) that fail as the server would fail them.
        failing: Vec<(Value, QueryErrorKind)>,
    }

    impl Recording {
        fn with(tables: &[(&str, &[&str])]) -> Self {
            let recording = Self::default();
            *recording.tables.lock().unwrap() = tables
                .iter()
                .map(|(db, t)| (db.to_string(), t.iter().map(|s| s.to_string()).collect()))
                .collect();
            recording
        }

        fn sent(&self) -> Vec<Value> {
            self.sent.lock().unwrap().clone()
        }

        /// The terms that change something (not the listings).
        fn writes(&self) -> Vec<Value> {
            self.sent()
                .into_iter()
                .filter(|t| t[0] != json!(59) && t[0] != json!(62))
                .collect()
        }
    }

    impl Reql for Recording {
        async fn run(&self, term: Term) -> Result<Value, Error> {
            let json = term.as_json().clone();
            self.sent.lock().unwrap().push(json.clone());
            if let Some((_, kind)) = self.failing.iter().find(|(t, _)| *t == json) {
                return Err(Error::Query {
                    kind: *kind,
                    message: "refused".into(),
                });
            }
            // Databases and tables as a server keeps them.
            let mut tables = self.tables.lock().unwrap();
            let db = |term: &Value| term[1][0][1][0].as_str().unwrap().to_owned();
            Ok(match json[0].as_u64() {
                Some(59) => json!(tables.keys().collect::<Vec<_>>()),
                Some(62) => json!(tables.get(&db(&json))),
                Some(57) => {
                    tables.insert(json[1][0].as_str().unwrap().into(), vec![]);
                    json!({"dbs_created": 1})
                }
                Some(60) => {
                    let table = json[1][1].as_str().unwrap().to_owned();
                    tables.get_mut(&db(&json)).unwrap().push(table);
                    json!({"tables_created": 1})
                }
                _ => json!({}),
            })
        }
    }

    fn databases(spec: Value) -> Vec<Database> {
        serde_json::from_value(spec).unwrap()
    }

    fn user(name: &str, grants: Vec<Grant>) -> DatabaseUser {
        DatabaseUser {
            name: name.into(),
            grants,
            ..Default::default()
        }
    }

    fn metrics() -> Metrics {
        Metrics::new(kube::runtime::reflector::store().0)
    }

    #[tokio::test]
    async fn missing_databases_and_tables_are_made_and_nothing_else_is_touched() {
        let reql = Recording::with(&[("shop", &["items", "undeclared"]), ("other", &["x"])]);
        let declared = databases(json!([
            {"name": "shop", "tables": [{"name": "items"}, {"name": "orders", "primaryKey": "number"}]},
            {"name": "crm", "tables": [{"name": "people"}]},
        ]));
        let declared = Declared {
            databases: &declared,
            users: vec![],
        };
        let outcome = apply(&reql, &declared, &[], "k", &metrics()).await.unwrap();
        assert_eq!(outcome, Outcome::default());
        assert_eq!(
            reql.writes(),
            [
                Term::table_create("shop", "orders", "number")
                    .as_json()
                    .clone(),
                Term::db_create("crm").as_json().clone(),
                Term::table_create("crm", "people", "id").as_json().clone(),
            ],
            "no drop, and nothing for the undeclared database or table"
        );
        // Once in place, checking again changes nothing.
        let before = reql.writes().len();
        apply(&reql, &declared, &[], "k", &metrics()).await.unwrap();
        assert_eq!(reql.writes().len(), before);
    }

    #[tokio::test]
    async fn a_user_is_set_and_granted_once_then_again_only_when_its_password_or_grants_change() {
        let reql = Recording::with(&[("shop", &[])]);
        let grant = Grant {
            database: "shop".into(),
            read: true,
            write: true,
            config: false,
        };
        let alice = user("alice", vec![grant.clone()]);
        let declared = Declared {
            databases: &[],
            users: vec![(&alice, Ok("pw-1".into()))],
        };
        let metrics = metrics();
        let first = apply(&reql, &declared, &[], "admin-pw", &metrics)
            .await
            .unwrap();
        assert_eq!(
            reql.writes(),
            [
                Term::user_set_password("alice", "pw-1").as_json().clone(),
                Term::grant("shop", "alice", true, true, false)
                    .as_json()
                    .clone(),
            ]
        );
        assert_eq!(first.users.len(), 1);
        assert!(
            !first.users[0].digest.contains("pw-1"),
            "the digest does not carry the password"
        );

        // Applied as recorded: nothing is sent again.
        let again = apply(&reql, &declared, &first.users, "admin-pw", &metrics)
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(reql.writes().len(), 2);

        // A new password (the Secret changed) is set again, with the grants.
        let changed = Declared {
            databases: &[],
            users: vec![(&alice, Ok("pw-2".into()))],
        };
        let after = apply(&reql, &changed, &first.users, "admin-pw", &metrics)
            .await
            .unwrap();
        assert_ne!(after.users[0].digest, first.users[0].digest);
        assert_eq!(
            reql.writes()[2],
            Term::user_set_password("alice", "pw-2").as_json().clone()
        );
        assert_eq!(reql.writes().len(), 4);

        // So is a changed grant.
        let narrower = user(
            "alice",
            vec![Grant {
                write: false,
                ..grant
            }],
        );
        let regranted = Declared {
            databases: &[],
            users: vec![(&narrower, Ok("pw-2".into()))],
        };
        apply(&reql, &regranted, &after.users, "admin-pw", &metrics)
            .await
            .unwrap();
        assert_eq!(
            reql.writes().last().unwrap(),
            Term::grant("shop", "alice", true, false, false).as_json()
        );
    }

    #[tokio::test]
    async fn every_failure_is_listed_with_what_it_was_about_and_the_rest_still_applied() {
        let mut reql = Recording::with(&[]);
        reql.failing = vec![
            (
                Term::db_create("shop").as_json().clone(),
                QueryErrorKind::Runtime,
            ),
            (
                Term::user_set_password("bob", "pw").as_json().clone(),
                QueryErrorKind::NonExistence,
            ),
        ];
        let declared_databases = databases(json!([{"name": "shop"}, {"name": "crm"}]));
        let alice = user("alice", vec![]);
        let bob = user("bob", vec![]);
        let earlier = AppliedUser {
            name: "bob".into(),
            digest: "earlier".into(),
        };
        let declared = Declared {
            databases: &declared_databases,
            users: vec![
                (&alice, Err("Secret team-a/alice-pw not found".into())),
                (&bob, Ok("pw".into())),
            ],
        };
        let outcome = apply(
            &reql,
            &declared,
            std::slice::from_ref(&earlier),
            "k",
            &metrics(),
        )
        .await
        .unwrap();
        let failed: Vec<(&str, Reason)> = outcome
            .failures
            .iter()
            .map(|f| (f.about.as_str(), f.reason))
            .collect();
        assert_eq!(
            failed,
            [
                ("database shop", Reason::ServerError),
                ("user alice", Reason::UserSecretMissing),
                ("user bob", Reason::SchemaMissing),
            ]
        );
        assert!(reql.sent().contains(Term::db_create("crm").as_json()));
        // A user that failed keeps what was applied before, so it is tried again.
        assert_eq!(outcome.users, [earlier]);
    }

    #[tokio::test]
    async fn a_server_that_cannot_list_its_databases_fails_the_whole_schema() {
        let mut reql = Recording::with(&[]);
        reql.failing = vec![(
            Term::db_list().as_json().clone(),
            QueryErrorKind::Permission,
        )];
        let declared = Declared {
            databases: &[],
            users: vec![],
        };
        let error = apply(&reql, &declared, &[], "k", &metrics())
            .await
            .unwrap_err();
        assert_eq!(error.class(), ErrorClass::ServerError);
    }
}
