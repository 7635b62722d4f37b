//! The Workspace controller: validate → build → apply → update status, one workspace at a
//! time, plus the reaper loop. Children are written by server-side apply with one field
//! manager; the status only when it changed.
//!
//! The watch caches ([`Caches`]) run on every replica from the start, so a standby that
//! becomes the leader has them warm; reconciling and reaping ([`lead`]) run only while this
//! replica leads, and stop the moment it may no longer write.

use super::caches::Caches;
use super::reaper::{self, IdleAction, Reap};
use super::status::{self, Observation};
use super::{
    BuildContext, Children, desired_children, password_secret, quota, snapshot, transitions,
};
use crate::conditions::Observed;
use crate::metrics::{Metrics, WORKSPACE_CONTROLLER};
use futures::StreamExt;
use guildnet_api::workspace::{WorkspacePhase, WorkspaceStatus};
use guildnet_api::{Quota, Workspace, labels};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Instrument, debug, info, info_span, warn};

/// The field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "guildnet-operator";

/// Operator-wide settings of the Workspace controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Restarts in CrashLoopBackOff at or above which a workspace is Failed.
    pub crash_loop_restarts: i32,
    /// Idle timeout of workspaces that set none; `None`: only workspaces that set one.
    pub default_idle_timeout: Option<Duration>,
    pub idle_action: IdleAction,
    /// How often the reaper scans the cache.
    pub reap_interval: Duration,
    /// Edits to a workspace closer together than this are reconciled once.
    pub debounce: Duration,
    /// GuildNet's own namespace: only Quotas there may count workspaces cluster-wide.
    pub system_namespace: String,
    pub build: BuildContext,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    recorder: Recorder,
    pods: Store<Pod>,
    workspaces: Store<Workspace>,
    quotas: Store<Quota>,
    metrics: Arc<Metrics>,
    /// Consecutive failures per workspace, for the capped exponential backoff.
    failures: Mutex<HashMap<ObjectRef<Workspace>, u32>>,
    /// What this process announced, so a stale cache does not make it announce twice.
    announced: Mutex<transitions::Announced>,
}

impl Context {
    /// `identity` names this replica in the Events it publishes (`reportingInstance`), so
    /// `kubectl events` tells which replica acted.
    pub fn new(
        client: Client,
        settings: Settings,
        caches: &Caches,
        metrics: Arc<Metrics>,
        identity: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.into()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            pods: caches.pods(),
            workspaces: caches.workspaces(),
            quotas: caches.quotas(),
            metrics,
            failures: Mutex::default(),
            announced: Mutex::default(),
        }
    }

    /// The `QuotaExceeded` failure of `ws`, from the caches (see [`quota`]).
    /// Quotas count only the owner's workspaces, and none when there is no Quota, so only
    /// those are taken from the cache: copying all of it per reconcile made a resync O(N²).
    fn quota_failure(&self, ws: &Workspace) -> Option<status::Failure> {
        let quotas = self.quotas.state();
        let owner = ws.labels().get(labels::OWNER)?;
        let workspaces = if quotas.is_empty() {
            Vec::new()
        } else {
            self.workspaces
                .state_filter(|w| w.labels().get(labels::OWNER) == Some(owner))
        };
        let workspaces: Vec<&Workspace> = workspaces.iter().map(|w| w.as_ref()).collect();
        let quotas: Vec<&Quota> = quotas.iter().map(|q| q.as_ref()).collect();
        quota::check(ws, &workspaces, &quotas, &self.settings.system_namespace)
    }

    /// Whether to announce `ws`'s launch (see [`transitions::Announced`]).
    fn announce_launch(&self, ws: &Workspace) -> bool {
        let uid = ws.uid().unwrap_or_default();
        self.announced.lock().unwrap().launch(&uid)
    }

    /// Whether to announce that `ws` entered `phase`.
    fn announce_phase(&self, ws: &Workspace, phase: Option<WorkspacePhase>) -> bool {
        let uid = ws.uid().unwrap_or_default();
        match phase {
            Some(phase) => self.announced.lock().unwrap().phase(&uid, phase),
            None => false,
        }
    }

    /// Starts a leadership term from the `cached` workspaces: another leader may have
    /// announced and retried since this replica last led.
    fn begin_term(&self, cached: &[Arc<Workspace>]) {
        let phases: HashMap<String, Option<WorkspacePhase>> = cached
            .iter()
            .filter_map(|ws| Some((ws.uid()?, ws.status.as_ref().and_then(|s| s.phase))))
            .collect();
        self.announced
            .lock()
            .unwrap()
            .retain_agreeing(|uid| phases.get(uid).copied());
        self.failures.lock().unwrap().clear();
    }

    /// Forgets what was announced for workspaces no longer in `cached`.
    fn forget_gone(&self, cached: &[Arc<Workspace>]) {
        let live: HashSet<String> = cached.iter().filter_map(|ws| ws.uid()).collect();
        self.announced
            .lock()
            .unwrap()
            .retain(|uid| live.contains(uid));
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("workspace {0} has no namespace")]
    NoNamespace(String),
    #[error(transparent)]
    InvalidSpec(#[from] super::Error),
}

