//! Owner ids and owner names.
//!
//! A Workspace's owner is recorded twice: the `guildnet.io/owner` label holds a stable id
//! that selectors and Quota counting key on, and the `guildnet.io/owner-name` annotation
//! holds the readable user name for people (`kubectl get ws` shows it).
//!
//! The id is derived from the user name alone: `u-` followed by the first 26 characters
//! (130 bits) of the lowercase, unpadded RFC 4648 base32 encoding of SHA-256 of the user
//! name's UTF-8 bytes. Why:
//!
//! - The user name is what RBAC grants to, and what every authenticator reports. The uid is
//!   often empty (OIDC, certificates) and changes when a service account is recreated;
//!   groups change over time. Ownership must survive both.
//! - User names (emails, `system:serviceaccount:ns:name`, unicode, hundreds of characters)
//!   are not label values; any escaping scheme either collides or overflows 63 characters.
//!   A hash of a fixed size never does.
//! - 130 bits make a collision between distinct names practically impossible: the birthday
//!   bound puts a 50% chance at about 2^65 names, and even a deliberate search for a
//!   second name sharing a given id costs about 2^130 hashes.
//! - Base32 lowercase uses only `a-z` and `2-7`, so with the `u-` prefix the id is always a
//!   valid label value (and a valid DNS label), 28 characters long.
//! - It is reproducible by hand:
//!   `printf %s alice | sha256sum | cut -c1-64 | xxd -r -p | base32 | tr A-Z a-z | cut -c1-26`.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

/// The prefix of every owner id, so an id never starts with a digit and is recognisable.
const OWNER_ID_PREFIX: &str = "u-";
/// Base32 characters kept: 26 * 5 = 130 bits of the hash.
const OWNER_ID_HASH_CHARS: usize = 26;
/// The longest owner name kept in the annotation, in characters. Enough for any real
/// name or email, short enough for a printer column.
pub const OWNER_NAME_MAX_CHARS: usize = 128;

/// The stable owner id of the user named `username`; see the module documentation.
pub fn owner_id(username: &str) -> String {
    let digest = Sha256::digest(username.as_bytes());
    let encoded = BASE32_NOPAD.encode(&digest).to_ascii_lowercase();
    format!("{OWNER_ID_PREFIX}{}", &encoded[..OWNER_ID_HASH_CHARS])
}

/// The readable owner name for the `guildnet.io/owner-name` annotation: the user name
/// without control characters (which would garble terminals and logs), trimmed and cut to
/// [`OWNER_NAME_MAX_CHARS`] characters. The name is for people only, so losing detail is
/// harmless: the id in the label identifies the owner. A name with nothing printable left
/// falls back to the owner id.
pub fn owner_name(username: &str) -> String {
    let printable: String = username.chars().filter(|c| !c.is_control()).collect();
    let name: String = printable
        .trim()
        .chars()
        .take(OWNER_NAME_MAX_CHARS)
        .collect();
    let name = name.trim_end();
    if name.is_empty() {
        owner_id(username)
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The label-value rule owner ids must satisfy, `[a-z0-9]([-a-z0-9_.]*[a-z0-9])?`, at
    /// most 63 characters.
    fn is_label_value(value: &str) -> bool {
        let lower_alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        !value.is_empty()
            && value.len() <= 63
            && value.starts_with(lower_alphanumeric)
            && value.ends_with(lower_alphanumeric)
            && value
                .chars()
                .all(|c| lower_alphanumeric(c) || matches!(c, '-' | '_' | '.'))
    }

    fn odd_names() -> Vec<String> {
        vec![
            String::new(),
            "alice".into(),
            "Alice".into(),
            "alice@example.com".into(),
            "system:serviceaccount:team-a:deployer".into(),
            "system:anonymous".into(),
            "oidc:https://issuer.example.com#1234567890".into(),
            "名前".into(),
            "zoë 🚀".into(),
            " leading and trailing ".into(),
            "line\nbreak\tand\u{7}bell".into(),
            "-".into(),
            "x".repeat(10_000),
            "CN=alice,O=guildnet".into(),
        ]
    }

    #[test]
    fn owner_ids_are_valid_label_values() {
        for name in odd_names() {
            let id = owner_id(&name);
            assert!(is_label_value(&id), "{id} for {name:?}");
            assert_eq!(id.len(), 28);
        }
    }

    #[test]
    fn owner_ids_are_deterministic_and_reproducible() {
        assert_eq!(owner_id("alice"), owner_id("alice"));
        // printf %s alice | sha256sum | cut -c1-64 | xxd -r -p | base32 | tr A-Z a-z | cut -c1-26
        assert_eq!(owner_id("alice"), "u-fpmansl7byak6gq7ymzi7j3dve");
        assert_eq!(owner_id(""), "u-4oymiquy7qobjgx36tejs35zeq");
    }

    #[test]
    fn distinct_names_get_distinct_ids() {
        let mut names: Vec<String> = (0..20_000).map(|i| format!("user{i}")).collect();
        names.extend((0..2_000).map(|i| format!("system:serviceaccount:ns{i}:default")));
        names.extend(odd_names());
        names.extend(["alice".into(), "Alice".into(), "alice ".into()]);
        let names: HashSet<String> = names.into_iter().collect();
        let ids: HashSet<String> = names.iter().map(|name| owner_id(name)).collect();
        assert_eq!(ids.len(), names.len());
    }

    #[test]
    fn owner_names_are_printable_and_bounded() {
        assert_eq!(owner_name("alice@example.com"), "alice@example.com");
        assert_eq!(
            owner_name("system:serviceaccount:ci:deployer"),
            "system:serviceaccount:ci:deployer"
        );
        assert_eq!(owner_name("zoë 🚀"), "zoë 🚀");
        assert_eq!(owner_name("  bob \n"), "bob");
        assert_eq!(owner_name("line\nbreak\tand\u{7}bell"), "linebreakandbell");
        let long = owner_name(&"é".repeat(1_000));
        assert_eq!(long.chars().count(), OWNER_NAME_MAX_CHARS);
        assert_eq!(owner_name(""), owner_id(""));
        assert_eq!(owner_name("\n\t"), owner_id("\n\t"));
        for name in odd_names() {
            let readable = owner_name(&name);
            assert!(!readable.is_empty());
            assert!(readable.chars().count() <= OWNER_NAME_MAX_CHARS);
            assert!(!readable.chars().any(char::is_control), "{readable:?}");
        }
    }
}
