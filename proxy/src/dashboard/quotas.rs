//! `GET /api/quotas`: the caller's usage against the limits of the Quotas that count them.
//!
//! The operator keeps each Quota's `status.usage` current: one entry per owner it counts,
//! by owner id. The proxy watches the Quotas and answers, for the caller (their owner id,
//! [`crate::auth::Identity::owner_id`], the id the webhook stamps on their workspaces):
//!
//! - every Quota whose `status.usage` has an entry for them, in any namespace, with that
//!   entry: the Quota counts something of theirs, so its limits are theirs to see;
//! - every Quota of a namespace where they own a live workspace that applies to them
//!   ([`quota_applies`] with their user name and groups) but has no entry for them: it
//!   counts nothing of theirs yet (their workspaces there are held, or the operator has not
//!   counted the newest one yet). Its usage is zero when the status lists every owner it
//!   counts, and unknown (`null`) when there is no status yet or the status lists only the
//!   first [`MAX_LISTED_OWNERS`] owners and so cannot tell.
//!
//! A cluster-wide Quota (in the operator's namespace) that counts nothing of the caller's
//! yet is not listed: which namespace is the operator's is the operator's setting, not the
//! proxy's, and it shows up as soon as it counts something.
//!
//! Only the caller's own entry is ever answered: not the other owners', nor `ownerCount`
//! or the conditions (whose message names the owners over a limit).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use guildnet_api::policy::{User, quantity_milli, quota_applies};
use guildnet_api::quota::{MAX_LISTED_OWNERS, OwnerUsage, PerOwnerLimits, Quota, QuotaScope};
use guildnet_api::workspace::Workspace;
use http::StatusCode;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;
use serde_json::json;

use crate::app::{AppState, synced};
use crate::auth::Identity;
use crate::error::ApiError;

/// Seconds to wait before asking again while the caches are still being filled.
const NOT_SYNCED_RETRY_AFTER_SECONDS: u32 = 1;

/// No system namespace: only asked about a Quota's own namespace, which it counts whatever
/// its scope, so the operator's namespace (which only widens a `Cluster` Quota's reach)
/// changes nothing.
const NO_SYSTEM_NAMESPACE: &str = "";

/// A Quota as the caller sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSummary {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.scope`, `Namespace` when unset (a `Cluster` Quota outside the operator's
    /// namespace counts its own namespace only).
    pub scope: QuotaScope,
    /// `spec.perOwner`: the limits, as written.
    pub limits: PerOwnerLimits,
    /// The caller's entry of `status.usage`; zero when it counts nothing of theirs, `null`
    /// when that cannot be told (no status yet, or the caller beyond the owners listed).
    pub usage: Option<OwnerUsage>,
    /// Each limited dimension, `used` against `limit`, in the order of `spec.perOwner`
    /// (workspaces, CPU, memory, storage, ephemeral storage, then the extended resources).
    pub dimensions: Vec<DimensionSummary>,
}

/// One limit of a Quota, and the caller's usage along it.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DimensionSummary {
    /// The `spec.perOwner` field: `maxWorkspaces`, `cpu`, `memory`, `storage`,
    /// `ephemeralStorage` or `extended[<resource>]`.
    pub field: String,
    /// What is limited, for people: `workspaces`, `cpu`, `memory`, `storage`,
    /// `ephemeral storage` or the extended resource's name (`nvidia.com/gpu`).
    pub resource: String,
    /// What the caller uses, as the operator wrote it; `null` when unknown.
    pub used: Option<String>,
    /// The limit, as written.
    pub limit: String,
    /// Whether the caller is at or over the limit: nothing more along it would be admitted.
    /// Also true when the limit cannot be read, as admission then refuses (fails closed).
    pub full: bool,
    /// Whether the caller uses more than the limit (lowered since, or a race of webhook
    /// replicas): their newest workspaces are held.
    pub over: bool,
}

/// `GET /api/quotas`: [`callers_quotas`] for the caller, sorted by namespace and name.
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state.auth.require(&headers, peer.ip()).await?;
    require_synced(&state)?;
    let items = callers_quotas(
        &state.quotas.state(),
        &state.workspaces.state(),
        &caller.identity,
    );
    Ok(Json(json!({ "items": items })).into_response())
}

