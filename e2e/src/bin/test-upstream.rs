//! A stateless test upstream: what a workspace pod serves in the end-to-end tests. The pods
//! are KWOK's fakes; `scripts/upstream-netns.sh` makes their IPs local to a network namespace
//! and with-stack.sh runs this there, so every pod IP answers.
//!
//!   test-upstream --listen 0.0.0.0:8080 [--listen ...]
//!
//! Prints `listening on <addr>` once per listener when it is bound. On SIGTERM it stops
//! accepting and gives open connections (another stack's, perhaps) a few seconds to finish.
//! Routes, any method:
//! - `/redirect?to=<location>`: 302 with that Location
//! - `/cookies?set=<Set-Cookie value>` (repeatable): 200 with one Set-Cookie per `set`
//! - `/status/<code>`: that status
//! - `/slow?ms=N`: the echo, after N ms
//! - `/stream?chunks=N&ms=M`: a chunked body of N lines, one every M ms
//! - `/reset`: drops the connection with a TCP RST and no response
//! - `/big?bytes=N`: N bytes of body
//! - `/page?link=<href>`: an HTML page whose one link is that href
//! - `/ws`: WebSocket echo of text and binary messages
//! - `…/sw.js` (any directory): a service worker script sent with `Service-Worker-Allowed: /`,
//!   as code-server sends its own; the worker answers fetches with `?from-worker` itself
//! - anything else: 200 with a JSON echo of the request (`method`, `path` with the query as
//!   received, `headers`, `localAddr`, `peerAddr`, `bodyBytes`)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use guildnet_e2e::upstream::bind_shared;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use serde_json::json;
use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// How long open connections may go on after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(about = "A stateless HTTP and WebSocket test upstream")]
struct Args {
    /// Address to serve on (repeatable); port 0 picks a free one.
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// Close each connection after its response (HTTP/1.1 `Connection: close`). `make dev`
    /// sets it: a real IDE that later takes a pod IP's port (dev-ides) gets the next request,
    /// instead of a client's pooled connection to this echo.
    #[arg(long)]
    no_keep_alive: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Every connection holds a receiver: a send asks them to finish, and the sender sees
    // when all are gone.
    let (stop, open) = watch::channel(());
    let mut listeners = JoinSet::new();
    for addr in args.listen {
        // Shared, so each stack on a machine can run its own copy on the same pod port.
        let listener = bind_shared(addr)?;
        println!("listening on {}", listener.local_addr()?);
        listeners.spawn(serve(listener, open.clone(), !args.no_keep_alive));
    }
    drop(open);
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // Closing the listeners sends new connections to the other copies on the port.
    listeners.shutdown().await;
    stop.send_replace(());
    let _ = tokio::time::timeout(DRAIN, stop.closed()).await;
    Ok(())
}

async fn serve(listener: TcpListener, open: watch::Receiver<()>, keep_alive: bool) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let open = open.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, peer, open, keep_alive).await {
                        eprintln!("connection from {peer}: {e}");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request knows about its connection, and how `/reset` aborts it.
struct Conn {
    local: SocketAddr,
    peer: SocketAddr,
    reset: Notify,
    /// Held as long as the connection, or the WebSocket it became, is open.
    _open: watch::Receiver<()>,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<()>,
    keep_alive: bool,
) -> std::io::Result<()> {
    let local = stream.local_addr()?;
    stream.set_nodelay(true)?;
    // A second descriptor of the socket: hyper owns the stream, and `/reset` must still set
    // SO_LINGER on it before the last descriptor closes.
    let stream = stream.into_std()?;
    let socket = stream.try_clone()?;
    let stream = TcpStream::from_std(stream)?;
    let conn = Arc::new(Conn {
        local,
        peer,
        reset: Notify::new(),
        _open: stop.clone(),
    });
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req| handle(req, conn.clone()))
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(keep_alive);
    let mut serving =
        std::pin::pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
    loop {
        tokio::select! {
            // Errors here are clients going away mid-request: nothing to report.
            _ = serving.as_mut() => return Ok(()),
            () = conn.reset.notified() => {
                // Linger 0: the close below sends RST, without a response.
                return SockRef::from(&socket).set_linger(Some(Duration::ZERO));
            }
            // Shutting down: finish the request in flight, if any, then close.
            Ok(()) = stop.changed() => serving.as_mut().graceful_shutdown(),
        }
    }
}

