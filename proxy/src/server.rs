//! The HTTP server: one serving thread per core, each with its own SO_REUSEPORT listener,
//! optionally HTTPS with a certificate followed on disk, and a graceful stop. At most
//! `--max-unauthenticated-connections` connections that have not authenticated are open at
//! once; each request of such a connection carries its [`UnauthenticatedSlot`], which the
//! router releases once the connection authenticates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use guildnet_runtime::tls::{self, SwappableCert};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use crate::config::Args;
use crate::limits::{UnauthenticatedConnections, UnauthenticatedSlot};

/// How often mounted certificate files are checked for a renewal.
const TLS_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// HTTP/1.1 with upgrades; slow or oversized request heads are cut off by hyper (408/431).
///
/// One serving thread per core, each with a single-threaded runtime, its own listener on the
/// address (SO_REUSEPORT: the kernel spreads connections) and its own upstream connection
/// pool: a request and its upstream connection live on one thread, like an nginx worker,
/// with no cross-thread wake-ups. The caches and background writers run on the main runtime.
pub async fn serve(router: Router, args: &Args) -> anyhow::Result<()> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let first =
        reuseport_listener(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let address = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners
            .push(reuseport_listener(address).with_context(|| format!("listening on {address}"))?);
    }
    tracing::info!(%address, workers, "guildnet-proxy listening");
    let serving = Serving {
        router,
        http: http1(args),
        tls: tls_acceptor(args).await?,
        handshake_timeout: args.header_read_timeout,
        unauthenticated: unauthenticated_connections(args),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
            let (serving, stopping) = (serving.clone(), stopping.clone());
            std::thread::Builder::new()
                .name(format!("serve-{index}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a serving runtime");
                    runtime.block_on(accept_loop(listener, serving, stopping));
                })
        })
        .collect::<Result<_, _>>()?;
    guildnet_runtime::shutdown_signal().await;
    tracing::info!("shutting down: finishing open requests");
    let _ = stop.send(true);
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await?;
    Ok(())
}

/// HTTP/1.1 as `args` limit it: request heads within `--header-read-timeout`, of at most
/// about `--max-header-bytes`.
fn http1(args: &Args) -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(args.header_read_timeout)
        .max_buf_size(args.max_header_bytes);
    http
}

/// One count for every serving thread (`--max-unauthenticated-connections`).
fn unauthenticated_connections(args: &Args) -> Arc<UnauthenticatedConnections> {
    UnauthenticatedConnections::new(args.max_unauthenticated_connections as usize)
}

/// Serves `router` on a new loopback port as one serving thread of [`serve`] does (plain
/// HTTP, `args`' limits), on the caller's runtime until it ends: for tests with a real
/// client on a real connection.
#[cfg(test)]
pub(crate) fn serve_on_loopback(router: Router, args: &Args) -> SocketAddr {
    let listener = reuseport_listener(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let address = listener.local_addr().unwrap();
    let serving = Serving {
        router,
        http: http1(args),
        tls: None,
        handshake_timeout: args.header_read_timeout,
        unauthenticated: unauthenticated_connections(args),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // Never stops: the sender lives as long as the loop.
        let _stop = stop;
        accept_loop(listener, serving, stopping).await;
    });
    address
}

/// With `--tls-cert-file`: HTTPS (HTTP/1.1), the certificate reloaded when the files change.
async fn tls_acceptor(args: &Args) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
        return Ok(None);
    };
    let read = |path: &std::path::PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let resolver = Arc::new(SwappableCert::new(&read(cert)?, &read(key)?)?);
    tokio::spawn(tls::follow_files(
        resolver.clone(),
        cert.clone(),
        key.clone(),
        TLS_FILE_CHECK_INTERVAL,
    ));
    let config = tls::server_config(resolver, &[b"http/1.1"])?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

fn reuseport_listener(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// How one serving thread takes connections.
#[derive(Clone)]
struct Serving {
    router: Router,
    http: hyper::server::conn::http1::Builder,
    /// HTTPS when set.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// A TLS handshake must finish within this, like a request head.
    handshake_timeout: Duration,
    /// Connections not yet authenticated, shared by every serving thread.
    unauthenticated: Arc<UnauthenticatedConnections>,
}

/// Serves connections from `listener` until `stopping` says so, then lets open requests
/// finish (at most 10 s).
async fn accept_loop(
    listener: std::net::TcpListener,
    serving: Serving,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a listener on this runtime");
    // Each connection holds a clone of `open`; when all are dropped, everything drained.
    let (open, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                // Counted from here, so idle connections and trickled handshakes are too.
                let Some(slot) = serving.unauthenticated.admit() else {
                    tracing::debug!(%peer, "closing a connection: --max-unauthenticated-connections are open");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (serving, stopping, open) = (serving.clone(), stopping.clone(), open.clone());
                tokio::spawn(async move {
                    match &serving.tls {
                        None => serve_connection(TokioIo::new(stream), peer, slot, &serving, stopping).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(serving.handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    serve_connection(TokioIo::new(stream), peer, slot, &serving, stopping).await;
                                }
                                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                    drop(open);
                });
            }
            _ = stopping.changed() => break,
        }
    }
    drop(open);
    if tokio::time::timeout(Duration::from_secs(10), drained.recv())
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish in 10s");
    }
}

/// HTTP/1.1 (with upgrades) on one connection until it ends or the proxy stops. Until the
/// connection authenticates, its requests carry its `slot`; afterwards, nothing more.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    slot: UnauthenticatedSlot,
    serving: &Serving,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let connection_slot = slot.clone();
    let service =
        serving
            .router
            .clone()
            .map_request(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                if slot.is_held() {
                    request.extensions_mut().insert(slot.clone());
                }
                request
            });
    let connection = serving
        .http
        .serve_connection(io, TowerToHyperService::new(service))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // Closed: its place is free, whatever still holds a copy of the slot.
    connection_slot.release();
    if let Err(error) = ended {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}
