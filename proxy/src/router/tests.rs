//! The proxy in process: `router(state).oneshot(request)` for workspaces served by a local
//! upstream on 127.0.0.1, with the caches filled by hand as their watches would fill them.
//!
//! No Kubernetes API server is involved. The kube client points at a closed loopback port;
//! RBAC decisions and token reviews, where a test needs one, are seeded in the proxy's own
//! caches as if a SubjectAccessReview or TokenReview had answered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::connect_info::MockConnectInfo;
use axum::response::{IntoResponse, Response};
use clap::Parser;
use guildnet_api::labels;
use guildnet_api::policy::owner::owner_id;
use guildnet_api::workspace::{Lifecycle, Workspace, WorkspacePort, WorkspaceSpec};
use http::{StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::router;
use crate::app::{AppState, Shared};
use crate::auth::Identity;
use crate::config::Args;
use crate::session::SessionKeys;

/// Where test requests come from: a browser on loopback, or a front proxy there.
const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);
/// The user of `--auth=none`, with the groups `--dev-groups` gives by default.
const DEV_USER: &str = "developer";

/// A proxy with `flags` (validated as at start) and the writer of its Workspace cache.
struct Proxy {
    state: AppState,
    workspaces: Writer<Workspace>,
}

impl Proxy {
    fn new(flags: &[&str]) -> Self {
        let args = Args::parse_from(std::iter::once("guildnet-proxy").chain(flags.iter().copied()));
        args.validate().unwrap();
        let (store, workspaces) = reflector::store();
        let sessions = SessionKeys::random(args.session_ttl);
        let state = Arc::new(Shared::new(offline_client(), &args, sessions, store));
        Self { state, workspaces }
    }

    /// Puts `workspace` in the Workspace cache and, with an `upstream`, its Service's
    /// EndpointSlice pointing there in the endpoint index: what the two watches do.
    async fn add(&mut self, workspace: Workspace, upstream: Option<&Upstream>) {
        let name = workspace.metadata.name.clone().unwrap();
        let namespace = workspace.metadata.namespace.clone().unwrap();
        let port_name = workspace.spec.primary_port_name();
        self.workspaces
            .apply_watcher_event(&Event::Apply(workspace));
        if let Some(upstream) = upstream {
            let slice = endpoint_slice(&namespace, &name, port_name, upstream.address);
            let events = futures::stream::iter([Ok(Event::Apply(slice))]);
            self.state.endpoints.clone().follow(events).await;
        }
    }

    /// The proxy's answer to `request` from [`PEER`].
    async fn send(&self, request: http::request::Builder) -> Response {
        router(self.state.clone())
            .layer(MockConnectInfo(PEER))
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }
}

/// A client for a Kubernetes API that these paths never call: the discard port on
/// loopback, where nothing listens, so a call that should not happen fails at once.
fn offline_client() -> kube::Client {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// Workspace `team/{name}` owned by `owner`, serving on its port `http`.
fn workspace(name: &str, owner: &str) -> Workspace {
    let mut ws = Workspace::new(
        name,
        WorkspaceSpec {
            image: "codercom/code-server:4.96.4".into(),
            ports: vec![WorkspacePort {
                name: Some("http".into()),
                container_port: 8080,
            }],
            ..WorkspaceSpec::default()
        },
    );
    ws.metadata.namespace = Some("team".into());
    ws.metadata.uid = Some(format!("uid-{name}"));
    ws.metadata.labels = Some(BTreeMap::from([(labels::OWNER.into(), owner_id(owner))]));
    ws
}

fn endpoint_slice(
    namespace: &str,
    service: &str,
    port_name: Option<String>,
    address: SocketAddr,
) -> EndpointSlice {
    EndpointSlice {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{service}-abcde")),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".into(),
                service.into(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![address.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }]),
        ports: Some(vec![EndpointPort {
            name: port_name,
            port: Some(i32::from(address.port())),
            ..Default::default()
        }]),
    }
}

/// A workspace's app on 127.0.0.1: it answers every request with what it received as
/// JSON (`path`, `headers`), except that `…/redirect` redirects to `…/login` and sets a
/// cookie for `…/`, as an app serving under that base path would.
struct Upstream {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let app = Router::new().fallback(move |request: Request| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move { answer(request) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

fn answer(request: Request) -> Response {
    let path = request.uri().path();
    if let Some(base) = path.strip_suffix("/redirect") {
        return (
            StatusCode::FOUND,
            [
                (header::LOCATION, format!("{base}/login")),
                (
                    header::SET_COOKIE,
                    format!("sid=1; Path={base}/; Domain=127.0.0.1"),
                ),
            ],
        )
            .into_response();
    }
    let mut headers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str())
            .or_default()
            .push(value.to_str().unwrap());
    }
    let path_and_query = request.uri().path_and_query().map(|pq| pq.as_str());
    axum::Json(json!({"path": path_and_query, "headers": headers})).into_response()
}

async fn json_body(response: Response) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// What the upstream received, from its echo.
struct Received(Value);

impl Received {
    async fn from(response: Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        Self(json_body(response).await)
    }

