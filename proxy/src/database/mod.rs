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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use guildnet_api::database::facts::{AUDIT_DATABASE, AUDIT_TABLE, credentials_key};
use guildnet_rethinkdb::{Connection, Error as ReqlError, ErrorClass, Pool, Reql, Target, Term};
use http::{Method, StatusCode};
use k8s_openapi::ByteString;
use kube::runtime::reflector::ObjectRef;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{AppState, synced};
use crate::auth::Caller;
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
    /// Names declared in `spec.databases` (database, and its tables), which are not dropped
    /// here.
    declared: Vec<(String, Vec<String>)>,
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
    if !synced(&state.databases) {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NotReady",
            "the proxy is still reading the GuildDatabases; try again shortly",
        );
        error.retry_after = Some(1);
        return Err(error);
    }
    let (namespace, name) = (place.namespace.as_str(), place.name.as_str());
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
    let Some(db) = db else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("GuildDatabase {namespace}/{name} not found"),
        ));
    };
    let not_ready = |why: String| {
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "DatabaseNotReady", why);
        error.retry_after = Some(UNAVAILABLE_RETRY_AFTER_SECONDS);
        error
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
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "DatabaseUnavailable",
                format!(
                    "GuildDatabase {namespace}/{name} cannot be reached: {}",
                    why.message
                ),
            );
            error.retry_after = Some(why.retry_in.map_or(UNAVAILABLE_RETRY_AFTER_SECONDS, |d| {
                d.as_secs().max(1) as u32
            }));
            error
        })?;
    let declared = db
        .spec
        .databases
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                d.tables.iter().map(|t| t.name.clone()).collect(),
            )
        })
        .collect();
    Ok(Opened {
        caller,
        connection,
        place,
        state,
        declared,
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
                let mut api = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "DatabaseUnavailable",
                    format!("GuildDatabase {namespace}/{name} stopped answering: {error}"),
                );
                api.retry_after = Some(UNAVAILABLE_RETRY_AFTER_SECONDS);
                api
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
        let Some((_, tables)) = self.declared.iter().find(|(name, _)| name == db) else {
            return Ok(());
        };
        let declared = match table {
            None => true,
            Some(table) => tables.iter().any(|t| t == table),
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

fn ok(value: Value) -> Response {
    Json(value).into_response()
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
    let mut items: Vec<&str> = names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|db| request::is_listed(db))
        .collect();
    items.sort_unstable();
    Ok(ok(json!({ "items": items })))
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
    let mut items: Vec<&str> = names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    items.sort_unstable();
    Ok(ok(json!({ "items": items })))
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
