//! `/healthz` (the process answers), `/readyz` (it can do its work: caches synced, not
//! shutting down) and `/metrics` (Prometheus, OpenMetrics text). The webhook and the proxy
//! merge [`Health::router`] into their own port; the operator serves it on a port of its
//! own with [`serve`].

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::warn;

/// The content type of the OpenMetrics text format that prometheus-client encodes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

type ReadyFn = Arc<dyn Fn() -> bool + Send + Sync>;
type MetricsFn = Arc<dyn Fn() -> Result<String, std::fmt::Error> + Send + Sync>;

/// What the health routes report, asked afresh on every request.
#[derive(Clone)]
pub struct Health {
    ready: ReadyFn,
    /// The `/readyz` body while not ready: what the process is waiting for.
    not_ready: &'static str,
    metrics: Option<MetricsFn>,
}

impl Health {
    /// `/readyz` answers 200 while `ready()` holds, else 503 with `not_ready`.
    pub fn new(ready: impl Fn() -> bool + Send + Sync + 'static, not_ready: &'static str) -> Self {
        Self {
            ready: Arc::new(ready),
            not_ready,
            metrics: None,
        }
    }

    /// Serves `/metrics` too, from `encode`.
    pub fn with_metrics(
        self,
        encode: impl Fn() -> Result<String, std::fmt::Error> + Send + Sync + 'static,
    ) -> Self {
        Self {
            metrics: Some(Arc::new(encode)),
            ..self
        }
    }

    /// The routes, ready to merge into a router of any state.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz));
        let router = match self.metrics {
            Some(_) => router.route("/metrics", get(metrics)),
            None => router,
        };
        router.with_state(self)
    }
}

/// Why a port cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address cannot be bound (in use, or not an address of this host), or read back.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for, e.g. the operator's `--metrics-listen`.
        addr: SocketAddr,
        /// The operating system's error, e.g. `Address already in use`.
        source: std::io::Error,
    },
}

/// Binds `addr` and serves `router` in the background for as long as the process runs;
/// returns the address bound (`addr` may ask for port 0).
pub async fn serve(addr: SocketAddr, router: Router) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            warn!(error = %e, "the health and metrics server stopped");
        }
    });
    Ok(bound)
}

async fn readyz(State(health): State<Health>) -> Response {
    if (health.ready)() {
        "ok\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", health.not_ready),
        )
            .into_response()
    }
}

async fn metrics(State(health): State<Health>) -> Response {
    let Some(encode) = &health.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match encode() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, Option<String>, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn readyz_follows_readiness_and_says_what_it_waits_for() {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let router: Router =
            Health::new(move || flag.load(Ordering::Relaxed), "caches syncing").router();
        assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK);
        let (status, _, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "caches syncing\n");
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(&router, "/metrics").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics() {
        let router: Router = Health::new(|| true, "")
            .with_metrics(|| Ok("# EOF\n".to_owned()))
            .router();
        let (status, content_type, body) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(OPENMETRICS_CONTENT_TYPE));
        assert_eq!(body, "# EOF\n");
    }
}
