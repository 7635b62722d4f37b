//! Real IDEs at workspace pod IPs. KWOK's pods run nothing, so the program a workspace's
//! image would run is started here: code-server for `*/code-server` images and JupyterLab
//! for `quay.io/jupyter/*`, as `make real-ides` installs them into `.guildnet/ides`. The
//! process gets the arguments and the environment of the container the operator built, its
//! `secretKeyRef`s read from the Secrets as the kubelet would, so a test through the proxy
//! proves the operator's wiring (code-server's generated password) too. It listens on a Unix
//! socket, and `pod-forward` serves the workspace's pod IP and first port from it in the
//! network namespace that owns the pod IPs (`scripts/upstream-netns.sh`): bound to that one
//! IP, it takes the port from the test upstream there. Dropping an [`Ide`] kills both
//! process groups.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use guildnet_api::workspace::is_code_server;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use kube::Client;
use kube::api::Api;

use crate::cluster::repo_root;
use crate::eventually;
use crate::upstream::{get, pod_ip_of_workspace};

/// How long an IDE may take to answer its health URL after it was started.
const START: Duration = Duration::from_secs(120);

/// Which program a workspace's image runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `codercom/code-server` and other `*/code-server` images.
    CodeServer,
    /// The Jupyter Docker Stacks images, `quay.io/jupyter/*`: JupyterLab.
    JupyterLab,
}

impl Kind {
    /// The IDE `image` runs, if it is one of the two.
    pub fn of_image(image: &str) -> Option<Self> {
        if is_code_server(image) {
            Some(Self::CodeServer)
        } else if image.starts_with("quay.io/jupyter/") {
            Some(Self::JupyterLab)
        } else {
            None
        }
    }

    /// Whether `make real-ides` installed it.
    pub fn installed(self) -> bool {
        self.install().exists()
    }

    fn install(self) -> PathBuf {
        let name = match self {
            Self::CodeServer => "code-server",
            Self::JupyterLab => "jupyterlab",
        };
        repo_root().join(".guildnet/ides").join(name)
    }

    /// The path at the pod that answers once the server is up, without logging in, and a
    /// field of its JSON answer that the test upstream's echo never has.
    fn health_check(self, args: &[String]) -> (String, &'static str) {
        match self {
            Self::CodeServer => ("/healthz".into(), "\"lastHeartbeat\""),
            Self::JupyterLab => (format!("{}api", jupyter_base_url(args)), "\"version\""),
        }
    }
}

/// The `--ServerApp.base_url` among JupyterLab's arguments (default `/`), with a final `/`.
fn jupyter_base_url(args: &[String]) -> String {
    let base = args
        .iter()
        .find_map(|a| a.strip_prefix("--ServerApp.base_url="))
        .unwrap_or("/");
    format!("{}/", base.trim_end_matches('/'))
}

/// The command line that serves `kind` on the Unix socket `socket` with the container's
/// `args`, keeping its state under `home`, opening `folder`.
fn command_line(
    kind: Kind,
    socket: &Path,
    args: &[String],
    home: &Path,
    folder: &Path,
) -> Vec<String> {
    let install = kind.install();
    let mut line: Vec<String> = Vec::new();
    match kind {
        Kind::CodeServer => {
            line.push(
                install
                    .join("node_modules/.bin/code-server")
                    .display()
                    .to_string(),
            );
            // The container's own arguments, on the socket instead of its address.
            let mut args = args.iter();
            while let Some(arg) = args.next() {
                if arg == "--bind-addr" {
                    args.next();
                } else {
                    line.push(arg.clone());
                }
            }
            // What the image's entrypoint and its baked-in settings do, and no network.
            line.extend(
                [
                    "--socket",
                    &socket.display().to_string(),
                    "--user-data-dir",
                    &home.join("data").display().to_string(),
                    "--extensions-dir",
                    &home.join("extensions").display().to_string(),
                    "--disable-telemetry",
                    "--disable-update-check",
                    "--disable-workspace-trust",
                    "--ignore-last-opened",
                    &folder.display().to_string(),
                ]
                .map(String::from),
            );
        }
        Kind::JupyterLab => {
            line.push(install.join("bin/jupyter").display().to_string());
            line.push("lab".into());
            // The Docker Stacks' jupyter_server_config.py (no browser), on the socket
            // instead of 0.0.0.0:8888; remote hosts allowed, as listening on 0.0.0.0 implies.
            line.extend([
                format!("--ServerApp.sock={}", socket.display()),
                "--ServerApp.allow_remote_access=True".into(),
                "--ServerApp.open_browser=False".into(),
                format!("--ServerApp.root_dir={}", folder.display()),
                // The tests run as root; the image runs as jovyan.
                "--allow-root".into(),
            ]);
            line.extend(args.iter().cloned());
        }
    }
    line
}

