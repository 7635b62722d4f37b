//! Applying a workspace's children: each by server-side apply, and only onto objects that
//! are this workspace's own (see [`crate::reconcile::apply`]); then pruning what the spec no
//! longer asks for, and taking requested snapshots.

use super::builders::children_of;
use super::caches::ChildCaches;
use super::controller::{Context, Error};
use super::meta::Parent;
use super::password::{PASSWORD_KEY, password_secret_of};
use super::views::DeploymentView;
use super::{Children, snapshot, sweep};
use crate::reconcile::apply::{
    Owner, VersionBy, apply_if_changed, apply_owned, create_once, delete_owned,
};
use crate::reconcile::conditions::Observed;
use guildnet_api::Workspace;
use guildnet_api::labels;
use guildnet_api::workspace::facts::{ConditionType, Reason, password_secret_name};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

/// What applying a workspace's children produced.
pub(super) struct Applied {
    pub children: Children,
    /// The Deployment as the API server has it after the apply (with its status).
    pub deployment: DeploymentView,
    /// The outcome of a requested snapshot, as the `Snapshot` condition.
    pub snapshot: Option<Observed>,
}

/// Where a workspace's children are written, and the caches that show them there.
pub(super) struct Target<'a> {
    pub client: &'a Client,
    /// The namespace of the children.
    pub namespace: &'a str,
    pub caches: &'a ChildCaches,
    /// `None`: the cluster the operator runs in, where the workspace owns its children;
    /// otherwise the registered cluster it is placed on.
    pub placed: Option<PlacedParent<'a>>,
}

/// Who a placed workspace's children are in its cluster.
pub(super) struct PlacedParent<'a> {
    /// Their name there (`<name>-<hash>`).
    pub name: &'a str,
    /// Their controller there: the workspace's anchor.
    pub anchor: OwnerReference,
    /// Their origin and hub workspace labels.
    pub labels: &'a BTreeMap<String, String>,
}

impl Target<'_> {
    /// The name the children have.
    pub(super) fn child_name(&self, ws: &Workspace) -> String {
        match &self.placed {
            Some(placed) => placed.name.to_owned(),
            None => ws.name_any(),
        }
    }
}

/// Applies every child of `ws` to `target` and prunes what its spec no longer asks for.
/// `hold` keeps the workspace from running (zero replicas): its owner is over a Quota.
pub(super) async fn apply_children(
    ws: &Workspace,
    target: &Target<'_>,
    hold: bool,
    ctx: &Context,
) -> Result<Applied, Error> {
    // Only what the schema cannot check fails here; the message says what to fix.
    let parent = match &target.placed {
        None => Parent::new(ws)?,
        Some(placed) => Parent::placed(
            ws,
            placed.name,
            target.namespace,
            placed.anchor.clone(),
            placed.labels,
        )?,
    };
    let mut children = children_of(ws, &parent, &ctx.settings.build)?;
    if hold {
        children.deployment.spec.replicas = Some(0);
    }
    // Who the children belong to: objects this workspace (or its anchor) controls, and —
    // for volume claims and snapshots, which outlive it — unowned objects with its name
    // and its owner's id.
    let uid = match &target.placed {
        None => ws.uid().unwrap_or_default(),
        Some(placed) => placed.anchor.uid.clone(),
    };
    let name = parent.name.clone();
    let labels = [
        (labels::MANAGED, Some("true")),
        (labels::ID, Some(name.as_str())),
        (labels::OWNER, ws.owner_id()),
    ];
    // What an orphaning delete of an earlier workspace of this name left behind is replaced;
    // claims, which hold data, never are.
    let created = ws.metadata.creation_timestamp.clone();
    let leftover = |meta: &ObjectMeta| {
        let id = meta.labels.as_ref().and_then(|l| l.get(labels::ID));
        id == Some(&name) && sweep::is_left_behind(meta, |_, _| created.clone())
    };
    // Leftovers are replaced only in the workspace's own namespace: in a registered
    // cluster, what is there of this name is the workspace's anchor's or not its own.
    let owned = Owner {
        uid: &uid,
        labels: &[],
        leftover: target.placed.is_none().then_some(&leftover as _),
    };
    let outliving = Owner {
        uid: &uid,
        labels: &labels,
        leftover: None,
    };
    let owners = Owners {
        owned: &owned,
        outliving: &outliving,
    };
    let (deployment, snapshot) = apply_all(ws, target, &parent, &children, &owners, ctx).await?;
    Ok(Applied {
        children,
        deployment,
        snapshot,
    })
}

/// The rules existing children must pass: those the workspace controls, and those that
/// outlive it.
struct Owners<'a> {
    owned: &'a Owner<'a>,
    outliving: &'a Owner<'a>,
}

