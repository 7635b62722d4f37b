//! guildnet-webhook: admission for Workspaces.

use tracing::info;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    info!("guildnet-webhook started");
    tokio::signal::ctrl_c().await?;
    info!("shutting down");
    Ok(())
}
