//! Capabilities: what a set of users may run, and how big.

use crate::common::{Condition, Subject};
use crate::workspace::ExposureType;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Grants to users, groups or service accounts: which images they may run, how large a
/// workspace may be, how it may be exposed, where it may be placed, whether they
/// administer others' workspaces, and whom they may create workspaces for. A user gets the
/// union of every Capabilities that names them; a user named by none may not create
/// workspaces.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "guildnet.io",
    version = "v1alpha1",
    kind = "Capabilities",
    plural = "capabilities",
    singular = "capabilities",
    shortname = "caps",
    category = "guildnet",
    status = "CapabilitiesStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Grants to users, groups or service accounts: allowed images, per-workspace resource ceilings, exposure types, clusters, admin rights and owner assignment.",
    printcolumn(name = "Admin", type_ = "boolean", json_path = ".spec.admin"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitiesSpec {
    /// Who these grants apply to.
    #[schemars(length(min = 1, max = 64))]
    pub subjects: Vec<Subject>,
    /// Images the subjects may run.
    #[serde(default)]
    pub images: ImagePolicy,
    /// Ceilings on a single workspace's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceCeilings>,
    /// Exposure types the subjects may use. Empty allows ClusterIP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub exposure: Vec<ExposureType>,
    /// What an `Ingress` exposure may ask for: hosts, IngressClasses, cert-manager issuers
    /// and annotations. Without it an Ingress may use only the default class, no issuer and
    /// no annotations, and any host no other owner's workspace uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressGrant>,
    /// ClusterRegistration names (or `*`) the subjects may place workspaces on. Empty
    /// allows only the local cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub clusters: Vec<String>,
    /// Whether the subjects may act on workspaces they do not own (update, delete,
    /// suspend all).
    #[serde(default)]
    pub admin: bool,
    /// Whether the subjects may exempt their workspaces from idle reaping with the label
    /// `guildnet.io/keepalive=true` (admins may anyway). Without it the label is refused:
    /// a workspace that never idles out holds its CPU, memory and Quota for good.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_alive: bool,
    /// Lets the subjects create workspaces for other users, as a GitOps controller applies
    /// developers' workspaces: a new Workspace annotated `guildnet.io/owner-name: alice`
    /// becomes alice's, and her Capabilities and Quotas apply, not the subjects'. The
    /// subjects may also update and delete the workspaces of the owners they may assign
    /// (re-applies, prunes). Without it, the annotation naming anyone else is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_owners: Option<OwnerAssignment>,
    /// Lets the subjects create GuildDatabases, and how big. Without it in any Capabilities
    /// naming them, they may not. Each server's CPU and memory are held to
    /// `resources.maxPerWorkspace` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<DatabaseGrant>,
}

/// What GuildDatabases the subjects of a Capabilities may create.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseGrant {
    /// Image patterns (as `spec.images.allow`) their databases may run besides the pinned
    /// default, `docker.io/library/rethinkdb:2.4.4-bookworm-slim`, which is always allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("items" = {"type": "string", "maxLength": 512}))]
    pub images: Vec<String>,
    /// Most servers (`spec.replicas`) one database may run. Unset: no ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub max_replicas: Option<i32>,
    /// Largest volume (`spec.storage.size`) of one server, e.g. `20Gi`. Unset: no ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("spec.databases.maxStorage must be a non-negative quantity, e.g. 20Gi"))]
    pub max_storage: Option<Quantity>,
}

/// Whom the subjects of a Capabilities may make owners of the workspaces they create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerAssignment {
    /// User names, exactly as the API server authenticates them (e.g. `alice@example.com`),
    /// or `*` for any user.
    #[schemars(length(min = 1, max = 256), extend("items" = {"type": "string", "minLength": 1, "maxLength": 128}))]
    pub users: Vec<String>,
}

/// What an Ingress exposure may ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressGrant {
    /// Host patterns: `ide.example.com`, or `*.dev.example.com` for any one label below it.
    /// Empty: any host (that no other owner's workspace uses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("items" = {"type": "string", "maxLength": 253}))]
    pub hosts: Vec<String>,
    /// IngressClasses that may be named in `spec.exposure.ingress.className`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("items" = {"type": "string", "maxLength": 253}))]
    pub class_names: Vec<String>,
    /// cert-manager ClusterIssuers that may be named in `tls.clusterIssuer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("items" = {"type": "string", "maxLength": 253}))]
    pub cluster_issuers: Vec<String>,
    /// Annotation keys the Ingress may carry; a trailing `*` matches any suffix, e.g.
    /// `nginx.ingress.kubernetes.io/proxy-*`. Snippet annotations (`…-snippet`), which run
    /// arbitrary ingress-controller configuration, match only when listed by their full key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("items" = {"type": "string", "maxLength": 253}))]
    pub annotations: Vec<String>,
}

/// Which images may run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicy {
    /// Image patterns, matched against the normalised reference (`docker.io/library/...`
    /// for short names). `*` matches within one path segment or tag, a trailing `/*`
    /// matches any repository below a path, e.g. `docker.io/codercom/code-server:*`,
    /// `quay.io/jupyter/*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("items" = {"type": "string", "maxLength": 512}))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, size(p) > 0 && !p.contains(' '))")
        .message("spec.images.allow entries must be non-empty image patterns without spaces, e.g. quay.io/jupyter/*"))]
    pub allow: Vec<String>,
}

/// Per-workspace resource ceilings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceCeilings {
    /// Largest requests/limits one workspace may ask for, e.g. `{cpu: "4", memory: 8Gi}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_workspace: Option<ResourceAmounts>,
    /// Largest size of one volume: a persistent volume's `size`, an ephemeral volume's
    /// `sizeLimit` (which is then required), e.g. `50Gi`. Unset: no ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("spec.resources.maxVolumeSize must be a non-negative quantity, e.g. 50Gi"))]
    pub max_volume_size: Option<Quantity>,
}

/// Amounts of CPU and memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    /// CPU, e.g. `4` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("cpu must be a non-negative quantity, e.g. 4 or 500m"))]
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `8Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("memory must be a non-negative quantity, e.g. 8Gi"))]
    pub memory: Option<Quantity>,
    /// Ephemeral storage (the container's writable layer, logs, emptyDirs), e.g. `20Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("ephemeralStorage must be a non-negative quantity, e.g. 20Gi"))]
    pub ephemeral_storage: Option<Quantity>,
    /// Every other resource a workspace may ask for, with its ceiling: GPUs and other
    /// extended resources (`nvidia.com/gpu: 1`), hugepages (`hugepages-2Mi: 1Gi`). A resource
    /// named by no grant is refused, whatever the CPU and memory ceilings say.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32), transform = bound_quantity_values)]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, isQuantity(string(self[k])) && !quantity(string(self[k])).isLessThan(quantity('0')))").message("extended ceilings must be non-negative quantities, e.g. nvidia.com/gpu: 1"))]
    pub extended: BTreeMap<String, Quantity>,
}

/// Bounds the length of a quantity map's values, so the API server can bound the cost of
/// the rule that checks them.
pub(crate) fn bound_quantity_values(schema: &mut schemars::Schema) {
    if let Some(values) = schema
        .get_mut("additionalProperties")
        .and_then(|v| v.as_object_mut())
    {
        values.insert("maxLength".into(), 64.into());
    }
}

/// The observed state of a Capabilities.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitiesStatus {
    /// The latest observations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
