//! A Quota's status, computed from the caches: every owner it applies to, with what their
//! workspaces and retained claims use as the Quota counts it, and whether any of them is
//! over a limit. Pure, so it is tested without an API server.

use crate::reconcile::conditions::{Observed, merge};
use crate::workspace::quota::{owner_as_user, still_refused};
use guildnet_api::policy::{self, ApplicableQuota, Usage, check_quotas, workspace_demand};
use guildnet_api::quota::{MAX_LISTED_OWNERS, Quota, QuotaConditionType, QuotaReason, QuotaStatus};
use guildnet_api::{GuildDatabase, Workspace};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// One owner as a Quota counts them.
#[derive(Default)]
struct Owner<'a> {
    name: Option<&'a str>,
    workspaces: Vec<&'a Workspace>,
    usage: Usage,
}

/// The status `quota` should have. `workspaces`, `claims` and `databases` are the
/// operator's caches (all namespaces); workspaces held back as over a Quota use nothing, as the operator counts
/// them. An owner known only from retained claims is counted by a Quota for everyone (no
/// subjects): who they are beyond their id is not known without a workspace.
pub fn compute(
    quota: &Quota,
    workspaces: &[&Workspace],
    claims: &[&PersistentVolumeClaim],
    databases: &[&GuildDatabase],
    system_namespace: &str,
    now: Timestamp,
) -> QuotaStatus {
    let counts =
        |namespace: &str| policy::quota_counts_namespace(quota, namespace, system_namespace);
    let mut owners: BTreeMap<&str, Owner<'_>> = BTreeMap::new();
    for ws in workspaces {
        let (Some(owner), Some(namespace)) = (ws.owner_id(), ws.metadata.namespace.as_deref())
        else {
            continue;
        };
        let applies = policy::quota_applies(quota, &owner_as_user(ws), namespace, system_namespace);
        if !applies || ws.metadata.deletion_timestamp.is_some() || still_refused(ws).is_some() {
            continue;
        }
        let Ok(demand) = workspace_demand(&ws.spec) else {
            continue;
        };
        let entry = owners.entry(owner).or_default();
        entry.name = entry.name.or(ws.owner_name());
        entry.workspaces.push(ws);
        entry.usage = std::mem::take(&mut entry.usage).saturating_add(&demand);
    }
    if quota.spec.subjects.is_empty() {
        for claim in claims {
            let owner = claim.labels().get(guildnet_api::labels::OWNER);
            if let Some(owner) =
                owner.filter(|_| guildnet_api::workspace::facts::is_retained_claim(claim))
            {
                owners.entry(owner.as_str()).or_default();
            }
        }
    }
    for db in databases {
        let (Some(owner), Some(namespace)) = (db.owner_id(), db.metadata.namespace.as_deref())
        else {
            continue;
        };
        let user = db
            .owner()
            .unwrap_or_else(|| policy::User::new("", Vec::<String>::new()));
        if policy::quota_applies(quota, &user, namespace, system_namespace) {
            let entry = owners.entry(owner).or_default();
            entry.name = entry.name.or(db.owner_name());
        }
    }
    for (owner, entry) in &mut owners {
        let mut retained =
            policy::retained_claims_usage(claims.iter().copied(), owner, &entry.workspaces);
        retained.extend(policy::databases_usage(databases.iter().copied(), owner));
        for (_, usage) in retained.iter().filter(|(namespace, _)| counts(namespace)) {
            entry.usage = std::mem::take(&mut entry.usage).saturating_add(usage);
        }
    }
    owners.retain(|_, entry| entry.usage != Usage::default());

    let over: Vec<String> = owners
        .iter()
        .filter(|(_, entry)| is_over(quota, &entry.usage))
        .map(|(owner, entry)| entry.name.unwrap_or(owner).to_owned())
        .collect();
    let exceeded = match over.as_slice() {
        [] => Observed::new(
            QuotaConditionType::Exceeded,
            false,
            QuotaReason::WithinLimits,
            format!("{} owners within every limit", owners.len()),
        ),
        _ => Observed::new(
            QuotaConditionType::Exceeded,
            true,
            QuotaReason::OwnersOverLimit,
            format!(
                "{} of {} owners over a limit (their newest workspaces are held): {}",
                over.len(),
                owners.len(),
                over.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            ),
        ),
    };
    let previous = quota
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    QuotaStatus {
        usage: owners
            .iter()
            .take(MAX_LISTED_OWNERS)
            .map(|(owner, entry)| entry.usage.to_owner_usage(owner, entry.name))
            .collect(),
        owner_count: Some(i32::try_from(owners.len()).unwrap_or(i32::MAX)),
        conditions: merge(previous, vec![exceeded], quota.metadata.generation, now),
        observed_generation: quota.metadata.generation,
    }
}

