//! The proxy on the local control plane: real workspaces (KWOK pods whose IPs the test
//! upstream answers on), real TokenReview, SubjectAccessReview, impersonation and admission.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use guildnet_api::workspace::{Workspace, WorkspacePhase};
use guildnet_e2e::upstream::{pod_ip_of_workspace, proxy_addr, send, upstream_port, ws_echo};
use guildnet_e2e::workspaces::{create, manifest, set_suspended, wait_for, wait_gone};
use guildnet_e2e::{User, client, eventually, token, unique_name};
use hyper::header::{ACCEPT, AUTHORIZATION, HOST, LOCATION, RETRY_AFTER, SET_COOKIE};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::wait::conditions::is_deleted;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TIMEOUT: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "default";

/// The proxy's origin as a browser names it in `Origin`.
fn proxy_origin() -> String {
    format!("http://{}", proxy_addr())
}

/// Sends a request to the proxy with `headers`, reading the whole response.
async fn call(method: &str, path: &str, headers: &[(&str, String)], body: &str) -> Response<Bytes> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, proxy_addr().to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    send(proxy_addr(), request.body(body.to_owned()).unwrap())
        .await
        .unwrap()
}

fn bearer(user: User) -> (&'static str, String) {
    ("authorization", format!("Bearer {}", token(user)))
}

async fn get_as(user: User, path: &str) -> Response<Bytes> {
    call("GET", path, &[bearer(user)], "").await
}

fn json_of(response: &Response<Bytes>) -> Value {
    serde_json::from_slice(response.body()).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            response.status(),
            String::from_utf8_lossy(response.body())
        )
    })
}

/// Asserts the status (showing the body when it differs) and returns the JSON body.
fn expect_json(response: &Response<Bytes>, status: StatusCode) -> Value {
    assert_eq!(
        response.status(),
        status,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    json_of(response)
}

/// A Workspace of alice's, running, with the test upstream on its pod IP.
async fn launch(prefix: &str, spec: Value) -> (Api<Workspace>, String) {
    launch_annotated(prefix, spec, &[]).await
}

async fn launch_annotated(
    prefix: &str,
    spec: Value,
    annotations: &[(&str, &str)],
) -> (Api<Workspace>, String) {
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, NAMESPACE);
    let name = unique_name(prefix);
    let mut ws = manifest(&name, spec);
    ws.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    api.create(&PostParams::default(), &ws).await.unwrap();
    wait_for(&api, &name, "Running", |ws| {
        phase(ws) == Some(WorkspacePhase::Running)
    })
    .await;
    pod_ip_of_workspace(&client(User::Admin).await, NAMESPACE, &name).await;
    (api, name)
}

fn nginx() -> Value {
    json!({"image": "nginx:1.27", "ports": [{"containerPort": upstream_port()}]})
}

/// A WebSocket request to `path` on the proxy, with `user`'s token as a bearer.
fn websocket_as(
    user: User,
    path: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("ws://{}{path}", proxy_addr())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        AUTHORIZATION,
        format!("Bearer {}", token(user)).parse().unwrap(),
    );
    request
}

fn phase(ws: &Workspace) -> Option<WorkspacePhase> {
    ws.status.as_ref()?.phase
}

/// Waits until the proxy routes to the workspace (its EndpointSlice reached the proxy's
/// cache) and returns the first 200.
async fn reachable(path: &str) -> Response<Bytes> {
    eventually(&format!("the proxy to route {path}"), TIMEOUT, || async {
        let response = get_as(User::Alice, path).await;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await
}

#[tokio::test]
async fn alice_reaches_her_workspace_over_http_and_websocket_and_others_are_refused_alike() {
    let (_api, name) = launch("px-http", nginx()).await;
    let prefix = format!("/w/{NAMESPACE}/{name}");

    let response = reachable(&format!("{prefix}/hello/world?x=1&y=%2F")).await;
    let echo = json_of(&response);
    assert_eq!(echo["method"], "GET");
    assert_eq!(
        echo["path"], "/hello/world?x=1&y=%2F",
        "the prefix is stripped, the query kept"
    );
    let headers = &echo["headers"];
    assert_eq!(headers["x-forwarded-prefix"], prefix.as_str());
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], proxy_addr().to_string());
    assert_eq!(
        headers["host"],
        proxy_addr().to_string(),
        "the Host the browser used is kept"
    );
    assert!(
        headers.get("authorization").is_none(),
        "the bearer token must not reach the workspace: {headers}"
    );

    // A POST body streams through.
    let posted = call(
        "POST",
        &format!("{prefix}/upload"),
        &[bearer(User::Alice)],
        &"z".repeat(1 << 20),
    )
    .await;
    assert_eq!(json_of(&posted)["bodyBytes"], 1 << 20);

    // WebSocket: echo of text, binary and ping through the proxy.
    let ws_request = websocket_as(User::Alice, &format!("{prefix}/ws"));
    ws_echo(ws_request)
        .await
        .expect("WebSocket echo through the proxy");

    // The admin may (RBAC allows get on workspaces/proxy); bob may not.
    assert_eq!(
        get_as(User::Admin, &format!("{prefix}/")).await.status(),
        StatusCode::OK
    );
    let bob = get_as(User::Bob, &format!("{prefix}/")).await;
    assert_eq!(bob.status(), StatusCode::FORBIDDEN);
    // Nothing tells bob whether a workspace he can't open exists.
    let missing = get_as(
        User::Bob,
        &format!("/w/{NAMESPACE}/{}/", unique_name("px-none")),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json_of(&bob)["error"]["reason"],
        json_of(&missing)["error"]["reason"]
    );
    // The owner of a workspace that doesn't exist learns that it doesn't.
    let absent = get_as(
        User::Admin,
        &format!("/w/{NAMESPACE}/{}/", unique_name("px-none")),
    )
    .await;
    assert_eq!(absent.status(), StatusCode::NOT_FOUND);

    // No credentials: 401 for clients, the login page for browsers.
    let anonymous = call("GET", &format!("{prefix}/"), &[], "").await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let browser = call(
        "GET",
        &format!("{prefix}/x?y=1"),
        &[("accept", "text/html".into())],
        "",
    )
    .await;
    assert_eq!(browser.status(), StatusCode::SEE_OTHER);
    let location = browser.headers()[LOCATION].to_str().unwrap();
    assert!(location.starts_with("/login?next="), "{location}");
    let forged = call(
        "GET",
        &format!("{prefix}/"),
        &[("authorization", "Bearer not-a-token".into())],
        "",
    )
    .await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

/// The headers of a browser's login form post: same-origin, as the proxy requires.
fn login_headers() -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/x-www-form-urlencoded".into()),
        ("origin", proxy_origin()),
    ]
}

