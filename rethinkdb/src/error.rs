//! What can go wrong talking to RethinkDB, and the class each failure falls in, so a status
//! can say which: the server cannot be reached, it refused the credentials, what a query
//! names does not exist, or the server failed the query.

use std::fmt;

/// A failed connection or query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No TCP connection to the server (refused, unroutable, timed out).
    #[error("cannot connect to {addr}: {reason}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// The connection was lost, or the server did not answer in time.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The server refused the user or password, or could not prove it knows the password.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The server broke the protocol (a message that is not what the handshake or a
    /// response must be).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered the query with an error.
    #[error("{kind}: {message}")]
    Query {
        /// What kind of error the server reported.
        kind: QueryErrorKind,
        /// The server's message.
        message: String,
    },
}

/// The kinds of error a server reports for a query (`Response.ResponseType` and
/// `Response.ErrorType` of `ql2.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryErrorKind {
    /// A malformed query (`CLIENT_ERROR` or `COMPILE_ERROR`).
    Malformed,
    /// Something the query names does not exist (`NON_EXISTENCE`).
    NonExistence,
    /// The user may not do it (`PERMISSION_ERROR`).
    Permission,
    /// Any other runtime error (`INTERNAL`, `RESOURCE_LIMIT`, `QUERY_LOGIC`, `OP_FAILED`,
    /// `OP_INDETERMINATE`, `USER`).
    Runtime,
}

impl fmt::Display for QueryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed query",
            Self::NonExistence => "does not exist",
            Self::Permission => "permission denied",
            Self::Runtime => "server error",
        })
    }
}

/// The class of a failure, as statuses and metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// The server cannot be reached or stopped answering.
    Unreachable,
    /// The server refused the credentials.
    AuthenticationFailed,
    /// A database or table the query names does not exist.
    SchemaMissing,
    /// The server failed the query (permission errors included), or broke the protocol.
    ServerError,
}

impl ErrorClass {
    /// The class as a metric label: `unreachable`, `authentication_failed`,
    /// `schema_missing`, `server_error`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::AuthenticationFailed => "authentication_failed",
            Self::SchemaMissing => "schema_missing",
            Self::ServerError => "server_error",
        }
    }
}

impl Error {
    /// The class this failure falls in.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unreachable { .. } | Self::Lost(_) => ErrorClass::Unreachable,
            Self::AuthenticationFailed(_) => ErrorClass::AuthenticationFailed,
            Self::Query {
                kind: QueryErrorKind::NonExistence,
                ..
            } => ErrorClass::SchemaMissing,
            Self::Query { .. } | Self::Protocol(_) => ErrorClass::ServerError,
        }
    }
}
