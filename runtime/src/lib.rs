//! Process plumbing shared by the operator, the webhook and the proxy, and nothing else:
//! none of GuildNet's kinds or rules live here, so each binary links only what it runs.
//!
//! - [`tls`]: a rustls server configuration whose certificate is swapped in place, and the
//!   loop that follows mounted certificate files.
//! - [`kubeconfig`]: a registered cluster's kubeconfig vetted to use nothing outside its
//!   Secret, and the client configuration made from it.
//! - [`logging`]: JSON or text logs through tracing.
//! - [`health`]: `/healthz`, `/readyz` and `/metrics`, as routes to merge or a port of
//!   their own.
//! - [`watch`]: which watch failures are routine and which deserve a warning.
//! - [`shutdown_signal`]: SIGTERM or Ctrl-C.

pub mod health;
pub mod kubeconfig;
pub mod logging;
pub mod tls;
pub mod watch;

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
