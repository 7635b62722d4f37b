//! Packaging on the real API server of the e2e stack: the Helm chart (lint, schema, server-side
//! apply, `helm install` under Pod Security `restricted`, least-privilege RBAC, hardened pods),
//! the kustomize base and overlays, and the docs' example manifests (kstatus: tests/kstatus.rs).
//!
//! The stack runs its own webhook, registered as `guildnet-webhook`, and the Capabilities
//! `starter`. Nothing here may replace them: releases get unique names, and the objects with
//! cluster-wide effect (webhook configurations, roles aggregated into edit/view) are only
//! checked with a server-side dry run, renamed where they would collide.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use guildnet_e2e::{Output, User, client, create_namespace, eventually, kubectl, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use serde::Deserialize;
use serde_yaml::Value;

const CHART: &str = "charts/guildnet";
const TIMEOUT: Duration = Duration::from_secs(90);
const RESTRICTED: (&str, &str) = ("pod-security.kubernetes.io/enforce", "restricted");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in the repository")
        .to_path_buf()
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("GUILDNET_BIN").expect("GUILDNET_BIN is set: run scripts/e2e.sh");
    PathBuf::from(dir).join(name)
}

/// Runs `program` in the repository root, feeding it `stdin`.
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(program);
    command
        .current_dir(root())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Helm keeps no state of ours outside the build tree.
    let helm_home = root().join("target/helm-home");
    for (var, sub) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        command.env(var, helm_home.join(sub));
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn helm(args: &[&str]) -> Output {
    run(&bin("helm"), args, None)
}

/// kubectl as `user` with `input` on stdin (`-f -`).
fn kubectl_in(user: User, args: &[&str], input: &str) -> Output {
    let mut all = vec!["--context", user.context()];
    all.extend_from_slice(args);
    run(&bin("kubectl"), &all, Some(input))
}

#[track_caller]
fn ok(out: Output, what: &str) -> String {
    assert!(
        out.success,
        "{what} failed:\n{}\n{}",
        out.stderr, out.stdout
    );
    out.stdout
}

/// The YAML documents of a multi-document stream, without empty ones.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn to_yaml(docs: &[&Value]) -> String {
    docs.iter()
        .map(|doc| format!("---\n{}", serde_yaml::to_string(doc).unwrap()))
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// `helm template` of the chart as release `release` in `namespace`, CRDs included.
fn render(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        release,
        CHART,
        "--namespace",
        namespace,
        "--include-crds",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    documents(&ok(helm(&args), "helm template"))
}

/// Values that keep a release from touching what the shared stack owns.
fn isolated(name: &str) -> Vec<String> {
    vec![
        format!("fullnameOverride={name}"),
        format!("starterCapabilities.name={name}"),
    ]
}

fn is_webhook_configuration(doc: &Value) -> bool {
    matches!(
        kind(doc),
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"
    )
}

fn aggregates_into_default_roles(doc: &Value) -> bool {
    kind(doc) == "ClusterRole"
        && doc["metadata"]["labels"]
            .as_mapping()
            .is_some_and(|labels| {
                labels.keys().any(|k| {
                    k.as_str()
                        .is_some_and(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
                })
            })
}

/// Server-side dry run of the objects with cluster-wide effect: webhook configurations
/// (renamed, so they never meet the stack's own `guildnet-webhook`) and CRDs (the stack's).
fn dry_run_cluster_wide(docs: &[&Value], rename_to: &str) {
    let renamed: Vec<Value> = docs
        .iter()
        .map(|doc| {
            let mut doc = (*doc).clone();
            if is_webhook_configuration(&doc) {
                doc["metadata"]["name"] = Value::from(rename_to);
            }
            doc
        })
        .collect();
    let refs: Vec<&Value> = renamed.iter().collect();
    ok(
        kubectl_in(
            User::Admin,
            &["apply", "--server-side", "--dry-run=server", "-f", "-"],
            &to_yaml(&refs),
        ),
        "server-side dry run of the cluster-wide objects",
    );
}

async fn wait_for_available(admin: &kube::Client, namespace: &str, expected: usize) {
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), namespace);
    eventually("every Deployment available", TIMEOUT, || {
        let deployments = deployments.clone();
        async move {
            let list = deployments.list(&ListParams::default()).await.ok()?;
            let available = list.items.iter().all(|d| {
                let want = d.spec.replicas.unwrap_or(1);
                d.status.as_ref().and_then(|s| s.available_replicas) == Some(want)
            });
            (list.items.len() == expected && available).then_some(())
        }
    })
    .await;
}

