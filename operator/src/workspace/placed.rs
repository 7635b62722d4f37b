//! Workspaces placed on a registered cluster (`spec.placement`): where they run, decided
//! once by [`guildnet_api::cluster::placement::decide`] and recorded in their status, and
//! their reconcile there. In that cluster a workspace's objects are named
//! `<name>-<hash>` ([`remote_name`]) in the registration's namespace, labelled with this
//! hub's id and the hub workspace, and owned by one anchor — a ConfigMap of that name — so
//! deleting the anchor lets that cluster's garbage collector remove everything else.

use super::apply::{PlacedParent, Target, apply_child};
use super::controller::{Context, Error, apply_and_report};
use super::report;
use super::status::{self, Failure, Outage, Placed, Where};
use crate::cluster::remote::Remote;
use crate::metrics::ClusterReconcile;
use crate::reconcile::apply::{Owner, VersionBy};
use guildnet_api::cluster::facts::remote_name;
use guildnet_api::cluster::placement::{self, Decision};
use guildnet_api::{Workspace, labels};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// How soon a workspace placed on a cluster without a connection yet looks again (a
/// registration's reachability flipping wakes it sooner).
const NOT_CONNECTED_RECHECK: Duration = Duration::from_secs(5);

/// How soon a workspace placed on a cluster whose caches are still listing looks again.
const CACHES_RECHECK: Duration = Duration::from_millis(500);

/// How long one reconcile may wait for a registered cluster: a cluster that hangs holds
/// only its own workspaces' reconciles, and only this long.
pub(super) const CLUSTER_BUDGET: Duration = Duration::from_secs(15);

/// Where a workspace runs now.
pub(super) enum Placement {
    /// The cluster the operator runs in.
    Local,
    /// Not placed yet: why.
    Unplaced(String),
    /// This registered cluster.
    On(String),
}

/// Where `ws` runs: the cluster its status records, else what its placement decides among
/// the registrations now.
pub(super) fn decide(ws: &Workspace, ctx: &Context) -> Placement {
    let registrations = ctx.clusters.state();
    let decision = placement::decide(
        ws.spec.placement.as_ref(),
        ws.placed_on(),
        registrations.iter().map(|r| r.as_ref()),
    );
    match decision {
        Decision::Local => Placement::Local,
        Decision::Kept(cluster) | Decision::Placed(cluster) => Placement::On(cluster.to_owned()),
        Decision::NoMatch(why) => Placement::Unplaced(why),
    }
}

/// Reconciles `ws` (of hub namespace `namespace`) on `cluster`: its finalizer, its anchor
/// there, then its children under it, then its status from that cluster's caches. While
/// the cluster is out of reach, only the status says so.
pub(super) async fn reconcile(
    ws: &Workspace,
    namespace: &str,
    cluster: String,
    over_quota: Option<Failure>,
    ctx: &Context,
) -> Result<Action, Error> {
    let placed = placed_at(ws, namespace, cluster, ctx);
    let remote = match reach(&placed, ctx) {
        Ok(remote) => remote,
        Err(wait) => {
            count_reconcile(&placed.cluster, ClusterReconcile::OutOfReach, ctx);
            return wait.report(ws, namespace, &placed, ctx).await;
        }
    };
    // Before anything exists there, so that nothing there outlives the workspace.
    add_cleanup_finalizer(ws, namespace, ctx).await?;
    let labels = remote_labels(ws, &ctx.origin);
    let within = async {
        let anchor = apply_anchor(
            &remote.client,
            &remote.caches.anchors,
            &placed,
            &labels,
            ctx,
        )
        .await?;
        let target = Target {
            client: &remote.client,
            namespace: &placed.namespace,
            caches: &remote.caches.children,
            placed: Some(PlacedParent {
                name: &placed.name,
                anchor,
                labels: &labels,
            }),
        };
        let action = apply_and_report(
            ws,
            namespace,
            &target,
            Where::Placed(&placed),
            over_quota,
            ctx,
        )
        .await?;
        mirror_endpoints(ws, namespace, &placed, &remote, ctx).await?;
        Ok(action)
    };
    let result = match tokio::time::timeout(CLUSTER_BUDGET, within).await {
        Ok(result) => result,
        Err(_) => Err(Error::ClusterTimeout(placed.cluster.clone())),
    };
    let outcome = match result {
        Ok(_) => ClusterReconcile::Applied,
        Err(_) => ClusterReconcile::Failed,
    };
    count_reconcile(&placed.cluster, outcome, ctx);
    result
}