impl Error {
    /// A write lost a race with another writer: retried soon, not an outage.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }

    /// The `error` label of `guildnet_reconcile_errors_total`: a small, fixed set.
    fn kind(&self) -> &'static str {
        match self {
            _ if self.is_conflict() => "conflict",
            Error::Kube(_) => "api",
            Error::NoNamespace(_) => "no_namespace",
            Error::InvalidSpec(_) => "invalid_spec",
        }
    }
}

/// The longest wait between retries of a failing workspace.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Aborts a spawned task when dropped, so no exit path of [`lead`] leaves the reaper behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reconciles every workspace and reaps idle ones while this replica leads: from the moment
/// the caches are synced until `lost` or `shutdown` resolves.
///
/// - `lost`: another replica may take the lease soon, so everything stops at once; in-flight
///   reconciles are cancelled (a new leader reconciles every workspace when it starts).
/// - `shutdown`: no new reconcile starts and the reaper stops; those in flight get up to
///   `drain` to finish while this replica still holds the lease.
pub async fn lead(
    caches: &Caches,
    ctx: Arc<Context>,
    lost: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let mut lost = pin!(lost);
    let mut shutdown = pin!(shutdown);
    tokio::select! {
        _ = caches.wait_synced() => {}
        _ = &mut lost => return,
        _ = &mut shutdown => return,
    }
    ctx.begin_term(&caches.workspaces().state());
    let (graceful_tx, graceful_rx) = futures::channel::oneshot::channel::<()>();
    let controller = Controller::for_stream(futures::stream::pending(), caches.workspaces())
        .with_config(controller::Config::default().debounce(ctx.settings.debounce))
        .reconcile_on(caches.subscribe())
        .graceful_shutdown_on(async move {
            let _ = graceful_rx.await;
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                // Logged inside the reconcile, with its span.
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                // Deleted between the change and its reconcile.
                Err(controller::Error::ObjectNotFound(obj)) => debug!(%obj, "already gone"),
                Err(e) => warn!(error = %e, "controller error"),
            }
        });
    let mut controller = pin!(controller);
    let reaper = AbortOnDrop(tokio::spawn(reap_forever(caches.workspaces(), ctx)));
    info!("reconciling as the leader");
    tokio::select! {
        _ = &mut controller => return,
        _ = &mut lost => {
            info!("stopped reconciling: no longer the leader");
            return;
        }
        _ = &mut shutdown => {}
    }
    drop(reaper);
    let _ = graceful_tx.send(());
    tokio::select! {
        _ = &mut controller => info!("in-flight reconciles finished"),
        _ = &mut lost => info!("stopped reconciling: no longer the leader"),
        _ = tokio::time::sleep(drain) => {
            warn!(?drain, "in-flight reconciles did not finish in time: cancelled them");
        }
    }
}

/// One reconcile in a span naming the workspace and a reconcile id, so every log line it
/// writes can be found by either; timed and counted.
async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        namespace = ws.namespace().unwrap_or_default(),
        workspace = ws.name_any(),
        reconcile_id = format!("{:08x}", rand::random::<u32>()),
    );
    let started = Instant::now();
    let result = reconcile_workspace(ws, ctx.clone())
        .instrument(span.clone())
        .await;
    ctx.metrics
        .reconciled(WORKSPACE_CONTROLLER, started.elapsed());
    if let Err(e) = &result {
        span.in_scope(|| warn!(error = %e, "reconcile failed; retrying with backoff"));
    }
    result
}

