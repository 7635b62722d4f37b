//! The admission decisions, from AdmissionReviews recorded from the local control plane
//! (`tests/fixtures/`: alice's `kubectl create` of a Workspace with a spoofed owner label as
//! the mutating webhook saw it, her `kubectl label` of it and bob's `kubectl delete` as the
//! validating webhook saw them) varied per case: owners, owner assignment, defaults, every
//! denial, admins, trusted components, and the JSON the API server reads back.

use guildnet_api::ClusterRegistration;
use guildnet_api::policy::owner_id;
use guildnet_api::{Capabilities, Quota, Workspace};
use guildnet_webhook::admission::{self, Decision, DeniedReference, Refusal, Settings, Snapshot};
use guildnet_webhook::review::{self, Review};
use serde_json::{Value, json};
use std::sync::Arc;

const ALICE_ID: &str = "u-fpmansl7byak6gq7ymzi7j3dve";
const OPERATOR: &str = "system:serviceaccount:guildnet-system:guildnet-operator";
const PROXY: &str = "system:serviceaccount:guildnet-system:guildnet-proxy";
const NAMESPACE_CONTROLLER: &str = "system:serviceaccount:kube-system:namespace-controller";
const GARBAGE_COLLECTOR: &str = "system:serviceaccount:kube-system:generic-garbage-collector";

// ---- building requests ---------------------------------------------------------------------

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The CREATE fixture with `spec` as the object's spec.
fn create(spec: Value) -> Value {
    let mut review = fixture("create");
    review["request"]["object"]["spec"] = spec;
    review
}

/// The UPDATE fixture (alice's workspace) with `spec` as the new spec.
fn update(spec: Value) -> Value {
    let mut review = fixture("update");
    review["request"]["object"]["spec"] = spec;
    review
}

fn by(mut review: Value, username: &str, groups: &[&str]) -> Value {
    review["request"]["userInfo"] = json!({"username": username, "groups": groups});
    review
}

fn by_alice(review: Value) -> Value {
    by(review, "alice", &["guildnet:users", "system:authenticated"])
}

fn by_bob(review: Value) -> Value {
    by(review, "bob", &["guildnet:users", "system:authenticated"])
}

fn decode(review: &Value) -> Review {
    review::decode(&serde_json::to_vec(review).unwrap()).unwrap()
}

// ---- the cluster's policy objects ----------------------------------------------------------

fn settings() -> Settings {
    Settings {
        trusted_users: [OPERATOR, PROXY, NAMESPACE_CONTROLLER, GARBAGE_COLLECTOR]
            .map(str::to_owned)
            .into(),
        system_namespace: "guildnet-system".to_owned(),
    }
}

fn capabilities(name: &str, spec: Value) -> Capabilities {
    serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1",
        "kind": "Capabilities",
        "metadata": {"name": name},
        "spec": spec
    }))
    .unwrap()
}

/// What guildnet:users may do: code-server, Jupyter and nginx, up to 4 CPUs and 8Gi,
/// ClusterIP only, the local cluster and edge-berlin.
fn developers() -> Capabilities {
    capabilities(
        "developers",
        json!({
            "subjects": [{"kind": "Group", "name": "guildnet:users"}],
            "images": {"allow": ["docker.io/codercom/code-server:*", "quay.io/jupyter/*", "nginx:*"]},
            "resources": {"maxPerWorkspace": {"cpu": "4", "memory": "8Gi"}},
            "clusters": ["edge-berlin"]
        }),
    )
}

/// carol administers everyone's workspaces.
fn admins() -> Capabilities {
    capabilities(
        "admins",
        json!({"subjects": [{"kind": "User", "name": "carol"}], "admin": true}),
    )
}

fn quota(namespace: &str, name: &str, spec: Value) -> Arc<Quota> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "guildnet.io/v1alpha1",
            "kind": "Quota",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec
        }))
        .unwrap(),
    )
}

/// A workspace `namespace/name` owned by `owner` (an owner id) asking for `cpu` CPUs.
fn owned(namespace: &str, name: &str, owner: &str, cpu: &str) -> Arc<Workspace> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "guildnet.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "namespace": namespace, "labels": {"guildnet.io/owner": owner}},
            "spec": {"image": "nginx", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}
        }))
        .unwrap(),
    )
}

fn snapshot() -> Snapshot {
    Snapshot {
        capabilities: vec![developers(), admins()],
        quotas: Vec::new(),
        workspaces: Vec::new(),
        denied_references: Vec::new(),
        host_users: Vec::new(),
        retained_claims: Vec::new(),
        clusters: vec![registered("edge-berlin", false)],
        databases: Vec::new(),
    }
}

/// A ClusterRegistration named `name`; no status (never probed): admission does not ask
/// whether a cluster is reachable.
fn registered(name: &str, cordoned: bool) -> Arc<ClusterRegistration> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "ClusterRegistration",
            "metadata": {"name": name},
            "spec": {"kubeconfigSecretRef": {"namespace": "guildnet-system", "name": name}, "cordoned": cordoned}
        }))
        .unwrap(),
    )
}

// ---- deciding ------------------------------------------------------------------------------

fn validate(review: &Value, snapshot: &Snapshot) -> Decision {
    admission::validate(&decode(review), &settings(), snapshot)
}

fn mutate(review: &Value) -> Decision {
    admission::mutate(&decode(review))
}

/// The object as the API server stores it after the mutating webhook's patch.
fn mutated(review: &Value) -> Value {
    let decision = mutate(review);
    assert_eq!(decision.outcome, Ok(()), "mutation refused");
    let mut object = review["request"]["object"].clone();
    if let Some(patch) = decision.response.patch {
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}

/// The refusal of a denied decision, checking the response carries its reason and code.
fn refusal(decision: &Decision) -> &Refusal {
    let refusal = decision.outcome.as_ref().expect_err("a refusal");
    assert!(!decision.response.allowed);
    assert_eq!(decision.response.result.reason, refusal.reason());
    assert_eq!(decision.response.result.code, refusal.code());
    refusal
}

fn reason(decision: &Decision) -> &'static str {
    refusal(decision).reason()
}

fn message(decision: &Decision) -> String {
    decision.response.result.message.clone()
}

fn assert_allowed(decision: &Decision) {
    assert_eq!(decision.outcome, Ok(()), "{}", message(decision));
    assert!(decision.response.allowed);
}

