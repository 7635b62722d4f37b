//! Leader election through a `coordination.k8s.io` Lease. kube-lease-manager takes, renews
//! and releases the lease; this module decides when this replica may write, which is
//! stricter than "the lease manager says we hold it":
//!
//! - A leader writes only for [`Timing::write_window`] after the last renewal the API server
//!   confirmed (seen on a watch of the Lease). When renewals fail, it stops writing
//!   [`Timing::stop_margin`] before a standby may take the expired lease, so two replicas
//!   never write at once even with some clock skew and requests still in flight.
//! - A standby normally learns that a lease is free only when it expires. The same watch
//!   shows a release at once, and a fresh lease manager takes the lease within a few
//!   requests: a planned handover (SIGTERM) takes milliseconds, not a lease duration.

use crate::metrics::Metrics;
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseParams};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

/// Why leader election cannot be configured as asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--lease-duration` given is shorter than [`Timing::MIN`] (3s).
    #[error(
        "--lease-duration {0:?} is too short: use at least 3s (a leader renews every quarter of it and stops writing well before it ends)"
    )]
    LeaseTooShort(Duration),
}

/// The first wait before retrying a failed lease request.
const RETRY: Duration = Duration::from_millis(250);

/// The lease's timing, all derived from its duration. kube-lease-manager counts whole
/// seconds, so the duration is rounded up to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    duration_secs: u64,
}

impl Timing {
    /// The shortest lease that leaves a renewal attempt and a safety margin inside it.
    pub const MIN: Duration = Duration::from_secs(3);

    /// The timing of a `duration` lease (`--lease-duration`), rounded up to whole seconds.
    pub fn new(duration: Duration) -> Result<Self, Error> {
        let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        if secs < Self::MIN.as_secs() {
            return Err(Error::LeaseTooShort(duration));
        }
        Ok(Self {
            duration_secs: secs,
        })
    }

    /// The lease duration: how long after the last renewal a standby may take the lease.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }

    /// How often the leader renews: every quarter of the lease, at least every second.
    pub fn renew_every(&self) -> Duration {
        Duration::from_secs((self.duration_secs / 4).max(1))
    }

    /// kube-lease-manager's grace: how long before the lease ends the holder renews.
    fn grace_secs(&self) -> u64 {
        self.duration_secs - self.renew_every().as_secs()
    }

    /// How long after its last confirmed renewal the leader keeps writing: the lease less
    /// the stop margin, which leaves room for two or more renewals (a slow API server delays
    /// them) before the leader stands down.
    pub fn write_window(&self) -> Duration {
        self.duration() - self.stop_margin()
    }

    /// How long a leader whose renewals fail stops writing before a standby may take over:
    /// a quarter of the lease, at least a second, for clock skew and requests still in
    /// flight.
    pub fn stop_margin(&self) -> Duration {
        (self.duration() / 4).max(Duration::from_secs(1))
    }

    /// The wait before retry number `failures` of a failed lease request: doubling from
    /// 250 ms, but never longer than a renewal interval, so a leader gets several tries
    /// inside its write window.
    fn retry_after(&self, failures: u32) -> Duration {
        let doubled = RETRY.saturating_mul(1 << failures.saturating_sub(1).min(8));
        doubled.min(self.renew_every())
    }
}

/// Where the lease is and who this replica is.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Lease the replicas compete for (`--lease-name`, default `guildnet-operator`).
    pub lease_name: String,
    /// The Lease's namespace (`--lease-namespace`; in a pod, its own namespace).
    pub namespace: String,
    /// Unique among the replicas: the pod name, or host name and process id.
    pub identity: String,
    /// Lease duration, renewal interval and stop margin, from `--lease-duration` (default 12s).
    pub timing: Timing,
}

/// The Lease as this replica last saw it on the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    exists: bool,
    holder: Option<String>,
    renewed: Option<Timestamp>,
}

impl Seen {
    fn of(lease: Option<&Lease>) -> Self {
        let spec = lease.and_then(|l| l.spec.as_ref());
        Self {
            exists: lease.is_some(),
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renewed: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
        }
    }

