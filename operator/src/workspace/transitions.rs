//! Which lifecycle changes are announced (an Event, a log line) and counted (metrics):
//! launching, entering Failed, becoming Ready for the first time. Decided from the status
//! before and after a write, so a new leader needs nothing from the previous one
//! ([`crate::reconcile::events::Announced`] keeps one process from announcing twice).

use guildnet_api::common::find_condition;
use guildnet_api::workspace::facts::ConditionType;
use guildnet_api::workspace::{WorkspacePhase, WorkspaceStatus};

/// The `Failed` condition's reason when `new` enters the Failed phase from `previous`.
pub fn entered_failed<'a>(previous: &WorkspaceStatus, new: &'a WorkspaceStatus) -> Option<&'a str> {
    let entered =
        new.phase == Some(WorkspacePhase::Failed) && previous.phase != Some(WorkspacePhase::Failed);
    entered.then(|| {
        find_condition(&new.conditions, ConditionType::Failed)
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
    let Some(ready) = find_condition(&previous.conditions, ConditionType::Ready) else {
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
    use crate::reconcile::conditions::{Observed, merge};
    const READY: &str = ConditionType::Ready.as_str();
    const PROGRESSING: &str = ConditionType::Progressing.as_str();
    const FAILED: &str = ConditionType::Failed.as_str();
    const SUSPENDED: &str = ConditionType::Suspended.as_str();
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
    fn entering_failed_reports_the_reason_once() {
        let pending = starting(&WorkspaceStatus::default(), 1);
        let crashed = failed(&pending, 5);
        assert_eq!(entered_failed(&pending, &crashed), Some("CrashLoopBackOff"));
        assert_eq!(entered_failed(&crashed, &failed(&crashed, 9)), None);
        assert_eq!(entered_failed(&pending, &ready(&pending, 9)), None);
    }
}