/// The Quotas that count `caller` or apply to them where they have workspaces, with their
/// own usage only (see the module documentation), sorted by namespace and name.
pub fn callers_quotas(
    quotas: &[Arc<Quota>],
    workspaces: &[Arc<Workspace>],
    caller: &Identity,
) -> Vec<QuotaSummary> {
    let owner = caller.owner_id();
    let user = User::new(caller.username.clone(), caller.groups.iter().cloned());
    let working_in: HashSet<&str> = workspaces
        .iter()
        .filter(|ws| ws.owner_id() == Some(owner) && ws.metadata.deletion_timestamp.is_none())
        .filter_map(|ws| ws.metadata.namespace.as_deref())
        .collect();
    let mut items: Vec<QuotaSummary> = quotas
        .iter()
        .filter_map(|quota| {
            let namespace = quota.metadata.namespace.as_deref()?;
            let status = quota.status.as_ref();
            let entry = status.and_then(|s| s.usage.iter().find(|u| u.owner == owner));
            let usage = match entry {
                Some(entry) => Some(entry.clone()),
                None if working_in.contains(namespace)
                    && quota_applies(quota, &user, namespace, NO_SYSTEM_NAMESPACE) =>
                {
                    status
                        .filter(|s| lists_every_owner(s.owner_count, s.usage.len()))
                        .map(|_| OwnerUsage {
                            owner: owner.to_owned(),
                            ..OwnerUsage::default()
                        })
                }
                None => return None,
            };
            let limits = quota.spec.per_owner.clone();
            Some(QuotaSummary {
                namespace: namespace.to_owned(),
                name: quota.metadata.name.clone().unwrap_or_default(),
                scope: quota.spec.scope.unwrap_or_default(),
                dimensions: dimensions(&limits, usage.as_ref()),
                limits,
                usage,
            })
        })
        .collect();
    items.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    items
}

/// Whether a status with `owner_count` owners and `listed` entries lists every owner: then
/// an owner it does not list uses nothing it counts.
fn lists_every_owner(owner_count: Option<i32>, listed: usize) -> bool {
    let count = owner_count.and_then(|n| usize::try_from(n).ok());
    count.is_some_and(|count| count <= listed) && listed <= MAX_LISTED_OWNERS
}

/// Each limit `limits` sets, with `usage` along it.
pub fn dimensions(limits: &PerOwnerLimits, usage: Option<&OwnerUsage>) -> Vec<DimensionSummary> {
    let mut out = Vec::new();
    if let Some(max) = limits.max_workspaces {
        let used = usage.map(|u| (u.workspaces.to_string(), Some(i128::from(u.workspaces))));
        out.push(compare(
            "maxWorkspaces",
            "workspaces",
            used,
            (max.to_string(), Some(i128::from(max))),
        ));
    }
    let named = [
        ("cpu", "cpu", &limits.cpu, usage.map(|u| &u.cpu)),
        ("memory", "memory", &limits.memory, usage.map(|u| &u.memory)),
        (
            "storage",
            "storage",
            &limits.storage,
            usage.map(|u| &u.storage),
        ),
        (
            "ephemeralStorage",
            "ephemeral storage",
            &limits.ephemeral_storage,
            usage.map(|u| &u.ephemeral_storage),
        ),
    ];
    for (field, resource, limit, used) in named {
        if let Some(limit) = limit {
            let used = used.map(|used| amount(used.as_ref()));
            out.push(compare(field, resource, used, amount(Some(limit))));
        }
    }
    for (resource, limit) in &limits.extended {
        let used = usage.map(|u| amount(u.extended.get(resource)));
        out.push(compare(
            &format!("extended[{resource}]"),
            resource,
            used,
            amount(Some(limit)),
        ));
    }
    out
}

/// A quantity as shown and as exact milli-units (None when it cannot be read); a missing
/// one is zero.
fn amount(quantity: Option<&Quantity>) -> (String, Option<i128>) {
    match quantity {
        Some(quantity) => (quantity.0.clone(), quantity_milli(quantity).ok()),
        None => ("0".to_owned(), Some(0)),
    }
}