    /// Whether going from `self` to `next` freed a lease someone else held (released on
    /// shutdown, or deleted): worth a fresh attempt rather than waiting for it to expire.
    fn freed(&self, next: &Seen, identity: &str) -> bool {
        let held_by_other = self.holder.as_deref().is_some_and(|h| h != identity);
        (self.exists && !next.exists) || (held_by_other && next.holder.is_none())
    }
}

/// Whether this replica may write, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Standing {
    /// It may write until this instant.
    Leading {
        until: Timestamp,
    },
    Following {
        why: String,
    },
}

/// The decision: write only while the lease manager holds the lease, the API server shows
/// this replica as its holder, and the last renewal is at most a write window old.
fn standing(identity: &str, holds: bool, seen: &Seen, timing: Timing, now: Timestamp) -> Standing {
    let follow = |why: String| Standing::Following { why };
    match (&seen.holder, seen.renewed) {
        (Some(holder), _) if holder != identity => follow(format!("the lease is held by {holder}")),
        (None, _) => follow("the lease is free".into()),
        _ if !holds => follow("the lease is not confirmed yet".into()),
        (_, None) => follow("the lease has no renewal time".into()),
        (_, Some(renewed)) => {
            let until = renewed + timing.write_window();
            if now < until {
                Standing::Leading { until }
            } else {
                follow(format!(
                    "the lease was last renewed {}s ago",
                    now.duration_since(renewed).as_secs()
                ))
            }
        }
    }
}

/// Runs the election in the background; see [`Elector::leading`].
pub struct Elector {
    leading: watch::Receiver<bool>,
    release: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Elector {
    /// Starts campaigning for the lease; this replica leads once it holds it. Give it a
    /// `client` of its own (its own request queue and connection pool): on a client shared
    /// with the reconciles, renewals and the Lease watch wait behind a reconcile burst.
    pub fn start(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let (leading_tx, leading) = watch::channel(false);
        let (release, release_rx) = oneshot::channel();
        let campaign = Campaign {
            client,
            settings,
            metrics,
            leading: leading_tx,
        };
        let task = tokio::spawn(campaign.run(release_rx));
        Self {
            leading,
            release,
            task,
        }
    }

    /// `true` while this replica may write.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops renewing and releases the lease if this replica holds it, so a standby takes
    /// over at once. Call it after the last write.
    pub async fn release(self) {
        let _ = self.release.send(());
        if let Err(e) = self.task.await {
            warn!(error = %e, "the leader election task failed");
        }
    }
}

/// What ended one lease manager's run.
enum Outcome {
    /// The lease was freed by someone else: try again with a fresh manager at once.
    Freed,
    /// Release was asked for and done.
    Released,
}

/// A pending `LeaseManager::changed`: resolves when this replica takes or loses the lease.
type Changed<'a> = Pin<Box<dyn Future<Output = kube_lease_manager::Result<bool>> + Send + 'a>>;

/// The background task behind an [`Elector`].
struct Campaign {
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    leading: watch::Sender<bool>,
}

impl Campaign {
    /// Campaigns until release is asked for, with a fresh lease manager each time the
    /// lease is freed by someone else.
    async fn run(self, mut release: oneshot::Receiver<()>) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let mut lease =
            pin!(watcher::watch_object(api, &self.settings.lease_name).default_backoff());
        let mut seen = Seen::default();
        info!(
            lease = %self.settings.lease_name,
            namespace = %self.settings.namespace,
            identity = %self.settings.identity,
            duration = ?self.settings.timing.duration(),
            "campaigning for leadership"
        );
        loop {
            let manager = tokio::select! {
                biased;
                _ = &mut release => return,
                manager = self.manager() => manager,
            };
            match self
                .hold(&manager, &mut seen, &mut lease, &mut release)
                .await
            {
                Outcome::Freed => continue,
                Outcome::Released => return,
            }
        }
    }

