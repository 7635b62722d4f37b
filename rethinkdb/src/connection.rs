//! One connection to a RethinkDB server, shared by any number of queries at once: each
//! query has a token, a reader task hands every response to the query of its token.
//! Frames are the JSON protocol's: token (u64 LE), length (u32 LE), JSON.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::{Error, QueryErrorKind, Reql, Term, handshake};

/// `Query.QueryType` of `ql2.proto`.
const START: u32 = 1;
const CONTINUE: u32 = 2;
const STOP: u32 = 3;

/// `Response.ResponseType` of `ql2.proto`.
const SUCCESS_ATOM: i64 = 1;
const SUCCESS_SEQUENCE: i64 = 2;
const SUCCESS_PARTIAL: i64 = 3;
const CLIENT_ERROR: i64 = 16;
const COMPILE_ERROR: i64 = 17;

/// `Response.ErrorType` of `ql2.proto` that get a kind of their own.
const NON_EXISTENCE: i64 = 3_100_000;
const OP_FAILED: i64 = 4_100_000;
const PERMISSION_ERROR: i64 = 6_000_000;

/// The largest response read (RethinkDB batches results well below this).
const MAX_RESPONSE: u32 = 64 * 1024 * 1024;

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct Options {
    /// `host:port` of the driver port.
    pub addr: String,
    /// The user, e.g. `admin`.
    pub user: String,
    /// Its password.
    pub password: String,
    /// How long connecting (TCP and handshake) may take.
    pub connect_timeout: Duration,
    /// How long the server may take to answer one query (or one batch of it).
    pub query_timeout: Duration,
}

type Waiters = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Response>>>>;

/// An open connection; closed when dropped.
pub struct Connection {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    waiters: Waiters,
    next_token: AtomicU64,
    broken: Arc<AtomicBool>,
    query_timeout: Duration,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One response frame.
#[derive(Debug, Deserialize)]
struct Response {
    t: i64,
    #[serde(default)]
    r: Vec<Value>,
    #[serde(default)]
    e: Option<i64>,
}

impl Connection {
    /// Connects and runs the handshake.
    pub async fn open(options: &Options) -> Result<Self, Error> {
        let unreachable = |reason: String| Error::Unreachable {
            addr: options.addr.clone(),
            reason,
        };
        let stream =
            tokio::time::timeout(options.connect_timeout, TcpStream::connect(&options.addr))
                .await
                .map_err(|_| unreachable(format!("no answer in {:?}", options.connect_timeout)))?
                .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut joined = tokio::io::join(&mut read, &mut write);
        tokio::time::timeout(
            options.connect_timeout,
            handshake::handshake(&mut joined, &options.user, &options.password),
        )
        .await
        .map_err(|_| Error::Lost(format!("no handshake in {:?}", options.connect_timeout)))??;
        let waiters = Waiters::default();
        let broken = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_responses(read, waiters.clone(), broken.clone()));
        Ok(Self {
            writer: tokio::sync::Mutex::new(write),
            waiters,
            next_token: AtomicU64::new(1),
            broken,
            query_timeout: options.query_timeout,
            reader,
        })
    }

