//! Pure admission policy: the decisions the webhook and the operator both make, with no I/O.
//!
//! Everything here is a function of its arguments, so the webhook (deciding at admission)
//! and the operator (reporting Quota usage, re-checking on reconcile) reach the same answer
//! and the rules are tested without a cluster.
//!
//! - [`image`]: parse and normalise image references; match them against allow patterns.
//! - [`owner`]: the stable owner id (label) and readable owner name (annotation) of a user.
//! - [`subjects`]: does a Capabilities or Quota subject name a user.
//! - [`capabilities`]: the union of the Capabilities that name a user, and its checks.
//! - [`assignment`]: creating a workspace for another user (GitOps), and keeping its owner.
//! - [`quantity`]: exact Kubernetes quantities as integer milli-units.
//! - [`quota`]: a workspace's demand and per-owner Quota limits.
//! - [`credentials`]: credentials written into a spec in plain text (admission warns).
//! - [`references`]: the Secrets and ConfigMaps a workspace's pod would read.
//! - [`denial`]: why a request is refused, in a stable machine-readable form.

pub mod assignment;
pub mod capabilities;
pub mod credentials;
pub mod denial;
pub mod image;
pub mod owner;
pub mod quantity;
pub mod quota;
pub mod references;
pub mod subjects;

pub use assignment::{
    AssignableOwners, RequestedOwner, assigned_owner, check_assignment, check_owner_kept,
    requested_owner,
};
pub use capabilities::{
    Ceiling, ClusterGrant, EffectiveCapabilities, Standing, check_owner, effective_capabilities,
    may_keep_alive, require_capabilities,
};
pub use denial::{Denial, DenialReason};
pub use image::{ImageError, ImagePattern, ImageProblem, ImageRef};
pub use owner::{owner_id, owner_name};
pub use quantity::{QuantityError, QuantityStyle, format_milli, parse_milli, quantity_milli};
pub use quota::{
    ApplicableQuota, Usage, check_quotas, databases_usage, quota_applies, quota_counts_namespace,
    retained_claims_usage, workspace_demand,
};
pub use subjects::{User, any_subject_matches, subject_matches};
