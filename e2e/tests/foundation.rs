//! The local control plane and the guildnet.io API on a real kube-apiserver: RBAC for the
//! test users, Pods made Running by KWOK, the CRDs installed with their docs, and every
//! invalid Workspace refused by the API server itself with a message naming the field and
//! the fix.

use std::time::Duration;

use guildnet_api::{Workspace, crds};
use guildnet_e2e::{User, client, create_namespace, kubectl, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_deployment_gets_a_running_ready_pod() {
    let admin = client(User::Admin).await;
    let ns = unique_name("pods");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    create_namespace(&admin, &ns, &[]).await;

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let available = await_condition(deployments.clone(), "web", |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.available_replicas)
            == Some(1)
    });
    tokio::time::timeout(TIMEOUT, available)
        .await
        .expect("the Deployment becomes available")
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(admin, &ns);
    let pod = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(pod.len(), 1, "exactly one Pod for one replica");
    let status = pod[0].status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready");
    assert_eq!(
        ready.map(|c| c.status).as_deref(),
        Some("True"),
        "the Pod is Ready"
    );
    assert!(
        pod[0].spec.as_ref().unwrap().node_name.is_some(),
        "the scheduler placed the Pod"
    );

    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn ordinary_users_work_with_workspaces_and_nothing_else() {
    for user in [User::Alice, User::Bob] {
        let out = kubectl(user, &["get", "ws"]);
        assert!(out.success, "{user:?} lists workspaces: {}", out.stderr);
        let who = kubectl(
            user,
            &["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"],
        );
        assert!(
            who.stdout.contains("guildnet:users"),
            "{user:?} is in guildnet:users: {}",
            who.stdout
        );
    }
    let alice = kubectl(
        User::Alice,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    let bob = kubectl(
        User::Bob,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(
        (alice.stdout.as_str(), bob.stdout.as_str()),
        ("alice", "bob"),
        "distinct identities"
    );

    let pods = kubectl(User::Alice, &["get", "pods"]);
    assert!(
        !pods.success && pods.stderr.contains("forbidden"),
        "RBAC denies what was not granted: {}",
        pods.stderr
    );
    let other_ns = kubectl(User::Alice, &["get", "ws", "-n", "kube-system"]);
    assert!(
        !other_ns.success,
        "Workspaces are granted in namespace default only"
    );
}

#[tokio::test]
async fn every_crd_is_established_with_its_docs_and_category() {
    let admin = client(User::Admin).await;
    let installed: Api<CustomResourceDefinition> = Api::all(admin);
    for crd in crds() {
        let name = crd.metadata.name.unwrap();
        let established =
            await_condition(installed.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(TIMEOUT, established)
            .await
            .unwrap_or_else(|_| panic!("{name} is established"))
            .unwrap();
        let live = installed.get(&name).await.unwrap();
        assert!(
            live.spec
                .names
                .categories
                .unwrap_or_default()
                .contains(&"guildnet".to_string())
        );
        let version = &live.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name} has a status subresource"
        );
    }

    let explain = kubectl(User::Alice, &["explain", "workspace.spec.image"]);
    assert!(explain.success, "{}", explain.stderr);
    assert!(
        explain.stdout.contains("The container image to run"),
        "kubectl explain shows the field's doc: {}",
        explain.stdout
    );
    let explain = kubectl(
        User::Admin,
        &["explain", "guilddatabase.spec.databases.tables.name"],
    );
    assert!(
        explain.stdout.contains("letters, digits and `_`"),
        "{}",
        explain.stdout
    );

    let all = kubectl(User::Admin, &["get", "guildnet", "-A"]);
    assert!(
        all.success,
        "kubectl get guildnet lists the category: {}",
        all.stderr
    );
}

/// Each case: a spec, and the field path and the advice the API server's error must contain.
const INVALID_WORKSPACES: &[(&str, &str, &str)] = &[
    // A negative request would give its owner Quota credit.
    (
        r#"{"image": "nginx", "resources": {"requests": {"cpu": "-8"}}}"#,
        "spec.resources",
        "must not be negative",
    ),
    (
        r#"{"image": "nginx", "resources": {"limits": {"memory": "-1Gi"}}}"#,
        "spec.resources",
        "must not be negative",
    ),
    (
        r#"{"image": ""}"#,
        "spec.image",
        "non-empty image reference",
    ),
    (r#"{}"#, "spec.image", "Required value"),
    (
        r#"{"image": "nginx", "ports": [{"containerPort": 70000}]}"#,
        "spec.ports[0].containerPort",
        "between 1 and 65535",
    ),
    (
        r#"{"image": "nginx", "ports": [{"containerPort": 0}]}"#,
        "spec.ports[0].containerPort",
        "between 1 and 65535",
    ),
    (
        r#"{"image": "nginx", "ports": [{"name": "a", "containerPort": 80}, {"name": "b", "containerPort": 80}]}"#,
        "spec.ports",
        "containerPort values must be unique",
    ),
    (
        r#"{"image": "nginx", "ports": [{"name": "web", "containerPort": 80}, {"name": "web", "containerPort": 81}]}"#,
        "spec.ports",
        "names must be unique",
    ),
    (
        r#"{"image": "nginx", "env": [{"name": "1BAD", "value": "x"}]}"#,
        "spec.env[0].name",
        "C identifier",
    ),
    (
        r#"{"image": "nginx", "env": [{"name": "MY-VAR", "value": "x"}]}"#,
        "spec.env[0].name",
        "C identifier",
    ),
    (
        r#"{"image": "nginx", "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}"#,
        "spec.env",
        "names must be unique",
    ),
    (
        r#"{"image": "nginx", "volumes": [{"name": "Home_", "mountPath": "/home", "ephemeral": {}}]}"#,
        "spec.volumes[0].name",
        "DNS label",
    ),
    (
        r#"{"image": "nginx", "volumes": [{"name": "home", "mountPath": "/home", "persistent": {"size": "1Gi"}, "ephemeral": {}}]}"#,
        "spec.volumes[0]",
        "exactly one of persistent or ephemeral",
    ),
    (
        r#"{"image": "nginx", "volumes": [{"name": "home", "mountPath": "/home"}]}"#,
        "spec.volumes[0]",
        "exactly one of persistent or ephemeral",
    ),
    (
        r#"{"image": "nginx", "volumes": [{"name": "home", "mountPath": "/home", "persistent": {"size": "lots"}}]}"#,
        "spec.volumes[0].persistent.size",
        "positive quantity",
    ),
    (
        r#"{"image": "nginx", "volumes": [{"name": "a", "mountPath": "/a", "ephemeral": {}}, {"name": "a", "mountPath": "/b", "ephemeral": {}}]}"#,
        "spec.volumes",
        "names must be unique",
    ),
    (
        r#"{"image": "nginx", "volumes": [{"name": "a", "mountPath": "data", "ephemeral": {}}]}"#,
        "spec.volumes[0].mountPath",
        "absolute path",
    ),
    (
        r#"{"image": "nginx", "lifecycle": {"idleTimeout": "30s"}}"#,
        "spec.lifecycle.idleTimeout",
        "at least 1m",
    ),
    (
        r#"{"image": "nginx", "lifecycle": {"idleTimeout": "soon"}}"#,
        "spec.lifecycle.idleTimeout",
        "at least 1m",
    ),
    (
        r#"{"image": "nginx", "hint": "turbo"}"#,
        "spec.hint",
        "supported values",
    ),
    (
        r#"{"image": "nginx", "probes": {"profile": "slowest"}}"#,
        "spec.probes.profile",
        "supported values",
    ),
    (
        r#"{"image": "nginx", "exposure": {"type": "Ingress"}}"#,
        "spec.exposure",
        "set ingress (with host)",
    ),
    (
        r#"{"image": "nginx", "placement": {"cluster": "a", "clusterSelector": {}}}"#,
        "spec.placement",
        "either cluster or clusterSelector",
    ),
];

#[tokio::test]
async fn invalid_workspaces_are_refused_naming_the_field_and_the_fix() {
    let mut failures = Vec::new();
    for (spec, field, advice) in INVALID_WORKSPACES {
        match create_raw(spec).await {
            Ok(()) => failures.push(format!("{spec}: accepted, expected a refusal naming {field}")),
            Err(message) if !(message.contains(field) && message.contains(advice)) => {
                failures.push(format!("{spec}: refused with {message:?}, expected it to name {field:?} and say {advice:?}"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn negative_quota_and_ceiling_amounts_are_refused() {
    let admin = client(User::Admin).await;
    let quota = json!({"apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": unique_name("neg"), "namespace": "default"},
        "spec": {"perOwner": {"cpu": "-1"}}});
    let caps = json!({"apiVersion": "guildnet.io/v1alpha1", "kind": "Capabilities",
        "metadata": {"name": unique_name("neg")},
        "spec": {"subjects": [{"kind": "User", "name": "alice"}],
                 "resources": {"maxPerWorkspace": {"memory": "-8Gi"}}}});
    for (object, plural, namespaced, field) in [
        (
            quota,
            "quotas",
            true,
            "spec.perOwner.cpu must be a non-negative quantity",
        ),
        (
            caps,
            "capabilities",
            false,
            "memory must be a non-negative quantity",
        ),
    ] {
        let kind = object["kind"].as_str().unwrap().to_owned();
        let resource = kube::api::ApiResource {
            group: "guildnet.io".into(),
            version: "v1alpha1".into(),
            api_version: "guildnet.io/v1alpha1".into(),
            kind,
            plural: plural.into(),
        };
        let api: Api<kube::api::DynamicObject> = if namespaced {
            Api::namespaced_with(admin.clone(), "default", &resource)
        } else {
            Api::all_with(admin.clone(), &resource)
        };
        let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
        let err = api
            .create(&PostParams::default(), &object)
            .await
            .expect_err(plural)
            .to_string();
        assert!(err.contains(field), "{plural}: {err}");
    }
}

#[tokio::test]
async fn a_workspace_name_that_cannot_name_a_service_is_refused() {
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    for name in ["1-ide", &format!("ide-{}", "x".repeat(60))] {
        let ws = Workspace::new(
            name,
            guildnet_api::WorkspaceSpec {
                image: "nginx".into(),
                ..Default::default()
            },
        );
        let err = api
            .create(&PostParams::default(), &ws)
            .await
            .expect_err(name)
            .to_string();
        assert!(
            err.contains("metadata.name must be a DNS label"),
            "{name}: {err}"
        );
    }
}

/// Creates a Workspace from raw JSON as alice (raw, so specs the Rust types cannot even hold
/// reach the server), returning the API server's message on refusal.
async fn create_raw(spec: &str) -> Result<(), String> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client(User::Alice).await,
        "default",
        &kube::api::ApiResource::erase::<Workspace>(&()),
    );
    let obj: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": unique_name("invalid")},
        "spec": serde_json::from_str::<serde_json::Value>(spec).unwrap(),
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_valid_workspace_is_accepted_and_listed_with_its_columns() {
    let name = unique_name("ide");
    let manifest = json!({
        "apiVersion": "guildnet.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {
            "image": "codercom/code-server:4.96.2",
            "env": [{"name": "TZ", "value": "Europe/Berlin"}],
            "ports": [{"name": "http", "containerPort": 8080}],
            "hint": "compute",
            "probes": {"profile": "slow", "path": "/healthz"},
            "volumes": [
                {"name": "home", "mountPath": "/home/coder", "persistent": {"size": "10Gi", "reclaimPolicy": "Retain"}},
                {"name": "scratch", "mountPath": "/tmp", "ephemeral": {"sizeLimit": "1Gi"}}
            ],
            "exposure": {"type": "ClusterIP"},
            "lifecycle": {"idleTimeout": "2h", "ttlSecondsAfterFinished": 86400, "suspend": false}
        }
    });
    let workspaces: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let ws: Workspace = serde_json::from_value(manifest).unwrap();
    workspaces
        .create(&PostParams::default(), &ws)
        .await
        .expect("a valid Workspace is accepted");

    let table = kubectl(User::Alice, &["get", "ws", &name]);
    assert!(table.success, "{}", table.stderr);
    let header: Vec<&str> = table
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "READY", "OWNER", "IMAGE", "URL", "AGE"]
    );
    assert!(
        table.stdout.contains("codercom/code-server:4.96.2"),
        "{}",
        table.stdout
    );

    workspaces
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_cluster_registrations_secret_ref_cannot_change() {
    let admin = client(User::Admin).await;
    let api: Api<guildnet_api::ClusterRegistration> = Api::all(admin);
    let name = unique_name("edge");
    let reg: guildnet_api::ClusterRegistration = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1",
        "kind": "ClusterRegistration",
        "metadata": {"name": name, "labels": {"region": "eu"}},
        "spec": {"kubeconfigSecretRef": {"namespace": "guildnet-system", "name": "edge-kubeconfig"}}
    }))
    .unwrap();
    let mut created = api.create(&PostParams::default(), &reg).await.unwrap();
    created.spec.kubeconfig_secret_ref.name = "other".into();
    let err = api
        .replace(&name, &PostParams::default(), &created)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.kubeconfigSecretRef.name is immutable"),
        "{err}"
    );
    created.spec.kubeconfig_secret_ref.name = "edge-kubeconfig".into();
    created.spec.cordoned = Some(true);
    api.replace(&name, &PostParams::default(), &created)
        .await
        .expect("other fields stay editable");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn guild_database_names_are_validated_by_the_api_server() {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client(User::Admin).await,
        "default",
        &kube::api::ApiResource::erase::<guildnet_api::GuildDatabase>(&()),
    );
    let database = |databases: serde_json::Value| -> kube::api::DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "guildnet.io/v1alpha1",
            "kind": "GuildDatabase",
            "metadata": {"name": unique_name("db")},
            "spec": {"storage": {"size": "1Gi"}, "databases": databases}
        }))
        .unwrap()
    };
    let cases = [
        (
            json!([{"name": "inventory", "tables": [{"name": "bad-name"}]}]),
            "spec.databases[0].tables[0].name",
            "only letters, digits and _",
        ),
        (
            json!([{"name": "inventory", "tables": [{"name": "items"}, {"name": "items"}]}]),
            "spec.databases[0].tables[1]",
            "Duplicate value",
        ),
        (
            json!([{"name": "rethinkdb"}]),
            "spec.databases[0].name",
            "must not be rethinkdb",
        ),
        (
            json!([{"name": "a"}, {"name": "a"}]),
            "spec.databases",
            "names must be unique",
        ),
    ];
    for (databases, field, advice) in cases {
        let err = api
            .create(&PostParams::default(), &database(databases.clone()))
            .await
            .expect_err(&format!("{databases} is refused"))
            .to_string();
        assert!(
            err.contains(field) && err.contains(advice),
            "{databases}: {err}"
        );
    }
    let ok = database(
        json!([{"name": "inventory", "tables": [{"name": "items", "primaryKey": "id"}, {"name": "events"}]}]),
    );
    api.create(&PostParams::default(), &ok)
        .await
        .expect("a valid GuildDatabase is accepted");
}

#[tokio::test]
async fn pod_security_admission_enforces_namespace_levels() {
    let admin = client(User::Admin).await;
    let ns = unique_name("restricted");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    create_namespace(
        &admin,
        &ns,
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin, &ns);
    let root_pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let err = pods
        .create(&PostParams::default(), &root_pod)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("violates PodSecurity \"restricted:latest\""),
        "{err}"
    );

    let hardened: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hardened"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}
            }}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &hardened)
        .await
        .expect("a hardened Pod is admitted");
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
