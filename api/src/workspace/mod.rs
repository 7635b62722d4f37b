//! Workspace: one developer environment (code-server, Jupyter, any container image).
//!
//! The types are the CRD schema; beside them live the Workspace's shared rules: defaulting
//! ([`apply_defaults`], called by the webhook and the operator alike), what the schema cannot
//! check ([`rules`]), and the facts every component asks of a Workspace ([`facts`]).

mod defaults;
pub mod facts;
mod image;
pub mod rules;

pub use defaults::{DEFAULT_PROBE_PATH, apply_defaults, first_port};
pub use image::is_code_server;
pub use rules::{SpecError, check_annotations, check_volume_names, validate_name};

use crate::common::Condition;
use k8s_openapi::api::core::v1::{EnvVarSource, LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A developer workspace: a container image run as a hardened Deployment with a Service,
/// optional persistent volumes and exposure, reachable through the GuildNet proxy at
/// `/w/<namespace>/<name>/`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "guildnet.io",
    version = "v1alpha1",
    kind = "Workspace",
    namespaced,
    shortname = "ws",
    category = "guildnet",
    status = "WorkspaceStatus",
    derive = "PartialEq",
    derive = "Default",
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label of at most 63 characters starting with a letter (its Service carries the name), e.g. ide"),
    doc = "A developer workspace: a container image run as a hardened Deployment with a Service, reachable through the GuildNet proxy at /w/<namespace>/<name>/.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Stopped or Failed"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether a replica is ready"
    ),
    printcolumn(
        name = "Owner",
        type_ = "string",
        json_path = ".metadata.annotations.guildnet\\.io/owner-name",
        description = "The user who owns the workspace"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "The container image"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.proxyTarget",
        description = "Path on the GuildNet proxy"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.placement) == has(oldSelf.placement)")
    .message("spec.placement is immutable: it cannot be added or removed once the workspace exists; create a new workspace to run elsewhere"))]
pub struct WorkspaceSpec {
    /// The container image to run, e.g. `codercom/code-server:4.96.2` or
    /// `quay.io/jupyter/base-notebook:latest`. Required.
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[^\\\\s]+$')")
        .message("spec.image must be a non-empty image reference without spaces, e.g. codercom/code-server:4.96.2"))]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Arguments passed to the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub args: Vec<String>,

    /// Environment variables of the workspace container. Names must be valid C identifiers
    /// and unique. `PORT` is injected when missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.all(e, self.exists_one(f, f.name == e.name))")
        .message("spec.env names must be unique: remove or rename the duplicate entry"))]
    pub env: Vec<WorkspaceEnvVar>,

    /// Ports the workspace listens on; the first is the one the proxy opens. Defaults to
    /// one port named `http` on 8080.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, self.exists_one(q, q.containerPort == p.containerPort))")
        .message("spec.ports containerPort values must be unique: use a different port number"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, !has(p.name) || self.exists_one(q, has(q.name) && q.name == p.name))")
        .message("spec.ports names must be unique: rename the duplicate port"))]
    pub ports: Vec<WorkspacePort>,

    /// CPU and memory requests and limits. When omitted, `hint` picks a profile. No request
    /// or limit may be negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("(!has(self.requests) || self.requests.all(k, !isQuantity(string(self.requests[k])) || !quantity(string(self.requests[k])).isLessThan(quantity('0')))) && (!has(self.limits) || self.limits.all(k, !isQuantity(string(self.limits[k])) || !quantity(string(self.limits[k])).isLessThan(quantity('0'))))")
        .message("spec.resources requests and limits must not be negative: use a quantity such as 500m or 2Gi"))]
    #[schemars(transform = bound_resource_maps)]
    pub resources: Option<ResourceRequirements>,

    /// What the workspace is tuned for when `resources` is not given: `latency` (small,
    /// quick to schedule), `compute` (more CPU) or `memory` (more memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<Hint>,

    /// Health probes of the workspace container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,

    /// Volumes mounted into the workspace: each either `persistent` (a PersistentVolumeClaim
    /// that outlives restarts) or `ephemeral` (an emptyDir).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.all(v, self.exists_one(w, w.name == v.name))")
        .message("spec.volumes names must be unique: rename the duplicate volume"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(v, self.exists_one(w, w.mountPath == v.mountPath))")
        .message("spec.volumes mountPath values must be unique: mount each volume at its own path"))]
    pub volumes: Vec<WorkspaceVolume>,

    /// How the workspace is exposed besides the GuildNet proxy. Defaults to ClusterIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,

    /// Where the workspace runs: a registered cluster by name or by labels. Defaults to the
    /// cluster the operator runs in. Immutable: the workspace's volumes stay where it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf")
        .message("spec.placement is immutable: the workspace's volumes stay on the cluster it runs on; create a new workspace to run elsewhere"))]
    pub placement: Option<Placement>,

    /// Suspension, idle reaping and clean-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,

    /// Secrets in the workspace's namespace used to pull its image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// An environment variable of the workspace container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.value) && has(self.valueFrom))")
    .message("spec.env: set either value or valueFrom, not both"))]