// ---- mutating: owners ----------------------------------------------------------------------

#[test]
fn a_create_gets_the_owner_of_the_requesting_user() {
    let alice = mutated(&by_alice(fixture("create")));
    assert_eq!(alice["metadata"]["labels"]["guildnet.io/owner"], ALICE_ID);
    assert_eq!(
        alice["metadata"]["annotations"]["guildnet.io/owner-name"],
        "alice"
    );
    let bob = mutated(&by_bob(fixture("create")));
    assert_eq!(
        bob["metadata"]["labels"]["guildnet.io/owner"],
        owner_id("bob")
    );
    assert_eq!(
        bob["metadata"]["annotations"]["guildnet.io/owner-name"],
        "bob"
    );
    assert_ne!(
        alice["metadata"]["labels"]["guildnet.io/owner"],
        bob["metadata"]["labels"]["guildnet.io/owner"]
    );
}

#[test]
fn a_spoofed_owner_is_replaced_and_other_labels_stay() {
    let mut review = by_alice(fixture("create"));
    review["request"]["object"]["metadata"]["labels"] =
        json!({"guildnet.io/owner": owner_id("bob"), "team": "a"});
    review["request"]["object"]["metadata"]["annotations"] = json!({"guildnet.io/owner-name": "alice", "guildnet.io/owner-groups": "system:masters", "note": "mine"});
    let groups = review["request"]["userInfo"]["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let object = mutated(&review);
    assert_eq!(
        object["metadata"]["labels"],
        json!({"guildnet.io/owner": ALICE_ID, "team": "a"})
    );
    assert_eq!(
        object["metadata"]["annotations"],
        json!({"guildnet.io/owner-name": "alice", "guildnet.io/owner-groups": groups, "note": "mine"})
    );
}

#[test]
fn an_update_never_changes_the_owner() {
    // bob (say, an admin) rewrites the label; alice removes label and name; all end up
    // alice's.
    let mut spoofed = by_bob(fixture("update"));
    spoofed["request"]["object"]["metadata"]["labels"]["guildnet.io/owner"] =
        json!(owner_id("bob"));
    let mut removed = by_alice(fixture("update"));
    let metadata = removed["request"]["object"]["metadata"]
        .as_object_mut()
        .unwrap();
    metadata.remove("labels");
    metadata.remove("annotations");
    for review in [spoofed, removed] {
        let object = mutated(&review);
        assert_eq!(object["metadata"]["labels"]["guildnet.io/owner"], ALICE_ID);
        assert_eq!(
            object["metadata"]["annotations"]["guildnet.io/owner-name"],
            "alice"
        );
    }
    // Naming another owner is refused, for anyone: it would never take effect.
    let mut renamed = by_bob(fixture("update"));
    renamed["request"]["object"]["metadata"]["annotations"]["guildnet.io/owner-name"] =
        json!("bob");
    let decision = mutate(&renamed);
    assert_eq!(reason(&decision), "OwnerAssignmentDenied");
    assert_eq!(decision.response.result.code, 403);
    let message = message(&decision);
    assert!(
        message.contains("owner is \"alice\": the owner of a workspace never changes"),
        "{message}"
    );
}

#[test]
fn an_unowned_workspace_cannot_be_claimed_by_updating_it() {
    let mut review = by_alice(fixture("update"));
    let old = &mut review["request"]["oldObject"]["metadata"];
    old.as_object_mut().unwrap().remove("labels");
    old.as_object_mut().unwrap().remove("annotations");
    // Naming herself as its owner is refused; her owner label is dropped.
    assert_eq!(reason(&mutate(&review)), "OwnerAssignmentDenied");
    review["request"]["object"]["metadata"]["annotations"] = json!({});
    let object = mutated(&review);
    assert_eq!(object["metadata"]["labels"], json!({"team": "a"}));
    assert_eq!(object["metadata"]["annotations"], json!({}));
}

// ---- mutating: defaults --------------------------------------------------------------------

#[test]
fn a_create_is_defaulted_as_the_controller_runs_it() {
    let object = mutated(&by_alice(create(
        json!({"image": "codercom/code-server:4.96.2", "hint": "compute"}),
    )));
    let spec = &object["spec"];
    assert_eq!(
        spec["ports"],
        json!([{"name": "http", "containerPort": 8080}])
    );
    assert_eq!(spec["env"], json!([{"name": "PORT", "value": "8080"}]));
    assert_eq!(
        spec["probes"],
        json!({"profile": "slow", "path": "/healthz"})
    );
    assert_eq!(
        spec["resources"],
        json!({"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}})
    );
    // Fields the defaults do not touch survive the patch.
    assert_eq!(spec["hint"], "compute");
    assert!(object["metadata"]["managedFields"].is_array());
}

#[test]
fn a_defaulted_owned_object_needs_no_patch() {
    let review = by_alice(fixture("update"));
    let decision = mutate(&review);
    assert_allowed(&decision);
    assert_eq!(decision.response.patch, None);
}

#[test]
fn an_unusable_probe_annotation_is_refused_naming_it() {
    let mut review = by_alice(fixture("create"));
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"guildnet.io/probe-profile": "turbo"});
    let decision = mutate(&review);
    assert_eq!(reason(&decision), "Invalid");
    assert_eq!(decision.response.result.code, 422);
    assert!(message(&decision).contains("guildnet.io/probe-profile"));
}

#[test]
fn what_the_types_cannot_hold_is_left_to_the_schema() {
    // The mutating webhook runs before the CRD schema check; the schema names the field.
    let review = by_alice(create(json!({"image": "nginx", "hint": "turbo"})));
    let decision = mutate(&review);
    assert_allowed(&decision);
    assert_eq!(decision.response.patch, None);
    // Validation (after the schema check) refuses it rather than guessing.
    let decision = validate(&review, &snapshot());
    assert_eq!(reason(&decision), "Invalid");
    assert!(message(&decision).contains("turbo"));
}

#[test]
fn deletes_and_status_updates_are_not_mutated() {
    let decision = mutate(&fixture("delete"));
    assert_allowed(&decision);
    assert_eq!(decision.response.patch, None);
    let mut status = by(fixture("update"), OPERATOR, &["system:serviceaccounts"]);
    status["request"]["subResource"] = json!("status");
    status["request"]["object"]["spec"] = json!({"image": "nginx"});
    let decision = mutate(&status);
    assert_eq!(decision.response.patch, None);
}

// ---- validating: what a workspace may read -------------------------------------------------

fn secret_env(name: &str, secret: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}})
}

