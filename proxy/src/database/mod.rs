//! The database API, `/api/databases/{namespace}/{name}/…`: the databases, tables and rows
//! of a GuildDatabase's servers, for its owner and for whoever RBAC allows the request's
//! verb on `guilddatabases/data` ([`request::verb`]), and the audit log of every write
//! ([`audit`]).
//!
//! The proxy connects as the database's admin, with the password the operator hands over in
//! GuildNet's own Secret (`--database-credentials-secret`, watched: [`AdminPasswords`]), to
//! the serving servers behind the database's client Service (from the EndpointSlices the
//! proxy watches anyway), through one connection per database ([`Pool`]). A caller who may
//! not use a database gets the same `403` whether or not it exists; `404` names the
//! database or table that does not exist; writes from a browser need a same-origin
//! `Origin`, as every write of the dashboard does. RethinkDB's `rethinkdb` system database
//! and GuildNet's `guildnet` (the audit log) are not served ([`request::check_user_database`]);
//! a database or table the GuildDatabase declares is not dropped here (the operator would
//! make it again, empty): remove it from the spec first.

pub mod audit;
pub mod request;
pub mod transfer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use guildnet_api::GuildDatabase;
use guildnet_api::database::facts::{AUDIT_DATABASE, AUDIT_TABLE, credentials_key};
use guildnet_rethinkdb::{Connection, Error as ReqlError, ErrorClass, Pool, Reql, Target, Term};
use http::{Method, StatusCode};
use k8s_openapi::ByteString;
use kube::runtime::reflector::ObjectRef;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{AppState, synced};
use crate::auth::Caller;
use crate::authz::Access;
use crate::dashboard::api::{check_path_parameters, writer};
use crate::error::ApiError;
use crate::handed;
use audit::Entry;
use request::{Written, check_name, check_user_database};

/// The user the proxy connects to databases as.
const ADMIN: &str = "admin";

/// The name of the driver port on a database's client Service.
const DRIVER_PORT_NAME: &str = "driver";

/// Seconds to wait before trying again while a database cannot be reached.
const UNAVAILABLE_RETRY_AFTER_SECONDS: u32 = 2;

/// The connections of the database API, one per GuildDatabase.
pub type Connections = Pool<(String, String)>;

/// The admin passwords the operator hands over, by [`credentials_key`]; clones share them.
#[derive(Clone, Default)]
pub struct AdminPasswords {
    passwords: Arc<RwLock<HashMap<String, String>>>,
}

impl AdminPasswords {
    /// The admin password of database `namespace/name`, once handed over.
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        self.passwords
            .read()
            .unwrap()
            .get(&credentials_key(namespace, name))
            .cloned()
    }

    /// Keeps the passwords current from a watch of the Secret `name` in `namespace`, until
    /// the stream ends.
    pub async fn run(self, client: kube::Client, namespace: String, name: String) {
        handed::follow(
            handed::watch(client, &namespace, &name),
            "the database credentials Secret",
            |data| {
                self.replace(data);
                std::future::ready(())
            },
        )
        .await;
    }

    /// Makes the passwords those of `data` (key → password).
    pub fn replace(&self, data: std::collections::BTreeMap<String, ByteString>) {
        let passwords = data
            .into_iter()
            .filter_map(|(key, value)| Some((key, String::from_utf8(value.0).ok()?)))
            .collect();
        *self.passwords.write().unwrap() = passwords;
    }
}

/// Where a request points: the GuildDatabase, and within its servers a database, a table
/// and a row, as far as the route goes.
#[derive(Debug, Deserialize)]
pub struct Place {
    namespace: String,
    name: String,
    db: Option<String>,
    table: Option<String>,
    key: Option<String>,
}

impl Place {
    fn db(&self) -> &str {
        self.db.as_deref().unwrap_or_default()
    }

    fn table(&self) -> &str {
        self.table.as_deref().unwrap_or_default()
    }
}

