//! Tenant isolation on a real API server: the operator never takes over an object that is
//! not the workspace's own, and every workspace pod is isolated by a NetworkPolicy.

use guildnet_api::Workspace;
use guildnet_e2e::workspaces::{WAIT, create, manifest, wait_for, wait_gone};
use guildnet_e2e::{User, client, eventually, kubectl_apply, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::time::Duration;

/// The `Failed` condition's reason and message, once the workspace is Failed.
async fn failed_with(api: &Api<Workspace>, name: &str, reason: &str) -> String {
    let ws = wait_for(api, name, &format!("Failed/{reason}"), |ws| {
        failed_condition(ws).is_some_and(|(r, _)| r == reason)
    })
    .await;
    failed_condition(&ws).unwrap().1
}

fn failed_condition(ws: &Workspace) -> Option<(String, String)> {
    let c = ws
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    Some((c.reason.clone(), c.message.clone()))
}

/// The notes of the Warning Events on workspace `name`.
async fn warnings(admin: &Client, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let selector = format!("involvedObject.name={name},involvedObject.kind=Workspace");
    let list = events
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.message)
        .collect()
}

fn volume(name: &str, mount: &str) -> Value {
    json!({"name": name, "mountPath": mount, "persistent": {"size": "1Gi"}})
}

