//! The dashboard in a real browser: `e2e/browser/dashboard.mjs` drives Debian's headless
//! Chromium (playwright-core) through the proxy as alice: the login page, a refused token
//! and image, launching a workspace from the form, seeing it Running and ready, opening it
//! (new tab and inline), its logs and events, suspend, resume, delete and log out. Its
//! screenshots land in `target/e2e-artifacts/dashboard/`.
//!
//! Needs the proxy of the stack (`GUILDNET_PROXY_URL`), `node`, `/usr/bin/chromium` and
//! `e2e/browser/node_modules` (`scripts/install-deps.sh` installs the last two).

use std::path::{Path, PathBuf};
use std::process::Command;

use guildnet_e2e::{User, token};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

#[tokio::test]
async fn alice_launches_opens_suspends_resumes_and_deletes_a_workspace_in_the_browser() {
    let proxy = std::env::var("GUILDNET_PROXY_URL").unwrap_or_default();
    assert!(
        !proxy.is_empty(),
        "GUILDNET_PROXY_URL is not set: the dashboard test needs the proxy of the stack; run it with \
         `GUILDNET_STACK=dashboard scripts/e2e.sh --test dashboard` (or `make e2e`), which starts the proxy"
    );
    let root = repo_root();
    let browser = root.join("e2e/browser/node_modules/playwright-core");
    assert!(
        browser.is_dir(),
        "{} is missing: run scripts/install-deps.sh (npm ci in e2e/browser)",
        browser.display()
    );
    let artifacts = root.join("target/e2e-artifacts/dashboard");
    // Read from `$(dirname $KUBECONFIG)/tokens/alice`.
    let alice_token = token(User::Alice);

    let run = {
        let (root, artifacts) = (root.clone(), artifacts.clone());
        tokio::task::spawn_blocking(move || {
            Command::new("node")
                .arg("e2e/browser/dashboard.mjs")
                .current_dir(&root)
                .env("GUILDNET_PROXY_URL", &proxy)
                .env("GUILDNET_ALICE_TOKEN", alice_token)
                .env("GUILDNET_ARTIFACTS", &artifacts)
                .output()
        })
    };
    let out = run
        .await
        .expect("the node process")
        .expect("run node (install Node.js 20 or newer: scripts/install-deps.sh)");

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        artifacts.display()
    );
    println!("{stdout}");
}
