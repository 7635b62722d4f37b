//! The generated password of code-server workspaces.

use super::Error;
use super::meta::Parent;
use guildnet_api::Workspace;
use guildnet_api::workspace::facts::password_secret_name;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::distr::Alphanumeric;
use std::collections::BTreeMap;

/// Key of the password in the workspace's password Secret.
pub const PASSWORD_KEY: &str = "password";
/// 32 characters from 62 give 32 × log2(62) ≈ 190 bits, above the 128 bits that make
/// guessing hopeless even for an attacker who can try passwords offline.
const PASSWORD_LEN: usize = 32;

/// A fresh random password: letters and digits only, so it survives URLs, shells and YAML
/// unquoted. Drawn from the thread-local CSPRNG (ChaCha, seeded and periodically reseeded
/// from the operating system).
pub fn generate_password() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect()
}

/// The Secret `<workspace>-password` holding `password` under [`PASSWORD_KEY`], deleted with
/// the workspace. It is immutable: the API server refuses to change the password, so
/// nothing (not even a controller bug) can lock a user out of a running workspace; to
/// rotate, delete the Secret and the controller creates a new one.
pub fn password_secret(ws: &Workspace, password: &str) -> Result<Secret, Error> {
    Ok(password_secret_of(&Parent::new(ws)?, password))
}

/// [`password_secret`] of the children `parent` names (in the workspace's namespace, or in
/// the cluster it is placed on).
pub(super) fn password_secret_of(parent: &Parent, password: &str) -> Secret {
    Secret {
        metadata: parent.owned_meta(password_secret_name(&parent.name)),
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            PASSWORD_KEY.to_owned(),
            ByteString(password.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::test_support::workspace;
    use guildnet_api::labels;
    use std::collections::HashSet;

    #[test]
    fn passwords_are_long_url_safe_and_unique() {
        assert!(PASSWORD_LEN as f64 * 62f64.log2() >= 128.0);
        let passwords: HashSet<String> = (0..100).map(|_| generate_password()).collect();
        assert_eq!(passwords.len(), 100, "no password repeats");
        for password in &passwords {
            assert_eq!(password.len(), PASSWORD_LEN);
            assert!(
                password.chars().all(|c| c.is_ascii_alphanumeric()),
                "{password}"
            );
        }
    }

    #[test]
    fn secret_holds_the_given_password_and_belongs_to_the_workspace() {
        let secret = password_secret(&workspace("codercom/code-server"), "s3cret").unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("ide-password"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(secret.metadata.labels.unwrap()[labels::ID], "ide");
        assert_eq!(secret.metadata.owner_references.unwrap()[0].name, "ide");
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.data.unwrap()[PASSWORD_KEY].0, b"s3cret");
    }
}
