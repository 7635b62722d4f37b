//! The MutatingWebhookConfiguration and ValidatingWebhookConfiguration that make the API
//! server call the webhook, and the host names its serving certificate must carry.
//!
//! Only Workspaces and GuildDatabases of `guildnet.io` are intercepted, each on a path of
//! its own, with `failurePolicy: Fail`: neither must ever be admitted unchecked, while an
//! outage of the webhook can never block Pods or any other object. `kube-system` and GuildNet's own namespace are excluded, so the cluster
//! and GuildNet itself keep working even if the webhook is broken.

use guildnet_api::GROUP;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

/// The name of both webhook configurations.
pub const CONFIGURATION_NAME: &str = "guildnet-webhook";
/// The path the mutating webhook is served on.
pub const MUTATE_PATH: &str = "/mutate";
/// The path the validating webhook is served on.
pub const VALIDATE_PATH: &str = "/validate";
/// The path the mutating webhook of GuildDatabases is served on.
pub const MUTATE_DATABASES_PATH: &str = "/mutate-databases";
/// The path the validating webhook of GuildDatabases is served on.
pub const VALIDATE_DATABASES_PATH: &str = "/validate-databases";

/// The resources intercepted, each with its mutating and validating paths.
const INTERCEPTED: [(&str, &str, &str); 2] = [
    ("workspaces", MUTATE_PATH, VALIDATE_PATH),
    (
        "guilddatabases",
        MUTATE_DATABASES_PATH,
        VALIDATE_DATABASES_PATH,
    ),
];
/// The field manager of the server-side applies.
const FIELD_MANAGER: &str = "guildnet-webhook";
/// How long the API server waits for an answer. Decisions take microseconds; a short
/// timeout keeps a hung webhook from stalling clients.
const TIMEOUT_SECONDS: i32 = 5;
/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// How the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A URL such as `https://127.0.0.1:9443`, for a webhook running outside the cluster
    /// (`make dev`).
    Url(String),
    /// A Service in the cluster.
    Service {
        /// The Service's namespace (`--service-namespace`, default `--system-namespace`).
        namespace: String,
        /// The Service's name (`--service-name`).
        name: String,
        /// The Service port the API server dials (`--service-port`, default 443).
        port: u16,
    },
}

/// Why an endpoint or the registration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--webhook-url` given is not an `https://` URL with a host.
    #[error("--webhook-url {0:?} must be an https:// URL with a host, e.g. https://127.0.0.1:9443")]
    Url(String),
    /// The API server refused the server-side apply of the webhook configurations.
    #[error("cannot apply the webhook configurations: {0}")]
    Apply(#[from] kube::Error),
}

impl Endpoint {
    /// A URL endpoint, checked: the API server calls only `https://` URLs.
    pub fn url(url: &str) -> Result<Self, Error> {
        let invalid = || Error::Url(url.to_owned());
        let parsed: axum::http::Uri = url.parse().map_err(|_| invalid())?;
        let https = parsed.scheme_str() == Some("https");
        if !https || parsed.host().is_none_or(str::is_empty) || parsed.query().is_some() {
            return Err(invalid());
        }
        Ok(Self::Url(url.trim_end_matches('/').to_owned()))
    }

    /// The host names (or IP addresses) the API server connects to, which the serving
    /// certificate must name.
    pub fn hosts(&self) -> Vec<String> {
        match self {
            Self::Url(url) => url
                .parse::<axum::http::Uri>()
                .ok()
                .and_then(|uri| {
                    uri.host()
                        .map(|host| host.trim_matches(['[', ']']).to_owned())
                })
                .into_iter()
                .collect(),
            Self::Service {
                namespace, name, ..
            } => vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
                format!("{name}.{namespace}"),
                name.clone(),
            ],
        }
    }

    fn client_config(&self, path: &str, ca_bundle: &str) -> WebhookClientConfig {
        let ca_bundle = Some(ByteString(ca_bundle.as_bytes().to_vec()));
        match self {
            Self::Url(url) => WebhookClientConfig {
                url: Some(format!("{url}{path}")),
                ca_bundle,
                service: None,
            },
            Self::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(path.to_owned()),
                    port: Some(i32::from(*port)),
                }),
                ca_bundle,
                url: None,
            },
        }
    }
}

