//! Workspace lifecycle events from Kubernetes Events: kept in a ring buffer in the order the
//! API server stored them, served as `/api/events?since=&types=` and as an SSE stream that
//! resumes from `Last-Event-ID` without duplicates or gaps (while the buffer reaches back).
//!
//! An event's id is the resourceVersion of that Event object version, so a repeated Event
//! (count bumped) is a new item, and ids agree between proxy replicas watching one cluster.
//!
//! An event is about one Workspace *object*, named by `involvedObject.uid`: names are
//! reused, so a workspace's owner and the users RBAC lets open it by name see its events
//! only while the workspace of that name is the one the event is about. Events of a
//! workspace that is gone (deleted, perhaps replaced by another of the same name) are shown
//! only to whoever may open every workspace of the namespace.
//!
//! Visibility is decided once per workspace object per request (`Visibility`), up to
//! [`CONCURRENT_REVIEWS`] decisions at a time, each asking the authorizer (whose answers are
//! shared by all requests for `--auth-cache-ttl`): a list of 2 000 events about 500
//! workspaces costs at most 500 reviews, made 16 at a time, not one per event one after
//! another. The SSE stream sends each event as soon as its own workspace is decided.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use guildnet_api::workspace::rules::is_dns_label;
use guildnet_api::workspace::{Workspace, validate_name};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event as WatchEvent};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tokio::sync::{OnceCell, Semaphore, broadcast};
use tokio::time::Instant;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// One occurrence of a Kubernetes Event about a Workspace.
#[derive(Debug, Serialize)]
pub struct WorkspaceEvent {
    /// The Event's resourceVersion, sent as a string: what `since` and `Last-Event-ID` name.
    #[serde(serialize_with = "as_string")]
    pub id: u64,
    /// The Workspace's namespace (`involvedObject.namespace`).
    pub namespace: String,
    /// The Workspace's name (`involvedObject.name`).
    pub name: String,
    /// `Normal` or `Warning`, sent as `type`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The Event's reason, a CamelCase word.
    pub reason: String,
    /// The Event's message, for people.
    pub message: String,
    /// When it happened (RFC 3339): eventTime, else the last or first timestamp, else creation.
    pub time: Option<String>,
    /// The uid of the Workspace object it is about (`involvedObject.uid`).
    #[serde(skip)]
    uid: Option<String>,
    /// Whether that object is still the workspace of its name, and its owner; learnt when
    /// first needed.
    #[serde(skip)]
    subject: OnceLock<Subject>,
}

/// What became of the Workspace object an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    /// It is the workspace of that name now; its owner id (`guildnet.io/owner`).
    Current(Option<String>),
    /// It is gone: no workspace of that name, or another one (a different uid), or the event
    /// names no uid to tell.
    Gone,
}

fn as_string<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

impl WorkspaceEvent {
    /// The event, unless it cannot be about a Workspace: no id, or a namespace or name that
    /// is not a DNS label (those go into API URLs when its owner is looked up).
    fn from_event(event: &Event) -> Option<Self> {
        let id = event.metadata.resource_version.as_deref()?.parse().ok()?;
        let object = &event.involved_object;
        let namespace = object.namespace.clone().filter(|ns| is_dns_label(ns))?;
        let name = object
            .name
            .clone()
            .filter(|name| validate_name(name).is_ok())?;
        let time = event
            .event_time
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| event.last_timestamp.as_ref().map(|t| t.0.to_string()))
            .or_else(|| event.first_timestamp.as_ref().map(|t| t.0.to_string()))
            .or_else(|| {
                event
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
            });
        Some(Self {
            id,
            namespace,
            name,
            type_: event.type_.clone().unwrap_or_else(|| "Normal".into()),
            reason: event.reason.clone().unwrap_or_default(),
            message: event.message.clone().unwrap_or_default(),
            time,
            uid: object.uid.clone().filter(|uid| !uid.is_empty()),
            subject: OnceLock::new(),
        })
    }
}

