//! The admission webhook on a control plane of its own: (a) the handler under a steady
//! 1,000 requests/s of a recorded AdmissionReview (`webhook/tests/fixtures/create.json`)
//! on `/mutate` and `/validate`; (b) what the webhook adds to a Workspace create on the API
//! server, timed without and with the webhook registered. Run by `make bench` (which builds
//! the release binary first); prints a Markdown section.
//!
//! The webhook measured is `target/release/guildnet-webhook`, or `GUILDNET_WEBHOOK_BINARY`
//! to compare another build. The load is open loop: request `i` is due at `start + i / RATE`
//! whatever happened to the ones before, and its latency runs from that due time to the last
//! byte of the answer, so a stalled server or client is charged for every request it delays
//! (no coordinated omission). It runs on plain threads with blocking HTTP/1.1 keep-alive
//! connections whose TLS handshakes finish before the clock starts (the API server keeps its
//! HTTP/2 connection open too): tokio's timer rounds sleeps up to whole milliseconds, which
//! at 1,000 requests/s would make the load generator itself up to a request late.

use guildnet_api::{Capabilities, Workspace};
use guildnet_e2e::User;
use guildnet_e2e::cluster::{Cluster, free_port, repo_root};
use guildnet_e2e::cpu::{TICKS_PER_SECOND, machine_busy_ticks, process_ticks, rss_bytes};
use guildnet_e2e::workspaces::manifest;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Requests per second of the load.
const RATE: u64 = 1_000;
/// How long each path is loaded.
const LOAD: Duration = Duration::from_secs(10);
/// Load before each measurement, left out of the numbers.
const WARM_UP: Duration = Duration::from_secs(1);
/// Keep-alive connections (one client thread each) the load is spread over: enough that a
/// stall of several milliseconds does not leave a due request without a free connection.
const CONNECTIONS: usize = 16;
/// Each measurement waits (at most [`QUIET_WAIT`]) until processes other than the webhook
/// and this benchmark use less than this many cores: on a shared machine their CPU time is
/// what the tail is made of.
const QUIET_CORES: f64 = 0.25;
const QUIET_WAIT: Duration = Duration::from_secs(120);
/// The API server's calls to admission webhooks for Workspace CREATEs so far, by type
/// (`admit`: mutating, `validating`): (calls, seconds), from its
/// `apiserver_admission_webhook_admission_duration_seconds`.
async fn apiserver_webhook_calls(
    admin: &kube::Client,
) -> std::collections::HashMap<String, (f64, f64)> {
    let request = hyper::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin
        .request_text(request)
        .await
        .expect("API server metrics");
    let mut calls = std::collections::HashMap::<String, (f64, f64)>::new();
    for line in text.lines().filter(|l| l.contains("operation=\"CREATE\"")) {
        let Some(rest) =
            line.strip_prefix("apiserver_admission_webhook_admission_duration_seconds_")
        else {
            continue;
        };
        let kind = rest
            .split_once("type=\"")
            .and_then(|(_, t)| t.split_once('"'))
            .map(|(t, _)| t.to_owned())
            .unwrap_or_default();
        let value: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        let entry = calls.entry(kind).or_default();
        if rest.starts_with("count{") {
            entry.0 += value;
        } else if rest.starts_with("sum{") {
            entry.1 += value;
        }
    }
    calls
}

/// Timed Workspace creates with and without the webhook.
const CREATES: usize = 300;
const TIMEOUT: Duration = Duration::from_secs(60);

/// The webhook binary under test.
fn webhook_binary() -> PathBuf {
    let binary = std::env::var_os("GUILDNET_WEBHOOK_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/guildnet-webhook"));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release -p guildnet-webhook` (scripts/bench.sh does)",
        binary.display()
    );
    binary
}

/// A webhook process registered for `https://<listen>`, killed when dropped. The e2e
/// helper runs the debug build; this one runs [`webhook_binary`].
struct WebhookProcess {
    child: Child,
    listen: SocketAddr,
}

impl WebhookProcess {
    fn start(cluster: &Cluster) -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(cluster.logs().join("webhook.log"))
            .expect("create the webhook log");
        let child = Command::new(webhook_binary())
            .env("KUBECONFIG", cluster.webhook_kubeconfig())
            .env("RUST_LOG", "info,kube=warn")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--webhook-url")
            .arg(format!("https://{listen}"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start the webhook");
        Self { child, listen }
    }
}

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Connection = BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// A keep-alive connection with its TLS handshake done.
fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Connection {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let server_name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::clone(config), server_name).expect("TLS");
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).expect("TLS handshake");
    }
    BufReader::new(rustls::StreamOwned::new(tls, tcp))
}

