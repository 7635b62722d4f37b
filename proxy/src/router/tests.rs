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
use guildnet_api::GuildDatabase;
use guildnet_api::labels;
use guildnet_api::policy::owner::owner_id;
use guildnet_api::quota::Quota;
use guildnet_api::workspace::{Lifecycle, Workspace, WorkspacePort, WorkspaceSpec};
use http::{StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::router;
use crate::app::{AppState, Caches, Shared};
use crate::auth::{Identity, TokenReviewer, TokenReviews};
use crate::authz::{Access, AccessQuestion, AccessReviewer, SubjectAccessReviews};
use crate::config::Args;
use crate::session::SessionKeys;

/// Where test requests come from: a browser on loopback, or a front proxy there.
const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);
/// The user of `--auth=none`, with the groups `--dev-groups` gives by default.
const DEV_USER: &str = "developer";

/// A proxy with `flags` (validated as at start) and the writers of its Workspace, volume
/// claim and Quota caches.
struct Proxy {
    state: AppState,
    workspaces: Writer<Workspace>,
    claims: Writer<PersistentVolumeClaim>,
    quotas: Writer<Quota>,
    databases: Writer<GuildDatabase>,
    args: Args,
}

impl Proxy {
    fn new(flags: &[&str]) -> Self {
        let client = offline_client();
        let tokens = Arc::new(TokenReviews::new(client.clone()));
        let access = Arc::new(SubjectAccessReviews::new(client));
        Self::with_reviewers(flags, tokens, access)
    }

    /// A proxy whose TokenReviews `tokens` answers and whose SubjectAccessReviews `access`
    /// does, instead of an API server.
    fn with_reviewers(
        flags: &[&str],
        tokens: Arc<dyn TokenReviewer>,
        access: Arc<dyn AccessReviewer>,
    ) -> Self {
        Self::with_sessions(flags, tokens, access, |args| {
            SessionKeys::random(args.session_ttl)
        })
    }

    /// Like [`Proxy::with_reviewers`], with the session keys `sessions` makes from the flags.
    fn with_sessions(
        flags: &[&str],
        tokens: Arc<dyn TokenReviewer>,
        access: Arc<dyn AccessReviewer>,
        sessions: impl FnOnce(&Args) -> SessionKeys,
    ) -> Self {
        Self::with_client(flags, offline_client(), tokens, access, sessions)
    }

    /// A proxy whose own Kubernetes calls go through `client`.
    fn with_client(
        flags: &[&str],
        client: kube::Client,
        tokens: Arc<dyn TokenReviewer>,
        access: Arc<dyn AccessReviewer>,
        sessions: impl FnOnce(&Args) -> SessionKeys,
    ) -> Self {
        let args = Args::parse_from(std::iter::once("guildnet-proxy").chain(flags.iter().copied()));
        args.validate().unwrap();
        let (workspace_store, workspaces) = reflector::store();
        let (claim_store, claims) = reflector::store();
        let (quota_store, quotas) = reflector::store();
        let (database_store, databases) = reflector::store();
        let sessions = sessions(&args);
        let caches = Caches {
            workspaces: workspace_store,
            claims: claim_store,
            quotas: quota_store,
            databases: database_store,
        };
        let state = Arc::new(Shared::with_reviewers(
            client, &args, sessions, caches, tokens, access,
        ));
        Self {
            state,
            workspaces,
            claims,
            quotas,
            databases,
            args,
        }
    }

    /// Marks the Workspace, claim and Quota caches as listed once, as their watches do when
    /// they start; before anything is added (a list replaces what the cache held).
    fn sync_caches(&mut self) {
        self.workspaces.apply_watcher_event(&Event::Init);
        self.workspaces.apply_watcher_event(&Event::InitDone);
        self.claims.apply_watcher_event(&Event::Init);
        self.claims.apply_watcher_event(&Event::InitDone);
        self.quotas.apply_watcher_event(&Event::Init);
        self.quotas.apply_watcher_event(&Event::InitDone);
        self.databases.apply_watcher_event(&Event::Init);
        self.databases.apply_watcher_event(&Event::InitDone);
    }

    /// A proxy whose RBAC questions `access` answers (TokenReviews go nowhere).
    fn with_rbac(flags: &[&str], access: Arc<dyn AccessReviewer>) -> Self {
        let tokens = Arc::new(TokenReviews::new(offline_client()));
        Self::with_reviewers(flags, tokens, access)
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
        self.send_body(request, "").await
    }

    /// The proxy's answer to `request` with `body` from [`PEER`].
    async fn send_body(&self, request: http::request::Builder, body: &str) -> Response {
        self.send_from(PEER, request.body(Body::from(body.to_owned())).unwrap())
            .await
    }

    /// The proxy's answer to `request` from `peer`.
    async fn send_from(&self, peer: SocketAddr, request: Request) -> Response {
        router(self.state.clone())
            .layer(MockConnectInfo(peer))
            .oneshot(request)
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
/// cookie for `…/`, as an app serving under that base path would, and `…/sw.js` is a
/// service worker script sent with `Service-Worker-Allowed: /`.
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
            answer(request)
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

/// What the upstream app answers: it reads the whole body first, as an upload handler does,
/// and tells how many bytes came (`bodyBytes`).
async fn answer(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let body_bytes = body.to_bytes().len();
    let request = Request::from_parts(parts, ());
    let path = request.uri().path();
    if path.ends_with("/sw.js") {
        // A service worker script claiming the whole origin, as code-server's does.
        return (
            [
                (header::CONTENT_TYPE, "text/javascript"),
                (
                    header::HeaderName::from_static("service-worker-allowed"),
                    "/",
                ),
            ],
            "self.addEventListener('fetch', () => {});",
        )
            .into_response();
    }
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
    axum::Json(json!({"path": path_and_query, "headers": headers, "bodyBytes": body_bytes}))
        .into_response()
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

/// The proxy's own origin as the browser sees it in these tests: plain HTTP.
const OWN_ORIGIN: &str = "http://guildnet.example.com";

/// A browser's write to `uri` from a page at `origin` (None: no Origin header).
fn write(method: &str, uri: &str, origin: Option<&str>) -> http::request::Builder {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "guildnet.example.com")
        .header(header::CONTENT_TYPE, "application/json");
    match origin {
        Some(origin) => request.header(header::ORIGIN, origin),
        None => request,
    }
}

/// The login page's form post from a page at `origin`.
fn login_post(origin: Option<&str>) -> http::request::Builder {
    let request = Request::post("/login")
        .header(header::HOST, "guildnet.example.com")
        .header(header::ACCEPT, "text/html")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    match origin {
        Some(origin) => request.header(header::ORIGIN, origin),
        None => request,
    }
}

async fn text_body(response: Response) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
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
async fn a_workspace_cannot_allow_its_service_workers_beyond_its_prefix() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none", "--base-domain=ws.example.com"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;

    // Path mode: the dashboard's origin, so `/` would let a worker control `/login`.
    let script = proxy.send(get("/w/team/ide/static/sw.js")).await;
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(
        script.headers()["service-worker-allowed"],
        "/w/team/ide/",
        "{:?}",
        script.headers()
    );
    // Subdomain mode: the workspace's own origin, whose root is its own.
    let own_origin = Request::get("/static/sw.js").header(header::HOST, "ide--team.ws.example.com");
    let script = proxy.send(own_origin).await;
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(script.headers()["service-worker-allowed"], "/");
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
async fn a_placed_workspace_whose_cluster_is_out_of_reach_is_refused_at_once_saying_why() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    let mut placed = workspace("edge-ide", DEV_USER);
    let message = "cluster edge has not answered since 2026-12-03T10:00:00Z";
    placed.status = Some(
        serde_json::from_value(serde_json::json!({
            "cluster": "edge",
            "conditions": [{
                "type": "Degraded", "status": "True", "reason": "ClusterUnreachable",
                "message": message, "lastTransitionTime": "2026-12-03T10:00:30Z",
            }],
        }))
        .unwrap(),
    );
    // Its last-known endpoint is served by nothing that should be waited for.
    proxy.add(placed, Some(&upstream)).await;

    let refused = proxy.send(get("/w/team/edge-ide/")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "5");
    let error = json_body(refused).await["error"].clone();
    assert_eq!(error["reason"], "ClusterUnreachable");
    assert_eq!(error["message"], message);
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

/// A token-mode proxy where `alices-token` is alice's, as a TokenReview would say.
fn token_proxy(flags: &[&str]) -> Proxy {
    let flags: Vec<&str> = ["--auth=token"]
        .into_iter()
        .chain(flags.iter().copied())
        .collect();
    let proxy = Proxy::new(&flags);
    proxy
        .state
        .auth
        .remember_token("alices-token", identity("alice"));
    proxy
}

#[tokio::test]
async fn after_login_the_browser_stays_on_this_site() {
    let proxy = token_proxy(&[]);
    // The form bodies as a browser encodes them; the proxy decodes `next` once to read it.
    for next in [
        "/%09/evil.example",
        "%2F%09%2Fevil.example",
        "//evil.example",
        "/%5Cevil.example",
        "/%2F/evil.example",
        "/%2509/evil.example",
        "https://evil.example/",
        "https%3A%2F%2Fevil.example",
        "/x%0D%0ALocation:%20https://evil.example",
        "/x%0ASet-Cookie:%20a=b",
        "evil.example",
    ] {
        let response = proxy
            .send_body(
                login_post(Some(OWN_ORIGIN)),
                &format!("token=alices-token&next={next}"),
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(response.headers()[header::LOCATION], "/", "{next}");
        assert!(
            response.headers().contains_key(header::SET_COOKIE),
            "{next}"
        );
    }
    let home = proxy
        .send_body(
            login_post(Some(OWN_ORIGIN)),
            "token=alices-token&next=%2Fw%2Fteam%2Fide%2Fx%3Fy%3D1",
        )
        .await;
    assert_eq!(home.headers()[header::LOCATION], "/w/team/ide/x?y=1");
    // The login page carries the same safe `next` into its form.
    let page = proxy
        .send(get("/login?next=/x%0D%0AHeader:%20v").header(header::ACCEPT, "text/html"))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(text_body(page).await.contains(r#"name="next" value="/""#));
}

#[tokio::test]
async fn a_login_from_another_site_is_refused() {
    let proxy = token_proxy(&[]);
    let body = "token=alices-token&next=%2F";
    let cases = [
        (Some("https://evil.example"), None),
        (None, None),
        (None, Some("https://evil.example/login")),
        // The right host, the wrong scheme: the proxy is served over plain HTTP here.
        (Some("https://guildnet.example.com"), None),
    ];
    for (origin, referer) in cases {
        let mut request = login_post(origin);
        if let Some(referer) = referer {
            request = request.header(header::REFERER, referer);
        }
        let response = proxy.send_body(request, body).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{origin:?} {referer:?}"
        );
        assert!(!response.headers().contains_key(header::SET_COOKIE));
        assert!(text_body(response).await.contains("CrossOriginRefused"));
    }
    let own = proxy.send_body(login_post(Some(OWN_ORIGIN)), body).await;
    assert_eq!(own.status(), StatusCode::SEE_OTHER);
    assert!(own.headers().contains_key(header::SET_COOKIE));
    // No Origin, but the login page's own Referer.
    let referred = login_post(None).header(header::REFERER, format!("{OWN_ORIGIN}/login?next=%2F"));
    assert_eq!(
        proxy.send_body(referred, body).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn writes_must_come_from_the_scheme_the_browser_used() {
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), None).await;
    let https_page = Some("https://guildnet.example.com");

    let response = proxy
        .send(write("DELETE", "/api/workspaces/team/ide", https_page))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json_body(response).await["error"]["reason"],
        "CrossOriginRefused"
    );
    let logout = proxy.send(write("POST", "/logout", https_page)).await;
    assert_eq!(logout.status(), StatusCode::FORBIDDEN);

    // Behind a trusted TLS-terminating proxy, its X-Forwarded-Proto says https.
    let proxy = token_proxy(&["--trusted-proxy=127.0.0.1/32"]);
    let request = login_post(https_page).header("x-forwarded-proto", "https");
    let response = proxy
        .send_body(request, "token=alices-token&next=%2F")
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let request = login_post(Some(OWN_ORIGIN)).header("x-forwarded-proto", "https");
    let response = proxy
        .send_body(request, "token=alices-token&next=%2F")
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'self'",
    ),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
];

#[tokio::test]
async fn the_dashboard_is_served_with_security_headers() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;
    let login = token_proxy(&[]);

    let responses = [
        ("/", proxy.send(get("/")).await),
        ("/assets/app.js", proxy.send(get("/assets/app.js")).await),
        (
            "/assets/style.css",
            proxy.send(get("/assets/style.css")).await,
        ),
        ("/api/me", proxy.send(get("/api/me")).await),
        ("/api/workspaces", proxy.send(get("/api/workspaces")).await),
        ("/api/events", proxy.send(get("/api/events")).await),
        ("/healthz", proxy.send(get("/healthz")).await),
        ("/favicon.ico", proxy.send(get("/favicon.ico")).await),
        ("/login", login.send(get("/login")).await),
        ("/api/me (401)", login.send(get("/api/me")).await),
        (
            "DELETE (403)",
            proxy
                .send(write("DELETE", "/api/workspaces/team/ide", None))
                .await,
        ),
    ];
    for (what, response) in &responses {
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(
                response.headers().get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{what}: {name}"
            );
        }
    }
    // A workspace's own answer keeps the app's headers: the proxy adds none of these.
    let forwarded = proxy.send(get("/w/team/ide/")).await;
    assert_eq!(forwarded.status(), StatusCode::OK);
    for (name, _) in SECURITY_HEADERS {
        assert!(!forwarded.headers().contains_key(name), "{name}");
    }
}

