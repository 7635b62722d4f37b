//! The operator's runtime with two replicas on a control plane of their own: one leader
//! writes, the standby keeps warm caches, a killed leader is replaced without losing or
//! duplicating anything, and a SIGTERM hands over in well under a second. Metrics and logs
//! are checked along the way. The API server serves the operator's Lease requests in API
//! Priority and Fairness' `leader-election` level and GuildNet's other requests in
//! `workload-high`, through the chart's FlowSchemas.

use futures::StreamExt;
use guildnet_api::Workspace;
use guildnet_api::workspace::WorkspacePhase;
use guildnet_e2e::User;
use guildnet_e2e::cluster::{Cluster, Operator, leader_among, lease_holder};
use guildnet_e2e::workspaces::manifest;
use guildnet_e2e::{create_namespace, eventually};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::flowcontrol::v1::FlowSchema;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Two control planes with two operators each at once are too much for a small CI machine:
/// the tests here take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TIMEOUT: Duration = Duration::from_secs(60);

fn workspace(name: &str) -> Workspace {
    manifest(name, serde_json::json!({"image": "nginx:1.27"}))
}

/// Waits until `count` workspaces in `api` are Running, listing them twice a second (more
/// often would load the small control plane the operators are measured on).
async fn all_running(api: &Api<Workspace>, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let list = api.list(&ListParams::default()).await.unwrap();
        let running = list
            .items
            .iter()
            .filter(|ws| ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Running))
            .count();
        if running == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{running} of {count} workspaces Running after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The field managers that wrote `meta`.
fn managers(meta: &ObjectMeta) -> BTreeSet<String> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// When each object was first seen, by name.
type FirstSeen = Arc<Mutex<HashMap<String, Instant>>>;

/// Records when each Deployment in `namespace` was first seen, from a watch started now.
async fn deployments_seen(admin: &Client, namespace: &str) -> FirstSeen {
    let seen = FirstSeen::default();
    let api: Api<Deployment> = Api::namespaced(admin.clone(), namespace);
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let record = seen.clone();
    tokio::spawn(async move {
        let mut started_tx = Some(started_tx);
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(Ok(event)) = events.next().await {
            match event {
                watcher::Event::InitDone => {
                    if let Some(tx) = started_tx.take() {
                        let _ = tx.send(());
                    }
                }
                watcher::Event::Apply(d) | watcher::Event::InitApply(d) => {
                    record
                        .lock()
                        .unwrap()
                        .entry(d.name_any())
                        .or_insert_with(Instant::now);
                }
                _ => {}
            }
        }
    });
    started.await.expect("the Deployment watch starts");
    seen
}

/// When `op` first announced a change inside a reconcile: the Event line follows the write
/// that caused it.
fn first_announcement(op: &Operator) -> Option<Timestamp> {
    op.log_lines()
        .iter()
        .filter(|l| l["span"]["name"] == "reconcile" && l["fields"]["message"] == "event")
        .filter_map(|l| l["timestamp"].as_str()?.parse().ok())
        .min()
}

/// Polls until the lease is held by `holder`, returning when that was seen.
async fn held_by(admin: &Client, holder: &str, timeout: Duration) -> Instant {
    eventually(&format!("{holder} holds the lease"), timeout, || async {
        (lease_holder(admin).await.as_deref() == Some(holder)).then(Instant::now)
    })
    .await
}

/// Every child the test can count in `namespace` is there exactly once per workspace and
/// owned by it: no duplicate (a second Deployment, ReplicaSet or Pod) and no orphan.
async fn assert_one_child_each(admin: &Client, namespace: &str, workspaces: &[Workspace]) {
    let uids: HashMap<String, String> = workspaces
        .iter()
        .map(|ws| (ws.name_any(), ws.uid().unwrap()))
        .collect();
    let deployments = Api::<Deployment>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    let services = Api::<Service>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    for (kind, metas) in [
        (
            "Deployment",
            deployments.iter().map(|d| &d.metadata).collect::<Vec<_>>(),
        ),
        ("Service", services.iter().map(|s| &s.metadata).collect()),
    ] {
        assert_eq!(metas.len(), workspaces.len(), "one {kind} per workspace");
        for meta in metas {
            let name = meta.name.clone().unwrap();
            let owners = meta.owner_references.clone().unwrap_or_default();
            assert_eq!(owners.len(), 1, "{kind} {name} has one owner");
            assert_eq!(owners[0].kind, "Workspace", "{kind} {name}");
            assert_eq!(
                Some(&owners[0].uid),
                uids.get(&name),
                "{kind} {name} is owned by its workspace"
            );
            assert_eq!(owners[0].controller, Some(true), "{kind} {name}");
        }
    }
    let replica_sets = Api::<ReplicaSet>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        replica_sets.items.len(),
        workspaces.len(),
        "one ReplicaSet per Deployment: no leader rolled out a different pod template"
    );
    let pods = Api::<Pod>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    let live = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    assert_eq!(live, workspaces.len(), "one pod per workspace");
}

