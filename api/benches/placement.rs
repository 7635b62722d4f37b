//! How long deciding a Workspace's cluster takes among 100 ClusterRegistrations, by name
//! and by label selector (the operator decides once per Workspace, the webhook on each
//! create). Prints a Markdown section for docs/benchmarks.md.

use guildnet_api::ClusterRegistration;
use guildnet_api::cluster::placement::{Decision, decide};
use guildnet_api::cluster::{ClusterRegistrationSpec, ClusterRegistrationStatus};
use guildnet_api::common::Condition;
use guildnet_api::workspace::Placement;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CLUSTERS: usize = 100;
const DECISIONS: usize = 10_000;

/// 100 clusters in 10 regions, those of `region-9` unreachable, every seventh cordoned.
fn clusters() -> Vec<ClusterRegistration> {
    (0..CLUSTERS)
        .map(|i| {
            let mut cluster = ClusterRegistration::new(
                &format!("cluster-{i:03}"),
                ClusterRegistrationSpec::default(),
            );
            cluster.metadata.labels = Some(BTreeMap::from([
                ("region".to_owned(), format!("region-{}", i % 10)),
                (
                    "tier".to_owned(),
                    if i % 2 == 0 { "gpu" } else { "cpu" }.to_owned(),
                ),
            ]));
            cluster.spec.cordoned = (i % 7 == 0).then_some(true);
            cluster.status = Some(ClusterRegistrationStatus {
                conditions: vec![Condition {
                    type_: "Reachable".into(),
                    status: if i % 10 == 9 { "False" } else { "True" }.into(),
                    reason: "ProbeSucceeded".into(),
                    message: String::new(),
                    last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                }],
                ..Default::default()
            });
            cluster
        })
        .collect()
}

fn selector(labels: &[(&str, &str)]) -> Placement {
    Placement {
        cluster: None,
        cluster_selector: Some(LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            match_expressions: None,
        }),
    }
}

fn main() {
    let clusters = clusters();
    let cases = [
        (
            "`cluster: cluster-050`",
            Placement {
                cluster: Some("cluster-050".into()),
                cluster_selector: None,
            },
        ),
        (
            "selector `region=region-4` (10 match)",
            selector(&[("region", "region-4")]),
        ),
        (
            "selector `region=region-9` (10 match, none reachable)",
            selector(&[("region", "region-9")]),
        ),
        (
            "selector `tier=gpu` (50 match)",
            selector(&[("tier", "gpu")]),
        ),
        (
            "selector `region=nowhere` (none match)",
            selector(&[("region", "nowhere")]),
        ),
    ];
    println!("### Placement decision (`cargo bench -p guildnet-api --bench placement`)\n");
    println!(
        "One Workspace's cluster decided among {CLUSTERS} ClusterRegistrations (in 10 regions, one region unreachable, every seventh cordoned), {DECISIONS} decisions per row; a pure function of the placement and the registrations, run by the operator for each Workspace not yet placed.\n"
    );
    println!("| placement | decision | p50 | p99 | max |\n|---|---|---|---|---|");
    for (name, placement) in cases {
        let mut samples: Vec<Duration> = Vec::with_capacity(DECISIONS);
        let mut decision = Decision::Local;
        for _ in 0..DECISIONS {
            let start = Instant::now();
            decision = std::hint::black_box(decide(Some(&placement), None, &clusters));
            samples.push(start.elapsed());
        }
        samples.sort();
        let shown = match &decision {
            Decision::Placed(cluster) => format!("placed on {cluster}"),
            Decision::NoMatch(_) => "no match".to_owned(),
            other => format!("{other:?}"),
        };
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "| {name} | {shown} | {:.1} µs | {:.1} µs | {:.1} µs |",
            us(samples[DECISIONS / 2]),
            us(samples[DECISIONS * 99 / 100]),
            us(samples[DECISIONS - 1])
        );
    }
    println!();
}
