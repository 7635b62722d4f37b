//! Forwarding a request to its workspace: authenticate, authorise, pick an endpoint, then
//! stream the request and the response (or a WebSocket tunnel) through, with the rewrites
//! of [`crate::rewrite`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use guildnet_api::labels;
use guildnet_api::workspace::Workspace;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use kube::runtime::reflector::ObjectRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::activity::{LastUse, now_millis};
use crate::app::AppState;
use crate::auth::{Caller, Via};
use crate::error::{ApiError, wants_html};
use crate::rewrite::{self, Origins};
use crate::route::{self, Target};

pub type UpstreamClient = Client<HttpConnector, Body>;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// Seconds a browser should wait before retrying a workspace that has no endpoint yet.
const RETRY_AFTER_SECONDS: u32 = 5;

/// `/w/{namespace}/{name}/…`; anything else is not found.
pub async fn path_mode(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let uri = request.uri().clone();
    match route::from_path(uri.path(), uri.query()) {
        Ok(Some(target)) => forward(state, peer, target, request).await,
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no page at {}", uri.path()),
        )
        .for_client(request.headers()),
        Err(error) => ApiError::bad_request(error.to_string()).for_client(request.headers()),
    }
}

/// Forwards `request` to the workspace `target` names, or answers why not.
pub async fn forward(
    state: AppState,
    peer: SocketAddr,
    mut target: Target,
    request: Request,
) -> Response {
    let headers = request.headers();
    let Some(caller) = state.auth.authenticate(headers, peer.ip()).await else {
        return unauthenticated(&target, request.uri(), headers);
    };
    let workspace = state
        .workspaces
        .get(&ObjectRef::new(&target.name).within(&target.namespace));
    if !state
        .authz
        .may_open(
            &caller.identity,
            &target.namespace,
            &target.name,
            workspace.as_deref(),
        )
        .await
    {
        return ApiError::forbidden(&target.namespace, &target.name).for_client(headers);
    }
    let Some(workspace) = workspace else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "workspace {}/{} does not exist",
                target.namespace, target.name
            ),
        )
        .for_client(headers);
    };
    if target.upstream_path_and_query.is_empty() {
        // `/w/ns/name` → `/w/ns/name/`, so the app's relative links stay inside the prefix.
        let query = request
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        return Redirect::permanent(&format!("{}/{query}", target.prefix)).into_response();
    }
    if keeps_prefix(&workspace) && !target.prefix.is_empty() {
        // The app serves under the prefix itself (Jupyter's base_url): it gets the whole path.
        target.upstream_path_and_query = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    }
    let Some(upstream) = state.endpoints.pick(
        &target.namespace,
        &target.name,
        &primary_port_name(&workspace),
    ) else {
        return not_running(&workspace, &target).for_client(headers);
    };
    let last_use = state.activity.touch(&workspace);
    send(&state, peer, &caller, &target, upstream, last_use, request).await
}

/// 401: browsers are sent to the login page (path mode), API clients get JSON.
fn unauthenticated(target: &Target, uri: &Uri, headers: &HeaderMap) -> Response {
    if wants_html(headers) && !target.prefix.is_empty() {
        let next = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let location = format!(
            "/login?next={}",
            percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
        );
        return Redirect::to(&location).into_response();
    }
    ApiError::unauthenticated().for_client(headers)
}

/// Whether the workspace asks for the whole path (annotation `guildnet.io/proxy-keep-prefix`).
fn keeps_prefix(workspace: &Workspace) -> bool {
    workspace
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::PROXY_KEEP_PREFIX))
        .is_some_and(|v| v == "true")
}

/// The Service port the proxy opens: the workspace's first port (named as the operator
/// names Service ports).
fn primary_port_name(workspace: &Workspace) -> String {
    workspace
        .spec
        .ports
        .first()
        .map_or_else(String::new, |port| {
            port.name
                .clone()
                .unwrap_or_else(|| format!("port-{}", port.container_port))
        })
}