/// Whether `usage` is over one of `quota`'s limits.
fn is_over(quota: &Quota, usage: &Usage) -> bool {
    let everything = ApplicableQuota {
        name: "",
        limits: &quota.spec.per_owner,
        usage: Usage::default(),
    };
    // A workspace that declares no ephemeral storage is refused at admission, not over.
    let usage = Usage {
        ephemeral_storage_unbounded: false,
        ..usage.clone()
    };
    check_quotas(&[everything], &usage).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use guildnet_api::WorkspaceSpec;
    use guildnet_api::labels;
    use guildnet_api::quota::{PerOwnerLimits, QuotaSpec};
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn workspace(name: &str, owner: &str, cpu: &str) -> Workspace {
        let mut ws = Workspace::new(
            name,
            WorkspaceSpec {
                image: "nginx".into(),
                resources: Some(ResourceRequirements {
                    requests: Some([("cpu".to_owned(), Quantity(cpu.into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        ws.metadata.namespace = Some("team-a".into());
        ws.metadata.labels = Some([(labels::OWNER.to_owned(), format!("u-{owner}"))].into());
        ws.metadata.annotations = Some([(labels::OWNER_NAME.to_owned(), owner.to_owned())].into());
        ws
    }

    fn quota(cpu: &str) -> Quota {
        let mut quota = Quota::new(
            "per-owner",
            QuotaSpec {
                per_owner: PerOwnerLimits {
                    cpu: Some(Quantity(cpu.into())),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        quota.metadata.namespace = Some("team-a".into());
        quota.metadata.generation = Some(3);
        quota
    }

    #[test]
    fn each_owner_is_listed_with_what_their_workspaces_use() {
        let (a, b, c) = (
            workspace("a", "alice", "1"),
            workspace("b", "alice", "500m"),
            workspace("c", "bob", "2"),
        );
        let mut elsewhere = workspace("d", "alice", "8");
        elsewhere.metadata.namespace = Some("team-b".into());
        let status = compute(
            &quota("4"),
            &[&a, &b, &c, &elsewhere],
            &[],
            &[],
            "guildnet-system",
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(status.owner_count, Some(2));
        assert_eq!(status.observed_generation, Some(3));
        let alice = &status.usage[0];
        assert_eq!(
            (alice.owner.as_str(), alice.owner_name.as_deref()),
            ("u-alice", Some("alice"))
        );
        assert_eq!(alice.workspaces, 2);
        assert_eq!(alice.cpu, Some(Quantity("1500m".into())));
        assert_eq!(status.usage[1].owner, "u-bob");
        let exceeded = &status.conditions[0];
        assert_eq!(
            (
                exceeded.type_.as_str(),
                exceeded.status.as_str(),
                exceeded.reason.as_str()
            ),
            ("Exceeded", "False", "WithinLimits")
        );
    }

    #[test]
    fn owners_over_a_lowered_limit_are_named_and_the_transition_time_is_kept() {
        let (a, b) = (workspace("a", "alice", "3"), workspace("b", "bob", "1"));
        let mut lowered = quota("2");
        let first = compute(
            &lowered,
            &[&a, &b],
            &[],
            &[],
            "guildnet-system",
            Timestamp::from_second(10).unwrap(),
        );
        let exceeded = &first.conditions[0];
        assert_eq!(
            (exceeded.status.as_str(), exceeded.reason.as_str()),
            ("True", "OwnersOverLimit")
        );
        assert!(
            exceeded.message.contains("1 of 2 owners over a limit")
                && exceeded.message.contains("alice"),
            "{}",
            exceeded.message
        );
        // Computed again later with nothing changed: the same status, so nothing to write.
        lowered.status = Some(first.clone());
        let again = compute(
            &lowered,
            &[&a, &b],
            &[],
            &[],
            "guildnet-system",
            Timestamp::from_second(99).unwrap(),
        );
        assert_eq!(again, first);
    }

    #[test]
    fn held_workspaces_use_nothing_and_retained_claims_count_for_their_owner() {
        use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
        let mut claim = PersistentVolumeClaim::default();
        claim.metadata.name = Some("gone-home".into());
        claim.metadata.namespace = Some("team-a".into());
        claim.metadata.labels = Some(
            [
                (labels::MANAGED.to_owned(), "true".to_owned()),
                (labels::OWNER.to_owned(), "u-carol".to_owned()),
            ]
            .into(),
        );
        claim.spec = Some(PersistentVolumeClaimSpec {
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_owned(), Quantity("10Gi".into()))].into()),
                limits: None,
            }),
            ..Default::default()
        });
        let mut held = workspace("held", "alice", "1");
        held.metadata.generation = Some(1);
        held.status = Some(guildnet_api::workspace::WorkspaceStatus {
            conditions: merge(
                &[],
                vec![Observed::new(
                    guildnet_api::workspace::facts::ConditionType::Failed,
                    true,
                    guildnet_api::workspace::facts::Reason::QuotaExceeded,
                    "over",
                )],
                Some(1),
                Timestamp::UNIX_EPOCH,
            ),
            ..Default::default()
        });
        let status = compute(
            &quota("4"),
            &[&held],
            &[&claim],
            &[],
            "guildnet-system",
            Timestamp::UNIX_EPOCH,
        );
        // alice's only workspace is held: she uses nothing. carol has only her claim.
        assert_eq!(status.owner_count, Some(1));
        assert_eq!(status.usage[0].owner, "u-carol");
        assert_eq!(status.usage[0].workspaces, 0);
        assert_eq!(status.usage[0].storage, Some(Quantity("10Gi".into())));
    }

    #[test]
    fn guild_databases_count_as_their_owners_storage() {
        let db: GuildDatabase = serde_json::from_value(serde_json::json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
            "metadata": {"name": "app", "namespace": "team-a",
                         "labels": {"guildnet.io/owner": "u-dave"},
                         "annotations": {"guildnet.io/owner-name": "dave"}},
            "spec": {"replicas": 3, "storage": {"size": "2Gi"}}
        }))
        .unwrap();
        let mut elsewhere = db.clone();
        elsewhere.metadata.namespace = Some("team-b".into());
        let status = compute(
            &quota("4"),
            &[],
            &[],
            &[&db, &elsewhere],
            "guildnet-system",
            Timestamp::UNIX_EPOCH,
        );
        // Only the one in the Quota's namespace: 3 servers of 2Gi, and no workspace.
        assert_eq!(status.owner_count, Some(1));
        assert_eq!(status.usage[0].owner_name.as_deref(), Some("dave"));
        assert_eq!(status.usage[0].workspaces, 0);
        assert_eq!(status.usage[0].storage, Some(Quantity("6Gi".into())));
    }
}