    fn path(&self) -> &str {
        self.0["path"].as_str().unwrap()
    }

    /// The values of header `name` (lowercase), none when it did not arrive.
    fn header(&self, name: &str) -> Vec<&str> {
        self.0["headers"][name]
            .as_array()
            .map(|values| values.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default()
    }
}

fn get(uri: &str) -> http::request::Builder {
    Request::get(uri).header(header::HOST, "guildnet.example.com")
}

fn identity(username: &str) -> Identity {
    Identity::new(
        username.into(),
        None,
        vec!["system:authenticated".into()],
        BTreeMap::new(),
    )
}

#[tokio::test]
async fn the_owner_reaches_the_workspace_without_its_prefix() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;

    let received = Received::from(proxy.send(get("/w/team/ide/api/files?path=/home")).await).await;
    assert_eq!(received.path(), "/api/files?path=/home");
    assert_eq!(received.header("x-forwarded-prefix"), ["/w/team/ide"]);
    assert_eq!(received.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(received.header("x-forwarded-proto"), ["http"]);
    assert_eq!(received.header("host"), ["guildnet.example.com"]);
}

#[tokio::test]
async fn keep_prefix_forwards_the_whole_path_and_leaves_its_redirects() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    let mut jupyter = workspace("jupyter", DEV_USER);
    jupyter.metadata.annotations = Some(BTreeMap::from([(
        labels::PROXY_KEEP_PREFIX.into(),
        "true".into(),
    )]));
    proxy.add(jupyter, Some(&upstream)).await;

    let received = Received::from(proxy.send(get("/w/team/jupyter/lab?x=1")).await).await;
    assert_eq!(received.path(), "/w/team/jupyter/lab?x=1");
    let redirect = proxy.send(get("/w/team/jupyter/redirect")).await;
    assert_eq!(redirect.status(), StatusCode::FOUND);
    assert_eq!(
        redirect.headers()[header::LOCATION],
        "/w/team/jupyter/login"
    );
    assert_eq!(
        redirect.headers()[header::SET_COOKIE],
        "sid=1; Path=/w/team/jupyter/; Secure"
    );
}

#[tokio::test]
async fn redirects_and_cookies_move_under_the_prefix() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;

    let redirect = proxy.send(get("/w/team/ide/redirect")).await;
    assert_eq!(redirect.status(), StatusCode::FOUND);
    assert_eq!(redirect.headers()[header::LOCATION], "/w/team/ide/login");
    assert_eq!(
        redirect.headers()[header::SET_COOKIE],
        "sid=1; Path=/w/team/ide/; Secure"
    );
}

#[tokio::test]
async fn a_bare_workspace_path_gets_its_trailing_slash() {
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), None).await;

    let response = proxy.send(get("/w/team/ide")).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(response.headers()[header::LOCATION], "/w/team/ide/");

    // The query is kept, not sent to the app as the path `/?x=1`.
    let response = proxy.send(get("/w/team/ide?x=1&y=%2F")).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()[header::LOCATION],
        "/w/team/ide/?x=1&y=%2F"
    );
}

#[tokio::test]
async fn the_session_cookie_never_reaches_the_workspace() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=token"]);
    proxy.add(workspace("ide", "alice"), Some(&upstream)).await;
    let session = proxy
        .state
        .auth
        .sessions
        .issue(&identity("alice"), SystemTime::now());

    let request = get("/w/team/ide/").header(
        header::COOKIE,
        format!("theme=dark; guildnet_session={session}"),
    );
    let received = Received::from(proxy.send(request).await).await;
    assert_eq!(received.header("cookie"), ["theme=dark"]);
}

#[tokio::test]
async fn an_authenticating_bearer_token_never_reaches_the_workspace() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=token"]);
    proxy.add(workspace("ide", "alice"), Some(&upstream)).await;
    proxy
        .state
        .auth
        .remember_token("alices-token", identity("alice"));

    let request = get("/w/team/ide/").header(header::AUTHORIZATION, "Bearer alices-token");
    let received = Received::from(proxy.send(request).await).await;
    assert!(received.header("authorization").is_empty());
}

