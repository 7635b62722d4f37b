//! Local reconciles while a registered cluster hangs: a hub and an edge control plane of
//! their own, the operator (as its ServiceAccount) with 40 workspaces placed on the edge.
//! Workspaces created on the hub one after another, create → Ready, first with the edge
//! answering (the baseline), then right after the edge's API server is stopped (SIGSTOP:
//! requests hang, unrefused) and every placed workspace's spec was edited, so each of their
//! reconciles waits on the edge. Reports both and their ratio. Run by `make bench`; prints a
//! Markdown section.

use guildnet_api::cluster::facts::ConditionType;
use guildnet_api::common::find_true_condition;
use guildnet_api::workspace::WorkspacePhase;
use guildnet_api::{ClusterRegistration, Workspace};
use guildnet_e2e::User;
use guildnet_e2e::cluster::{Cluster, Operator};
use guildnet_e2e::create_namespace;
use guildnet_e2e::registrations::{put_kubeconfig, register};
use guildnet_e2e::workspaces::manifest;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::future::Future;
use std::time::{Duration, Instant};

const PLACED: usize = 40;
const ROUNDS: usize = 15;
const TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `done` every 10 ms until it holds; how long that took.
async fn time_until<F, Fut>(what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let since = Instant::now();
    while !done().await {
        assert!(since.elapsed() < TIMEOUT, "{what}: not within {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    since.elapsed()
}

fn running(ws: Option<Workspace>) -> bool {
    ws.and_then(|ws| ws.status?.phase) == Some(WorkspacePhase::Running)
}

/// Creates `ROUNDS` hub workspaces named `<prefix>-<i>` one after another; each one's
/// create → Ready.
async fn local_rounds(workspaces: &Api<Workspace>, prefix: &str) -> Vec<Duration> {
    let mut took = Vec::new();
    for i in 0..ROUNDS {
        let name = format!("{prefix}-{i}");
        let started = Instant::now();
        workspaces
            .create(
                &PostParams::default(),
                &manifest(&name, serde_json::json!({"image": "nginx"})),
            )
            .await
            .expect("create a hub workspace");
        time_until(&name, || async {
            running(workspaces.get_opt(&name).await.ok().flatten())
        })
        .await;
        took.push(started.elapsed());
    }
    took.sort();
    took
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, took: &[Duration]) -> String {
    let p50 = took[took.len() / 2];
    let max = took[took.len() - 1];
    format!("| {what} | {} | {} | {} |", took.len(), ms(p50), ms(max))
}

#[tokio::main]
async fn main() {
    let hub = Cluster::start("bench-hung-hub");
    let edge = Cluster::start("bench-hung-edge");
    let admin = hub.client(User::Admin).await;
    create_namespace(&edge.client(User::Admin).await, "guildnet-workspaces", &[]).await;
    let _operator = Operator::start_as_service_account(
        &hub,
        "op",
        &["--leader-elect=false", "--cluster-probe-interval", "1s"],
    );
    let kubeconfig = std::fs::read_to_string(edge.kubeconfig()).unwrap();
    put_kubeconfig(&admin, "edge", &kubeconfig).await;
    let registrations = register(&admin, "edge", "edge", serde_json::json!({})).await;
    let reachable = |registration: Option<ClusterRegistration>| {
        registration
            .and_then(|r| r.status)
            .is_some_and(|s| find_true_condition(&s.conditions, ConditionType::Ready).is_some())
    };
    time_until("the edge ready", || async {
        reachable(registrations.get_opt("edge").await.ok().flatten())
    })
    .await;

    let workspaces: Api<Workspace> = Api::namespaced(admin.clone(), "default");
    for i in 0..PLACED {
        let spec = serde_json::json!({"image": "nginx", "placement": {"cluster": "edge"}});
        workspaces
            .create(
                &PostParams::default(),
                &manifest(&format!("placed-{i}"), spec),
            )
            .await
            .unwrap();
    }
    for i in 0..PLACED {
        let name = format!("placed-{i}");
        time_until(&name, || async {
            running(workspaces.get_opt(&name).await.ok().flatten())
        })
        .await;
    }

    let baseline = local_rounds(&workspaces, "calm").await;

    let paused = edge.pause_api_server();
    for i in 0..PLACED {
        let edit = serde_json::json!({"spec": {"env": [{"name": "EDITED", "value": "1"}]}});
        workspaces
            .patch(
                &format!("placed-{i}"),
                &PatchParams::default(),
                &Patch::Merge(edit),
            )
            .await
            .unwrap();
    }
    let hung_since = Instant::now();
    let hung = local_rounds(&workspaces, "hung").await;
    let measured_for = hung_since.elapsed();
    let still_reachable = reachable(registrations.get_opt("edge").await.ok().flatten());
    drop(paused);

    println!(
        "### Local reconciles while a registered cluster hangs (`make bench`: e2e/benches/hung_cluster.rs)\n"
    );
    println!(
        "{PLACED} workspaces placed on a second control plane; {ROUNDS} workspaces created on the hub one after another, create → Ready. \
         Hung: the edge's API server stopped (SIGSTOP) and all {PLACED} placed workspaces edited just before, so their reconciles wait on it \
         (at most 4 at a time, each up to its 15 s budget).\n"
    );
    println!("| hub workspaces, create → Ready | rounds | p50 | max |\n|---|---|---|---|");
    println!("{}", row("edge answering (baseline)", &baseline));
    println!("{}", row("edge hung", &hung));
    let ratio = hung[hung.len() / 2].as_secs_f64() / baseline[baseline.len() / 2].as_secs_f64();
    println!(
        "\np50 ratio hung / baseline: **{ratio:.2}**. The hung rounds took {:.1} s; the edge's registration was {} when they ended.\n",
        measured_for.as_secs_f64(),
        if still_reachable {
            "still Ready (not yet judged unreachable)"
        } else {
            "already unreachable"
        },
    );
}
