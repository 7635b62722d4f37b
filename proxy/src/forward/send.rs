//! Sending a request to its workspace and the answer back: HTTP over this serving thread's
//! pooled keep-alive connections ([`client`]), or a WebSocket tunnel. The headers either way
//! are [`rewrite`]'s.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use tower::BoxError;

use super::ApiServerRoute;
use super::api_servers::undo_api_server_rewrites;
use super::client::{self, Sent};
use super::rewrite::{self, Forwarding, PublicOrigin};
use super::route::Target;
use super::traffic::{Traffic, Watched};
use crate::activity::{LastUse, now_millis};
use crate::app::AppState;
use crate::auth::{Caller, Via};
use crate::body;
use crate::error::ApiError;

/// Sends `request` to `upstream` for `target` — itself, or through its cluster's API server
/// (`route`) — and streams the response (or, after a WebSocket handshake, the tunnel)
/// back; traffic marks `last_use`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    state: &AppState,
    peer: SocketAddr,
    caller: &Caller,
    target: &Target,
    upstream: SocketAddr,
    route: Option<ApiServerRoute>,
    last_use: LastUse,
    mut request: Request,
) -> Response {
    let trusted_proxy = state.auth.is_trusted_proxy(peer.ip());
    let forwarding = Forwarding {
        origin: PublicOrigin::of(
            request.headers(),
            peer.ip(),
            trusted_proxy,
            state.own_scheme(),
        ),
        prefix: &target.prefix,
        upstream,
        websocket: rewrite::websocket_upgrade(request.headers()),
        trusted_proxy,
        forward_bearer: rewrite::forwards_bearer_tokens(
            request.headers(),
            state.forward_authorization,
            caller.via == Via::Bearer,
            |token| state.auth.knows_token(token),
        ),
        identity_headers: state.auth.identity_headers(),
    };
    let client_upgrade = forwarding
        .websocket
        .as_ref()
        .map(|_| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();

    let uri = match &route {
        None => format!("http://{upstream}{}", target.upstream_path_and_query),
        // A path on the API server: its client adds the scheme and authority.
        Some(route) => format!("{}{}", route.path, target.upstream_path_and_query),
    };
    let uri = match Uri::try_from(uri) {
        Ok(uri) => uri,
        Err(error) => return ApiError::bad_request(format!("invalid path: {error}")).json(),
    };
    parts.uri = uri;
    // What a body that ends early is judged against.
    let content_length = parts.headers.get(header::CONTENT_LENGTH).cloned();
    rewrite::request_headers(&mut parts.headers, &forwarding);
    // Only a request without a body can be sent again as it was (see client::send).
    let replayable = body.is_end_stream();
    let (body, client_body) = body::watch_client_body(body);
    let upstream_request = http::Request::from_parts(parts, body);

    let sending = async {
        match &route {
            None => {
                let Sent { result, retried } =
                    client::send(state.connect_timeout, upstream_request, replayable).await;
                (result.map_err(BoxError::from), retried)
            }
            Some(route) => (route.server.send(upstream_request).await, false),
        }
    };
    let through = route
        .as_ref()
        .map(|r| format!(" (through the API server of cluster {})", r.cluster))
        .unwrap_or_default();
    let response = match tokio::time::timeout(state.upstream_timeout, sending).await {
        Ok((Ok(response), _)) => response,
        Ok((Err(error), _)) if client_body.happened() => {
            // The client's body broke (framing, too short, gone): not the workspace's fault.
            tracing::debug!(%error, %upstream, "client request body failed");
            return body::closing(
                body::client_body_error(&*error, content_length.as_ref()),
                &HeaderMap::new(),
            );
        }
        Ok((Err(error), retried)) => {
            let cause = root_cause(&*error);
            tracing::warn!(
                namespace = %target.namespace, name = %target.name, %upstream, %error, %cause, retried,
                "502: the workspace did not answer{through}"
            );
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "UpstreamUnavailable",
                format!(
                    "workspace {}/{} did not answer{through}: {cause}",
                    target.namespace, target.name
                ),
            )
            .json();
        }
        Err(_) => {
            tracing::warn!(
                namespace = %target.namespace, name = %target.name, %upstream, timeout = ?state.upstream_timeout,
                "504: the workspace sent no response head within --upstream-timeout"
            );
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

    let mut response = response.map(Body::new);
    if let Some(route) = &route
        && response.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        response = match undo_api_server_rewrites(response, &route.path).await {
            Ok(response) => response,
            Err(error) => {
                let cause = root_cause(&*error);
                tracing::warn!(
                    namespace = %target.namespace, name = %target.name, %error, %cause,
                    "502: the workspace's page broke off{through}"
                );
                return ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "UpstreamUnavailable",
                    format!(
                        "workspace {}/{} broke off its response{through}: {cause}",
                        target.namespace, target.name
                    ),
                )
                .json();
            }
        };
    }
    let upstream_upgrade = (response.status() == StatusCode::SWITCHING_PROTOCOLS)
        .then(|| hyper::upgrade::on(&mut response));
    let (mut parts, body) = response.into_parts();
    rewrite::response_headers(&mut parts.headers, &forwarding, upstream_upgrade.is_some());
    if let (Some(client_upgrade), Some(upstream_upgrade)) = (client_upgrade, upstream_upgrade) {
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, last_use));
        return Response::from_parts(parts, Body::empty());
    }
    if !small_complete_body(&parts.headers) {
        return Response::from_parts(parts, body);
    }
    // Head and body then leave in one write, as nginx's buffering does.
    match tokio::time::timeout(state.upstream_timeout, body.collect()).await {
        Ok(Ok(collected)) => Response::from_parts(parts, Body::from(collected.to_bytes())),
        Ok(Err(error)) => {
            let cause = root_cause(&error);
            tracing::warn!(
                namespace = %target.namespace, name = %target.name, %upstream, %error, %cause,
                "502: the workspace broke off its response"
            );
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "UpstreamUnavailable",
                format!(
                    "workspace {}/{} broke off its response: {cause}",
                    target.namespace, target.name
                ),
            )
            .json()
        }
        Err(_) => {
            tracing::warn!(
                namespace = %target.namespace, name = %target.name, %upstream, timeout = ?state.upstream_timeout,
                "504: the workspace did not finish its response within --upstream-timeout"
            );
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "UpstreamTimeout",
                format!(
                    "workspace {}/{} did not finish its response within {:?}",
                    target.namespace, target.name, state.upstream_timeout
                ),
            )
            .json()
        }
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
    let mut client = Watched {
        inner: TokioIo::new(client),
        traffic: last_use,
    };
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "WebSocket tunnel closed");
    }
}

/// Traffic either way on a tunnel marks its workspace as used.
impl Traffic for LastUse {
    fn read(&self) {
        self.store(now_millis(), Ordering::Relaxed);
    }

    fn writing(&self) {
        self.store(now_millis(), Ordering::Relaxed);
    }
}
