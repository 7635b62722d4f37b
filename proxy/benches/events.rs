//! What `/api/events` and `/sse/events` cost when every workspace needs an RBAC review:
//! 5,000 buffered events about 500 workspaces (10 each, interleaved), none of them the
//! caller's, through the same router the server runs, one request at a time. No network: the
//! SubjectAccessReviews are answered by a stand-in that waits an artificial 5 ms before each
//! answer, like a round trip to the API server. Bob may open 10 of the workspaces (the 50th,
//! the 100th, …), the admin all of them. Cold: a fresh proxy, nothing remembered; warm: the same request again within
//! `--auth-cache-ttl`, answered from the authorizer's cache. Prints a Markdown section.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, header};
use clap::Parser;
use futures::future::BoxFuture;
use guildnet_api::labels;
use guildnet_api::policy::owner::owner_id;
use guildnet_api::workspace::{Workspace, WorkspaceSpec};
use guildnet_proxy::app::{AppState, Caches, Shared};
use guildnet_proxy::auth::TokenReviews;
use guildnet_proxy::authz::{AccessQuestion, AccessReviewer};
use guildnet_proxy::config::Args;
use guildnet_proxy::router::router;
use guildnet_proxy::session::SessionKeys;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::runtime::reflector;
use kube::runtime::watcher::Event as WatchEvent;
use tower::ServiceExt;

const WORKSPACES: usize = 500;
const EVENTS_PER_WORKSPACE: usize = 5_000 / WORKSPACES;
/// How long each stand-in SubjectAccessReview takes to answer.
const REVIEW_DELAY: Duration = Duration::from_millis(5);
/// Bob may open every this-many-th workspace (ide-49, ide-99, …: his first event follows
/// 49 workspaces' he may not see).
const BOBS_SHARE: usize = 50;
const ROUNDS: usize = 5;
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// RBAC without an API server: `get workspaces/proxy` allowed on the names `allows` says,
/// each answer after [`REVIEW_DELAY`]; counts the reviews.
struct SlowRbac {
    allows: fn(&str) -> bool,
    reviews: AtomicUsize,
}

impl AccessReviewer for SlowRbac {
    fn review<'a>(&'a self, question: AccessQuestion<'a>) -> BoxFuture<'a, anyhow::Result<bool>> {
        self.reviews.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            tokio::time::sleep(REVIEW_DELAY).await;
            Ok(question.name.is_some_and(self.allows))
        })
    }
}

fn bob_may_open(name: &str) -> bool {
    name.strip_prefix("ide-")
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i % BOBS_SHARE == BOBS_SHARE - 1)
}

fn admin_may_open(_: &str) -> bool {
    true
}

/// A proxy (`--auth=none` as `user`) holding the workspaces and their events, its RBAC
/// questions answered by `rbac`.
fn proxy(user: &str, rbac: Arc<SlowRbac>) -> AppState {
    let dev_user = format!("--dev-user={user}");
    let buffer = format!("--event-buffer={}", WORKSPACES * EVENTS_PER_WORKSPACE);
    let args = Args::parse_from([
        "guildnet-proxy",
        "--auth=none",
        dev_user.as_str(),
        buffer.as_str(),
    ]);
    // Nothing listens there; nothing here calls it.
    let client = kube::Client::try_from(kube::Config::new(
        "http://127.0.0.1:9".parse().expect("a URL"),
    ))
    .expect("a client");
    let (store, mut writer) = reflector::store();
    let (claims, _) = reflector::store();
    let (quotas, _) = reflector::store();
    let (databases, _) = reflector::store();
    let caches = Caches {
        workspaces: store,
        claims,
        quotas,
        databases,
    };
    let state = Shared::with_reviewers(
        client.clone(),
        &args,
        SessionKeys::random(args.session_ttl),
        caches,
        Arc::new(TokenReviews::new(client)),
        rbac,
    );
    for i in 0..WORKSPACES {
        let mut ws = Workspace::new(&format!("ide-{i}"), WorkspaceSpec::default());
        ws.metadata.namespace = Some("team".into());
        ws.metadata.uid = Some(format!("uid-{i}"));
        ws.metadata.labels = Some(BTreeMap::from([(labels::OWNER.into(), owner_id("alice"))]));
        writer.apply_watcher_event(&WatchEvent::Apply(ws));
    }
    let mut id = 0;
    for _ in 0..EVENTS_PER_WORKSPACE {
        for i in 0..WORKSPACES {
            id += 1;
            state.events.apply(&Event {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("ide-{i}.{id}")),
                    namespace: Some("team".into()),
                    resource_version: Some(id.to_string()),
                    ..Default::default()
                },
                involved_object: ObjectReference {
                    kind: Some("Workspace".into()),
                    namespace: Some("team".into()),
                    name: Some(format!("ide-{i}")),
                    uid: Some(format!("uid-{i}")),
                    ..Default::default()
                },
                reason: Some("Ready".into()),
                type_: Some("Normal".into()),
                ..Default::default()
            });
        }
    }
    Arc::new(state)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, "guildnet.example.com")
        .body(Body::empty())
        .expect("a request")
}

