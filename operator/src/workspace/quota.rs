//! Quotas, enforced again by the operator. Admission alone races (two webhook replicas, a
//! cache a moment behind), so the operator is the final word:
//!
//! - an owner's retained volume claims that no workspace asks for, and their GuildDatabases'
//!   volumes, count first: they exist, and they keep their storage until the owner deletes
//!   them;
//! - an owner's workspaces that a Quota counts are ordered by creation time, then name;
//! - walking that order, each workspace is admitted while the owner's usage plus its demand
//!   stays within every Quota that applies; one that would not fit is not started (zero
//!   replicas) and is `Failed` with reason `QuotaExceeded`, and uses no capacity;
//! - a workspace marked `QuotaExceeded` stays so while its spec is unchanged, even when
//!   capacity frees up: it is not silently started later. Any edit of its spec (for
//!   example `spec.lifecycle.suspend` toggled) is the user resuming it, and it is judged
//!   again.
//!
//! Which Quotas apply is decided from the owner recorded by the webhook (`guildnet.io/owner`,
//! `guildnet.io/owner-name`, `guildnet.io/owner-groups`), exactly as the webhook decides it.

use super::status::Failure;
use guildnet_api::common::find_true_condition;
use guildnet_api::policy::{
    self, ApplicableQuota, Usage, User, check_quotas, quota_applies, workspace_demand,
};
use guildnet_api::workspace::facts::{ConditionType, Reason};
use guildnet_api::{GuildDatabase, Quota, Workspace};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

/// What a Quota may count of an owner, from the operator's caches (all namespaces).
#[derive(Clone, Copy)]
pub struct Counted<'a> {
    /// The owner's workspaces.
    pub workspaces: &'a [&'a Workspace],
    /// The owner's volume claims; only retained ones no workspace asks for count.
    pub claims: &'a [&'a PersistentVolumeClaim],
    /// The owner's GuildDatabases: their servers' volumes count as storage.
    pub databases: &'a [&'a GuildDatabase],
}

/// The `QuotaExceeded` failure of `ws`, if the Quotas that apply to its owner leave it no
/// room. `counted` and `quotas` are from the operator's caches (all namespaces).
pub fn check(
    ws: &Workspace,
    counted: &Counted<'_>,
    quotas: &[&Quota],
    system_namespace: &str,
) -> Option<Failure> {
    let owner = ws.owner_id()?;
    if let Some(failure) = still_refused(ws) {
        return Some(failure);
    }
    let namespace = ws.namespace()?;
    let user = owner_as_user(ws);
    let mut demand = workspace_demand(&ws.spec).ok()?;
    // Admission refuses a workspace whose ephemeral storage is unbounded while a Quota
    // limits it; one admitted before such a Quota existed keeps running.
    demand.ephemeral_storage_unbounded = false;
    let mut retained =
        policy::retained_claims_usage(counted.claims.iter().copied(), owner, counted.workspaces);
    retained.extend(policy::databases_usage(
        counted.databases.iter().copied(),
        owner,
    ));
    let applying: Vec<&Quota> = quotas
        .iter()
        .copied()
        .filter(|q| quota_applies(q, &user, &namespace, system_namespace))
        .collect();
    let names: Vec<String> = applying
        .iter()
        .map(|q| format!("{}/{}", q.namespace().unwrap_or_default(), q.name_any()))
        .collect();
    let applicable: Vec<ApplicableQuota> = applying
        .iter()
        .zip(&names)
        .map(|(q, name)| ApplicableQuota {
            name,
            limits: &q.spec.per_owner,
            usage: retained
                .iter()
                .filter(|(ns, _)| policy::quota_counts_namespace(q, ns, system_namespace))
                .fold(
                    usage_before(ws, owner, counted.workspaces, q, system_namespace),
                    |total, (_, claims)| total.saturating_add(claims),
                ),
        })
        .collect();
    check_quotas(&applicable, &demand).err().map(|denial| Failure {
        reason: Reason::QuotaExceeded,
        message: format!("{}; the workspace is not started until you resume it (edit its spec, e.g. toggle spec.lifecycle.suspend)", denial.message),
    })
}

/// A refusal that stands: the workspace was marked `QuotaExceeded` and its spec has not
/// changed since.
pub(crate) fn still_refused(ws: &Workspace) -> Option<Failure> {
    let status = ws.status.as_ref()?;
    let failed = find_true_condition(&status.conditions, ConditionType::Failed)?;
    let unchanged = failed.observed_generation.is_some()
        && failed.observed_generation == ws.metadata.generation;
    (failed.reason == Reason::QuotaExceeded.as_str() && unchanged).then(|| Failure {
        reason: Reason::QuotaExceeded,
        message: failed.message.clone(),
    })
}

/// The owner as the webhook saw them at creation; one without a recorded name matches
/// only Quotas for everyone.
pub(crate) fn owner_as_user(ws: &Workspace) -> User {
    ws.owner()
        .unwrap_or_else(|| User::new("", ws.owner_groups()))
}

