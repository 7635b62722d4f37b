//! The GuildDatabase controller: each GuildDatabase becomes, by server-side apply with
//! owner references, a StatefulSet of RethinkDB servers, a headless Service they join each
//! other through, a client Service, a PodDisruptionBudget with more than one server, and
//! an admin password Secret made once; once a server is ready, the declared databases,
//! tables and users are kept in the servers ([`schema`], through one connection per
//! database, a [`Pool`]); its status follows both (reconcile as dereference → build →
//! apply → update status). The admin password is handed to the proxy, for the database
//! API, in GuildNet's own Secret (`--database-credentials-secret`, see
//! [`handoff`](crate::reconcile::handoff)), and taken back once the database is gone.

pub mod builders;
pub mod schema;
pub mod status;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guildnet_api::GuildDatabase;
use guildnet_api::common::find_condition;
use guildnet_api::database::GuildDatabaseStatus;
use guildnet_api::database::facts::{
    ADMIN_PASSWORD_KEY, ConditionType, DRIVER_PORT, Reason, admin_secret_name, credentials_key,
    from_credentials_key,
};
use guildnet_api::labels;
use guildnet_rethinkdb::{ErrorClass, Pool, Target, Unavailable};
use guildnet_runtime::watch::synced;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::metrics::{DATABASE_CONTROLLER, Metrics};
use crate::reconcile::apply::{
    self as child, Owner, VersionBy, Written, apply_if_changed, apply_status, create_once,
    delete_owned,
};
use crate::reconcile::events::{Announced, Publisher};
use crate::reconcile::handoff::{CredentialsSecret, Handed};
use crate::reconcile::lead::{self, Term};
use crate::workspace::generate_password;

/// How often a settled database is reconciled anyway.
const RESYNC: Duration = Duration::from_secs(300);

/// How soon a database whose name is taken looks again.
const NAME_CONFLICT_RECHECK: Duration = Duration::from_secs(60);

/// How often a declared schema is checked (a table dropped out of band is made again).
const SCHEMA_RECHECK: Duration = Duration::from_secs(30);

/// How often connections of databases that are gone are closed.
const CONNECTION_SWEEP: Duration = Duration::from_secs(30);

/// How long connecting to a server (TCP and handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a server may take to answer one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a reconcile did not finish; retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read or write failed at the API server.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Not read from the API server.
    #[error(transparent)]
    Metadata(#[from] builders::MissingMetadata),
}

/// What the reconciles share.
pub struct Context {
    client: Client,
    metrics: Arc<Metrics>,
    /// Events as this replica: a database entering a phase.
    events: Publisher,
    /// The phase each database was last announced in, by uid (a lagging cache must not
    /// announce a transition twice).
    announced: Mutex<Announced<&'static str>>,
    /// The `SchemaApplied` reason each database was last announced with, by uid.
    announced_schema: Mutex<Announced<Reason>>,
    /// What databases are made of (`guildnet.io/database`), as the watches show them, so a
    /// child already as asked is not written again.
    servers: Store<StatefulSet>,
    services: Store<Service>,
    budgets: Store<PodDisruptionBudget>,
    /// The versions this replica last wrote.
    written: Written,
    /// The GuildDatabases, as the controller's watch shows them.
    databases: Store<GuildDatabase>,
    /// One connection per database with a declared schema.
    connections: Pool<ObjectRef<GuildDatabase>>,
    /// Where each database's admin password is handed to the proxy.
    credentials: CredentialsSecret,
    /// What that Secret holds for each database, as far as this replica knows.
    handed: Mutex<HashMap<ObjectRef<GuildDatabase>, Handed>>,
}

