//! The admission webhook on the local control plane: owners from the requesting user or
//! assigned by a GitOps service account, ownership of updates and deletes (cluster admins
//! included), namespace deletion and garbage collection never blocked, image policy, resource
//! ceilings, exposure and placement grants, per-owner Quotas (429), objects that are not ours
//! left alone, and the serving certificate rotated while requests keep succeeding.
//!
//! The suite's webhook is already running and registered (see the Makefile). Each test makes
//! its own Capabilities and Quotas under unique names, and keeps them narrow, so tests
//! running in parallel never widen each other's grants: every grant here allows
//! guildnet:users only `nginx` and `codercom/code-server` images, 2 CPUs and 4Gi per
//! workspace, ClusterIP exposure and the local cluster. The denials assume no other
//! Capabilities in the cluster grants `docker.io/guildnet-e2e-denied/*`, 64 CPUs,
//! LoadBalancer or the cluster `guildnet-e2e-nowhere`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guildnet_api::policy::owner_id;
use guildnet_api::workspace::WorkspacePhase;
use guildnet_api::{Capabilities, ClusterRegistration, Quota, Workspace};
use guildnet_e2e::upstream::get_as;
use guildnet_e2e::workspaces::manifest;
use guildnet_e2e::{User, client, eventually, kubeconfig_path, unique_name};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The allowed image every grant here names.
const ALLOWED_IMAGE: &str = "nginx:1.27";

// ---- helpers -------------------------------------------------------------------------------

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// The API server's refusal of `result`.
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Checks that `result` was refused by the webhook for `reason` with HTTP `code`.
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    reason: &str,
    code: u16,
) -> String {
    let status = refusal(result);
    assert_eq!(status.reason, reason, "{}", status.message);
    assert_eq!(status.code, code, "{}", status.message);
    assert!(
        status
            .message
            .contains(&format!("denied the request: {reason}: ")),
        "{}",
        status.message
    );
    status.message
}

fn owner_label(ws: &Workspace) -> Option<String> {
    ws.metadata
        .labels
        .as_ref()?
        .get("guildnet.io/owner")
        .cloned()
}

fn owner_name(ws: &Workspace) -> Option<String> {
    ws.metadata
        .annotations
        .as_ref()?
        .get("guildnet.io/owner-name")
        .cloned()
}

/// A Capabilities this test owns.
struct Grant {
    api: Api<Capabilities>,
    name: String,
}

impl Grant {
    /// The narrow grant of the module documentation, for `subjects`, plus `extra` fields.
    async fn new(subjects: Value, extra: Value) -> Self {
        let api: Api<Capabilities> = Api::all(client(User::Admin).await);
        let name = unique_name("e2e-webhook");
        let mut spec = json!({
            "subjects": subjects,
            "images": {"allow": ["docker.io/library/nginx:*", "docker.io/codercom/code-server:*"]},
            "resources": {"maxPerWorkspace": {"cpu": "2", "memory": "4Gi"}},
            "exposure": ["ClusterIP"]
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        let caps: Capabilities = serde_json::from_value(json!({
            "apiVersion": "guildnet.io/v1alpha1",
            "kind": "Capabilities",
            "metadata": {"name": name},
            "spec": spec
        }))
        .unwrap();
        api.create(&PostParams::default(), &caps).await.unwrap();
        Self { api, name }
    }

    /// The grant for guildnet:users (alice and bob).
    async fn users() -> Self {
        Self::new(
            json!([{"kind": "Group", "name": "guildnet:users"}]),
            json!({}),
        )
        .await
    }

    /// Deletes the grant. A test that fails leaves it behind: it is as narrow as every
    /// other grant here, and the control plane is torn down after the suite.
    async fn remove(self) {
        let _ = self.api.delete(&self.name, &DeleteParams::default()).await;
    }
}

/// Waits until the webhook admits a workspace of `api`'s user: its cache has the grants.
async fn until_admitted(api: &Api<Workspace>) {
    eventually("the webhook to see the new Capabilities", TIMEOUT, || {
        let api = api.clone();
        async move {
            let probe = manifest(&unique_name("probe"), json!({"image": ALLOWED_IMAGE}));
            api.create(&dry_run(), &probe).await.ok().map(|_| ())
        }
    })
    .await;
}

/// A new namespace where guildnet:users may work with Workspaces (their RBAC otherwise
/// covers only `default`), so Quota tests never count each other's workspaces.
async fn users_namespace(prefix: &str) -> String {
    let admin = client(User::Admin).await;
    let name = unique_name(prefix);
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    bind_workspace_user(
        &admin,
        &name,
        json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "guildnet:users"}),
    )
    .await;
    name
}

/// Lets `subject` work with Workspaces in `namespace`; the RoleBinding's name.
async fn bind_workspace_user(admin: &Client, namespace: &str, subject: Value) -> String {
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), namespace);
    let name = unique_name("workspace-user");
    let binding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "guildnet:workspace-user"},
        "subjects": [subject]
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    name
}

async fn delete_namespace(name: &str) {
    let namespaces: Api<Namespace> = Api::all(client(User::Admin).await);
    let _ = namespaces.delete(name, &DeleteParams::default()).await;
}

// ---- owners --------------------------------------------------------------------------------