#[tokio::test]
async fn only_the_leader_writes_and_a_sigterm_hands_over_at_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start("runtime-leader");
    let admin = cluster.client(User::Admin).await;
    let mut ops = [
        Operator::start(&cluster, "op-a", &[]),
        Operator::start(&cluster, "op-b", &[]),
    ];
    let leader = leader_among(&[&ops[0], &ops[1]], TIMEOUT).await;
    let standby = 1 - leader;
    let (leader_name, standby_name) = (
        ops[leader].name().to_owned(),
        ops[standby].name().to_owned(),
    );
    assert_eq!(lease_holder(&admin).await, Some(leader_name.clone()));

    let ns = "team-a";
    create_namespace(&admin, ns, &[]).await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), ns);
    for i in 0..5 {
        api.create(&PostParams::default(), &workspace(&format!("ws-{i}")))
            .await
            .unwrap();
    }
    all_running(&api, 5, TIMEOUT).await;

    // All replicas share one field manager (a per-replica one would leave fields a former
    // leader applied owned by it, so a new leader could never remove them): managedFields
    // show the operator and nothing else of ours wrote.
    for d in Api::<Deployment>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        let written_by = managers(&d.metadata);
        assert!(written_by.contains("guildnet-operator"), "{written_by:?}");
        assert!(
            written_by
                .iter()
                .all(|m| m == "guildnet-operator" || m == "kube-controller-manager"),
            "Deployment {} written by {written_by:?}",
            d.name_any()
        );
    }
    for ws in api.list(&ListParams::default()).await.unwrap() {
        let status_writers: Vec<_> = ws
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.subresource.as_deref() == Some("status"))
            .filter_map(|m| m.manager.clone())
            .collect();
        assert_eq!(status_writers, ["guildnet-operator"], "{}", ws.name_any());
    }
    // Which replica wrote: the Events name it, and only the leader's metrics and logs show
    // any work.
    let events = Api::<Event>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let ours: Vec<&Event> = events
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("guildnet-operator"))
        .collect();
    assert!(
        ours.len() >= 10,
        "Launched and Ready for each workspace: {}",
        ours.len()
    );
    for e in &ours {
        assert_eq!(e.reporting_instance.as_deref(), Some(leader_name.as_str()));
    }
    let leader_metrics = ops[leader].metrics().await.unwrap();
    let standby_metrics = ops[standby].metrics().await.unwrap();
    let reconciles = "guildnet_reconcile_duration_seconds_count{controller=\"workspace\"}";
    assert!(leader_metrics.value(reconciles) >= 5.0);
    assert_eq!(
        standby_metrics.value(reconciles),
        0.0,
        "the standby never reconciled"
    );
    assert_eq!(leader_metrics.value("guildnet_workspace_total"), 5.0);
    assert_eq!(standby_metrics.value("guildnet_workspace_total"), 0.0);
    assert_eq!(
        leader_metrics.value("guildnet_workspace_ready_seconds_count"),
        5.0
    );
    for m in [&leader_metrics, &standby_metrics] {
        // Counted from the watch cache, which the standby keeps warm too.
        assert_eq!(m.value("guildnet_workspace_active"), 5.0);
        assert_eq!(m.value("guildnet_workspaces{phase=\"Running\"}"), 5.0);
    }
    assert_eq!(standby_metrics.value("guildnet_leader"), 0.0);

    // Every log line inside a reconcile names the workspace and the reconcile.
    let in_reconcile: Vec<serde_json::Value> = ops[leader]
        .log_lines()
        .into_iter()
        .filter(|l| l["span"]["name"] == "reconcile")
        .collect();
    assert!(in_reconcile.len() >= 10, "Launched and Ready lines");
    for line in &in_reconcile {
        let span = &line["span"];
        assert_eq!(span["namespace"], ns, "{line}");
        assert!(
            span["workspace"]
                .as_str()
                .is_some_and(|w| w.starts_with("ws-")),
            "{line}"
        );
        assert!(
            span["reconcile_id"]
                .as_str()
                .is_some_and(|id| id.len() == 8),
            "{line}"
        );
    }
    assert!(
        ops[standby]
            .log_lines()
            .iter()
            .all(|l| l["span"]["name"] != "reconcile"),
        "the standby logged no reconcile"
    );

    // A planned handover: SIGTERM the leader, then create a workspace only a leader serves.
    let seen = deployments_seen(&admin, ns).await;
    let sent = Instant::now();
    ops[leader].terminate();
    api.create(&PostParams::default(), &workspace("probe"))
        .await
        .unwrap();
    let handed_over = held_by(&admin, &standby_name, Duration::from_secs(10)).await - sent;
    let first_write = eventually(
        "the probe's Deployment",
        Duration::from_secs(10),
        || async { seen.lock().unwrap().get("probe").map(|at| *at - sent) },
    )
    .await;
    println!(
        "SIGTERM → lease held by the standby: {handed_over:?}; → the probe's Deployment (its first write): {first_write:?}"
    );
    assert!(
        handed_over <= Duration::from_secs(1),
        "handover took {handed_over:?}"
    );

    let status = ops[leader].exited(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the old leader exits 0: {status:?}"
    );
    assert_eq!(
        ops[standby]
            .metrics()
            .await
            .unwrap()
            .value("guildnet_leader"),
        1.0
    );
    all_running(&api, 6, TIMEOUT).await;
    for op in &ops {
        assert_eq!(
            op.complaints(),
            Vec::<String>::new(),
            "{} logged no warning or error",
            op.name()
        );
    }
}

