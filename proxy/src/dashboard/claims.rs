//! `GET /api/claims` and `DELETE /api/claims/{namespace}/{name}`: the caller's retained
//! volume claims, and removing one.
//!
//! Deleting a Workspace leaves the PersistentVolumeClaims of its `Retain` volumes behind,
//! with their data: GuildNet's labels (`guildnet.io/managed=true`, the workspace's name in
//! `guildnet.io/id`, its owner's id in `guildnet.io/owner`) and no owner reference. They
//! count against their owner's storage Quota until deleted, and owners usually have no RBAC
//! on claims, so the proxy deletes them itself, with its own identity, once it has checked:
//!
//! - the claim's owner label is the caller's owner id (the id the webhook stamps on their
//!   workspaces, [`crate::auth::Identity::owner_id`]); anyone else's claim, or none, is `404`
//!   alike, so nobody learns which claims others have;
//! - it is retained: no owner reference (a claim owned by its workspace goes with it: `403`),
//!   not already being deleted (`409`);
//! - no live Workspace of its namespace names it (`<workspace>-<volume>` of a persistent
//!   volume): `409`, naming the workspace.
//!
//! The checks read the watch caches; the delete carries the checked object's uid and
//! resourceVersion as preconditions, so a claim re-created or changed since (relabelled,
//! adopted) is not deleted: `409` again. Like every write, a browser's needs a same-origin
//! `Origin`.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use guildnet_api::labels;
use guildnet_api::workspace::Workspace;
use guildnet_api::workspace::facts::{claim_name, is_retained_claim};
use guildnet_api::workspace::rules::is_dns_label;
use http::StatusCode;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde::Serialize;
use serde_json::json;

use super::api::{check_namespace_parameter, writer};
use crate::app::{AppState, synced};
use crate::error::ApiError;

/// Seconds to wait before asking again while the caches are still being filled.
const NOT_SYNCED_RETRY_AFTER_SECONDS: u32 = 1;

/// A retained claim as the dashboard shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSummary {
    /// Its namespace.
    pub namespace: String,
    /// Its name, `<workspace>-<volume>`.
    pub name: String,
    /// The workspace it was made for (`guildnet.io/id` label).
    pub workspace: Option<String>,
    /// The storage it asks for (`spec.resources.requests.storage`), e.g. `10Gi`.
    pub size: Option<String>,
    /// When it was created (RFC 3339).
    pub creation_timestamp: Option<String>,
    /// The live workspace of its namespace whose persistent volume it is, if any (its own,
    /// or one re-created under its name, which mounts it again): then it cannot be deleted.
    pub used_by: Option<String>,
}

/// What the cache of claims watches: GuildNet's (label `guildnet.io/managed=true`), in
/// every namespace.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}=true", labels::MANAGED))
}

/// `GET /api/claims`: the caller's retained claims in every namespace, whether or not a
/// live workspace still names them (`usedBy`), sorted by namespace and name.
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state.auth.require(&headers, peer.ip()).await?;
    require_synced(&state)?;
    let owner = caller.identity.owner_id();
    let named = named_claims(&state.workspaces);
    let mut items: Vec<ClaimSummary> = state
        .claims
        .state()
        .iter()
        .filter(|claim| label(claim, labels::OWNER) == Some(owner) && is_retained_claim(claim))
        .map(|claim| {
            let namespace = claim.metadata.namespace.clone().unwrap_or_default();
            let name = claim.metadata.name.clone().unwrap_or_default();
            ClaimSummary {
                workspace: label(claim, labels::ID).map(str::to_owned),
                size: requested_storage(claim),
                creation_timestamp: claim
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string()),
                used_by: named.get(&(namespace.clone(), name.clone())).cloned(),
                namespace,
                name,
            }
        })
        .collect();
    items.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(Json(json!({ "items": items })).into_response())
}

