//! A workspace's service worker in a real browser: `e2e/browser/service-worker.mjs` drives
//! Debian's headless Chromium (playwright-core) through the proxy as alice. The workspace's
//! app is the test upstream, whose `…/sw.js` is sent with `Service-Worker-Allowed: /` as
//! code-server's worker is. In path mode the workspace shares the dashboard's origin: the
//! test checks that a page of the workspace cannot register a worker outside its prefix
//! (which would control the dashboard and `/login`), that within the prefix it can, and that
//! no worker controls `/` or `/login` afterwards. Screenshots land in
//! `target/e2e-artifacts/service-worker/`.
//!
//! Needs the stack's proxy (`GUILDNET_PROXY_URL`) and test upstream (as root), `node`,
//! `/usr/bin/chromium` and `e2e/browser/node_modules` (`scripts/install-deps.sh`):
//! `GUILDNET_STACK=sw scripts/e2e.sh --test service_worker`.

use std::net::SocketAddr;
use std::time::Duration;

use guildnet_api::workspace::{Workspace, WorkspacePhase};
use guildnet_e2e::browser;
use guildnet_e2e::upstream::{get, get_as, pod_ip_of_workspace, upstream_port};
use guildnet_e2e::workspaces::{create, wait_for, wait_gone};
use guildnet_e2e::{User, client, eventually, token, unique_name};
use hyper::StatusCode;
use kube::api::{Api, DeleteParams};
use serde_json::json;

const NAMESPACE: &str = "default";

#[tokio::test]
async fn a_workspace_cannot_register_a_service_worker_outside_its_prefix() {
    let proxy = browser::proxy_url("service_worker");
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, NAMESPACE);
    let name = unique_name("sw");
    let port = upstream_port();
    create(
        &api,
        &name,
        json!({"image": "nginx:1.27", "ports": [{"containerPort": port}]}),
    )
    .await;
    wait_for(&api, &name, "Running", |ws| {
        ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Running)
    })
    .await;
    let pod = SocketAddr::new(
        pod_ip_of_workspace(&client(User::Admin).await, NAMESPACE, &name).await,
        port,
    );
    // The app answers at the pod IP, and the proxy routes to it (its EndpointSlice reached
    // the proxy's cache), before the browser starts.
    let ws_path = format!("/w/{NAMESPACE}/{name}/");
    eventually(
        &format!("the proxy to route {ws_path} and the app's sw.js to answer"),
        Duration::from_secs(60),
        || async {
            let direct = get(pod, "/deep/sw.js").await.ok()?;
            let proxied = get_as(User::Alice, &format!("{ws_path}sw.js")).await.ok()?;
            (direct.status() == StatusCode::OK && proxied.status() == StatusCode::OK).then_some(())
        },
    )
    .await;

    let run = browser::run(
        "service-worker",
        vec![
            ("GUILDNET_PROXY_URL", proxy),
            ("GUILDNET_ALICE_TOKEN", token(User::Alice)),
            ("GUILDNET_WORKSPACE_PATH", ws_path),
            ("GUILDNET_UPSTREAM_URL", format!("http://{pod}/")),
        ],
    )
    .await;
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete the workspace");
    wait_gone(&api, &name).await;

    run.assert_passed();
}
