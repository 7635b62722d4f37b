//! The GuildDatabase controller: each GuildDatabase becomes, by server-side apply with
//! owner references, a StatefulSet of RethinkDB servers, a headless Service they join each
//! other through, a client Service, a PodDisruptionBudget with more than one server, and
//! an admin password Secret made once; its status follows the StatefulSet (reconcile as
//! dereference → build → apply → update status). The declared databases, tables and users
//! are not applied yet: `SchemaApplied` says so.

pub mod builders;
pub mod status;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guildnet_api::GuildDatabase;
use guildnet_api::common::find_condition;
use guildnet_api::database::GuildDatabaseStatus;
use guildnet_api::database::facts::ConditionType;
use guildnet_api::labels;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
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
use crate::reconcile::lead::{self, Term};
use crate::workspace::generate_password;

/// How often a settled database is reconciled anyway.
const RESYNC: Duration = Duration::from_secs(300);

/// How soon a database whose name is taken looks again.
const NAME_CONFLICT_RECHECK: Duration = Duration::from_secs(60);

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
    /// What databases are made of (`guildnet.io/database`), as the watches show them, so a
    /// child already as asked is not written again.
    servers: Store<StatefulSet>,
    services: Store<Service>,
    budgets: Store<PodDisruptionBudget>,
    /// The versions this replica last wrote.
    written: Written,
}

/// Reconciles every GuildDatabase until `term` ends; the watches start with it, so a new
/// leader lists them afresh.
pub async fn lead(
    client: Client,
    metrics: Arc<Metrics>,
    identity: &str,
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
    let ctx = Arc::new(Context {
        events: Publisher::new(client.clone(), identity),
        client,
        metrics,
        announced: Mutex::default(),
        servers,
        services,
        budgets,
        written: Written::default(),
    });
    lead::run(controller, reconcile, error_policy, ctx, async {}, term).await;
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
    let next = status::compute(db, servers.as_ref(), failure.as_deref(), Timestamp::now());
    // Transition times move only with a flip, so an unchanged status compares equal.
    if db.status.as_ref() != Some(&next) {
        let api: Api<GuildDatabase> = Api::namespaced(client.clone(), &namespace);
        match apply_status(&api, &name, &next).await {
            Ok(_) => announce(db, &next, ctx),

            // Deleted since this reconcile read it: nothing left to report.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(match failure {
        Some(_) => Action::requeue(NAME_CONFLICT_RECHECK),
        None => Action::requeue(RESYNC),
    })
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
