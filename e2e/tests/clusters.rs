//! Registered clusters on two real control planes: the hub, where the operator runs (as its
//! ServiceAccount, so the chart's RBAC applies), and an edge cluster registered through a
//! kubeconfig Secret. The registration's status follows what the probes find — reachable
//! with the edge's version, a probe time that advances, refusals of kubeconfigs that would
//! reach outside the Secret, an address nothing answers on, a missing namespace, too few
//! permissions, a missing Secret — and removing the registration stops its instance and
//! drops its metric series. Workspaces placed on the edge run there — named, labelled and
//! anchored for this hub — and report from there; an out-of-band deletion there is
//! repaired, a placement nothing matches waits, and an outage of the edge keeps the last
//! status, says so, and ends with no duplicates — also when the leader fails over meanwhile.

use guildnet_api::cluster::facts::{ConditionType, remote_name};
use guildnet_api::common::find_condition;
use guildnet_api::workspace::WorkspacePhase;
use guildnet_api::workspace::facts::ConditionType as WorkspaceCondition;
use guildnet_api::{ClusterRegistration, Quota, Workspace};
use guildnet_e2e::cluster::{Cluster, Operator, free_port, leader_among};
use guildnet_e2e::registrations::{self, SECRETS_NAMESPACE};
use guildnet_e2e::workspaces::{create, manifest, set_suspended, wait_for, wait_gone};
use guildnet_e2e::{User, create_namespace, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);
const SECRET: &str = "edge-kubeconfig";

/// A condition of the registration as `(status, reason, message)`.
async fn condition(
    api: &Api<ClusterRegistration>,
    type_: ConditionType,
) -> Option<(String, String, String)> {
    let registration = api.get("edge").await.ok()?;
    let status = registration.status?;
    let c = find_condition(&status.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until condition `type_` has `status` and `reason`; returns its message. On a
/// timeout, says what the condition was instead.
async fn until_condition(
    api: &Api<ClusterRegistration>,
    type_: ConditionType,
    status: &str,
    reason: &str,
) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let seen = condition(api, type_).await;
        if let Some((s, r, message)) = &seen
            && s == status
            && r == reason
        {
            return message.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{type_} is not {status} ({reason}) after {TIMEOUT:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put_kubeconfig(admin: &kube::Client, kubeconfig: &str) {
    registrations::put_kubeconfig(admin, SECRET, kubeconfig).await;
}

/// The edge's kubeconfig with `change` made to it.
fn edited(kubeconfig: &str, change: impl FnOnce(&mut Kubeconfig)) -> String {
    let mut parsed = Kubeconfig::from_yaml(kubeconfig).expect("the edge's kubeconfig");
    change(&mut parsed);
    serde_yaml::to_string(&parsed).unwrap()
}

/// A token of the edge's ServiceAccount `guildnet` (made, with namespace-wide cluster-admin
/// in guildnet-workspaces, when missing), bound to a Secret `bound_to` there made for it:
/// deleting that Secret revokes the token.
async fn service_account_token(edge_admin: &kube::Client, bound_to: &str) -> String {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::RoleBinding;

    let namespace = "guildnet-workspaces";
    let apply = PatchParams::apply("e2e").force();
    let accounts: Api<ServiceAccount> = Api::namespaced(edge_admin.clone(), namespace);
    let account: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "guildnet"}})).unwrap();
    accounts
        .patch("guildnet", &apply, &Patch::Apply(&account))
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "guildnet"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "guildnet", "namespace": namespace}],
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(edge_admin.clone(), namespace)
        .patch("guildnet", &apply, &Patch::Apply(&binding))
        .await
        .unwrap();
    let anchor: Secret =
        serde_json::from_value(serde_json::json!({"metadata": {"name": bound_to}})).unwrap();
    let anchor = Api::<Secret>::namespaced(edge_admin.clone(), namespace)
        .create(&PostParams::default(), &anchor)
        .await
        .unwrap();
    let request: TokenRequest = serde_json::from_value(serde_json::json!({"spec": {
        "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": bound_to, "uid": anchor.uid()},
        "expirationSeconds": 3600,
    }}))
    .unwrap();
    let issued = accounts
        .create_token_request("guildnet", &PostParams::default(), &request)
        .await
        .unwrap();
    serde_json::to_value(issued).unwrap()["status"]["token"]
        .as_str()
        .expect("an issued token")
        .to_owned()
}

