//! The Workspace controller's watch caches: Workspaces, their Pods and GuildNet's children
//! (Deployments, Services, NetworkPolicies, Ingresses, volume claims), watched on every replica whether it leads or not. A standby that becomes the
//! leader reconciles from warm caches at once, and the metrics count Workspaces from them on
//! every replica.

use futures::{Stream, StreamExt};
use guildnet_api::quota::QuotaScope;
use guildnet_api::{Quota, Workspace, labels};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::pin::pin;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};

/// Changes that wait for a slow leader before it falls behind and reconciles everything
/// instead (a burst of pod updates across thousands of workspaces fits).
const TRIGGER_BUFFER: usize = 16 * 1024;

/// The watches a cache is kept for: Workspaces, Pods, Deployments, Services,
/// NetworkPolicies, Ingresses, volume claims and Quotas.
const WATCHES: usize = 8;

/// The annotation in which `kubectl apply` keeps the object it last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Workspace controller's watch caches and the changes they see, kept on every replica
/// whether it leads or not, so a new leader reconciles from warm caches at once.
pub struct Caches {
    workspaces: Store<Workspace>,
    pods: Store<Pod>,
    /// GuildNet's Deployments without their pod template (the status is computed from
    /// their status; whether to write them, from the applied hash), and the metadata of
    /// their Services: triggers of their owners, and what the sweeper looks through for
    /// children whose workspace is gone.
    deployments: Store<Deployment>,
    services: Store<PartialObjectMeta<Service>>,
    network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    ingresses: Store<PartialObjectMeta<Ingress>>,
    /// GuildNet's volume claims: retained ones count against their owner's storage Quota.
    claims: Store<PersistentVolumeClaim>,
    quotas: Store<Quota>,
    /// The workspace each change concerns; a leader's controller subscribes.
    triggers: broadcast::Sender<ObjectRef<Workspace>>,
    /// How many watches have listed everything once.
    synced: watch::Receiver<usize>,
}