/// A request that may go ahead: who asked, and the connection to the database's servers.
struct Opened {
    caller: Caller,
    connection: Arc<Connection>,
    place: Place,
    state: AppState,
    /// The GuildDatabase, as the watch cache has it: what `spec.databases` declares is not
    /// dropped here.
    db: Arc<GuildDatabase>,
}

/// Authenticates and authorises a request with `method` to `place`, checks its names, and
/// connects to the database's servers.
async fn open(
    state: AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    method: &Method,
    place: Place,
) -> Result<Opened, ApiError> {
    let caller = if *method == Method::GET {
        state.auth.require(headers, peer.ip()).await?
    } else {
        writer(&state, headers, peer).await?
    };
    check_path_parameters(&place.namespace, &place.name)?;
    if let Some(db) = &place.db {
        check_user_database(db)?;
    }
    if let Some(table) = &place.table {
        check_name("table", table)?;
    }
    let db = authorised(&state, &caller, method, &place.namespace, &place.name).await?;
    let (namespace, name) = (place.namespace.as_str(), place.name.as_str());
    let not_ready = |why: String| {
        ApiError::unavailable("DatabaseNotReady", why, UNAVAILABLE_RETRY_AFTER_SECONDS)
    };
    let password = state
        .database_passwords
        .get(namespace, name)
        .ok_or_else(|| {
            not_ready(format!(
                "the operator has not handed over the admin password of {namespace}/{name} yet; \
             try again shortly"
            ))
        })?;
    let servers = state
        .endpoints
        .serving_on(namespace, name, DRIVER_PORT_NAME);
    if servers.is_empty() {
        return Err(not_ready(format!(
            "no server of GuildDatabase {namespace}/{name} is ready; see its status \
             (kubectl get guilddatabase {name} -n {namespace})"
        )));
    }
    let uid = db.metadata.uid.clone().unwrap_or_default();
    let key = (namespace.to_owned(), name.to_owned());
    let target = Target {
        uid: &uid,
        user: ADMIN,
        password: &password,
        servers: &servers,
    };
    let connection = state
        .database_connections
        .get(&key, target, |_| ())
        .await
        .map_err(|why| {
            ApiError::unavailable(
                "DatabaseUnavailable",
                format!(
                    "GuildDatabase {namespace}/{name} cannot be reached: {}",
                    why.message
                ),
                why.retry_in.map_or(UNAVAILABLE_RETRY_AFTER_SECONDS, |d| {
                    d.as_secs().max(1) as u32
                }),
            )
        })?;
    Ok(Opened {
        caller,
        connection,
        place,
        state,
        db,
    })
}

/// The GuildDatabase `namespace/name`, once `caller` is shown to be allowed the verb of
/// `method` on its data: its owner, or RBAC on `guilddatabases/data` (`403` alike whether
/// or not it exists; then `404` when it does not).
async fn authorised(
    state: &AppState,
    caller: &Caller,
    method: &Method,
    namespace: &str,
    name: &str,
) -> Result<Arc<GuildDatabase>, ApiError> {
    if !synced(&state.databases) {
        return Err(ApiError::unavailable(
            "NotReady",
            "the proxy is still reading the GuildDatabases; try again shortly",
            1,
        ));
    }
    let db = state.databases.get(&ObjectRef::new(name).within(namespace));
    let verb = request::verb(method);
    if !state
        .authz
        .may_use_database(&caller.identity, verb, namespace, name, db.as_deref())
        .await
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "you may not {verb} the data of GuildDatabase {namespace}/{name}: only its \
                 owner, or users RBAC allows `{verb}` on guilddatabases/data in {namespace}, may"
            ),
        ));
    }
    db.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("GuildDatabase {namespace}/{name} not found"),
        )
    })
}

impl Opened {
    /// Runs `term`, its failures answered as the caller should see them.
    async fn run(&self, term: Term) -> Result<Value, ApiError> {
        self.connection
            .run(term)
            .await
            .map_err(|error| self.failed(error))
    }