#[tokio::test]
async fn owners_come_from_the_requesting_user_and_cannot_be_spoofed() {
    let grant = Grant::users().await;
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let bob: Api<Workspace> = Api::namespaced(client(User::Bob).await, "default");
    until_admitted(&alice).await;
    until_admitted(&bob).await;

    let spec = json!({"image": ALLOWED_IMAGE});
    let first = alice
        .create(
            &PostParams::default(),
            &manifest(&unique_name("alice"), spec.clone()),
        )
        .await
        .unwrap();
    let second = alice
        .create(
            &PostParams::default(),
            &manifest(&unique_name("alice"), spec.clone()),
        )
        .await
        .unwrap();
    let bobs = bob
        .create(
            &PostParams::default(),
            &manifest(&unique_name("bob"), spec.clone()),
        )
        .await
        .unwrap();
    let mut spoofed = manifest(&unique_name("spoof"), spec.clone());
    spoofed.metadata.labels = Some([("guildnet.io/owner".to_owned(), owner_id("bob"))].into());
    let spoofed = alice
        .create(&PostParams::default(), &spoofed)
        .await
        .unwrap();
    // Naming bob as the owner takes a grant alice does not have: refused, not ignored.
    let mut assigned = manifest(&unique_name("spoof"), spec);
    assigned.metadata.annotations =
        Some([("guildnet.io/owner-name".to_owned(), "bob".to_owned())].into());
    let message = assert_refused(
        alice.create(&PostParams::default(), &assigned).await,
        "OwnerAssignmentDenied",
        403,
    );
    assert!(message.contains("assignOwners"), "{message}");

    let alice_id = owner_id("alice");
    assert_eq!(owner_label(&first).as_deref(), Some(alice_id.as_str()));
    assert_eq!(
        owner_label(&second),
        owner_label(&first),
        "alice's workspaces share her owner"
    );
    assert_eq!(owner_label(&bobs), Some(owner_id("bob")));
    assert_ne!(owner_label(&bobs), owner_label(&first));
    assert_eq!(
        owner_label(&spoofed),
        owner_label(&first),
        "a spoofed owner ends up alice's"
    );
    assert_eq!(owner_name(&spoofed).as_deref(), Some("alice"));
    assert_eq!(owner_name(&bobs).as_deref(), Some("bob"));
    // The defaults are what the API server stores.
    let resources = first.spec.resources.clone().expect("defaulted resources");
    assert_eq!(resources.requests.unwrap()["cpu"].0, "250m");
    assert_eq!(first.spec.ports[0].container_port, 8080);

    // An update never changes the owner.
    let relabel = json!({"metadata": {"labels": {"guildnet.io/owner": owner_id("bob")}}});
    let relabeled = alice
        .patch(
            first.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(relabel),
        )
        .await
        .unwrap();
    assert_eq!(owner_label(&relabeled), Some(alice_id));

    for (api, ws) in [
        (&alice, &first),
        (&alice, &second),
        (&bob, &bobs),
        (&alice, &spoofed),
    ] {
        api.delete(
            ws.metadata.name.as_deref().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    }
    grant.remove().await;
}

// ---- ownership -----------------------------------------------------------------------------

/// A client acting as the ServiceAccount `namespace/name`, through a bound token. It does
/// not retry refusals, so a QuotaExceeded (429) surfaces at once.
async fn service_account_client(admin: &Client, namespace: &str, name: &str) -> Client {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let account = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let request =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .expect("a token")
        .token;
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path()).unwrap();
    let options = kube::config::KubeConfigOptions {
        context: Some(User::Admin.context().to_owned()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    config.auth_info = serde_json::from_value(json!({"token": token})).unwrap();
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn only_the_owner_or_a_capabilities_admin_updates_or_deletes() {
    let grant = Grant::users().await;
    let admin = client(User::Admin).await;
    // A distinct identity for the admin: a ServiceAccount granted admin by Capabilities,
    // so no other test's users gain admin rights.
    let home = users_namespace("ws-admins").await;
    let reviewer = service_account_client(&admin, &home, "reviewer").await;
    let binding = bind_workspace_user(
        &admin,
        "default",
        json!({"kind": "ServiceAccount", "name": "reviewer", "namespace": home}),
    )
    .await;
    let admin_grant = Grant::new(
        json!([{"kind": "ServiceAccount", "name": "reviewer", "namespace": home}]),
        json!({"admin": true}),
    )
    .await;

    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let bob: Api<Workspace> = Api::namespaced(client(User::Bob).await, "default");
    let reviewer: Api<Workspace> = Api::namespaced(reviewer, "default");
    until_admitted(&alice).await;
    let name = unique_name("owned");
    alice
        .create(
            &PostParams::default(),
            &manifest(&name, json!({"image": ALLOWED_IMAGE})),
        )
        .await
        .unwrap();

    let suspend = Patch::Merge(json!({"spec": {"lifecycle": {"suspend": true}}}));
    let message = assert_refused(
        bob.patch(&name, &PatchParams::default(), &suspend).await,
        "NotOwner",
        403,
    );
    assert!(message.contains("user \"bob\""), "{message}");
    assert!(message.contains(&owner_id("alice")), "{message}");
    let relabel = Patch::Merge(json!({"metadata": {"labels": {"team": "bob"}}}));
    assert_refused(
        bob.patch(&name, &PatchParams::default(), &relabel).await,
        "NotOwner",
        403,
    );
    assert_refused(
        bob.delete(&name, &DeleteParams::default()).await,
        "NotOwner",
        403,
    );

    // The admin may, once the webhook has seen the grant.
    eventually("the webhook to see the admin grant", TIMEOUT, || {
        let reviewer = reviewer.clone();
        let name = name.clone();
        async move {
            let dry = PatchParams {
                dry_run: true,
                ..PatchParams::default()
            };
            let relabel = Patch::Merge(json!({"metadata": {"labels": {"reviewed": "true"}}}));
            reviewer.patch(&name, &dry, &relabel).await.ok().map(|_| ())
        }
    })
    .await;
    let suspended = reviewer
        .patch(&name, &PatchParams::default(), &suspend)
        .await
        .unwrap();
    assert_eq!(
        suspended.spec.lifecycle.as_ref().unwrap().suspend,
        Some(true)
    );
    assert_eq!(
        owner_label(&suspended),
        Some(owner_id("alice")),
        "still alice's"
    );
    reviewer
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();

    let bindings: Api<RoleBinding> = Api::namespaced(admin, "default");
    let _ = bindings.delete(&binding, &DeleteParams::default()).await;
    delete_namespace(&home).await;
    admin_grant.remove().await;
    grant.remove().await;
}

// ---- cluster admins and Kubernetes' controllers --------------------------------------------

/// A client of `username` (the admin impersonating them; the API server adds the groups a
/// service account has).
async fn impersonating(username: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path()).unwrap();
    let options = kube::config::KubeConfigOptions {
        context: Some(User::Admin.context().to_owned()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    config.auth_info.impersonate = Some(username.to_owned());
    Client::try_from(config).unwrap()
}

/// Waits until namespace `name` and everything in it are gone.
async fn wait_namespace_gone(name: &str) {
    let namespaces: Api<Namespace> = Api::all(client(User::Admin).await);
    guildnet_e2e::workspaces::wait_gone(&namespaces, name).await;
}

#[tokio::test]
async fn a_cluster_admin_clears_a_stuck_finalizer_and_kube_system_names_are_not_trusted() {
    let grant = Grant::users().await;
    let admin = client(User::Admin).await;
    let namespace = unique_name("stuck");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let created = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    namespaces
        .create(&PostParams::default(), &created)
        .await
        .unwrap();
    let binding = bind_workspace_user(
        &admin,
        &namespace,
        json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}),
    )
    .await;
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, &namespace);
    until_admitted(&alice).await;
    // A finalizer of alice's own, whose controller (say, a backup job of hers) is gone.
    let name = unique_name("guarded");
    let mut guarded = manifest(&name, json!({"image": ALLOWED_IMAGE}));
    guarded.metadata.finalizers = Some(vec!["example.com/alice-backup".to_owned()]);
    alice
        .create(&PostParams::default(), &guarded)
        .await
        .unwrap();
    // A made-up identity in kube-system that RBAC lets act on workspaces everywhere.
    let impostor = format!(
        "system:serviceaccount:kube-system:{}",
        unique_name("anything")
    );
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    let impostor_binding = unique_name("e2e-impostor");
    let cluster_binding = serde_json::from_value(json!({
        "metadata": {"name": impostor_binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "guildnet:workspace-user"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": impostor}]
    }))
    .unwrap();
    cluster_bindings
        .create(&PostParams::default(), &cluster_binding)
        .await
        .unwrap();

    // Her RoleBinding goes, then the namespace: its controller deletes the workspace
    // (through the webhook), and the finalizer holds it, and the namespace, there.
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &namespace);
    bindings
        .delete(&binding, &DeleteParams::default())
        .await
        .unwrap();
    eventually("RBAC to drop alice's rights", TIMEOUT, || {
        let alice = alice.clone();
        let name = name.clone();
        async move {
            match alice.get(&name).await {
                Err(kube::Error::Api(status)) if status.code == 403 => Some(()),
                _ => None,
            }
        }
    })
    .await;
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
    let as_admin: Api<Workspace> = Api::namespaced(admin.clone(), &namespace);
    eventually(
        "the namespace controller to delete the workspace",
        TIMEOUT,
        || {
            let as_admin = as_admin.clone();
            let name = name.clone();
            async move {
                let ws = as_admin.get(&name).await.ok()?;
                ws.metadata.deletion_timestamp.map(|_| ())
            }
        },
    )
    .await;
    let terminating = namespaces.get(&namespace).await.unwrap();
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );

    let unfinalize = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    // alice may no longer touch it at all (RBAC).
    let status = refusal(
        alice
            .patch(&name, &PatchParams::default(), &unfinalize)
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    // The made-up kube-system account is no longer trusted by its name's prefix.
    let impostor_api: Api<Workspace> = Api::namespaced(impersonating(&impostor).await, &namespace);
    let message = eventually("RBAC to let the made-up account ask", TIMEOUT, || {
        let impostor_api = impostor_api.clone();
        let name = name.clone();
        let unfinalize = unfinalize.clone();
        async move {
            match impostor_api
                .patch(&name, &PatchParams::default(), &unfinalize)
                .await
            {
                Err(kube::Error::Api(status)) if status.reason == "NotOwner" => {
                    Some(status.message)
                }
                Err(_) => None,
                Ok(_) => panic!("a made-up kube-system account passed the webhook"),
            }
        }
    })
    .await;
    assert!(message.contains(&impostor), "{message}");
    // The cluster admin (system:masters, no Capabilities admin) may, and the namespace goes.
    as_admin
        .patch(&name, &PatchParams::default(), &unfinalize)
        .await
        .unwrap();
    wait_namespace_gone(&namespace).await;

    let _ = cluster_bindings
        .delete(&impostor_binding, &DeleteParams::default())
        .await;
    grant.remove().await;
}

#[tokio::test]
async fn namespace_deletion_and_garbage_collection_are_never_blocked() {
    let cluster = unique_name("e2e-edge");
    let grant = Grant::new(
        json!([{"kind": "Group", "name": "guildnet:users"}]),
        json!({"clusters": [cluster]}),
    )
    .await;
    let admin = client(User::Admin).await;
    // Registered (its Secret need not exist): admission admits a placement on it.
    let registrations =
        guildnet_e2e::registrations::register(&admin, &cluster, &cluster, json!({})).await;
    let alice_client = client(User::Alice).await;
    let suspended_namespace = users_namespace("ns-suspended").await;
    let placed_namespace = users_namespace("ns-placed").await;
    let collected_namespace = users_namespace("ns-collected").await;
    let alice_in = |namespace: &str| Api::<Workspace>::namespaced(alice_client.clone(), namespace);
    until_admitted(&alice_in(&suspended_namespace)).await;

    // A suspended workspace, scaled to zero by the operator.
    let suspended = alice_in(&suspended_namespace);
    let stopped = unique_name("stopped");
    guildnet_e2e::workspaces::create(
        &suspended,
        &stopped,
        json!({"image": ALLOWED_IMAGE, "lifecycle": {"suspend": true}}),
    )
    .await;
    guildnet_e2e::workspaces::wait_for(&suspended, &stopped, "Stopped", |ws| {
        ws.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|phase| phase == WorkspacePhase::Stopped)
    })
    .await;
    // A workspace placed on a (granted) cluster, seen by the operator.
    let placed = alice_in(&placed_namespace);
    let far = unique_name("far");
    let spec = json!({"image": ALLOWED_IMAGE, "placement": {"cluster": cluster}});
    eventually("the webhook to see the cluster grant", TIMEOUT, || {
        let placed = placed.clone();
        let probe = manifest(&far, spec.clone());
        async move { placed.create(&PostParams::default(), &probe).await.ok() }
    })
    .await;
    guildnet_e2e::workspaces::wait_for(&placed, &far, "the operator's status", |ws| {
        ws.status.as_ref().and_then(|s| s.observed_generation) == ws.metadata.generation
    })
    .await;

    // Garbage collection: a workspace owned by a ConfigMap goes with it...
    let collected = alice_in(&collected_namespace);
    until_admitted(&collected).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &collected_namespace);
    let owner_name = unique_name("owner");
    let owner = serde_json::from_value(json!({"metadata": {"name": owner_name}})).unwrap();
    let owner = config_maps
        .create(&PostParams::default(), &owner)
        .await
        .unwrap();
    let dependent = unique_name("dependent");
    let mut owned = manifest(&dependent, json!({"image": ALLOWED_IMAGE}));
    owned.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner_name,
            "uid": owner.metadata.uid.unwrap()
        }))
        .unwrap(),
    ]);
    collected
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    config_maps
        .delete(&owner_name, &DeleteParams::default())
        .await
        .unwrap();
    guildnet_e2e::workspaces::wait_gone(&collected, &dependent).await;
    // ...and a workspace deleted in the foreground loses its foregroundDeletion finalizer to
    // the garbage collector once its Deployment is gone.
    let foreground = unique_name("foreground");
    guildnet_e2e::workspaces::create(&collected, &foreground, json!({"image": ALLOWED_IMAGE}))
        .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &collected_namespace);
    eventually("the operator to make the Deployment", TIMEOUT, || {
        let deployments = deployments.clone();
        let foreground = foreground.clone();
        async move { deployments.get_opt(&foreground).await.ok().flatten() }
    })
    .await;
    collected
        .delete(&foreground, &DeleteParams::foreground())
        .await
        .unwrap();
    guildnet_e2e::workspaces::wait_gone(&collected, &foreground).await;
    assert!(deployments.get_opt(&foreground).await.unwrap().is_none());

    // Namespace deletion removes alice's workspaces as the namespace controller.
    for namespace in [
        &suspended_namespace,
        &placed_namespace,
        &collected_namespace,
    ] {
        delete_namespace(namespace).await;
    }
    for namespace in [
        &suspended_namespace,
        &placed_namespace,
        &collected_namespace,
    ] {
        wait_namespace_gone(namespace).await;
    }
    let _ = registrations
        .delete(&cluster, &DeleteParams::default())
        .await;
    grant.remove().await;
}

