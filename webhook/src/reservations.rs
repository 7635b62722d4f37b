//! Quota reservations: workspaces and GuildDatabases this webhook admitted that its cache
//! has not seen yet.
//!
//! The Workspace cache follows a watch, so it lags admissions by the watch latency: twenty
//! creates arriving at once would all see the same usage and all pass, and so would twenty
//! updates that each grow one of an owner's workspaces. Each admitted create or spec change
//! is therefore remembered until the cache shows it (that name with that spec), and counted
//! instead of the cached version. A
//! reservation also ends after a time to live, for creates that failed after admission
//! (another webhook refused them, the name was taken). With decide-and-reserve serialised
//! (the server holds a lock across both), one replica admits exactly up to a limit; across
//! replicas the operator enforces Quotas too.

use guildnet_api::{GuildDatabase, Workspace};
use kube::Resource;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Admitted objects of one kind not yet in the cache, by namespace and name.
#[derive(Debug)]
struct Pending<K> {
    by_name: HashMap<(String, String), (Instant, Arc<K>)>,
}

impl<K: Resource> Pending<K> {
    fn new() -> Self {
        Self {
            by_name: HashMap::new(),
        }
    }

    fn list(&mut self, now: Instant, ttl: Duration, cached: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.by_name
            .retain(|_, (since, object)| now.duration_since(*since) < ttl && !cached(object));
        self.by_name
            .values()
            .map(|(_, object)| Arc::clone(object))
            .collect()
    }

    fn insert(&mut self, now: Instant, object: K) {
        let meta = object.meta();
        let (Some(namespace), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
            return;
        };
        self.by_name
            .insert((namespace, name), (now, Arc::new(object)));
    }
}

/// Admitted workspaces and GuildDatabases not yet in the cache.
#[derive(Debug)]
pub struct Reservations {
    ttl: Duration,
    workspaces: Pending<Workspace>,
    databases: Pending<GuildDatabase>,
}

impl Reservations {
    /// No reservations; each will last at most `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            workspaces: Pending::new(),
            databases: Pending::new(),
        }
    }

    /// Forgets the reservations the cache now shows (`cached(workspace)`: that name with
    /// that spec) and those older than the time to live, and returns the rest.
    pub fn pending(
        &mut self,
        now: Instant,
        cached: impl Fn(&Workspace) -> bool,
    ) -> Vec<Arc<Workspace>> {
        self.workspaces.list(now, self.ttl, cached)
    }

    /// Remembers an admitted workspace; one without a namespace or name cannot be told
    /// apart from others and is not remembered.
    pub fn reserve(&mut self, now: Instant, workspace: Workspace) {
        self.workspaces.insert(now, workspace);
    }

    /// Like [`Self::pending`], for GuildDatabases.
    pub fn pending_databases(
        &mut self,
        now: Instant,
        cached: impl Fn(&GuildDatabase) -> bool,
    ) -> Vec<Arc<GuildDatabase>> {
        self.databases.list(now, self.ttl, cached)
    }

    /// Like [`Self::reserve`], for an admitted GuildDatabase.
    pub fn reserve_database(&mut self, now: Instant, database: GuildDatabase) {
        self.databases.insert(now, database);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guildnet_api::WorkspaceSpec;

    fn workspace(namespace: &str, name: &str) -> Workspace {
        let mut ws = Workspace::new(name, WorkspaceSpec::default());
        ws.metadata.namespace = Some(namespace.to_owned());
        ws
    }

    fn names(pending: &[Arc<Workspace>]) -> Vec<String> {
        let mut names: Vec<String> = pending
            .iter()
            .map(|ws| ws.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn reservations_last_until_cached_or_expired() {
        let start = Instant::now();
        let mut reservations = Reservations::new(Duration::from_secs(30));
        reservations.reserve(start, workspace("a", "one"));
        reservations.reserve(start + Duration::from_secs(10), workspace("a", "two"));
        reservations.reserve(start, workspace("b", "one"));
        let nothing_cached = |_: &Workspace| false;
        assert_eq!(
            names(&reservations.pending(start, nothing_cached)),
            ["one", "one", "two"]
        );
        let a_one_cached = |ws: &Workspace| {
            (
                ws.metadata.namespace.as_deref(),
                ws.metadata.name.as_deref(),
            ) == (Some("a"), Some("one"))
        };
        assert_eq!(
            names(&reservations.pending(start, a_one_cached)),
            ["one", "two"]
        );
        let later = start + Duration::from_secs(31);
        assert_eq!(names(&reservations.pending(later, nothing_cached)), ["two"]);
        // Once forgotten, a reservation stays forgotten.
        assert_eq!(names(&reservations.pending(later, nothing_cached)), ["two"]);
    }

    #[test]
    fn a_nameless_workspace_is_not_reserved() {
        let mut reservations = Reservations::new(Duration::from_secs(30));
        reservations.reserve(Instant::now(), Workspace::new("", WorkspaceSpec::default()));
        let mut nameless = workspace("a", "x");
        nameless.metadata.name = None;
        reservations.reserve(Instant::now(), nameless);
        assert!(reservations.pending(Instant::now(), |_| false).is_empty());
    }
}
