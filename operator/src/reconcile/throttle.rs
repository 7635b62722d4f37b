//! Coalescing bursts of changes without delaying the first. kube-runtime's `debounce`
//! holds every reconcile for its window, the first of a new object included; here the first
//! change of an object passes at once, and the changes that follow are merged into one that
//! passes once the object has been quiet for `window` (leading and trailing edge). An
//! object that never stops changing still passes at least every [`MAX_WAIT_WINDOWS`]
//! windows.

use futures::{Stream, StreamExt, stream};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

/// How many windows a change waits at most while its object keeps changing.
pub const MAX_WAIT_WINDOWS: u32 = 10;

/// The changes of `triggers`, each object's first at once and the rest merged until it has
/// been quiet for `window` (see the module documentation).
pub fn leading_edge<K>(
    triggers: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    window: Duration,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource + 'static,
    K::DynamicType: Hash + Eq + Clone + Send,
{
    let state = Throttle {
        triggers: Box::pin(triggers),
        triggers_done: false,
        window,
        open: HashMap::new(),
        closing: DelayQueue::new(),
        ready: VecDeque::new(),
    };
    stream::unfold(state, Throttle::next)
}

/// An object's open window: when it closes, and whether changes are waiting for that.
struct Window {
    key: Key,
    opened: Instant,
    pending: bool,
}

struct Throttle<K: Resource>
where
    K::DynamicType: Hash + Eq,
{
    triggers: Pin<Box<dyn Stream<Item = ObjectRef<K>> + Send>>,
    triggers_done: bool,
    window: Duration,
    open: HashMap<ObjectRef<K>, Window>,
    /// When each open window closes.
    closing: DelayQueue<ObjectRef<K>>,
    ready: VecDeque<ObjectRef<K>>,
}

impl<K: Resource> Throttle<K>
where
    K::DynamicType: Hash + Eq + Clone,
{
    async fn next(mut self) -> Option<(ObjectRef<K>, Self)> {
        loop {
            if let Some(object) = self.ready.pop_front() {
                return Some((object, self));
            }
            if self.triggers_done && self.closing.is_empty() {
                return None;
            }
            // Windows that have closed first: a change after them opens a new one.
            tokio::select! {
                biased;
                Some(expired) = std::future::poll_fn(|cx| self.closing.poll_expired(cx)), if !self.closing.is_empty() => {
                    self.window_closed(expired.into_inner());
                }
                trigger = self.triggers.next(), if !self.triggers_done => match trigger {
                    Some(object) => self.changed(object),
                    None => self.triggers_done = true,
                },
            }
        }
    }

    /// A change within an open window waits until the object is quiet, but no longer than
    /// [`MAX_WAIT_WINDOWS`] after the window opened.
    fn changed(&mut self, object: ObjectRef<K>) {
        let Some(window) = self.open.get_mut(&object) else {
            return self.open_window(object);
        };
        window.pending = true;
        let latest = window.opened + self.window * MAX_WAIT_WINDOWS;
        let quiet = (Instant::now() + self.window).min(latest);
        self.closing.reset_at(&window.key, quiet);
    }

    fn window_closed(&mut self, object: ObjectRef<K>) {
        if self.open.remove(&object).is_some_and(|w| w.pending) {
            self.open_window(object);
        }
    }

    /// Passes `object` on now and merges its changes for the next window.
    fn open_window(&mut self, object: ObjectRef<K>) {
        let key = self.closing.insert(object.clone(), self.window);
        let window = Window {
            key,
            opened: Instant::now(),
            pending: false,
        };
        self.open.insert(object.clone(), window);
        self.ready.push_back(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::UnboundedReceiverStream;

    const WINDOW: Duration = Duration::from_millis(200);

    fn object(name: &str) -> ObjectRef<ConfigMap> {
        ObjectRef::new(name).within("team")
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_change_passes_at_once_and_a_burst_becomes_one_more() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut out = Box::pin(leading_edge(UnboundedReceiverStream::new(rx), WINDOW));
        let start = Instant::now();
        tx.send(object("a")).unwrap();
        assert_eq!(out.next().await, Some(object("a")));
        assert_eq!(start.elapsed(), Duration::ZERO, "not delayed");

        // Fifty more changes within the window: one trigger when it closes.
        for _ in 0..50 {
            tx.send(object("a")).unwrap();
        }
        // Another object is not held back by the first one's window.
        tx.send(object("b")).unwrap();
        assert_eq!(out.next().await, Some(object("b")));
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(out.next().await, Some(object("a")));
        assert_eq!(start.elapsed(), WINDOW);

        // After a quiet window, the next change passes at once again.
        tokio::time::sleep(3 * WINDOW).await;
        let later = Instant::now();
        tx.send(object("a")).unwrap();
        assert_eq!(out.next().await, Some(object("a")));
        assert_eq!(later.elapsed(), Duration::ZERO);

        drop(tx);
        assert_eq!(
            out.next().await,
            None,
            "ends once the input ends and windows close"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_wait_until_the_object_is_quiet_but_not_for_ever() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut out = Box::pin(leading_edge(UnboundedReceiverStream::new(rx), WINDOW));
        let passed = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let collector = {
            let passed = passed.clone();
            tokio::spawn(async move {
                while out.next().await.is_some() {
                    passed.lock().unwrap().push(start.elapsed());
                }
            })
        };
        // A change every 20 ms for one second: the first at once, the rest once quiet.
        for _ in 0..50 {
            tx.send(object("a")).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(2 * WINDOW).await;
        assert_eq!(
            *passed.lock().unwrap(),
            [
                Duration::ZERO,
                Duration::from_millis(1000) + WINDOW - Duration::from_millis(20)
            ]
        );
        // Changing without pause for five seconds still passes every ten windows.
        passed.lock().unwrap().clear();
        for _ in 0..250 {
            tx.send(object("b")).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(tx);
        collector.await.unwrap();
        let passed = passed.lock().unwrap();
        assert_eq!(passed.len(), 4, "{passed:?}");
        for pair in passed.windows(2) {
            assert!(pair[1] - pair[0] <= WINDOW * MAX_WAIT_WINDOWS, "{passed:?}");
        }
    }
}
