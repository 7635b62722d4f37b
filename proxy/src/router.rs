//! The routes: the dashboard's pages and API, health, and everything else forwarded to
//! workspaces; in front of them all, the head-size limit and subdomain mode, and before
//! those the release of a connection's place among the unauthenticated ones.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use guildnet_runtime::health::Health;
use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};

use crate::app::AppState;
use crate::body;
use crate::dashboard::{api, claims, events, logs, pages, quotas};
use crate::database;
use crate::error::ApiError;
use crate::forward;
use crate::limits::UnauthenticatedSlot;

/// Every route of the proxy, behind `front` (the size limit and subdomain mode).
pub fn router(state: AppState) -> Router {
    let synced = state.clone();
    let health = Health::new(move || synced.is_ready(), "caches not synced yet");
    Router::new()
        .route("/", get(pages::index))
        .route("/assets/app.js", get(pages::app_js))
        .route("/assets/style.css", get(pages::style_css))
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
        .route("/api/claims", get(claims::list))
        .route("/api/claims/{namespace}/{name}", delete(claims::delete))
        .route("/api/quotas", get(quotas::list))
        .route("/api/events", get(events::list))
        .route("/api/databases", get(database::list))
        .route(
            "/api/databases/{namespace}/{name}/dbs",
            get(database::list_databases).post(database::create_database),
        )
        .route(
            "/api/databases/{namespace}/{name}/dbs/{db}",
            delete(database::drop_database),
        )
        .route(
            "/api/databases/{namespace}/{name}/dbs/{db}/tables",
            get(database::list_tables).post(database::create_table),
        )
        .route(
            "/api/databases/{namespace}/{name}/dbs/{db}/tables/{table}",
            delete(database::drop_table),
        )
        .route(
            "/api/databases/{namespace}/{name}/dbs/{db}/tables/{table}/rows",
            get(database::list_rows).post(database::insert_rows),
        )
        .route(
            "/api/databases/{namespace}/{name}/dbs/{db}/tables/{table}/rows/{key}",
            get(database::get_row)
                .put(database::write_row)
                .patch(database::write_row)
                .delete(database::write_row),
        )
        .route(
            "/api/databases/{namespace}/{name}/dbs/{db}/tables/{table}/export",
            get(database::export),
        )
        .route(
            "/api/databases/{namespace}/{name}/dbs/{db}/tables/{table}/import",
            post(database::import),
        )
        .route(
            "/api/databases/{namespace}/{name}/users",
            get(database::users),
        )
        .route(
            "/api/databases/{namespace}/{name}/audit",
            get(database::audit_log),
        )
        .route(
            "/sse/databases/{namespace}/{name}/{db}/{table}/changes",
            get(database::changes),
        )
        .route("/sse/events", get(events::stream))
        .merge(health.router())
        // Bodies the proxy reads itself, whole and in time; workspaces' stream (fallback).
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            body::read_own_body,
        ))
        // The proxy's own responses only: the fallback forwards to workspaces (and adds
        // these to its own answers itself); subdomain mode never reaches the routes.
        .route_layer(middleware::map_response(|response: Response| async {
            pages::with_security_headers(response)
        }))
        .fallback(forward::path_mode)
        .layer(middleware::from_fn_with_state(state.clone(), front))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_authenticated_connection,
        ))
        .with_state(state)
}

/// For a connection still counted among the unauthenticated ones
/// (`--max-unauthenticated-connections`; the server puts its slot on each of its requests
/// until then): gives its place back once a request comes from a caller the proxy knows
/// (a session, a trusted identity header, a recently accepted token), or once a request
/// whose bearer token was reviewed for it has been answered. Connections already counted as
/// authenticated cost nothing here.
async fn count_authenticated_connection(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let Some(slot) = request.extensions().get::<UnauthenticatedSlot>().cloned() else {
        return next.run(request).await;
    };
    if state.auth.is_known_caller(request.headers(), peer.ip()) {
        slot.release();
        return next.run(request).await;
    }
    // The request may review its token itself (a TokenReview); known afterwards if accepted.
    let mut credentials = HeaderMap::new();
    if let Some(authorization) = request.headers().get(AUTHORIZATION) {
        credentials.insert(AUTHORIZATION, authorization.clone());
    }
    let response = next.run(request).await;
    if !credentials.is_empty() && state.auth.is_known_caller(&credentials, peer.ip()) {
        slot.release();
    }
    response
}

/// In front of every route: refuses oversized request heads (431; hyper bounds its read
/// buffer, but not exactly at `--max-header-bytes`), requests with more than one `Host`
/// (400: the proxy and the workspace could each read another) and HTTP/1.1 requests
/// without one (400, as RFC 9112 §3.2 requires), and in subdomain mode sends
/// every request to `<name>--<namespace>.<base domain>` to the workspace, whose paths they
/// are.
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
    if request
        .headers()
        .get_all(http::header::HOST)
        .iter()
        .nth(1)
        .is_some()
    {
        return pages::with_security_headers(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "DuplicateHost",
                "the request has more than one Host header; send exactly one",
            )
            .for_client(request.headers()),
        );
    }
    if request.version() == http::Version::HTTP_11
        && !request.headers().contains_key(http::header::HOST)
    {
        return pages::with_security_headers(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "MissingHost",
                "an HTTP/1.1 request must have a Host header",
            )
            .for_client(request.headers()),
        );
    }
    if let Some(base) = state.base_domain.as_deref() {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host));
        if let Some(host) = host {
            let uri = request.uri();
            match forward::route::from_host(host, base, uri.path(), uri.query()) {
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

#[cfg(test)]
mod tests;
