//! Small maps whose entries expire, for decisions the API server made (TokenReview,
//! SubjectAccessReview): reused briefly, then asked again so revocations take effect.
//!
//! Acceptances and refusals are kept apart ([`Verdicts`]): anyone can make the proxy refuse
//! something (a random token, a workspace that does not exist), so refusals must never push
//! out what was accepted.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many entries in a [`TtlCache::new`]; a full cache first drops expired
/// ones, then everything.
const MAX_ENTRIES: usize = 10_000;

/// Values that expire `ttl` after they are inserted; at most a fixed number at a time
/// (10 000 unless [`TtlCache::with_capacity`] says otherwise).
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// An empty cache whose entries last `ttl`, holding at most 10 000.
    pub fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, MAX_ENTRIES)
    }

    /// An empty cache whose entries last `ttl`, holding at most `capacity` (at least one).
    pub fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long an entry lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The value for `key`, unless it is missing or has expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap();
        let (value, at) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Keeps `value` for `key` from now on, replacing any older one.
    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (value, Instant::now()));
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &K) {
        self.entries.lock().unwrap().remove(key);
    }

    /// How many entries are held, expired ones included.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the API server said about each question, acceptances (with their value) and
/// refusals held apart, each for `ttl`: refusals in a cache of their own, bounded by
/// `max_refusals`, so however many refusals arrive, no accepted answer is pushed out.
pub struct Verdicts<K, V> {
    accepted: TtlCache<K, V>,
    refused: TtlCache<K, ()>,
}

/// A remembered answer: accepted with its value, or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<V> {
    /// Accepted; what was learnt (an identity, or nothing for a yes).
    Accepted(V),
    /// Refused.
    Refused,
}

impl<K: Eq + Hash, V: Clone> Verdicts<K, V> {
    /// Empty; answers last `ttl`, at most 10 000 acceptances and `max_refusals` refusals.
    pub fn new(ttl: Duration, max_refusals: usize) -> Self {
        Self {
            accepted: TtlCache::new(ttl),
            refused: TtlCache::with_capacity(ttl, max_refusals),
        }
    }

    /// How long an answer lasts.
    pub fn ttl(&self) -> Duration {
        self.accepted.ttl()
    }

    /// The remembered answer for `key`, unless none is or it has expired.
    pub fn get(&self, key: &K) -> Option<Verdict<V>> {
        if let Some(value) = self.accepted.get(key) {
            return Some(Verdict::Accepted(value));
        }
        self.refused.get(key).map(|()| Verdict::Refused)
    }

    /// Remembers that `key` was accepted with `value` (forgetting any refusal).
    pub fn accept(&self, key: K, value: V) {
        self.refused.remove(&key);
        self.accepted.insert(key, value);
    }

    /// Remembers that `key` was refused (forgetting any acceptance: the newer answer wins).
    pub fn refuse(&self, key: K) {
        self.accepted.remove(&key);
        self.refused.insert(key, ());
    }

    /// Whether `key` was accepted, and not long ago.
    pub fn is_accepted(&self, key: &K) -> bool {
        self.accepted.get(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let cache = TtlCache::new(Duration::from_millis(0));
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), None);
        let cache = TtlCache::new(Duration::from_secs(60));
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"b"), None);
    }

    #[test]
    fn refusals_never_push_out_acceptances() {
        let verdicts = Verdicts::new(Duration::from_secs(60), 100);
        verdicts.accept(0_u32, "alice");
        for refused in 1..=10 * MAX_ENTRIES as u32 {
            verdicts.refuse(refused);
        }
        assert_eq!(verdicts.get(&0), Some(Verdict::Accepted("alice")));
        // Refusals stay within their own bound.
        assert!(verdicts.refused.len() <= 100);
        assert_eq!(
            verdicts.get(&(10 * MAX_ENTRIES as u32)),
            Some(Verdict::Refused)
        );
    }

    #[test]
    fn the_newer_answer_wins() {
        let verdicts = Verdicts::new(Duration::from_secs(60), 100);
        verdicts.accept("q", ());
        verdicts.refuse("q");
        assert_eq!(verdicts.get(&"q"), Some(Verdict::Refused));
        verdicts.accept("q", ());
        assert_eq!(verdicts.get(&"q"), Some(Verdict::Accepted(())));
        assert!(verdicts.is_accepted(&"q"));
    }
}