/// Every pod of `namespace` was admitted and runs: as many as the Deployments ask for.
async fn assert_pods_running(admin: &kube::Client, namespace: &str, expected: usize) {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    let list = pods.list(&ListParams::default()).await.unwrap().items;
    let running = list
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    assert_eq!(
        (list.len(), running),
        (expected, expected),
        "every pod admitted under Pod Security restricted and Running"
    );
}

async fn delete_namespace(admin: &kube::Client, namespace: &str) {
    let _ = Api::<Namespace>::all(admin.clone())
        .delete(namespace, &DeleteParams::default())
        .await;
}

// ---- the chart on its own -------------------------------------------------------------------

#[test]
fn chart_lints_clean_in_every_mode() {
    let everything = [
        "webhook.certificates.mode=cert-manager",
        "proxy.ingress.enabled=true",
        "proxy.ingress.host=guildnet.example.com",
        "proxy.ingress.tls.enabled=true",
        "proxy.tailscale.enabled=true",
        "proxy.tailscale.tags={tag:k8s}",
        "proxy.tlsSecretName=guildnet-proxy-tls",
        "proxy.auth.mode=header",
        "proxy.auth.trustedProxies={10.0.0.0/8}",
        "proxy.baseDomain=ws.example.com",
        "serviceMonitor.enabled=true",
        "webhook.url=https://127.0.0.1:9443",
    ];
    for sets in [&[][..], &everything[..]] {
        let mut args = vec!["lint", "--strict", CHART];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = ok(helm(&args), "helm lint");
        assert!(out.contains("0 chart(s) failed"), "{out}");
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "helm lint is clean with {sets:?}:\n{out}"
        );
    }
}

#[test]
fn chart_copies_of_the_crds_and_starter_capabilities_are_current() {
    let root = root();
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let (source, copy) = (root.join("crds"), root.join(CHART).join("crds"));
    assert_eq!(names(&source), names(&copy), "run `make chart-crds`");
    for name in names(&source) {
        assert_eq!(
            std::fs::read_to_string(source.join(&name)).unwrap(),
            std::fs::read_to_string(copy.join(&name)).unwrap(),
            "{CHART}/crds/{name} is stale: run `make chart-crds`"
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.join("webhook/config/starter-capabilities.yaml")).unwrap(),
        std::fs::read_to_string(root.join(CHART).join("files/starter-capabilities.yaml")).unwrap(),
        "the chart's starter Capabilities are stale: run `make chart-crds`"
    );
}

#[test]
fn kustomize_base_is_the_charts_defaults() {
    let rendered = ok(
        run(
            &root().join("scripts/kustomize-base.sh"),
            &["--stdout"],
            None,
        ),
        "scripts/kustomize-base.sh",
    );
    let committed = std::fs::read_to_string(root().join("kustomize/base/guildnet.yaml")).unwrap();
    assert!(
        rendered == committed,
        "kustomize/base/guildnet.yaml is stale: run `make kustomize-base`"
    );
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let cases = [
        ("operator.replicas=0", "/operator/replicas"),
        (
            "operator.replica=2",
            "additional properties 'replica' not allowed",
        ),
        (
            "webhook.certificates.mode=vault",
            "/webhook/certificates/mode",
        ),
        ("webhook.url=http://127.0.0.1:9443", "/webhook/url"),
        ("operator.reapInterval=soon", "/operator/reapInterval"),
        (
            "operator.leaderElection.enabled=false",
            "/operator/replicas",
        ),
        ("proxy.ingress.enabled=true", "/proxy/ingress/host"),
        ("proxy.tailscale.tags={k8s}", "/proxy/tailscale/tags/0"),
        ("image.digest=latest", "/image/digest"),
        ("webhook.trustedUsers={}", "/webhook/trustedUsers"),
        (
            "ownerAssignment.subjects[0].kind=ServiceAccount",
            "/ownerAssignment/subjects/0",
        ),
    ];
    for (set, field) in cases {
        let out = helm(&["template", "bad", CHART, "--set", set]);
        assert!(!out.success, "{set} is refused");
        assert!(
            out.stderr
                .contains("don't meet the specifications of the schema")
                && out.stderr.contains(field),
            "{set}: the schema names {field}:\n{}",
            out.stderr
        );
    }
}

/// A rule as `(apiGroups, resources, resourceNames, verbs)`.
type Rule = (
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
);

