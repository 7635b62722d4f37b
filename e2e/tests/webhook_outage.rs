//! An outage of the admission webhook, on a control plane of its own (the suite's webhook is
//! never touched): with the webhook killed (SIGKILL), ConfigMaps and Pods are still created,
//! since only Workspaces and GuildDatabases are intercepted, while Workspace creates fail with an error naming
//! the webhook (`failurePolicy: Fail`); restarting the webhook restores service.

use std::time::Duration;

use guildnet_api::{Capabilities, Workspace};
use guildnet_e2e::cluster::{Cluster, Webhook};
use guildnet_e2e::workspaces::manifest;
use guildnet_e2e::{User, create_namespace, eventually, unique_name};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn workspace(name: &str) -> Workspace {
    manifest(name, json!({"image": "nginx:1.27"}))
}

fn config_map(name: &str) -> ConfigMap {
    from_json(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
}

fn pod(name: &str) -> Pod {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}
    }))
}

#[tokio::test]
async fn a_webhook_outage_blocks_only_workspaces_and_a_restart_restores_them() {
    let cluster = Cluster::start("e2e-webhook-outage");
    let admin = cluster.client(User::Admin).await;
    let capabilities: Capabilities = from_json(json!({
        "apiVersion": "guildnet.io/v1alpha1",
        "kind": "Capabilities",
        "metadata": {"name": "outage"},
        "spec": {
            "subjects": [{"kind": "Group", "name": "system:authenticated"}],
            "images": {"allow": ["docker.io/library/nginx:*"]},
            "resources": {"maxPerWorkspace": {"cpu": "2", "memory": "4Gi"}},
            "exposure": ["ClusterIP"]
        }
    }));
    Api::<Capabilities>::all(admin.clone())
        .create(&PostParams::default(), &capabilities)
        .await
        .expect("create the Capabilities");
    let namespace = unique_name("outage");
    create_namespace(&admin, &namespace, &[]).await;
    let workspaces: Api<Workspace> = Api::namespaced(admin.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);

    let mut webhook = Webhook::start(&cluster);
    webhook.until_ready(&admin, TIMEOUT).await;
    // The webhook's cache may see the Capabilities a moment after it reports ready.
    let created = eventually("a Workspace create to be admitted", TIMEOUT, || async {
        workspaces
            .create(&PostParams::default(), &workspace(&unique_name("before")))
            .await
            .ok()
    })
    .await;
    assert!(
        created
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("guildnet.io/owner")),
        "the webhook labelled the owner: {:?}",
        created.metadata
    );

    webhook.kill();
    config_maps
        .create(&PostParams::default(), &config_map("during-outage"))
        .await
        .expect("a ConfigMap is created while the webhook is down");
    pods.create(&PostParams::default(), &pod("during-outage"))
        .await
        .expect("a Pod is created while the webhook is down");
    let refused = workspaces
        .create(&PostParams::default(), &workspace("during-outage"))
        .await;
    let status = match refused {
        Err(kube::Error::Api(status)) => status,
        other => panic!("a Workspace create must fail while the webhook is down: {other:?}"),
    };
    let message = &status.message;
    assert!(
        message.contains("failed calling webhook") && message.contains("workspaces.guildnet.io"),
        "the error names the webhook: {message}"
    );
    assert!(
        message.contains("connection refused"),
        "the error says why: {message}"
    );
    assert!(
        message.contains(&webhook.url()),
        "the error names the URL: {message}"
    );
    assert!(
        workspaces.get_opt("during-outage").await.unwrap().is_none(),
        "nothing was stored"
    );

    webhook.restart();
    webhook.until_ready(&admin, TIMEOUT).await;
    eventually("Workspace creates to work again", TIMEOUT, || async {
        workspaces
            .create(&PostParams::default(), &workspace(&unique_name("after")))
            .await
            .ok()
    })
    .await;
}