/// Sends one request on a keep-alive connection and reads the whole response; its status.
fn exchange(conn: &mut Connection, request: &[u8], line: &mut String) -> u16 {
    conn.get_mut().write_all(request).expect("send");
    line.clear();
    conn.read_line(line).expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status");
    let mut length = 0;
    loop {
        line.clear();
        conn.read_line(line).expect("header");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).expect("body");
    status
}

/// One request's latency: from when it was due, and from when it was actually sent.
#[derive(Clone, Copy)]
struct Sample {
    due: Duration,
    sent: Duration,
}

/// CPU time in the kernel's USER_HZ ticks (1/100 s).
#[derive(Clone, Copy)]
struct Cpu {
    /// The machine's busy time (`/proc/stat`: all but idle and iowait; steal included).
    machine: u64,
    webhook: u64,
    /// This process: the load generator.
    bench: u64,
}

impl Cpu {
    /// Now; `webhook` is the webhook's process id, once it runs.
    fn now(webhook: Option<u32>) -> Self {
        Self {
            machine: machine_busy_ticks(),
            webhook: webhook.map_or(0, |pid| process_ticks(&pid.to_string())),
            bench: process_ticks("self"),
        }
    }

    /// Cores' worth of CPU other processes used since `earlier`, `elapsed` ago.
    fn others_since(&self, earlier: &Self, elapsed: Duration) -> f64 {
        let ours = (self.webhook - earlier.webhook) + (self.bench - earlier.bench);
        let others = (self.machine - earlier.machine).saturating_sub(ours);
        others as f64 / TICKS_PER_SECOND / elapsed.as_secs_f64()
    }
}

/// Waits until other processes use less than [`QUIET_CORES`] over a second, at most
/// [`QUIET_WAIT`]; how long it waited.
fn until_quiet(webhook: Option<u32>) -> Duration {
    let start = Instant::now();
    while start.elapsed() < QUIET_WAIT {
        let (before, at) = (Cpu::now(webhook), Instant::now());
        std::thread::sleep(Duration::from_secs(1));
        if Cpu::now(webhook).others_since(&before, at.elapsed()) < QUIET_CORES {
            break;
        }
    }
    start.elapsed()
}

/// [`until_quiet`], from async code.
async fn quiet(webhook: Option<u32>) {
    tokio::task::spawn_blocking(move || until_quiet(webhook))
        .await
        .expect("waiting for a quiet machine");
}

/// A measured load: its samples, and the CPU the webhook and other processes used.
struct Run {
    samples: Vec<Sample>,
    /// The webhook's CPU time per request.
    webhook_cpu: Duration,
    /// Cores' worth of CPU used by processes other than the webhook and the load generator
    /// (the control plane among them).
    others: f64,
    /// How long it waited for the machine to be quiet first.
    waited: Duration,
}

