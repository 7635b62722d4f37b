//! `make dev`'s real IDEs: on the local control plane, whose pods are KWOK's fakes, runs the
//! real code-server (and JupyterLab) that `make real-ides` installed for every Running
//! workspace whose image is one (`guildnet_e2e::ides`), at its pod IP. A workspace that is
//! suspended, deleted or moved to a new pod IP has its IDE stopped (and started again at the
//! new IP); each keeps its home, like a persistent volume, under `.guildnet/dev/ides/`.
//!
//!   KUBECONFIG=.guildnet/kubeconfig dev-ides    # as root: it uses the pods' network namespace
//!
//! Looks every 2 s (a development helper: a list of Workspaces and EndpointSlices); stops its
//! IDEs on SIGTERM or Ctrl-C.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use guildnet_api::workspace::{Workspace, WorkspacePhase};
use guildnet_e2e::cluster::repo_root;
use guildnet_e2e::ides::{Ide, Kind};
use guildnet_e2e::upstream::ready_address;
use guildnet_e2e::{User, client_for, kubeconfig_path};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

/// A workspace, by namespace and name.
type Key = (String, String);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = client_for(&kubeconfig_path(), User::Admin).await;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut running: HashMap<Key, (IpAddr, JoinHandle<()>)> = HashMap::new();
    println!("serving real IDEs at the pod IPs of Running code-server and Jupyter workspaces");
    loop {
        match wanted(&client).await {
            Ok(wanted) => {
                running.retain(|key, (ip, task)| {
                    let keep = wanted.get(key) == Some(ip) && !task.is_finished();
                    if !keep {
                        println!("stopping the IDE of {}/{} at {ip}", key.0, key.1);
                        task.abort();
                    }
                    keep
                });
                for (key, ip) in wanted {
                    running
                        .entry(key.clone())
                        .or_insert_with(|| (ip, serve(client.clone(), key, ip)));
                }
            }
            Err(e) => eprintln!("listing workspaces: {e:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for (_, (_, task)) in running {
        task.abort();
        let _ = task.await;
    }
    Ok(())
}

/// Runs the IDE of workspace `key` at `ip` until the task is aborted (which drops it).
fn serve(client: Client, key: Key, ip: IpAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (namespace, name) = &key;
        println!("starting the IDE of {namespace}/{name} at {ip}");
        let home = repo_root()
            .join(".guildnet/dev/ides")
            .join(format!("{namespace}-{name}"));
        let ide = Ide::start(&client, namespace, name, &home).await;
        println!(
            "{:?} serves {namespace}/{name} (log: {})",
            ide.kind(),
            home.join("ide.log").display()
        );
        std::future::pending::<()>().await;
    })
}

/// The Running, not suspended workspaces whose image is an installed IDE, with the IP of a
/// ready endpoint.
async fn wanted(client: &Client) -> anyhow::Result<BTreeMap<Key, IpAddr>> {
    let workspaces = Api::<Workspace>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default().labels("kubernetes.io/service-name"))
        .await?;
    let mut by_service: BTreeMap<Key, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in &slices.items {
        if let Some(service) = slice.labels().get("kubernetes.io/service-name") {
            let key = (slice.namespace().unwrap_or_default(), service.clone());
            by_service.entry(key).or_default().push(slice);
        }
    }
    Ok(workspaces
        .items
        .iter()
        .filter(|ws| Kind::of_image(&ws.spec.image).is_some_and(Kind::installed))
        .filter(|ws| !ws.is_suspended())
        .filter(|ws| ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Running))
        .filter_map(|ws| {
            let key = (ws.namespace().unwrap_or_default(), ws.name_any());
            let ip = ready_address(by_service.get(&key)?.iter().copied())?;
            Some((key, ip))
        })
        .collect())
}