/// The container's environment as the kubelet would give it: plain values, and values from
/// the namespace's Secrets and ConfigMaps.
async fn resolve_env(
    client: &Client,
    namespace: &str,
    container: &Container,
) -> BTreeMap<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut env = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(source)) => {
                if let Some(selector) = &source.secret_key_ref {
                    let secret = secrets.get(&selector.name).await.unwrap_or_else(|e| {
                        panic!(
                            "env {}: read Secret {namespace}/{}: {e}",
                            var.name, selector.name
                        )
                    });
                    let bytes = secret
                        .data
                        .and_then(|mut data| data.remove(&selector.key))
                        .unwrap_or_else(|| {
                            panic!(
                                "env {}: Secret {} has no key {}",
                                var.name, selector.name, selector.key
                            )
                        });
                    String::from_utf8(bytes.0).expect("a UTF-8 Secret value")
                } else if let Some(selector) = &source.config_map_key_ref {
                    let map = config_maps.get(&selector.name).await.unwrap_or_else(|e| {
                        panic!(
                            "env {}: read ConfigMap {namespace}/{}: {e}",
                            var.name, selector.name
                        )
                    });
                    map.data
                        .and_then(|mut data| data.remove(&selector.key))
                        .unwrap_or_else(|| {
                            panic!(
                                "env {}: ConfigMap {} has no key {}",
                                var.name, selector.name, selector.key
                            )
                        })
                } else {
                    panic!(
                        "env {}: only secretKeyRef and configMapKeyRef are served here",
                        var.name
                    )
                }
            }
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// Starts `line` in the pods' network namespace, in a process group of its own, with
/// `env` and its output in `log`.
fn spawn_in_pods(line: &[String], env: &BTreeMap<String, String>, dir: &Path, log: &Path) -> Child {
    let output = std::fs::File::create(log).expect("create the log");
    Command::new("ip")
        .args(["netns", "exec", "guildnet-pods"])
        .args(line)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("the log"))
        .stderr(output)
        // Its own process group, so dropping it stops its helpers (code-server's extension
        // host outlives a closed browser for hours) with it.
        .process_group(0)
        .spawn()
        .expect("run ip netns exec (the e2e tests run as root)")
}

/// Kills the process group of `child` (started by [`spawn_in_pods`]) and reaps it.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.wait();
}

/// A new, empty home for the IDE of workspace `name` in a test: `target/e2e-artifacts/ides/<name>/`.
pub fn fresh_home(name: &str) -> PathBuf {
    let home = repo_root().join("target/e2e-artifacts/ides").join(name);
    let _ = std::fs::remove_dir_all(&home);
    home
}

/// A real IDE serving one workspace at its pod IP; killed (with its helpers and its
/// forwarder) when dropped.
pub struct Ide {
    kind: Kind,
    child: Child,
    forward: Child,
    socket: PathBuf,
    pod: SocketAddr,
    env: BTreeMap<String, String>,
    home: PathBuf,
    log: PathBuf,
}

