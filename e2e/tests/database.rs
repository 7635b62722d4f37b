//! GuildDatabase on a real API server: the operator (as its ServiceAccount, with the
//! chart's RBAC) runs it as a StatefulSet of RethinkDB servers that PSA `restricted`
//! admits, with its Services, disruption budget and admin Secret; its status follows the
//! servers; drift is repaired; its data outlives it. The pods are KWOK's: nothing answers
//! on the driver port, so the declared schema is not exercised here.

use std::time::Duration;

use guildnet_api::GuildDatabase;
use guildnet_api::common::find_condition;
use guildnet_api::database::facts::ConditionType;
use guildnet_e2e::cluster::{Cluster, Operator};
use guildnet_e2e::workspaces::wait_for;
use guildnet_e2e::{User, create_namespace, eventually};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "team-db";

fn condition(db: &GuildDatabase, type_: ConditionType) -> Option<(String, String)> {
    let c = find_condition(&db.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

fn phase(db: &GuildDatabase) -> Option<&str> {
    db.status.as_ref()?.phase.as_deref()
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
    assert_eq!(
        condition(&db, ConditionType::SchemaApplied),
        Some(("False".into(), "SchemaNotApplied".into()))
    );
    // And an Event says so.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(admin.clone(), NAMESPACE);
    eventually("an Event of the database running", TIMEOUT, || async {
        let listed = events.list(&ListParams::default()).await.ok()?;
        listed
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Running")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("inventory")
            })
            .then_some(())
    })
    .await;
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
    let scrape = operator.metrics().await.expect("the operator's metrics");
    let reconciles = "guildnet_reconcile_duration_seconds_count{controller=\"database\"}";
    assert!(scrape.value(reconciles) >= 1.0, "{scrape:?}");
    assert_eq!(operator.complaints(), Vec::<String>::new());
}