/// The newest workspace Events (`--event-buffer`, default 2000) and their live feed.
pub struct EventHub {
    capacity: usize,
    buffer: RwLock<VecDeque<Arc<WorkspaceEvent>>>,
    live: broadcast::Sender<Arc<WorkspaceEvent>>,
}

impl EventHub {
    /// An empty hub that keeps the newest `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            buffer: RwLock::new(VecDeque::new()),
            live: broadcast::channel(1024).0,
        }
    }

    /// Adds a Kubernetes Event as the watch delivers it, unless it is not about a Workspace
    /// or not newer than the newest held.
    pub fn apply(&self, event: &Event) {
        if let Some(e) = WorkspaceEvent::from_event(event) {
            self.push(e);
        }
    }

    /// Adds an event unless it is not newer than the newest held (a re-list replays).
    fn push(&self, event: WorkspaceEvent) {
        let mut buffer = self.buffer.write().unwrap();
        if buffer.back().is_some_and(|last| last.id >= event.id) {
            return;
        }
        let event = Arc::new(event);
        buffer.push_back(event.clone());
        while buffer.len() > self.capacity {
            buffer.pop_front();
        }
        // No subscriber is fine: the buffer keeps it.
        let _ = self.live.send(event);
    }

    /// Events after `after`, oldest first.
    pub fn since(&self, after: u64) -> Vec<Arc<WorkspaceEvent>> {
        let buffer = self.buffer.read().unwrap();
        let start = buffer.partition_point(|e| e.id <= after);
        buffer.range(start..).cloned().collect()
    }

    /// Follows the Events about Workspaces until the stream ends.
    pub async fn run(self: Arc<Self>, client: kube::Client) {
        let api: Api<Event> = Api::all(client);
        let config = watcher::Config::default().fields("involvedObject.kind=Workspace");
        let mut relisted: Vec<WorkspaceEvent> = Vec::new();
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(WatchEvent::Init) => relisted.clear(),
                Ok(WatchEvent::InitApply(e)) => relisted.extend(WorkspaceEvent::from_event(&e)),
                Ok(WatchEvent::InitDone) => {
                    relisted.sort_by_key(|e| e.id);
                    for e in relisted.drain(..) {
                        self.push(e);
                    }
                }
                Ok(WatchEvent::Apply(e)) => self.apply(&e),
                Ok(WatchEvent::Delete(_)) => {}
                Err(error) => guildnet_runtime::watch::log_error("Events", &error),
            }
        }
    }
}

/// The query of `/api/events` and `/sse/events`.
#[derive(Debug, Default, Deserialize)]
pub struct EventQuery {
    /// Only events after this id.
    since: Option<String>,
    /// Comma-separated Event types (Normal, Warning); all when absent.
    types: Option<String>,
}

impl EventQuery {
    fn wants(&self, event: &WorkspaceEvent) -> bool {
        self.types.as_deref().is_none_or(|types| {
            types
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(&event.type_))
        })
    }
}

fn parse_id(id: Option<&str>) -> Result<u64, ApiError> {
    match id.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(id) => id.parse().map_err(|_| {
            ApiError::bad_request(format!("since/Last-Event-ID {id:?} is not an event id"))
        }),
    }
}

