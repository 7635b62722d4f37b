//! The HTTP client to the workspaces: this serving thread's pooled keep-alive connections,
//! and one retry on a new connection for the keep-alive race.
//!
//! A pooled connection can be closed by the workspace (its idle timeout, a restart) just as
//! the proxy sends the next request on it: the request goes out, and the connection ends
//! (EOF or a reset) without a byte of an answer. hyper-util's client retries on its own only
//! a request that hyper had not yet started to write when the connection turned out closed
//! (`retry_canceled_requests`); once the request is written, the error reaches the caller,
//! which would be a 502. [`send`] covers that case: when the connection had carried an
//! exchange before and nothing of this request's answer arrived, a request that can be sent
//! again unchanged — an idempotent method (RFC 9110 §9.2.2) with an empty body, which is what
//! browsers load pages, scripts and WebSocket handshakes with — is sent once more, on a new
//! connection. A request with a body is never sent again: its body was (partly) consumed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, Error};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::traffic::{Traffic, Watched};

type UpstreamClient = Client<Tracking, Body>;

/// What became of a request to a workspace.
pub(super) struct Sent {
    /// The workspace's answer, or why there is none.
    pub result: Result<Response<Incoming>, Error>,
    /// Whether the request was sent a second time, on a new connection (see [`send`]).
    pub retried: bool,
}

/// Sends `request` over this thread's pooled connections, with at most one retry on a new
/// connection when a reused one ends before any byte of the answer arrives and the request
/// can be repeated (see the module's documentation). `replayable`: its body is empty.
pub(super) async fn send(
    connect_timeout: Duration,
    request: Request<Body>,
    replayable: bool,
) -> Sent {
    let repeat = (replayable && idempotent(request.method())).then(|| Repeat {
        method: request.method().clone(),
        uri: request.uri().clone(),
        version: request.version(),
        headers: request.headers().clone(),
    });
    let result = pooled(connect_timeout).request(request).await;
    let Err(error) = result else {
        return Sent {
            result,
            retried: false,
        };
    };
    // The error names the connection it happened on.
    let unanswered_on_reused = error
        .connect_info()
        .and_then(ConnectionUse::of)
        .is_some_and(|used| used.reused_and_unanswered());
    match repeat {
        Some(repeat) if unanswered_on_reused => {
            tracing::debug!(
                %error,
                "a reused workspace connection ended before answering; sending again on a new one"
            );
            Sent {
                result: fresh(connect_timeout).request(repeat.request()).await,
                retried: true,
            }
        }
        _ => Sent {
            result: Err(error),
            retried: false,
        },
    }
}

/// Methods whose request may be repeated without changing what it does (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// A request with an empty body, kept to be sent again.
struct Repeat {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Repeat {
    fn request(self) -> Request<Body> {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

thread_local! {
    static POOLED: std::cell::OnceCell<UpstreamClient> = const { std::cell::OnceCell::new() };
    static FRESH: std::cell::OnceCell<UpstreamClient> = const { std::cell::OnceCell::new() };
}

/// This serving thread's client: pooled keep-alive connections whose tasks run on this
/// thread, bounded connect time.
fn pooled(connect_timeout: Duration) -> UpstreamClient {
    POOLED.with(|client| {
        client
            .get_or_init(|| new_client(connect_timeout, 64))
            .clone()
    })
}

/// A client that keeps no idle connections, so each request has a new one: for retries.
fn fresh(connect_timeout: Duration) -> UpstreamClient {
    FRESH.with(|client| {
        client
            .get_or_init(|| new_client(connect_timeout, 0))
            .clone()
    })
}

fn new_client(connect_timeout: Duration, max_idle_per_host: usize) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(max_idle_per_host)
        .build(Tracking(connector))
}

/// How one connection to a workspace has been used, as its stream saw it: requests start
/// with a write after a read (HTTP/1.1 without pipelining: the previous answer came first).
#[derive(Debug)]
struct Usage {
    /// Requests begun on the connection (writes following a read, or the first write).
    requests: AtomicU64,
    /// The request whose answer the last bytes read belong to (0: nothing read yet).
    answered: AtomicU64,
    /// Whether the last operation was a read (or nothing yet): the next write begins a request.
    read_last: AtomicBool,
}

/// The [`Usage`] of a connection, in its [`Connected`] metadata.
#[derive(Clone, Debug)]
struct ConnectionUse(Arc<Usage>);

impl ConnectionUse {
    fn of(connected: &Connected) -> Option<Self> {
        let mut extensions = Extensions::new();
        connected.get_extras(&mut extensions);
        extensions.get::<Self>().cloned()
    }

    /// Whether the connection had carried an exchange before its latest request, and not a
    /// byte of that request's answer has arrived.
    fn reused_and_unanswered(&self) -> bool {
        let requests = self.0.requests.load(Ordering::Acquire);
        requests > 1 && self.0.answered.load(Ordering::Acquire) < requests
    }
}

/// [`HttpConnector`] with every connection's stream [`Tracked`].
#[derive(Clone)]
struct Tracking(HttpConnector);

impl tower::Service<Uri> for Tracking {
    type Response = TokioIo<Tracked>;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let stream = connecting.await?.into_inner();
            Ok(TokioIo::new(Tracked {
                inner: stream,
                traffic: Arc::default(),
            }))
        })
    }
}

/// A connection's stream, recording its [`Usage`].
type Tracked = Watched<TcpStream, Arc<Usage>>;

impl Connection for Tracked {
    fn connected(&self) -> Connected {
        self.inner
            .connected()
            .extra(ConnectionUse(self.traffic.clone()))
    }
}

impl Traffic for Arc<Usage> {
    fn read(&self) {
        self.read_last.store(true, Ordering::Relaxed);
        let request = self.requests.load(Ordering::Relaxed);
        self.answered.store(request, Ordering::Release);
    }

    /// A write after a read (or the first write) is the start of the next request; counted
    /// on the attempt, so a request whose write fails counts as begun and unanswered.
    fn writing(&self) {
        if self.read_last.swap(false, Ordering::Relaxed) {
            self.requests.fetch_add(1, Ordering::Release);
        }
    }
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            read_last: AtomicBool::new(true),
        }
    }
}
