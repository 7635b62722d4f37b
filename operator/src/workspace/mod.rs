//! The Workspace controller's desired state: pure functions from a [`Workspace`] to the
//! Kubernetes objects that run it. No I/O happens here, so every rule a user relies on (what
//! is defaulted, how the pod is hardened, which volumes survive deletion) is unit-tested
//! without a cluster, and the controller only has to apply what [`desired_children`] returns.
//!
//! The flow for one reconcile:
//! 1. [`desired_children`] defaults a copy of the spec with
//!    [`apply_defaults`](guildnet_api::workspace::apply_defaults) (the same function the
//!    admission webhook calls, so `kubectl get -o yaml` shows what runs) and builds the
//!    Deployment, Service, NetworkPolicy, optional Ingress and PersistentVolumeClaims.
//! 2. When [`Children::password_secret`] names a Secret that does not exist yet, the
//!    controller creates it once with [`password_secret`] and [`generate_password`]; it never
//!    rewrites an existing one, so the password a user has stays valid.
//!
//! The driver is [`controller`]; `apply.rs`, `report.rs` and `reap_loop.rs` do its writes.
//!
//! [`Workspace`]: guildnet_api::Workspace

mod apply;
mod builders;
pub mod caches;
mod context;
pub mod controller;
mod meta;
mod network;
mod password;
mod placed;
pub mod quota;
mod reap_loop;
pub mod reaper;
mod report;
mod service;
pub mod snapshot;
pub mod status;
mod storage;
mod sweep;
mod transitions;
mod views;

pub use builders::{Children, container_security_context, desired_children, pod_security_context};
pub use network::ProxyPeer;
pub use password::{PASSWORD_KEY, generate_password, password_secret};

use guildnet_api::workspace::SpecError;
use k8s_openapi::api::core::v1::Toleration;

/// Operator-wide settings the builders apply to every workspace (set from the operator's
/// flags), as opposed to per-workspace settings, which live in the Workspace spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildContext {
    /// Tolerations added to every workspace pod, e.g. for the control-plane taint on a
    /// single-node development cluster where no other node can run workspaces.
    pub tolerations: Vec<Toleration>,
    /// Where the proxy runs: the only peer each workspace's NetworkPolicy admits.
    pub proxy: ProxyPeer,
}

/// Why the desired state of a workspace cannot be built. Each message names what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The object was not read from the API server (builders need its name and uid for
    /// child names and owner references).
    #[error(
        "workspace has no metadata.{0}: build children only from objects read from the API server"
    )]
    MissingMetadata(&'static str),
    /// The spec breaks a rule the schema cannot check (see [`guildnet_api::workspace::rules`]).
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Workspaces and volumes as the API server would hand them to the controller.
#[cfg(test)]
mod test_support {
    use guildnet_api::workspace::{
        EphemeralMedium, EphemeralVolume, PersistentVolume, ReclaimPolicy, WorkspaceVolume,
    };
    use guildnet_api::{Workspace, WorkspaceSpec, labels};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    /// `team-a/ide`, owned by `alice-id`, running `image`.
    pub fn workspace(image: &str) -> Workspace {
        let mut ws = Workspace::new(
            "ide",
            WorkspaceSpec {
                image: image.to_owned(),
                ..WorkspaceSpec::default()
            },
        );
        ws.metadata.namespace = Some("team-a".to_owned());
        ws.metadata.uid = Some("uid-1".to_owned());
        ws.metadata.labels = Some(BTreeMap::from([(
            labels::OWNER.to_owned(),
            "alice-id".to_owned(),
        )]));
        ws
    }

    /// A 10Gi persistent volume.
    pub fn persistent(
        name: &str,
        mount_path: &str,
        reclaim_policy: Option<ReclaimPolicy>,
    ) -> WorkspaceVolume {
        WorkspaceVolume {
            name: name.to_owned(),
            mount_path: mount_path.to_owned(),
            persistent: Some(PersistentVolume {
                size: Quantity("10Gi".to_owned()),
                storage_class_name: None,
                reclaim_policy,
            }),
            ephemeral: None,
        }
    }

    pub fn ephemeral(
        name: &str,
        mount_path: &str,
        size_limit: Option<&str>,
        medium: Option<EphemeralMedium>,
    ) -> WorkspaceVolume {
        WorkspaceVolume {
            name: name.to_owned(),
            mount_path: mount_path.to_owned(),
            persistent: None,
            ephemeral: Some(EphemeralVolume {
                size_limit: size_limit.map(|size| Quantity(size.to_owned())),
                medium,
            }),
        }
    }
}
