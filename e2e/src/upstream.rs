//! Traffic to workspace pods. The pods are KWOK's fakes, but with-stack.sh serves the test
//! upstream (`src/bin/test-upstream.rs`) on every pod IP, at the port in
//! `GUILDNET_UPSTREAM_PORT`, from a network namespace (`scripts/upstream-netns.sh`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as HandshakeResponse;

use crate::{User, eventually, token};

/// How long one request or WebSocket round trip may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A listener on `addr` with SO_REUSEPORT: each stack on a machine runs its own test upstream
/// on the same pod port, and a listener on one pod IP (a real IDE's) takes that IP's
/// connections from the copies on 0.0.0.0 (the kernel prefers the more specific address).
pub fn bind_shared(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// The stack's proxy, from `GUILDNET_PROXY_URL` (`http://ip:port`, which with-stack.sh
/// exports).
pub fn proxy_addr() -> SocketAddr {
    std::env::var("GUILDNET_PROXY_URL")
        .expect("GUILDNET_PROXY_URL is not set: run with scripts/e2e.sh, which starts the proxy")
        .trim_start_matches("http://")
        .parse()
        .expect("GUILDNET_PROXY_URL is http://ip:port")
}

/// `user`'s GET of `path` through the stack's proxy, their token as a bearer.
pub async fn get_as(user: User, path: &str) -> anyhow::Result<Response<Bytes>> {
    let proxy = proxy_addr();
    let request = Request::get(path)
        .header(HOST, proxy.to_string())
        .header(AUTHORIZATION, format!("Bearer {}", token(user)))
        .body(String::new())?;
    send(proxy, request).await
}

/// The port the test upstream answers on at every pod IP.
pub fn upstream_port() -> u16 {
    std::env::var("GUILDNET_UPSTREAM_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "GUILDNET_UPSTREAM_PORT is not set: with-stack.sh serves the test upstream only \
                 as root (it needs `ip netns`); see $GUILDNET_STACK_LOGS/upstream.log"
            )
        })
}

/// The address of a ready endpoint of the workspace's Service, from its EndpointSlices as
/// the proxy resolves it; waits up to a minute for one.
pub async fn pod_ip_of_workspace(client: &Client, namespace: &str, name: &str) -> IpAddr {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let (slices, params) = (&slices, &params);
    eventually(
        &format!("a ready endpoint of workspace {namespace}/{name}"),
        Duration::from_secs(60),
        move || async move {
            let list = slices.list(params).await.ok()?;
            ready_address(&list.items)
        },
    )
    .await
}

/// The address of a ready endpoint among `slices`.
pub fn ready_address<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Option<IpAddr> {
    slices
        .into_iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| &e.addresses)
        .find_map(|address| address.parse().ok())
}

/// Sends `request` on a new HTTP/1.1 connection to `addr` and reads the whole response.
pub async fn send(addr: SocketAddr, request: Request<String>) -> anyhow::Result<Response<Bytes>> {
    tokio::time::timeout(TIMEOUT, async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let (parts, body) = sender.send_request(request).await?.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Response::from_parts(parts, body))
    })
    .await
    .with_context(|| format!("no response from {addr} within {TIMEOUT:?}"))?
}

/// GETs `path` (with its query) from `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response<Bytes>> {
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .body(String::new())?;
    send(addr, request).await
}

/// Opens a WebSocket (`request`: a `ws://` URL, or a request with headers of its own) to an
/// echo, such as the test upstream's `/ws`, and checks that text and binary messages come
/// back and a ping is answered; then closes it. Returns the handshake response.
pub async fn ws_echo<R>(request: R) -> anyhow::Result<HandshakeResponse>
where
    R: IntoClientRequest + Unpin,
{
    tokio::time::timeout(TIMEOUT, async {
        let (mut socket, response) = tokio_tungstenite::connect_async(request).await?;
        for message in [
            Message::text("hello, upstream"),
            Message::binary(vec![0, 1, 2, 255]),
            Message::Ping(Bytes::from_static(b"are you there")),
        ] {
            let expected = match &message {
                Message::Ping(payload) => Message::Pong(payload.clone()),
                other => other.clone(),
            };
            socket.send(message).await?;
            let got = socket.next().await.context("closed before the echo")??;
            anyhow::ensure!(got == expected, "expected {expected:?}, got {got:?}");
        }
        socket.close(None).await?;
        Ok(response)
    })
    .await
    .context("WebSocket echo timed out")?
}

/// A Server-Sent Events stream as a browser's EventSource reads it, from one request.
pub struct EventStream {
    body: hyper::body::Incoming,
    text: String,
    _sender: hyper::client::conn::http1::SendRequest<String>,
}

impl EventStream {
    /// Sends `request` to `addr` and keeps its answer's body as a stream; None when the
    /// answer is not `200` (a refusal).
    pub async fn open(addr: SocketAddr, request: Request<String>) -> Option<Self> {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await.ok()?;
        (response.status() == 200).then(|| Self {
            body: response.into_body(),
            text: String::new(),
            _sender: sender,
        })
    }

    /// The data of the next event named `name`, as JSON, within `timeout`.
    pub async fn next_event(&mut self, name: &str, timeout: Duration) -> serde_json::Value {
        let wanted = format!("event: {name}");
        tokio::time::timeout(timeout, async {
            loop {
                if let Some(end) = self.text.find("\n\n") {
                    let event: String = self.text.drain(..end + 2).collect();
                    let data = event
                        .lines()
                        .find_map(|line| line.strip_prefix("data: "))
                        .filter(|_| event.lines().any(|line| line == wanted));
                    if let Some(data) = data {
                        return serde_json::from_str(data).expect("an event's data is JSON");
                    }
                    continue;
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("the event stream goes on")
                    .expect("the event stream reads");
                if let Ok(data) = frame.into_data() {
                    self.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {name} event within {timeout:?}"))
    }
}
