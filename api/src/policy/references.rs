//! The Secrets and ConfigMaps a Workspace's pod would read. A pod can read any Secret of its
//! namespace that its spec names, whatever its author may read, so admission lets a
//! workspace name only those its requester may `get` themselves (a SubjectAccessReview per
//! reference, made by the webhook); this module lists what must be asked.

use crate::database::GuildDatabaseSpec;
use crate::workspace::WorkspaceSpec;
use crate::workspace::facts::password_secret_name;
use std::fmt;

/// The kind of object a workspace references.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReferenceKind {
    /// A core/v1 Secret (`env[].valueFrom.secretKeyRef`, `imagePullSecrets`).
    Secret,
    /// A core/v1 ConfigMap (`env[].valueFrom.configMapKeyRef`).
    ConfigMap,
}

impl ReferenceKind {
    /// The resource a SubjectAccessReview asks about (core group).
    pub fn resource(self) -> &'static str {
        match self {
            Self::Secret => "secrets",
            Self::ConfigMap => "configmaps",
        }
    }
}

impl fmt::Display for ReferenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Secret => "Secret",
            Self::ConfigMap => "ConfigMap",
        })
    }
}

/// One object a workspace's pod would read, and the field that names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Whether it is a Secret or a ConfigMap.
    pub kind: ReferenceKind,
    /// Its name, in the workspace's namespace.
    pub name: String,
    /// Where the spec names it, e.g. `spec.env[2].valueFrom.secretKeyRef`.
    pub field: String,
}

/// The password Secrets a GuildDatabase's `spec.users` names: the operator reads each and
/// makes its password a database user's, so whoever writes the spec must be allowed to read
/// them too.
pub fn database_references(spec: &GuildDatabaseSpec) -> Vec<Reference> {
    spec.users
        .iter()
        .enumerate()
        .map(|(index, user)| Reference {
            kind: ReferenceKind::Secret,
            name: user.password_secret_ref.name.clone(),
            field: format!("spec.users[{index}].passwordSecretRef"),
        })
        .collect()
}

/// Every Secret and ConfigMap `spec` makes the pod read, except the password Secret the
/// operator generates for it — only when it does generate one (a code-server image without a
/// `PASSWORD` of the user's): the operator then proves the Secret is the workspace's own
/// before anything runs. Otherwise `<workspace>-password` may be anybody's.
pub fn references(workspace: &str, spec: &WorkspaceSpec) -> Vec<Reference> {
    let own_password = spec
        .needs_generated_password()
        .then(|| password_secret_name(workspace));
    let mut found = Vec::new();
    for (index, var) in spec.env.iter().enumerate() {
        let Some(source) = &var.value_from else {
            continue;
        };
        if let Some(secret) = &source.secret_key_ref
            && own_password.as_ref() != Some(&secret.name)
        {
            found.push(Reference {
                kind: ReferenceKind::Secret,
                name: secret.name.clone(),
                field: format!("spec.env[{index}].valueFrom.secretKeyRef"),
            });
        }
        if let Some(config_map) = &source.config_map_key_ref {
            found.push(Reference {
                kind: ReferenceKind::ConfigMap,
                name: config_map.name.clone(),
                field: format!("spec.env[{index}].valueFrom.configMapKeyRef"),
            });
        }
    }
    // The ingress controller serves the host with this Secret's certificate: naming someone
    // else's would impersonate their host. The default `<workspace>-tls` is the one
    // cert-manager issues for this workspace.
    let tls_secret = spec
        .exposure
        .as_ref()
        .and_then(|e| e.ingress.as_ref()?.tls.as_ref()?.secret_name.as_ref());
    if let Some(secret) = tls_secret.filter(|name| **name != format!("{workspace}-tls")) {
        found.push(Reference {
            kind: ReferenceKind::Secret,
            name: secret.clone(),
            field: "spec.exposure.ingress.tls.secretName".to_owned(),
        });
    }
    for (index, secret) in spec.image_pull_secrets.iter().enumerate() {
        found.push(Reference {
            kind: ReferenceKind::Secret,
            name: secret.name.clone(),
            field: format!("spec.imagePullSecrets[{index}]"),
        });
    }
    found
}

