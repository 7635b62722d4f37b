//! The operator process: watch caches on every replica, leader election, the metrics and
//! health port, and an orderly shutdown.
//!
//! The life of a replica:
//! 1. Start the watch caches and serve `/metrics`, `/healthz`, `/readyz`.
//! 2. Campaign for the lease ([`leader`]); while this replica leads, reconcile
//!    ([`controller::lead`]); when it stops leading, stop writing at once and wait to lead
//!    again.
//! 3. On SIGTERM or SIGINT: stop taking work, let in-flight reconciles finish within
//!    `--shutdown-timeout`, release the lease (a standby takes over at once), and exit 0.

pub mod leader;

use crate::cluster;
use crate::cluster::remote::Remotes;
use crate::database;
use crate::metrics::Metrics;
use crate::reconcile::handoff::CredentialsSecret;
use crate::reconcile::lead::Term;
use crate::workspace::caches::Caches;
use crate::workspace::controller::{self, Context, Settings};
use guildnet_runtime::health::Health;
use guildnet_runtime::{health, shutdown_signal};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metrics and health port (`--metrics-listen`) cannot be bound.
    #[error("--metrics-listen: {0}")]
    Http(#[from] health::Error),
    /// This hub's id could not be read: its RBAC may get namespace kube-system, or set
    /// `--hub-id`.
    #[error(
        "reading the uid of namespace kube-system (this hub's id): {0}; grant get on that namespace (the chart does) or set --hub-id"
    )]
    HubId(kube::Error),
}

/// How the process runs, from the command line.
pub struct Options {
    /// The workspace controller's settings (`--crash-loop-restarts`, `--idle-action`, …).
    pub controller: Settings,
    /// `None`: no leader election; this process always reconciles (single-replica dev runs).
    pub leader: Option<leader::Settings>,
    /// Names this replica in Events and the lease.
    pub identity: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`--metrics-listen`).
    pub metrics_listen: SocketAddr,
    /// How long in-flight reconciles may take to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// How often each registered cluster is probed.
    pub cluster_probe_interval: Duration,
    /// This hub's id (`guildnet.io/origin` on what it makes in registered clusters).
    pub hub_id: String,
    /// Where the proxy's kubeconfigs of registered clusters go.
    pub credentials: CredentialsSecret,
    /// Where the proxy's admin passwords of GuildDatabases go.
    pub database_credentials: CredentialsSecret,
}

/// The uid of the cluster's `kube-system` namespace: the id a cluster is known by
/// (Kubernetes' ClusterProperty `cluster.clusterset.k8s.io` suggests it too), stable for
/// the cluster's life.
pub async fn cluster_uid(client: &Client) -> Result<String, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = namespaces.get("kube-system").await.map_err(Error::HubId)?;
    namespace.metadata.uid.ok_or_else(|| {
        Error::HubId(kube::Error::Service(
            "namespace kube-system has no uid".into(),
        ))
    })
}

/// Runs the operator until SIGTERM or SIGINT, then shuts down in order. `client` serves the
/// watch caches and the reconciles; `lease_client`, a separate client of the same config,
/// serves leader election alone (see [`leader::Elector::start`]).
pub async fn run(client: Client, lease_client: Client, options: Options) -> Result<(), Error> {
    let caches = Caches::start(&client);
    let metrics = Arc::new(Metrics::new(caches.workspaces()));
    let (stopping_tx, stopping) = watch::channel(false);
    let ready = readiness(caches.synced(), stopping.clone());
    let scraped = metrics.clone();
    let health = Health::new(
        move || *ready.borrow(),
        "watch caches not synced yet, or shutting down",
    )
    .with_metrics(move || scraped.encode());
    let bound = health::serve(options.metrics_listen, health.router()).await?;
    info!(%bound, "serving /metrics, /healthz and /readyz");

    // Without election, this replica leads for good: the sender lives as long as `run`, so
    // `leading` never changes.
    let (_always_tx, always) = watch::channel(true);
    let elector = options
        .leader
        .map(|settings| leader::Elector::start(lease_client, settings, metrics.clone()));
    let leading = match &elector {
        Some(elector) => elector.leading(),
        None => {
            metrics.set_leader(true);
            always
        }
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down: finishing in-flight work, then releasing the lease");
        let _ = stopping_tx.send(true);
    });

    let remotes = Arc::new(Remotes::new(options.hub_id));
    let clusters = Arc::new(cluster::Context {
        client: client.clone(),
        registrations: caches.clusters(),
        workspaces: caches.workspaces(),
        metrics: metrics.clone(),
        probe_interval: options.cluster_probe_interval,
        remotes: remotes.clone(),
        triggers: caches.triggers(),
        changes: caches.changes(),
        credentials: options.credentials,
    });
    let (database_client, database_metrics) = (client.clone(), metrics.clone());
    let ctx = Arc::new(Context::new(
        client,
        options.controller,
        &caches,
        remotes,
        metrics,
        &options.identity,
    ));
    while wait_to_lead(leading.clone(), stopping.clone()).await {
        tokio::join!(
            controller::lead(
                &caches,
                ctx.clone(),
                until(leading.clone(), false),
                until(stopping.clone(), true),
                options.shutdown_timeout,
            ),
            lead_clusters(&caches, clusters.clone(), &leading, &stopping),
            database::lead(
                database_client.clone(),
                database_metrics.clone(),
                &options.identity,
                options.database_credentials.clone(),
                Term {
                    lost: until(leading.clone(), false),
                    shutdown: until(stopping.clone(), true),
                    drain: options.shutdown_timeout,
                },
            ),
        );
    }
    if let Some(elector) = elector {
        elector.release().await;
    }
    info!("shut down");
    Ok(())
}