/// `kubeconfig` with its user's credentials replaced by `token`.
fn with_token(kubeconfig: &str, token: &str) -> String {
    edited(kubeconfig, |k| {
        let user = k.auth_infos.iter_mut().find(|u| u.name == "admin").unwrap();
        user.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.to_owned().into()),
            ..Default::default()
        });
    })
}

/// Registers the edge cluster as `edge`, labelled `region=eu`, through [`SECRET`].
async fn register_edge(admin: &kube::Client) -> Api<ClusterRegistration> {
    registrations::register(admin, "edge", SECRET, serde_json::json!({"region": "eu"})).await
}

#[tokio::test]
async fn a_registered_clusters_status_follows_its_probes_and_its_secret() {
    let hub = Cluster::start("clusters-hub");
    let edge = Cluster::start("clusters-edge");
    let admin = hub.client(User::Admin).await;
    let edge_admin = edge.client(User::Admin).await;
    create_namespace(&edge_admin, "guildnet-workspaces", &[]).await;
    let operator = Operator::start_as_service_account(
        &hub,
        "op",
        &["--leader-elect=false", "--cluster-probe-interval", "1s"],
    );
    let kubeconfig = std::fs::read_to_string(edge.kubeconfig()).unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), SECRETS_NAMESPACE);
    put_kubeconfig(&admin, &kubeconfig).await;
    let registrations = register_edge(&admin).await;

    // Reachable and ready, with the edge's version and the time it last answered.
    until_condition(
        &registrations,
        ConditionType::Reachable,
        "True",
        "ProbeSucceeded",
    )
    .await;
    let message =
        until_condition(&registrations, ConditionType::Ready, "True", "ClusterReady").await;
    assert!(message.contains("guildnet-workspaces"), "{message}");
    let status = registrations.get("edge").await.unwrap().status.unwrap();
    assert_eq!(status.version.as_deref(), Some("v1.37.2"));
    assert_eq!(status.workspaces, Some(0));
    let first_probe = status.last_probe_time.expect("lastProbeTime").0;
    // Refreshed every three probes while nothing else changes.
    eventually("lastProbeTime advancing", TIMEOUT, || async {
        let status = registrations.get("edge").await.ok()?.status?;
        (status.last_probe_time?.0 > first_probe).then_some(())
    })
    .await;
    let reachable = "guildnet_cluster_reachable{cluster=\"edge\"}";
    eventually("the reachable gauge", TIMEOUT, || async {
        (operator.metrics().await?.value(reachable) == 1.0).then_some(())
    })
    .await;

    // A kubeconfig that would run a program on GuildNet's machine is refused, naming
    // the field; with no way to reach the cluster, it turns unreachable.
    let exec = edited(&kubeconfig, |k| {
        let admin = k.auth_infos.iter_mut().find(|u| u.name == "admin").unwrap();
        let user = admin.auth_info.as_mut().unwrap();
        user.exec = Some(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "/bin/sh",
                "args": ["-c", "touch /tmp/guildnet-exec-ran"],
            }))
            .unwrap(),
        );
    });
    put_kubeconfig(&admin, &exec).await;
    let message = until_condition(
        &registrations,
        ConditionType::Ready,
        "False",
        "KubeconfigInvalid",
    )
    .await;
    assert!(
        message.starts_with(r#"users["admin"].user.exec runs a program"#),
        "{message}"
    );
    until_condition(
        &registrations,
        ConditionType::Reachable,
        "False",
        "ProbeFailed",
    )
    .await;

    // Back to the real kubeconfig: reachable again, without a restart.
    put_kubeconfig(&admin, &kubeconfig).await;
    until_condition(&registrations, ConditionType::Ready, "True", "ClusterReady").await;

    // An address nothing answers on: unreachable after the failed probes, saying since
    // when; the version stays as last known.
    let nowhere = edited(&kubeconfig, |k| {
        let cluster = k.clusters[0].cluster.as_mut().unwrap();
        cluster.server = Some(format!("https://127.0.0.1:{}", free_port()));
    });
    let before = Timestamp::now();
    put_kubeconfig(&admin, &nowhere).await;
    let message = until_condition(
        &registrations,
        ConditionType::Reachable,
        "False",
        "ProbeFailed",
    )
    .await;
    assert!(message.contains("has not answered since"), "{message}");
    until_condition(&registrations, ConditionType::Ready, "False", "Unreachable").await;
    let status = registrations.get("edge").await.unwrap().status.unwrap();
    assert_eq!(status.version.as_deref(), Some("v1.37.2"));
    let went = find_condition(&status.conditions, ConditionType::Reachable).unwrap();
    // Transition times are written in whole seconds.
    assert!(went.last_transition_time.0.as_second() >= before.as_second());
    eventually("the reachable gauge at 0", TIMEOUT, || async {
        (operator.metrics().await?.value(reachable) == 0.0).then_some(())
    })
    .await;
    put_kubeconfig(&admin, &kubeconfig).await;
    until_condition(
        &registrations,
        ConditionType::Reachable,
        "True",
        "ProbeSucceeded",
    )
    .await;
    until_condition(&registrations, ConditionType::Ready, "True", "ClusterReady").await;

    // Rotated credentials of one identity: a ServiceAccount's token, then a new token of
    // it with the old one revoked. Ready throughout, never flapping, and no restart.
    let ready_since = |status: &guildnet_api::cluster::ClusterRegistrationStatus| {
        find_condition(&status.conditions, ConditionType::Ready)
            .map(|c| c.last_transition_time.clone())
    };
    let first_token = service_account_token(&edge_admin, "token-a").await;
    put_kubeconfig(&admin, &with_token(&kubeconfig, &first_token)).await;
    let status = registrations.get("edge").await.unwrap().status.unwrap();
    let since = ready_since(&status);
    let second_token = service_account_token(&edge_admin, "token-b").await;
    put_kubeconfig(&admin, &with_token(&kubeconfig, &second_token)).await;
    Api::<Secret>::namespaced(edge_admin.clone(), "guildnet-workspaces")
        .delete("token-a", &DeleteParams::default())
        .await
        .unwrap();
    let revoked = Kubeconfig::from_yaml(&with_token(&kubeconfig, &first_token)).unwrap();
    let revoked = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(revoked, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    eventually("the first token refused", TIMEOUT, || async {
        match revoked.apiserver_version().await {
            Err(kube::Error::Api(status)) if status.code == 401 => Some(()),
            _ => None,
        }
    })
    .await;
    let rotated = Timestamp::now();
    let status = eventually("probes answering after the rotation", TIMEOUT, || async {
        let status = registrations.get("edge").await.ok()?.status?;
        (status.last_probe_time.as_ref()?.0 > rotated).then_some(status)
    })
    .await;
    assert_eq!(
        ready_since(&status),
        since,
        "Ready never flipped: {status:?}"
    );
    assert_eq!(
        condition(&registrations, ConditionType::Ready)
            .await
            .unwrap()
            .1,
        "ClusterReady"
    );
    put_kubeconfig(&admin, &kubeconfig).await;

    // A namespace the edge does not have: answering, but not ready.
    registrations
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"namespace": "absent"}})),
        )
        .await
        .unwrap();
    let message = until_condition(
        &registrations,
        ConditionType::Ready,
        "False",
        "NamespaceNotFound",
    )
    .await;
    assert!(
        message.contains("namespace absent does not exist"),
        "{message}"
    );
    assert_eq!(
        condition(&registrations, ConditionType::Reachable)
            .await
            .unwrap()
            .0,
        "True"
    );
    registrations
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"namespace": null}})),
        )
        .await
        .unwrap();
    until_condition(&registrations, ConditionType::Ready, "True", "ClusterReady").await;

    // Alice may not manage Deployments in the edge's namespace.
    let as_alice = edited(&kubeconfig, |k| k.current_context = Some("alice".into()));
    put_kubeconfig(&admin, &as_alice).await;
    let message = until_condition(
        &registrations,
        ConditionType::Ready,
        "False",
        "InsufficientPermissions",
    )
    .await;
    assert!(
        message.contains("may not patch deployments.apps"),
        "{message}"
    );

    // No Secret at all.
    secrets
        .delete(SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let message = until_condition(
        &registrations,
        ConditionType::Ready,
        "False",
        "SecretNotFound",
    )
    .await;
    assert!(
        message.contains("Secret guildnet-system/edge-kubeconfig does not exist"),
        "{message}"
    );
    assert!(
        !std::path::Path::new("/tmp/guildnet-exec-ran").exists(),
        "the refused exec plugin ran"
    );

    // Removing the registration stops its instance: its series are gone, and it says so.
    registrations
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the cluster's series removed", TIMEOUT, || async {
        let metrics = operator.metrics().await?;
        let stopped = operator.log_lines().iter().any(|line| {
            line["fields"]["message"] == "stopped the registered cluster's instance"
                && line["fields"]["cluster"] == "edge"
        });
        (stopped && !metrics.has(reachable)).then_some(())
    })
    .await;
    // The only complaints: that the cluster became unreachable, and kube's own line for each
    // request to the address nothing answers on.
    let unexpected: Vec<String> = operator
        .complaints()
        .into_iter()
        .filter(|line| !line.contains("the registered cluster is unreachable"))
        .filter(|line| !line.contains("failed with error client error (Connect)"))
        .collect();
    assert_eq!(unexpected, Vec::<String>::new());
}

