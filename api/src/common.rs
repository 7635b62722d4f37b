//! Types shared by several kinds.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A Kubernetes condition in the standard `metav1.Condition` shape, so `kubectl wait`,
/// kstatus, Argo CD and Flux read GuildNet's status unchanged.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The condition of `type_` in `conditions`, if present.
pub fn find_condition(conditions: &[Condition], type_: impl AsRef<str>) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_ref())
}

/// The condition of `type_` in `conditions`, if present and `True`.
pub fn find_true_condition(conditions: &[Condition], type_: impl AsRef<str>) -> Option<&Condition> {
    find_condition(conditions, type_).filter(|c| c.status == "True")
}

/// Who a policy (Capabilities, Quota) applies to, matched against the authenticated user
/// of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.kind != 'ServiceAccount' || has(self.namespace)")
    .message("a ServiceAccount subject needs its namespace: set namespace"))]
pub struct Subject {
    /// The kind of subject: User, Group or ServiceAccount.
    pub kind: SubjectKind,
    /// The user, group or service account name. For groups, `system:authenticated`
    /// matches every authenticated user.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The namespace of a ServiceAccount subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// The kind of a [`Subject`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SubjectKind {
    /// A user, matched exactly (case-sensitive) against the request's username.
    #[default]
    User,
    /// A group of the requesting user; `system:authenticated` matches every authenticated user.
    Group,
    /// A ServiceAccount in `namespace`, i.e. the user `system:serviceaccount:<namespace>:<name>`.
    ServiceAccount,
}

/// A reference to a key of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}
