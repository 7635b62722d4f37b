//! Idle reaping and `ttlSecondsAfterFinished`: which workspaces to suspend or delete, decided
//! from the controller's cache alone so a scan over thousands of workspaces costs no API
//! call.

use super::status::finished_at;
use guildnet_api::Workspace;
use guildnet_api::common::find_true_condition;
use guildnet_api::workspace::WorkspacePhase;
use guildnet_api::workspace::facts::ConditionType;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// What happens to a workspace idle longer than its idle timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IdleAction {
    /// Scale it to zero by setting `spec.lifecycle.suspend: true`; volumes stay, the user
    /// resumes it by setting the field back to false.
    Suspend,
    /// Delete it (persistent volumes with `reclaimPolicy: Retain` stay).
    Delete,
}

/// What the reaper does to one workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reap {
    /// Idle past its timeout: apply the idle action.
    Idle {
        /// Time since the last proxied traffic, the last time it became Ready, or its creation.
        idle_for: Duration,
    },
    /// Stopped or failed longer than `ttlSecondsAfterFinished`: delete it.
    Expired {
        /// Time since it became Stopped or Failed.
        finished_for: Duration,
    },
}

/// The reaper's decision for `ws` at `now`. `default_idle_timeout` applies when the
/// workspace sets none; `None` disables idle reaping for such workspaces.
pub fn decide(
    ws: &Workspace,
    now: Timestamp,
    default_idle_timeout: Option<Duration>,
) -> Option<Reap> {
    if ws.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = ws.status.as_ref()?;
    if let (Some(finished), Some(ttl)) = (
        finished_at(status),
        ws.spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.ttl_seconds_after_finished),
    ) {
        let finished_for = elapsed(finished, now);
        return (finished_for >= Duration::from_secs(ttl.max(0) as u64))
            .then_some(Reap::Expired { finished_for });
    }
    if !matches!(
        status.phase,
        Some(WorkspacePhase::Running | WorkspacePhase::Pending)
    ) || ws.is_kept_alive()
    {
        return None;
    }
    let timeout = idle_timeout(ws).or(default_idle_timeout)?;
    let idle_for = elapsed(last_activity(ws)?, now);
    (idle_for >= timeout).then_some(Reap::Idle { idle_for })
}

/// Every reaping due among `workspaces`, in one pass over the cache.
pub fn scan<'a>(
    workspaces: impl IntoIterator<Item = &'a Workspace>,
    now: Timestamp,
    default_idle_timeout: Option<Duration>,
) -> Vec<(&'a Workspace, Reap)> {
    workspaces
        .into_iter()
        .filter_map(|ws| decide(ws, now, default_idle_timeout).map(|r| (ws, r)))
        .collect()
}

fn idle_timeout(ws: &Workspace) -> Option<Duration> {
    let text = ws.spec.lifecycle.as_ref()?.idle_timeout.as_deref()?;
    // The API server validated the format; a value it let through that we cannot read
    // disables reaping rather than reaping early.
    text.parse::<SignedDuration>()
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
}

