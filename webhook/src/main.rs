//! guildnet-webhook: admission for Workspaces. See `guildnet-webhook --help`.

use clap::Parser;
use guildnet_webhook::{app, cli::Args};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    app::run(Args::parse()).await
}