#[tokio::test]
async fn two_workspaces_never_share_a_host() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none", "--base-domain=ws.example.com"]);
    // `a--b` in `c` and `a` in `b--c` would both be a--b--c.ws.example.com.
    for (namespace, name) in [("c", "a--b"), ("b--c", "a")] {
        let mut ws = workspace(name, DEV_USER);
        ws.metadata.namespace = Some(namespace.into());
        proxy.add(ws, Some(&upstream)).await;
    }

    let request = Request::get("/").header(header::HOST, "a--b--c.ws.example.com");
    let response = proxy.send(request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let message = json_body(response).await["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("more than one `--`"),
        "{message}"
    );
    assert_eq!(upstream.requests(), 0);
    // Both stay reachable in path mode.
    for path in ["/w/c/a--b/", "/w/b--c/a/"] {
        assert_eq!(
            proxy.send(get(path)).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn api_paths_must_name_workspaces_by_dns_labels() {
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), None).await;
    let own = Some(OWN_ORIGIN);

    let cases = [
        // `ide#` would delete `ide`; `?` would add query parameters to the API call.
        (write("DELETE", "/api/workspaces/team/ide%23", own), "name"),
        (
            write("DELETE", "/api/workspaces/team/ide%3FdryRun=All", own),
            "name",
        ),
        (
            write("POST", "/api/workspaces/team%3Fx=1/ide/suspend", own),
            "namespace",
        ),
        (
            write("POST", "/api/workspaces/team/ide%2F..%2Fother/resume", own),
            "name",
        ),
        (
            get("/api/workspaces/team/ide%3FlabelSelector=x/logs"),
            "name",
        ),
        (get("/api/workspaces/Team/ide/logs"), "namespace"),
    ];
    for (request, parameter) in cases {
        let response = proxy.send(request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{parameter}");
        let message = json_body(response).await["error"]["message"].clone();
        assert!(
            message
                .as_str()
                .unwrap()
                .starts_with(&format!("path parameter {parameter} ")),
            "{message}"
        );
    }
}

/// A Kubernetes Event (resourceVersion `id`) about the Workspace `team/{name}` with `uid`.
fn workspace_event(id: u64, name: &str, uid: &str) -> k8s_openapi::api::core::v1::Event {
    k8s_openapi::api::core::v1::Event {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{name}.{id}")),
            namespace: Some("team".into()),
            resource_version: Some(id.to_string()),
            ..Default::default()
        },
        involved_object: k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("Workspace".into()),
            namespace: Some("team".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        reason: Some("Ready".into()),
        type_: Some("Normal".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn events_of_a_deleted_workspace_are_not_shown_to_the_next_owner_of_its_name() {
    let mut proxy = Proxy::new(&["--auth=none"]);
    // The developer's `ide` (uid-ide) reuses the name of alice's deleted one.
    proxy.add(workspace("ide", DEV_USER), None).await;
    proxy
        .state
        .authz
        .remember(&identity(DEV_USER), "team", None, false);
    proxy
        .state
        .events
        .apply(&workspace_event(5, "ide", "uid-of-alices-deleted-ide"));
    proxy
        .state
        .events
        .apply(&workspace_event(6, "ide", "uid-ide"));

    let listed = json_body(proxy.send(get("/api/events")).await).await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["6"], "{listed}");

    // Once that name goes to yet another workspace, the developer's events go with theirs.
    let mut successor = workspace("ide", DEV_USER);
    successor.metadata.uid = Some("uid-of-the-next-ide".into());
    proxy.add(successor, None).await;
    let listed = json_body(proxy.send(get("/api/events")).await).await;
    assert_eq!(listed["items"], json!([]), "{listed}");

    // Whoever may open every workspace of the namespace still sees the old one's events.
    proxy
        .state
        .authz
        .remember(&identity(DEV_USER), "team", None, true);
    let listed = json_body(proxy.send(get("/api/events")).await).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
}

#[tokio::test]
async fn forwarded_and_x_real_ip_from_a_client_never_reach_the_workspace() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;

    let request = get("/w/team/ide/")
        .header(
            header::FORWARDED,
            "for=10.9.9.9;host=evil.example;proto=https",
        )
        .header("x-real-ip", "10.9.9.9");
    let received = Received::from(proxy.send(request).await).await;
    assert!(received.header("forwarded").is_empty());
    assert!(received.header("x-real-ip").is_empty());
    assert_eq!(received.header("x-forwarded-for"), ["127.0.0.1"]);

    // A trusted front proxy's are passed on.
    let mut trusting = Proxy::new(&["--auth=none", "--trusted-proxy=127.0.0.1/32"]);
    trusting
        .add(workspace("ide", DEV_USER), Some(&upstream))
        .await;
    let request = get("/w/team/ide/")
        .header(header::FORWARDED, "for=203.0.113.9")
        .header("x-real-ip", "203.0.113.9");
    let received = Received::from(trusting.send(request).await).await;
    assert_eq!(received.header("forwarded"), ["for=203.0.113.9"]);
    assert_eq!(received.header("x-real-ip"), ["203.0.113.9"]);
}

#[tokio::test]
async fn a_request_with_two_host_headers_is_refused() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none", "--base-domain=ws.example.com"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;

    for hosts in [
        ["guildnet.example.com", "ide--team.ws.example.com"],
        ["ide--team.ws.example.com", "guildnet.example.com"],
        ["guildnet.example.com", "guildnet.example.com"],
    ] {
        let request = Request::get("/w/team/ide/")
            .header(header::HOST, hosts[0])
            .header(header::HOST, hosts[1]);
        let response = proxy.send(request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{hosts:?}");
        assert_eq!(
            json_body(response).await["error"]["reason"],
            "DuplicateHost"
        );
    }
    assert_eq!(upstream.requests(), 0);
}

/// RBAC answered by the test in place of SubjectAccessReviews: `get workspaces/proxy` on the
/// names in `allowed` (`*`: every name; the namespace-wide question is refused), each answer
/// after `delay` (virtual time in paused tests), and never for the names in `held`. It
/// counts the reviews and how many were under way at once.
#[derive(Default)]
struct Rbac {
    allowed: Vec<String>,
    delay: std::time::Duration,
    held: Vec<String>,
    reviews: AtomicUsize,
    under_way: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl Rbac {
    fn allowing(names: &[&str]) -> Self {
        Self {
            allowed: names.iter().map(|n| (*n).to_owned()).collect(),
            ..Self::default()
        }
    }

    fn reviews(&self) -> usize {
        self.reviews.load(Ordering::SeqCst)
    }

    fn most_at_once(&self) -> usize {
        self.most_at_once.load(Ordering::SeqCst)
    }
}

impl AccessReviewer for Rbac {
    fn review<'a>(
        &'a self,
        question: AccessQuestion<'a>,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            self.reviews.fetch_add(1, Ordering::SeqCst);
            let now = self.under_way.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if question
                .name
                .is_some_and(|name| self.held.iter().any(|h| h == name))
            {
                std::future::pending::<()>().await;
            }
            self.under_way.fetch_sub(1, Ordering::SeqCst);
            Ok(question
                .name
                .is_some_and(|name| self.allowed.iter().any(|a| a == name || a == "*")))
        })
    }
}

/// TokenReviews answered by the test: `alices-token` is alice's, every other token is
/// refused; it counts the reviews.
#[derive(Default)]
struct Tokens {
    reviews: AtomicUsize,
}

impl TokenReviewer for Tokens {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<Option<Identity>>> {
        self.reviews.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok((token == "alices-token").then(|| identity("alice"))) })
    }
}

