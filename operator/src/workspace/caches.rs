//! The Workspace controller's watch caches: Workspaces, their Pods and GuildNet's children
//! (Deployments, Services, NetworkPolicies, Ingresses, volume claims), watched on every replica whether it leads or not. A standby that becomes the
//! leader reconciles from warm caches at once, and the metrics count Workspaces from them on
//! every replica.

use super::views::{DeploymentView, PodView};
use futures::{Stream, StreamExt};
use guildnet_api::quota::QuotaScope;
use guildnet_api::{ClusterRegistration, GuildDatabase, Quota, Workspace, labels};
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateTerminated, ContainerStatus, PersistentVolumeClaim,
    PodStatus, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::pin::pin;
use std::sync::Arc;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Changes that wait for a slow leader before it falls behind and reconciles everything
/// instead (a burst of pod updates across thousands of workspaces fits).
const TRIGGER_BUFFER: usize = 16 * 1024;

/// The watches a cache is kept for: Workspaces, Pods, Deployments, Services,
/// NetworkPolicies, Ingresses, volume claims, Quotas, GuildDatabases, ClusterRegistrations
/// and the EndpointSlices mirrored for placed workspaces.
const WATCHES: usize = 11;

/// The annotation in which `kubectl apply` keeps the object it last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Workspace controller's watch caches and the changes they see, kept on every replica
/// whether it leads or not, so a new leader reconciles from warm caches at once.
pub struct Caches {
    workspaces: Store<Workspace>,
    /// GuildNet's children in this cluster.
    children: ChildCaches,
    quotas: Store<Quota>,
    /// GuildDatabases: their storage counts against their owners' Quotas.
    databases: Store<GuildDatabase>,
    /// Registered clusters, and the notice of their changes (what their instances follow).
    clusters: Store<ClusterRegistration>,
    cluster_changes: Arc<Notify>,
    /// The EndpointSlices kept here for placed workspaces, as metadata.
    mirrored_slices: Store<PartialObjectMeta<EndpointSlice>>,
    /// The workspace each change concerns, sent only when the change is one its reconcile
    /// reads; a leader's controller subscribes.
    triggers: broadcast::Sender<ObjectRef<Workspace>>,
    /// Notified on every change, status changes included (what the Quota statuses follow).
    changed: Arc<Notify>,
    /// How many watches have listed everything once.
    synced: watch::Receiver<usize>,
}

