//! A workspace's status, computed from what its children report. Pure: the controller reads
//! the Deployment and Pods from its caches and writes the result only when it changed.

use super::views::{DeploymentView, PodView};
use crate::reconcile::conditions::{self, Observed};
use guildnet_api::common::find_true_condition;
use guildnet_api::workspace::facts::{ConditionType, Reason, proxy_path};
use guildnet_api::workspace::{Hint, WorkspacePhase, WorkspaceStatus};
use guildnet_api::{Workspace, WorkspaceSpec, labels};
use k8s_openapi::api::core::v1::ContainerStatus;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// Why a workspace cannot run, as the `Failed` condition's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The `Failed` condition's reason, e.g. `ImagePullFailed` or `CrashLoopBackOff`.
    pub reason: Reason,
    /// The condition's message: what went wrong and how to fix it.
    pub message: String,
}

/// Where the workspace runs, as its status records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where<'a> {
    /// The cluster the operator runs in.
    Local,
    /// A registered cluster, where its objects are `namespace/name`.
    Placed(&'a Placed),
    /// No registered cluster matches `spec.placement` and accepts workspaces; the message
    /// says why.
    Unplaced(&'a str),
}

/// The registered cluster a workspace runs on, and its objects' namespace and name there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The ClusterRegistration's name.
    pub cluster: String,
    /// The namespace there (the registration's `spec.namespace` when it was placed).
    pub namespace: String,
    /// The name of its objects there, `<name>-<hash>`.
    pub name: String,
}

/// What the status is computed from.
pub struct Observation<'a> {
    /// Where the workspace runs.
    pub placement: Where<'a>,
    /// The Deployment as the last apply returned it; `None` when the apply failed.
    pub deployment: Option<&'a DeploymentView>,
    /// The workspace's pods (any not being deleted).
    pub pods: &'a [&'a PodView],
    /// Restarts of a container in CrashLoopBackOff at or above which the workspace fails.
    pub crash_loop_restarts: i32,
    /// The `spec.hint` profile the builders used, for `status.profileApplied`.
    pub profile_applied: Option<Hint>,
    /// The generated password Secret's name, for `status.passwordSecret`.
    pub password_secret: Option<String>,
    /// Names of the persistent volumes' claims, for `status.volumeClaims`.
    pub volume_claims: Vec<String>,
    /// A failure found outside the children: a spec that cannot be built, the Quota it
    /// exceeds.
    pub failure: Option<Failure>,
    /// Set while applying the children keeps conflicting with other writers.
    pub conflict_backoff: Option<String>,
    /// The outcome of a requested snapshot.
    pub snapshot: Option<Observed>,
    /// The time new or flipped conditions get as `lastTransitionTime`.
    pub now: Timestamp,
}

/// The status `ws` should have given `obs`.
pub fn compute(ws: &Workspace, obs: &Observation) -> WorkspaceStatus {
    let previous = ws.status.clone().unwrap_or_default();
    let state = State::of(ws, obs);
    let progressing = progressing(&state, obs);
    let failed = failed(&state);
    // The same observations under the names kstatus reads.
    let reconciling = Observed {
        type_: ConditionType::Reconciling.as_str(),
        ..progressing.clone()
    };
    let stalled = Observed {
        type_: ConditionType::Stalled.as_str(),
        ..failed.clone()
    };
    let observed = [
        ready(&state),
        progressing,
        reconciling,
        failed,
        stalled,
        suspended(&state),
    ];
    let degraded = match obs.placement {
        Where::Placed(placed) => Some(Observed::new(
            ConditionType::Degraded,
            false,
            Reason::ClusterReachable,
            format!("cluster {} answers", placed.cluster),
        )),
        Where::Local | Where::Unplaced(_) => None,
    };

    let (name, namespace) = (ws.name_any(), ws.namespace().unwrap_or_default());
    // The Service is in the cluster the workspace runs in, under the name it has there.
    let service_dns = match obs.placement {
        Where::Placed(placed) => format!("{}.{}.svc.cluster.local", placed.name, placed.namespace),
        Where::Local | Where::Unplaced(_) => format!("{name}.{namespace}.svc.cluster.local"),
    };
    let mut status = WorkspaceStatus {
        phase: Some(state.phase()),
        conditions: conditions::merge(
            &previous.conditions,
            observed
                .into_iter()
                .chain(degraded)
                .chain(obs.snapshot.clone())
                .collect(),
            ws.metadata.generation,
            obs.now,
        ),
        observed_generation: ws.metadata.generation,
        ready_replicas: Some(state.ready_replicas),
        service_dns: Some(service_dns),
        proxy_target: Some(proxy_path(&namespace, &name)),
        url: external_url(&ws.spec),
        cluster: None,
        remote_namespace: None,
        remote_name: None,
        // Written by the proxy; the operator never moves it.
        last_access_time: previous.last_access_time,
        profile_applied: obs.profile_applied,
        password_secret: obs.password_secret.clone(),
        volume_claims: obs.volume_claims.clone(),
    };
    if let Where::Placed(placed) = obs.placement {
        record_placement(&mut status, placed);
    }
    status
}