    fn failed(&self, error: ReqlError) -> ApiError {
        let (namespace, name) = (&self.place.namespace, &self.place.name);
        match error.class() {
            ErrorClass::Unreachable => {
                self.state
                    .database_connections
                    .close(&(namespace.clone(), name.clone()));
                ApiError::unavailable(
                    "DatabaseUnavailable",
                    format!("GuildDatabase {namespace}/{name} stopped answering: {error}"),
                    UNAVAILABLE_RETRY_AFTER_SECONDS,
                )
            }
            ErrorClass::AuthenticationFailed => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "DatabaseRefusedCredentials",
                format!("GuildDatabase {namespace}/{name} refused the admin password: {error}"),
            ),
            ErrorClass::SchemaMissing => {
                ApiError::new(StatusCode::NOT_FOUND, "NotFound", query_message(&error))
            }
            ErrorClass::ServerError => {
                let message = query_message(&error);
                if message.contains("already exists") {
                    ApiError::new(StatusCode::CONFLICT, "AlreadyExists", message)
                } else {
                    ApiError::new(StatusCode::BAD_GATEWAY, "DatabaseError", message)
                }
            }
        }
    }

    /// The primary key of the table the request names (which must exist: else `404`).
    async fn primary_key(&self) -> Result<String, ApiError> {
        let info = self
            .run(Term::table_info(self.place.db(), self.place.table()))
            .await?;
        Ok(info
            .get("primary_key")
            .and_then(Value::as_str)
            .unwrap_or("id")
            .to_owned())
    }

    /// Records a write and its outcome in the audit log, then answers with the outcome.
    async fn audited(
        &self,
        mut entry: Entry,
        outcome: Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        entry.outcome = match &outcome {
            Ok(result) => result.clone(),
            Err(error) => json!({"error": {"reason": error.reason, "message": error.message}}),
        };
        audit::record(
            &*self.connection,
            &self.place.namespace,
            &self.place.name,
            &entry,
        )
        .await;
        outcome
    }

    fn entry(&self, action: &'static str) -> Entry {
        let mut entry = Entry::now(&self.caller.identity.username, action, self.place.db());
        entry.table = self.place.table.clone();
        entry
    }

    /// `409` when the GuildDatabase declares the database (or, with `table`, that table).
    fn refuse_if_declared(&self, table: Option<&str>) -> Result<(), ApiError> {
        let db = self.place.db();
        let Some(database) = self.db.spec.databases.iter().find(|d| d.name == db) else {
            return Ok(());
        };
        let declared = match table {
            None => true,
            Some(table) => database.tables.iter().any(|t| t.name == table),
        };
        if !declared {
            return Ok(());
        }
        let what = table.map_or_else(|| format!("database {db}"), |t| format!("table {db}.{t}"));
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "Declared",
            format!(
                "{what} is declared in GuildDatabase {}/{} (spec.databases), and the operator \
                 would make it again, empty; remove it from the spec first",
                self.place.namespace, self.place.name
            ),
        ))
    }
}

/// The server's message of a failed query, without the kind in front.
fn query_message(error: &ReqlError) -> String {
    match error {
        ReqlError::Query { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The name a create request (`{"name": …}`) gives.
fn name_in(body: &Value, what: &str) -> Result<String, ApiError> {
    let name = body.get("name").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request(format!("send the new {what} as {{\"name\": \"…\"}}"))
    })?;
    check_name(what, name)?;
    Ok(name.to_owned())
}

/// The names of a `dbList` or `tableList` answer that `keep` says yes to, sorted.
fn sorted_names(names: &Value, keep: impl Fn(&str) -> bool) -> Vec<&str> {
    let mut items: Vec<&str> = names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|name| keep(name))
        .collect();
    items.sort_unstable();
    items
}

fn ok(value: Value) -> Response {
    Json(value).into_response()
}

