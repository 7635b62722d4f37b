//! guildnet-operator: reconciles the guildnet.io kinds.

use clap::Parser;
use guildnet_operator::workspace::BuildContext;
use guildnet_operator::workspace::controller::{self, Settings};
use guildnet_operator::workspace::reaper::IdleAction;
use std::time::Duration;
use tracing::info;

#[derive(Parser)]
#[command(about = "GuildNet's operator: reconciles Workspaces and the other guildnet.io kinds")]
struct Args {
    /// Restarts in CrashLoopBackOff at or above which a Workspace is marked Failed.
    #[arg(long, default_value_t = 3)]
    crash_loop_restarts: i32,
    /// Idle timeout of Workspaces that set no spec.lifecycle.idleTimeout (e.g. 8h); empty
    /// reaps only Workspaces that set one.
    #[arg(long, value_parser = humantime::parse_duration)]
    default_idle_timeout: Option<Duration>,
    /// What happens to an idle Workspace: suspend (scale to zero, keep volumes) or delete.
    #[arg(long, value_enum, default_value_t = IdleAction::Suspend)]
    idle_action: IdleAction,
    /// How often idle and finished Workspaces are looked for (in the cache; no API list).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    reap_interval: Duration,
    /// Spec edits closer together than this are reconciled once.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    debounce: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let version = client.apiserver_version().await?;
    info!(server = %version.git_version, "connected to the API server");
    let settings = Settings {
        crash_loop_restarts: args.crash_loop_restarts,
        default_idle_timeout: args.default_idle_timeout,
        idle_action: args.idle_action,
        reap_interval: args.reap_interval,
        debounce: args.debounce,
        build: BuildContext::default(),
    };
    controller::run(client, settings, shutdown_signal()).await;
    info!("shut down");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