/// Logs in at /login and returns the session cookie pair `guildnet_session=…`.
async fn login(user: User) -> String {
    let form = format!("token={}&next=%2F", token(user));
    let response = call("POST", "/login", &login_headers(), &form).await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        response.body()
    );
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_login_session_opens_workspaces_and_never_reaches_them() {
    let (_api, name) = launch("px-login", nginx()).await;
    let prefix = format!("/w/{NAMESPACE}/{name}");
    reachable(&format!("{prefix}/")).await;

    let bad = call("POST", "/login", &login_headers(), "token=nope&next=/").await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(bad.body()).contains("not accepted"));

    let session = login(User::Alice).await;
    // The key that signs sessions is in a Secret the proxy made, shared by its replicas.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client(User::Admin).await, "guildnet-system");
    let key = secrets.get("guildnet-proxy-session").await.unwrap();
    assert_eq!(key.data.unwrap()["key"].0.len(), 32);
    let response = call(
        "GET",
        &format!("{prefix}/"),
        &[("cookie", format!("app=1; {session}; other=2"))],
        "",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = &json_of(&response)["headers"];
    assert_eq!(
        headers["cookie"], "app=1; other=2",
        "only the app's own cookies reach it"
    );

    // The dashboard page needs a login too.
    assert_eq!(
        call("GET", "/", &[], "").await.headers()[LOCATION],
        "/login"
    );
    assert_eq!(
        call("GET", "/", &[("cookie", session.clone())], "")
            .await
            .status(),
        StatusCode::OK
    );
    let me = json_of(&call("GET", "/api/me", &[("cookie", session.clone())], "").await);
    assert_eq!(me["user"], "alice");

    // Logging out ends that session for good: it is recorded in the shared Secret, so the
    // cookie is refused even if the browser kept it.
    let mut headers = login_headers();
    headers.push(("cookie", session.clone()));
    let out = call("POST", "/logout", &headers, "").await;
    assert!(
        out.status().is_redirection() || out.status().is_success(),
        "{:?}",
        out.status()
    );
    let after = call("GET", "/api/me", &[("cookie", session)], "").await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let key = secrets.get("guildnet-proxy-session").await.unwrap();
    assert!(
        key.data.unwrap().contains_key("revoked"),
        "the logout is shared"
    );
}

#[tokio::test]
async fn redirects_and_cookies_are_rewritten_under_the_prefix() {
    let (_api, name) = launch("px-rewrite", nginx()).await;
    let prefix = format!("/w/{NAMESPACE}/{name}");
    reachable(&format!("{prefix}/")).await;
    let pod = pod_ip_of_workspace(&client(User::Admin).await, NAMESPACE, &name).await;

    let redirect = |to: String| {
        let encoded: String = form_urlencoded::byte_serialize(to.as_bytes()).collect();
        format!("{prefix}/redirect?to={encoded}")
    };
    let cases = [
        (
            "/login?next=%2F".to_owned(),
            format!("{prefix}/login?next=%2F"),
        ),
        (
            format!("http://{pod}:{}/tree", upstream_port()),
            format!("http://{}{prefix}/tree", proxy_addr()),
        ),
        ("relative/page".to_owned(), "relative/page".to_owned()),
        (
            "https://example.com/elsewhere".to_owned(),
            "https://example.com/elsewhere".to_owned(),
        ),
    ];
    for (to, want) in cases {
        let response = get_as(User::Alice, &redirect(to.clone())).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{to}");
        assert_eq!(response.headers()[LOCATION], want.as_str(), "{to}");
    }

    let set = |cookie: &str| form_urlencoded::byte_serialize(cookie.as_bytes()).collect::<String>();
    let response = get_as(
        User::Alice,
        &format!(
            "{prefix}/cookies?set={}&set={}",
            set("sid=1; Path=/; Domain=example.com; HttpOnly"),
            set("theme=dark")
        ),
    )
    .await;
    let cookies: Vec<&str> = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect();
    assert_eq!(
        cookies,
        vec![
            format!("sid=1; HttpOnly; Path={prefix}/; Secure"),
            format!("theme=dark; Path={prefix}/; Secure"),
        ]
    );

    // `/w/ns/name` without the slash goes to the slash, so relative links stay inside.
    let bare = get_as(User::Alice, &prefix).await;
    assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers()[LOCATION], format!("{prefix}/").as_str());
}

#[tokio::test]
async fn an_app_serving_under_the_prefix_gets_the_whole_path() {
    let annotations = [("guildnet.io/proxy-keep-prefix", "true")];
    let (_api, name) = launch_annotated("px-keep", nginx(), &annotations).await;
    let prefix = format!("/w/{NAMESPACE}/{name}");
    let response = reachable(&format!("{prefix}/api/kernels?x=1")).await;
    assert_eq!(
        json_of(&response)["path"],
        format!("{prefix}/api/kernels?x=1").as_str()
    );
}