/// 503 with Retry-After: the workspace exists but nothing of it answers yet.
fn not_running(workspace: &Workspace, target: &Target) -> ApiError {
    let phase = workspace
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
    let suspended = workspace
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.suspend)
        .unwrap_or(false);
    let message = if suspended {
        format!(
            "workspace {}/{} is suspended; resume it from the dashboard or set \
             spec.lifecycle.suspend=false",
            target.namespace, target.name
        )
    } else {
        format!(
            "workspace {}/{} is not running yet (phase {phase}); try again shortly",
            target.namespace, target.name
        )
    };
    let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotReady", message);
    error.retry_after = Some(RETRY_AFTER_SECONDS);
    error
}

/// How the browser reached the proxy: believed from X-Forwarded-* only when a trusted
/// front proxy sent them.
struct PublicOrigin {
    scheme: HeaderValue,
    host: HeaderValue,
    forwarded_for: HeaderValue,
}

fn public_origin(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> PublicOrigin {
    let trusted = state.auth.is_trusted_proxy(peer.ip());
    let forwarded = |name: &HeaderName| trusted.then(|| headers.get(name).cloned()).flatten();
    let host = headers
        .get(header::HOST)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    let forwarded_for = match forwarded(&X_FORWARDED_FOR)
        .as_ref()
        .and_then(|v| v.to_str().ok())
    {
        Some(chain) => format!("{chain}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    PublicOrigin {
        scheme: forwarded(&X_FORWARDED_PROTO).unwrap_or_else(|| {
            HeaderValue::from_static(if state.https { "https" } else { "http" })
        }),
        host: forwarded(&X_FORWARDED_HOST).unwrap_or(host),
        forwarded_for: HeaderValue::from_str(&forwarded_for)
            .unwrap_or_else(|_| HeaderValue::from_static("")),
    }
}

async fn send(
    state: &AppState,
    peer: SocketAddr,
    caller: &Caller,
    target: &Target,
    upstream: SocketAddr,
    last_use: LastUse,
    mut request: Request,
) -> Response {
    let origin = public_origin(state, peer, request.headers());
    let upgrade = websocket_upgrade(request.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();

    let uri = match Uri::try_from(format!(
        "http://{upstream}{}",
        target.upstream_path_and_query
    )) {
        Ok(uri) => uri,
        Err(error) => return ApiError::bad_request(format!("invalid path: {error}")).json(),
    };
    parts.uri = uri;
    let headers = &mut parts.headers;
    rewrite::strip_hop_by_hop(headers);
    rewrite::strip_session_cookie(headers);
    if caller.via == Via::Bearer {
        headers.remove(header::AUTHORIZATION);
    }
    for name in state.auth.identity_headers() {
        headers.remove(name);
    }
    headers.insert(X_FORWARDED_FOR, origin.forwarded_for.clone());
    headers.insert(X_FORWARDED_PROTO, origin.scheme.clone());
    headers.insert(X_FORWARDED_HOST, origin.host.clone());
    if target.prefix.is_empty() {
        headers.remove(X_FORWARDED_PREFIX);
    } else {
        set(headers, X_FORWARDED_PREFIX, &target.prefix);
    }
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    let upstream_request = http::Request::from_parts(parts, body);

    let response = match tokio::time::timeout(
        state.upstream_timeout,
        upstream_client(state.connect_timeout).request(upstream_request),
    )
    .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            tracing::debug!(%error, %upstream, "workspace request failed");
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "UpstreamUnavailable",
                format!(
                    "workspace {}/{} did not answer: {}",
                    target.namespace,
                    target.name,
                    root_cause(&error)
                ),
            )
            .json();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "UpstreamTimeout",
                format!(
                    "workspace {}/{} did not start answering within {:?}",
                    target.namespace, target.name, state.upstream_timeout
                ),
            )
            .json();
        }
    };

    let mut response = response;
    let upstream_upgrade = (response.status() == StatusCode::SWITCHING_PROTOCOLS)
        .then(|| hyper::upgrade::on(&mut response));
    let (mut parts, body) = response.into_parts();
    rewrite::strip_hop_by_hop(&mut parts.headers);
    rewrite_response_headers(&mut parts.headers, target, &origin, upstream);
    if let (Some(protocol), Some(client_upgrade), Some(upstream_upgrade)) =
        (upgrade, client_upgrade, upstream_upgrade)
    {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, last_use));
        return Response::from_parts(parts, Body::empty());
    }
    if !small_complete_body(&parts.headers) {
        return Response::from_parts(parts, Body::new(body));
    }
    // Head and body then leave in one write, as nginx's buffering does.
    match tokio::time::timeout(state.upstream_timeout, body.collect()).await {
        Ok(Ok(collected)) => Response::from_parts(parts, Body::from(collected.to_bytes())),
        Ok(Err(error)) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "UpstreamUnavailable",
            format!(
                "workspace {}/{} broke off its response: {}",
                target.namespace,
                target.name,
                root_cause(&error)
            ),
        )
        .json(),
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "UpstreamTimeout",
            format!(
                "workspace {}/{} did not finish its response within {:?}",
                target.namespace, target.name, state.upstream_timeout
            ),
        )
        .json(),
    }
}

