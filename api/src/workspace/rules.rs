//! The rules of a Workspace that the schema cannot express, shared by the webhook (which
//! refuses) and the operator (which reports `InvalidSpec`), so both accept the same things.

use super::WorkspaceSpec;
use crate::labels;

/// Longest name a Service accepts (a DNS-1035 label). Children are named after their
/// workspace, so this bounds workspace names.
const MAX_NAME_LEN: usize = 63;

/// Prefix of the scratch volumes GuildNet adds to every pod; user volumes may not use it.
pub const RESERVED_VOLUME_PREFIX: &str = "guildnet-";

/// Why a Workspace cannot run as written. Each message names the field and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The workspace's name cannot name its Service.
    #[error(
        "workspace name {name:?} {reason}: a workspace's Service carries its name, so use a DNS label of at most 63 characters (lowercase letters, digits and -, starting with a letter), e.g. ide"
    )]
    InvalidName {
        /// The workspace's `metadata.name`.
        name: String,
        /// What breaks the DNS-1035 label rules, e.g. `ends with -`.
        reason: &'static str,
    },
    /// A GuildNet annotation has a value that cannot be used.
    #[error("annotation {key}={value:?} is invalid: {expected}")]
    InvalidAnnotation {
        /// The annotation, e.g. `guildnet.io/probe-profile`.
        key: &'static str,
        /// Its value as written.
        value: String,
        /// What to write instead, e.g. `use slow, default or fast`.
        expected: &'static str,
    },
    /// A user volume would collide with the scratch volumes GuildNet adds to every pod.
    #[error(
        "spec.volumes name {0:?} starts with the reserved prefix guildnet-: rename the volume, e.g. to home"
    )]
    ReservedVolumeName(String),
}

/// Checks that `name` can name a workspace's Service: a DNS-1035 label of at most 63
/// characters. Workspace names may be longer DNS subdomains as far as the CRD is concerned,
/// but such a workspace could never get its Service, so it is refused instead of truncated
/// (a truncated name could collide with another workspace's).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let invalid = |reason| {
        Err(SpecError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.len() > MAX_NAME_LEN {
        return invalid("is longer than 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("does not start with a lowercase letter");
    }
    if name.ends_with('-') {
        return invalid("ends with -");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return invalid("contains characters other than lowercase letters, digits and -");
    }
    Ok(())
}

/// Checks the GuildNet annotations that name objects: `guildnet.io/snapshot` names the
/// VolumeSnapshots `<claim>-<snapshot>`, so it must be a DNS label — anything else would
/// reach the API server's URL paths (`/`, `?`, `%`) or be refused there late.
pub fn check_annotations(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<(), SpecError> {
    let Some(snapshot) = annotations.get(labels::SNAPSHOT) else {
        return Ok(());
    };
    if snapshot.is_empty() || is_dns_label(snapshot) {
        return Ok(());
    }
    Err(SpecError::InvalidAnnotation {
        key: labels::SNAPSHOT,
        value: snapshot.clone(),
        expected: "use a DNS label of at most 63 characters (lowercase letters, digits and -), e.g. before-upgrade",
    })
}

/// A DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, starting and ending with a
/// letter or digit.
pub fn is_dns_label(name: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
        && name.chars().all(|c| alphanumeric(c) || c == '-')
}

/// Refuses user volumes whose names could collide with GuildNet's scratch volumes.
pub fn check_volume_names(spec: &WorkspaceSpec) -> Result<(), SpecError> {
    match spec
        .volumes
        .iter()
        .find(|volume| volume.name.starts_with(RESERVED_VOLUME_PREFIX))
    {
        Some(volume) => Err(SpecError::ReservedVolumeName(volume.name.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::{EphemeralVolume, WorkspaceVolume};

    #[test]
    fn names_that_cannot_name_a_service_are_refused() {
        let cases = [
            ("ide", true),
            ("a", true),
            ("team-a-ide-2", true),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
            ("Ide", false),
            ("2ide", false),
            ("-ide", false),
            ("ide-", false),
            ("my.ide", false),
            ("my_ide", false),
            ("", false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_name(name).is_ok(), ok, "name {name:?}");
        }
    }

    #[test]
    fn snapshot_annotations_must_be_dns_labels() {
        let with = |value: &str| {
            std::collections::BTreeMap::from([(labels::SNAPSHOT.to_owned(), value.to_owned())])
        };
        for ok in ["before-upgrade", "v2", ""] {
            assert!(check_annotations(&with(ok)).is_ok(), "{ok:?}");
        }
        for bad in [
            "x/../../secrets",
            "a?dryRun=All",
            "name%23",
            "Upper",
            "-x",
            &"a".repeat(64),
        ] {
            let error = check_annotations(&with(bad)).unwrap_err();
            assert!(
                error.to_string().contains("guildnet.io/snapshot"),
                "{bad:?}"
            );
        }
        assert!(check_annotations(&Default::default()).is_ok());
    }

    #[test]
    fn reserved_volume_names_are_refused() {
        let cases = [
            ("home", true),
            ("guildnet-tmp", false),
            ("guildnet-data", false),
        ];
        for (name, ok) in cases {
            let spec = WorkspaceSpec {
                volumes: vec![WorkspaceVolume {
                    name: name.to_owned(),
                    mount_path: "/data".to_owned(),
                    persistent: None,
                    ephemeral: Some(EphemeralVolume::default()),
                }],
                ..WorkspaceSpec::default()
            };
            assert_eq!(check_volume_names(&spec).is_ok(), ok, "volume {name}");
        }
    }
}