/// `team/ide-{i}` for `i` in `0..count`, owned by alice, and `per_workspace` events about
/// each, interleaved: ids 1, 2, … going round the workspaces.
async fn workspaces_with_events(proxy: &mut Proxy, count: usize, per_workspace: usize) {
    for i in 0..count {
        proxy
            .add(workspace(&format!("ide-{i}"), "alice"), None)
            .await;
    }
    let mut id = 0;
    for _ in 0..per_workspace {
        for i in 0..count {
            id += 1;
            let name = format!("ide-{i}");
            proxy
                .state
                .events
                .apply(&workspace_event(id, &name, &format!("uid-{name}")));
        }
    }
}

/// The names of the workspaces `/api/events` lists, in order.
fn listed_names(listed: &Value) -> Vec<String> {
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_owned())
        .collect()
}

/// An SSE response read event by event, keep-alive comments skipped.
struct SseEvents {
    body: Body,
    pending: String,
}

impl SseEvents {
    fn of(response: Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        Self {
            body: response.into_body(),
            pending: String::new(),
        }
    }

    /// The next event's data, as JSON.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let frame: String = self.pending.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                    return serde_json::from_str(data.trim()).unwrap();
                }
                continue;
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("the stream goes on")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.pending.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn event_visibility_is_decided_once_per_workspace_per_request() {
    // No API server: the reviews are the test's, counted; the authorizer remembers nothing
    // (`--auth-cache-ttl=0s`), so every review a request needs is made and seen.
    let rbac = Arc::new(Rbac::allowing(&["ide-2"]));
    let mut proxy = Proxy::with_rbac(&["--auth=none", "--auth-cache-ttl=0s"], rbac.clone());
    workspaces_with_events(&mut proxy, 3, 10).await;

    let listed = json_body(proxy.send(get("/api/events")).await).await;
    assert_eq!(listed_names(&listed), vec!["ide-2"; 10], "{listed}");
    assert_eq!(rbac.reviews(), 3, "one review per workspace, not per event");

    let mut stream = SseEvents::of(proxy.send(get("/sse/events")).await);
    for _ in 0..10 {
        assert_eq!(stream.next().await["name"], "ide-2");
    }
    // The last event of the backlog was ide-2's: by then every workspace was decided.
    assert_eq!(rbac.reviews(), 3 + 3);
}

#[tokio::test(start_paused = true)]
async fn event_visibility_reviews_are_made_concurrently_sixteen_at_a_time() {
    // No API server: each review answers after a second of virtual time, so reviews made
    // one after another are never under way together.
    let rbac = Arc::new(Rbac {
        delay: std::time::Duration::from_secs(1),
        ..Rbac::allowing(&["*"])
    });
    let mut proxy = Proxy::with_rbac(&["--auth=none", "--auth-cache-ttl=0s"], rbac.clone());
    workspaces_with_events(&mut proxy, 40, 2).await;

    let listed = json_body(proxy.send(get("/api/events")).await).await;
    assert_eq!(listed_names(&listed).len(), 80);
    assert_eq!(rbac.reviews(), 40);
    assert_eq!(rbac.most_at_once(), 16);

    rbac.most_at_once.store(0, Ordering::SeqCst);
    let mut stream = SseEvents::of(proxy.send(get("/sse/events")).await);
    for i in 0..80 {
        assert_eq!(stream.next().await["name"], format!("ide-{}", i % 40));
    }
    assert_eq!(rbac.reviews(), 80);
    assert_eq!(rbac.most_at_once(), 16);
}

#[tokio::test(start_paused = true)]
async fn the_first_event_streams_before_the_backlog_is_decided() {
    // No API server: ide-1's review never answers; ide-0's first event still arrives.
    let rbac = Arc::new(Rbac {
        held: vec!["ide-1".into()],
        ..Rbac::allowing(&["ide-0"])
    });
    let mut proxy = Proxy::with_rbac(&["--auth=none"], rbac.clone());
    workspaces_with_events(&mut proxy, 2, 100).await;

    let mut stream = SseEvents::of(proxy.send(get("/sse/events")).await);
    let first = tokio::time::timeout(std::time::Duration::from_secs(3600), stream.next())
        .await
        .expect("the first event waited for the whole backlog's decisions");
    assert_eq!(first["id"], "1");
    assert_eq!(first["name"], "ide-0");
}

/// A request body sent by the test chunk by chunk, as a client trickling it would: it ends
/// when the sender is dropped.
fn trickled_body() -> (
    Body,
    tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    (Body::from_stream(chunks), sender)
}