/// Reconciles every GuildDatabase until `term` ends; the watches start with it, so a new
/// leader lists them afresh.
pub async fn lead(
    client: Client,
    metrics: Arc<Metrics>,
    identity: &str,
    credentials: CredentialsSecret,
    term: Term<impl Future<Output = ()>, impl Future<Output = ()>>,
) {
    let owned = watcher::Config::default().labels(labels::DATABASE);
    let (servers, stateful_sets) = cached(Api::<StatefulSet>::all(client.clone()), &owned);
    let (services, service_changes) = cached(Api::<Service>::all(client.clone()), &owned);
    let (budgets, budget_changes) = cached(Api::<PodDisruptionBudget>::all(client.clone()), &owned);
    let controller = Controller::new(
        Api::<GuildDatabase>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns_stream(stateful_sets)
    .owns_stream(service_changes)
    .owns_stream(budget_changes);
    let databases = controller.store();
    let ctx = Arc::new(Context {
        events: Publisher::new(client.clone(), identity),
        client,
        metrics,
        announced: Mutex::default(),
        announced_schema: Mutex::default(),
        servers,
        services,
        budgets,
        written: Written::default(),
        databases,
        connections: Pool::new(CONNECT_TIMEOUT, QUERY_TIMEOUT),
        credentials,
        handed: Mutex::default(),
    });
    let sweep = {
        let ctx = ctx.clone();
        async move {
            let mut every = tokio::time::interval(CONNECTION_SWEEP);
            loop {
                every.tick().await;
                // Until the watch has listed every database, every key would look stray.
                if !synced(&ctx.databases) {
                    continue;
                }
                ctx.connections.retain(|key, uid| {
                    ctx.databases
                        .get(key)
                        .is_some_and(|d| d.metadata.uid.as_deref() == Some(uid))
                });
                take_back_strays(&ctx).await;
            }
        }
    };
    lead::run(controller, reconcile, error_policy, ctx, sweep, term).await;
}

/// Removes from the proxy's credentials Secret the admin passwords of databases that are
/// gone (deleted: nothing is reconciled after that, so this sweep takes their keys back).
async fn take_back_strays(ctx: &Context) {
    let keys = match ctx.credentials.keys(&ctx.client).await {
        Ok(keys) => keys,
        Err(error) => {
            return warn!(%error, "could not read the proxy's database credentials Secret");
        }
    };
    for key in keys {
        let exists = from_credentials_key(&key).is_some_and(|(namespace, name)| {
            ctx.databases
                .get(&ObjectRef::new(name).within(namespace))
                .is_some()
        });
        if exists {
            continue;
        }
        match ctx
            .credentials
            .hand(&ctx.client, &key, None, Handed::Unknown)
            .await
        {
            Ok(_) => {
                info!(
                    key,
                    "took back the admin password of a database that is gone"
                );
                if let Some((namespace, name)) = from_credentials_key(&key) {
                    let db = ObjectRef::new(name).within(namespace);
                    ctx.handed.lock().unwrap().remove(&db);
                }
            }
            Err(error) => {
                warn!(key, %error, "could not take a database's admin password back from the proxy")
            }
        }
    }
}

/// Hands the proxy `db`'s admin password (or takes it back, `None`), unless it holds it
/// already.
async fn hand_admin_password(db: &GuildDatabase, password: Option<&str>, ctx: &Context) {
    let object = ObjectRef::from_obj(db);
    let key = credentials_key(&db.namespace().unwrap_or_default(), &db.name_any());
    let handed = ctx
        .handed
        .lock()
        .unwrap()
        .get(&object)
        .copied()
        .unwrap_or(Handed::Unknown);
    let now = match ctx
        .credentials
        .hand(&ctx.client, &key, password, handed)
        .await
    {
        Ok(now) => now,
        Err(error) => {
            warn!(key, %error, "could not hand the proxy the database's admin password");
            Handed::Unknown
        }
    };
    ctx.handed.lock().unwrap().insert(object, now);
}

/// A store of `api`'s objects that `config` selects, without their managed fields, and
/// the stream of their changes, deletions included, that keeps it (for the controller to
/// own: a child deleted out of band wakes its database).
fn cached<K>(
    api: Api<K>,
    config: &watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let changes = watcher(api, config.clone())
        .default_backoff()
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .touched_objects();
    (store, changes)
}

fn error_policy(db: Arc<GuildDatabase>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = db.namespace(), name = %db.name_any(), %error, "GuildDatabase reconcile failed; retrying");
    let kind = match error {
        Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
        Error::Kube(_) => "api",
        Error::Metadata(_) => "invalid_spec",
    };
    ctx.metrics.reconcile_failed(DATABASE_CONTROLLER, kind);
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(db: Arc<GuildDatabase>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_database(&db, &ctx).await;
    ctx.metrics
        .reconciled(DATABASE_CONTROLLER, started.elapsed());
    result
}

async fn reconcile_database(db: &GuildDatabase, ctx: &Context) -> Result<Action, Error> {
    if db.metadata.deletion_timestamp.is_some() {
        // Owner references hand everything but the volumes to the garbage collector.
        return Ok(Action::await_change());
    }
    let namespace = db.namespace().unwrap_or_default();
    let name = db.name_any();
    let children = builders::children(db)?;
    let uid = db.uid().unwrap_or_default();
    let owner = Owner {
        uid: &uid,
        labels: &[],
        leftover: None,
    };
    let client = &ctx.client;
    let admin = builders::admin_secret(db, &generate_password())?;
    let applied = async {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        create_once(&secrets, &admin, &owner).await?;
        let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
        for service in [&children.cluster_service, &children.client_service] {
            let cached = ctx
                .services
                .get(&ObjectRef::new(&service.name_any()).within(&namespace));
            let cached = cached.as_deref().map(|s| &s.metadata);
            apply_if_changed(
                &services,
                service,
                &owner,
                cached,
                &ctx.written,
                VersionBy::ResourceVersion,
            )
            .await?;
        }
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
        let cached_budget = ctx.budgets.get(&ObjectRef::new(&name).within(&namespace));
        match &children.disruption_budget {
            Some(budget) => {
                let cached = cached_budget.as_deref().map(|b| &b.metadata);
                apply_if_changed(
                    &budgets,
                    budget,
                    &owner,
                    cached,
                    &ctx.written,
                    VersionBy::Generation,
                )
                .await?;
            }
            None if cached_budget.is_some() => delete_owned(&budgets, &name, &owner).await?,
            None => {}
        }
        let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
        let cached = ctx.servers.get(&ObjectRef::new(&name).within(&namespace));
        let written = apply_if_changed(
            &stateful_sets,
            &children.stateful_set,
            &owner,
            cached.as_deref().map(|s| &s.metadata),
            &ctx.written,
            VersionBy::Generation,
        )
        .await?;
        // The status reads the servers as written now, or as the cache shows them.
        let servers = written.or_else(|| cached.as_deref().cloned());
        Ok::<_, child::Error>(servers)
    };
    let (servers, failure) = match applied.await {
        Ok(servers) => (servers, None),
        Err(child::Error::NameConflict(conflict)) => (None, Some(conflict.to_string())),
        Err(child::Error::Kube(error)) => return Err(error.into()),
    };
    let schema = match failure {
        Some(_) => schema::Checked::NoServerReady,
        None => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let admin =
                secret_value(&secrets, &admin_secret_name(&name), ADMIN_PASSWORD_KEY).await?;
            hand_admin_password(db, admin.as_deref().ok(), ctx).await;
            check_schema(
                db,
                servers.as_ref(),
                admin.as_deref().map_err(String::as_str),
                ctx,
            )
            .await?
        }
    };
    let next = status::compute(
        db,
        servers.as_ref(),
        failure.as_deref(),
        &schema,
        Timestamp::now(),
    );
    // Transition times move only with a flip, so an unchanged status compares equal.
    if db.status.as_ref() != Some(&next) {
        let api: Api<GuildDatabase> = Api::namespaced(client.clone(), &namespace);
        match apply_status(&api, &name, &next).await {
            Ok(_) => {
                announce(db, &next, ctx);
                announce_schema(db, &next, ctx);
            }

            // Deleted since this reconcile read it: nothing left to report.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(match (failure, schema) {
        (Some(_), _) => Action::requeue(NAME_CONFLICT_RECHECK),
        (None, schema::Checked::NothingDeclared) => Action::requeue(RESYNC),
        (None, schema::Checked::Unavailable(why)) => {
            Action::requeue(why.retry_in.unwrap_or(SCHEMA_RECHECK).min(SCHEMA_RECHECK))
        }
        (None, _) => Action::requeue(SCHEMA_RECHECK),
    })
}

