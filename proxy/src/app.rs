//! Wiring: the state every handler shares, the caches and background writers that keep it
//! current, then the routes of [`crate::router`] served by [`crate::server`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use guildnet_api::GuildDatabase;
use guildnet_api::quota::Quota;
use guildnet_api::workspace::Workspace;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::activity::Activity;
use crate::auth::{self, Authenticator, TokenReviewer, TokenReviews};
use crate::authz::{AccessReviewer, Authorizer, SubjectAccessReviews};
use crate::config::{Args, AuthMode};
use crate::dashboard::claims;
use crate::dashboard::events::EventHub;
use crate::database::{self, AdminPasswords};
use crate::forward::api_servers::ApiServers;
use crate::forward::endpoints::Endpoints;
use crate::session::{self, SessionKeys};
use crate::{router, server};

/// What every handler shares: the API client, the caches, auth, and the flags they need.
pub struct Shared {
    /// The proxy's own Kubernetes client (its service account); writes add impersonation.
    pub client: kube::Client,
    /// Every Workspace in the cluster, kept by a watch.
    pub workspaces: Store<Workspace>,
    /// GuildNet's PersistentVolumeClaims (`guildnet.io/managed=true`) in every namespace,
    /// kept by a watch: the retained ones their owners may delete.
    pub claims: Store<PersistentVolumeClaim>,
    /// Every Quota in the cluster, kept by a watch: each caller sees their own usage.
    pub quotas: Store<Quota>,
    /// Every GuildDatabase in the cluster, kept by a watch: who owns each, for the
    /// database API.
    pub databases: Store<GuildDatabase>,
    /// The databases' admin passwords, as the operator hands them over.
    pub database_passwords: AdminPasswords,
    /// The database API's connections, one per GuildDatabase.
    pub database_connections: database::Connections,
    /// The changefeeds open, per user and per database.
    pub database_feeds: database::Feeds,
    /// Where each workspace answers, from its Service's EndpointSlices.
    pub endpoints: Endpoints,
    /// The API servers of registered clusters whose workspaces are reached through them.
    pub api_servers: ApiServers,
    /// Who a request is from, the `--auth` way.
    pub auth: Authenticator,
    /// Who may open which workspace: its owner, or RBAC `get workspaces/proxy`.
    pub authz: Authorizer,
    /// When each workspace was last used, written to its `status.lastAccessTime`.
    pub activity: Activity,
    /// Recent workspace Events, for `/api/events` and `/sse/events`.
    pub events: Arc<EventHub>,
    /// Connecting to a workspace must succeed within this (`--connect-timeout`, default 5s).
    pub connect_timeout: Duration,
    /// A workspace must send its response head within this (`--upstream-timeout`, default 60s).
    pub upstream_timeout: Duration,
    /// Subdomain mode's base domain (`--base-domain`); None serves path mode only.
    pub base_domain: Option<String>,
    /// Origins besides the proxy's own that may make dashboard writes (`--allowed-origin`).
    pub allowed_origins: Vec<String>,
    /// Largest request head accepted (`--max-header-bytes`).
    pub max_header_bytes: usize,
    /// Whether browsers reach this process over HTTPS (it terminates TLS itself).
    pub https: bool,
    /// Whether `Authorization: Bearer` headers reach workspaces (`--forward-authorization`).
    pub forward_authorization: bool,
    /// A body the proxy reads itself must arrive whole within this (`--body-read-timeout`).
    pub body_read_timeout: Duration,
    /// One permit per body read at once from a caller that has not authenticated
    /// (`--max-unauthenticated-bodies`).
    pub unauthenticated_bodies: tokio::sync::Semaphore,
}

/// The state as handlers get it: one [`Shared`], behind an `Arc`.
pub type AppState = Arc<Shared>;

/// The watch caches the handlers read, as [`reflector::store()`] makes them: empty until
/// their watches (started by [`run`]) fill them.
pub struct Caches {
    /// Every Workspace.
    pub workspaces: Store<Workspace>,
    /// GuildNet's PersistentVolumeClaims (`guildnet.io/managed=true`).
    pub claims: Store<PersistentVolumeClaim>,
    /// Every Quota.
    pub quotas: Store<Quota>,
    /// Every GuildDatabase.
    pub databases: Store<GuildDatabase>,
}