/// Keeps the registered clusters' instances while this replica leads, from the moment the
/// caches are synced.
async fn lead_clusters(
    caches: &Caches,
    ctx: Arc<cluster::Context>,
    leading: &watch::Receiver<bool>,
    stopping: &watch::Receiver<bool>,
) {
    let (lost, shutdown) = (until(leading.clone(), false), until(stopping.clone(), true));
    let (mut lost, mut shutdown) = (std::pin::pin!(lost), std::pin::pin!(shutdown));
    tokio::select! {
        _ = caches.wait_synced() => {}
        _ = &mut lost => return,
        _ = &mut shutdown => return,
    }
    cluster::lead(ctx, caches.cluster_changes(), lost, shutdown).await;
}

/// Waits until this replica leads (`true`) or shuts down (`false`); shutting down wins.
async fn wait_to_lead(leading: watch::Receiver<bool>, stopping: watch::Receiver<bool>) -> bool {
    if *stopping.borrow() {
        return false;
    }
    tokio::select! {
        biased;
        _ = until(stopping, true) => false,
        _ = until(leading, true) => true,
    }
}

/// Resolves once `value` holds `wanted`, or never when its sender is gone (without a sender
/// the value can no longer change).
async fn until(mut value: watch::Receiver<bool>, wanted: bool) {
    if value.wait_for(|v| *v == wanted).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Ready while the caches are synced and the process is not shutting down.
fn readiness(
    mut synced: watch::Receiver<bool>,
    mut stopping: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let synced = tokio::select! {
            synced = synced.wait_for(|s| *s) => synced.is_ok(),
            _ = stopping.wait_for(|s| *s) => false,
        };
        if !synced {
            return;
        }
        let _ = tx.send(!*stopping.borrow());
        let _ = stopping.wait_for(|s| *s).await;
        let _ = tx.send(false);
    });
    rx
}

/// This replica's name: the pod name when set (Kubernetes' downward API), else the host name
/// and process id, which are unique among processes on one machine too.
pub fn identity(pod_name: Option<String>, hostname: Option<String>, pid: u32) -> String {
    match pod_name.filter(|n| !n.trim().is_empty()) {
        Some(name) => name.trim().to_owned(),
        None => {
            let host = hostname
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "guildnet-operator".into());
            format!("{host}-{pid}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_prefers_the_pod_name() {
        assert_eq!(
            identity(Some("op-7d9f".into()), Some("node1".into()), 42),
            "op-7d9f"
        );
        assert_eq!(identity(None, Some("node1\n".into()), 42), "node1-42");
        assert_eq!(identity(Some(" ".into()), None, 42), "guildnet-operator-42");
    }

    #[tokio::test]
    async fn shutting_down_wins_over_leading() {
        let (_lead_tx, leading) = watch::channel(true);
        let (stop_tx, stopping) = watch::channel(false);
        assert!(wait_to_lead(leading.clone(), stopping.clone()).await);
        stop_tx.send(true).unwrap();
        assert!(!wait_to_lead(leading, stopping).await);
    }

    #[tokio::test]
    async fn readiness_follows_the_caches_then_shutdown() {
        let (synced_tx, synced) = watch::channel(false);
        let (stop_tx, stopping) = watch::channel(false);
        let mut ready = readiness(synced, stopping);
        assert!(!*ready.borrow());
        synced_tx.send(true).unwrap();
        ready.wait_for(|r| *r).await.unwrap();
        stop_tx.send(true).unwrap();
        ready.wait_for(|r| !*r).await.unwrap();
    }
}