    /// Whether the connection is gone (a new one is needed).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    async fn send(&self, token: u64, query: &Value) -> Result<(), Error> {
        let body = serde_json::to_vec(query).map_err(|e| Error::Protocol(e.to_string()))?;
        let mut frame = Vec::with_capacity(12 + body.len());
        frame.extend(token.to_le_bytes());
        frame.extend((body.len() as u32).to_le_bytes());
        frame.extend(body);
        let mut writer = self.writer.lock().await;
        writer.write_all(&frame).await.map_err(|e| {
            self.broken.store(true, Ordering::Relaxed);
            Error::Lost(e.to_string())
        })
    }

    /// Sends `term` under a new token; its responses arrive on the receiver, until the
    /// returned guard forgets the token.
    async fn start(&self, term: &Term) -> Result<(u64, mpsc::UnboundedReceiver<Response>), Error> {
        if self.is_broken() {
            return Err(Error::Lost("the connection is closed".into()));
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiters.lock().unwrap().insert(token, tx);
        if let Err(error) = self.send(token, &json!([START, term, {}])).await {
            self.waiters.lock().unwrap().remove(&token);
            return Err(error);
        }
        Ok((token, rx))
    }

    async fn query(&self, term: &Term) -> Result<Value, Error> {
        let (token, mut rx) = self.start(term).await?;
        let _forget = Forget(&self.waiters, token);
        let mut items = Vec::new();
        loop {
            let response = next_response(&mut rx, Some(self.query_timeout)).await?;
            match response.t {
                SUCCESS_ATOM => return Ok(response.r.into_iter().next().unwrap_or(Value::Null)),
                SUCCESS_SEQUENCE => {
                    items.extend(response.r);
                    return Ok(Value::Array(items));
                }
                SUCCESS_PARTIAL => {
                    items.extend(response.r);
                    self.send(token, &json!([CONTINUE])).await?;
                }
                _ => return Err(query_error(&response)),
            }
        }
    }

    /// Runs `term` and hands its results over batch by batch, as the server sends them: a
    /// large read without holding it all, or a changefeed, which never ends by itself
    /// (`batch_timeout` None: wait for each batch as long as it takes). Dropping the
    /// cursor stops the query on the server.
    pub async fn cursor(
        self: &Arc<Self>,
        term: Term,
        batch_timeout: Option<Duration>,
    ) -> Result<Cursor, Error> {
        let (token, responses) = self.start(&term).await?;
        Ok(Cursor {
            connection: self.clone(),
            token,
            responses,
            batch_timeout,
            state: CursorState::Started,
        })
    }
}

/// The next response of a query, within `timeout` if given.
async fn next_response(
    rx: &mut mpsc::UnboundedReceiver<Response>,
    timeout: Option<Duration>,
) -> Result<Response, Error> {
    let response = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, rx.recv())
            .await
            .map_err(|_| Error::Lost(format!("no answer in {timeout:?}")))?,
        None => rx.recv().await,
    };
    response.ok_or_else(|| Error::Lost("the server closed the connection".into()))
}

/// Where a [`Cursor`] is in its query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CursorState {
    /// Started; the first batch is on its way.
    Started,
    /// A batch was handed over and more follow once asked for (`CONTINUE`).
    Partial,
    /// The server ended it (the last batch, or an error): nothing to stop.
    Done,
}

/// The batches of one query ([`Connection::cursor`]).
pub struct Cursor {
    connection: Arc<Connection>,
    token: u64,
    responses: mpsc::UnboundedReceiver<Response>,
    batch_timeout: Option<Duration>,
    state: CursorState,
}

impl Cursor {
    /// The next batch, or None once the query has ended.
    pub async fn next_batch(&mut self) -> Option<Result<Vec<Value>, Error>> {
        match self.state {
            CursorState::Done => return None,
            CursorState::Partial => {
                if let Err(error) = self.connection.send(self.token, &json!([CONTINUE])).await {
                    self.state = CursorState::Done;
                    return Some(Err(error));
                }
            }
            CursorState::Started => {}
        }
        let response = match next_response(&mut self.responses, self.batch_timeout).await {
            Ok(response) => response,
            Err(error) => {
                self.state = CursorState::Done;
                return Some(Err(error));
            }
        };
        Some(match response.t {
            SUCCESS_PARTIAL => {
                self.state = CursorState::Partial;
                Ok(response.r)
            }
            SUCCESS_SEQUENCE => {
                self.state = CursorState::Done;
                Ok(response.r)
            }
            SUCCESS_ATOM => {
                self.state = CursorState::Done;
                // An atom that is an array is the whole result.
                Ok(match response.r.into_iter().next() {
                    Some(Value::Array(items)) => items,
                    Some(Value::Null) | None => Vec::new(),
                    Some(value) => vec![value],
                })
            }
            _ => {
                self.state = CursorState::Done;
                Err(query_error(&response))
            }
        })
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.connection.waiters.lock().unwrap().remove(&self.token);
        // A query the server still runs (a changefeed, a read not read to its end) is
        // stopped, so the server does not keep it for a client that is gone.
        if self.state != CursorState::Done
            && !self.connection.is_broken()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (connection, token) = (self.connection.clone(), self.token);
            runtime.spawn(async move {
                let _ = connection.send(token, &json!([STOP])).await;
            });
        }
    }
}