#[tokio::test]
async fn killing_the_leader_mid_burst_loses_and_duplicates_nothing() {
    const WORKSPACES: usize = 200;
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start("runtime-failover");
    let admin = cluster.client(User::Admin).await;
    let mut ops = [
        Operator::start(&cluster, "op-a", &[]),
        Operator::start(&cluster, "op-b", &[]),
    ];
    let leader = leader_among(&[&ops[0], &ops[1]], TIMEOUT).await;
    let survivor = 1 - leader;
    let survivor_name = ops[survivor].name().to_owned();

    let ns = "burst";
    create_namespace(&admin, ns, &[]).await;
    let seen = deployments_seen(&admin, ns).await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), ns);
    let mut killed = None;
    let mut created_after_kill = Vec::new();
    for i in 0..WORKSPACES {
        if i == WORKSPACES / 2 {
            ops[leader].kill();
            let (at, wall) = (Instant::now(), Timestamp::now());
            let (admin, survivor) = (admin.clone(), survivor_name.clone());
            let taken_over = tokio::spawn(async move {
                held_by(&admin, &survivor, Duration::from_secs(30)).await - at
            });
            killed = Some((at, wall, taken_over));
        }
        let name = format!("ws-{i}");
        api.create(&PostParams::default(), &workspace(&name))
            .await
            .unwrap();
        if killed.is_some() {
            created_after_kill.push(name);
        }
    }
    let (killed_at, killed_wall, taken_over) = killed.unwrap();
    let taken_over = taken_over.await.unwrap();
    all_running(&api, WORKSPACES, Duration::from_secs(180)).await;
    // The survivor's first write, as its log tells (an Event follows each write it reports)…
    let first_write = first_announcement(&ops[survivor])
        .map(|at| Duration::try_from(at.duration_since(killed_wall)).unwrap())
        .expect("the survivor announced launches");
    // …and, from outside, the first Deployment of a workspace the old leader never saw.
    let first_new_child = {
        let seen = seen.lock().unwrap();
        created_after_kill
            .iter()
            .filter_map(|name| seen.get(name))
            .min()
            .map(|at| *at - killed_at)
            .unwrap()
    };
    println!(
        "kill -9 of the leader → lease held by the survivor: {taken_over:?}; → its first write: {first_write:?}; → first Deployment of a workspace created after the kill: {first_new_child:?}"
    );
    // How fast is measured by the failover benchmark (`make bench`), not asserted here:
    // this test is about nothing lost or duplicated across the takeover.

    let workspaces = api.list(&ListParams::default()).await.unwrap().items;
    assert_one_child_each(&admin, ns, &workspaces).await;
    let metrics = ops[survivor].metrics().await.unwrap();
    assert_eq!(metrics.value("guildnet_leader"), 1.0);
    assert_eq!(
        metrics.value("guildnet_workspace_active"),
        WORKSPACES as f64
    );
    assert_eq!(
        metrics.value("guildnet_workspaces{phase=\"Running\"}"),
        WORKSPACES as f64
    );
    let launched = metrics.value("guildnet_workspace_total");
    assert!(
        launched >= created_after_kill.len() as f64 && launched <= WORKSPACES as f64,
        "the survivor launched those created after the kill, and at most all: {launched}"
    );
}