impl Caches {
    /// Starts the watches; they run as long as the process. Workspaces and their pods are
    /// cached in full (the reconcile and the metrics read them); Deployments and Services only
    /// as metadata, since they matter only as triggers of their owner and to the sweeper.
    pub fn start(client: &Client) -> Self {
        let managed = watcher::Config::default().labels(&format!("{}=true", labels::MANAGED));
        let (triggers, _) = broadcast::channel(TRIGGER_BUFFER);
        let (synced_tx, synced) = watch::channel(0);
        let synced_tx = Arc::new(synced_tx);

        let (workspaces, writer) = reflector::store();
        let events = watcher(
            Api::<Workspace>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(drop_what_kubectl_keeps)
        .reflect(writer);
        let watch = Watch::new(triggers.clone(), synced_tx.clone());
        tokio::spawn(watch.run("workspaces", events, |ws: &Workspace| {
            vec![ObjectRef::from_obj(ws)]
        }));

        let (pods, writer) = reflector::store();
        let events = watcher(Api::<Pod>::all(client.clone()), managed.clone())
            .default_backoff()
            .modify(keep_pod_status)
            .reflect(writer);
        let watch = Watch::new(triggers.clone(), synced_tx.clone());
        tokio::spawn(watch.run("pods", events, of_workspace));

        let (deployments, writer) = reflector::store();
        let events = watcher(Api::<Deployment>::all(client.clone()), managed.clone())
            .default_backoff()
            .modify(keep_what_is_read)
            .reflect(writer);
        let watch = Watch::new(triggers.clone(), synced_tx.clone());
        tokio::spawn(watch.run("deployments", events, owners));
        let (services, writer) = reflector::store();
        let events = watcher(
            Api::<PartialObjectMeta<Service>>::all(client.clone()),
            managed.clone(),
        )
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(writer);
        let watch = Watch::new(triggers.clone(), synced_tx.clone());
        tokio::spawn(watch.run("services", events, owners));
        let (network_policies, writer) = reflector::store();
        let events = watcher(
            Api::<PartialObjectMeta<NetworkPolicy>>::all(client.clone()),
            managed.clone(),
        )
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(writer);
        let watch = Watch::new(triggers.clone(), synced_tx.clone());
        tokio::spawn(watch.run("networkpolicies", events, owners));
        let (ingresses, writer) = reflector::store();
        let events = watcher(
            Api::<PartialObjectMeta<Ingress>>::all(client.clone()),
            managed.clone(),
        )
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(writer);
        let watch = Watch::new(triggers.clone(), synced_tx.clone());
        tokio::spawn(watch.run("ingresses", events, owners));
        // A claim's change concerns its workspace, and the Quota statuses counting it.
        let (claims, writer) = reflector::store();
        let events = watcher(Api::<PersistentVolumeClaim>::all(client.clone()), managed)
            .default_backoff()
            .modify(drop_managed_fields)
            .reflect(writer);
        let watch = Watch::new(triggers.clone(), synced_tx.clone());
        tokio::spawn(watch.run("persistentvolumeclaims", events, of_workspace));

        // A Quota change may start or refuse any workspace it counts.
        let (quotas, writer) = reflector::store();
        let events = watcher(
            Api::<Quota>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(writer);
        let watch = Watch::new(triggers.clone(), synced_tx);
        let counted = workspaces.clone();
        tokio::spawn(watch.run("quotas", events, move |quota: &Quota| {
            let cluster_wide = quota.spec.scope == Some(QuotaScope::Cluster);
            counted
                .state()
                .iter()
                .filter(|ws| cluster_wide || ws.namespace() == quota.namespace())
                .map(|ws| ObjectRef::from_obj(&**ws))
                .collect()
        }));

        Self {
            workspaces,
            pods,
            deployments,
            services,
            network_policies,
            ingresses,
            claims,
            quotas,
            triggers,
            synced,
        }
    }

    /// The Quota cache.
    pub(crate) fn quotas(&self) -> Store<Quota> {
        self.quotas.clone()
    }

    /// The Workspace cache (what the metrics count at scrape time).
    pub fn workspaces(&self) -> Store<Workspace> {
        self.workspaces.clone()
    }

    /// GuildNet's Deployments, without their pod templates.
    pub(crate) fn deployments(&self) -> Store<Deployment> {
        self.deployments.clone()
    }

    /// GuildNet's Services (metadata).
    pub(crate) fn services(&self) -> Store<PartialObjectMeta<Service>> {
        self.services.clone()
    }

    /// GuildNet's NetworkPolicies (metadata).
    pub(crate) fn network_policies(&self) -> Store<PartialObjectMeta<NetworkPolicy>> {
        self.network_policies.clone()
    }

    /// GuildNet's Ingresses (metadata).
    pub(crate) fn ingresses(&self) -> Store<PartialObjectMeta<Ingress>> {
        self.ingresses.clone()
    }

    /// GuildNet's volume claims.
    pub(crate) fn claims(&self) -> Store<PersistentVolumeClaim> {
        self.claims.clone()
    }

    /// The Pod cache (pods of managed workspaces).
    pub(crate) fn pods(&self) -> Store<Pod> {
        self.pods.clone()
    }

    /// Resolves once every watch has listed everything.
    pub(crate) async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        // The senders live in the watch tasks, which run as long as the process.
        let _ = synced.wait_for(|n| *n == WATCHES).await;
    }

    /// Changes to `true` once every watch has listed everything; `/readyz` reports it.
    pub fn synced(&self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let mut synced = self.synced.clone();
        tokio::spawn(async move {
            if synced.wait_for(|n| *n == WATCHES).await.is_ok() {
                let _ = tx.send(true);
            }
        });
        rx
    }

    /// The workspace each change from now on concerns (what the Quota statuses follow).
    pub(crate) fn changes(&self) -> broadcast::Receiver<ObjectRef<Workspace>> {
        self.triggers.subscribe()
    }

    /// Every cached workspace now, then each one a change concerns. When the subscriber
    /// falls so far behind that changes were dropped, it gets every workspace again.
    pub(crate) fn subscribe(&self) -> impl Stream<Item = ObjectRef<Workspace>> + Send + 'static {
        let receiver = self.triggers.subscribe();
        let store = self.workspaces.clone();
        let everything = |store: &Store<Workspace>| -> Vec<ObjectRef<Workspace>> {
            store
                .state()
                .iter()
                .map(|ws| ObjectRef::from_obj(&**ws))
                .collect()
        };
        let now = everything(&store);
        let changes = futures::stream::unfold(receiver, move |mut receiver| {
            let store = store.clone();
            async move {
                match receiver.recv().await {
                    Ok(one) => Some((vec![one], receiver)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(
                            missed,
                            "fell behind the watches: reconciling every workspace"
                        );
                        Some((everything(&store), receiver))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            }
        });
        futures::stream::iter(now).chain(changes.flat_map(futures::stream::iter))
    }
}

/// Drops what nothing reads from a cached Deployment: the pod template (its containers,
/// volumes, probes: most of its size) and the managed fields.
fn keep_what_is_read(deployment: &mut Deployment) {
    deployment.metadata.managed_fields = None;
    deployment.spec.template = Default::default();
}

/// Keeps a pod's metadata and status, which the workspace's status is computed from.
fn keep_pod_status(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.spec = None;
}

/// Managed fields are most of a small object's size, and nothing here reads them.
fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Drops the managed fields and the copy of the whole object that `kubectl apply` keeps in
/// an annotation (as large again as the spec); nothing here reads either.
fn drop_what_kubectl_keeps<K: Resource>(object: &mut K) {
    drop_managed_fields(object);
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The workspace an object of GuildNet's was made for (its `guildnet.io/id`): a pod or a
/// claim, which the workspace does not necessarily own.
fn of_workspace<K: Resource>(object: &K) -> Vec<ObjectRef<Workspace>> {
    let name = object.labels().get(labels::ID);
    name.map(|n| ObjectRef::new(n).within(&object.namespace().unwrap_or_default()))
        .into_iter()
        .collect()
}

/// The workspaces that own `child` (its Deployment or Service).
fn owners<K: Resource>(child: &K) -> Vec<ObjectRef<Workspace>> {
    let namespace = child.meta().namespace.clone().unwrap_or_default();
    child
        .owner_references()
        .iter()
        .filter(|o| o.kind == Workspace::kind(&()) && o.api_version == Workspace::api_version(&()))
        .map(|o| ObjectRef::new(&o.name).within(&namespace))
        .collect()
}

/// One watch feeding the triggers and counting itself synced after its first full list.
struct Watch {
    triggers: broadcast::Sender<ObjectRef<Workspace>>,
    synced: Arc<watch::Sender<usize>>,
}

impl Watch {
    fn new(
        triggers: broadcast::Sender<ObjectRef<Workspace>>,
        synced: Arc<watch::Sender<usize>>,
    ) -> Self {
        Self { triggers, synced }
    }

    /// Drives `events` for as long as the process runs (the watcher retries with backoff),
    /// sending the workspaces each object concerns. Objects of a re-list trigger too: changes
    /// made while the watch was down are only seen that way.
    async fn run<K>(
        self,
        what: &'static str,
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
        concerns: impl Fn(&K) -> Vec<ObjectRef<Workspace>> + Send,
    ) {
        let mut events = pin!(events);
        let mut synced = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) if !synced => {
                    synced = true;
                    self.synced.send_modify(|n| *n += 1);
                    debug!(what, "watch cache synced");
                }
                Ok(
                    watcher::Event::Apply(obj)
                    | watcher::Event::InitApply(obj)
                    | watcher::Event::Delete(obj),
                ) => {
                    for workspace in concerns(&obj) {
                        // No receiver while this replica does not lead: nothing to do.
                        let _ = self.triggers.send(workspace);
                    }
                }
                Ok(_) => {}
                Err(e) => guildnet_runtime::watch::log_error(what, &e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(refs: &[(&str, &str, &str)]) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.namespace = Some("team-a".into());
        d.metadata.owner_references = Some(
            refs.iter()
                .map(|(api_version, kind, name)| OwnerReference {
                    api_version: (*api_version).into(),
                    kind: (*kind).into(),
                    name: (*name).into(),
                    ..Default::default()
                })
                .collect(),
        );
        d
    }

    #[test]
    fn a_child_concerns_the_workspaces_that_own_it() {
        let child = owned_by(&[
            ("guildnet.io/v1alpha1", "Workspace", "ide"),
            ("apps/v1", "ReplicaSet", "ide-1"),
            ("other.io/v1", "Workspace", "not-ours"),
        ]);
        assert_eq!(
            owners(&child),
            vec![ObjectRef::<Workspace>::new("ide").within("team-a")]
        );
        assert!(owners(&owned_by(&[])).is_empty());
    }
}
