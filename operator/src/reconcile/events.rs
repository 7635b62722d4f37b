//! Events about the objects a controller reconciles, published once per change.
//!
//! A reconcile may read a cache that does not show its own last status write yet, and so
//! see the same transition twice; [`Announced`] remembers what this process announced per
//! object (by uid) so it announces each change once. Decisions about *what* changed come
//! from the status before and after a write, so a new leader needs nothing from the last.

use super::FIELD_MANAGER;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::HashMap;
use tracing::{Instrument, info, warn};

/// The longest Event note the API server stores.
const MAX_NOTE_CHARS: usize = 1000;

/// Publishes Events as this replica (`reportingInstance`), so `kubectl events` tells
/// which replica acted.
pub struct Publisher {
    client: Client,
    reporter: Reporter,
}

impl Publisher {
    /// Publishes as `identity` (the replica's `--identity`), the Events' `reportingInstance`.
    pub fn new(client: Client, identity: &str) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.into()),
        };
        Self { client, reporter }
    }

    /// Publishes an Event on `object` and logs it (in the caller's span, which names the
    /// object). The write runs on its own task, so a reconcile does not wait a round trip
    /// for it; a failure is logged, never fatal: Events are informational.
    pub fn publish(&self, object: &ObjectReference, type_: EventType, reason: &str, note: &str) {
        info!(reason, note, "event");
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(MAX_NOTE_CHARS).collect()),
            action: reason.into(),
            secondary: None,
        };
        // A Recorder of its own per Event: a shared one keeps every Event it published for
        // six minutes, to count repeats as a series, which a burst of thousands of new
        // workspaces fills; these Events are published once per change (see [`Announced`]).
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let (object, reason) = (object.clone(), event.reason.clone());
        let publishing = async move {
            if let Err(e) = recorder.publish(&event, &object).await {
                warn!(error = %e, reason, "could not publish event");
            }
        };
        tokio::spawn(publishing.in_current_span());
    }
}

/// What this process last announced for each object, by uid: its creation, or the phase
/// `P` it entered.
#[derive(Debug)]
pub struct Announced<P>(HashMap<String, Milestone<P>>);

impl<P> Default for Announced<P> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Milestone<P> {
    Launched,
    Phase(P),
}

impl<P: Copy + Eq> Announced<P> {
    /// Whether to announce the launch of `uid`: only if nothing was announced for it yet.
    pub fn launch(&mut self, uid: &str) -> bool {
        if self.0.contains_key(uid) {
            return false;
        }
        self.0.insert(uid.to_owned(), Milestone::Launched);
        true
    }

    /// Whether to announce that `uid` entered `phase`: only if that is not what was
    /// announced last.
    pub fn phase(&mut self, uid: &str, phase: P) -> bool {
        self.0.insert(uid.to_owned(), Milestone::Phase(phase)) != Some(Milestone::Phase(phase))
    }

    /// Forgets the objects `exists` says are gone.
    pub fn retain(&mut self, exists: impl Fn(&str) -> bool) {
        self.0.retain(|uid, _| exists(uid));
    }

    /// Keeps only what the cache still shows, given each object's cached phase (`None`:
    /// gone; `Some(None)`: no status yet): a launch whose status has not appeared, a phase
    /// the object is still in. At the start of a leadership term this forgets what another
    /// leader may have changed since, and keeps the rest, so a replica that stood down and
    /// took over again does not announce its own launches twice.
    pub fn retain_agreeing(&mut self, cached: impl Fn(&str) -> Option<Option<P>>) {
        self.0
            .retain(|uid, milestone| match (milestone, cached(uid)) {
                (_, None) => false,
                (Milestone::Launched, Some(phase)) => phase.is_none(),
                (Milestone::Phase(announced), Some(phase)) => phase == Some(*announced),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guildnet_api::workspace::WorkspacePhase;

    #[test]
    fn each_milestone_is_announced_once_even_from_a_stale_cache() {
        let mut announced = Announced::default();
        assert!(announced.launch("u1"));
        assert!(
            !announced.launch("u1"),
            "a second reconcile before the status shows"
        );
        assert!(announced.phase("u1", WorkspacePhase::Running));
        assert!(
            !announced.phase("u1", WorkspacePhase::Running),
            "stale Pending in the cache"
        );
        assert!(!announced.launch("u1"));
        assert!(announced.phase("u1", WorkspacePhase::Failed));
        assert!(
            announced.phase("u1", WorkspacePhase::Running),
            "a real recovery"
        );
        announced.retain(|uid| uid != "u1");
        assert!(announced.launch("u1"), "forgotten once gone");
    }

    #[test]
    fn a_new_term_keeps_only_what_the_cache_still_shows() {
        let mut announced = Announced::default();
        announced.launch("launching");
        announced.launch("launched");
        announced.phase("running", WorkspacePhase::Running);
        announced.phase("changed", WorkspacePhase::Running);
        announced.launch("gone");
        announced.retain_agreeing(|uid| match uid {
            "launching" => Some(None),
            "launched" => Some(Some(WorkspacePhase::Pending)),
            "running" => Some(Some(WorkspacePhase::Running)),
            "changed" => Some(Some(WorkspacePhase::Failed)),
            _ => None,
        });
        assert!(!announced.launch("launching"), "still launching: kept");
        assert!(!announced.phase("running", WorkspacePhase::Running), "kept");
        assert!(
            announced.launch("launched"),
            "its status appeared: forgotten"
        );
        assert!(
            announced.phase("changed", WorkspacePhase::Running),
            "another leader moved it"
        );
        assert!(announced.launch("gone"));
    }
}
