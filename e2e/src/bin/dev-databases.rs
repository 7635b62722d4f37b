//! `make dev`'s RethinkDB peer: on the local control plane, whose pods are KWOK's fakes,
//! serves reqlite (`guildnet_e2e::reqlite`) at the pod IP of every running GuildDatabase
//! server, with the admin password of its `<name>-admin` Secret, so the operator applies
//! the declared schema there. A server that is gone, moved to a new IP or given a new
//! password has its reqlite stopped (and started again). reqlite keeps data in memory: a
//! restart starts empty, and the operator makes the declared schema again.
//!
//!   KUBECONFIG=.guildnet/kubeconfig dev-databases    # as root: it uses the pods' network namespace
//!
//! Looks every 2 s (a development helper: a list of Pods and a read of each admin Secret);
//! stops its servers on SIGTERM or Ctrl-C.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use guildnet_api::database::facts::{ADMIN_PASSWORD_KEY, admin_secret_name};
use guildnet_api::labels;
use guildnet_e2e::reqlite::Reqlite;
use guildnet_e2e::{User, client_for, kubeconfig_path};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::signal::unix::{SignalKind, signal};

/// A server pod, by namespace and name.
type Key = (String, String);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = client_for(&kubeconfig_path(), User::Admin).await;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut running: HashMap<Key, ((IpAddr, String), Reqlite)> = HashMap::new();
    println!("serving reqlite at the pod IPs of GuildDatabase servers");
    loop {
        match wanted(&client).await {
            Ok(wanted) => {
                running.retain(|key, (served, _)| {
                    let keep = wanted.get(key) == Some(served);
                    if !keep {
                        println!("stopping reqlite of {}/{} at {}", key.0, key.1, served.0);
                    }
                    keep
                });
                for (key, served) in wanted {
                    if running.contains_key(&key) {
                        continue;
                    }
                    println!("serving reqlite for {}/{} at {}", key.0, key.1, served.0);
                    let name = format!("dev-{}-{}", key.0, key.1);
                    let server = Reqlite::start(served.0, &served.1, &name).await;
                    running.insert(key, (served, server));
                }
            }
            Err(e) => eprintln!("listing GuildDatabase servers: {e:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}

/// Every running GuildDatabase server pod with an IP, and its database's admin password.
async fn wanted(client: &Client) -> anyhow::Result<BTreeMap<Key, (IpAddr, String)>> {
    let pods: Api<Pod> = Api::all(client.clone());
    let listed = pods
        .list(&ListParams::default().labels(labels::DATABASE))
        .await?;
    let mut wanted = BTreeMap::new();
    for pod in listed.items {
        let status = pod.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let (Some(ip), true) = (ip, running) else {
            continue;
        };
        let namespace = pod.namespace().unwrap_or_default();
        let Some(database) = pod.labels().get(labels::DATABASE) else {
            continue;
        };
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let Some(secret) = secrets.get_opt(&admin_secret_name(database)).await? else {
            continue;
        };
        let password = secret
            .data
            .as_ref()
            .and_then(|d| d.get(ADMIN_PASSWORD_KEY))
            .map(|p| String::from_utf8_lossy(&p.0).into_owned())
            .unwrap_or_default();
        wanted.insert((namespace, pod.name_any()), (ip, password));
    }
    Ok(wanted)
}