/// `GET /api/databases`: the GuildDatabases whose data the caller may read — their own,
/// and all of each namespace where RBAC grants `get guilddatabases/data` — with their
/// status, sorted by namespace and name.
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use guildnet_api::database::facts::ConditionType;
    let caller = state.auth.require(&headers, peer.ip()).await?;
    let mut all = state.databases.state();
    all.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let owned = |db: &GuildDatabase| db.owner_id() == Some(caller.identity.owner_id());
    let foreign = all.iter().filter(|db| !owned(db));
    let readable = state
        .authz
        .namespaces_granting(
            &caller.identity,
            Access::database_data("get"),
            foreign.map(|db| db.metadata.namespace.clone().unwrap_or_default()),
        )
        .await;
    let mut items = Vec::new();
    for db in all {
        let namespace = db.metadata.namespace.clone().unwrap_or_default();
        if !owned(&db) && !readable.contains(&namespace) {
            continue;
        }
        let status = db.status.clone().unwrap_or_default();
        let schema =
            guildnet_api::common::find_condition(&status.conditions, ConditionType::SchemaApplied);
        items.push(json!({
            "namespace": namespace,
            "name": db.metadata.name,
            "replicas": db.replicas(),
            "readyReplicas": status.ready_replicas.unwrap_or(0),
            "phase": status.phase,
            "endpoint": status.endpoint,
            "schema": schema.map(|c| json!({"reason": c.reason, "message": c.message})),
            "databases": db.spec.databases.iter().map(|d| &d.name).collect::<Vec<_>>(),
        }));
    }
    Ok(ok(json!({ "items": items })))
}

/// `GET …/dbs`: the databases, GuildNet's and RethinkDB's own left out.
pub async fn list_databases(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
) -> Result<Response, ApiError> {
    let opened = open(state, &headers, peer, &Method::GET, place).await?;
    let names = opened.run(Term::db_list()).await?;
    Ok(ok(
        json!({ "items": sorted_names(&names, request::is_listed) }),
    ))
}

/// `POST …/dbs` `{"name": "shop"}`: makes a database (`409` when it exists).
pub async fn create_database(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = request::json_body(&body)?;
    let name = name_in(&body, "database")?;
    check_user_database(&name)?;
    let opened = open(state, &headers, peer, &Method::POST, place).await?;
    let mut entry = opened.entry("database.create");
    entry.database = name.clone();
    let outcome = opened.run(Term::db_create(&name)).await;
    let result = opened.audited(entry, outcome).await?;
    Ok((StatusCode::CREATED, Json(result)).into_response())
}

/// `DELETE …/dbs/{db}`: drops a database and everything in it, unless declared.
pub async fn drop_database(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
) -> Result<Response, ApiError> {
    let opened = open(state, &headers, peer, &Method::DELETE, place).await?;
    opened.refuse_if_declared(None)?;
    let outcome = opened.run(Term::db_drop(opened.place.db())).await;
    Ok(ok(opened
        .audited(opened.entry("database.drop"), outcome)
        .await?))
}

/// `GET …/dbs/{db}/tables`: the database's tables.
pub async fn list_tables(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
) -> Result<Response, ApiError> {
    let opened = open(state, &headers, peer, &Method::GET, place).await?;
    let names = opened.run(Term::table_list(opened.place.db())).await?;
    Ok(ok(json!({ "items": sorted_names(&names, |_| true) })))
}

/// `POST …/dbs/{db}/tables` `{"name": "items", "primaryKey": "sku"}` (primary key `id`
/// when not given): makes a table.
pub async fn create_table(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = request::json_body(&body)?;
    let name = name_in(&body, "table")?;
    let primary_key = match body.get("primaryKey") {
        None => "id",
        Some(Value::String(key)) if !key.is_empty() => key,
        Some(_) => {
            return Err(ApiError::bad_request(
                "primaryKey must be the name of a field, e.g. \"sku\" (default \"id\")",
            ));
        }
    };
    let opened = open(state, &headers, peer, &Method::POST, place).await?;
    let mut entry = opened.entry("table.create");
    entry.table = Some(name.clone());
    let outcome = opened
        .run(Term::table_create(opened.place.db(), &name, primary_key))
        .await;
    let result = opened.audited(entry, outcome).await?;
    Ok((StatusCode::CREATED, Json(result)).into_response())
}