/// Whether `caller` may see this event: while the workspace it is about is the current one
/// of its name, as its owner or as someone who may open it; once it is gone, only as someone
/// who may open every workspace of the namespace (not whoever owns the name now).
async fn visible(state: &AppState, caller: &Caller, event: &WorkspaceEvent) -> bool {
    let subject = match event.subject.get() {
        Some(subject) => subject.clone(),
        None => match subject_of(state, event).await {
            Some(subject) => event.subject.get_or_init(|| subject).clone(),
            // The API could not say: refuse now, ask again next time.
            None => Subject::Gone,
        },
    };
    // Learnt once, but the name may since have gone to another workspace.
    let replaced = || {
        state
            .workspaces
            .get(&ObjectRef::new(&event.name).within(&event.namespace))
            .is_some_and(|ws| ws.metadata.uid != event.uid)
    };
    match subject {
        Subject::Current(owner) if !replaced() => {
            owner.as_deref() == Some(caller.identity.owner_id())
                || state
                    .authz
                    .may_open(&caller.identity, &event.namespace, &event.name, None)
                    .await
        }
        Subject::Current(_) | Subject::Gone => {
            state
                .authz
                .may_open_all(&caller.identity, &event.namespace)
                .await
        }
    }
}

/// What became of the workspace `event` is about: the cached workspace of its name when its
/// uid is the event's, else (an Event can arrive before the Workspace's watch catches up
/// with a delete and re-create) the API's; None when the API cannot be asked.
async fn subject_of(state: &AppState, event: &WorkspaceEvent) -> Option<Subject> {
    let Some(uid) = event.uid.as_deref() else {
        return Some(Subject::Gone);
    };
    let current = |ws: &Workspace| {
        (ws.metadata.uid.as_deref() == Some(uid))
            .then(|| Subject::Current(ws.owner_id().map(str::to_owned)))
    };
    if let Some(subject) = state
        .workspaces
        .get(&ObjectRef::new(&event.name).within(&event.namespace))
        .and_then(|ws| current(&ws))
    {
        return Some(subject);
    }
    match Api::<Workspace>::namespaced(state.client.clone(), &event.namespace)
        .get_opt(&event.name)
        .await
    {
        Ok(ws) => Some(ws.as_ref().and_then(current).unwrap_or(Subject::Gone)),
        Err(error) => {
            let workspace = format!("{}/{}", event.namespace, event.name);
            tracing::debug!(%error, workspace, "looking up the workspace of an event");
            None
        }
    }
}

/// Visibility decisions made at once at most, per request.
pub const CONCURRENT_REVIEWS: usize = 16;

/// Which events are about the same workspace object, so one decision covers them all.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SubjectKey {
    namespace: String,
    name: String,
    uid: Option<String>,
}

impl SubjectKey {
    fn of(event: &WorkspaceEvent) -> Self {
        Self {
            namespace: event.namespace.clone(),
            name: event.name.clone(),
            uid: event.uid.clone(),
        }
    }
}

/// One request's visibility decisions: [`visible`] asked once per workspace object (however
/// many events are about it, and however many ask at once), at most [`CONCURRENT_REVIEWS`]
/// at a time.
struct Visibility {
    state: AppState,
    caller: Caller,
    decided: Mutex<HashMap<SubjectKey, Arc<OnceCell<bool>>>>,
    deciding: Semaphore,
    started: Instant,
}

impl Visibility {
    fn new(state: AppState, caller: Caller) -> Self {
        Self {
            state,
            caller,
            decided: Mutex::new(HashMap::new()),
            deciding: Semaphore::new(CONCURRENT_REVIEWS),
            started: Instant::now(),
        }
    }

    /// Whether the caller may see `event`: decided for its workspace object the first time
    /// one of its events is asked about, then remembered for this request.
    async fn of(&self, event: &WorkspaceEvent) -> bool {
        let decision = self
            .decided
            .lock()
            .unwrap()
            .entry(SubjectKey::of(event))
            .or_default()
            .clone();
        *decision
            .get_or_init(|| async {
                let _turn = self.deciding.acquire().await.expect("never closed");
                visible(&self.state, &self.caller, event).await
            })
            .await
    }

