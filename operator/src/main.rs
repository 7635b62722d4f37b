//! guildnet-operator: reconciles the guildnet.io kinds. Run two or more replicas: they elect
//! a leader through a Lease, and only the leader writes.

use clap::Parser;
use guildnet_operator::reconcile::handoff::CredentialsSecret;
use guildnet_operator::runtime::leader::{self, Timing};
use guildnet_operator::runtime::{self, Options};
use guildnet_operator::workspace::controller::Settings;
use guildnet_operator::workspace::reaper::IdleAction;
use guildnet_operator::workspace::{BuildContext, ProxyPeer};
use guildnet_runtime::logging::{self, LogFormat};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::info;

/// mimalloc rather than glibc's malloc: the watch caches make many small, long-lived
/// allocations across threads, which glibc's per-thread arenas fragment and do not give
/// back to the system after the objects are gone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "GuildNet's operator: reconciles Workspaces and the other guildnet.io kinds")]
struct Args {
    /// Restarts in CrashLoopBackOff at or above which a Workspace is marked Failed.
    #[arg(long, default_value_t = 3)]
    crash_loop_restarts: i32,
    /// Idle timeout of Workspaces that set no spec.lifecycle.idleTimeout (e.g. 8h); empty
    /// reaps only Workspaces that set one.
    #[arg(long, value_parser = humantime::parse_duration)]
    default_idle_timeout: Option<Duration>,
    /// What happens to an idle Workspace: suspend (scale to zero, keep volumes) or delete.
    #[arg(long, value_enum, default_value_t = IdleAction::Suspend)]
    idle_action: IdleAction,
    /// How often idle and finished Workspaces are looked for (in the cache; no API list).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    reap_interval: Duration,
    /// GuildNet's own namespace: only Quotas there may count workspaces cluster-wide.
    #[arg(long, env = "POD_NAMESPACE", default_value = "guildnet-system")]
    system_namespace: String,
    /// The namespace the GuildNet proxy runs in: each workspace's NetworkPolicy admits
    /// connections from its pods there and nowhere else.
    #[arg(long, env = "POD_NAMESPACE", default_value = "guildnet-system")]
    proxy_namespace: String,
    /// Labels selecting the proxy's pods in --proxy-namespace, as key=value pairs joined by
    /// commas.
    #[arg(long, value_parser = parse_labels, default_value = "app.kubernetes.io/component=proxy")]
    proxy_pod_selector: BTreeMap<String, String>,
    /// A Workspace's first change is reconciled at once; the changes after it are
    /// coalesced into one once it has been quiet this long (ten times this at most).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    debounce: Duration,
    /// How many Workspaces are reconciled at the same time, at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// How often a Workspace in NameConflict (an object of a child's name that is not its
    /// own) looks again whether the other object is gone.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    name_conflict_recheck: Duration,
    /// Elect one leader among the replicas through a Lease; only the leader writes. Turn it
    /// off (--leader-elect=false) only when a single replica runs.
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The Lease the replicas elect a leader through.
    #[arg(long, default_value = "guildnet-operator")]
    lease_name: String,
    /// The namespace of the Lease; in a pod, its own namespace through the downward API.
    /// Elsewhere GuildNet's namespace, where the chart's Role grants its leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "guildnet-system")]
    lease_namespace: String,
    /// How long a lease lasts without renewal: a killed leader is replaced after about this
    /// long. The leader renews every quarter of it and stops writing a quarter (at least 1s)
    /// before it would expire without a renewal. At least 3s. The default, close to Kubernetes'
    /// own controllers (15s lease, 10s renew deadline), rides out an API server that holds
    /// renewals for several seconds.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "12s")]
    lease_duration: Duration,
    /// This replica's name in the Lease and in Events; default: the pod name (POD_NAME), else
    /// host name and process id.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "127.0.0.1:9090")]
    metrics_listen: SocketAddr,
    /// How long in-flight reconciles may take to finish on SIGTERM before the lease is
    /// released anyway.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_timeout: Duration,
    /// How often each registered cluster's API server is probed (`/readyz`, 5s timeout). It
    /// counts as unreachable after 3 failed probes in a row (or 30s of failures) and as
    /// reachable again after 2 answers in a row.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    cluster_probe_interval: Duration,
    /// This hub's id, on every object it makes in a registered cluster (label
    /// guildnet.io/origin), so hubs sharing a cluster never touch each other's objects; at
    /// most 63 characters. Default: the uid of this cluster's kube-system namespace.
    #[arg(long)]
    hub_id: Option<String>,
    /// The Secret in --system-namespace where the operator puts the kubeconfigs of the
    /// clusters registered with `network: APIServerProxy`, for the proxy (whose RBAC
    /// names this Secret alone).
    #[arg(long, default_value = "guildnet-cluster-credentials")]
    cluster_credentials_secret: String,
    /// The Secret in --system-namespace where the operator puts each GuildDatabase's admin
    /// password (key `<namespace>.<name>`) for the proxy's database API (whose RBAC names
    /// this Secret alone).
    #[arg(long, default_value = "guildnet-database-credentials")]
    database_credentials_secret: String,
    /// Log format; default: text on a terminal, JSON otherwise. RUST_LOG filters (default
    /// info).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

/// `key=value,key=value` as labels.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(format!(
                "{pair:?} is not key=value: write labels as key=value pairs joined by commas, e.g. app.kubernetes.io/component=proxy"
            )),
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(args.log_format.unwrap_or_else(LogFormat::detect));
    let identity = runtime::identity(
        args.identity,
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::process::id(),
    );
    let leader = match args.leader_elect {
        true => Some(leader::Settings {
            lease_name: args.lease_name,
            namespace: args.lease_namespace,
            identity: identity.clone(),
            timing: Timing::new(args.lease_duration)?,
        }),
        false => None,
    };
    let config = kube::Config::infer().await?;
    // Leader election gets a client of its own: requests on one client share its queue and
    // connection pool, so during a reconcile burst a renewal would wait behind reconciles
    // and the lease could expire while the API server is merely busy.
    let client = kube::Client::try_from(config.clone())?;
    let lease_client = kube::Client::try_from(config)?;
    let version = client.apiserver_version().await?;
    info!(server = %version.git_version, %identity, "connected to the API server");
    let hub_id = match args.hub_id {
        Some(id) => id,
        None => runtime::cluster_uid(&client).await?,
    };
    let credentials = CredentialsSecret {
        namespace: args.system_namespace.clone(),
        name: args.cluster_credentials_secret,
    };
    let database_credentials = CredentialsSecret {
        namespace: args.system_namespace.clone(),
        name: args.database_credentials_secret,
    };
    let options = Options {
        controller: Settings {
            crash_loop_restarts: args.crash_loop_restarts,
            system_namespace: args.system_namespace,
            default_idle_timeout: args.default_idle_timeout,
            idle_action: args.idle_action,
            reap_interval: args.reap_interval,
            debounce: args.debounce,
            concurrency: args.concurrency,
            name_conflict_recheck: args.name_conflict_recheck,
            build: BuildContext {
                proxy: ProxyPeer {
                    namespace: args.proxy_namespace,
                    pod_labels: args.proxy_pod_selector,
                },
                ..BuildContext::default()
            },
        },
        leader,
        identity,
        metrics_listen: args.metrics_listen,
        shutdown_timeout: args.shutdown_timeout,
        cluster_probe_interval: args.cluster_probe_interval,
        hub_id,
        credentials,
        database_credentials,
    };
    runtime::run(client, lease_client, options).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("guildnet-operator").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn leader_election_is_on_unless_turned_off() {
        assert!(parse(&[]).leader_elect);
        assert!(parse(&["--leader-elect"]).leader_elect);
        assert!(parse(&["--leader-elect=true"]).leader_elect);
        assert!(!parse(&["--leader-elect=false"]).leader_elect);
    }

    #[test]
    fn the_defaults_serve_metrics_locally_with_a_twelve_second_lease() {
        let args = parse(&[]);
        assert_eq!(args.metrics_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(args.lease_name, "guildnet-operator");
        assert_eq!(args.lease_duration, Duration::from_secs(12));
        assert_eq!(
            parse(&["--log-format", "text"]).log_format,
            Some(LogFormat::Text)
        );
        assert_eq!(
            args.proxy_pod_selector,
            BTreeMap::from([("app.kubernetes.io/component".into(), "proxy".into())])
        );
    }

    #[test]
    fn the_proxy_selector_takes_several_labels_and_refuses_a_bare_word() {
        let args = parse(&["--proxy-pod-selector", "app=guildnet,component=proxy"]);
        assert_eq!(args.proxy_pod_selector.len(), 2);
        let refused = Args::try_parse_from(["guildnet-operator", "--proxy-pod-selector", "proxy"]);
        assert!(
            refused
                .err()
                .unwrap()
                .to_string()
                .contains("is not key=value")
        );
    }
}