#[tokio::test]
async fn identity_headers_of_a_trusted_proxy_never_reach_the_workspace() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=header", "--trusted-proxy=127.0.0.1/32"]);
    proxy.add(workspace("ide", "alice"), Some(&upstream)).await;

    let request = get("/w/team/ide/")
        .header("x-auth-request-user", "alice")
        .header("x-auth-request-groups", "devs")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https");
    let received = Received::from(proxy.send(request).await).await;
    assert!(received.header("x-auth-request-user").is_empty());
    assert!(received.header("x-auth-request-groups").is_empty());
    assert_eq!(
        received.header("x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(received.header("x-forwarded-proto"), ["https"]);
}

#[tokio::test]
async fn a_non_owner_without_an_rbac_grant_is_refused() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", "alice"), Some(&upstream)).await;
    // RBAC's answer, as the SubjectAccessReview would give it: no `get workspaces/proxy`.
    proxy
        .state
        .authz
        .remember(&identity(DEV_USER), "team", Some("ide"), false);

    let response = proxy.send(get("/w/team/ide/")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_body(response).await["error"]["reason"], "Forbidden");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn a_non_owner_with_an_rbac_grant_is_let_in() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", "alice"), Some(&upstream)).await;
    // RBAC's answer, as the SubjectAccessReview would give it: `get workspaces/proxy` on ide.
    proxy
        .state
        .authz
        .remember(&identity(DEV_USER), "team", Some("ide"), true);

    let received = Received::from(proxy.send(get("/w/team/ide/")).await).await;
    assert_eq!(received.path(), "/");
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn a_missing_workspace_is_refused_like_a_foreign_one() {
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", "alice"), None).await;
    let authz = &proxy.state.authz;
    authz.remember(&identity(DEV_USER), "team", Some("ide"), false);
    authz.remember(&identity(DEV_USER), "team", Some("ghost"), false);
    authz.remember(&identity(DEV_USER), "granted", Some("ghost"), true);

    let foreign = json_body(proxy.send(get("/w/team/ide/")).await).await;
    let missing = proxy.send(get("/w/team/ghost/")).await;
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    let missing = json_body(missing).await;
    assert_eq!(
        missing["error"]["message"],
        foreign["error"]["message"]
            .as_str()
            .unwrap()
            .replace("team/ide", "team/ghost")
    );
    // Only who may open it learns that it does not exist.
    let granted = proxy.send(get("/w/granted/ghost/")).await;
    assert_eq!(granted.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_unanswered_rbac_question_refuses() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", "alice"), Some(&upstream)).await;

    // Nothing seeded: the SubjectAccessReview goes to the closed port, fails, and the
    // proxy refuses rather than guess.
    let response = proxy.send(get("/w/team/ide/")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn callers_without_credentials_are_sent_to_log_in() {
    let mut proxy = Proxy::new(&["--auth=token"]);
    proxy.add(workspace("ide", "alice"), None).await;

    let browser = proxy
        .send(get("/w/team/ide/x?y=1").header(header::ACCEPT, "text/html"))
        .await;
    assert_eq!(browser.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        browser.headers()[header::LOCATION],
        "/login?next=%2Fw%2Fteam%2Fide%2Fx%3Fy%3D1"
    );
    let client = proxy.send(get("/w/team/ide/x")).await;
    assert_eq!(client.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_workspace_without_endpoints_is_not_running_yet() {
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), None).await;
    let mut suspended = workspace("paused", DEV_USER);
    suspended.spec.lifecycle = Some(Lifecycle {
        suspend: Some(true),
        ..Lifecycle::default()
    });
    proxy.add(suspended, None).await;

    let starting = proxy.send(get("/w/team/ide/")).await;
    assert_eq!(starting.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(starting.headers()[header::RETRY_AFTER], "5");
    let message = json_body(starting).await["error"]["message"].clone();
    assert_eq!(
        message,
        "workspace team/ide is not running yet (phase Pending); try again shortly"
    );
    let paused = json_body(proxy.send(get("/w/team/paused/")).await).await;
    assert!(
        paused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is suspended; resume it"),
        "{paused}"
    );
}

#[tokio::test]
async fn subdomain_mode_serves_the_workspace_at_its_root() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none", "--base-domain=ws.example.com"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;

    let request = Request::get("/api/files").header(header::HOST, "ide--team.ws.example.com:8443");
    let received = Received::from(proxy.send(request).await).await;
    assert_eq!(received.path(), "/api/files");
    assert!(received.header("x-forwarded-prefix").is_empty());
    // The dashboard's own host is not a workspace.
    let dashboard = proxy.send(get("/w/team/ide/")).await;
    assert_eq!(dashboard.status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let proxy = Proxy::new(&["--auth=none", "--max-header-bytes=8192"]);

    let response = proxy
        .send(get("/w/team/ide/").header("x-padding", "a".repeat(8192)))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(
        json_body(response).await["error"]["reason"],
        "HeadersTooLarge"
    );
}
