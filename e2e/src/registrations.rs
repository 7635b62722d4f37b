//! Registered clusters in tests: the kubeconfig Secret on the hub, and the
//! ClusterRegistration naming it.

use guildnet_api::ClusterRegistration;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Where the tests keep registered clusters' kubeconfig Secrets.
pub const SECRETS_NAMESPACE: &str = "guildnet-system";

/// Writes `kubeconfig` under the key `kubeconfig` of the Secret `name` in
/// [`SECRETS_NAMESPACE`] (server-side apply: creates or replaces it).
pub async fn put_kubeconfig(admin: &Client, name: &str, kubeconfig: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            [(
                "kubeconfig".to_owned(),
                ByteString(kubeconfig.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(admin.clone(), SECRETS_NAMESPACE)
        .patch(
            name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("write the kubeconfig Secret");
}

/// Registers the cluster `name`, labelled `labels` (a JSON object), through the Secret
/// `secret` in [`SECRETS_NAMESPACE`]; returns the registrations' API.
pub async fn register(
    admin: &Client,
    name: &str,
    secret: &str,
    labels: Value,
) -> Api<ClusterRegistration> {
    let registrations: Api<ClusterRegistration> = Api::all(admin.clone());
    let registration: ClusterRegistration = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1",
        "kind": "ClusterRegistration",
        "metadata": {"name": name, "labels": labels},
        "spec": {"kubeconfigSecretRef": {"namespace": SECRETS_NAMESPACE, "name": secret}},
    }))
    .expect("a ClusterRegistration");
    registrations
        .create(&PostParams::default(), &registration)
        .await
        .unwrap_or_else(|e| panic!("register the cluster {name}: {e}"));
    registrations
}