async fn reconcile_workspace(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ws.metadata.deletion_timestamp.is_some() {
        // Owner references hand the children to the garbage collector.
        return Ok(Action::await_change());
    }
    let namespace = ws
        .namespace()
        .ok_or_else(|| Error::NoNamespace(ws.name_any()))?;
    let over_quota = ctx.quota_failure(&ws);
    let applied = apply_children(&ws, &namespace, over_quota.is_some(), &ctx).await;
    let (children, deployment, snapshot) = match &applied {
        Ok(a) => (Some(&a.children), Some(&a.deployment), a.snapshot.clone()),
        Err(_) => (None, None, None),
    };
    let failure = match &applied {
        Err(Error::InvalidSpec(e)) => Some(status::Failure {
            reason: "InvalidSpec",
            message: e.to_string(),
        }),
        _ => over_quota,
    };
    let conflict = match &applied {
        Err(e) if e.is_conflict() => Some(format!(
            "another writer changed a child at the same time; retrying: {e}"
        )),
        _ => None,
    };
    let pods = ctx.pods_of(&ws.name_any(), &namespace);
    let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let observation = Observation {
        deployment,
        pods: &pods,
        crash_loop_restarts: ctx.settings.crash_loop_restarts,
        profile_applied: children.and_then(|c| c.profile_applied),
        password_secret: children.and_then(|c| c.password_secret.clone()),
        volume_claims: children
            .map(|c| c.pvcs.iter().map(|p| p.name_any()).collect())
            .unwrap_or_default(),
        failure,
        conflict_backoff: conflict,
        snapshot,
        now: Timestamp::now(),
    };
    let other_error = applied
        .as_ref()
        .is_err_and(|e| !e.is_conflict() && !matches!(e, Error::InvalidSpec(_)));
    if !other_error {
        update_status(&ws, &namespace, status::compute(&ws, &observation), &ctx).await?;
    }
    match applied {
        // Nothing to retry until the spec changes, and a spec change wakes the controller.
        Err(Error::InvalidSpec(_)) => Ok(Action::await_change()),
        Err(e) => Err(e),
        Ok(_) => {
            ctx.failures
                .lock()
                .unwrap()
                .remove(&ObjectRef::from_obj(&*ws));
            // Children's and pods' changes wake the controller; the requeue only heals drift.
            Ok(Action::requeue(Duration::from_secs(300)))
        }
    }
}

impl Context {
    /// The workspace's pods, from the watch cache.
    fn pods_of(&self, name: &str, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods.state_filter(|p| {
            p.namespace().as_deref() == Some(namespace)
                && p.labels().get(labels::ID).map(String::as_str) == Some(name)
        })
    }
}

/// What applying a workspace's children produced.
struct Applied {
    children: Children,
    /// The Deployment as the API server has it after the apply (with its status).
    deployment: Deployment,
    /// The outcome of a requested snapshot, as the `Snapshot` condition.
    snapshot: Option<Observed>,
}

/// Applies every child of `ws` and prunes what its spec no longer asks for.
/// `hold` keeps the workspace from running (zero replicas): its owner is over a Quota.
async fn apply_children(
    ws: &Workspace,
    namespace: &str,
    hold: bool,
    ctx: &Context,
) -> Result<Applied, Error> {
    // Only what the schema cannot check fails here; the message says what to fix.
    let mut children = desired_children(ws, &ctx.settings.build)?;
    if hold {
        children.deployment.spec.replicas = Some(0);
    }
    let client = &ctx.client;
    if let Some(name) = &children.password_secret {
        ensure_password_secret(ws, namespace, name, ctx).await?;
    }
    for pvc in &children.pvcs {
        apply(client, namespace, pvc).await?;
    }
    apply(client, namespace, &children.service).await?;
    match &children.ingress {
        Some(ingress) => {
            apply(client, namespace, ingress).await?;
        }
        None if ws.status.as_ref().and_then(|s| s.url.as_ref()).is_some() => {
            // The spec no longer asks for an Ingress; the status says one was made.
            delete_if_exists::<Ingress>(client, namespace, &ws.name_any()).await?;
        }
        None => {}
    }
    prune_volume_claims(ws, namespace, &children, client).await?;
    let snapshot = match snapshot::requested(ws) {
        Some(name) => Some(take_snapshots(ws, namespace, &children, name, client).await?),
        None => None,
    };
    let first_launch = ws.status.is_none();
    let deployment = apply(client, namespace, &children.deployment).await?;
    if first_launch && ctx.announce_launch(ws) {
        ctx.metrics.workspace_launched();
        publish(
            ctx,
            ws,
            EventType::Normal,
            "Launched",
            &format!("launched image {}", ws.spec.image),
        )
        .await;
    }
    Ok(Applied {
        children,
        deployment,
        snapshot,
    })
}