/// Sends `chunk` and waits until the proxy has taken it (the channel holds one).
async fn trickle(
    sender: &tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>,
    chunk: &'static str,
) {
    sender
        .send(Ok(axum::body::Bytes::from_static(chunk.as_bytes())))
        .await
        .unwrap();
    // The next send fits only once the reader took this one; reserve, don't send.
    drop(sender.reserve().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_body_the_proxy_reads_must_arrive_within_the_body_read_timeout() {
    // No real server: the trickling client is a body stream that stops after one chunk.
    let proxy = token_proxy(&["--body-read-timeout=10s"]);
    let session = proxy
        .state
        .auth
        .sessions
        .issue(&identity("alice"), SystemTime::now());
    let requests = [
        login_post(Some(OWN_ORIGIN)),
        write("POST", "/api/workspaces", Some(OWN_ORIGIN))
            .header(header::COOKIE, format!("guildnet_session={session}")),
    ];
    for request in requests {
        let (body, sender) = trickled_body();
        let answer = proxy.send_from(PEER, request.body(body).unwrap());
        let answer = std::pin::pin!(answer);
        let trickling = async {
            trickle(&sender, "token=alices").await;
            std::future::pending::<()>().await;
        };
        let response = tokio::time::timeout(std::time::Duration::from_secs(3600), async {
            tokio::select! {
                response = answer => response,
                () = trickling => unreachable!(),
            }
        })
        .await
        .expect("the proxy waited for a trickled body without end");
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }
}

#[tokio::test]
async fn unauthenticated_bodies_beyond_the_cap_are_refused_with_retry_after() {
    // No real server: two logins whose bodies never finish hold the only two places.
    let proxy = Arc::new(token_proxy(&["--max-unauthenticated-bodies=2"]));
    let mut trickling = Vec::new();
    for _ in 0..2 {
        let (body, sender) = trickled_body();
        let request = login_post(Some(OWN_ORIGIN)).body(body).unwrap();
        let proxy = proxy.clone();
        let answer = tokio::spawn(async move { proxy.send_from(PEER, request).await });
        trickle(&sender, "token=").await;
        trickling.push((answer, sender));
    }
    let body = "token=alices-token&next=%2F";
    let refused = proxy.send_body(login_post(Some(OWN_ORIGIN)), body).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
    assert!(text_body(refused).await.contains("TooManyUnauthenticated"));

    // A caller with a session is not counted: its write goes on (to the offline API).
    let session = proxy
        .state
        .auth
        .sessions
        .issue(&identity("alice"), SystemTime::now());
    let launch = write("POST", "/api/workspaces", Some(OWN_ORIGIN))
        .header(header::COOKIE, format!("guildnet_session={session}"));
    let launched = proxy
        .send_body(launch, r#"{"name": "ide", "image": "nginx"}"#)
        .await;
    assert_eq!(
        json_body(launched).await["error"]["reason"],
        "KubernetesUnavailable"
    );

    // Once the trickling bodies end, logins are read again.
    for (answer, sender) in trickling {
        sender
            .send(Ok(axum::body::Bytes::from_static(b"x")))
            .await
            .unwrap();
        drop(sender);
        assert_eq!(answer.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let logged_in = proxy.send_body(login_post(Some(OWN_ORIGIN)), body).await;
    assert_eq!(logged_in.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn uploads_to_a_workspace_stream_past_the_body_read_timeout() {
    // The local upstream is a real server on loopback; the client body is a stream that
    // pauses between its chunks for much longer than the proxy's own body deadline.
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none", "--body-read-timeout=1ms"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;

    let chunks = futures::stream::unfold(0, |sent| async move {
        if sent == 3 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        Some((
            Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'x'; 1000])),
            sent + 1,
        ))
    });
    let request = Request::post("/w/team/ide/upload")
        .header(header::HOST, "guildnet.example.com")
        .body(Body::from_stream(chunks))
        .unwrap();
    let received = Received::from(proxy.send_from(PEER, request).await).await;
    assert_eq!(received.0["bodyBytes"], 3000);
    // The proxy's own routes do keep the deadline.
    let (body, _sender) = trickled_body();
    let login = proxy.send_from(PEER, login_post(Some(OWN_ORIGIN)).body(body).unwrap());
    // A guard against a hang, not a measure.
    let login = tokio::time::timeout(std::time::Duration::from_secs(20), login)
        .await
        .expect("the proxy waited for a login body without end");
    assert_eq!(login.status(), StatusCode::REQUEST_TIMEOUT);
}

#[tokio::test]
async fn no_bearer_token_reaches_the_workspace_unless_forward_authorization_is_set() {
    let upstream = Upstream::start().await;
    let sent = |session: &str, authorization: &str| {
        get("/w/team/ide/")
            .header(header::COOKIE, format!("guildnet_session={session}"))
            .header(header::AUTHORIZATION, authorization.to_owned())
    };

    // Logged in by session cookie, a bearer token besides: it is not passed on.
    let mut proxy = token_proxy(&[]);
    proxy.add(workspace("ide", "alice"), Some(&upstream)).await;
    let session = proxy
        .state
        .auth
        .sessions
        .issue(&identity("alice"), SystemTime::now());
    for authorization in ["Bearer apps-own-token", "Bearer alices-token", "bearer x"] {
        let received = Received::from(proxy.send(sent(&session, authorization)).await).await;
        assert!(
            received.header("authorization").is_empty(),
            "{authorization}"
        );
    }
    // Other schemes are the app's.
    let received = Received::from(proxy.send(sent(&session, "Basic YTpi")).await).await;
    assert_eq!(received.header("authorization"), ["Basic YTpi"]);

    // With --forward-authorization the app's own token passes, a Kubernetes token never.
    let mut forwarding = token_proxy(&["--forward-authorization"]);
    forwarding
        .add(workspace("ide", "alice"), Some(&upstream))
        .await;
    let session = forwarding
        .state
        .auth
        .sessions
        .issue(&identity("alice"), SystemTime::now());
    let apps_own = sent(&session, "Bearer apps-own-token");
    let received = Received::from(forwarding.send(apps_own).await).await;
    assert_eq!(received.header("authorization"), ["Bearer apps-own-token"]);
    let known = sent(&session, "Bearer alices-token");
    let received = Received::from(forwarding.send(known).await).await;
    assert!(received.header("authorization").is_empty());
    let authenticating = get("/w/team/ide/").header(header::AUTHORIZATION, "Bearer alices-token");
    let received = Received::from(forwarding.send(authenticating).await).await;
    assert!(received.header("authorization").is_empty());
}

#[tokio::test]
async fn a_broken_client_body_is_the_clients_error_not_the_workspaces() {
    // No real server: the client's body fails as hyper's does on a bad chunk size or an
    // early end (the test over a real connection is below).
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;

    let chunks = futures::stream::iter([
        Ok(axum::body::Bytes::from_static(b"part of it")),
        Err(std::io::Error::other("invalid chunk size line")),
    ]);
    let request = Request::post("/w/team/ide/upload")
        .header(header::HOST, "guildnet.example.com")
        .body(Body::from_stream(chunks))
        .unwrap();
    let response = proxy.send_from(PEER, request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[header::CONNECTION], "close");
    let error = json_body(response).await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the request body could not be read"),
        "{error}"
    );
}

#[tokio::test]
async fn an_http_1_1_request_without_host_is_refused() {
    let proxy = Proxy::new(&["--auth=none"]);
    let response = proxy
        .send(Request::get("/healthz").version(http::Version::HTTP_11))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(response).await["error"]["reason"], "MissingHost");
    // HTTP/1.0 had no Host.
    let response = proxy
        .send(Request::get("/healthz").version(http::Version::HTTP_10))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// What the proxy at `address` answers to `request` sent as raw bytes on a real connection
/// (then, with `end_sending`, the client's side shut): the status line of its answer, or None
/// when it closed the connection without one.
async fn raw_exchange(address: SocketAddr, request: &[u8], end_sending: bool) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    if end_sending {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let head = async {
        let mut buffer = [0; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    };
    // A guard against a hang, not a measure: a broken proxy would never answer.
    tokio::time::timeout(std::time::Duration::from_secs(20), head)
        .await
        .expect("the proxy neither answered nor closed the connection");
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn client_framing_errors_are_400_on_a_real_connection() {
    // A real server: hyper parses what a client sends over TCP, as in production.
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::new(&["--auth=none"]);
    proxy.add(workspace("ide", DEV_USER), Some(&upstream)).await;
    let address = crate::server::serve_on_loopback(router(proxy.state.clone()), &proxy.args);

    let no_host = raw_exchange(address, b"GET /healthz HTTP/1.1\r\n\r\n", false).await;
    assert_eq!(no_host.as_deref(), Some("HTTP/1.1 400 Bad Request"));
    let old_client = raw_exchange(address, b"GET /healthz HTTP/1.0\r\n\r\n", false).await;
    assert_eq!(old_client.as_deref(), Some("HTTP/1.0 200 OK"));

    let head = "POST /w/team/ide/upload HTTP/1.1\r\nHost: guildnet.example.com\r\n";
    let bad_chunk_size =
        format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    let status = raw_exchange(address, bad_chunk_size.as_bytes(), false).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 400 Bad Request"));
    // The proxy's own routes read their bodies themselves: the same framing error is 400.
    let login = "POST /login HTTP/1.1\r\nHost: guildnet.example.com\r\n\
        Origin: http://guildnet.example.com\r\n\
        Content-Type: application/x-www-form-urlencoded\r\n";
    let bad_login = format!("{login}Transfer-Encoding: chunked\r\n\r\nzz\r\ntoken=x\r\n0\r\n\r\n");
    let status = raw_exchange(address, bad_login.as_bytes(), false).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 400 Bad Request"));
    // A body shorter than its Content-Length, the client's side then shut (more below).
    let too_short = format!("{head}Content-Length: 100\r\n\r\nonly ten b");
    let status = raw_exchange(address, too_short.as_bytes(), true).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 400 Bad Request"));
    // The same request, framed right, reaches the workspace.
    let whole = format!("{head}Content-Length: 10\r\n\r\nonly ten b");
    let status = raw_exchange(address, whole.as_bytes(), false).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
}

/// Everything the proxy at `address` answers on one connection to a client that sends
/// `head`, then `body`, then half-closes its side (`shutdown(Write)`), reading on until the
/// proxy closes.
async fn half_closed_exchange(address: SocketAddr, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    // A guard against a hang, not a measure.
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the proxy neither answered nor closed the connection")
    .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_that_ends_before_its_content_length_is_a_400_saying_so_never_a_502() {
    // A real server: the client stops sending after 10 of 100 bytes and half-closes.
    let upstream = Upstream::start().await;
    let mut proxy = token_proxy(&[]);
    proxy.add(workspace("ide", "alice"), Some(&upstream)).await;
    let cookie = format!(
        "Cookie: guildnet_session={}\r\n",
        session_of(&proxy, "alice")
    );
    let address = crate::server::serve_on_loopback(router(proxy.state.clone()), &proxy.args);

    // To a workspace, to the dashboard API and to the login form (read by the proxy, the
    // last one for a caller it does not know).
    for (path, cookie) in [
        ("/w/team/ide/upload", cookie.as_str()),
        ("/api/workspaces", cookie.as_str()),
        ("/login", ""),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: guildnet.example.com\r\n\
             Origin: http://guildnet.example.com\r\n{cookie}\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        );
        let answer = half_closed_exchange(address, &head, b"only ten b").await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{path}: {answer}"
        );
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        let error: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            error["error"]["reason"], "IncompleteBody",
            "{path}: {error}"
        );
        assert_eq!(
            error["error"]["message"],
            "the request body could not be read: the client stopped sending before the 100 \
             bytes its Content-Length announced",
            "{path}"
        );
    }
}

/// How the racing upstream ends the connection it stops answering on.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// A plain close (FIN), as an app's keep-alive timeout does.
    Close,
    /// A reset (RST), as a process that dies or a socket closed with unread data does.
    Reset,
}

/// A workspace's app on a raw TCP listener, scripted for the keep-alive race. On its first
/// connection it answers `answered` requests (0 or 1), then reads the next request's head and
/// ends the connection (`ending`) without a byte of an answer; every later connection
/// answers its first request with `answered on connection <n>` and closes. Each request
/// line is recorded with the number of the connection it came on, in order.
struct RacingUpstream {
    address: SocketAddr,
    heads: Arc<std::sync::Mutex<Vec<(usize, String)>>>,
}

impl RacingUpstream {
    async fn start(answered: usize, ending: Ending) -> Self {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = heads.clone();
        tokio::spawn(async move {
            for connection in 0.. {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let answers = if connection == 0 { answered } else { 1 };
                    for _ in 0..answers {
                        let Some(line) = read_head(&mut stream, &mut buffer).await else {
                            return;
                        };
                        record.lock().unwrap().push((connection, line));
                        let body = format!("answered on connection {connection}");
                        let close = if connection == 0 {
                            ""
                        } else {
                            "Connection: close\r\n"
                        };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{close}\
                             Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        stream.write_all(answer.as_bytes()).await.unwrap();
                    }
                    if connection == 0 {
                        // The next request's head, never answered.
                        if let Some(line) = read_head(&mut stream, &mut buffer).await {
                            record.lock().unwrap().push((connection, line));
                        }
                        if let Ending::Reset = ending {
                            socket2::SockRef::from(&stream)
                                .set_linger(Some(std::time::Duration::ZERO))
                                .unwrap();
                        }
                    }
                    drop(stream);
                });
            }
        });
        Self { address, heads }
    }

    /// The request lines received so far, with the connection each came on.
    fn heads(&self) -> Vec<(usize, String)> {
        self.heads.lock().unwrap().clone()
    }
}

/// Reads one request head from `stream` (what is left of earlier reads in `buffer`) and
/// returns its request line; None when the connection ends first.
async fn read_head(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buffer.drain(..end + 4).collect();
            return String::from_utf8_lossy(&head)
                .lines()
                .next()
                .map(str::to_owned);
        }
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A browser's request to the proxy at `address`, on a connection of its own: the status
/// and body of the answer.
async fn browser_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &'static str,
) -> (StatusCode, String) {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "guildnet.example.com")
            .body(http_body_util::Full::new(axum::body::Bytes::from_static(
                body.as_bytes(),
            )))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    // A guard against a hang, not a measure.
    tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
        .await
        .expect("the proxy did not answer")
}

