//! What every controller of the operator shares, so each kind's pipeline (dereference →
//! validate → build → apply → update status) is written against these pieces instead of
//! copied from another kind's:
//!
//! - [`apply`]: server-side apply with the operator's field manager, and the rule that a
//!   controller never adopts, changes or deletes an object that is not its own.
//! - [`conditions`]: `metav1.Condition`s whose `lastTransitionTime` moves only on a flip.
//! - [`events`]: Events published once per change, logged in the reconcile's span.
//! - [`backoff`]: capped exponential retry delays per object.
//! - [`handoff`]: Secrets handed to the proxy, one key per object.
//! - [`lead`]: running a controller while this replica leads, and stopping it in time.
//! - [`slots`]: how many reconciles run at once, and which waiting one starts next.
//! - [`throttle`]: the first change of an object at once, bursts after it coalesced.

pub mod apply;
pub mod backoff;
pub mod conditions;
pub mod events;
pub mod handoff;
pub mod lead;
pub mod slots;
pub mod throttle;

/// The field manager of everything the operator writes, and the controller name of its
/// Events.
pub const FIELD_MANAGER: &str = "guildnet-operator";
