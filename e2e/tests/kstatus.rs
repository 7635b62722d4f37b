//! What kstatus, the library Flux and kstatus-based waiters compute readiness with, says about
//! Workspaces on a real API server: InProgress until Ready, then Current; InProgress from a
//! spec edit until it is rolled out, and while scaling for suspend or resume; Failed for a
//! crash loop. The verdicts come from the real
//! library (`e2e/kstatus`, built here with `go build`), not an imitation of its rules.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use guildnet_api::Workspace;
use guildnet_e2e::workspaces::{manifest, set_suspended};
use guildnet_e2e::{User, client, unique_name};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

/// kstatus' verdict on one object, as `e2e/kstatus` prints it.
#[derive(Debug, Deserialize)]
struct Verdict {
    /// InProgress, Current, Failed, Terminating or Unknown.
    status: String,
    /// The reason of the Reconciling or Stalled condition kstatus derived, if any.
    #[serde(default)]
    reason: String,
    message: String,
}

/// The kstatus command, built from the module proxy once per run of this file.
fn tool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the e2e crate sits in the repository");
        let out = root.join("target/guildnet-kstatus");
        let build = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(root.join("e2e/kstatus"))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod -buildvcs=false")
            .output()
            .expect("run go: Go 1.26 is needed, as for the control plane");
        assert!(
            build.status.success(),
            "go build e2e/kstatus: {}",
            String::from_utf8_lossy(&build.stderr)
        );
        out
    })
}

fn kstatus(ws: &Workspace) -> Verdict {
    let mut child = Command::new(tool())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kstatus");
    let object = serde_json::to_vec(ws).unwrap();
    child.stdin.take().unwrap().write_all(&object).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn condition<'a>(ws: &'a Workspace, type_: &str) -> Option<(&'a str, &'a str)> {
    let c = ws
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.as_str(), c.reason.as_str()))
}

fn is_ready(ws: &Workspace) -> bool {
    condition(ws, "Ready").is_some_and(|(status, _)| status == "True")
}

/// Every state of `name` after `version`, with kstatus' verdict on it, up to the first that
/// `done` accepts. A watch, so no state in between is missed.
async fn follow(
    api: &Api<Workspace>,
    name: &str,
    version: &str,
    done: impl Fn(&Workspace, &Verdict) -> bool,
) -> Vec<(Workspace, Verdict)> {
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut events = api.watch(&params, version).await.unwrap().boxed();
    let mut history = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.try_next())
            .await
            .unwrap_or_else(|_| panic!("{name}: timed out; seen: {:#?}", summary(&history)))
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: the watch ended; seen: {:#?}", summary(&history)));
        let ws = match event {
            WatchEvent::Added(ws) | WatchEvent::Modified(ws) => ws,
            WatchEvent::Bookmark(_) => continue,
            other => panic!("{name}: unexpected {other:?}"),
        };
        let verdict = kstatus(&ws);
        let finished = done(&ws, &verdict);
        history.push((ws, verdict));
        if finished {
            return history;
        }
    }
}

/// What a failure message shows of a history: generations, the conditions kstatus reads and
/// its verdict.
fn summary(history: &[(Workspace, Verdict)]) -> Vec<String> {
    history
        .iter()
        .map(|(ws, v)| {
            let observed = ws.status.as_ref().and_then(|s| s.observed_generation);
            format!(
                "generation {:?} observed {observed:?} Ready {:?} Reconciling {:?} Stalled {:?}: {} {} ({})",
                ws.metadata.generation,
                condition(ws, "Ready"),
                condition(ws, "Reconciling"),
                condition(ws, "Stalled"),
                v.status,
                v.reason,
                v.message
            )
        })
        .collect()
}

/// Asserts that every state of `history` but the last reads InProgress.
fn in_progress_until_the_end(what: &str, history: &[(Workspace, Verdict)]) {
    let before = &history[..history.len() - 1];
    assert!(
        before.iter().all(|(_, v)| v.status == "InProgress"),
        "{what}: {:#?}",
        summary(history)
    );
}

fn has_status(ws: &Workspace) -> bool {
    ws.status
        .as_ref()
        .is_some_and(|s| s.observed_generation.is_some())
}

/// Creates a workspace and follows it until kstatus calls it Current.
async fn create_until_current(api: &Api<Workspace>, name: &str, spec: Value) {
    let created = api
        .create(&PostParams::default(), &manifest(name, spec))
        .await
        .unwrap();
    // The object as created has no status yet, which kstatus reads as Current for any kind
    // it has no rules for (docs/gitops.md); the operator's first status write follows.
    let history = follow(api, name, &created.resource_version().unwrap(), |ws, v| {
        has_status(ws) && v.status != "InProgress"
    })
    .await;
    in_progress_until_the_end("until Ready", &history);
    let (current, verdict) = history.last().unwrap();
    assert_eq!(verdict.status, "Current", "{:#?}", summary(&history));
    assert!(is_ready(current), "Current only once Ready");
    assert!(
        history
            .iter()
            .any(|(ws, v)| has_status(ws) && !is_ready(ws) && v.reason == "Deploying"),
        "the operator reported the start, as InProgress: {:#?}",
        summary(&history)
    );
}

