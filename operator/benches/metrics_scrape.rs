//! How long one `/metrics` scrape takes with 5,000 workspaces in the watch cache (target:
//! < 50 ms): the Workspace gauges are counted from the cache at every scrape, the other
//! metrics hold a realistic number of label sets. Prints a Markdown section for
//! docs/benchmarks.md.

use guildnet_api::workspace::{WorkspacePhase, WorkspaceStatus};
use guildnet_api::{Workspace, WorkspaceSpec};
use guildnet_operator::metrics::{Metrics, WORKSPACE_CONTROLLER};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use std::time::{Duration, Instant};

const WORKSPACES: usize = 5_000;
const SCRAPES: usize = 200;

/// Mostly running, some starting, stopped or failed, spread over 50 namespaces.
fn fleet() -> Vec<Workspace> {
    (0..WORKSPACES)
        .map(|i| {
            let mut ws = Workspace::new(
                &format!("ws-{i}"),
                WorkspaceSpec {
                    image: "codercom/code-server:4.96.2".into(),
                    ..Default::default()
                },
            );
            ws.metadata.namespace = Some(format!("team-{}", i % 50));
            let phase = match i % 20 {
                0 => WorkspacePhase::Failed,
                1 | 2 => WorkspacePhase::Stopped,
                3 => WorkspacePhase::Pending,
                _ => WorkspacePhase::Running,
            };
            ws.status = Some(WorkspaceStatus {
                phase: Some(phase),
                ..Default::default()
            });
            ws
        })
        .collect()
}

/// Metrics over the fleet, with the counters and histograms a day of work leaves behind.
fn metrics() -> Metrics {
    let (store, mut writer) = reflector::store();
    for ws in fleet() {
        writer.apply_watcher_event(&Event::Apply(ws));
    }
    let metrics = Metrics::new(store);
    metrics.set_leader(true);
    for i in 0..WORKSPACES {
        metrics.workspace_launched();
        metrics.workspace_ready(Duration::from_millis(500 + (i as u64 * 37) % 60_000));
        metrics.reconciled(
            WORKSPACE_CONTROLLER,
            Duration::from_micros(i as u64 * 13 % 400_000),
        );
    }
    for reason in [
        "ImagePullFailed",
        "CrashLoopBackOff",
        "ProgressDeadlineExceeded",
        "InvalidSpec",
    ] {
        metrics.workspace_failed(reason);
    }
    for error in ["api", "conflict"] {
        metrics.reconcile_failed(WORKSPACE_CONTROLLER, error);
    }
    metrics
}

fn main() {
    let metrics = metrics();
    let mut samples: Vec<Duration> = Vec::with_capacity(SCRAPES);
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        let start = Instant::now();
        bytes = std::hint::black_box(metrics.encode().expect("encode")).len();
        samples.push(start.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("### Metrics scrape (`cargo bench -p guildnet-operator --bench metrics_scrape`)\n");
    println!(
        "One `/metrics` encoding with {WORKSPACES} workspaces in the watch cache (the Workspace gauges are counted at scrape time), {SCRAPES} scrapes of {bytes} bytes. Target: < 50 ms.\n"
    );
    println!("| p50 | p99 | max |\n|---|---|---|");
    println!(
        "| {:.2} ms | {:.2} ms | {:.2} ms |\n",
        ms(samples[SCRAPES / 2]),
        ms(samples[SCRAPES * 99 / 100]),
        ms(samples[SCRAPES - 1])
    );
}