    /// Decides every workspace object `events` are about, [`CONCURRENT_REVIEWS`] at a
    /// time, in the order they first appear.
    async fn decide_all(&self, events: &[Arc<WorkspaceEvent>]) {
        let mut seen = HashSet::new();
        let firsts: Vec<&Arc<WorkspaceEvent>> = events
            .iter()
            .filter(|event| seen.insert(SubjectKey::of(event)))
            .collect();
        futures::stream::iter(firsts)
            .for_each_concurrent(CONCURRENT_REVIEWS, |event| async move {
                self.of(event).await;
            })
            .await;
    }
}

/// The caller, and the id after which their events start.
async fn caller_and_start(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    since: Option<&str>,
) -> Result<(Caller, u64), ApiError> {
    let caller = state.auth.require(headers, peer.ip()).await?;
    Ok((caller, parse_id(since)?))
}

/// `GET /api/events?since=&types=`
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> Response {
    let (caller, after) =
        match caller_and_start(&state, peer, &headers, query.since.as_deref()).await {
            Ok(start) => start,
            Err(e) => return e.into_response(),
        };
    let wanted: Vec<Arc<WorkspaceEvent>> = state
        .events
        .since(after)
        .into_iter()
        .filter(|event| query.wants(event))
        .collect();
    let visibility = Visibility::new(state, caller);
    visibility.decide_all(&wanted).await;
    let mut items = Vec::new();
    for event in &wanted {
        // Decided above: answered at once.
        if visibility.of(event).await {
            items.push(&**event);
        }
    }
    axum::Json(serde_json::json!({ "items": items })).into_response()
}