/// The webhook configurations to keep registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// How the API server reaches the webhook.
    pub endpoint: Endpoint,
    /// GuildNet's namespace, excluded from interception.
    pub system_namespace: String,
}

impl Registration {
    /// The mutating configuration: CREATE and UPDATE (a DELETE has nothing to mutate).
    /// Reinvoked if a later mutating webhook changes the object, so the owner label it
    /// sets is the one stored.
    pub fn mutating(&self, ca_bundle: &str) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            metadata: metadata(),
            webhooks: Some(
                INTERCEPTED
                    .iter()
                    .map(|(resource, path, _)| MutatingWebhook {
                        name: format!("mutate.{resource}.{GROUP}"),
                        client_config: self.endpoint.client_config(path, ca_bundle),
                        rules: Some(vec![rule(resource, &["CREATE", "UPDATE"])]),
                        reinvocation_policy: Some("IfNeeded".to_owned()),
                        admission_review_versions: vec!["v1".to_owned()],
                        failure_policy: Some("Fail".to_owned()),
                        match_policy: Some("Equivalent".to_owned()),
                        namespace_selector: Some(self.namespace_selector()),
                        side_effects: "None".to_owned(),
                        timeout_seconds: Some(TIMEOUT_SECONDS),
                        match_conditions: None,
                        object_selector: None,
                    })
                    .collect(),
            ),
        }
    }

    /// The validating configuration: CREATE, UPDATE and DELETE.
    pub fn validating(&self, ca_bundle: &str) -> ValidatingWebhookConfiguration {
        ValidatingWebhookConfiguration {
            metadata: metadata(),
            webhooks: Some(
                INTERCEPTED
                    .iter()
                    .map(|(resource, _, path)| ValidatingWebhook {
                        name: format!("validate.{resource}.{GROUP}"),
                        client_config: self.endpoint.client_config(path, ca_bundle),
                        rules: Some(vec![rule(resource, &["CREATE", "UPDATE", "DELETE"])]),
                        admission_review_versions: vec!["v1".to_owned()],
                        failure_policy: Some("Fail".to_owned()),
                        match_policy: Some("Equivalent".to_owned()),
                        namespace_selector: Some(self.namespace_selector()),
                        side_effects: "None".to_owned(),
                        timeout_seconds: Some(TIMEOUT_SECONDS),
                        match_conditions: None,
                        object_selector: None,
                    })
                    .collect(),
            ),
        }
    }

    /// Creates or updates both configurations with `ca_bundle` (server-side apply, so
    /// every replica converges on the same objects without conflicts).
    pub async fn apply(&self, client: &Client, ca_bundle: &str) -> Result<(), Error> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        mutating
            .patch(
                CONFIGURATION_NAME,
                &params,
                &Patch::Apply(self.mutating(ca_bundle)),
            )
            .await?;
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        validating
            .patch(
                CONFIGURATION_NAME,
                &params,
                &Patch::Apply(self.validating(ca_bundle)),
            )
            .await?;
        Ok(())
    }

    fn namespace_selector(&self) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.to_owned(),
                operator: "NotIn".to_owned(),
                values: Some(vec![
                    "kube-system".to_owned(),
                    self.system_namespace.clone(),
                ]),
            }]),
            match_labels: None,
        }
    }
}

fn metadata() -> ObjectMeta {
    ObjectMeta {
        name: Some(CONFIGURATION_NAME.to_owned()),
        labels: Some(
            [(
                "app.kubernetes.io/managed-by".to_owned(),
                FIELD_MANAGER.to_owned(),
            )]
            .into(),
        ),
        ..ObjectMeta::default()
    }
}