/// Bodies up to this size, with a Content-Length, are read whole before the response is
/// sent; larger or open-ended ones (downloads, SSE, long polls) stream.
const BUFFERED_BODY_MAX: u64 = 64 * 1024;

fn small_complete_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|length| length <= BUFFERED_BODY_MAX)
}

fn rewrite_response_headers(
    headers: &mut HeaderMap,
    target: &Target,
    origin: &PublicOrigin,
    upstream: SocketAddr,
) {
    if let Some(location) = headers.get(header::LOCATION).and_then(|l| l.to_str().ok()) {
        let upstream_authority = upstream.to_string();
        let origins = Origins {
            prefix: &target.prefix,
            public_host: origin.host.to_str().unwrap_or_default(),
            public_scheme: origin.scheme.to_str().unwrap_or("http"),
            upstream_authority: &upstream_authority,
        };
        let rewritten = rewrite::rewrite_location(location, &origins);
        if let Ok(value) = HeaderValue::from_str(&rewritten) {
            headers.insert(header::LOCATION, value);
        }
    }
    let cookies: Vec<String> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .map(|c| rewrite::rewrite_set_cookie(c, &target.prefix))
        .collect();
    if !cookies.is_empty() {
        headers.remove(header::SET_COOKIE);
        for cookie in cookies {
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.append(header::SET_COOKIE, value);
            }
        }
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The `Upgrade` value of a WebSocket handshake (`Connection: upgrade` + `Upgrade`).
fn websocket_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    (asks_upgrade
        && protocol
            .to_str()
            .is_ok_and(|p| p.eq_ignore_ascii_case("websocket")))
    .then(|| protocol.clone())
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Joins the browser's and the workspace's upgraded connections until either side closes;
/// traffic either way marks the workspace as used.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    last_use: LastUse,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "WebSocket upgrade failed");
            return;
        }
    };
    let mut client = Marking {
        inner: TokioIo::new(client),
        last_use,
    };
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "WebSocket tunnel closed");
    }
}

/// An I/O stream that records the time of every read and write in `last_use`.
struct Marking<T> {
    inner: T,
    last_use: LastUse,
}

impl<T> Marking<T> {
    fn mark(&self) {
        self.last_use.store(now_millis(), Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Marking<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.mark();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Marking<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.mark();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

thread_local! {
    static UPSTREAM: std::cell::OnceCell<UpstreamClient> = const { std::cell::OnceCell::new() };
}

/// This serving thread's upstream client: pooled keep-alive connections whose tasks run on
/// this thread, bounded connect time.
fn upstream_client(connect_timeout: std::time::Duration) -> UpstreamClient {
    UPSTREAM.with(|client| {
        client
            .get_or_init(|| new_upstream_client(connect_timeout))
            .clone()
    })
}

fn new_upstream_client(connect_timeout: std::time::Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_handshakes_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            websocket_upgrade(&headers),
            Some(HeaderValue::from_static("websocket"))
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert_eq!(websocket_upgrade(&headers), None);
        headers.remove(header::CONNECTION);
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(websocket_upgrade(&headers), None);
    }
}