/// `GET /sse/events?types=`, resuming after `Last-Event-ID` (or `since`).
pub async fn stream(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> Response {
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let since = last_event_id.or(query.since.as_deref());
    let (caller, after) = match caller_and_start(&state, peer, &headers, since).await {
        Ok(start) => start,
        Err(e) => return e.into_response(),
    };
    // Subscribe before reading the backlog: nothing falls between the two.
    let live = state.events.live.subscribe();
    let backlog: VecDeque<_> = state
        .events
        .since(after)
        .into_iter()
        .filter(|event| query.wants(event))
        .collect();
    let visibility = Arc::new(Visibility::new(state, caller));
    // Decides the backlog's workspaces ahead of the stream, while it sends what is decided.
    let ahead = {
        let visibility = visibility.clone();
        let backlog: Vec<_> = backlog.iter().cloned().collect();
        async move { visibility.decide_all(&backlog).await }.boxed()
    };
    let cursor = Cursor {
        visibility,
        ahead: Some(ahead),
        query,
        backlog,
        live,
        last: after,
    };
    Sse::new(events_after(cursor))
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Cursor {
    /// The decisions of this stream; renewed every `--auth-cache-ttl` once it is live, so a
    /// revoked grant or a deleted workspace takes effect.
    visibility: Arc<Visibility>,
    /// Deciding the backlog ahead of what is sent; None once done.
    ahead: Option<BoxFuture<'static, ()>>,
    query: EventQuery,
    backlog: VecDeque<Arc<WorkspaceEvent>>,
    live: broadcast::Receiver<Arc<WorkspaceEvent>>,
    last: u64,
}

impl Cursor {
    /// Whether the caller may see `event`, deciding the backlog ahead meanwhile.
    async fn shows(&mut self, event: &WorkspaceEvent) -> bool {
        let decided = self.visibility.of(event);
        let mut decided = std::pin::pin!(decided);
        loop {
            let Some(ahead) = self.ahead.as_mut() else {
                return decided.await;
            };
            let done_ahead = tokio::select! {
                biased;
                shown = &mut decided => return shown,
                () = ahead => true,
            };
            if done_ahead {
                self.ahead = None;
            }
        }
    }
}

fn events_after(cursor: Cursor) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            let event = match c.backlog.pop_front() {
                Some(event) => event,
                None => {
                    c.ahead = None;
                    // A lagging reader ends the stream; the browser reconnects with
                    // Last-Event-ID and is served from the buffer.
                    let event = c.live.recv().await.ok()?;
                    let visibility = &c.visibility;
                    if visibility.started.elapsed() >= visibility.state.authz.ttl() {
                        let (state, caller) = (visibility.state.clone(), visibility.caller.clone());
                        c.visibility = Arc::new(Visibility::new(state, caller));
                    }
                    event
                }
            };
            if event.id <= c.last {
                continue;
            }
            c.last = event.id;
            if !c.query.wants(&event) || !c.shows(&event).await {
                continue;
            }
            let sse = SseEvent::default()
                .id(event.id.to_string())
                .event("workspace")
                .json_data(&*event)
                .unwrap_or_default();
            return Some((Ok(sse), c));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64) -> WorkspaceEvent {
        WorkspaceEvent {
            id,
            namespace: "team".into(),
            name: "ide".into(),
            type_: "Normal".into(),
            reason: "Ready".into(),
            message: String::new(),
            time: None,
            uid: Some("uid-ide".into()),
            subject: OnceLock::new(),
        }
    }

    fn kubernetes_event(namespace: &str, name: &str, uid: Option<&str>) -> Event {
        Event {
            metadata: kube::api::ObjectMeta {
                resource_version: Some("7".into()),
                ..Default::default()
            },
            involved_object: k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Workspace".into()),
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                uid: uid.map(str::to_owned),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn an_event_is_about_one_workspace_object() {
        let event = WorkspaceEvent::from_event(&kubernetes_event("team", "ide", Some("u-1")))
            .expect("an event about team/ide");
        assert_eq!(
            (event.namespace.as_str(), event.name.as_str()),
            ("team", "ide")
        );
        assert_eq!(event.uid.as_deref(), Some("u-1"));
        let without = WorkspaceEvent::from_event(&kubernetes_event("team", "ide", Some("")));
        assert_eq!(without.unwrap().uid, None);
    }

    #[test]
    fn events_whose_names_are_not_dns_labels_are_dropped() {
        // Their namespace and name would go into the API URL of the owner lookup.
        for (namespace, name) in [
            ("team", "ide?labelSelector=x"),
            ("team", "ide#"),
            ("team", "../secrets/x"),
            ("team%2f", "ide"),
            ("team/x", "ide"),
            ("", "ide"),
        ] {
            let event = kubernetes_event(namespace, name, Some("u-1"));
            assert!(
                WorkspaceEvent::from_event(&event).is_none(),
                "{namespace}/{name}"
            );
        }
    }

    #[test]
    fn since_returns_what_follows_without_replays() {
        let hub = EventHub::new(3);
        for id in [5, 7, 7, 6, 9, 11] {
            hub.push(event(id));
        }
        let ids = |v: Vec<Arc<WorkspaceEvent>>| v.iter().map(|e| e.id).collect::<Vec<_>>();
        // Capacity 3 keeps the newest; the duplicate 7 and the older 6 were dropped.
        assert_eq!(ids(hub.since(0)), vec![7, 9, 11]);
        assert_eq!(ids(hub.since(7)), vec![9, 11]);
        assert_eq!(ids(hub.since(8)), vec![9, 11]);
        assert_eq!(ids(hub.since(11)), Vec::<u64>::new());
    }

    #[test]
    fn types_filter_and_ids_parse() {
        let q = EventQuery {
            since: None,
            types: Some("Warning, normal".into()),
        };
        assert!(q.wants(&event(1)));
        let q = EventQuery {
            since: None,
            types: Some("Warning".into()),
        };
        assert!(!q.wants(&event(1)));
        assert_eq!(parse_id(None), Ok(0));
        assert_eq!(parse_id(Some("42")), Ok(42));
        assert!(parse_id(Some("abc")).unwrap_err().message.contains("abc"));
    }

    #[test]
    fn ids_are_strings_in_json() {
        let json = serde_json::to_value(event(42)).unwrap();
        assert_eq!(json["id"], "42");
        assert_eq!(json["type"], "Normal");
    }
}