#[tokio::test]
async fn subdomain_mode_serves_a_workspace_at_the_root_of_its_own_host() {
    let (_api, name) = launch("px-host", nginx()).await;
    reachable(&format!("/w/{NAMESPACE}/{name}/")).await;
    let host = format!("{name}--{NAMESPACE}.ws.guildnet.test");
    let request = Request::get("/some/page")
        .header(HOST, &host)
        .header(AUTHORIZATION, format!("Bearer {}", token(User::Alice)))
        .body(String::new())
        .unwrap();
    let response = send(proxy_addr(), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo = json_of(&response);
    assert_eq!(echo["path"], "/some/page");
    assert!(echo["headers"].get("x-forwarded-prefix").is_none());
    let bob = Request::get("/")
        .header(HOST, &host)
        .header(AUTHORIZATION, format!("Bearer {}", token(User::Bob)))
        .body(String::new())
        .unwrap();
    assert_eq!(
        send(proxy_addr(), bob).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

fn last_access(ws: &Workspace) -> Option<jiff::Timestamp> {
    ws.status.as_ref()?.last_access_time.as_ref().map(|t| t.0)
}

#[tokio::test]
async fn traffic_advances_last_access_time_over_http_and_websocket_frames() {
    let (api, name) = launch("px-activity", nginx()).await;
    let prefix = format!("/w/{NAMESPACE}/{name}");
    reachable(&format!("{prefix}/")).await;
    let after_http = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    wait_for(&api, &name, "lastAccessTime from HTTP", |ws| {
        last_access(ws).is_some_and(|t| t >= after_http)
    })
    .await;

    // Only WebSocket frames from here on: one connection, messages until the status shows
    // a use later than the connection's opening.
    let ws_request = websocket_as(User::Alice, &format!("{prefix}/ws"));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_request).await.unwrap();
    let opened = jiff::Timestamp::now();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        socket.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
        let ws = api.get(&name).await.unwrap();
        if last_access(&ws).is_some_and(|t| t > opened + jiff::SignedDuration::from_secs(2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lastAccessTime never moved past {opened} with WebSocket traffic"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn the_reaper_keeps_a_workspace_in_use_and_suspends_it_once_traffic_stops() {
    let mut spec = nginx();
    spec["lifecycle"] = json!({"idleTimeout": "1m"});
    let (api, name) = launch("px-reap", spec).await;
    let prefix = format!("/w/{NAMESPACE}/{name}");
    reachable(&format!("{prefix}/")).await;
    // In use for longer than the idle timeout: never suspended.
    let in_use_until = Instant::now() + Duration::from_secs(80);
    while Instant::now() < in_use_until {
        let response = get_as(User::Alice, &format!("{prefix}/typing")).await;
        assert_eq!(response.status(), StatusCode::OK, "suspended while in use");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let stopped_at = Instant::now();
    let cond = await_condition(api.clone(), &name, |ws: Option<&Workspace>| {
        ws.is_some_and(|ws| ws.spec.lifecycle.as_ref().and_then(|l| l.suspend) == Some(true))
    });
    tokio::time::timeout(Duration::from_secs(150), cond)
        .await
        .expect("suspended once idle")
        .unwrap();
    assert!(
        stopped_at.elapsed() >= Duration::from_secs(50),
        "suspended {:?} after the last use",
        stopped_at.elapsed()
    );

    // A suspended workspace answers 503 with Retry-After, not a hang.
    let suspended = eventually(
        "the proxy to see the workspace stopped",
        TIMEOUT,
        || async {
            let response = get_as(User::Alice, &format!("{prefix}/")).await;
            (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
        },
    )
    .await;
    assert!(suspended.headers().contains_key(RETRY_AFTER));
    assert!(
        json_of(&suspended)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("suspended")
    );
}

/// Reads SSE events from an open response body until `enough` says stop.
async fn read_sse(
    mut body: hyper::body::Incoming,
    mut enough: impl FnMut(&[(u64, Value)]) -> bool,
) -> Vec<(u64, Value)> {
    use http_body_util::BodyExt;
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !enough(&events) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("SSE: timed out; got {events:?}"))
            .expect("stream open")
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(|i| i.parse().unwrap());
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, serde_json::from_str(data).unwrap()));
            }
        }
    }
    events
}

async fn open_sse(user: User, last_event_id: Option<u64>) -> hyper::body::Incoming {
    let stream = TcpStream::connect(proxy_addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get("/sse/events")
        .header(HOST, proxy_addr().to_string())
        .header(AUTHORIZATION, format!("Bearer {}", token(user)))
        .header(ACCEPT, "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = sender
        .send_request(request.body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

fn about<'a>(events: &'a [(u64, Value)], name: &str) -> Vec<&'a (u64, Value)> {
    events.iter().filter(|(_, e)| e["name"] == name).collect()
}

#[tokio::test]
async fn sse_events_resume_from_last_event_id_without_duplicates_or_gaps() {
    let (api, name) = launch("px-events", nginx()).await;
    // Everything about the workspace so far, ending with it becoming Ready.
    let first = read_sse(open_sse(User::Alice, None).await, |events| {
        about(events, &name)
            .iter()
            .any(|(_, e)| e["reason"] == "Ready")
    })
    .await;
    let last_seen = first.last().unwrap().0;
    let ids: Vec<u64> = first.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    // While disconnected: suspend, then resume.
    set_suspended(&api, &name, true).await;
    wait_for(&api, &name, "Stopped", |ws| {
        phase(ws) == Some(WorkspacePhase::Stopped)
    })
    .await;
    set_suspended(&api, &name, false).await;
    wait_for(&api, &name, "Running again", |ws| {
        phase(ws) == Some(WorkspacePhase::Running)
    })
    .await;

    let resumed = read_sse(open_sse(User::Alice, Some(last_seen)).await, |events| {
        about(events, &name)
            .iter()
            .filter(|(_, e)| e["reason"] == "Ready")
            .count()
            >= 1
    })
    .await;
    assert!(
        resumed.iter().all(|(id, _)| *id > last_seen),
        "no replays: {resumed:?}"
    );
    let reasons: Vec<&str> = about(&resumed, &name)
        .iter()
        .map(|(_, e)| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"Suspended"),
        "the event from while disconnected arrives: {reasons:?}"
    );

    // The same events through /api/events?since=, gap-free against the stream.
    let listed = json_of(&get_as(User::Alice, &format!("/api/events?since={last_seen}")).await);
    let listed_ids: Vec<u64> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let streamed_ids: Vec<u64> = resumed.iter().map(|(id, _)| *id).collect();
    assert_eq!(&listed_ids[..streamed_ids.len()], &streamed_ids[..]);

    // Bob sees none of alice's workspace's events.
    let bobs = json_of(&get_as(User::Bob, "/api/events").await);
    assert!(
        bobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["name"] != name.as_str())
    );
}

