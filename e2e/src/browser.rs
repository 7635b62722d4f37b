//! Browser tests: a script of `e2e/browser/` run by `node`, driving Debian's headless
//! Chromium with playwright-core through the stack's proxy. `scripts/install-deps.sh`
//! installs Chromium and `e2e/browser/node_modules`.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::cluster::repo_root;

/// The stack's proxy (`GUILDNET_PROXY_URL`); the message says how to run `test` with one.
pub fn proxy_url(test: &str) -> String {
    let proxy = std::env::var("GUILDNET_PROXY_URL").unwrap_or_default();
    assert!(
        !proxy.is_empty(),
        "GUILDNET_PROXY_URL is not set: the {test} test needs the proxy of the stack; run it \
         with `GUILDNET_STACK={test} scripts/e2e.sh --test {test}` (or `make e2e`), which \
         starts the proxy"
    );
    proxy
}

/// What a browser script did: its output, and where its screenshots are.
pub struct Run {
    output: Output,
    artifacts: PathBuf,
}

impl Run {
    /// Panics with the script's output unless it passed; prints its log if it did.
    pub fn assert_passed(&self) {
        let stdout = String::from_utf8_lossy(&self.output.stdout);
        let stderr = String::from_utf8_lossy(&self.output.stderr);
        assert!(
            self.output.status.success(),
            "the browser test failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            self.output.status,
            self.artifacts.display()
        );
        println!("{stdout}");
    }
}

/// Runs `e2e/browser/<script>.mjs` with `env`, and `GUILDNET_ARTIFACTS` set to
/// `target/e2e-artifacts/<script>/`, off the async runtime.
pub async fn run(script: &str, env: Vec<(&'static str, String)>) -> Run {
    let root = repo_root();
    let browser = root.join("e2e/browser/node_modules/playwright-core");
    assert!(
        browser.is_dir(),
        "{} is missing: run scripts/install-deps.sh (npm ci in e2e/browser)",
        browser.display()
    );
    let artifacts = root.join("target/e2e-artifacts").join(script);
    let mut command = Command::new("node");
    command
        .arg(format!("e2e/browser/{script}.mjs"))
        .current_dir(&root)
        .env("GUILDNET_ARTIFACTS", &artifacts)
        .envs(env);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the node process")
        .expect("run node (install Node.js 20 or newer: scripts/install-deps.sh)");
    Run { output, artifacts }
}
