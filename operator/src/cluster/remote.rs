//! The connections to registered clusters that workspaces are placed through: for each
//! connected cluster its client and the watch caches of what this hub made in its
//! namespace there. A cluster's instance publishes its connection once the checks it makes
//! per connection passed, replaces it when the kubeconfig or the namespace changes, and
//! withdraws it when the registration goes or this replica stops leading; the Workspace
//! controller only reads them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use guildnet_api::cluster::RetainedClaim;
use guildnet_api::cluster::facts::MAX_LISTED_RETAINED_CLAIMS;
use guildnet_api::workspace::facts::{hub_view_of_placed_claim, is_retained_claim};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Client;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::workspace::caches::RemoteCaches;

/// A registered cluster as the Workspace controller reaches it.
pub struct Remote {
    /// The cluster's own client (its own pool and timeouts).
    pub client: Client,
    /// The namespace there that placed workspaces' objects go to.
    pub namespace: String,
    /// What this hub made in that namespace.
    pub(crate) caches: RemoteCaches,
    synced: watch::Receiver<usize>,
    reconciles: Arc<Semaphore>,
}

/// How many reconciles of one cluster's workspaces run at once, at most: a cluster that
/// hangs holds that many of the controller's slots (`--concurrency`, 16 by default), each
/// for at most the reconcile's budget, and never the rest.
pub const RECONCILES_PER_CLUSTER: usize = 4;

impl Remote {
    pub(crate) fn new(
        client: Client,
        namespace: String,
        caches: RemoteCaches,
        synced: watch::Receiver<usize>,
    ) -> Self {
        Self {
            client,
            namespace,
            caches,
            synced,
            reconciles: Arc::new(Semaphore::new(RECONCILES_PER_CLUSTER)),
        }
    }

    /// Waits until one more reconcile of this cluster's workspaces may run; it may until
    /// the permit is dropped.
    pub async fn reconcile_permit(&self) -> OwnedSemaphorePermit {
        (self.reconciles.clone().acquire_owned().await).expect("the semaphore is never closed")
    }

    /// Whether its caches have listed everything once (until then, a child missing from
    /// them may exist).
    pub fn is_synced(&self) -> bool {
        RemoteCaches::is_synced(&self.synced)
    }

    /// The retained claims this hub's workspaces left there, as the hub counts them (what
    /// the registration's status lists for admission): the oldest first, at most
    /// [`MAX_LISTED_RETAINED_CLAIMS`]. `None` until the caches have listed once.
    pub fn retained_claims(&self) -> Option<Vec<RetainedClaim>> {
        if !self.is_synced() {
            return None;
        }
        let mut claims = self.caches.children.claims.state_filter(is_retained_claim);
        claims.sort_by(|a, b| {
            let key = |c: &PersistentVolumeClaim| {
                (
                    c.metadata.creation_timestamp.clone(),
                    c.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        Some(
            claims
                .iter()
                .filter_map(|claim| hub_view_of_placed_claim(claim))
                .filter_map(|view| RetainedClaim::of_hub_view(&view))
                .take(MAX_LISTED_RETAINED_CLAIMS)
                .collect(),
        )
    }
}

/// The connected clusters, by registration name, and this hub's id.
pub struct Remotes {
    origin: String,
    connected: Mutex<BTreeMap<String, Arc<Remote>>>,
}

impl Remotes {
    /// `origin`: this hub's id (`guildnet.io/origin` on everything it makes there).
    pub fn new(origin: String) -> Self {
        Self {
            origin,
            connected: Mutex::default(),
        }
    }

    /// This hub's id.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The connection to `cluster`, if it has one now.
    pub fn get(&self, cluster: &str) -> Option<Arc<Remote>> {
        self.connected.lock().unwrap().get(cluster).cloned()
    }

    /// Every connection now, by registration name.
    pub fn connected(&self) -> Vec<(String, Arc<Remote>)> {
        let connected = self.connected.lock().unwrap();
        (connected.iter())
            .map(|(cluster, remote)| (cluster.clone(), remote.clone()))
            .collect()
    }

    /// The claims in every connected cluster that `keep` keeps, each as the hub counts it
    /// ([`hub_view_of_placed_claim`]): retained ones there count against their owner's
    /// Quota like retained ones here. A cluster without a connection counts none until it
    /// has one again.
    pub fn claims_in_hub_terms(
        &self,
        keep: impl Fn(&PersistentVolumeClaim) -> bool,
    ) -> Vec<Arc<PersistentVolumeClaim>> {
        let connected = self.connected.lock().unwrap();
        (connected.values())
            .flat_map(|remote| remote.caches.children.claims.state_filter(&keep))
            .filter_map(|claim| hub_view_of_placed_claim(&claim).map(Arc::new))
            .collect()
    }

    pub(crate) fn publish(&self, cluster: &str, remote: Arc<Remote>) {
        self.connected
            .lock()
            .unwrap()
            .insert(cluster.to_owned(), remote);
    }

    pub(crate) fn withdraw(&self, cluster: &str) {
        self.connected.lock().unwrap().remove(cluster);
    }
}
