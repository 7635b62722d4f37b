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

/// A workspace in use: where it is and when it was last used.
struct Used {
    namespace: String,
    name: String,
    last_use: LastUse,
}

/// Keyed by the workspace's uid: no allocation per request, and a workspace deleted and
/// made again under its name starts afresh.
#[derive(Clone, Default)]
pub struct Activity {
    seen: Arc<Mutex<HashMap<String, Used>>>,
}

/// Now, in milliseconds since the epoch: the unit of [`LastUse`].
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Activity {
    /// Marks a use of `workspace` now and returns its cell, which long-lived connections
    /// keep marking without the map lock.
    pub fn touch(&self, workspace: &Workspace) -> LastUse {
        let uid = workspace.metadata.uid.as_deref().unwrap_or_default();
        let mut seen = self.seen.lock().unwrap();
        let cell = match seen.get(uid) {
            Some(used) => used.last_use.clone(),
            None => {
                let last_use = LastUse::default();
                seen.insert(
                    uid.to_owned(),
                    Used {
                        namespace: workspace.metadata.namespace.clone().unwrap_or_default(),
                        name: workspace.metadata.name.clone().unwrap_or_default(),
                        last_use: last_use.clone(),
                    },
                );
                last_use
            }
        };
        cell.store(now_millis(), Ordering::Relaxed);
        cell
    }

    /// (uid, namespace, name, last use) of every workspace used.
    fn snapshot(&self) -> Vec<(String, String, String, i64)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(uid, used)| {
                let at = used.last_use.load(Ordering::Relaxed);
                (uid.clone(), used.namespace.clone(), used.name.clone(), at)
            })
            .collect()
    }

    fn forget(&self, uid: &str) {
        self.seen.lock().unwrap().remove(uid);
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
            for (uid, namespace, name, used) in self.snapshot() {
                let current = workspaces.get(&ObjectRef::new(&name).within(&namespace));
                let Some(ws) =
                    current.filter(|ws| ws.metadata.uid.as_deref() == Some(uid.as_str()))
                else {
                    self.forget(&uid);
                    continue;
                };
                if !needs_write(recorded_millis(&ws), used) {
                    continue;
                }
                if let Err(error) = write(&client, &namespace, &name, used).await {
                    tracing::warn!(%error, namespace, name, "writing lastAccessTime");
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
        let mut ws = Workspace::new("ide", Default::default());
        ws.metadata.namespace = Some("team".into());
        ws.metadata.uid = Some("uid-1".into());
        let before = now_millis();
        let cell = activity.touch(&ws);
        assert!(cell.load(Ordering::Relaxed) >= before);
        cell.store(1, Ordering::Relaxed);
        assert_eq!(
            activity.snapshot(),
            vec![("uid-1".into(), "team".into(), "ide".into(), 1)]
        );
        activity.touch(&ws);
        assert!(cell.load(Ordering::Relaxed) >= before);
    }
}