// ---- owners assigned by GitOps -------------------------------------------------------------

/// The status of `user`'s GET of `path` through the proxy.
async fn proxy_status(user: User, path: &str) -> hyper::StatusCode {
    get_as(user, path).await.unwrap().status()
}

/// The workspaces `user`'s dashboard lists (those they may open), as `namespace/name`.
async fn dashboard_workspaces(user: User) -> Vec<String> {
    let response = get_as(user, "/api/workspaces").await.unwrap();
    let listed: Value = serde_json::from_slice(response.body()).unwrap();
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ws| {
            format!(
                "{}/{}",
                ws["namespace"].as_str().unwrap_or_default(),
                ws["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_gitops_service_account_applies_workspaces_its_grant_lets_it_assign() {
    let admin = client(User::Admin).await;
    let namespace = users_namespace("gitops").await;
    // The controller: a ServiceAccount that may edit Workspaces here and assign alice. Its
    // own grant lets it run an image alice may not: that must not matter.
    let deployer = service_account_client(&admin, &namespace, "deployer").await;
    bind_workspace_user(
        &admin,
        &namespace,
        json!({"kind": "ServiceAccount", "name": "deployer", "namespace": namespace}),
    )
    .await;
    let assigner = Grant::new(
        json!([{"kind": "ServiceAccount", "name": "deployer", "namespace": namespace}]),
        json!({
            "images": {"allow": ["docker.io/guildnet-e2e-denied/*"]},
            "assignOwners": {"users": ["alice"]}
        }),
    )
    .await;
    // alice's grant names her: an assigned owner's groups are not known.
    let alices = Grant::new(json!([{"kind": "User", "name": "alice"}]), json!({})).await;
    let quotas: Api<Quota> = Api::namespaced(admin.clone(), &namespace);
    let quota: Quota = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "one-each"},
        "spec": {"perOwner": {"maxWorkspaces": 1}}
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();

    let deployer: Api<Workspace> = Api::namespaced(deployer, &namespace);
    let alice: Api<Workspace> =
        Api::namespaced(client_without_retries(User::Alice).await, &namespace);
    let bob: Api<Workspace> = Api::namespaced(client_without_retries(User::Bob).await, &namespace);
    let apply = PatchParams::apply("argocd-controller").force();
    let for_owner = |name: &str, owner: &str, image: &str| {
        json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace",
            "metadata": {"name": name, "annotations": {"guildnet.io/owner-name": owner}},
            "spec": {"image": image}
        })
    };

    // The controller applies alice's workspace once the webhook has seen the grants.
    let name = unique_name("from-git");
    let manifest_of_alices = for_owner(&name, "alice", ALLOWED_IMAGE);
    let applied = eventually("the webhook to see the assignOwners grant", TIMEOUT, || {
        let deployer = deployer.clone();
        let (name, manifest, apply) = (name.clone(), manifest_of_alices.clone(), apply.clone());
        async move {
            deployer
                .patch(&name, &apply, &Patch::Apply(manifest))
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(owner_label(&applied), Some(owner_id("alice")));
    assert_eq!(owner_name(&applied).as_deref(), Some("alice"));
    let annotations = applied.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("guildnet.io/owner-groups")
            .map(String::as_str),
        Some("system:authenticated")
    );

    // Re-applying the same manifest changes nothing.
    let reapplied = deployer
        .patch(&name, &apply, &Patch::Apply(manifest_of_alices.clone()))
        .await
        .unwrap();
    // The operator may write status in between, so the resourceVersion can move: what must
    // not move is what the webhook sets and what the controller's apply owns.
    assert_eq!(reapplied.metadata.generation, applied.metadata.generation);
    assert_eq!(reapplied.metadata.labels, applied.metadata.labels);
    assert_eq!(reapplied.metadata.annotations, applied.metadata.annotations);
    assert_eq!(
        applied_by(&reapplied, "argocd-controller"),
        applied_by(&applied, "argocd-controller"),
        "a re-apply is a no-op for the controller's fields"
    );
    assert_eq!(owner_label(&reapplied), Some(owner_id("alice")));

    // It counts against alice's Quota (once the webhook sees the Quota): neither she nor
    // the controller may add a second one for her.
    let message = eventually("the webhook to see the Quota", TIMEOUT, || {
        let alice = alice.clone();
        let probe = manifest(&unique_name("second"), json!({"image": ALLOWED_IMAGE}));
        async move {
            match alice.create(&dry_run(), &probe).await {
                Err(kube::Error::Api(status)) if status.reason == "QuotaExceeded" => {
                    Some(status.message)
                }
                _ => None,
            }
        }
    })
    .await;
    assert!(
        message.contains("spec.perOwner.maxWorkspaces is 1 per owner; you use 1"),
        "{message}"
    );
    let second = unique_name("second");
    assert_refused(
        deployer
            .patch(
                &second,
                &apply,
                &Patch::Apply(for_owner(&second, "alice", ALLOWED_IMAGE)),
            )
            .await,
        "QuotaExceeded",
        429,
    );
    // The owner's Capabilities decide what runs, not the controller's.
    let miner = unique_name("miner");
    let message = assert_refused(
        deployer
            .patch(
                &miner,
                &apply,
                &Patch::Apply(for_owner(
                    &miner,
                    "alice",
                    "docker.io/guildnet-e2e-denied/miner:1",
                )),
            )
            .await,
        "ImageDenied",
        400,
    );
    assert!(message.contains("guildnet-e2e-denied"), "{message}");

    // bob may not assign alice; the controller may not assign bob, nor give alice's away.
    let bobs = unique_name("bobs");
    let message = assert_refused(
        bob.patch(
            &bobs,
            &apply,
            &Patch::Apply(for_owner(&bobs, "alice", ALLOWED_IMAGE)),
        )
        .await,
        "OwnerAssignmentDenied",
        403,
    );
    assert!(
        message.contains("\"bob\" may not create workspaces for other users"),
        "{message}"
    );
    let message = assert_refused(
        deployer
            .patch(
                &bobs,
                &apply,
                &Patch::Apply(for_owner(&bobs, "bob", ALLOWED_IMAGE)),
            )
            .await,
        "OwnerAssignmentDenied",
        403,
    );
    assert!(message.contains("only for \"alice\""), "{message}");
    let message = assert_refused(
        deployer
            .patch(
                &name,
                &apply,
                &Patch::Apply(for_owner(&name, "bob", ALLOWED_IMAGE)),
            )
            .await,
        "OwnerAssignmentDenied",
        403,
    );
    assert!(message.contains("never changes"), "{message}");

    // alice owns it: her dashboard lists it as one she may open, bob's does not.
    let listed = format!("{namespace}/{name}");
    eventually("alice's dashboard to list the workspace", TIMEOUT, || {
        let listed = listed.clone();
        async move {
            dashboard_workspaces(User::Alice)
                .await
                .contains(&listed)
                .then_some(())
        }
    })
    .await;
    assert!(!dashboard_workspaces(User::Bob).await.contains(&listed));
    // And she opens it through the proxy (its answer while starting is 503, never 403),
    // while bob may not.
    let path = format!("/w/{namespace}/{name}/");
    let opened = proxy_status(User::Alice, &path).await;
    assert!(
        opened != hyper::StatusCode::FORBIDDEN && opened != hyper::StatusCode::UNAUTHORIZED,
        "{opened}"
    );
    assert_eq!(
        proxy_status(User::Bob, &path).await,
        hyper::StatusCode::FORBIDDEN
    );
    // She suspends it as its owner; the controller prunes it.
    alice
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifecycle": {"suspend": true}}})),
        )
        .await
        .unwrap();
    deployer
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();

    delete_namespace(&namespace).await;
    alices.remove().await;
    assigner.remove().await;
}

// ---- what a user may run -------------------------------------------------------------------

#[tokio::test]
async fn images_outside_the_allowlist_are_refused() {
    let grant = Grant::users().await;
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    until_admitted(&alice).await;
    let denied = manifest(
        &unique_name("miner"),
        json!({"image": "docker.io/guildnet-e2e-denied/miner:1"}),
    );
    let message = assert_refused(
        alice.create(&PostParams::default(), &denied).await,
        "ImageDenied",
        400,
    );
    assert!(message.contains("spec.image"), "{message}");
    assert!(message.contains("spec.images.allow"), "{message}");
    for bypass in [
        "docker.io/library-evil/nginx:1",
        "nginx-evil:1",
        "docker.io/codercom/code-server-evil:1",
        "docker.io.guildnet-e2e-denied.example/library/nginx:1",
    ] {
        let attempt = manifest(&unique_name("bypass"), json!({"image": bypass}));
        assert_refused(alice.create(&dry_run(), &attempt).await, "ImageDenied", 400);
    }
    for allowed in [
        ALLOWED_IMAGE,
        "docker.io/library/nginx:latest",
        "codercom/code-server:4.96.2",
    ] {
        let ok = manifest(&unique_name("ok"), json!({"image": allowed}));
        alice
            .create(&dry_run(), &ok)
            .await
            .unwrap_or_else(|e| panic!("{allowed}: {e}"));
    }
    grant.remove().await;
}

#[tokio::test]
async fn resource_ceilings_exposure_and_placement_are_enforced() {
    let grant = Grant::users().await;
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    until_admitted(&alice).await;
    let huge = manifest(
        &unique_name("huge"),
        json!({"image": ALLOWED_IMAGE, "resources": {"limits": {"cpu": "64", "memory": "1Gi"}}}),
    );
    let message = assert_refused(
        alice.create(&PostParams::default(), &huge).await,
        "ResourceLimitExceeded",
        400,
    );
    assert!(
        message.contains("spec.resources.limits.cpu is 64"),
        "{message}"
    );
    assert!(message.contains("maxPerWorkspace"), "{message}");

    let balancer = manifest(
        &unique_name("lb"),
        json!({"image": ALLOWED_IMAGE, "exposure": {"type": "LoadBalancer"}}),
    );
    let message = assert_refused(
        alice.create(&PostParams::default(), &balancer).await,
        "ExposureDenied",
        400,
    );
    assert!(
        message.contains("spec.exposure.type LoadBalancer"),
        "{message}"
    );

    let elsewhere = manifest(
        &unique_name("far"),
        json!({"image": ALLOWED_IMAGE, "placement": {"cluster": "guildnet-e2e-nowhere"}}),
    );
    let message = assert_refused(
        alice.create(&PostParams::default(), &elsewhere).await,
        "ClusterDenied",
        400,
    );
    assert!(message.contains("spec.placement.cluster"), "{message}");
    grant.remove().await;
}

/// A placement must name a registered cluster that takes workspaces, and cannot change once
/// the Workspace exists (the schema's rule, enforced by the API server itself).
#[tokio::test]
async fn a_placement_names_a_registered_uncordoned_cluster_and_never_changes() {
    let admin = client(User::Admin).await;
    let workspaces: Api<Workspace> = Api::namespaced(admin.clone(), "default");
    until_admitted(&workspaces).await;
    let registrations: Api<ClusterRegistration> = Api::all(admin.clone());
    let cluster = unique_name("edge");
    let grant = Grant::new(
        json!([{"kind": "User", "name": "guildnet-admin"}]),
        json!({"clusters": [cluster]}),
    )
    .await;
    let placed = |name: &str| {
        manifest(
            &unique_name(name),
            json!({"image": ALLOWED_IMAGE, "placement": {"cluster": cluster}}),
        )
    };
    // The webhook decides from its cache: it sees the grant shortly.
    let message = eventually("the unregistered cluster refused", TIMEOUT, || async {
        match workspaces.create(&dry_run(), &placed("unregistered")).await {
            Err(kube::Error::Api(status)) if status.reason == "ClusterNotFound" => {
                Some(status.message)
            }
            _ => None,
        }
    })
    .await;
    assert!(
        message.contains("no ClusterRegistration of that name"),
        "{message}"
    );

    let registration: ClusterRegistration = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "ClusterRegistration",
        "metadata": {"name": cluster},
        "spec": {"kubeconfigSecretRef": {"namespace": "guildnet-system", "name": cluster}, "cordoned": true},
    }))
    .unwrap();
    registrations
        .create(&PostParams::default(), &registration)
        .await
        .unwrap();
    eventually("the cordoned cluster refused", TIMEOUT, || async {
        match workspaces.create(&dry_run(), &placed("cordoned")).await {
            Err(kube::Error::Api(status)) if status.reason == "ClusterCordoned" => Some(()),
            _ => None,
        }
    })
    .await;
    registrations
        .patch(
            &cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cordoned": false}})),
        )
        .await
        .unwrap();
    eventually("the uncordoned cluster admitted", TIMEOUT, || async {
        workspaces
            .create(&dry_run(), &placed("admitted"))
            .await
            .ok()
    })
    .await;

    // Added, changed or removed after creation: refused by the API server, naming the field.
    let local = workspaces
        .create(
            &PostParams::default(),
            &manifest(&unique_name("local"), json!({"image": ALLOWED_IMAGE})),
        )
        .await
        .unwrap();
    let moved = workspaces
        .patch(
            &local.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"placement": {"cluster": cluster}}})),
        )
        .await;
    let status = refusal(moved);
    assert_eq!(status.code, 422, "{}", status.message);
    assert!(
        status.message.contains("spec.placement is immutable"),
        "{}",
        status.message
    );
    let there = workspaces
        .create(&PostParams::default(), &placed("there"))
        .await
        .unwrap();
    for change in [json!({"cluster": "elsewhere"}), Value::Null] {
        let status = refusal(
            workspaces
                .patch(
                    &there.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"placement": change}})),
                )
                .await,
        );
        assert!(
            status.message.contains("spec.placement is immutable"),
            "{}",
            status.message
        );
    }
    for name in [local.name_any(), there.name_any()] {
        workspaces
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    }
    registrations
        .delete(&cluster, &DeleteParams::default())
        .await
        .unwrap();
    grant.remove().await;
}

