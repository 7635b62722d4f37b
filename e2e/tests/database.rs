//! GuildDatabase on a real API server: the operator (as its ServiceAccount, with the
//! chart's RBAC) runs it as a StatefulSet of RethinkDB servers that PSA `restricted`
//! admits, with its Services, disruption budget and admin Secret; its status follows the
//! servers; drift is repaired; its data outlives it. The pods are KWOK's; reqlite
//! (`e2e/reqlite`) serves ReQL at a pod's IP in the pods' network namespace, so the
//! declared schema is applied over the wire: databases and tables made, a table dropped
//! out of band made again, an undeclared one left alone, and each failure in its class.
//! reqlite has no users or grants (docs/databases.md): users stop at `SchemaMissing` here,
//! and their ReQL terms are checked by unit tests.

use std::time::Duration;

use guildnet_api::GuildDatabase;
use guildnet_api::common::find_condition;
use guildnet_api::database::facts::ConditionType;
use guildnet_e2e::cluster::{Cluster, Operator};
use guildnet_e2e::reqlite::Reqlite;
use guildnet_e2e::workspaces::wait_for;
use guildnet_e2e::{User, create_namespace, eventually};
use guildnet_rethinkdb::{Connection, Options, Reql, Term};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Long enough for a schema check (every 30 s) after the longest connection backoff (60 s).
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(120);
const NAMESPACE: &str = "team-db";

fn condition(db: &GuildDatabase, type_: ConditionType) -> Option<(String, String)> {
    let c = find_condition(&db.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

fn phase(db: &GuildDatabase) -> Option<&str> {
    db.status.as_ref()?.phase.as_deref()
}

fn schema_reason(db: &GuildDatabase) -> Option<String> {
    condition(db, ConditionType::SchemaApplied).map(|(_, reason)| reason)
}

fn schema_message(db: &GuildDatabase) -> String {
    find_condition(
        &db.status.as_ref().unwrap().conditions,
        ConditionType::SchemaApplied,
    )
    .unwrap()
    .message
    .clone()
}

/// Waits for an Event about `inventory` with `reason`, of `type_`.
async fn event_of(events: &Api<k8s_openapi::api::events::v1::Event>, reason: &str, type_: &str) {
    eventually(&format!("a {type_} Event {reason}"), TIMEOUT, || async {
        let listed = events.list(&ListParams::default()).await.ok()?;
        listed
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some(type_)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("inventory")
            })
            .then_some(())
    })
    .await;
}

/// The names a `dbList` or `tableList` answers.
async fn names(db: &Connection, term: Term) -> Vec<String> {
    let mut names: Vec<String> = serde_json::from_value(db.run(term).await.unwrap()).unwrap();
    names.sort();
    names
}

/// Connections established to `addr` in the pods' network namespace (the operator's, as
/// reqlite there sees them).
fn established_to(addr: std::net::SocketAddr) -> usize {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            "guildnet-pods",
            "ss",
            "-Htn",
            "state",
            "established",
        ])
        .arg(format!(
            "( src {} and sport = :{} )",
            addr.ip(),
            addr.port()
        ))
        .output()
        .expect("run ss in the pods' namespace");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test]
