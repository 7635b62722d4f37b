//! `GET /api/workspaces/{ns}/{name}/logs?tail=&follow=`: the workspace container's log,
//! to whoever may open the workspace. Read with the proxy's own identity, so users need no
//! RBAC on pods. `{ns}` and `{name}` must be DNS labels, as for the rest of the API.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use guildnet_api::labels;
use http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::reflector::ObjectRef;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::ApiError;

const DEFAULT_TAIL: i64 = 100;
const MAX_TAIL: i64 = 10_000;

/// The query: `tail` lines (default 100, at most 10 000) and whether to `follow`.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    tail: Option<i64>,
    #[serde(default)]
    follow: bool,
}

/// The log as plain text or, with `follow=true`, an SSE stream of `log` events.
pub async fn logs(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    match pod_log(&state, peer, &headers, &namespace, &name, &query).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn pod_log(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    namespace: &str,
    name: &str,
    query: &LogQuery,
) -> Result<Response, ApiError> {
    let caller = state.auth.require(headers, peer.ip()).await?;
    // Both go into the pods' URL and label selector.
    super::api::check_path_parameters(namespace, name)?;
    let workspace = state
        .workspaces
        .get(&ObjectRef::new(name).within(namespace));
    if !state
        .authz
        .may_open(&caller.identity, namespace, name, workspace.as_deref())
        .await
    {
        return Err(ApiError::forbidden(namespace, name));
    }
    if workspace.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("workspace {namespace}/{name} does not exist"),
        ));
    }
    let tail = query.tail.unwrap_or(DEFAULT_TAIL);
    if !(0..=MAX_TAIL).contains(&tail) {
        return Err(ApiError::bad_request(format!(
            "tail must be between 0 and {MAX_TAIL} lines (got {tail})"
        )));
    }
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), namespace);
    let pod = newest_pod(&pods, name).await?;
    let params = LogParams {
        tail_lines: Some(tail),
        follow: query.follow,
        ..LogParams::default()
    };
    if !query.follow {
        let text = pods
            .logs(&pod, &params)
            .await
            .map_err(ApiError::from_kube)?;
        return Ok((
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response());
    }
    let lines = pods
        .log_stream(&pod, &params)
        .await
        .map_err(ApiError::from_kube)?
        .lines();
    let events = lines
        .take_while(|line| std::future::ready(line.is_ok()))
        .map_ok(|line| SseEvent::default().event("log").data(line))
        .map(|item| Ok::<_, Infallible>(item.unwrap_or_default()));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The workspace's newest pod (after a restart or rollout, the one that matters).
async fn newest_pod(pods: &Api<Pod>, workspace: &str) -> Result<String, ApiError> {
    let selector = format!("{}=true,{}={workspace}", labels::MANAGED, labels::ID);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(ApiError::from_kube)?;
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        .and_then(|p| p.metadata.name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "NoPod",
                format!("workspace {workspace} has no pod (suspended, or not started yet)"),
            )
        })
}
