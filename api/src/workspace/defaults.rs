//! Defaulting of a Workspace spec, shared by the admission webhook and the controller so the
//! object a user reads back is the one that runs.

use super::image::is_code_server;
use super::rules::SpecError;
use super::{Hint, ProbeProfile, Probes, WorkspaceEnvVar, WorkspacePort, WorkspaceSpec};
use crate::labels;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// The port a workspace listens on when `spec.ports` is empty.
const DEFAULT_PORT: i32 = 8080;
/// The name of the default port.
const DEFAULT_PORT_NAME: &str = "http";
/// The environment variable carrying the first port, for images that read their port
/// from it (code-server does, and lets it win over `--bind-addr`).
const PORT_ENV: &str = "PORT";
/// The resource profile of a workspace with neither `hint` nor `resources`: the smallest,
/// so no workspace runs BestEffort (first to be evicted, invisible to ResourceQuotas).
const DEFAULT_HINT: Hint = Hint::Latency;
/// Probe path when neither spec, annotation nor image says otherwise.
pub const DEFAULT_PROBE_PATH: &str = "/";
/// code-server answers `/healthz` without a login, whereas `/` redirects to the login page.
const CODE_SERVER_PROBE_PATH: &str = "/healthz";
/// Longest probe path the CRD accepts in `spec.probes.path`.
const MAX_PROBE_PATH_LEN: usize = 1024;

/// Defaults `spec` in place and returns the resource profile now in effect (for
/// `status.profileApplied`), `None` when the user's own `resources` apply.
///
/// - `env`: entries with a blank name are dropped (order kept); `PORT` is appended with the
///   first port when missing.
/// - `ports`: one port `http` on 8080 when empty.
/// - `probes.profile` and `probes.path`: from the spec, else the annotations
///   `guildnet.io/probe-profile` / `guildnet.io/probe-path`, else the image's default
///   (code-server: `slow` and `/healthz`), else `default` and `/`. The annotations are read
///   only while the field is unset; once written here the spec value wins, so change
///   `spec.probes` to change an existing workspace's probes. `probes.port` is left unset
///   when not given so it keeps following the first port.
/// - `resources`: the profile of `hint` (`latency` without a hint) when no requests or
///   limits are given. Resources that equal a profile are taken as defaulted by this
///   function, so changing `hint` later switches to the new profile:
///
///   | hint      | requests cpu / memory | limits cpu / memory | for                                   |
///   |-----------|-----------------------|---------------------|---------------------------------------|
///   | `latency` | 250m / 512Mi          | 1 / 1Gi             | shells, light editing; fits anywhere  |
///   | `compute` | 2 / 2Gi               | 4 / 4Gi             | builds, tests, notebooks that compute |
///   | `memory`  | 500m / 4Gi            | 2 / 8Gi             | data work, large language servers     |
///
///   Requests are what the scheduler reserves and quotas count; limits leave room for
///   bursts without letting one workspace starve its node.
///
/// Applying it twice gives the same spec and result as applying it once. Fails only for an
/// annotation value that cannot be used; the error names the annotation and the fix.
pub fn apply_defaults(
    spec: &mut WorkspaceSpec,
    annotations: &BTreeMap<String, String>,
) -> Result<Option<Hint>, SpecError> {
    remove_blank_env(&mut spec.env);
    default_ports(&mut spec.ports);
    inject_port_env(spec);
    default_probes(spec, annotations)?;
    Ok(default_resources(spec))
}

/// The port the proxy opens and probes default to.
pub fn first_port(spec: &WorkspaceSpec) -> i32 {
    spec.ports
        .first()
        .map_or(DEFAULT_PORT, |port| port.container_port)
}

/// Blank entries come from forms and templates that leave an empty row; Kubernetes would
/// refuse them, so they are dropped rather than failing the whole workspace.
fn remove_blank_env(env: &mut Vec<WorkspaceEnvVar>) {
    env.retain(|var| !var.name.trim().is_empty());
}

fn default_ports(ports: &mut Vec<WorkspacePort>) {
    if ports.is_empty() {
        ports.push(WorkspacePort {
            name: Some(DEFAULT_PORT_NAME.to_owned()),
            container_port: DEFAULT_PORT,
        });
    }
}

fn inject_port_env(spec: &mut WorkspaceSpec) {
    if !spec.env.iter().any(|var| var.name == PORT_ENV) {
        spec.env.push(WorkspaceEnvVar {
            name: PORT_ENV.to_owned(),
            value: Some(first_port(spec).to_string()),
            value_from: None,
        });
    }
}

