//! Which waiting reconcile starts next when every slot is taken. kube-runtime's controller
//! parks the reconciles it cannot start yet in a hash set and starts them in hash order,
//! so under a burst one object can wait for a minute while later ones pass it, and a new
//! object's first reconcile waits behind the follow-ups of older ones. So the controller
//! is run without a limit of its own, and each reconcile first waits here for one of the
//! slots: in arrival order within its [`Lane`], changes not yet observed (a new object, a
//! spec edit) ahead of follow-ups, which still get one slot in every [`FOLLOW_UP_EVERY`]
//! handed over while both lanes wait, so a stream of new objects never starves them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// While both lanes wait, every this many slots handed over, one goes to a follow-up.
pub const FOLLOW_UP_EVERY: u32 = 4;

/// Why a reconcile runs, which decides how soon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The object has a change its status has not observed yet: what a user waits for.
    Unobserved,
    /// A child changed, a retry or a resync.
    FollowUp,
}

impl Lane {
    /// The `lane` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Lane::Unobserved => "unobserved",
            Lane::FollowUp => "follow_up",
        }
    }
}

/// A fixed number of slots, handed over in the order described in the module docs.
pub struct Slots {
    state: Mutex<State>,
}

struct State {
    free: usize,
    unobserved: VecDeque<oneshot::Sender<Slot>>,
    follow_ups: VecDeque<oneshot::Sender<Slot>>,
    /// Slots handed to the unobserved lane since a follow-up last got one.
    unobserved_in_a_row: u32,
}

/// One taken slot, given back when dropped (also when the reconcile holding it is
/// cancelled, or when it is dropped unreceived because its waiter went away).
pub struct Slot {
    /// `None` only for a slot a cancelled waiter left unreceived, which is handed on.
    slots: Option<Arc<Slots>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release();
        }
    }
}