fn compare(
    field: &str,
    resource: &str,
    used: Option<(String, Option<i128>)>,
    (limit, limit_value): (String, Option<i128>),
) -> DimensionSummary {
    let used_value = used.as_ref().and_then(|(_, value)| *value);
    let (full, over) = match (used_value, limit_value) {
        // Admission refuses whatever a limit it cannot read would allow.
        (_, None) => (true, false),
        (Some(used), Some(limit)) => (used >= limit, used > limit),
        (None, Some(_)) => (false, false),
    };
    DimensionSummary {
        field: field.to_owned(),
        resource: resource.to_owned(),
        used: used.map(|(text, _)| text),
        limit,
        full,
        over,
    }
}

/// `503` until the Quota and Workspace caches have been filled once.
fn require_synced(state: &AppState) -> Result<(), ApiError> {
    if synced(&state.quotas) && synced(&state.workspaces) {
        return Ok(());
    }
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "CachesNotSynced",
        "the proxy is still reading the cluster's Quotas and workspaces; try again shortly",
    );
    error.retry_after = Some(NOT_SYNCED_RETRY_AFTER_SECONDS);
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn each_limit_is_compared_exactly_and_unlimited_ones_are_left_out() {
        let limits = PerOwnerLimits {
            max_workspaces: Some(2),
            cpu: Some(q("2")),
            memory: Some(q("4Gi")),
            storage: None,
            ephemeral_storage: Some(q("10Gi")),
            extended: BTreeMap::from([
                ("nvidia.com/gpu".to_owned(), q("1")),
                ("hugepages-2Mi".to_owned(), q("1Gi")),
            ]),
        };
        let usage = OwnerUsage {
            owner: "o".into(),
            workspaces: 2,
            cpu: Some(q("1500m")),
            memory: Some(q("4096Mi")),
            storage: Some(q("100Gi")),
            ephemeral_storage: None,
            extended: BTreeMap::from([("nvidia.com/gpu".to_owned(), q("2"))]),
            ..OwnerUsage::default()
        };
        let shown: Vec<_> = dimensions(&limits, Some(&usage))
            .into_iter()
            .map(|d| (d.field, d.resource, d.used, d.limit, d.full, d.over))
            .collect();
        let row = |field: &str, resource: &str, used: &str, limit: &str, full, over| {
            let used = Some(used.to_owned());
            (
                field.into(),
                resource.into(),
                used,
                limit.into(),
                full,
                over,
            )
        };
        assert_eq!(
            shown,
            [
                row("maxWorkspaces", "workspaces", "2", "2", true, false),
                row("cpu", "cpu", "1500m", "2", false, false),
                // 4096Mi is 4Gi: at the limit, exactly.
                row("memory", "memory", "4096Mi", "4Gi", true, false),
                row(
                    "ephemeralStorage",
                    "ephemeral storage",
                    "0",
                    "10Gi",
                    false,
                    false
                ),
                row(
                    "extended[hugepages-2Mi]",
                    "hugepages-2Mi",
                    "0",
                    "1Gi",
                    false,
                    false
                ),
                row(
                    "extended[nvidia.com/gpu]",
                    "nvidia.com/gpu",
                    "2",
                    "1",
                    true,
                    true
                ),
            ]
        );
    }

    #[test]
    fn unknown_usage_is_never_full_and_an_unreadable_limit_always_is() {
        let limits = PerOwnerLimits {
            max_workspaces: Some(0),
            cpu: Some(q("lots")),
            ..PerOwnerLimits::default()
        };
        let unknown = dimensions(&limits, None);
        assert_eq!(
            unknown
                .iter()
                .map(|d| (d.used.clone(), d.full))
                .collect::<Vec<_>>(),
            [(None, false), (None, true)]
        );
        let zero = dimensions(&limits, Some(&OwnerUsage::default()));
        // Zero of zero: nothing more may be added.
        assert_eq!((zero[0].full, zero[0].over), (true, false));
    }

    #[test]
    fn an_owner_is_known_to_use_nothing_only_when_every_owner_is_listed() {
        assert!(lists_every_owner(Some(0), 0));
        assert!(lists_every_owner(Some(3), 3));
        assert!(!lists_every_owner(Some(501), MAX_LISTED_OWNERS));
        assert!(!lists_every_owner(None, 0));
        assert!(!lists_every_owner(Some(-1), 0));
    }
}
