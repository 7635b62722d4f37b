//! Whether a registered cluster is reachable, decided from its probes with hysteresis: a
//! reachable cluster becomes unreachable only after several failed probes in a row (or
//! failing for a while), and reachable again only after successes in a row, so a short blip
//! never flips its workspaces to Degraded and back.

use std::time::{Duration, Instant};

/// How often the cluster's API server is probed (`/readyz`).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// How long one probe may take before it counts as failed: a hung API server answers
/// nothing.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Failed probes in a row that make a reachable cluster unreachable.
pub const FAILURES_TO_UNREACHABLE: u32 = 3;

/// Failing for this long also makes it unreachable, however few probes there were.
pub const FAILING_FOR_UNREACHABLE: Duration = Duration::from_secs(30);

/// Successful probes in a row that make an unreachable cluster reachable again.
pub const SUCCESSES_TO_REACHABLE: u32 = 2;

/// What the probes say of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// Not decided yet: a new registration, not probed.
    Unknown,
    /// The API server answers.
    Reachable,
    /// It has not answered for long enough to count.
    Unreachable,
}

/// The probes of one cluster so far.
#[derive(Clone, Debug)]
pub struct Health {
    state: Reachability,
    failures: u32,
    failing_since: Option<Instant>,
    successes: u32,
}

impl Health {
    /// Starts from what the registration's status recorded (condition `Reachable`), so a
    /// restarted operator does not decide anew from its first probe.
    pub fn resume(recorded: Option<bool>) -> Self {
        let state = match recorded {
            Some(true) => Reachability::Reachable,
            Some(false) => Reachability::Unreachable,
            None => Reachability::Unknown,
        };
        Self {
            state,
            failures: 0,
            failing_since: None,
            successes: 0,
        }
    }

    /// What the probes so far say.
    pub fn state(&self) -> Reachability {
        self.state
    }

    /// Records a probe that ended at `now`; returns the new state when it changed.
    pub fn observe(&mut self, answered: bool, now: Instant) -> Option<Reachability> {
        let next = if answered {
            self.failures = 0;
            self.failing_since = None;
            self.successes += 1;
            match self.state {
                Reachability::Unreachable if self.successes < SUCCESSES_TO_REACHABLE => self.state,
                _ => Reachability::Reachable,
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            let since = *self.failing_since.get_or_insert(now);
            let long_enough = self.failures >= FAILURES_TO_UNREACHABLE
                || now.saturating_duration_since(since) >= FAILING_FOR_UNREACHABLE;
            match self.state {
                Reachability::Reachable if !long_enough => self.state,
                _ => Reachability::Unreachable,
            }
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }

    /// Since when probes have failed without a success between them, if they do.
    pub fn failing_since(&self) -> Option<Instant> {
        self.failing_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `probes` one `PROBE_INTERVAL` apart, returning the states after each.
    fn run(health: &mut Health, probes: &str) -> Vec<Reachability> {
        let start = Instant::now();
        probes
            .chars()
            .enumerate()
            .map(|(i, probe)| {
                health.observe(probe == '+', start + PROBE_INTERVAL * i as u32);
                health.state()
            })
            .collect()
    }

    use Reachability::{Reachable, Unknown, Unreachable};

    #[test]
    fn a_new_cluster_is_decided_by_its_first_probe() {
        assert_eq!(Health::resume(None).state(), Unknown);
        assert_eq!(run(&mut Health::resume(None), "+"), [Reachable]);
        assert_eq!(run(&mut Health::resume(None), "-"), [Unreachable]);
    }

    #[test]
    fn a_short_blip_does_not_make_a_reachable_cluster_unreachable() {
        let mut health = Health::resume(Some(true));
        assert_eq!(run(&mut health, "--+--+"), [Reachable; 6]);
    }

    #[test]
    fn three_failures_in_a_row_make_it_unreachable() {
        let mut health = Health::resume(Some(true));
        assert_eq!(run(&mut health, "---"), [Reachable, Reachable, Unreachable]);
    }

    #[test]
    fn failing_for_thirty_seconds_makes_it_unreachable_however_few_the_probes() {
        let mut health = Health::resume(Some(true));
        let start = Instant::now();
        assert_eq!(health.observe(false, start), None);
        assert_eq!(
            health.observe(false, start + FAILING_FOR_UNREACHABLE),
            Some(Unreachable)
        );
        assert_eq!(health.failing_since(), Some(start));
    }

    #[test]
    fn it_is_reachable_again_only_after_successes_in_a_row() {
        let mut health = Health::resume(Some(false));
        assert_eq!(
            run(&mut health, "+-+-++"),
            [
                Unreachable,
                Unreachable,
                Unreachable,
                Unreachable,
                Unreachable,
                Reachable
            ]
        );
        assert_eq!(health.failing_since(), None);
    }

    #[test]
    fn a_change_is_reported_once() {
        let mut health = Health::resume(Some(true));
        let start = Instant::now();
        let changes: Vec<_> = (0..6)
            .map(|i| health.observe(false, start + PROBE_INTERVAL * i))
            .collect();
        assert_eq!(changes, [None, None, Some(Unreachable), None, None, None]);
    }
}
