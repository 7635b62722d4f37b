//! The kubeconfigs the proxy sends requests with, for the clusters whose registration says
//! `network: APIServerProxy`: one Secret of GuildNet's own (`--cluster-credentials-secret`),
//! one key per such cluster, kept by that cluster's instance. The proxy's RBAC names that
//! Secret alone, so it never reads the Secrets clusters are registered with, and a rotated
//! kubeconfig reaches it through its watch as soon as the instance has connected with it.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use sha2::{Digest, Sha256};

/// Where the handed-over kubeconfigs are kept.
#[derive(Clone, Debug)]
pub struct CredentialsSecret {
    /// Its namespace, GuildNet's own.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// What one cluster's key of the Secret holds, as far as its instance knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    /// Not looked at yet (a new instance, or a failed write).
    Unknown,
    /// No key for the cluster.
    Absent,
    /// The kubeconfig of this SHA-256.
    Present([u8; 32]),
}

impl Handed {
    /// What the key should hold: `kubeconfig` when given.
    pub fn of(kubeconfig: Option<&str>) -> Self {
        kubeconfig.map_or(Self::Absent, |text| {
            Self::Present(Sha256::digest(text.as_bytes()).into())
        })
    }
}

impl CredentialsSecret {
    /// Makes the cluster's key hold `kubeconfig`, or removes it (`None`), unless `handed`
    /// shows it does already; returns what it holds now. An unknown state is read first,
    /// so a new leader writes nothing that is already so.
    pub async fn hand(
        &self,
        client: &Client,
        cluster: &str,
        kubeconfig: Option<&str>,
        handed: Handed,
    ) -> kube::Result<Handed> {
        let wanted = Handed::of(kubeconfig);
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
                            .and_then(|d| d.get(cluster))
                            .and_then(|b| std::str::from_utf8(&b.0).ok()),
                    )
                });
            if held == wanted {
                return Ok(wanted);
            }
        }
        // Each cluster's key has a field manager of its own: applying one key (or none)
        // leaves the others' keys as they are.
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            data: kubeconfig
                .map(|text| [(cluster.to_owned(), ByteString(text.as_bytes().to_vec()))].into()),
            ..Secret::default()
        };
        secrets
            .patch(
                &self.name,
                &PatchParams::apply(&field_manager(cluster)).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(wanted)
    }

    /// The clusters that have a key, so keys of registrations deleted while no replica led
    /// can be removed.
    pub async fn clusters(&self, client: &Client) -> kube::Result<Vec<String>> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        Ok(secrets
            .get_opt(&self.name)
            .await?
            .and_then(|s| s.data)
            .map(|data| data.into_keys().collect())
            .unwrap_or_default())
    }
}

/// The field manager of `cluster`'s key: at most 128 characters, as the API server allows.
fn field_manager(cluster: &str) -> String {
    let manager = format!("guildnet-operator.{cluster}");
    if manager.len() <= 128 {
        return manager;
    }
    let digest = Sha256::digest(cluster.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("guildnet-operator.{}-{hash}", &cluster[..90])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cluster_has_a_field_manager_of_its_own_within_the_api_servers_limit() {
        assert_eq!(field_manager("edge"), "guildnet-operator.edge");
        let long = "a".repeat(253);
        let other = format!("{}b", "a".repeat(252));
        assert!(field_manager(&long).len() <= 128);
        assert_ne!(field_manager(&long), field_manager(&other));
    }

    #[test]
    fn the_wanted_state_follows_the_kubeconfig() {
        assert_eq!(Handed::of(None), Handed::Absent);
        assert_eq!(Handed::of(Some("a")), Handed::of(Some("a")));
        assert_ne!(Handed::of(Some("a")), Handed::of(Some("b")));
    }
}
