//! The Deployment that runs a workspace, and [`desired_children`], which builds every child.

use super::meta::Parent;
use super::network::network_policy;
use super::password::PASSWORD_KEY;
use super::service::{ingress, service};
use super::storage::{persistent_volume_claims, volume_mounts, volumes};
use super::{BuildContext, Error};
use guildnet_api::Workspace;
use guildnet_api::workspace::facts::service_port_name;
use guildnet_api::workspace::facts::{PASSWORD_ENV, password_secret_name};
use guildnet_api::workspace::{
    DEFAULT_PROBE_PATH, apply_defaults, check_annotations, check_volume_names, first_port,
    is_code_server,
};
use guildnet_api::workspace::{Hint, ProbeProfile, WorkspacePort, WorkspaceSpec};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    PersistentVolumeClaim, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecurityContext, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

/// The name of the workspace container, stable so `kubectl logs` and `exec` can name it.
const CONTAINER_NAME: &str = "workspace";
/// The uid, gid and fsGroup the pod runs as: code-server's `coder` and Jupyter's `jovyan`
/// are both 1000, so their images' home directories stay writable.
const WORKSPACE_UID: i64 = 1000;

/// Everything the controller applies for one workspace.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// `<workspace>`: runs the workspace's pod.
    pub deployment: Deployment,
    /// `<workspace>`: the address the proxy opens.
    pub service: Service,
    /// `<workspace>`, when `spec.exposure.type` is Ingress.
    pub ingress: Option<Ingress>,
    /// `<workspace>`: admits connections to the pod from the proxy only (see
    /// `network.rs`).
    pub network_policy: NetworkPolicy,
    /// The claims of persistent volumes, `<workspace>-<volume>`.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The name of the Secret the pod reads its password from (code-server images without
    /// a `PASSWORD` of the user's). The controller creates it with
    /// [`password_secret`](super::password_secret) when it does not exist and never
    /// rewrites it; its content is not built here because it must not change per reconcile.
    pub password_secret: Option<String>,
    /// The resource profile in effect, for `status.profileApplied`.
    pub profile_applied: Option<Hint>,
}

/// The desired children of `ws`, built from its spec after [`apply_defaults`].
///
/// Fails when the workspace cannot run as named or annotated; the error says what to fix.
pub fn desired_children(ws: &Workspace, ctx: &BuildContext) -> Result<Children, Error> {
    children_of(ws, &Parent::new(ws)?, ctx)
}

/// The children of `ws` as `parent` names, labels and owns them: in the workspace's own
/// namespace, or in the cluster it is placed on.
pub(super) fn children_of(
    ws: &Workspace,
    parent: &Parent,
    ctx: &BuildContext,
) -> Result<Children, Error> {
    let mut spec = ws.spec.clone();
    let profile_applied = apply_defaults(&mut spec, ws.annotations())?;
    check_volume_names(&spec)?;
    check_annotations(ws.annotations())?;
    let password_secret = spec
        .needs_generated_password()
        .then(|| password_secret_name(&parent.name));
    Ok(Children {
        deployment: deployment(parent, &spec, ctx, password_secret.as_deref()),
        service: service(parent, &spec),
        ingress: ingress(parent, &spec),
        network_policy: network_policy(parent, &spec, &ctx.proxy),
        pvcs: persistent_volume_claims(parent, &spec),
        password_secret,
        profile_applied,
    })
}

