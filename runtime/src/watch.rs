//! What a failed watch is worth telling an operator about, and whether a watch cache has
//! listed everything once.

use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tracing::{debug, warn};

/// The API server compacts old resource versions: a watch resumed from one ends with
/// `410 Gone` (reason `Expired`) and the watcher lists again. That is the protocol working,
/// not a fault, so it is logged at debug; everything else is a warning.
fn is_routine_restart(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

/// Whether the watch behind `store` has listed everything once, asked without waiting.
/// (Ask it afresh each time: a task awaiting the readiness of a controller's store was seen
/// never to be woken.)
pub fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let ready = std::pin::pin!(store.wait_until_ready());
    let waker = std::task::Waker::noop();
    matches!(
        ready.poll(&mut std::task::Context::from_waker(waker)),
        std::task::Poll::Ready(Ok(()))
    )
}

/// Logs a watcher error about `what` (a kind or a cache) at the level it deserves; the
/// watcher itself retries.
pub fn log_error(what: &str, error: &watcher::Error) {
    if is_routine_restart(error) {
        debug!(what, %error, "watch expired; listing again");
    } else {
        warn!(what, %error, "watch failed; retrying");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn watch_error(code: u16, reason: &str) -> watcher::Error {
        let status = Status::failure("too old resource version: 274 (275)", reason).with_code(code);
        watcher::Error::WatchError(Box::new(status))
    }

    #[test]
    fn an_expired_resource_version_is_a_routine_restart() {
        assert!(is_routine_restart(&watch_error(410, "Expired")));
    }

    #[test]
    fn other_watch_errors_are_worth_a_warning() {
        assert!(!is_routine_restart(&watch_error(500, "InternalError")));
        assert!(!is_routine_restart(&watch_error(403, "Forbidden")));
        assert!(!is_routine_restart(&watcher::Error::NoResourceVersion));
    }
}