#[tokio::test]
async fn a_workspace_named_after_a_foreign_service_leaves_it_untouched() {
    let name = unique_name("svc");
    let admin = client(User::Admin).await;
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let foreign: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": "billing"}, "ports": [{"port": 443}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let bob: Api<Workspace> = Api::namespaced(client(User::Bob).await, "default");
    create(&bob, &name, json!({"image": "nginx"})).await;
    let message = failed_with(&bob, &name, "NameConflict").await;
    assert!(
        message.contains(&format!("Service default/{name} already exists")),
        "{message}"
    );
    eventually("a Warning Event naming the Service", WAIT, || async {
        let notes = warnings(&admin, &name).await;
        notes
            .iter()
            .any(|n| n.contains("Service default/"))
            .then_some(())
    })
    .await;

    let service = services.get(&name).await.unwrap();
    assert_eq!(
        service.spec.unwrap().selector.unwrap()["app"],
        "billing",
        "the selector still points at its own pods"
    );
    assert!(service.metadata.owner_references.is_none());
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    assert!(
        deployments.get_opt(&name).await.unwrap().is_none(),
        "nothing of the workspace runs"
    );

    bob.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&bob, &name).await;
    assert!(
        services.get_opt(&name).await.unwrap().is_some(),
        "deleting the workspace does not delete the Service"
    );
    services
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn another_users_workspace_never_mounts_a_claim_that_shares_its_name() {
    // alice's `<n>-pv` with volume `home` and bob's `<n>` with volume `pv-home` name the
    // same claim, `<n>-pv-home`.
    let name = unique_name("x");
    let admin = client(User::Admin).await;
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let bob: Api<Workspace> = Api::namespaced(client(User::Bob).await, "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), "default");
    let claim = format!("{name}-pv-home");

    let spec = json!({"image": "nginx", "volumes": [volume("home", "/home")]});
    create(&alice, &format!("{name}-pv"), spec).await;
    wait_for(&alice, &format!("{name}-pv"), "its claim recorded", |ws| {
        ws.status
            .as_ref()
            .is_some_and(|s| s.volume_claims.contains(&claim))
    })
    .await;
    let before = claims.get(&claim).await.unwrap();

    let spec = json!({"image": "nginx", "volumes": [volume("pv-home", "/data")]});
    create(&bob, &name, spec).await;
    let message = failed_with(&bob, &name, "NameConflict").await;
    assert!(
        message.contains(&format!("PersistentVolumeClaim default/{claim}")),
        "{message}"
    );
    let after = claims.get(&claim).await.unwrap();
    assert_eq!(
        after.labels(),
        before.labels(),
        "alice's claim keeps her labels"
    );
    assert_eq!(after.owner_references(), before.owner_references());
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    assert!(deployments.get_opt(&name).await.unwrap().is_none());

    bob.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&bob, &name).await;
    assert!(
        claims.get_opt(&claim).await.unwrap().is_some(),
        "deleting bob's workspace leaves alice's claim"
    );
    alice
        .delete(&format!("{name}-pv"), &DeleteParams::default())
        .await
        .unwrap();
    claims
        .delete(&claim, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retained_claim_goes_back_to_its_owner_only() {
    let name = unique_name("keep");
    let admin = client(User::Admin).await;
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let bob: Api<Workspace> = Api::namespaced(client(User::Bob).await, "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), "default");
    let claim = format!("{name}-home");
    let spec = json!({"image": "nginx", "volumes": [volume("home", "/home")]});

    create(&alice, &name, spec.clone()).await;
    wait_for(&alice, &name, "Running", |ws| ws.is_ready()).await;
    alice.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&alice, &name).await;
    assert!(claims.get_opt(&claim).await.unwrap().is_some(), "retained");

    // bob takes the freed name: alice's data stays hers.
    create(&bob, &name, spec.clone()).await;
    let message = failed_with(&bob, &name, "NameConflict").await;
    assert!(message.contains("guildnet.io/owner label"), "{message}");
    bob.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&bob, &name).await;

    // alice comes back and gets her volume again.
    create(&alice, &name, spec).await;
    let ws = wait_for(&alice, &name, "Running", |ws| ws.is_ready()).await;
    assert_eq!(
        ws.status.unwrap().volume_claims,
        std::slice::from_ref(&claim)
    );
    alice.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&alice, &name).await;
    claims
        .delete(&claim, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_existing_password_secret_is_never_taken_as_the_workspaces_password() {
    let name = unique_name("pw");
    let admin = client(User::Admin).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    let planted: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-password")},
        "stringData": {"password": "known-to-the-attacker"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &planted)
        .await
        .unwrap();

    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    create(
        &alice,
        &name,
        json!({"image": "codercom/code-server:4.96.2"}),
    )
    .await;
    let message = failed_with(&alice, &name, "NameConflict").await;
    assert!(
        message.contains(&format!("Secret default/{name}-password")),
        "{message}"
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    assert!(deployments.get_opt(&name).await.unwrap().is_none());

    // Once the planted Secret is gone, the workspace gets a password of its own.
    secrets
        .delete(&format!("{name}-password"), &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&alice, &name, "Running after the conflict cleared", |ws| {
        ws.is_ready()
    })
    .await;
    let secret = secrets.get(&format!("{name}-password")).await.unwrap();
    assert_eq!(
        secret.owner_references()[0].uid,
        alice.get(&name).await.unwrap().uid().unwrap()
    );
    alice.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn every_workspace_pod_admits_the_proxy_only() {
    let name = unique_name("np");
    let admin = client(User::Admin).await;
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    create(
        &alice,
        &name,
        json!({"image": "nginx", "ports": [{"name": "web", "containerPort": 3000}]}),
    )
    .await;
    let ws = wait_for(&alice, &name, "Running", |ws| ws.is_ready()).await;

    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), "default");
    let policy = policies.get(&name).await.unwrap();
    assert_eq!(policy.owner_references()[0].uid, ws.uid().unwrap());
    let spec = policy.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()["guildnet.io/id"],
        name
    );
    let rules = spec.ingress.unwrap();
    assert_eq!(rules.len(), 1);
    let from = rules[0].from.as_ref().expect("sources restricted");
    let namespace = from[0].namespace_selector.as_ref().unwrap();
    assert!(
        namespace
            .match_labels
            .as_ref()
            .unwrap()
            .contains_key("kubernetes.io/metadata.name")
    );
    assert!(
        from[0].pod_selector.is_some(),
        "the proxy's pods, not the whole namespace"
    );
    let ports: Vec<_> = rules[0]
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.port.clone())
        .collect();
    assert_eq!(
        ports,
        [k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(3000)]
    );

    alice.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// A workspace's NetworkPolicy is written before its Deployment, so no pod of it ever runs
/// unisolated: when a watch first sees the Deployment, the policy exists.
#[tokio::test]
async fn a_workspace_deployment_appears_only_once_its_network_policy_exists() {
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let name = unique_name("np-first");
    let admin = client(User::Admin).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), "default");
    // Watch from now, so the Deployment's first version is among the events.
    let from = deployments
        .list_metadata(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut events = deployments.watch(&params, &from).await.unwrap().boxed();
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    create(&alice, &name, json!({"image": "nginx"})).await;
    let first = tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await.expect("the watch stays open").unwrap() {
                WatchEvent::Added(d) | WatchEvent::Modified(d) => return d,
                _ => continue,
            }
        }
    })
    .await
    .expect("the Deployment is created in time");
    assert!(
        first.spec.replicas.unwrap_or(1) > 0,
        "the workspace runs a pod"
    );
    // On this control plane's single etcd a resourceVersion is the etcd revision of the
    // write, so it orders writes across kinds (clients of other clusters must not rely on it).
    let revision = |meta: &kube::api::ObjectMeta| -> u64 {
        meta.resource_version.as_deref().unwrap().parse().unwrap()
    };
    let policy = policies.get(&name).await.unwrap();
    assert!(
        revision(&policy.metadata) < revision(&first.metadata),
        "the Deployment was written before the NetworkPolicy"
    );
    alice.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_workspace_may_read_only_secrets_its_owner_may_read() {
    let victim = unique_name("victim");
    let admin = client(User::Admin).await;
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let bob: Api<Workspace> = Api::namespaced(client(User::Bob).await, "default");
    create(
        &alice,
        &victim,
        json!({"image": "codercom/code-server:4.96.2"}),
    )
    .await;
    let password = format!("{victim}-password");
    let env = |secret: &str| json!([{"name": "STOLEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}]);

    // bob names alice's workspace password: refused, naming the field, before anything runs.
    let thief = unique_name("thief");
    let refused = bob
        .create(
            &PostParams::default(),
            &manifest(&thief, json!({"image": "nginx", "env": env(&password)})),
        )
        .await
        .expect_err("bob may not get alice's Secret");
    let message = refused.to_string();
    assert!(
        message.contains("ReferenceDenied")
            && message.contains("spec.env[0].valueFrom.secretKeyRef")
            && message.contains(&password),
        "{message}"
    );
    // Nor as an image pull Secret, nor added by an update.
    let pull = json!({"image": "nginx", "imagePullSecrets": [{"name": password}]});
    let refused = bob
        .create(&PostParams::default(), &manifest(&thief, pull))
        .await;
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("spec.imagePullSecrets[0]")
    );
    create(&bob, &thief, json!({"image": "nginx"})).await;
    let sneak = json!({"spec": {"env": env(&password)}});
    let refused = bob
        .patch(
            &thief,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&sneak),
        )
        .await;
    assert!(refused.unwrap_err().to_string().contains("ReferenceDenied"));

    // A code-server workspace reads its own generated password; a Secret bob was granted,
    // too. For an image that gets no generated password, `<name>-password` is reviewed.
    let own = unique_name("own");
    let own_password = format!("{own}-password");
    let code_server = json!({"image": "codercom/code-server:4.96.2", "env": env(&own_password)});
    create(&bob, &own, code_server).await;
    let plain = unique_name("plain");
    let spec = json!({"image": "nginx", "env": env(&format!("{plain}-password"))});
    let refused = bob
        .create(&PostParams::default(), &manifest(&plain, spec))
        .await;
    assert!(refused.unwrap_err().to_string().contains("ReferenceDenied"));
    let granted = unique_name("granted");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": granted}, "stringData": {"password": "x"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let rbac = guildnet_e2e::kubectl(
        User::Admin,
        &[
            "create",
            "role",
            &granted,
            "-n",
            "default",
            "--verb=get",
            "--resource=secrets",
            &format!("--resource-name={granted}"),
        ],
    );
    assert!(rbac.success, "{rbac:?}");
    let binding = guildnet_e2e::kubectl(
        User::Admin,
        &[
            "create",
            "rolebinding",
            &granted,
            "-n",
            "default",
            &format!("--role={granted}"),
            "--user=bob",
        ],
    );
    assert!(binding.success, "{binding:?}");
    // RBAC's cache and the webhook's 10 s answer cache may lag the new binding.
    let reader = unique_name("reader");
    let spec = json!({"image": "nginx", "env": env(&granted)});
    eventually(
        "bob's grant to reach admission",
        Duration::from_secs(30),
        || {
            let (bob, spec, reader) = (bob.clone(), spec.clone(), reader.clone());
            async move {
                let ws = manifest(&reader, spec);
                bob.create(&PostParams::default(), &ws)
                    .await
                    .ok()
                    .map(|_| ())
            }
        },
    )
    .await;

    for (api, name) in [
        (&alice, &victim),
        (&bob, &thief),
        (&bob, &own),
        (&bob, &reader),
    ] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    secrets
        .delete(&granted, &DeleteParams::default())
        .await
        .unwrap();
    guildnet_e2e::kubectl(
        User::Admin,
        &["delete", "role,rolebinding", &granted, "-n", "default"],
    );
}

