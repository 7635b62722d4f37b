//! Which cluster a Workspace runs on: a pure function of its `spec.placement`, the cluster
//! recorded in its status and the ClusterRegistrations, so the operator (which records the
//! decision) and the webhook (which refuses what can never be placed) decide alike.
//!
//! A decision, once recorded, is kept whatever becomes of the cluster: the workspace's
//! volumes are there, and moving it would silently leave its data behind.

use std::fmt::Write as _;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::ClusterRegistration;
use crate::policy::{Denial, DenialReason};
use crate::workspace::Placement;

/// How many clusters a [`Decision::NoMatch`] message names before it summarises.
const NAMED_IN_MESSAGE: usize = 5;

/// Where a Workspace runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// No placement: the cluster the operator runs in.
    Local,
    /// Placed on this cluster before (`status.cluster`): kept.
    Kept(&'a str),
    /// To be placed on this cluster now: the first by name of those that match and accept
    /// workspaces.
    Placed(&'a str),
    /// No cluster matches and accepts workspaces now; the message says why, naming the
    /// clusters considered. Decided again when a registration changes.
    NoMatch(String),
}

/// Decides where a Workspace with `placement`, already placed on `recorded` if set, runs
/// among `clusters`.
pub fn decide<'a>(
    placement: Option<&Placement>,
    recorded: Option<&'a str>,
    clusters: impl IntoIterator<Item = &'a ClusterRegistration>,
) -> Decision<'a> {
    if let Some(recorded) = recorded {
        return Decision::Kept(recorded);
    }
    let Some(placement) = placement else {
        return Decision::Local;
    };
    if let Some(name) = placement.cluster.as_deref() {
        return match clusters.into_iter().find(|c| name_of(c) == name) {
            Some(cluster) if cluster.accepts_workspaces() => Decision::Placed(name_of(cluster)),
            Some(cluster) => Decision::NoMatch(format!(
                "spec.placement.cluster {name:?} {}; the workspace is placed once it accepts workspaces",
                refusal(cluster)
            )),
            None => Decision::NoMatch(format!(
                "spec.placement.cluster {name:?}: no ClusterRegistration of that name; register the cluster or name another"
            )),
        };
    }
    let Some(selector) = placement.cluster_selector.clone() else {
        return Decision::Local;
    };
    let selector = match Selector::try_from(selector) {
        Ok(selector) => selector,
        Err(error) => {
            return Decision::NoMatch(format!(
                "spec.placement.clusterSelector is invalid: {error}; use the operators In, NotIn, Exists or DoesNotExist"
            ));
        }
    };
    let mut best: Option<&ClusterRegistration> = None;
    let mut refused: Vec<&ClusterRegistration> = Vec::new();
    for cluster in clusters {
        if !selector.matches(cluster.labels()) {
            continue;
        }
        if !cluster.accepts_workspaces() {
            refused.push(cluster);
        } else if best.is_none_or(|b| name_of(cluster) < name_of(b)) {
            best = Some(cluster);
        }
    }
    if let Some(best) = best {
        return Decision::Placed(name_of(best));
    }
    if refused.is_empty() {
        return Decision::NoMatch(format!(
            "no ClusterRegistration matches spec.placement.clusterSelector ({selector}); label a cluster to match or change the selector"
        ));
    }
    refused.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    let mut message = format!(
        "{} ClusterRegistration(s) match spec.placement.clusterSelector ({selector}) but none accepts workspaces now:",
        refused.len()
    );
    for cluster in refused.iter().take(NAMED_IN_MESSAGE) {
        let _ = write!(message, " {} {};", name_of(cluster), refusal(cluster));
    }
    if refused.len() > NAMED_IN_MESSAGE {
        let _ = write!(message, " and {} more;", refused.len() - NAMED_IN_MESSAGE);
    }
    message.push_str(" the workspace is placed once one does");
    Decision::NoMatch(message)
}