async fn apply_all(
    ws: &Workspace,
    target: &Target<'_>,
    parent: &Parent,
    children: &Children,
    owners: &Owners<'_>,
    ctx: &Context,
) -> Result<(DeploymentView, Option<Observed>), Error> {
    let (client, namespace, caches) = (target.client, target.namespace, target.caches);
    let Owners { owned, outliving } = *owners;
    let name = &parent.name;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    // Every child but the Deployment is independent of the others, so all are written
    // together: a new workspace waits one round trip for them, not one each. All come before
    // the Deployment, so its pod never runs unisolated, without its claims or its password.
    let volume_claims = children
        .pvcs
        .iter()
        .map(|pvc| apply_cached(ctx, target, pvc, outliving, &caches.claims));
    futures::try_join!(
        apply_password(ws, target, parent, children, owned, ctx),
        futures::future::try_join_all(volume_claims),
        apply_cached(ctx, target, &children.service, owned, &caches.services),
        apply_cached(
            ctx,
            target,
            &children.network_policy,
            owned,
            &caches.network_policies,
        ),
        apply_ingress(ws, target, name, children, owned, ctx),
    )?;
    prune_volume_claims(ws, name, &claims, children, owned).await?;
    let snapshot = match snapshot::requested(ws) {
        Some(snapshot) => {
            Some(take_snapshots(ws, target, name, children, snapshot, outliving).await?)
        }
        None => None,
    };
    let first_launch = ws.status.is_none();
    let cached_deployment = cached(&caches.deployments, namespace, name);
    let api = Api::namespaced(client.clone(), namespace);
    let meta = cached_deployment.as_ref().map(|d| &d.metadata);
    let written = apply_child(
        ctx,
        &api,
        &children.deployment,
        owned,
        meta,
        VersionBy::Generation,
    )
    .await?;
    // Not written: the cache shows it as asked for, status included.
    let deployment = match (written, cached_deployment) {
        (Some(written), _) => written.into(),
        (None, Some(cached)) => (*cached).clone(),
        (None, None) => unreachable!("apply_if_changed writes whenever nothing is cached"),
    };
    if first_launch && ctx.announce_launch(ws) {
        ctx.metrics.workspace_launched();
        let note = format!("launched image {}", ws.spec.image);
        let reason = Reason::Launched.as_str();
        ctx.events
            .publish(&ws.object_ref(&()), EventType::Normal, reason, &note);
    }
    Ok((deployment, snapshot))
}

/// Creates the workspace's generated password Secret, once, when its spec asks for one.
/// A placed workspace's password is the one the hub keeps for it ([`hub_password`]), so
/// its users read it where they read a local one's.
async fn apply_password(
    ws: &Workspace,
    target: &Target<'_>,
    parent: &Parent,
    children: &Children,
    owned: &Owner<'_>,
    ctx: &Context,
) -> Result<(), Error> {
    let Some(name) = &children.password_secret else {
        return Ok(());
    };
    let password = match target.placed {
        None => super::generate_password(),
        Some(_) => hub_password(ws, target, name, ctx).await?,
    };
    let secret = password_secret_of(parent, &password);
    debug_assert_eq!(&secret.name_any(), name);
    create_once(
        &Api::namespaced(target.client.clone(), target.namespace),
        &secret,
        owned,
    )
    .await?;
    Ok(())
}

/// The password of a placed workspace, from the Secret the hub keeps beside it
/// (`<name>-password` in its namespace, owned by it, so deleted with it). Made once: with
/// the password of the Secret `there` in its cluster when one exists already (made before
/// the hub kept a copy), else a new one.
async fn hub_password(
    ws: &Workspace,
    target: &Target<'_>,
    there: &str,
    ctx: &Context,
) -> Result<String, Error> {
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &ws.namespace().unwrap_or_default());
    let name = password_secret_name(&ws.name_any());
    if let Some(kept) = secrets.get_opt(&name).await? {
        return password_in(&kept, &name);
    }
    let remote: Api<Secret> = Api::namespaced(target.client.clone(), target.namespace);
    let password = match remote.get_opt(there).await? {
        Some(made) => password_in(&made, there)?,
        None => super::generate_password(),
    };
    let uid = ws.uid().unwrap_or_default();
    let hub_owner = Owner {
        uid: &uid,
        labels: &[],
        leftover: None,
    };
    create_once(
        &secrets,
        &super::password_secret(ws, &password)?,
        &hub_owner,
    )
    .await?;
    // A reconcile racing this one may have made it first, with its own password.
    match secrets.get_opt(&name).await? {
        Some(kept) => password_in(&kept, &name),
        None => Ok(password),
    }
}

/// The password a password Secret `name` holds.
fn password_in(secret: &Secret, name: &str) -> Result<String, Error> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(PASSWORD_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .ok_or_else(|| Error::PasswordSecret(name.to_owned()))
}

