//! Secrets the operator hands to the proxy, so the proxy's RBAC names them alone and it
//! never reads the Secrets they are made from: one Secret of GuildNet's own per purpose,
//! one key per object, each key written with a field manager of its own, and the proxy
//! watching that one Secret.
//!
//! - `--cluster-credentials-secret`: the kubeconfig of each cluster registered with
//!   `network: APIServerProxy`, kept by that cluster's instance; a rotated kubeconfig
//!   reaches the proxy as soon as the instance has connected with it.
//! - `--database-credentials-secret`: the admin password of each GuildDatabase, under
//!   `<namespace>.<name>` (a namespace has no dot), for the database API.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use sha2::{Digest, Sha256};

/// Where handed-over values are kept.
#[derive(Clone, Debug)]
pub struct CredentialsSecret {
    /// Its namespace, GuildNet's own.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// What one key of the Secret holds, as far as its writer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    /// Not looked at yet (a new instance, or a failed write).
    Unknown,
    /// No such key.
    Absent,
    /// The value of this SHA-256.
    Present([u8; 32]),
}

impl Handed {
    /// What the key should hold: `value` when given.
    pub fn of(value: Option<&str>) -> Self {
        value.map_or(Self::Absent, |text| {
            Self::Present(Sha256::digest(text.as_bytes()).into())
        })
    }
}

impl CredentialsSecret {
    /// Makes `key` hold `value`, or removes it (`None`), unless `handed` shows it does
    /// already; returns what it holds now. An unknown state is read first, so a new leader
    /// writes nothing that is already so.
    pub async fn hand(
        &self,
        client: &Client,
        key: &str,
        value: Option<&str>,
        handed: Handed,
    ) -> kube::Result<Handed> {
        let wanted = Handed::of(value);
        if handed == wanted {
            return Ok(wanted);
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        if handed == Handed::Unknown {
            let held = secrets
                .get_opt(&self.name)
                .await?
                .map_or(Handed::Absent, |s| {
                    Handed::of(
                        s.data
                            .as_ref()
                            .and_then(|d| d.get(key))
                            .and_then(|b| std::str::from_utf8(&b.0).ok()),
                    )
                });
            if held == wanted {
                return Ok(wanted);
            }
        }
        // Each key has a field manager of its own: applying one key (or none) leaves the
        // others as they are.
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            data: value.map(|text| [(key.to_owned(), ByteString(text.as_bytes().to_vec()))].into()),
            ..Secret::default()
        };
        secrets
            .patch(
                &self.name,
                &PatchParams::apply(&field_manager(key)).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(wanted)
    }

    /// The keys the Secret holds, so those of objects deleted while no replica led (or
    /// while it was not looking) can be removed.
    pub async fn keys(&self, client: &Client) -> kube::Result<Vec<String>> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        Ok(secrets
            .get_opt(&self.name)
            .await?
            .and_then(|s| s.data)
            .map(|data| data.into_keys().collect())
            .unwrap_or_default())
    }
}

/// The field manager of `key`: at most 128 characters, as the API server allows.
fn field_manager(key: &str) -> String {
    let manager = format!("guildnet-operator.{key}");
    if manager.len() <= 128 {
        return manager;
    }
    let digest = Sha256::digest(key.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("guildnet-operator.{}-{hash}", &key[..90])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_a_field_manager_of_its_own_within_the_api_servers_limit() {
        assert_eq!(field_manager("edge"), "guildnet-operator.edge");
        let long = "a".repeat(253);
        let other = format!("{}b", "a".repeat(252));
        assert!(field_manager(&long).len() <= 128);
        assert_ne!(field_manager(&long), field_manager(&other));
    }

    #[test]
    fn the_wanted_state_follows_the_value() {
        assert_eq!(Handed::of(None), Handed::Absent);
        assert_eq!(Handed::of(Some("a")), Handed::of(Some("a")));
        assert_ne!(Handed::of(Some("a")), Handed::of(Some("b")));
    }
}
