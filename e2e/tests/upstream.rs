//! The test upstream that stands in for workspace pods: its routes on loopback, then on the
//! pod IP of a real (KWOK) workspace pod, reached from the host as the proxy will reach it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::FutureExt;
use guildnet_api::Workspace;
use guildnet_e2e::upstream::{get, pod_ip_of_workspace, send, upstream_port, ws_echo};
use guildnet_e2e::workspaces::{manifest, wait_for};
use guildnet_e2e::{User, client, unique_name};
use http_body_util::BodyExt;
use hyper::header::{CONTENT_LENGTH, HOST, LOCATION, SEC_WEBSOCKET_PROTOCOL, SET_COOKIE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A test upstream of this test's own, killed when dropped.
struct Upstream {
    addr: SocketAddr,
    process: Child,
}

impl Upstream {
    /// Sends SIGTERM, as with-stack.sh does, and waits for the exit.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.process.id().unwrap().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(kill.await.unwrap().success());
        self.process.wait().await.unwrap()
    }
}

/// Starts the test upstream on `listen` and returns once it is bound.
async fn start(listen: &str) -> Upstream {
    let mut process = Command::new(env!("CARGO_BIN_EXE_test-upstream"))
        .args(["--listen", listen])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start test-upstream");
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("test-upstream binds within 10 s")
        .unwrap()
        .expect("test-upstream prints its address");
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    Upstream { addr, process }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn echo_reports_the_request_exactly_as_received() {
    let upstream = start("127.0.0.1:0").await;
    let body = "x".repeat(3 << 20);
    let request = Request::post("/a/../b//c?x=%2F&y")
        .header(HOST, "workspace.test")
        .header("X-Repeated", "one")
        .header("X-Repeated", "two")
        .body(body)
        .unwrap();
    let response = send(upstream.addr, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo = json_of(response.body());
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/a/../b//c?x=%2F&y");
    assert_eq!(echo["headers"]["host"], "workspace.test");
    assert_eq!(echo["headers"]["x-repeated"], "one, two");
    assert_eq!(echo["localAddr"], upstream.addr.to_string());
    assert!(
        echo["peerAddr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{echo}"
    );
    assert_eq!(echo["bodyBytes"], 3 << 20);
}

#[tokio::test]
async fn redirects_cookies_and_statuses_are_what_the_query_asks_for() {
    let upstream = start("127.0.0.1:0").await;
    let redirect = get(upstream.addr, "/redirect?to=%2Flogin%3Fnext%3D%252Fhome")
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::FOUND);
    assert_eq!(redirect.headers()[LOCATION], "/login?next=%2Fhome");

    let cookies = get(
        upstream.addr,
        "/cookies?set=a%3D1%3B%20Path%3D%2F%3B%20Domain%3Dpod.test&set=b%3D2%3B%20Secure",
    )
    .await
    .unwrap();
    assert_eq!(cookies.status(), StatusCode::OK);
    let set: Vec<_> = cookies.headers().get_all(SET_COOKIE).iter().collect();
    assert_eq!(set, ["a=1; Path=/; Domain=pod.test", "b=2; Secure"]);

    for code in [204, 404, 502, 503] {
        let response = get(upstream.addr, &format!("/status/{code}"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), code);
    }
    let big = get(upstream.addr, "/big?bytes=1000001").await.unwrap();
    assert_eq!(big.headers()[CONTENT_LENGTH], "1000001");
    assert_eq!(big.body().len(), 1_000_001);
}

#[tokio::test]
async fn slow_and_streamed_responses_take_their_time() {
    let upstream = start("127.0.0.1:0").await;
    let started = Instant::now();
    let slow = get(upstream.addr, "/slow?ms=300").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(json_of(slow.body())["path"], "/slow?ms=300");

    // Read chunk by chunk: the lines arrive as they are written, not all at the end.
    let stream = TcpStream::connect(upstream.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/stream?chunks=3&ms=250")
        .header(HOST, "workspace.test")
        .body(String::new())
        .unwrap();
    let sent = Instant::now();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let mut frames = 0;
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames += 1;
            text.push_str(std::str::from_utf8(&data).unwrap());
            if frames == 1 {
                // The next line is written 250 ms after this one: the first came alone.
                // (Comparing arrival times instead fails whenever this task is scheduled
                // late for the first frame on a busy machine.)
                assert!(
                    body.frame().now_or_never().is_none(),
                    "the first line arrives before the next is written"
                );
            }
        }
    }
    assert_eq!(text, "chunk 0\nchunk 1\nchunk 2\n");
    assert_eq!(frames, 3, "one frame per chunk");
    assert!(sent.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn reset_drops_the_connection_without_a_response() {
    let upstream = start("127.0.0.1:0").await;
    let mut stream = TcpStream::connect(upstream.addr).await.unwrap();
    stream
        .write_all(b"GET /reset HTTP/1.1\r\nHost: workspace.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("the connection ends within 10 s");
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn websocket_echoes_and_takes_the_first_subprotocol_offered() {
    let upstream = start("127.0.0.1:0").await;
    ws_echo(format!("ws://{}/ws", upstream.addr)).await.unwrap();

    let mut request = format!("ws://{}/ws", upstream.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        "v1.kernel.websocket.jupyter.org, other".parse().unwrap(),
    );
    let response = ws_echo(request).await.unwrap();
    assert_eq!(
        response.headers()[SEC_WEBSOCKET_PROTOCOL],
        "v1.kernel.websocket.jupyter.org"
    );
}

#[tokio::test]
async fn two_copies_share_a_port() {
    let first = start("127.0.0.1:0").await;
    let second = start(&first.addr.to_string()).await;
    assert_eq!(second.addr, first.addr);
    for _ in 0..4 {
        let response = get(second.addr, "/").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert!(first.terminate().await.success());
    for _ in 0..4 {
        let response = get(second.addr, "/").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "the other copy answers");
    }
}

#[tokio::test]
async fn sigterm_stops_accepting_but_lets_open_requests_finish() {
    let upstream = start("127.0.0.1:0").await;
    let addr = upstream.addr;
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let exit = tokio::spawn(upstream.terminate());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections"
    );
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(exit.await.unwrap().success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exits once done"
    );
}

#[tokio::test]
async fn a_workspace_pod_ip_serves_http_and_websocket() {
    let port = upstream_port();
    let name = unique_name("upstream");
    let alice: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let workspace = manifest(&name, json!({"image": "nginx:1.27"}));
    alice
        .create(&PostParams::default(), &workspace)
        .await
        .unwrap();
    wait_for(&alice, &name, "Ready", |ws| {
        ws.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;

    let admin = client(User::Admin).await;
    let ip = pod_ip_of_workspace(&admin, "default", &name).await;
    let pods = Api::<Pod>::namespaced(admin, "default")
        .list(&ListParams::default().labels(&format!("guildnet.io/id={name}")))
        .await
        .unwrap();
    let pod_ips: Vec<_> = pods
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    assert!(
        pod_ips.contains(&ip.to_string()),
        "{ip} is the IP of the workspace's pod {pod_ips:?}"
    );

    let addr = SocketAddr::new(ip, port);
    let response = get(addr, "/hello?x=1").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo = json_of(response.body());
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(echo["localAddr"], addr.to_string(), "reached at the pod IP");

    ws_echo(format!("ws://{addr}/ws")).await.unwrap();

    alice.delete(&name, &DeleteParams::default()).await.unwrap();
}
