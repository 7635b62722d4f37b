//! What every Workspace reconcile shares: the operator-wide [`Settings`] and the
//! [`Context`] — client, caches, Events, metrics, backoff and what was announced.

use super::caches::{Caches, ChildCaches};
use super::reaper::IdleAction;
use super::status::Failure;
use super::{BuildContext, quota};
use crate::cluster::remote::Remotes;
use crate::metrics::Metrics;
use crate::reconcile::apply::Written;
use crate::reconcile::backoff::Backoff;
use crate::reconcile::events::{Announced, Publisher};
use guildnet_api::workspace::WorkspacePhase;
use guildnet_api::{ClusterRegistration, GuildDatabase, Quota, Workspace};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest wait between retries of a failing workspace.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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
    /// How many workspaces are reconciled at once, at most.
    pub concurrency: u16,
    /// How often a workspace whose child name is taken by another object looks again.
    pub name_conflict_recheck: Duration,
    /// GuildNet's own namespace: only Quotas there may count workspaces cluster-wide.
    pub system_namespace: String,
    /// Operator-wide settings of every workspace's children (tolerations, the proxy's peer).
    pub build: BuildContext,
}

/// What every reconcile shares.
pub struct Context {
    /// The operator's client: reads and writes as its ServiceAccount.
    pub client: Client,
    /// The operator-wide settings, from the command line.
    pub settings: Settings,
    pub(super) events: Publisher,
    /// GuildNet's children in this cluster.
    pub(super) local: ChildCaches,
    /// The registered clusters, and the connections to those that have one.
    pub(super) clusters: Store<ClusterRegistration>,
    pub(super) remotes: Arc<Remotes>,
    /// This hub's id, on every object it makes in a registered cluster (`guildnet.io/origin`).
    pub(super) origin: String,
    /// The EndpointSlices kept here for placed workspaces.
    pub(super) mirrored_slices: Store<PartialObjectMeta<EndpointSlice>>,
    /// The versions of the children this replica wrote in its current term.
    pub(super) written: Written,
    workspaces: Store<Workspace>,
    quotas: Store<Quota>,
    /// GuildDatabases, whose storage counts against Quotas.
    databases: Store<GuildDatabase>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) backoff: Backoff<Workspace>,
    /// What this process announced, so a stale cache does not make it announce twice.
    announced: Mutex<Announced<WorkspacePhase>>,
}

impl Context {
    /// `identity` names this replica in the Events it publishes.
    pub fn new(
        client: Client,
        settings: Settings,
        caches: &Caches,
        remotes: Arc<Remotes>,
        metrics: Arc<Metrics>,
        identity: &str,
    ) -> Self {
        Self {
            events: Publisher::new(client.clone(), identity),
            client,
            origin: remotes.origin().to_owned(),
            settings,
            local: caches.children().clone(),
            clusters: caches.clusters(),
            mirrored_slices: caches.mirrored_slices(),
            remotes,
            written: Written::default(),
            workspaces: caches.workspaces(),
            quotas: caches.quotas(),
            databases: caches.databases(),
            metrics,
            backoff: Backoff::new(MAX_BACKOFF),
            announced: Mutex::default(),
        }
    }

    /// The `QuotaExceeded` failure of `ws`, from the caches (see [`quota`]).
    /// Quotas count only the owner's workspaces and claims, and none when there is no
    /// Quota, so only those are taken from the caches: copying all of them per reconcile
    /// made a resync O(N²).
    pub(super) fn quota_failure(&self, ws: &Workspace) -> Option<Failure> {
        let quotas = self.quotas.state();
        let owner = ws.owner_id()?;
        let (workspaces, claims, databases) = if quotas.is_empty() {
            (Vec::new(), Vec::new(), Vec::new())
        } else {
            let of_owner = |claim: &PersistentVolumeClaim| {
                claim
                    .labels()
                    .get(guildnet_api::labels::OWNER)
                    .map(String::as_str)
                    == Some(owner)
            };
            let mut claims = self.local.claims.state_filter(of_owner);
            claims.extend(self.remotes.claims_in_hub_terms(of_owner));
            (
                self.workspaces
                    .state_filter(|w| w.owner_id() == Some(owner)),
                claims,
                self.databases
                    .state_filter(|db| db.owner_id() == Some(owner)),
            )
        };
        let workspaces: Vec<&Workspace> = workspaces.iter().map(|w| w.as_ref()).collect();
        let claims: Vec<&PersistentVolumeClaim> = claims.iter().map(|c| c.as_ref()).collect();
        let quotas: Vec<&Quota> = quotas.iter().map(|q| q.as_ref()).collect();
        let databases: Vec<&GuildDatabase> = databases.iter().map(|d| d.as_ref()).collect();
        let counted = quota::Counted {
            workspaces: &workspaces,
            claims: &claims,
            databases: &databases,
        };
        quota::check(ws, &counted, &quotas, &self.settings.system_namespace)
    }

    /// The latest cached version of a workspace; `None` once it is gone.
    pub(super) fn cached_workspace(
        &self,
        workspace: &ObjectRef<Workspace>,
    ) -> Option<Arc<Workspace>> {
        self.workspaces.get(workspace)
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
    pub(super) fn begin_term(&self, cached: &[Arc<Workspace>]) {
        let phases: HashMap<String, Option<WorkspacePhase>> = cached
            .iter()
            .filter_map(|ws| Some((ws.uid()?, ws.status.as_ref().and_then(|s| s.phase))))
            .collect();
        self.announced
            .lock()
            .unwrap()
            .retain_agreeing(|uid| phases.get(uid).copied());
        self.backoff.clear();
        // Another leader may have written since: the applied hashes judge its writes.
        self.written.retain(|_| false);
    }

    /// Forgets what was announced for workspaces no longer in `cached`, and the versions of
    /// children that are gone.
    pub(super) fn forget_gone(&self, cached: &[Arc<Workspace>]) {
        let live: HashSet<String> = cached.iter().filter_map(|ws| ws.uid()).collect();
        self.announced
            .lock()
            .unwrap()
            .retain(|uid| live.contains(uid));
        let mut children = self.local.uids();
        for (_, remote) in self.remotes.connected() {
            children.extend(remote.caches.children.uids());
            children.extend(remote.caches.anchors.state().iter().filter_map(|a| a.uid()));
        }
        self.written.retain(|uid| children.contains(uid));
    }
}