/// A rendered rule as `(apiGroups, resources, resourceNames, verbs)`.
type RenderedRule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn rules_of(doc: &Value) -> Vec<RenderedRule> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| s.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    doc["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["resourceNames"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

fn assert_rules(docs: &[Value], kind_: &str, name_: &str, expected: &[Rule]) {
    let role = docs
        .iter()
        .find(|d| kind(d) == kind_ && name(d) == name_)
        .unwrap_or_else(|| panic!("{kind_} {name_} is rendered"));
    let expected: Vec<_> = expected
        .iter()
        .map(|(g, r, n, v)| {
            let own = |x: &Vec<&str>| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            (own(g), own(r), own(n), own(v))
        })
        .collect();
    assert_eq!(rules_of(role), expected, "the rules of {kind_} {name_}");
}

/// What each component calls on the API (see the Api uses in operator/src/workspace and
/// operator/src/runtime, webhook/src/{caches,registration,cert_source}.rs, and issue 6 for the
/// proxy). A change here is a change of the chart's templates/rbac.yaml, and vice versa.
#[rustfmt::skip]
fn operator_rules() -> Vec<Rule> {
    vec![
        (vec!["guildnet.io"], vec!["workspaces"], vec![], vec!["list", "watch", "patch", "delete"]),
        (vec!["guildnet.io"], vec!["workspaces/status"], vec![], vec!["patch"]),
        (vec!["guildnet.io"], vec!["quotas"], vec![], vec!["list", "watch"]),
        (vec!["guildnet.io"], vec!["quotas/status"], vec![], vec!["patch"]),
        (vec!["guildnet.io"], vec!["clusterregistrations"], vec![], vec!["list", "watch"]),
        (vec!["guildnet.io"], vec!["clusterregistrations/status"], vec![], vec!["patch"]),
        (vec!["guildnet.io"], vec!["guilddatabases"], vec![], vec!["list", "watch"]),
        (vec!["guildnet.io"], vec!["guilddatabases/status"], vec![], vec!["patch"]),
        (vec!["apps"], vec!["statefulsets"], vec![], vec!["get", "list", "watch", "create", "patch"]),
        (vec!["policy"], vec!["poddisruptionbudgets"], vec![], vec!["get", "list", "watch", "create", "patch", "delete"]),
        (vec![""], vec!["namespaces"], vec!["kube-system"], vec!["get"]),
        (vec![""], vec!["pods"], vec![], vec!["list", "watch"]),
        (vec!["apps"], vec!["deployments"], vec![], vec!["get", "list", "watch", "create", "patch", "delete"]),
        (vec![""], vec!["services"], vec![], vec!["get", "list", "watch", "create", "patch", "delete"]),
        (vec![""], vec!["persistentvolumeclaims"], vec![], vec!["get", "list", "watch", "create", "patch", "delete"]),
        (vec!["networking.k8s.io"], vec!["ingresses"], vec![], vec!["get", "list", "watch", "create", "patch", "delete"]),
        (vec!["networking.k8s.io"], vec!["networkpolicies"], vec![], vec!["get", "list", "watch", "create", "patch", "delete"]),
        (vec!["discovery.k8s.io"], vec!["endpointslices"], vec![], vec!["get", "list", "watch", "create", "patch"]),
        (vec![""], vec!["secrets"], vec![], vec!["get", "create", "delete"]),
        (vec!["snapshot.storage.k8s.io"], vec!["volumesnapshots"], vec![], vec!["get", "create", "patch"]),
        (vec!["events.k8s.io"], vec!["events"], vec![], vec!["create", "patch"]),
    ]
}

#[rustfmt::skip]
fn proxy_rules() -> Vec<Rule> {
    vec![
        (vec!["guildnet.io"], vec!["workspaces"], vec![], vec!["get", "list", "watch"]),
        (vec!["guildnet.io"], vec!["workspaces/status"], vec![], vec!["patch"]),
        (vec!["discovery.k8s.io"], vec!["endpointslices"], vec![], vec!["list", "watch"]),
        (vec!["authentication.k8s.io"], vec!["tokenreviews"], vec![], vec!["create"]),
        (vec!["authorization.k8s.io"], vec!["subjectaccessreviews"], vec![], vec!["create"]),
        (vec![""], vec!["events"], vec![], vec!["get", "list", "watch"]),
        (vec![""], vec!["pods"], vec![], vec!["list"]),
        (vec![""], vec!["pods/log"], vec![], vec!["get"]),
        (vec![""], vec!["persistentvolumeclaims"], vec![], vec!["list", "watch", "delete"]),
        (vec!["guildnet.io"], vec!["quotas"], vec![], vec!["list", "watch"]),
        (vec!["guildnet.io"], vec!["guilddatabases"], vec![], vec!["list", "watch"]),
        (vec![""], vec!["users", "groups"], vec![], vec!["impersonate"]),
    ]
}

#[test]
fn rbac_is_exactly_what_each_component_needs() {
    let docs = render("guildnet", "guildnet-system", &[]);
    assert_rules(&docs, "ClusterRole", "guildnet-operator", &operator_rules());
    assert_rules(
        &docs,
        "Role",
        "guildnet-operator",
        &[
            (
                vec!["coordination.k8s.io"],
                vec!["leases"],
                vec![],
                vec!["create"],
            ),
            (
                vec!["coordination.k8s.io"],
                vec!["leases"],
                vec!["guildnet-operator"],
                vec!["get", "list", "watch", "patch"],
            ),
            (
                vec![""],
                vec!["secrets"],
                vec!["guildnet-cluster-credentials"],
                vec!["get", "patch"],
            ),
            // The GuildDatabases' admin passwords for the proxy: this Secret alone.
            (
                vec![""],
                vec!["secrets"],
                vec!["guildnet-database-credentials"],
                vec!["get", "patch"],
            ),
        ],
    );
    let caches: Rule = (
        vec!["guildnet.io"],
        vec![
            "capabilities",
            "quotas",
            "workspaces",
            "clusterregistrations",
            "guilddatabases",
        ],
        vec![],
        vec!["list", "watch"],
    );
    // Retained claims count against their owner's storage Quota.
    let claims: Rule = (
        vec![""],
        vec!["persistentvolumeclaims"],
        vec![],
        vec!["list", "watch"],
    );
    // May the requester read the Secrets and ConfigMaps a workspace names?
    let access_reviews: Rule = (
        vec!["authorization.k8s.io"],
        vec!["subjectaccessreviews"],
        vec![],
        vec!["create"],
    );
    assert_rules(
        &docs,
        "ClusterRole",
        "guildnet-webhook",
        &[
            caches.clone(),
            claims.clone(),
            access_reviews.clone(),
            (
                vec!["admissionregistration.k8s.io"],
                vec![
                    "mutatingwebhookconfigurations",
                    "validatingwebhookconfigurations",
                ],
                vec!["guildnet-webhook"],
                vec!["create", "patch"],
            ),
        ],
    );
    assert_rules(
        &docs,
        "Role",
        "guildnet-webhook",
        &[
            (vec![""], vec!["secrets"], vec![], vec!["create"]),
            (
                vec![""],
                vec!["secrets"],
                vec!["guildnet-webhook-tls"],
                vec!["get", "update"],
            ),
        ],
    );
    assert_rules(&docs, "ClusterRole", "guildnet-proxy", &proxy_rules());
    assert_rules(
        &docs,
        "Role",
        "guildnet-proxy",
        &[
            (vec![""], vec!["secrets"], vec![], vec!["create"]),
            (
                vec![""],
                vec!["secrets"],
                vec!["guildnet-proxy-session"],
                vec!["get", "update"],
            ),
            // The kubeconfigs of APIServerProxy registrations: this Secret alone.
            (
                vec![""],
                vec!["secrets"],
                vec!["guildnet-cluster-credentials"],
                vec!["get", "list", "watch"],
            ),
            // The GuildDatabases' admin passwords, for the database API: this Secret alone.
            (
                vec![""],
                vec!["secrets"],
                vec!["guildnet-database-credentials"],
                vec!["get", "list", "watch"],
            ),
        ],
    );

    // With cert-manager the webhook registers nothing and stores no certificate.
    let cert_manager = render(
        "guildnet",
        "guildnet-system",
        &["webhook.certificates.mode=cert-manager"],
    );
    assert_rules(
        &cert_manager,
        "ClusterRole",
        "guildnet-webhook",
        &[caches, claims, access_reviews],
    );
    assert!(
        !cert_manager
            .iter()
            .any(|d| kind(d) == "Role" && name(d) == "guildnet-webhook")
    );

    // No wildcards anywhere, and each role bound to its own ServiceAccount only.
    for doc in docs.iter().filter(|d| kind(d).ends_with("Role")) {
        for (groups, resources, names, verbs) in rules_of(doc) {
            for item in groups.iter().chain(&resources).chain(&names).chain(&verbs) {
                assert!(
                    !item.contains('*'),
                    "{} {} uses a wildcard",
                    kind(doc),
                    name(doc)
                );
            }
        }
    }
    let role_bindings = ["RoleBinding", "ClusterRoleBinding"];
    for doc in docs.iter().filter(|d| role_bindings.contains(&kind(d))) {
        let subjects = doc["subjects"].as_sequence().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
        assert_eq!(subjects[0]["name"].as_str(), Some(name(doc)));
        assert_eq!(doc["roleRef"]["name"].as_str(), Some(name(doc)));
    }
}

/// No pod runs as root or with more than Pod Security `restricted` allows.
fn assert_hardened(docs: &[Value], source: &str) {
    let deployments: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Deployment").collect();
    assert_eq!(deployments.len(), 3, "{source}: three Deployments");
    for d in deployments {
        let what = format!("{source}: Deployment {}", name(d));
        let pod = &d["spec"]["template"]["spec"];
        let context = &pod["securityContext"];
        assert_eq!(context["runAsNonRoot"].as_bool(), Some(true), "{what}");
        assert_ne!(context["runAsUser"].as_u64(), Some(0), "{what}");
        assert_eq!(
            context["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{what}"
        );
        for field in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(pod[field].is_null(), "{what}: {field}");
        }
        for c in pod["containers"].as_sequence().unwrap() {
            let sc = &c["securityContext"];
            assert_ne!(sc["runAsUser"].as_u64(), Some(0), "{what}");
            assert_ne!(sc["runAsNonRoot"].as_bool(), Some(false), "{what}");
            assert_eq!(
                sc["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{what}"
            );
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
            assert!(sc["privileged"].is_null(), "{what}");
            assert_eq!(
                sc["capabilities"]["drop"].as_sequence().map(|d| d.len()),
                Some(1),
                "{what}"
            );
            assert_eq!(
                sc["capabilities"]["drop"][0].as_str(),
                Some("ALL"),
                "{what}"
            );
            assert!(sc["capabilities"]["add"].is_null(), "{what}");
        }
    }
}

fn deployment<'a>(docs: &'a [Value], name_: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == "Deployment" && name(d) == name_)
        .unwrap_or_else(|| panic!("Deployment {name_}"))
}

