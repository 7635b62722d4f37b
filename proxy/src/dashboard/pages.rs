//! The dashboard's pages and assets, built into the binary (no CDN, nothing to install).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

use crate::app::AppState;

/// The dashboard page (`GET /`).
pub const INDEX: &str = include_str!("index.html");
/// The login page, with `{{error}}` and `{{next}}` to fill in.
pub const LOGIN: &str = include_str!("login.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// `GET /`: the dashboard, or the login page first.
pub async fn index(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if state.auth.authenticate(&headers, peer.ip()).await.is_none() {
        return Redirect::to("/login").into_response();
    }
    Html(INDEX).into_response()
}

/// `GET /assets/app.js`: the dashboard's script.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /assets/style.css`: the dashboard's stylesheet.
pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // Revalidated each time: assets change with the binary, and they are small.
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}