#[test]
fn every_secret_and_config_map_a_create_names_is_reviewed_but_its_own_password() {
    let review = by_bob(create(json!({
        "image": "codercom/code-server:4.96.2",
        "env": [secret_env("STOLEN", "ide-password"), secret_env("MINE", "x-password"),
                {"name": "CONF", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}}],
        "imagePullSecrets": [{"name": "registry"}]
    })));
    let name = review["request"]["object"]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut review = review;
    review["request"]["object"]["spec"]["env"][1] = secret_env("MINE", &format!("{name}-password"));
    let asked: Vec<String> = admission::references_to_review(&decode(&review), &settings())
        .into_iter()
        .map(|r| format!("{} {} {}", r.kind, r.name, r.field))
        .collect();
    assert_eq!(
        asked,
        [
            "Secret ide-password spec.env[0].valueFrom.secretKeyRef",
            "ConfigMap settings spec.env[2].valueFrom.configMapKeyRef",
            "Secret registry spec.imagePullSecrets[0]",
        ]
    );
    // The operator and proxy are trusted: nothing to ask.
    let trusted = by(review, OPERATOR, &["system:serviceaccounts"]);
    assert!(admission::references_to_review(&decode(&trusted), &settings()).is_empty());
}

#[test]
fn an_update_reviews_only_the_references_it_adds() {
    let mut review = by_alice(update(
        json!({"image": "nginx", "env": [secret_env("A", "a"), secret_env("B", "b")]}),
    ));
    review["request"]["oldObject"]["spec"]["env"] = json!([secret_env("A", "a")]);
    let asked: Vec<String> = admission::references_to_review(&decode(&review), &settings())
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(asked, ["b"]);
}

#[test]
fn a_reference_the_requester_may_not_read_is_refused_naming_the_field() {
    let review = by_bob(create(
        json!({"image": "nginx", "env": [secret_env("STOLEN", "ide-password")]}),
    ));
    let decoded = decode(&review);
    let denied = admission::references_to_review(&decoded, &settings())
        .into_iter()
        .map(|reference| DeniedReference {
            reader: "bob".to_owned(),
            reference,
        })
        .collect();
    let refused = admission::validate(
        &decoded,
        &settings(),
        &Snapshot {
            denied_references: denied,
            ..snapshot()
        },
    );
    assert_eq!(reason(&refused), "ReferenceDenied");
    assert_eq!(refused.response.result.code, 403);
    let message = message(&refused);
    assert!(
        message.contains("spec.env[0].valueFrom.secretKeyRef names Secret")
            && message.contains("/ide-password, which bob may not get"),
        "{message}"
    );
    // The same spec with the reference allowed is admitted.
    assert_allowed(&admission::validate(&decoded, &settings(), &snapshot()));
}

#[test]
fn opting_out_of_idle_reaping_needs_a_grant() {
    let mut review = by_alice(fixture("create"));
    review["request"]["object"]["metadata"]["labels"] = json!({"guildnet.io/keepalive": "true"});
    let refused = validate(&review, &snapshot());
    assert_eq!(reason(&refused), "KeepAliveDenied");
    assert!(
        message(&refused).contains("keepAlive: true"),
        "{}",
        message(&refused)
    );
    let mut granted = developers();
    granted.spec.keep_alive = true;
    let snapshot = Snapshot {
        capabilities: vec![granted],
        ..snapshot()
    };
    assert_allowed(&validate(&review, &snapshot));
}

#[test]
fn an_ingress_host_of_another_owner_is_refused() {
    let mut exposing = developers();
    exposing.spec.exposure = vec![guildnet_api::workspace::ExposureType::Ingress];
    let spec = json!({"image": "docker.io/codercom/code-server:4.96.2",
                      "exposure": {"type": "Ingress", "ingress": {"host": "ide.example.com"}}});
    let review = by_alice(create(spec.clone()));
    let mut bobs: Workspace = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace",
        "metadata": {"name": "bank", "namespace": "team-b", "labels": {"guildnet.io/owner": owner_id("bob")}},
        "spec": spec
    }))
    .unwrap();
    let snapshot = |users: Vec<Arc<Workspace>>| Snapshot {
        capabilities: vec![exposing.clone()],
        host_users: users,
        ..snapshot()
    };
    assert_allowed(&validate(&review, &snapshot(Vec::new())));
    let refused = validate(&review, &snapshot(vec![Arc::new(bobs.clone())]));
    assert_eq!(reason(&refused), "ExposureDenied");
    assert!(
        message(&refused).contains("already used by workspace team-b/bank"),
        "{}",
        message(&refused)
    );
    // Her own workspace with that host is no conflict.
    bobs.metadata.labels = Some([("guildnet.io/owner".to_owned(), ALICE_ID.to_owned())].into());
    assert_allowed(&validate(&review, &snapshot(vec![Arc::new(bobs)])));
}

#[test]
fn a_plaintext_credential_is_admitted_with_a_warning() {
    let review = by_alice(create(
        json!({"image": "nginx", "env": [{"name": "GITHUB_TOKEN", "value": "ghp_x"}]}),
    ));
    let decision = validate(&review, &snapshot());
    assert_allowed(&decision);
    let warnings = decision.response.warnings.expect("a warning");
    assert!(
        warnings[0].contains("spec.env[0] (GITHUB_TOKEN)"),
        "{warnings:?}"
    );
    let plain = validate(&by_alice(fixture("create")), &snapshot());
    assert_eq!(plain.response.warnings, None);
}

#[test]
fn a_negative_request_is_refused_even_where_the_schema_let_it_through() {
    // The CRD refuses it too; an older CRD or a cluster that skips CEL must not hand out
    // Quota credit either.
    let review = by_alice(create(
        json!({"image": "nginx", "resources": {"requests": {"cpu": "-8"}}}),
    ));
    let refused = validate(&review, &snapshot());
    assert_eq!(reason(&refused), "Invalid");
    assert!(
        message(&refused).contains("\"-8\" is negative"),
        "{}",
        message(&refused)
    );
}

// ---- validating: capabilities --------------------------------------------------------------