/// Applies the declared schema of `db` to its servers (`servers` is its StatefulSet) once
/// one is ready, as admin with `admin` (or why its password could not be read), and says
/// what it found.
async fn check_schema(
    db: &GuildDatabase,
    servers: Option<&StatefulSet>,
    admin: Result<&str, &str>,
    ctx: &Context,
) -> Result<schema::Checked, Error> {
    use schema::{Checked, Declared};
    let key = ObjectRef::from_obj(db);
    if !db.declares_schema() {
        ctx.connections.close(&key);
        return Ok(Checked::NothingDeclared);
    }
    let ready = servers
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if ready == 0 {
        return Ok(Checked::NoServerReady);
    }
    let namespace = db.namespace().unwrap_or_default();
    let name = db.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let admin = match admin {
        Ok(password) => password,
        Err(why) => {
            return Ok(Checked::Unavailable(Unavailable {
                class: ErrorClass::AuthenticationFailed,
                message: why.to_owned(),
                retry_in: None,
            }));
        }
    };
    let mut users = Vec::with_capacity(db.spec.users.len());
    for user in &db.spec.users {
        let password = secret_value(
            &secrets,
            &user.password_secret_ref.name,
            user.password_key(),
        )
        .await?;
        users.push((user, password));
    }
    let addresses = ready_servers(&ctx.client, &namespace, &name).await?;
    let uid = db.uid().unwrap_or_default();
    let connection = match ctx
        .connections
        .get(
            &key,
            Target {
                uid: &uid,
                user: "admin",
                password: admin,
                servers: &addresses,
            },
            |class| ctx.metrics.connection_error(class),
        )
        .await
    {
        Ok(connection) => connection,
        Err(why) => return Ok(Checked::Unavailable(why)),
    };
    let declared = Declared {
        databases: &db.spec.databases,
        users,
    };
    let applied = db
        .status
        .as_ref()
        .map(|s| s.users.as_slice())
        .unwrap_or_default();
    Ok(
        match schema::apply(&*connection, &declared, applied, admin, &ctx.metrics).await {
            Ok(outcome) => {
                if connection.is_broken() {
                    ctx.connections.close(&key);
                }
                Checked::Applied(outcome)
            }
            Err(error) => {
                if error.class() == ErrorClass::Unreachable {
                    ctx.connections.close(&key);
                }
                Checked::Unavailable(Unavailable::from(&error))
            }
        },
    )
}