fn args_of(deployment: &Value) -> Vec<&str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn chart_defaults_are_highly_available_and_hardened() {
    let docs = render("guildnet", "guildnet-system", &[]);
    assert_hardened(&docs, "the chart");
    for component in ["operator", "webhook", "proxy"] {
        let d = deployment(&docs, &format!("guildnet-{component}"));
        assert_eq!(d["spec"]["replicas"].as_u64(), Some(2), "{component}");
        assert!(
            docs.iter()
                .any(|p| kind(p) == "PodDisruptionBudget"
                    && name(p) == format!("guildnet-{component}")),
            "{component} has a PodDisruptionBudget"
        );
        assert!(
            docs.iter()
                .any(|p| kind(p) == "NetworkPolicy" && name(p) == format!("guildnet-{component}")),
            "{component} has a NetworkPolicy"
        );
    }
    let operator = deployment(&docs, "guildnet-operator");
    assert!(args_of(operator).contains(&"--leader-elect=true"));
    let env: Vec<&str> = operator["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"));
    let webhook = args_of(deployment(&docs, "guildnet-webhook"));
    for arg in [
        "--operator-username=system:serviceaccount:guildnet-system:guildnet-operator",
        "--proxy-username=system:serviceaccount:guildnet-system:guildnet-proxy",
        "--trusted-user=system:serviceaccount:kube-system:namespace-controller",
        "--trusted-user=system:serviceaccount:kube-system:generic-garbage-collector",
        "--service-name=guildnet-webhook",
    ] {
        assert!(webhook.contains(&arg), "webhook has {arg}: {webhook:?}");
    }
    // The starter Capabilities are webhook/config/starter-capabilities.yaml.
    let starter = docs.iter().find(|d| kind(d) == "Capabilities").unwrap();
    let source: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("webhook/config/starter-capabilities.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(name(starter), "starter");
    assert_eq!(starter["spec"], source["spec"]);
    // Members of guildnet:admins administer workspaces; nobody assigns owners by default.
    let admins = docs
        .iter()
        .find(|d| kind(d) == "Capabilities" && name(d) == "guildnet-admins")
        .expect("the admin Capabilities");
    assert_eq!(admins["spec"]["admin"].as_bool(), Some(true));
    assert_eq!(
        admins["spec"]["subjects"][0]["name"].as_str(),
        Some("guildnet:admins")
    );
    assert!(
        !docs.iter().any(|d| name(d) == "guildnet-owner-assigners"),
        "owner assignment is opt-in"
    );
}

