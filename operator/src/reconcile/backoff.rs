//! Per-object retry delays: 100 ms doubling on every consecutive failure, capped, reset by a
//! success. Kept per object so one failing object never slows the others.

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

/// The first retry's delay.
const FIRST: Duration = Duration::from_millis(100);

/// Consecutive failures per object.
pub struct Backoff<K: Resource>
where
    K::DynamicType: Eq + Hash,
{
    failures: Mutex<HashMap<ObjectRef<K>, u32>>,
    max: Duration,
}

impl<K: Resource> Backoff<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Delays double up to `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            failures: Mutex::default(),
            max,
        }
    }

    /// Counts a failure of `obj` and returns how long to wait before retrying it.
    pub fn failed(&self, obj: ObjectRef<K>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(obj).or_insert(0);
        *count = count.saturating_add(1);
        FIRST
            .saturating_mul(1 << (*count - 1).min(16))
            .min(self.max)
    }

    /// `obj` succeeded: its next failure starts from the first delay again.
    pub fn succeeded(&self, obj: &ObjectRef<K>) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(obj);
    }

    /// Forgets every object (a new leadership term starts afresh).
    pub fn clear(&self) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn delays_double_per_object_up_to_the_cap_and_reset_on_success() {
        let backoff = Backoff::<ConfigMap>::new(Duration::from_secs(2));
        let a = ObjectRef::new("a").within("ns");
        let b = ObjectRef::new("b").within("ns");
        let delays: Vec<u128> = (0..7)
            .map(|_| backoff.failed(a.clone()).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff.failed(b.clone()), Duration::from_millis(100));
        backoff.succeeded(&a);
        assert_eq!(backoff.failed(a.clone()), Duration::from_millis(100));
        backoff.clear();
        assert_eq!(backoff.failed(b), Duration::from_millis(100));
    }
}