async fn handle(req: Request<Incoming>, conn: Arc<Conn>) -> Result<Response, Infallible> {
    let (parts, body) = req.into_parts();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let params = |name: &'static str| {
        query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let number = |name: &'static str| {
        params(name)
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let path = parts.uri.path();
    let response = match path {
        "/redirect" => match params("to").next().map(HeaderValue::from_str) {
            Some(Ok(location)) => {
                (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
            }
            _ => bad_request("/redirect needs ?to=<url-encoded location>"),
        },
        "/cookies" => {
            let mut response = "cookies set\n".into_response();
            for value in params("set") {
                match HeaderValue::from_str(value) {
                    Ok(v) => response.headers_mut().append(header::SET_COOKIE, v),
                    Err(_) => return Ok(bad_request("invalid Set-Cookie value")),
                };
            }
            response
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(number("ms"))).await;
            echo(&parts, body, &conn).await
        }
        "/stream" => stream(number("chunks"), Duration::from_millis(number("ms"))),
        "/reset" => {
            conn.reset.notify_one();
            // Dropped with the connection; never answers.
            std::future::pending().await
        }
        "/big" => big(number("bytes")),
        "/page" => match params("link").next() {
            Some(link) => page(link),
            None => bad_request("/page needs ?link=<url-encoded href>"),
        },
        "/ws" => websocket(parts, conn).await,
        p if p.ends_with("/sw.js") => service_worker(),
        _ => match path.strip_prefix("/status/") {
            Some(code) => status(code),
            None => echo(&parts, body, &conn).await,
        },
    };
    Ok(response)
}

/// A worker that takes control of its pages at once and answers requests carrying
/// `?from-worker` itself, so a test sees which pages it controls.
const SERVICE_WORKER: &str = "\
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
self.addEventListener('fetch', (event) => {
  if (new URL(event.request.url).searchParams.has('from-worker')) {
    event.respondWith(new Response('answered by the workspace service worker'));
  }
});
";

fn service_worker() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::HeaderName::from_static("service-worker-allowed"),
                "/",
            ),
        ],
        SERVICE_WORKER,
    )
        .into_response()
}

fn page(link: &str) -> Response {
    let escaped = link
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<!doctype html><html><body><a href=\"{escaped}\">the link</a></body></html>"),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

async fn echo(parts: &Parts, body: Incoming, conn: &Conn) -> Response {
    // Counted as it streams in, so huge bodies cost no memory.
    let mut body_bytes = 0;
    let mut chunks = Body::new(body).into_data_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(chunk) => body_bytes += chunk.len(),
            Err(e) => return bad_request(&format!("reading the body: {e}")),
        }
    }
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<_> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect();
        headers.insert(name.to_string(), values.join(", ").into());
    }
    Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("", |p| p.as_str()),
        "headers": headers,
        "localAddr": conn.local.to_string(),
        "peerAddr": conn.peer.to_string(),
        "bodyBytes": body_bytes,
    }))
    .into_response()
}

fn status(code: &str) -> Response {
    match code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
        Some(s) if s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED => {
            s.into_response()
        }
        Some(s) if s.as_u16() >= 200 => (s, format!("status {}\n", s.as_u16())).into_response(),
        _ => bad_request("/status/<code> needs a final status code, 200 to 999"),
    }
}

/// The first line at once, then one every `interval`.
fn stream(chunks: u64, interval: Duration) -> Response {
    let lines = futures::stream::unfold(0, move |i| async move {
        if i == chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        Some((
            Ok::<_, Infallible>(Bytes::from(format!("chunk {i}\n"))),
            i + 1,
        ))
    });
    (
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(lines),
    )
        .into_response()
}

fn big(bytes: u64) -> Response {
    static BLOCK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let blocks = futures::stream::unfold(bytes, |left| async move {
        let n = left.min(BLOCK.len() as u64);
        (n > 0).then(|| {
            let block = Bytes::from_static(&BLOCK[..n as usize]);
            (Ok::<_, Infallible>(block), left - n)
        })
    });
    (
        [(header::CONTENT_LENGTH, bytes.to_string())],
        Body::from_stream(blocks),
    )
        .into_response()
}

async fn websocket(mut parts: Parts, conn: Arc<Conn>) -> Response {
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    // Accepts the first subprotocol offered, so tests can see it negotiated end to end.
    let offered = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_string());
    let upgrade = match offered {
        Some(protocol) => upgrade.protocols([protocol]),
        None => upgrade,
    };
    upgrade.on_upgrade(|socket| async move {
        echo_messages(socket).await;
        // Only now may a shutdown stop waiting for this connection.
        drop(conn);
    })
}

/// Pings and closes are answered by the WebSocket library as it reads; this echoes the rest.
async fn echo_messages(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && socket.send(message).await.is_err()
        {
            return;
        }
    }
}
