//! Which lifecycle changes are announced (an Event, a log line) and counted (metrics):
//! launching, entering Failed, becoming Ready for the first time. Decided from the status
//! before and after a write, so a new leader needs nothing from the previous one; and
//! [`Announced`] keeps one process from announcing a change twice when a reconcile reads a
//! cache that does not show its own last status write yet.

use super::status::{FAILED, READY};
use crate::conditions;
use guildnet_api::workspace::{WorkspacePhase, WorkspaceStatus};
use std::collections::HashMap;

/// What this process last announced for each workspace, by uid.
#[derive(Debug, Default)]
pub struct Announced(HashMap<String, Milestone>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Milestone {
    Launched,
    Phase(WorkspacePhase),
}

impl Announced {
    /// Whether to announce the launch of workspace `uid`: only if nothing was announced for
    /// it yet.
    pub fn launch(&mut self, uid: &str) -> bool {
        if self.0.contains_key(uid) {
            return false;
        }
        self.0.insert(uid.to_owned(), Milestone::Launched);
        true
    }

    /// Whether to announce that workspace `uid` entered `phase`: only if that is not what
    /// was announced last.
    pub fn phase(&mut self, uid: &str, phase: WorkspacePhase) -> bool {
        self.0.insert(uid.to_owned(), Milestone::Phase(phase)) != Some(Milestone::Phase(phase))
    }

    /// Forgets the workspaces `exists` says are gone.
    pub fn retain(&mut self, exists: impl Fn(&str) -> bool) {
        self.0.retain(|uid, _| exists(uid));
    }

    /// Keeps only what the cache still shows, given each workspace's cached phase (`None`:
    /// gone; `Some(None)`: no status yet): a launch whose status has not appeared, a phase
    /// the workspace is still in. At the start of a leadership term this forgets what another
    /// leader may have changed since, and keeps the rest, so a replica that stood down and
    /// took over again does not announce its own launches twice.
    pub fn retain_agreeing(&mut self, cached: impl Fn(&str) -> Option<Option<WorkspacePhase>>) {
        self.0
            .retain(|uid, milestone| match (milestone, cached(uid)) {
                (_, None) => false,
                (Milestone::Launched, Some(phase)) => phase.is_none(),
                (Milestone::Phase(announced), Some(phase)) => phase == Some(*announced),
            });
    }
}

/// The `Failed` condition's reason when `new` enters the Failed phase from `previous`.
pub fn entered_failed<'a>(previous: &WorkspaceStatus, new: &'a WorkspaceStatus) -> Option<&'a str> {
    let entered =
        new.phase == Some(WorkspacePhase::Failed) && previous.phase != Some(WorkspacePhase::Failed);
    entered.then(|| {
        conditions::find(&new.conditions, FAILED)
            .map(|c| c.reason.as_str())
            .unwrap_or("Unknown")
    })
}