/// What `owner`'s workspaces that `quota` counts and that come before `ws` use, leaving out
/// those refused themselves.
fn usage_before(
    ws: &Workspace,
    owner: &str,
    workspaces: &[&Workspace],
    quota: &Quota,
    system_namespace: &str,
) -> Usage {
    let key = order_key(ws);
    workspaces
        .iter()
        .filter(|w| w.owner_id() == Some(owner))
        .filter(|w| w.metadata.deletion_timestamp.is_none() && still_refused(w).is_none())
        .filter(|w| {
            w.namespace()
                .is_some_and(|ns| policy::quota_counts_namespace(quota, &ns, system_namespace))
        })
        .filter(|w| order_key(w) < key)
        .filter_map(|w| workspace_demand(&w.spec).ok())
        .fold(Usage::default(), |total, demand| {
            total.saturating_add(&demand)
        })
}

/// Creation time, then namespace and name: the order in which workspaces get capacity.
fn order_key(ws: &Workspace) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        ws.metadata.creation_timestamp.as_ref().map(|t| t.0),
        ws.namespace().unwrap_or_default(),
        ws.name_any(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::conditions::{Observed, merge};
    use guildnet_api::WorkspaceSpec;
    use guildnet_api::labels;
    use guildnet_api::quota::{PerOwnerLimits, QuotaSpec};
    use guildnet_api::workspace::WorkspaceStatus;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn workspace(name: &str, owner: &str, created: i64) -> Workspace {
        let mut ws = Workspace::new(
            name,
            WorkspaceSpec {
                image: "nginx".into(),
                ..Default::default()
            },
        );
        ws.metadata.namespace = Some("team-a".into());
        ws.metadata.generation = Some(1);
        ws.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        ws.metadata.labels = Some([(labels::OWNER.to_string(), owner.to_string())].into());
        ws.metadata.annotations =
            Some([(labels::OWNER_NAME.to_string(), owner.to_string())].into());
        ws
    }

    fn counted<'a>(workspaces: &'a [&'a Workspace]) -> Counted<'a> {
        Counted {
            workspaces,
            claims: &[],
            databases: &[],
        }
    }

    fn max_workspaces(n: i32) -> Quota {
        let mut q = Quota::new(
            "per-owner",
            QuotaSpec {
                per_owner: PerOwnerLimits {
                    max_workspaces: Some(n),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        q.metadata.namespace = Some("team-a".into());
        q
    }

    fn refused(mut ws: Workspace, generation: i64) -> Workspace {
        let failed = Observed::new(ConditionType::Failed, true, Reason::QuotaExceeded, "over");
        ws.status = Some(WorkspaceStatus {
            conditions: merge(
                &[],
                vec![failed],
                Some(generation),
                Timestamp::from_second(0).unwrap(),
            ),
            ..Default::default()
        });
        ws
    }

    #[test]
    fn the_earliest_workspaces_get_the_capacity() {
        let fleet: Vec<Workspace> = (0..5)
            .map(|i| workspace(&format!("ws-{i}"), "alice", 100 - i))
            .collect();
        let all: Vec<&Workspace> = fleet.iter().collect();
        let quota = max_workspaces(3);
        let over: Vec<String> = fleet
            .iter()
            .filter(|ws| check(ws, &counted(&all), &[&quota], "guildnet-system").is_some())
            .map(|ws| ws.name_any())
            .collect();
        // Created at 100, 99, 98, 97, 96: the three oldest are ws-4, ws-3, ws-2.
        assert_eq!(over, ["ws-0", "ws-1"]);
    }

    #[test]
    fn other_owners_and_namespaces_do_not_count() {
        let mine = workspace("mine", "alice", 10);
        let bobs = workspace("bobs", "bob", 1);
        let mut elsewhere = workspace("elsewhere", "alice", 2);
        elsewhere.metadata.namespace = Some("team-b".into());
        let all = [&mine, &bobs, &elsewhere];
        assert_eq!(
            check(
                &mine,
                &counted(&all),
                &[&max_workspaces(1)],
                "guildnet-system"
            ),
            None
        );
    }

    #[test]
    fn a_refusal_stands_until_the_spec_changes_and_refused_workspaces_use_no_capacity() {
        // `second` was refused while an older `first` existed; `first` has since been deleted.
        let second = refused(workspace("second", "alice", 2), 1);
        let third = workspace("third", "alice", 3);
        let quota = max_workspaces(2);
        // Capacity freed up, but `second` stays refused...
        let all = [&second, &third];
        let failure =
            check(&second, &counted(&all), &[&quota], "guildnet-system").expect("still refused");
        assert_eq!(failure.reason, Reason::QuotaExceeded);
        // ...and does not count against `third`.
        assert_eq!(
            check(&third, &counted(&all), &[&quota], "guildnet-system"),
            None
        );
        // The user edits it (a new generation): judged again, and it fits.
        let mut resumed = second.clone();
        resumed.metadata.generation = Some(2);
        assert_eq!(
            check(
                &resumed,
                &counted(&[&resumed, &third]),
                &[&quota],
                "guildnet-system"
            ),
            None
        );
    }

    #[test]
    fn a_workspace_without_an_owner_is_not_limited() {
        let mut ws = workspace("free", "alice", 1);
        ws.metadata.labels = None;
        assert_eq!(
            check(
                &ws,
                &counted(&[&ws]),
                &[&max_workspaces(0)],
                "guildnet-system"
            ),
            None
        );
    }

    fn limited(per_owner: PerOwnerLimits) -> Quota {
        let mut q = max_workspaces(10);
        q.spec.per_owner = per_owner;
        q
    }

    fn with_storage(mut ws: Workspace, size: &str) -> Workspace {
        ws.spec.volumes = vec![guildnet_api::workspace::WorkspaceVolume {
            name: "home".into(),
            mount_path: "/home".into(),
            persistent: Some(guildnet_api::workspace::PersistentVolume {
                size: Quantity(size.into()),
                ..Default::default()
            }),
            ephemeral: None,
        }];
        ws
    }

    fn retained_claim(name: &str, owner: &str, size: &str) -> PersistentVolumeClaim {
        use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
        let mut claim = PersistentVolumeClaim::default();
        claim.metadata.name = Some(name.into());
        claim.metadata.namespace = Some("team-a".into());
        claim.metadata.labels = Some(
            [
                (labels::MANAGED.to_string(), "true".to_string()),
                (labels::OWNER.to_string(), owner.to_string()),
            ]
            .into(),
        );
        claim.spec = Some(PersistentVolumeClaimSpec {
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(size.into()))].into()),
                limits: None,
            }),
            ..Default::default()
        });
        claim
    }

    #[test]
    fn retained_claims_take_their_owners_storage_before_any_workspace() {
        let quota = limited(PerOwnerLimits {
            storage: Some(Quantity("20Gi".into())),
            ..Default::default()
        });
        let ws = with_storage(workspace("ws", "alice", 1), "15Gi");
        let gone = retained_claim("gone-home", "alice", "10Gi");
        // Named by `ws`'s spec: counted once, as the workspace's.
        let its_own = retained_claim("ws-home", "alice", "15Gi");
        let all = [&ws];
        let only_its_own = [&its_own];
        let counted_with = |claims| Counted {
            workspaces: &all,
            claims,
            databases: &[],
        };
        assert_eq!(
            check(
                &ws,
                &counted_with(&only_its_own),
                &[&quota],
                "guildnet-system"
            ),
            None
        );
        let with_gone = [&its_own, &gone];
        let failure = check(&ws, &counted_with(&with_gone), &[&quota], "guildnet-system")
            .expect("10Gi retained + 15Gi is over 20Gi");
        assert_eq!(failure.reason, Reason::QuotaExceeded);
        assert!(
            failure
                .message
                .contains("spec.perOwner.storage is 20Gi per owner; you use 10Gi"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn guild_databases_take_their_owners_storage_before_any_workspace() {
        let quota = limited(PerOwnerLimits {
            storage: Some(Quantity("20Gi".into())),
            ..Default::default()
        });
        let ws = with_storage(workspace("ws", "alice", 1), "15Gi");
        let db: GuildDatabase = serde_json::from_value(serde_json::json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
            "metadata": {"name": "app", "namespace": "team-a", "labels": {"guildnet.io/owner": "alice"}},
            "spec": {"replicas": 2, "storage": {"size": "5Gi"}}
        }))
        .unwrap();
        let all = [&ws];
        let databases = [&db];
        let counted = Counted {
            workspaces: &all,
            claims: &[],
            databases: &databases,
        };
        let failure = check(&ws, &counted, &[&quota], "guildnet-system")
            .expect("2 × 5Gi of the database + 15Gi is over 20Gi");
        assert_eq!(failure.reason, Reason::QuotaExceeded);
        assert!(
            failure.message.contains("you use 10Gi"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn gpus_are_counted_per_owner_and_unbounded_ephemeral_storage_is_left_to_admission() {
        let quota = limited(PerOwnerLimits {
            ephemeral_storage: Some(Quantity("10Gi".into())),
            extended: [("nvidia.com/gpu".to_string(), Quantity("1".into()))].into(),
            ..Default::default()
        });
        let gpu = |mut ws: Workspace| {
            ws.spec.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
                limits: Some([("nvidia.com/gpu".to_string(), Quantity("1".into()))].into()),
                ..Default::default()
            });
            ws
        };
        let first = gpu(workspace("first", "alice", 1));
        let second = gpu(workspace("second", "alice", 2));
        let all = [&first, &second];
        // Neither declares ephemeral storage: admission refuses such a workspace while the
        // Quota limits it, but one that was running before the Quota keeps running.
        assert_eq!(
            check(&first, &counted(&all), &[&quota], "guildnet-system"),
            None
        );
        let failure = check(&second, &counted(&all), &[&quota], "guildnet-system")
            .expect("a second GPU is over the Quota");
        assert!(
            failure
                .message
                .contains("spec.perOwner.extended[nvidia.com/gpu] is 1 per owner; you use 1 and this request adds 1"),
            "{}",
            failure.message
        );
    }
}
