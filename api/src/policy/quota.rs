//! Per-owner Quotas: what a workspace costs, which Quotas count it, and whether an owner
//! may add it.

use super::denial::{Denial, DenialReason};
use super::quantity::{QuantityError, QuantityStyle, format_milli, quantity_milli};
use super::subjects::{User, any_subject_matches};
use crate::database::GuildDatabase;
use crate::labels;
use crate::quota::{OwnerUsage, PerOwnerLimits, Quota, QuotaScope};
use crate::workspace::facts::{claim_name, is_retained_claim};
use crate::workspace::{Workspace, WorkspaceSpec};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use std::collections::{BTreeMap, BTreeSet};

/// What an owner uses, what a workspace demands, or what a change adds (fields may then be
/// negative). CPU, memory, storage and the rest are exact milli-units (see
/// [`quantity`](super::quantity)); sums saturate rather than wrap, so an absurd total
/// exceeds every limit instead of slipping under one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of workspaces.
    pub workspaces: i64,
    /// CPU, milli-cores.
    pub cpu: i128,
    /// Memory, milli-bytes.
    pub memory: i128,
    /// Persistent storage, milli-bytes.
    pub storage: i128,
    /// Ephemeral storage, milli-bytes.
    pub ephemeral_storage: i128,
    /// Whether a workspace counted (or, in a change, the changed one) declares no ephemeral
    /// storage, so what it may use is unbounded.
    pub ephemeral_storage_unbounded: bool,
    /// Every other resource (GPUs, hugepages) by name, milli-units.
    pub extended: BTreeMap<String, i128>,
}

impl Usage {
    /// The sum of two usages.
    pub fn saturating_add(mut self, other: &Self) -> Self {
        self.workspaces = self.workspaces.saturating_add(other.workspaces);
        self.cpu = self.cpu.saturating_add(other.cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.storage = self.storage.saturating_add(other.storage);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        self.ephemeral_storage_unbounded |= other.ephemeral_storage_unbounded;
        for (resource, amount) in &other.extended {
            let total = self.extended.entry(resource.clone()).or_default();
            *total = total.saturating_add(*amount);
        }
        self
    }

    /// What replacing `old` by `self` adds: the change an update makes. Ephemeral storage
    /// becomes unbounded only if it was bounded before.
    pub fn saturating_sub(mut self, old: &Self) -> Self {
        self.workspaces = self.workspaces.saturating_sub(old.workspaces);
        self.cpu = self.cpu.saturating_sub(old.cpu);
        self.memory = self.memory.saturating_sub(old.memory);
        self.storage = self.storage.saturating_sub(old.storage);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(old.ephemeral_storage);
        self.ephemeral_storage_unbounded &= !old.ephemeral_storage_unbounded;
        for (resource, amount) in &old.extended {
            let total = self.extended.entry(resource.clone()).or_default();
            *total = total.saturating_sub(*amount);
        }
        self
    }

    /// The total demand of an owner's workspaces. Pass the ones a Quota counts (see
    /// [`quota_counts_namespace`]) that are not being deleted.
    pub fn of_workspaces<'a>(
        specs: impl IntoIterator<Item = &'a WorkspaceSpec>,
    ) -> Result<Self, QuantityError> {
        specs.into_iter().try_fold(Self::default(), |total, spec| {
            Ok(total.saturating_add(&workspace_demand(spec)?))
        })
    }

    /// The usage as a Quota status entry for `owner`.
    pub fn to_owner_usage(&self, owner: &str, owner_name: Option<&str>) -> OwnerUsage {
        OwnerUsage {
            owner: owner.to_owned(),
            owner_name: owner_name.map(str::to_owned),
            workspaces: i32::try_from(self.workspaces).unwrap_or(i32::MAX),
            cpu: Some(format_milli(self.cpu, QuantityStyle::DecimalSI)),
            memory: Some(format_milli(self.memory, QuantityStyle::BinarySI)),
            storage: Some(format_milli(self.storage, QuantityStyle::BinarySI)),
            ephemeral_storage: Some(format_milli(
                self.ephemeral_storage,
                QuantityStyle::BinarySI,
            )),
            extended: self
                .extended
                .iter()
                .map(|(resource, amount)| {
                    let style = QuantityStyle::of_resource(resource);
                    (resource.clone(), format_milli(*amount, style))
                })
                .collect(),
        }
    }
}