/// The latest sign of use: traffic seen by the proxy or the moment the workspace became
/// ready (so a resumed workspace gets a full idle window); its creation when neither exists.
fn last_activity(ws: &Workspace) -> Option<Timestamp> {
    let status = ws.status.as_ref();
    let accessed = status
        .and_then(|s| s.last_access_time.as_ref())
        .map(|t| t.0);
    let ready_since = status
        .and_then(|s| find_true_condition(&s.conditions, ConditionType::Ready))
        .map(|c| c.last_transition_time.0);
    let created = ws.metadata.creation_timestamp.as_ref().map(|t| t.0);
    accessed.max(ready_since).or(created)
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::conditions::{Observed, merge};
    use guildnet_api::WorkspaceSpec;
    use guildnet_api::labels;
    use guildnet_api::workspace::{Lifecycle, WorkspaceStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    const MINUTE: i64 = 60;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    /// A workspace created at 0, in `phase` since `since`, last accessed at `accessed`.
    fn workspace(
        phase: WorkspacePhase,
        since: i64,
        accessed: Option<i64>,
        lifecycle: Lifecycle,
    ) -> Workspace {
        let mut ws = Workspace::new(
            "ide",
            WorkspaceSpec {
                image: "nginx".into(),
                lifecycle: Some(lifecycle),
                ..Default::default()
            },
        );
        ws.metadata.creation_timestamp = Some(Time(at(0)));
        let observed = match phase {
            WorkspacePhase::Running => Observed::new("Ready", true, "DeploymentReady", ""),
            WorkspacePhase::Failed => Observed::new("Failed", true, "CrashLoopBackOff", ""),
            WorkspacePhase::Stopped => Observed::new("Suspended", true, "Suspended", ""),
            WorkspacePhase::Pending => Observed::new("Ready", false, "Starting", ""),
        };
        ws.status = Some(WorkspaceStatus {
            phase: Some(phase),
            conditions: merge(&[], vec![observed], None, at(since)),
            last_access_time: accessed.map(|a| Time(at(a))),
            ..Default::default()
        });
        ws
    }

    fn idle(timeout: &str) -> Lifecycle {
        Lifecycle {
            idle_timeout: Some(timeout.into()),
            ..Default::default()
        }
    }

    fn ttl(seconds: i64) -> Lifecycle {
        Lifecycle {
            ttl_seconds_after_finished: Some(seconds),
            ..Default::default()
        }
    }

    #[test]
    fn idle_reaping_uses_the_latest_activity() {
        // (what, ready since, last access, idle timeout, idle for at 60m when reaped)
        let cases = [
            (
                "accessed 10m ago, timeout 30m",
                0,
                Some(50 * MINUTE),
                "30m",
                None,
            ),
            (
                "accessed 31m ago, timeout 30m",
                0,
                Some(29 * MINUTE),
                "30m",
                Some(31 * MINUTE),
            ),
            (
                "never accessed, ready 40m ago",
                20 * MINUTE,
                None,
                "30m",
                Some(40 * MINUTE),
            ),
            (
                "never accessed, ready 20m ago",
                40 * MINUTE,
                None,
                "1h",
                None,
            ),
            (
                "accessed long ago but ready again 10m ago",
                50 * MINUTE,
                Some(MINUTE),
                "30m",
                None,
            ),
        ];
        for (what, ready_since, accessed, timeout, expected) in cases {
            let ws = workspace(
                WorkspacePhase::Running,
                ready_since,
                accessed,
                idle(timeout),
            );
            let want = expected.map(|s| Reap::Idle {
                idle_for: Duration::from_secs(s as u64),
            });
            assert_eq!(decide(&ws, at(60 * MINUTE), None), want, "{what}");
        }
    }

    #[test]
    fn keepalive_stopped_and_unset_timeouts_are_never_idle() {
        let mut kept = workspace(WorkspacePhase::Running, 0, Some(0), idle("1m"));
        kept.metadata.labels = Some(BTreeMap::from([(labels::KEEPALIVE.into(), "true".into())]));
        assert_eq!(
            decide(&kept, at(999 * MINUTE), None),
            None,
            "keepalive opts out"
        );

        let stopped = workspace(WorkspacePhase::Stopped, 0, Some(0), idle("1m"));
        assert_eq!(
            decide(&stopped, at(999 * MINUTE), None),
            None,
            "a stopped workspace is not reaped again"
        );

        let no_timeout = workspace(WorkspacePhase::Running, 0, Some(0), Lifecycle::default());
        assert_eq!(
            decide(&no_timeout, at(999 * MINUTE), None),
            None,
            "no timeout anywhere: never idle"
        );
        assert!(
            matches!(
                decide(
                    &no_timeout,
                    at(999 * MINUTE),
                    Some(Duration::from_secs(3600))
                ),
                Some(Reap::Idle { .. })
            ),
            "the operator's default applies when the workspace sets none"
        );
    }

    #[test]
    fn ttl_deletes_only_after_the_workspace_finished_that_long_ago() {
        let failed = workspace(WorkspacePhase::Failed, 10 * MINUTE, None, ttl(600));
        assert_eq!(
            decide(&failed, at(15 * MINUTE), None),
            None,
            "failed 5m ago, ttl 10m"
        );
        assert_eq!(
            decide(&failed, at(20 * MINUTE), None),
            Some(Reap::Expired {
                finished_for: Duration::from_secs(600)
            })
        );
        let stopped = workspace(WorkspacePhase::Stopped, 0, None, ttl(60));
        assert!(matches!(
            decide(&stopped, at(MINUTE), None),
            Some(Reap::Expired { .. })
        ));
        let running = workspace(WorkspacePhase::Running, 0, None, ttl(60));
        assert_eq!(
            decide(&running, at(999 * MINUTE), None),
            None,
            "a running workspace never expires"
        );
    }

    #[test]
    fn a_scan_returns_only_the_workspaces_due() {
        let due = workspace(WorkspacePhase::Running, 0, Some(0), idle("1m"));
        let fresh = workspace(WorkspacePhase::Running, 0, Some(59 * MINUTE), idle("5m"));
        let all = [due.clone(), fresh];
        let reaped = scan(all.iter(), at(60 * MINUTE), None);
        assert_eq!(reaped.len(), 1);
        assert_eq!(reaped[0].0, &due);
    }
}
