//! The dashboard's pages and assets, built into the binary (no CDN, nothing to install),
//! and the security headers every response of the proxy's own carries.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, HeaderValue, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};

use crate::app::AppState;

/// The dashboard page (`GET /`).
pub const INDEX: &str = include_str!("index.html");
/// The login page, with `{{error}}` and `{{next}}` to fill in.
pub const LOGIN: &str = include_str!("login.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// The dashboard's Content-Security-Policy: scripts, styles, frames (workspaces in path mode)
/// and connections from this origin only, no inline script or style (the pages have none),
/// no plugins, `<base>` or foreign form targets, and framed by this origin only.
pub const DASHBOARD_CSP: &str = "default-src 'self'; base-uri 'none'; object-src 'none'; \
                                 form-action 'self'; frame-ancestors 'self'";

/// The headers of [`with_security_headers`].
const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
    (X_FRAME_OPTIONS, "SAMEORIGIN"),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (REFERRER_POLICY, "same-origin"),
];

/// `response`, one of the proxy's own (a dashboard page, asset, API answer or error), with
/// the dashboard's security headers: [`DASHBOARD_CSP`], `X-Frame-Options: SAMEORIGIN`,
/// `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`. Never applied to what
/// a workspace answers, whose headers are the app's.
pub fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `GET /`: the dashboard, or the login page first.
pub async fn index(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match state.auth.require(&headers, peer.ip()).await {
        Ok(_) => {}
        Err(error) if error.status == http::StatusCode::UNAUTHORIZED => {
            return Redirect::to("/login").into_response();
        }
        Err(error) => return error.for_client(&headers),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the policy forbids must not be in the pages, or they would break under it.
    #[test]
    fn the_pages_need_no_inline_script_or_style() {
        for (page, html) in [("index.html", INDEX), ("login.html", LOGIN)] {
            let lower = html.to_ascii_lowercase();
            for script in lower.match_indices("<script").map(|(at, _)| &lower[at..]) {
                let tag = &script[..script.find('>').unwrap()];
                assert!(tag.contains(" src="), "{page}: inline script {tag}");
                assert!(script[tag.len() + 1..].starts_with("</script>"), "{page}");
            }
            assert!(!lower.contains("<style"), "{page}: inline <style>");
            assert!(!lower.contains(" style="), "{page}: style attribute");
            assert!(!lower.contains("javascript:"), "{page}: javascript: URL");
            for handler in [
                " onclick=",
                " onload=",
                " onsubmit=",
                " onchange=",
                " oninput=",
            ] {
                assert!(!lower.contains(handler), "{page}: inline handler {handler}");
            }
            assert!(
                !lower.contains("http://") && !lower.contains("https://"),
                "{page}"
            );
        }
        // The script builds elements with setAttribute; a style attribute would be refused.
        assert!(!APP_JS.contains("style"), "app.js sets inline styles");
        assert!(!APP_JS.contains("eval(") && !APP_JS.contains("new Function"));
        assert!(!STYLE_CSS.contains("@import") && !STYLE_CSS.contains("url("));
    }

    #[test]
    fn the_policy_allows_no_inline_code_and_no_foreign_framing() {
        assert!(DASHBOARD_CSP.contains("default-src 'self'"));
        assert!(DASHBOARD_CSP.contains("frame-ancestors 'self'"));
        assert!(!DASHBOARD_CSP.contains("unsafe"), "{DASHBOARD_CSP}");
    }
}