/// Why the cluster a workspace is placed on is out of reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// It does not answer, or has no connection yet.
    Unreachable {
        /// Since when it does not answer; `None`: not connected yet.
        since: Option<Timestamp>,
    },
    /// Its ClusterRegistration was removed.
    Removed,
}

/// The status of a workspace whose cluster is out of reach: as last seen, with
/// `Degraded=True` saying why (`ClusterUnreachable` since when, or `ClusterRemoved`) and,
/// while it is being deleted, `Ready=False` reason `CleanupPending`. Its generation stays
/// unobserved, so whoever waits for the spec to be rolled out keeps waiting.
pub fn out_of_reach(
    ws: &Workspace,
    placed: &Placed,
    outage: Outage,
    now: Timestamp,
) -> WorkspaceStatus {
    let mut status = ws.status.clone().unwrap_or_default();
    record_placement(&mut status, placed);
    let cluster = &placed.cluster;
    let (reason, message) = match outage {
        Outage::Unreachable { since: Some(since) } => (
            Reason::ClusterUnreachable,
            format!(
                "cluster {cluster} has not answered since {since}; the rest of this status is as last seen there, and nothing is deleted or moved"
            ),
        ),
        Outage::Unreachable { since: None } => (
            Reason::ClusterUnreachable,
            format!(
                "cluster {cluster} is not connected yet; the rest of this status is as last seen there"
            ),
        ),
        Outage::Removed => (
            Reason::ClusterRemoved,
            format!(
                "ClusterRegistration {cluster} was removed; register the cluster again under that name to resume this workspace there"
            ),
        ),
    };
    let mut observed = vec![Observed::new(
        ConditionType::Degraded,
        true,
        reason,
        message,
    )];
    if ws.is_deleting() {
        observed.push(Observed::new(
            ConditionType::Ready,
            false,
            Reason::CleanupPending,
            format!(
                "deleting: its objects in cluster {cluster} are deleted once it answers; annotate the workspace {}=true to delete it without them",
                labels::ORPHAN_REMOTE
            ),
        ));
    }
    let generation = status.observed_generation;
    for condition in conditions::merge(&status.conditions, observed, generation, now) {
        match status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition.type_)
        {
            Some(kept) => *kept = condition,
            None => status.conditions.push(condition),
        }
    }
    status
}

fn record_placement(status: &mut WorkspaceStatus, placed: &Placed) {
    status.cluster = Some(placed.cluster.clone());
    status.remote_namespace = Some(placed.namespace.clone());
    status.remote_name = Some(placed.name.clone());
}

/// What every condition is decided from.
struct State {
    suspended: bool,
    /// Why no cluster runs it yet (`spec.placement` matches none that accepts workspaces).
    unplaced: Option<String>,
    ready_replicas: i32,
    /// The first failure found: outside the children, then the pods, then the Deployment.
    failure: Option<Failure>,
    ready: bool,
}