/// What admission refuses of a new Workspace's placement because no later change of the
/// clusters would make it placeable as written: a named cluster that is not registered (or
/// is being deleted) or is cordoned, and a selector that is not valid. A cluster that is
/// merely unreachable, or a selector matching nothing yet, is admitted: the Workspace waits
/// as Pending until a cluster takes it.
pub fn check_admissible<'a>(
    placement: Option<&Placement>,
    clusters: impl IntoIterator<Item = &'a ClusterRegistration>,
) -> Result<(), Denial> {
    let Some(placement) = placement else {
        return Ok(());
    };
    if let Some(name) = placement.cluster.as_deref() {
        let found = clusters.into_iter().find(|c| name_of(c) == name);
        return match found {
            None => Err(Denial::new(
                DenialReason::ClusterNotFound,
                format!(
                    "spec.placement.cluster {name:?}: no ClusterRegistration of that name; `kubectl get clusterregistrations` lists the registered clusters"
                ),
            )),
            Some(cluster) if cluster.is_deleting() => Err(Denial::new(
                DenialReason::ClusterNotFound,
                format!(
                    "spec.placement.cluster {name:?} is being deleted; name another registered cluster"
                ),
            )),
            Some(cluster) if cluster.is_cordoned() => Err(Denial::new(
                DenialReason::ClusterCordoned,
                format!(
                    "spec.placement.cluster {name:?} is cordoned (spec.cordoned) and takes no new workspaces; name another cluster, or ask an admin to uncordon it"
                ),
            )),
            Some(_) => Ok(()),
        };
    }
    if let Some(selector) = placement.cluster_selector.clone() {
        Selector::try_from(selector).map_err(|error| {
            Denial::new(
                DenialReason::InvalidPlacement,
                format!(
                    "spec.placement.clusterSelector is invalid: {error}; use the operators In, NotIn, Exists or DoesNotExist"
                ),
            )
        })?;
    }
    Ok(())
}

fn name_of(cluster: &ClusterRegistration) -> &str {
    cluster.metadata.name.as_deref().unwrap_or_default()
}

