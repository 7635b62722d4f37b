//! One registered cluster's instance: its own client (built from the vetted kubeconfig in
//! its Secret, with a pool of its own), its probe loop and the status it writes, under a
//! cancellation token of its own. Started when the registration appears, kept while the
//! cluster is unreachable, stopped — its tasks cancelled and joined, its metric series
//! removed — when the registration goes or this replica stops leading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guildnet_api::ClusterRegistration;
use guildnet_api::cluster::ClusterNetwork;
use guildnet_api::cluster::facts::Reason;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use sha2::{Digest, Sha256};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::Context;
use super::health::{Health, PROBE_TIMEOUT, Reachability};
use super::remote::Remote;
use super::status::{self, Observation, Problem};
use crate::reconcile::apply::apply_status;
use crate::reconcile::handoff::Handed;
use crate::workspace::caches::RemoteCaches;
use guildnet_api::Workspace;
use guildnet_runtime::kubeconfig;

/// A registered cluster's running instance.
pub struct Instance {
    cluster: String,
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Instance {
    /// Starts probing `cluster` and keeping its registration's status.
    pub fn start(cluster: &str, ctx: Arc<Context>) -> Self {
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        let prober = Prober::new(cluster, &ctx, tasks.clone(), token.clone());
        tasks.spawn(prober.run(ctx, token.clone()));
        tasks.close();
        info!(cluster, "started the registered cluster's instance");
        Self {
            cluster: cluster.to_owned(),
            token,
            tasks,
        }
    }

    /// Cancels its tasks and waits until they have ended; then nothing of it runs.
    pub async fn stop(self, ctx: &Context) {
        self.token.cancel();
        self.tasks.wait().await;
        ctx.remotes.withdraw(&self.cluster);
        ctx.metrics.forget_cluster(&self.cluster);
        info!(cluster = %self.cluster, "stopped the registered cluster's instance");
    }
}

/// The cluster's connection, made from one version of its Secret.
struct Connection {
    client: Client,
    /// The kubeconfig text, handed to the proxy when the registration routes through the
    /// cluster's API server.
    kubeconfig: String,
    /// SHA-256 of the kubeconfig it was made from: a changed Secret makes a new one.
    kubeconfig_hash: [u8; 32],
    /// The namespace and network the checks made once per connection, namespace and
    /// network passed for (the version read, the namespace there, the permissions in it).
    checked: Option<(String, ClusterNetwork)>,
    /// Cancels the watches of what this hub made there when the connection is replaced
    /// or dropped.
    _caches: Option<DropGuard>,
}

/// Why one round of probing found the cluster not answering, or not usable.
enum Round {
    /// `/readyz` answered.
    Answered,
    /// Answered, but something keeps workspaces off it.
    AnsweredWith(Problem),
    /// No answer (or no way to ask): counts against reachability.
    NoAnswer {
        cause: String,
        problem: Option<Problem>,
    },
    /// The hub's API server could not be read (the Secret): nothing learnt of the cluster.
    HubUnavailable,
}

/// The probe loop's state.
struct Prober {
    cluster: String,
    /// Where the remote caches' watches run, under the instance's token.
    tasks: TaskTracker,
    token: CancellationToken,
    health: Health,
    connection: Option<Connection>,
    observation: Observation,
    /// The status last written, so a write is not repeated before the watch shows it.
    written: Option<guildnet_api::cluster::ClusterRegistrationStatus>,
    /// What the proxy's credentials Secret holds for the cluster.
    handed: Handed,
}

impl Prober {
    fn new(cluster: &str, ctx: &Context, tasks: TaskTracker, token: CancellationToken) -> Self {
        let registration = ctx.registration(cluster);
        let status = registration.as_ref().and_then(|r| r.status.clone());
        let recorded = status
            .as_ref()
            .filter(|s| !s.conditions.is_empty())
            .map(|s| s.is_reachable());
        Self {
            cluster: cluster.to_owned(),
            tasks,
            token,
            health: Health::resume(recorded),
            connection: None,
            observation: Observation {
                version: status.as_ref().and_then(|s| s.version.clone()),
                ..Observation::default()
            },
            written: None,
            handed: Handed::Unknown,
        }
    }

    async fn run(mut self, ctx: Arc<Context>, token: CancellationToken) {
        let mut interval = tokio::time::interval(ctx.probe_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = interval.tick() => {}
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.round(&ctx) => {}
            }
        }
    }