/// A proxy on a real connection (its serving loop on this test's thread, so both requests
/// share the thread's pool of workspace connections) for a workspace served by `upstream`.
async fn proxy_for_racing(upstream: &RacingUpstream) -> SocketAddr {
    let mut proxy = Proxy::new(&["--auth=none"]);
    let app = Upstream {
        address: upstream.address,
        requests: Arc::default(),
    };
    proxy.add(workspace("ide", DEV_USER), Some(&app)).await;
    crate::server::serve_on_loopback(router(proxy.state.clone()), &proxy.args)
}

#[tokio::test]
async fn a_reused_connection_closed_before_answering_is_retried_on_a_new_one() {
    for ending in [Ending::Close, Ending::Reset] {
        let upstream = RacingUpstream::start(1, ending).await;
        let address = proxy_for_racing(&upstream).await;

        let first = browser_request(address, "GET", "/w/team/ide/first", "").await;
        assert_eq!(
            first,
            (StatusCode::OK, "answered on connection 0".to_owned()),
            "{ending:?}"
        );
        // Sent on the pooled connection, which the app ends after reading the head.
        let second = browser_request(address, "GET", "/w/team/ide/second", "").await;
        assert_eq!(
            second,
            (StatusCode::OK, "answered on connection 1".to_owned()),
            "{ending:?}: the retry's answer, not a 502"
        );
        assert_eq!(
            upstream.heads(),
            [
                (0, "GET /first HTTP/1.1".to_owned()),
                (0, "GET /second HTTP/1.1".to_owned()),
                (1, "GET /second HTTP/1.1".to_owned()),
            ],
            "{ending:?}: the second request went out on the reused connection, then once more \
             on a new one"
        );
    }
}

#[tokio::test]
async fn requests_that_cannot_be_repeated_are_not_retried() {
    // A body (consumed by the first attempt), a method that is not idempotent (the app may
    // have acted on it), and a new connection (not the keep-alive race): each a 502, and the
    // app sees the request once.
    for (method, body, reused) in [
        ("POST", "hello, workspace", true),
        ("PUT", "hello, workspace", true),
        ("POST", "", true),
        ("GET", "", false),
    ] {
        let upstream = RacingUpstream::start(usize::from(reused), Ending::Close).await;
        let address = proxy_for_racing(&upstream).await;
        let mut expected = Vec::new();
        if reused {
            let first = browser_request(address, "GET", "/w/team/ide/first", "").await;
            assert_eq!(first.0, StatusCode::OK);
            expected.push((0, "GET /first HTTP/1.1".to_owned()));
        }

        let (status, answer) = browser_request(address, method, "/w/team/ide/act", body).await;
        assert_eq!(
            status,
            StatusCode::BAD_GATEWAY,
            "{method} {body:?}: {answer}"
        );
        let error: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(error["error"]["reason"], "UpstreamUnavailable");
        // Answered only after the attempt ended: a retry would have been made by now.
        expected.push((0, format!("{method} /act HTTP/1.1")));
        assert_eq!(
            upstream.heads(),
            expected,
            "{method} {body:?} reused={reused}"
        );
    }
}

/// Whether the proxy closed `stream` without a word: its next read ends (or resets).
async fn closed_unanswered(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0; 64];
    // A guard against a hang, not a measure: a connection being served waits for a head.
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut buffer))
        .await
        .expect("the connection was neither served nor closed");
    matches!(read, Ok(0) | Err(_))
}