/// `DELETE …/dbs/{db}/tables/{table}`: drops a table and its rows, unless declared.
pub async fn drop_table(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
) -> Result<Response, ApiError> {
    let opened = open(state, &headers, peer, &Method::DELETE, place).await?;
    opened.refuse_if_declared(Some(opened.place.table()))?;
    let outcome = opened
        .run(Term::table_drop(opened.place.db(), opened.place.table()))
        .await;
    Ok(ok(opened
        .audited(opened.entry("table.drop"), outcome)
        .await?))
}

/// `GET …/tables/{table}/rows?limit=&after=&filter=field=value`: a page of rows in
/// primary-key order, and `next`, the `after` of the next page (null on the last).
pub async fn list_rows(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let page = request::page_query(query.as_deref())?;
    let opened = open(state, &headers, peer, &Method::GET, place).await?;
    let primary_key = opened.primary_key().await?;
    let rows = opened
        .run(Term::page(
            opened.place.db(),
            opened.place.table(),
            &primary_key,
            page.after.as_ref(),
            page.matching.as_ref(),
            page.limit,
        ))
        .await?;
    let items = rows.as_array().cloned().unwrap_or_default();
    // A full page may have more after it; a short one is the last.
    let next = (items.len() == page.limit as usize)
        .then(|| items.last().and_then(|row| row.get(&primary_key)))
        .flatten()
        .map(Value::to_string);
    Ok(ok(json!({
        "primaryKey": primary_key,
        "items": items,
        "next": next,
    })))
}

/// `POST …/tables/{table}/rows` with one row or an array of rows: inserts them; a key that
/// is taken is refused (`409` when every row was), never overwritten.
pub async fn insert_rows(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let documents = request::documents_to_insert(request::json_body(&body)?)?;
    let opened = open(state, &headers, peer, &Method::POST, place).await?;
    opened.primary_key().await?;
    let outcome = opened
        .run(Term::insert(
            opened.place.db(),
            opened.place.table(),
            &documents,
        ))
        .await
        .and_then(|result| match Written::of(&result).refusal() {
            Some(refused) => Err(refused),
            None => Ok(result),
        });
    let result = opened.audited(opened.entry("rows.insert"), outcome).await?;
    Ok((StatusCode::CREATED, Json(result)).into_response())
}

/// `GET …/rows/{key}` (`?keyType=number` for a number key): one row, or `404`.
pub async fn get_row(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let key = request::row_key(place.key.as_deref().unwrap_or_default(), query.as_deref())?;
    let opened = open(state, &headers, peer, &Method::GET, place).await?;
    opened.primary_key().await?;
    let row = opened
        .run(Term::get(opened.place.db(), opened.place.table(), &key))
        .await?;
    if row.is_null() {
        return Err(no_such_row(&opened, &key));
    }
    Ok(ok(row))
}

fn no_such_row(opened: &Opened, key: &Value) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "table {}.{} has no row {key}",
            opened.place.db(),
            opened.place.table()
        ),
    )
}

