//! How long one reaper pass over 5,000 cached workspaces takes (target: ≤ 100 ms). Prints a
//! Markdown section for docs/benchmarks.md.

use guildnet_api::workspace::{Lifecycle, WorkspacePhase, WorkspaceStatus};
use guildnet_api::{Workspace, WorkspaceSpec, labels};
use guildnet_operator::reconcile::conditions::{Observed, merge};
use guildnet_operator::workspace::reaper;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::{Duration, Instant};

const WORKSPACES: usize = 5_000;
const PASSES: usize = 200;

/// A realistic mix: most running and recently used, some idle, some kept alive, some
/// stopped with a TTL.
fn fleet(now: Timestamp) -> Vec<Workspace> {
    (0..WORKSPACES)
        .map(|i| {
            let mut ws = Workspace::new(
                &format!("ws-{i}"),
                WorkspaceSpec {
                    image: "codercom/code-server:4.96.2".into(),
                    lifecycle: Some(Lifecycle {
                        idle_timeout: Some("2h".into()),
                        ttl_seconds_after_finished: (i % 7 == 0).then_some(86_400),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
            ws.metadata.namespace = Some(format!("team-{}", i % 50));
            ws.metadata.creation_timestamp = Some(Time(now - SignedDuration::from_hours(48)));
            if i % 10 == 0 {
                ws.metadata.labels =
                    Some([(labels::KEEPALIVE.to_string(), "true".to_string())].into());
            }
            let (phase, observed) = if i % 7 == 0 {
                (
                    WorkspacePhase::Stopped,
                    Observed::new("Suspended", true, "Suspended", ""),
                )
            } else {
                (
                    WorkspacePhase::Running,
                    Observed::new("Ready", true, "DeploymentReady", ""),
                )
            };
            let accessed = now - SignedDuration::from_mins((i % 240) as i64);
            ws.status = Some(WorkspaceStatus {
                phase: Some(phase),
                conditions: merge(
                    &[],
                    vec![observed],
                    Some(1),
                    now - SignedDuration::from_hours(24),
                ),
                last_access_time: Some(Time(accessed)),
                ..Default::default()
            });
            ws
        })
        .collect()
}

fn main() {
    let now = Timestamp::now();
    let fleet = fleet(now);
    let mut samples: Vec<Duration> = Vec::with_capacity(PASSES);
    let mut due = 0;
    for _ in 0..PASSES {
        let start = Instant::now();
        due = std::hint::black_box(reaper::scan(fleet.iter(), now, None)).len();
        samples.push(start.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = samples[PASSES / 2];
    let p99 = samples[PASSES * 99 / 100];
    println!(
        "### Idle and TTL reaper scan (`cargo bench -p guildnet-operator --bench reaper_scan`)\n"
    );
    println!(
        "One pass over {WORKSPACES} workspaces from the cache, {PASSES} passes ({due} due per pass). Target: ≤ 100 ms.\n"
    );
    println!("| p50 | p99 | max |\n|---|---|---|");
    println!(
        "| {:.2} ms | {:.2} ms | {:.2} ms |\n",
        ms(p50),
        ms(p99),
        ms(samples[PASSES - 1])
    );
}