#[test]
fn an_allowed_workspace_is_admitted_with_its_owner() {
    let decision = validate(&by_alice(fixture("create")), &snapshot());
    assert_allowed(&decision);
    let admitted = decision.admitted.expect("a create is reserved");
    assert_eq!(
        admitted.metadata.labels.unwrap()["guildnet.io/owner"],
        ALICE_ID
    );
    assert!(
        admitted.spec.resources.is_some(),
        "defaults count against Quotas"
    );
}

#[test]
fn a_dry_run_is_decided_but_reserves_nothing() {
    let mut review = by_alice(fixture("create"));
    review["request"]["dryRun"] = json!(true);
    let decision = validate(&review, &snapshot());
    assert_allowed(&decision);
    assert!(decision.admitted.is_none());
}

#[test]
fn a_user_without_capabilities_may_do_nothing() {
    let review = by(fixture("create"), "mallory", &["system:authenticated"]);
    let decision = validate(&review, &snapshot());
    assert_eq!(reason(&decision), "NoCapabilities");
    assert_eq!(decision.response.result.code, 403);
    assert!(message(&decision).contains("\"mallory\""));
    assert!(message(&decision).contains("spec.subjects of a Capabilities"));
    let mut anonymous = fixture("create");
    anonymous["request"]["userInfo"] = json!({});
    assert_eq!(reason(&validate(&anonymous, &snapshot())), "NoCapabilities");
}

