//! Building `metav1.Condition`s the way Kubernetes expects them: `lastTransitionTime`
//! changes only when a condition's status flips, so "Ready since" stays meaningful and a
//! status write that changes nothing can be skipped.

use guildnet_api::common::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A condition as a reconcile observes it, before transition times are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The condition's `type`, e.g. `Ready`.
    pub type_: &'static str,
    /// Whether the condition holds, written as `status: "True"` or `"False"`.
    pub status: bool,
    /// The condition's `reason`, a CamelCase word such as `DeploymentReady`.
    pub reason: &'static str,
    /// The condition's `message` for humans; may be empty.
    pub message: String,
}

impl Observed {
    /// `type_` and `reason` are a kind's condition type and reason, e.g.
    /// [`guildnet_api::workspace::facts::ConditionType`] and its `Reason`.
    pub fn new(
        type_: impl Into<&'static str>,
        status: bool,
        reason: impl Into<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Merges `observed` into the `previous` conditions: a condition whose status is unchanged
/// keeps its `lastTransitionTime`; a new or flipped one gets `now`. Conditions not observed
/// any more are dropped. The result is ordered as `observed`.
pub fn merge(
    previous: &[Condition],
    observed: Vec<Observed>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    observed
        .into_iter()
        .map(|o| {
            let status = if o.status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == o.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: o.type_.to_string(),
                status,
                reason: o.reason.to_string(),
                message: o.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use guildnet_api::common::{find_condition, find_true_condition};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn transition_time_is_kept_until_the_status_flips() {
        let first = merge(
            &[],
            vec![Observed::new("Ready", false, "Starting", "")],
            Some(1),
            at(100),
        );
        assert_eq!(first[0].last_transition_time, Time(at(100)));

        let same = merge(
            &first,
            vec![Observed::new("Ready", false, "Pulling", "other message")],
            Some(2),
            at(200),
        );
        assert_eq!(
            same[0].last_transition_time,
            Time(at(100)),
            "reason and message changes are no transition"
        );
        assert_eq!(
            (same[0].reason.as_str(), same[0].observed_generation),
            ("Pulling", Some(2))
        );

        let flipped = merge(
            &same,
            vec![Observed::new("Ready", true, "DeploymentReady", "")],
            Some(2),
            at(300),
        );
        assert_eq!(flipped[0].last_transition_time, Time(at(300)));
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn conditions_no_longer_observed_are_dropped_and_order_follows_observation() {
        let previous = merge(
            &[],
            vec![
                Observed::new("Ready", true, "A", ""),
                Observed::new("Stale", true, "B", ""),
            ],
            None,
            at(1),
        );
        let merged = merge(
            &previous,
            vec![
                Observed::new("Failed", false, "C", ""),
                Observed::new("Ready", true, "A", ""),
            ],
            None,
            at(2),
        );
        let types: Vec<&str> = merged.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Failed", "Ready"]);
        assert!(
            find_true_condition(&merged, "Ready").is_some()
                && find_true_condition(&merged, "Failed").is_none()
                && find_condition(&merged, "Stale").is_none()
        );
    }
}
