//! guildnet-webhook: admission for Workspaces. See `guildnet-webhook --help`.

use clap::Parser;
use guildnet_runtime::logging::{self, LogFormat};
use guildnet_webhook::{app, cli::Args};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init(LogFormat::detect());
    app::run(Args::parse()).await
}
