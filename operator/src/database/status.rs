//! A GuildDatabase's status, from its StatefulSet as the watch cache shows it and what was
//! found of its declared schema: phase, ready servers, where clients connect, the users as
//! applied, and conditions `Ready`, `Progressing`, `Failed` and `SchemaApplied`. Pure, so it
//! is tested without a cluster.

use guildnet_api::GuildDatabase;
use guildnet_api::database::GuildDatabaseStatus;
use guildnet_api::database::facts::{ConditionType, Reason, endpoint};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::schema::{Checked, reason_of};
use crate::reconcile::conditions::{Observed, merge};

/// The longest `SchemaApplied` message: a long list of failures is cut there.
const MAX_SCHEMA_MESSAGE: usize = 2048;

/// The phases of a GuildDatabase.
pub const PENDING: &str = "Pending";
/// Every server ready.
pub const RUNNING: &str = "Running";
/// The spec cannot be run as given.
pub const FAILED: &str = "Failed";

/// The status `db` should have, its StatefulSet being `servers` (none yet: `None`),
/// `failure` what keeps it from being made (a name conflict) and `schema` what was found of
/// its declared schema, at `now`.
pub fn compute(
    db: &GuildDatabase,
    servers: Option<&StatefulSet>,
    failure: Option<&str>,
    schema: &Checked,
    now: Timestamp,
) -> GuildDatabaseStatus {
    let previous = db.status.clone().unwrap_or_default();
    let wanted = db.replicas();
    let observed = servers.and_then(|s| s.status.as_ref());
    let ready = observed.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = observed.and_then(|s| s.updated_replicas).unwrap_or(0);
    // The StatefulSet controller has seen its latest spec (else its counts are of the old).
    let current = servers
        .is_some_and(|s| observed.and_then(|o| o.observed_generation) >= s.metadata.generation);
    let all_ready = current && ready == wanted && updated == wanted;
    let ready_condition = if all_ready {
        Observed::new(
            ConditionType::Ready,
            true,
            Reason::ServersReady,
            format!("{ready} of {wanted} servers ready"),
        )
    } else {
        Observed::new(
            ConditionType::Ready,
            false,
            Reason::ServersNotReady,
            format!("{ready} of {wanted} servers ready"),
        )
    };
    let progressing = if all_ready {
        Observed::new(
            ConditionType::Progressing,
            false,
            Reason::RolledOut,
            "every server runs the current spec",
        )
    } else {
        Observed::new(
            ConditionType::Progressing,
            failure.is_none(),
            Reason::RollingOut,
            format!("{updated} of {wanted} servers run the current spec"),
        )
    };
    let failed = match failure {
        Some(why) => Observed::new(ConditionType::Failed, true, Reason::NameConflict, why),
        None => Observed::new(ConditionType::Failed, false, Reason::NoFailure, ""),
    };
    let phase = match (failure, all_ready) {
        (Some(_), _) => FAILED,
        (None, true) => RUNNING,
        (None, false) => PENDING,
    };
    let generation = db.metadata.generation;
    GuildDatabaseStatus {
        phase: Some(phase.to_owned()),
        ready_replicas: Some(ready),
        endpoint: Some(endpoint(
            &db.namespace().unwrap_or_default(),
            &db.name_any(),
        )),
        conditions: merge(
            &previous.conditions,
            vec![
                ready_condition,
                progressing,
                failed,
                schema_condition(db, schema),
            ],
            generation,
            now,
        ),
        observed_generation: generation,
        users: match schema {
            Checked::Applied(outcome) => outcome.users.clone(),
            _ => previous.users,
        },
    }
}