/// Resources a workspace asks for that Quotas count apart from [`Usage::extended`].
const NAMED_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// What one workspace counts against Quotas: one workspace; CPU, memory, ephemeral storage
/// and every other resource as requested, or as limited where no request is given
/// (Kubernetes then requests the limit); storage as the sum of its persistent volumes'
/// sizes. Ephemeral volumes on disk are part of the pod's ephemeral storage, which the
/// containers' `ephemeral-storage` bounds. Call it after defaulting, so profile resources
/// count.
///
/// A suspended workspace counts in full: its volumes keep their storage, and resuming it
/// must not fail because someone else took its place in the meantime.
pub fn workspace_demand(spec: &WorkspaceSpec) -> Result<Usage, QuantityError> {
    refuse_negative(spec)?;
    let resources = spec.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let declared = |resource: &str| {
        let requested = requests.and_then(|r| r.get(resource));
        requested.or_else(|| limits.and_then(|l| l.get(resource)))
    };
    let amount = |resource: &str| declared(resource).map_or(Ok(0), quantity_milli);
    let storage = spec
        .volumes
        .iter()
        .filter_map(|volume| volume.persistent.as_ref())
        .try_fold(0i128, |total, persistent| {
            Ok::<_, QuantityError>(total.saturating_add(quantity_milli(&persistent.size)?))
        })?;
    let others: BTreeSet<&String> = requests
        .into_iter()
        .chain(limits)
        .flat_map(BTreeMap::keys)
        .filter(|resource| !NAMED_RESOURCES.contains(&resource.as_str()))
        .collect();
    let extended = others
        .into_iter()
        .map(|resource| Ok((resource.clone(), amount(resource)?)))
        .collect::<Result<_, QuantityError>>()?;
    Ok(Usage {
        workspaces: 1,
        cpu: amount("cpu")?,
        memory: amount("memory")?,
        storage,
        ephemeral_storage: amount("ephemeral-storage")?,
        ephemeral_storage_unbounded: declared("ephemeral-storage").is_none(),
        extended,
    })
}

/// Refuses a negative request, limit or volume size of any resource: counted as usage, it
/// would free Quota for the owner's other workspaces.
fn refuse_negative(spec: &WorkspaceSpec) -> Result<(), QuantityError> {
    let resources = spec.resources.iter().flat_map(|r| {
        let requests = r.requests.iter().flat_map(|m| m.values());
        let limits = r.limits.iter().flat_map(|m| m.values());
        requests.chain(limits)
    });
    let sizes = spec
        .volumes
        .iter()
        .filter_map(|v| v.persistent.as_ref().map(|p| &p.size));
    for quantity in resources.chain(sizes) {
        if quantity_milli(quantity)? < 0 {
            return Err(QuantityError::Negative(quantity.0.clone()));
        }
    }
    Ok(())
}

/// The storage of `owner`'s GuildDatabases that are not being deleted, per namespace: each
/// server's volume (replicas × `spec.storage.size`). A database is not a workspace, and its
/// CPU and memory are not counted.
pub fn databases_usage<'a>(
    databases: impl IntoIterator<Item = &'a GuildDatabase>,
    owner: &str,
) -> Vec<(String, Usage)> {
    databases
        .into_iter()
        .filter(|db| db.owner_id() == Some(owner) && db.metadata.deletion_timestamp.is_none())
        .filter_map(|db| {
            let usage = Usage {
                storage: db.storage_milli(),
                ..Usage::default()
            };
            Some((db.metadata.namespace.clone()?, usage))
        })
        .collect()
}

/// The storage of `owner`'s retained claims that no workspace's spec asks for any more (its
/// workspace deleted, or the volume removed from its spec), per namespace: data kept on
/// purpose still takes the owner's storage, so it counts against their Quotas until they
/// delete it. `workspaces` are those that may name the claims (the owner's).
pub fn retained_claims_usage<'a>(
    claims: impl IntoIterator<Item = &'a PersistentVolumeClaim>,
    owner: &str,
    workspaces: &[&Workspace],
) -> Vec<(String, Usage)> {
    let asked_for = |namespace: &str, claim: &str| {
        workspaces.iter().any(|ws| {
            ws.metadata.namespace.as_deref() == Some(namespace)
                && ws.metadata.deletion_timestamp.is_none()
                && ws.spec.volumes.iter().any(|v| {
                    v.persistent.is_some()
                        && ws
                            .metadata
                            .name
                            .as_deref()
                            .is_some_and(|name| claim_name(name, &v.name) == claim)
                })
        })
    };
    claims
        .into_iter()
        .filter(|claim| {
            let labels = claim.metadata.labels.as_ref();
            labels
                .and_then(|l| l.get(labels::OWNER))
                .map(String::as_str)
                == Some(owner)
                && is_retained_claim(claim)
        })
        .filter_map(|claim| {
            let namespace = claim.metadata.namespace.clone()?;
            let name = claim.metadata.name.as_deref()?;
            if asked_for(&namespace, name) {
                return None;
            }
            let requested = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
            let storage = quantity_milli(requested.get("storage")?).ok()?.max(0);
            Some((
                namespace,
                Usage {
                    storage,
                    ..Usage::default()
                },
            ))
        })
        .collect()
}