    /// A lease manager for this replica, retrying until the API server answers (it creates
    /// the Lease when missing).
    async fn manager(&self) -> LeaseManager {
        let timing = self.settings.timing;
        let params = LeaseParams::new(
            self.settings.identity.clone(),
            timing.duration_secs,
            timing.grace_secs(),
        );
        let mut failures = 0;
        loop {
            let built = LeaseManagerBuilder::new(self.client.clone(), &self.settings.lease_name)
                .with_namespace(&self.settings.namespace)
                .with_parameters(params.clone())
                .build()
                .await;
            match built {
                Ok(manager) => return manager,
                Err(e) => {
                    failures += 1;
                    let wait = timing.retry_after(failures);
                    warn!(error = %e, retry_in = ?wait, "cannot read the leader lease; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Takes and renews the lease with `manager`, publishing whether this replica may write,
    /// until the lease is freed by someone else or release is asked for.
    async fn hold(
        &self,
        manager: &LeaseManager,
        seen: &mut Seen,
        lease: &mut (impl Stream<Item = Result<Option<Lease>, watcher::Error>> + Unpin),
        release: &mut oneshot::Receiver<()>,
    ) -> Outcome {
        let mut holds = false;
        let mut failures = 0;
        let mut changed: Changed = Box::pin(manager.changed());
        let outcome = loop {
            let standing = standing(
                &self.settings.identity,
                holds,
                seen,
                self.settings.timing,
                Timestamp::now(),
            );
            let until = self.publish(&standing);
            tokio::select! {
                biased;
                _ = &mut *release => break Outcome::Released,
                held = &mut changed => {
                    changed = match held {
                        Ok(held) => {
                            holds = held;
                            failures = 0;
                            Box::pin(manager.changed())
                        }
                        Err(e) => {
                            failures += 1;
                            let wait = self.settings.timing.retry_after(failures);
                            warn!(error = %e, retry_in = ?wait, "lease request failed; retrying");
                            Box::pin(async move {
                                tokio::time::sleep(wait).await;
                                manager.changed().await
                            })
                        }
                    };
                }
                Some(event) = lease.next() => match event {
                    Ok(object) => {
                        let next = Seen::of(object.as_ref());
                        debug!(holder = ?next.holder, renewed = ?next.renewed, "lease seen");
                        let freed = !holds && seen.freed(&next, &self.settings.identity);
                        *seen = next;
                        if freed {
                            break Outcome::Freed;
                        }
                    }
                    Err(e) => guildnet_runtime::watch::log_error("leader lease", &e),
                },
                // The write window ends: look again.
                _ = sleep_until(until) => {}
            }
        };
        // The manager's pending request holds its state lock; release needs it.
        drop(changed);
        if matches!(outcome, Outcome::Released) {
            self.publish(&Standing::Following {
                why: "shutting down".into(),
            });
            match manager.release().await {
                Ok(()) if holds => {
                    info!(lease = %self.settings.lease_name, "released the leader lease")
                }
                Ok(()) => {}
                Err(e) => {
                    warn!(error = %e, "could not release the leader lease; it expires on its own")
                }
            }
        }
        outcome
    }

    /// Publishes `standing` to [`Elector::leading`] and the `guildnet_leader` metric, logging
    /// each change. Returns until when a leader may write.
    fn publish(&self, standing: &Standing) -> Option<Timestamp> {
        let (leading, until) = match standing {
            Standing::Leading { until } => (true, Some(*until)),
            Standing::Following { .. } => (false, None),
        };
        if *self.leading.borrow() == leading {
            return until;
        }
        // Logged before anyone acts on it, so the log reads in order.
        let identity = &self.settings.identity;
        match standing {
            Standing::Leading { .. } => info!(%identity, "acquired leadership"),
            Standing::Following { why } => info!(%identity, %why, "lost leadership"),
        }
        self.metrics.set_leader(leading);
        self.leading.send_replace(leading);
        until
    }
}

/// Sleeps until `until`, or forever when there is no such instant.
async fn sleep_until(until: Option<Timestamp>) {
    match until {
        Some(until) => {
            let left = until.duration_since(Timestamp::now());
            tokio::time::sleep(Duration::try_from(left).unwrap_or_default()).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn seen(holder: Option<&str>, renewed: i64) -> Seen {
        Seen {
            exists: true,
            holder: holder.map(str::to_owned),
            renewed: Some(at(renewed)),
        }
    }

    #[test]
    fn timing_renews_early_and_stops_writing_well_before_expiry() {
        let t = Timing::new(Duration::from_secs(4)).unwrap();
        assert_eq!(t.renew_every(), Duration::from_secs(1));
        assert_eq!(t.grace_secs(), 3);
        assert_eq!(t.write_window(), Duration::from_secs(3));
        assert_eq!(t.stop_margin(), Duration::from_secs(1));
        // The default: renewals every 3s, writes for 9s after the last one (Kubernetes' renew
        // deadline is 10s), a standby takes over 12s after it.
        let t = Timing::new(Duration::from_secs(12)).unwrap();
        assert_eq!(t.renew_every(), Duration::from_secs(3));
        assert_eq!(t.grace_secs(), 9);
        assert_eq!(t.write_window(), Duration::from_secs(9));
        assert_eq!(t.stop_margin(), Duration::from_secs(3));
        let t = Timing::new(Duration::from_secs(15)).unwrap();
        assert_eq!(t.renew_every(), Duration::from_secs(3));
        assert_eq!(t.grace_secs(), 12);
        assert_eq!(t.write_window(), Duration::from_millis(11_250));
        // Two or more renewals are due inside the write window, for every duration allowed.
        for secs in 3..120 {
            let t = Timing::new(Duration::from_secs(secs)).unwrap();
            assert!(t.renew_every() * 2 <= t.write_window(), "{secs}s");
            assert!(t.stop_margin() >= Duration::from_secs(1), "{secs}s");
            assert!(t.grace_secs() >= 1 && t.grace_secs() < secs, "{secs}s");
        }
    }

    #[test]
    fn retries_back_off_up_to_a_renewal_interval() {
        let t = Timing::new(Duration::from_secs(15)).unwrap();
        let waits: Vec<u128> = (1..=6).map(|n| t.retry_after(n).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1_000, 2_000, 3_000, 3_000]);
        let t = Timing::new(Duration::from_secs(4)).unwrap();
        assert_eq!(t.retry_after(40), Duration::from_secs(1));
    }

    #[test]
    fn timing_rounds_up_to_whole_seconds_and_refuses_short_leases() {
        assert_eq!(
            Timing::new(Duration::from_millis(3_200))
                .unwrap()
                .duration(),
            Duration::from_secs(4)
        );
        assert!(Timing::new(Duration::from_millis(2_999)).is_ok());
        assert!(Timing::new(Duration::from_secs(2)).is_err());
    }

    #[test]
    fn a_confirmed_holder_leads_until_its_write_window_ends() {
        let t = Timing::new(Duration::from_secs(4)).unwrap();
        let renewed = seen(Some("a"), 100);
        assert_eq!(
            standing("a", true, &renewed, t, at(101)),
            Standing::Leading {
                until: at(100) + Duration::from_secs(3)
            }
        );
        assert!(matches!(
            standing("a", true, &renewed, t, at(103)),
            Standing::Following { why } if why.contains("renewed 3s ago")
        ));
    }

    #[test]
    fn nobody_leads_without_both_the_manager_and_the_api_server_agreeing() {
        let t = Timing::new(Duration::from_secs(4)).unwrap();
        let now = at(100);
        let cases = [
            (
                "manager holds, server shows another",
                true,
                seen(Some("b"), 100),
            ),
            ("manager holds, server shows it free", true, seen(None, 100)),
            (
                "server shows us, manager not yet",
                false,
                seen(Some("a"), 100),
            ),
            ("nothing seen yet", true, Seen::default()),
        ];
        for (what, holds, seen) in cases {
            assert!(
                matches!(
                    standing("a", holds, &seen, t, now),
                    Standing::Following { .. }
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn a_release_or_deletion_by_another_frees_the_lease() {
        let held_by_b = seen(Some("b"), 100);
        let released = seen(None, 100);
        assert!(held_by_b.freed(&released, "a"));
        assert!(held_by_b.freed(&Seen::default(), "a"));
        // Our own release, a renewal, a takeover, or the first sight of the lease: no.
        assert!(!seen(Some("a"), 100).freed(&released, "a"));
        assert!(!held_by_b.freed(&seen(Some("b"), 101), "a"));
        assert!(!held_by_b.freed(&seen(Some("c"), 101), "a"));
        assert!(!Seen::default().freed(&released, "a"));
    }
}
