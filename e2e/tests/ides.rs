//! Real IDEs behind the proxy, in a real browser: code-server and JupyterLab (as
//! `make real-ides` installs them from npm and PyPI) run at the pod IPs of alice's
//! workspaces (`guildnet_e2e::ides`), and Debian's headless Chromium drives them through the
//! proxy (`e2e/browser/{code-server,jupyterlab,ide-forbidden}.mjs`). Screenshots land in
//! `target/e2e-artifacts/<script>/`, the IDEs' logs in `target/e2e-artifacts/ides/<name>/`.
//!
//! Built only with the `real-ides` feature, on a stack whose proxy waits as long for a
//! workspace as in production (the main e2e stack gives up after 3 s, for its own tests):
//! `scripts/e2e-ides.sh` (part of `make e2e`) runs them so. Needs root (`ip netns`), `node`,
//! `/usr/bin/chromium` and `e2e/browser/node_modules` (`scripts/install-deps.sh`).

use std::time::Duration;

use guildnet_api::workspace::{Workspace, WorkspacePhase};
use guildnet_e2e::browser;
use guildnet_e2e::ides::{Ide, Kind, fresh_home};
use guildnet_e2e::upstream::get_as;
use guildnet_e2e::workspaces::{manifest, wait_for, wait_gone};
use guildnet_e2e::{User, client, eventually, token, unique_name};
use hyper::StatusCode;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const NAMESPACE: &str = "default";

/// Creates alice's workspace `name` from `spec` (and `annotations`), waits until it runs, and
/// starts its IDE at its pod IP.
async fn workspace_with_ide(
    api: &Api<Workspace>,
    name: &str,
    spec: serde_json::Value,
    annotations: &[(&str, &str)],
) -> Ide {
    let mut ws = manifest(name, spec);
    ws.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    api.create(&PostParams::default(), &ws)
        .await
        .unwrap_or_else(|e| panic!("create workspace {name}: {e}"));
    wait_for(api, name, "Running", |ws| {
        ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Running)
    })
    .await;
    Ide::start(
        &client(User::Admin).await,
        NAMESPACE,
        name,
        &fresh_home(name),
    )
    .await
}

/// Waits until the proxy routes `path` of the workspace to its IDE for alice (its
/// EndpointSlice reached the proxy's cache).
async fn routed(path: &str) {
    eventually(
        &format!("the proxy to route {path}"),
        Duration::from_secs(60),
        || async {
            let response = get_as(User::Alice, path).await.ok()?;
            (response.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
}

/// Stops the IDE, deletes its workspace, and prints the IDE's output (shown when the test
/// fails).
async fn finish(ide: Ide, api: &Api<Workspace>, name: &str) {
    let (kind, log) = (ide.kind(), ide.log());
    drop(ide);
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete the workspace");
    wait_gone(api, name).await;
    println!("--- {kind:?}'s log\n{log}");
}

#[tokio::test]
async fn code_server_runs_through_the_proxy_for_its_owner_only() {
    let proxy = browser::proxy_url("ides");
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, NAMESPACE);
    let name = unique_name("code");
    // As the README's walk-through writes it: its port is the default, 8080, which the test
    // upstream also serves on every pod IP (the IDE takes it on this one).
    let ide = workspace_with_ide(
        &api,
        &name,
        json!({"image": "codercom/code-server:4.100.3"}),
        &[],
    )
    .await;
    assert_eq!(ide.kind(), Kind::CodeServer);
    // What the operator generated, as the pod's env gets it from the Secret.
    let password = ide
        .env("PASSWORD")
        .expect("the container gets PASSWORD from the generated Secret")
        .to_owned();
    assert!(
        password.len() >= 20,
        "a generated password is long: {password:?}"
    );
    let (file_name, file_text) = (
        "hello-guildnet.md",
        format!("Written by the test for {name}."),
    );
    std::fs::write(
        ide.folder().join(file_name),
        format!("# Hello\n\n{file_text}\n"),
    )
    .expect("write a file into the workspace's folder");
    let ws_path = format!("/w/{NAMESPACE}/{name}/");
    routed(&format!("{ws_path}healthz")).await;

    let owner = browser::run(
        "code-server",
        vec![
            ("GUILDNET_PROXY_URL", proxy.clone()),
            ("GUILDNET_ALICE_TOKEN", token(User::Alice)),
            ("GUILDNET_WORKSPACE_PATH", ws_path.clone()),
            ("GUILDNET_IDE_PASSWORD", password.clone()),
            ("GUILDNET_FILE_NAME", file_name.into()),
            ("GUILDNET_FILE_TEXT", file_text),
        ],
    )
    .await;
    let other = browser::run(
        "ide-forbidden",
        vec![
            ("GUILDNET_PROXY_URL", proxy),
            ("GUILDNET_BOB_TOKEN", token(User::Bob)),
            ("GUILDNET_WORKSPACE_PATH", ws_path),
            ("GUILDNET_IDE_PASSWORD", password),
        ],
    )
    .await;
    finish(ide, &api, &name).await;
    owner.assert_passed();
    other.assert_passed();
}

#[tokio::test]
async fn jupyterlab_runs_a_kernel_through_the_proxy_under_its_prefix() {
    let proxy = browser::proxy_url("ides");
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, NAMESPACE);
    let name = unique_name("lab");
    let ws_path = format!("/w/{NAMESPACE}/{name}/");
    let lab_token = format!("token-{}", unique_name("lab"));
    // As a user of the Jupyter Docker Stacks images writes it: the server under the proxy's
    // prefix, which the proxy then keeps, and the token in the environment.
    let ide = workspace_with_ide(
        &api,
        &name,
        json!({
            "image": "quay.io/jupyter/base-notebook:2025-06-30",
            "ports": [{"name": "http", "containerPort": 8888}],
            "args": [format!("--ServerApp.base_url={ws_path}")],
            "env": [{"name": "JUPYTER_TOKEN", "value": lab_token}],
            "probes": {"path": format!("{ws_path}api")},
        }),
        &[("guildnet.io/proxy-keep-prefix", "true")],
    )
    .await;
    assert_eq!(ide.kind(), Kind::JupyterLab);
    assert_eq!(ide.env("JUPYTER_TOKEN"), Some(lab_token.as_str()));
    routed(&format!("{ws_path}api")).await;

    let run = browser::run(
        "jupyterlab",
        vec![
            ("GUILDNET_PROXY_URL", proxy),
            ("GUILDNET_ALICE_TOKEN", token(User::Alice)),
            ("GUILDNET_WORKSPACE_PATH", ws_path),
            ("GUILDNET_IDE_TOKEN", lab_token),
            ("GUILDNET_NOTEBOOK", "guildnet-check.ipynb".into()),
        ],
    )
    .await;
    let saved = ide.folder().join("guildnet-check.ipynb");
    let notebook = std::fs::read_to_string(&saved).unwrap_or_default();
    finish(ide, &api, &name).await;
    run.assert_passed();
    assert!(
        notebook.contains("1+1"),
        "the notebook saved through the proxy is in the workspace's folder ({}): {notebook:.300}",
        saved.display()
    );
}
