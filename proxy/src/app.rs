//! Wiring: the caches, the background writers, the routes and the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use futures::StreamExt;
use guildnet_api::workspace::Workspace;
use http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tower::ServiceExt;

use crate::activity::Activity;
use crate::auth::{self, Authenticator};
use crate::authz::Authorizer;
use crate::config::{Args, AuthMode};
use crate::endpoints::Endpoints;
use crate::error::ApiError;
use crate::events::EventHub;
use crate::forward;
use crate::session::{self, SessionKeys};
use crate::{api, dashboard, logs, route};
use guildnet_runtime::health::Health;
use guildnet_runtime::tls::{self, SwappableCert};

pub struct Shared {
    pub client: kube::Client,
    pub workspaces: Store<Workspace>,
    pub endpoints: Endpoints,
    pub auth: Authenticator,
    pub authz: Authorizer,
    pub activity: Activity,
    pub events: Arc<EventHub>,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub base_domain: Option<String>,
    pub allowed_origins: Vec<String>,
    max_header_bytes: usize,
    /// Whether browsers reach this process over HTTPS (it terminates TLS itself).
    pub https: bool,
    ready: AtomicBool,
}

pub type AppState = Arc<Shared>;

/// How often mounted certificate files are checked for a renewal.
const TLS_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(args: Args) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    if args.auth == AuthMode::None {
        tracing::warn!(
            user = args.dev_user,
            "AUTHENTICATION IS OFF (--auth=none): everyone who can reach {} is {:?}. Local development only.",
            args.listen,
            args.dev_user
        );
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let key = if let Some(path) = &args.session_key_file {
        Some(
            std::fs::read(path)
                .with_context(|| format!("reading --session-key-file {}", path.display()))?,
        )
    } else if let Some(secret) = &args.session_secret {
        let key =
            session::key_from_secret(client.clone(), &args.session_secret_namespace, secret).await;
        Some(key.map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let sessions = match key {
        Some(key) => SessionKeys::new(key, args.session_ttl).map_err(anyhow::Error::msg)?,
        None => {
            if args.auth == AuthMode::Token {
                tracing::warn!(
                    "no --session-secret or --session-key-file: logins last until this process \
                     restarts and work on this replica only"
                );
            }
            SessionKeys::random(args.session_ttl)
        }
    };
    let (workspaces, writer) = reflector::store();
    let state: AppState = Arc::new(Shared {
        workspaces,
        endpoints: Endpoints::default(),
        auth: Authenticator::new(
            client.clone(),
            auth::Settings {
                mode: args.auth,
                sessions,
                user_header: args.user_header.clone(),
                groups_header: args.groups_header.clone(),
                trusted_proxies: args.trusted_proxy.clone(),
                dev_user: args.dev_user.clone(),
                dev_groups: args.dev_groups.clone(),
                cache_ttl: args.auth_cache_ttl,
            },
        ),
        authz: Authorizer::new(client.clone(), args.auth_cache_ttl),
        activity: Activity::default(),
        events: Arc::new(EventHub::new(args.event_buffer)),
        connect_timeout: args.connect_timeout,
        upstream_timeout: args.upstream_timeout,
        base_domain: args.base_domain.clone(),
        allowed_origins: args.allowed_origin.clone(),
        client: client.clone(),
        max_header_bytes: args.max_header_bytes,
        https: args.tls_cert_file.is_some(),
        ready: AtomicBool::new(false),
    });

    let watch = watcher(
        Api::<Workspace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .for_each(|event| async move {
        if let Err(error) = event {
            tracing::warn!(%error, "watching Workspaces");
        }
    });
    tokio::spawn(watch);
    tokio::spawn(state.endpoints.clone().run(client.clone()));
    tokio::spawn(state.events.clone().run(client.clone()));
    tokio::spawn(state.activity.clone().write_every(
        client.clone(),
        state.workspaces.clone(),
        args.activity_interval,
    ));
    let readiness = state.clone();
    tokio::spawn(async move {
        if readiness.workspaces.wait_until_ready().await.is_ok() {
            readiness.ready.store(true, Ordering::Relaxed);
        }
    });

    serve(router(state), &args).await
}

pub fn router(state: AppState) -> Router {
    let synced = state.clone();
    let health = Health::new(
        move || synced.ready.load(Ordering::Relaxed),
        "caches not synced yet",
    );
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::app_js))
        .route("/assets/style.css", get(dashboard::style_css))
        .route("/login", get(api::login_form).post(api::login))
        .route("/logout", post(api::logout))
        .route("/api/me", get(api::me))
        .route("/api/workspaces", get(api::list).post(api::launch))
        .route("/api/workspaces/{namespace}/{name}", delete(api::delete))
        .route(
            "/api/workspaces/{namespace}/{name}/suspend",
            post(api::suspend),
        )
        .route(
            "/api/workspaces/{namespace}/{name}/resume",
            post(api::resume),
        )
        .route("/api/workspaces/{namespace}/{name}/logs", get(logs::logs))
        .route("/api/events", get(crate::events::list))
        .route("/sse/events", get(crate::events::stream))
        .merge(health.router())
        .fallback(forward::path_mode)
        .layer(middleware::from_fn_with_state(state.clone(), front))
        .with_state(state)
}

/// In front of every route: refuses oversized request heads (431; hyper bounds its read
/// buffer, but not exactly at `--max-header-bytes`), and in subdomain mode sends every
/// request to `<name>--<namespace>.<base domain>` to the workspace, whose paths they are.
async fn front(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + request.uri().path().len()
        + request.uri().query().map_or(0, str::len);
    if size > state.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HeadersTooLarge",
            format!(
                "the request's headers are {size} bytes; at most {} are accepted",
                state.max_header_bytes
            ),
        )
        .json();
    }
    if let Some(base) = state.base_domain.as_deref() {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host));
        if let Some(host) = host {
            let uri = request.uri();
            match route::from_host(host, base, uri.path(), uri.query()) {
                Ok(Some(target)) => return forward::forward(state, peer, target, request).await,
                Ok(None) => {}
                Err(error) => {
                    return ApiError::bad_request(error.to_string()).for_client(request.headers());
                }
            }
        }
    }
    next.run(request).await
}

