//! A control plane of a test's own, and operator processes to run against it, for tests that
//! cannot share the suite's stack: that stack already runs an operator without leader
//! election, which would write next to the replicas under test.
//!
//! [`Cluster::start`] brings up the local control plane in a fresh directory under
//! `.guildnet/` and installs the CRDs; dropping it stops the control plane (its directory is
//! kept when the test failed, for the logs). [`Operator`] runs `target/debug/guildnet-operator`
//! (built by `make build`) with JSON logs in that directory and its metrics on a port of its
//! own; [`Proxy`] runs `target/debug/guildnet-proxy` as the proxy's identity.

use crate::User;
use kube::Client;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The repository root (the e2e crate lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate is inside the repository")
        .to_path_buf()
}

/// Where the control plane binaries are: `GUILDNET_BIN`, else `.guildnet/bin`.
fn bin_dir() -> PathBuf {
    std::env::var_os("GUILDNET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".guildnet/bin"))
}

/// Runs `command`, failing the test with its output when it fails.
fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running control plane with the guildnet.io CRDs installed.
pub struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    /// Starts a control plane in `.guildnet/<prefix>-<unique>` and installs the CRDs and the
    /// chart's RBAC for GuildNet's component identities.
    pub fn start(prefix: &str) -> Self {
        let dir = repo_root()
            .join(".guildnet")
            .join(crate::unique_name(prefix));
        let cluster = Self { dir };
        run(Command::new(bin_dir().join("kube"))
            .args(["cluster", "up", "--dir"])
            .arg(&cluster.dir));
        for script in ["scripts/install-crds.sh", "scripts/install-rbac.sh"] {
            run(Command::new(repo_root().join(script))
                .arg(cluster.kubeconfig())
                .current_dir(repo_root()));
        }
        cluster
    }

    /// The process id of its `kube cluster run`, whose children are the control plane's
    /// components (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok).
    pub fn pid(&self) -> u32 {
        let pid = std::fs::read_to_string(self.dir.join("cluster.pid")).expect("cluster.pid");
        pid.trim().parse().expect("a process id in cluster.pid")
    }

    /// Stops its API server (SIGSTOP) until the returned guard is dropped (SIGCONT): its
    /// clients' requests hang, unanswered and unrefused, as on a cluster that is
    /// partitioned away.
    pub fn pause_api_server(&self) -> PausedApiServer {
        let pid = crate::cpu::child_pid(self.pid(), "kube-apiserver")
            .expect("the control plane's kube-apiserver process");
        run(Command::new("kill").args(["-STOP", &pid.to_string()]));
        PausedApiServer { pid }
    }

    /// The control plane's kubeconfig, with the contexts `admin`, `alice` and `bob`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The kubeconfig of the operator's own identity, written next to [`Self::kubeconfig`].
    pub fn operator_kubeconfig(&self) -> PathBuf {
        self.dir.join("operator.kubeconfig")
    }

    /// The kubeconfig of the webhook's own identity, written next to [`Self::kubeconfig`].
    pub fn webhook_kubeconfig(&self) -> PathBuf {
        self.dir.join("webhook.kubeconfig")
    }

    /// The kubeconfig of the proxy's own identity, written next to [`Self::kubeconfig`].
    pub fn proxy_kubeconfig(&self) -> PathBuf {
        self.dir.join("proxy.kubeconfig")
    }

    /// The directory the control plane and the operators write their logs to.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// A client acting as `user`.
    pub async fn client(&self, user: User) -> Client {
        crate::client_for(&self.kubeconfig(), user).await
    }
}

/// A control plane's API server stopped by [`Cluster::pause_api_server`]; dropping it
/// lets the server go on.
pub struct PausedApiServer {
    pid: u32,
}