// ---- quotas --------------------------------------------------------------------------------

async fn set_quota_limit(quotas: &Api<Quota>, name: &str, max: i32) {
    let patch = Patch::Merge(json!({"spec": {"perOwner": {"maxWorkspaces": max}}}));
    quotas
        .patch(name, &PatchParams::default(), &patch)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_quota_refuses_creates_past_the_limit_with_429() {
    let grant = Grant::users().await;
    let namespace = users_namespace("quota").await;
    let quotas: Api<Quota> = Api::namespaced(client(User::Admin).await, &namespace);
    let quota: Quota = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1",
        "kind": "Quota",
        "metadata": {"name": "five-each"},
        "spec": {"perOwner": {"maxWorkspaces": 0}}
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let alice: Api<Workspace> =
        Api::namespaced(client_without_retries(User::Alice).await, &namespace);
    let bob: Api<Workspace> = Api::namespaced(client(User::Bob).await, &namespace);
    // Wait until the webhook sees the Quota (at 0 everything is refused), then its limit of 5.
    eventually("the webhook to see the Quota", TIMEOUT, || {
        let alice = alice.clone();
        async move {
            let probe = manifest(&unique_name("probe"), json!({"image": ALLOWED_IMAGE}));
            match alice.create(&dry_run(), &probe).await {
                Err(kube::Error::Api(status)) if status.reason == "QuotaExceeded" => Some(()),
                _ => None,
            }
        }
    })
    .await;
    set_quota_limit(&quotas, "five-each", 5).await;
    until_admitted(&alice).await;

    let creates = (0..20).map(|_| {
        let alice = alice.clone();
        tokio::spawn(async move {
            let ws = manifest(&unique_name("burst"), json!({"image": ALLOWED_IMAGE}));
            alice.create(&PostParams::default(), &ws).await
        })
    });
    let results = futures_join_all(creates.collect()).await;
    let created: Vec<Workspace> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    assert_eq!(created.len(), 5, "exactly the limit is admitted");
    for result in results.into_iter().filter(Result::is_err) {
        let message = assert_refused(result, "QuotaExceeded", 429);
        assert!(
            message.contains(&format!("Quota {namespace}/five-each")),
            "{message}"
        );
        assert!(
            message.contains("spec.perOwner.maxWorkspaces is 5"),
            "{message}"
        );
    }

    // bob is counted on his own.
    let bobs = manifest(&unique_name("bob"), json!({"image": ALLOWED_IMAGE}));
    bob.create(&PostParams::default(), &bobs).await.unwrap();

    // Deleting one frees capacity for exactly one more.
    let freed = created[0].metadata.name.clone().unwrap();
    alice
        .delete(&freed, &DeleteParams::default())
        .await
        .unwrap();
    eventually("a freed place to be usable", TIMEOUT, || {
        let alice = alice.clone();
        async move {
            let ws = manifest(&unique_name("again"), json!({"image": ALLOWED_IMAGE}));
            alice
                .create(&PostParams::default(), &ws)
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    let sixth = manifest(&unique_name("sixth"), json!({"image": ALLOWED_IMAGE}));
    assert_refused(
        alice.create(&PostParams::default(), &sixth).await,
        "QuotaExceeded",
        429,
    );

    delete_namespace(&namespace).await;
    grant.remove().await;
}

/// A client acting as `user` that does not retry refusals: kube's client retries 429s by
/// default, which would turn each QuotaExceeded into minutes of retries, and could admit
/// a retried create once capacity frees.
async fn client_without_retries(user: User) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path()).unwrap();
    let options = kube::config::KubeConfigOptions {
        context: Some(user.context().to_owned()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

/// Awaits every task (tokio has no join_all of its own).
async fn futures_join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

// ---- what is not ours ----------------------------------------------------------------------

#[tokio::test]
async fn only_workspaces_outside_system_namespaces_are_intercepted() {
    let admin = client(User::Admin).await;
    // A ConfigMap never reaches the webhook.
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    let name = unique_name("plain");
    let config_map =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"a": "b"}})).unwrap();
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();
    config_maps
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();

    let validating: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    let validating = validating.get("guildnet-webhook").await.unwrap();
    let hook = &validating.webhooks.unwrap()[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.match_policy.as_deref(), Some("Equivalent"));
    assert_eq!(hook.timeout_seconds, Some(5));
    let rule = &hook.rules.as_ref().unwrap()[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&["guildnet.io".to_owned()][..])
    );
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["workspaces".to_owned()][..])
    );
    let excluded = hook
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap();
    assert_eq!(excluded[0].operator, "NotIn");
    assert!(
        excluded[0]
            .values
            .as_ref()
            .unwrap()
            .contains(&"kube-system".to_owned())
    );
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let mutating = mutating.get("guildnet-webhook").await.unwrap();
    assert!(
        mutating.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .is_some()
    );

    // A Workspace in kube-system is not intercepted: it gets no owner label.
    let system: Api<Workspace> = Api::namespaced(admin, "kube-system");
    let name = unique_name("system");
    let ws = system
        .create(
            &PostParams::default(),
            &manifest(&name, json!({"image": ALLOWED_IMAGE})),
        )
        .await
        .unwrap();
    assert_eq!(owner_label(&ws), None);
    system
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