#[test]
fn images_are_matched_after_normalisation_and_prefix_tricks_fail() {
    let cases = [
        ("codercom/code-server:4.96.2", true),
        ("docker.io/codercom/code-server:latest", true),
        ("index.docker.io/codercom/code-server:4.96.2", true),
        (
            "codercom/code-server@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            true,
        ),
        ("codercom/code-server@sha256:0123", false),
        ("quay.io/jupyter/base-notebook:2025-01-01", true),
        ("quay.io/jupyter/nested/image", true),
        ("nginx", true),
        ("docker.io/library/nginx:1.27", true),
        ("codercom/code-server-evil:1", false),
        ("docker.io/codercom/code-server.evil:1", false),
        ("quay.io/jupyter-evil/base-notebook", false),
        ("quay.io.evil.com/jupyter/base-notebook", false),
        ("quay.io/jupyter", false),
        ("evil/nginx", false),
        ("docker.io/library-evil/nginx", false),
        ("nginx-evil", false),
        ("ghcr.io/codercom/code-server:4.96.2", false),
        ("NGINX", false),
    ];
    let mut wrong = Vec::new();
    for (image, allowed) in cases {
        let decision = validate(&by_alice(create(json!({"image": image}))), &snapshot());
        let admitted = decision.outcome.is_ok();
        if admitted != allowed {
            wrong.push(format!("{image}: admitted {admitted}, expected {allowed}"));
        } else if !admitted {
            assert_eq!(reason(&decision), "ImageDenied", "{image}");
            assert_eq!(decision.response.result.code, 400);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_denied_image_names_the_field_and_the_fix() {
    let decision = validate(
        &by_alice(create(json!({"image": "evil/miner:1"}))),
        &snapshot(),
    );
    let message = message(&decision);
    assert!(
        message.starts_with("ImageDenied: spec.image \"evil/miner:1\""),
        "{message}"
    );
    assert!(message.contains("docker.io/evil/miner:1"), "{message}");
    assert!(message.contains("spec.images.allow"), "{message}");
}

#[test]
fn resources_above_the_ceiling_are_refused_including_defaulted_ones() {
    let big = json!({"image": "nginx", "resources": {"limits": {"cpu": "8", "memory": "1Gi"}}});
    let decision = validate(&by_alice(create(big)), &snapshot());
    assert_eq!(reason(&decision), "ResourceLimitExceeded");
    assert!(
        message(&decision)
            .contains("spec.resources.limits.cpu is 8, above your per-workspace ceiling of 4"),
        "{}",
        message(&decision)
    );
    // The memory profile limits 8Gi: at the ceiling, so admitted; a 2-CPU ceiling refuses
    // the compute profile's 4 CPUs although the user wrote no resources at all.
    let memory = json!({"image": "nginx", "hint": "memory"});
    assert_allowed(&validate(&by_alice(create(memory)), &snapshot()));
    let mut small = snapshot();
    small.capabilities = vec![capabilities(
        "small",
        json!({
            "subjects": [{"kind": "Group", "name": "guildnet:users"}],
            "images": {"allow": ["nginx"]},
            "resources": {"maxPerWorkspace": {"cpu": "2"}}
        }),
    )];
    let compute = json!({"image": "nginx", "hint": "compute"});
    assert_eq!(
        reason(&validate(&by_alice(create(compute)), &small)),
        "ResourceLimitExceeded"
    );
}

#[test]
fn exposure_and_placement_need_grants() {
    let balancer = json!({"image": "nginx", "exposure": {"type": "LoadBalancer"}});
    let decision = validate(&by_alice(create(balancer)), &snapshot());
    assert_eq!(reason(&decision), "ExposureDenied");
    assert!(message(&decision).contains("spec.exposure.type LoadBalancer"));
    let cluster_ip = json!({"image": "nginx", "exposure": {"type": "ClusterIP"}});
    assert_allowed(&validate(&by_alice(create(cluster_ip)), &snapshot()));

    let paris = json!({"image": "nginx", "placement": {"cluster": "edge-paris"}});
    let decision = validate(&by_alice(create(paris)), &snapshot());
    assert_eq!(reason(&decision), "ClusterDenied");
    assert!(message(&decision).contains("spec.placement.cluster \"edge-paris\""));
    let berlin = json!({"image": "nginx", "placement": {"cluster": "edge-berlin"}});
    assert_allowed(&validate(&by_alice(create(berlin)), &snapshot()));
}

#[test]
fn a_placement_on_an_unregistered_or_cordoned_cluster_is_refused_on_create() {
    let berlin = json!({"image": "nginx", "placement": {"cluster": "edge-berlin"}});
    let unregistered = Snapshot {
        clusters: Vec::new(),
        ..snapshot()
    };
    let decision = validate(&by_alice(create(berlin.clone())), &unregistered);
    assert_eq!(reason(&decision), "ClusterNotFound");
    assert_eq!(decision.response.result.code, 400);
    assert!(message(&decision).contains("kubectl get clusterregistrations"));

    let cordoned = Snapshot {
        clusters: vec![registered("edge-berlin", true)],
        ..snapshot()
    };
    let decision = validate(&by_alice(create(berlin)), &cordoned);
    assert_eq!(reason(&decision), "ClusterCordoned");
    assert!(message(&decision).contains("is cordoned (spec.cordoned)"));

    // A workspace placed there before it was cordoned may still be edited.
    let mut edit = fixture("update");
    let placed = json!({"cluster": "edge-berlin"});
    edit["request"]["oldObject"]["spec"]["placement"] = placed.clone();
    let mut spec = edit["request"]["oldObject"]["spec"].clone();
    spec["env"] = json!([{"name": "EDITED", "value": "1"}]);
    edit["request"]["object"]["spec"] = spec;
    assert_allowed(&validate(&by_alice(edit), &cordoned));
}

// ---- validating: quotas --------------------------------------------------------------------

#[test]
fn a_create_past_a_quota_is_refused_with_429() {
    let mut cluster = snapshot();
    cluster.quotas = vec![quota(
        "default",
        "two-each",
        json!({"perOwner": {"maxWorkspaces": 2}}),
    )];
    cluster.workspaces = vec![owned("default", "a", ALICE_ID, "1")];
    let review = by_alice(fixture("create"));
    assert_allowed(&validate(&review, &cluster));

    cluster
        .workspaces
        .push(owned("default", "b", ALICE_ID, "1"));
    let decision = validate(&review, &cluster);
    assert_eq!(reason(&decision), "QuotaExceeded");
    assert_eq!(decision.response.result.code, 429);
    let message = message(&decision);
    assert!(message.contains("Quota default/two-each"), "{message}");
    assert!(
        message.contains("spec.perOwner.maxWorkspaces is 2"),
        "{message}"
    );

    // bob has his own count.
    assert_allowed(&validate(&by_bob(fixture("create")), &cluster));
    // A workspace being deleted no longer counts.
    let mut deleting = (*cluster.workspaces[1]).clone();
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-23T10:00:00Z".parse().unwrap(),
        ));
    cluster.workspaces[1] = Arc::new(deleting);
    assert_allowed(&validate(&review, &cluster));
}

#[test]
fn namespaced_quotas_count_their_namespace_and_cluster_quotas_count_all() {
    let mut cluster = snapshot();
    cluster.workspaces = vec![
        owned("team-a", "a", ALICE_ID, "1"),
        owned("team-b", "b", ALICE_ID, "1"),
    ];
    cluster.quotas = vec![quota(
        "default",
        "one",
        json!({"perOwner": {"maxWorkspaces": 1}}),
    )];
    let review = by_alice(fixture("create"));
    assert_allowed(&validate(&review, &cluster));
    // A Quota in another namespace does not apply to `default` at all.
    cluster.quotas = vec![quota(
        "team-a",
        "one",
        json!({"perOwner": {"maxWorkspaces": 1}}),
    )];
    assert_allowed(&validate(&review, &cluster));
    // Cluster-scoped in GuildNet's namespace: counts everywhere.
    cluster.quotas = vec![quota(
        "guildnet-system",
        "everywhere",
        json!({"scope": "Cluster", "perOwner": {"maxWorkspaces": 2}}),
    )];
    assert_eq!(reason(&validate(&review, &cluster)), "QuotaExceeded");
    // Cluster-scoped elsewhere is treated as namespaced: a tenant cannot limit others.
    cluster.quotas = vec![quota(
        "team-a",
        "everywhere",
        json!({"scope": "Cluster", "perOwner": {"maxWorkspaces": 1}}),
    )];
    assert_allowed(&validate(&review, &cluster));
}

#[test]
fn the_strictest_quota_wins_and_resources_count() {
    let mut cluster = snapshot();
    cluster.workspaces = vec![owned("default", "a", ALICE_ID, "3")];
    cluster.quotas = vec![
        quota(
            "default",
            "generous",
            json!({"perOwner": {"maxWorkspaces": 10, "cpu": "100"}}),
        ),
        quota(
            "default",
            "strict-cpu",
            json!({"subjects": [{"kind": "Group", "name": "guildnet:users"}], "perOwner": {"cpu": "3500m"}}),
        ),
    ];
    // The default profile requests 250m: 3 + 0.25 fits 3.5.
    let review = by_alice(fixture("create"));
    assert_allowed(&validate(&review, &cluster));
    let bigger = json!({"image": "nginx", "resources": {"requests": {"cpu": "1"}}});
    let decision = validate(&by_alice(create(bigger)), &cluster);
    assert_eq!(reason(&decision), "QuotaExceeded");
    assert!(message(&decision).contains("Quota default/strict-cpu: spec.perOwner.cpu is 3500m"));
    // A Quota whose subjects do not name the user does not apply.
    cluster.quotas[1] = quota(
        "default",
        "strict-cpu",
        json!({"subjects": [{"kind": "User", "name": "bob"}], "perOwner": {"cpu": "1"}}),
    );
    assert_allowed(&validate(
        &by_alice(create(
            json!({"image": "nginx", "resources": {"requests": {"cpu": "1"}}}),
        )),
        &cluster,
    ));
}

#[test]
fn admitted_creates_count_before_the_cache_shows_them() {
    let mut cluster = snapshot();
    cluster.quotas = vec![quota(
        "default",
        "one",
        json!({"perOwner": {"maxWorkspaces": 1}}),
    )];
    let first = validate(&by_alice(fixture("create")), &cluster);
    let reserved = first.admitted.expect("admitted");
    cluster.workspaces.push(Arc::new(reserved));
    let mut second = by_alice(fixture("create"));
    second["request"]["object"]["metadata"]["name"] = json!("rec-2");
    second["request"]["name"] = json!("rec-2");
    assert_eq!(reason(&validate(&second, &cluster)), "QuotaExceeded");
}

#[test]
fn updates_are_charged_what_they_add() {
    let mut cluster = snapshot();
    // alice's stored workspace (the fixture) requests 250m; another one 1 CPU; limit 2.
    cluster.workspaces = vec![
        owned("default", "rec", ALICE_ID, "250m"),
        owned("default", "other", ALICE_ID, "1"),
    ];
    cluster.quotas = vec![quota(
        "default",
        "cpu",
        json!({"perOwner": {"cpu": "2", "maxWorkspaces": 2}}),
    )];
    let mut spec = fixture("update")["request"]["object"]["spec"].clone();
    spec["resources"]["requests"]["cpu"] = json!("750m");
    assert_allowed(&validate(&by_alice(update(spec.clone())), &cluster));
    spec["resources"]["requests"]["cpu"] = json!("1500m");
    spec["resources"]["limits"]["cpu"] = json!("2");
    let decision = validate(&by_alice(update(spec)), &cluster);
    assert_eq!(reason(&decision), "QuotaExceeded");
    assert!(
        message(&decision).contains("this request adds 1250m"),
        "{}",
        message(&decision)
    );
    // At the workspace-count limit, an update that changes nothing else still passes.
    assert_allowed(&validate(&by_alice(fixture("update")), &cluster));
}

// ---- validating: ownership -----------------------------------------------------------------

#[test]
fn only_the_owner_or_an_admin_updates_or_deletes() {
    let mut spec = fixture("update")["request"]["object"]["spec"].clone();
    spec["image"] = json!("nginx:1.27");
    for review in [by_bob(update(spec.clone())), fixture("delete")] {
        let decision = validate(&review, &snapshot());
        assert_eq!(reason(&decision), "NotOwner");
        assert_eq!(decision.response.result.code, 403);
        assert!(message(&decision).contains(ALICE_ID));
    }
    // bob may not even relabel alice's workspace.
    assert_eq!(
        reason(&validate(&by_bob(fixture("update")), &snapshot())),
        "NotOwner"
    );
    let carol = |review| by(review, "carol", &["system:authenticated"]);
    assert_allowed(&validate(&carol(fixture("delete")), &snapshot()));
    assert_allowed(&validate(&carol(fixture("update")), &snapshot()));
    assert_allowed(&validate(&by_alice(fixture("delete")), &snapshot()));
    assert_allowed(&validate(&by_alice(update(spec)), &snapshot()));
}

#[test]
fn cluster_admins_act_on_any_workspace_and_create_only_with_grants() {
    // No Capabilities names root: system:masters alone makes them an admin.
    let root = |review| by(review, "root", &["system:masters", "system:authenticated"]);
    let none = Snapshot::default();
    assert_allowed(&validate(&root(fixture("delete")), &none));
    // Removing a user's finalizer, say one whose controller is gone, is a metadata change.
    let mut unblock = root(fixture("update"));
    unblock["request"]["oldObject"]["metadata"]["finalizers"] = json!(["example.com/backup"]);
    assert_allowed(&validate(&unblock, &none));
    let mut kept = root(fixture("update"));
    kept["request"]["object"]["metadata"]["labels"]["guildnet.io/keepalive"] = json!("true");
    assert_allowed(&validate(&kept, &none));
    // What a workspace runs still needs grants, as for everyone.
    let mut spec = fixture("update")["request"]["object"]["spec"].clone();
    spec["lifecycle"] = json!({"suspend": true});
    assert_eq!(
        reason(&validate(&root(update(spec)), &none)),
        "NoCapabilities"
    );
    assert_eq!(
        reason(&validate(&root(fixture("create")), &none)),
        "NoCapabilities"
    );
    // A group merely named like it is not it.
    let impostor = by(fixture("delete"), "mallory", &["system:masters-ish"]);
    assert_eq!(reason(&validate(&impostor, &none)), "NotOwner");
}

#[test]
fn an_admin_changing_the_spec_needs_the_grant_for_it() {
    // carol administers but may run no image: she may delete, not swap the image.
    let mut spec = fixture("update")["request"]["object"]["spec"].clone();
    spec["image"] = json!("nginx:1.27");
    let decision = validate(&by(update(spec), "carol", &[]), &snapshot());
    assert_eq!(reason(&decision), "ImageDenied");
}

#[test]
fn an_unowned_workspace_is_for_admins_only() {
    let mut review = by_alice(fixture("delete"));
    review["request"]["oldObject"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let decision = validate(&review, &snapshot());
    assert_eq!(reason(&decision), "NotOwner");
    assert!(message(&decision).contains("owner unset"));
    assert_allowed(&validate(&by(review, "carol", &[]), &snapshot()));
}

#[test]
fn metadata_changes_pass_after_capabilities_are_revoked() {
    let mut review = by_alice(fixture("update"));
    review["request"]["object"]["metadata"]["labels"]["team"] = json!("platform");
    let revoked = Snapshot::default();
    assert_allowed(&validate(&review, &revoked));
    // Deleting her own workspace needs no grant either.
    assert_allowed(&validate(&by_alice(fixture("delete")), &revoked));
    // A spec change does.
    let mut spec = fixture("update")["request"]["object"]["spec"].clone();
    spec["lifecycle"] = json!({"suspend": true});
    assert_eq!(
        reason(&validate(&by_alice(update(spec)), &revoked)),
        "NoCapabilities"
    );
}

#[test]
fn deleting_an_unreadable_workspace_still_checks_its_owner() {
    let mut review = fixture("delete");
    review["request"]["oldObject"]["spec"] = json!({"hint": "turbo"});
    assert_eq!(reason(&validate(&review, &snapshot())), "NotOwner");
    assert_allowed(&validate(&by_alice(review), &snapshot()));
}

// ---- validating: trusted components --------------------------------------------------------

#[test]
fn guildnets_components_and_kubernetes_controllers_pass() {
    let mut suspend = fixture("update")["request"]["object"]["spec"].clone();
    suspend["lifecycle"] = json!({"suspend": true});
    let none = Snapshot::default();
    let operator = by(update(suspend), OPERATOR, &["system:serviceaccounts"]);
    assert_allowed(&validate(&operator, &none));
    let proxy = by(fixture("delete"), PROXY, &["system:serviceaccounts"]);
    assert_allowed(&validate(&proxy, &none));
    let namespace_controller = by(
        fixture("delete"),
        NAMESPACE_CONTROLLER,
        &["system:serviceaccounts"],
    );
    assert_allowed(&validate(&namespace_controller, &none));
    // The garbage collector deletes dependents and removes the foregroundDeletion finalizer.
    let mut collected = by(
        fixture("update"),
        GARBAGE_COLLECTOR,
        &["system:serviceaccounts"],
    );
    collected["request"]["oldObject"]["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    assert_allowed(&validate(&collected, &none));
    assert_allowed(&validate(
        &by(
            fixture("delete"),
            GARBAGE_COLLECTOR,
            &["system:serviceaccounts"],
        ),
        &none,
    ));
    let mut status = by(fixture("update"), OPERATOR, &["system:serviceaccounts"]);
    status["request"]["subResource"] = json!("status");
    assert_allowed(&validate(&status, &none));
    // A service account elsewhere named like a controller is not trusted.
    let impostor = by(
        fixture("delete"),
        "system:serviceaccount:team-a:namespace-controller",
        &["system:serviceaccounts"],
    );
    assert_eq!(reason(&validate(&impostor, &none)), "NotOwner");
    // Nor is any other service account of kube-system: only the names configured.
    let anything = by(
        fixture("delete"),
        "system:serviceaccount:kube-system:anything",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
        ],
    );
    assert_eq!(reason(&validate(&anything, &none)), "NotOwner");
}

// ---- the answer the API server reads -------------------------------------------------------

#[test]
fn responses_are_admission_reviews_with_the_request_uid() {
    let mut cluster = snapshot();
    cluster.quotas = vec![quota(
        "default",
        "none",
        json!({"perOwner": {"maxWorkspaces": 0}}),
    )];
    let decision = validate(&by_alice(fixture("create")), &cluster);
    let json = serde_json::to_value(decision.response.into_review()).unwrap();
    assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(json["kind"], "AdmissionReview");
    let response = &json["response"];
    assert_eq!(response["uid"], "d3a1ada4-103a-4b23-bb87-87424a54f712");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 429);
    assert_eq!(response["status"]["reason"], "QuotaExceeded");
    assert_eq!(response["status"]["status"], "Failure");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("QuotaExceeded: Quota default/none")
    );

    let decision = mutate(&by_alice(fixture("create")));
    let json = serde_json::to_value(decision.response.into_review()).unwrap();
    assert_eq!(json["response"]["allowed"], true);
    assert_eq!(json["response"]["patchType"], "JSONPatch");
    // kube writes the patch's bytes as a JSON array, which the API server's decoder reads
    // into its []byte as well as base64.
    let bytes: Vec<u8> = serde_json::from_value(json["response"]["patch"].clone()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    assert!(!patch.0.is_empty());
}

// ---- owner assignment (GitOps) -------------------------------------------------------------

const ARGOCD: &str = "system:serviceaccount:argocd:argocd-application-controller";

fn by_argocd(review: Value) -> Value {
    by(
        review,
        ARGOCD,
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:argocd",
            "system:authenticated",
        ],
    )
}