/// Patches `name`'s spec and returns the API server's answer, the first state of the edit.
async fn edit(api: &Api<Workspace>, name: &str, spec: Value) -> Workspace {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_workspace_is_in_progress_until_ready_and_after_an_edit_until_rolled_out() {
    tool(); // built before any deadline runs
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let name = unique_name("kstatus");
    let spec = json!({"image": "docker.io/library/nginx:1.27", "ports": [{"name": "http", "containerPort": 80}]});
    create_until_current(&api, &name, spec).await;

    // The edit itself: the operator has not seen it yet.
    let changed = edit(
        &api,
        &name,
        json!({"env": [{"name": "GREETING", "value": "hello"}]}),
    )
    .await;
    let verdict = kstatus(&changed);
    assert_eq!(
        (verdict.status.as_str(), verdict.reason.as_str()),
        ("InProgress", "LatestGenerationNotObserved"),
        "{verdict:?}"
    );
    let generation = changed.metadata.generation;

    // Seen, then rolled out: the old pod is replaced, Current once the new one is Ready.
    let history = follow(
        &api,
        &name,
        &changed.resource_version().unwrap(),
        |ws, v| {
            ws.status.as_ref().and_then(|s| s.observed_generation) == generation
                && v.status != "InProgress"
        },
    )
    .await;
    in_progress_until_the_end("rolling out the edit", &history);
    let (rolled_out, verdict) = history.last().unwrap();
    assert_eq!(verdict.status, "Current", "{:#?}", summary(&history));
    assert!(is_ready(rolled_out));
    assert!(
        history.iter().any(|(ws, v)| {
            ws.status.as_ref().and_then(|s| s.observed_generation) == generation
                && ["RollingOut", "Deploying"].contains(&v.reason.as_str())
        }),
        "observed but not yet rolled out reads InProgress: {:#?}",
        summary(&history)
    );

    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn suspending_and_resuming_are_in_progress_until_scaled() {
    tool(); // built before any deadline runs
    let api: Api<Workspace> = Api::namespaced(client(User::Alice).await, "default");
    let name = unique_name("kstatus-pause");
    create_until_current(
        &api,
        &name,
        json!({"image": "docker.io/library/nginx:1.27"}),
    )
    .await;

    let suspended = set_suspended(&api, &name, true).await;
    assert_eq!(kstatus(&suspended).status, "InProgress");
    let history = follow(
        &api,
        &name,
        &suspended.resource_version().unwrap(),
        |ws, _| condition(ws, "Reconciling") == Some(("False", "Suspended")),
    )
    .await;
    assert!(
        history.iter().all(|(_, v)| v.status == "InProgress"),
        "{:#?}",
        summary(&history)
    );
    assert!(
        history.iter().any(|(_, v)| v.reason == "Suspending"),
        "scaling to zero reads InProgress: {:#?}",
        summary(&history)
    );
    // Scaled to zero, the operator reports nothing left to do (Reconciling and Stalled
    // False), but kstatus then falls back to Ready, which a suspended workspace is not: it
    // stays InProgress. docs/gitops.md says how Flux and Argo CD are told otherwise.
    let (stopped, verdict) = history.last().unwrap();
    assert_eq!(condition(stopped, "Stalled"), Some(("False", "Healthy")));
    assert_eq!(
        (verdict.status.as_str(), verdict.reason.as_str()),
        ("InProgress", "Suspended"),
        "{verdict:?}"
    );

    let resumed = set_suspended(&api, &name, false).await;
    let history = follow(
        &api,
        &name,
        &resumed.resource_version().unwrap(),
        |ws, v| has_status(ws) && v.status == "Current",
    )
    .await;
    in_progress_until_the_end("resuming", &history);
    assert!(is_ready(&history.last().unwrap().0));

    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_crash_loop_reads_failed_until_the_image_is_fixed() {
    tool(); // built before any deadline runs
    // Only the e2e admin may run the test registry's images.
    let api: Api<Workspace> = Api::namespaced(client(User::Admin).await, "default");
    let name = unique_name("kstatus-crash");
    let created = api
        .create(
            &PostParams::default(),
            &manifest(
                &name,
                json!({"image": "registry.guildnet.test/crashloop:1"}),
            ),
        )
        .await
        .unwrap();
    let history = follow(
        &api,
        &name,
        &created.resource_version().unwrap(),
        |ws, v| has_status(ws) && v.status != "InProgress",
    )
    .await;
    in_progress_until_the_end("until the crash loop counts", &history);
    let (_, verdict) = history.last().unwrap();
    assert_eq!(
        (verdict.status.as_str(), verdict.reason.as_str()),
        ("Failed", "CrashLoopBackOff"),
        "{:#?}",
        summary(&history)
    );
    assert!(
        verdict.message.contains("fix the image"),
        "{}",
        verdict.message
    );

    let fixed = edit(&api, &name, json!({"image": "nginx:1.27"})).await;
    let history = follow(&api, &name, &fixed.resource_version().unwrap(), |ws, v| {
        has_status(ws) && v.status == "Current"
    })
    .await;
    assert!(is_ready(&history.last().unwrap().0));

    api.delete(&name, &DeleteParams::default()).await.unwrap();
}