/// The value under `key` of Secret `name`, or why there is none.
async fn secret_value(
    secrets: &Api<Secret>,
    name: &str,
    key: &str,
) -> Result<Result<String, String>, kube::Error> {
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(Err(format!("Secret {name} not found")));
    };
    let value = secret.data.as_ref().and_then(|d| d.get(key));
    Ok(match value.map(|v| String::from_utf8(v.0.clone())) {
        Some(Ok(value)) => Ok(value),
        Some(Err(_)) => Err(format!("Secret {name} key {key} is not UTF-8 text")),
        None => Err(format!("Secret {name} has no key {key}")),
    })
}

/// The driver addresses of the ready servers behind the database's client Service, from
/// its EndpointSlices: pod IPs, so the operator reaches them in the cluster and from
/// outside it alike.
async fn ready_servers(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<SocketAddr>, kube::Error> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let mut addresses: Vec<SocketAddr> = slices
        .list(&params)
        .await?
        .items
        .iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| &e.addresses)
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, DRIVER_PORT as u16))
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// An Event when `db` enters the phase of `status` (as this replica last announced it).
fn announce(db: &GuildDatabase, status: &GuildDatabaseStatus, ctx: &Context) {
    let phase = match status.phase.as_deref() {
        Some(status::RUNNING) => status::RUNNING,
        Some(status::FAILED) => status::FAILED,
        _ => status::PENDING,
    };
    let uid = db.uid().unwrap_or_default();
    if !ctx.announced.lock().unwrap().phase(&uid, phase) {
        return;
    }
    let ready = find_condition(&status.conditions, ConditionType::Ready);
    let failed = find_condition(&status.conditions, ConditionType::Failed);
    let (type_, note) = match phase {
        status::FAILED => (EventType::Warning, failed.map(|c| c.message.clone())),
        _ => (EventType::Normal, ready.map(|c| c.message.clone())),
    };
    info!(namespace = db.namespace(), name = %db.name_any(), phase, "GuildDatabase phase");
    ctx.events
        .publish(&db.object_ref(&()), type_, phase, &note.unwrap_or_default());
}

/// An Event when the `SchemaApplied` reason of `db` changes to one worth telling: the
/// schema in place (Normal), or what keeps it from being so (Warning). Waiting for a first
/// server and having nothing declared are not told.
fn announce_schema(db: &GuildDatabase, status: &GuildDatabaseStatus, ctx: &Context) {
    let Some(condition) = find_condition(&status.conditions, ConditionType::SchemaApplied) else {
        return;
    };
    let Some(&reason) = Reason::ALL.iter().find(|r| r.as_str() == condition.reason) else {
        return;
    };
    let uid = db.uid().unwrap_or_default();
    if !ctx.announced_schema.lock().unwrap().phase(&uid, reason)
        || matches!(reason, Reason::NoServerReady | Reason::NothingDeclared)
    {
        return;
    }
    let type_ = match reason {
        Reason::AsDeclared => EventType::Normal,
        _ => EventType::Warning,
    };
    info!(namespace = db.namespace(), name = %db.name_any(), %reason, message = %condition.message, "GuildDatabase schema");
    ctx.events.publish(
        &db.object_ref(&()),
        type_,
        reason.as_str(),
        &condition.message,
    );
}