impl Slots {
    /// `count` slots, all free.
    pub fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: count,
                unobserved: VecDeque::new(),
                follow_ups: VecDeque::new(),
                unobserved_in_a_row: 0,
            }),
        })
    }

    /// Waits for a slot in `lane`; a free one is taken at once when nobody waits.
    pub async fn acquire(self: &Arc<Self>, lane: Lane) -> Slot {
        let handed = {
            let mut state = self.state.lock().unwrap();
            if state.free > 0 && state.unobserved.is_empty() && state.follow_ups.is_empty() {
                state.free -= 1;
                return Slot {
                    slots: Some(self.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            match lane {
                Lane::Unobserved => state.unobserved.push_back(tx),
                Lane::FollowUp => state.follow_ups.push_back(tx),
            }
            rx
        };
        // The sender is only dropped by handing a slot over.
        handed
            .await
            .expect("a waiting reconcile's sender is kept until a slot is handed over")
    }

    /// Hands the slot to the next waiter that is still there, or frees it.
    fn release(self: &Arc<Self>) {
        let mut state = self.state.lock().unwrap();
        while let Some(next) = state.next_waiter() {
            let slot = Slot {
                slots: Some(self.clone()),
            };
            match next.send(slot) {
                Ok(()) => return,
                // That waiter was cancelled: the slot is still ours to hand over (taken
                // out, so that dropping it does not release it again under the lock).
                Err(mut slot) => drop(slot.slots.take()),
            }
        }
        state.free += 1;
    }

    /// How many reconciles wait, per lane (unobserved, follow-ups).
    #[cfg(test)]
    fn waiting(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        (state.unobserved.len(), state.follow_ups.len())
    }
}

impl State {
    fn next_waiter(&mut self) -> Option<oneshot::Sender<Slot>> {
        let follow_up_due = self.unobserved_in_a_row + 1 >= FOLLOW_UP_EVERY;
        if self.unobserved.is_empty() || (follow_up_due && !self.follow_ups.is_empty()) {
            self.unobserved_in_a_row = 0;
            return self.follow_ups.pop_front();
        }
        self.unobserved_in_a_row += 1;
        self.unobserved.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// Starts a task per `(name, lane)` in that order, each waiting for a slot and
    /// reporting its name once it has one; returns the receiver of the names.
    async fn queue(
        slots: &Arc<Slots>,
        waiters: &[(&'static str, Lane)],
    ) -> (
        mpsc::UnboundedReceiver<&'static str>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for &(name, lane) in waiters {
            let (waiter_slots, tx) = (slots.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let slot = waiter_slots.acquire(lane).await;
                tx.send(name).unwrap();
                // Held until the test aborts the task.
                std::future::pending::<()>().await;
                drop(slot);
            }));
            // Each waiter queued before the next starts, so arrival order is known.
            while waiting_total(slots) < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        (rx, tasks)
    }

    fn waiting_total(slots: &Slots) -> usize {
        let (a, b) = slots.waiting();
        a + b
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a waiter got a slot in time")
            .unwrap()
    }

    #[tokio::test]
    async fn free_slots_are_taken_at_once_and_the_next_waits_for_one_to_be_given_back() {
        let slots = Slots::new(2);
        let first = slots.acquire(Lane::FollowUp).await;
        let _second = slots.acquire(Lane::FollowUp).await;
        let (mut got, _tasks) = queue(&slots, &[("third", Lane::Unobserved)]).await;
        assert!(got.try_recv().is_err(), "no slot was free");
        drop(first);
        assert_eq!(next(&mut got).await, "third");
    }

    /// The order in which `waiters`, queued in that order behind one held slot, get it
    /// once it is given back, each giving it back as soon as it has it.
    async fn order_of_handovers(waiters: &[(&'static str, Lane)]) -> Vec<&'static str> {
        let slots = Slots::new(1);
        let held = slots.acquire(Lane::FollowUp).await;
        let (mut got, tasks) = queue(&slots, waiters).await;
        drop(held);
        let mut order = Vec::new();
        for _ in waiters {
            let name = next(&mut got).await;
            order.push(name);
            let index = waiters.iter().position(|(n, _)| *n == name).unwrap();
            tasks[index].abort();
        }
        order
    }

    #[tokio::test]
    async fn unobserved_changes_pass_follow_ups_queued_before_them_and_each_lane_keeps_arrival_order()
     {
        let order = order_of_handovers(&[
            ("resync-a", Lane::FollowUp),
            ("resync-b", Lane::FollowUp),
            ("new-a", Lane::Unobserved),
            ("new-b", Lane::Unobserved),
        ])
        .await;
        assert_eq!(order, ["new-a", "new-b", "resync-a", "resync-b"]);
    }

    #[tokio::test]
    async fn follow_ups_get_one_slot_in_every_four_while_new_objects_keep_arriving() {
        let mut waiters = vec![
            ("follow-up-1", Lane::FollowUp),
            ("follow-up-2", Lane::FollowUp),
        ];
        let new = ["new-1", "new-2", "new-3", "new-4", "new-5", "new-6"];
        waiters.extend(new.iter().map(|n| (*n, Lane::Unobserved)));
        let order = order_of_handovers(&waiters).await;
        let expected = [
            "new-1",
            "new-2",
            "new-3",
            "follow-up-1",
            "new-4",
            "new-5",
            "new-6",
            "follow-up-2",
        ];
        assert_eq!(order, expected);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_keep_the_slot_it_would_have_been_handed() {
        let slots = Slots::new(1);
        let held = slots.acquire(Lane::FollowUp).await;
        let waiters = [("cancelled", Lane::Unobserved), ("next", Lane::Unobserved)];
        let (mut got, mut tasks) = queue(&slots, &waiters).await;
        tasks[0].abort();
        assert!((&mut tasks[0]).await.unwrap_err().is_cancelled());
        drop(held);
        assert_eq!(next(&mut got).await, "next");
        tasks[1].abort();
        tokio::time::timeout(Duration::from_secs(5), slots.acquire(Lane::FollowUp))
            .await
            .expect("the slot is free again once its holder went away");
        assert_eq!(slots.waiting(), (0, 0));
    }
}