impl Caches {
    /// Starts the watches; they run as long as the process. Workspaces are cached in full
    /// (the reconcile and the metrics read them); Pods and Deployments as views of what is
    /// read; Services, NetworkPolicies and Ingresses only as metadata (metadata-only watches),
    /// since they matter only as triggers of their owner and to the sweeper.
    pub fn start(client: &Client) -> Self {
        let managed = watcher::Config::default().labels(&format!("{}=true", labels::MANAGED));
        let all = watcher::Config::default;
        let (triggers, _) = broadcast::channel(TRIGGER_BUFFER);
        let (synced_tx, synced) = watch::channel(0);
        let watch = Watch {
            triggers: triggers.clone(),
            changed: Arc::new(Notify::new()),
            synced: Arc::new(synced_tx),
            tasks: None,
        };
        let changed = watch.changed.clone();

        let workspaces = watch.start(
            "workspaces",
            watcher(Api::<Workspace>::all(client.clone()), all()),
            drop_what_kubectl_keeps,
            |ws: &Workspace| vec![ObjectRef::from_obj(ws)],
            same_but_status_workspace,
        );
        // A claim's change concerns its workspace, and the Quota statuses counting it.
        let everywhere = ApiScope {
            client: client.clone(),
            namespace: None,
        };
        let of_own = Concerns {
            labelled: of_workspace,
            owned: owners,
        };
        let children = ChildCaches::start(&watch, &everywhere, &managed, of_own);
        // A Quota change may start or refuse any workspace it counts; its status (which
        // GuildNet writes) refuses nothing.
        let counted = workspaces.clone();
        let quotas = watch.start(
            "quotas",
            watcher(Api::<Quota>::all(client.clone()), all()),
            drop_managed_fields,
            move |quota: &Quota| {
                let cluster_wide = quota.spec.scope == Some(QuotaScope::Cluster);
                counted
                    .state()
                    .iter()
                    .filter(|ws| cluster_wide || ws.namespace() == quota.namespace())
                    .map(|ws| ObjectRef::from_obj(&**ws))
                    .collect()
            },
            same_but_status_quota,
        );
        // A database's storage counts against its owner's Quotas: a change may refuse the
        // owner's workspaces counted after it, which their next reconcile decides; its
        // status counts for nothing.
        let databases = watch.start(
            "guilddatabases",
            watcher(Api::<GuildDatabase>::all(client.clone()), all()),
            drop_what_kubectl_keeps,
            |_: &GuildDatabase| Vec::new(),
            same_but_status_database,
        );
        // A registration's changes concern the workspaces placed on it, and those waiting
        // for a cluster; they are followed by the registrations' instances, through a
        // notice of their own.
        let cluster_watch = Watch {
            changed: Arc::new(Notify::new()),
            ..watch.clone()
        };
        let cluster_changes = cluster_watch.changed.clone();
        let placed = workspaces.clone();
        let clusters = cluster_watch.start(
            "clusterregistrations",
            watcher(Api::<ClusterRegistration>::all(client.clone()), all()),
            drop_managed_fields,
            move |cluster: &ClusterRegistration| {
                let name = cluster.name_any();
                placed
                    .state()
                    .iter()
                    .filter(|ws| ws.follows_cluster(&name))
                    .map(|ws| ObjectRef::from_obj(&**ws))
                    .collect()
            },
            same_but_status_cluster,
        );
        let mirrored = watcher::Config::default().labels(&format!(
            "{}={}",
            labels::ENDPOINT_SLICE_MANAGED_BY,
            labels::ENDPOINT_SLICE_MIRRORED_BY
        ));
        let mirrored_slices = watch.start_metadata::<EndpointSlice>(
            "mirrored endpointslices",
            Api::all(client.clone()),
            &mirrored,
            owners,
        );

        Self {
            workspaces,
            children,
            quotas,
            databases,
            clusters,
            cluster_changes,
            mirrored_slices,
            triggers,
            changed,
            synced,
        }
    }

    /// The ClusterRegistration cache.
    pub fn clusters(&self) -> Store<ClusterRegistration> {
        self.clusters.clone()
    }

    /// Notified on every change to a ClusterRegistration, statuses included.
    pub fn cluster_changes(&self) -> Arc<Notify> {
        self.cluster_changes.clone()
    }

    /// The Quota cache.
    pub(crate) fn quotas(&self) -> Store<Quota> {
        self.quotas.clone()
    }

    /// The GuildDatabase cache.
    pub(crate) fn databases(&self) -> Store<GuildDatabase> {
        self.databases.clone()
    }

    /// The Workspace cache (what the metrics count at scrape time).
    pub fn workspaces(&self) -> Store<Workspace> {
        self.workspaces.clone()
    }

    /// The EndpointSlices kept here for placed workspaces.
    pub(crate) fn mirrored_slices(&self) -> Store<PartialObjectMeta<EndpointSlice>> {
        self.mirrored_slices.clone()
    }

    /// GuildNet's children in this cluster.
    pub(crate) fn children(&self) -> &ChildCaches {
        &self.children
    }

