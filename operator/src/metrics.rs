//! The operator's Prometheus metrics, served on `/metrics` (OpenMetrics text):
//!
//! - `guildnet_workspace_total`: Workspaces launched (children first applied), counted by the
//!   replica that launched them; a failover in the middle of a launch may count one twice.
//! - `guildnet_workspace_active`: Workspaces that run or are starting (Pending or Running, not
//!   being deleted), and `guildnet_workspaces{phase}`: Workspaces by phase. Both are counted
//!   from the watch cache when scraped, so they cost no API call and standbys report them
//!   too.
//! - `guildnet_workspace_failures_total{reason}`: transitions into Failed, by the `Failed`
//!   condition's reason.
//! - `guildnet_workspace_ready_seconds`: from a Workspace's creation to its first Ready.
//! - `guildnet_reconcile_duration_seconds{controller}` and
//!   `guildnet_reconcile_errors_total{controller, error}`: every reconcile, per controller.
//! - `guildnet_child_applies_total{kind, outcome}`: children the reconciles wanted in place,
//!   `written` (changed, new, or changed by someone else) or `current` (already as asked:
//!   no request made).
//! - `guildnet_cluster_reachable{cluster}`: 1 while a registered cluster counts as
//!   reachable, 0 while not; `guildnet_cluster_probes_total{cluster, result}`: its probes,
//!   `answered` or `failed`; `guildnet_cluster_workspace_reconciles_total{cluster, result}`:
//!   reconciles of the workspaces placed there, `applied`, `failed` (an error or the 15 s
//!   budget) or `out_of_reach` (only the status written). A cluster's series go when its
//!   registration does.
//! - `guildnet_database_schema_operations_total{operation, result}`: what the GuildDatabase
//!   controller did to a server's schema (`create_database`, `create_table`, `set_password`,
//!   `grant`), `ok` or `failed`; `guildnet_database_connection_errors_total{class}`: failed
//!   connections and queries to database servers by class (`unreachable`,
//!   `authentication_failed`, `schema_missing`, `server_error`).
//! - `guildnet_leader`: 1 on the replica that holds the lease (and so reconciles), 0 on the
//!   others; `guildnet_leader_transitions_total{event}`: leadership acquired or lost.
//!
//! Every metric is registered once, in [`Metrics::new`]; a unit test checks the encoded
//! names.

use crate::reconcile::slots::Lane;
use guildnet_api::Workspace;
use guildnet_api::workspace::WorkspacePhase;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// The `controller` label of the Workspace controller's metrics.
pub const WORKSPACE_CONTROLLER: &str = "workspace";

/// The `controller` label of the GuildDatabase controller's metrics.
pub const DATABASE_CONTROLLER: &str = "database";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabels {
    controller: &'static str,
    lane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApplyLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    cluster: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SchemaLabels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// How a reconcile of a placed workspace ended, for
/// `guildnet_cluster_workspace_reconciles_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterReconcile {
    /// Its objects there applied and its status written.
    Applied,
    /// An error there, or the cluster's budget ran out.
    Failed,
    /// The cluster is out of reach: only the status was written.
    OutOfReach,
}

impl ClusterReconcile {
    const ALL: [Self; 3] = [Self::Applied, Self::Failed, Self::OutOfReach];

    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::OutOfReach => "out_of_reach",
        }
    }
}

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    launched: Counter,
    failures: Family<ReasonLabels, Counter>,
    ready: Histogram,
    reconcile_duration: HistogramFamily<ControllerLabels>,
    reconcile_wait: HistogramFamily<LaneLabels>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    child_applies: Family<ApplyLabels, Counter>,
    cluster_reachable: Family<ClusterLabels, Gauge>,
    cluster_probes: Family<ProbeLabels, Counter>,
    cluster_reconciles: Family<ProbeLabels, Counter>,
    schema_operations: Family<SchemaLabels, Counter>,
    connection_errors: Family<ClassLabels, Counter>,
    leader: Gauge,
    leader_transitions: Family<TransitionLabels, Counter>,
}