pub struct WorkspaceEnvVar {
    /// The variable's name: a C identifier (letters, digits, `_`, not starting with a digit).
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')")
        .message("spec.env name must be a C identifier (letters, digits and _, not starting with a digit), e.g. MY_VAR"))]
    pub name: String,
    /// The variable's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Takes the value from a Secret, ConfigMap or field of the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Bounds `requests` and `limits` (at most 16 resources, quantities of at most 64
/// characters), so the API server can bound the cost of the rule that checks their signs.
fn bound_resource_maps(schema: &mut schemars::Schema) {
    for map in ["requests", "limits"] {
        if let Some(map) = schema
            .get_mut("properties")
            .and_then(|p| p.get_mut(map))
            .and_then(|m| m.as_object_mut())
        {
            map.insert("maxProperties".into(), 16.into());
            if let Some(values) = map
                .get_mut("additionalProperties")
                .and_then(|v| v.as_object_mut())
            {
                values.insert("maxLength".into(), 64.into());
            }
        }
    }
}

/// A port the workspace container listens on (TCP).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspacePort {
    /// The port's name, a DNS label of at most 15 characters (e.g. `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("spec.ports name must be a lowercase DNS label of at most 15 characters, e.g. http"))]
    pub name: Option<String>,
    /// The port number, 1-65535.
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 65535")
        .message("spec.ports containerPort must be between 1 and 65535, e.g. 8080"))]
    pub container_port: i32,
}

/// A resource profile chosen by intent when no explicit resources are given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Hint {
    /// Small requests, quick to schedule: interactive shells, light editing.
    Latency,
    /// More CPU: builds, tests, notebooks that compute.
    Compute,
    /// More memory: data work, large language servers.
    Memory,
}

/// Health probes of the workspace container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probes {
    /// Timing profile: `slow` (adds a generous startup probe, for images like code-server
    /// that take a while to start), `default`, or `fast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProbeProfile>,
    /// HTTP path probed, e.g. `/healthz`. Defaults to `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/')")
        .message("spec.probes.path must start with /, e.g. /healthz"))]
    pub path: Option<String>,
    /// Port probed. Defaults to the first of `spec.ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 65535")
        .message("spec.probes.port must be between 1 and 65535"))]
    pub port: Option<i32>,
}

/// Probe timing profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeProfile {
    /// Readiness and liveness every 10s plus a startup probe allowing 5 minutes (30 × 10s).
    Slow,
    /// Readiness and liveness probes every 10s, failing after 3 misses.
    Default,
    /// Readiness and liveness probes every 5s, failing after 3 misses.
    Fast,
}

/// A volume mounted into the workspace. Exactly one of `persistent` or `ephemeral` is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.persistent) != has(self.ephemeral)")
    .message("spec.volumes: set exactly one of persistent or ephemeral"))]
pub struct WorkspaceVolume {
    /// The volume's name, a DNS label (lowercase letters, digits, `-`). A persistent volume's
    /// claim is named `<workspace>-<name>`.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("spec.volumes name must be a DNS label: lowercase letters, digits and -, e.g. home"))]
    pub name: String,
    /// Absolute path where the volume is mounted, e.g. `/home/coder`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/')")
        .message("spec.volumes mountPath must be an absolute path, e.g. /home/coder"))]
    pub mount_path: String,
    /// A PersistentVolumeClaim that outlives restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<PersistentVolume>,
    /// Scratch space (an emptyDir) that lives as long as the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<EphemeralVolume>,
}

/// A persistent volume of a workspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolume {
    /// Requested size, a quantity such as `10Gi`.
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("spec.volumes persistent.size must be a positive quantity, e.g. 10Gi"))]
    pub size: Quantity,
    /// StorageClass of the claim. Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// What happens to the claim when the workspace is deleted: `Retain` (default; user
    /// data is never lost by accident) or `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_policy: Option<ReclaimPolicy>,
}