// ---- certificate rotation ------------------------------------------------------------------

/// The webhook binary the suite built.
fn webhook_binary() -> PathBuf {
    std::env::var_os("GUILDNET_WEBHOOK").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/guildnet-webhook"),
        PathBuf::from,
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A webhook process of this test, stopped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain-HTTP GET; the response text, if any.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// Posts an AdmissionReview over a new TLS connection that trusts only `ca_pem`; the
/// serving certificate seen and the response text.
async fn post_review(
    addr: SocketAddr,
    ca_pem: &str,
    body: &str,
) -> Result<(Vec<u8>, String), String> {
    post_review_as(addr, ca_pem, None, body).await
}

/// Like [`post_review`], presenting `client` (certificate and key PEM) when given.
async fn post_review_as(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<(&[u8], &[u8])>,
    body: &str,
) -> Result<(Vec<u8>, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| e.to_string())?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => config.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no serving certificate")?[0]
        .to_vec();
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // A peer that closes without close_notify still sent its whole response.
    let _ = tls.read_to_end(&mut response).await;
    Ok((served, String::from_utf8_lossy(&response).into_owned()))
}

/// A new users' namespace (`tag`) under a Quota of 2Gi of storage per owner, and alice's
/// workspaces there; the grant lets users create workspaces until it is dropped.
async fn alice_under_two_gi_of_storage(tag: &str) -> (Grant, String, Api<Workspace>) {
    let grant = Grant::users().await;
    let namespace = users_namespace(tag).await;
    let admin = client(User::Admin).await;
    let quotas: Api<Quota> = Api::namespaced(admin, &namespace);
    let quota: Quota = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "two-gi"},
        "spec": {"perOwner": {"storage": "2Gi"}}
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let alice: Api<Workspace> =
        Api::namespaced(client_without_retries(User::Alice).await, &namespace);
    (grant, namespace, alice)
}

