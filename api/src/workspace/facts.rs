//! What every component asks of a Workspace — its owner, whether it is suspended or ready,
//! where the proxy serves it, which Service port is its own — and the condition types and
//! reasons its status carries. Stated once here; the operator, webhook and proxy call these
//! instead of reading labels, annotations and conditions themselves.

use super::{Workspace, WorkspacePort, WorkspaceSpec, WorkspaceStatus};
use crate::common::{Condition, find_true_condition};
use crate::labels;
use crate::ownership;
use crate::policy::User;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;

/// The variable code-server reads its password from.
pub const PASSWORD_ENV: &str = "PASSWORD";

/// The prefix of every workspace's path on the proxy.
pub const PROXY_PATH_PREFIX: &str = "/w/";

impl Workspace {
    /// The stable id of the owner (`guildnet.io/owner`, set by the webhook).
    pub fn owner_id(&self) -> Option<&str> {
        ownership::owner_id(&self.metadata)
    }

    /// The owner's readable user name (`guildnet.io/owner-name`).
    pub fn owner_name(&self) -> Option<&str> {
        ownership::owner_name(&self.metadata)
    }

    /// The owner's groups as the webhook saw them (`guildnet.io/owner-groups`);
    /// `system:authenticated` alone when the annotation is missing.
    pub fn owner_groups(&self) -> Vec<String> {
        ownership::owner_groups(&self.metadata)
    }

    /// The owner as Capabilities and Quotas match them: the recorded name and groups;
    /// `None` without an owner name.
    pub fn owner(&self) -> Option<User> {
        ownership::owner(&self.metadata)
    }

    /// Whether the user asked for the workspace to be stopped (`spec.lifecycle.suspend`).
    pub fn is_suspended(&self) -> bool {
        self.spec.is_suspended()
    }

    /// Whether its status says a replica is ready (condition `Ready` is `True`).
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(WorkspaceStatus::is_ready)
    }

    /// The `Degraded` condition while the cluster it is placed on is out of reach (its
    /// reason and message say why): its status is as last seen, and nothing of it can be
    /// reached.
    pub fn cluster_outage(&self) -> Option<&Condition> {
        find_true_condition(&self.status.as_ref()?.conditions, ConditionType::Degraded)
    }

    /// Whether its spec has a change no status has observed yet: it is new, or was edited
    /// since the operator last wrote its status (`status.observedGeneration`).
    pub fn has_unobserved_spec(&self) -> bool {
        let observed = self.status.as_ref().and_then(|s| s.observed_generation);
        match (observed, self.metadata.generation) {
            (Some(observed), Some(generation)) => observed < generation,
            (observed, _) => observed.is_none(),
        }
    }

    /// `true` when the `guildnet.io/proxy-keep-prefix` annotation asks the proxy to forward
    /// the whole path, for apps serving under their base path themselves.
    pub fn keeps_proxy_prefix(&self) -> bool {
        label(
            self.metadata.annotations.as_ref(),
            labels::PROXY_KEEP_PREFIX,
        ) == Some("true")
    }

    /// The registered cluster its status records it on (`status.cluster`), for good.
    pub fn placed_on(&self) -> Option<&str> {
        self.status.as_ref()?.cluster.as_deref()
    }

    /// Where its children are in its registered cluster, as its status records: the
    /// cluster, the namespace there and their name (`status.cluster`, `remoteNamespace`,
    /// `remoteName`).
    pub fn remote_place(&self) -> Option<(&str, &str, &str)> {
        let status = self.status.as_ref()?;
        Some((
            status.cluster.as_deref()?,
            status.remote_namespace.as_deref()?,
            status.remote_name.as_deref()?,
        ))
    }

    /// Whether it is being deleted.
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Whether it carries the finalizer that deletes its objects in its registered cluster.
    pub fn has_remote_cleanup(&self) -> bool {
        (self.metadata.finalizers.iter().flatten()).any(|f| f == labels::REMOTE_CLEANUP_FINALIZER)
    }

    /// Whether an admin let go of its objects in its registered cluster
    /// (`guildnet.io/orphan-remote: "true"`): it is deleted without waiting for them.
    pub fn orphans_remote(&self) -> bool {
        label(self.metadata.annotations.as_ref(), labels::ORPHAN_REMOTE) == Some("true")
    }

    /// Whether a change of the registered cluster `cluster` (its reachability, labels or
    /// connection) concerns the workspace: it is placed there, or waits to be placed.
    pub fn follows_cluster(&self, cluster: &str) -> bool {
        match self.placed_on() {
            Some(placed) => placed == cluster,
            None => self.spec.placement.is_some(),
        }
    }

    /// `true` when the `guildnet.io/keepalive` label opts the workspace out of reaping.
    pub fn is_kept_alive(&self) -> bool {
        label(self.metadata.labels.as_ref(), labels::KEEPALIVE) == Some("true")
    }
}