    /// Probes once and writes the status when it changed.
    async fn round(&mut self, ctx: &Context) {
        let Some(registration) = ctx.registration(&self.cluster) else {
            return;
        };
        let mut result = self.probe(ctx, &registration).await;
        if let Round::AnsweredWith(Problem {
            reason: Reason::Unauthorized | Reason::InsufficientPermissions,
            ..
        }) = &result
        {
            // Credentials may have been rotated in the Secret: read it again at once.
            self.disconnect(ctx);
            result = self.probe(ctx, &registration).await;
        }
        let now = Instant::now();
        let answered = match result {
            Round::HubUnavailable => return,
            Round::Answered => {
                self.observation.problem = None;
                true
            }
            Round::AnsweredWith(problem) => {
                self.observation.problem = Some(problem);
                true
            }
            Round::NoAnswer { cause, problem } => {
                self.observation.problem = problem;
                let since = self
                    .observation
                    .failing
                    .take()
                    .map_or_else(Timestamp::now, |(since, _)| since);
                self.observation.failing = Some((since, cause));
                false
            }
        };
        if answered {
            self.observation.failing = None;
            self.observation.last_answered = Some(Timestamp::now());
        }
        if let Some(changed) = self.health.observe(answered, now) {
            let cause = self.observation.failing.as_ref().map(|(_, c)| c.as_str());
            if changed == Reachability::Unreachable {
                warn!(cluster = %self.cluster, cause, "the registered cluster is unreachable");
            } else {
                info!(cluster = %self.cluster, "the registered cluster is reachable");
            }
        }
        self.hand_over(ctx, &registration).await;
        let reachable = self.health.state() == Reachability::Reachable;
        ctx.metrics
            .cluster_probed(&self.cluster, answered, reachable);
        self.observation.reachability = Some(self.health.state());
        self.observation.workspaces = ctx.workspaces_on(&self.cluster);
        if let Some(claims) = ctx
            .remotes
            .get(&self.cluster)
            .and_then(|remote| remote.retained_claims())
        {
            self.observation.retained_claims = Some(claims);
        }
        let next = status::compute(&registration, &self.observation, Timestamp::now());
        let current = self.written.as_ref().or(registration.status.as_ref());
        if !status::needs_write(current, &next, ctx.status_refresh()) {
            return;
        }
        let api: Api<ClusterRegistration> = Api::all(ctx.client.clone());
        match apply_status(&api, &self.cluster, &next).await {
            Ok(_) => self.written = Some(next),
            Err(error) => {
                warn!(cluster = %self.cluster, %error, "could not write the ClusterRegistration's status");
            }
        }
    }

    /// Reads the Secret (a new connection when it changed), makes the per-connection checks
    /// once, and asks `/readyz`.
    async fn probe(&mut self, ctx: &Context, registration: &ClusterRegistration) -> Round {
        let kubeconfig = match read_kubeconfig(ctx, registration).await {
            Ok(Ok(text)) => text,
            Ok(Err(problem)) => {
                self.disconnect(ctx);
                return Round::NoAnswer {
                    cause: problem.message.clone(),
                    problem: Some(problem),
                };
            }
            Err(error) => {
                debug!(cluster = %self.cluster, %error, "could not read the kubeconfig Secret");
                return Round::HubUnavailable;
            }
        };
        let hash: [u8; 32] = Sha256::digest(kubeconfig.as_bytes()).into();
        if self
            .connection
            .as_ref()
            .is_none_or(|c| c.kubeconfig_hash != hash)
        {
            match connect(&kubeconfig).await {
                Ok(client) => {
                    if self.connection.is_some() {
                        info!(cluster = %self.cluster, "the kubeconfig Secret changed: reconnecting");
                    }
                    self.disconnect(ctx);
                    self.connection = Some(Connection {
                        client,
                        kubeconfig,
                        kubeconfig_hash: hash,
                        checked: None,
                        _caches: None,
                    });
                }
                Err(problem) => {
                    self.disconnect(ctx);
                    return Round::NoAnswer {
                        cause: problem.message.clone(),
                        problem: Some(problem),
                    };
                }
            }
        }
        let connection = self.connection.as_mut().expect("connected above");
        let client = connection.client.clone();
        if let Err(refused) = ready(&client).await {
            return refused;
        }
        let namespace = registration.remote_namespace();
        let network = registration.network();
        let checked = (namespace.to_owned(), network);
        if connection.checked.as_ref() != Some(&checked) {
            match within(PROBE_TIMEOUT, client.apiserver_version()).await {
                Ok(version) => self.observation.version = Some(version.git_version),
                Err(round) => return round,
            }
            if let Err(round) = may_place_in(&client, namespace, network).await {
                return round;
            }
            let first_for_namespace = connection
                .checked
                .replace(checked)
                .is_none_or(|(before, _)| before != namespace);
            if !first_for_namespace {
                return Round::Answered;
            }
            // Workspaces may be placed through it now: watch what this hub made there,
            // and wake the workspaces placed there (or waiting for a cluster).
            let token = self.token.child_token();
            let (caches, synced) = RemoteCaches::start(
                &client,
                namespace,
                ctx.remotes.origin(),
                &ctx.triggers,
                &ctx.changes,
                &self.tasks,
                &token,
            );
            connection._caches = Some(token.drop_guard());
            let remote = Remote::new(client, namespace.to_owned(), caches, synced);
            ctx.remotes.publish(&self.cluster, Arc::new(remote));
            info!(cluster = %self.cluster, namespace, "connected: workspaces are placed through this connection");
            for workspace in ctx.placed_or_waiting(&self.cluster) {
                let _ = ctx.triggers.send(workspace);
            }
        }
        Round::Answered
    }

