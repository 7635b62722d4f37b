//! The admission webhook on a control plane of its own: (a) the handler under a steady
//! 1,000 requests/s of a recorded AdmissionReview (`webhook/tests/fixtures/create.json`)
//! over HTTPS keep-alive connections, as the API server sends them, on `/mutate` and
//! `/validate`; (b) what the webhook adds to a Workspace create on the API server, timed
//! without and with the webhook registered. Run by `make bench`; prints a Markdown section.

use guildnet_api::{Capabilities, Workspace};
use guildnet_e2e::User;
use guildnet_e2e::cluster::{Cluster, Webhook, repo_root};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc};

/// Requests per second of the load.
const RATE: u64 = 1_000;
/// How long each path is loaded.
const LOAD: Duration = Duration::from_secs(5);
/// Keep-alive connections the load is spread over.
const CONNECTIONS: usize = 16;
/// Timed Workspace creates with and without the webhook.
const CREATES: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(60);

type Tls = BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Tls {
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let server_name = ServerName::try_from("127.0.0.1").unwrap();
    BufReader::new(connector.connect(server_name, tcp).await.expect("TLS"))
}

/// Sends one request on a keep-alive connection and reads the whole response; its status.
async fn exchange(conn: &mut Tls, request: &[u8]) -> u16 {
    conn.get_mut().write_all(request).await.expect("send");
    let mut line = String::new();
    conn.read_line(&mut line).await.expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status");
    let mut length = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).await.expect("header");
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
    conn.read_exact(&mut body).await.expect("body");
    status
}

/// Loads `path` at [`RATE`] for `duration`; the latencies of the requests (send to full
/// response).
async fn load(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
    duration: Duration,
) -> Vec<Duration> {
    let mut request = format!(
        "POST {path}?timeout=5s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let request = Arc::new(request);
    let (tx, rx) = mpsc::channel::<Instant>(RATE as usize);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut conn = connect(addr, Arc::clone(&config)).await;
        let (rx, request) = (Arc::clone(&rx), Arc::clone(&request));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(_scheduled) = rx.lock().await.recv().await else {
                    return latencies;
                };
                let start = Instant::now();
                let status = exchange(&mut conn, &request).await;
                latencies.push(start.elapsed());
                assert_eq!(status, 200, "the webhook answers");
            }
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tick.tick().await;
        tx.send(Instant::now()).await.expect("workers run");
    }
    drop(tx);
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    latencies
}

fn workspace(name: &str) -> Workspace {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace",
        "metadata": {"name": name}, "spec": {"image": "nginx:1.27"}
    }))
    .unwrap()
}

/// Times [`CREATES`] sequential Workspace creates named `<prefix>-<i>`.
async fn creates(api: &Api<Workspace>, prefix: &str) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(CREATES);
    for i in 0..CREATES {
        let ws = workspace(&format!("{prefix}-{i}"));
        let start = Instant::now();
        api.create(&PostParams::default(), &ws)
            .await
            .expect("create a workspace");
        samples.push(start.elapsed());
    }
    samples
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, mut samples: Vec<Duration>, extra: &str) -> (String, Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    let line = format!(
        "| {what} | {} | {} | {} | {} |{extra}",
        samples.len(),
        ms(p50),
        ms(p99),
        ms(samples[samples.len() - 1])
    );
    (line, p50, p99)
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
        .create(&PostParams::default(), &workspace("warm-up-without"))
        .await
        .expect("create a workspace");
    let without = creates(&workspaces, "without").await;

    let webhook = Webhook::start(&cluster);
    webhook.until_ready(&admin, TIMEOUT).await;
    guildnet_e2e::eventually("the webhook to admit a workspace", TIMEOUT, || async {
        workspaces
            .create(&PostParams::default(), &workspace("warm-up-with"))
            .await
            .ok()
    })
    .await;
    let with = creates(&workspaces, "with").await;

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
    let addr = webhook.listen();
    // A second of warm-up, left out of the numbers.
    let warm_up = Duration::from_secs(1);
    load(addr, Arc::clone(&config), "/mutate", &review, warm_up).await;
    let mutate = load(addr, Arc::clone(&config), "/mutate", &review, LOAD).await;
    let validate = load(addr, config, "/validate", &review, LOAD).await;

    let rate = |n: usize| format!(" {:.0} req/s |", n as f64 / LOAD.as_secs_f64());
    let (mutate_n, validate_n) = (mutate.len(), validate.len());
    let (mutate_row, _, mutate_p99) = row("`/mutate`", mutate, &rate(mutate_n));
    let (validate_row, _, validate_p99) = row("`/validate`", validate, &rate(validate_n));
    let (without_row, without_p50, without_p99) =
        row("Workspace create, no webhook registered", without, "");
    let (with_row, with_p50, with_p99) = row("Workspace create, webhook registered", with, "");

    println!("### Admission webhook (`make bench`: e2e/benches/webhook.rs)\n");
    println!(
        "The webhook (debug build, as `make dev` runs it) on a control plane of its own. Handler: the recorded AdmissionReview `webhook/tests/fixtures/create.json` sent at {RATE} req/s for {} s per path (after 1 s of warm-up) over {CONNECTIONS} HTTPS keep-alive connections; latency from sending the request to reading the whole response. Target: handler p99 ≤ 2 ms.\n",
        LOAD.as_secs()
    );
    println!("| handler | requests | p50 | p99 | max | achieved |\n|---|---|---|---|---|---|");
    println!("{mutate_row}");
    println!("{validate_row}");
    println!(
        "\nHandler p99 target (≤ 2 ms): {}.\n",
        if mutate_p99.max(validate_p99) <= Duration::from_millis(2) {
            "met"
        } else {
            "missed"
        }
    );
    println!(
        "Workspace creates on the API server as admin, {CREATES} sequential creates each, after a warm-up; with the webhook both the mutating and the validating call are made.\n"
    );
    println!("| create | creates | p50 | p99 | max |\n|---|---|---|---|---|");
    println!("{without_row}");
    println!("{with_row}");
    println!(
        "\nAdded by the webhook: p50 {}, p99 {}.\n",
        ms(with_p50.saturating_sub(without_p50)),
        ms(with_p99.saturating_sub(without_p99))
    );
}