/// Applies the Ingress the spec asks for, or deletes the one an earlier spec made.
async fn apply_ingress(
    ws: &Workspace,
    target: &Target<'_>,
    name: &str,
    children: &Children,
    owned: &Owner<'_>,
    ctx: &Context,
) -> Result<(), Error> {
    let ingresses: Api<Ingress> = Api::namespaced(target.client.clone(), target.namespace);
    match &children.ingress {
        Some(ingress) => {
            apply_cached(ctx, target, ingress, owned, &target.caches.ingresses).await?;
        }
        None if ws.status.as_ref().and_then(|s| s.url.as_ref()).is_some() => {
            // The spec no longer asks for an Ingress; the status says one was made.
            delete_owned(&ingresses, name, owned).await?;
        }
        None => {}
    }
    Ok(())
}

/// [`apply_child`] for a child whose watch cache is `store`: one the cache shows as already
/// what the workspace asks for is not written again, and one it shows as this workspace's
/// needs no read before the write.
async fn apply_cached<K, Cached>(
    ctx: &Context,
    target: &Target<'_>,
    child: &K,
    owner: &Owner<'_>,
    store: &Store<Cached>,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
    Cached: Resource<DynamicType = ()> + Clone,
{
    let api = Api::namespaced(target.client.clone(), target.namespace);
    let cached = cached(store, target.namespace, &child.name_any());
    let meta = cached.as_ref().map(|c| c.meta());
    Ok(apply_child(ctx, &api, child, owner, meta, VersionBy::ResourceVersion).await?)
}

/// Applies one child unless the cache shows it as asked for (see [`apply_if_changed`]),
/// counting which it was.
pub(super) async fn apply_child<K>(
    ctx: &Context,
    api: &Api<K>,
    child: &K,
    owner: &Owner<'_>,
    cached: Option<&ObjectMeta>,
    by: VersionBy,
) -> Result<Option<K>, crate::reconcile::apply::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let written = apply_if_changed(api, child, owner, cached, &ctx.written, by).await?;
    ctx.metrics.child_applied(&K::kind(&()), written.is_some());
    Ok(written)
}

/// `namespace/name` as the watch cache `store` last saw it.
fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// Creates the requested VolumeSnapshots, or says why it cannot.
async fn take_snapshots(
    ws: &Workspace,
    target: &Target<'_>,
    workspace: &str,
    children: &Children,
    name: &str,
    outliving: &Owner<'_>,
) -> Result<Observed, Error> {
    let (client, namespace) = (target.client, target.namespace);
    let observed = |status, reason, message: String| {
        Observed::new(ConditionType::Snapshot, status, reason, message)
    };
    if children.pvcs.is_empty() {
        return Ok(observed(
            false,
            Reason::NoPersistentVolumes,
            "the workspace has no persistent volumes to snapshot".into(),
        ));
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &snapshot::snapshot_resource());
    // A snapshot is a backup of this workspace's claims, never mounted: its name and GuildNet's
    // label make it this workspace's (snapshots from before owner labels carry only these).
    let labels = [
        (labels::MANAGED, Some("true")),
        (labels::ID, Some(workspace)),
    ];
    let snapshots = Owner {
        uid: outliving.uid,
        labels: &labels,
        leftover: None,
    };
    let mut names = Vec::new();
    for snapshot in snapshot::volume_snapshots(ws, &children.pvcs, name) {
        match apply_owned(&api, &snapshot, &snapshots).await {
            Ok(created) => names.push(created.name_any()),
            // The API server does not serve the resource at all.
            Err(crate::reconcile::apply::Error::Kube(kube::Error::Api(s))) if s.code == 404 => {
                return Ok(observed(
                    false,
                    Reason::SnapshotAPIUnavailable,
                    "the cluster does not serve snapshot.storage.k8s.io/v1 VolumeSnapshots: install the CSI snapshot CRDs and snapshot controller".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(observed(
        true,
        Reason::SnapshotCreated,
        format!("VolumeSnapshots {}", names.join(", ")),
    ))
}

/// Deletes the claims of persistent volumes removed from the spec, but only those marked
/// `reclaimPolicy: Delete` (they carry this workspace's controller reference); retained
/// data is never removed.
async fn prune_volume_claims(
    ws: &Workspace,
    name: &str,
    claims: &Api<PersistentVolumeClaim>,
    children: &Children,
    owned: &Owner<'_>,
) -> Result<(), Error> {
    let recorded = ws
        .status
        .as_ref()
        .map(|s| s.volume_claims.as_slice())
        .unwrap_or_default();
    let desired: Vec<String> = children.pvcs.iter().map(|p| p.name_any()).collect();
    if recorded.iter().all(|name| desired.contains(name)) {
        return Ok(());
    }
    let selector = format!("{}={name}", labels::ID);
    for pvc in claims
        .list_metadata(&ListParams::default().labels(&selector))
        .await?
    {
        if !desired.contains(&pvc.name_any()) {
            delete_owned(claims, &pvc.name_any(), owned).await?;
        }
    }
    Ok(())
}