/// Loads `path` at [`RATE`] for `duration` over fresh connections, open loop.
fn load(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
    duration: Duration,
) -> Vec<Sample> {
    let mut request = format!(
        "POST {path}?timeout=5s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let total = duration.as_millis() as u64 * RATE / 1000;
    let period = Duration::from_nanos(1_000_000_000 / RATE);
    let connections: Vec<Connection> = (0..CONNECTIONS).map(|_| connect(addr, config)).collect();
    let next = AtomicU64::new(0);
    // Time for the threads to start before the first request is due.
    let start = Instant::now() + Duration::from_millis(10);
    std::thread::scope(|scope| {
        let workers: Vec<_> = connections
            .into_iter()
            .map(|mut conn| {
                let (next, request) = (&next, &request);
                scope.spawn(move || {
                    let mut samples = Vec::new();
                    let mut line = String::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return samples;
                        }
                        let due = start + period * i as u32;
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        let sent = Instant::now();
                        let status = exchange(&mut conn, request, &mut line);
                        let done = Instant::now();
                        assert_eq!(status, 200, "the webhook answers");
                        samples.push(Sample {
                            due: done - due,
                            sent: done - sent,
                        });
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a load thread"))
            .collect()
    })
}

/// Warms `path` up, waits for a quiet machine, and measures [`LOAD`] of it.
fn measure(
    webhook: Option<u32>,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
) -> Run {
    load(addr, config, path, body, WARM_UP);
    let waited = until_quiet(webhook);
    let (before, start) = (Cpu::now(webhook), Instant::now());
    let samples = load(addr, config, path, body, LOAD);
    let (after, elapsed) = (Cpu::now(webhook), start.elapsed());
    let webhook_cpu = Duration::from_millis((after.webhook - before.webhook) * 10);
    Run {
        webhook_cpu: webhook_cpu / samples.len() as u32,
        others: after.others_since(&before, elapsed),
        samples,
        waited,
    }
}

fn workspace(name: &str, image: &str) -> Workspace {
    manifest(name, serde_json::json!({"image": image}))
}

/// Times [`CREATES`] sequential Workspace creates named `<prefix>-<i>`.
async fn creates(api: &Api<Workspace>, prefix: &str) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(CREATES);
    for i in 0..CREATES {
        let ws = workspace(&format!("{prefix}-{i}"), "nginx:1.27");
        let start = Instant::now();
        api.create(&PostParams::default(), &ws)
            .await
            .expect("create a workspace");
        samples.push(start.elapsed());
    }
    samples
}

/// Waits until both webhooks decide: a create gets its owner label (mutating) and a
/// disallowed image is refused (validating, which refuses everything until its caches are
/// synced).
async fn until_admitting(workspaces: &Api<Workspace>) {
    guildnet_e2e::eventually(
        "the webhook to refuse a disallowed image",
        TIMEOUT,
        || async {
            let refused = workspaces
                .create(
                    &PostParams::default(),
                    &workspace("warm-up-denied", "docker.io/library-evil/x"),
                )
                .await;
            match refused {
                Err(kube::Error::Api(status)) => (status.reason == "ImageDenied").then_some(()),
                Ok(created) => {
                    let _ = workspaces
                        .delete(&created.name_any(), &Default::default())
                        .await;
                    None
                }
                Err(_) => None,
            }
        },
    )
    .await;
    let mut n = 0;
    guildnet_e2e::eventually("the webhook to set the owner", TIMEOUT, || {
        n += 1;
        let ws = workspace(&format!("warm-up-with-{n}"), "nginx:1.27");
        async move {
            let created = workspaces.create(&PostParams::default(), &ws).await.ok()?;
            created
                .labels()
                .contains_key("guildnet.io/owner")
                .then_some(())
        }
    })
    .await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Sorted latencies with their p50, p99, p99.9 and max.
struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self {
            n: samples.len(),
            p50: percentile(&samples, 0.5),
            p99: percentile(&samples, 0.99),
            p999: percentile(&samples, 0.999),
            max: samples[samples.len() - 1],
        }
    }
}

#[tokio::main]
async fn main() {
    let cluster = Cluster::start("bench-webhook");
    let admin = cluster.client(User::Admin).await;
    let starter =
        std::fs::read_to_string(repo_root().join("webhook/config/starter-capabilities.yaml"))
            .expect("read the starter Capabilities");
    let starter: Capabilities = serde_yaml::from_str(&starter).expect("parse the Capabilities");
    Api::<Capabilities>::all(admin.clone())
        .create(&PostParams::default(), &starter)
        .await
        .expect("create the starter Capabilities");
    let workspaces: Api<Workspace> = Api::namespaced(admin.clone(), "default");

    // (b) without the webhook, after a warm-up: the API server's first Workspace request is
    // slow.
    workspaces
        .create(
            &PostParams::default(),
            &workspace("warm-up-without", "nginx:1.27"),
        )
        .await
        .expect("create a workspace");
    quiet(None).await;
    let without = Stats::of(creates(&workspaces, "without").await);

    let webhook = WebhookProcess::start(&cluster);
    until_admitting(&workspaces).await;
    quiet(Some(webhook.child.id())).await;
    let calls_before = apiserver_webhook_calls(&admin).await;
    let with = Stats::of(creates(&workspaces, "with").await);
    let calls = apiserver_webhook_calls(&admin).await;

    // (a) the handler, called directly with the recorded review.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "guildnet-system");
    let secret = secrets
        .get("guildnet-webhook-tls")
        .await
        .expect("the webhook's certificate Secret");
    let ca = secret.data.expect("Secret data")["ca.crt"].0.clone();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("a PEM certificate")).expect("a CA");
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let review = std::fs::read(repo_root().join("webhook/tests/fixtures/create.json"))
        .expect("read the recorded review");
    let (addr, pid) = (webhook.listen, Some(webhook.child.id()));
    let rss_before = rss_bytes(webhook.child.id());
    let handler = tokio::task::spawn_blocking(move || {
        ["/mutate", "/validate"].map(|path| measure(pid, addr, &config, path, &review))
    })
    .await
    .expect("the load");
    let rss_after = rss_bytes(webhook.child.id());

    println!(
        "### Handler latency and Workspace create overhead (`make bench`: e2e/benches/webhook.rs)\n"
    );
    println!(
        "The webhook's release build (tokio's default of one worker thread per core; nothing pinned) on a control plane of its own, with the load generator on the same machine. Handler: the recorded AdmissionReview `webhook/tests/fixtures/create.json` (a CREATE by alice, admitted; no Quota exists) sent at {RATE} req/s for {} s per path, after {} s of warm-up, over {CONNECTIONS} HTTPS (TLS 1.3) HTTP/1.1 keep-alive connections opened before the clock starts, so no handshake is measured; one blocking client thread per connection. The load is open loop: request *i* is due at start + *i* ms whatever happened to earlier ones, and p50 to max run from that due time to the last byte of the answer, so a stall is charged to every request it delays. That includes the load generator's own lateness (`late sends`: due → sent; a sleeping thread wakes late, more so on a busy machine); `send → answer` leaves it out. Webhook CPU: the process's user and system time over the measurement per request. Each measurement starts once processes other than the webhook and the load generator used less than {QUIET_CORES} cores for a second (waiting at most {} s); the last column is what they used during it. Target: handler p99 ≤ 2 ms.\n",
        LOAD.as_secs(),
        WARM_UP.as_secs(),
        QUIET_WAIT.as_secs()
    );
    println!(
        "| handler | requests | achieved | p50 | p99 | p99.9 | max | send → answer p50 / p99 / p99.9 | late sends p99 / p99.9 | webhook CPU per request | other processes' CPU |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut worst_p99 = Duration::ZERO;
    for (path, run) in ["`/mutate`", "`/validate`"].iter().zip(handler) {
        let sent = Stats::of(run.samples.iter().map(|s| s.sent).collect());
        let due = Stats::of(run.samples.iter().map(|s| s.due).collect());
        let late = Stats::of(run.samples.iter().map(|s| s.due - s.sent).collect());
        worst_p99 = worst_p99.max(due.p99);
        println!(
            "| {path} | {} | {:.0} req/s | {} | {} | {} | {} | {} / {} / {} | {} / {} | {} µs | {:.1} cores{} |",
            due.n,
            due.n as f64 / LOAD.as_secs_f64(),
            ms(due.p50),
            ms(due.p99),
            ms(due.p999),
            ms(due.max),
            ms(sent.p50),
            ms(sent.p99),
            ms(sent.p999),
            ms(late.p99),
            ms(late.p999),
            run.webhook_cpu.as_micros(),
            run.others,
            if run.waited >= QUIET_WAIT {
                " (never quiet)"
            } else {
                ""
            }
        );
    }
    println!(
        "\nHandler p99 target (≤ 2 ms): {}.\n",
        if worst_p99 <= Duration::from_millis(2) {
            "met"
        } else {
            "missed"
        }
    );
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "Webhook resident memory (`VmRSS`): {:.1} MiB after the {CREATES} creates it admitted (below, measured first), {:.1} MiB after the handler load above.\n",
        mib(rss_before),
        mib(rss_after)
    );
    println!(
        "Workspace creates on the API server as admin, {CREATES} sequential creates each, after a warm-up and, as above, once the machine was quiet; with the webhook both the mutating and the validating call are made.\n"
    );
    println!("| create | creates | p50 | p99 | max |\n|---|---|---|---|---|");
    for (what, stats) in [
        ("no webhook registered", &without),
        ("webhook registered", &with),
    ] {
        println!(
            "| Workspace create, {what} | {} | {} | {} | {} |",
            stats.n,
            ms(stats.p50),
            ms(stats.p99),
            ms(stats.max)
        );
    }
    println!(
        "\nAdded by the webhook: p50 {}, p99 {}.\n",
        ms(with.p50.saturating_sub(without.p50)),
        ms(with.p99.saturating_sub(without.p99))
    );
    let mean = |kind: &str| {
        let (after, before) = (
            calls[kind],
            calls_before.get(kind).copied().unwrap_or_default(),
        );
        let (count, seconds) = (after.0 - before.0, after.1 - before.1);
        (count, seconds * 1000.0 / count.max(1.0))
    };
    let ((mutations, mutating), (validations, validating)) = (mean("admit"), mean("validating"));
    println!(
        "The API server's own measure of its calls to the webhook during these creates (`apiserver_admission_webhook_admission_duration_seconds`, mean): the mutating call {mutating:.2} ms ({mutations:.0} calls), the validating call {validating:.2} ms ({validations:.0} calls); the webhook itself answers in the `send → answer` times above. What is left of the added time is the API server's own work around the calls: encoding each AdmissionReview, applying the patch, decoding and validating the object again.\n"
    );
    println!(
        "Where the time goes, and why the tail depends on what else the machine runs: [the webhook's performance notes](webhook.md#performance).\n"
    );
}
