//! Registered clusters (ClusterRegistration). While this replica leads, each registration
//! has an [`instance`]: its own client, made from the vetted kubeconfig in its Secret
//! (`guildnet_runtime::kubeconfig`), a probe loop deciding with hysteresis whether the cluster is reachable
//! ([`health`]), and the status it writes ([`status`]). An instance is started when its
//! registration appears and stopped — tasks cancelled and joined, metric series removed —
//! when the registration goes or leadership ends; a slow or dead cluster holds only its own
//! instance.

pub mod health;
pub mod instance;
pub mod remote;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use guildnet_api::{ClusterRegistration, Workspace};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, broadcast};
use tracing::warn;

use crate::metrics::Metrics;
use crate::reconcile::handoff::{CredentialsSecret, Handed};
use instance::Instance;
use remote::Remotes;

/// What the instances share.
pub struct Context {
    /// The hub's client: Secrets are read and statuses written with it.
    pub client: Client,
    /// Every ClusterRegistration.
    pub registrations: Store<ClusterRegistration>,
    /// Every Workspace: those placed on a cluster are counted in its status.
    pub workspaces: Store<Workspace>,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// How often each cluster is probed (`--cluster-probe-interval`).
    pub probe_interval: Duration,
    /// Where each instance publishes its connection for the Workspace controller.
    pub remotes: Arc<Remotes>,
    /// Where the remote caches send the workspaces their changes concern.
    pub triggers: broadcast::Sender<ObjectRef<Workspace>>,
    /// Notified on every change the remote caches see (what the Quota statuses follow).
    pub changes: Arc<Notify>,
    /// Where the proxy finds the kubeconfigs of clusters it reaches through their API
    /// server.
    pub credentials: CredentialsSecret,
}

/// Keeps one instance per registration from now until `lost` or `shutdown` resolves, then
/// stops them all and returns once nothing of them runs. `changes` is notified whenever a
/// registration changes.
pub async fn lead(
    ctx: Arc<Context>,
    changes: Arc<Notify>,
    lost: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
) {
    let (mut lost, mut shutdown) = (std::pin::pin!(lost), std::pin::pin!(shutdown));
    let mut instances = BTreeMap::new();
    take_back_strays(&ctx).await;
    loop {
        follow(&ctx, &mut instances).await;
        tokio::select! {
            _ = changes.notified() => {}
            _ = &mut lost => break,
            _ = &mut shutdown => break,
        }
    }
    let stopping = std::mem::take(&mut instances)
        .into_values()
        .map(|instance| instance.stop(&ctx));
    futures::future::join_all(stopping).await;
}

/// Starts an instance for each registration without one, and stops those whose
/// registration is gone.
async fn follow(ctx: &Arc<Context>, instances: &mut BTreeMap<String, Instance>) {
    let registered: BTreeSet<String> = ctx
        .registrations
        .state()
        .iter()
        .map(|r| r.name_any())
        .collect();
    let gone: Vec<String> = instances
        .keys()
        .filter(|name| !registered.contains(*name))
        .cloned()
        .collect();
    let stopping = gone
        .iter()
        .filter_map(|name| instances.remove(name))
        .map(|instance| instance.stop(ctx));
    futures::future::join_all(stopping).await;
    for name in &gone {
        take_back(ctx, name).await;
    }
    for name in registered {
        instances
            .entry(name)
            .or_insert_with_key(|name| Instance::start(name, ctx.clone()));
    }
}

/// Removes from the proxy's credentials Secret the keys of clusters no longer registered
/// (deleted while no replica led).
async fn take_back_strays(ctx: &Context) {
    match ctx.credentials.keys(&ctx.client).await {
        Ok(handed) => {
            for cluster in handed {
                if ctx.registration(&cluster).is_none() {
                    take_back(ctx, &cluster).await;
                }
            }
        }
        Err(error) => warn!(%error, "could not read the proxy's credentials Secret"),
    }
}

/// Removes `cluster`'s kubeconfig from the proxy's credentials Secret.
async fn take_back(ctx: &Context, cluster: &str) {
    if let Err(error) = ctx
        .credentials
        .hand(&ctx.client, cluster, None, Handed::Unknown)
        .await
    {
        warn!(cluster, %error, "could not take the cluster's kubeconfig back from the proxy");
    }
}