impl State {
    fn of(ws: &Workspace, obs: &Observation) -> Self {
        let suspended = ws.is_suspended();
        let ready_replicas = obs
            .deployment
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let failure = obs.failure.clone().or_else(|| {
            if suspended {
                return None;
            }
            pod_failure(obs.pods, obs.crash_loop_restarts)
                .or_else(|| deployment_failure(obs.deployment))
        });
        let ready = ready_replicas > 0 && !suspended && failure.is_none();
        let unplaced = match obs.placement {
            Where::Unplaced(why) => Some(why.to_owned()),
            Where::Local | Where::Placed(_) => None,
        };
        Self {
            suspended,
            unplaced,
            ready_replicas,
            failure,
            ready,
        }
    }

    fn phase(&self) -> WorkspacePhase {
        if self.failure.is_some() {
            WorkspacePhase::Failed
        } else if self.suspended {
            WorkspacePhase::Stopped
        } else if self.ready {
            WorkspacePhase::Running
        } else {
            WorkspacePhase::Pending
        }
    }
}

fn ready(state: &State) -> Observed {
    let observed = |status, reason, message: String| {
        Observed::new(ConditionType::Ready, status, reason, message)
    };
    match (&state.failure, state.suspended, state.ready) {
        (Some(f), _, _) => observed(false, f.reason, f.message.clone()),
        (None, false, _) if state.unplaced.is_some() => observed(
            false,
            Reason::NoMatchingCluster,
            state.unplaced.clone().unwrap_or_default(),
        ),
        (None, true, _) => observed(
            false,
            Reason::Suspended,
            "the workspace is suspended: set spec.lifecycle.suspend to false to resume".into(),
        ),
        (None, false, true) => observed(
            true,
            Reason::DeploymentReady,
            format!("{} replica(s) ready", state.ready_replicas),
        ),
        (None, false, false) => observed(
            false,
            Reason::Starting,
            "waiting for the workspace pod to become ready".into(),
        ),
    }
}

/// A failure outranks a conflict, so Reconciling and Stalled are never both True: kstatus
/// would read whichever comes first.
fn progressing(state: &State, obs: &Observation) -> Observed {
    let observed = |status, reason, message: String| {
        Observed::new(ConditionType::Progressing, status, reason, message)
    };
    let rollout = || rollout_pending(obs.deployment);
    match (&state.failure, &obs.conflict_backoff, state.suspended) {
        (Some(_), _, _) => observed(
            false,
            Reason::Failed,
            "the workspace failed; see the Failed condition".into(),
        ),
        (None, Some(message), _) => observed(true, Reason::ConflictBackoff, message.clone()),
        (None, None, false) if state.unplaced.is_some() => observed(
            true,
            Reason::NoMatchingCluster,
            format!(
                "waiting for a cluster: {}",
                state.unplaced.as_deref().unwrap_or_default()
            ),
        ),
        (None, None, true) => match rollout() {
            Some(pending) => observed(
                true,
                Reason::Suspending,
                format!("scaling to zero: {pending}"),
            ),
            None => observed(false, Reason::Suspended, "scaled to zero".into()),
        },
        (None, None, false) if !state.ready => observed(
            true,
            Reason::Deploying,
            "the workspace pod is starting".into(),
        ),
        (None, None, false) => match rollout() {
            Some(pending) => observed(
                true,
                Reason::RollingOut,
                format!("rolling out the spec: {pending}"),
            ),
            None => observed(
                false,
                Reason::Ready,
                "the workspace is up to date and ready".into(),
            ),
        },
    }
}

fn failed(state: &State) -> Observed {
    match &state.failure {
        Some(f) => Observed::new(ConditionType::Failed, true, f.reason, f.message.clone()),
        None => Observed::new(ConditionType::Failed, false, Reason::Healthy, ""),
    }
}

fn suspended(state: &State) -> Observed {
    if state.suspended {
        Observed::new(
            ConditionType::Suspended,
            true,
            Reason::Suspended,
            "spec.lifecycle.suspend is true",
        )
    } else {
        Observed::new(ConditionType::Suspended, false, Reason::Active, "")
    }
}

fn external_url(spec: &WorkspaceSpec) -> Option<String> {
    let ingress = spec.exposure.as_ref()?.ingress.as_ref()?;
    let scheme = if ingress.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}/", ingress.host))
}