/// `review` with the owner named in `guildnet.io/owner-name`, as a GitOps manifest does.
fn for_owner(mut review: Value, owner: &str) -> Value {
    review["request"]["object"]["metadata"]["annotations"]["guildnet.io/owner-name"] = json!(owner);
    review
}

/// Argo CD's application controller may create workspaces for `users`; it may run any
/// image itself, which must not matter for the workspaces it assigns.
fn argocd_assigns(users: &[&str]) -> Capabilities {
    capabilities(
        "argocd",
        json!({
            "subjects": [{"kind": "ServiceAccount", "namespace": "argocd", "name": "argocd-application-controller"}],
            "images": {"allow": ["docker.io/*"]},
            "assignOwners": {"users": users}
        }),
    )
}

/// alice by name: an assigned owner is matched by name (and system:authenticated) only.
fn alice_by_name() -> Capabilities {
    capabilities(
        "alice",
        json!({
            "subjects": [{"kind": "User", "name": "alice"}],
            "images": {"allow": ["nginx:*", "docker.io/codercom/code-server:*"]},
            "resources": {"maxPerWorkspace": {"cpu": "4", "memory": "8Gi"}}
        }),
    )
}

fn gitops() -> Snapshot {
    Snapshot {
        capabilities: vec![
            developers(),
            admins(),
            argocd_assigns(&["alice"]),
            alice_by_name(),
        ],
        ..snapshot()
    }
}