/// `GET /api/events`: the time to the whole answer, and how many events it held.
async fn list(state: &AppState) -> (Duration, usize) {
    let started = Instant::now();
    let response = router(state.clone())
        .layer(MockConnectInfo(PEER))
        .oneshot(get("/api/events"))
        .await
        .expect("an answer");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let elapsed = started.elapsed();
    let listed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    (elapsed, listed["items"].as_array().map_or(0, Vec::len))
}

/// `GET /sse/events` until `expected` events came: the time to the first and to the last.
async fn stream(state: &AppState, expected: usize) -> (Duration, Duration) {
    let started = Instant::now();
    let response = router(state.clone())
        .layer(MockConnectInfo(PEER))
        .oneshot(get("/sse/events"))
        .await
        .expect("an answer");
    let mut body = response.into_body();
    let (mut seen, mut first) = (0, None);
    while seen < expected {
        let frame = body.frame().await.expect("more events").expect("a frame");
        if let Ok(data) = frame.into_data() {
            // One `data:` line per event; keep-alive comments have none.
            seen += data.windows(5).filter(|w| w == b"data:").count();
            if seen > 0 {
                first.get_or_insert_with(|| started.elapsed());
            }
        }
    }
    (first.unwrap_or_default(), started.elapsed())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        println!(
            "### Events visibility: {} buffered events about {WORKSPACES} workspaces, reviews \
             answering after {} ms\n",
            WORKSPACES * EVENTS_PER_WORKSPACE,
            REVIEW_DELAY.as_millis()
        );
        println!(
            "Median of {ROUNDS} rounds. One review after another would take at least \
             {WORKSPACES} × {} ms = {} per cold request.\n",
            REVIEW_DELAY.as_millis(),
            ms(REVIEW_DELAY * WORKSPACES as u32)
        );
        println!("| caller | request | events | reviews | first event | whole list |");
        println!("|---|---|---|---|---|---|");
        for (user, allows) in [
            ("bob", bob_may_open as fn(&str) -> bool),
            ("admin", admin_may_open),
        ] {
            let (mut cold, mut warm, mut first, mut last) = (vec![], vec![], vec![], vec![]);
            let (mut events, mut cold_reviews, mut warm_reviews) = (0, 0, 0);
            let mut stream_reviews = 0;
            for _ in 0..ROUNDS {
                let rbac = Arc::new(SlowRbac {
                    allows,
                    reviews: AtomicUsize::new(0),
                });
                let state = proxy(user, rbac.clone());
                let (took, listed) = list(&state).await;
                cold.push(took);
                events = listed;
                cold_reviews = rbac.reviews.load(Ordering::Relaxed);
                let (took, _) = list(&state).await;
                warm.push(took);
                warm_reviews = rbac.reviews.load(Ordering::Relaxed) - cold_reviews;

                let rbac = Arc::new(SlowRbac {
                    allows,
                    reviews: AtomicUsize::new(0),
                });
                let state = proxy(user, rbac.clone());
                let (to_first, to_last) = stream(&state, events).await;
                first.push(to_first);
                last.push(to_last);
                stream_reviews = rbac.reviews.load(Ordering::Relaxed);
            }
            println!(
                "| {user} | `GET /api/events`, cold | {events} | {cold_reviews} | – | {} |",
                ms(median(cold))
            );
            println!(
                "| {user} | `GET /api/events`, warm | {events} | {warm_reviews} | – | {} |",
                ms(median(warm))
            );
            println!(
                "| {user} | `GET /sse/events`, cold | {events} | {stream_reviews} | {} | {} |",
                ms(median(first)),
                ms(median(last))
            );
        }
        println!();
    });
}
