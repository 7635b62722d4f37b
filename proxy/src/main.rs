//! guildnet-proxy: the single-origin proxy and dashboard. See `guildnet-proxy --help`.

use clap::Parser;
use guildnet_proxy::config::Args;
use guildnet_runtime::logging::{self, LogFormat};

// Every request allocates (headers, URIs, buffers); mimalloc makes that several times
// cheaper than glibc's malloc under two busy threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init(LogFormat::detect());
    guildnet_proxy::app::run(Args::parse()).await
}