#[tokio::test]
async fn dashboard_actions_are_decided_by_admission_and_rbac_as_the_user() {
    let session = login(User::Alice).await;
    let origin = proxy_origin();
    let name = unique_name("px-launch");
    let launch =
        json!({"name": name, "image": "nginx:1.27", "hint": "latency", "idleTimeout": "30m"})
            .to_string();
    let json_headers = |extra: Vec<(&'static str, String)>| {
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("cookie", session.clone()),
        ];
        headers.extend(extra);
        headers
    };

    // CSRF: no Origin, or a foreign one, is refused.
    let no_origin = call("POST", "/api/workspaces", &json_headers(vec![]), &launch).await;
    assert_eq!(no_origin.status(), StatusCode::FORBIDDEN);
    let foreign = call(
        "POST",
        "/api/workspaces",
        &json_headers(vec![("origin", "https://evil.example".into())]),
        &launch,
    )
    .await;
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_of(&foreign)["error"]["reason"], "CrossOriginRefused");

    // The webhook decides, as for kubectl: a disallowed image is refused with its reason.
    let denied_body =
        json!({"name": unique_name("px-denied"), "image": "evil.example/miner:1"}).to_string();
    let denied = call(
        "POST",
        "/api/workspaces",
        &json_headers(vec![("origin", origin.clone())]),
        &denied_body,
    )
    .await;
    let error = expect_json(&denied, StatusCode::BAD_REQUEST)["error"].clone();
    assert_eq!(error["reason"], "ImageDenied");
    assert!(
        error["message"].as_str().unwrap().contains("spec.image"),
        "{error}"
    );

    let created = call(
        "POST",
        "/api/workspaces",
        &json_headers(vec![("origin", origin.clone())]),
        &launch,
    )
    .await;
    let summary = expect_json(&created, StatusCode::CREATED);
    assert_eq!(
        summary["ownerName"], "alice",
        "created as alice, so the webhook made her the owner"
    );
    assert_eq!(summary["url"], format!("/w/{NAMESPACE}/{name}/").as_str());

    // The list comes from the proxy's watch cache, a moment behind the create.
    eventually("the new workspace in alice's list", TIMEOUT, || async {
        let listed =
            json_of(&call("GET", "/api/workspaces", &[("cookie", session.clone())], "").await);
        listed["items"]
            .as_array()?
            .iter()
            .any(|w| w["name"] == name.as_str())
            .then_some(())
    })
    .await;
    let bobs = json_of(&get_as(User::Bob, "/api/workspaces").await);
    assert!(
        bobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["name"] != name.as_str())
    );

    // Bob cannot suspend it (the webhook's NotOwner); alice can.
    let bob_suspend = call(
        "POST",
        &format!("/api/workspaces/{NAMESPACE}/{name}/suspend"),
        &[bearer(User::Bob)],
        "",
    )
    .await;
    assert_eq!(
        bob_suspend.status(),
        StatusCode::FORBIDDEN,
        "{:?}",
        bob_suspend.body()
    );
    let suspended = call(
        "POST",
        &format!("/api/workspaces/{NAMESPACE}/{name}/suspend"),
        &[("cookie", session.clone()), ("origin", origin.clone())],
        "",
    )
    .await;
    assert_eq!(suspended.status(), StatusCode::OK);
    assert_eq!(json_of(&suspended)["suspended"], true);
    let resumed = call(
        "POST",
        &format!("/api/workspaces/{NAMESPACE}/{name}/resume"),
        &[("cookie", session.clone()), ("origin", origin.clone())],
        "",
    )
    .await;
    assert_eq!(json_of(&resumed)["suspended"], false);

    // Logs, read by the proxy for whoever may open the workspace.
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, NAMESPACE);
    wait_for(&api, &name, "Running", |ws| {
        phase(ws) == Some(WorkspacePhase::Running)
    })
    .await;
    let logs = eventually("the workspace's log", TIMEOUT, || async {
        let response = get_as(
            User::Alice,
            &format!("/api/workspaces/{NAMESPACE}/{name}/logs?tail=2"),
        )
        .await;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    let text = String::from_utf8_lossy(logs.body()).into_owned();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines().all(|l| l.contains("guildnet test workload")),
        "{text}"
    );
    let bob_logs = get_as(
        User::Bob,
        &format!("/api/workspaces/{NAMESPACE}/{name}/logs"),
    )
    .await;
    assert_eq!(bob_logs.status(), StatusCode::FORBIDDEN);

    let deleted = call(
        "DELETE",
        &format!("/api/workspaces/{NAMESPACE}/{name}"),
        &[("cookie", session.clone()), ("origin", origin)],
        "",
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::OK);
    eventually("the workspace to be gone", TIMEOUT, || async {
        api.get_opt(&name).await.unwrap().is_none().then_some(())
    })
    .await;
}

/// The claim `name` in `user`'s `GET /api/claims`, once `wanted` holds for it (the list
/// comes from the proxy's watch caches, a moment behind the API server).
async fn listed_claim(user: User, name: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    eventually(
        &format!("claim {name} in the claims list"),
        TIMEOUT,
        || async {
            let listed = json_of(&get_as(user, "/api/claims").await);
            listed["items"]
                .as_array()?
                .iter()
                .find(|claim| claim["name"] == name && wanted(claim))
                .cloned()
        },
    )
    .await
}

#[tokio::test]
async fn an_owner_deletes_her_retained_claim_through_the_proxy_and_nobody_else_can() {
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, NAMESPACE);
    let name = unique_name("px-claim");
    let home = json!([{"name": "home", "mountPath": "/home", "persistent": {"size": "1Gi"}}]);
    create(
        &alice,
        &name,
        json!({"image": "nginx:1.27", "volumes": home}),
    )
    .await;
    let claim = format!("{name}-home");
    let path = format!("/api/claims/{NAMESPACE}/{claim}");
    // Alice has no RBAC on claims: the test reads them as the admin.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client(User::Admin).await, NAMESPACE);
    let made = await_condition(
        claims.clone(),
        &claim,
        |c: Option<&PersistentVolumeClaim>| c.is_some(),
    );
    let uid = tokio::time::timeout(TIMEOUT, made)
        .await
        .expect("the operator makes the claim")
        .expect("watch claims")
        .and_then(|c| c.metadata.uid)
        .expect("a claim with a uid");

    // While its workspace lives, the claim is listed as used and is not deleted.
    listed_claim(User::Alice, &claim, |c| c["usedBy"] == name.as_str()).await;
    let in_use = call("DELETE", &path, &[bearer(User::Alice)], "").await;
    assert_eq!(
        expect_json(&in_use, StatusCode::CONFLICT)["error"]["reason"],
        "ClaimInUse"
    );

    alice.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&alice, &name).await;
    let retained = listed_claim(User::Alice, &claim, |c| c["usedBy"].is_null()).await;
    assert_eq!(retained["workspace"], name.as_str());
    assert_eq!(retained["size"], "1Gi");

    // Bob neither sees it nor may delete it: to him it does not exist.
    let bobs = json_of(&get_as(User::Bob, "/api/claims").await);
    assert!(
        bobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != claim.as_str()),
        "{bobs}"
    );
    let bob_delete = call("DELETE", &path, &[bearer(User::Bob)], "").await;
    assert_eq!(
        expect_json(&bob_delete, StatusCode::NOT_FOUND)["error"]["reason"],
        "ClaimNotFound"
    );
    assert!(claims.get_opt(&claim).await.unwrap().is_some());

    // Alice deletes it from the dashboard (a session, from the proxy's own origin). The
    // proxy deletes only the version it checked: while its cache catches up with a change
    // of the claim (its binding), the answer is ClaimChanged, and she tries again.
    let session = login(User::Alice).await;
    let own_page = [("cookie", session), ("origin", proxy_origin())];
    eventually("alice's delete of her claim", TIMEOUT, || async {
        let deleted = call("DELETE", &path, &own_page, "").await;
        if deleted.status() == StatusCode::CONFLICT
            && json_of(&deleted)["error"]["reason"] == "ClaimChanged"
        {
            return None;
        }
        expect_json(&deleted, StatusCode::OK);
        Some(())
    })
    .await;
    tokio::time::timeout(TIMEOUT, await_condition(claims, &claim, is_deleted(&uid)))
        .await
        .expect("the claim is gone from the API server")
        .expect("watch claims");
    eventually("the claim gone from alice's list", TIMEOUT, || async {
        let listed = json_of(&get_as(User::Alice, "/api/claims").await);
        listed["items"]
            .as_array()?
            .iter()
            .all(|c| c["name"] != claim.as_str())
            .then_some(())
    })
    .await;
}