#[test]
fn a_granted_assigner_creates_a_workspace_owned_by_the_user_it_names() {
    let review = for_owner(by_argocd(fixture("create")), "alice");
    let object = mutated(&review);
    assert_eq!(object["metadata"]["labels"]["guildnet.io/owner"], ALICE_ID);
    // The controller's groups are not alice's, and hers are unknown.
    assert_eq!(
        object["metadata"]["annotations"],
        json!({"guildnet.io/owner-name": "alice", "guildnet.io/owner-groups": "system:authenticated"})
    );
    let mut stored = review.clone();
    stored["request"]["object"] = object;
    let decision = validate(&stored, &gitops());
    assert_allowed(&decision);
    let admitted = decision.admitted.expect("a create is reserved");
    assert_eq!(
        admitted.metadata.labels.unwrap()["guildnet.io/owner"],
        ALICE_ID
    );
    assert_eq!(
        admission::quota_owner(&decode(&stored).request).as_deref(),
        Some(ALICE_ID)
    );
}

#[test]
fn naming_another_owner_needs_a_grant_for_that_owner() {
    // bob has no assignOwners: refused, not silently made his.
    let decision = validate(&for_owner(by_bob(fixture("create")), "alice"), &gitops());
    assert_eq!(reason(&decision), "OwnerAssignmentDenied");
    assert_eq!(decision.response.result.code, 403);
    let refused = message(&decision);
    assert!(
        refused.contains("guildnet.io/owner-name names \"alice\", but \"bob\" may not create workspaces for other users"),
        "{refused}"
    );
    assert!(refused.contains("remove the annotation"), "{refused}");
    // Naming herself is no assignment.
    assert_allowed(&validate(
        &for_owner(by_alice(fixture("create")), "alice"),
        &gitops(),
    ));
    // The controller may assign alice, not carol.
    let decision = validate(&for_owner(by_argocd(fixture("create")), "carol"), &gitops());
    assert_eq!(reason(&decision), "OwnerAssignmentDenied");
    assert!(
        message(&decision).contains("may create workspaces only for \"alice\""),
        "{}",
        message(&decision)
    );
    // `*` allows anyone; carol is then held to her own grants (she has none to run images).
    let anyone = Snapshot {
        capabilities: vec![argocd_assigns(&["*"]), admins()],
        ..snapshot()
    };
    let decision = validate(&for_owner(by_argocd(fixture("create")), "carol"), &anyone);
    assert_eq!(reason(&decision), "ImageDenied");
}

