//! Helpers for the end-to-end tests in `tests/`. They run against the local control plane
//! that `make e2e` (and so `make test`) starts: `KUBECONFIG` names its kubeconfig, with the
//! contexts `admin`, `alice` and `bob`, and `GUILDNET_BIN` the directory of its binaries.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub mod browser;
pub mod cluster;
pub mod cpu;
pub mod ides;
pub mod registrations;
pub mod reqlite;
pub mod upstream;
pub mod workspaces;

/// The users of the local control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum User {
    /// A cluster admin (group system:masters).
    Admin,
    /// An ordinary user in group guildnet:users.
    Alice,
    /// Another ordinary user in group guildnet:users.
    Bob,
}

impl User {
    /// The kubeconfig context of the user.
    pub fn context(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::Alice => "alice",
            User::Bob => "bob",
        }
    }
}

fn env_path(var: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: run the end-to-end tests with `make e2e` (or `make test`), which starts the control plane")
    })
}

/// The kubeconfig of the control plane under test.
pub fn kubeconfig_path() -> PathBuf {
    env_path("KUBECONFIG")
}

/// The bearer token of `user` (the control plane writes one per kubeconfig context, once;
/// read once per test process, as tests poll with it).
pub fn token(user: User) -> String {
    static TOKENS: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    let tokens = TOKENS.get_or_init(|| {
        [User::Admin, User::Alice, User::Bob].map(|user| {
            let path = kubeconfig_path()
                .parent()
                .expect("the kubeconfig is in the cluster's directory")
                .join("tokens")
                .join(user.context());
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
                .trim()
                .to_owned()
        })
    });
    tokens[user as usize].clone()
}

/// A client acting as `user` on the control plane under test.
pub async fn client(user: User) -> Client {
    client_for(&kubeconfig_path(), user).await
}

/// A client acting as `user`, from the kubeconfig at `path`.
pub async fn client_for(path: &std::path::Path, user: User) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read the kubeconfig");
    let options = KubeConfigOptions {
        context: Some(user.context().to_string()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("kubeconfig context");
    Client::try_from(config).expect("client")
}

/// What a kubectl invocation printed and whether it succeeded.
#[derive(Debug)]
pub struct Output {
    /// Whether kubectl exited with status 0.
    pub success: bool,
    /// Its standard output, decoded lossily as UTF-8.
    pub stdout: String,
    /// Its standard error (kubectl's error messages), decoded lossily as UTF-8.
    pub stderr: String,
}

/// Runs the kubectl built with the control plane as `user`.
pub fn kubectl(user: User, args: &[&str]) -> Output {
    let out = Command::new(env_path("GUILDNET_BIN").join("kubectl"))
        .arg("--context")
        .arg(user.context())
        .args(args)
        .output()
        .expect("run kubectl");
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `kubectl apply -f -` as `user` with `manifest` on its standard input.
pub fn kubectl_apply(user: User, manifest: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env_path("GUILDNET_BIN").join("kubectl"))
        .args(["--context", user.context(), "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut stdin = child.stdin.take().expect("kubectl's stdin");
    stdin
        .write_all(manifest.as_bytes())
        .expect("write the manifest");
    drop(stdin);
    let out = child.wait_with_output().expect("wait for kubectl");
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A name unique to this test run, so tests running in parallel never share objects.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{:x}{n}", nanos % 0xfffff)
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates namespace `name` with `labels` as admin and waits until its `default`
/// ServiceAccount exists: until kube-controller-manager has made it, Pods in the namespace
/// are refused.
pub async fn create_namespace(admin: &Client, name: &str, labels: &[(&str, &str)]) {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use kube::api::{Api, PostParams};
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(name.to_string());
    namespace.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), name);
    let exists =
        kube::runtime::wait::await_condition(accounts, "default", |sa: Option<&ServiceAccount>| {
            sa.is_some()
        });
    tokio::time::timeout(Duration::from_secs(60), exists)
        .await
        .expect("the default ServiceAccount appears")
        .expect("watch ServiceAccounts");
}