impl Ide {
    /// Starts the IDE of workspace `namespace/name` (its Deployment read as `admin`, who may
    /// read its Secrets) at its pod IP, and waits until it answers its health URL there. Its
    /// state (the home of its user: kept, like a persistent volume) and its log are in
    /// `home`; its folder is `folder()`.
    pub async fn start(admin: &Client, namespace: &str, name: &str, home: &Path) -> Ide {
        let deployment = Api::<Deployment>::namespaced(admin.clone(), namespace)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("read the Deployment of workspace {namespace}/{name}: {e}"));
        let container = deployment
            .spec
            .template
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .expect("the Deployment has a container");
        let image = container.image.clone().unwrap_or_default();
        let kind = Kind::of_image(&image).unwrap_or_else(|| {
            panic!("no real IDE here runs image {image} (code-server or quay.io/jupyter/*)")
        });
        assert!(
            kind.installed(),
            "{} is missing: run `make real-ides`",
            kind.install().display()
        );
        let port = container
            .ports
            .iter()
            .flatten()
            .next()
            .map(|p| p.container_port)
            .expect("the container declares a port");
        let port = u16::try_from(port).expect("a TCP port");
        let pod = SocketAddr::new(pod_ip_of_workspace(admin, namespace, name).await, port);
        let env = resolve_env(admin, namespace, &container).await;
        let args = container.args.unwrap_or_default();

        let home = home.to_path_buf();
        let folder = home.join("project");
        std::fs::create_dir_all(&folder).expect("create the IDE's folder");
        let user_settings = home.join("data/User/settings.json");
        if kind == Kind::CodeServer && !user_settings.exists() {
            // The terminal rendered as DOM text, so a test can read what a command printed;
            // no prompt about the repository the folder happens to be in.
            std::fs::create_dir_all(home.join("data/User"))
                .expect("create code-server's user settings");
            std::fs::write(
                &user_settings,
                r#"{"terminal.integrated.gpuAcceleration": "off", "workbench.startupEditor": "none", "git.openRepositoryInParentFolders": "never"}"#,
            )
            .expect("write code-server's user settings");
        }
        // Short, as Unix socket paths must be (108 bytes), whatever the checkout's path.
        let socket = std::env::temp_dir().join(format!("guildnet-ide-{namespace}-{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let log = home.join("ide.log");
        let mut process_env: BTreeMap<String, String> = [
            ("HOME", home.display().to_string()),
            ("SHELL", "/bin/bash".into()),
            ("TERM", "xterm-256color".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        process_env.extend(env.clone());
        let line = command_line(kind, &socket, &args, &home, &folder);
        let child = spawn_in_pods(&line, &process_env, &folder, &log);
        let target = std::env::var_os("GUILDNET_TARGET")
            .map_or_else(|| repo_root().join("target/debug"), PathBuf::from);
        let forward_line = [
            target.join("pod-forward").display().to_string(),
            "--listen".into(),
            pod.to_string(),
            "--to".into(),
            socket.display().to_string(),
        ];
        let forward_log = home.join("forward.log");
        let forward = spawn_in_pods(&forward_line, &BTreeMap::new(), &home, &forward_log);
        let ide = Ide {
            kind,
            child,
            forward,
            socket: socket.clone(),
            pod,
            env,
            home,
            log,
        };
        // Bound before anything connects: a connection made earlier reaches the test upstream
        // (and a client's keep-alive pool would keep it).
        let forward_log = &forward_log;
        eventually(
            &format!(
                "pod-forward to listen on {pod} (log: {})",
                forward_log.display()
            ),
            Duration::from_secs(10),
            || async move {
                let log = std::fs::read_to_string(forward_log).unwrap_or_default();
                log.contains("listening on").then_some(())
            },
        )
        .await;
        let (path, field) = kind.health_check(&args);
        let (ide_ref, path_ref) = (&ide, path.as_str());
        eventually(
            &format!(
                "{kind:?} to answer {path} at {pod} (log: {})",
                ide.log.display()
            ),
            START,
            || async move {
                let response = get(ide_ref.pod, path_ref).await.ok()?;
                let body = String::from_utf8_lossy(response.body());
                (response.status().is_success() && body.contains(field)).then_some(())
            },
        )
        .await;
        ide
    }

    /// The IDE that runs.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The value of `name` in the environment it got from the container.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// The folder it opens (code-server) or serves (JupyterLab's root).
    pub fn folder(&self) -> PathBuf {
        self.home.join("project")
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ide {
    fn drop(&mut self) {
        kill_group(&mut self.forward);
        kill_group(&mut self.child);
        let _ = std::fs::remove_file(&self.socket);
    }
}