impl Metrics {
    /// Registers every metric; the Workspace gauges are counted from `workspaces` at scrape
    /// time.
    pub fn new(workspaces: Store<Workspace>) -> Self {
        let mut registry = Registry::default();
        let launched = Counter::default();
        registry.register(
            "guildnet_workspace",
            "Workspaces launched (children first applied) by this replica",
            launched.clone(),
        );
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "guildnet_workspace_failures",
            "Workspace transitions into Failed, by the Failed condition's reason",
            failures.clone(),
        );
        // 0.5 s to about 17 min: pods start in seconds, image pulls can take minutes.
        let ready = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        registry.register_with_unit(
            "guildnet_workspace_ready",
            "Time from a Workspace's creation to its first Ready",
            Unit::Seconds,
            ready.clone(),
        );
        // 1 ms to about 16 s: a reconcile is a handful of API calls.
        let reconcile_duration: HistogramFamily<ControllerLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15)));
        registry.register_with_unit(
            "guildnet_reconcile_duration",
            "Time one reconcile took, per controller",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        // 1 ms to about 33 s: under a burst a reconcile queues behind many others.
        let reconcile_wait: HistogramFamily<LaneLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        registry.register_with_unit(
            "guildnet_reconcile_wait",
            "Time a reconcile waited for a slot, per controller and lane (unobserved: a new or edited object; follow_up: the rest)",
            Unit::Seconds,
            reconcile_wait.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "guildnet_reconcile_errors",
            "Reconciles that failed and were retried, per controller and kind of error",
            reconcile_errors.clone(),
        );
        let child_applies = Family::<ApplyLabels, Counter>::default();
        registry.register(
            "guildnet_child_applies",
            "Children the reconciles wanted in place, by kind: written, or current (no request)",
            child_applies.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "guildnet_leader",
            "1 while this replica holds the leader lease and reconciles, 0 otherwise",
            leader.clone(),
        );
        let leader_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "guildnet_leader_transitions",
            "Leadership acquired or lost by this replica",
            leader_transitions.clone(),
        );
        let cluster_reachable = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "guildnet_cluster_reachable",
            "1 while a registered cluster counts as reachable, 0 while not",
            cluster_reachable.clone(),
        );
        let cluster_probes = Family::<ProbeLabels, Counter>::default();
        registry.register(
            "guildnet_cluster_probes",
            "Probes of a registered cluster's API server, answered or failed",
            cluster_probes.clone(),
        );
        let cluster_reconciles = Family::<ProbeLabels, Counter>::default();
        registry.register(
            "guildnet_cluster_workspace_reconciles",
            "Reconciles of the workspaces placed on a registered cluster: applied, failed or out_of_reach",
            cluster_reconciles.clone(),
        );
        let schema_operations = Family::<SchemaLabels, Counter>::default();
        registry.register(
            "guildnet_database_schema_operations",
            "Changes made to a GuildDatabase server's schema, by operation, ok or failed",
            schema_operations.clone(),
        );
        let connection_errors = Family::<ClassLabels, Counter>::default();
        registry.register(
            "guildnet_database_connection_errors",
            "Failed connections and queries to GuildDatabase servers, by class",
            connection_errors.clone(),
        );
        registry.register_collector(Box::new(WorkspaceCensus { workspaces }));
        Self {
            registry,
            launched,
            failures,
            ready,
            reconcile_duration,
            reconcile_wait,
            reconcile_errors,
            child_applies,
            cluster_reachable,
            cluster_probes,
            cluster_reconciles,
            schema_operations,
            connection_errors,
            leader,
            leader_transitions,
        }
    }

    /// Everything in the OpenMetrics text format
    /// ([`guildnet_runtime::health::OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// A workspace's children were applied for the first time.
    pub fn workspace_launched(&self) {
        self.launched.inc();
    }

    /// A workspace went into Failed for `reason`.
    pub fn workspace_failed(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A workspace became Ready for the first time, `after` its creation.
    pub fn workspace_ready(&self, after: Duration) {
        self.ready.observe(after.as_secs_f64());
    }

    /// One reconcile of `controller` took `took`, whatever its outcome.
    pub fn reconciled(&self, controller: &'static str, took: Duration) {
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    /// One reconcile of `controller` in `lane` waited `waited` for its slot.
    pub fn reconcile_waited(&self, controller: &'static str, lane: Lane, waited: Duration) {
        self.reconcile_wait
            .get_or_create(&LaneLabels {
                controller,
                lane: lane.label(),
            })
            .observe(waited.as_secs_f64());
    }

    /// One reconcile of `controller` failed with a kind of `error`.
    pub fn reconcile_failed(&self, controller: &'static str, error: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { controller, error })
            .inc();
    }

    /// A child of `kind` was written (`true`) or found as asked for (`false`).
    pub fn child_applied(&self, kind: &str, written: bool) {
        let outcome = if written { "written" } else { "current" };
        let kind = kind.to_owned();
        self.child_applies
            .get_or_create(&ApplyLabels { kind, outcome })
            .inc();
    }

    /// A probe of the registered cluster `cluster` was answered or not, and whether the
    /// cluster now counts as reachable.
    pub fn cluster_probed(&self, cluster: &str, answered: bool, reachable: bool) {
        let result = if answered { "answered" } else { "failed" };
        self.cluster_probes
            .get_or_create(&ProbeLabels {
                cluster: cluster.to_owned(),
                result,
            })
            .inc();
        self.cluster_reachable
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_owned(),
            })
            .set(i64::from(reachable));
    }

    /// A reconcile of a workspace placed on `cluster` ended with `result`.
    pub fn cluster_reconciled(&self, cluster: &str, result: ClusterReconcile) {
        self.cluster_reconciles
            .get_or_create(&ProbeLabels {
                cluster: cluster.to_owned(),
                result: result.label(),
            })
            .inc();
    }

    /// A schema `operation` on a database server succeeded or not.
    pub fn schema_operation(&self, operation: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.schema_operations
            .get_or_create(&SchemaLabels { operation, result })
            .inc();
    }

    /// A connection or query to a database server failed, in `class`.
    pub fn connection_error(&self, class: guildnet_rethinkdb::ErrorClass) {
        self.connection_errors
            .get_or_create(&ClassLabels {
                class: class.label(),
            })
            .inc();
    }

    /// Drops every series of `cluster`: its registration is gone.
    pub fn forget_cluster(&self, cluster: &str) {
        let cluster = cluster.to_owned();
        self.cluster_reachable.remove(&ClusterLabels {
            cluster: cluster.clone(),
        });
        for result in ["answered", "failed"] {
            self.cluster_probes.remove(&ProbeLabels {
                cluster: cluster.clone(),
                result,
            });
        }
        for result in ClusterReconcile::ALL {
            self.cluster_reconciles.remove(&ProbeLabels {
                cluster: cluster.clone(),
                result: result.label(),
            });
        }
    }

    /// Sets `guildnet_leader` and counts the transition when it is one.
    pub fn set_leader(&self, leading: bool) {
        let previous = self.leader.set(i64::from(leading));
        if previous != i64::from(leading) {
            let event = if leading { "acquired" } else { "lost" };
            self.leader_transitions
                .get_or_create(&TransitionLabels { event })
                .inc();
        }
    }
}

