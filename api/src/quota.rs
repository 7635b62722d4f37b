//! Quota: per-owner limits on workspaces.

use crate::common::{Condition, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-owner limits: how many workspaces, and how much CPU, memory, storage, ephemeral
/// storage and other resources (GPUs) in total, each owner it applies to may have. Where
/// several Quotas apply, the strictest limit wins. Namespaced Quotas count the owner's workspaces in their namespace; cluster-wide
/// ones (in the operator's namespace, `scope: Cluster`) count them everywhere.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "guildnet.io",
    version = "v1alpha1",
    kind = "Quota",
    namespaced,
    category = "guildnet",
    status = "QuotaStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Per-owner limits on workspaces (count, CPU, memory, storage, ephemeral storage, GPUs); status shows each owner's usage.",
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.perOwner.maxWorkspaces"
    ),
    printcolumn(name = "Owners", type_ = "integer", json_path = ".status.ownerCount"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    /// Who the limits apply to. Omitted or empty: every owner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub subjects: Vec<Subject>,
    /// `Namespace` (default) counts workspaces in this Quota's namespace; `Cluster` counts
    /// them in every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<QuotaScope>,
    /// The limits per owner.
    pub per_owner: PerOwnerLimits,
}

/// What a Quota counts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum QuotaScope {
    /// Count the owner's workspaces in the Quota's own namespace.
    #[default]
    Namespace,
    /// Count them in every namespace; outside the operator's namespace it acts as `Namespace`.
    Cluster,
}

/// Limits per owner. Unset limits are unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerOwnerLimits {
    /// Most workspaces an owner may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_workspaces: Option<i32>,
    /// Total CPU of an owner's workspaces, e.g. `8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("spec.perOwner.cpu must be a non-negative quantity, e.g. 8"))]
    pub cpu: Option<Quantity>,
    /// Total memory of an owner's workspaces, e.g. `16Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("spec.perOwner.memory must be a non-negative quantity, e.g. 16Gi"))]
    pub memory: Option<Quantity>,
    /// Total persistent storage of an owner's workspaces, e.g. `50Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("spec.perOwner.storage must be a non-negative quantity, e.g. 50Gi"))]
    pub storage: Option<Quantity>,
    /// Total ephemeral storage (containers' writable layers, logs and emptyDirs on disk) of
    /// an owner's workspaces, e.g. `100Gi`: each counts its `ephemeral-storage` request, or
    /// its limit where no request is given. While it is set, a workspace that declares
    /// neither is refused, as its ephemeral storage would be unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("spec.perOwner.ephemeralStorage must be a non-negative quantity, e.g. 100Gi"))]
    pub ephemeral_storage: Option<Quantity>,
    /// Totals of other resources by name: GPUs and other extended resources
    /// (`nvidia.com/gpu: 4`), hugepages (`hugepages-2Mi: 4Gi`). Each workspace counts its
    /// request, or its limit where no request is given. Resources not named here are not
    /// limited by this Quota (Capabilities decide whether they may be asked for at all).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32), transform = crate::capabilities::bound_quantity_values)]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, isQuantity(string(self[k])) && !quantity(string(self[k])).isLessThan(quantity('0')))").message("spec.perOwner.extended values must be non-negative quantities, e.g. nvidia.com/gpu: 4"))]
    pub extended: BTreeMap<String, Quantity>,
}

/// The observed state of a Quota.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    /// What each owner the Quota applies to uses as it counts it (workspaces held back as
    /// over a Quota use nothing; retained claims count), by owner id; at most 500 owners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<OwnerUsage>,
    /// How many owners use something this Quota counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_count: Option<i32>,
    /// The latest observations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One owner's usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerUsage {
    /// The owner's stable id (the `guildnet.io/owner` label).
    pub owner: String,
    /// The owner's readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_name: Option<String>,
    /// Workspaces counted.
    pub workspaces: i32,
    /// CPU requested in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory requested in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Persistent storage requested in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
    /// Ephemeral storage requested in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<Quantity>,
    /// Other resources (GPUs, hugepages) requested in total, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extended: BTreeMap<String, Quantity>,
}

/// How many owners `status.usage` lists at most, so a Quota counting thousands of owners
/// stays far below the API server's object size limit; `status.ownerCount` counts them all.
pub const MAX_LISTED_OWNERS: usize = 500;

crate::workspace::facts::spelled! {
    /// The condition types of a Quota's status.
    QuotaConditionType {
        /// Some owner uses more than a limit allows (a limit lowered below what they had,
        /// or a race two webhook replicas let through); their newest workspaces are held.
        Exceeded,
    }
}

crate::workspace::facts::spelled! {
    /// The reasons of a Quota's conditions. Never rename one.
    QuotaReason {
        /// Every owner is within every limit.
        WithinLimits,
        /// At least one owner is over a limit; the message names them.
        OwnersOverLimit,
    }
}
