//! Quota status: every Quota's `status.usage` (each owner it applies to, with what they
//! use as it counts it: workspaces, retained claims, GuildDatabases), `ownerCount` and an `Exceeded` condition, kept current by the
//! leader. It is recomputed from the watch caches (no LIST per write) once a burst of
//! changes has settled, and at least every 30 s, and written only when it changed.

pub mod status;

use crate::cluster::remote::Remotes;
use crate::reconcile::apply::apply_status;
use futures::FutureExt;
use guildnet_api::{GuildDatabase, Quota, Workspace};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// How long changes may keep coming before the statuses are recomputed once for all.
const SETTLE: Duration = Duration::from_secs(1);

/// The longest a status goes unchecked (a Quota with no workspace sends no change).
const RECHECK: Duration = Duration::from_secs(30);

/// What the Quota status writer reads and writes with.
pub struct StatusWriter {
    /// The operator's client.
    pub client: Client,
    /// The caches it counts from.
    pub quotas: Store<Quota>,
    /// Every Workspace.
    pub workspaces: Store<Workspace>,
    /// GuildNet's claims: retained ones count for their owner.
    pub claims: Store<PersistentVolumeClaim>,
    /// GuildDatabases: their servers' volumes count as their owner's storage.
    pub databases: Store<GuildDatabase>,
    /// The registered clusters, whose retained claims count too.
    pub remotes: Arc<Remotes>,
    /// Only Quotas here may count cluster-wide.
    pub system_namespace: String,
}

impl StatusWriter {
    /// Keeps the statuses current while it runs: after each settled burst of `changes`
    /// (workspaces, their children and claims, Quotas), and every 30 s.
    pub async fn run(self, changes: Arc<Notify>) {
        let mut recheck = tokio::time::interval(RECHECK);
        loop {
            tokio::select! {
                _ = changes.notified() => {
                    tokio::time::sleep(SETTLE).await;
                    // What changed while settling is counted by this write.
                    let _ = changes.notified().now_or_never();
                }
                _ = recheck.tick() => {}
            }
            self.write_all().await;
        }
    }

    async fn write_all(&self) {
        let quotas = self.quotas.state();
        if quotas.is_empty() {
            return;
        }
        let workspaces = self.workspaces.state();
        let workspaces: Vec<&Workspace> = workspaces.iter().map(|w| w.as_ref()).collect();
        let mut claims = self.claims.state();
        claims.extend(self.remotes.claims_in_hub_terms(|_| true));
        let claims: Vec<&PersistentVolumeClaim> = claims.iter().map(|c| c.as_ref()).collect();
        let databases = self.databases.state();
        let databases: Vec<&GuildDatabase> = databases.iter().map(|d| d.as_ref()).collect();
        for quota in &quotas {
            let status = status::compute(
                quota,
                &workspaces,
                &claims,
                &databases,
                &self.system_namespace,
                Timestamp::now(),
            );
            if quota.status.as_ref() == Some(&status) {
                continue;
            }
            if let Err(e) = self.write(quota, status).await {
                warn!(quota = %ObjectRef::from_obj(&**quota), error = %e, "could not write the Quota's status");
            }
        }
    }

    async fn write(
        &self,
        quota: &Quota,
        status: guildnet_api::quota::QuotaStatus,
    ) -> kube::Result<()> {
        let namespace = quota.namespace().unwrap_or_default();
        let api: Api<Quota> = Api::namespaced(self.client.clone(), &namespace);
        apply_status(&api, &quota.name_any(), &status).await?;
        debug!(
            namespace,
            quota = quota.name_any(),
            "wrote the Quota's status"
        );
        Ok(())
    }
}