/// `resource` of `guildnet.io`, any served version, namespaced.
fn rule(resource: &str, operations: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![GROUP.to_owned()]),
        api_versions: Some(vec!["*".to_owned()]),
        operations: Some(operations.iter().map(|op| (*op).to_owned()).collect()),
        resources: Some(vec![resource.to_owned()]),
        scope: Some("Namespaced".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(endpoint: Endpoint) -> Registration {
        Registration {
            endpoint,
            system_namespace: "guildnet-system".to_owned(),
        }
    }

    #[test]
    fn urls_must_be_https_with_a_host() {
        assert!(Endpoint::url("https://127.0.0.1:9443").is_ok());
        assert_eq!(
            Endpoint::url("https://localhost:9443/").unwrap(),
            Endpoint::Url("https://localhost:9443".to_owned())
        );
        for bad in [
            "http://127.0.0.1:9443",
            "127.0.0.1:9443",
            "https://",
            "https://h/?q=1",
        ] {
            assert!(Endpoint::url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_certificate_names_what_the_api_server_dials() {
        assert_eq!(
            Endpoint::url("https://127.0.0.1:9443").unwrap().hosts(),
            ["127.0.0.1"]
        );
        assert_eq!(
            Endpoint::url("https://[::1]:9443").unwrap().hosts(),
            ["::1"]
        );
        let service = Endpoint::Service {
            namespace: "guildnet-system".to_owned(),
            name: "guildnet-webhook".to_owned(),
            port: 443,
        };
        assert!(
            service
                .hosts()
                .contains(&"guildnet-webhook.guildnet-system.svc".to_owned())
        );
    }

    #[test]
    fn only_workspaces_and_databases_are_intercepted_and_failures_refuse() {
        let url = registration(Endpoint::url("https://127.0.0.1:9443").unwrap());
        let json = serde_json::to_value(url.validating("PEM")).unwrap();
        let hook = &json["webhooks"][0];
        assert_eq!(hook["name"], "validate.workspaces.guildnet.io");
        assert_eq!(
            hook["clientConfig"]["url"],
            "https://127.0.0.1:9443/validate"
        );
        assert_eq!(hook["clientConfig"]["caBundle"], "UEVN", "base64 of PEM");
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["matchPolicy"], "Equivalent");
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(hook["admissionReviewVersions"], serde_json::json!(["v1"]));
        assert_eq!(
            hook["rules"],
            serde_json::json!([{
                "apiGroups": ["guildnet.io"],
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "resources": ["workspaces"],
                "scope": "Namespaced"
            }])
        );
        assert_eq!(
            hook["namespaceSelector"],
            serde_json::json!({"matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "guildnet-system"]
            }]})
        );
        let json = serde_json::to_value(url.mutating("PEM")).unwrap();
        let hook = &json["webhooks"][0];
        assert_eq!(
            hook["rules"][0]["operations"],
            serde_json::json!(["CREATE", "UPDATE"])
        );
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
        assert_eq!(hook["clientConfig"]["url"], "https://127.0.0.1:9443/mutate");
        // GuildDatabases alike, on paths of their own.
        let databases = &json["webhooks"][1];
        assert_eq!(databases["name"], "mutate.guilddatabases.guildnet.io");
        assert_eq!(
            databases["rules"][0]["resources"],
            serde_json::json!(["guilddatabases"])
        );
        assert_eq!(
            databases["clientConfig"]["url"],
            "https://127.0.0.1:9443/mutate-databases"
        );
        let json = serde_json::to_value(url.validating("PEM")).unwrap();
        assert_eq!(json["webhooks"].as_array().unwrap().len(), 2);
        assert_eq!(
            json["webhooks"][1]["clientConfig"]["url"],
            "https://127.0.0.1:9443/validate-databases"
        );
    }

    #[test]
    fn a_service_endpoint_is_referenced_by_service() {
        let service = registration(Endpoint::Service {
            namespace: "guildnet-system".to_owned(),
            name: "guildnet-webhook".to_owned(),
            port: 443,
        });
        let json = serde_json::to_value(service.mutating("PEM")).unwrap();
        assert_eq!(
            json["webhooks"][0]["clientConfig"]["service"],
            serde_json::json!({
                "namespace": "guildnet-system",
                "name": "guildnet-webhook",
                "path": "/mutate",
                "port": 443
            })
        );
        assert!(json["webhooks"][0]["clientConfig"].get("url").is_none());
        // Typed objects carry their apiVersion and kind, as a server-side apply needs.
        assert_eq!(json["kind"], "MutatingWebhookConfiguration");
        assert_eq!(json["apiVersion"], "admissionregistration.k8s.io/v1");
    }
}