impl Shared {
    /// The state `args` describe: `sessions` sign logins, Workspaces, volume claims and
    /// Quotas are read from `caches`.
    pub fn new(client: kube::Client, args: &Args, sessions: SessionKeys, caches: Caches) -> Self {
        let tokens = Arc::new(TokenReviews::new(client.clone()));
        let access = Arc::new(SubjectAccessReviews::new(client.clone()));
        Self::with_reviewers(client, args, sessions, caches, tokens, access)
    }

    /// Like [`Shared::new`], but who tokens belong to is asked of `tokens` and RBAC
    /// questions of `access` instead of the API server's TokenReviews and
    /// SubjectAccessReviews: for tests and benchmarks.
    pub fn with_reviewers(
        client: kube::Client,
        args: &Args,
        sessions: SessionKeys,
        caches: Caches,
        tokens: Arc<dyn TokenReviewer>,
        access: Arc<dyn AccessReviewer>,
    ) -> Self {
        let Caches {
            workspaces,
            claims,
            quotas,
            databases,
        } = caches;
        Self {
            workspaces,
            claims,
            quotas,
            databases,
            database_passwords: AdminPasswords::default(),
            database_connections: database::Connections::new(
                args.connect_timeout,
                args.upstream_timeout,
            ),
            database_feeds: database::Feeds::new(
                args.max_database_feeds_per_user,
                args.max_database_feeds_per_database,
            ),
            endpoints: Endpoints::default(),
            api_servers: ApiServers::default(),
            auth: Authenticator::with_reviewer(
                tokens,
                auth::Settings {
                    mode: args.auth,
                    sessions,
                    user_header: args.user_header.clone(),
                    groups_header: args.groups_header.clone(),
                    trusted_proxies: args.trusted_proxy.clone(),
                    dev_user: args.dev_user.clone(),
                    dev_groups: args.dev_groups.clone(),
                    cache_ttl: args.auth_cache_ttl,
                    review_rate: args.token_review_rate,
                    review_burst: args.token_review_burst,
                    revalidate_after: args.session_revalidate_after,
                },
            ),
            authz: Authorizer::with_reviewer(access, args.auth_cache_ttl),
            activity: Activity::default(),
            events: Arc::new(EventHub::new(args.event_buffer)),
            connect_timeout: args.connect_timeout,
            upstream_timeout: args.upstream_timeout,
            base_domain: args.base_domain.clone(),
            allowed_origins: args.allowed_origin.clone(),
            client,
            max_header_bytes: args.max_header_bytes,
            https: args.tls_cert_file.is_some(),
            forward_authorization: args.forward_authorization,
            body_read_timeout: args.body_read_timeout,
            unauthenticated_bodies: tokio::sync::Semaphore::new(
                args.max_unauthenticated_bodies as usize,
            ),
        }
    }

    /// What the proxy itself serves: `https` when it terminates TLS, else `http`.
    pub fn own_scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The scheme the browser used for a request with `headers` from `peer`: a
    /// `--trusted-proxy`'s `X-Forwarded-Proto` (its first entry), else [`Self::own_scheme`].
    pub fn public_scheme(&self, headers: &http::HeaderMap, peer: std::net::IpAddr) -> String {
        let origin = crate::forward::rewrite::PublicOrigin::of(
            headers,
            peer,
            self.auth.is_trusted_proxy(peer),
            self.own_scheme(),
        );
        origin
            .scheme
            .to_str()
            .ok()
            .and_then(|s| s.split(',').next())
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.own_scheme().to_owned())
    }

    /// Whether the Workspace cache has synced (`/readyz`).
    pub fn is_ready(&self) -> bool {
        synced(&self.workspaces)
    }
}

pub use guildnet_runtime::watch::synced;

/// Re-reads the revoked sessions every `interval` (`--session-revocation-poll`): how a
/// logout on another replica reaches this one.
async fn poll_revocations(state: AppState, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = state.auth.sessions.sync(std::time::SystemTime::now()).await {
            tracing::warn!(%error, "reading revoked sessions");
        }
    }
}