#[tokio::test]
async fn claims_retained_in_a_registered_cluster_count_as_its_registration_lists_them() {
    let (grant, namespace, alice) = alice_under_two_gi_of_storage("retained-there").await;
    let admin = client(User::Admin).await;
    let one_gi = json!({"image": ALLOWED_IMAGE,
        "volumes": [{"name": "home", "mountPath": "/home", "persistent": {"size": "1Gi"}}]});
    until_admitted_spec(&alice, one_gi.clone()).await;

    // The operator lists the claims retained in a registered cluster in its registration's
    // status (tests/clusters.rs shows it); here the status says alice keeps 2Gi there, of
    // a workspace of this namespace that is gone.
    let cluster = unique_name("kept-there");
    let registrations: Api<ClusterRegistration> = Api::all(admin.clone());
    let registration: ClusterRegistration = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "ClusterRegistration",
        "metadata": {"name": cluster},
        "spec": {"kubeconfigSecretRef": {"namespace": "guildnet-system", "name": cluster}},
    }))
    .unwrap();
    registrations
        .create(&PostParams::default(), &registration)
        .await
        .unwrap();
    let listed = json!({"status": {"retainedClaims": [{
        "namespace": namespace, "name": "gone-home", "owner": owner_id("alice"), "storage": "2Gi",
    }]}});
    registrations
        .patch_status(&cluster, &PatchParams::default(), &Patch::Merge(&listed))
        .await
        .unwrap();
    let message = eventually("the listed claim to count", TIMEOUT, || {
        let alice = alice.clone();
        let one_gi = manifest(&unique_name("next"), one_gi.clone());
        async move {
            match alice.create(&dry_run(), &one_gi).await {
                Err(kube::Error::Api(status)) if status.reason == "QuotaExceeded" => {
                    Some(status.message)
                }
                _ => None,
            }
        }
    })
    .await;
    assert!(message.contains("spec.perOwner.storage"), "{message}");
    // The registration gone, so is what it listed. (Not relisted for another owner: the
    // operator, which writes this status, would race the test's write.)
    registrations
        .delete(&cluster, &DeleteParams::default())
        .await
        .unwrap();
    until_admitted_spec(&alice, one_gi).await;
    drop(grant);
}

#[tokio::test]
async fn retained_claims_count_against_storage_until_deleted() {
    let (grant, namespace, alice) = alice_under_two_gi_of_storage("retained").await;
    let admin = client(User::Admin).await;
    let with_volume = |size: &str| {
        json!({"image": ALLOWED_IMAGE,
               "volumes": [{"name": "home", "mountPath": "/home", "persistent": {"size": size}}]})
    };
    // Wait until the webhook sees the Quota: 3Gi is then refused.
    eventually("the webhook to see the Quota", TIMEOUT, || {
        let alice = alice.clone();
        let probe = manifest(&unique_name("probe"), with_volume("3Gi"));
        async move {
            match alice.create(&dry_run(), &probe).await {
                Err(kube::Error::Api(status)) if status.reason == "QuotaExceeded" => Some(()),
                _ => None,
            }
        }
    })
    .await;

    // A 2Gi volume kept after its workspace is gone still takes alice's 2Gi.
    let first = unique_name("keeps");
    alice
        .create(
            &PostParams::default(),
            &manifest(&first, with_volume("2Gi")),
        )
        .await
        .unwrap();
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(admin.clone(), &namespace);
    let claim = format!("{first}-home");
    eventually("the operator to make the claim", TIMEOUT, || {
        let claims = claims.clone();
        let claim = claim.clone();
        async move { claims.get_opt(&claim).await.ok().flatten().map(|_| ()) }
    })
    .await;
    alice
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    guildnet_e2e::workspaces::wait_gone(&alice, &first).await;
    // The workspace is gone; only its retained claim still takes the 2Gi.
    let second = manifest(&unique_name("next"), with_volume("1Gi"));
    let message = eventually("the retained claim to count", TIMEOUT, || {
        let alice = alice.clone();
        let second = second.clone();
        async move {
            match alice.create(&dry_run(), &second).await {
                Err(kube::Error::Api(status)) if status.reason == "QuotaExceeded" => {
                    Some(status.message)
                }
                _ => None,
            }
        }
    })
    .await;
    assert!(message.contains("spec.perOwner.storage"), "{message}");
    // Deleting the claim gives the storage back.
    claims
        .delete(&claim, &DeleteParams::default())
        .await
        .unwrap();
    until_admitted_spec(&alice, with_volume("1Gi")).await;
    drop(grant);
}