/// Workspaces counted by phase; what the scrape-time gauges report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Pending, including those without a status yet: `guildnet_workspaces{phase="Pending"}`.
    pub pending: i64,
    /// Running: `guildnet_workspaces{phase="Running"}`.
    pub running: i64,
    /// Stopped (suspended): `guildnet_workspaces{phase="Stopped"}`.
    pub stopped: i64,
    /// Failed: `guildnet_workspaces{phase="Failed"}`.
    pub failed: i64,
    /// Pending or Running and not being deleted.
    pub active: i64,
}

impl Census {
    /// Counts `workspaces`; one without a status yet is Pending.
    pub fn of<'a>(workspaces: impl IntoIterator<Item = &'a Workspace>) -> Self {
        let mut census = Census::default();
        for ws in workspaces {
            let phase = ws
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(WorkspacePhase::Pending);
            let count = match phase {
                WorkspacePhase::Pending => &mut census.pending,
                WorkspacePhase::Running => &mut census.running,
                WorkspacePhase::Stopped => &mut census.stopped,
                WorkspacePhase::Failed => &mut census.failed,
            };
            *count += 1;
            let running_or_starting =
                matches!(phase, WorkspacePhase::Pending | WorkspacePhase::Running);
            if running_or_starting && ws.metadata.deletion_timestamp.is_none() {
                census.active += 1;
            }
        }
        census
    }

    fn by_phase(&self) -> [(&'static str, i64); 4] {
        [
            ("Pending", self.pending),
            ("Running", self.running),
            ("Stopped", self.stopped),
            ("Failed", self.failed),
        ]
    }
}

/// Encodes the Workspace gauges from the watch cache at each scrape, so they are current
/// without a counter to keep in step with every create, edit and delete.
#[derive(Debug)]
struct WorkspaceCensus {
    workspaces: Store<Workspace>,
}

