//! Quota reservations through the webhook's state, as the HTTPS handler uses it: concurrent
//! changes of one owner's workspaces must not each see the usage from before the others.

use guildnet_api::{Capabilities, Quota, Workspace};
use guildnet_webhook::access::AccessReviewer;
use guildnet_webhook::admission::Settings;
use guildnet_webhook::caches::Caches;
use guildnet_webhook::metrics::Metrics;
use guildnet_webhook::reservations::Reservations;
use guildnet_webhook::review;
use guildnet_webhook::server::AppState;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::Duration;

const ALICE_ID: &str = "u-fpmansl7byak6gq7ymzi7j3dve";

fn store<K>(objects: Vec<Value>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + 'static,
{
    let (store, mut writer) = reflector::store();
    for object in objects {
        writer.apply_watcher_event(&Event::Apply(serde_json::from_value(object).unwrap()));
    }
    store
}

fn workspace(name: &str, cpu: &str) -> Value {
    json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "labels": {"guildnet.io/owner": ALICE_ID}},
        "spec": {"image": "nginx", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}
    })
}

/// alice's `a` and `b` (1 CPU each) cached, under a Quota of 3 CPUs per owner.
fn state() -> AppState {
    let developers = json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Capabilities", "metadata": {"name": "developers"},
        "spec": {"subjects": [{"kind": "Group", "name": "guildnet:users"}],
                 "images": {"allow": ["docker.io/library/nginx:*"]}}
    });
    let quota = json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "per-owner", "namespace": "default"},
        "spec": {"perOwner": {"cpu": "3"}}
    });
    AppState {
        settings: Settings {
            trusted_users: vec![
                "system:serviceaccount:guildnet-system:guildnet-operator".into(),
                "system:serviceaccount:guildnet-system:guildnet-proxy".into(),
            ],
            system_namespace: "guildnet-system".into(),
        },
        caches: Caches::from_stores(
            store::<Capabilities>(vec![developers]),
            store::<Quota>(vec![quota]),
            store::<Workspace>(vec![workspace("a", "1"), workspace("b", "1")]),
        ),
        reservations: Mutex::new(Reservations::new(Duration::from_secs(30))),
        metrics: Metrics::new(),
        // These reviews name no Secret: no SubjectAccessReview is made, so this client (to a
        // closed loopback port) is never called.
        access: AccessReviewer::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        ),
    }
}

/// alice's UPDATE of `name` from 1 CPU to `cpu`.
fn grow(name: &str, cpu: &str) -> review::Review {
    let path = format!("{}/tests/fixtures/update.json", env!("CARGO_MANIFEST_DIR"));
    let mut review: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    review["request"]["name"] = json!(name);
    review["request"]["oldObject"] = workspace(name, "1");
    review["request"]["object"] = workspace(name, cpu);
    review::decode(&serde_json::to_vec(&review).unwrap()).unwrap()
}

#[tokio::test]
async fn concurrent_updates_of_one_owner_cannot_both_take_the_last_quota() {
    let state = state();
    // 1 + 1 cached; growing a to 2 makes 3: allowed, and reserved.
    let first = state.validate(&grow("a", "2"), Vec::new());
    assert!(first.outcome.is_ok(), "{:?}", first.outcome);
    // The cache still shows a at 1 CPU; without the reservation b would fit (1 + 2 = 3).
    let second = state.validate(&grow("b", "2"), Vec::new());
    let refusal = second.outcome.expect_err("a's growth is counted");
    assert_eq!(refusal.reason(), "QuotaExceeded");
    // The reservation replaced a's cached version rather than adding to it: a may still
    // change within the Quota (a at 2 stays 3 in all).
    let again = state.validate(&grow("a", "2"), Vec::new());
    assert!(again.outcome.is_ok(), "{:?}", again.outcome);
}

/// alice's CREATE of GuildDatabase `name` with `replicas` servers of 1Gi.
fn create_database(name: &str, replicas: i32) -> review::Review<guildnet_api::GuildDatabase> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{name}"),
            "kind": {"group": "guildnet.io", "version": "v1alpha1", "kind": "GuildDatabase"},
            "resource": {"group": "guildnet.io", "version": "v1alpha1", "resource": "guilddatabases"},
            "name": name, "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["guildnet:users", "system:authenticated"]},
            "object": {
                "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"replicas": replicas, "storage": {"size": "1Gi"}}
            },
            "dryRun": false
        }
    });
    review::decode(&serde_json::to_vec(&review).unwrap()).unwrap()
}

#[tokio::test]
async fn concurrent_database_creates_of_one_owner_cannot_both_take_the_last_storage() {
    let databases = json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Capabilities", "metadata": {"name": "databases"},
        "spec": {"subjects": [{"kind": "Group", "name": "guildnet:users"}], "databases": {}}
    });
    let quota = json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "storage", "namespace": "default"},
        "spec": {"perOwner": {"storage": "3Gi"}}
    });
    let mut state = state();
    state.caches = Caches::from_stores(
        store::<Capabilities>(vec![databases]),
        store::<Quota>(vec![quota]),
        store::<Workspace>(vec![]),
    );
    // 2 × 1Gi fits 3Gi, and is reserved until the cache shows it.
    let first = state.validate_database(&create_database("one", 2), Vec::new());
    assert!(first.outcome.is_ok(), "{:?}", first.outcome);
    // The cache shows no database yet; without the reservation 2 × 1Gi more would fit too.
    let second = state.validate_database(&create_database("two", 2), Vec::new());
    assert_eq!(
        second
            .outcome
            .expect_err("one's storage is counted")
            .reason(),
        "QuotaExceeded"
    );
    // One more server still fits: 3Gi in all.
    let third = state.validate_database(&create_database("three", 1), Vec::new());
    assert!(third.outcome.is_ok(), "{:?}", third.outcome);
}
