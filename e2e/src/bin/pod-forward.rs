//! Serves one pod IP and port from a Unix socket: what lets a real IDE (which listens on a
//! Unix socket here) answer at a workspace's pod IP in the namespace where the test upstream
//! holds the same port on 0.0.0.0. Its listener shares the port (SO_REUSEPORT) and, bound to
//! the one IP, gets that IP's connections; each is spliced to a new connection to the socket.
//!
//!   ip netns exec guildnet-pods pod-forward --listen 10.244.0.7:8080 --to /tmp/ide.sock
//!
//! Prints `listening on <addr>` when bound; runs until killed.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use guildnet_e2e::upstream::bind_shared;
use tokio::net::UnixStream;

#[derive(Parser)]
#[command(about = "Serves a pod IP and port from a Unix socket")]
struct Args {
    /// The pod IP and port to serve.
    #[arg(long)]
    listen: SocketAddr,
    /// The Unix socket the server listens on.
    #[arg(long)]
    to: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = bind_shared(args.listen)?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (mut client, _) = listener.accept().await?;
        let to = args.to.clone();
        tokio::spawn(async move {
            // A server not listening yet refuses: the client sees a reset, as from a pod.
            if let Ok(mut server) = UnixStream::connect(&to).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}
