//! A RethinkDB client for GuildNet.
//!
//! Terms are built as data ([`Term`]), so a test reads exactly what a query sends, and run
//! through [`Reql`], which a [`Connection`] implements and a test can fake. The `reql` crate
//! keeps its terms in private types (nothing outside it can read or record what it sends)
//! and runs on a reactor of its own; the JSON protocol is small (the V1_0 handshake, a
//! 12-byte frame header, JSON terms), so GuildNet speaks it on tokio, with SCRAM-SHA-256
//! from RustCrypto's `pbkdf2`, `hmac` and `sha2`.

mod connection;
mod error;
mod handshake;
mod pool;
mod term;

pub use connection::{Connection, Cursor, Options};
pub use error::{Error, ErrorClass, QueryErrorKind};
pub use pool::{Pool, Target, Unavailable};
pub use term::{Term, TermType};

use serde_json::Value;

/// Runs ReQL terms: a [`Connection`], or a test's recording of them.
pub trait Reql: Send + Sync {
    /// Runs `term` and returns its result (a sequence as an array).
    fn run(&self, term: Term) -> impl Future<Output = Result<Value, Error>> + Send;
}
