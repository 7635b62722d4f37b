//! GuildNet's API: the custom resources of the `guildnet.io/v1alpha1` group.
//!
//! The types here are the single source of the CRD schemas (see the `crdgen` binary), of
//! the validation the API server enforces (OpenAPI constraints and CEL rules), and of the
//! objects the operator, webhook and proxy read and write.

// Several `#[kube(printcolumn(type_ = "string", ...))]` entries repeat an argument by design.
#![allow(clippy::duplicated_attributes)]

pub mod capabilities;
pub mod cluster;
pub mod common;
pub mod database;
pub mod labels;
pub mod ownership;
pub mod policy;
pub mod quota;
pub mod workspace;

pub use capabilities::{Capabilities, CapabilitiesSpec};
pub use cluster::{ClusterRegistration, ClusterRegistrationSpec};
pub use database::{GuildDatabase, GuildDatabaseSpec};
pub use quota::{Quota, QuotaSpec};
pub use workspace::{Workspace, WorkspaceSpec, WorkspaceStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every GuildNet resource.
pub const GROUP: &str = "guildnet.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// The category every GuildNet kind belongs to: `kubectl get guildnet` lists them all.
pub const CATEGORY: &str = "guildnet";

/// Every CRD of the API, in the order they are documented.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Workspace::crd(),
        Capabilities::crd(),
        Quota::crd(),
        GuildDatabase::crd(),
        ClusterRegistration::crd(),
    ]
}
