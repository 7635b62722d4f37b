//! When each workspace was last used. Requests and WebSocket traffic mark it in memory (an
//! atomic store); a writer puts it into `status.lastAccessTime` at most once per interval
//! per workspace, so the operator's idle reaper works from real use at a bounded write rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use guildnet_api::workspace::Workspace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};

/// The proxy's field manager: it owns `status.lastAccessTime` and nothing else.
pub const FIELD_MANAGER: &str = "guildnet-proxy";

/// Milliseconds since the epoch of the last use; 0 = never.
pub type LastUse = Arc<AtomicI64>;

#[derive(Clone, Default)]
pub struct Activity {
    seen: Arc<Mutex<HashMap<(String, String), LastUse>>>,
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Activity {
    /// Marks a use of `namespace/name` now and returns its cell, which long-lived
    /// connections keep marking without the map lock.
    pub fn touch(&self, namespace: &str, name: &str) -> LastUse {
        let cell = self
            .seen
            .lock()
            .unwrap()
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default()
            .clone();
        cell.store(now_millis(), Ordering::Relaxed);
        cell
    }

    fn snapshot(&self) -> Vec<((String, String), i64)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(key, cell)| (key.clone(), cell.load(Ordering::Relaxed)))
            .collect()
    }

    fn forget(&self, key: &(String, String)) {
        self.seen.lock().unwrap().remove(key);
    }

    /// Every `interval`, writes the last use of each workspace used since its status last
    /// said so. Workspaces that no longer exist are forgotten.
    pub async fn write_every(
        self,
        client: kube::Client,
        workspaces: Store<Workspace>,
        interval: Duration,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            for (key, used) in self.snapshot() {
                let Some(ws) = workspaces.get(&ObjectRef::new(&key.1).within(&key.0)) else {
                    self.forget(&key);
                    continue;
                };
                if !needs_write(recorded_millis(&ws), used) {
                    continue;
                }
                if let Err(error) = write(&client, &key.0, &key.1, used).await {
                    tracing::warn!(%error, namespace = key.0, name = key.1, "writing lastAccessTime");
                }
            }
        }
    }
}

fn recorded_millis(ws: &Workspace) -> Option<i64> {
    ws.status
        .as_ref()?
        .last_access_time
        .as_ref()
        .map(|t| t.0.as_millisecond())
}

/// Whether a use at `used` (ms) is news to a status that says `recorded`: newer by at
/// least a second (the API's timestamps have second precision), and never backwards (two
/// replicas each write what they saw).
fn needs_write(recorded: Option<i64>, used: i64) -> bool {
    used > 0 && recorded.is_none_or(|recorded| used >= recorded + 1000)
}

async fn write(client: &kube::Client, namespace: &str, name: &str, used: i64) -> kube::Result<()> {
    let at = jiff::Timestamp::from_millisecond(used).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let body = serde_json::json!({
        "apiVersion": Workspace::api_version(&()),
        "kind": Workspace::kind(&()),
        "metadata": {"name": name},
        "status": {"lastAccessTime": Time(at)},
    });
    Api::<Workspace>::namespaced(client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_move_forward_by_at_least_a_second() {
        assert!(needs_write(None, 5_000));
        assert!(!needs_write(None, 0));
        assert!(needs_write(Some(4_000), 5_000));
        assert!(!needs_write(Some(4_500), 5_000));
        assert!(!needs_write(Some(9_000), 5_000));
    }

    #[test]
    fn touching_records_now_and_shares_the_cell() {
        let activity = Activity::default();
        let before = now_millis();
        let cell = activity.touch("team", "ide");
        assert!(cell.load(Ordering::Relaxed) >= before);
        cell.store(1, Ordering::Relaxed);
        assert_eq!(
            activity.snapshot(),
            vec![(("team".into(), "ide".into()), 1)]
        );
        activity.touch("team", "ide");
        assert!(cell.load(Ordering::Relaxed) >= before);
    }
}