/// `PUT …/rows/{key}`, `PATCH …/rows/{key}` and `DELETE …/rows/{key}`: replaces the row
/// (or makes it), merges fields into it, or deletes it; `404` when an update or delete
/// finds no such row.
pub async fn write_row(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    Path(place): Path<Place>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = request::row_key(place.key.as_deref().unwrap_or_default(), query.as_deref())?;
    let body = match method {
        Method::DELETE => Value::Null,
        _ => request::json_body(&body)?,
    };
    let opened = open(state, &headers, peer, &method, place).await?;
    let primary_key = opened.primary_key().await?;
    let (db, table) = (opened.place.db(), opened.place.table());
    let (action, term) = match method {
        Method::PUT => (
            "row.replace",
            Term::replace(
                db,
                table,
                &key,
                request::replacement(body, &primary_key, &key)?,
            ),
        ),
        Method::PATCH => (
            "row.update",
            Term::update(db, table, &key, request::changes(body, &primary_key, &key)?),
        ),
        _ => ("row.delete", Term::delete(db, table, &key)),
    };
    let outcome = opened.run(term).await.and_then(|result| {
        let written = Written::of(&result);
        if let Some(refused) = written.refusal() {
            return Err(refused);
        }
        if written.changed == 0 && written.skipped > 0 {
            return Err(no_such_row(&opened, &key));
        }
        Ok(result)
    });
    let mut entry = opened.entry(action);
    entry.key = Some(key);
    Ok(ok(opened.audited(entry, outcome).await?))
}

/// `GET …/audit?limit=`: the newest writes first (at most `limit`, default 50).
pub async fn audit_log(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let page = request::page_query(query.as_deref())?;
    if page.after.is_some() || page.matching.is_some() {
        return Err(ApiError::bad_request(
            "the audit log takes limit only: the newest writes come first",
        ));
    }
    let opened = open(state, &headers, peer, &Method::GET, place).await?;
    let rows = opened
        .connection
        .run(Term::newest(AUDIT_DATABASE, AUDIT_TABLE, "at", page.limit))
        .await;
    let items = match rows {
        Ok(rows) => rows,
        // Nothing written yet: no audit table either.
        Err(error) if error.class() == ErrorClass::SchemaMissing => json!([]),
        Err(error) => return Err(opened.failed(error)),
    };
    Ok(ok(json!({ "items": items })))
}

/// `GET …/tables/{table}/export?format=ndjson|csv`: every row in primary-key order,
/// streamed batch by batch as the server sends them (a download: `Content-Disposition`).
/// CSV's columns are the primary key and the fields of the first batch.
pub async fn export(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let format =
        transfer::Format::parse(only_parameter(query.as_deref(), "format")?.as_deref(), true)?;
    let opened = open(state, &headers, peer, &Method::GET, place).await?;
    let primary_key = opened.primary_key().await?;
    let (db, table) = (
        opened.place.db().to_owned(),
        opened.place.table().to_owned(),
    );
    let mut cursor = opened
        .connection
        .cursor(
            Term::by_key(&db, &table, &primary_key),
            Some(opened.state.upstream_timeout),
        )
        .await
        .map_err(|error| opened.failed(error))?;
    let body = async_stream(move |sender| async move {
        let mut columns: Option<Vec<String>> = None;
        while let Some(batch) = cursor.next_batch().await {
            let rows = match batch {
                Ok(rows) => rows,
                Err(error) => {
                    // The download ends short: the client sees it broken off.
                    tracing::warn!(%error, db, table, "export broken off");
                    let _ = sender
                        .send(Err(std::io::Error::other(error.to_string())))
                        .await;
                    return;
                }
            };
            let chunk = match format {
                transfer::Format::Csv => {
                    let header = columns.is_none();
                    let columns =
                        columns.get_or_insert_with(|| transfer::csv_columns(&primary_key, &rows));
                    transfer::csv_records(columns, &rows, header)
                }
                _ => transfer::ndjson_lines(&rows),
            };
            if !chunk.is_empty() && sender.send(Ok(Bytes::from(chunk))).await.is_err() {
                return; // The client went away: the cursor is dropped, the query stopped.
            }
        }
    });
    let file = format!(
        "{}.{}.{}",
        opened.place.db(),
        opened.place.table(),
        format.extension()
    );
    Ok((
        [
            (http::header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// A response body fed by `produce` through a small channel (backpressure: the producer
/// waits while the client reads).
fn async_stream<F, Fut>(produce: F) -> axum::body::Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(sender));
    axum::body::Body::from_stream(futures::stream::unfold(receiver, |mut receiver| async {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    }))
}

/// The value of the one query parameter `name` a route takes; any other is refused.
fn only_parameter(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    let mut value = None;
    for (key, given) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key != name {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {key:?}: this takes {name} only"
            )));
        }
        value = Some(given.into_owned());
    }
    Ok(value)
}