#[tokio::test]
async fn gpus_and_ephemeral_storage_count_against_per_owner_quotas() {
    let grant = Grant::new(
        json!([{"kind": "Group", "name": "guildnet:users"}]),
        json!({"resources": {"maxPerWorkspace": {
            "cpu": "2", "memory": "4Gi", "ephemeralStorage": "20Gi",
            "extended": {"nvidia.com/gpu": "1"}
        }}}),
    )
    .await;
    let namespace = users_namespace("gpus").await;
    let admin = client(User::Admin).await;
    let quotas: Api<Quota> = Api::namespaced(admin.clone(), &namespace);
    let quota: Quota = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "one-gpu"},
        "spec": {"perOwner": {"ephemeralStorage": "10Gi", "extended": {"nvidia.com/gpu": "1"}}}
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let alice: Api<Workspace> =
        Api::namespaced(client_without_retries(User::Alice).await, &namespace);
    let asking = |ephemeral: Option<&str>, gpus: &str| {
        let mut requests = json!({"cpu": "500m", "memory": "1Gi"});
        if let Some(ephemeral) = ephemeral {
            requests["ephemeral-storage"] = json!(ephemeral);
        }
        json!({"image": ALLOWED_IMAGE,
               "resources": {"requests": requests, "limits": {"nvidia.com/gpu": gpus}}})
    };
    let refusal = |spec: Value| {
        let alice = alice.clone();
        async move {
            match alice
                .create(&dry_run(), &manifest(&unique_name("probe"), spec))
                .await
            {
                Err(kube::Error::Api(status)) if status.reason == "QuotaExceeded" => {
                    Some(status.message)
                }
                _ => None,
            }
        }
    };
    // Once the webhook sees the Quota, a workspace that declares no ephemeral storage
    // (so could use any amount) is refused.
    let message = eventually("the webhook to see the Quota", TIMEOUT, || {
        refusal(asking(None, "0"))
    })
    .await;
    assert!(
        message.contains("declares no ephemeral storage")
            && message.contains("spec.resources.requests.ephemeral-storage"),
        "{message}"
    );

    let first = unique_name("gpu");
    alice
        .create(
            &PostParams::default(),
            &manifest(&first, asking(Some("6Gi"), "1")),
        )
        .await
        .unwrap();
    let message = refusal(asking(Some("2Gi"), "1"))
        .await
        .expect("a second GPU");
    assert!(
        message.contains("spec.perOwner.extended[nvidia.com/gpu] is 1 per owner; you use 1 and this request adds 1"),
        "{message}"
    );
    let message = refusal(asking(Some("6Gi"), "0"))
        .await
        .expect("12Gi of ephemeral storage");
    assert!(
        message.contains(
            "spec.perOwner.ephemeralStorage is 10Gi per owner; you use 6Gi and this request adds 6Gi"
        ),
        "{message}"
    );
    alice
        .create(
            &dry_run(),
            &manifest(&unique_name("fits"), asking(Some("4Gi"), "0")),
        )
        .await
        .expect("4Gi more fits within 10Gi");
    alice
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    grant.remove().await;
}

/// Waits until the webhook admits (dry run) a workspace of `spec`.
async fn until_admitted_spec(api: &Api<Workspace>, spec: Value) {
    eventually("the webhook to admit the workspace", TIMEOUT, || {
        let api = api.clone();
        let probe = manifest(&unique_name("probe"), spec.clone());
        async move { api.create(&dry_run(), &probe).await.ok().map(|_| ()) }
    })
    .await;
}

#[tokio::test]
async fn only_the_api_server_may_call_the_webhook() {
    // A forged CREATE that would reserve alice's Quota if anyone could send it.
    let url = std::env::var("GUILDNET_WEBHOOK_URL")
        .expect("GUILDNET_WEBHOOK_URL (scripts/with-stack.sh exports it)");
    let addr: SocketAddr = url.trim_start_matches("https://").parse().unwrap();
    let admin = client(User::Admin).await;
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(admin);
    let hook = &validating
        .get("guildnet-webhook")
        .await
        .unwrap()
        .webhooks
        .unwrap()[0];
    let ca = String::from_utf8(hook.client_config.ca_bundle.clone().unwrap().0).unwrap();
    let forged = |dry_run: bool| {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "forged", "kind": {"group": "guildnet.io", "version": "v1alpha1", "kind": "Workspace"},
                "resource": {"group": "guildnet.io", "version": "v1alpha1", "resource": "workspaces"},
                "name": "forged", "namespace": "default", "operation": "CREATE", "dryRun": dry_run,
                "userInfo": {"username": "alice", "groups": ["guildnet:users", "system:authenticated"]},
                "object": {"apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace",
                           "metadata": {"name": "forged", "namespace": "default"},
                           "spec": {"image": ALLOWED_IMAGE}}
            }
        })
        .to_string()
    };
    let answered = |result: &Result<(Vec<u8>, String), String>| matches!(result, Ok((_, response)) if response.starts_with("HTTP/1.1"));

    let anonymous = post_review_as(addr, &ca, None, &forged(false)).await;
    assert!(
        !answered(&anonymous),
        "no client certificate: {anonymous:?}"
    );
    // A user's client certificate comes from the cluster CA, not the webhook client CA.
    let kubeconfig: Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path()).unwrap()).unwrap();
    let users = kubeconfig["users"].as_array().unwrap();
    let alice = &users.iter().find(|u| u["name"] == "alice").unwrap()["user"];
    let pem = |field: &str| {
        data_encoding::BASE64
            .decode(alice[field].as_str().unwrap().as_bytes())
            .unwrap()
    };
    let (cert, key) = (pem("client-certificate-data"), pem("client-key-data"));
    let as_alice = post_review_as(addr, &ca, Some((&cert, &key)), &forged(false)).await;
    assert!(!answered(&as_alice), "a user's certificate: {as_alice:?}");

    // The API server's own webhook client certificate is served (a dry run reserves nothing).
    let pki = kubeconfig_path().parent().unwrap().join("pki");
    let cert = std::fs::read(pki.join("webhook-client.crt")).unwrap();
    let key = std::fs::read(pki.join("webhook-client.key")).unwrap();
    let (_, response) = post_review_as(addr, &ca, Some((&cert, &key)), &forged(true))
        .await
        .expect("the API server is served");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn the_serving_certificate_rotates_while_requests_keep_succeeding() {
    // A second webhook of its own, with a certificate living 6 seconds and renewed 4 seconds
    // before expiry, in its own Secret; it registers nothing, so the suite's webhook is
    // untouched. It is called directly, as the API server would.
    let secret_name = unique_name("rotation-tls");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let binary = webhook_binary();
    assert!(
        binary.exists(),
        "{} is missing: cargo build -p guildnet-webhook",
        binary.display()
    );
    let _webhook = Process(
        Command::new(&binary)
            .args([
                "--listen",
                &listen.to_string(),
                "--metrics-listen",
                &metrics.to_string(),
            ])
            .args([
                "--tls-secret-namespace",
                "default",
                "--tls-secret-name",
                &secret_name,
            ])
            .args([
                "--cert-host",
                "127.0.0.1",
                "--cert-validity",
                "6s",
                "--cert-renew-before",
                "4s",
            ])
            .args(["--ca-validity", "1h"])
            .env("KUBECONFIG", kubeconfig_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("the second webhook to be ready", TIMEOUT, || async move {
        http_get(metrics, "/readyz")
            .await
            .filter(|response| response.starts_with("HTTP/1.1 200"))
            .map(|_| ())
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client(User::Admin).await, "default");
    let secret = secrets.get(&secret_name).await.unwrap();
    let ca = String::from_utf8(secret.data.unwrap()["ca.crt"].0.clone()).unwrap();

    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "rotation",
            "kind": {"group": "guildnet.io", "version": "v1alpha1", "kind": "Workspace"},
            "resource": {"group": "guildnet.io", "version": "v1alpha1", "resource": "workspaces"},
            "name": "ide",
            "namespace": "default",
            "operation": "DELETE",
            "userInfo": {"username": "alice"},
            "oldObject": {
                "apiVersion": "guildnet.io/v1alpha1",
                "kind": "Workspace",
                "metadata": {"name": "ide", "namespace": "default", "labels": {"guildnet.io/owner": owner_id("alice")}},
                "spec": {"image": ALLOWED_IMAGE}
            }
        }
    })
    .to_string();
    let mut served = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(14);
    let mut requests = 0;
    while Instant::now() < deadline {
        let (cert, response) = post_review(listen, &ca, &review)
            .await
            .unwrap_or_else(|e| panic!("request {requests} failed: {e}"));
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""uid":"rotation""#), "{response}");
        assert!(response.contains(r#""allowed":true"#), "{response}");
        if served.last() != Some(&cert) {
            served.push(cert);
        }
        requests += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        served.len() >= 3,
        "{} certificates served over {requests} requests: expected renewals every few seconds",
        served.len()
    );
    let _ = secrets.delete(&secret_name, &DeleteParams::default()).await;
}

/// The managedFields entry a field manager's apply left on the object.
fn applied_by(
    workspace: &Workspace,
    manager: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry> {
    workspace
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|entry| {
            entry.manager.as_deref() == Some(manager) && entry.operation.as_deref() == Some("Apply")
        })
        .cloned()
}

// ---- GuildDatabases --------------------------------------------------------------------------

fn guild_database(name: &str, spec: Value) -> guildnet_api::GuildDatabase {
    serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
        "metadata": {"name": name, "labels": {"guildnet.io/owner": "u-spoofed"}},
        "spec": spec
    }))
    .unwrap()
}

