//! Watch caches of Capabilities, Quotas, Workspaces, GuildNet's volume claims,
//! ClusterRegistrations and GuildDatabases, so an
//! admission decision never waits for the API server (the API server gives a webhook
//! seconds, and every Workspace write passes through it). The webhook is ready only once
//! all of them are listed.

use crate::admission::Snapshot;
use futures::StreamExt;
use guildnet_api::cluster::RetainedClaim;
use guildnet_api::{
    Capabilities, ClusterRegistration, GuildDatabase, Quota, Workspace, labels, policy,
};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::info;

/// The webhook's view of the cluster.
#[derive(Clone)]
pub struct Caches {
    capabilities: Store<Capabilities>,
    quotas: Store<Quota>,
    workspaces: Store<Workspace>,
    /// GuildNet's claims (`guildnet.io/managed=true`): retained ones count against Quotas.
    claims: Store<PersistentVolumeClaim>,
    /// Registered clusters: a placement must name one that takes workspaces.
    clusters: Store<ClusterRegistration>,
    databases: Store<GuildDatabase>,
    synced: Arc<AtomicBool>,
}

impl Caches {
    /// The caches, and the future that fills them and keeps them current (it runs until
    /// dropped; watch errors are retried with backoff).
    pub fn start(client: &Client) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (capabilities, capabilities_writer) = reflector::store();
        let (quotas, quotas_writer) = reflector::store();
        let (workspaces, workspaces_writer) = reflector::store();
        let (claims, claims_writer) = reflector::store();
        let (clusters, clusters_writer) = reflector::store();
        let (databases, databases_writer) = reflector::store();
        let caches = Self {
            capabilities,
            quotas,
            workspaces,
            claims,
            clusters,
            databases,
            synced: Arc::new(AtomicBool::new(false)),
        };
        let ready = caches.clone();
        let managed = watcher::Config::default().labels(&format!("{}=true", labels::MANAGED));
        let run = futures::future::join3(
            futures::future::join5(
                reflect(
                    Api::<Capabilities>::all(client.clone()),
                    watcher::Config::default(),
                    capabilities_writer,
                ),
                reflect(
                    Api::<Quota>::all(client.clone()),
                    watcher::Config::default(),
                    quotas_writer,
                ),
                reflect(
                    Api::<Workspace>::all(client.clone()),
                    watcher::Config::default(),
                    workspaces_writer,
                ),
                reflect(
                    Api::<PersistentVolumeClaim>::all(client.clone()),
                    managed,
                    claims_writer,
                ),
                async move { ready.mark_synced().await },
            ),
            reflect(
                Api::<ClusterRegistration>::all(client.clone()),
                watcher::Config::default(),
                clusters_writer,
            ),
            reflect(
                Api::<GuildDatabase>::all(client.clone()),
                watcher::Config::default(),
                databases_writer,
            ),
        );
        (caches, async move {
            run.await;
        })
    }

    /// Caches over stores filled by someone else (a benchmark), taken as synced.
    pub fn from_stores(
        capabilities: Store<Capabilities>,
        quotas: Store<Quota>,
        workspaces: Store<Workspace>,
    ) -> Self {
        Self {
            capabilities,
            quotas,
            workspaces,
            claims: reflector::store().0,
            clusters: reflector::store().0,
            databases: reflector::store().0,
            synced: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether all three caches have been listed once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// What a validation decides with: the cached policy objects, and the workspaces of
    /// `owner` ([`quota_owner`](crate::admission::quota_owner)) plus `reserved` ones
    /// (admitted, not yet cached). Quotas count no other workspaces, and none when there is
    /// no Quota, so the rest are not copied: copying 5,000 took about 50 µs per request.
    pub fn snapshot(
        &self,
        owner: Option<&str>,
        reserved: Vec<Arc<Workspace>>,
        reserved_databases: Vec<Arc<GuildDatabase>>,
    ) -> Snapshot {
        let quotas = self.quotas.state();
        let mut workspaces = match owner {
            Some(owner) if !quotas.is_empty() => self
                .workspaces
                .state_filter(|ws| ws.owner_id() == Some(owner)),
            _ => Vec::new(),
        };
        // A reserved spec change counts instead of the cached version it changes (the same
        // object: its uid). A reserved create of a name that is taken will fail, but until
        // then both count: a reservation never lowers usage.
        workspaces.retain(|cached| {
            !reserved
                .iter()
                .any(|r| r.metadata.uid.is_some() && r.metadata.uid == cached.metadata.uid)
        });
        workspaces.extend(reserved);
        let clusters = self.clusters.state();
        let retained_claims = match owner {
            Some(owner) if !quotas.is_empty() => {
                let named: Vec<&Workspace> = workspaces.iter().map(|ws| ws.as_ref()).collect();
                let claims = self.claims.state();
                // Those kept in registered clusters, as their registrations' statuses list
                // them, count like the hub's own.
                let elsewhere: Vec<PersistentVolumeClaim> = (clusters.iter())
                    .filter_map(|c| c.status.as_ref())
                    .flat_map(|status| &status.retained_claims)
                    .filter(|claim| claim.owner == owner)
                    .map(RetainedClaim::as_hub_claim)
                    .collect();
                let all = claims.iter().map(|c| c.as_ref()).chain(&elsewhere);
                policy::retained_claims_usage(all, owner, &named)
            }
            _ => Vec::new(),
        };
        let mut databases = match owner {
            Some(owner) if !quotas.is_empty() => self
                .databases
                .state_filter(|db| db.owner_id() == Some(owner)),
            _ => Vec::new(),
        };
        // As for workspaces: a reserved change counts instead of the version it changes.
        databases.retain(|cached| {
            !reserved_databases
                .iter()
                .any(|r| r.metadata.uid.is_some() && r.metadata.uid == cached.metadata.uid)
        });
        databases.extend(reserved_databases);
        Snapshot {
            capabilities: self
                .capabilities
                .state()
                .iter()
                .map(|caps| Capabilities::clone(caps))
                .collect(),
            quotas,
            workspaces,
            denied_references: Vec::new(),
            host_users: Vec::new(),
            retained_claims,
            clusters,
            databases,
        }
    }

    /// The cached workspaces whose Ingress uses `host`, in any namespace.
    pub fn host_users(&self, host: &str) -> Vec<Arc<Workspace>> {
        self.workspaces.state_filter(|ws| {
            ws.spec
                .exposure
                .as_ref()
                .and_then(|e| e.ingress.as_ref())
                .is_some_and(|i| i.host == host)
        })
    }

    /// Whether the cache shows `workspace`: one of its namespace, name (and uid, when known)
    /// with its spec (an admitted create or spec change has reached the cache).
    pub fn shows(&self, workspace: &Workspace) -> bool {
        let (Some(namespace), Some(name)) = (
            workspace.metadata.namespace.as_deref(),
            workspace.metadata.name.as_deref(),
        ) else {
            return false;
        };
        self.workspaces
            .get(&ObjectRef::new(name).within(namespace))
            .is_some_and(|cached| {
                cached.spec == workspace.spec
                    && (workspace.metadata.uid.is_none()
                        || cached.metadata.uid == workspace.metadata.uid)
            })
    }

    /// Whether the cache shows `database`: that name with that spec (and uid, when known).
    pub fn shows_database(&self, database: &GuildDatabase) -> bool {
        let (Some(namespace), Some(name)) = (
            database.metadata.namespace.as_deref(),
            database.metadata.name.as_deref(),
        ) else {
            return false;
        };
        self.databases
            .get(&ObjectRef::new(name).within(namespace))
            .is_some_and(|cached| {
                cached.spec == database.spec
                    && (database.metadata.uid.is_none()
                        || cached.metadata.uid == database.metadata.uid)
            })
    }

    async fn mark_synced(&self) {
        let all = futures::future::try_join(
            futures::future::try_join5(
                self.capabilities.wait_until_ready(),
                self.quotas.wait_until_ready(),
                self.workspaces.wait_until_ready(),
                self.claims.wait_until_ready(),
                self.clusters.wait_until_ready(),
            ),
            self.databases.wait_until_ready(),
        );
        if all.await.is_ok() {
            self.synced.store(true, Ordering::Release);
            info!(
                "caches synced: Capabilities, Quotas, Workspaces, claims, ClusterRegistrations and GuildDatabases are listed"
            );
        }
    }
}

/// Keeps `writer`'s store equal to the objects of `api`. Managed fields are dropped: they
/// are most of an object's size and no decision reads them.
async fn reflect<K>(api: Api<K>, config: watcher::Config, writer: reflector::store::Writer<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(api, config)
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
        .for_each(|event| async move {
            if let Err(error) = event {
                guildnet_runtime::watch::log_error(&K::kind(&()), &error);
            }
        })
        .await;
}