    /// Hands the proxy the kubeconfig of the current connection once its checks passed
    /// for a registration that routes through the cluster's API server; takes it back
    /// otherwise.
    async fn hand_over(&mut self, ctx: &Context, registration: &ClusterRegistration) {
        let kubeconfig = self
            .connection
            .as_ref()
            .filter(|c| {
                registration.network() == ClusterNetwork::ApiServerProxy
                    && c.checked.as_ref().map(|(_, network)| *network)
                        == Some(ClusterNetwork::ApiServerProxy)
            })
            .map(|c| c.kubeconfig.as_str());
        match ctx
            .credentials
            .hand(&ctx.client, &self.cluster, kubeconfig, self.handed)
            .await
        {
            Ok(handed) => self.handed = handed,
            Err(error) => {
                self.handed = Handed::Unknown;
                warn!(cluster = %self.cluster, %error, "could not hand the proxy the cluster's kubeconfig");
            }
        }
    }

    /// Drops the connection, its caches and what the Workspace controller reaches through it.
    fn disconnect(&mut self, ctx: &Context) {
        if self.connection.take().is_some() {
            ctx.remotes.withdraw(&self.cluster);
        }
    }
}

/// The kubeconfig text from the registration's Secret, or what is wrong with the Secret.
/// `Err`: the hub's API server did not answer.
async fn read_kubeconfig(
    ctx: &Context,
    registration: &ClusterRegistration,
) -> kube::Result<Result<String, Problem>> {
    let reference = &registration.spec.kubeconfig_secret_ref;
    let key = registration.kubeconfig_key();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &reference.namespace);
    let Some(secret) = secrets.get_opt(&reference.name).await? else {
        return Ok(Err(Problem {
            reason: Reason::SecretNotFound,
            message: format!(
                "Secret {}/{} does not exist; create it with the cluster's kubeconfig under the key {key}",
                reference.namespace, reference.name
            ),
        }));
    };
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) else {
        return Ok(Err(Problem {
            reason: Reason::SecretNotFound,
            message: format!(
                "Secret {}/{} has no key {key}; put the kubeconfig under it or set spec.kubeconfigSecretRef.key",
                reference.namespace, reference.name
            ),
        }));
    };
    Ok(String::from_utf8(bytes.0.clone()).map_err(|_| Problem {
        reason: Reason::KubeconfigInvalid,
        message: format!(
            "the key {key} of Secret {}/{} is not UTF-8 text; store the kubeconfig file itself",
            reference.namespace, reference.name
        ),
    }))
}

/// A client of the cluster alone, from a vetted kubeconfig.
async fn connect(kubeconfig: &str) -> Result<Client, Problem> {
    let invalid = |message: String| Problem {
        reason: Reason::KubeconfigInvalid,
        message,
    };
    let vetted = kubeconfig::vet(kubeconfig).map_err(|e| invalid(e.to_string()))?;
    let config = vetted
        .client_config()
        .await
        .map_err(|e| invalid(format!("the kubeconfig cannot be used: {e}")))?;
    Client::try_from(config).map_err(|e| invalid(format!("no client for the kubeconfig: {e}")))
}

/// Asks `/readyz` within [`PROBE_TIMEOUT`].
async fn ready(client: &Client) -> Result<(), Round> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("a valid request");
    match within(PROBE_TIMEOUT, client.request_text(request)).await {
        Ok(_) => Ok(()),
        Err(round) => Err(round),
    }
}