/// Counts a reconcile of a workspace placed on `cluster`, while it is registered: a
/// removed registration's series are gone and none is made again for it.
fn count_reconcile(cluster: &str, outcome: ClusterReconcile, ctx: &Context) {
    if ctx.clusters.get(&ObjectRef::new(cluster)).is_some() {
        ctx.metrics.cluster_reconciled(cluster, outcome);
    }
}

/// Finishes the deletion of a workspace carrying the cleanup finalizer: deletes its anchor
/// in its cluster (whose garbage collector removes the rest) and then lets it go. While the
/// cluster is out of reach it stays, `Ready=False` reason `CleanupPending`, unless an admin
/// annotated it `guildnet.io/orphan-remote: "true"`.
pub(super) async fn clean_up(
    ws: &Workspace,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let Some(cluster) = ws.placed_on() else {
        // Never placed: nothing of it exists elsewhere.
        remove_cleanup_finalizer(ws, namespace, ctx).await?;
        return Ok(Action::await_change());
    };
    if ws.orphans_remote() {
        info!(
            cluster,
            "deleted without its objects in its cluster, as annotated"
        );
        remove_cleanup_finalizer(ws, namespace, ctx).await?;
        return Ok(Action::await_change());
    }
    let placed = placed_at(ws, namespace, cluster.to_owned(), ctx);
    let remote = match reach(&placed, ctx) {
        Ok(remote) => remote,
        Err(wait) => return wait.report(ws, namespace, &placed, ctx).await,
    };
    let at = ObjectRef::new(&placed.name).within(&placed.namespace);
    match remote.caches.anchors.get(&at) {
        None => {
            info!(cluster, "deleted its objects in its cluster");
            remove_cleanup_finalizer(ws, namespace, ctx).await?;
            Ok(Action::await_change())
        }
        // The anchor's deletion wakes it.
        Some(anchor) if anchor.metadata.deletion_timestamp.is_some() => Ok(Action::await_change()),
        Some(anchor) => {
            let api: Api<ConfigMap> = Api::namespaced(remote.client.clone(), &placed.namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: anchor.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match tokio::time::timeout(CLUSTER_BUDGET, api.delete(&placed.name, &params)).await {
                Err(_) => Err(Error::ClusterTimeout(placed.cluster.clone())),
                Ok(Ok(_)) => Ok(Action::await_change()),
                // Gone already, or replaced since the cache saw it: the cache catches up.
                Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => {
                    Ok(Action::requeue(CACHES_RECHECK))
                }
                Ok(Err(e)) => Err(e.into()),
            }
        }
    }
}

/// Where `ws` is placed on `cluster`: the namespace and name its status recorded there,
/// else the registration's namespace and the name derived from its own.
fn placed_at(ws: &Workspace, namespace: &str, cluster: String, ctx: &Context) -> Placed {
    let recorded = ws.status.as_ref();
    let registration = ctx.clusters.get(&ObjectRef::new(&cluster));
    Placed {
        namespace: recorded
            .and_then(|s| s.remote_namespace.clone())
            .or_else(|| registration.map(|r| r.remote_namespace().to_owned()))
            .unwrap_or_default(),
        name: recorded
            .and_then(|s| s.remote_name.clone())
            .unwrap_or_else(|| remote_name(namespace, &ws.name_any())),
        cluster,
    }
}

/// Why a placed workspace's cluster cannot be worked on now.
enum Wait {
    /// Out of reach: the status says so.
    Outage(Outage),
    /// Connected, and its caches are still listing: a child missing from them may exist,
    /// and a status computed from them would be computed from nothing.
    Listing,
}

impl Wait {
    async fn report(
        self,
        ws: &Workspace,
        namespace: &str,
        placed: &Placed,
        ctx: &Context,
    ) -> Result<Action, Error> {
        match self {
            Wait::Outage(outage) => {
                let status = status::out_of_reach(ws, placed, outage, Timestamp::now());
                report::update_status(ws, namespace, status, ctx).await?;
                Ok(Action::requeue(NOT_CONNECTED_RECHECK))
            }
            Wait::Listing => Ok(Action::requeue(CACHES_RECHECK)),
        }
    }
}

/// The connection to the cluster `placed` is on, when it is reachable and its caches are
/// synced.
fn reach(placed: &Placed, ctx: &Context) -> Result<Arc<Remote>, Wait> {
    let Some(registration) = ctx.clusters.get(&ObjectRef::new(&placed.cluster)) else {
        return Err(Wait::Outage(Outage::Removed));
    };
    let since = || {
        let status = registration.status.as_ref()?;
        status.unreachable_since().map(|t| t.0)
    };
    let remote = ctx.remotes.get(&placed.cluster);
    match remote {
        Some(remote) if registration.is_reachable() && remote.is_synced() => Ok(remote),
        Some(_) if registration.is_reachable() => Err(Wait::Listing),
        _ => Err(Wait::Outage(Outage::Unreachable { since: since() })),
    }
}

/// Adds [`labels::REMOTE_CLEANUP_FINALIZER`] unless `ws` has it, by a JSON patch that
/// fails if its finalizers changed meanwhile.
async fn add_cleanup_finalizer(
    ws: &Workspace,
    namespace: &str,
    ctx: &Context,
) -> Result<(), Error> {
    if ws.has_remote_cleanup() {
        return Ok(());
    }
    let finalizers = ws.finalizers();
    let patch: json_patch::Patch = serde_json::from_value(if finalizers.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [labels::REMOTE_CLEANUP_FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": labels::REMOTE_CLEANUP_FINALIZER},
        ])
    })
    .expect("a JSON patch");
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(
        &ws.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await?;
    Ok(())
}