/// HTTP/1.1 with upgrades; slow or oversized request heads are cut off by hyper (408/431).
///
/// One serving thread per core, each with a single-threaded runtime, its own listener on the
/// address (SO_REUSEPORT: the kernel spreads connections) and its own upstream connection
/// pool: a request and its upstream connection live on one thread, like an nginx worker,
/// with no cross-thread wake-ups. The caches and background writers run on the main runtime.
async fn serve(router: Router, args: &Args) -> anyhow::Result<()> {
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
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(args.header_read_timeout)
        .max_buf_size(args.max_header_bytes);
    let serving = Serving {
        router,
        http,
        tls: tls_acceptor(args).await?,
        handshake_timeout: args.header_read_timeout,
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

/// Serves connections from `listener` until `stopping` says so, then lets open requests
/// finish (at most 10 s).
/// How one serving thread takes connections.
#[derive(Clone)]
struct Serving {
    router: Router,
    http: hyper::server::conn::http1::Builder,
    /// HTTPS when set.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// A TLS handshake must finish within this, like a request head.
    handshake_timeout: Duration,
}

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
                let _ = stream.set_nodelay(true);
                let (serving, stopping, open) = (serving.clone(), stopping.clone(), open.clone());
                tokio::spawn(async move {
                    match &serving.tls {
                        None => serve_connection(TokioIo::new(stream), peer, &serving, stopping).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(serving.handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    serve_connection(TokioIo::new(stream), peer, &serving, stopping).await;
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

/// HTTP/1.1 (with upgrades) on one connection until it ends or the proxy stops.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    serving: &Serving,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        serving
            .router
            .clone()
            .map_request(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
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
    if let Err(error) = ended {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}
