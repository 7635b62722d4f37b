//! The Workspace controller's driver: dereference → validate → build → apply → update
//! status, one workspace at a time, and the leader-gated loop that runs it with the reaper.
//!
//! - build: `desired_children` (pure, in `builders.rs`);
//! - apply: `apply.rs` writes the children by server-side apply, never onto an object
//!   that is not this workspace's own;
//! - status: `status::compute` (pure), written by `report.rs` with its Events;
//! - reaping: `reap_loop.rs` suspends or deletes what `reaper.rs` finds due.

pub use super::context::{Context, Settings};

use super::apply::{Applied, Target, apply_children};
use super::caches::Caches;
use super::placed::{self, Placement};
use super::status::{self, Failure, Observation, Where};
use super::views::PodView;
use super::{reap_loop, report};
use crate::metrics::WORKSPACE_CONTROLLER;
use crate::quota::StatusWriter;
use crate::reconcile::apply::{self as child, NameConflict};
use crate::reconcile::lead::{self, Term};
use crate::reconcile::slots::{Lane, Slots};
use crate::reconcile::throttle::leading_edge;
use guildnet_api::Workspace;
use guildnet_api::workspace::facts::{Reason, password_secret_name};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Instrument, debug, info_span, warn};

/// Children's and pods' changes wake the controller; this requeue only heals drift.
const RESYNC: Duration = Duration::from_secs(300);
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
    /// The registered cluster the workspace is placed on did not answer within
    /// its budget (15 s); retried with backoff.
    #[error("cluster {0} did not answer within {budget:?}", budget = placed::CLUSTER_BUDGET)]
    ClusterTimeout(String),
    /// The hub's copy of a placed workspace's password Secret holds no password (someone
    /// replaced it); retried with backoff.
    #[error("the password Secret {0} has no password key; delete it and GuildNet makes a new one")]
    PasswordSecret(String),
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
            Error::ClusterTimeout(_) => "cluster_timeout",
            Error::PasswordSecret(_) => "password_secret",
        }
    }
}

/// Reconciles every workspace, reaps idle ones and keeps the Quota statuses current while
/// this replica leads: from the moment the caches are synced until `lost` or `shutdown`
/// resolves (see [`Term`]).
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
    // A new workspace is reconciled at once; edits that follow within the debounce window
    // are coalesced (kube-runtime's own debounce would hold the first one too).
    let triggers = leading_edge(caches.subscribe(), ctx.settings.debounce);
    // Bounded by the slots, not by the controller: each reconcile in flight holds its
    // requests and answers, and the controller would start the ones it holds back in hash
    // order (see `Slots`).
    let slots = Slots::new(ctx.settings.concurrency.into());
    let config = controller::Config::default().concurrency(0);
    let controller = Controller::for_stream(futures::stream::pending(), caches.workspaces())
        .with_config(config)
        .reconcile_on(triggers);
    let reconcile = move |ws, ctx| reconcile(ws, ctx, slots.clone());
    let reaper = reap_loop::run(caches.workspaces(), ctx.clone());
    let quota_statuses = StatusWriter {
        client: ctx.client.clone(),
        quotas: caches.quotas(),
        workspaces: caches.workspaces(),
        claims: caches.children().claims.clone(),
        databases: caches.databases(),
        remotes: ctx.remotes.clone(),
        system_namespace: ctx.settings.system_namespace.clone(),
    }
    .run(caches.changes());
    let background = async move {
        tokio::join!(reaper, quota_statuses);
    };
    let term = Term {
        lost,
        shutdown,
        drain,
    };
    lead::run(controller, reconcile, error_policy, ctx, background, term).await;
}

/// One reconcile, once it has a slot, in a span naming the workspace and a reconcile id,
/// so every log line it writes can be found by either; timed and counted.
async fn reconcile(
    ws: Arc<Workspace>,
    ctx: Arc<Context>,
    slots: Arc<Slots>,
) -> Result<Action, Error> {
    let lane = if ws.has_unobserved_spec() {
        Lane::Unobserved
    } else {
        Lane::FollowUp
    };
    let queued = Instant::now();
    // Before a slot: waiting for a busy cluster holds none.
    let _cluster_permit = match placed::decide(&ws, &ctx) {
        Placement::On(cluster) => match ctx.remotes.get(&cluster) {
            Some(remote) => Some(remote.reconcile_permit().await),
            None => None,
        },
        Placement::Local | Placement::Unplaced(_) => None,
    };
    let _slot = slots.acquire(lane).await;
    ctx.metrics
        .reconcile_waited(WORKSPACE_CONTROLLER, lane, queued.elapsed());
    // The cache may have moved on while this reconcile waited.
    let Some(ws) = ctx.cached_workspace(&ObjectRef::from_obj(&*ws)) else {
        return Ok(Action::await_change());
    };
    let span = info_span!(
        "reconcile",
        namespace = ws.namespace().unwrap_or_default(),
        workspace = ws.name_any(),
        reconcile_id = format!("{:08x}", rand::random::<u32>()),
    );
    let started = Instant::now();
    // Boxed: a future is as large as its largest state, so every reconcile waiting for a
    // slot would otherwise hold the whole reconcile's state (tens of KiB; 5,000 waiting
    // ones cost some 200 MiB).
    let result = Box::pin(reconcile_workspace(ws, ctx.clone()).instrument(span.clone())).await;
    ctx.metrics
        .reconciled(WORKSPACE_CONTROLLER, started.elapsed());
    if let Err(e) = &result {
        span.in_scope(|| warn!(error = %e, "reconcile failed; retrying with backoff"));
    }
    result
}