/// A workspace condition as `(status, reason)`.
fn workspace_condition(ws: &Workspace, type_: WorkspaceCondition) -> Option<(String, String)> {
    let c = find_condition(&ws.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Waits until the workspace `name` has condition `type_` with `status` and `reason`.
async fn until_workspace(
    workspaces: &Api<Workspace>,
    name: &str,
    type_: WorkspaceCondition,
    status: &str,
    reason: &str,
) -> Workspace {
    let what = format!("{type_} {status} ({reason})");
    wait_for(workspaces, name, &what, |ws| {
        has_condition(ws, type_, status, reason)
    })
    .await
}

fn has_condition(ws: &Workspace, type_: WorkspaceCondition, status: &str, reason: &str) -> bool {
    workspace_condition(ws, type_) == Some((status.to_owned(), reason.to_owned()))
}

#[tokio::test]
async fn a_placed_workspace_runs_on_its_cluster_and_outlives_an_outage_there() {
    let hub = Cluster::start("placed-hub");
    let edge = Cluster::start("placed-edge");
    let admin = hub.client(User::Admin).await;
    let edge_admin = edge.client(User::Admin).await;
    const THERE: &str = "guildnet-workspaces";
    create_namespace(&edge_admin, THERE, &[]).await;
    create_namespace(&admin, "team-a", &[]).await;
    // Two replicas electing a leader: the leader fails over during an outage below.
    let mut replicas = vec![
        Operator::start_as_service_account(&hub, "op-a", OPERATOR_ARGS),
        Operator::start_as_service_account(&hub, "op-b", OPERATOR_ARGS),
    ];
    let leader = leader_among(&replicas.iter().collect::<Vec<_>>(), TIMEOUT).await;
    let kubeconfig = std::fs::read_to_string(edge.kubeconfig()).unwrap();
    put_kubeconfig(&admin, &kubeconfig).await;
    let registrations = register_edge(&admin).await;
    until_condition(&registrations, ConditionType::Ready, "True", "ClusterReady").await;

    // Placed by name: it runs on the edge under its name there, and says so.
    let workspaces: Api<Workspace> = Api::namespaced(admin.clone(), "team-a");
    create(&workspaces, "ide", placed_spec()).await;
    let name = remote_name("team-a", "ide");
    let ws = wait_for(&workspaces, "ide", "running on the edge", is_running).await;
    let status = ws.status.clone().unwrap();
    assert_eq!(status.cluster.as_deref(), Some("edge"));
    assert_eq!(status.remote_namespace.as_deref(), Some(THERE));
    assert_eq!(status.remote_name.as_deref(), Some(name.as_str()));
    assert_eq!(status.ready_replicas, Some(1));
    assert!(has_condition(
        &ws,
        WorkspaceCondition::Degraded,
        "False",
        "ClusterReachable"
    ));
    assert_eq!(
        status.service_dns,
        Some(format!("{name}.{THERE}.svc.cluster.local"))
    );
    // Nothing of it in the hub.
    let hub_deployments: Api<Deployment> = Api::namespaced(admin.clone(), "team-a");
    assert!(hub_deployments.get_opt("ide").await.unwrap().is_none());

    // There, everything is owned by one anchor that names this hub and the workspace.
    let anchors: Api<ConfigMap> = Api::namespaced(edge_admin.clone(), THERE);
    let anchor = anchors.get(&name).await.expect("the anchor on the edge");
    let labels = anchor.labels();
    let hub_id = admin_kube_system_uid(&admin).await;
    assert_eq!(labels["guildnet.io/origin"], hub_id);
    assert_eq!(labels["guildnet.io/hub-namespace"], "team-a");
    assert_eq!(labels["guildnet.io/hub-name"], "ide");
    assert_eq!(labels["guildnet.io/hub-uid"], ws.uid().unwrap());
    let deployments: Api<Deployment> = Api::namespaced(edge_admin.clone(), THERE);
    let deployment = deployments
        .get(&name)
        .await
        .expect("the Deployment on the edge");
    let service = Api::<Service>::namespaced(edge_admin.clone(), THERE)
        .get(&name)
        .await
        .expect("the Service on the edge");
    for (kind, meta) in [
        ("Deployment", &deployment.metadata),
        ("Service", &service.metadata),
    ] {
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o.kind == "ConfigMap" && o.uid == anchor.uid().unwrap()),
            "{kind} is owned by the anchor: {owners:?}"
        );
        assert_eq!(meta.labels.as_ref().unwrap()["guildnet.io/origin"], hub_id);
    }
    eventually("the registration counting it", TIMEOUT, || async {
        let status = registrations.get("edge").await.ok()?.status?;
        (status.workspaces == Some(1)).then_some(())
    })
    .await;

    // Deleted there out of band: made again.
    deployments
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let old_uid = deployment.uid().unwrap();
    eventually("the edge Deployment repaired", TIMEOUT, || async {
        let again = deployments.get_opt(&name).await.ok()??;
        (again.uid()? != old_uid).then_some(())
    })
    .await;

    // A selector nothing matches: pending, saying why; a cluster that comes to match
    // takes it.
    create(
        &workspaces,
        "lab",
        serde_json::json!({"image": "nginx", "placement": {"clusterSelector": {"matchLabels": {"region": "mars"}}}}),
    )
    .await;
    let ws = until_workspace(
        &workspaces,
        "lab",
        WorkspaceCondition::Ready,
        "False",
        "NoMatchingCluster",
    )
    .await;
    assert_eq!(ws.status.unwrap().phase, Some(WorkspacePhase::Pending));
    registrations
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"region": "mars"}}})),
        )
        .await
        .unwrap();
    let ws = wait_for(&workspaces, "lab", "placed by its selector", |ws| {
        ws.status.as_ref().is_some_and(|s| {
            s.cluster.as_deref() == Some("edge") && s.phase == Some(WorkspacePhase::Running)
        })
    })
    .await;
    assert_eq!(
        ws.status.unwrap().remote_name,
        Some(remote_name("team-a", "lab"))
    );

    // The edge stops answering: the workspace keeps its last status and says since when.
    let nowhere = edited(&kubeconfig, |k| {
        let cluster = k.clusters[0].cluster.as_mut().unwrap();
        cluster.server = Some(format!("https://127.0.0.1:{}", free_port()));
    });
    put_kubeconfig(&admin, &nowhere).await;
    let ws = until_workspace(
        &workspaces,
        "ide",
        WorkspaceCondition::Degraded,
        "True",
        "ClusterUnreachable",
    )
    .await;
    let status = ws.status.clone().unwrap();
    assert_eq!(status.phase, Some(WorkspacePhase::Running), "as last seen");
    assert_eq!(status.cluster.as_deref(), Some("edge"), "never moved");
    let degraded = find_condition(&status.conditions, WorkspaceCondition::Degraded).unwrap();
    assert!(
        degraded.message.contains("has not answered since"),
        "{}",
        degraded.message
    );

    // Recovered: the condition clears, and the edge holds one of everything, as before.
    put_kubeconfig(&admin, &kubeconfig).await;
    for workspace in ["ide", "lab"] {
        wait_for(&workspaces, workspace, "reachable again", |ws| {
            has_condition(
                ws,
                WorkspaceCondition::Degraded,
                "False",
                "ClusterReachable",
            ) && ws.status.as_ref().unwrap().phase == Some(WorkspacePhase::Running)
        })
        .await;
    }
    let ours = ListParams::default().labels(&format!("guildnet.io/origin={hub_id}"));
    let mut names: Vec<String> = deployments
        .list(&ours)
        .await
        .unwrap()
        .items
        .iter()
        .map(|d| d.name_any())
        .collect();
    names.sort();
    let mut expected = vec![name.clone(), remote_name("team-a", "lab")];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(anchors.get(&name).await.unwrap().uid(), anchor.uid());

    // A short hang of the edge's API server (shorter than a probe's timeout and the
    // threshold) flips nothing.
    let reachable_since = |registration: &ClusterRegistration| {
        let status = registration.status.as_ref()?;
        let c = find_condition(&status.conditions, ConditionType::Reachable)?;
        Some((c.status.clone(), c.last_transition_time.clone()))
    };
    let before = reachable_since(&registrations.get("edge").await.unwrap());
    let paused = edge.pause_api_server();
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(paused);
    let resumed = Timestamp::now();
    eventually("a probe answered after the hang", TIMEOUT, || async {
        let status = registrations.get("edge").await.ok()?.status?;
        (status.last_probe_time?.0 > resumed).then_some(())
    })
    .await;
    assert_eq!(
        reachable_since(&registrations.get("edge").await.unwrap()),
        before
    );
    let ws = workspaces.get("ide").await.unwrap();
    assert!(has_condition(
        &ws,
        WorkspaceCondition::Degraded,
        "False",
        "ClusterReachable"
    ));

    // A long hang: the placed workspaces turn Degraded, while a workspace on the hub starts
    // as ever; after it, everything is as before, once.
    let paused = edge.pause_api_server();
    create(&workspaces, "here", serde_json::json!({"image": "nginx"})).await;
    wait_for(
        &workspaces,
        "here",
        "running on the hub during the hang",
        is_running,
    )
    .await;
    until_workspace(
        &workspaces,
        "ide",
        WorkspaceCondition::Degraded,
        "True",
        "ClusterUnreachable",
    )
    .await;
    drop(paused);
    until_workspace(
        &workspaces,
        "ide",
        WorkspaceCondition::Degraded,
        "False",
        "ClusterReachable",
    )
    .await;
    let mut after: Vec<String> = (deployments.list(&ours).await.unwrap().items.iter())
        .map(|d| d.name_any())
        .collect();
    after.sort();
    assert_eq!(after, expected, "no duplicates after the hang");

    // Idle reaping treats a placed workspace as a local one: a minute after it became
    // Ready with no traffic since, it is suspended, zero replicas there (checked at the
    // end, so the rest of the test runs meanwhile).
    let mut idle = placed_spec();
    idle["lifecycle"] = serde_json::json!({"idleTimeout": "1m"});
    create(&workspaces, "idle", idle).await;
    let idle_name = remote_name("team-a", "idle");

    let ws = workspaces.get("ide").await.unwrap();
    assert!(
        ws.finalizers()
            .contains(&"guildnet.io/remote-cleanup".to_owned()),
        "a placed workspace carries the cleanup finalizer: {:?}",
        ws.finalizers()
    );

    // The sweeper deletes this hub's anchors whose workspace is gone, never another hub's.
    let stray_anchor = |name: &str, origin: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {
                "guildnet.io/managed": "true", "guildnet.io/origin": origin,
                "guildnet.io/hub-namespace": "team-a", "guildnet.io/hub-name": "gone",
            }},
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    anchors
        .create(&pp, &stray_anchor("gone-1", &hub_id))
        .await
        .unwrap();
    anchors
        .create(&pp, &stray_anchor("theirs-1", "another-hub"))
        .await
        .unwrap();
    wait_gone(&anchors, "gone-1").await;

    // Deleted while the edge answers: its objects there go first, then the workspace.
    let lab_name = remote_name("team-a", "lab");
    workspaces
        .delete("lab", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&workspaces, "lab").await;
    assert!(
        anchors.get_opt(&lab_name).await.unwrap().is_none(),
        "the lab's anchor is gone"
    );
    wait_gone(&deployments, &lab_name).await;

    // The edge stops answering and the leader stops meanwhile: the standby takes over, and
    // nothing is deleted.
    put_kubeconfig(&admin, &nowhere).await;
    until_workspace(
        &workspaces,
        "ide",
        WorkspaceCondition::Degraded,
        "True",
        "ClusterUnreachable",
    )
    .await;
    let ide_deployment = deployments.get(&name).await.unwrap().uid();
    let mut stopped = replicas.remove(leader);
    stopped.terminate();
    stopped.exited(TIMEOUT).await.expect("the leader stopped");
    let operator = replicas.pop().unwrap();
    leader_among(&[&operator], TIMEOUT).await;
    let unreachable = "guildnet_cluster_reachable{cluster=\"edge\"}";
    eventually("the new leader seeing the outage", TIMEOUT, || async {
        let metrics = operator.metrics().await?;
        (metrics.has(unreachable) && metrics.value(unreachable) == 0.0).then_some(())
    })
    .await;
    // Deleted while it does not answer: it stays, saying why and how to let go.
    workspaces
        .delete("ide", &DeleteParams::default())
        .await
        .unwrap();
    until_workspace(
        &workspaces,
        "ide",
        WorkspaceCondition::Ready,
        "False",
        "CleanupPending",
    )
    .await;
    assert_eq!(deployments.get(&name).await.unwrap().uid(), ide_deployment);
    assert!(workspaces.get_opt("ide").await.unwrap().is_some());
    // Back: the cleanup finishes.
    put_kubeconfig(&admin, &kubeconfig).await;
    wait_gone(&workspaces, "ide").await;
    wait_gone(&anchors, &name).await;
    wait_gone(&deployments, &name).await;

    // Let go of while it does not answer: the workspace goes at once and its objects there
    // stay until the edge answers again, when the sweeper removes them.
    create(&workspaces, "keep", placed_spec()).await;
    let keep_name = remote_name("team-a", "keep");
    wait_for(&workspaces, "keep", "running on the edge", is_running).await;
    put_kubeconfig(&admin, &nowhere).await;
    until_workspace(
        &workspaces,
        "keep",
        WorkspaceCondition::Degraded,
        "True",
        "ClusterUnreachable",
    )
    .await;
    workspaces
        .delete("keep", &DeleteParams::default())
        .await
        .unwrap();
    until_workspace(
        &workspaces,
        "keep",
        WorkspaceCondition::Ready,
        "False",
        "CleanupPending",
    )
    .await;
    workspaces
        .patch(
            "keep",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"guildnet.io/orphan-remote": "true"}}})),
        )
        .await
        .unwrap();
    wait_gone(&workspaces, "keep").await;
    assert!(
        anchors.get_opt(&keep_name).await.unwrap().is_some(),
        "left there"
    );
    put_kubeconfig(&admin, &kubeconfig).await;
    wait_gone(&anchors, &keep_name).await;

    // The registration removed: its workspaces say so; registered again, they resume there
    // with the objects they had.
    create(&workspaces, "late", placed_spec()).await;
    let late_name = remote_name("team-a", "late");
    wait_for(&workspaces, "late", "running on the edge", is_running).await;
    let late_anchor = anchors.get(&late_name).await.unwrap().uid();
    let applied =
        "guildnet_cluster_workspace_reconciles_total{cluster=\"edge\",result=\"applied\"}";
    let scrape = operator.metrics().await.expect("the leader's metrics");
    assert!(scrape.value(applied) >= 1.0, "{scrape:?}");
    registrations
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    until_workspace(
        &workspaces,
        "late",
        WorkspaceCondition::Degraded,
        "True",
        "ClusterRemoved",
    )
    .await;
    // The cluster's metric series went with its registration, and stay gone.
    let scrape = operator.metrics().await.expect("the leader's metrics");
    assert_eq!(scrape.labelled("cluster=\"edge\""), Vec::<&str>::new());
    register_edge(&admin).await;
    until_workspace(
        &workspaces,
        "late",
        WorkspaceCondition::Degraded,
        "False",
        "ClusterReachable",
    )
    .await;
    assert_eq!(anchors.get(&late_name).await.unwrap().uid(), late_anchor);

    // ttlSecondsAfterFinished treats a placed workspace as a local one: suspended (zero
    // replicas there), it is deleted after its TTL, its objects there with it.
    let mut short = placed_spec();
    short["lifecycle"] = serde_json::json!({"ttlSecondsAfterFinished": 2});
    create(&workspaces, "short", short).await;
    let short_name = remote_name("team-a", "short");
    wait_for(&workspaces, "short", "running on the edge", is_running).await;
    set_suspended(&workspaces, "short", true).await;
    eventually("zero replicas on the edge", TIMEOUT, || async {
        let there = deployments.get_opt(&short_name).await.ok()??;
        (there.spec.replicas == Some(0)).then_some(())
    })
    .await;
    wait_gone(&workspaces, "short").await;
    wait_gone(&anchors, &short_name).await;

    // A claim retained on the edge counts for its owner in the hub's Quota, as one retained
    // on the hub does.
    let quota: Quota = serde_json::from_value(serde_json::json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "storage"},
        "spec": {"perOwner": {"storage": "100Gi"}},
    }))
    .unwrap();
    let quotas: Api<Quota> = Api::namespaced(admin.clone(), "team-a");
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let mut spec = placed_spec();
    spec["volumes"] =
        serde_json::json!([{"name": "home", "mountPath": "/data", "persistent": {"size": "3Gi"}}]);
    let mut data = manifest("data", spec);
    data.metadata.labels = Some([("guildnet.io/owner".to_owned(), "owner-1".to_owned())].into());
    workspaces
        .create(&PostParams::default(), &data)
        .await
        .unwrap();
    wait_for(&workspaces, "data", "running on the edge", is_running).await;
    workspaces
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&workspaces, "data").await;
    let claim = format!("{}-home", remote_name("team-a", "data"));
    let retained = Api::<PersistentVolumeClaim>::namespaced(edge_admin.clone(), THERE)
        .get(&claim)
        .await
        .expect("the claim retained on the edge");
    assert!(
        retained
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    eventually("the Quota counting the retained claim", TIMEOUT, || async {
        let status = quotas.get("storage").await.ok()?.status?;
        let owner = status.usage.iter().find(|u| u.owner == "owner-1")?;
        (owner.storage.as_ref()?.0 == "3Gi" && owner.workspaces == 0).then_some(())
    })
    .await;
    // A placed code-server's generated password is kept on the hub, beside the workspace,
    // where its users read it (status.passwordSecret), and its cluster runs with the same.
    let mut ide = placed_spec();
    ide["image"] = serde_json::json!("codercom/code-server:4.96.4");
    create(&workspaces, "coder", ide).await;
    let ws = wait_for(&workspaces, "coder", "running on the edge", is_running).await;
    assert_eq!(
        ws.status.unwrap().password_secret.as_deref(),
        Some("coder-password")
    );
    let here = Api::<Secret>::namespaced(admin.clone(), "team-a")
        .get("coder-password")
        .await
        .expect("the hub's copy of the password");
    assert_eq!(
        here.owner_references().first().map(|o| o.uid.as_str()),
        workspaces.get("coder").await.unwrap().uid().as_deref()
    );
    let there = Api::<Secret>::namespaced(edge_admin.clone(), THERE)
        .get(&format!("{}-password", remote_name("team-a", "coder")))
        .await
        .expect("the password Secret on the edge");
    assert_eq!(
        here.data.as_ref().unwrap()["password"],
        there.data.as_ref().unwrap()["password"]
    );
    workspaces
        .delete("coder", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&workspaces, "coder").await;

    // The registration lists it for the webhook, which counts it at admission (the
    // webhook's side is shown in tests/webhook.rs).
    eventually(
        "the registration listing the retained claim",
        TIMEOUT,
        || async {
            let status = registrations.get("edge").await.ok()?.status?;
            let listed = status
                .retained_claims
                .iter()
                .find(|c| c.owner == "owner-1")?;
            assert_eq!(
                (
                    listed.namespace.as_str(),
                    listed.name.as_str(),
                    listed.storage.0.as_str()
                ),
                ("team-a", "data-home", "3Gi")
            );
            Some(())
        },
    )
    .await;

    let suspended = kube::runtime::wait::await_condition(
        workspaces.clone(),
        "idle",
        |ws: Option<&Workspace>| ws.is_some_and(Workspace::is_suspended),
    );
    tokio::time::timeout(Duration::from_secs(120), suspended)
        .await
        .expect("the idle placed workspace suspended within its idle timeout and a minute")
        .unwrap();
    eventually(
        "zero replicas of the idle workspace there",
        TIMEOUT,
        || async {
            let there = deployments.get_opt(&idle_name).await.ok()??;
            (there.spec.replicas == Some(0)).then_some(())
        },
    )
    .await;

    assert!(
        anchors.get_opt("theirs-1").await.unwrap().is_some(),
        "another hub's anchor stays"
    );
    let unexpected: Vec<String> = operator
        .complaints()
        .into_iter()
        .filter(|line| !line.contains("the registered cluster is unreachable"))
        .filter(|line| !line.contains("failed with error client error (Connect)"))
        .collect();
    assert_eq!(unexpected, Vec::<String>::new());
}

/// The operator replicas of the placement test: probing every second, sweeping every
/// second.
const OPERATOR_ARGS: &[&str] = &["--cluster-probe-interval", "1s", "--reap-interval", "1s"];

fn placed_spec() -> serde_json::Value {
    serde_json::json!({"image": "nginx", "placement": {"cluster": "edge"}})
}

fn is_running(ws: &Workspace) -> bool {
    ws.status
        .as_ref()
        .is_some_and(|s| s.phase == Some(WorkspacePhase::Running))
}

/// The hub's id as the operator takes it by default: the uid of its kube-system namespace.
async fn admin_kube_system_uid(admin: &kube::Client) -> String {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    namespaces.get("kube-system").await.unwrap().uid().unwrap()
}
