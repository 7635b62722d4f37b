//! Reconcile latency on the local control plane: from a Workspace written (its create call
//! answered) to its Deployment existing, over 200 workspaces created at 20 per second. Run
//! by `make bench` with the operator running; prints a Markdown section.

use futures::StreamExt;
use guildnet_api::Workspace;
use guildnet_e2e::workspaces::manifest;
use guildnet_e2e::{User, client, create_namespace, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKSPACES: usize = 200;
const INTERVAL: Duration = Duration::from_millis(50);

#[tokio::main]
async fn main() {
    let admin = client(User::Admin).await;
    let ns = unique_name("bench");
    create_namespace(&admin, &ns, &[]).await;

    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut events =
                std::pin::pin!(watcher(deployments, watcher::Config::default()).default_backoff());
            while let Some(Ok(event)) = events.next().await {
                match event {
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Apply(d) | watcher::Event::InitApply(d) => {
                        seen.lock()
                            .unwrap()
                            .entry(d.name_any())
                            .or_insert_with(Instant::now);
                    }
                    _ => {}
                }
            }
        })
    };
    ready_rx.await.expect("the watch starts");

    let workspaces: Api<Workspace> = Api::namespaced(admin.clone(), &ns);
    let mut written = HashMap::new();
    for i in 0..WORKSPACES {
        let name = format!("ws-{i}");
        let ws = manifest(&name, serde_json::json!({"image": "nginx:1.27"}));
        workspaces
            .create(&PostParams::default(), &ws)
            .await
            .expect("create workspace");
        written.insert(name, Instant::now());
        tokio::time::sleep(INTERVAL).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().len() < WORKSPACES {
        assert!(
            Instant::now() < deadline,
            "not every Deployment appeared within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    recorder.abort();

    let mut latencies: Vec<Duration> = {
        let seen = seen.lock().unwrap();
        written
            .iter()
            .map(|(name, at)| seen[name].saturating_duration_since(*at))
            .collect()
    };
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("### Reconcile latency (`make bench`: e2e/benches/reconcile_latency.rs)\n");
    println!(
        "Workspace created → its Deployment exists, {WORKSPACES} workspaces at {} per second, operator with the default 200 ms debounce (which is part of every latency).\n",
        1000 / INTERVAL.as_millis()
    );
    println!("| p50 | p99 | max |\n|---|---|---|");
    println!(
        "| {:.0} ms | {:.0} ms | {:.0} ms |\n",
        ms(latencies[WORKSPACES / 2]),
        ms(latencies[WORKSPACES * 99 / 100]),
        ms(latencies[WORKSPACES - 1])
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin);
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("clean up");
}