/// `SchemaApplied`: whether every declared database, table and user is in the servers,
/// and if not, each thing that is not and why.
fn schema_condition(db: &GuildDatabase, schema: &Checked) -> Observed {
    let condition = |applied, reason, message: String| {
        Observed::new(ConditionType::SchemaApplied, applied, reason, message)
    };
    match schema {
        Checked::NothingDeclared => condition(
            true,
            Reason::NothingDeclared,
            "no databases or users are declared".into(),
        ),
        Checked::NoServerReady => condition(
            false,
            Reason::NoServerReady,
            "waiting for a ready server to apply the declared schema to".into(),
        ),
        Checked::Unavailable(why) => condition(
            false,
            reason_of(why.class),
            format!("cannot apply the declared schema: {}", why.message),
        ),
        Checked::Applied(outcome) => match outcome.failures.first() {
            None => condition(true, Reason::AsDeclared, declared_summary(db)),
            Some(first) => {
                let mut message = outcome
                    .failures
                    .iter()
                    .map(|f| format!("{}: {}", f.about, f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                if message.len() > MAX_SCHEMA_MESSAGE {
                    let cut = (0..=MAX_SCHEMA_MESSAGE)
                        .rev()
                        .find(|&i| message.is_char_boundary(i))
                        .unwrap_or(0);
                    message.truncate(cut);
                    message.push_str(" …");
                }
                condition(false, first.reason, message)
            }
        },
    }
}

/// "databases shop, crm (3 tables) and users alice are as declared".
fn declared_summary(db: &GuildDatabase) -> String {
    let mut parts = Vec::new();
    if !db.spec.databases.is_empty() {
        let names: Vec<&str> = db.spec.databases.iter().map(|d| d.name.as_str()).collect();
        let tables: usize = db.spec.databases.iter().map(|d| d.tables.len()).sum();
        parts.push(format!("databases {} ({tables} tables)", names.join(", ")));
    }
    if !db.spec.users.is_empty() {
        let names: Vec<&str> = db.spec.users.iter().map(|u| u.name.as_str()).collect();
        parts.push(format!("users {}", names.join(", ")));
    }
    format!("{} are as declared", parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use guildnet_api::common::find_condition;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    fn database(replicas: i32, databases: serde_json::Value) -> GuildDatabase {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
            "metadata": {"name": "inventory", "namespace": "team-a", "uid": "u-1", "generation": 2},
            "spec": {"replicas": replicas, "storage": {"size": "5Gi"}, "databases": databases},
        }))
        .unwrap()
    }

    fn servers(generation: i64, observed: i64, ready: i32, updated: i32) -> StatefulSet {
        StatefulSet {
            metadata: kube::api::ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                replicas: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn condition(status: &GuildDatabaseStatus, type_: ConditionType) -> (&str, &str) {
        let c = find_condition(&status.conditions, type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn running_once_every_server_of_the_current_spec_is_ready() {
        let db = database(3, serde_json::json!([]));
        let now = Timestamp::UNIX_EPOCH;
        let cases = [
            (None, PENDING, "False"),
            (Some(servers(1, 1, 1, 3)), PENDING, "False"),
            // Counts of an older spec do not count.
            (Some(servers(2, 1, 3, 3)), PENDING, "False"),
            (Some(servers(2, 2, 3, 2)), PENDING, "False"),
            (Some(servers(2, 2, 3, 3)), RUNNING, "True"),
        ];
        for (sts, phase, ready) in cases {
            let status = compute(&db, sts.as_ref(), None, &Checked::NothingDeclared, now);
            assert_eq!(status.phase.as_deref(), Some(phase), "{sts:?}");
            assert_eq!(condition(&status, ConditionType::Ready).0, ready, "{sts:?}");
            let progressing = if ready == "True" { "False" } else { "True" };
            assert_eq!(
                condition(&status, ConditionType::Progressing).0,
                progressing
            );
        }
        let status = compute(
            &db,
            Some(&servers(2, 2, 3, 3)),
            None,
            &Checked::NothingDeclared,
            now,
        );
        assert_eq!(
            status.endpoint.as_deref(),
            Some("inventory.team-a.svc:28015")
        );
        assert_eq!(status.ready_replicas, Some(3));
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn a_name_conflict_fails_it_saying_which() {
        let db = database(1, serde_json::json!([]));
        let status = compute(
            &db,
            None,
            Some("Service team-a/inventory is someone else's"),
            &Checked::NothingDeclared,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(status.phase.as_deref(), Some(FAILED));
        assert_eq!(
            condition(&status, ConditionType::Failed),
            ("True", "NameConflict")
        );
        assert_eq!(condition(&status, ConditionType::Progressing).0, "False");
    }

    #[test]
    fn schema_applied_says_what_is_missing_and_why_or_that_all_is_as_declared() {
        use super::super::schema::{Failure, Outcome};
        use guildnet_rethinkdb::ErrorClass;
        use guildnet_rethinkdb::Unavailable;
        let db = database(
            1,
            serde_json::json!([{"name": "shop", "tables": [{"name": "items"}, {"name": "orders"}]}]),
        );
        let at = |schema: &Checked| {
            let status = compute(&db, None, None, schema, Timestamp::UNIX_EPOCH);
            let c = find_condition(&status.conditions, ConditionType::SchemaApplied).unwrap();
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        assert_eq!(
            at(&Checked::Applied(Outcome::default())),
            (
                "True".into(),
                "AsDeclared".into(),
                "databases shop (2 tables) are as declared".into()
            )
        );
        assert_eq!(at(&Checked::NoServerReady).1, "NoServerReady");
        let refused = at(&Checked::Unavailable(Unavailable {
            class: ErrorClass::AuthenticationFailed,
            message: "authentication failed: Wrong password".into(),
            retry_in: None,
        }));
        assert_eq!(
            (refused.0.as_str(), refused.1.as_str()),
            ("False", "AuthenticationFailed")
        );
        assert!(refused.2.contains("Wrong password"), "{}", refused.2);
        let failures = Outcome {
            failures: vec![
                Failure {
                    about: "table shop.items".into(),
                    reason: Reason::ServerError,
                    message: "server error: disk full".into(),
                },
                Failure {
                    about: "user alice".into(),
                    reason: Reason::UserSecretMissing,
                    message: "Secret team-a/alice-pw not found".into(),
                },
            ],
            users: vec![],
        };
        assert_eq!(
            at(&Checked::Applied(failures)),
            (
                "False".into(),
                "ServerError".into(),
                "table shop.items: server error: disk full; user alice: Secret team-a/alice-pw not found".into()
            )
        );
        let none = compute(
            &database(1, serde_json::json!([])),
            None,
            None,
            &Checked::NothingDeclared,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            condition(&none, ConditionType::SchemaApplied),
            ("True", "NothingDeclared")
        );
    }
}
