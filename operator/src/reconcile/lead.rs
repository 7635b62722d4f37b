//! Running a controller only while this replica leads. The watch caches run on every
//! replica from the start, so a standby that becomes the leader has them warm; the
//! controller and its background loops run only while this replica leads, and stop the
//! moment it may no longer write.

use futures::StreamExt;
use futures::TryFuture;
use kube::Resource;
use kube::runtime::controller::{self, Action, Controller};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// When a leadership term ends.
pub struct Term<L, S> {
    /// Another replica may take the lease soon: everything stops at once; in-flight
    /// reconciles are cancelled (a new leader reconciles every object when it starts).
    pub lost: L,
    /// The process is shutting down: no new reconcile starts and the background loops
    /// stop; those in flight get up to `drain` to finish while this replica still leads.
    pub shutdown: S,
    /// How long in-flight reconciles may run after `shutdown` (`--shutdown-timeout`).
    pub drain: Duration,
}

/// Aborts a spawned task when dropped, so no exit path leaves a background loop behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `controller` with `reconcile` and `error_policy`, and `background` (e.g. a reaper)
/// beside it, until `term` ends.
pub async fn run<K, Ctx, Fut>(
    controller: Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    error_policy: impl Fn(Arc<K>, &Fut::Error, Arc<Ctx>) -> Action,
    ctx: Arc<Ctx>,
    background: impl Future<Output = ()> + Send + 'static,
    term: Term<impl Future<Output = ()>, impl Future<Output = ()>>,
) where
    K: Clone + Resource + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Unpin + Eq + Hash + Clone + Send + Sync,
    Fut: TryFuture<Ok = Action> + Send + 'static,
    Fut::Error: std::error::Error + Send + 'static,
{
    let Term {
        lost,
        shutdown,
        drain,
    } = term;
    let (mut lost, mut shutdown) = (pin!(lost), pin!(shutdown));
    let (graceful_tx, graceful_rx) = futures::channel::oneshot::channel::<()>();
    let controller = controller
        .graceful_shutdown_on(async move {
            let _ = graceful_rx.await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // Logged inside the reconcile, with its span.
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                // Deleted between the change and its reconcile.
                Err(controller::Error::ObjectNotFound(obj)) => debug!(%obj, "already gone"),
                Err(e) => warn!(error = %e, "controller error"),
            }
        });
    let mut controller = pin!(controller);
    let background = AbortOnDrop(tokio::spawn(background));
    info!("reconciling as the leader");
    tokio::select! {
        _ = &mut controller => return,
        _ = &mut lost => {
            info!("stopped reconciling: no longer the leader");
            return;
        }
        _ = &mut shutdown => {}
    }
    drop(background);
    let _ = graceful_tx.send(());
    tokio::select! {
        _ = &mut controller => info!("in-flight reconciles finished"),
        _ = &mut lost => info!("stopped reconciling: no longer the leader"),
        _ = tokio::time::sleep(drain) => {
            warn!(?drain, "in-flight reconciles did not finish in time: cancelled them");
        }
    }
}