impl Drop for PausedApiServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(bin_dir().join("kube"))
            .args(["cluster", "down", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .output();
        if std::thread::panicking() {
            eprintln!(
                "control plane and operator logs kept in {}",
                self.logs().display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where the operator binary is built: `$GUILDNET_TARGET` (e.g. `target/release`), else
/// `target/debug`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("GUILDNET_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `guildnet-operator` process against a [`Cluster`]; killed when dropped.
pub struct Operator {
    name: String,
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Operator {
    /// Starts an operator named `name` (its identity in the lease and in Events) with
    /// `args` added to the command line. Leader election is on unless `args` turn it off.
    /// It acts as admin, and its Lease is `guildnet-system/guildnet-operator`.
    pub fn start(cluster: &Cluster, name: &str, args: &[&str]) -> Self {
        Self::spawn(cluster, &cluster.kubeconfig(), name, args)
    }

    /// Like [`Operator::start`], but as the operator's ServiceAccount, as in a cluster: the
    /// chart's RBAC and FlowSchemas apply to it. Its Lease is in `guildnet-system`, the one
    /// namespace its RBAC allows, by default (as `make dev` runs it, with no
    /// `--lease-namespace` and no pod namespace).
    pub fn start_as_service_account(cluster: &Cluster, name: &str, args: &[&str]) -> Self {
        Self::spawn(cluster, &cluster.operator_kubeconfig(), name, args)
    }

    fn spawn(cluster: &Cluster, kubeconfig: &Path, name: &str, args: &[&str]) -> Self {
        let binary = target_dir().join("guildnet-operator");
        assert!(
            binary.exists(),
            "{} is missing: run `make build` first",
            binary.display()
        );
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = cluster.logs().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create the operator log");
        let child = Command::new(binary)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "info,kube=warn")
            .args(["--log-format", "json", "--metrics-listen"])
            .arg(metrics.to_string())
            .args(args)
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start the operator");
        Self {
            name: name.to_owned(),
            child,
            metrics,
            log,
        }
    }

    /// The name it was started with: its identity in the leader lease and in Events.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks the operator to shut down (SIGTERM).
    pub fn terminate(&self) {
        run(Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string()));
    }

    /// Kills the operator at once (SIGKILL): no chance to release anything.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the operator");
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn exited(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll the operator") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// `GET path` on the metrics port: the status code and body, or `None` while nothing
    /// answers.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(self.metrics).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        crate::cpu::rss_bytes(self.child.id())
    }

    /// Whether `/readyz` says the watch caches are synced.
    pub async fn ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _)))
    }

    /// A scrape of `/metrics`, or `None` while nothing answers.
    pub async fn metrics(&self) -> Option<Scrape> {
        match self.get("/metrics").await? {
            (200, body) => Some(Scrape::parse(&body)),
            _ => None,
        }
    }

    /// The JSON log lines written so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
            })
            .collect()
    }

    /// Log lines at WARN or ERROR, as written.
    pub fn complaints(&self) -> Vec<String> {
        self.log_lines()
            .into_iter()
            .filter(|l| matches!(l["level"].as_str(), Some("WARN" | "ERROR")))
            .map(|l| l.to_string())
            .collect()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scrape of `/metrics`: each sample's value by its name and labels as written, e.g.
/// `guildnet_workspaces{phase="Running"}`.
#[derive(Debug)]
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.rsplit_once(' '))
                .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                .collect(),
        )
    }

    /// The sample's value; 0 when absent (a family with no sample yet is not written).
    pub fn value(&self, sample: &str) -> f64 {
        self.0.get(sample).copied().unwrap_or(0.0)
    }

    /// Whether the sample is written at all.
    pub fn has(&self, sample: &str) -> bool {
        self.0.contains_key(sample)
    }

    /// The samples whose labels include `label` (e.g. `cluster="edge"`).
    pub fn labelled(&self, label: &str) -> Vec<&str> {
        (self.0.keys())
            .filter(|k| k.contains(label))
            .map(String::as_str)
            .collect()
    }
}