impl WorkspaceSpec {
    /// Whether `lifecycle.suspend` is set.
    pub fn is_suspended(&self) -> bool {
        self.lifecycle
            .as_ref()
            .and_then(|l| l.suspend)
            .unwrap_or(false)
    }

    /// Whether the operator generates a password Secret for this spec: code-server must
    /// never run with a fixed or empty password, and a user who sets `PASSWORD` themselves
    /// (e.g. from their own Secret) keeps it.
    pub fn needs_generated_password(&self) -> bool {
        super::is_code_server(&self.image) && !self.env.iter().any(|var| var.name == PASSWORD_ENV)
    }

    /// The name of the Service port the proxy opens: the first port's.
    pub fn primary_port_name(&self) -> Option<String> {
        self.ports.first().map(service_port_name)
    }
}

impl WorkspaceStatus {
    /// Whether condition `Ready` is `True`.
    pub fn is_ready(&self) -> bool {
        find_true_condition(&self.conditions, ConditionType::Ready).is_some()
    }
}

/// The path the proxy serves a workspace under: `/w/<namespace>/<name>/`.
pub fn proxy_path(namespace: &str, name: &str) -> String {
    format!("{PROXY_PATH_PREFIX}{namespace}/{name}/")
}

/// The PersistentVolumeClaim behind persistent volume `volume` of workspace `workspace`:
/// `<workspace>-<volume>`.
pub fn claim_name(workspace: &str, volume: &str) -> String {
    format!("{workspace}-{volume}")
}

/// A claim of a placed workspace, made in its registered cluster (`<remote name>-<volume>`
/// there, labelled with its hub workspace), as the hub counts it: in its hub workspace's
/// namespace, named as that workspace's claim of the volume would be on the hub. `None`
/// for a claim without those labels.
pub fn hub_view_of_placed_claim(claim: &PersistentVolumeClaim) -> Option<PersistentVolumeClaim> {
    let labels = claim.metadata.labels.as_ref()?;
    let (namespace, workspace) = (
        labels.get(labels::HUB_NAMESPACE)?,
        labels.get(labels::HUB_NAME)?,
    );
    let there = labels.get(labels::ID)?;
    let volume = claim
        .metadata
        .name
        .as_deref()?
        .strip_prefix(&format!("{there}-"))?;
    let mut view = claim.clone();
    view.metadata.namespace = Some(namespace.clone());
    view.metadata.name = Some(claim_name(workspace, volume));
    Some(view)
}

/// Whether `claim` is a retained claim: GuildNet's (`guildnet.io/managed`), owned by no
/// object (its workspace deleted, or its volume removed from the spec, with `Retain`), and
/// not being deleted. It counts against its owner's storage Quota, and its owner may delete
/// it through the proxy.
pub fn is_retained_claim(claim: &PersistentVolumeClaim) -> bool {
    let managed = claim
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::MANAGED));
    managed.map(String::as_str) == Some("true")
        && claim
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty)
        && claim.metadata.deletion_timestamp.is_none()
}

/// The Secret `<workspace>-password` the operator generates for a code-server workspace;
/// the workspace may always read its own.
pub fn password_secret_name(workspace: &str) -> String {
    format!("{workspace}-password")
}

/// The name of a port in the Service and the container: its own, else `port-<number>`
/// (Service ports need names as soon as there are two).
pub fn service_port_name(port: &WorkspacePort) -> String {
    port.name
        .clone()
        .unwrap_or_else(|| format!("port-{}", port.container_port))
}