// ---- on the API server ------------------------------------------------------------------------

/// `kubectl auth can-i` questions about the ServiceAccounts of a release whose fullname is
/// `ns`, and the expected answers.
#[rustfmt::skip]
fn access_checks(ns: &str) -> Vec<(&'static str, Vec<String>, bool)> {
    let lease = format!("leases/{ns}-operator");
    let secret = format!("secrets/{ns}-webhook-tls");
    let checks: Vec<(&str, Vec<&str>, bool)> = vec![
        ("operator", vec!["create", "leases", "-n", ns], true),
        ("operator", vec!["patch", &lease, "-n", ns], true),
        ("operator", vec!["patch", "leases/another", "-n", ns], false),
        ("operator", vec!["patch", &lease, "-n", "default"], false),
        ("operator", vec!["patch", "workspaces.guildnet.io", "--subresource=status", "-A"], true),
        ("operator", vec!["create", "deployments.apps", "-n", "default"], true),
        // Deployments left behind by an orphaning delete are swept.
        ("operator", vec!["delete", "deployments.apps", "-n", "default"], true),
        ("operator", vec!["create", "networkpolicies.networking.k8s.io", "-n", "default"], true),
        ("operator", vec!["delete", "networkpolicies.networking.k8s.io", "-n", "default"], true),
        ("operator", vec!["update", "secrets", "-n", "default"], false),
        // Password Secrets of workspaces that are gone are swept, by name: never listed.
        ("operator", vec!["delete", "secrets", "-n", "default"], true),
        ("operator", vec!["list", "secrets", "-n", "default"], false),
        ("webhook", vec!["get", &secret, "-n", ns], true),
        ("webhook", vec!["get", "secrets/another", "-n", ns], false),
        ("webhook", vec!["patch", "mutatingwebhookconfigurations/guildnet-webhook"], true),
        ("webhook", vec!["patch", "mutatingwebhookconfigurations/another"], false),
        ("webhook", vec!["create", "workspaces.guildnet.io", "-n", "default"], false),
        ("webhook", vec!["create", "subjectaccessreviews.authorization.k8s.io"], true),
        ("proxy", vec!["create", "tokenreviews.authentication.k8s.io"], true),
        ("proxy", vec!["impersonate", "users"], true),
        ("proxy", vec!["get", "pods", "--subresource=log", "-n", "default"], true),
        ("proxy", vec!["get", "secrets", "-n", "default"], false),
    ];
    checks
        .into_iter()
        .map(|(c, args, allowed)| (c, args.into_iter().map(String::from).collect(), allowed))
        .collect()
}