async fn a_guild_database_runs_as_restricted_rethinkdb_servers_and_keeps_its_data() {
    let hub = Cluster::start("database");
    let admin = hub.client(User::Admin).await;
    let operator = Operator::start_as_service_account(&hub, "op", &["--leader-elect=false"]);
    create_namespace(
        &admin,
        NAMESPACE,
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let databases: Api<GuildDatabase> = Api::namespaced(admin.clone(), NAMESPACE);
    let db: GuildDatabase = serde_json::from_value(serde_json::json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
        "metadata": {"name": "inventory"},
        "spec": {
            "replicas": 3,
            "storage": {"size": "1Gi"},
            "databases": [{"name": "shop", "tables": [{"name": "items"}]}],
        },
    }))
    .unwrap();
    databases.create(&PostParams::default(), &db).await.unwrap();

    // Three servers, admitted under PSA restricted, all ready: Running, with where to
    // connect, and saying the declared schema is not applied.
    let db = wait_for(&databases, "inventory", "Running with 3 ready", |db| {
        phase(db) == Some("Running") && db.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)
    })
    .await;
    let status = db.status.as_ref().unwrap();
    assert_eq!(
        status.endpoint.as_deref(),
        Some("inventory.team-db.svc:28015")
    );
    assert_eq!(status.observed_generation, db.metadata.generation);
    assert_eq!(
        condition(&db, ConditionType::Ready),
        Some(("True".into(), "ServersReady".into()))
    );
    // Nothing serves ReQL at the pods' IPs yet: the schema is not applied, and the status
    // says the servers cannot be reached.
    let db = wait_for(&databases, "inventory", "SchemaApplied Unreachable", |db| {
        schema_reason(db).as_deref() == Some("Unreachable")
    })
    .await;
    let message = &schema_message(&db);
    assert!(message.contains(":28015"), "names the address: {message}");
    // And an Event says so.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(admin.clone(), NAMESPACE);
    event_of(&events, "Running", "Normal").await;
    let stateful_sets: Api<StatefulSet> = Api::namespaced(admin.clone(), NAMESPACE);
    let servers = stateful_sets.get("inventory").await.unwrap();
    assert_eq!(
        servers.spec.service_name.as_deref(),
        Some("inventory-cluster")
    );
    assert_eq!(
        servers.owner_references().first().map(|o| o.uid.as_str()),
        db.uid().as_deref()
    );
    let services: Api<Service> = Api::namespaced(admin.clone(), NAMESPACE);
    let headless = services.get("inventory-cluster").await.unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), NAMESPACE);
    assert!(budgets.get_opt("inventory").await.unwrap().is_some());
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let password = secrets.get("inventory-admin").await.unwrap();
    assert_eq!(password.data.unwrap()["password"].0.len(), 32);

    // The client Service deleted out of band: made again.
    let before = services.get("inventory").await.unwrap().uid();
    services
        .delete("inventory", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the client Service made again", TIMEOUT, || async {
        let again = services.get_opt("inventory").await.ok()??;
        (again.uid() != before).then_some(())
    })
    .await;

    // One server: no disruption budget any more, and the status follows.
    databases
        .patch(
            "inventory",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    wait_for(&databases, "inventory", "Running with 1 ready", |db| {
        phase(db) == Some("Running")
            && db.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
            && db.status.as_ref().and_then(|s| s.observed_generation) == db.metadata.generation
    })
    .await;
    eventually("the disruption budget gone", TIMEOUT, || async {
        budgets
            .get_opt("inventory")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // reqlite serves ReQL at the one server's pod IP with the admin password: the declared
    // database and table are made there.
    let secrets_api: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let admin_password = String::from_utf8(
        secrets_api
            .get("inventory-admin")
            .await
            .unwrap()
            .data
            .unwrap()["password"]
            .0
            .clone(),
    )
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let pod_ip: std::net::IpAddr = pods
        .get("inventory-0")
        .await
        .unwrap()
        .status
        .and_then(|s| s.pod_ip)
        .expect("KWOK gave the server a pod IP")
        .parse()
        .unwrap();
    let mut server = Reqlite::start(pod_ip, &admin_password, "inventory-0").await;
    wait_for(&databases, "inventory", "SchemaApplied AsDeclared", |db| {
        schema_reason(db).as_deref() == Some("AsDeclared")
    })
    .await;
    let client = Connection::open(&Options {
        addr: server.addr().to_string(),
        user: "admin".into(),
        password: admin_password.clone(),
        connect_timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(10),
    })
    .await
    .unwrap();
    assert!(
        names(&client, Term::db_list())
            .await
            .contains(&"shop".to_string())
    );
    assert_eq!(names(&client, Term::table_list("shop")).await, ["items"]);

    // A table dropped out of band is made again; one made out of band is left alone.
    client
        .run(Term::table_create("shop", "scratch", "id"))
        .await
        .unwrap();
    client.run(Term::table_drop("shop", "items")).await.unwrap();
    eventually("the dropped table made again", SCHEMA_TIMEOUT, || async {
        let tables = names(&client, Term::table_list("shop")).await;
        (tables == ["items", "scratch"]).then_some(())
    })
    .await;

    // A user whose password Secret does not exist: named, with the reason.
    databases
        .patch(
            "inventory",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"users": [
                {"name": "alice", "passwordSecretRef": {"name": "alice-password"},
                 "grants": [{"database": "shop", "read": true}]},
            ]}})),
        )
        .await
        .unwrap();
    let db = wait_for(
        &databases,
        "inventory",
        "SchemaApplied UserSecretMissing",
        |db| schema_reason(db).as_deref() == Some("UserSecretMissing"),
    )
    .await;
    let message = &schema_message(&db);
    assert!(
        message.contains("user alice: Secret alice-password not found"),
        "{message}"
    );
    // With the Secret, the user is sent to the server; reqlite has no users table (a limit of
    // the peer, not of RethinkDB 2.4), so the status names what the server said.
    let mut user_secret = Secret::default();
    user_secret.metadata.name = Some("alice-password".into());
    user_secret.string_data = Some([("password".to_string(), "alice-pw".to_string())].into());
    secrets_api
        .create(&PostParams::default(), &user_secret)
        .await
        .unwrap();
    let db = wait_for(
        &databases,
        "inventory",
        "SchemaApplied SchemaMissing",
        |db| schema_reason(db).as_deref() == Some("SchemaMissing"),
    )
    .await;
    let message = &schema_message(&db);
    assert!(
        message.contains("user alice") && message.contains("rethinkdb"),
        "{message}"
    );
    databases
        .patch(
            "inventory",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"users": null}})),
        )
        .await
        .unwrap();
    wait_for(
        &databases,
        "inventory",
        "SchemaApplied AsDeclared again",
        |db| schema_reason(db).as_deref() == Some("AsDeclared"),
    )
    .await;

    // A server that does not take the admin password: AuthenticationFailed.
    drop(client);
    drop(server);
    server = Reqlite::start(pod_ip, "not-the-admin-password", "inventory-0-wrong").await;
    wait_for(
        &databases,
        "inventory",
        "SchemaApplied AuthenticationFailed",
        |db| schema_reason(db).as_deref() == Some("AuthenticationFailed"),
    )
    .await;
    drop(server);
    let server = Reqlite::start(pod_ip, &admin_password, "inventory-0-again").await;
    wait_for(
        &databases,
        "inventory",
        "SchemaApplied AsDeclared with the right password",
        |db| schema_reason(db).as_deref() == Some("AsDeclared"),
    )
    .await;
    let scrape = operator.metrics().await.expect("the operator's metrics");
    for (sample, at_least) in [
        (
            "guildnet_database_schema_operations_total{operation=\"create_table\",result=\"ok\"}",
            2.0,
        ),
        (
            "guildnet_database_schema_operations_total{operation=\"set_password\",result=\"failed\"}",
            1.0,
        ),
        (
            "guildnet_database_connection_errors_total{class=\"unreachable\"}",
            1.0,
        ),
        (
            "guildnet_database_connection_errors_total{class=\"authentication_failed\"}",
            1.0,
        ),
    ] {
        assert!(
            scrape.value(sample) >= at_least,
            "{sample} < {at_least}: {scrape:?}"
        );
    }
    assert_eq!(
        established_to(server.addr()),
        1,
        "the operator keeps one connection"
    );

    // Deleted: the servers go with it, their data stays.
    databases
        .delete("inventory", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the StatefulSet gone", TIMEOUT, || async {
        stateful_sets
            .get_opt("inventory")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), NAMESPACE);
    let kept: Vec<String> = claims
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    for ordinal in 0..3 {
        let claim = format!("data-inventory-{ordinal}");
        assert!(kept.contains(&claim), "{claim} kept: {kept:?}");
    }
    // No connection is held for a database that is gone.
    eventually("the operator's connection closed", TIMEOUT, || async {
        (established_to(server.addr()) == 0).then_some(())
    })
    .await;
    let scrape = operator.metrics().await.expect("the operator's metrics");
    let reconciles = "guildnet_reconcile_duration_seconds_count{controller=\"database\"}";
    assert!(scrape.value(reconciles) >= 1.0, "{scrape:?}");
    assert_eq!(operator.complaints(), Vec::<String>::new());
}
