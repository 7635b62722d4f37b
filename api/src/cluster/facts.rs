//! What every component asks of a ClusterRegistration — where its kubeconfig is, which
//! namespace workspaces go to there, whether new workspaces may be placed on it — and the
//! condition types and reasons its status carries.

use super::{ClusterNetwork, ClusterRegistration, ClusterRegistrationStatus, RetainedClaim};
use crate::common::{find_condition, find_true_condition};
use crate::labels;
use crate::workspace::facts::spelled;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};

/// The Secret key read when `spec.kubeconfigSecretRef.key` is not set.
pub const DEFAULT_KUBECONFIG_KEY: &str = "kubeconfig";

/// The namespace workspaces are created in on a registered cluster when `spec.namespace`
/// is not set.
pub const DEFAULT_REMOTE_NAMESPACE: &str = "guildnet-workspaces";

/// How many characters of a Workspace's name its objects in a registered cluster keep:
/// with `-` and the 8-character hash, a DNS label of at most 63.
const REMOTE_NAME_PREFIX: usize = 54;

/// The name of the objects a Workspace `namespace/name` of the hub has in a registered
/// cluster: `<name>-<8 hex digits of SHA-256 of namespace/name>`. Workspaces of the same
/// name in different hub namespaces share one namespace there, so the hash keeps them apart;
/// the name stays readable for whoever looks at that cluster.
pub fn remote_name(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let prefix: String = name.chars().take(REMOTE_NAME_PREFIX).collect();
    format!("{}-{hash}", prefix.trim_end_matches('-'))
}

/// The path, on a registered cluster's API server, of the service proxy to the port named
/// `port` of the Service `name` in `namespace` there: what `APIServerProxy` sends a
/// workspace's requests under. The API server also writes it into the `Location` headers
/// and HTML links it passes back, which the proxy takes out again.
pub fn service_proxy_path(namespace: &str, name: &str, port: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy")
}

impl ClusterRegistration {
    /// The key of the kubeconfig in its Secret.
    pub fn kubeconfig_key(&self) -> &str {
        self.spec
            .kubeconfig_secret_ref
            .key
            .as_deref()
            .unwrap_or(DEFAULT_KUBECONFIG_KEY)
    }

    /// The namespace in the registered cluster that placed workspaces' children go to.
    pub fn remote_namespace(&self) -> &str {
        self.spec
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_REMOTE_NAMESPACE)
    }

    /// How the proxy reaches the workspaces placed there.
    pub fn network(&self) -> ClusterNetwork {
        self.spec.network.unwrap_or_default()
    }

    /// Whether an admin stopped new placements on it (`spec.cordoned`).
    pub fn is_cordoned(&self) -> bool {
        self.spec.cordoned == Some(true)
    }

    /// Whether it is being deleted.
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Whether its status says the cluster answers (condition `Reachable` is `True`).
    pub fn is_reachable(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(ClusterRegistrationStatus::is_reachable)
    }

    /// Whether new workspaces may be placed on it now: reachable, not cordoned, not being
    /// deleted.
    pub fn accepts_workspaces(&self) -> bool {
        self.is_reachable() && !self.is_cordoned() && !self.is_deleting()
    }
}

/// How many retained claims a registration's status lists at most, so the status stays far
/// below the API server's object size limit.
pub const MAX_LISTED_RETAINED_CLAIMS: usize = 1000;

impl RetainedClaim {
    /// The entry of `claim`, a claim as the hub sees it (`hub_view_of_placed_claim`);
    /// `None` without an owner or a storage request.
    pub fn of_hub_view(claim: &PersistentVolumeClaim) -> Option<Self> {
        let storage = claim
            .spec
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")?;
        Some(Self {
            namespace: claim.metadata.namespace.clone()?,
            name: claim.metadata.name.clone()?,
            owner: claim.metadata.labels.as_ref()?.get(labels::OWNER)?.clone(),
            storage: storage.clone(),
        })
    }

    /// The claim as the hub counts it: GuildNet's, retained (owned by nothing), its
    /// owner's, requesting its storage. What admission counts it by, like a retained claim
    /// of the hub.
    pub fn as_hub_claim(&self) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                namespace: Some(self.namespace.clone()),
                name: Some(self.name.clone()),
                labels: Some(
                    [
                        (labels::MANAGED.to_owned(), "true".to_owned()),
                        (labels::OWNER.to_owned(), self.owner.clone()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), self.storage.clone())].into()),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }
}

impl ClusterRegistrationStatus {
    /// Whether condition `Reachable` is `True`.
    pub fn is_reachable(&self) -> bool {
        find_true_condition(&self.conditions, ConditionType::Reachable).is_some()
    }

    /// Since when the cluster has not answered: the time condition `Reachable` turned
    /// `False`; `None` while it is not `False`.
    pub fn unreachable_since(&self) -> Option<&Time> {
        find_condition(&self.conditions, ConditionType::Reachable)
            .filter(|c| c.status == "False")
            .map(|c| &c.last_transition_time)
    }
}

spelled! {
    /// The condition types of a ClusterRegistration's status.
    ConditionType {
        /// The cluster's API server answers its readiness probe.
        Reachable,
        /// Workspaces can be placed on it: reachable, the kubeconfig usable, the namespace
        /// there and the permissions GuildNet needs in it.
        Ready,
    }
}