/// Waits until exactly one of `operators` reports `guildnet_leader 1` (and all are ready),
/// returning its index.
pub async fn leader_among(operators: &[&Operator], timeout: Duration) -> usize {
    crate::eventually("exactly one leader", timeout, || async {
        let mut leaders = Vec::new();
        for (i, op) in operators.iter().enumerate() {
            if !op.ready().await {
                return None;
            }
            if op.metrics().await?.value("guildnet_leader") == 1.0 {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

/// The holder of the operators' lease (`guildnet-system/guildnet-operator`), if any.
pub async fn lease_holder(admin: &Client) -> Option<String> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: kube::Api<Lease> = kube::Api::namespaced(admin.clone(), "guildnet-system");
    leases
        .get_opt("guildnet-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// A `guildnet-webhook` process against a [`Cluster`], registered for
/// `https://127.0.0.1:<port>` with its self-managed certificate; killed when dropped. Its
/// ports stay the same across [`Webhook::restart`], so the registration stays valid.
pub struct Webhook {
    child: Option<Child>,
    kubeconfig: PathBuf,
    listen: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Webhook {
    /// Starts the webhook as its own identity (the control plane's `webhook.kubeconfig`),
    /// registering the webhook configurations for itself.
    pub fn start(cluster: &Cluster) -> Self {
        let mut webhook = Self {
            child: None,
            kubeconfig: cluster.webhook_kubeconfig(),
            listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
            metrics: SocketAddr::from(([127, 0, 0, 1], free_port())),
            log: cluster.logs().join("webhook.log"),
        };
        webhook.restart();
        webhook
    }

    /// Starts the process again after [`Webhook::kill`], on the same ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the webhook is still running");
        let binary = repo_root().join("target/debug/guildnet-webhook");
        assert!(
            binary.exists(),
            "{} is missing: run `make build` first",
            binary.display()
        );
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the webhook log");
        let child = Command::new(binary)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics.to_string())
            .arg("--webhook-url")
            .arg(self.url())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start the webhook");
        self.child = Some(child);
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill the webhook");
            let _ = child.wait();
        }
    }

    /// The URL the API server calls.
    pub fn url(&self) -> String {
        format!("https://{}", self.listen)
    }

    /// The HTTPS address the API server calls.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Whether `/readyz` on the metrics port says the caches are synced.
    pub async fn ready(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(self.metrics).await else {
            return false;
        };
        let request = "GET /readyz HTTP/1.1\r\nHost: webhook\r\nConnection: close\r\n\r\n";
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        response.starts_with("HTTP/1.1 200")
    }

    /// Whether both webhook configurations are registered for this webhook's URL.
    pub async fn registered(&self, admin: &Client) -> bool {
        use k8s_openapi::api::admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
        };
        let name = "guildnet-webhook";
        let mutating = kube::Api::<MutatingWebhookConfiguration>::all(admin.clone())
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.webhooks?.first()?.client_config.url.clone());
        let validating = kube::Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.webhooks?.first()?.client_config.url.clone());
        let ours = |url: Option<String>| url.is_some_and(|u| u.starts_with(&self.url()));
        ours(mutating) && ours(validating)
    }

    /// Waits until the webhook serves with synced caches and is registered.
    pub async fn until_ready(&self, admin: &Client, timeout: Duration) {
        crate::eventually(
            "the webhook to be ready and registered",
            timeout,
            || async { (self.ready().await && self.registered(admin).await).then_some(()) },
        )
        .await;
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `target/debug/guildnet-proxy` as the proxy's own identity (the chart's RBAC), listening
/// on a free loopback port, JSON logs in the cluster's log directory; killed when dropped.
pub struct Proxy {
    child: Child,
    listen: SocketAddr,
    log: PathBuf,
}

impl Proxy {
    /// Starts a proxy with `args` added to the command line and waits until `/readyz`
    /// says its caches are synced.
    pub async fn start(cluster: &Cluster, args: &[&str]) -> Self {
        let binary = target_dir().join("guildnet-proxy");
        assert!(
            binary.exists(),
            "{} is missing: run `make build` first",
            binary.display()
        );
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = cluster.logs().join(format!("proxy-{}.log", listen.port()));
        let file = std::fs::File::create(&log).expect("create the proxy log");
        let child = Command::new(binary)
            .env("KUBECONFIG", cluster.proxy_kubeconfig())
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "info,kube=warn")
            // JSON logs: not a terminal.
            .arg("--listen")
            .arg(listen.to_string())
            .args(args)
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start the proxy");
        let proxy = Self { child, listen, log };
        crate::eventually("the proxy to be ready", Duration::from_secs(60), || async {
            let response = crate::upstream::get(proxy.listen, "/readyz").await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
        proxy
    }

    /// The address it serves on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The JSON log lines written so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