/// The Deployment `<workspace>`: one replica, none while suspended. It recreates instead of
/// rolling: a new pod next to the old one would fight over the ReadWriteOnce volume.
fn deployment(
    parent: &Parent,
    spec: &WorkspaceSpec,
    ctx: &BuildContext,
    password_secret: Option<&str>,
) -> Deployment {
    Deployment {
        metadata: parent.owned_meta(parent.name.clone()),
        spec: DeploymentSpec {
            replicas: Some(replicas(spec)),
            selector: LabelSelector {
                match_labels: Some(parent.selector()),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(parent.labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(parent, spec, ctx, password_secret)),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

fn replicas(spec: &WorkspaceSpec) -> i32 {
    if spec.is_suspended() { 0 } else { 1 }
}

/// A pod admitted under Pod Security `restricted`. It gets no service account token (a
/// workspace runs user code that has no business calling the Kubernetes API) and no
/// service links (a namespace full of workspaces would flood its environment).
fn pod_spec(
    parent: &Parent,
    spec: &WorkspaceSpec,
    ctx: &BuildContext,
    password_secret: Option<&str>,
) -> PodSpec {
    PodSpec {
        containers: vec![container(spec, password_secret)],
        volumes: non_empty(volumes(parent, spec)),
        security_context: Some(pod_security_context()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        image_pull_secrets: non_empty(spec.image_pull_secrets.clone()),
        tolerations: non_empty(ctx.tolerations.clone()),
        ..PodSpec::default()
    }
}

/// The pod security context of every pod GuildNet runs: a fixed non-root user and group,
/// volumes owned by that group, the runtime's default seccomp profile (PSA `restricted`).
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(WORKSPACE_UID),
        run_as_group: Some(WORKSPACE_UID),
        fs_group: Some(WORKSPACE_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The container security context of every container GuildNet runs: no privilege
/// escalation, no capabilities, not root (PSA `restricted`).
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            add: None,
            drop: Some(vec!["ALL".to_owned()]),
        }),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

fn container(spec: &WorkspaceSpec, password_secret: Option<&str>) -> Container {
    let probes = probes(spec);
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(spec.image.clone()),
        args: non_empty(args(spec)),
        env: non_empty(env(spec, password_secret)),
        ports: non_empty(spec.ports.iter().map(container_port).collect()),
        resources: spec.resources.clone(),
        readiness_probe: Some(probes.readiness),
        liveness_probe: Some(probes.liveness),
        startup_probe: probes.startup,
        security_context: Some(container_security_context()),
        volume_mounts: non_empty(volume_mounts(spec)),
        ..Container::default()
    }
}

/// The user's args; for code-server without args, listen on all interfaces at the first
/// port (its default, localhost, is unreachable from the Service) behind a password.
fn args(spec: &WorkspaceSpec) -> Vec<String> {
    if !spec.args.is_empty() || !is_code_server(&spec.image) {
        return spec.args.clone();
    }
    vec![
        "--bind-addr".to_owned(),
        format!("0.0.0.0:{}", first_port(spec)),
        "--auth".to_owned(),
        "password".to_owned(),
    ]
}

/// The user's env, then `PASSWORD` from the password Secret when there is one.
fn env(spec: &WorkspaceSpec, password_secret: Option<&str>) -> Vec<EnvVar> {
    let user = spec.env.iter().map(|var| EnvVar {
        name: var.name.clone(),
        value: var.value.clone(),
        value_from: var.value_from.clone(),
    });
    let password = password_secret.map(|secret| EnvVar {
        name: PASSWORD_ENV.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: PASSWORD_KEY.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    });
    user.chain(password).collect()
}

fn container_port(port: &WorkspacePort) -> ContainerPort {
    ContainerPort {
        name: Some(service_port_name(port)),
        container_port: port.container_port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// The container's probes for one profile.
struct ProbeSet {
    readiness: Probe,
    liveness: Probe,
    startup: Option<Probe>,
}

/// HTTP GET on `spec.probes.path` and port (default: the first port). Timing by profile:
///
/// | profile   | period | failures | startup probe                         |
/// |-----------|--------|----------|---------------------------------------|
/// | `fast`    | 5s     | 3        | none                                  |
/// | `default` | 10s    | 3        | none                                  |
/// | `slow`    | 10s    | 3        | every 10s, 30 failures: 5 minutes to start |
///
/// The startup probe holds liveness back while a heavy image starts, so it is not killed
/// for being slow, yet a hung one still fails after five minutes.
fn probes(spec: &WorkspaceSpec) -> ProbeSet {
    let probes = spec.probes.clone().unwrap_or_default();
    let action = HTTPGetAction {
        path: Some(probes.path.unwrap_or_else(|| DEFAULT_PROBE_PATH.to_owned())),
        port: IntOrString::Int(probes.port.unwrap_or_else(|| first_port(spec))),
        ..HTTPGetAction::default()
    };
    let timed = |period_seconds, failure_threshold| Probe {
        http_get: Some(action.clone()),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    };
    let (period, startup) = match probes.profile.unwrap_or(ProbeProfile::Default) {
        ProbeProfile::Fast => (5, None),
        ProbeProfile::Default => (10, None),
        ProbeProfile::Slow => (10, Some(timed(10, 30))),
    };
    ProbeSet {
        readiness: timed(period, 3),
        liveness: timed(period, 3),
        startup,
    }
}

/// Kubernetes reads an empty list and an absent one alike; leaving it absent keeps the
/// object minimal, the way the API server returns it.
fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::test_support::{ephemeral, persistent, workspace};
    use guildnet_api::labels;
    use guildnet_api::workspace::{Lifecycle, Probes, WorkspaceEnvVar};
    use k8s_openapi::api::core::v1::{LocalObjectReference, Toleration};

    fn children(ws: &Workspace) -> Children {
        desired_children(ws, &BuildContext::default()).unwrap()
    }

    fn pod(children: &Children) -> PodSpec {
        children.deployment.spec.template.spec.clone().unwrap()
    }

    fn main_container(children: &Children) -> Container {
        pod(children).containers.remove(0)
    }

    fn env_value(container: &Container, name: &str) -> Option<EnvVar> {
        container
            .env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .cloned()
    }

    #[test]
    fn deployment_is_labelled_selected_and_owned_by_the_workspace() {
        let children = children(&workspace("nginx"));
        let deployment = &children.deployment;
        assert_eq!(deployment.metadata.name.as_deref(), Some("ide"));
        assert_eq!(deployment.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Workspace", "ide")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));

        let spec = &deployment.spec;
        let selector = spec.selector.match_labels.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels[labels::MANAGED], "true");
        assert_eq!(pod_labels[labels::ID], "ide");
        assert_eq!(pod_labels[labels::OWNER], "alice-id");
        for (key, value) in selector {
            assert_eq!(
                pod_labels.get(key),
                Some(value),
                "selector matches the pods"
            );
        }
        assert_eq!(
            children.service.spec.as_ref().unwrap().selector.as_ref(),
            Some(selector),
            "the Service selects the same pods"
        );
        assert_eq!(
            spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("Recreate"),
            "never two pods on one RWO volume"
        );
    }

    #[test]
    fn suspend_scales_to_zero() {
        let cases = [(None, 1), (Some(false), 1), (Some(true), 0)];
        for (suspend, expected) in cases {
            let mut ws = workspace("nginx");
            ws.spec.lifecycle = Some(Lifecycle {
                suspend,
                ..Lifecycle::default()
            });
            let replicas = children(&ws).deployment.spec.replicas;
            assert_eq!(replicas, Some(expected), "suspend {suspend:?}");
        }
    }

    #[test]
    fn pod_meets_pod_security_restricted() {
        for image in ["nginx", "codercom/code-server:4.96.2"] {
            let children = children(&workspace(image));
            let pod = pod(&children);
            let context = pod.security_context.unwrap();
            assert_eq!(context.run_as_non_root, Some(true), "{image}");
            assert_eq!(context.run_as_user, Some(1000), "{image}");
            assert_eq!(context.run_as_group, Some(1000), "{image}");
            assert_eq!(context.fs_group, Some(1000), "{image}");
            assert_eq!(
                context.seccomp_profile.unwrap().type_,
                "RuntimeDefault",
                "{image}"
            );
            assert_eq!(pod.automount_service_account_token, Some(false), "{image}");
            assert_eq!(pod.host_network, None, "{image}");

            let container = main_container(&children);
            let context = container.security_context.unwrap();
            assert_eq!(context.allow_privilege_escalation, Some(false), "{image}");
            assert_eq!(context.run_as_non_root, Some(true), "{image}");
            assert_eq!(context.privileged, None, "{image}");
            let capabilities = context.capabilities.unwrap();
            assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]), "{image}");
            assert_eq!(capabilities.add, None, "{image}");
        }
    }

    #[test]
    fn pull_secrets_and_operator_tolerations_are_passed_through() {
        let mut ws = workspace("registry.example.com/team/tools:1");
        ws.spec.image_pull_secrets = vec![LocalObjectReference {
            name: "registry-creds".to_owned(),
        }];
        let toleration = Toleration {
            key: Some("node-role.kubernetes.io/control-plane".to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Toleration::default()
        };
        let ctx = BuildContext {
            tolerations: vec![toleration.clone()],
            ..BuildContext::default()
        };
        let pod = pod(&desired_children(&ws, &ctx).unwrap());
        assert_eq!(pod.image_pull_secrets, Some(ws.spec.image_pull_secrets));
        assert_eq!(pod.tolerations, Some(vec![toleration]));

        let plain = self::pod(&children(&workspace("nginx")));
        assert_eq!((plain.image_pull_secrets, plain.tolerations), (None, None));
    }

    #[test]
    fn container_runs_the_defaulted_spec() {
        let mut ws = workspace("nginx");
        ws.spec.env = vec![WorkspaceEnvVar {
            name: String::new(),
            value: Some("blank".into()),
            value_from: None,
        }];
        let children = children(&ws);
        let container = main_container(&children);
        assert_eq!(container.name, "workspace");
        assert_eq!(container.image.as_deref(), Some("nginx"));
        let ports = container.ports.unwrap();
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].container_port),
            (Some("http"), 8080)
        );
        assert_eq!(
            container.env,
            Some(vec![EnvVar {
                name: "PORT".into(),
                value: Some("8080".into()),
                value_from: None
            }])
        );
        let requests = container.resources.unwrap().requests.unwrap();
        assert_eq!(requests["cpu"].0, "250m", "latency profile by default");
        assert_eq!(children.profile_applied, Some(Hint::Latency));
    }

    #[test]
    fn code_server_gets_args_and_a_generated_password() {
        struct Case {
            name: &'static str,
            image: &'static str,
            args: Vec<&'static str>,
            env: Vec<&'static str>,
            expected_args: Vec<&'static str>,
            expects_secret: bool,
        }
        let cases = [
            Case {
                name: "code-server defaults",
                image: "codercom/code-server:4.96.2",
                args: vec![],
                env: vec![],
                expected_args: vec!["--bind-addr", "0.0.0.0:8080", "--auth", "password"],
                expects_secret: true,
            },
            Case {
                name: "user args win",
                image: "ghcr.io/coder/code-server@sha256:abc",
                args: vec!["--auth", "none"],
                env: vec![],
                expected_args: vec!["--auth", "none"],
                expects_secret: true,
            },
            Case {
                name: "user PASSWORD wins",
                image: "docker.io/codercom/code-server",
                args: vec![],
                env: vec!["PASSWORD"],
                expected_args: vec!["--bind-addr", "0.0.0.0:8080", "--auth", "password"],
                expects_secret: false,
            },
            Case {
                name: "other images run as given",
                image: "myorg/code-server-tools:1",
                args: vec![],
                env: vec![],
                expected_args: vec![],
                expects_secret: false,
            },
        ];
        for case in cases {
            let mut ws = workspace(case.image);
            ws.spec.args = case.args.iter().map(|a| a.to_string()).collect();
            ws.spec.env = case
                .env
                .iter()
                .map(|name| WorkspaceEnvVar {
                    name: name.to_string(),
                    value: Some("mine".into()),
                    value_from: None,
                })
                .collect();
            let children = children(&ws);
            let container = main_container(&children);
            assert_eq!(
                container.args.clone().unwrap_or_default(),
                case.expected_args,
                "{}",
                case.name
            );
            let password = env_value(&container, "PASSWORD");
            if case.expects_secret {
                assert_eq!(children.password_secret.as_deref(), Some("ide-password"));
                let selector = password
                    .unwrap()
                    .value_from
                    .unwrap()
                    .secret_key_ref
                    .unwrap();
                assert_eq!(
                    (selector.name.as_str(), selector.key.as_str()),
                    ("ide-password", "password"),
                    "{}",
                    case.name
                );
            } else {
                assert_eq!(children.password_secret, None, "{}", case.name);
                assert_eq!(
                    password.and_then(|var| var.value),
                    case.env.contains(&"PASSWORD").then(|| "mine".to_owned()),
                    "{}: never a fixed password",
                    case.name
                );
            }
        }
    }

    #[test]
    fn code_server_binds_the_first_port() {
        let mut ws = workspace("codercom/code-server");
        ws.spec.ports = vec![WorkspacePort {
            name: Some("ide".into()),
            container_port: 3000,
        }];
        let container = main_container(&children(&ws));
        assert_eq!(container.args.as_ref().unwrap()[1], "0.0.0.0:3000");
        assert_eq!(
            env_value(&container, "PORT").unwrap().value.as_deref(),
            Some("3000")
        );
    }

    #[test]
    fn probe_timing_follows_the_profile() {
        let cases = [
            (Some(ProbeProfile::Fast), "nginx", 5, None),
            (Some(ProbeProfile::Default), "nginx", 10, None),
            (Some(ProbeProfile::Slow), "nginx", 10, Some((10, 30))),
            (None, "nginx", 10, None),
            (None, "codercom/code-server", 10, Some((10, 30))),
        ];
        for (profile, image, period, startup) in cases {
            let mut ws = workspace(image);
            ws.spec.probes = Some(Probes {
                profile,
                ..Probes::default()
            });
            let container = main_container(&children(&ws));
            for probe in [container.readiness_probe, container.liveness_probe] {
                let probe = probe.unwrap();
                assert_eq!(probe.period_seconds, Some(period), "{profile:?} {image}");
                assert_eq!(probe.failure_threshold, Some(3), "{profile:?} {image}");
            }
            let startup_timing = container
                .startup_probe
                .map(|p| (p.period_seconds.unwrap(), p.failure_threshold.unwrap()));
            assert_eq!(startup_timing, startup, "{profile:?} {image}");
        }
    }

    #[test]
    fn probes_target_the_path_and_port_from_spec_annotations_or_image() {
        let cases = [
            ("nginx", None, None, vec![], "/", 8080),
            ("codercom/code-server", None, None, vec![], "/healthz", 8080),
            ("nginx", Some("/live"), Some(9000), vec![], "/live", 9000),
            (
                "nginx",
                None,
                None,
                vec![
                    (labels::PROBE_PATH, "/ready"),
                    (labels::PROBE_PROFILE, "fast"),
                ],
                "/ready",
                8080,
            ),
            (
                "nginx",
                Some("/live"),
                None,
                vec![(labels::PROBE_PATH, "/ready")],
                "/live",
                8080,
            ),
        ];
        for (image, path, port, annotations, expected_path, expected_port) in cases {
            let mut ws = workspace(image);
            ws.spec.probes = Some(Probes {
                profile: None,
                path: path.map(str::to_owned),
                port,
            });
            ws.metadata.annotations = Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            let container = main_container(&children(&ws));
            let probes = [
                container.readiness_probe,
                container.liveness_probe,
                container.startup_probe,
            ];
            for probe in probes.into_iter().flatten() {
                let action = probe.http_get.unwrap();
                assert_eq!(
                    action.path.as_deref(),
                    Some(expected_path),
                    "{image} {path:?}"
                );
                assert_eq!(
                    action.port,
                    IntOrString::Int(expected_port),
                    "{image} {port:?}"
                );
            }
        }
    }

    #[test]
    fn annotation_profile_changes_the_probes() {
        let mut ws = workspace("nginx");
        ws.metadata.annotations =
            Some([(labels::PROBE_PROFILE.to_owned(), "fast".to_owned())].into());
        let probe = main_container(&children(&ws)).readiness_probe.unwrap();
        assert_eq!(probe.period_seconds, Some(5));
    }

    #[test]
    fn persistent_volumes_are_mounted_from_their_claims() {
        let mut ws = workspace("codercom/code-server");
        ws.spec.volumes = vec![
            persistent("home", "/home/coder", None),
            ephemeral("scratch", "/tmp", Some("1Gi"), None),
        ];
        let children = children(&ws);
        let claims: Vec<_> = children
            .pvcs
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(claims, ["ide-home"]);
        let pod = pod(&children);
        let volumes = pod.volumes.unwrap();
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "ide-home"
        );
        let mounts: Vec<_> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(mounts, [("home", "/home/coder"), ("scratch", "/tmp")]);
    }

    #[test]
    fn unbuildable_workspaces_are_refused_with_the_fix() {
        let mut long_name = workspace("nginx");
        long_name.metadata.name = Some("w".repeat(64));
        let mut reserved = workspace("nginx");
        reserved.spec.volumes = vec![ephemeral("guildnet-tmp", "/data", None, None)];
        let mut bad_annotation = workspace("nginx");
        bad_annotation.metadata.annotations =
            Some([(labels::PROBE_PROFILE.to_owned(), "turbo".to_owned())].into());
        let cases = [
            (long_name, "63 characters"),
            (reserved, "rename the volume"),
            (bad_annotation, "slow, default or fast"),
        ];
        for (ws, fix) in cases {
            let error = desired_children(&ws, &BuildContext::default()).unwrap_err();
            assert!(error.to_string().contains(fix), "{error}");
        }
    }
}
