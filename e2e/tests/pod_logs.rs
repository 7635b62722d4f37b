//! `kubectl logs` of a Workspace's pod. KWOK serves the fake node's kubelet API on
//! 127.0.0.1, and every fake container logs the same file, written by the local control
//! plane: two known lines, then heartbeats (two from the start, one more every second).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use guildnet_api::Workspace;
use guildnet_e2e::workspaces::manifest;
use guildnet_e2e::{User, client, eventually, kubectl, unique_name};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);
const STARTED: &str = "guildnet test workload started";
const LISTENING: &str = "guildnet test workload listening on 0.0.0.0:8080";
const HEARTBEAT: &str = "guildnet test workload heartbeat";

/// Creates a Workspace as alice and returns its name and the name of its running pod.
async fn workspace_pod(prefix: &str) -> (String, String) {
    let name = unique_name(prefix);
    let workspaces: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let ws = manifest(&name, json!({"image": "nginx:1.27"}));
    workspaces
        .create(&PostParams::default(), &ws)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client(User::Admin).await, "default");
    let selector = format!("guildnet.io/id={name}");
    let pod = eventually("the workspace's pod to run", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && p.metadata.deletion_timestamp.is_none()
            })
            .and_then(|p| p.metadata.name)
    })
    .await;
    (name, pod)
}

/// A `kubectl logs -f`, stopped however the test ends.
struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn delete_workspace(name: &str) {
    let workspaces: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    workspaces
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn logs_of_a_workspace_pod_print_its_lines_and_tail_the_last() {
    let (name, pod) = workspace_pod("logs").await;

    let tail = kubectl(User::Admin, &["logs", "--tail=2", &pod]);
    assert!(tail.success, "kubectl logs --tail=2: {}", tail.stderr);
    assert_eq!(tail.stdout, format!("{HEARTBEAT}\n{HEARTBEAT}\n"));

    let all = kubectl(User::Admin, &["logs", &pod]);
    assert!(all.success, "kubectl logs: {}", all.stderr);
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(
        lines.get(..2),
        Some(&[STARTED, LISTENING][..]),
        "{}",
        all.stdout
    );
    assert!(
        lines.len() >= 4 && lines[2..].iter().all(|l| *l == HEARTBEAT),
        "heartbeats after the first lines: {}",
        all.stdout
    );

    delete_workspace(&name).await;
}

#[tokio::test]
async fn follow_streams_new_lines_and_stays_open() {
    let (name, pod) = workspace_pod("follow").await;
    let bin = PathBuf::from(std::env::var_os("GUILDNET_BIN").expect("GUILDNET_BIN is set"));
    let mut follow = Follower(
        Command::new(bin.join("kubectl"))
            .args([
                "--context",
                "admin",
                "logs",
                "-f",
                "--tail=1",
                "--timestamps",
                &pod,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run kubectl logs -f"),
    );
    let stdout = follow.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // --tail=1 prints one line at once; every further line was written after the request.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(e) => panic!("kubectl logs -f streamed {lines:?}, then {e}"),
        }
    }
    assert!(
        follow.0.try_wait().unwrap().is_none(),
        "kubectl logs -f keeps the stream open"
    );
    drop(follow);

    let mut stamps = Vec::new();
    for line in &lines {
        let (stamp, text) = line.split_once(' ').expect("a timestamp and the line");
        assert_eq!(text, HEARTBEAT, "{lines:?}");
        stamps.push(stamp);
    }
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "each line is newer than the one before: {lines:?}"
    );

    delete_workspace(&name).await;
}
