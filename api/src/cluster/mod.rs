//! ClusterRegistration: another cluster workspaces can be placed on.

pub mod facts;
pub mod placement;

use crate::common::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Another Kubernetes cluster GuildNet may place workspaces on, reached through a
/// kubeconfig kept in a Secret. Its labels are what `spec.placement.clusterSelector` of a
/// Workspace matches.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "guildnet.io",
    version = "v1alpha1",
    kind = "ClusterRegistration",
    shortname = "creg",
    category = "guildnet",
    status = "ClusterRegistrationStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Another Kubernetes cluster workspaces may be placed on, reached through a kubeconfig Secret.",
    printcolumn(
        name = "Reachable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].status"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRegistrationSpec {
    /// The Secret holding the kubeconfig of the cluster. Its name and namespace cannot
    /// change; register the cluster anew to use another Secret.
    pub kubeconfig_secret_ref: KubeconfigSecretRef,
    /// Namespace in that cluster where workspaces are created. Defaults to
    /// `guildnet-workspaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("spec.namespace must be a DNS label, e.g. guildnet-workspaces"))]
    pub namespace: Option<String>,
    /// Stop placing new workspaces on the cluster; existing ones keep running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordoned: Option<bool>,
    /// How the proxy reaches the workspaces placed there: `Direct` (the default) dials
    /// their pod IPs, which the hub must route to; `APIServerProxy` goes through that
    /// cluster's API server (its service proxy) with the registration's credentials, which
    /// then also need `services/proxy` in spec.namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ClusterNetwork>,
}

/// How the proxy reaches a registered cluster's workspaces.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ClusterNetwork {
    /// The proxy dials the workspaces' pod IPs itself: the hub routes to that cluster's pod
    /// network (a flat network, a VPN or a tailnet subnet router).
    #[default]
    Direct,
    /// Through that cluster's API server (its service proxy), with the registration's
    /// credentials: only the API server need be reachable. Those credentials need `get`,
    /// `create`, `update`, `patch` and `delete` on `services/proxy` in `spec.namespace`.
    #[serde(rename = "APIServerProxy")]
    ApiServerProxy,
}

/// Where a cluster's kubeconfig is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeconfigSecretRef {
    /// Namespace of the Secret. Immutable.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf")
        .message("spec.kubeconfigSecretRef.namespace is immutable: create a new ClusterRegistration to use another Secret"))]
    pub namespace: String,
    /// Name of the Secret. Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf")
        .message("spec.kubeconfigSecretRef.name is immutable: create a new ClusterRegistration to use another Secret"))]
    pub name: String,
    /// Key holding the kubeconfig. Defaults to `kubeconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// The observed state of a ClusterRegistration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRegistrationStatus {
    /// The cluster's Kubernetes version, e.g. `v1.37.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the cluster last answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// Workspaces placed on the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<i32>,
    /// The retained claims of placed workspaces kept there (their workspace deleted, or
    /// the volume removed from its spec), as the hub counts them against their owners'
    /// Quotas; at most 1,000, the oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained_claims: Vec<RetainedClaim>,
    /// The latest observations: Reachable, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A retained claim in a registered cluster, named as the hub sees it: in its workspace's
/// hub namespace, as that workspace's claim of the volume would be named on the hub.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetainedClaim {
    /// The hub namespace of the workspace it was made for.
    pub namespace: String,
    /// `<workspace>-<volume>`.
    pub name: String,
    /// Its owner's id (the `guildnet.io/owner` label).
    pub owner: String,
    /// The storage it requests.
    pub storage: k8s_openapi::apimachinery::pkg::api::resource::Quantity,
}

/// A status whose only condition is `Reachable` with `status`, for the tests.
#[cfg(test)]
pub(crate) fn reachable_status(status: &str) -> ClusterRegistrationStatus {
    ClusterRegistrationStatus {
        conditions: vec![Condition {
            type_: "Reachable".into(),
            status: status.into(),
            reason: "ProbeSucceeded".into(),
            message: String::new(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }],
        ..Default::default()
    }
}
