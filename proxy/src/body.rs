//! Request bodies. Those the proxy reads itself (the login form, the dashboard API's JSON)
//! must arrive whole within `--body-read-timeout`, and at most `--max-unauthenticated-bodies`
//! are read at once for callers that have not authenticated, so slow clients trickling
//! bodies cannot hold the proxy. Those it forwards to workspaces stream as they come, with
//! no deadline; when reading one fails on the client's side (bad chunk framing, a body
//! shorter than its Content-Length, the client gone), that is the client's error, answered
//! `400`, not blamed on the workspace.
//!
//! A body that ends early is answered too: a client that half-closes its side of the
//! connection (`shutdown(Write)`) mid-body still reads, and hyper writes the answer before
//! it closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderValue};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::app::AppState;
use crate::error::ApiError;

/// The largest body the proxy reads itself (a login form, a launch request).
pub const MAX_OWN_BODY: usize = 1024 * 1024;

/// The largest import into a database table (`…/tables/{table}/import`), read whole before
/// a row is written.
pub const MAX_IMPORT_BODY: usize = 64 * 1024 * 1024;

/// The largest body read for a request to `path`, and what to do about a larger one.
fn body_limit(path: &str) -> (usize, &'static str) {
    if path.starts_with("/api/databases/") && path.ends_with("/import") {
        (
            MAX_IMPORT_BODY,
            "; split the import into files of at most that size",
        )
    } else {
        (MAX_OWN_BODY, "")
    }
}

/// Seconds to wait before trying again when too many unauthenticated bodies are being read.
const BUSY_RETRY_AFTER_SECONDS: u32 = 1;

/// In front of the proxy's own routes: reads the request body whole, within
/// `--body-read-timeout` (else `408`), at most [`MAX_OWN_BODY`] bytes ([`MAX_IMPORT_BODY`] for a
/// database import; else `413`), and for a
/// caller not known to be authenticated only while fewer than `--max-unauthenticated-bodies`
/// others are (else `503` with Retry-After). A body the client breaks off or frames wrongly
/// is `400`. Each of these closes the connection, whose rest cannot be read.
pub async fn read_own_body(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let (limit, advice) = body_limit(parts.uri.path());
    // Decided without asking the API server: a session, a recently accepted token.
    let permit = if state.auth.is_known_caller(&parts.headers, peer.ip()) {
        None
    } else {
        match state.unauthenticated_bodies.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "TooManyUnauthenticated",
                    "too many requests from callers that have not logged in are being read; \
                     try again shortly",
                );
                error.retry_after = Some(BUSY_RETRY_AFTER_SECONDS);
                return closing(error, &parts.headers);
            }
        }
    };
    let read =
        tokio::time::timeout(state.body_read_timeout, Limited::new(body, limit).collect()).await;
    drop(permit);
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            let error = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BodyTooLarge",
                format!("the request body is over {limit} bytes{advice}"),
            );
            return closing(error, &parts.headers);
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, %peer, "reading a request body failed");
            let content_length = parts.headers.get(CONTENT_LENGTH);
            return closing(client_body_error(&*error, content_length), &parts.headers);
        }
        Err(_) => {
            let error = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "BodyTimeout",
                format!(
                    "the request body did not arrive within {:?}",
                    state.body_read_timeout
                ),
            );
            return closing(error, &parts.headers);
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// `400` for a request whose body the client broke, reading it having failed with `error`:
/// `IncompleteBody` when it ended early (the client stopped sending, e.g. half-closed its
/// connection, before the request's `content_length` or its last chunk), else `BadRequest`
/// with the framing error hyper found (a bad chunk size…).
pub fn client_body_error(
    error: &(dyn std::error::Error + 'static),
    content_length: Option<&HeaderValue>,
) -> ApiError {
    let mut cause = Some(error);
    let mut root = error;
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            let expected = match content_length.and_then(|v| v.to_str().ok()) {
                Some(length) => format!("the {length} bytes its Content-Length announced"),
                None => "its last chunk".to_owned(),
            };
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                format!(
                    "the request body could not be read: the client stopped sending before \
                     {expected}"
                ),
            );
        }
        root = error;
        cause = error.source();
    }
    ApiError::bad_request(format!("the request body could not be read: {root}"))
}

/// `error` for the caller of a request with `headers`, closing the connection after it.
pub fn closing(error: ApiError, headers: &HeaderMap) -> Response {
    let mut response = error.for_client(headers);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Whether reading a forwarded body from the client failed; see [`watch_client_body`].
#[derive(Clone, Debug, Default)]
pub struct ClientBodyFailure(Arc<AtomicBool>);

impl ClientBodyFailure {
    /// Whether the client's body failed: then a failed upstream request is the client's fault.
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `body` as it streams on to a workspace, unchanged, and a flag raised if reading it from
/// the client fails (before the error reaches whoever reads it).
pub fn watch_client_body(body: Body) -> (Body, ClientBodyFailure) {
    let failure = ClientBodyFailure::default();
    let flag = failure.0.clone();
    let watched = body.map_err(move |error| {
        flag.store(true, Ordering::Release);
        error
    });
    (Body::new(watched), failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_body_failure_is_noticed() {
        let stream = futures::stream::iter([
            Ok(axum::body::Bytes::from_static(b"part")),
            Err(std::io::Error::other("invalid chunk size line")),
        ]);
        let (body, failure) = watch_client_body(Body::from_stream(stream));
        assert!(!failure.happened());
        assert!(body.collect().await.is_err());
        assert!(failure.happened());
        let (whole, fine) = watch_client_body(Body::from("all of it"));
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "all of it");
        assert!(!fine.happened());
    }
}
