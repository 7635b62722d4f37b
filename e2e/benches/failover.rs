//! Failover of the operator replicas on a control plane of their own: how long from a
//! leader's SIGTERM (planned handover) or SIGKILL (crash) until the other replica holds the
//! lease, and until it has written (a Workspace created right after the signal has its
//! Deployment). Run by `make bench`; prints a Markdown section.

use guildnet_api::Workspace;
use guildnet_e2e::User;
use guildnet_e2e::cluster::{Cluster, Operator, leader_among, lease_holder};
use guildnet_e2e::workspaces::manifest;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, PostParams};
use std::future::Future;
use std::time::{Duration, Instant};

const HANDOVERS: usize = 5;
const CRASHES: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `done` every 10 ms until it holds, returning how long after `since` it did.
async fn time_until<F, Fut>(since: Instant, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    while !done().await {
        assert!(since.elapsed() < TIMEOUT, "no failover within {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    since.elapsed()
}

/// One failover: signals the leader among `ops` (SIGTERM, or SIGKILL when `crash`), creates
/// a probe workspace, and measures until the other replica holds the lease and until the
/// probe's Deployment exists. Replaces the old leader with a new replica afterwards.
async fn fail_over(
    cluster: &Cluster,
    admin: &Client,
    ops: &mut Vec<Operator>,
    round: usize,
    crash: bool,
) -> (Duration, Duration) {
    let leader = leader_among(&ops.iter().collect::<Vec<_>>(), TIMEOUT).await;
    let survivor = ops[1 - leader].name().to_owned();
    let probe = format!("probe-{round}");
    let since = Instant::now();
    if crash {
        ops[leader].kill();
    } else {
        ops[leader].terminate();
    }
    let workspaces: Api<Workspace> = Api::namespaced(admin.clone(), "default");
    let ws = manifest(&probe, serde_json::json!({"image": "nginx:1.27"}));
    let create = async {
        workspaces
            .create(&PostParams::default(), &ws)
            .await
            .expect("create the probe");
    };
    let lease = time_until(since, || async {
        lease_holder(admin).await.as_deref() == Some(survivor.as_str())
    });
    let ((), lease) = tokio::join!(create, lease);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let write = time_until(since, || async {
        matches!(deployments.get_opt(&probe).await, Ok(Some(_)))
    })
    .await;
    let mut old = ops.remove(leader);
    if !crash {
        let status = old.exited(Duration::from_secs(15)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "SIGTERM exits 0: {status:?}"
        );
    }
    ops.push(Operator::start(cluster, &format!("op-{}", round + 2), &[]));
    (lease, write)
}

fn row(what: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "| {what} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1])
    )
}

#[tokio::main]
async fn main() {
    let cluster = Cluster::start("bench-failover");
    let admin = cluster.client(User::Admin).await;
    let mut ops = vec![
        Operator::start(&cluster, "op-0", &[]),
        Operator::start(&cluster, "op-1", &[]),
    ];
    // The API server's first Workspace request is slow; keep it out of the numbers.
    let warm_up = manifest("warm-up", serde_json::json!({"image": "nginx:1.27"}));
    Api::<Workspace>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &warm_up)
        .await
        .expect("create a workspace");
    let (mut lease, mut write) = (Vec::new(), Vec::new());
    for round in 0..HANDOVERS {
        let (l, w) = fail_over(&cluster, &admin, &mut ops, round, false).await;
        lease.push(l);
        write.push(w);
    }
    let (mut crash_lease, mut crash_write) = (Vec::new(), Vec::new());
    for round in HANDOVERS..HANDOVERS + CRASHES {
        let (l, w) = fail_over(&cluster, &admin, &mut ops, round, true).await;
        crash_lease.push(l);
        crash_write.push(w);
    }

    println!("### Leader failover (`make bench`: e2e/benches/failover.rs)\n");
    println!(
        "Two replicas with the default 12 s lease (renewed every 3 s; a leader writes for 9 s after its last confirmed renewal) on the local control plane. \"First write\" is the Deployment of a Workspace created right after the signal (a new Workspace is reconciled without waiting for the debounce window). Targets: SIGTERM handover ≤ 1 s, crash failover < 15 s.\n"
    );
    println!("| signal to the leader → | rounds | min | p50 | max |\n|---|---|---|---|---|");
    println!("{}", row("SIGTERM → standby holds the lease", lease));
    println!("{}", row("SIGTERM → standby's first write", write));
    println!("{}", row("SIGKILL → standby holds the lease", crash_lease));
    println!("{}", row("SIGKILL → standby's first write", crash_write));
    println!();
}