#[tokio::test]
async fn children_left_behind_by_an_orphaning_delete_are_swept() {
    // A code-server workspace exposed by an Ingress has every kind of child: Deployment,
    // Service, NetworkPolicy, Ingress and password Secret. (The suite's admin may expose
    // by Ingress on *.example.test with class nginx.)
    let name = unique_name("orphan");
    let admin = client(User::Admin).await;
    let admins: Api<Workspace> = Api::namespaced(admin.clone(), "default");
    let exposed = json!({
        "image": "codercom/code-server:4.96.2",
        "exposure": {"type": "Ingress", "ingress": {"host": format!("{name}.example.test"), "className": "nginx"}}
    });
    create(&admins, &name, exposed).await;
    wait_for(&admins, &name, "Running", |ws| ws.is_ready()).await;
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    let password = format!("{name}-password");
    assert!(ingresses.get_opt(&name).await.unwrap().is_some());
    assert!(secrets.get_opt(&password).await.unwrap().is_some());

    // The garbage collector strips the owner references and leaves the pod running.
    let orphan = |user, name: &str| {
        let deleted = guildnet_e2e::kubectl(
            user,
            &[
                "delete",
                "workspace",
                name,
                "-n",
                "default",
                "--cascade=orphan",
                "--wait",
            ],
        );
        assert!(deleted.success, "{deleted:?}");
    };
    orphan(User::Admin, &name);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), "default");
    wait_gone(&deployments, &name).await;
    wait_gone(&services, &name).await;
    wait_gone(&policies, &name).await;
    wait_gone(&ingresses, &name).await;
    wait_gone(&secrets, &password).await;

    // An orphaning delete and a re-create of the same name: the new workspace runs with
    // children of its own, its earlier namesake's replaced rather than a NameConflict.
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let again = unique_name("orphan");
    let ide = json!({"image": "codercom/code-server:4.96.2"});
    create(&alice, &again, ide.clone()).await;
    wait_for(&alice, &again, "Running", |ws| ws.is_ready()).await;
    let first_password = secrets
        .get(&format!("{again}-password"))
        .await
        .unwrap()
        .uid();
    orphan(User::Alice, &again);
    let recreated = create(&alice, &again, ide).await;
    let ready = wait_for(&alice, &again, "Running with its own children", |ws| {
        ws.is_ready()
    })
    .await;
    assert_eq!(ready.uid(), recreated.uid());
    let deployment = deployments.get(&again).await.unwrap();
    assert_eq!(
        deployment.owner_references().first().map(|o| o.uid.clone()),
        recreated.uid(),
        "the old Deployment was replaced by a new one"
    );
    let secret = secrets.get(&format!("{again}-password")).await.unwrap();
    assert_eq!(
        secret.owner_references().first().map(|o| o.uid.clone()),
        recreated.uid(),
        "the earlier workspace's password is not the new one's"
    );
    assert_ne!(secret.uid(), first_password);
    alice
        .delete(&again, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_plaintext_token_in_a_spec_is_admitted_with_a_warning_to_use_a_secret() {
    let name = unique_name("tok");
    let manifest = format!(
        "apiVersion: guildnet.io/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}, namespace: default}}\nspec: {{image: nginx, env: [{{name: GITHUB_TOKEN, value: ghp_example}}]}}\n"
    );
    let applied = kubectl_apply(User::Alice, &manifest);
    assert!(applied.success, "{applied:?}");
    assert!(
        applied
            .stderr
            .contains("Warning: spec.env[0] (GITHUB_TOKEN) holds what looks like a credential")
            && applied.stderr.contains("valueFrom.secretKeyRef"),
        "{applied:?}"
    );
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    alice.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_snapshot_name_that_is_not_a_dns_label_is_refused() {
    let name = unique_name("snapname");
    let manifest = format!(
        "apiVersion: guildnet.io/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}, namespace: default, annotations: {{guildnet.io/snapshot: 'x/../y?dryRun=All'}}}}\nspec: {{image: nginx}}\n"
    );
    let applied = kubectl_apply(User::Alice, &manifest);
    assert!(!applied.success);
    assert!(
        applied.stderr.contains("annotation guildnet.io/snapshot")
            && applied.stderr.contains("DNS label"),
        "{applied:?}"
    );
}

#[tokio::test]
async fn opting_out_of_idle_reaping_needs_a_grant() {
    let name = unique_name("forever");
    let manifest = format!(
        "apiVersion: guildnet.io/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}, namespace: default, labels: {{guildnet.io/keepalive: 'true'}}}}\nspec: {{image: nginx}}\n"
    );
    let applied = kubectl_apply(User::Bob, &manifest);
    assert!(!applied.success);
    assert!(applied.stderr.contains("KeepAliveDenied"), "{applied:?}");
}

#[tokio::test]
async fn gpus_are_refused_unless_a_capabilities_grants_them() {
    let name = unique_name("gpu");
    let manifest = format!(
        "apiVersion: guildnet.io/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}, namespace: default}}\nspec: {{image: nginx, resources: {{requests: {{cpu: 500m, memory: 1Gi}}, limits: {{nvidia.com/gpu: 1}}}}}}\n"
    );
    let applied = kubectl_apply(User::Bob, &manifest);
    assert!(!applied.success);
    assert!(
        applied.stderr.contains("ResourceLimitExceeded")
            && applied
                .stderr
                .contains("nvidia.com/gpu is not granted to you"),
        "{applied:?}"
    );
}

#[tokio::test]
async fn an_ingress_asks_only_for_what_its_grant_allows() {
    // The suite's admin may expose by Ingress on *.example.test with class nginx only.
    let name = unique_name("ing");
    let ingress = |class: &str, host: &str| {
        format!(
            "apiVersion: guildnet.io/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}, namespace: default}}\nspec: {{image: registry.guildnet.test/ok:1, exposure: {{type: Ingress, ingress: {{host: {host}, className: {class}}}}}}}\n"
        )
    };
    let refused = kubectl_apply(
        User::Admin,
        &ingress("internal", &format!("{name}.example.test")),
    );
    assert!(
        !refused.success
            && refused
                .stderr
                .contains("spec.exposure.ingress.className \"internal\" is not granted"),
        "{refused:?}"
    );
    let refused = kubectl_apply(User::Admin, &ingress("nginx", "bank.example.com"));
    assert!(
        !refused.success
            && refused
                .stderr
                .contains("spec.exposure.ingress.host \"bank.example.com\" is not granted"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn only_the_operator_may_set_guildnet_labels_on_workspace_children() {
    // bob may edit a namespace of his own, so he may create claims, Services and pods
    // there; GuildNet's labels on them could get his claim mounted into, or his pod routed
    // to, another user's workspace of that namespace.
    let admin = client(User::Admin).await;
    let namespace = unique_name("labels");
    guildnet_e2e::create_namespace(&admin, &namespace, &[]).await;
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "bob-edits"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]
    }))
    .unwrap();
    Api::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let bob = client(User::Bob).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(bob.clone(), &namespace);
    let claim = |name: &str, labels: Value| -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap()
    };
    let refused = |result: Result<PersistentVolumeClaim, kube::Error>| match result {
        Err(kube::Error::Api(status)) => status.message,
        other => panic!("a forged label was admitted: {other:?}"),
    };
    // A claim for alice's next workspace `ide`, with her owner id.
    let planted = claim(
        "ide-home",
        json!({
            "guildnet.io/managed": "true",
            "guildnet.io/id": "ide",
            "guildnet.io/owner": guildnet_api::policy::owner_id("alice")
        }),
    );
    let message = eventually("the admission policy to be in force", WAIT, || {
        let claims = claims.clone();
        let planted = planted.clone();
        async move {
            match claims.create(&PostParams::default(), &planted).await {
                Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
                Ok(_) => {
                    let _ = claims.delete("ide-home", &DeleteParams::default()).await;
                    None
                }
                Err(_) => None,
            }
        }
    })
    .await;
    assert!(
        message.contains("set by GuildNet's operator only") && message.contains("remove them"),
        "{message}"
    );
    // His own claim, without them, is his to make; labelling it later is refused too.
    claims
        .create(
            &PostParams::default(),
            &claim("mine", json!({"app": "scratch"})),
        )
        .await
        .unwrap();
    let relabel = json!({"metadata": {"labels": {"guildnet.io/owner": guildnet_api::policy::owner_id("alice")}}});
    let message = refused(
        claims
            .patch(
                "mine",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(relabel),
            )
            .await,
    );
    assert!(message.contains("leave them as they are"), "{message}");
    // A pod that a workspace's Service would select.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(bob, &namespace);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "ide-impostor", "labels": {"guildnet.io/managed": "true", "guildnet.io/id": "ide"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    }))
    .unwrap();
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("a pod with forged labels was admitted: {other:?}"),
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin);
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
}