/// Sends `request` on `stream` and reads the status line of the answer.
async fn status_on(stream: &mut tokio::net::TcpStream, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut buffer))
                .await
                .expect("no answer");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn connections_that_have_not_authenticated_are_capped() {
    use tokio::net::TcpStream;
    // A real server: two connections that never send a head hold both places.
    let proxy = token_proxy(&["--max-unauthenticated-connections=2"]);
    let address = crate::server::serve_on_loopback(router(proxy.state.clone()), &proxy.args);
    let session = session_of(&proxy, "alice");
    let health = "GET /healthz HTTP/1.1\r\nHost: guildnet.example.com\r\n\r\n";
    let me = format!(
        "GET /api/me HTTP/1.1\r\nHost: guildnet.example.com\r\n\
         Cookie: guildnet_session={session}\r\n\r\n"
    );

    let mut authenticating = TcpStream::connect(address).await.unwrap();
    let idle = TcpStream::connect(address).await.unwrap();
    let mut refused = TcpStream::connect(address).await.unwrap();
    assert!(closed_unanswered(&mut refused).await);

    // Requests without credentials keep a connection counted; its first authenticated one
    // frees its place, and what it sends afterwards is served however long it stays.
    assert_eq!(
        status_on(&mut authenticating, health).await,
        "HTTP/1.1 200 OK"
    );
    let mut refused = TcpStream::connect(address).await.unwrap();
    assert!(closed_unanswered(&mut refused).await);
    assert_eq!(status_on(&mut authenticating, &me).await, "HTTP/1.1 200 OK");
    let mut unauthenticated = TcpStream::connect(address).await.unwrap();
    assert_eq!(
        status_on(&mut unauthenticated, health).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status_on(&mut authenticating, health).await,
        "HTTP/1.1 200 OK"
    );

    // Full again (`idle`, `unauthenticated`) until one closes; the proxy notices the close
    // on its own time, so new connections are tried until one is served.
    let mut refused = TcpStream::connect(address).await.unwrap();
    assert!(closed_unanswered(&mut refused).await);
    drop(idle);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut next = TcpStream::connect(address).await.unwrap();
        if status_on(&mut next, health).await == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "closing a connection never freed its place"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn unknown_tokens_are_reviewed_at_most_at_the_rate_per_client() {
    // No API server: TokenReviews are the test's, counted; time is virtual.
    let tokens = Arc::new(Tokens::default());
    let rbac = Arc::new(Rbac::default());
    let proxy = Proxy::with_reviewers(
        &[
            "--auth=token",
            "--token-review-rate=10",
            "--token-review-burst=20",
            "--trusted-proxy=10.0.0.1/32",
        ],
        tokens.clone(),
        rbac,
    );
    let me = |token: &str| {
        get("/api/me")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    proxy.send_from(PEER, me("alices-token")).await;
    for i in 0..19 {
        let refused = proxy.send_from(PEER, me(&format!("random-{i}"))).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(tokens.reviews.load(Ordering::SeqCst), 20);
    let limited = proxy.send_from(PEER, me("random-20")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()[header::RETRY_AFTER], "1");
    assert_eq!(
        json_body(limited).await["error"]["reason"],
        "TooManyTokenReviews"
    );
    assert_eq!(tokens.reviews.load(Ordering::SeqCst), 20);

    // Remembered answers cost nothing: alice's token, a token already refused.
    let alice = proxy.send_from(PEER, me("alices-token")).await;
    assert_eq!(json_body(alice).await["user"], "alice");
    let again = proxy.send_from(PEER, me("random-3")).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    // Another client has a bucket of its own; behind a trusted front proxy, by its
    // X-Forwarded-For.
    let elsewhere = SocketAddr::from(([198, 51, 100, 7], 40000));
    let other = proxy.send_from(elsewhere, me("random-21")).await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    let front = SocketAddr::from(([10, 0, 0, 1], 40000));
    let mut behind = me("random-22");
    behind
        .headers_mut()
        .insert("x-forwarded-for", "127.0.0.1".parse().unwrap());
    assert_eq!(
        proxy.send_from(front, behind).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let mut behind = me("random-23");
    behind
        .headers_mut()
        .insert("x-forwarded-for", "127.0.0.1, 203.0.113.9".parse().unwrap());
    assert_eq!(
        proxy.send_from(front, behind).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The bucket refills at the rate.
    tokio::time::advance(std::time::Duration::from_millis(100)).await;
    let refilled = proxy.send_from(PEER, me("random-24")).await;
    assert_eq!(refilled.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        proxy.send_from(PEER, me("random-25")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // The login form is limited alike.
    let login = proxy
        .send_body(login_post(Some(OWN_ORIGIN)), "token=random-26&next=%2F")
        .await;
    assert_eq!(login.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login.headers()[header::RETRY_AFTER], "1");
}

/// The session Secret's `revoked` map as replicas share it, held in memory: a stand-in for
/// the Secret (no API server), read and written as `SecretRevocations` reads and writes it.
#[derive(Default)]
struct SharedRevocations {
    revoked: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl crate::session::RevocationStore for SharedRevocations {
    fn load(&self) -> futures::future::BoxFuture<'_, anyhow::Result<BTreeMap<String, u64>>> {
        let revoked = self.revoked.lock().unwrap().clone();
        Box::pin(async move { Ok(revoked) })
    }

    fn revoke(
        &self,
        id: String,
        expires: u64,
        _now: SystemTime,
    ) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
        self.revoked.lock().unwrap().insert(id, expires);
        Box::pin(async { Ok(()) })
    }
}

/// A token-mode replica signing with the shared `key` and sharing revocations in `store`.
fn replica(key: &[u8], store: &Arc<SharedRevocations>) -> Proxy {
    let client = offline_client();
    let store: Arc<dyn crate::session::RevocationStore> = store.clone();
    Proxy::with_sessions(
        &["--auth=token"],
        Arc::new(TokenReviews::new(client.clone())),
        Arc::new(SubjectAccessReviews::new(client)),
        |args| {
            SessionKeys::new(key.to_vec(), args.session_ttl)
                .unwrap()
                .with_store(store)
        },
    )
}

fn with_session(request: http::request::Builder, session: &str) -> http::request::Builder {
    request.header(header::COOKIE, format!("guildnet_session={session}"))
}

#[tokio::test]
async fn a_logout_ends_the_session_on_every_replica() {
    let key = [7u8; 32];
    let store = Arc::new(SharedRevocations::default());
    let (one, two) = (replica(&key, &store), replica(&key, &store));
    let session = one
        .state
        .auth
        .sessions
        .issue(&identity("alice"), SystemTime::now());
    let other_session = one
        .state
        .auth
        .sessions
        .issue(&identity("alice"), SystemTime::now());
    for proxy in [&one, &two] {
        let me = proxy.send(with_session(get("/api/me"), &session)).await;
        assert_eq!(me.status(), StatusCode::OK);
    }

    let logout = one
        .send(with_session(
            write("POST", "/logout", Some(OWN_ORIGIN)),
            &session,
        ))
        .await;
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    assert!(
        logout.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // A copy of the cookie kept elsewhere is refused: at once by the replica that logged out…
    let me = one.send(with_session(get("/api/me"), &session)).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    // …and by the other once it has read the shared list, which it does every
    // --session-revocation-poll (the poll's one step, run here by hand).
    two.state
        .auth
        .sessions
        .sync(SystemTime::now())
        .await
        .unwrap();
    let me = two.send(with_session(get("/api/me"), &session)).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let suspend = with_session(
        write("POST", "/api/workspaces/team/ide/suspend", Some(OWN_ORIGIN)),
        &session,
    );
    assert_eq!(two.send(suspend).await.status(), StatusCode::UNAUTHORIZED);
    // A replica started afterwards too.
    let three = replica(&key, &store);
    three
        .state
        .auth
        .sessions
        .sync(SystemTime::now())
        .await
        .unwrap();
    let me = three.send(with_session(get("/api/me"), &session)).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    // Only that session ended: the user's other one goes on.
    let me = two.send(with_session(get("/api/me"), &other_session)).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(store.revoked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_session_lasts_eight_hours_from_login_by_default() {
    let proxy = token_proxy(&[]);
    let now = SystemTime::now();
    let hours = |h: u64| std::time::Duration::from_secs(h * 3600);
    let sessions = &proxy.state.auth.sessions;
    let recent = sessions.issue(&identity("alice"), now - hours(8) + hours(1) / 60);
    let old = sessions.issue(&identity("alice"), now - hours(8));
    let me = proxy.send(with_session(get("/api/me"), &recent)).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me = proxy.send(with_session(get("/api/me"), &old)).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    // The cookie a login sets lasts as long.
    let login = proxy
        .send_body(login_post(Some(OWN_ORIGIN)), "token=alices-token&next=%2F")
        .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("Max-Age=28800"), "{cookie}");
}

#[tokio::test]
async fn writes_need_an_identity_checked_within_the_revalidation_bound() {
    // No API server: a write that passes the check goes on to the offline API and fails
    // there (`KubernetesUnavailable`); one that does not is refused before.
    let proxy = token_proxy(&[]);
    let now = SystemTime::now();
    let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
    let sessions = &proxy.state.auth.sessions;
    let fresh = sessions.issue(&identity("alice"), now - minutes(9));
    let stale = sessions.issue(&identity("alice"), now - minutes(11));
    let suspend = |session: &str| {
        with_session(
            write("POST", "/api/workspaces/team/ide/suspend", Some(OWN_ORIGIN)),
            session,
        )
    };
    let written = proxy.send(suspend(&fresh)).await;
    assert_eq!(
        json_body(written).await["error"]["reason"],
        "KubernetesUnavailable"
    );
    let refused = proxy.send(suspend(&stale)).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(refused).await["error"]["reason"],
        "ReauthenticationRequired"
    );
    for (method, uri, body) in [
        (
            "POST",
            "/api/workspaces",
            r#"{"name": "ide", "image": "nginx"}"#,
        ),
        ("POST", "/api/workspaces/team/ide/resume", ""),
        ("DELETE", "/api/workspaces/team/ide", ""),
    ] {
        let request = with_session(write(method, uri, Some(OWN_ORIGIN)), &stale);
        let refused = proxy.send_body(request, body).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    // Reads go on with the session until it expires; a new login is a fresh check.
    let me = proxy.send(with_session(get("/api/me"), &stale)).await;
    assert_eq!(me.status(), StatusCode::OK);
    // The bound is a flag.
    let lenient = token_proxy(&["--session-revalidate-after=1h"]);
    let stale = lenient
        .state
        .auth
        .sessions
        .issue(&identity("alice"), now - minutes(11));
    let written = lenient.send(suspend(&stale)).await;
    assert_eq!(
        json_body(written).await["error"]["reason"],
        "KubernetesUnavailable"
    );
}

/// Claim `team/{name}` as the operator makes one for a `Retain` volume of workspace
/// `workspace` owned by `owner`: GuildNet's labels, no owner reference.
fn retained_claim(name: &str, workspace: &str, owner: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "team", "uid": format!("uid-{name}"),
            "resourceVersion": "7", "creationTimestamp": "2026-01-02T03:04:05Z",
            "labels": {
                labels::MANAGED: "true", labels::ID: workspace, labels::OWNER: owner_id(owner),
            },
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    }))
    .unwrap()
}

/// Workspace `team/{name}` of `owner` with persistent volume `home` (claim `{name}-home`).
fn workspace_with_home(name: &str, owner: &str) -> Workspace {
    let mut ws = workspace(name, owner);
    ws.spec.volumes = serde_json::from_value(
        json!([{"name": "home", "mountPath": "/home", "persistent": {"size": "10Gi"}}]),
    )
    .unwrap();
    ws
}

/// Alice's claims in every state, and the workspaces that name some of them: `ide-home`
/// (workspace `ide` still names it), `gone-home` (its workspace deleted), `old-home` (its
/// workspace being deleted), `owned-home` (owned by its workspace), `leaving-home` (being
/// deleted), `changed-home` (changed on the API server since the cache saw it); bob's
/// `bobs-home`; and `stray-home`, GuildNet's but with no owner label.
async fn proxy_with_claims(proxy: &mut Proxy) {
    proxy.sync_caches();
    proxy.add(workspace_with_home("ide", "alice"), None).await;
    let mut old = workspace_with_home("old", "alice");
    old.metadata.deletion_timestamp = being_deleted();
    proxy.add(old, None).await;
    let mut owned = retained_claim("owned-home", "owned", "alice");
    owned.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace", "name": "owned",
            "uid": "uid-owned", "controller": true,
        }))
        .unwrap(),
    ]);
    let mut leaving = retained_claim("leaving-home", "leaving", "alice");
    leaving.metadata.deletion_timestamp = being_deleted();
    let mut stray = retained_claim("stray-home", "stray", "alice");
    stray
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove(labels::OWNER);
    for claim in [
        retained_claim("ide-home", "ide", "alice"),
        retained_claim("gone-home", "gone", "alice"),
        retained_claim("old-home", "old", "alice"),
        retained_claim("changed-home", "changed", "alice"),
        retained_claim("bobs-home", "bobs", "bob"),
        owned,
        leaving,
        stray,
    ] {
        proxy.claims.apply_watcher_event(&Event::Apply(claim));
    }
}

/// A `deletionTimestamp`: the object is being deleted.
fn being_deleted() -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-02T03:04:05Z".parse().unwrap(),
    ))
}

/// A session of `user`'s on `proxy`.
fn session_of(proxy: &Proxy, user: &str) -> String {
    proxy
        .state
        .auth
        .sessions
        .issue(&identity(user), SystemTime::now())
}

