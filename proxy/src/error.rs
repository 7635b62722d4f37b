//! Errors as callers see them: JSON `{"error": {"reason", "message"}}` for API clients, a
//! small HTML page for browsers, always with the right status and never a hang.

use axum::response::{Html, IntoResponse, Response};
use http::header::{ACCEPT, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, StatusCode};
use serde_json::json;

/// An error answer: status, reason and message, as JSON or HTML for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status it answers with.
    pub status: StatusCode,
    /// Stable, machine-readable: `NotFound`, `Forbidden`, `ImageDenied`…
    pub reason: String,
    /// What went wrong and how to fix it, for people.
    pub message: String,
    /// Seconds for `Retry-After` (503 while a workspace starts).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error answering `status` with `reason` and `message`, without Retry-After.
    pub fn new(status: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 401 `Unauthenticated`, saying how to log in.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            "log in at /login, or send a Kubernetes bearer token in the Authorization header",
        )
    }

    /// The one answer for "not yours" and "not there" alike.
    pub fn forbidden(namespace: &str, name: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "you may not open workspace {namespace}/{name}: only its owner, or users RBAC \
                 allows `get` on workspaces/proxy in {namespace}, may"
            ),
        )
    }

    /// 503 with `reason` and `message`, to be asked again after `retry_after` seconds.
    pub fn unavailable(reason: &str, message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, reason, message)
        }
    }

    /// 400 `BadRequest` with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 500 `InternalError` with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// An error the API server returned (from an impersonated call): its code, reason and
    /// message, which for admission denials name the field and the fix.
    pub fn from_kube(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => {
                let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY);
                Self::new(code, &status.reason, status.message)
            }
            other => Self::new(
                StatusCode::BAD_GATEWAY,
                "KubernetesUnavailable",
                format!("the Kubernetes API could not be reached: {other}"),
            ),
        }
    }

    /// The answer as JSON: `{"error": {"reason", "message"}}`.
    pub fn json(&self) -> Response {
        let body = json!({"error": {"reason": self.reason, "message": self.message}});
        self.with_headers((self.status, axum::Json(body)).into_response())
    }

    /// The answer as a small HTML page linking to the dashboard.
    pub fn html(&self) -> Response {
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
             <body><h1>{code} {reason}</h1><p>{message}</p><p><a href=\"/\">GuildNet dashboard</a></p></body></html>",
            code = self.status.as_u16(),
            reason = escape_html(&self.reason),
            message = escape_html(&self.message),
        );
        self.with_headers((self.status, Html(page)).into_response())
    }

    /// HTML when the caller is a browser navigating, JSON otherwise.
    pub fn for_client(&self, request_headers: &HeaderMap) -> Response {
        if wants_html(request_headers) {
            self.html()
        } else {
            self.json()
        }
    }

    fn with_headers(&self, mut response: Response) -> Response {
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.json()
    }
}

/// Whether the request's `Accept` asks for `text/html`: a browser navigating.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// `s` made safe for HTML text and quoted attributes (`&`, `<`, `>`, `"`, `'` escaped).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn browsers_get_html_and_clients_json() {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(wants_html(&headers));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_html(&headers));
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotReady", "starting");
        e.retry_after = Some(5);
        let response = e.for_client(&headers);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
    }
}