impl Reql for Connection {
    async fn run(&self, term: Term) -> Result<Value, Error> {
        self.query(&term).await
    }
}

/// Drops a query's waiter however the query ends.
struct Forget<'a>(&'a Waiters, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().remove(&self.1);
    }
}

fn query_error(response: &Response) -> Error {
    let message = response
        .r
        .first()
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .to_owned();
    let kind = match (response.t, response.e) {
        (CLIENT_ERROR | COMPILE_ERROR, _) => QueryErrorKind::Malformed,
        (_, Some(NON_EXISTENCE)) => QueryErrorKind::NonExistence,
        (_, Some(PERMISSION_ERROR)) => QueryErrorKind::Permission,
        // RethinkDB reports a missing database or table as an OpFailed "Database `x` does
        // not exist."; servers that send no error type (before 2.3, reqlite) say it alike.
        (_, Some(OP_FAILED) | None) if message.contains("does not exist") => {
            QueryErrorKind::NonExistence
        }
        _ => QueryErrorKind::Runtime,
    };
    Error::Query { kind, message }
}

/// Hands each response to its query until the connection ends, then marks it broken (its
/// waiters see their channels close).
async fn read_responses(
    mut read: BufReader<OwnedReadHalf>,
    waiters: Waiters,
    broken: Arc<AtomicBool>,
) {
    let result: Result<(), String> = async {
        loop {
            let mut header = [0u8; 12];
            read.read_exact(&mut header)
                .await
                .map_err(|e| e.to_string())?;
            let token = u64::from_le_bytes(header[..8].try_into().unwrap());
            let length = u32::from_le_bytes(header[8..].try_into().unwrap());
            if length > MAX_RESPONSE {
                return Err(format!("a response of {length} bytes"));
            }
            let mut body = vec![0u8; length as usize];
            read.read_exact(&mut body)
                .await
                .map_err(|e| e.to_string())?;
            let response: Response = serde_json::from_slice(&body)
                .map_err(|e| format!("a response that is not ReQL: {e}"))?;
            if let Some(waiter) = waiters.lock().unwrap().get(&token) {
                let _ = waiter.send(response);
            }
        }
    }
    .await;
    broken.store(true, Ordering::Relaxed);
    waiters.lock().unwrap().clear();
    if let Err(reason) = result {
        tracing::debug!(%reason, "RethinkDB connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(t: i64, e: Option<i64>, message: &str) -> QueryErrorKind {
        let response = Response {
            t,
            r: vec![json!(message)],
            e,
        };
        match query_error(&response) {
            Error::Query { kind, .. } => kind,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_are_told_apart_by_response_and_error_type() {
        let missing = "Database `shop` does not exist.";
        assert_eq!(
            kind(18, Some(OP_FAILED), missing),
            QueryErrorKind::NonExistence
        );
        assert_eq!(kind(18, None, missing), QueryErrorKind::NonExistence);
        assert_eq!(
            kind(18, Some(NON_EXISTENCE), "No attribute `x`"),
            QueryErrorKind::NonExistence
        );
        assert_eq!(
            kind(
                18,
                Some(OP_FAILED),
                "Cannot perform write: primary replica unavailable"
            ),
            QueryErrorKind::Runtime
        );
        assert_eq!(
            kind(
                18,
                Some(PERMISSION_ERROR),
                "User `bob` does not have the required `read` permissions."
            ),
            QueryErrorKind::Permission
        );
        assert_eq!(
            kind(17, None, "Expected 2 arguments"),
            QueryErrorKind::Malformed
        );
        assert_eq!(kind(16, None, "Client is buggy"), QueryErrorKind::Malformed);
    }
}
