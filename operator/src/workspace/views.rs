//! The shapes in which the Workspace controller caches Deployments and Pods: only what a
//! workspace's status is computed from. Thousands of workspaces then cost little memory
//! (a `Deployment` carries its whole pod template inline, a `Pod` its whole spec), the watch
//! decodes less, and a change to anything else wakes no reconcile (see `caches`).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;

/// A Deployment's metadata, wanted replicas and status.
#[derive(Resource, Clone, Debug, Default, PartialEq, Deserialize)]
#[resource(inherit = "Deployment")]
pub struct DeploymentView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RolloutSpec,
    pub status: Option<DeploymentStatus>,
}

/// What a Deployment's spec says of its rollout.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RolloutSpec {
    pub replicas: Option<i32>,
}

impl From<Deployment> for DeploymentView {
    fn from(deployment: Deployment) -> Self {
        Self {
            metadata: deployment.metadata,
            spec: RolloutSpec {
                replicas: deployment.spec.replicas,
            },
            status: deployment.status,
        }
    }
}

/// A Pod's metadata and status.
#[derive(Resource, Clone, Debug, Default, PartialEq, Deserialize)]
#[resource(inherit = "Pod")]
pub struct PodView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub status: Option<PodStatus>,
}
