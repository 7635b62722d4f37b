use clap::Parser;
use guildnet_operator::runtime::logging::{self, LogFormat};
use guildnet_proxy::config::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init(LogFormat::detect());
    guildnet_proxy::app::run(Args::parse()).await
}