/// Runs the proxy `args` describe: checks them, gets the session key, starts the watches, serves.
pub async fn run(args: Args) -> anyhow::Result<()> {
    args.validate()?;
    if args.auth == AuthMode::None {
        tracing::warn!(
            user = args.dev_user,
            "AUTHENTICATION IS OFF (--auth=none): everyone who can reach {} is {:?}. Local development only.",
            args.listen,
            args.dev_user
        );
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let key = if let Some(path) = &args.session_key_file {
        Some(
            std::fs::read(path)
                .with_context(|| format!("reading --session-key-file {}", path.display()))?,
        )
    } else if let Some(secret) = &args.session_secret {
        Some(
            session::key_from_secret(client.clone(), &args.session_secret_namespace, secret)
                .await?,
        )
    } else {
        None
    };
    let sessions = match key {
        Some(key) => {
            let sessions = SessionKeys::new(key, args.session_ttl)?;
            match &args.session_secret {
                // Logouts are shared through the same Secret.
                Some(secret) => sessions.with_store(Arc::new(session::SecretRevocations::new(
                    client.clone(),
                    &args.session_secret_namespace,
                    secret,
                ))),
                None => {
                    if args.auth == AuthMode::Token {
                        tracing::warn!(
                            "--session-key-file without --session-secret: a logout ends the \
                             session on this replica only"
                        );
                    }
                    sessions
                }
            }
        }
        None => {
            if args.auth == AuthMode::Token {
                tracing::warn!(
                    "no --session-secret or --session-key-file: logins last until this process \
                     restarts and work on this replica only"
                );
            }
            SessionKeys::random(args.session_ttl)
        }
    };
    let (workspaces, writer) = reflector::store();
    let (claims, claims_writer) = reflector::store();
    let (quotas, quotas_writer) = reflector::store();
    let (databases, databases_writer) = reflector::store();
    let caches = Caches {
        workspaces,
        claims,
        quotas,
        databases,
    };
    let state: AppState = Arc::new(Shared::new(client.clone(), &args, sessions, caches));
    if state.auth.sessions.has_store() {
        // Before serving, so a restarted replica honours the logouts made meanwhile.
        if let Err(error) = state.auth.sessions.sync(std::time::SystemTime::now()).await {
            tracing::warn!(%error, "reading revoked sessions");
        }
        tokio::spawn(poll_revocations(
            state.clone(),
            args.session_revocation_poll,
        ));
    }

    let all = watcher::Config::default();
    tokio::spawn(keep_current(
        Api::<Workspace>::all(client.clone()),
        all.clone(),
        writer,
        "Workspaces",
    ));
    let claims_watch = claims::watch_config();
    tokio::spawn(keep_current(
        Api::all(client.clone()),
        claims_watch,
        claims_writer,
        "PersistentVolumeClaims",
    ));
    tokio::spawn(keep_current(
        Api::<Quota>::all(client.clone()),
        all.clone(),
        quotas_writer,
        "Quotas",
    ));
    tokio::spawn(keep_current(
        Api::<GuildDatabase>::all(client.clone()),
        all,
        databases_writer,
        "GuildDatabases",
    ));
    tokio::spawn(state.database_passwords.clone().run(
        client.clone(),
        args.database_credentials_namespace.clone(),
        args.database_credentials_secret.clone(),
    ));
    tokio::spawn(close_connections_of_deleted_databases(state.clone()));
    tokio::spawn(state.endpoints.clone().run(client.clone()));
    tokio::spawn(state.api_servers.clone().run(
        client.clone(),
        args.cluster_credentials_namespace.clone(),
        args.cluster_credentials_secret.clone(),
    ));
    tokio::spawn(state.events.clone().run(client.clone()));
    tokio::spawn(state.activity.clone().write_every(
        client.clone(),
        state.workspaces.clone(),
        args.activity_interval,
    ));
    server::serve(router::router(state), &args).await
}

/// Every 30 s, closes the database API's connections of GuildDatabases that are gone (or
/// were made again under the same name).
async fn close_connections_of_deleted_databases(state: AppState) {
    let mut ticks = tokio::time::interval(Duration::from_secs(30));
    loop {
        ticks.tick().await;
        state.database_connections.retain(|(namespace, name), uid| {
            state
                .databases
                .get(&reflector::ObjectRef::new(name).within(namespace))
                .is_some_and(|db| db.metadata.uid.as_deref() == Some(uid))
        });
    }
}

/// Keeps `writer` current from a watch of `api` (retried with backoff, failures logged as
/// watching `what`), without the managed fields nothing here reads.
async fn keep_current<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    what: &'static str,
) where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watcher(api, config)
        .default_backoff()
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .for_each(|event| async move {
            if let Err(error) = event {
                guildnet_runtime::watch::log_error(what, &error);
            }
        })
        .await;
}