/// `POST …/tables/{table}/import?format=ndjson|json|csv&conflict=error|replace|update`:
/// the file's rows inserted in batches of 500; a report of how many went which way and the
/// server's reasons for those refused (`409` when every row was). A file that is not rows
/// is refused whole, naming the line, before anything is written.
pub async fn import(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (mut format, mut conflict) = (None, None);
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        match &*key {
            "format" => format = Some(value.into_owned()),
            "conflict" => conflict = Some(value.into_owned()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: an import takes format and conflict"
                )));
            }
        }
    }
    let format = transfer::Format::parse(format.as_deref(), false)?;
    let conflict = transfer::conflict_mode(conflict.as_deref())?;
    let rows = transfer::import_rows(format, &body)?;
    let opened = open(state, &headers, peer, &Method::POST, place).await?;
    opened.primary_key().await?;
    let mut report = transfer::Report {
        rows: rows.len(),
        ..transfer::Report::default()
    };
    let mut failed = None;
    for batch in rows.chunks(transfer::IMPORT_BATCH) {
        let term =
            Term::insert_on_conflict(opened.place.db(), opened.place.table(), batch, conflict);
        match opened.run(term).await {
            Ok(result) => report.add(&result),
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    let outcome = serde_json::to_value(&report).unwrap_or_default();
    let mut entry = opened.entry("rows.import");
    entry.outcome = outcome.clone();
    let answer = match failed {
        // Batches before it were written: say how far it got.
        Some(error) => Err(ApiError {
            message: format!(
                "{} (after {} rows written)",
                error.message,
                report.inserted + report.replaced
            ),
            ..error
        }),
        None => Ok(outcome),
    };
    let answer = opened.audited(entry, answer).await?;
    Ok((report.status(), Json(answer)).into_response())
}

/// `GET …/users`: the users the GuildDatabase declares, their grants, and whether the
/// operator has applied them (passwords are never shown, nor their Secrets' contents).
pub async fn users(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
) -> Result<Response, ApiError> {
    let caller = state.auth.require(&headers, peer.ip()).await?;
    check_path_parameters(&place.namespace, &place.name)?;
    let db = authorised(&state, &caller, &Method::GET, &place.namespace, &place.name).await?;
    let applied: Vec<&str> = db
        .status
        .iter()
        .flat_map(|s| s.users.iter().map(|u| u.name.as_str()))
        .collect();
    let items: Vec<Value> = db
        .spec
        .users
        .iter()
        .map(|user| {
            json!({
                "name": user.name,
                "passwordSecret": user.password_secret_ref.name,
                "grants": user.grants,
                "applied": applied.contains(&user.name.as_str()),
            })
        })
        .collect();
    Ok(ok(json!({ "items": items })))
}

/// Open feeds by user, and by database.
type FeedCounts = Arc<std::sync::Mutex<(HashMap<String, usize>, HashMap<(String, String), usize>)>>;

/// How many changefeeds each user and each database holds open, within the
/// `--max-database-feeds-per-*` bounds.
pub struct Feeds {
    open: FeedCounts,
    per_user: usize,
    per_database: usize,
}

/// One open feed's place among them; given back when dropped (the client went away).
pub struct FeedSlot {
    open: FeedCounts,
    user: String,
    database: (String, String),
}

impl Feeds {
    /// At most `per_user` feeds per user and `per_database` per database.
    pub fn new(per_user: usize, per_database: usize) -> Self {
        Self {
            open: Arc::default(),
            per_user,
            per_database,
        }
    }

    /// A place for a feed of `user` on `database` (namespace, name), or `429` saying which
    /// bound is reached.
    pub fn take(&self, user: &str, database: (String, String)) -> Result<FeedSlot, ApiError> {
        let mut open = self.open.lock().unwrap();
        let users = open.0.get(user).copied().unwrap_or(0);
        let on_database = open.1.get(&database).copied().unwrap_or(0);
        let full = if users >= self.per_user {
            Some(format!(
                "you have {users} changefeeds open, the most one user may; close one"
            ))
        } else if on_database >= self.per_database {
            Some(format!(
                "{on_database} changefeeds are open on GuildDatabase {}/{}, the most it may have",
                database.0, database.1
            ))
        } else {
            None
        };
        if let Some(message) = full {
            return Err(ApiError {
                retry_after: Some(UNAVAILABLE_RETRY_AFTER_SECONDS),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyFeeds", message)
            });
        }
        *open.0.entry(user.to_owned()).or_default() += 1;
        *open.1.entry(database.clone()).or_default() += 1;
        Ok(FeedSlot {
            open: self.open.clone(),
            user: user.to_owned(),
            database,
        })
    }

    /// Feeds open now.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap().1.values().sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap();
        let (users, databases) = &mut *open;
        if let Some(count) = users.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                users.remove(&self.user);
            }
        }
        if let Some(count) = databases.get_mut(&self.database) {
            *count -= 1;
            if *count == 0 {
                databases.remove(&self.database);
            }
        }
    }
}

