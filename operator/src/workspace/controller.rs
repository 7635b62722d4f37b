//! The Workspace controller's driver: dereference → validate → build → apply → update
//! status, one workspace at a time, and the leader-gated loop that runs it with the reaper.
//!
//! - build: `desired_children` (pure, in `builders.rs`);
//! - apply: `apply.rs` writes the children by server-side apply, never onto an object
//!   that is not this workspace's own;
//! - status: `status::compute` (pure), written by `report.rs` with its Events;
//! - reaping: `reap_loop.rs` suspends or deletes what `reaper.rs` finds due.

use super::apply::{Applied, apply_children};
use super::caches::Caches;
use super::reaper::IdleAction;
use super::status::{self, Failure, Observation};
use super::{BuildContext, quota, reap_loop, report};
use crate::metrics::{Metrics, WORKSPACE_CONTROLLER};
use crate::reconcile::apply::{self as child, NameConflict};
use crate::reconcile::backoff::Backoff;
use crate::reconcile::events::{Announced, Publisher};
use crate::reconcile::lead::{self, Term};
use guildnet_api::workspace::WorkspacePhase;
use guildnet_api::workspace::facts::Reason;
use guildnet_api::{Quota, Workspace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Instrument, debug, info_span, warn};

/// Operator-wide settings of the Workspace controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Restarts in CrashLoopBackOff at or above which a workspace is Failed.
    pub crash_loop_restarts: i32,
    /// Idle timeout of workspaces that set none; `None`: only workspaces that set one.
    pub default_idle_timeout: Option<Duration>,
    /// What happens to a workspace idle past its timeout (`--idle-action`, default suspend).
    pub idle_action: IdleAction,
    /// How often the reaper scans the cache.
    pub reap_interval: Duration,
    /// Edits to a workspace closer together than this are reconciled once.
    pub debounce: Duration,
    /// GuildNet's own namespace: only Quotas there may count workspaces cluster-wide.
    pub system_namespace: String,
    /// Operator-wide settings of every workspace's children (tolerations, the proxy's peer).
    pub build: BuildContext,
}

/// The longest wait between retries of a failing workspace.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a workspace whose child name is taken looks again: the other object may be
/// removed, and it is not in a watch cache that would say so.
const NAME_CONFLICT_RECHECK: Duration = Duration::from_secs(60);
/// Children's and pods' changes wake the controller; this requeue only heals drift.
const RESYNC: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    /// The operator's client: reads and writes as its ServiceAccount.
    pub client: Client,
    /// The operator-wide settings, from the command line.
    pub settings: Settings,
    pub(super) events: Publisher,
    pods: Store<Pod>,
    pub(super) deployments: Store<PartialObjectMeta<Deployment>>,
    pub(super) services: Store<PartialObjectMeta<Service>>,
    workspaces: Store<Workspace>,
    quotas: Store<Quota>,
    pub(super) metrics: Arc<Metrics>,
    backoff: Backoff<Workspace>,
    /// What this process announced, so a stale cache does not make it announce twice.
    announced: Mutex<Announced<WorkspacePhase>>,
}

impl Context {
    /// `identity` names this replica in the Events it publishes.
    pub fn new(
        client: Client,
        settings: Settings,
        caches: &Caches,
        metrics: Arc<Metrics>,
        identity: &str,
    ) -> Self {
        Self {
            events: Publisher::new(client.clone(), identity),
            client,
            settings,
            pods: caches.pods(),
            deployments: caches.deployments(),
            services: caches.services(),
            workspaces: caches.workspaces(),
            quotas: caches.quotas(),
            metrics,
            backoff: Backoff::new(MAX_BACKOFF),
            announced: Mutex::default(),
        }
    }

    /// The `QuotaExceeded` failure of `ws`, from the caches (see [`quota`]).
    /// Quotas count only the owner's workspaces, and none when there is no Quota, so only
    /// those are taken from the cache: copying all of it per reconcile made a resync O(N²).
    fn quota_failure(&self, ws: &Workspace) -> Option<Failure> {
        let quotas = self.quotas.state();
        let owner = ws.owner_id()?;
        let workspaces = if quotas.is_empty() {
            Vec::new()
        } else {
            self.workspaces
                .state_filter(|w| w.owner_id() == Some(owner))
        };
        let workspaces: Vec<&Workspace> = workspaces.iter().map(|w| w.as_ref()).collect();
        let quotas: Vec<&Quota> = quotas.iter().map(|q| q.as_ref()).collect();
        quota::check(ws, &workspaces, &quotas, &self.settings.system_namespace)
    }

    /// The workspace's pods, from the watch cache.
    fn pods_of(&self, name: &str, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods.state_filter(|p| {
            p.namespace().as_deref() == Some(namespace)
                && p.labels().get(guildnet_api::labels::ID).map(String::as_str) == Some(name)
        })
    }

    /// Whether to announce `ws`'s launch (see [`Announced`]).
    pub(super) fn announce_launch(&self, ws: &Workspace) -> bool {
        let uid = ws.uid().unwrap_or_default();
        self.announced.lock().unwrap().launch(&uid)
    }

    /// Whether to announce that `ws` entered `phase`.
    pub(super) fn announce_phase(&self, ws: &Workspace, phase: Option<WorkspacePhase>) -> bool {
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
        self.backoff.clear();
    }