fn default_probes(
    spec: &mut WorkspaceSpec,
    annotations: &BTreeMap<String, String>,
) -> Result<(), SpecError> {
    let code_server = is_code_server(&spec.image);
    let probes = spec.probes.get_or_insert_with(Probes::default);
    if probes.profile.is_none() {
        let image_default = if code_server {
            ProbeProfile::Slow
        } else {
            ProbeProfile::Default
        };
        probes.profile = Some(annotated_profile(annotations)?.unwrap_or(image_default));
    }
    if probes.path.is_none() {
        let image_default = if code_server {
            CODE_SERVER_PROBE_PATH
        } else {
            DEFAULT_PROBE_PATH
        };
        probes.path = Some(
            annotated_path(annotations)?
                .unwrap_or(image_default)
                .to_owned(),
        );
    }
    Ok(())
}

fn annotated_profile(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<ProbeProfile>, SpecError> {
    let Some(value) = annotations.get(labels::PROBE_PROFILE) else {
        return Ok(None);
    };
    match value.as_str() {
        "slow" => Ok(Some(ProbeProfile::Slow)),
        "default" => Ok(Some(ProbeProfile::Default)),
        "fast" => Ok(Some(ProbeProfile::Fast)),
        _ => Err(SpecError::InvalidAnnotation {
            key: labels::PROBE_PROFILE,
            value: value.clone(),
            expected: "use slow, default or fast",
        }),
    }
}

fn annotated_path(annotations: &BTreeMap<String, String>) -> Result<Option<&str>, SpecError> {
    let Some(value) = annotations.get(labels::PROBE_PATH) else {
        return Ok(None);
    };
    if value.starts_with('/') && value.len() <= MAX_PROBE_PATH_LEN {
        Ok(Some(value))
    } else {
        Err(SpecError::InvalidAnnotation {
            key: labels::PROBE_PATH,
            value: value.clone(),
            expected: "use an HTTP path starting with / of at most 1024 characters, e.g. /healthz",
        })
    }
}

fn default_resources(spec: &mut WorkspaceSpec) -> Option<Hint> {
    let hint = spec.hint.unwrap_or(DEFAULT_HINT);
    let resources = spec
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    if !(has_no_requests_or_limits(resources) || is_a_profile(resources)) {
        return None;
    }
    let profile = resource_profile(hint);
    resources.requests = profile.requests;
    resources.limits = profile.limits;
    Some(hint)
}

fn has_no_requests_or_limits(resources: &ResourceRequirements) -> bool {
    resources.requests.as_ref().is_none_or(BTreeMap::is_empty)
        && resources.limits.as_ref().is_none_or(BTreeMap::is_empty)
}

fn is_a_profile(resources: &ResourceRequirements) -> bool {
    [Hint::Latency, Hint::Compute, Hint::Memory]
        .into_iter()
        .map(resource_profile)
        .any(|profile| profile.requests == resources.requests && profile.limits == resources.limits)
}

/// The requests and limits of `hint`, as tabled on [`apply_defaults`].
fn resource_profile(hint: Hint) -> ResourceRequirements {
    let (cpu_request, memory_request, cpu_limit, memory_limit) = match hint {
        Hint::Latency => ("250m", "512Mi", "1", "1Gi"),
        Hint::Compute => ("2", "2Gi", "4", "4Gi"),
        Hint::Memory => ("500m", "4Gi", "2", "8Gi"),
    };
    let quantities = |cpu: &str, memory: &str| {
        Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ]))
    };
    ResourceRequirements {
        requests: quantities(cpu_request, memory_request),
        limits: quantities(cpu_limit, memory_limit),
        claims: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str) -> WorkspaceSpec {
        WorkspaceSpec {
            image: image.to_owned(),
            ..WorkspaceSpec::default()
        }
    }

    fn env(name: &str, value: &str) -> WorkspaceEnvVar {
        WorkspaceEnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        }
    }

    fn port(name: Option<&str>, container_port: i32) -> WorkspacePort {
        WorkspacePort {
            name: name.map(str::to_owned),
            container_port,
        }
    }

    fn defaulted(mut spec: WorkspaceSpec, annotations: &[(&str, &str)]) -> WorkspaceSpec {
        let annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        apply_defaults(&mut spec, &annotations).unwrap();
        spec
    }

    fn quantity(resources: &Option<BTreeMap<String, Quantity>>, key: &str) -> String {
        resources.as_ref().unwrap()[key].0.clone()
    }

    #[test]
    fn ports_default_to_http_8080_and_given_ports_are_kept() {
        let cases = [
            (vec![], vec![port(Some("http"), 8080)]),
            (vec![port(None, 3000)], vec![port(None, 3000)]),
            (
                vec![port(Some("web"), 80), port(Some("debug"), 9229)],
                vec![port(Some("web"), 80), port(Some("debug"), 9229)],
            ),
        ];
        for (given, expected) in cases {
            let spec = defaulted(
                WorkspaceSpec {
                    ports: given.clone(),
                    ..spec("nginx")
                },
                &[],
            );
            assert_eq!(spec.ports, expected, "ports {given:?}");
        }
    }

    #[test]
    fn env_loses_blank_names_keeps_order_and_gains_port() {
        let cases = [
            (
                "blank names dropped, order kept, PORT appended",
                vec![env("B", "1"), env("", "x"), env("  ", "y"), env("A", "2")],
                vec![],
                vec![env("B", "1"), env("A", "2"), env("PORT", "8080")],
            ),
            (
                "PORT is the first port",
                vec![],
                vec![port(None, 3000), port(None, 4000)],
                vec![env("PORT", "3000")],
            ),
            (
                "a user's PORT is kept",
                vec![env("PORT", "9999"), env("TZ", "Europe/Berlin")],
                vec![],
                vec![env("PORT", "9999"), env("TZ", "Europe/Berlin")],
            ),
        ];
        for (case, given_env, ports, expected) in cases {
            let spec = defaulted(
                WorkspaceSpec {
                    env: given_env,
                    ports,
                    ..spec("nginx")
                },
                &[],
            );
            assert_eq!(spec.env, expected, "{case}");
        }
    }

    #[test]
    fn probes_follow_spec_then_annotations_then_image() {
        use ProbeProfile::{Default, Fast, Slow};
        let probes = |profile, path: Option<&str>| {
            Some(Probes {
                profile,
                path: path.map(str::to_owned),
                port: None,
            })
        };
        let cases = [
            ("plain image", "nginx", None, vec![], Default, "/"),
            (
                "code-server",
                "codercom/code-server:4.96.2",
                None,
                vec![],
                Slow,
                "/healthz",
            ),
            (
                "spec profile",
                "nginx",
                probes(Some(Fast), None),
                vec![],
                Fast,
                "/",
            ),
            (
                "annotation profile",
                "nginx",
                None,
                vec![(labels::PROBE_PROFILE, "slow")],
                Slow,
                "/",
            ),
            (
                "annotation path",
                "nginx",
                None,
                vec![(labels::PROBE_PATH, "/ready")],
                Default,
                "/ready",
            ),
            (
                "spec wins over annotations",
                "nginx",
                probes(Some(Fast), Some("/live")),
                vec![
                    (labels::PROBE_PROFILE, "slow"),
                    (labels::PROBE_PATH, "/ready"),
                ],
                Fast,
                "/live",
            ),
            (
                "annotation wins over the image default",
                "codercom/code-server",
                None,
                vec![(labels::PROBE_PROFILE, "fast")],
                Fast,
                "/healthz",
            ),
            (
                "spec path with image default profile",
                "codercom/code-server",
                probes(None, Some("/")),
                vec![],
                Slow,
                "/",
            ),
        ];
        for (case, image, given, annotations, profile, path) in cases {
            let spec = defaulted(
                WorkspaceSpec {
                    probes: given,
                    ..spec(image)
                },
                &annotations,
            );
            let probes = spec.probes.unwrap();
            assert_eq!(probes.profile, Some(profile), "{case}");
            assert_eq!(probes.path.as_deref(), Some(path), "{case}");
            assert_eq!(probes.port, None, "{case}: port keeps following spec.ports");
        }
    }

    #[test]
    fn unusable_probe_annotations_are_refused_only_when_consulted() {
        let cases = [
            (labels::PROBE_PROFILE, "turbo", None, true),
            (labels::PROBE_PROFILE, "Slow", None, true),
            (labels::PROBE_PATH, "healthz", None, true),
            (labels::PROBE_PATH, "", None, true),
            (
                labels::PROBE_PROFILE,
                "turbo",
                Some(ProbeProfile::Fast),
                false,
            ),
        ];
        for (key, value, spec_profile, fails) in cases {
            let mut spec = WorkspaceSpec {
                probes: Some(Probes {
                    profile: spec_profile,
                    ..Probes::default()
                }),
                ..spec("nginx")
            };
            let annotations = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            let result = apply_defaults(&mut spec, &annotations);
            assert_eq!(result.is_err(), fails, "{key}={value}");
            if let Err(error) = result {
                assert!(error.to_string().contains(key), "{error} names {key}");
            }
        }
    }

    #[test]
    fn hints_pick_resources_and_report_the_profile() {
        let cases = [
            (None, Some(Hint::Latency), ("250m", "512Mi"), ("1", "1Gi")),
            (
                Some(Hint::Latency),
                Some(Hint::Latency),
                ("250m", "512Mi"),
                ("1", "1Gi"),
            ),
            (
                Some(Hint::Compute),
                Some(Hint::Compute),
                ("2", "2Gi"),
                ("4", "4Gi"),
            ),
            (
                Some(Hint::Memory),
                Some(Hint::Memory),
                ("500m", "4Gi"),
                ("2", "8Gi"),
            ),
        ];
        for (hint, reported, (cpu_req, mem_req), (cpu_lim, mem_lim)) in cases {
            let mut spec = WorkspaceSpec {
                hint,
                ..spec("nginx")
            };
            let applied = apply_defaults(&mut spec, &BTreeMap::new()).unwrap();
            assert_eq!(applied, reported, "hint {hint:?}");
            let resources = spec.resources.unwrap();
            assert_eq!(
                quantity(&resources.requests, "cpu"),
                cpu_req,
                "hint {hint:?}"
            );
            assert_eq!(
                quantity(&resources.requests, "memory"),
                mem_req,
                "hint {hint:?}"
            );
            assert_eq!(quantity(&resources.limits, "cpu"), cpu_lim, "hint {hint:?}");
            assert_eq!(
                quantity(&resources.limits, "memory"),
                mem_lim,
                "hint {hint:?}"
            );
        }
    }

    #[test]
    fn user_resources_win_over_hints() {
        let own = ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity("3".into()))])),
            ..ResourceRequirements::default()
        };
        let mut spec = WorkspaceSpec {
            hint: Some(Hint::Memory),
            resources: Some(own.clone()),
            ..spec("nginx")
        };
        assert_eq!(apply_defaults(&mut spec, &BTreeMap::new()).unwrap(), None);
        assert_eq!(spec.resources, Some(own));
    }

    #[test]
    fn changing_the_hint_switches_a_defaulted_profile() {
        let mut spec = defaulted(
            WorkspaceSpec {
                hint: Some(Hint::Compute),
                ..spec("nginx")
            },
            &[],
        );
        spec.hint = Some(Hint::Memory);
        let applied = apply_defaults(&mut spec, &BTreeMap::new()).unwrap();
        assert_eq!(applied, Some(Hint::Memory));
        assert_eq!(spec.resources, Some(resource_profile(Hint::Memory)));
    }

    #[test]
    fn different_hints_request_different_resources() {
        let profiles = [Hint::Latency, Hint::Compute, Hint::Memory].map(resource_profile);
        for (i, a) in profiles.iter().enumerate() {
            for b in &profiles[i + 1..] {
                assert_ne!(a.requests, b.requests);
            }
        }
    }

    #[test]
    fn defaulting_twice_equals_defaulting_once() {
        let specs = [
            spec("nginx"),
            spec("codercom/code-server:4.96.2"),
            WorkspaceSpec {
                env: vec![env("", "x"), env("TZ", "UTC")],
                ports: vec![port(None, 3000)],
                hint: Some(Hint::Compute),
                ..spec("quay.io/jupyter/base-notebook")
            },
            WorkspaceSpec {
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([(
                        "memory".to_owned(),
                        Quantity("3Gi".into()),
                    )])),
                    ..ResourceRequirements::default()
                }),
                ..spec("nginx")
            },
        ];
        let annotations = BTreeMap::from([
            (labels::PROBE_PROFILE.to_owned(), "fast".to_owned()),
            (labels::PROBE_PATH.to_owned(), "/ready".to_owned()),
        ]);
        for original in specs {
            let mut once = original.clone();
            let first = apply_defaults(&mut once, &annotations).unwrap();
            let mut twice = once.clone();
            let second = apply_defaults(&mut twice, &annotations).unwrap();
            assert_eq!(twice, once, "image {}", original.image);
            assert_eq!(second, first, "image {}", original.image);
        }
    }
}