/// A client acting as the ServiceAccount `name` of release `guildnet` (admin impersonating
/// it), as the chart's FlowSchemas and RBAC see it.
async fn as_service_account(cluster: &Cluster, name: &str) -> Client {
    let options = KubeConfigOptions {
        context: Some(User::Admin.context().into()),
        ..Default::default()
    };
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:guildnet-system:{name}"));
    Client::try_from(config).unwrap()
}

/// The requests the API server dispatched through FlowSchema `flow_schema` into priority
/// level `priority_level`, from a scrape of its `/metrics`.
fn dispatched(metrics: &str, flow_schema: &str, priority_level: &str) -> f64 {
    let wanted = [
        format!("flow_schema=\"{flow_schema}\""),
        format!("priority_level=\"{priority_level}\""),
    ];
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("apiserver_flowcontrol_dispatched_requests_total{"))
        .filter_map(|l| l.split_once("} "))
        .filter(|(labels, _)| {
            let labels: Vec<&str> = labels.split(',').collect();
            wanted.iter().all(|w| labels.contains(&w.as_str()))
        })
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn lease_requests_go_to_leader_election_and_the_rest_to_workload_high() {
    const LEADER_ELECTION: (&str, &str) = ("guildnet-leader-election", "leader-election");
    const WORKLOAD: (&str, &str) = ("guildnet-workload", "workload-high");
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start("runtime-apf");
    let admin = cluster.client(User::Admin).await;

    // Each component's requests are classified by the chart's FlowSchemas (installed with
    // its RBAC), as the UID of the schema in every response tells; only the operator's Lease
    // requests go to leader-election.
    let schemas: HashMap<String, String> = Api::<FlowSchema>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .map(|fs| (fs.uid().unwrap(), fs.name_any()))
        .collect();
    let lease = "/apis/coordination.k8s.io/v1/namespaces/guildnet-system/leases/guildnet-operator";
    let workspaces = "/apis/guildnet.io/v1alpha1/workspaces?limit=1";
    for (service_account, path, schema) in [
        ("guildnet-operator", lease, LEADER_ELECTION.0),
        ("guildnet-operator", workspaces, WORKLOAD.0),
        ("guildnet-webhook", lease, WORKLOAD.0),
        ("guildnet-webhook", workspaces, WORKLOAD.0),
        ("guildnet-proxy", workspaces, WORKLOAD.0),
    ] {
        let client = as_service_account(&cluster, service_account).await;
        let request = hyper::Request::get(path)
            .body(kube::client::Body::empty())
            .unwrap();
        let response = client.send(request).await.unwrap();
        let classified = response
            .headers()
            .get("X-Kubernetes-PF-FlowSchema-UID")
            .and_then(|uid| schemas.get(uid.to_str().ok()?));
        assert_eq!(
            classified.map(String::as_str),
            Some(schema),
            "{service_account} GET {path}"
        );
    }

    // The operator itself, as its ServiceAccount: its Lease renewals are dispatched in
    // leader-election, its watches and writes in workload-high.
    let op = Operator::start_as_service_account(&cluster, "op-a", &[]);
    leader_among(&[&op], TIMEOUT).await;
    let ns = "apf";
    create_namespace(&admin, ns, &[]).await;
    let api: Api<Workspace> = Api::namespaced(admin.clone(), ns);
    api.create(&PostParams::default(), &workspace("ws-0"))
        .await
        .unwrap();
    all_running(&api, 1, TIMEOUT).await;
    let scrape = || async {
        let request = hyper::Request::get("/metrics").body(Vec::new()).unwrap();
        let metrics = admin.request_text(request).await.unwrap();
        [LEADER_ELECTION, WORKLOAD].map(|(schema, level)| dispatched(&metrics, schema, level))
    };
    let [renewals, _] = eventually(
        "the operator's requests in both FlowSchemas",
        TIMEOUT,
        || async {
            let counts = scrape().await;
            counts.iter().all(|&c| c > 0.0).then_some(counts)
        },
    )
    .await;
    // A 12s lease is renewed every 3s: more keep coming, all in leader-election.
    eventually("two more renewals in leader-election", TIMEOUT, || async {
        (scrape().await[0] >= renewals + 2.0).then_some(())
    })
    .await;
    assert_eq!(
        op.complaints(),
        Vec::<String>::new(),
        "the operator logged no warning or error as its ServiceAccount"
    );
}
