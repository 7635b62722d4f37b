//! The half of the proxy that serves workspaces: which workspace a request is for
//! ([`route`]), whether the caller may open it, where it answers ([`endpoints`]; for a
//! workspace on a cluster registered with `network: APIServerProxy`, through that cluster's
//! API server, [`api_servers`]), then the request and its response streamed through
//! (`send`) with the header rules of [`rewrite`].

pub mod api_servers;
mod client;
pub mod endpoints;
pub mod rewrite;
pub mod route;
mod send;
mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;

use api_servers::ApiServer;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use guildnet_api::cluster::facts::service_proxy_path;
use guildnet_api::common::Condition;
use guildnet_api::workspace::Workspace;
use http::{HeaderMap, StatusCode, Uri};
use kube::runtime::reflector::ObjectRef;

use crate::app::AppState;
use crate::dashboard::pages::with_security_headers;
use crate::error::{ApiError, wants_html};
use route::Target;

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
        // Not a workspace's: the proxy's own answers, with the dashboard's headers.
        Ok(None) => with_security_headers(
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no page at {}", uri.path()),
            )
            .for_client(request.headers()),
        ),
        Err(error) => with_security_headers(
            ApiError::bad_request(error.to_string()).for_client(request.headers()),
        ),
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
    let caller = match state.auth.require(headers, peer.ip()).await {
        Ok(caller) => caller,
        Err(error) if error.status == StatusCode::UNAUTHORIZED => {
            return unauthenticated(&target, request.uri(), headers);
        }
        Err(error) => return error.for_client(headers),
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
    if workspace.keeps_proxy_prefix() && !target.prefix.is_empty() {
        // The app serves under the prefix itself (Jupyter's base_url): it gets the whole path.
        target.upstream_path_and_query = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    }
    if let Some(outage) = workspace.cluster_outage() {
        // Its last-known addresses are in a cluster that does not answer: say so at once
        // rather than let the request hang there.
        return cluster_out_of_reach(outage).for_client(headers);
    }
    let Some(upstream) = state.endpoints.pick(
        &target.namespace,
        &target.name,
        workspace.spec.primary_port_name().as_deref(),
    ) else {
        return not_running(&workspace, &target).for_client(headers);
    };
    let route = through_api_server(&state, &workspace);
    let last_use = state.activity.touch(&workspace);
    send::send(
        &state, peer, &caller, &target, upstream, route, last_use, request,
    )
    .await
}

/// A placed workspace reached through its cluster's API server: which one, and the path of
/// the workspace Service's proxy there.
pub(crate) struct ApiServerRoute {
    /// The registered cluster.
    cluster: String,
    /// Its API server, with the registration's credentials.
    server: Arc<ApiServer>,
    /// The service proxy path requests go under (`service_proxy_path`).
    path: String,
}

/// How `workspace` is reached when its cluster's registration says `network:
/// APIServerProxy` (the operator has handed the proxy its kubeconfig); None: directly.
fn through_api_server(state: &AppState, workspace: &Workspace) -> Option<ApiServerRoute> {
    let (cluster, namespace, name) = workspace.remote_place()?;
    let server = state.api_servers.get(cluster)?;
    let port = workspace.spec.primary_port_name()?;
    Some(ApiServerRoute {
        cluster: cluster.to_owned(),
        server,
        path: service_proxy_path(namespace, name, &port),
    })
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

/// 503 with Retry-After: the cluster the workspace is placed on is out of reach; the reason
/// and message are its `Degraded` condition's (`ClusterUnreachable`, `ClusterRemoved`).
fn cluster_out_of_reach(outage: &Condition) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        &outage.reason,
        outage.message.clone(),
    );
    error.retry_after = Some(RETRY_AFTER_SECONDS);
    error
}

/// 503 with Retry-After: the workspace exists but nothing of it answers yet.
fn not_running(workspace: &Workspace, target: &Target) -> ApiError {
    let phase = workspace
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
    let message = if workspace.is_suspended() {
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