async fn reconcile_workspace(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Dereference.
    let namespace = ws
        .namespace()
        .ok_or_else(|| Error::NoNamespace(ws.name_any()))?;
    if ws.is_deleting() {
        // Here, owner references hand the children to the garbage collector; a placed
        // workspace's finalizer waits until its anchor there is deleted.
        return match ws.has_remote_cleanup() {
            true => placed::clean_up(&ws, &namespace, &ctx).await,
            false => Ok(Action::await_change()),
        };
    }
    let over_quota = ctx.quota_failure(&ws);
    match placed::decide(&ws, &ctx) {
        Placement::Local => {
            let target = Target {
                client: &ctx.client,
                namespace: &namespace,
                caches: &ctx.local,
                placed: None,
            };
            apply_and_report(&ws, &namespace, &target, Where::Local, over_quota, &ctx).await
        }
        Placement::Unplaced(why) => {
            let observation = Observation {
                placement: Where::Unplaced(&why),
                deployment: None,
                pods: &[],
                crash_loop_restarts: ctx.settings.crash_loop_restarts,
                profile_applied: None,
                password_secret: None,
                volume_claims: Vec::new(),
                failure: over_quota,
                conflict_backoff: None,
                snapshot: None,
                now: Timestamp::now(),
            };
            let status = status::compute(&ws, &observation);
            report::update_status(&ws, &namespace, status, &ctx).await?;
            // A registration's change wakes it.
            Ok(Action::await_change())
        }
        Placement::On(cluster) => {
            placed::reconcile(&ws, &namespace, cluster, over_quota, &ctx).await
        }
    }
}

/// Validates, builds and applies the children of `ws` (of hub namespace `namespace`) to
/// `target`, then writes its status from what that cluster shows.
pub(super) async fn apply_and_report(
    ws: &Workspace,
    namespace: &str,
    target: &Target<'_>,
    placement: Where<'_>,
    over_quota: Option<Failure>,
    ctx: &Context,
) -> Result<Action, Error> {
    let applied = apply_children(ws, target, over_quota.is_some(), ctx).await;
    // Update status, unless the API failed us (nothing new was learnt).
    let user_error = applied.as_ref().err().and_then(Error::failure);
    let other_error = applied
        .as_ref()
        .is_err_and(|e| !e.is_conflict() && user_error.is_none());
    if !other_error {
        let pods = target
            .caches
            .pods_of(&target.child_name(ws), target.namespace);
        let pods: Vec<&PodView> = pods.iter().map(|p| p.as_ref()).collect();
        let failure = user_error.or(over_quota);
        let mut observation = Observation {
            placement,
            ..observe(&applied, &pods, failure, ctx)
        };
        if target.placed.is_some() && observation.password_secret.is_some() {
            // The password its users read is the copy the hub keeps, beside the workspace.
            observation.password_secret = ws.metadata.name.as_deref().map(password_secret_name);
        }
        report::update_status(ws, namespace, status::compute(ws, &observation), ctx).await?;
    }
    match applied {
        // Nothing to retry until the spec changes, and a spec change wakes the controller.
        Err(Error::InvalidSpec(_)) => Ok(Action::await_change()),
        // The other object may be removed, and no watch cache would say so.
        Err(Error::NameConflict(_)) => Ok(Action::requeue(ctx.settings.name_conflict_recheck)),
        Err(e) => Err(e),
        Ok(_) => {
            ctx.backoff.succeeded(&ObjectRef::from_obj(ws));
            Ok(Action::requeue(RESYNC))
        }
    }
}

/// What the status is computed from: the apply's outcome and the cached pods.
fn observe<'a>(
    applied: &'a Result<Applied, Error>,
    pods: &'a [&'a PodView],
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
        placement: Where::Local,
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