/// What happens to a persistent volume when its workspace is deleted.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ReclaimPolicy {
    /// Keep the claim and its data.
    #[default]
    Retain,
    /// Delete the claim with the workspace.
    Delete,
}

/// An ephemeral (emptyDir) volume of a workspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralVolume {
    /// Upper bound on the space used, a quantity such as `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("spec.volumes ephemeral.sizeLimit must be a positive quantity, e.g. 1Gi"))]
    pub size_limit: Option<Quantity>,
    /// `Memory` backs the volume with tmpfs; empty uses the node's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<EphemeralMedium>,
}

/// Storage medium of an ephemeral volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EphemeralMedium {
    /// tmpfs (RAM) instead of node disk; what is written counts against the pod's memory.
    Memory,
}

/// How a workspace is reachable besides the GuildNet proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.type == 'Ingress' ? has(self.ingress) : !has(self.ingress)")
    .message("spec.exposure: set ingress (with host) exactly when type is Ingress"))]
pub struct Exposure {
    /// `ClusterIP` (default; reachable in the cluster and through the proxy),
    /// `LoadBalancer`, or `Ingress`.
    #[serde(rename = "type")]
    pub type_: ExposureType,
    /// Ingress settings, required when `type` is Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressExposure>,
}

/// How a workspace's Service is exposed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ExposureType {
    /// A ClusterIP Service; only the GuildNet proxy may connect to the pod.
    #[default]
    ClusterIP,
    /// A LoadBalancer Service; the pod's ports accept connections from any source.
    LoadBalancer,
    /// An Ingress for `ingress.host` before a ClusterIP Service; the ports accept any source.
    Ingress,
}

/// Ingress exposure of a workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressExposure {
    /// Host name, e.g. `ide.example.com`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^(\\\\*\\\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("spec.exposure.ingress.host must be a lowercase DNS name, e.g. ide.example.com"))]
    pub host: String,
    /// IngressClass to use. Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// TLS for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
    /// Extra annotations for the Ingress, e.g. an ingress controller's auth settings.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// TLS of an Ingress exposure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// Secret holding the certificate. Defaults to `<workspace>-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// cert-manager ClusterIssuer that issues the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster_issuer: Option<String>,
}

/// Where a workspace runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.cluster) && has(self.clusterSelector))")
    .message("spec.placement: set either cluster or clusterSelector, not both"))]
pub struct Placement {
    /// The name of a ClusterRegistration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster: Option<String>,
    /// Labels selecting ClusterRegistrations; the first reachable match is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
}

/// Suspension, idle reaping and clean-up of a workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Suspend the workspace after this long without traffic through the proxy, a duration
    /// of at least one minute such as `30m` or `2h`. Defaults to the operator's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m')")
        .message("spec.lifecycle.idleTimeout must be a duration of at least 1m, e.g. 30m or 2h"))]
    pub idle_timeout: Option<String>,
    /// Delete the workspace this many seconds after it stopped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// `true` scales the workspace to zero (its volumes stay); `false` resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// The observed state of a workspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// Pending, Running, Stopped or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WorkspacePhase>,
    /// The latest observations: Ready, Progressing, Failed, Suspended, Snapshot; and
    /// Reconciling and Stalled, the same as Progressing and Failed under the names kstatus
    /// (Flux, kstatus-based waiters) reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas of the workspace that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The workspace Service's cluster DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_dns: Option<String>,
    /// The path on the GuildNet proxy, `/w/<namespace>/<name>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_target: Option<String>,
    /// An external URL (Ingress or LoadBalancer), when exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The registered cluster the workspace was placed on (`spec.placement`); kept for
    /// good once set. Unset for workspaces of the cluster the operator runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The namespace of the workspace's objects in that cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_namespace: Option<String>,
    /// The name of the workspace's objects in that cluster, `<name>-<hash>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<String>,
    /// Last traffic through the proxy; drives idle reaping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_access_time: Option<Time>,
    /// The resource profile applied from `spec.hint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_applied: Option<Hint>,
    /// Secret holding the workspace's generated password (code-server images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
    /// PersistentVolumeClaims of the workspace's persistent volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_claims: Vec<String>,
}

/// The lifecycle phase of a workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum WorkspacePhase {
    /// Starting: no replica is ready yet and nothing has failed.
    Pending,
    /// At least one replica is ready and serving.
    Running,
    /// Suspended (`spec.lifecycle.suspend: true`, set by hand or by idle reaping): zero replicas.
    Stopped,
    /// Cannot run as written (invalid spec, Quota, image pull, crash loop); see condition Failed.
    Failed,
}
