//! reqlite, a ReQL server in JavaScript (npm), as the RethinkDB peer: `e2e/reqlite/serve.js`
//! runs it with a RethinkDB 2.4 handshake (SCRAM-SHA-256 against one admin password) on one
//! address, at a database pod's IP in the pods' network namespace
//! (`scripts/upstream-netns.sh`) or on loopback. Its limits are in docs/databases.md: no
//! users, grants or system tables, no clustering, data in memory.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::repo_root;

/// The driver port, as a GuildDatabase's servers serve it.
pub const DRIVER_PORT: u16 = 28015;

/// A running reqlite; killed when dropped.
pub struct Reqlite {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Reqlite {
    /// Serves ReQL at `ip`:[`DRIVER_PORT`] with `admin_password`, in the pods' network
    /// namespace unless `ip` is loopback, and waits until it accepts connections.
    pub async fn start(ip: IpAddr, admin_password: &str, name: &str) -> Self {
        let dir = repo_root().join("target/e2e-artifacts/reqlite");
        std::fs::create_dir_all(&dir).expect("create the reqlite artifacts directory");
        let password_file = dir.join(format!("{name}.password"));
        std::fs::write(&password_file, admin_password).expect("write the admin password");
        let log = dir.join(format!("{name}.log"));
        let output = std::fs::File::create(&log).expect("create the reqlite log");
        let serve = repo_root().join("e2e/reqlite/serve.js");
        assert!(
            repo_root()
                .join("e2e/reqlite/node_modules/reqlite")
                .exists(),
            "reqlite is not installed: run scripts/install-deps.sh (make deps)"
        );
        let mut command = if ip.is_loopback() {
            Command::new("node")
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", "guildnet-pods", "node"]);
            c
        };
        let child = command
            .arg(&serve)
            .args([
                "--bind",
                &ip.to_string(),
                "--port",
                &DRIVER_PORT.to_string(),
            ])
            .arg("--admin-password-file")
            .arg(&password_file)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("the log"))
            .stderr(output)
            .spawn()
            .expect("run node e2e/reqlite/serve.js (in the pods' namespace: as root)");
        let addr = SocketAddr::new(ip, DRIVER_PORT);
        let mut reqlite = Self { child, addr, log };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = reqlite.child.try_wait() {
                panic!(
                    "reqlite exited ({status}): {}",
                    std::fs::read_to_string(&reqlite.log).unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "reqlite did not accept connections at {addr} in 30 s; see {}",
                reqlite.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        reqlite
    }

    /// Serves GuildDatabase `namespace/name`'s first server: at the pod IP KWOK gave
    /// `<name>-0`, with the admin password of `<name>-admin` (read as `admin`, a client
    /// that may). Returns the server and the password.
    pub async fn serve_database(
        admin: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> (Self, String) {
        use k8s_openapi::api::core::v1::{Pod, Secret};
        use kube::Api;
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
        let secret = secrets
            .get(&format!("{name}-admin"))
            .await
            .expect("the database's admin Secret");
        let password = secret
            .data
            .and_then(|d| d.get("password").map(|p| p.0.clone()))
            .and_then(|p| String::from_utf8(p).ok())
            .expect("an admin password");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
        let pod_ip: IpAddr = pods
            .get(&format!("{name}-0"))
            .await
            .expect("the database's first server")
            .status
            .and_then(|s| s.pod_ip)
            .expect("KWOK gave the server a pod IP")
            .parse()
            .expect("a pod IP");
        let server = Self::start(pod_ip, &password, &format!("{namespace}-{name}-0")).await;
        (server, password)
    }

    /// Where it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Reqlite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