/// Whether `quota` limits a workspace of `user` in `workspace_namespace`: its subjects
/// name the user (no subjects: everyone), and it counts that namespace.
pub fn quota_applies(
    quota: &Quota,
    user: &User,
    workspace_namespace: &str,
    system_namespace: &str,
) -> bool {
    let names_user =
        quota.spec.subjects.is_empty() || any_subject_matches(&quota.spec.subjects, user);
    names_user && quota_counts_namespace(quota, workspace_namespace, system_namespace)
}

/// Whether `quota` counts workspaces in `namespace`: a Namespace-scoped Quota counts its own
/// namespace; a Cluster-scoped one counts every namespace, but only when it lives in the
/// operator's `system_namespace`. Elsewhere it is treated as Namespace-scoped, so a tenant
/// who may create Quotas in their own namespace cannot limit other namespaces' owners.
pub fn quota_counts_namespace(quota: &Quota, namespace: &str, system_namespace: &str) -> bool {
    let home = quota.metadata.namespace.as_deref();
    let cluster_wide =
        quota.spec.scope == Some(QuotaScope::Cluster) && home == Some(system_namespace);
    cluster_wide || home == Some(namespace)
}

/// A Quota that applies, with the owner's usage as that Quota counts it (a cluster-wide and
/// a namespaced Quota count different workspaces).
#[derive(Clone, Debug)]
pub struct ApplicableQuota<'a> {
    /// How messages name the Quota, e.g. `team-a/default-per-owner`.
    pub name: &'a str,
    /// Its per-owner limits.
    pub limits: &'a PerOwnerLimits,
    /// The owner's usage as it counts it, without the workspace being admitted.
    pub usage: Usage,
}