/// The Quota `{namespace}/{name}` in `user`'s `GET /api/quotas`, once `wanted` holds for it
/// (the operator counts a moment after a change, the proxy's watch a moment after that).
async fn listed_quota(
    user: User,
    namespace: &str,
    name: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    eventually(
        &format!("Quota {namespace}/{name} in {user:?}'s quotas as wanted"),
        TIMEOUT,
        || async {
            let listed = json_of(&get_as(user, "/api/quotas").await);
            listed["items"]
                .as_array()?
                .iter()
                .find(|q| q["namespace"] == namespace && q["name"] == name && wanted(q))
                .cloned()
        },
    )
    .await
}

/// The Quotas of `namespace` in `user`'s `GET /api/quotas`, and them as JSON text.
async fn quotas_in(user: User, namespace: &str) -> (Vec<Value>, String) {
    let listed = expect_json(&get_as(user, "/api/quotas").await, StatusCode::OK);
    let items: Vec<Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["namespace"] == namespace)
        .cloned()
        .collect();
    let text = serde_json::to_string(&items).unwrap();
    (items, text)
}

/// Creates workspace `name` through `api` once RBAC lets its user (a RoleBinding just made
/// reaches the API server's authoriser a moment later).
async fn create_when_allowed(api: &Api<Workspace>, name: &str) {
    eventually(&format!("workspace {name} created"), TIMEOUT, || async {
        let ws = manifest(name, json!({"image": "nginx:1.27"}));
        match api.create(&PostParams::default(), &ws).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Some(()),
            Err(_) => None,
        }
    })
    .await;
}

#[tokio::test]
async fn each_owner_sees_their_own_usage_of_a_quota_the_operator_counts() {
    use guildnet_api::Quota;
    use guildnet_api::policy::owner_id;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::api::{Patch, PatchParams};

    let admin = client(User::Admin).await;
    let namespace = unique_name("px-quota");
    guildnet_e2e::create_namespace(&admin, &namespace, &[]).await;
    // Alice and bob (guildnet:users) may work with Workspaces there; nobody else's counted.
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "workspace-users"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "guildnet:workspace-user"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "guildnet:users"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let quota: Quota = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
        "metadata": {"name": "per-owner"},
        "spec": {"perOwner": {"maxWorkspaces": 3}}
    }))
    .unwrap();
    let quotas: Api<Quota> = Api::namespaced(admin.clone(), &namespace);
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let (alice_id, bob_id) = (owner_id("alice"), owner_id("bob"));

    // Alice's workspace, counted by the real operator: 1 of 3, and nothing of anyone else.
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, &namespace);
    create_when_allowed(&alice, "ide").await;
    let seen = listed_quota(User::Alice, &namespace, "per-owner", |q| {
        q["usage"]["workspaces"] == 1
    })
    .await;
    assert_eq!(seen["scope"], "Namespace");
    assert_eq!(seen["limits"], json!({"maxWorkspaces": 3}));
    assert_eq!(seen["usage"]["owner"], alice_id.as_str());
    assert_eq!(
        seen["dimensions"],
        json!([{"field": "maxWorkspaces", "resource": "workspaces", "used": "1", "limit": "3", "full": false, "over": false}])
    );
    // Bob works nowhere there and nothing of his is counted: the Quota is not shown to him.
    let (bobs, _) = quotas_in(User::Bob, &namespace).await;
    assert_eq!(bobs, Vec::<Value>::new());

    // Bob's workspace: the status now counts both owners; each sees only his or her own.
    let bob: Api<Workspace> = Api::namespaced(client(User::Bob).await, &namespace);
    create_when_allowed(&bob, "bobs-ide").await;
    eventually(
        "the Quota's status to count both owners",
        TIMEOUT,
        || async {
            let status = quotas.get("per-owner").await.ok()?.status?;
            (status.owner_count == Some(2)).then_some(())
        },
    )
    .await;
    let seen = listed_quota(User::Bob, &namespace, "per-owner", |q| {
        q["usage"]["workspaces"] == 1
    })
    .await;
    assert_eq!(seen["usage"]["owner"], bob_id.as_str());
    let (bobs, text) = quotas_in(User::Bob, &namespace).await;
    assert_eq!(bobs.len(), 1, "{text}");
    assert!(
        !text.contains(&alice_id) && !text.contains("alice"),
        "alice's usage reached bob: {text}"
    );
    let (alices, text) = quotas_in(User::Alice, &namespace).await;
    assert_eq!(alices.len(), 1, "{text}");
    assert_eq!(alices[0]["usage"]["owner"], alice_id.as_str());
    assert!(
        !text.contains(&bob_id) && !text.contains("bob"),
        "bob's usage reached alice: {text}"
    );

    // Lowered to what she uses, the limit is reached: nothing more would be admitted.
    let lower = json!({"spec": {"perOwner": {"maxWorkspaces": 1}}});
    quotas
        .patch("per-owner", &PatchParams::default(), &Patch::Merge(&lower))
        .await
        .unwrap();
    let full = listed_quota(User::Alice, &namespace, "per-owner", |q| {
        q["dimensions"][0]["full"] == true
    })
    .await;
    assert_eq!(
        full["dimensions"],
        json!([{"field": "maxWorkspaces", "resource": "workspaces", "used": "1", "limit": "1", "full": true, "over": false}])
    );

    let _ = Api::<Namespace>::all(admin)
        .delete(&namespace, &DeleteParams::default())
        .await;
}