#[tokio::test]
async fn chart_applies_server_side() {
    let admin = client(User::Admin).await;
    let ns = unique_name("pkg-apply");
    create_namespace(&admin, &ns, &[RESTRICTED]).await;
    let sets = isolated(&ns);
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let docs = render(&ns, &ns, &sets);
    let (cluster_wide, rest): (Vec<&Value>, Vec<&Value>) = docs.iter().partition(|d| {
        kind(d) == "CustomResourceDefinition"
            || is_webhook_configuration(d)
            || aggregates_into_default_roles(d)
    });
    dry_run_cluster_wide(&cluster_wide, &ns);
    let manifest = to_yaml(&rest);
    let applied = ok(
        kubectl_in(
            User::Admin,
            &["apply", "--server-side", "-f", "-"],
            &manifest,
        ),
        "kubectl apply --server-side of the chart",
    );
    assert!(applied.contains("serverside-applied"), "{applied}");
    // Applying again changes nothing and conflicts with nothing.
    ok(
        kubectl_in(
            User::Admin,
            &["apply", "--server-side", "-f", "-"],
            &manifest,
        ),
        "a second server-side apply",
    );
    wait_for_available(&admin, &ns, 3).await;
    assert_pods_running(&admin, &ns, 6).await;

    // The bindings grant each ServiceAccount what it needs, and not more.
    let checks = access_checks(&ns);
    for (component, args, allowed) in checks {
        let who = format!("system:serviceaccount:{ns}:{ns}-{component}");
        let mut can_i = vec!["auth", "can-i", "--as", &who];
        can_i.extend(args.iter().map(String::as_str));
        let answer = kubectl(User::Admin, &can_i).stdout;
        assert_eq!(
            answer.trim(),
            if allowed { "yes" } else { "no" },
            "{who} {args:?}"
        );
    }

    ok(
        kubectl_in(
            User::Admin,
            &["delete", "--wait=false", "--ignore-not-found", "-f", "-"],
            &manifest,
        ),
        "delete the applied chart",
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn helm_install_into_a_restricted_namespace() {
    let admin = client(User::Admin).await;
    let ns = unique_name("pkg-helm");
    create_namespace(&admin, &ns, &[RESTRICTED]).await;
    let mut args = vec![
        "install",
        &ns,
        CHART,
        "--namespace",
        &ns,
        "--kube-context",
        "admin",
        "--wait",
        "--timeout",
        "90s",
    ];
    let sets = [
        isolated(&ns),
        vec![
            // The stack's webhook owns the guildnet-webhook configurations.
            "webhook.installConfigurations=false".into(),
            "rbac.aggregateToDefaultRoles=false".into(),
        ],
    ]
    .concat();
    for set in &sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    let uninstall = || {
        helm(&[
            "uninstall",
            &ns,
            "--namespace",
            &ns,
            "--kube-context",
            "admin",
        ])
    };
    if !out.success {
        uninstall();
        delete_namespace(&admin, &ns).await;
        panic!("helm install failed:\n{}\n{}", out.stderr, out.stdout);
    }
    assert!(out.stdout.contains("STATUS: deployed"), "{}", out.stdout);
    assert_pods_running(&admin, &ns, 6).await;
    // The CRDs were there already (the stack's); Helm left them alone.
    let caps = kubectl(User::Admin, &["get", "capabilities", &ns, "-o", "name"]);
    assert!(
        caps.success,
        "the release's starter Capabilities: {}",
        caps.stderr
    );

    ok(uninstall(), "helm uninstall");
    let gone = kubectl(
        User::Admin,
        &[
            "get",
            "capabilities",
            &ns,
            "--ignore-not-found",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        gone.stdout.trim(),
        "",
        "uninstall removes the release's objects"
    );
    delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn helm_install_with_bad_values_creates_nothing() {
    let ns = unique_name("pkg-bad");
    let out = helm(&[
        "install",
        &ns,
        CHART,
        "--namespace",
        &ns,
        "--create-namespace",
        "--kube-context",
        "admin",
        "--set",
        "webhook.replicas=zero",
    ]);
    assert!(!out.success);
    assert!(
        out.stderr.contains("/webhook/replicas") && out.stderr.contains("want integer"),
        "{}",
        out.stderr
    );
    let namespace = kubectl(
        User::Admin,
        &["get", "namespace", &ns, "--ignore-not-found"],
    );
    assert_eq!(
        namespace.stdout.trim(),
        "",
        "refused before touching the cluster"
    );
}

#[tokio::test]
async fn chart_webhook_configurations_match_what_the_webhook_registers() {
    // The stack's webhook registered guildnet-webhook for guildnet-system (its default).
    let docs = render("guildnet", "guildnet-system", &[]);
    for kind_ in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let rendered = docs.iter().find(|d| kind(d) == kind_).unwrap();
        let live = ok(
            kubectl(
                User::Admin,
                &["get", kind_, "guildnet-webhook", "-o", "yaml"],
            ),
            "get the registered configuration",
        );
        let live: Value = serde_yaml::from_str(&live).unwrap();
        let (rendered, live) = (&rendered["webhooks"][0], &live["webhooks"][0]);
        for (key, value) in rendered.as_mapping().unwrap() {
            if key.as_str() == Some("clientConfig") {
                continue; // a Service in the chart, a URL on the stack
            }
            assert_eq!(
                &live[key.as_str().unwrap()],
                value,
                "{kind_} webhooks[0].{key:?}"
            );
        }
    }
}

/// Applies an overlay with a server-side dry run: it is the same GuildNet the stack runs,
/// under the same names.
fn dry_run_overlay(overlay: &str) -> Vec<Value> {
    let built = ok(
        kubectl(
            User::Admin,
            &[
                "kustomize",
                &format!("{}/kustomize/overlays/{overlay}", root().display()),
            ],
        ),
        "kubectl kustomize",
    );
    let docs = documents(&built);
    let (configurations, rest): (Vec<&Value>, Vec<&Value>) =
        docs.iter().partition(|d| is_webhook_configuration(d));
    dry_run_cluster_wide(&configurations, &unique_name(&format!("pkg-{overlay}")));
    let out = ok(
        kubectl_in(
            User::Admin,
            &["apply", "--server-side", "--dry-run=server", "-f", "-"],
            &to_yaml(&rest),
        ),
        &format!("server-side dry run of overlay {overlay}"),
    );
    assert!(out.contains("(server dry run)"), "{out}");
    assert_hardened(&docs, overlay);
    docs
}

fn replicas(docs: &[Value]) -> BTreeMap<String, u64> {
    docs.iter()
        .filter(|d| kind(d) == "Deployment")
        .map(|d| (name(d).to_owned(), d["spec"]["replicas"].as_u64().unwrap()))
        .collect()
}

#[test]
fn kustomize_dev_overlay_applies_server_side() {
    let docs = dry_run_overlay("dev");
    assert!(
        replicas(&docs).values().all(|r| *r == 1),
        "{:?}",
        replicas(&docs)
    );
    assert!(!docs.iter().any(|d| kind(d) == "PodDisruptionBudget"));
    // The overlay restates the webhook's flags: the chart's, with a URL for the Service.
    let chart = render("guildnet", "guildnet-system", &[]);
    let mut want: Vec<&str> = args_of(deployment(&chart, "guildnet-webhook"))
        .into_iter()
        .filter(|a| !a.starts_with("--service-"))
        .collect();
    want.push("--webhook-url=https://127.0.0.1:9443");
    assert_eq!(
        args_of(deployment(&docs, "guildnet-webhook")),
        want,
        "kustomize/overlays/dev restates the chart's webhook flags"
    );
    for d in docs.iter().filter(|d| is_webhook_configuration(d)) {
        let url = d["webhooks"][0]["clientConfig"]["url"].as_str().unwrap();
        assert!(url.starts_with("https://127.0.0.1:9443/"), "{url}");
    }
}

#[test]
fn kustomize_ha_overlay_applies_server_side() {
    let docs = dry_run_overlay("ha");
    let want: BTreeMap<String, u64> = [
        ("guildnet-operator".to_owned(), 2),
        ("guildnet-proxy".to_owned(), 3),
        ("guildnet-webhook".to_owned(), 3),
    ]
    .into();
    assert_eq!(replicas(&docs), want);
    assert_eq!(
        docs.iter()
            .filter(|d| kind(d) == "PodDisruptionBudget")
            .count(),
        3
    );
}

// ---- the docs' examples and readiness -----------------------------------------------------------

#[tokio::test]
async fn docs_examples_apply_and_their_workspaces_and_databases_become_ready() {
    let admin = client(User::Admin).await;
    // Namespaced policy and databases go to a namespace of their own, so a Quota in the
    // examples never limits other tests in `default`.
    let ns = unique_name("pkg-docs");
    create_namespace(&admin, &ns, &[]).await;
    let dir = root().join("docs/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the examples are there: {files:?}");

    let mut workspaces = Vec::new();
    let mut databases = Vec::new();
    let mut applied: Vec<(User, Vec<String>, PathBuf)> = Vec::new();
    for file in &files {
        let docs = documents(&std::fs::read_to_string(file).unwrap());
        let kinds: BTreeSet<&str> = docs.iter().map(kind).collect();
        let path = file.to_string_lossy().into_owned();
        // What the docs tell each reader to run: users apply Workspaces in their namespace,
        // an administrator the policies and databases.
        databases.extend(
            docs.iter()
                .filter(|d| kind(d) == "GuildDatabase")
                .map(|d| name(d).to_owned()),
        );
        let (user, args): (User, Vec<String>) = if kinds == BTreeSet::from(["Workspace"]) {
            workspaces.extend(docs.iter().map(|d| name(d).to_owned()));
            (User::Alice, vec!["--namespace".into(), "default".into()])
        } else if kinds.iter().all(|k| ["Capabilities"].contains(k)) {
            (User::Admin, vec![])
        } else if kinds
            .iter()
            .all(|k| ["Quota", "GuildDatabase", "Secret"].contains(k))
        {
            (User::Admin, vec!["--namespace".into(), ns.clone()])
        } else {
            panic!("{path}: no rule says who applies {kinds:?}");
        };
        let mut apply = vec!["apply".to_owned()];
        apply.extend(args.iter().cloned());
        apply.extend(["-f".into(), path.clone()]);
        let apply: Vec<&str> = apply.iter().map(String::as_str).collect();
        ok(kubectl(user, &apply), &format!("kubectl apply -f {path}"));
        applied.push((user, args, file.clone()));
    }
    assert!(
        workspaces.len() >= 2,
        "the code-server and Jupyter examples"
    );

    for ws in &workspaces {
        ok(
            kubectl(
                User::Alice,
                &[
                    "wait",
                    "--namespace",
                    "default",
                    "--for=condition=Ready",
                    "--timeout=120s",
                    &format!("workspace/{ws}"),
                ],
            ),
            &format!("workspace {ws} becomes Ready"),
        );
    }

    assert!(!databases.is_empty(), "the GuildDatabase example");
    for db in &databases {
        ok(
            kubectl(
                User::Admin,
                &[
                    "wait",
                    "--namespace",
                    &ns,
                    "--for=condition=Ready",
                    "--timeout=120s",
                    &format!("guilddatabase/{db}"),
                ],
            ),
            &format!("GuildDatabase {db} becomes Ready"),
        );
    }

    for (user, args, file) in applied.iter().rev() {
        let mut delete = vec!["delete".to_owned(), "--wait=false".into()];
        delete.extend(args.iter().cloned());
        delete.extend(["-f".into(), file.to_string_lossy().into_owned()]);
        let delete: Vec<&str> = delete.iter().map(String::as_str).collect();
        ok(kubectl(*user, &delete), "delete the example");
    }
    // The examples' volumes are retained by design; remove them with the test namespace's.
    let _ = kubectl(
        User::Admin,
        &[
            "delete",
            "pvc",
            "--namespace",
            "default",
            "--wait=false",
            "code-server-home",
            "jupyter-work",
        ],
    );
    delete_namespace(&admin, &ns).await;
}

#[test]
fn docs_yaml_snippets_parse() {
    // The GitOps snippets need Argo CD or Flux to apply; they must at least be valid YAML.
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for block in text.split("```yaml\n").skip(1) {
            let yaml = block.split("```").next().unwrap();
            let docs = serde_yaml::Deserializer::from_str(yaml)
                .map(Value::deserialize)
                .collect::<Result<Vec<_>, _>>();
            assert!(docs.is_ok(), "{}: {docs:?}\n{yaml}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "the GitOps examples are checked");
}