spelled! {
    /// The reasons of a ClusterRegistration's conditions and Events. Docs, dashboards and
    /// alerts key on them: never rename one.
    Reason {
        // Reachable
        /// The API server answered `/readyz`.
        ProbeSucceeded,
        /// The API server did not answer, or not in time, for long enough to count.
        ProbeFailed,
        /// Not probed yet.
        Probing,
        // Ready
        /// Everything needed to place workspaces is in place.
        ClusterReady,
        /// The kubeconfig Secret or its key does not exist.
        SecretNotFound,
        /// The kubeconfig cannot be read, or would use what is outside the Secret.
        KubeconfigInvalid,
        /// The cluster refused the kubeconfig's credentials.
        Unauthorized,
        /// `spec.namespace` does not exist in the cluster.
        NamespaceNotFound,
        /// The credentials may not manage workspaces' children in `spec.namespace`.
        InsufficientPermissions,
        /// The cluster does not answer (see condition Reachable).
        Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterRegistrationSpec, KubeconfigSecretRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn a_listed_retained_claim_counts_as_the_hub_claim_it_stands_for() {
        use crate::policy::retained_claims_usage;
        use crate::workspace::facts::{hub_view_of_placed_claim, is_retained_claim};

        let there: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "ide-0a1b2c3d-home", "namespace": "guildnet-workspaces",
                "labels": {
                    "guildnet.io/managed": "true", "guildnet.io/owner": "u-alice",
                    "guildnet.io/id": "ide-0a1b2c3d",
                    "guildnet.io/hub-namespace": "team-a", "guildnet.io/hub-name": "ide",
                },
            },
            "spec": {"resources": {"requests": {"storage": "10Gi"}}},
        }))
        .unwrap();
        let listed =
            RetainedClaim::of_hub_view(&hub_view_of_placed_claim(&there).unwrap()).unwrap();
        assert_eq!(
            (listed.namespace.as_str(), listed.name.as_str()),
            ("team-a", "ide-home")
        );
        let counted = listed.as_hub_claim();
        assert!(is_retained_claim(&counted));
        let usage = retained_claims_usage([&counted], "u-alice", &[]);
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].0, "team-a");
        assert_eq!(usage[0].1.storage, 10 * 1024 * 1024 * 1024 * 1000);
        assert!(retained_claims_usage([&counted], "u-bob", &[]).is_empty());
    }

    /// Alerts, dashboards and `kubectl wait` commands name these: a rename is a breaking
    /// API change, so these lists may only grow.
    #[test]
    fn condition_types_and_reasons_are_never_renamed() {
        let types: Vec<&str> = ConditionType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(types, ["Reachable", "Ready"]);
        let reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "ProbeSucceeded",
                "ProbeFailed",
                "Probing",
                "ClusterReady",
                "SecretNotFound",
                "KubeconfigInvalid",
                "Unauthorized",
                "NamespaceNotFound",
                "InsufficientPermissions",
                "Unreachable",
            ]
        );
    }

    fn registration(reachable: &str) -> ClusterRegistration {
        let mut cluster = ClusterRegistration::new(
            "edge",
            ClusterRegistrationSpec {
                kubeconfig_secret_ref: KubeconfigSecretRef {
                    namespace: "guildnet-system".into(),
                    name: "edge-kubeconfig".into(),
                    key: None,
                },
                ..Default::default()
            },
        );
        cluster.status = Some(crate::cluster::reachable_status(reachable));
        cluster
    }

    #[test]
    fn remote_names_are_dns_labels_that_keep_hub_namespaces_apart() {
        let ide = remote_name("team-a", "ide");
        assert!(
            ide.starts_with("ide-") && ide.len() == "ide-".len() + 8,
            "{ide}"
        );
        assert_ne!(ide, remote_name("team-b", "ide"));
        assert_eq!(ide, remote_name("team-a", "ide"), "stable");
        // Names that would not fit are cut, never ending in '-' before the hash.
        let long = remote_name("team-a", &format!("{}-x", "a".repeat(53)));
        assert_eq!(long.len(), 54 + 1 + 8 - 1, "{long}");
        assert!(!long.contains("--"), "{long}");
        let longest = remote_name("team-a", &"w".repeat(63));
        assert_eq!(longest.len(), 63);
        assert!(crate::workspace::validate_name(&longest).is_ok());
    }

    #[test]
    fn an_unreachable_cluster_says_since_when() {
        assert!(
            registration("True")
                .status
                .unwrap()
                .unreachable_since()
                .is_none()
        );
        assert!(
            registration("False")
                .status
                .unwrap()
                .unreachable_since()
                .is_some()
        );
    }

    #[test]
    fn defaults_name_the_secret_key_and_the_remote_namespace() {
        let cluster = registration("True");
        assert_eq!(cluster.kubeconfig_key(), "kubeconfig");
        assert_eq!(cluster.remote_namespace(), "guildnet-workspaces");
    }

    #[test]
    fn only_a_reachable_uncordoned_live_cluster_accepts_workspaces() {
        assert!(registration("True").accepts_workspaces());
        assert!(!registration("False").accepts_workspaces());
        assert!(!registration("Unknown").accepts_workspaces());
        let mut cordoned = registration("True");
        cordoned.spec.cordoned = Some(true);
        assert!(!cordoned.accepts_workspaces());
        let mut deleting = registration("True");
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!deleting.accepts_workspaces());
    }
}
