//! The Workspace controller on a real API server: children, hardening, garbage collection,
//! failures, suspend/resume, TTL, idle reaping and debounced bursts of edits.

use std::time::Duration;

use guildnet_api::Workspace;
use guildnet_e2e::workspaces::{create, manifest, set_suspended, wait_for, wait_gone};
use guildnet_e2e::{User, client, create_namespace, kubectl, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

fn condition(ws: &Workspace, type_: &str) -> Option<(String, String)> {
    let c = ws
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

fn has_condition(ws: &Workspace, type_: &str, status: &str, reason: &str) -> bool {
    condition(ws, type_) == Some((status.into(), reason.into()))
}

fn phase(ws: &Workspace) -> String {
    ws.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_default()
}

async fn events_for(admin: &Client, namespace: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(admin.clone(), namespace);
    let list = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap();
    list.items.into_iter().filter_map(|e| e.reason).collect()
}

#[tokio::test]
async fn code_server_becomes_ready_hardened_and_is_garbage_collected_but_keeps_its_volume() {
    let name = unique_name("ide");
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let spec = json!({
        "image": "codercom/code-server:latest",
        "volumes": [{"name": "home", "mountPath": "/home/coder", "persistent": {"size": "1Gi"}}]
    });
    create(&alice, &name, spec).await;

    // What a user types, exactly.
    let wait = kubectl(
        User::Alice,
        &[
            "wait",
            "--for=condition=Ready",
            &format!("ws/{name}"),
            "--timeout=60s",
        ],
    );
    assert!(
        wait.success,
        "kubectl wait returns once Ready: {} {}",
        wait.stdout, wait.stderr
    );

    let admin = client(User::Admin).await;
    let ws = alice.get(&name).await.unwrap();
    let status = ws.status.clone().unwrap();
    assert_eq!(phase(&ws), "Running");
    assert_eq!(status.ready_replicas, Some(1));
    assert_eq!(
        status.proxy_target.as_deref(),
        Some(format!("/w/default/{name}/").as_str())
    );
    assert_eq!(status.volume_claims, vec![format!("{name}-home")]);
    let secret_name = status
        .password_secret
        .clone()
        .expect("code-server gets a password Secret");

    let uid = ws.uid().unwrap();
    let deployment = Api::<Deployment>::namespaced(admin.clone(), "default")
        .get(&name)
        .await
        .unwrap();
    let service = Api::<Service>::namespaced(admin.clone(), "default")
        .get(&name)
        .await
        .unwrap();
    let secret = Api::<Secret>::namespaced(admin.clone(), "default")
        .get(&secret_name)
        .await
        .unwrap();
    for (kind, meta) in [
        ("Deployment", &deployment.metadata),
        ("Service", &service.metadata),
        ("Secret", &secret.metadata),
    ] {
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("guildnet.io/managed").map(String::as_str),
            Some("true"),
            "{kind} labels"
        );
        assert_eq!(labels.get("guildnet.io/id"), Some(&name), "{kind} labels");
        let owner = meta.owner_references.clone().unwrap_or_default();
        assert!(
            owner
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true)),
            "{kind} is owned by the Workspace"
        );
    }
    assert_eq!(
        service.spec.as_ref().unwrap().publish_not_ready_addresses,
        Some(true)
    );

    let pod = deployment.spec.template.spec.unwrap();
    let pod_security = pod.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(
        pod_security.seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );
    let container = &pod.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    let args = container.args.clone().unwrap_or_default().join(" ");
    assert!(
        args.contains("--bind-addr 0.0.0.0:8080") && args.contains("--auth password"),
        "{args}"
    );
    let password_env = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PASSWORD")
        .unwrap();
    let from = password_env
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(
        from.name, secret_name,
        "the password comes from the per-workspace Secret, never a literal"
    );
    assert!(password_env.value.is_none());

    let events = events_for(&admin, "default", &name).await;
    assert!(
        events.contains(&"Launched".into()) && events.contains(&"Ready".into()),
        "{events:?}"
    );

    alice
        .delete(&name, &DeleteParams::foreground())
        .await
        .unwrap();
    wait_gone(&alice, &name).await;
    wait_gone(
        &Api::<Deployment>::namespaced(admin.clone(), "default"),
        &name,
    )
    .await;
    wait_gone(&Api::<Service>::namespaced(admin.clone(), "default"), &name).await;
    wait_gone(
        &Api::<Secret>::namespaced(admin.clone(), "default"),
        &secret_name,
    )
    .await;
    let pvc = Api::<PersistentVolumeClaim>::namespaced(admin, "default")
        .get_opt(&format!("{name}-home"))
        .await
        .unwrap();
    let pvc = pvc.expect("a Retain volume outlives its workspace");
    assert!(
        pvc.metadata.deletion_timestamp.is_none(),
        "and is not being deleted"
    );
}

