//! The proxy's cost on the local control plane: one workspace (a KWOK pod whose IP the test
//! upstream answers on), loaded by `wrk` directly, through guildnet-proxy, through nginx
//! (Debian's, as a keep-alive reverse proxy to the same pod IP) and through
//! configurable-http-proxy (JupyterHub's proxy, with the same pod IP as its default target),
//! one after the other in one run; the proxy's resident memory after the load; then WebSocket
//! echo round trips directly and through the proxy. Run by `make bench` inside a stack
//! (with-stack.sh) built in release mode; prints a Markdown section.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use guildnet_api::workspace::{Workspace, WorkspacePhase};
use guildnet_e2e::cluster::{free_port, repo_root};
use guildnet_e2e::cpu::rss_bytes;
use guildnet_e2e::upstream::{get, pod_ip_of_workspace, send, upstream_port};
use guildnet_e2e::workspaces::{WAIT, manifest, wait_for};
use guildnet_e2e::{User, client, eventually, token, unique_name};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const LOAD_SECONDS: u32 = 10;
const CONNECTIONS: u32 = 32;
const WS_ROUND_TRIPS: usize = 2000;

struct Load {
    requests_per_second: f64,
    p50: String,
    p99: String,
}

/// A latency as wrk prints it (`812.00us`, `1.23ms`, `1.02s`, `2.00m`), in seconds.
fn seconds(latency: &str) -> f64 {
    let split = latency
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or_else(|| panic!("a unit in wrk's latency {latency:?}"));
    let (value, unit) = latency.split_at(split);
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("a number in wrk's latency {latency:?}"));
    value
        * match unit {
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => panic!("an unknown unit in wrk's latency {latency:?}"),
        }
}

/// `wrk --latency` against `url`, with `header` if any.
fn wrk(url: &str, header: Option<&str>) -> Load {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{LOAD_SECONDS}s"),
        "--latency",
    ]);
    if let Some(header) = header {
        command.args(["-H", header]);
    }
    let output = command
        .arg(url)
        .output()
        .expect("run wrk (make deps installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    let non_2xx = text.lines().find(|l| l.contains("Non-2xx"));
    assert!(non_2xx.is_none(), "{url}: {text}");
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output: {text}"))
    };
    Load {
        requests_per_second: field("Requests/sec:").parse().unwrap(),
        p50: field("50%"),
        p99: field("99%"),
    }
}

/// nginx as a reverse proxy to `upstream` on a free loopback port, with keep-alive to the
/// upstream like guildnet-proxy's pool; stopped when dropped.
struct Nginx {
    addr: SocketAddr,
    process: std::process::Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, so the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .arg(self.process.id().to_string())
            .status();
        let _ = self.process.wait();
    }
}

fn nginx(upstream: SocketAddr, dir: &Path) -> Nginx {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = dir.display();
    let config = format!(
        "daemon off; worker_processes auto; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream workspace {{ server {upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://workspace;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $host;
    }}
  }}
}}
"
    );
    let path = format!("{dir}/nginx.conf");
    std::fs::write(&path, config).unwrap();
    let process = Command::new("nginx")
        .args(["-c", &path, "-p", &dir.to_string()])
        .stderr(Stdio::null())
        .spawn()
        .expect("run nginx (make deps installs it)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start; see {dir}/error.log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { addr, process }
}

/// configurable-http-proxy as e2e/chp/package-lock.json pins it (scripts/bench.sh installs it).
fn chp_binary() -> PathBuf {
    let binary = repo_root().join("e2e/chp/node_modules/.bin/configurable-http-proxy");
    assert!(
        binary.exists(),
        "{} is missing: run scripts/bench.sh, or `npm ci` in e2e/chp",
        binary.display()
    );
    binary
}