/// `GET /sse/databases/{namespace}/{name}/{db}/{table}/changes`: the table's changes as
/// they happen, one `change` event each (`{"old_val", "new_val"}`), with a comment every
/// 15 s to keep the connection open; the feed is stopped on the server when the client
/// goes. Each user and each database may hold only so many at once (`429`).
pub async fn changes(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(place): Path<Place>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let opened = open(state, &headers, peer, &Method::GET, place).await?;
    opened.primary_key().await?;
    let slot = opened.state.database_feeds.take(
        &opened.caller.identity.username,
        (opened.place.namespace.clone(), opened.place.name.clone()),
    )?;
    let cursor = opened
        .connection
        .cursor(Term::changes(opened.place.db(), opened.place.table()), None)
        .await
        .map_err(|error| opened.failed(error))?;
    // The slot goes with the stream: dropped (the client gone) with the cursor, which
    // stops the feed on the server.
    let state = (cursor, std::collections::VecDeque::new(), slot);
    let events = futures::stream::unfold(state, |(mut cursor, mut pending, slot)| async move {
        loop {
            if let Some(event) = pending.pop_front() {
                let event: Result<Event, std::convert::Infallible> = Ok(event);
                return Some((event, (cursor, pending, slot)));
            }
            match cursor.next_batch().await? {
                Ok(changes) => pending.extend(changes.into_iter().map(|change| {
                    Event::default()
                        .event("change")
                        .json_data(change)
                        .unwrap_or_default()
                })),
                Err(error) => {
                    tracing::info!(%error, "changefeed ended");
                    return None;
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_are_bounded_per_user_and_per_database_and_given_back_when_closed() {
        let feeds = Feeds::new(2, 3);
        let db = || ("team".to_owned(), "inventory".to_owned());
        let alice: Vec<_> = (0..2).map(|_| feeds.take("alice", db()).unwrap()).collect();
        let refused = feeds.take("alice", db()).err().unwrap();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.message.contains("one user"), "{}", refused.message);
        let bob = feeds.take("bob", db()).unwrap();
        let full = feeds.take("carol", db()).err().unwrap();
        assert!(full.message.contains("team/inventory"), "{}", full.message);
        // Another database is not this one's bound.
        let elsewhere = feeds
            .take("carol", ("team".into(), "other".into()))
            .unwrap();
        drop(alice);
        assert!(feeds.take("alice", db()).is_ok());
        drop((bob, elsewhere));
        assert!(feeds.is_empty());
    }
}
