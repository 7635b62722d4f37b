//! guildnet-proxy: one browser origin for every workspace, and the dashboard.

use std::net::SocketAddr;

use axum::{Router, response::Html, routing::get};
use clap::Parser;
use tracing::info;

#[derive(Parser)]
#[command(about = "GuildNet's single-origin proxy and dashboard")]
struct Args {
    /// Address the proxy listens on.
    #[arg(long, env = "GUILDNET_PROXY_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let app = Router::new()
        .route("/", get(|| async { Html(include_str!("dashboard.html")) }))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    info!(address = %args.listen, "guildnet-proxy listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