#[tokio::test]
async fn a_workspace_runs_in_a_restricted_pod_security_namespace() {
    let admin = client(User::Admin).await;
    let ns = unique_name("restricted");
    create_namespace(
        &admin,
        &ns,
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), &ns);
    let name = unique_name("ide");
    create(&api, &name, json!({"image": "codercom/code-server:4.96.2"})).await;
    wait_for(&api, &name, "Ready under PSA restricted", |ws| {
        has_condition(ws, "Ready", "True", "DeploymentReady")
    })
    .await;
    Api::<Namespace>::all(admin)
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_crash_loop_fails_the_workspace_and_fixing_the_image_clears_it() {
    let api: Api<Workspace> = Api::namespaced(client(User::Admin).await, "default");
    let name = unique_name("crash");
    create(
        &api,
        &name,
        json!({"image": "registry.guildnet.test/crashloop:1"}),
    )
    .await;
    let failed = wait_for(&api, &name, "Failed/CrashLoopBackOff", |ws| {
        has_condition(ws, "Failed", "True", "CrashLoopBackOff")
    })
    .await;
    assert_eq!(phase(&failed), "Failed");
    assert!(has_condition(&failed, "Ready", "False", "CrashLoopBackOff"));

    let fix = json!({"spec": {"image": "nginx:1.27"}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(fix))
        .await
        .unwrap();
    let fixed = wait_for(&api, &name, "Ready after the fix", |ws| {
        has_condition(ws, "Ready", "True", "DeploymentReady")
    })
    .await;
    assert!(has_condition(&fixed, "Failed", "False", "Healthy"));
    assert_eq!(phase(&fixed), "Running");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_workspace() {
    let api: Api<Workspace> = Api::namespaced(client(User::Admin).await, "default");
    let name = unique_name("pull");
    create(
        &api,
        &name,
        json!({"image": "registry.guildnet.test/missing:1"}),
    )
    .await;
    let ws = wait_for(&api, &name, "Failed/ImagePullFailed", |ws| {
        has_condition(ws, "Failed", "True", "ImagePullFailed")
    })
    .await;
    let message = &ws
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .message;
    assert!(
        message.contains("registry.guildnet.test/missing:1") && message.contains("spec.image"),
        "{message}"
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn suspend_scales_to_zero_and_resume_brings_it_back() {
    let admin = client(User::Admin).await;
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let name = unique_name("pause");
    create(&api, &name, json!({"image": "nginx:1.27"})).await;
    wait_for(&api, &name, "Ready", |ws| {
        has_condition(ws, "Ready", "True", "DeploymentReady")
    })
    .await;

    set_suspended(&api, &name, true).await;
    let stopped = wait_for(&api, &name, "Stopped", |ws| phase(ws) == "Stopped").await;
    assert!(has_condition(&stopped, "Ready", "False", "Suspended"));
    let replicas = deployments.get(&name).await.unwrap().spec.replicas;
    assert_eq!(replicas, Some(0), "suspended means zero replicas");

    set_suspended(&api, &name, false).await;
    wait_for(&api, &name, "Running again", |ws| phase(ws) == "Running").await;
    assert_eq!(deployments.get(&name).await.unwrap().spec.replicas, Some(1));
    let events = events_for(&admin, "default", &name).await;
    assert!(events.contains(&"Suspended".into()), "{events:?}");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_finished_workspace_is_deleted_after_its_ttl() {
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let name = unique_name("ttl");
    create(&api, &name, json!({"image": "nginx:1.27", "lifecycle": {"suspend": true, "ttlSecondsAfterFinished": 2}})).await;
    wait_for(&api, &name, "Stopped", |ws| phase(ws) == "Stopped").await;
    wait_gone(&api, &name).await;
}

#[tokio::test]
async fn idle_workspaces_are_suspended_unless_kept_alive() {
    let admin = client(User::Admin).await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), "default");
    let (kept, idle) = (unique_name("kept"), unique_name("idle"));
    let spec = json!({"image": "nginx:1.27", "lifecycle": {"idleTimeout": "1m"}});
    let mut keepalive = manifest(&kept, spec.clone());
    keepalive.metadata.labels =
        Some([("guildnet.io/keepalive".to_string(), "true".to_string())].into());
    api.create(&PostParams::default(), &keepalive)
        .await
        .unwrap();
    create(&api, &idle, spec).await;
    for name in [&kept, &idle] {
        wait_for(&api, name, "Ready", |ws| {
            has_condition(ws, "Ready", "True", "DeploymentReady")
        })
        .await;
    }

    // As if each had been ready for two hours with no traffic through the proxy. The
    // keep-alive one first, so the reaper has seen it by the time it reaps the other.
    let two_hours_ago =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(2);
    for name in [&kept, &idle] {
        let mut status = api.get(name).await.unwrap().status.unwrap();
        for c in status.conditions.iter_mut().filter(|c| c.type_ == "Ready") {
            c.last_transition_time =
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(two_hours_ago);
        }
        let stale = json!({"status": {"lastAccessTime": two_hours_ago.to_string(), "conditions": status.conditions}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(stale))
            .await
            .unwrap();
    }

    let reaped = wait_for(&api, &idle, "suspended for idleness", |ws| {
        phase(ws) == "Stopped"
    })
    .await;
    assert_eq!(reaped.spec.lifecycle.unwrap().suspend, Some(true));
    assert!(
        events_for(&admin, "default", &idle)
            .await
            .contains(&"Reaped".into())
    );
    // The reaper's cache saw the keep-alive workspace's patch before the other's (one watch,
    // in order), so the pass that reaped one has judged the other too.
    let still = api.get(&kept).await.unwrap();
    assert_eq!(
        phase(&still),
        "Running",
        "guildnet.io/keepalive=true opts out of reaping"
    );
    assert_ne!(still.spec.lifecycle.unwrap().suspend, Some(true));
    for name in [&kept, &idle] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn ingress_exposure_is_created_and_removed_with_the_spec() {
    let admin = client(User::Admin).await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), "default");
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "default");
    let name = unique_name("web");
    let host = format!("{name}.example.test");
    let exposure = json!({"type": "Ingress", "ingress": {"host": host, "className": "nginx", "tls": {"clusterIssuer": "letsencrypt"}}});
    create(
        &api,
        &name,
        json!({"image": "nginx:1.27", "exposure": exposure}),
    )
    .await;
    let ws = wait_for(&api, &name, "an external URL", |ws| {
        ws.status.as_ref().and_then(|s| s.url.as_ref()).is_some()
    })
    .await;
    assert_eq!(ws.status.unwrap().url, Some(format!("https://{host}/")));
    let ingress = ingresses.get(&name).await.unwrap();
    assert_eq!(
        ingress
            .annotations()
            .get("cert-manager.io/cluster-issuer")
            .map(String::as_str),
        Some("letsencrypt")
    );
    assert_eq!(
        ingress.spec.unwrap().rules.unwrap()[0].host.as_deref(),
        Some(host.as_str())
    );

    let back = Patch::Merge(json!({"spec": {"exposure": {"type": "ClusterIP", "ingress": null}}}));
    api.patch(&name, &PatchParams::default(), &back)
        .await
        .unwrap();
    wait_gone(&ingresses, &name).await;
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_burst_of_edits_ends_in_the_final_spec_with_few_deployment_writes() {
    let admin = client(User::Admin).await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(admin, "default");
    let name = unique_name("burst");
    create(
        &api,
        &name,
        json!({"image": "nginx:1.27", "env": [{"name": "EDIT", "value": "0"}]}),
    )
    .await;
    wait_for(&api, &name, "Ready", |ws| {
        has_condition(ws, "Ready", "True", "DeploymentReady")
    })
    .await;
    let before = deployments
        .get(&name)
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();

    const EDITS: i64 = 50;
    let start = std::time::Instant::now();
    for i in 1..=EDITS {
        let patch =
            Patch::Merge(json!({"spec": {"env": [{"name": "EDIT", "value": i.to_string()}]}}));
        api.patch(&name, &PatchParams::default(), &patch)
            .await
            .unwrap();
        // Spread the edits over about one second.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spread = start.elapsed();

    let final_value = EDITS.to_string();
    let deployment = tokio::time::timeout(
        TIMEOUT,
        await_condition(deployments.clone(), &name, move |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.template.spec.as_ref())
                .and_then(|p| p.containers[0].env.as_ref())
                .is_some_and(|env| {
                    env.iter().any(|e| {
                        e.name == "EDIT" && e.value.as_deref() == Some(final_value.as_str())
                    })
                })
        }),
    )
    .await
    .expect("the Deployment reaches the final spec")
    .unwrap()
    .unwrap();
    let writes = deployment.metadata.generation.unwrap() - before;
    println!("{EDITS} edits in {spread:?} led to {writes} Deployment spec writes");
    assert!(
        writes * 4 <= EDITS,
        "{EDITS} edits caused {writes} Deployment writes; debouncing should coalesce them"
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn children_edited_by_hand_are_put_back() {
    // The operator skips writing children its cache shows as already applied; a child
    // someone else changed since must still be applied over again.
    let admin = client(User::Admin).await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), "default");
    let name = unique_name("drift");
    create(&api, &name, json!({"image": "nginx:1.27"})).await;
    wait_for(&api, &name, "Running", |ws| ws.is_ready()).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let deployment = deployments.get(&name).await.unwrap();
    assert!(
        deployment.annotations().contains_key("guildnet.io/applied"),
        "children carry the hash they were applied from"
    );
    let pod = deployment.spec.template.spec.clone().unwrap();
    let (container, image) = (
        pod.containers[0].name.clone(),
        pod.containers[0].image.clone(),
    );

    let edit = json!({"spec": {"template": {"spec": {"containers": [{"name": container, "image": "busybox:1.36"}]}}}});
    deployments
        .patch(&name, &PatchParams::default(), &Patch::Strategic(edit))
        .await
        .unwrap();
    // Re-pointing the Service at other pods.
    let edit = json!({"spec": {"selector": {"guildnet.io/id": "elsewhere"}}});
    services
        .patch(&name, &PatchParams::default(), &Patch::Merge(edit))
        .await
        .unwrap();
    tokio::time::timeout(
        TIMEOUT,
        await_condition(deployments.clone(), &name, move |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.template.spec.as_ref())
                .is_some_and(|p| p.containers[0].image == image)
        }),
    )
    .await
    .expect("the hand-edited Deployment is put back")
    .unwrap();
    tokio::time::timeout(
        TIMEOUT,
        await_condition(services.clone(), &name, {
            let name = name.clone();
            move |s: Option<&Service>| {
                let selector = s.and_then(|s| s.spec.as_ref()?.selector.as_ref());
                selector.and_then(|s| s.get("guildnet.io/id")) == Some(&name)
            }
        }),
    )
    .await
    .expect("the hand-edited Service is put back")
    .unwrap();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_snapshot_annotation_says_why_not_until_the_snapshot_api_exists() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let admin = client(User::Admin).await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), "default");
    let name = unique_name("snap");
    let mut ws = manifest(
        &name,
        json!({"image": "nginx:1.27", "volumes": [{"name": "home", "mountPath": "/home", "persistent": {"size": "1Gi"}}]}),
    );
    ws.metadata.annotations =
        Some([("guildnet.io/snapshot".to_string(), "first".to_string())].into());
    api.create(&PostParams::default(), &ws).await.unwrap();
    wait_for(
        &api,
        &name,
        "Snapshot condition saying the API is missing",
        |ws| has_condition(ws, "Snapshot", "False", "SnapshotAPIUnavailable"),
    )
    .await;

    // The CSI snapshot API arrives (its CRD; no snapshot controller is needed to see the
    // objects GuildNet creates).
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {
            "name": "volumesnapshots.snapshot.storage.k8s.io",
            // As upstream's external-snapshotter CRDs carry for the protected k8s.io group.
            "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-csi/external-snapshotter/pull/814"}
        },
        "spec": {
            "group": "snapshot.storage.k8s.io",
            "names": {"kind": "VolumeSnapshot", "plural": "volumesnapshots", "singular": "volumesnapshot"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    tokio::time::timeout(
        TIMEOUT,
        await_condition(
            crds,
            "volumesnapshots.snapshot.storage.k8s.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();

    let again =
        Patch::Merge(json!({"metadata": {"annotations": {"guildnet.io/snapshot": "second"}}}));
    api.patch(&name, &PatchParams::default(), &again)
        .await
        .unwrap();
    // Any reconcile once the CRD is served may already take the "first" snapshot, so wait for
    // the condition that names the second.
    let second = format!("{name}-home-second");
    wait_for(&api, &name, "the second snapshot created", |ws| {
        has_condition(ws, "Snapshot", "True", "SnapshotCreated")
            && ws.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Snapshot" && c.message.contains(&second))
            })
    })
    .await;
    let snapshots: Api<kube::api::DynamicObject> = Api::namespaced_with(
        admin,
        "default",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
        )),
    );
    let snapshot = snapshots
        .get(&second)
        .await
        .expect("the VolumeSnapshot exists");
    assert_eq!(
        snapshot.data["spec"]["source"]["persistentVolumeClaimName"],
        format!("{name}-home")
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn the_operator_holds_back_workspaces_past_a_quota_until_resumed() {
    use guildnet_api::Quota;
    let admin = client(User::Admin).await;
    let ns = unique_name("quota");
    create_namespace(&admin, &ns, &[]).await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), &ns);
    // Admitted before any Quota existed; creation order (same second: name order) decides.
    for name in ["ws-a", "ws-b", "ws-c"] {
        create(&api, name, json!({"image": "nginx:1.27"})).await;
    }
    for name in ["ws-a", "ws-b", "ws-c"] {
        wait_for(&api, name, "Running", |ws| phase(ws) == "Running").await;
    }

    let quota: Quota = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "two-each"},
        "spec": {"perOwner": {"maxWorkspaces": 2}}
    }))
    .unwrap();
    Api::<Quota>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();

    let held = wait_for(&api, "ws-c", "Failed/QuotaExceeded", |ws| {
        has_condition(ws, "Failed", "True", "QuotaExceeded")
    })
    .await;
    assert_eq!(phase(&held), "Failed");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let replicas = || async { deployments.get("ws-c").await.unwrap().spec.replicas };
    assert_eq!(
        replicas().await,
        Some(0),
        "a workspace past the quota is not started"
    );
    for name in ["ws-a", "ws-b"] {
        assert_eq!(
            phase(&api.get(name).await.unwrap()),
            "Running",
            "{name} came first and keeps running"
        );
    }
    // The Quota's status shows who uses what: the held workspace uses nothing.
    let quotas: Api<Quota> = Api::namespaced(admin.clone(), &ns);
    let status = guildnet_e2e::eventually("the Quota's status to count", TIMEOUT, || {
        let quotas = quotas.clone();
        async move {
            let status = quotas.get("two-each").await.ok()?.status?;
            (status.owner_count == Some(1) && status.usage.first()?.workspaces == 2)
                .then_some(status)
        }
    })
    .await;
    let owner = api.get("ws-b").await.unwrap().labels()["guildnet.io/owner"].clone();
    assert_eq!(status.usage[0].owner, owner, "{status:?}");
    let exceeded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Exceeded")
        .unwrap();
    assert_eq!(
        (exceeded.status.as_str(), exceeded.reason.as_str()),
        ("False", "WithinLimits")
    );
    let printed = kubectl(
        User::Admin,
        &["get", "quota", "two-each", "-n", &ns, "--no-headers"],
    );
    assert!(printed.success, "{printed:?}");
    assert_eq!(
        printed.stdout.split_whitespace().nth(2),
        Some("1"),
        "the Owners column: {printed:?}"
    );

    // Capacity frees up; the user resumes the held workspace by editing its spec.
    api.delete("ws-a", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "ws-a").await;
    let resume = Patch::Merge(json!({"spec": {"lifecycle": {"suspend": false}}}));
    api.patch("ws-c", &PatchParams::default(), &resume)
        .await
        .unwrap();
    wait_for(&api, "ws-c", "Running after resuming", |ws| {
        phase(ws) == "Running"
    })
    .await;
    assert_eq!(replicas().await, Some(1));
    Api::<Namespace>::all(admin)
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