/// Image pull errors fail a workspace at once; a crash loop once a container has restarted
/// `crash_loop_restarts` times, so one unlucky restart does not.
fn pod_failure(pods: &[&PodView], crash_loop_restarts: i32) -> Option<Failure> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .find_map(|container| container_failure(container, crash_loop_restarts))
}

fn container_failure(container: &ContainerStatus, crash_loop_restarts: i32) -> Option<Failure> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    match waiting.reason.as_deref()? {
        reason @ ("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName") => {
            let detail = waiting
                .message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            Some(Failure {
                reason: Reason::ImagePullFailed,
                message: format!(
                    "cannot pull image {}: {reason}{detail}: check spec.image and spec.imagePullSecrets",
                    container.image
                ),
            })
        }
        "CrashLoopBackOff" if container.restart_count >= crash_loop_restarts => {
            let last = container
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    let reason = t.reason.as_deref().unwrap_or("unknown");
                    format!(", last exit code {} ({reason})", t.exit_code)
                })
                .unwrap_or_default();
            Some(Failure {
                reason: Reason::CrashLoopBackOff,
                message: format!(
                    "container {} restarted {} times{last}: fix the image, command or args; the workspace recovers once the pod runs",
                    container.name, container.restart_count
                ),
            })
        }
        _ => None,
    }
}

/// What the Deployment still lacks to match its spec, read as `kubectl rollout status` does;
/// `None` once it matches (or there is none: nothing runs).
fn rollout_pending(deployment: Option<&DeploymentView>) -> Option<String> {
    let deployment = deployment?;
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation < deployment.metadata.generation {
        return Some("waiting for the Deployment controller to see the change".to_owned());
    }
    // The API server leaves out zero counts.
    let want = deployment.spec.replicas.unwrap_or(1);
    let replicas = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    if updated < want {
        Some(format!("{updated} of {want} pod(s) updated"))
    } else if replicas > want {
        Some(format!("{} pod(s) left to stop", replicas - want))
    } else if ready < want {
        Some(format!("{ready} of {want} pod(s) ready"))
    } else {
        None
    }
}

fn deployment_failure(deployment: Option<&DeploymentView>) -> Option<Failure> {
    let conditions = deployment?.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.status.as_deref() == Some("False")
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| Failure {
            reason: Reason::ProgressDeadlineExceeded,
            message: format!(
                "the workspace did not become ready in time: {}",
                c.message.as_deref().unwrap_or("progress deadline exceeded")
            ),
        })
}