/// Creates the requested VolumeSnapshots, or says why it cannot.
async fn take_snapshots(
    ws: &Workspace,
    namespace: &str,
    children: &Children,
    name: &str,
    client: &Client,
) -> Result<Observed, Error> {
    if children.pvcs.is_empty() {
        return Ok(Observed::new(
            status::SNAPSHOT,
            false,
            "NoPersistentVolumes",
            "the workspace has no persistent volumes to snapshot",
        ));
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &snapshot::snapshot_resource());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for snapshot in snapshot::volume_snapshots(ws, &children.pvcs, name) {
        match api
            .patch(&snapshot.name_any(), &params, &Patch::Apply(&snapshot))
            .await
        {
            Ok(created) => names.push(created.name_any()),
            // The API server does not serve the resource at all.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Ok(Observed::new(
                    status::SNAPSHOT,
                    false,
                    "SnapshotAPIUnavailable",
                    "the cluster does not serve snapshot.storage.k8s.io/v1 VolumeSnapshots: install the CSI snapshot CRDs and snapshot controller",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Observed::new(
        status::SNAPSHOT,
        true,
        "SnapshotCreated",
        format!("VolumeSnapshots {}", names.join(", ")),
    ))
}

/// Server-side applies `obj` with the operator's field manager, taking over fields another
/// manager set (the operator is the only author of its children's specs).
async fn apply<K>(client: &Client, namespace: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut body = serde_json::to_value(obj).expect("k8s objects serialize");
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    Ok(api
        .patch(&obj.name_any(), &params, &Patch::Apply(body))
        .await?)
}

async fn delete_if_exists<K>(client: &Client, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the claims of persistent volumes removed from the spec, but only those marked
/// `reclaimPolicy: Delete` (they carry an owner reference); retained data is never removed.
async fn prune_volume_claims(
    ws: &Workspace,
    namespace: &str,
    children: &Children,
    client: &Client,
) -> Result<(), Error> {
    let recorded = ws
        .status
        .as_ref()
        .map(|s| s.volume_claims.as_slice())
        .unwrap_or_default();
    let desired: Vec<String> = children.pvcs.iter().map(|p| p.name_any()).collect();
    if recorded.iter().all(|name| desired.contains(name)) {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={}", labels::ID, ws.name_any());
    for pvc in api.list(&ListParams::default().labels(&selector)).await? {
        let owned_by_ws = pvc
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == ws.metadata.uid.as_ref());
        if owned_by_ws && !desired.contains(&pvc.name_any()) {
            delete_if_exists::<PersistentVolumeClaim>(client, namespace, &pvc.name_any()).await?;
        }
    }
    Ok(())
}

/// Creates the workspace's password Secret once; an existing one is never rewritten, so the
/// password a user has stays valid.
async fn ensure_password_secret(
    ws: &Workspace,
    namespace: &str,
    name: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let secret = password_secret(ws, &super::generate_password())
        .expect("a workspace read from the API server has a name and uid");
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &secret,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Created by a reconcile that raced us: theirs stands.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `new` as the status when it differs from what the workspace has, and publishes an
/// Event for each phase transition. `lastAccessTime` belongs to the proxy and is never
/// written here.
async fn update_status(
    ws: &Workspace,
    namespace: &str,
    mut new: WorkspaceStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let mut current = ws.status.clone().unwrap_or_default();
    current.last_access_time = None;
    new.last_access_time = None;
    if current == new {
        return Ok(());
    }
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": Workspace::api_version(&()),
        "kind": Workspace::kind(&()),
        "status": new,
    });
    api.patch_status(
        &ws.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    if current.phase != new.phase && ctx.announce_phase(ws, new.phase) {
        count_transition(ws, &current, &new, &ctx.metrics);
        announce_phase(ws, &new, ctx).await;
    }
    Ok(())
}

/// Feeds the failure counter and the time-to-first-Ready histogram from a phase change just
/// written.
fn count_transition(
    ws: &Workspace,
    previous: &WorkspaceStatus,
    new: &WorkspaceStatus,
    metrics: &Metrics,
) {
    if let Some(reason) = transitions::entered_failed(previous, new) {
        metrics.workspace_failed(reason);
    }
    if transitions::first_ready(previous, new)
        && let Some(created) = &ws.metadata.creation_timestamp
    {
        let age = Timestamp::now().duration_since(created.0);
        metrics.workspace_ready(Duration::try_from(age).unwrap_or_default());
    }
}

async fn announce_phase(ws: &Workspace, status: &WorkspaceStatus, ctx: &Context) {
    use guildnet_api::workspace::WorkspacePhase::*;
    let ready = crate::conditions::find(&status.conditions, status::READY);
    let message = ready.map(|c| c.message.clone()).unwrap_or_default();
    match status.phase {
        Some(Running) => publish(ctx, ws, EventType::Normal, "Ready", &message).await,
        Some(Failed) => publish(ctx, ws, EventType::Warning, "Failed", &message).await,
        Some(Stopped) => publish(ctx, ws, EventType::Normal, "Suspended", &message).await,
        Some(Pending) | None => {}
    }
}

/// Publishes a lifecycle Event on `ws` and logs it (in the caller's span, which names the
/// workspace).
async fn publish(ctx: &Context, ws: &Workspace, type_: EventType, reason: &str, note: &str) {
    info!(reason, note, "event");
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &ws.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish event");
    }
}

/// Retries a failing workspace with exponential backoff (100 ms doubling, capped at 2 s).
/// The failure itself is logged inside the reconcile's span.
fn error_policy(ws: Arc<Workspace>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_failed(WORKSPACE_CONTROLLER, error.kind());
    let mut failures = ctx.failures.lock().unwrap();
    let count = failures.entry(ObjectRef::from_obj(&*ws)).or_insert(0);
    *count += 1;
    let delay =
        Duration::from_millis(100u64.saturating_mul(1 << (*count - 1).min(10))).min(MAX_BACKOFF);
    debug!(workspace = %ws.name_any(), namespace = ws.namespace().unwrap_or_default(), retry_in = ?delay, "retry scheduled");
    Action::requeue(delay)
}

/// Scans the cache every `reap_interval` and suspends, deletes or expires what is due.
async fn reap_forever(store: Store<Workspace>, ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(ctx.settings.reap_interval);
    loop {
        tick.tick().await;
        let workspaces = store.state();
        ctx.forget_gone(&workspaces);
        let due = reaper::scan(
            workspaces.iter().map(|w| w.as_ref()),
            Timestamp::now(),
            ctx.settings.default_idle_timeout,
        );
        for (ws, reap) in due {
            let span = info_span!(
                "reap",
                namespace = ws.namespace().unwrap_or_default(),
                workspace = ws.name_any(),
            );
            if let Err(e) = reap_one(ws, &reap, &ctx).instrument(span.clone()).await {
                span.in_scope(|| warn!(error = %e, "reaping failed"));
            }
        }
    }
}

async fn reap_one(ws: &Workspace, reap: &Reap, ctx: &Context) -> Result<(), Error> {
    let namespace = ws
        .namespace()
        .ok_or_else(|| Error::NoNamespace(ws.name_any()))?;
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = ws.name_any();
    match (reap, ctx.settings.idle_action) {
        (Reap::Idle { idle_for }, IdleAction::Suspend) => {
            let patch = serde_json::json!({"spec": {"lifecycle": {"suspend": true}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            let note = format!(
                "idle for {}s: suspended (set spec.lifecycle.suspend to false to resume)",
                idle_for.as_secs()
            );
            publish(ctx, ws, EventType::Normal, "Reaped", &note).await;
        }
        (Reap::Idle { idle_for }, IdleAction::Delete) => {
            let note = format!("idle for {}s: deleted", idle_for.as_secs());
            publish(ctx, ws, EventType::Normal, "Reaped", &note).await;
            delete_if_exists::<Workspace>(&ctx.client, &namespace, &name).await?;
        }
        (Reap::Expired { finished_for }, _) => {
            let note = format!(
                "finished {}s ago: deleted after ttlSecondsAfterFinished",
                finished_for.as_secs()
            );
            publish(ctx, ws, EventType::Normal, "Expired", &note).await;
            delete_if_exists::<Workspace>(&ctx.client, &namespace, &name).await?;
        }
    }
    Ok(())
}