fn listed_claims(listed: &Value) -> Vec<(String, Value)> {
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|claim| {
            (
                claim["name"].as_str().unwrap().to_owned(),
                claim["usedBy"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_owner_sees_their_retained_claims_and_which_a_live_workspace_names() {
    let mut proxy = token_proxy(&[]);
    proxy_with_claims(&mut proxy).await;

    let alice = session_of(&proxy, "alice");
    let listed = json_body(proxy.send(with_session(get("/api/claims"), &alice)).await).await;
    assert_eq!(
        listed_claims(&listed),
        [
            ("changed-home".to_owned(), Value::Null),
            ("gone-home".to_owned(), Value::Null),
            ("ide-home".to_owned(), json!("ide")),
            // A workspace being deleted no longer names its claims.
            ("old-home".to_owned(), Value::Null),
        ]
    );
    let gone = &listed["items"][1];
    assert_eq!(gone["namespace"], "team");
    assert_eq!(gone["workspace"], "gone");
    assert_eq!(gone["size"], "10Gi");
    assert_eq!(gone["creationTimestamp"], "2026-01-02T03:04:05Z");

    let bob = session_of(&proxy, "bob");
    let listed = json_body(proxy.send(with_session(get("/api/claims"), &bob)).await).await;
    assert_eq!(
        listed_claims(&listed),
        [("bobs-home".to_owned(), Value::Null)]
    );

    let anonymous = proxy.send(get("/api/claims")).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// A Kubernetes API on 127.0.0.1 that answers DELETEs of claims and records each request
/// it gets as `{method, path, impersonated, body}`: `changed-home` fails its preconditions
/// (409, as for a claim re-created since), anything else is deleted.
struct FakeApi {
    client: kube::Client,
    requests: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl FakeApi {
    async fn start() -> Self {
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let app = Router::new().fallback(move |request: Request| {
            let recorded = recorded.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                recorded.lock().unwrap().push(json!({
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "impersonated": parts.headers.contains_key("impersonate-user"),
                    "body": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
                }));
                if parts.uri.path().ends_with("/changed-home") {
                    let status = json!({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Conflict", "code": 409,
                        "message": "Precondition failed: UID in precondition: uid-changed-home, \
                                    UID in object meta: uid-new",
                    });
                    return (StatusCode::CONFLICT, axum::Json(status)).into_response();
                }
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
                    .into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config = kube::Config::new(format!("http://{address}").parse().unwrap());
        Self {
            client: kube::Client::try_from(config).unwrap(),
            requests,
        }
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

/// A `--auth=token` proxy whose own Kubernetes calls go to `api`.
fn proxy_calling(api: &FakeApi) -> Proxy {
    let tokens = Arc::new(TokenReviews::new(offline_client()));
    let access = Arc::new(SubjectAccessReviews::new(offline_client()));
    Proxy::with_client(
        &["--auth=token"],
        api.client.clone(),
        tokens,
        access,
        |args| SessionKeys::random(args.session_ttl),
    )
}

#[tokio::test]
async fn an_owner_deletes_a_retained_claim_as_the_proxy_and_only_the_object_checked() {
    let api = FakeApi::start().await;
    let mut proxy = proxy_calling(&api);
    proxy_with_claims(&mut proxy).await;
    let alice = session_of(&proxy, "alice");

    let deleted = proxy
        .send(with_session(
            write("DELETE", "/api/claims/team/gone-home", Some(OWN_ORIGIN)),
            &alice,
        ))
        .await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(json_body(deleted).await, json!({}));
    // With the proxy's own identity (alice has no RBAC on claims), and only if the claim is
    // still the object checked: its uid and resourceVersion.
    assert_eq!(
        api.requests(),
        [json!({
            "method": "DELETE",
            "path": "/api/v1/namespaces/team/persistentvolumeclaims/gone-home",
            "impersonated": false,
            "body": {"preconditions": {"uid": "uid-gone-home", "resourceVersion": "7"}},
        })]
    );

    // Re-created or changed on the API server since: refused there, and said so.
    let changed = proxy
        .send(with_session(
            write("DELETE", "/api/claims/team/changed-home", Some(OWN_ORIGIN)),
            &alice,
        ))
        .await;
    assert_eq!(changed.status(), StatusCode::CONFLICT);
    assert_eq!(json_body(changed).await["error"]["reason"], "ClaimChanged");
}

#[tokio::test]
async fn a_claim_is_deleted_only_when_it_is_the_callers_retained_and_unused() {
    let api = FakeApi::start().await;
    let mut proxy = proxy_calling(&api);
    proxy_with_claims(&mut proxy).await;
    let alice = session_of(&proxy, "alice");
    let bob = session_of(&proxy, "bob");
    let own = Some(OWN_ORIGIN);
    let delete = |path: &str, session: &str, origin: Option<&str>| {
        with_session(write("DELETE", path, origin), session)
    };

    let cases = [
        // Someone else's claim and no claim at all: the same answer.
        (
            delete("/api/claims/team/gone-home", &bob, own),
            StatusCode::NOT_FOUND,
            "ClaimNotFound",
        ),
        (
            delete("/api/claims/team/nothing-here", &bob, own),
            StatusCode::NOT_FOUND,
            "ClaimNotFound",
        ),
        // GuildNet's, but no owner label: nobody's.
        (
            delete("/api/claims/team/stray-home", &alice, own),
            StatusCode::NOT_FOUND,
            "ClaimNotFound",
        ),
        (
            delete("/api/claims/team/ide-home", &alice, own),
            StatusCode::CONFLICT,
            "ClaimInUse",
        ),
        (
            delete("/api/claims/team/owned-home", &alice, own),
            StatusCode::FORBIDDEN,
            "ClaimNotRetained",
        ),
        (
            delete("/api/claims/team/leaving-home", &alice, own),
            StatusCode::CONFLICT,
            "ClaimBeingDeleted",
        ),
        (
            delete(
                "/api/claims/team/gone-home",
                &alice,
                Some("https://evil.example"),
            ),
            StatusCode::FORBIDDEN,
            "CrossOriginRefused",
        ),
        (
            delete("/api/claims/team/gone-home", &alice, None),
            StatusCode::FORBIDDEN,
            "CrossOriginRefused",
        ),
        (
            delete("/api/claims/Team/gone-home", &alice, own),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            delete("/api/claims/team/gone-home%3FdryRun=All", &alice, own),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            delete("/api/claims/team/gone%2Fhome", &alice, own),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
    ];
    for (request, status, reason) in cases {
        let response = proxy.send(request).await;
        assert_eq!(response.status(), status, "{reason}");
        let error = json_body(response).await;
        assert_eq!(error["error"]["reason"], reason, "{error}");
    }
    let in_use = proxy
        .send(delete("/api/claims/team/ide-home", &alice, own))
        .await;
    let message = json_body(in_use).await["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("workspace team/ide"),
        "{message}"
    );
    assert_eq!(api.requests(), Vec::<Value>::new(), "nothing was deleted");
}

#[tokio::test]
async fn claims_are_refused_until_the_caches_are_listed() {
    let api = FakeApi::start().await;
    let proxy = proxy_calling(&api);
    let alice = session_of(&proxy, "alice");
    for request in [
        with_session(get("/api/claims"), &alice),
        with_session(
            write("DELETE", "/api/claims/team/gone-home", Some(OWN_ORIGIN)),
            &alice,
        ),
    ] {
        let response = proxy.send(request).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            json_body(response).await["error"]["reason"],
            "CachesNotSynced"
        );
    }
    assert_eq!(api.requests(), Vec::<Value>::new());
}

/// Quota `{namespace}/{name}` with `spec` and, unless None, `status` as the operator writes it.
fn quota(namespace: &str, name: &str, spec: Value, status: Option<Value>) -> Quota {
    let mut quota = json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
        "spec": spec,
    });
    if let Some(status) = status {
        quota["status"] = status;
    }
    serde_json::from_value(quota).unwrap()
}

/// `user`'s `status.usage` entry using `workspaces` workspaces and `cpu`.
fn usage_entry(user: &str, workspaces: i32, cpu: &str) -> Value {
    json!({"owner": owner_id(user), "ownerName": user, "workspaces": workspaces, "cpu": cpu})
}

/// Quotas as the operator's status shows them, with alice and bob each owning a workspace
/// in `team`: one counting both (bob over its GPU limit), a cluster-wide one counting alice
/// only, one in `team` counting only bob (alice uses nothing it counts), one not yet
/// counted, one counting more owners than it lists, one for a group neither is in, and one
/// in a namespace where only bob works.
async fn proxy_with_quotas(proxy: &mut Proxy) {
    proxy.sync_caches();
    proxy.add(workspace("ide", "alice"), None).await;
    proxy.add(workspace("bobs", "bob"), None).await;
    let exceeded = json!([{
        "type": "Exceeded", "status": "True", "reason": "OwnersOverLimit",
        "message": "1 of 2 owners over a limit (their newest workspaces are held): bob",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
    }]);
    let mut bobs = usage_entry("bob", 1, "4");
    bobs["extended"] = json!({"nvidia.com/gpu": "2"});
    let mut alices = usage_entry("alice", 2, "1500m");
    alices["memory"] = json!("4Gi");
    let quotas = [
        quota(
            "team",
            "per-owner",
            json!({"perOwner": {
                "maxWorkspaces": 2, "cpu": "2", "memory": "4Gi",
                "extended": {"nvidia.com/gpu": "1"},
            }}),
            Some(json!({"usage": [alices, bobs], "ownerCount": 2, "conditions": exceeded})),
        ),
        quota(
            "guildnet-system",
            "everyone",
            json!({"scope": "Cluster", "perOwner": {"maxWorkspaces": 10}}),
            Some(json!({"usage": [usage_entry("alice", 3, "2")], "ownerCount": 1})),
        ),
        quota(
            "team",
            "room",
            json!({"perOwner": {"maxWorkspaces": 5}}),
            Some(json!({"usage": [usage_entry("bob", 1, "4")], "ownerCount": 1})),
        ),
        quota(
            "team",
            "fresh",
            json!({"perOwner": {"maxWorkspaces": 1}}),
            None,
        ),
        quota(
            "team",
            "crowded",
            json!({"perOwner": {"maxWorkspaces": 1}}),
            Some(json!({"usage": [usage_entry("bob", 1, "4")], "ownerCount": 501})),
        ),
        quota(
            "team",
            "gpu-users",
            json!({"subjects": [{"kind": "Group", "name": "gpu-users"}], "perOwner": {"maxWorkspaces": 1}}),
            Some(json!({"ownerCount": 0})),
        ),
        quota(
            "elsewhere",
            "other",
            json!({"perOwner": {"maxWorkspaces": 1}}),
            Some(json!({"usage": [usage_entry("bob", 1, "4")], "ownerCount": 1})),
        ),
    ];
    for quota in quotas {
        proxy.quotas.apply_watcher_event(&Event::Apply(quota));
    }
}

/// `(namespace/name, usage.workspaces)` of each Quota listed; None for unknown usage.
fn listed_quotas(listed: &Value) -> Vec<(String, Option<i64>)> {
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|quota| {
            let name = format!("{}/{}", quota["namespace"].as_str().unwrap(), quota["name"]);
            (name.replace('"', ""), quota["usage"]["workspaces"].as_i64())
        })
        .collect()
}

#[tokio::test]
async fn a_caller_sees_their_own_quota_usage_and_never_another_owners() {
    let mut proxy = token_proxy(&[]);
    proxy_with_quotas(&mut proxy).await;

    let alice = session_of(&proxy, "alice");
    let response = proxy.send(with_session(get("/api/quotas"), &alice)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed = json_body(response).await;
    let named = |name: &str, workspaces: Option<i64>| (name.to_owned(), workspaces);
    assert_eq!(
        listed_quotas(&listed),
        [
            // Counts alice though she has no workspace in its namespace: cluster-wide.
            named("guildnet-system/everyone", Some(3)),
            // Applies to her where she works, but lists fewer owners than it counts.
            named("team/crowded", None),
            // Not counted by the operator yet.
            named("team/fresh", None),
            named("team/per-owner", Some(2)),
            // Applies to her where she works and counts nothing of hers: zero.
            named("team/room", Some(0)),
        ]
    );
    let per_owner = &listed["items"][3];
    assert_eq!(per_owner["scope"], "Namespace");
    assert_eq!(listed["items"][0]["scope"], "Cluster");
    assert_eq!(
        per_owner["limits"],
        json!({"maxWorkspaces": 2, "cpu": "2", "memory": "4Gi", "extended": {"nvidia.com/gpu": "1"}})
    );
    assert_eq!(
        per_owner["usage"],
        json!({
            "owner": owner_id("alice"), "ownerName": "alice", "workspaces": 2,
            "cpu": "1500m", "memory": "4Gi",
        })
    );
    assert_eq!(
        per_owner["dimensions"],
        json!([
            {"field": "maxWorkspaces", "resource": "workspaces", "used": "2", "limit": "2", "full": true, "over": false},
            {"field": "cpu", "resource": "cpu", "used": "1500m", "limit": "2", "full": false, "over": false},
            {"field": "memory", "resource": "memory", "used": "4Gi", "limit": "4Gi", "full": true, "over": false},
            {"field": "extended[nvidia.com/gpu]", "resource": "nvidia.com/gpu", "used": "0", "limit": "1", "full": false, "over": false},
        ])
    );
    assert_eq!(
        listed["items"][2]["dimensions"],
        json!([{"field": "maxWorkspaces", "resource": "workspaces", "used": null, "limit": "1", "full": false, "over": false}])
    );
    // Nothing of bob's reaches alice: not his entry, nor how many owners there are, nor the
    // condition naming him.
    let text = listed.to_string();
    for leak in [owner_id("bob").as_str(), "bob", "ownerCount", "conditions"] {
        assert!(!text.contains(leak), "{leak} in alice's quotas: {text}");
    }

    let bob = session_of(&proxy, "bob");
    let listed = json_body(proxy.send(with_session(get("/api/quotas"), &bob)).await).await;
    assert_eq!(
        listed_quotas(&listed),
        [
            named("elsewhere/other", Some(1)),
            named("team/crowded", Some(1)),
            named("team/fresh", None),
            named("team/per-owner", Some(1)),
            named("team/room", Some(1)),
        ]
    );
    let gpu = &listed["items"][3]["dimensions"][3];
    assert_eq!(
        *gpu,
        json!({"field": "extended[nvidia.com/gpu]", "resource": "nvidia.com/gpu", "used": "2", "limit": "1", "full": true, "over": true})
    );
    let text = listed.to_string();
    for leak in [owner_id("alice").as_str(), "alice", "1500m"] {
        assert!(!text.contains(leak), "{leak} in bob's quotas: {text}");
    }

    // Someone with no workspaces and counted by nothing sees no Quota at all.
    let carol = session_of(&proxy, "carol");
    let listed = json_body(proxy.send(with_session(get("/api/quotas"), &carol)).await).await;
    assert_eq!(listed, json!({"items": []}));

    let anonymous = proxy.send(get("/api/quotas")).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn quotas_are_refused_until_the_caches_are_listed() {
    let proxy = token_proxy(&[]);
    let alice = session_of(&proxy, "alice");
    let response = proxy.send(with_session(get("/api/quotas"), &alice)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert_eq!(
        json_body(response).await["error"]["reason"],
        "CachesNotSynced"
    );
}

/// GuildDatabase `team/{name}` owned by `owner`, declaring database `shop` with table
/// `items`.
fn guild_database(name: &str, owner: &str) -> GuildDatabase {
    let mut db: GuildDatabase = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1",
        "kind": "GuildDatabase",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": format!("uid-{name}"),
            "labels": {labels::OWNER: owner_id(owner)},
        },
        "spec": {
            "storage": {"size": "1Gi"},
            "databases": [{"name": "shop", "tables": [{"name": "items"}]}],
        },
    }))
    .unwrap();
    db.metadata.namespace = Some("team".into());
    db
}

impl Proxy {
    /// A proxy (`--auth=none`, as [`DEV_USER`]) whose caches have listed `databases`.
    fn with_databases(databases: &[GuildDatabase]) -> Self {
        let mut proxy = Proxy::new(&["--auth=none"]);
        proxy.sync_caches();
        for db in databases {
            proxy
                .databases
                .apply_watcher_event(&Event::Apply(db.clone()));
        }
        proxy
    }
}

#[tokio::test]
async fn a_database_is_refused_alike_to_a_non_owner_whether_or_not_it_exists() {
    let proxy = Proxy::with_databases(&[guild_database("inventory", "alice")]);
    // RBAC's answers, as SubjectAccessReviews would give them: nothing on guilddatabases/data.
    for name in ["inventory", "ghost"] {
        proxy.state.authz.remember_access(
            &identity(DEV_USER),
            Access::database_data("get"),
            "team",
            Some(name),
            false,
        );
    }
    let mut answers = Vec::new();
    for name in ["inventory", "ghost"] {
        let response = proxy
            .send(get(&format!("/api/databases/team/{name}/dbs")))
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}");
        let body = json_body(response).await;
        answers.push(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .replace(name, "NAME"),
        );
    }
    assert_eq!(answers[0], answers[1]);
    assert!(answers[0].contains("guilddatabases/data"), "{}", answers[0]);
}

#[tokio::test]
async fn each_method_is_asked_of_rbac_with_its_own_verb() {
    let proxy = Proxy::with_databases(&[guild_database("inventory", "alice")]);
    // May read, may not delete.
    for (verb, allowed) in [("get", true), ("delete", false)] {
        proxy.state.authz.remember_access(
            &identity(DEV_USER),
            Access::database_data(verb),
            "team",
            Some("inventory"),
            allowed,
        );
    }
    // Allowed to read: it gets as far as the admin password, not handed over here.
    let read = proxy.send(get("/api/databases/team/inventory/dbs")).await;
    assert_eq!(read.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_body(read).await["error"]["reason"], "DatabaseNotReady");
    let drop = proxy
        .send(write(
            "DELETE",
            "/api/databases/team/inventory/dbs/orders",
            Some(OWN_ORIGIN),
        ))
        .await;
    assert_eq!(drop.status(), StatusCode::FORBIDDEN);
    let message = json_body(drop).await["error"]["message"].clone();
    assert!(message.as_str().unwrap().contains("`delete`"), "{message}");
}

#[tokio::test]
async fn the_owner_is_told_when_no_server_is_ready() {
    let proxy = Proxy::with_databases(&[guild_database("inventory", DEV_USER)]);
    let mut data = BTreeMap::new();
    data.insert(
        "team.inventory".to_owned(),
        k8s_openapi::ByteString(b"pw".to_vec()),
    );
    proxy.state.database_passwords.replace(data);
    let response = proxy.send(get("/api/databases/team/inventory/dbs")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    let message = json_body(response).await["error"]["message"].clone();
    assert!(message.as_str().unwrap().contains("no server"), "{message}");
}

#[tokio::test]
async fn database_requests_with_bad_names_or_queries_are_refused_naming_the_part() {
    let proxy = Proxy::with_databases(&[guild_database("inventory", DEV_USER)]);
    for (uri, status, names) in [
        (
            "/api/databases/team/inventory/dbs/rethinkdb/tables",
            StatusCode::FORBIDDEN,
            "RethinkDB",
        ),
        (
            "/api/databases/team/inventory/dbs/guildnet/tables/guildnet_audit/rows",
            StatusCode::FORBIDDEN,
            "GuildNet",
        ),
        (
            "/api/databases/team/inventory/dbs/shop-2/tables",
            StatusCode::BAD_REQUEST,
            "database",
        ),
        (
            "/api/databases/team/inventory/dbs/shop/tables/it%20ems/rows",
            StatusCode::BAD_REQUEST,
            "table",
        ),
        (
            "/api/databases/team/inventory/dbs/shop/tables/items/rows?limit=5000",
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "/api/databases/team/inventory/dbs/shop/tables/items/rows/7?keyType=date",
            StatusCode::BAD_REQUEST,
            "keyType",
        ),
        (
            "/api/databases/Team/inventory/dbs",
            StatusCode::BAD_REQUEST,
            "namespace",
        ),
    ] {
        let response = proxy.send(get(uri)).await;
        assert_eq!(response.status(), status, "{uri}");
        let message = json_body(response).await["error"]["message"].clone();
        assert!(
            message.as_str().unwrap().contains(names),
            "{uri}: {message}"
        );
    }
}

#[tokio::test]
async fn database_writes_need_the_dashboards_origin_and_a_json_body() {
    let proxy = Proxy::with_databases(&[guild_database("inventory", DEV_USER)]);
    let rows = "/api/databases/team/inventory/dbs/shop/tables/items/rows";
    let foreign = proxy
        .send_body(write("POST", rows, Some("https://evil.example")), "{}")
        .await;
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json_body(foreign).await["error"]["reason"],
        "CrossOriginRefused"
    );
    for (body, names) in [
        ("{\"sku\": ", "not valid JSON"),
        ("\"a\"", "JSON object"),
        ("[]", "non-empty array"),
    ] {
        let response = proxy
            .send_body(write("POST", rows, Some(OWN_ORIGIN)), body)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let message = json_body(response).await["error"]["message"].clone();
        assert!(
            message.as_str().unwrap().contains(names),
            "{body}: {message}"
        );
    }
    let unnamed = proxy
        .send_body(
            write(
                "POST",
                "/api/databases/team/inventory/dbs",
                Some(OWN_ORIGIN),
            ),
            "{\"title\": \"shop\"}",
        )
        .await;
    assert_eq!(unnamed.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_database_list_shows_the_callers_own_and_those_rbac_lets_them_read() {
    let mut theirs = guild_database("theirs", "alice");
    theirs.metadata.namespace = Some("shared".into());
    let proxy = Proxy::with_databases(&[
        guild_database("mine", DEV_USER),
        guild_database("alices", "alice"),
        theirs,
    ]);
    for (namespace, allowed) in [("team", false), ("shared", true)] {
        proxy.state.authz.remember_access(
            &identity(DEV_USER),
            Access::database_data("get"),
            namespace,
            None,
            allowed,
        );
    }
    let response = proxy.send(get("/api/databases")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed = json_body(response).await;
    let names: Vec<_> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["namespace"].as_str().unwrap(),
                d["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["shared/theirs", "team/mine"]);
    assert_eq!(listed["items"][1]["databases"], json!(["shop"]));
}