/// When the workspace last stopped or failed, for `ttlSecondsAfterFinished`.
pub fn finished_at(status: &WorkspaceStatus) -> Option<Timestamp> {
    let since =
        |type_| find_true_condition(&status.conditions, type_).map(|c| c.last_transition_time.0);
    match status.phase? {
        WorkspacePhase::Failed => since(ConditionType::Failed),
        WorkspacePhase::Stopped => since(ConditionType::Suspended),
        WorkspacePhase::Pending | WorkspacePhase::Running => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guildnet_api::common::find_condition;

    const READY: &str = ConditionType::Ready.as_str();
    const PROGRESSING: &str = ConditionType::Progressing.as_str();
    const FAILED: &str = ConditionType::Failed.as_str();
    const RECONCILING: &str = ConditionType::Reconciling.as_str();
    const STALLED: &str = ConditionType::Stalled.as_str();
    use guildnet_api::workspace::Lifecycle;
    use serde_json::json;

    fn workspace(suspend: bool) -> Workspace {
        let mut ws = Workspace::new(
            "ide",
            WorkspaceSpec {
                image: "nginx".into(),
                lifecycle: Some(Lifecycle {
                    suspend: Some(suspend),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        ws.metadata.namespace = Some("team-a".into());
        ws.metadata.generation = Some(3);
        ws
    }

    /// A Deployment wanting `want` replicas at `generation`, whose controller last saw
    /// `observed` and counts `pods` pods, `updated` of them from the latest template and
    /// `ready` of them ready.
    fn deployment_at(
        want: i32,
        (generation, observed): (i64, i64),
        (pods, updated, ready): (i32, i32, i32),
    ) -> DeploymentView {
        serde_json::from_value(json!({
            "metadata": {"generation": generation},
            "spec": {"replicas": want, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "replicas": pods, "updatedReplicas": updated, "readyReplicas": ready}
        }))
        .unwrap()
    }

    /// A settled Deployment of one replica, `ready` of it ready.
    fn deployment(ready: i32) -> DeploymentView {
        deployment_at(1, (1, 1), (1, 1, ready))
    }

    fn pod(waiting_reason: &str, restarts: i32) -> PodView {
        serde_json::from_value(json!({"status": {"containerStatuses": [{
            "name": "workspace", "image": "example/app:1", "imageID": "", "ready": false, "restartCount": restarts,
            "state": {"waiting": {"reason": waiting_reason, "message": "back-off"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
        }]}}))
        .unwrap()
    }

    fn observe<'a>(
        deployment: Option<&'a DeploymentView>,
        pods: &'a [&'a PodView],
    ) -> Observation<'a> {
        Observation {
            placement: Where::Local,
            deployment,
            pods,
            crash_loop_restarts: 3,
            profile_applied: None,
            password_secret: None,
            volume_claims: vec![],
            failure: None,
            conflict_backoff: None,
            snapshot: None,
            now: Timestamp::from_second(1_000).unwrap(),
        }
    }

    fn condition<'a>(status: &'a WorkspaceStatus, type_: &str) -> (&'a str, &'a str) {
        let c = find_condition(&status.conditions, type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn phase_and_conditions_follow_the_children() {
        let ready = deployment(1);
        let not_ready = deployment(0);
        let crashing = pod("CrashLoopBackOff", 5);
        let restarted_once = pod("CrashLoopBackOff", 1);
        let unpullable = pod("ImagePullBackOff", 0);
        // (what, suspended, deployment, pods, phase, Ready (status, reason), Failed (status, reason))
        type Case<'a> = (
            &'a str,
            bool,
            Option<&'a DeploymentView>,
            Vec<&'a PodView>,
            WorkspacePhase,
            (&'a str, &'a str),
            (&'a str, &'a str),
        );
        let cases: Vec<Case> = vec![
            (
                "no deployment yet",
                false,
                None,
                vec![],
                WorkspacePhase::Pending,
                ("False", "Starting"),
                ("False", "Healthy"),
            ),
            (
                "pod starting",
                false,
                Some(&not_ready),
                vec![],
                WorkspacePhase::Pending,
                ("False", "Starting"),
                ("False", "Healthy"),
            ),
            (
                "ready",
                false,
                Some(&ready),
                vec![],
                WorkspacePhase::Running,
                ("True", "DeploymentReady"),
                ("False", "Healthy"),
            ),
            (
                "suspended",
                true,
                Some(&not_ready),
                vec![],
                WorkspacePhase::Stopped,
                ("False", "Suspended"),
                ("False", "Healthy"),
            ),
            (
                "crash loop",
                false,
                Some(&not_ready),
                vec![&crashing],
                WorkspacePhase::Failed,
                ("False", "CrashLoopBackOff"),
                ("True", "CrashLoopBackOff"),
            ),
            (
                "one restart is no crash loop",
                false,
                Some(&not_ready),
                vec![&restarted_once],
                WorkspacePhase::Pending,
                ("False", "Starting"),
                ("False", "Healthy"),
            ),
            (
                "image pull",
                false,
                Some(&not_ready),
                vec![&unpullable],
                WorkspacePhase::Failed,
                ("False", "ImagePullFailed"),
                ("True", "ImagePullFailed"),
            ),
            (
                "a suspended crash loop is just stopped",
                true,
                Some(&not_ready),
                vec![&crashing],
                WorkspacePhase::Stopped,
                ("False", "Suspended"),
                ("False", "Healthy"),
            ),
        ];
        for (what, suspend, deployment, pods, phase, ready_condition, failed_condition) in cases {
            let status = compute(&workspace(suspend), &observe(deployment, &pods));
            assert_eq!(status.phase, Some(phase), "{what}");
            assert_eq!(condition(&status, READY), ready_condition, "{what}");
            assert_eq!(condition(&status, FAILED), failed_condition, "{what}");
            assert_eq!(status.observed_generation, Some(3), "{what}");
        }
    }

    #[test]
    fn crash_loop_message_names_the_container_and_the_fix() {
        let crashing = pod("CrashLoopBackOff", 4);
        let status = compute(&workspace(false), &observe(None, &[&crashing]));
        let failed = find_condition(&status.conditions, FAILED).unwrap();
        assert!(
            failed
                .message
                .contains("container workspace restarted 4 times, last exit code 1"),
            "{}",
            failed.message
        );
        assert!(
            failed.message.contains("fix the image"),
            "{}",
            failed.message
        );
    }

    #[test]
    fn addresses_are_derived_from_the_name() {
        let status = compute(&workspace(false), &observe(None, &[]));
        assert_eq!(status.proxy_target.as_deref(), Some("/w/team-a/ide/"));
        assert_eq!(
            status.service_dns.as_deref(),
            Some("ide.team-a.svc.cluster.local")
        );
    }

    #[test]
    fn recomputing_an_unchanged_status_gives_the_same_status() {
        let mut ws = workspace(false);
        let ready = deployment(1);
        let first = compute(&ws, &observe(Some(&ready), &[]));
        ws.status = Some(first.clone());
        let mut later = observe(Some(&ready), &[]);
        later.now = Timestamp::from_second(5_000).unwrap();
        assert_eq!(
            compute(&ws, &later),
            first,
            "no change, so the controller skips the write"
        );
    }

    #[test]
    fn reconciling_and_stalled_tell_kstatus_whether_the_workspace_is_where_its_spec_says() {
        let settled = deployment(1);
        let starting = deployment(0);
        let unseen_edit = deployment_at(1, (2, 1), (1, 1, 1));
        let old_pod = deployment_at(1, (2, 2), (1, 0, 1));
        let stopping = deployment_at(0, (2, 2), (1, 1, 1));
        let stopped = deployment_at(0, (2, 2), (0, 0, 0));
        let unseen_suspend = deployment_at(0, (2, 1), (1, 1, 1));
        let crashing = pod("CrashLoopBackOff", 5);
        let unpullable = pod("ImagePullBackOff", 0);
        let over_quota = Failure {
            reason: Reason::QuotaExceeded,
            message: "over quota".into(),
        };
        let invalid = Failure {
            reason: Reason::InvalidSpec,
            message: "bad spec".into(),
        };
        let conflict = Some("another writer".to_owned());
        // (what, suspended, deployment, pods, failure, conflict,
        //  Reconciling (status, reason), Stalled (status, reason))
        type Case<'a> = (
            &'a str,
            bool,
            Option<&'a DeploymentView>,
            Vec<&'a PodView>,
            Option<Failure>,
            Option<String>,
            (&'a str, &'a str),
            (&'a str, &'a str),
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("no deployment yet", false, None, vec![], None, None, ("True", "Deploying"), ("False", "Healthy")),
            ("pod starting", false, Some(&starting), vec![], None, None, ("True", "Deploying"), ("False", "Healthy")),
            ("ready and settled", false, Some(&settled), vec![], None, None, ("False", "Ready"), ("False", "Healthy")),
            ("edit not yet seen by the Deployment controller", false, Some(&unseen_edit), vec![], None, None, ("True", "RollingOut"), ("False", "Healthy")),
            ("old pod still serving", false, Some(&old_pod), vec![], None, None, ("True", "RollingOut"), ("False", "Healthy")),
            ("suspend not yet seen", true, Some(&unseen_suspend), vec![], None, None, ("True", "Suspending"), ("False", "Healthy")),
            ("scaling to zero", true, Some(&stopping), vec![], None, None, ("True", "Suspending"), ("False", "Healthy")),
            ("scaled to zero", true, Some(&stopped), vec![], None, None, ("False", "Suspended"), ("False", "Healthy")),
            ("resuming", false, Some(&stopped), vec![], None, None, ("True", "Deploying"), ("False", "Healthy")),
            ("crash loop", false, Some(&starting), vec![&crashing], None, None, ("False", "Failed"), ("True", "CrashLoopBackOff")),
            ("image pull", false, Some(&starting), vec![&unpullable], None, None, ("False", "Failed"), ("True", "ImagePullFailed")),
            ("invalid spec", false, None, vec![], Some(invalid), None, ("False", "Failed"), ("True", "InvalidSpec")),
            ("held over quota", false, Some(&stopped), vec![], Some(over_quota.clone()), None, ("False", "Failed"), ("True", "QuotaExceeded")),
            ("conflict", false, None, vec![], None, conflict.clone(), ("True", "ConflictBackoff"), ("False", "Healthy")),
            ("a failure outranks a conflict", false, None, vec![], Some(over_quota), conflict, ("False", "Failed"), ("True", "QuotaExceeded")),
        ];
        for (what, suspend, deployment, pods, failure, conflict, reconciling, stalled) in cases {
            let mut obs = observe(deployment, &pods);
            obs.failure = failure;
            obs.conflict_backoff = conflict;
            let status = compute(&workspace(suspend), &obs);
            assert_eq!(condition(&status, RECONCILING), reconciling, "{what}");
            assert_eq!(condition(&status, STALLED), stalled, "{what}");
            // Progressing and Failed under kstatus' names, nothing else.
            for (kstatus_name, ours) in [(RECONCILING, PROGRESSING), (STALLED, FAILED)] {
                let mut renamed = find_condition(&status.conditions, kstatus_name).cloned();
                renamed.as_mut().unwrap().type_ = ours.to_owned();
                assert_eq!(
                    renamed.as_ref(),
                    find_condition(&status.conditions, ours),
                    "{what}"
                );
            }
        }
    }

    #[test]
    fn progress_messages_say_what_is_left() {
        let stopping = deployment_at(0, (2, 2), (1, 1, 1));
        let status = compute(&workspace(true), &observe(Some(&stopping), &[]));
        let reconciling = find_condition(&status.conditions, RECONCILING).unwrap();
        assert_eq!(
            reconciling.message,
            "scaling to zero: 1 pod(s) left to stop"
        );
        let unseen_edit = deployment_at(1, (2, 1), (1, 1, 1));
        let status = compute(&workspace(false), &observe(Some(&unseen_edit), &[]));
        let reconciling = find_condition(&status.conditions, RECONCILING).unwrap();
        assert_eq!(
            reconciling.message,
            "rolling out the spec: waiting for the Deployment controller to see the change"
        );
    }

    fn edge() -> Placed {
        Placed {
            cluster: "edge".into(),
            namespace: "guildnet-workspaces".into(),
            name: "ide-0a1b2c3d".into(),
        }
    }

    #[test]
    fn a_placed_workspace_records_its_cluster_and_its_name_there() {
        let placed = edge();
        let ready = deployment(1);
        let status = compute(
            &workspace(false),
            &Observation {
                placement: Where::Placed(&placed),
                ..observe(Some(&ready), &[])
            },
        );
        assert_eq!(status.cluster.as_deref(), Some("edge"));
        assert_eq!(
            status.remote_namespace.as_deref(),
            Some("guildnet-workspaces")
        );
        assert_eq!(status.remote_name.as_deref(), Some("ide-0a1b2c3d"));
        assert_eq!(condition(&status, READY), ("True", "DeploymentReady"));
        let degraded = ConditionType::Degraded.as_str();
        assert_eq!(condition(&status, degraded), ("False", "ClusterReachable"));
        // Its Service is the one in that cluster; the proxy path stays the hub's.
        assert_eq!(
            status.service_dns.as_deref(),
            Some("ide-0a1b2c3d.guildnet-workspaces.svc.cluster.local")
        );
        assert_eq!(status.proxy_target.as_deref(), Some("/w/team-a/ide/"));
    }

    #[test]
    fn a_workspace_no_cluster_matches_waits_in_pending_saying_why() {
        let why = "no registered cluster has the labels region=mars";
        let status = compute(
            &workspace(false),
            &Observation {
                placement: Where::Unplaced(why),
                ..observe(None, &[])
            },
        );
        assert_eq!(status.phase, Some(WorkspacePhase::Pending));
        assert_eq!(condition(&status, READY), ("False", "NoMatchingCluster"));
        assert_eq!(
            condition(&status, PROGRESSING),
            ("True", "NoMatchingCluster")
        );
        let ready = find_condition(&status.conditions, READY).unwrap();
        assert_eq!(ready.message, why);
        assert_eq!(status.cluster, None, "nothing is decided yet");
    }

    #[test]
    fn an_unreachable_cluster_keeps_the_last_status_and_says_since_when() {
        let placed = edge();
        let mut ws = workspace(false);
        let ready = deployment(1);
        let seen = compute(
            &ws,
            &Observation {
                placement: Where::Placed(&placed),
                ..observe(Some(&ready), &[])
            },
        );
        ws.status = Some(seen.clone());
        let since = Timestamp::from_second(2_000).unwrap();
        let now = Timestamp::from_second(2_100).unwrap();
        let status = out_of_reach(
            &ws,
            &placed,
            Outage::Unreachable { since: Some(since) },
            now,
        );
        let degraded = ConditionType::Degraded.as_str();
        assert_eq!(condition(&status, degraded), ("True", "ClusterUnreachable"));
        let message = &find_condition(&status.conditions, degraded)
            .unwrap()
            .message;
        assert!(
            message.contains("edge") && message.contains(&since.to_string()),
            "{message}"
        );
        // Everything else is as last seen there.
        assert_eq!(status.phase, seen.phase);
        assert_eq!(status.ready_replicas, seen.ready_replicas);
        assert_eq!(condition(&status, READY), ("True", "DeploymentReady"));
        assert_eq!(status.remote_name, seen.remote_name);
        assert_eq!(
            status
                .conditions
                .iter()
                .filter(|c| c.type_ == degraded)
                .count(),
            1
        );
        // The flip is dated now; an unchanged outage keeps that date.
        let flipped = find_condition(&status.conditions, degraded).unwrap();
        assert_eq!(flipped.last_transition_time.0, now);
        ws.status = Some(status.clone());
        let later = out_of_reach(
            &ws,
            &placed,
            Outage::Unreachable { since: Some(since) },
            Timestamp::from_second(9_000).unwrap(),
        );
        assert_eq!(later, status);
        // Recovery clears it.
        let recovered = compute(
            &ws,
            &Observation {
                placement: Where::Placed(&placed),
                ..observe(Some(&ready), &[])
            },
        );
        assert_eq!(
            condition(&recovered, degraded),
            ("False", "ClusterReachable")
        );
    }

    #[test]
    fn a_removed_registration_and_a_pending_cleanup_say_so_and_how_to_resume_or_let_go() {
        let placed = edge();
        let mut ws = workspace(false);
        let now = Timestamp::from_second(2_000).unwrap();
        let status = out_of_reach(&ws, &placed, Outage::Removed, now);
        let degraded = ConditionType::Degraded.as_str();
        assert_eq!(condition(&status, degraded), ("True", "ClusterRemoved"));
        let message = &find_condition(&status.conditions, degraded)
            .unwrap()
            .message;
        assert!(message.contains("register the cluster again"), "{message}");
        assert!(find_condition(&status.conditions, READY).is_none());

        ws.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        let status = out_of_reach(&ws, &placed, Outage::Unreachable { since: None }, now);
        assert_eq!(condition(&status, degraded), ("True", "ClusterUnreachable"));
        assert_eq!(condition(&status, READY), ("False", "CleanupPending"));
        let message = &find_condition(&status.conditions, READY).unwrap().message;
        assert!(
            message.contains("guildnet.io/orphan-remote=true"),
            "{message}"
        );
    }

    #[test]
    fn finished_at_is_when_the_workspace_stopped_or_failed() {
        let mut ws = workspace(true);
        let stopped = compute(&ws, &observe(None, &[]));
        assert_eq!(
            finished_at(&stopped),
            Some(Timestamp::from_second(1_000).unwrap())
        );
        ws.spec.lifecycle = None;
        let running = compute(&ws, &observe(Some(&deployment(1)), &[]));
        assert_eq!(finished_at(&running), None);
    }
}