/// Whether `new` is the workspace's first Ready. The status keeps no history, but the
/// conditions' transition times tell: every condition is first written at once, and a
/// `Ready` condition that has been False since that first write has the earliest
/// `lastTransitionTime` of them all. A workspace that was Ready before flipped `Ready` later
/// than some other condition (suspending, failing or recovering flips others, not all of
/// them). One rare path is still counted twice: Ready, then failed, then suspended and
/// resumed, which flips every other condition after `Ready`.
pub fn first_ready(previous: &WorkspaceStatus, new: &WorkspaceStatus) -> bool {
    let becomes_ready = new.phase == Some(WorkspacePhase::Running)
        && previous.phase != Some(WorkspacePhase::Running);
    if !becomes_ready {
        return false;
    }
    let Some(ready) = conditions::find(&previous.conditions, READY) else {
        return true;
    };
    previous
        .conditions
        .iter()
        .all(|c| c.last_transition_time.0 >= ready.last_transition_time.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Observed, merge};
    use crate::workspace::status::{PROGRESSING, SUSPENDED};
    use k8s_openapi::jiff::Timestamp;

    /// A status in `phase` whose conditions flipped to `(type, status)` at second `at`,
    /// one step after another, starting from `previous`.
    fn step(
        previous: &WorkspaceStatus,
        phase: WorkspacePhase,
        conditions: [(&'static str, bool, &'static str); 4],
        at: i64,
    ) -> WorkspaceStatus {
        WorkspaceStatus {
            phase: Some(phase),
            conditions: merge(
                &previous.conditions,
                conditions
                    .into_iter()
                    .map(|(t, s, r)| Observed::new(t, s, r, ""))
                    .collect(),
                Some(1),
                Timestamp::from_second(at).unwrap(),
            ),
            ..Default::default()
        }
    }

    fn starting(previous: &WorkspaceStatus, at: i64) -> WorkspaceStatus {
        step(
            previous,
            WorkspacePhase::Pending,
            [
                (READY, false, "Starting"),
                (PROGRESSING, true, "Deploying"),
                (FAILED, false, "Healthy"),
                (SUSPENDED, false, "Active"),
            ],
            at,
        )
    }

    fn ready(previous: &WorkspaceStatus, at: i64) -> WorkspaceStatus {
        step(
            previous,
            WorkspacePhase::Running,
            [
                (READY, true, "DeploymentReady"),
                (PROGRESSING, false, "Ready"),
                (FAILED, false, "Healthy"),
                (SUSPENDED, false, "Active"),
            ],
            at,
        )
    }

    fn failed(previous: &WorkspaceStatus, at: i64) -> WorkspaceStatus {
        step(
            previous,
            WorkspacePhase::Failed,
            [
                (READY, false, "CrashLoopBackOff"),
                (PROGRESSING, false, "Failed"),
                (FAILED, true, "CrashLoopBackOff"),
                (SUSPENDED, false, "Active"),
            ],
            at,
        )
    }

    fn suspended(previous: &WorkspaceStatus, at: i64) -> WorkspaceStatus {
        step(
            previous,
            WorkspacePhase::Stopped,
            [
                (READY, false, "Suspended"),
                (PROGRESSING, false, "Suspended"),
                (FAILED, false, "Healthy"),
                (SUSPENDED, true, "Suspended"),
            ],
            at,
        )
    }

    #[test]
    fn a_new_workspace_becoming_ready_is_a_first_ready() {
        let none = WorkspaceStatus::default();
        assert!(first_ready(&none, &ready(&none, 1)));
        let pending = starting(&none, 1);
        assert!(first_ready(&pending, &ready(&pending, 5)));
    }

    #[test]
    fn a_workspace_that_failed_before_its_first_ready_still_counts() {
        let crashed = failed(&starting(&WorkspaceStatus::default(), 1), 5);
        let recovering = starting(&crashed, 9);
        assert!(first_ready(&recovering, &ready(&recovering, 12)));
    }

    #[test]
    fn ready_again_after_a_suspension_or_a_crash_is_not_a_first_ready() {
        let up = ready(&starting(&WorkspaceStatus::default(), 1), 5);
        let resumed = starting(&suspended(&up, 10), 20);
        assert!(!first_ready(&resumed, &ready(&resumed, 25)));
        let recovered = starting(&failed(&up, 10), 20);
        assert!(!first_ready(&recovered, &ready(&recovered, 25)));
    }

    #[test]
    fn staying_ready_is_no_transition() {
        let up = ready(&starting(&WorkspaceStatus::default(), 1), 5);
        assert!(!first_ready(&up, &ready(&up, 9)));
    }

    #[test]
    fn each_milestone_is_announced_once_even_from_a_stale_cache() {
        let mut announced = Announced::default();
        assert!(announced.launch("u1"));
        assert!(
            !announced.launch("u1"),
            "a second reconcile before the status shows"
        );
        assert!(announced.phase("u1", WorkspacePhase::Running));
        assert!(
            !announced.phase("u1", WorkspacePhase::Running),
            "stale Pending in the cache"
        );
        assert!(!announced.launch("u1"));
        assert!(announced.phase("u1", WorkspacePhase::Failed));
        assert!(
            announced.phase("u1", WorkspacePhase::Running),
            "a real recovery"
        );
        announced.retain(|uid| uid != "u1");
        assert!(announced.launch("u1"), "forgotten once gone");
    }

    #[test]
    fn a_new_term_keeps_only_what_the_cache_still_shows() {
        let mut announced = Announced::default();
        announced.launch("launching");
        announced.launch("launched");
        announced.phase("running", WorkspacePhase::Running);
        announced.phase("changed", WorkspacePhase::Running);
        announced.launch("gone");
        announced.retain_agreeing(|uid| match uid {
            "launching" => Some(None),
            "launched" => Some(Some(WorkspacePhase::Pending)),
            "running" => Some(Some(WorkspacePhase::Running)),
            "changed" => Some(Some(WorkspacePhase::Failed)),
            _ => None,
        });
        assert!(!announced.launch("launching"), "still launching: kept");
        assert!(!announced.phase("running", WorkspacePhase::Running), "kept");
        assert!(
            announced.launch("launched"),
            "its status appeared: forgotten"
        );
        assert!(
            announced.phase("changed", WorkspacePhase::Running),
            "another leader moved it"
        );
        assert!(announced.launch("gone"));
    }

    #[test]
    fn entering_failed_reports_the_reason_once() {
        let pending = starting(&WorkspaceStatus::default(), 1);
        let crashed = failed(&pending, 5);
        assert_eq!(entered_failed(&pending, &crashed), Some("CrashLoopBackOff"));
        assert_eq!(entered_failed(&crashed, &failed(&crashed, 9)), None);
        assert_eq!(entered_failed(&pending, &ready(&pending, 9)), None);
    }
}
