//! A ClusterRegistration's status, from what its probes found: conditions `Reachable` and
//! `Ready`, the cluster's version, when it last answered and how many workspaces run
//! there. Pure, so it is tested without a cluster.

use std::time::Duration;

use guildnet_api::ClusterRegistration;
use guildnet_api::cluster::facts::{ConditionType, Reason};
use guildnet_api::cluster::{ClusterRegistrationStatus, RetainedClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::health::{Reachability, SUCCESSES_TO_REACHABLE};
use crate::reconcile::conditions::{Observed, merge};

/// What only a change of the Secret, the registration or the registered cluster fixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The `Ready` condition's reason.
    pub reason: Reason,
    /// What is wrong and what to do, for the condition's message.
    pub message: String,
}

/// What the probes of a cluster found so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Reachable or not, with hysteresis (see `health`).
    pub reachability: Option<Reachability>,
    /// Since when probes have failed, and why the last one did.
    pub failing: Option<(Timestamp, String)>,
    /// What keeps workspaces off the cluster even while it answers.
    pub problem: Option<Problem>,
    /// The cluster's `/version` (`gitVersion`), once known.
    pub version: Option<String>,
    /// When the API server last answered a probe.
    pub last_answered: Option<Timestamp>,
    /// Workspaces placed on the cluster.
    pub workspaces: i32,
    /// The retained claims there, once its caches have listed them; else as last known.
    pub retained_claims: Option<Vec<RetainedClaim>>,
}

/// The status `registration` should have after `observation`, at `now`.
pub fn compute(
    registration: &ClusterRegistration,
    observation: &Observation,
    now: Timestamp,
) -> ClusterRegistrationStatus {
    let previous = registration.status.clone().unwrap_or_default();
    let reachable = match (observation.reachability, &observation.failing) {
        (Some(Reachability::Reachable), _) => Observed::new(
            ConditionType::Reachable,
            true,
            Reason::ProbeSucceeded,
            "the API server answers /readyz",
        ),
        (Some(Reachability::Unreachable), Some((since, cause))) => Observed::new(
            ConditionType::Reachable,
            false,
            Reason::ProbeFailed,
            format!("the API server has not answered since {since}: {cause}"),
        ),
        (Some(Reachability::Unreachable), None) => Observed::new(
            ConditionType::Reachable,
            false,
            Reason::ProbeFailed,
            format!(
                "the API server answers again; it counts as reachable after {SUCCESSES_TO_REACHABLE} answers in a row"
            ),
        ),
        (Some(Reachability::Unknown) | None, _) => Observed::new(
            ConditionType::Reachable,
            false,
            Reason::Probing,
            "not probed yet",
        ),
    };
    let ready = match &observation.problem {
        Some(problem) => Observed::new(
            ConditionType::Ready,
            false,
            problem.reason,
            problem.message.clone(),
        ),
        None if !reachable.status => Observed::new(
            ConditionType::Ready,
            false,
            Reason::Unreachable,
            "the cluster does not answer: see condition Reachable",
        ),
        None => Observed::new(
            ConditionType::Ready,
            true,
            Reason::ClusterReady,
            format!(
                "workspaces placed here run in its namespace {}",
                registration.remote_namespace()
            ),
        ),
    };
    let generation = registration.metadata.generation;
    ClusterRegistrationStatus {
        version: observation.version.clone().or(previous.version),
        last_probe_time: observation
            .last_answered
            .map(Time)
            .or(previous.last_probe_time),
        workspaces: Some(observation.workspaces),
        retained_claims: (observation.retained_claims.clone()).unwrap_or(previous.retained_claims),
        conditions: merge(
            &previous.conditions,
            vec![reachable, ready],
            generation,
            now,
        ),
        observed_generation: generation,
    }
}

