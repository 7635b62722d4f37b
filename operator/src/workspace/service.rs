//! How a workspace is reached: its Service and, when asked for, an Ingress.

use super::meta::Parent;
use guildnet_api::workspace::facts::service_port_name;
use guildnet_api::workspace::first_port;
use guildnet_api::workspace::{ExposureType, IngressExposure, WorkspacePort, WorkspaceSpec};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Annotation asking cert-manager to issue the Ingress's certificate.
const CLUSTER_ISSUER_ANNOTATION: &str = "cert-manager.io/cluster-issuer";

/// The Service `<workspace>` in front of the pod, mirroring `spec.ports`.
///
/// It publishes not-ready addresses: readiness drives the workspace's `Ready` condition,
/// not reachability, so a workspace that is still starting, or whose probe path is wrong,
/// stays reachable through the proxy instead of vanishing behind a connection error.
pub(super) fn service(parent: &Parent, spec: &WorkspaceSpec) -> Service {
    Service {
        metadata: parent.owned_meta(parent.name.clone()),
        spec: Some(ServiceSpec {
            type_: Some(service_type(spec).to_owned()),
            selector: Some(parent.selector()),
            ports: Some(spec.ports.iter().map(service_port).collect()),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// LoadBalancer only when asked for; an Ingress routes to a ClusterIP Service.
fn service_type(spec: &WorkspaceSpec) -> &'static str {
    match spec.exposure.as_ref().map(|exposure| exposure.type_) {
        Some(ExposureType::LoadBalancer) => "LoadBalancer",
        Some(ExposureType::ClusterIP | ExposureType::Ingress) | None => "ClusterIP",
    }
}

fn service_port(port: &WorkspacePort) -> ServicePort {
    ServicePort {
        name: Some(service_port_name(port)),
        port: port.container_port,
        target_port: Some(IntOrString::Int(port.container_port)),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The Ingress `<workspace>` when `spec.exposure.type` is Ingress: every path of the host
/// goes to the Service's first port, the one the proxy opens too.
pub(super) fn ingress(parent: &Parent, spec: &WorkspaceSpec) -> Option<Ingress> {
    let exposure = spec
        .exposure
        .as_ref()
        .filter(|exposure| exposure.type_ == ExposureType::Ingress)?;
    let settings = exposure.ingress.as_ref()?;
    let mut metadata = parent.owned_meta(parent.name.clone());
    metadata.annotations = Some(ingress_annotations(settings)).filter(|a| !a.is_empty());
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: settings.class_name.clone(),
            rules: Some(vec![ingress_rule(parent, settings, first_port(spec))]),
            tls: settings.tls.as_ref().map(|tls| {
                vec![IngressTLS {
                    hosts: Some(vec![settings.host.clone()]),
                    secret_name: Some(
                        tls.secret_name
                            .clone()
                            .unwrap_or_else(|| format!("{}-tls", parent.name)),
                    ),
                }]
            }),
            ..IngressSpec::default()
        }),
        status: None,
    })
}

/// The user's annotations, with `tls.clusterIssuer` winning over a hand-written
/// cert-manager annotation because it is the field the user set for that purpose.
fn ingress_annotations(settings: &IngressExposure) -> BTreeMap<String, String> {
    let mut annotations = settings.annotations.clone();
    if let Some(issuer) = settings
        .tls
        .as_ref()
        .and_then(|tls| tls.cluster_issuer.clone())
    {
        annotations.insert(CLUSTER_ISSUER_ANNOTATION.to_owned(), issuer);
    }
    annotations
}

fn ingress_rule(parent: &Parent, settings: &IngressExposure, port: i32) -> IngressRule {
    IngressRule {
        host: Some(settings.host.clone()),
        http: Some(HTTPIngressRuleValue {
            paths: vec![HTTPIngressPath {
                path: Some("/".to_owned()),
                path_type: "Prefix".to_owned(),
                backend: IngressBackend {
                    service: Some(IngressServiceBackend {
                        name: parent.name.clone(),
                        port: Some(ServiceBackendPort {
                            number: Some(port),
                            name: None,
                        }),
                    }),
                    resource: None,
                },
            }],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::test_support::workspace;
    use guildnet_api::labels;
    use guildnet_api::workspace::{Exposure, IngressTls};

    fn parent() -> Parent {
        Parent::new(&workspace("nginx")).unwrap()
    }

    fn exposed(type_: ExposureType, ingress: Option<IngressExposure>) -> WorkspaceSpec {
        WorkspaceSpec {
            image: "nginx".to_owned(),
            ports: vec![WorkspacePort {
                name: Some("http".to_owned()),
                container_port: 8080,
            }],
            exposure: Some(Exposure { type_, ingress }),
            ..WorkspaceSpec::default()
        }
    }

    fn ingress_settings(tls: Option<IngressTls>) -> IngressExposure {
        IngressExposure {
            host: "ide.example.com".to_owned(),
            class_name: Some("nginx".to_owned()),
            tls,
            annotations: BTreeMap::from([(
                "nginx.ingress.kubernetes.io/proxy-body-size".to_owned(),
                "0".to_owned(),
            )]),
        }
    }

    #[test]
    fn service_type_follows_exposure() {
        let cases = [
            (None, "ClusterIP"),
            (Some(ExposureType::ClusterIP), "ClusterIP"),
            (Some(ExposureType::LoadBalancer), "LoadBalancer"),
            (Some(ExposureType::Ingress), "ClusterIP"),
        ];
        for (type_, expected) in cases {
            let spec = WorkspaceSpec {
                exposure: type_.map(|type_| Exposure {
                    type_,
                    ingress: None,
                }),
                ..WorkspaceSpec::default()
            };
            let service = service(&parent(), &spec).spec.unwrap();
            assert_eq!(service.type_.as_deref(), Some(expected), "{type_:?}");
        }
    }

    #[test]
    fn service_mirrors_ports_and_reaches_starting_pods() {
        let spec = WorkspaceSpec {
            ports: vec![
                WorkspacePort {
                    name: Some("http".to_owned()),
                    container_port: 8080,
                },
                WorkspacePort {
                    name: None,
                    container_port: 8443,
                },
            ],
            ..WorkspaceSpec::default()
        };
        let service = service(&parent(), &spec);
        assert_eq!(service.metadata.name.as_deref(), Some("ide"));
        assert_eq!(service.metadata.owner_references.unwrap()[0].name, "ide");
        let spec = service.spec.unwrap();
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.target_port.unwrap()))
            .collect();
        assert_eq!(
            ports,
            [
                ("http".to_owned(), 8080, IntOrString::Int(8080)),
                ("port-8443".to_owned(), 8443, IntOrString::Int(8443)),
            ]
        );
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let selector = spec.selector.unwrap();
        assert_eq!(selector[labels::ID], "ide");
        assert_eq!(selector[labels::MANAGED], "true");
    }

    #[test]
    fn ingress_exists_only_for_ingress_exposure() {
        let cases = [
            (exposed(ExposureType::ClusterIP, None), false),
            (exposed(ExposureType::LoadBalancer, None), false),
            (
                exposed(ExposureType::Ingress, Some(ingress_settings(None))),
                true,
            ),
        ];
        for (spec, expected) in cases {
            let exposure = spec.exposure.as_ref().map(|e| e.type_);
            assert_eq!(
                ingress(&parent(), &spec).is_some(),
                expected,
                "{exposure:?}"
            );
        }
    }

    #[test]
    fn ingress_routes_the_host_to_the_first_port() {
        let spec = exposed(ExposureType::Ingress, Some(ingress_settings(None)));
        let ingress = ingress(&parent(), &spec).unwrap();
        assert_eq!(ingress.metadata.name.as_deref(), Some("ide"));
        assert_eq!(ingress.metadata.labels.unwrap()[labels::ID], "ide");
        assert!(ingress.metadata.owner_references.is_some());
        let annotations = ingress.metadata.annotations.unwrap();
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/proxy-body-size"],
            "0"
        );
        assert!(!annotations.contains_key(CLUSTER_ISSUER_ANNOTATION));
        let spec = ingress.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(spec.tls, None);
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("ide.example.com"));
        let path = &rule.http.as_ref().unwrap().paths[0];
        assert_eq!(
            (path.path.as_deref(), path.path_type.as_str()),
            (Some("/"), "Prefix")
        );
        let backend = path.backend.service.as_ref().unwrap();
        assert_eq!(backend.name, "ide");
        assert_eq!(backend.port.as_ref().unwrap().number, Some(8080));
    }

    #[test]
    fn ingress_tls_defaults_the_secret_and_asks_cert_manager() {
        let cases = [
            (None, None, "ide-tls", None),
            (Some("my-cert"), None, "my-cert", None),
            (None, Some("letsencrypt"), "ide-tls", Some("letsencrypt")),
        ];
        for (secret_name, issuer, expected_secret, expected_issuer) in cases {
            let mut settings = ingress_settings(Some(IngressTls {
                secret_name: secret_name.map(str::to_owned),
                cluster_issuer: issuer.map(str::to_owned),
            }));
            settings.annotations.insert(
                CLUSTER_ISSUER_ANNOTATION.to_owned(),
                "hand-written".to_owned(),
            );
            let spec = exposed(ExposureType::Ingress, Some(settings));
            let ingress = ingress(&parent(), &spec).unwrap();
            let tls = &ingress.spec.unwrap().tls.unwrap()[0];
            assert_eq!(tls.secret_name.as_deref(), Some(expected_secret));
            assert_eq!(tls.hosts, Some(vec!["ide.example.com".to_owned()]));
            let annotations = ingress.metadata.annotations.unwrap();
            assert_eq!(
                annotations[CLUSTER_ISSUER_ANNOTATION],
                expected_issuer.unwrap_or("hand-written"),
                "clusterIssuer {issuer:?} wins over the annotation"
            );
        }
    }
}
