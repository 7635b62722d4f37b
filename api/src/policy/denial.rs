//! Why a request is refused.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The reason a request is refused. The string form (see [`DenialReason::as_str`]) is
/// stable: clients, metrics (`guildnet_quota_reject_total`) and tests key on it, so variants
/// may be added but never renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DenialReason {
    /// The image matches none of the user's allowed patterns, or is not a valid reference.
    ImageDenied,
    /// A CPU or memory request or limit is above the user's per-workspace ceiling.
    ResourceLimitExceeded,
    /// The owner would exceed a per-owner Quota.
    QuotaExceeded,
    /// The user neither owns the workspace nor has admin rights.
    NotOwner,
    /// The exposure type is not granted to the user.
    ExposureDenied,
    /// The placement names a cluster not granted to the user.
    ClusterDenied,
    /// No Capabilities names the user: nothing is allowed (secure by default).
    NoCapabilities,
    /// The spec names a Secret or ConfigMap the requester may not read themselves.
    ReferenceDenied,
    /// The `guildnet.io/keepalive` label without a grant to opt out of idle reaping.
    KeepAliveDenied,
    /// `guildnet.io/owner-name` names another user without a grant to assign them, or
    /// changes the owner of an existing workspace.
    OwnerAssignmentDenied,
    /// `spec.placement.cluster` names no ClusterRegistration, or one being deleted.
    ClusterNotFound,
    /// `spec.placement.cluster` names a cordoned ClusterRegistration.
    ClusterCordoned,
    /// `spec.placement.clusterSelector` is not a valid label selector.
    InvalidPlacement,
}

impl DenialReason {
    /// The stable string form, equal to the variant's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImageDenied => "ImageDenied",
            Self::ResourceLimitExceeded => "ResourceLimitExceeded",
            Self::QuotaExceeded => "QuotaExceeded",
            Self::NotOwner => "NotOwner",
            Self::ExposureDenied => "ExposureDenied",
            Self::ClusterDenied => "ClusterDenied",
            Self::NoCapabilities => "NoCapabilities",
            Self::ReferenceDenied => "ReferenceDenied",
            Self::KeepAliveDenied => "KeepAliveDenied",
            Self::OwnerAssignmentDenied => "OwnerAssignmentDenied",
            Self::ClusterNotFound => "ClusterNotFound",
            Self::ClusterCordoned => "ClusterCordoned",
            Self::InvalidPlacement => "InvalidPlacement",
        }
    }

    /// The HTTP status an admission response carries: 429 for quota (the same request
    /// succeeds once capacity frees, as the roadmap's Spec 4 asks), 403 when the user lacks
    /// a right whatever the spec says, 400 when the spec asks for something not granted
    /// (Spec 3: a disallowed image is a 400).
    pub fn http_code(self) -> u16 {
        match self {
            Self::QuotaExceeded => 429,
            Self::NotOwner
            | Self::NoCapabilities
            | Self::ReferenceDenied
            | Self::KeepAliveDenied
            | Self::OwnerAssignmentDenied => 403,
            Self::ImageDenied
            | Self::ResourceLimitExceeded
            | Self::ExposureDenied
            | Self::ClusterDenied
            | Self::ClusterNotFound
            | Self::ClusterCordoned
            | Self::InvalidPlacement => 400,
        }
    }
}

impl fmt::Display for DenialReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the reason and a message for the user that names the field, the limit and
/// the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Denial {
    /// Why, in machine-readable form.
    pub reason: DenialReason,
    /// What was refused and how to fix it.
    pub message: String,
}

impl Denial {
    /// A denial for `reason` with `message`.
    pub fn new(reason: DenialReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [DenialReason; 13] = [
        DenialReason::ImageDenied,
        DenialReason::ResourceLimitExceeded,
        DenialReason::QuotaExceeded,
        DenialReason::NotOwner,
        DenialReason::ExposureDenied,
        DenialReason::ClusterDenied,
        DenialReason::NoCapabilities,
        DenialReason::ReferenceDenied,
        DenialReason::KeepAliveDenied,
        DenialReason::OwnerAssignmentDenied,
        DenialReason::ClusterNotFound,
        DenialReason::ClusterCordoned,
        DenialReason::InvalidPlacement,
    ];

    #[test]
    fn string_form_is_the_variant_name_and_round_trips_through_serde() {
        for reason in ALL {
            assert_eq!(reason.as_str(), format!("{reason:?}"));
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            assert_eq!(serde_json::from_str::<DenialReason>(&json).unwrap(), reason);
        }
    }

    #[test]
    fn quota_is_retryable_and_missing_rights_are_forbidden() {
        assert_eq!(DenialReason::QuotaExceeded.http_code(), 429);
        assert_eq!(DenialReason::NotOwner.http_code(), 403);
        assert_eq!(DenialReason::NoCapabilities.http_code(), 403);
        assert_eq!(DenialReason::ImageDenied.http_code(), 400);
    }

    #[test]
    fn display_starts_with_the_reason() {
        let denial = Denial::new(DenialReason::ImageDenied, "image x is not allowed");
        assert_eq!(denial.to_string(), "ImageDenied: image x is not allowed");
    }
}