/// Removes [`labels::REMOTE_CLEANUP_FINALIZER`] from `ws`, testing that it is still where it
/// was seen; a workspace already gone is fine.
async fn remove_cleanup_finalizer(
    ws: &Workspace,
    namespace: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let finalizers = ws.finalizers();
    let Some(at) = finalizers
        .iter()
        .position(|f| f == labels::REMOTE_CLEANUP_FINALIZER)
    else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{at}");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": path, "value": labels::REMOTE_CLEANUP_FINALIZER},
        {"op": "remove", "path": path},
    ]))
    .expect("a JSON patch");
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), namespace);
    match api
        .patch(
            &ws.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Keeps the hub's EndpointSlice of `ws` equal to its Service's endpoints in its cluster,
/// so the proxy reaches it there as it reaches a local workspace (the hub routes to that
/// cluster's pod IPs, e.g. through a tailnet subnet router).
async fn mirror_endpoints(
    ws: &Workspace,
    namespace: &str,
    placed: &Placed,
    remote: &Remote,
    ctx: &Context,
) -> Result<(), Error> {
    let there = remote.caches.endpoint_slices.state_filter(|slice| {
        slice.namespace().as_deref() == Some(placed.namespace.as_str())
            && slice.labels().get(labels::ENDPOINT_SLICE_SERVICE) == Some(&placed.name)
    });
    let Some(slice) = mirrored_slice(ws, there.iter().map(|s| s.as_ref())) else {
        return Ok(());
    };
    let uid = ws.uid().unwrap_or_default();
    let owner = Owner {
        uid: &uid,
        labels: &[],
        leftover: None,
    };
    let name = ws.name_any();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let cached = ctx
        .mirrored_slices
        .get(&ObjectRef::new(&name).within(namespace));
    let meta = cached.as_ref().map(|c| &c.metadata);
    apply_child(ctx, &api, &slice, &owner, meta, VersionBy::ResourceVersion).await?;
    Ok(())
}

/// The hub's EndpointSlice of the placed workspace `ws`: named as it, labelled as a slice
/// of a Service of its name (what the proxy looks up), owned by it, with the endpoints
/// and ports of its Service's slices `there`. `None` while its Service has no slice there.
pub(super) fn mirrored_slice<'a>(
    ws: &Workspace,
    there: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Option<EndpointSlice> {
    let mut there = there.into_iter().peekable();
    let first = there.peek()?;
    let (address_type, ports) = (first.address_type.clone(), first.ports.clone());
    let endpoints = there
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .map(|endpoint| Endpoint {
            addresses: endpoint.addresses.clone(),
            conditions: endpoint.conditions.clone(),
            ..Endpoint::default()
        })
        .collect();
    let name = ws.name_any();
    Some(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: ws.namespace(),
            labels: Some(BTreeMap::from([
                (labels::MANAGED.to_owned(), "true".to_owned()),
                (labels::ID.to_owned(), name.clone()),
                (labels::ENDPOINT_SLICE_SERVICE.to_owned(), name),
                (
                    labels::ENDPOINT_SLICE_MANAGED_BY.to_owned(),
                    labels::ENDPOINT_SLICE_MIRRORED_BY.to_owned(),
                ),
            ])),
            owner_references: ws.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        address_type,
        endpoints: Some(endpoints),
        ports,
    })
}