/// The `guildnet.io/owner-groups` annotation for `groups`: comma-separated.
pub fn encode_owner_groups(groups: &[String]) -> String {
    groups.join(",")
}

/// The groups in a `guildnet.io/owner-groups` annotation.
pub fn decode_owner_groups(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|g| !g.is_empty())
        .map(String::from)
        .collect()
}

fn label<'a>(
    map: Option<&'a std::collections::BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    map?.get(key).map(String::as_str)
}

/// Declares a string enum whose variants are spelled as written, with `as_str`.
macro_rules! spelled {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The name as it appears in the API.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl From<$name> for &'static str {
            fn from(value: $name) -> Self {
                value.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use spelled;

spelled! {
    /// The condition types of a Workspace's status.
    ConditionType {
        /// A replica is ready (`kubectl wait --for=condition=Ready`).
        Ready,
        /// A change is being rolled out.
        Progressing,
        /// The workspace cannot run until something is fixed.
        Failed,
        /// `spec.lifecycle.suspend` holds it at zero replicas.
        Suspended,
        /// kstatus' name for Progressing, read by Flux and other kstatus-based waiters.
        Reconciling,
        /// kstatus' name for Failed.
        Stalled,
        /// Present while the `guildnet.io/snapshot` annotation asks for a snapshot.
        Snapshot,
        /// On placed workspaces: `True` while their cluster cannot be reached (the rest of
        /// the status is as last seen).
        Degraded,
    }
}

spelled! {
    /// The reasons of a Workspace's conditions, and of the Events the operator publishes.
    /// Docs, dashboards, health checks and alerts key on them: never rename one.
    Reason {
        // Ready
        /// The Deployment has a ready replica.
        DeploymentReady,
        /// Not ready yet.
        Starting,
        /// Stopped by `spec.lifecycle.suspend`.
        Suspended,
        /// Not ready because the workspace failed.
        Failed,
        // Progressing
        /// Writes of children keep conflicting with another writer; retried.
        ConflictBackoff,
        /// Scaling to zero.
        Suspending,
        /// The Deployment is being created or its first pod started.
        Deploying,
        /// A changed spec is rolling out.
        RollingOut,
        /// Nothing in progress: the workspace is ready.
        Ready,
        // Failed
        /// Nothing failed.
        Healthy,
        /// The container keeps crashing.
        CrashLoopBackOff,
        /// The image cannot be pulled.
        ImagePullFailed,
        /// The Deployment did not progress within its deadline.
        ProgressDeadlineExceeded,
        /// The spec breaks a rule the schema cannot check.
        InvalidSpec,
        /// The owner is over a Quota: held at zero replicas.
        QuotaExceeded,
        /// An object with a child's name exists and is not this workspace's: nothing of it
        /// is touched.
        NameConflict,
        // Suspended
        /// Running (not suspended).
        Active,
        // Snapshot
        /// The VolumeSnapshots were created.
        SnapshotCreated,
        /// The workspace has no persistent volume to snapshot.
        NoPersistentVolumes,
        /// The cluster does not serve VolumeSnapshots.
        SnapshotAPIUnavailable,
        // Events only
        /// The workspace was launched.
        Launched,
        /// The idle reaper suspended or deleted it.
        Reaped,
        /// Deleted after `ttlSecondsAfterFinished`.
        Expired,
        // Placement (Ready, Progressing, Degraded)
        /// No registered cluster matches `spec.placement` and accepts workspaces: Pending
        /// until one does.
        NoMatchingCluster,
        /// The cluster the workspace is placed on does not answer.
        ClusterUnreachable,
        /// The cluster the workspace is placed on answers.
        ClusterReachable,
        /// The ClusterRegistration the workspace is placed on was removed: its objects
        /// there are out of reach until a registration of that name returns.
        ClusterRemoved,
        /// Deleting: its objects in its registered cluster are deleted first, once that
        /// cluster answers (`guildnet.io/orphan-remote: "true"` lets go of them).
        CleanupPending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Lifecycle;
    use std::collections::BTreeMap;

    /// Users' health checks, alerts and `kubectl wait` commands name these: a rename is a
    /// breaking API change, so this list may only grow.
    #[test]
    fn a_placed_claim_is_counted_where_its_hub_workspace_is() {
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "ide-0a1b2c3d-home", "namespace": "guildnet-workspaces",
                "labels": {"guildnet.io/id": "ide-0a1b2c3d", "guildnet.io/hub-namespace": "team-a", "guildnet.io/hub-name": "ide"},
            },
        }))
        .unwrap();
        let view = hub_view_of_placed_claim(&claim).unwrap();
        assert_eq!(view.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(view.metadata.name.as_deref(), Some("ide-home"));
        let mut local = claim.clone();
        local
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove("guildnet.io/hub-name");
        assert!(hub_view_of_placed_claim(&local).is_none());
    }

    #[test]
    fn condition_types_and_reasons_are_never_renamed() {
        let types: Vec<&str> = ConditionType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "Ready",
                "Progressing",
                "Failed",
                "Suspended",
                "Reconciling",
                "Stalled",
                "Snapshot",
                "Degraded"
            ]
        );
        let reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "DeploymentReady",
                "Starting",
                "Suspended",
                "Failed",
                "ConflictBackoff",
                "Suspending",
                "Deploying",
                "RollingOut",
                "Ready",
                "Healthy",
                "CrashLoopBackOff",
                "ImagePullFailed",
                "ProgressDeadlineExceeded",
                "InvalidSpec",
                "QuotaExceeded",
                "NameConflict",
                "Active",
                "SnapshotCreated",
                "NoPersistentVolumes",
                "SnapshotAPIUnavailable",
                "Launched",
                "Reaped",
                "Expired",
                "NoMatchingCluster",
                "ClusterUnreachable",
                "ClusterReachable",
                "ClusterRemoved",
                "CleanupPending"
            ]
        );
    }

    fn workspace() -> Workspace {
        Workspace::new("ide", WorkspaceSpec::default())
    }

    #[test]
    fn owner_groups_round_trip_and_default_to_authenticated() {
        let groups = vec![
            "guildnet:users".to_owned(),
            "system:authenticated".to_owned(),
        ];
        let mut ws = workspace();
        assert_eq!(ws.owner_groups(), ["system:authenticated"]);
        ws.metadata.annotations = Some(BTreeMap::from([(
            labels::OWNER_GROUPS.to_owned(),
            encode_owner_groups(&groups),
        )]));
        assert_eq!(ws.owner_groups(), groups);
        assert_eq!(decode_owner_groups(""), Vec::<String>::new());
        assert_eq!(ws.owner(), None, "no owner name");
        ws.metadata
            .annotations
            .get_or_insert_default()
            .insert(labels::OWNER_NAME.to_owned(), "alice".to_owned());
        assert_eq!(ws.owner(), Some(User::new("alice", groups)));
    }

    #[test]
    fn suspended_ready_and_paths() {
        let mut ws = workspace();
        assert!(!ws.is_suspended() && !ws.is_ready());
        ws.spec.lifecycle = Some(Lifecycle {
            suspend: Some(true),
            ..Lifecycle::default()
        });
        assert!(ws.is_suspended());
        assert_eq!(proxy_path("team", "ide"), "/w/team/ide/");
        let port = |name: Option<&str>| WorkspacePort {
            name: name.map(str::to_owned),
            container_port: 8080,
        };
        assert_eq!(service_port_name(&port(Some("http"))), "http");
        assert_eq!(service_port_name(&port(None)), "port-8080");
    }

    #[test]
    fn a_new_or_edited_spec_is_unobserved_until_the_status_names_its_generation() {
        let mut ws = workspace();
        ws.metadata.generation = Some(1);
        assert!(ws.has_unobserved_spec(), "new: no status yet");
        ws.status = Some(WorkspaceStatus::default());
        assert!(
            ws.has_unobserved_spec(),
            "a status without observedGeneration"
        );
        ws.status.as_mut().unwrap().observed_generation = Some(1);
        assert!(!ws.has_unobserved_spec(), "reconciled");
        ws.metadata.generation = Some(2);
        assert!(ws.has_unobserved_spec(), "edited since");
    }
}