/// `DELETE /api/claims/{namespace}/{name}`: deletes the caller's retained claim, with the
/// proxy's identity, once the checks of the module documentation pass.
pub async fn delete(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let caller = writer(&state, &headers, peer).await?;
    check_claim_path_parameters(&namespace, &name)?;
    require_synced(&state)?;
    let claim = state
        .claims
        .get(&ObjectRef::new(&name).within(&namespace))
        .filter(|claim| {
            label(claim, labels::MANAGED) == Some("true")
                && label(claim, labels::OWNER) == Some(caller.identity.owner_id())
        })
        .ok_or_else(|| no_such_claim(&namespace, &name))?;
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ClaimBeingDeleted",
            format!("claim {namespace}/{name} is already being deleted"),
        ));
    }
    if let Some(owner) = claim.metadata.owner_references.iter().flatten().next() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ClaimNotRetained",
            format!(
                "claim {namespace}/{name} belongs to {} {} and is deleted with it; only \
                 retained claims (no owner) are deleted here",
                owner.kind, owner.name
            ),
        ));
    }
    if let Some(workspace) = named_claims(&state.workspaces).get(&(namespace.clone(), name.clone()))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ClaimInUse",
            format!(
                "claim {namespace}/{name} is a volume of workspace {namespace}/{workspace}; \
                 delete the workspace (or the volume from its spec) first"
            ),
        ));
    }
    // Exactly the object checked above: a claim re-created or changed since is refused.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    Api::<PersistentVolumeClaim>::namespaced(state.client.clone(), &namespace)
        .delete(&name, &params)
        .await
        .map_err(|error| match error {
            kube::Error::Api(status) if status.code == StatusCode::NOT_FOUND.as_u16() => {
                no_such_claim(&namespace, &name)
            }
            kube::Error::Api(status) if status.code == StatusCode::CONFLICT.as_u16() => {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "ClaimChanged",
                    format!(
                        "claim {namespace}/{name} changed since it was checked (re-created or \
                         relabelled); reload the list and try again"
                    ),
                )
            }
            other => ApiError::from_kube(other),
        })?;
    Ok(Json(json!({})).into_response())
}

/// `{namespace}` as everywhere in the API (a DNS-1123 label); `{name}` a claim name GuildNet
/// makes, `<workspace>-<volume>`: two DNS-1123 labels joined by `-` (so it may be longer
/// than one label). Both are checked before they reach a cache key or an API URL.
pub fn check_claim_path_parameters(namespace: &str, name: &str) -> Result<(), ApiError> {
    check_namespace_parameter(namespace)?;
    let two_labels = name
        .match_indices('-')
        .any(|(at, _)| is_dns_label(&name[..at]) && is_dns_label(&name[at + 1..]));
    if two_labels {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "path parameter name {name:?} is not a claim name: use <workspace>-<volume>, two \
             DNS-1123 labels joined by -"
        )))
    }
}

/// The claims the live workspaces name, `(namespace, claim)` → workspace: each persistent
/// volume's `<workspace>-<volume>`. Workspaces being deleted no longer count.
fn named_claims(workspaces: &Store<Workspace>) -> HashMap<(String, String), String> {
    let mut named = HashMap::new();
    for ws in workspaces.state() {
        if ws.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(namespace), Some(workspace)) = (&ws.metadata.namespace, &ws.metadata.name) else {
            continue;
        };
        for volume in ws.spec.volumes.iter().filter(|v| v.persistent.is_some()) {
            let claim = claim_name(workspace, &volume.name);
            named.insert((namespace.clone(), claim), workspace.clone());
        }
    }
    named
}

fn label<'a>(claim: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    claim.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn requested_storage(claim: &PersistentVolumeClaim) -> Option<String> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    Some(requests.get("storage")?.0.clone())
}

/// `404 ClaimNotFound`: no such claim of the caller's (none, or someone else's: the same).
fn no_such_claim(namespace: &str, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ClaimNotFound",
        format!("you have no volume claim {namespace}/{name}"),
    )
}

/// `503` until both caches the checks read have been filled once.
fn require_synced(state: &AppState) -> Result<(), ApiError> {
    if synced(&state.claims) && synced(&state.workspaces) {
        return Ok(());
    }
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "CachesNotSynced",
        "the proxy is still reading the cluster's volume claims and workspaces; try again shortly",
    );
    error.retry_after = Some(NOT_SYNCED_RETRY_AFTER_SECONDS);
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_path_parameters_are_claim_names_guildnet_makes() {
        let longest = format!("{}-{}", "a".repeat(63), "b".repeat(63));
        for name in ["ide-home", "team-ide-home", "a-1", longest.as_str()] {
            assert_eq!(check_claim_path_parameters("team", name), Ok(()), "{name}");
        }
        for (namespace, name, parameter) in [
            ("team", "home", "name"),
            ("team", "ide-", "name"),
            ("team", "-home", "name"),
            ("team", "ide--home", "name"),
            ("team", "ide-home/status", "name"),
            ("team", "ide-home?dryRun=All", "name"),
            ("team", "ide-home#", "name"),
            ("team", "ide.x-home", "name"),
            ("team", "Ide-home", "name"),
            ("team", "", "name"),
            ("Team", "ide-home", "namespace"),
            ("team/x", "ide-home", "namespace"),
        ] {
            let error = check_claim_path_parameters(namespace, name).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{namespace}/{name}");
            assert!(
                error
                    .message
                    .starts_with(&format!("path parameter {parameter} ")),
                "{namespace}/{name}: {}",
                error.message
            );
        }
        let too_long = format!("{}-{}", "a".repeat(64), "b".repeat(63));
        assert!(check_claim_path_parameters("team", &too_long).is_err());
    }
}