/// Whether an owner may make `change`, given every Quota that applies. `change` is a new
/// workspace's [`workspace_demand`] on create, or `new.saturating_sub(old)` on update
/// (zero workspaces). Every Quota is evaluated, so the strictest limit wins; the first
/// violation found (in the given order, then workspaces, CPU, memory, storage) is reported.
/// Only what grows is checked: shrinking a workspace is allowed even when the owner is over
/// a limit that was lowered since. A malformed limit refuses (fail closed).
pub fn check_quotas(quotas: &[ApplicableQuota<'_>], change: &Usage) -> Result<(), Denial> {
    quotas
        .iter()
        .try_for_each(|quota| check_quota(quota, change))
}

fn check_quota(quota: &ApplicableQuota<'_>, change: &Usage) -> Result<(), Denial> {
    let limits = quota.limits;
    let named = [
        (
            Dimension::Workspaces,
            limits.max_workspaces.map(|n| Ok(i128::from(n))),
        ),
        (Dimension::Cpu, limits.cpu.as_ref().map(quantity_milli)),
        (
            Dimension::Memory,
            limits.memory.as_ref().map(quantity_milli),
        ),
        (
            Dimension::Storage,
            limits.storage.as_ref().map(quantity_milli),
        ),
        (
            Dimension::EphemeralStorage,
            limits.ephemeral_storage.as_ref().map(quantity_milli),
        ),
    ];
    let extended = limits.extended.iter().map(|(resource, limit)| {
        (
            Dimension::Extended(resource.as_str()),
            Some(quantity_milli(limit)),
        )
    });
    named
        .into_iter()
        .chain(extended)
        .try_for_each(|(dimension, limit)| dimension.check(limit, quota, change))
}

/// One limit of a Quota.
#[derive(Clone, Copy)]
enum Dimension<'a> {
    Workspaces,
    Cpu,
    Memory,
    Storage,
    EphemeralStorage,
    /// A GPU, hugepages or other resource, by name.
    Extended(&'a str),
}

impl Dimension<'_> {
    /// The `spec.perOwner` field holding the limit.
    fn field(self) -> String {
        match self {
            Self::Workspaces => "maxWorkspaces".into(),
            Self::Cpu => "cpu".into(),
            Self::Memory => "memory".into(),
            Self::Storage => "storage".into(),
            Self::EphemeralStorage => "ephemeralStorage".into(),
            Self::Extended(resource) => format!("extended[{resource}]"),
        }
    }

    /// The owner's usage and the change along this dimension.
    fn amounts(self, usage: &Usage, change: &Usage) -> (i128, i128) {
        match self {
            Self::Workspaces => (usage.workspaces.into(), change.workspaces.into()),
            Self::Cpu => (usage.cpu, change.cpu),
            Self::Memory => (usage.memory, change.memory),
            Self::Storage => (usage.storage, change.storage),
            Self::EphemeralStorage => (usage.ephemeral_storage, change.ephemeral_storage),
            Self::Extended(resource) => {
                let of = |u: &Usage| u.extended.get(resource).copied().unwrap_or(0);
                (of(usage), of(change))
            }
        }
    }

    fn show(self, amount: i128) -> String {
        let style = match self {
            Self::Workspaces => return amount.to_string(),
            Self::Cpu => QuantityStyle::DecimalSI,
            Self::Memory | Self::Storage | Self::EphemeralStorage => QuantityStyle::BinarySI,
            Self::Extended(resource) => QuantityStyle::of_resource(resource),
        };
        format_milli(amount, style).0
    }

    /// What the user can change about the workspace itself.
    fn own_fix(self) -> String {
        match self {
            Self::Workspaces => "delete one of your workspaces".into(),
            Self::Cpu => {
                "lower spec.resources cpu, or shrink or delete another of your workspaces".into()
            }
            Self::Memory => {
                "lower spec.resources memory, or shrink or delete another of your workspaces"
                    .into()
            }
            Self::Storage => {
                "use smaller persistent volumes, or delete another of your workspaces and its claims (retained claims count until deleted)".into()
            }
            Self::EphemeralStorage => "lower spec.resources ephemeral-storage, or shrink or delete another of your workspaces".into(),
            Self::Extended(resource) => format!(
                "lower spec.resources {resource}, or shrink or delete another of your workspaces"
            ),
        }
    }

    fn check(
        self,
        limit: Option<Result<i128, QuantityError>>,
        quota: &ApplicableQuota<'_>,
        change: &Usage,
    ) -> Result<(), Denial> {
        let (used, added) = self.amounts(&quota.usage, change);
        let denied = |message| Denial::new(DenialReason::QuotaExceeded, message);
        let Some(limit) = limit else {
            return Ok(());
        };
        let limit = limit.map_err(|error| {
            denied(format!(
                "Quota {}: spec.perOwner.{} is invalid ({error}): ask an admin to fix it",
                quota.name,
                self.field()
            ))
        })?;
        if matches!(self, Self::EphemeralStorage) && change.ephemeral_storage_unbounded {
            return Err(denied(format!(
                "Quota {}: spec.perOwner.ephemeralStorage is {} per owner, and this workspace declares no ephemeral storage, so it could use any amount: set spec.resources.requests.ephemeral-storage (or limits), e.g. 10Gi",
                quota.name,
                self.show(limit)
            )));
        }
        if added <= 0 || used.saturating_add(added) <= limit {
            return Ok(());
        }
        Err(denied(format!(
            "Quota {}: spec.perOwner.{} is {} per owner; you use {} and this request adds {}: {}, or ask an admin to raise spec.perOwner.{}",
            quota.name,
            self.field(),
            self.show(limit),
            self.show(used),
            self.show(added),
            self.own_fix(),
            self.field()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{Subject, SubjectKind};
    use crate::quota::QuotaSpec;
    use crate::workspace::{EphemeralVolume, PersistentVolume, WorkspaceVolume};
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    const GI: i128 = 1 << 30;

    fn quantity(text: &str) -> Option<Quantity> {
        Some(Quantity(text.to_owned()))
    }

    fn amounts(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                .collect(),
        )
    }

    fn volume(name: &str, persistent: Option<&str>) -> WorkspaceVolume {
        WorkspaceVolume {
            name: name.to_owned(),
            mount_path: format!("/{name}"),
            persistent: persistent.map(|size| PersistentVolume {
                size: Quantity(size.to_owned()),
                ..PersistentVolume::default()
            }),
            ephemeral: persistent.is_none().then(|| EphemeralVolume {
                size_limit: quantity("50Gi"),
                medium: None,
            }),
        }
    }

    fn limits(max: Option<i32>, cpu: &str, memory: &str, storage: &str) -> PerOwnerLimits {
        PerOwnerLimits {
            max_workspaces: max,
            cpu: quantity(cpu),
            memory: quantity(memory),
            storage: quantity(storage),
            ..PerOwnerLimits::default()
        }
    }

    fn usage(workspaces: i64, cpu: &str, memory: &str, storage: &str) -> Usage {
        let milli = |q: &str| super::super::parse_milli(q).unwrap();
        Usage {
            workspaces,
            cpu: milli(cpu),
            memory: milli(memory),
            storage: milli(storage),
            ..Usage::default()
        }
    }

    #[test]
    fn demand_prefers_requests_then_limits_and_sums_persistent_storage() {
        let spec = WorkspaceSpec {
            image: "nginx".into(),
            resources: Some(ResourceRequirements {
                requests: amounts(&[("cpu", "500m")]),
                limits: amounts(&[("cpu", "2"), ("memory", "4Gi")]),
                ..ResourceRequirements::default()
            }),
            volumes: vec![
                volume("home", Some("10Gi")),
                volume("data", Some("512Mi")),
                volume("scratch", None),
            ],
            ..WorkspaceSpec::default()
        };
        assert_eq!(
            workspace_demand(&spec),
            Ok(Usage {
                workspaces: 1,
                cpu: 500,
                memory: 4 * GI * 1_000,
                storage: (10 * GI + GI / 2) * 1_000,
                ephemeral_storage_unbounded: true,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn retained_claims_count_until_their_owner_deletes_them() {
        use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
        let claim = |name: &str, owner: &str, owned: bool| PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                labels: Some(
                    [
                        ("guildnet.io/managed".to_owned(), "true".to_owned()),
                        ("guildnet.io/owner".to_owned(), owner.to_owned()),
                    ]
                    .into(),
                ),
                owner_references: owned.then(|| vec![OwnerReference::default()]),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), Quantity("10Gi".into()))].into()),
                    limits: None,
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        };
        let mut ide = Workspace::new(
            "ide",
            WorkspaceSpec {
                volumes: vec![volume("home", Some("10Gi"))],
                ..WorkspaceSpec::default()
            },
        );
        ide.metadata.namespace = Some("team".into());
        let claims = [
            claim("ide-home", "u-alice", false), // asked for by ide: counted there
            claim("gone-home", "u-alice", false), // its workspace is gone: counted here
            claim("ide-data", "u-alice", false), // removed from ide's spec: counted here
            claim("owned-home", "u-alice", true), // deleted with its workspace
            claim("bobs-home", "u-bob", false),  // someone else's
        ];
        let retained = retained_claims_usage(&claims, "u-alice", &[&ide]);
        let storage: Vec<(String, i128)> = retained
            .into_iter()
            .map(|(ns, u)| (ns, u.storage))
            .collect();
        assert_eq!(
            storage,
            [
                ("team".to_owned(), 10 * GI * 1000),
                ("team".to_owned(), 10 * GI * 1000)
            ]
        );
    }

    #[test]
    fn negative_amounts_are_refused_instead_of_counting_as_credit() {
        let with = |requests: &[(&str, &str)], limits: &[(&str, &str)]| WorkspaceSpec {
            image: "nginx".into(),
            resources: Some(ResourceRequirements {
                requests: amounts(requests),
                limits: amounts(limits),
                ..ResourceRequirements::default()
            }),
            ..WorkspaceSpec::default()
        };
        for spec in [
            with(&[("cpu", "-8")], &[]),
            with(&[("cpu", "1")], &[("memory", "-1Gi")]),
            // Any resource, not only those Quotas count.
            with(&[("nvidia.com/gpu", "-1")], &[]),
        ] {
            assert!(
                matches!(workspace_demand(&spec), Err(QuantityError::Negative(_))),
                "{spec:?}"
            );
        }
        let error = workspace_demand(&with(&[("cpu", "-8")], &[])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"-8\" is negative: use a quantity of at least 0, e.g. 500m or 1Gi"
        );
        assert!(workspace_demand(&with(&[("cpu", "0")], &[])).is_ok());
    }

    #[test]
    fn demand_of_a_bare_or_suspended_workspace_is_one_workspace() {
        let mut spec = WorkspaceSpec {
            image: "nginx".into(),
            ..WorkspaceSpec::default()
        };
        let bare = Usage {
            workspaces: 1,
            ephemeral_storage_unbounded: true,
            ..Usage::default()
        };
        assert_eq!(workspace_demand(&spec), Ok(bare.clone()));
        spec.lifecycle = Some(crate::workspace::Lifecycle {
            suspend: Some(true),
            ..Default::default()
        });
        assert_eq!(workspace_demand(&spec), Ok(bare));
    }

    #[test]
    fn demand_reports_malformed_quantities() {
        let spec = WorkspaceSpec {
            volumes: vec![volume("home", Some("big"))],
            ..WorkspaceSpec::default()
        };
        assert_eq!(
            workspace_demand(&spec),
            Err(QuantityError::Malformed("big".into()))
        );
    }

    #[test]
    fn usage_sums_workspaces_and_becomes_a_status_entry() {
        let spec = |cpu: &str, memory: &str| WorkspaceSpec {
            resources: Some(ResourceRequirements {
                requests: amounts(&[
                    ("cpu", cpu),
                    ("memory", memory),
                    ("ephemeral-storage", "2Gi"),
                ]),
                // Extended resources are given as limits (Kubernetes requests the limit).
                limits: amounts(&[("nvidia.com/gpu", "1"), ("hugepages-2Mi", "512Mi")]),
                ..ResourceRequirements::default()
            }),
            volumes: vec![volume("home", Some("5Gi"))],
            ..WorkspaceSpec::default()
        };
        let specs = [spec("1.5", "1Gi"), spec("500m", "3Gi")];
        let total = Usage::of_workspaces(&specs).unwrap();
        let milli = |q: &str| super::super::parse_milli(q).unwrap();
        assert_eq!(
            total,
            Usage {
                ephemeral_storage: milli("4Gi"),
                extended: [
                    ("hugepages-2Mi".to_owned(), milli("1Gi")),
                    ("nvidia.com/gpu".to_owned(), milli("2")),
                ]
                .into(),
                ..usage(2, "2", "4Gi", "10Gi")
            }
        );
        let entry = total.to_owner_usage("u-abc", Some("alice"));
        assert_eq!(entry.workspaces, 2);
        assert_eq!(entry.cpu, quantity("2"));
        assert_eq!(entry.memory, quantity("4Gi"));
        assert_eq!(entry.storage, quantity("10Gi"));
        assert_eq!(entry.ephemeral_storage, quantity("4Gi"));
        assert_eq!(entry.extended["nvidia.com/gpu"], Quantity("2".into()));
        assert_eq!(entry.extended["hugepages-2Mi"], Quantity("1Gi".into()));
        assert_eq!(entry.owner_name.as_deref(), Some("alice"));
    }

    #[test]
    fn within_every_limit_is_allowed() {
        let limits = limits(Some(5), "8", "16Gi", "50Gi");
        let quotas = [ApplicableQuota {
            name: "team-a/default",
            limits: &limits,
            usage: usage(4, "6", "12Gi", "40Gi"),
        }];
        assert_eq!(check_quotas(&quotas, &usage(1, "2", "4Gi", "10Gi")), Ok(()));
        assert_eq!(check_quotas(&[], &usage(1, "200", "1Ti", "1Pi")), Ok(()));
    }

    #[test]
    fn each_limit_is_enforced_with_a_message_naming_it() {
        let limits = limits(Some(5), "8", "16Gi", "50Gi");
        let at = |used: Usage| ApplicableQuota {
            name: "team-a/default",
            limits: &limits,
            usage: used,
        };
        let cases = [
            (
                usage(5, "0", "0", "0"),
                usage(1, "0", "0", "0"),
                "spec.perOwner.maxWorkspaces is 5 per owner; you use 5 and this request adds 1: delete one of your workspaces",
            ),
            (
                usage(1, "7500m", "0", "0"),
                usage(1, "501m", "0", "0"),
                "spec.perOwner.cpu is 8 per owner; you use 7500m and this request adds 501m: lower spec.resources cpu",
            ),
            (
                usage(1, "0", "12Gi", "0"),
                usage(1, "0", "4097Mi", "0"),
                "spec.perOwner.memory is 16Gi per owner; you use 12Gi and this request adds 4097Mi",
            ),
            (
                usage(1, "0", "0", "45Gi"),
                usage(1, "0", "0", "10Gi"),
                "spec.perOwner.storage is 50Gi per owner; you use 45Gi and this request adds 10Gi: use smaller persistent volumes",
            ),
        ];
        for (used, change, message) in cases {
            let denial = check_quotas(&[at(used)], &change).unwrap_err();
            assert_eq!(denial.reason, DenialReason::QuotaExceeded);
            assert!(
                denial
                    .message
                    .starts_with(&format!("Quota team-a/default: {message}")),
                "{}",
                denial.message
            );
            assert!(
                denial
                    .message
                    .contains("or ask an admin to raise spec.perOwner.")
            );
        }
        // Exactly at the limit is allowed.
        assert_eq!(
            check_quotas(
                &[at(usage(4, "6", "12Gi", "40Gi"))],
                &usage(1, "2", "4Gi", "10Gi")
            ),
            Ok(())
        );
    }

    #[test]
    fn gpus_and_ephemeral_storage_are_limited_per_owner() {
        let limits = PerOwnerLimits {
            ephemeral_storage: quantity("20Gi"),
            extended: [("nvidia.com/gpu".to_owned(), Quantity("2".into()))].into(),
            ..PerOwnerLimits::default()
        };
        let milli = |q: &str| super::super::parse_milli(q).unwrap();
        let asking = |ephemeral: Option<&str>, gpus: &str| Usage {
            workspaces: 1,
            ephemeral_storage: ephemeral.map_or(0, milli),
            ephemeral_storage_unbounded: ephemeral.is_none(),
            extended: [("nvidia.com/gpu".to_owned(), milli(gpus))].into(),
            ..Usage::default()
        };
        let quota = ApplicableQuota {
            name: "team-a/gpus",
            limits: &limits,
            usage: asking(Some("15Gi"), "1"),
        };
        let check = |change: &Usage| check_quotas(std::slice::from_ref(&quota), change);
        assert_eq!(check(&asking(Some("5Gi"), "1")), Ok(()));
        let denial = check(&asking(Some("5Gi"), "2")).unwrap_err();
        assert!(
            denial.message.starts_with(
                "Quota team-a/gpus: spec.perOwner.extended[nvidia.com/gpu] is 2 per owner; you use 1 and this request adds 2: lower spec.resources nvidia.com/gpu"
            ),
            "{}",
            denial.message
        );
        let denial = check(&asking(Some("6Gi"), "0")).unwrap_err();
        assert!(denial.message.contains(
            "spec.perOwner.ephemeralStorage is 20Gi per owner; you use 15Gi and this request adds 6Gi"
        ));
        // Declaring no ephemeral storage would let the workspace use any amount.
        let denial = check(&asking(None, "0")).unwrap_err();
        assert!(
            denial.message.contains(
                "declares no ephemeral storage, so it could use any amount: set spec.resources.requests.ephemeral-storage"
            ),
            "{}",
            denial.message
        );
        // An update of a workspace that never declared it is not refused for that alone.
        let unbounded_before = asking(None, "0");
        let edited = asking(None, "0").saturating_sub(&unbounded_before);
        assert_eq!(check(&edited), Ok(()));
        // Without an ephemeral storage limit, an undeclared amount is fine.
        let open = ApplicableQuota {
            name: "open",
            limits: &PerOwnerLimits::default(),
            usage: Usage::default(),
        };
        assert_eq!(check_quotas(&[open], &asking(None, "8")), Ok(()));
    }

    #[test]
    fn unset_limits_are_unlimited_and_zero_allows_nothing() {
        let none = PerOwnerLimits::default();
        let zero = limits(Some(0), "8", "16Gi", "50Gi");
        let huge = usage(1_000, "1000", "1Ti", "1Pi");
        assert!(
            check_quotas(
                &[ApplicableQuota {
                    name: "open",
                    limits: &none,
                    usage: huge
                }],
                &usage(1, "1", "1Gi", "1Gi")
            )
            .is_ok()
        );
        let denial = check_quotas(
            &[ApplicableQuota {
                name: "closed",
                limits: &zero,
                usage: Usage::default(),
            }],
            &usage(1, "0", "0", "0"),
        )
        .unwrap_err();
        assert!(denial.message.contains("maxWorkspaces is 0"));
    }

    #[test]
    fn the_strictest_of_several_quotas_wins() {
        let generous = limits(Some(10), "32", "64Gi", "1Ti");
        let strict = limits(Some(10), "4", "64Gi", "1Ti");
        let quotas = [
            ApplicableQuota {
                name: "guildnet-system/cluster",
                limits: &generous,
                usage: usage(3, "3", "1Gi", "0"),
            },
            ApplicableQuota {
                name: "team-a/small",
                limits: &strict,
                usage: usage(2, "3", "1Gi", "0"),
            },
        ];
        let denial = check_quotas(&quotas, &usage(1, "2", "1Gi", "0")).unwrap_err();
        assert!(
            denial
                .message
                .starts_with("Quota team-a/small: spec.perOwner.cpu is 4")
        );
        // When several are violated, the first in order is reported.
        let denial = check_quotas(
            &[quotas[1].clone(), quotas[1].clone()],
            &usage(1, "2", "100Gi", "0"),
        )
        .unwrap_err();
        assert!(
            denial
                .message
                .starts_with("Quota team-a/small: spec.perOwner.cpu")
        );
    }

    #[test]
    fn updates_are_checked_only_where_they_grow() {
        let limits = limits(Some(2), "4", "8Gi", "50Gi");
        // The owner is over a CPU limit that was lowered since.
        let quota = ApplicableQuota {
            name: "q",
            limits: &limits,
            usage: usage(2, "6", "4Gi", "0"),
        };
        let old = usage(1, "3", "2Gi", "0");
        let shrink = usage(1, "2", "2Gi", "0").saturating_sub(&old);
        assert_eq!(shrink.workspaces, 0);
        assert_eq!(check_quotas(std::slice::from_ref(&quota), &shrink), Ok(()));
        let grow = usage(1, "3", "8Gi", "0").saturating_sub(&old);
        let denial = check_quotas(&[quota], &grow).unwrap_err();
        assert!(denial.message.contains(
            "spec.perOwner.memory is 8Gi per owner; you use 4Gi and this request adds 6Gi"
        ));
    }

    #[test]
    fn malformed_limits_refuse() {
        let broken = PerOwnerLimits {
            cpu: quantity("plenty"),
            ..PerOwnerLimits::default()
        };
        let denial = check_quotas(
            &[ApplicableQuota {
                name: "q",
                limits: &broken,
                usage: Usage::default(),
            }],
            &usage(1, "1", "0", "0"),
        )
        .unwrap_err();
        assert_eq!(denial.reason, DenialReason::QuotaExceeded);
        assert!(denial.message.contains("spec.perOwner.cpu is invalid"));
    }

    #[test]
    fn sums_saturate_and_still_exceed_limits() {
        let limits = limits(None, "8", "16Gi", "50Gi");
        let full = Usage {
            workspaces: i64::MAX,
            cpu: i128::MAX,
            ..Usage::default()
        };
        let quota = ApplicableQuota {
            name: "q",
            limits: &limits,
            usage: full.clone(),
        };
        assert_eq!(full.clone().saturating_add(&full).cpu, i128::MAX);
        assert!(check_quotas(&[quota], &usage(1, "1", "0", "0")).is_err());
    }

    fn quota(namespace: &str, scope: Option<QuotaScope>, subjects: Vec<Subject>) -> Quota {
        let mut quota = Quota::new(
            "q",
            QuotaSpec {
                subjects,
                scope,
                per_owner: PerOwnerLimits::default(),
            },
        );
        quota.metadata.namespace = Some(namespace.to_owned());
        quota
    }

    #[test]
    fn quotas_apply_to_their_subjects_and_namespaces() {
        let alice = User::new("alice", ["guildnet:users"]);
        let bob = User::new("bob", ["other"]);
        let users = vec![Subject {
            kind: SubjectKind::Group,
            name: "guildnet:users".into(),
            namespace: None,
        }];
        let everyone_here = quota("team-a", None, vec![]);
        assert!(quota_applies(
            &everyone_here,
            &alice,
            "team-a",
            "guildnet-system"
        ));
        assert!(quota_applies(
            &everyone_here,
            &bob,
            "team-a",
            "guildnet-system"
        ));
        assert!(!quota_applies(
            &everyone_here,
            &alice,
            "team-b",
            "guildnet-system"
        ));
        let users_here = quota("team-a", Some(QuotaScope::Namespace), users.clone());
        assert!(quota_applies(
            &users_here,
            &alice,
            "team-a",
            "guildnet-system"
        ));
        assert!(!quota_applies(
            &users_here,
            &bob,
            "team-a",
            "guildnet-system"
        ));
        let cluster = quota("guildnet-system", Some(QuotaScope::Cluster), users.clone());
        assert!(quota_applies(&cluster, &alice, "team-b", "guildnet-system"));
        assert!(!quota_applies(&cluster, &bob, "team-b", "guildnet-system"));
        // A cluster scope outside the operator's namespace only counts its own namespace.
        let tenant = quota("team-a", Some(QuotaScope::Cluster), vec![]);
        assert!(quota_counts_namespace(&tenant, "team-a", "guildnet-system"));
        assert!(!quota_counts_namespace(
            &tenant,
            "team-b",
            "guildnet-system"
        ));
    }
}