/// Whether workspaces can be placed in `namespace`: it exists, and the credentials may
/// write workspaces' children there (one SelfSubjectAccessReview), and, when the proxy
/// goes through the API server (`network`), open its Services' proxy.
async fn may_place_in(
    client: &Client,
    namespace: &str,
    network: ClusterNetwork,
) -> Result<(), Round> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match within(PROBE_TIMEOUT, namespaces.get_opt(namespace)).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(Round::AnsweredWith(Problem {
                reason: Reason::NamespaceNotFound,
                message: format!(
                    "namespace {namespace} does not exist in the cluster; create it there or set spec.namespace to one that does"
                ),
            }));
        }
        // Credentials confined to the namespace may not read it: the review decides.
        Err(Round::AnsweredWith(Problem {
            reason: Reason::InsufficientPermissions,
            ..
        })) => {}
        Err(round) => return Err(round),
    }
    let mut needed = vec![(
        ResourceAttributes {
            verb: Some("patch".into()),
            group: Some("apps".into()),
            resource: Some("deployments".into()),
            ..ResourceAttributes::default()
        },
        "patch deployments.apps",
        "what the guildnet-operator ClusterRole grants",
    )];
    if network == ClusterNetwork::ApiServerProxy {
        needed.push((
            ResourceAttributes {
                verb: Some("create".into()),
                resource: Some("services".into()),
                subresource: Some("proxy".into()),
                ..ResourceAttributes::default()
            },
            "create services/proxy",
            "get, create, update, patch and delete on services/proxy (network: APIServerProxy)",
        ));
    }
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    for (attributes, action, grant) in needed {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_owned()),
                    ..attributes
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let reviewed = within(
            PROBE_TIMEOUT,
            reviews.create(&PostParams::default(), &review),
        )
        .await?;
        if !reviewed.status.is_some_and(|s| s.allowed) {
            return Err(Round::AnsweredWith(Problem {
                reason: Reason::InsufficientPermissions,
                message: format!(
                    "the kubeconfig's user may not {action} in namespace {namespace}; grant it {grant}, in that namespace"
                ),
            }));
        }
    }
    Ok(())
}

/// `request` within `timeout`: credentials refused (401) or not permitted (403) is an
/// answer with a problem; any other failure, or no answer in time, is no answer.
async fn within<T>(
    timeout: Duration,
    request: impl Future<Output = kube::Result<T>>,
) -> Result<T, Round> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(kube::Error::Api(status))) if status.code == 401 => {
            Err(Round::AnsweredWith(Problem {
                reason: Reason::Unauthorized,
                message: format!(
                    "the cluster refused the kubeconfig's credentials ({}); put valid ones in the Secret",
                    status.message
                ),
            }))
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
            Err(Round::AnsweredWith(Problem {
                reason: Reason::InsufficientPermissions,
                message: format!(
                    "the kubeconfig's user is not permitted: {}; grant it what the guildnet-operator ClusterRole grants, in spec.namespace",
                    status.message
                ),
            }))
        }
        Ok(Err(error)) => Err(Round::NoAnswer {
            cause: error.to_string(),
            problem: None,
        }),
        Err(_) => Err(Round::NoAnswer {
            cause: format!("no answer within {timeout:?}"),
            problem: None,
        }),
    }
}

impl Context {
    /// The registration named `cluster` in the cache.
    pub(super) fn registration(&self, cluster: &str) -> Option<Arc<ClusterRegistration>> {
        self.registrations.get(&ObjectRef::new(cluster))
    }

    /// Workspaces whose status records them on `cluster`.
    fn workspaces_on(&self, cluster: &str) -> i32 {
        let count = self
            .workspaces
            .state()
            .iter()
            .filter(|ws| ws.placed_on() == Some(cluster))
            .count();
        i32::try_from(count).unwrap_or(i32::MAX)
    }

    /// The workspaces placed on `cluster`, and those waiting to be placed.
    fn placed_or_waiting(&self, cluster: &str) -> Vec<ObjectRef<Workspace>> {
        self.workspaces
            .state()
            .iter()
            .filter(|ws| ws.follows_cluster(cluster))
            .map(|ws| ObjectRef::from_obj(&**ws))
            .collect()
    }

    /// How old the time of the last answer in the status may get before it is rewritten
    /// for its own sake: three probes.
    fn status_refresh(&self) -> Duration {
        self.probe_interval * 3
    }
}