#[test]
fn an_assigned_workspace_is_held_to_the_owners_grants_and_quotas() {
    let create = |spec: Value| for_owner(by_argocd(create(spec)), "alice");
    // The controller may run any docker.io image; alice may not.
    let decision = validate(
        &create(json!({"image": "docker.io/evil/miner:1"})),
        &gitops(),
    );
    assert_eq!(reason(&decision), "ImageDenied");
    let decision = validate(
        &create(json!({"image": "nginx:1.27", "resources": {"limits": {"cpu": "8"}}})),
        &gitops(),
    );
    assert_eq!(reason(&decision), "ResourceLimitExceeded");
    // Her grants by group do not count: the webhook cannot know her groups.
    let by_group_only = Snapshot {
        capabilities: vec![developers(), argocd_assigns(&["alice"])],
        ..snapshot()
    };
    let decision = validate(&create(json!({"image": "nginx:1.27"})), &by_group_only);
    assert_eq!(reason(&decision), "NoCapabilities");
    assert!(
        message(&decision).contains("\"alice\""),
        "{}",
        message(&decision)
    );
    // keepAlive is hers to have, too.
    let mut kept = create(json!({"image": "nginx:1.27"}));
    kept["request"]["object"]["metadata"]["labels"] = json!({"guildnet.io/keepalive": "true"});
    assert_eq!(reason(&validate(&kept, &gitops())), "KeepAliveDenied");

    // Her Quota counts her workspaces, not the controller's.
    let mut cluster = gitops();
    cluster.quotas = vec![quota(
        "default",
        "two-each",
        json!({"perOwner": {"maxWorkspaces": 2}}),
    )];
    cluster.workspaces = vec![
        owned("default", "a", ALICE_ID, "1"),
        owned("default", "b", &owner_id(ARGOCD), "1"),
        owned("default", "c", &owner_id(ARGOCD), "1"),
    ];
    assert_allowed(&validate(&create(json!({"image": "nginx:1.27"})), &cluster));
    cluster
        .workspaces
        .push(owned("default", "d", ALICE_ID, "1"));
    let decision = validate(&create(json!({"image": "nginx:1.27"})), &cluster);
    assert_eq!(reason(&decision), "QuotaExceeded");
    assert!(message(&decision).contains("spec.perOwner.maxWorkspaces is 2"));
    // A Quota naming only her groups does not apply to what is assigned to her.
    cluster.quotas = vec![quota(
        "default",
        "users",
        json!({"subjects": [{"kind": "Group", "name": "guildnet:users"}], "perOwner": {"maxWorkspaces": 2}}),
    )];
    assert_allowed(&validate(&create(json!({"image": "nginx:1.27"})), &cluster));
}

#[test]
fn the_assigner_re_applies_and_prunes_the_workspaces_of_owners_it_may_assign() {
    // Re-applying the manifest as it was: no patch, admitted.
    let reapply = for_owner(by_argocd(fixture("update")), "alice");
    let decision = mutate(&reapply);
    assert_allowed(&decision);
    assert_eq!(decision.response.patch, None);
    assert_allowed(&validate(&reapply, &gitops()));
    // A spec change is held to alice's grants, not the controller's.
    let mut spec = fixture("update")["request"]["object"]["spec"].clone();
    spec["image"] = json!("docker.io/evil/miner:1");
    let evil = for_owner(by_argocd(update(spec.clone())), "alice");
    assert_eq!(reason(&validate(&evil, &gitops())), "ImageDenied");
    spec["image"] = json!("nginx:1.27");
    assert_allowed(&validate(
        &for_owner(by_argocd(update(spec)), "alice"),
        &gitops(),
    ));
    // Pruning.
    assert_allowed(&validate(&by_argocd(fixture("delete")), &gitops()));
    // A controller that may assign only carol may not touch alice's workspaces.
    let carols = Snapshot {
        capabilities: vec![argocd_assigns(&["carol"]), alice_by_name()],
        ..snapshot()
    };
    let decision = validate(&by_argocd(fixture("delete")), &carols);
    assert_eq!(reason(&decision), "NotOwner");
    assert!(
        message(&decision).contains("may not assign its owner"),
        "{}",
        message(&decision)
    );
    // Nor may it give alice's workspace to someone else.
    let renamed = for_owner(by_argocd(fixture("update")), "carol");
    assert_eq!(reason(&mutate(&renamed)), "OwnerAssignmentDenied");
}

#[test]
fn what_the_workspace_reads_must_be_readable_by_its_writer_and_its_owner() {
    let readers = |review: &Value| -> Vec<(String, Vec<String>)> {
        admission::reference_readers(&decode(review))
            .into_iter()
            .map(|r| (r.username.unwrap_or_default(), r.groups.unwrap_or_default()))
            .collect()
    };
    let secret = json!({"image": "nginx", "env": [secret_env("DB", "db")]});
    let own = readers(&by_alice(create(secret.clone())));
    assert_eq!(
        own.iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["alice"]
    );
    let assigned = for_owner(by_argocd(create(secret)), "alice");
    assert_eq!(
        readers(&assigned)[1],
        ("alice".to_owned(), vec!["system:authenticated".to_owned()])
    );
    assert_eq!(readers(&assigned)[0].0, ARGOCD);
    // carol, an admin, changing alice's workspace: alice is asked too, with her recorded groups.
    let carol = by(fixture("update"), "carol", &[]);
    let names: Vec<String> = readers(&carol).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["carol", "alice"]);
    assert_eq!(readers(&by_alice(fixture("update"))).len(), 1);

    let decoded = decode(&assigned);
    let denied = admission::references_to_review(&decoded, &settings())
        .into_iter()
        .map(|reference| DeniedReference {
            reader: "alice".to_owned(),
            reference,
        })
        .collect();
    let refused = admission::validate(
        &decoded,
        &settings(),
        &Snapshot {
            denied_references: denied,
            ..gitops()
        },
    );
    assert_eq!(reason(&refused), "ReferenceDenied");
    assert!(
        message(&refused).contains("/db, which alice may not get"),
        "{}",
        message(&refused)
    );
}