impl Collector for WorkspaceCensus {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cached = self.workspaces.state();
        let census = Census::of(cached.iter().map(|w| w.as_ref()));
        ConstGauge::new(census.active).encode(encoder.encode_descriptor(
            "guildnet_workspace_active",
            "Workspaces running or starting (Pending or Running, not being deleted)",
            None,
            MetricType::Gauge,
        )?)?;
        let mut phases = encoder.encode_descriptor(
            "guildnet_workspaces",
            "Workspaces by phase",
            None,
            MetricType::Gauge,
        )?;
        for (phase, count) in census.by_phase() {
            ConstGauge::new(count).encode(phases.encode_family(&PhaseLabels { phase })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guildnet_api::WorkspaceSpec;
    use guildnet_api::workspace::WorkspaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use std::collections::HashMap;

    fn workspace(name: &str, phase: Option<WorkspacePhase>) -> Workspace {
        let mut ws = Workspace::new(name, WorkspaceSpec::default());
        ws.metadata.namespace = Some("team-a".into());
        ws.status = phase.map(|phase| WorkspaceStatus {
            phase: Some(phase),
            ..Default::default()
        });
        ws
    }

    fn metrics_over(workspaces: Vec<Workspace>) -> Metrics {
        let (store, mut writer) = reflector::store();
        for ws in workspaces {
            writer.apply_watcher_event(&Event::Apply(ws));
        }
        Metrics::new(store)
    }

    /// `name{labels} value` lines of the encoded text, keyed by everything before the value.
    fn samples(text: &str) -> HashMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn census_counts_phases_and_active_workspaces() {
        let mut deleting = workspace("d", Some(WorkspacePhase::Running));
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let census = Census::of(&[
            workspace("new", None),
            workspace("p", Some(WorkspacePhase::Pending)),
            workspace("r", Some(WorkspacePhase::Running)),
            workspace("s", Some(WorkspacePhase::Stopped)),
            workspace("f", Some(WorkspacePhase::Failed)),
            deleting,
        ]);
        assert_eq!(
            census,
            Census {
                pending: 2,
                running: 2,
                stopped: 1,
                failed: 1,
                active: 3,
            }
        );
    }

    #[test]
    fn every_metric_is_encoded_once_with_conventional_names() {
        let metrics = metrics_over(vec![]);
        // Families without a sample are left out, so give each one.
        metrics.set_leader(true);
        metrics.workspace_failed("ImagePullFailed");
        metrics.reconciled(WORKSPACE_CONTROLLER, Duration::from_millis(3));
        metrics.reconcile_failed(WORKSPACE_CONTROLLER, "api");
        metrics.child_applied("Deployment", false);
        metrics.cluster_probed("edge", true, true);
        metrics.cluster_reconciled("edge", ClusterReconcile::Applied);
        metrics.schema_operation("create_table", true);
        metrics.connection_error(guildnet_rethinkdb::ErrorClass::Unreachable);
        let text = metrics.encode().unwrap();
        let mut types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        types.sort();
        assert_eq!(
            types,
            [
                "guildnet_child_applies counter",
                "guildnet_cluster_probes counter",
                "guildnet_cluster_reachable gauge",
                "guildnet_cluster_workspace_reconciles counter",
                "guildnet_database_connection_errors counter",
                "guildnet_database_schema_operations counter",
                "guildnet_leader gauge",
                "guildnet_leader_transitions counter",
                "guildnet_reconcile_duration_seconds histogram",
                "guildnet_reconcile_errors counter",
                "guildnet_workspace counter",
                "guildnet_workspace_active gauge",
                "guildnet_workspace_failures counter",
                "guildnet_workspace_ready_seconds histogram",
                "guildnet_workspaces gauge",
            ]
        );
        let samples = samples(&text);
        for name in [
            "guildnet_workspace_total",
            "guildnet_workspace_failures_total{reason=\"ImagePullFailed\"}",
            "guildnet_reconcile_errors_total{controller=\"workspace\",error=\"api\"}",
            "guildnet_reconcile_duration_seconds_count{controller=\"workspace\"}",
            "guildnet_workspace_ready_seconds_count",
            "guildnet_child_applies_total{kind=\"Deployment\",outcome=\"current\"}",
            "guildnet_cluster_probes_total{cluster=\"edge\",result=\"answered\"}",
            "guildnet_cluster_reachable{cluster=\"edge\"}",
            "guildnet_cluster_workspace_reconciles_total{cluster=\"edge\",result=\"applied\"}",
            "guildnet_database_schema_operations_total{operation=\"create_table\",result=\"ok\"}",
            "guildnet_database_connection_errors_total{class=\"unreachable\"}",
        ] {
            assert!(samples.contains_key(name), "{name} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn workspace_gauges_are_read_from_the_cache() {
        let metrics = metrics_over(vec![
            workspace("a", Some(WorkspacePhase::Running)),
            workspace("b", Some(WorkspacePhase::Running)),
            workspace("c", Some(WorkspacePhase::Failed)),
        ]);
        let samples = samples(&metrics.encode().unwrap());
        assert_eq!(samples["guildnet_workspace_active"], 2.0);
        assert_eq!(samples["guildnet_workspaces{phase=\"Running\"}"], 2.0);
        assert_eq!(samples["guildnet_workspaces{phase=\"Failed\"}"], 1.0);
        assert_eq!(samples["guildnet_workspaces{phase=\"Pending\"}"], 0.0);
    }

    /// docs/grafana-dashboard.json queries only metrics that exist (the operator's, and the
    /// webhook's quota rejections).
    #[test]
    fn the_grafana_dashboard_uses_only_real_metrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/grafana-dashboard.json"
        );
        let dashboard = std::fs::read_to_string(path).unwrap();
        serde_json::from_str::<serde_json::Value>(&dashboard).expect("valid JSON");
        let metrics = metrics_over(vec![]);
        metrics.set_leader(true);
        metrics.workspace_failed("InvalidSpec");
        metrics.reconciled(WORKSPACE_CONTROLLER, Duration::ZERO);
        metrics.reconcile_failed(WORKSPACE_CONTROLLER, "api");
        let text = metrics.encode().unwrap();
        let samples = samples(&text);
        let families = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next());
        let known: Vec<&str> = samples
            .keys()
            .map(|k| k.split('{').next().unwrap())
            .chain(families)
            .chain(["guildnet_quota_reject_total"])
            .collect();
        let unknown: Vec<String> = dashboard
            .split("guildnet_")
            .skip(1)
            .map(|rest| {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                format!("guildnet_{name}")
            })
            .filter(|name| !known.contains(&name.as_str()))
            .collect();
        assert_eq!(unknown, Vec::<String>::new(), "queried but not exported");
    }

    #[test]
    fn leader_transitions_count_changes_only() {
        let metrics = metrics_over(vec![]);
        for leading in [true, true, false, false, true] {
            metrics.set_leader(leading);
        }
        let samples = samples(&metrics.encode().unwrap());
        assert_eq!(samples["guildnet_leader"], 1.0);
        assert_eq!(
            samples["guildnet_leader_transitions_total{event=\"acquired\"}"],
            2.0
        );
        assert_eq!(
            samples["guildnet_leader_transitions_total{event=\"lost\"}"],
            1.0
        );
    }

    #[test]
    fn a_forgotten_cluster_leaves_no_series_behind() {
        let metrics = metrics_over(vec![]);
        metrics.cluster_probed("edge", true, true);
        metrics.cluster_probed("edge", false, true);
        metrics.cluster_probed("core", false, false);
        for result in ClusterReconcile::ALL {
            metrics.cluster_reconciled("edge", result);
        }
        metrics.forget_cluster("edge");
        let samples = samples(&metrics.encode().unwrap());
        let left: Vec<&String> = samples.keys().filter(|k| k.contains("cluster=")).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(samples["guildnet_cluster_reachable{cluster=\"core\"}"], 0.0);
        assert_eq!(
            samples["guildnet_cluster_probes_total{cluster=\"core\",result=\"failed\"}"],
            1.0
        );
    }

    #[test]
    fn first_ready_and_failures_are_observed() {
        let metrics = metrics_over(vec![]);
        metrics.workspace_launched();
        metrics.workspace_ready(Duration::from_secs(3));
        metrics.workspace_failed("CrashLoopBackOff");
        metrics.workspace_failed("CrashLoopBackOff");
        let samples = samples(&metrics.encode().unwrap());
        assert_eq!(samples["guildnet_workspace_total"], 1.0);
        assert_eq!(samples["guildnet_workspace_ready_seconds_count"], 1.0);
        assert_eq!(samples["guildnet_workspace_ready_seconds_sum"], 3.0);
        assert_eq!(
            samples["guildnet_workspace_failures_total{reason=\"CrashLoopBackOff\"}"],
            2.0
        );
    }
}
