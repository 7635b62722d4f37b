//! What the webhook's HTTP handlers cost without the network: the recorded CREATE review
//! (`tests/fixtures/create.json`, by alice) sent to `/mutate` and `/validate` through the
//! same router the HTTPS server runs, one request at a time, with 5,000 workspaces in the
//! cache, without and with a Quota that applies to alice (then the 50 workspaces she owns
//! are counted). Prints a Markdown section for docs/benchmarks.md.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use guildnet_api::policy::owner_id;
use guildnet_api::{Capabilities, Quota, Workspace};
use guildnet_webhook::access::AccessReviewer;
use guildnet_webhook::admission::Settings;
use guildnet_webhook::caches::Caches;
use guildnet_webhook::metrics::Metrics;
use guildnet_webhook::reservations::Reservations;
use guildnet_webhook::server::{AppState, webhook_routes};
use http_body_util::BodyExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const WORKSPACES: usize = 5_000;
/// How many of them alice owns.
const ALICES: usize = 50;
const ROUNDS: usize = 10_000;

fn store<K>(objects: Vec<Value>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + 'static,
{
    let (store, mut writer) = reflector::store();
    for object in objects {
        let object = serde_json::from_value(object).expect("a valid object");
        writer.apply_watcher_event(&Event::Apply(object));
    }
    store
}

/// The router over caches of [`WORKSPACES`] workspaces, the starter Capabilities and
/// `quotas`.
fn router(quotas: Vec<Value>) -> Router {
    let starter = json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Capabilities",
        "metadata": {"name": "starter"},
        "spec": {
            "subjects": [{"kind": "Group", "name": "system:authenticated"}],
            "images": {"allow": ["docker.io/codercom/code-server:*", "quay.io/jupyter/*",
                                 "docker.io/library/nginx:*"]},
            "resources": {"maxPerWorkspace": {"cpu": "4", "memory": "8Gi"}},
            "exposure": ["ClusterIP"]
        }
    });
    let workspaces = (0..WORKSPACES)
        .map(|i| {
            let owner = if i < ALICES {
                owner_id("alice")
            } else {
                format!("u-user{}", i % 100)
            };
            json!({
                "apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace",
                "metadata": {"name": format!("ws-{i}"), "namespace": format!("team-{}", i % 50),
                             "labels": {"guildnet.io/owner": owner}},
                "spec": {"image": "codercom/code-server:4.96.2", "hint": "compute"}
            })
        })
        .collect();
    let state = AppState {
        settings: Settings {
            trusted_users: vec![
                "system:serviceaccount:guildnet-system:guildnet-operator".into(),
                "system:serviceaccount:guildnet-system:guildnet-proxy".into(),
            ],
            system_namespace: "guildnet-system".into(),
        },
        caches: Caches::from_stores(
            store::<Capabilities>(vec![starter]),
            store::<Quota>(quotas),
            store::<Workspace>(workspaces),
        ),
        reservations: Mutex::new(Reservations::new(Duration::from_secs(30))),
        metrics: Metrics::new(),
        // The recorded reviews name no Secret, so no SubjectAccessReview is made: this client
        // (to a closed loopback port) is never called.
        access: AccessReviewer::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        ),
    };
    webhook_routes(Arc::new(state))
}

/// [`ROUNDS`] requests of `body` to `path`, one at a time; their durations, sorted.
async fn time(router: &Router, path: &str, body: &[u8]) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
            .expect("a request");
        let start = Instant::now();
        let response = router.clone().oneshot(request).await.expect("a response");
        let status = response.status();
        let answer = response.into_body().collect().await.expect("the body");
        samples.push(start.elapsed());
        assert_eq!(status, StatusCode::OK);
        let review: Value = serde_json::from_slice(&answer.to_bytes()).expect("JSON");
        assert_eq!(review["response"]["allowed"], true, "{review}");
    }
    samples.sort();
    samples
}

fn main() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/create.json"
    ))
    .expect("read the recorded review");
    let quota = json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "users", "namespace": "guildnet-system"},
        "spec": {"scope": "Cluster", "perOwner": {"maxWorkspaces": 1000, "cpu": "1000", "memory": "4000Gi"}}
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    // The kube client behind the access reviewer starts its request buffer on the runtime.
    let _runtime = runtime.enter();
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    println!(
        "### Handler without the network (`cargo bench -p guildnet-webhook --bench handler`)\n"
    );
    println!(
        "The recorded review through the webhook's router in-process, one request at a time ({ROUNDS} per row): decoding, deciding, metrics and encoding; no TLS, no sockets. {WORKSPACES} workspaces in the cache.\n"
    );
    println!("| path | Quotas | p50 | p99 | max |\n|---|---|---|---|---|");
    for (quotas, what) in [
        (Vec::new(), "none"),
        (vec![quota], "one, counting alice's 50 workspaces"),
    ] {
        let router = router(quotas);
        for path in ["/mutate", "/validate"] {
            let samples = runtime.block_on(time(&router, path, &body));
            println!(
                "| `{path}` | {what} | {} | {} | {} |",
                us(samples[ROUNDS / 2]),
                us(samples[ROUNDS * 99 / 100]),
                us(samples[ROUNDS - 1])
            );
        }
    }
    println!();
}
