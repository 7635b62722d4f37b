//! The reaper's loop: every `--reap-interval`, scan the cache ([`super::reaper`] decides)
//! and suspend, delete or expire what is due; and delete the children whose workspace is
//! gone ([`super::sweep`]), here and in registered clusters.

use super::controller::{Context, Error};
use super::placed::CLUSTER_BUDGET;
use super::reaper::{self, IdleAction, Reap};
use super::sweep;
use guildnet_api::Workspace;
use guildnet_api::workspace::facts::Reason;
use guildnet_api::workspace::facts::password_secret_name;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use std::collections::BTreeSet;
use std::sync::Arc;
use tracing::{Instrument, info, info_span, warn};

/// Scans the cache every `reap_interval` and suspends, deletes or expires what is due.
pub(super) async fn run(store: Store<Workspace>, ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(ctx.settings.reap_interval);
    loop {
        tick.tick().await;
        let workspaces = store.state();
        ctx.forget_gone(&workspaces);
        let due = reaper::scan(
            workspaces.iter().map(|w| w.as_ref()),
            Timestamp::now(),
            ctx.settings.default_idle_timeout,
        );
        sweep(&workspaces, &ctx).await;
        sweep_anchors(&workspaces, &ctx).await;
        for (ws, reap) in due {
            let span = info_span!(
                "reap",
                namespace = ws.namespace().unwrap_or_default(),
                workspace = ws.name_any(),
            );
            if let Err(e) = reap_one(ws, &reap, &ctx).instrument(span.clone()).await {
                span.in_scope(|| warn!(error = %e, "reaping failed"));
            }
        }
    }
}

async fn reap_one(ws: &Workspace, reap: &Reap, ctx: &Context) -> Result<(), Error> {
    let namespace = ws
        .namespace()
        .ok_or_else(|| Error::NoNamespace(ws.name_any()))?;
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = ws.name_any();
    let publish = |reason: Reason, note: String| {
        ctx.events.publish(
            &ws.object_ref(&()),
            EventType::Normal,
            reason.as_str(),
            &note,
        );
    };
    match (reap, ctx.settings.idle_action) {
        (Reap::Idle { idle_for }, IdleAction::Suspend) => {
            let patch = serde_json::json!({"spec": {"lifecycle": {"suspend": true}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            let note = format!(
                "idle for {}s: suspended (set spec.lifecycle.suspend to false to resume)",
                idle_for.as_secs()
            );
            publish(Reason::Reaped, note);
        }
        (Reap::Idle { idle_for }, IdleAction::Delete) => {
            publish(
                Reason::Reaped,
                format!("idle for {}s: deleted", idle_for.as_secs()),
            );
            delete(&api, &name).await?;
        }
        (Reap::Expired { finished_for }, _) => {
            let note = format!(
                "finished {}s ago: deleted after ttlSecondsAfterFinished",
                finished_for.as_secs()
            );
            publish(Reason::Expired, note);
            delete(&api, &name).await?;
        }
    }
    Ok(())
}

/// Deletes the Deployments, Services, NetworkPolicies, Ingresses and password Secrets whose
/// workspace was deleted without them.
async fn sweep(workspaces: &[Arc<Workspace>], ctx: &Context) {
    let created = |namespace: &str, name: &str| {
        workspaces
            .iter()
            .find(|ws| ws.name_any() == name && ws.namespace().as_deref() == Some(namespace))
            .and_then(|ws| ws.metadata.creation_timestamp.clone())
    };
    let deployments = sweep::orphans(
        ctx.local.deployments.state().iter().map(|d| d.as_ref()),
        created,
    );
    let services = sweep::orphans(
        ctx.local.services.state().iter().map(|s| s.as_ref()),
        created,
    );
    let policies = ctx.local.network_policies.state();
    let policies = sweep::orphans(policies.iter().map(|p| p.as_ref()), created);
    let ingresses = sweep::orphans(
        ctx.local.ingresses.state().iter().map(|i| i.as_ref()),
        created,
    );
    // Every gone workspace left a Deployment, Service and NetworkPolicy; its password
    // Secret, if it had one, is looked up by name.
    let gone: BTreeSet<(String, String)> = deployments
        .iter()
        .chain(&services)
        .chain(&policies)
        .map(|orphan| (orphan.namespace.clone(), orphan.workspace.clone()))
        .collect();
    for orphan in &deployments {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &orphan.namespace);
        delete_orphan(&api, "Deployment", orphan).await;
    }
    for orphan in &services {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &orphan.namespace);
        delete_orphan(&api, "Service", orphan).await;
    }
    for orphan in &policies {
        let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &orphan.namespace);
        delete_orphan(&api, "NetworkPolicy", orphan).await;
    }
    for orphan in &ingresses {
        let api: Api<Ingress> = Api::namespaced(ctx.client.clone(), &orphan.namespace);
        delete_orphan(&api, "Ingress", orphan).await;
    }
    for (namespace, workspace) in gone {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let secret = match api
            .get_metadata_opt(&password_secret_name(&workspace))
            .await
        {
            Ok(secret) => secret,
            Err(e) => {
                warn!(namespace, workspace, error = %e, "could not read the password Secret of a workspace that is gone");
                continue;
            }
        };
        let Some(secret) = secret else { continue };
        if let Some(orphan) = sweep::orphans([&secret], created).first() {
            delete_orphan(&api, "Secret", orphan).await;
        }
    }
}

/// Deletes, in every registered cluster that answers, the anchors of this hub's workspaces
/// that are gone (a workspace deleted while its finalizer was not running, or let go of
/// with `guildnet.io/orphan-remote` before its cluster came back). Each cluster gets at
/// most [`CLUSTER_BUDGET`]: one that hangs delays the next scan by no more than that.
async fn sweep_anchors(workspaces: &[Arc<Workspace>], ctx: &Context) {
    for (cluster, remote) in ctx.remotes.connected() {
        let reachable = ctx
            .clusters
            .get(&ObjectRef::new(&cluster))
            .is_some_and(|r| r.is_reachable());
        if !reachable || !remote.is_synced() {
            continue;
        }
        let follows = |namespace: &str, name: &str| {
            workspaces.iter().any(|ws| {
                ws.name_any() == name
                    && ws.namespace().as_deref() == Some(namespace)
                    && ws.follows_cluster(&cluster)
            })
        };
        let anchors = remote.caches.anchors.state();
        let stray = sweep::stray_anchors(anchors.iter().map(|a| a.as_ref()), &ctx.origin, follows);
        let api: Api<ConfigMap> = Api::namespaced(remote.client.clone(), &remote.namespace);
        let deletes = async {
            for orphan in &stray {
                delete_orphan(&api, "ConfigMap", orphan).await;
            }
        };
        let span = info_span!("sweep", cluster);
        if tokio::time::timeout(CLUSTER_BUDGET, deletes.instrument(span.clone()))
            .await
            .is_err()
        {
            span.in_scope(|| warn!("the cluster did not answer the sweep in time"));
        }
    }
}

async fn delete_orphan<K>(api: &Api<K>, kind: &str, orphan: &sweep::Orphan)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(orphan.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&orphan.name, &params).await {
        Ok(_) => info!(
            kind,
            namespace = orphan.namespace,
            name = orphan.name,
            "deleted a child whose workspace is gone"
        ),
        // Gone already, or replaced since the cache saw it.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => {
            warn!(kind, namespace = orphan.namespace, name = orphan.name, error = %e, "could not delete a child whose workspace is gone")
        }
    }
}

/// Deletes the workspace; one already gone is fine.
async fn delete(api: &Api<Workspace>, name: &str) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