/// Lets guildnet:users manage GuildDatabases in `namespace` (as the chart's edit role does).
async fn bind_database_user(admin: &Client, namespace: &str) {
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), namespace);
    let role = serde_json::from_value(json!({
        "metadata": {"name": "database-user"},
        "rules": [{"apiGroups": ["guildnet.io"], "resources": ["guilddatabases"],
                   "verbs": ["create", "get", "list", "watch", "update", "patch", "delete"]}]
    }))
    .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), namespace);
    let binding = serde_json::from_value(json!({
        "metadata": {"name": "database-user"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "database-user"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "guildnet:users"}]
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// GuildDatabases pass the same webhook as Workspaces: the owner comes from the requester,
/// a Capabilities' `databases` grant bounds image, servers and storage (the starter grant
/// gives everyone one server of up to 10Gi; this test's grant two), their storage counts
/// against the owner's Quota with their workspaces', and only the owner changes or deletes
/// one.
#[tokio::test]
async fn guild_databases_are_owned_bounded_and_counted_like_workspaces() {
    let admin = client(User::Admin).await;
    let namespace = users_namespace("gdb").await;
    bind_database_user(&admin, &namespace).await;
    let grant = Grant::new(
        json!([{"kind": "Group", "name": "guildnet:users"}]),
        json!({"databases": {"maxReplicas": 2, "maxStorage": "5Gi"}}),
    )
    .await;
    let alice: Api<guildnet_api::GuildDatabase> =
        Api::namespaced(client(User::Alice).await, &namespace);
    let bob: Api<guildnet_api::GuildDatabase> =
        Api::namespaced(client(User::Bob).await, &namespace);
    let two_servers = json!({"replicas": 2, "storage": {"size": "1Gi"}});
    eventually("the webhook to see the databases grant", TIMEOUT, || {
        let alice = alice.clone();
        let probe = guild_database("probe", two_servers.clone());
        async move { alice.create(&dry_run(), &probe).await.ok().map(|_| ()) }
    })
    .await;

    let created = alice
        .create(
            &PostParams::default(),
            &guild_database("shop", two_servers.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        created.labels().get("guildnet.io/owner"),
        Some(&owner_id("alice")),
        "the spoofed owner label replaced by alice's"
    );
    assert_eq!(
        created
            .annotations()
            .get("guildnet.io/owner-name")
            .map(String::as_str),
        Some("alice")
    );

    // Within the grants only.
    let message = assert_refused(
        alice
            .create(
                &dry_run(),
                &guild_database("big", json!({"replicas": 3, "storage": {"size": "1Gi"}})),
            )
            .await,
        "ResourceLimitExceeded",
        400,
    );
    assert!(message.contains("spec.replicas is 3"), "{message}");
    assert_refused(
        alice
            .create(
                &dry_run(),
                &guild_database("huge", json!({"storage": {"size": "20Gi"}})),
            )
            .await,
        "ResourceLimitExceeded",
        400,
    );
    assert_refused(
        alice
            .create(
                &dry_run(),
                &guild_database(
                    "odd",
                    json!({"image": "docker.io/guildnet-e2e-denied/rethinkdb:1", "storage": {"size": "1Gi"}}),
                ),
            )
            .await,
        "ImageDenied",
        400,
    );

    // A user's password from a Secret alice may not read (her role here has none).
    let message = assert_refused(
        alice
            .create(
                &dry_run(),
                &guild_database(
                    "users",
                    json!({"storage": {"size": "1Gi"},
                           "users": [{"name": "app", "passwordSecretRef": {"name": "someone-elses"}}]}),
                ),
            )
            .await,
        "ReferenceDenied",
        403,
    );
    assert!(
        message.contains("spec.users[0].passwordSecretRef"),
        "{message}"
    );

    // Only the owner changes or deletes it.
    let grow = Patch::Merge(json!({"spec": {"storage": {"size": "2Gi"}}}));
    assert_refused(
        bob.patch("shop", &PatchParams::default(), &grow).await,
        "NotOwner",
        403,
    );
    assert_refused(
        bob.delete("shop", &DeleteParams::default()).await,
        "NotOwner",
        403,
    );

    // Its 2 × 1Gi count against alice's storage Quota: 1Gi more fits 3Gi, 2Gi more does not.
    let quotas: Api<Quota> = Api::namespaced(admin.clone(), &namespace);
    let quota: Quota = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "storage"},
        "spec": {"subjects": [{"kind": "Group", "name": "guildnet:users"}], "perOwner": {"storage": "3Gi"}}
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let two_more = guild_database("more", json!({"replicas": 2, "storage": {"size": "1Gi"}}));
    let message = eventually(
        "the webhook to count the database against the Quota",
        TIMEOUT,
        || {
            let alice = alice.clone();
            let two_more = two_more.clone();
            async move {
                match alice.create(&dry_run(), &two_more).await {
                    Err(kube::Error::Api(status)) if status.reason == "QuotaExceeded" => {
                        assert_eq!(status.code, 429);
                        Some(status.message)
                    }
                    _ => None,
                }
            }
        },
    )
    .await;
    assert!(
        message.contains("spec.perOwner.storage is 3Gi"),
        "{message}"
    );
    alice
        .create(
            &dry_run(),
            &guild_database("one-more", json!({"storage": {"size": "1Gi"}})),
        )
        .await
        .expect("1Gi more fits the 3Gi Quota");

    alice
        .delete("shop", &DeleteParams::default())
        .await
        .expect("the owner deletes it");
    delete_namespace(&namespace).await;
    grant.remove().await;
}