/// The references of `spec` that `old` did not already make: only those need asking about
/// on an update (the rest were asked about when they were added).
pub fn added_references(
    workspace: &str,
    spec: &WorkspaceSpec,
    old: &WorkspaceSpec,
) -> Vec<Reference> {
    let before = references(workspace, old);
    references(workspace, spec)
        .into_iter()
        .filter(|r| !before.iter().any(|b| b.kind == r.kind && b.name == r.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::WorkspaceEnvVar;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvVarSource, LocalObjectReference, SecretKeySelector,
    };

    fn from_secret(env: &str, secret: &str) -> WorkspaceEnvVar {
        WorkspaceEnvVar {
            name: env.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: "password".into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        }
    }

    fn spec() -> WorkspaceSpec {
        WorkspaceSpec {
            image: "codercom/code-server:4.96.2".into(),
            env: vec![
                WorkspaceEnvVar {
                    name: "TZ".into(),
                    value: Some("UTC".into()),
                    value_from: None,
                },
                from_secret("OTHER", "ide-password"),
                from_secret("OWN", "mine-password"),
                WorkspaceEnvVar {
                    name: "CONF".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "settings".into(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                },
            ],
            image_pull_secrets: vec![LocalObjectReference {
                name: "registry".into(),
            }],
            ..WorkspaceSpec::default()
        }
    }

    #[test]
    fn every_secret_and_config_map_is_listed_but_the_workspaces_own_password() {
        let listed = references("mine", &spec());
        let found: Vec<(ReferenceKind, &str, &str)> = listed
            .iter()
            .map(|r| (r.kind, r.name.as_str(), r.field.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    ReferenceKind::Secret,
                    "ide-password",
                    "spec.env[1].valueFrom.secretKeyRef"
                ),
                (
                    ReferenceKind::ConfigMap,
                    "settings",
                    "spec.env[3].valueFrom.configMapKeyRef"
                ),
                (
                    ReferenceKind::Secret,
                    "registry",
                    "spec.imagePullSecrets[0]"
                ),
            ]
        );
        // Another workspace's password is someone else's Secret.
        assert!(
            references("other", &spec())
                .iter()
                .any(|r| r.name == "mine-password")
        );
        // So is `<name>-password` when no password is generated: nothing proves it is ours.
        let plain = WorkspaceSpec {
            image: "nginx".into(),
            ..spec()
        };
        assert!(
            references("mine", &plain)
                .iter()
                .any(|r| r.name == "mine-password")
        );
    }

    #[test]
    fn an_ingress_certificate_secret_other_than_the_workspaces_own_is_a_reference() {
        use crate::workspace::{Exposure, ExposureType, IngressExposure, IngressTls};
        let with_tls = |secret: &str| WorkspaceSpec {
            image: "nginx".into(),
            exposure: Some(Exposure {
                type_: ExposureType::Ingress,
                ingress: Some(IngressExposure {
                    host: "ide.example.com".into(),
                    tls: Some(IngressTls {
                        secret_name: Some(secret.into()),
                        cluster_issuer: None,
                    }),
                    ..IngressExposure::default()
                }),
            }),
            ..WorkspaceSpec::default()
        };
        let theirs = references("mine", &with_tls("bank-tls"));
        assert_eq!(theirs.len(), 1);
        assert_eq!(theirs[0].field, "spec.exposure.ingress.tls.secretName");
        assert!(references("mine", &with_tls("mine-tls")).is_empty());
    }

    #[test]
    fn an_update_asks_only_about_what_it_adds() {
        let old = spec();
        let mut new = spec();
        new.env.push(from_secret("TOKEN", "github"));
        let added = added_references("mine", &new, &old);
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].name, "github");
        assert!(added_references("mine", &old, &old).is_empty());
    }
}
