//! The dashboard in a real browser: `e2e/browser/dashboard.mjs` drives Debian's headless
//! Chromium (playwright-core) through the proxy as alice: the login page, a refused token
//! and image, launching a workspace from the form, seeing it Running and ready, opening it
//! (new tab and inline), its logs and events, suspend, resume, delete and log out. Its
//! screenshots land in `target/e2e-artifacts/dashboard/`.
//!
//! Needs the proxy of the stack (`GUILDNET_PROXY_URL`), `node`, `/usr/bin/chromium` and
//! `e2e/browser/node_modules` (`scripts/install-deps.sh` installs the last two).

use guildnet_e2e::browser;
use guildnet_e2e::{User, token};

#[tokio::test]
async fn alice_launches_opens_suspends_resumes_and_deletes_a_workspace_in_the_browser() {
    let proxy = browser::proxy_url("dashboard");
    // Read from `$(dirname $KUBECONFIG)/tokens/alice`.
    let alice_token = token(User::Alice);
    browser::run(
        "dashboard",
        vec![
            ("GUILDNET_PROXY_URL", proxy),
            ("GUILDNET_ALICE_TOKEN", alice_token),
        ],
    )
    .await
    .assert_passed();
}