/// The labels of everything this hub makes for `ws` in a registered cluster: the hub's id
/// and the hub workspace's namespace, name and uid.
pub(super) fn remote_labels(ws: &Workspace, origin: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::ORIGIN.to_owned(), origin.to_owned()),
        (
            labels::HUB_NAMESPACE.to_owned(),
            ws.namespace().unwrap_or_default(),
        ),
        (labels::HUB_NAME.to_owned(), ws.name_any()),
        (labels::HUB_UID.to_owned(), ws.uid().unwrap_or_default()),
    ])
}

/// The anchor of a placed workspace: an empty ConfigMap `placed.name` that owns the
/// workspace's objects in its cluster (a kind every cluster serves, unlike Workspace).
pub(super) fn anchor(placed: &Placed, remote_labels: &BTreeMap<String, String>) -> ConfigMap {
    let mut labels = remote_labels.clone();
    labels.insert(labels::MANAGED.to_owned(), "true".to_owned());
    labels.insert(labels::ID.to_owned(), placed.name.clone());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(placed.name.clone()),
            namespace: Some(placed.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// Applies the anchor (unless the cache shows it as it should be) and returns the owner
/// reference its children carry. An object of its name that this hub did not make for this
/// workspace is a [`NameConflict`](crate::reconcile::apply::NameConflict): never taken over.
async fn apply_anchor(
    client: &kube::Client,
    anchors: &kube::runtime::reflector::Store<kube::api::PartialObjectMeta<ConfigMap>>,
    placed: &Placed,
    remote_labels: &BTreeMap<String, String>,
    ctx: &Context,
) -> Result<OwnerReference, Error> {
    let anchor = anchor(placed, remote_labels);
    let label = |key: &str| remote_labels.get(key).map(String::as_str);
    // A re-created hub workspace of the same name adopts its predecessor's anchor: only
    // the hub uid differs.
    let its_own = [
        (labels::MANAGED, Some("true")),
        (labels::ID, Some(placed.name.as_str())),
        (labels::ORIGIN, label(labels::ORIGIN)),
        (labels::HUB_NAMESPACE, label(labels::HUB_NAMESPACE)),
        (labels::HUB_NAME, label(labels::HUB_NAME)),
    ];
    let owner = Owner {
        uid: "",
        labels: &its_own,
        leftover: None,
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &placed.namespace);
    let cached = anchors.get(&ObjectRef::new(&placed.name).within(&placed.namespace));
    let meta = cached.as_ref().map(|c| &c.metadata);
    let written = apply_child(ctx, &api, &anchor, &owner, meta, VersionBy::ResourceVersion).await?;
    let uid = match (written, cached) {
        (Some(written), _) => written.uid(),
        (None, cached) => cached.and_then(|c| c.uid()),
    };
    Ok(OwnerReference {
        api_version: ConfigMap::api_version(&()).into_owned(),
        kind: ConfigMap::kind(&()).into_owned(),
        name: placed.name.clone(),
        uid: uid.unwrap_or_default(),
        controller: Some(true),
        // Foreground deletion of the anchor waits for everything it owns.
        block_owner_deletion: Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::BuildContext;
    use crate::workspace::builders::children_of;
    use crate::workspace::meta::Parent;
    use crate::workspace::test_support::workspace;

    fn placed() -> Placed {
        Placed {
            cluster: "edge".into(),
            namespace: "guildnet-workspaces".into(),
            name: remote_name("team-a", "ide"),
        }
    }

    #[test]
    fn the_anchor_names_this_hub_and_the_hub_workspace() {
        let ws = workspace("nginx");
        let anchor = anchor(&placed(), &remote_labels(&ws, "hub-1"));
        let labels = anchor.metadata.labels.unwrap();
        assert_eq!(labels[labels::ORIGIN], "hub-1");
        assert_eq!(labels[labels::HUB_NAMESPACE], "team-a");
        assert_eq!(labels[labels::HUB_NAME], "ide");
        assert_eq!(labels[labels::HUB_UID], "uid-1");
        assert_eq!(labels[labels::MANAGED], "true");
        assert_eq!(labels[labels::ID], placed().name);
        assert_eq!(
            anchor.metadata.namespace.as_deref(),
            Some("guildnet-workspaces")
        );
        assert!(anchor.metadata.owner_references.is_none());
    }

    #[test]
    fn placed_children_are_named_labelled_and_owned_for_their_cluster() {
        let ws = workspace("nginx");
        let placed = placed();
        let anchor = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: placed.name.clone(),
            uid: "anchor-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let labels = remote_labels(&ws, "hub-1");
        let parent = Parent::placed(&ws, &placed.name, &placed.namespace, anchor, &labels).unwrap();
        let children = children_of(&ws, &parent, &BuildContext::default()).unwrap();
        let deployment = &children.deployment;
        assert_eq!(
            deployment.metadata.name.as_deref(),
            Some(placed.name.as_str())
        );
        assert_eq!(
            deployment.metadata.namespace.as_deref(),
            Some("guildnet-workspaces")
        );
        let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ConfigMap", "anchor-uid")
        );
        // The pods carry the origin, so that cluster's pod cache (selected by it) sees them,
        // and the hub workspace, so their changes wake its reconcile.
        let template = deployment.spec.template.metadata.as_ref().unwrap();
        let pod_labels = template.labels.as_ref().unwrap();
        assert_eq!(pod_labels[labels::ORIGIN], "hub-1");
        assert_eq!(pod_labels[labels::HUB_NAME], "ide");
        assert_eq!(pod_labels[labels::ID], placed.name);
        // The selector stays the workspace's name there alone (selectors are immutable).
        let selector = deployment.spec.selector.match_labels.as_ref().unwrap();
        assert!(!selector.contains_key(labels::ORIGIN));
        assert_eq!(
            children.service.metadata.name.as_deref(),
            Some(placed.name.as_str())
        );
    }

    #[test]
    fn the_hub_slice_of_a_placed_workspace_carries_its_endpoints_there_under_its_hub_name() {
        let ws = workspace("nginx");
        let there: Vec<EndpointSlice> = ["10.244.0.7", "10.244.0.8"]
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                serde_json::from_value(json!({
                    "metadata": {"name": format!("{}-{i}", placed().name), "namespace": "guildnet-workspaces"},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true}, "nodeName": "kwok-node"}],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                }))
                .unwrap()
            })
            .collect();
        assert!(mirrored_slice(&ws, []).is_none(), "no slice there yet");
        let slice = mirrored_slice(&ws, &there).unwrap();
        assert_eq!(slice.metadata.name.as_deref(), Some("ide"));
        assert_eq!(slice.metadata.namespace.as_deref(), Some("team-a"));
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::ENDPOINT_SLICE_SERVICE], "ide");
        assert_eq!(
            labels[labels::ENDPOINT_SLICE_MANAGED_BY],
            "guildnet-operator"
        );
        assert_eq!(labels[labels::MANAGED], "true");
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Workspace", "uid-1")
        );
        let endpoints = slice.endpoints.unwrap();
        let addresses: Vec<&str> = endpoints.iter().map(|e| e.addresses[0].as_str()).collect();
        assert_eq!(addresses, ["10.244.0.7", "10.244.0.8"]);
        assert_eq!(
            endpoints[0].node_name, None,
            "that cluster's node means nothing here"
        );
        assert_eq!(endpoints[0].conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(slice.ports.unwrap()[0].port, Some(8080));
    }
}