/// Why `cluster` does not accept workspaces.
fn refusal(cluster: &ClusterRegistration) -> &'static str {
    if cluster.is_deleting() {
        "is being deleted"
    } else if cluster.is_cordoned() {
        "is cordoned (spec.cordoned)"
    } else {
        "is not reachable (see its condition Reachable)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterRegistrationSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, LabelSelectorRequirement, Time,
    };
    use std::collections::BTreeMap;

    fn cluster(name: &str, region: &str, reachable: bool) -> ClusterRegistration {
        let mut cluster = ClusterRegistration::new(name, ClusterRegistrationSpec::default());
        cluster.metadata.labels = Some(BTreeMap::from([("region".into(), region.into())]));
        cluster.status = Some(crate::cluster::reachable_status(if reachable {
            "True"
        } else {
            "False"
        }));
        cluster
    }

    fn named(name: &str) -> Placement {
        Placement {
            cluster: Some(name.into()),
            cluster_selector: None,
        }
    }

    fn in_region(region: &str) -> Placement {
        Placement {
            cluster: None,
            cluster_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("region".into(), region.into())])),
                match_expressions: None,
            }),
        }
    }

    fn message(decision: Decision<'_>) -> String {
        match decision {
            Decision::NoMatch(message) => message,
            other => panic!("expected no match, got {other:?}"),
        }
    }

    #[test]
    fn without_placement_the_workspace_runs_locally() {
        let clusters = [cluster("edge", "eu", true)];
        assert_eq!(decide(None, None, &clusters), Decision::Local);
    }

    #[test]
    fn a_recorded_cluster_is_kept_whatever_became_of_it() {
        let mut gone = cluster("edge", "eu", false);
        gone.spec.cordoned = Some(true);
        let clusters = [gone, cluster("other", "eu", true)];
        assert_eq!(
            decide(Some(&in_region("eu")), Some("edge"), &clusters),
            Decision::Kept("edge")
        );
        assert_eq!(
            decide(Some(&in_region("eu")), Some("removed"), &[]),
            Decision::Kept("removed")
        );
    }

    #[test]
    fn a_named_cluster_is_used_when_it_accepts_workspaces() {
        let clusters = [cluster("a", "eu", true), cluster("edge", "us", true)];
        assert_eq!(
            decide(Some(&named("edge")), None, &clusters),
            Decision::Placed("edge")
        );
    }

    #[test]
    fn a_named_cluster_that_cannot_take_it_says_why() {
        let unknown = message(decide(Some(&named("edge")), None, &[]));
        assert!(
            unknown.contains("no ClusterRegistration of that name"),
            "{unknown}"
        );

        let unreachable = [cluster("edge", "eu", false)];
        let why = message(decide(Some(&named("edge")), None, &unreachable));
        assert!(why.contains("\"edge\" is not reachable"), "{why}");

        let mut cordoned = cluster("edge", "eu", true);
        cordoned.spec.cordoned = Some(true);
        let why = message(decide(Some(&named("edge")), None, &[cordoned]));
        assert!(why.contains("is cordoned (spec.cordoned)"), "{why}");

        let mut deleting = cluster("edge", "eu", true);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let why = message(decide(Some(&named("edge")), None, &[deleting]));
        assert!(why.contains("is being deleted"), "{why}");
    }

    #[test]
    fn a_selector_picks_the_first_accepting_match_by_name_in_any_order() {
        let mut cordoned = cluster("a-cordoned", "eu", true);
        cordoned.spec.cordoned = Some(true);
        let mut clusters = vec![
            cluster("eu-2", "eu", true),
            cordoned,
            cluster("b-down", "eu", false),
            cluster("us-1", "us", true),
            cluster("eu-1", "eu", true),
        ];
        assert_eq!(
            decide(Some(&in_region("eu")), None, &clusters),
            Decision::Placed("eu-1")
        );
        clusters.reverse();
        assert_eq!(
            decide(Some(&in_region("eu")), None, &clusters),
            Decision::Placed("eu-1")
        );
    }

    #[test]
    fn a_selector_without_an_accepting_match_names_the_matches_and_why() {
        let none = message(decide(
            Some(&in_region("ap")),
            None,
            &[cluster("eu-1", "eu", true)],
        ));
        assert!(none.contains("no ClusterRegistration matches"), "{none}");
        assert!(none.contains("region=ap"), "{none}");

        let clusters: Vec<_> = (0..7)
            .map(|i| cluster(&format!("eu-{i}"), "eu", false))
            .collect();
        let why = message(decide(Some(&in_region("eu")), None, &clusters));
        assert!(why.starts_with("7 ClusterRegistration(s) match"), "{why}");
        assert!(why.contains("eu-0 is not reachable"), "{why}");
        assert!(why.contains("eu-4 is not reachable"), "{why}");
        assert!(!why.contains("eu-5"), "{why}");
        assert!(why.contains("and 2 more"), "{why}");
    }

    #[test]
    fn admission_refuses_only_what_no_change_of_the_clusters_would_place() {
        let mut cordoned = cluster("cordoned", "eu", true);
        cordoned.spec.cordoned = Some(true);
        let mut deleting = cluster("deleting", "eu", true);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let clusters = [cordoned, deleting, cluster("down", "eu", false)];
        let refused = |placement: Placement| {
            check_admissible(Some(&placement), &clusters).expect_err("refused")
        };
        assert!(check_admissible(None, &clusters).is_ok());
        assert!(check_admissible(Some(&named("down")), &clusters).is_ok());
        assert!(check_admissible(Some(&in_region("nowhere")), &clusters).is_ok());

        let unknown = refused(named("edge"));
        assert_eq!(unknown.reason, DenialReason::ClusterNotFound);
        assert!(
            unknown.message.contains("kubectl get clusterregistrations"),
            "{unknown}"
        );
        assert_eq!(
            refused(named("deleting")).reason,
            DenialReason::ClusterNotFound
        );
        let cordoned = refused(named("cordoned"));
        assert_eq!(cordoned.reason, DenialReason::ClusterCordoned);
        assert!(cordoned.message.contains("uncordon"), "{cordoned}");

        let invalid = Placement {
            cluster: None,
            cluster_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "region".into(),
                    operator: "In".into(),
                    values: None,
                }]),
            }),
        };
        let invalid = refused(invalid);
        assert_eq!(invalid.reason, DenialReason::InvalidPlacement);
        assert!(
            invalid
                .message
                .starts_with("spec.placement.clusterSelector is invalid")
        );
    }

    #[test]
    fn an_invalid_selector_is_named_with_the_fix() {
        let placement = Placement {
            cluster: None,
            cluster_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "region".into(),
                    operator: "Near".into(),
                    values: None,
                }]),
            }),
        };
        let why = message(decide(
            Some(&placement),
            None,
            &[cluster("eu-1", "eu", true)],
        ));
        assert!(
            why.starts_with("spec.placement.clusterSelector is invalid"),
            "{why}"
        );
        assert!(why.contains("In, NotIn, Exists or DoesNotExist"), "{why}");
    }
}