/// configurable-http-proxy on a free loopback port with `upstream` as its default target (so
/// every path goes there, as JupyterHub routes a user's server), its API on another loopback
/// port; in a process group of its own, which is stopped as a whole when dropped.
struct Chp {
    addr: SocketAddr,
    process: std::process::Child,
}

impl Chp {
    async fn start(upstream: SocketAddr, dir: &Path) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("chp.log");
        let file = std::fs::File::create(&log).expect("create configurable-http-proxy's log");
        let process = Command::new(chp_binary())
            .args(["--ip", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--api-ip", "127.0.0.1", "--api-port", &free_port().to_string()])
            .args(["--default-target", &format!("http://{upstream}")])
            .args(["--log-level", "warn"])
            // The API asks for this token; nothing calls it, but without one it warns.
            .env("CONFIGPROXY_AUTH_TOKEN", unique_name("bench-chp"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("run configurable-http-proxy");
        let chp = Self { addr, process };
        eventually(
            &format!("configurable-http-proxy to answer (log: {})", log.display()),
            Duration::from_secs(30),
            || async {
                let response = get(addr, "/bench").await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
        chp
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for Chp {
    fn drop(&mut self) {
        // The whole group, so nothing it started outlives the benchmark.
        let group = format!("-{}", self.process.id());
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .args([name, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("-KILL");
        let _ = self.process.wait();
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Milliseconds of `WS_ROUND_TRIPS` echo round trips on one WebSocket: (p50, p99).
async fn ws_round_trips(url: &str, authorization: Option<&str>) -> (f64, f64) {
    let mut request = url.into_client_request().unwrap();
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut samples = Vec::with_capacity(WS_ROUND_TRIPS);
    let message = Message::text("x".repeat(32));
    for _ in 0..WS_ROUND_TRIPS {
        let started = Instant::now();
        socket.send(message.clone()).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), message);
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (at(0.50), at(0.99))
}

#[tokio::main]
async fn main() {
    let proxy: SocketAddr = std::env::var("GUILDNET_PROXY_URL")
        .expect("GUILDNET_PROXY_URL: run inside scripts/with-stack.sh")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy_pid: u32 = std::env::var("GUILDNET_PROXY_PID")
        .expect("GUILDNET_PROXY_PID: run inside scripts/with-stack.sh")
        .parse()
        .unwrap();
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let name = unique_name("bench-proxy");
    let ws = manifest(
        &name,
        json!({"image": "nginx:1.27", "ports": [{"containerPort": upstream_port()}]}),
    );
    api.create(&PostParams::default(), &ws).await.unwrap();
    let pod = pod_ip_of_workspace(&client(User::Admin).await, "default", &name).await;
    let upstream = SocketAddr::new(pod, upstream_port());
    let bearer = format!("Bearer {}", token(User::Alice));
    let through_proxy = format!("http://{proxy}/w/default/{name}/bench");
    wait_for(&api, &name, "Running", |ws| {
        ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Running)
    })
    .await;
    eventually("the proxy to route the workspace", WAIT, || async {
        let request = hyper::Request::get(format!("/w/default/{name}/bench"))
            .header("host", proxy.to_string())
            .header("authorization", &bearer)
            .body(String::new())
            .ok()?;
        let response = send(proxy, request).await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;

    let dir = std::env::temp_dir().join(unique_name("bench-nginx"));
    std::fs::create_dir_all(&dir).unwrap();
    let nginx = nginx(upstream, &dir);
    let chp = Chp::start(upstream, &dir).await;
    let proxy_rss_before = rss_bytes(proxy_pid);
    let direct = wrk(&format!("http://{upstream}/bench"), None);
    let guildnet = wrk(&through_proxy, Some(&format!("Authorization: {bearer}")));
    let proxy_rss = rss_bytes(proxy_pid);
    let by_nginx = wrk(&format!("http://{}/bench", nginx.addr), None);
    let chp_rss_before = rss_bytes(chp.pid());
    let by_chp = wrk(&format!("http://{}/bench", chp.addr), None);
    let chp_rss = rss_bytes(chp.pid());
    drop(nginx);
    drop(chp);
    let _ = std::fs::remove_dir_all(&dir);

    let ws_direct = ws_round_trips(&format!("ws://{upstream}/ws"), None).await;
    let ws_proxied =
        ws_round_trips(&format!("ws://{proxy}/w/default/{name}/ws"), Some(&bearer)).await;
    api.delete(&name, &DeleteParams::default()).await.unwrap();

    println!("### Proxy throughput and latency");
    println!();
    println!(
        "`wrk -t2 -c{CONNECTIONS} -d{LOAD_SECONDS}s --latency`, one after the other against the same test upstream on a \
         workspace's pod IP (in a network namespace, over a veth): directly, through guildnet-proxy \
         (release build; bearer token, owner check, EndpointSlice lookup, header rewrites, activity), \
         through nginx (Debian's, `worker_processes auto`, keep-alive upstream), and through \
         configurable-http-proxy (JupyterHub's proxy: npm `configurable-http-proxy` as \
         `e2e/chp/package-lock.json` pins it, on the machine's Node.js, its default target the \
         pod). wrk, the proxies and the upstream share the machine's cores."
    );
    println!();
    println!("| path | requests/s | p50 | p99 |");
    println!("|---|---:|---:|---:|");
    for (label, load) in [
        ("direct to the pod", &direct),
        ("guildnet-proxy", &guildnet),
        ("nginx", &by_nginx),
        ("configurable-http-proxy", &by_chp),
    ] {
        println!(
            "| {label} | {:.0} | {} | {} |",
            load.requests_per_second, load.p50, load.p99
        );
    }
    println!();
    let met = |yes: bool| if yes { "met" } else { "missed" };
    let over_nginx = guildnet.requests_per_second / by_nginx.requests_per_second;
    let over_chp = guildnet.requests_per_second / by_chp.requests_per_second;
    let p99_no_worse = seconds(&guildnet.p99) <= seconds(&by_nginx.p99);
    println!(
        "guildnet-proxy ÷ nginx: {over_nginx:.2}× the requests/s (goal ≥ 1.0×: {}); p99 {} against \
         nginx's {} (goal no worse: {}).",
        met(over_nginx >= 1.0),
        guildnet.p99,
        by_nginx.p99,
        met(p99_no_worse)
    );
    println!();
    println!(
        "guildnet-proxy ÷ configurable-http-proxy: {over_chp:.2}× the requests/s (goal ≥ 3×: {}).",
        met(over_chp >= 3.0)
    );
    println!();
    println!("### Proxy memory");
    println!();
    println!(
        "Resident memory (`VmRSS`) before and right after the proxy's {LOAD_SECONDS} s of load \
         above; configurable-http-proxy's (one Node.js process) beside it."
    );
    println!();
    println!("| process | RSS before the load | RSS after the load |");
    println!("|---|---:|---:|");
    println!(
        "| guildnet-proxy | {} | {} |",
        mib(proxy_rss_before),
        mib(proxy_rss)
    );
    println!(
        "| configurable-http-proxy | {} | {} |",
        mib(chp_rss_before),
        mib(chp_rss)
    );
    println!();
    println!("### WebSocket round trip");
    println!();
    println!("{WS_ROUND_TRIPS} echo round trips of a 32-byte text message on one connection.");
    println!();
    println!("| path | p50 | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| direct to the pod | {:.3} ms | {:.3} ms |",
        ws_direct.0, ws_direct.1
    );
    println!(
        "| guildnet-proxy | {:.3} ms | {:.3} ms |",
        ws_proxied.0, ws_proxied.1
    );
    println!(
        "| added by the proxy | {:.3} ms | {:.3} ms |",
        ws_proxied.0 - ws_direct.0,
        ws_proxied.1 - ws_direct.1
    );
    println!();
}