/// Whether `next` should be written over `current`: when anything but the time of the
/// last answer changed, or that time is `refresh` older in `current` (so a healthy cluster
/// costs one write per `refresh`, not one per probe).
pub fn needs_write(
    current: Option<&ClusterRegistrationStatus>,
    next: &ClusterRegistrationStatus,
    refresh: Duration,
) -> bool {
    let Some(current) = current else {
        return true;
    };
    let probed = |status: &ClusterRegistrationStatus| status.last_probe_time.as_ref().map(|t| t.0);
    let same_otherwise = ClusterRegistrationStatus {
        last_probe_time: current.last_probe_time.clone(),
        ..next.clone()
    } == *current;
    if !same_otherwise {
        return true;
    }
    match (probed(current), probed(next)) {
        (Some(then), Some(now)) => now.duration_since(then).unsigned_abs() >= refresh,
        (then, now) => then != now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guildnet_api::cluster::{ClusterRegistrationSpec, KubeconfigSecretRef};
    use guildnet_api::common::find_condition;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn registration() -> ClusterRegistration {
        let mut cluster = ClusterRegistration::new(
            "edge",
            ClusterRegistrationSpec {
                kubeconfig_secret_ref: KubeconfigSecretRef {
                    namespace: "guildnet-system".into(),
                    name: "edge".into(),
                    key: None,
                },
                namespace: Some("team-ws".into()),
                ..ClusterRegistrationSpec::default()
            },
        );
        cluster.metadata.generation = Some(2);
        cluster
    }

    fn answering() -> Observation {
        Observation {
            reachability: Some(Reachability::Reachable),
            version: Some("v1.37.2".into()),
            last_answered: Some(at(100)),
            workspaces: 3,
            ..Observation::default()
        }
    }

    fn condition(
        status: &ClusterRegistrationStatus,
        type_: ConditionType,
    ) -> (String, String, String) {
        let c = find_condition(&status.conditions, type_).expect("the condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn an_answering_cluster_is_reachable_and_ready_with_its_version() {
        let status = compute(&registration(), &answering(), at(100));
        assert_eq!(condition(&status, ConditionType::Reachable).0, "True");
        let (ready, reason, message) = condition(&status, ConditionType::Ready);
        assert_eq!((ready.as_str(), reason.as_str()), ("True", "ClusterReady"));
        assert!(message.contains("team-ws"), "{message}");
        assert_eq!(status.version.as_deref(), Some("v1.37.2"));
        assert_eq!(status.last_probe_time, Some(Time(at(100))));
        assert_eq!(status.workspaces, Some(3));
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn a_problem_keeps_it_unready_even_while_it_answers() {
        let observation = Observation {
            problem: Some(Problem {
                reason: Reason::NamespaceNotFound,
                message: "namespace team-ws does not exist".into(),
            }),
            ..answering()
        };
        let status = compute(&registration(), &observation, at(100));
        assert_eq!(condition(&status, ConditionType::Reachable).0, "True");
        let (ready, reason, _) = condition(&status, ConditionType::Ready);
        assert_eq!(
            (ready.as_str(), reason.as_str()),
            ("False", "NamespaceNotFound")
        );
    }

    #[test]
    fn an_unreachable_cluster_says_since_when_and_keeps_what_was_known() {
        let mut known = registration();
        known.status = Some(compute(&known, &answering(), at(100)));
        let observation = Observation {
            reachability: Some(Reachability::Unreachable),
            failing: Some((at(120), "connection refused".into())),
            workspaces: 3,
            ..Observation::default()
        };
        let status = compute(&known, &observation, at(150));
        let (reachable, reason, message) = condition(&status, ConditionType::Reachable);
        assert_eq!(
            (reachable.as_str(), reason.as_str()),
            ("False", "ProbeFailed")
        );
        assert!(message.contains(&at(120).to_string()), "{message}");
        assert!(message.contains("connection refused"), "{message}");
        let (ready, reason, _) = condition(&status, ConditionType::Ready);
        assert_eq!((ready.as_str(), reason.as_str()), ("False", "Unreachable"));
        assert_eq!(status.version.as_deref(), Some("v1.37.2"));
        assert_eq!(status.last_probe_time, Some(Time(at(100))));
        let transition = find_condition(&status.conditions, ConditionType::Reachable).unwrap();
        assert_eq!(transition.last_transition_time, Time(at(150)));
    }

    #[test]
    fn a_healthy_cluster_is_written_once_per_refresh_not_per_probe() {
        let refresh = Duration::from_secs(30);
        let first = compute(&registration(), &answering(), at(100));
        assert!(needs_write(None, &first, refresh));
        let mut written = registration();
        written.status = Some(first.clone());
        let later = |second| {
            let observation = Observation {
                last_answered: Some(at(second)),
                ..answering()
            };
            compute(&written, &observation, at(second))
        };
        assert!(!needs_write(Some(&first), &later(110), refresh));
        assert!(!needs_write(Some(&first), &later(129), refresh));
        assert!(needs_write(Some(&first), &later(130), refresh));
        let fewer = Observation {
            workspaces: 2,
            ..answering()
        };
        assert!(needs_write(
            Some(&first),
            &compute(&written, &fewer, at(101)),
            refresh
        ));
    }
}