    /// Forgets what was announced for workspaces no longer in `cached`.
    pub(super) fn forget_gone(&self, cached: &[Arc<Workspace>]) {
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
    /// A read or write failed at the API server (409 conflicts included); retried with backoff.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The named workspace has no `metadata.namespace` (never so for one read from the API).
    #[error("workspace {0} has no namespace")]
    NoNamespace(String),
    /// The spec cannot be built into children: `Failed` with reason `InvalidSpec` until edited.
    #[error(transparent)]
    InvalidSpec(#[from] super::Error),
    /// A child's name is taken: `Failed` with reason `NameConflict`, rechecked every minute.
    #[error(transparent)]
    NameConflict(#[from] NameConflict),
}

impl From<child::Error> for Error {
    fn from(error: child::Error) -> Self {
        match error {
            child::Error::Kube(e) => Error::Kube(e),
            child::Error::NameConflict(c) => Error::NameConflict(c),
        }
    }
}

impl Error {
    /// A write lost a race with another writer: retried soon, not an outage.
    pub(super) fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }

    /// The failure this error puts in the status, for errors only the user can fix.
    fn failure(&self) -> Option<Failure> {
        let reason = match self {
            Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::NameConflict(_) => Reason::NameConflict,
            _ => return None,
        };
        Some(Failure {
            reason,
            message: self.to_string(),
        })
    }

    /// The `error` label of `guildnet_reconcile_errors_total`: a small, fixed set.
    fn kind(&self) -> &'static str {
        match self {
            _ if self.is_conflict() => "conflict",
            Error::Kube(_) => "api",
            Error::NoNamespace(_) => "no_namespace",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::NameConflict(_) => "name_conflict",
        }
    }
}

/// Reconciles every workspace and reaps idle ones while this replica leads: from the moment
/// the caches are synced until `lost` or `shutdown` resolves (see [`Term`]).
pub async fn lead(
    caches: &Caches,
    ctx: Arc<Context>,
    lost: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let (mut lost, mut shutdown) = (std::pin::pin!(lost), std::pin::pin!(shutdown));
    tokio::select! {
        _ = caches.wait_synced() => {}
        _ = &mut lost => return,
        _ = &mut shutdown => return,
    }
    ctx.begin_term(&caches.workspaces().state());
    let controller = Controller::for_stream(futures::stream::pending(), caches.workspaces())
        .with_config(controller::Config::default().debounce(ctx.settings.debounce))
        .reconcile_on(caches.subscribe());
    let reaper = reap_loop::run(caches.workspaces(), ctx.clone());
    let term = Term {
        lost,
        shutdown,
        drain,
    };
    lead::run(controller, reconcile, error_policy, ctx, reaper, term).await;
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
    // Dereference.
    if ws.metadata.deletion_timestamp.is_some() {
        // Owner references hand the children to the garbage collector.
        return Ok(Action::await_change());
    }
    let namespace = ws
        .namespace()
        .ok_or_else(|| Error::NoNamespace(ws.name_any()))?;
    let over_quota = ctx.quota_failure(&ws);
    // Validate, build and apply.
    let applied = apply_children(&ws, &namespace, over_quota.is_some(), &ctx).await;
    // Update status, unless the API failed us (nothing new was learnt).
    let user_error = applied.as_ref().err().and_then(Error::failure);
    let other_error = applied
        .as_ref()
        .is_err_and(|e| !e.is_conflict() && user_error.is_none());
    if !other_error {
        let pods = ctx.pods_of(&ws.name_any(), &namespace);
        let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let failure = user_error.or(over_quota);
        let observation = observe(&applied, &pods, failure, &ctx);
        report::update_status(&ws, &namespace, status::compute(&ws, &observation), &ctx).await?;
    }
    match applied {
        // Nothing to retry until the spec changes, and a spec change wakes the controller.
        Err(Error::InvalidSpec(_)) => Ok(Action::await_change()),
        Err(Error::NameConflict(_)) => Ok(Action::requeue(NAME_CONFLICT_RECHECK)),
        Err(e) => Err(e),
        Ok(_) => {
            ctx.backoff.succeeded(&ObjectRef::from_obj(&*ws));
            Ok(Action::requeue(RESYNC))
        }
    }
}

/// What the status is computed from: the apply's outcome and the cached pods.
fn observe<'a>(
    applied: &'a Result<Applied, Error>,
    pods: &'a [&'a Pod],
    failure: Option<Failure>,
    ctx: &Context,
) -> Observation<'a> {
    let applied_ok = applied.as_ref().ok();
    let children = applied_ok.map(|a| &a.children);
    let conflict_backoff = match applied {
        Err(e) if e.is_conflict() => Some(format!(
            "another writer changed a child at the same time; retrying: {e}"
        )),
        _ => None,
    };
    Observation {
        deployment: applied_ok.map(|a| &a.deployment),
        pods,
        crash_loop_restarts: ctx.settings.crash_loop_restarts,
        profile_applied: children.and_then(|c| c.profile_applied),
        password_secret: children.and_then(|c| c.password_secret.clone()),
        volume_claims: children
            .map(|c| c.pvcs.iter().map(|p| p.name_any()).collect())
            .unwrap_or_default(),
        failure,
        conflict_backoff,
        snapshot: applied_ok.and_then(|a| a.snapshot.clone()),
        now: Timestamp::now(),
    }
}

/// Retries a failing workspace with exponential backoff (100 ms doubling, capped at 2 s).
/// The failure itself is logged inside the reconcile's span.
fn error_policy(ws: Arc<Workspace>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_failed(WORKSPACE_CONTROLLER, error.kind());
    let delay = ctx.backoff.failed(ObjectRef::from_obj(&*ws));
    debug!(workspace = %ws.name_any(), namespace = ws.namespace().unwrap_or_default(), retry_in = ?delay, "retry scheduled");
    Action::requeue(delay)
}