/// The proxy process's peak resident memory (VmHWM), in bytes.
fn proxy_peak_memory() -> usize {
    let pid =
        std::env::var("GUILDNET_PROXY_PID").expect("GUILDNET_PROXY_PID: with-stack.sh exports it");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// Writes `raw` to a new connection and reads until the proxy answers or closes.
async fn raw_exchange(raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy_addr()).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the proxy answers or closes")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_and_never_a_hang() {
    let (_api, name) = launch("px-bad", nginx()).await;
    let prefix = format!("/w/{NAMESPACE}/{name}");
    reachable(&format!("{prefix}/")).await;
    let auth = format!("Authorization: Bearer {}\r\n", token(User::Alice));

    // Path traversal, sent as-is.
    let traversal = raw_exchange(format!("GET /w/a/b/../../{NAMESPACE}/{name}/ HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes()).await;
    assert!(traversal.starts_with("HTTP/1.1 400"), "{traversal}");
    let encoded = raw_exchange(
        format!(
            "GET {prefix}/%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(encoded.starts_with("HTTP/1.1 400"), "{encoded}");

    // Oversized request head.
    let huge = format!(
        "GET {prefix}/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = raw_exchange(huge.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );

    // A client that never finishes its headers is cut off (the stack sets 2 s).
    let started = Instant::now();
    let slow = raw_exchange(format!("GET {prefix}/ HTTP/1.1\r\nHost: x\r\n").as_bytes()).await;
    assert!(
        slow.is_empty() || slow.starts_with("HTTP/1.1 408"),
        "{slow}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // The workspace resets the connection: 502. It is too slow: 504 (the stack sets 3 s).
    let reset = get_as(User::Alice, &format!("{prefix}/reset")).await;
    assert_eq!(reset.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json_of(&reset)["error"]["reason"], "UpstreamUnavailable");
    let slow_upstream = get_as(User::Alice, &format!("{prefix}/slow?ms=10000")).await;
    assert_eq!(slow_upstream.status(), StatusCode::GATEWAY_TIMEOUT);

    // Big bodies stream through whole, both ways, without the proxy holding them: its peak
    // memory stays far below what it carried.
    let carried = 256 << 20;
    let big = get_as(User::Alice, &format!("{prefix}/big?bytes={carried}")).await;
    assert_eq!(big.body().len(), carried);
    let upload = call(
        "POST",
        &format!("{prefix}/upload"),
        &[bearer(User::Alice)],
        &"u".repeat(carried),
    )
    .await;
    assert_eq!(json_of(&upload)["bodyBytes"], carried);
    let peak = proxy_peak_memory();
    assert!(
        peak < carried / 2,
        "the proxy's peak RSS is {} MiB after carrying 2 x {} MiB",
        peak >> 20,
        carried >> 20
    );

    // Malformed names.
    assert_eq!(
        get_as(User::Alice, "/w/Default/x/").await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get_as(User::Alice, "/w/default").await.status(),
        StatusCode::BAD_REQUEST
    );

    // After all that, the proxy still serves.
    assert_eq!(
        get_as(User::Alice, &format!("{prefix}/")).await.status(),
        StatusCode::OK
    );
}

/// A proxy of this test's own, with `args` besides its address and identity; stopped when
/// dropped.
struct OwnProxy {
    addr: SocketAddr,
    _process: tokio::process::Child,
}

async fn own_proxy(args: &[&str]) -> OwnProxy {
    let target =
        std::env::var("GUILDNET_TARGET").expect("GUILDNET_TARGET: with-stack.sh exports it");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let kubeconfig = guildnet_e2e::kubeconfig_path()
        .parent()
        .unwrap()
        .join("proxy.kubeconfig");
    let process = tokio::process::Command::new(format!("{target}/guildnet-proxy"))
        .args(["--listen", &addr.to_string()])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .kill_on_drop(true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start guildnet-proxy");
    eventually("the proxy to listen", TIMEOUT, || async {
        TcpStream::connect(addr).await.ok().map(drop)
    })
    .await;
    OwnProxy {
        addr,
        _process: process,
    }
}

async fn as_header_user(proxy: SocketAddr, path: &str, user: Option<&str>) -> Response<Bytes> {
    let mut request = Request::get(path).header(HOST, proxy.to_string());
    if let Some(user) = user {
        request = request
            .header("x-auth-request-user", user)
            .header("x-auth-request-groups", "guildnet:users");
    }
    send(proxy, request.body(String::new()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn header_mode_believes_the_identity_header_only_from_trusted_proxies() {
    let (_api, name) = launch("px-header", nginx()).await;
    let path = format!("/w/{NAMESPACE}/{name}/");
    reachable(&path).await;

    // Requests come from 127.0.0.1: trusted here.
    let trusting = own_proxy(&["--auth", "header", "--trusted-proxy", "127.0.0.1/32"]).await;
    let alice = eventually(
        "the header-mode proxy to route the workspace",
        TIMEOUT,
        || async {
            let response = as_header_user(trusting.addr, &path, Some("alice")).await;
            (response.status() == StatusCode::OK).then_some(response)
        },
    )
    .await;
    let headers = &json_of(&alice)["headers"];
    assert!(
        headers.get("x-auth-request-user").is_none(),
        "identity headers stay with the proxy: {headers}"
    );
    assert_eq!(
        as_header_user(trusting.addr, &path, Some("bob"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        as_header_user(trusting.addr, &path, None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Not from the front proxy's address: the header is ignored.
    let elsewhere = own_proxy(&["--auth", "header", "--trusted-proxy", "10.9.9.9/32"]).await;
    let spoofed = as_header_user(elsewhere.addr, &path, Some("alice")).await;
    assert_eq!(spoofed.status(), StatusCode::UNAUTHORIZED);
}

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM, certificate DER).
fn localhost_certificate() -> (String, String, Vec<u8>) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (
        issued.cert.pem(),
        issued.signing_key.serialize_pem(),
        issued.cert.der().to_vec(),
    )
}

/// GETs `path` from `proxy` over TLS trusting `roots`; returns the response and the
/// certificate the proxy presented.
async fn get_over_tls(
    proxy: SocketAddr,
    roots: &[Vec<u8>],
    path: &str,
) -> anyhow::Result<(Response<Bytes>, Vec<u8>)> {
    use http_body_util::BodyExt;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone().into())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(store)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(proxy).await?;
    let tls = connector.connect("localhost".try_into()?, tcp).await?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, format!("localhost:{}", proxy.port()))
        .header(AUTHORIZATION, format!("Bearer {}", token(User::Alice)))
        .body(String::new())?;
    let (parts, body) = sender.send_request(request).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((Response::from_parts(parts, body), presented))
}

#[tokio::test]
async fn https_is_served_and_a_renewed_certificate_is_picked_up_without_a_restart() {
    let (_api, name) = launch("px-tls", nginx()).await;
    let path = format!("/w/{NAMESPACE}/{name}/");
    reachable(&path).await;
    let dir = std::env::temp_dir().join(unique_name("proxy-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    let (first_pem, first_key, first_der) = localhost_certificate();
    std::fs::write(&cert_file, &first_pem).unwrap();
    std::fs::write(&key_file, &first_key).unwrap();
    let proxy = own_proxy(&[
        "--tls-cert-file",
        cert_file.to_str().unwrap(),
        "--tls-key-file",
        key_file.to_str().unwrap(),
    ])
    .await;

    let (response, presented) = eventually("HTTPS to route the workspace", TIMEOUT, || async {
        let (response, presented) =
            get_over_tls(proxy.addr, std::slice::from_ref(&first_der), &path)
                .await
                .ok()?;
        (response.status() == StatusCode::OK).then_some((response, presented))
    })
    .await;
    assert_eq!(presented, first_der);
    assert_eq!(json_of(&response)["headers"]["x-forwarded-proto"], "https");

    // cert-manager renews the Secret: the files change, the process stays.
    let (second_pem, second_key, second_der) = localhost_certificate();
    std::fs::write(&key_file, &second_key).unwrap();
    std::fs::write(&cert_file, &second_pem).unwrap();
    let roots = [first_der.clone(), second_der.clone()];
    eventually("the renewed certificate to be served", TIMEOUT, || async {
        let (response, presented) = get_over_tls(proxy.addr, &roots, &path).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "requests keep succeeding"
        );
        (presented == second_der).then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second control plane registered with the stack's operator (`network` its
/// `spec.network`, if any), a grant for the admin to place workspaces there, and one such
/// workspace Running there. Its pod IPs are served by the test upstream like the stack's.
struct Edge {
    cluster: guildnet_e2e::cluster::Cluster,
    name: String,
    kubeconfig: String,
    registrations: Api<guildnet_api::ClusterRegistration>,
    grants: Api<guildnet_api::Capabilities>,
    workspaces: Api<Workspace>,
    workspace: String,
}

impl Edge {
    async fn start(tag: &str, network: Option<&str>) -> Self {
        use guildnet_api::Capabilities;
        use guildnet_e2e::cluster::Cluster;
        use guildnet_e2e::create_namespace;
        use guildnet_e2e::registrations::{put_kubeconfig, register};

        let cluster = Cluster::start(tag);
        create_namespace(
            &cluster.client(User::Admin).await,
            "guildnet-workspaces",
            &[],
        )
        .await;
        let admin = client(User::Admin).await;
        let name = unique_name(tag);
        let kubeconfig = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
        put_kubeconfig(&admin, &name, &kubeconfig).await;
        let registrations = register(&admin, &name, &name, json!({})).await;
        if let Some(network) = network {
            set_network(&registrations, &name, network).await;
        }
        let grants: Api<Capabilities> = Api::all(admin.clone());
        let grant: Capabilities = serde_json::from_value(json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "Capabilities",
            "metadata": {"name": name},
            "spec": {
                "subjects": [{"kind": "User", "name": "guildnet-admin"}],
                "images": {"allow": ["docker.io/library/nginx:*"]},
                "resources": {"maxPerWorkspace": {"cpu": "2", "memory": "4Gi"}},
                "exposure": ["ClusterIP"],
                "clusters": [name],
            },
        }))
        .unwrap();
        grants.create(&PostParams::default(), &grant).await.unwrap();

        // Placed there (admitted once the webhook's cache has the grant), running there.
        let workspaces: Api<Workspace> = Api::namespaced(admin.clone(), NAMESPACE);
        let workspace = unique_name(&format!("{tag}-ws"));
        let mut spec = nginx();
        spec["placement"] = json!({"cluster": name});
        eventually("the placed workspace admitted", TIMEOUT, || async {
            workspaces
                .create(&PostParams::default(), &manifest(&workspace, spec.clone()))
                .await
                .ok()
        })
        .await;
        let ws = wait_for(&workspaces, &workspace, "Running on the edge", |ws| {
            phase(ws) == Some(WorkspacePhase::Running)
        })
        .await;
        assert_eq!(ws.status.unwrap().cluster.as_deref(), Some(name.as_str()));
        Self {
            cluster,
            name,
            kubeconfig,
            registrations,
            grants,
            workspaces,
            workspace,
        }
    }

    /// The placed workspace's proxy path, without the trailing slash.
    fn prefix(&self) -> String {
        format!("/w/{NAMESPACE}/{}", self.workspace)
    }

    /// Deletes the workspace (its objects there with it), the registration, the grant and
    /// the kubeconfig Secret.
    async fn remove(self) {
        use guildnet_e2e::registrations::SECRETS_NAMESPACE;
        use k8s_openapi::api::core::v1::Secret;

        self.workspaces
            .delete(&self.workspace, &DeleteParams::default())
            .await
            .unwrap();
        wait_gone(&self.workspaces, &self.workspace).await;
        let admin = client(User::Admin).await;
        self.registrations
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
        self.grants
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
        Api::<Secret>::namespaced(admin, SECRETS_NAMESPACE)
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

async fn set_network(
    registrations: &Api<guildnet_api::ClusterRegistration>,
    name: &str,
    network: &str,
) {
    registrations
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"network": network}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_workspace_placed_on_a_registered_cluster_is_reached_at_the_same_url() {
    use guildnet_api::workspace::facts::ConditionType;
    use guildnet_e2e::cluster::free_port;
    use guildnet_e2e::registrations::put_kubeconfig;

    let edge = Edge::start("px-edge", None).await;
    let (api, name, cluster) = (&edge.workspaces, &edge.workspace, &edge.name);
    let admin = client(User::Admin).await;

    // The same URL as a local workspace's: HTTP and WebSocket, dialled directly.
    let prefix = edge.prefix();
    let response = eventually("the proxy to route to the edge", TIMEOUT, || async {
        let response = get_as(User::Admin, &format!("{prefix}/hello?x=1")).await;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    let echo = json_of(&response);
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(echo["headers"]["x-forwarded-prefix"], prefix.as_str());
    assert!(
        echo["headers"]["x-forwarded-uri"].is_null(),
        "not through an API server: {echo}"
    );
    let ws_request = websocket_as(User::Admin, &format!("{prefix}/ws"));
    ws_echo(ws_request)
        .await
        .expect("WebSocket echo through the proxy to the edge");

    // Its traffic is recorded as a local one's (the reaper reads it), and suspending it
    // scales it to zero there, which the proxy says as for a local one.
    wait_for(api, name, "lastAccessTime written", |ws| {
        last_access(ws).is_some()
    })
    .await;
    set_suspended(api, name, true).await;
    wait_for(api, name, "Stopped", |ws| {
        phase(ws) == Some(WorkspacePhase::Stopped)
    })
    .await;
    let there = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
        edge.cluster.client(User::Admin).await,
        "guildnet-workspaces",
    );
    let remote = guildnet_api::cluster::facts::remote_name(NAMESPACE, name);
    assert_eq!(there.get(&remote).await.unwrap().spec.replicas, Some(0));
    let paused = eventually("the proxy to say it is suspended", TIMEOUT, || async {
        let response = get_as(User::Admin, &format!("{prefix}/")).await;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    let message = json_of(&paused)["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("is suspended"),
        "{message}"
    );
    set_suspended(api, name, false).await;
    wait_for(api, name, "Running again", |ws| {
        phase(ws) == Some(WorkspacePhase::Running)
    })
    .await;

    // The edge out of reach: refused at once, saying why.
    let mut nowhere = kube::config::Kubeconfig::from_yaml(&edge.kubeconfig).unwrap();
    nowhere.clusters[0].cluster.as_mut().unwrap().server =
        Some(format!("https://127.0.0.1:{}", free_port()));
    put_kubeconfig(&admin, cluster, &serde_yaml::to_string(&nowhere).unwrap()).await;
    wait_for(api, name, "Degraded", |ws| {
        let outage = ws.cluster_outage();
        outage.is_some_and(|c| c.type_ == ConditionType::Degraded.as_str())
    })
    .await;
    // Once the proxy's cache has the condition too.
    let refused = eventually("the proxy to refuse at once", TIMEOUT, || async {
        let response = get_as(User::Admin, &format!("{prefix}/hello")).await;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    let error = expect_json(&refused, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error["error"]["reason"], "ClusterUnreachable");

    // Back, then gone: its objects there with it.
    put_kubeconfig(&admin, cluster, &edge.kubeconfig).await;
    wait_for(api, name, "reachable again", |ws| {
        ws.cluster_outage().is_none()
    })
    .await;
    edge.remove().await;
}

#[tokio::test]
async fn a_workspace_on_a_cluster_registered_with_api_server_proxy_is_reached_through_its_api_server()
 {
    use guildnet_api::cluster::facts::{remote_name, service_proxy_path};

    let edge = Edge::start("px-apiserver", Some("APIServerProxy")).await;
    let prefix = edge.prefix();
    let remote = remote_name(NAMESPACE, &edge.workspace);
    let port = edge
        .workspaces
        .get(&edge.workspace)
        .await
        .unwrap()
        .spec
        .primary_port_name();
    let proxy_path = service_proxy_path("guildnet-workspaces", &remote, &port.unwrap());

    // Through the edge's API server, which says so in the X-Forwarded-Uri it adds: the
    // operator handed the proxy the registration's kubeconfig once it checked that it may
    // open services/proxy there.
    let echo = eventually(
        "the proxy to go through the edge's API server",
        TIMEOUT,
        || async {
            let response = get_as(User::Admin, &format!("{prefix}/hello?x=1")).await;
            let echo = (response.status() == StatusCode::OK).then(|| json_of(&response))?;
            echo["headers"]["x-forwarded-uri"]
                .is_string()
                .then_some(echo)
        },
    )
    .await;
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(
        echo["headers"]["x-forwarded-uri"],
        format!("{proxy_path}/hello")
    );
    assert_eq!(echo["headers"]["x-forwarded-prefix"], prefix.as_str());
    assert!(
        echo["headers"]["authorization"].is_null(),
        "no credentials reach the workspace: {echo}"
    );

    // What the API server writes into Locations and HTML links is taken out again: the
    // browser sees the workspace's own, under the workspace's prefix as for a local one.
    let redirect = get_as(
        User::Admin,
        &format!("{prefix}/redirect?to=/signed-in%3Fnext%3D1"),
    )
    .await;
    assert_eq!(redirect.status(), StatusCode::FOUND);
    assert_eq!(
        redirect.headers()[LOCATION],
        format!("{prefix}/signed-in?next=1").as_str()
    );
    let page = get_as(User::Admin, &format!("{prefix}/page?link=/static/app.js")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = String::from_utf8(page.body().to_vec()).unwrap();
    assert!(html.contains(r#"href="/static/app.js""#), "{html}");
    assert!(!html.contains("/api/v1/"), "{html}");

    // WebSocket through the API server's upgrade.
    ws_echo(websocket_as(User::Admin, &format!("{prefix}/ws")))
        .await
        .expect("WebSocket echo through the edge's API server");

    // The edge's API server hangs (SIGSTOP): the hub's own workspaces answer through the
    // proxy as ever.
    let (_, local) = launch("px-local", nginx()).await;
    let paused = edge.cluster.pause_api_server();
    let response = get_as(User::Alice, &format!("/w/{NAMESPACE}/{local}/")).await;
    assert_eq!(response.status(), StatusCode::OK);
    drop(paused);

    // Back to Direct: the operator takes the kubeconfig back and the proxy dials the pod.
    set_network(&edge.registrations, &edge.name, "Direct").await;
    eventually(
        "the proxy to dial the edge's pod directly",
        TIMEOUT,
        || async {
            let response = get_as(User::Admin, &format!("{prefix}/hello")).await;
            let echo = (response.status() == StatusCode::OK).then(|| json_of(&response))?;
            echo["headers"]["x-forwarded-uri"].is_null().then_some(())
        },
    )
    .await;
    edge.remove().await;
}