    /// Where a change sends the workspaces it concerns: the registered clusters' caches
    /// send theirs here too.
    pub(crate) fn triggers(&self) -> broadcast::Sender<ObjectRef<Workspace>> {
        self.triggers.clone()
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

    /// Notified on every change to a cached object, statuses included (what the Quota
    /// statuses follow: a workspace held by its Quota says so only in its status).
    pub(crate) fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
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
/// volumes, probes: most of its size), the managed fields, and the parts of its status the
/// workspace's status is not computed from (available counts, and the conditions' times and
/// every condition but a failed rollout), which the Deployment controller rewrites often.
fn keep_what_is_read(deployment: &mut DeploymentView) {
    deployment.metadata.managed_fields = None;
    deployment.status = deployment.status.take().map(|status| DeploymentStatus {
        observed_generation: status.observed_generation,
        replicas: status.replicas,
        updated_replicas: status.updated_replicas,
        ready_replicas: status.ready_replicas,
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| {
                    c.type_.as_deref() == Some("Progressing")
                        && c.status.as_deref() == Some("False")
                })
                .map(|c| DeploymentCondition {
                    last_transition_time: None,
                    last_update_time: None,
                    ..c
                })
                .collect()
        }),
        ..Default::default()
    });
}

/// Keeps of a pod what the workspace's status is computed from: the labels that name its
/// workspace, whether it is being deleted, and its containers' names, images, restart counts,
/// waiting reasons and last exits. The rest changes often (conditions, IPs, start times)
/// and would wake a reconcile that decides nothing new.
fn keep_what_status_reads(pod: &mut PodView) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.owner_references = None;
    pod.status = pod.status.take().map(|status| PodStatus {
        container_statuses: status.container_statuses.map(|containers| {
            containers
                .into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    image: c.image,
                    restart_count: c.restart_count,
                    state: c.state.map(|state| ContainerState {
                        waiting: state.waiting,
                        ..Default::default()
                    }),
                    last_state: c.last_state.map(|state| ContainerState {
                        terminated: state.terminated.map(|t| ContainerStateTerminated {
                            exit_code: t.exit_code,
                            reason: t.reason,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
}

/// Whether two versions of an object's metadata differ only in their resourceVersion.
fn same_metadata(old: &ObjectMeta, new: &ObjectMeta) -> bool {
    let mut new = new.clone();
    new.resource_version.clone_from(&old.resource_version);
    *old == new
}

/// The caches of GuildNet's children in one cluster — this one, or a registered one — that
/// applying a workspace's children and computing its status read.
#[derive(Clone)]
pub(crate) struct ChildCaches {
    /// The workspaces' pods, as the views of what their status reads.
    pub pods: Store<PodView>,
    /// Deployments without their pod template (the status is computed from their status;
    /// whether to write them, from the applied hash).
    pub deployments: Store<DeploymentView>,
    /// Services, NetworkPolicies and Ingresses as metadata: triggers of their owners, and
    /// what the sweeper looks through for children whose workspace is gone.
    pub services: Store<PartialObjectMeta<Service>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
    /// Volume claims: retained ones count against their owner's storage Quota.
    pub claims: Store<PersistentVolumeClaim>,
}

impl ChildCaches {
    /// Starts watching the children `config` selects through `api` (every namespace, or
    /// one), each change triggering the workspaces it `concerns`.
    fn start(
        watch: &Watch,
        scope: &ApiScope,
        config: &watcher::Config,
        concerns: Concerns,
    ) -> Self {
        let Concerns { labelled, owned } = concerns;
        Self {
            pods: watch.start(
                "pods",
                watcher(scope.of::<PodView>(), config.clone()),
                keep_what_status_reads,
                move |pod: &PodView| labelled(&pod.metadata),
                same_pod,
            ),
            deployments: watch.start(
                "deployments",
                watcher(scope.of::<DeploymentView>(), config.clone()),
                keep_what_is_read,
                move |d: &DeploymentView| owned(&d.metadata),
                same_deployment,
            ),
            services: watch.start_metadata::<Service>("services", scope.of(), config, owned),
            network_policies: watch.start_metadata::<NetworkPolicy>(
                "networkpolicies",
                scope.of(),
                config,
                owned,
            ),
            ingresses: watch.start_metadata::<Ingress>("ingresses", scope.of(), config, owned),
            claims: watch.start(
                "persistentvolumeclaims",
                watcher(scope.of::<PersistentVolumeClaim>(), config.clone()),
                drop_managed_fields,
                move |claim: &PersistentVolumeClaim| labelled(&claim.metadata),
                same_claim,
            ),
        }
    }
}

impl ChildCaches {
    /// The pods of the workspace whose children are named `name` in `namespace`.
    pub(crate) fn pods_of(&self, name: &str, namespace: &str) -> Vec<Arc<PodView>> {
        self.pods.state_filter(|p| {
            p.namespace().as_deref() == Some(namespace)
                && p.labels().get(labels::ID).map(String::as_str) == Some(name)
        })
    }

    /// The uids of every cached child but the pods.
    pub(crate) fn uids(&self) -> std::collections::HashSet<String> {
        (self.deployments.state().iter().filter_map(|d| d.uid()))
            .chain(self.services.state().iter().filter_map(|s| s.uid()))
            .chain(self.network_policies.state().iter().filter_map(|p| p.uid()))
            .chain(self.ingresses.state().iter().filter_map(|i| i.uid()))
            .chain(self.claims.state().iter().filter_map(|c| c.uid()))
            .collect()
    }
}

/// Which workspaces a child's change concerns: for pods and claims, which their workspace
/// does not necessarily own, by their labels; for the others, by who owns them.
#[derive(Clone, Copy)]
struct Concerns {
    labelled: fn(&ObjectMeta) -> Vec<ObjectRef<Workspace>>,
    owned: fn(&ObjectMeta) -> Vec<ObjectRef<Workspace>>,
}

/// Where a set of watches looks: every namespace of a cluster, or one.
#[derive(Clone)]
struct ApiScope {
    client: Client,
    namespace: Option<String>,
}

impl ApiScope {
    fn of<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }
}

/// The caches of what this hub made in a registered cluster's namespace — the children of
/// the workspaces placed there, and each one's anchor (the ConfigMap that owns them there)
/// — selected by this hub's [`labels::ORIGIN`]. Their changes trigger the hub workspace
/// their [`labels::HUB_NAMESPACE`] and [`labels::HUB_NAME`] labels name, and notify
/// `changed` (retained claims there count in Quota statuses). The watches run on `tasks`
/// until `token` is cancelled.
pub(crate) struct RemoteCaches {
    pub children: ChildCaches,
    pub anchors: Store<PartialObjectMeta<ConfigMap>>,
    /// The EndpointSlices of the placed workspaces' Services (their controller copies the
    /// Services' labels onto them): where their pods answer.
    pub endpoint_slices: Store<EndpointSlice>,
}

impl RemoteCaches {
    /// How many watches a [`RemoteCaches`] keeps.
    const WATCHES: usize = 8;

    pub(crate) fn start(
        client: &Client,
        namespace: &str,
        origin: &str,
        triggers: &broadcast::Sender<ObjectRef<Workspace>>,
        changed: &Arc<Notify>,
        tasks: &TaskTracker,
        token: &CancellationToken,
    ) -> (Self, watch::Receiver<usize>) {
        let (synced_tx, synced) = watch::channel(0);
        let watch = Watch {
            triggers: triggers.clone(),
            changed: changed.clone(),
            synced: Arc::new(synced_tx),
            tasks: Some((tasks.clone(), token.clone())),
        };
        let scope = ApiScope {
            client: client.clone(),
            namespace: Some(namespace.to_owned()),
        };
        let config = watcher::Config::default().labels(&format!("{}={origin}", labels::ORIGIN));
        let by_labels = Concerns {
            labelled: of_hub_workspace,
            owned: of_hub_workspace,
        };
        let children = ChildCaches::start(&watch, &scope, &config, by_labels);
        let anchors =
            watch.start_metadata::<ConfigMap>("anchors", scope.of(), &config, of_hub_workspace);
        let endpoint_slices = watch.start(
            "endpointslices",
            watcher(scope.of::<EndpointSlice>(), config.clone()),
            drop_managed_fields,
            |slice: &EndpointSlice| of_hub_workspace(&slice.metadata),
            same_slice,
        );
        let caches = Self {
            children,
            anchors,
            endpoint_slices,
        };
        (caches, synced)
    }

    /// Whether every watch has listed everything once.
    pub(crate) fn is_synced(synced: &watch::Receiver<usize>) -> bool {
        *synced.borrow() == Self::WATCHES
    }
}

/// The hub workspace a registered cluster's object was made for, by its labels.
fn of_hub_workspace(meta: &ObjectMeta) -> Vec<ObjectRef<Workspace>> {
    let labels = meta.labels.as_ref();
    let label = |key| labels.and_then(|l| l.get(key));
    match (label(labels::HUB_NAMESPACE), label(labels::HUB_NAME)) {
        (Some(namespace), Some(name)) => vec![ObjectRef::new(name).within(namespace)],
        _ => Vec::new(),
    }
}

// What a change must touch to wake a reconcile, kind by kind (the cached, trimmed objects).

/// A workspace's own status is what its reconcile writes (and the proxy's last access): it
/// decides nothing the metadata and spec do not.
fn same_but_status_workspace(old: &Workspace, new: &Workspace) -> bool {
    same_metadata(&old.metadata, &new.metadata) && old.spec == new.spec
}

fn same_pod(old: &PodView, new: &PodView) -> bool {
    same_metadata(&old.metadata, &new.metadata) && old.status == new.status
}

fn same_deployment(old: &DeploymentView, new: &DeploymentView) -> bool {
    same_metadata(&old.metadata, &new.metadata) && old.spec == new.spec && old.status == new.status
}

fn same_slice(old: &EndpointSlice, new: &EndpointSlice) -> bool {
    same_metadata(&old.metadata, &new.metadata)
        && old.endpoints == new.endpoints
        && old.ports == new.ports
}

fn same_claim(old: &PersistentVolumeClaim, new: &PersistentVolumeClaim) -> bool {
    same_metadata(&old.metadata, &new.metadata) && old.spec == new.spec && old.status == new.status
}

/// A Quota's status is what GuildNet writes; its spec is what refuses or admits.
/// A registration's status is written by the operator; what its workspaces follow is its
/// spec, labels and whether it is reachable.
fn same_but_status_cluster(old: &ClusterRegistration, new: &ClusterRegistration) -> bool {
    old.spec == new.spec
        && old.metadata.labels == new.metadata.labels
        && old.metadata.deletion_timestamp == new.metadata.deletion_timestamp
        && old.is_reachable() == new.is_reachable()
}

fn same_but_status_database(old: &GuildDatabase, new: &GuildDatabase) -> bool {
    same_metadata(&old.metadata, &new.metadata) && old.spec == new.spec
}

fn same_but_status_quota(old: &Quota, new: &Quota) -> bool {
    same_metadata(&old.metadata, &new.metadata) && old.spec == new.spec
}

fn same_metadata_only<K>(old: &PartialObjectMeta<K>, new: &PartialObjectMeta<K>) -> bool {
    same_metadata(&old.metadata, &new.metadata)
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
fn of_workspace(meta: &ObjectMeta) -> Vec<ObjectRef<Workspace>> {
    let name = meta.labels.as_ref().and_then(|l| l.get(labels::ID));
    name.map(|n| ObjectRef::new(n).within(meta.namespace.as_deref().unwrap_or_default()))
        .into_iter()
        .collect()
}

/// The workspaces that own a child (its Deployment or Service).
fn owners(child: &ObjectMeta) -> Vec<ObjectRef<Workspace>> {
    let namespace = child.namespace.clone().unwrap_or_default();
    child
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == Workspace::kind(&()) && o.api_version == Workspace::api_version(&()))
        .map(|o| ObjectRef::new(&o.name).within(&namespace))
        .collect()
}

/// The watches' common ends: the triggers, the change notice and the count of synced
/// watches.
#[derive(Clone)]
struct Watch {
    triggers: broadcast::Sender<ObjectRef<Workspace>>,
    changed: Arc<Notify>,
    synced: Arc<watch::Sender<usize>>,
    /// Where the watches run until the token is cancelled; `None`: as long as the process.
    tasks: Option<(TaskTracker, CancellationToken)>,
}

impl Watch {
    /// Caches what `events` show, each object trimmed by `keep`, for as long as the process
    /// runs (the watcher retries with backoff), and triggers the workspaces an object
    /// `concerns` whenever it is new, deleted, or changed in what `unchanged` compares.
    fn start<K>(
        &self,
        what: &'static str,
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
        keep: fn(&mut K),
        concerns: impl Fn(&K) -> Vec<ObjectRef<Workspace>> + Send + 'static,
        unchanged: fn(&K, &K) -> bool,
    ) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let (store, writer) = reflector::store();
        let feed = Feed {
            triggers: self.triggers.clone(),
            changed: self.changed.clone(),
            synced: self.synced.clone(),
            concerns,
            unchanged,
        };
        let run = feed.run(what, events.default_backoff().modify(keep), writer);
        match &self.tasks {
            Some((tasks, token)) => {
                let token = token.clone();
                tasks.spawn(async move { token.run_until_cancelled(run).await });
            }
            None => {
                tokio::spawn(run);
            }
        }
        store
    }
}

impl Watch {
    /// Caches the metadata of GuildNet's `K` children (`Api<PartialObjectMeta<K>>` watches
    /// metadata only: the API server sends neither spec nor status), triggering their
    /// owners when it changes.
    fn start_metadata<K>(
        &self,
        what: &'static str,
        api: Api<PartialObjectMeta<K>>,
        config: &watcher::Config,
        concerns: fn(&ObjectMeta) -> Vec<ObjectRef<Workspace>>,
    ) -> Store<PartialObjectMeta<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        self.start(
            what,
            watcher(api, config.clone()),
            drop_managed_fields,
            move |object: &PartialObjectMeta<K>| concerns(&object.metadata),
            same_metadata_only,
        )
    }
}

/// One watch: its cache, and the workspaces its changes concern.
struct Feed<C, K> {
    triggers: broadcast::Sender<ObjectRef<Workspace>>,
    changed: Arc<Notify>,
    synced: Arc<watch::Sender<usize>>,
    concerns: C,
    unchanged: fn(&K, &K) -> bool,
}

impl<C, K> Feed<C, K>
where
    C: Fn(&K) -> Vec<ObjectRef<Workspace>>,
    K: Resource<DynamicType = ()> + Clone,
{
    /// Applies each event to `writer`'s cache and sends the workspaces it concerns, once the
    /// cache holds it. A re-list compares with the cache from before it, so only objects
    /// changed while the watch was down trigger.
    async fn run(
        self,
        what: &'static str,
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
        mut writer: Writer<K>,
    ) {
        let cache = writer.as_reader();
        let mut events = pin!(events);
        let mut synced = false;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    guildnet_runtime::watch::log_error(what, &e);
                    continue;
                }
            };
            let concerned = match &event {
                watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                    let before = cache.get(&ObjectRef::from_obj(obj));
                    if before.is_some_and(|before| (self.unchanged)(&before, obj)) {
                        Vec::new()
                    } else {
                        (self.concerns)(obj)
                    }
                }
                watcher::Event::Delete(obj) => (self.concerns)(obj),
                watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
            };
            writer.apply_watcher_event(&event);
            match event {
                watcher::Event::InitDone if !synced => {
                    synced = true;
                    self.synced.send_modify(|n| *n += 1);
                    debug!(what, "watch cache synced");
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
                _ => self.changed.notify_one(),
            }
            for workspace in concerned {
                // No receiver while this replica does not lead: nothing to do.
                let _ = self.triggers.send(workspace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::test_support::workspace;
    use futures::FutureExt;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(refs: &[(&str, &str, &str)]) -> DeploymentView {
        let mut d = DeploymentView::default();
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
            owners(&child.metadata),
            vec![ObjectRef::<Workspace>::new("ide").within("team-a")]
        );
        assert!(owners(&owned_by(&[]).metadata).is_empty());
    }

    /// Runs a feed of `unchanged` over `events` and returns the workspaces it triggered,
    /// with whether it noticed a change at all.
    async fn triggered<K>(
        events: Vec<watcher::Event<K>>,
        unchanged: fn(&K, &K) -> bool,
        concerns: fn(&K) -> Vec<ObjectRef<Workspace>>,
    ) -> (Vec<ObjectRef<Workspace>>, bool)
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (triggers, mut received) = broadcast::channel(64);
        let changed = Arc::new(Notify::new());
        let feed = Feed {
            triggers,
            changed: changed.clone(),
            synced: Arc::new(watch::channel(0).0),
            concerns,
            unchanged,
        };
        let (_, writer) = reflector::store();
        feed.run(
            "test",
            futures::stream::iter(events.into_iter().map(Ok)),
            writer,
        )
        .await;
        let mut sent = Vec::new();
        while let Ok(workspace) = received.try_recv() {
            sent.push(workspace);
        }
        let noticed = changed.notified().now_or_never().is_some();
        (sent, noticed)
    }

    fn version(mut ws: Workspace, resource_version: &str) -> Workspace {
        ws.metadata.resource_version = Some(resource_version.into());
        ws
    }

    fn this_workspace(ws: &Workspace) -> Vec<ObjectRef<Workspace>> {
        vec![ObjectRef::from_obj(ws)]
    }

    #[tokio::test]
    async fn a_workspace_is_reconciled_when_new_edited_or_deleted_but_not_for_its_own_status() {
        use guildnet_api::workspace::WorkspaceStatus;
        let created = version(workspace("code-server:4"), "1");
        let mut status_written = version(created.clone(), "2");
        status_written.status = Some(WorkspaceStatus {
            url: Some("https://guildnet.example/w/team-a/ide/".into()),
            ..Default::default()
        });
        let mut edited = version(status_written.clone(), "3");
        edited.spec.image = "code-server:5".into();
        let events = vec![
            watcher::Event::Apply(created),
            watcher::Event::Apply(status_written),
            watcher::Event::Apply(edited.clone()),
            watcher::Event::Delete(edited),
        ];
        let (sent, noticed) = triggered(events, same_but_status_workspace, this_workspace).await;
        let ide = ObjectRef::<Workspace>::new("ide").within("team-a");
        assert_eq!(sent, vec![ide.clone(), ide.clone(), ide]);
        assert!(noticed, "the Quota statuses hear of status changes too");
    }

    #[tokio::test]
    async fn a_relist_triggers_only_what_changed_while_the_watch_was_down() {
        let kept = version(workspace("code-server:4"), "1");
        let mut moved = version(kept.clone(), "1");
        moved.metadata.name = Some("other".into());
        let mut moved_later = version(moved.clone(), "7");
        moved_later
            .annotations_mut()
            .insert(labels::KEEPALIVE.into(), "true".into());
        let events = vec![
            watcher::Event::Init,
            watcher::Event::InitApply(kept.clone()),
            watcher::Event::InitApply(moved),
            watcher::Event::InitDone,
            // The watch broke off; the re-list shows one unchanged and one edited.
            watcher::Event::Init,
            watcher::Event::InitApply(version(kept, "9")),
            watcher::Event::InitApply(moved_later),
            watcher::Event::InitDone,
        ];
        let (sent, _) = triggered(events, same_but_status_workspace, this_workspace).await;
        let (ide, other) = (
            ObjectRef::<Workspace>::new("ide").within("team-a"),
            ObjectRef::<Workspace>::new("other").within("team-a"),
        );
        assert_eq!(sent, vec![ide, other.clone(), other]);
    }

    fn kwok_pod(ready: bool, waiting: Option<&str>) -> PodView {
        let mut pod = PodView::default();
        pod.metadata.name = Some("ide-7d9f-abcde".into());
        pod.metadata.namespace = Some("team-a".into());
        pod.metadata.labels = Some([(labels::ID.to_owned(), "ide".to_owned())].into());
        pod.metadata.annotations = Some([("kwok.x-k8s.io/node".into(), "fake".into())].into());
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.244.0.8".into()),
            conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "workspace".into(),
                image: "code-server:4".into(),
                ready,
                restart_count: 0,
                state: Some(ContainerState {
                    waiting: waiting.map(|reason| {
                        k8s_openapi::api::core::v1::ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some("not found".into()),
                        }
                    }),
                    running: waiting.is_none().then(Default::default),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        keep_what_status_reads(&mut pod);
        pod
    }

    #[test]
    fn a_pod_turning_ready_changes_nothing_the_workspace_status_reads() {
        assert!(same_pod(&kwok_pod(false, None), &kwok_pod(true, None)));
    }

    #[test]
    fn a_pod_whose_container_cannot_pull_its_image_wakes_the_reconcile() {
        assert!(!same_pod(
            &kwok_pod(false, None),
            &kwok_pod(false, Some("ErrImagePull"))
        ));
        let pod = kwok_pod(false, Some("ErrImagePull"));
        let container = &pod.status.unwrap().container_statuses.unwrap()[0];
        let waiting = container.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ErrImagePull"));
        assert_eq!(waiting.message.as_deref(), Some("not found"));
        assert_eq!(container.image, "code-server:4");
    }

    fn rollout(ready: i32, available: i32, progressing: (&str, &str)) -> DeploymentView {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut d = owned_by(&[("guildnet.io/v1alpha1", "Workspace", "ide")]);
        d.metadata.generation = Some(1);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(1),
            updated_replicas: Some(1),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            conditions: Some(vec![
                DeploymentCondition {
                    type_: Some("Available".into()),
                    status: Some(if available > 0 { "True" } else { "False" }.into()),
                    ..Default::default()
                },
                DeploymentCondition {
                    type_: Some("Progressing".into()),
                    status: Some(progressing.0.into()),
                    reason: Some(progressing.1.into()),
                    message: Some("ReplicaSet \"ide-7d9f\" has timed out progressing.".into()),
                    last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        });
        keep_what_is_read(&mut d);
        d
    }

    #[test]
    fn a_deployment_wakes_the_reconcile_when_pods_turn_ready_or_its_rollout_fails() {
        let progressing = ("True", "ReplicaSetUpdated");
        // The Deployment controller's later bookkeeping: availability, condition times.
        assert!(same_deployment(
            &rollout(1, 0, progressing),
            &rollout(1, 1, progressing)
        ));
        assert!(!same_deployment(
            &rollout(0, 0, progressing),
            &rollout(1, 0, progressing)
        ));
        let failed = rollout(0, 0, ("False", "ProgressDeadlineExceeded"));
        assert!(!same_deployment(&rollout(0, 0, progressing), &failed));
        let kept = failed.status.unwrap().conditions.unwrap();
        assert_eq!(kept.len(), 1, "only a failed rollout's condition is kept");
        assert_eq!(kept[0].reason.as_deref(), Some("ProgressDeadlineExceeded"));
    }
}
