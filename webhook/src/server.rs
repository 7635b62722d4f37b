//! The HTTP side: the HTTPS server the API server calls (`/mutate`, `/validate` for
//! Workspaces, `/mutate-databases`, `/validate-databases` for GuildDatabases, `/healthz`,
//! `/readyz`) and the plain-HTTP metrics server (`/metrics`, `/healthz`, `/readyz`), kept
//! apart so Prometheus scrapes without the webhook's private CA.

use crate::access::{AccessReviewer, Unavailable};
use crate::admission::{self, Decision, DeniedReference, Refusal, Settings, Snapshot};
use crate::caches::Caches;
use crate::database;
use crate::metrics::{Metrics, Webhook};
use crate::registration::{
    MUTATE_DATABASES_PATH, MUTATE_PATH, VALIDATE_DATABASES_PATH, VALIDATE_PATH,
};
use crate::reservations::Reservations;
use crate::review::{self, Admitted, Review};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use guildnet_api::GuildDatabase;
use guildnet_api::policy::references::Reference;
use guildnet_runtime::health::Health;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionRequest, Operation};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tracing::{info, warn};

/// What the handlers share.
pub struct AppState {
    /// Who is trusted, and GuildNet's namespace.
    pub settings: Settings,
    /// The watch caches decisions read.
    pub caches: Caches,
    /// Admitted creates the cache has not seen yet. The lock also serialises validations,
    /// so two creates never both take the last unit of a Quota.
    pub reservations: Mutex<Reservations>,
    /// The metrics.
    pub metrics: Metrics,
    /// Reviews the Secrets and ConfigMaps a workspace names, as its requester.
    pub access: AccessReviewer,
}

impl AppState {
    /// Decides a validation against the caches and reserves an admitted create's Quota.
    /// `denied_references` are the references SubjectAccessReviews refused (see
    /// [`admission::references_to_review`]).
    pub fn validate(&self, review: &Review, denied_references: Vec<DeniedReference>) -> Decision {
        let owner = admission::quota_owner(&review.request);
        self.decide(
            &review.request,
            owner,
            denied_references,
            |snapshot, reservations| {
                if let Some(host) = admission::ingress_host(review) {
                    snapshot.host_users = self.caches.host_users(host);
                }
                let decision = admission::validate(review, &self.settings, snapshot);
                if let Some(admitted) = &decision.admitted {
                    reservations.reserve(Instant::now(), admitted.clone());
                }
                decision
            },
        )
    }

    /// Decides a GuildDatabase validation against the caches and reserves an admitted
    /// create's or spec change's storage, under the same lock as workspaces' (they share
    /// storage Quotas).
    pub fn validate_database(
        &self,
        review: &Review<GuildDatabase>,
        denied_references: Vec<DeniedReference>,
    ) -> Decision {
        let owner = admission::quota_owner(&review.request);
        self.decide(
            &review.request,
            owner.clone(),
            denied_references,
            |snapshot, reservations| {
                let decision = database::validate(review, &self.settings, snapshot);
                if let Some(admitted) = database::admitted(review, &decision, owner.as_deref()) {
                    reservations.reserve_database(Instant::now(), admitted);
                }
                decision
            },
        )
    }

    /// Runs `decide` on a snapshot of the caches for `owner`, with the admitted changes the
    /// caches do not show yet, while holding the reservations: deciding and reserving are
    /// one step, so two requests never both take the last unit of a Quota. Refused while the
    /// caches are still loading.
    fn decide<K: kube::Resource>(
        &self,
        request: &AdmissionRequest<K>,
        owner: Option<String>,
        denied_references: Vec<DeniedReference>,
        decide: impl FnOnce(&mut Snapshot, &mut Reservations) -> Decision,
    ) -> Decision {
        if !self.caches.is_synced() {
            return Decision::refused(
                request,
                Refusal::Unavailable(
                    "the GuildNet webhook is still loading Capabilities, Quotas, Workspaces and GuildDatabases: retry in a few seconds".to_owned(),
                ),
            );
        }
        let mut reservations = self
            .reservations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let reserved = reservations.pending(now, |ws| self.caches.shows(ws));
        let reserved_databases =
            reservations.pending_databases(now, |db| self.caches.shows_database(db));
        let mut snapshot = self
            .caches
            .snapshot(owner.as_deref(), reserved, reserved_databases);
        snapshot.denied_references = denied_references;
        decide(&mut snapshot, &mut reservations)
    }

    /// Of `references` in `namespace`, those `reader` may not `get`.
    async fn denied_to(
        &self,
        reader: &UserInfo,
        namespace: &str,
        references: Vec<Reference>,
    ) -> Result<Vec<DeniedReference>, Unavailable> {
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let refused = self.access.denied(reader, namespace, references).await?;
        let name = reader.username.clone().unwrap_or_default();
        Ok(refused
            .into_iter()
            .map(|reference| DeniedReference {
                reader: name.clone(),
                reference,
            })
            .collect())
    }

    /// The references the request adds that one of its readers may not `get`, asking the
    /// API server (the only I/O of a decision); see [`admission::reference_readers`].
    async fn denied_references(
        &self,
        review: &Review,
    ) -> Result<Vec<DeniedReference>, Unavailable> {
        let references = admission::references_to_review(review, &self.settings);
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let namespace = review.request.namespace.clone().unwrap_or_default();
        let mut denied = Vec::new();
        for reader in admission::reference_readers(review) {
            denied.extend(
                self.denied_to(&reader, &namespace, references.clone())
                    .await?,
            );
        }
        Ok(denied)
    }
}

/// The routes the API server calls, with health checks for the kubelet's HTTPS probes.
pub fn webhook_routes(state: Arc<AppState>) -> Router {
    let health = health(&state);
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route(VALIDATE_PATH, post(validate))
        .route(MUTATE_DATABASES_PATH, post(mutate_database))
        .route(VALIDATE_DATABASES_PATH, post(validate_database))
        .with_state(state)
        .merge(health.router())
}

/// The metrics routes, with the same health checks for plain-HTTP probes.
pub fn metrics_routes(state: Arc<AppState>) -> Router {
    let scraped = Arc::clone(&state);
    health(&state)
        .with_metrics(move || Ok(scraped.metrics.encode()))
        .router()
}

/// Ready once the caches are synced: before, validations would be refused.
fn health(state: &AppState) -> Health {
    let caches = state.caches.clone();
    Health::new(move || caches.is_synced(), "caches are syncing")
}

async fn mutate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    answer(&state, Webhook::Mutating, &body, admission::mutate)
}

async fn mutate_database(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    answer(&state, Webhook::Mutating, &body, database::mutate)
}

/// Reviews the password Secrets the request adds, as its requester, then decides.
async fn validate_database(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let access = match review::decode::<GuildDatabase>(&body) {
        Ok(review) => {
            let references = database::references_to_review(&review, &state.settings);
            let request = &review.request;
            let namespace = request.namespace.clone().unwrap_or_default();
            state
                .denied_to(&request.user_info, &namespace, references)
                .await
        }
        Err(_) => Ok(Vec::new()),
    };
    answer(&state, Webhook::Validating, &body, |review| match access {
        Ok(denied) => state.validate_database(review, denied),
        Err(unavailable) => Decision::refused(
            &review.request,
            Refusal::Unavailable(unavailable.to_string()),
        ),
    })
}

/// Reviews the references the request adds, then decides.
async fn validate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let access = match review::decode(&body) {
        Ok(review) => state.denied_references(&review).await,
        // `answer` refuses what cannot be decoded.
        Err(_) => Ok(Vec::new()),
    };
    answer(&state, Webhook::Validating, &body, |review| match access {
        Ok(denied) => state.validate(review, denied),
        Err(unavailable) => Decision::refused(
            &review.request,
            Refusal::Unavailable(unavailable.to_string()),
        ),
    })
}

/// Decodes, decides, logs a refusal, measures, and encodes the answer.
fn answer<K: Admitted>(
    state: &AppState,
    webhook: Webhook,
    body: &[u8],
    decide: impl FnOnce(&Review<K>) -> Decision,
) -> Response {
    let start = Instant::now();
    let review = match review::decode::<K>(body) {
        Ok(review) => review,
        Err(error) => {
            warn!(%error, ?webhook, "refusing a request that is not an AdmissionReview");
            state.metrics.observe_unreadable(webhook, start.elapsed());
            return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
        }
    };
    let decision = decide(&review);
    if let Err(refusal) = &decision.outcome {
        let request = &review.request;
        info!(
            ?webhook,
            uid = %request.uid,
            user = request.user_info.username.as_deref().unwrap_or_default(),
            operation = operation_label(&request.operation),
            namespace = request.namespace.as_deref().unwrap_or_default(),
            name = %request.name,
            reason = refusal.reason(),
            %refusal,
            "refused"
        );
    }
    let operation = operation_label(&review.request.operation);
    let Decision {
        response, outcome, ..
    } = decision;
    let encoded = serde_json::to_vec(&response.into_review());
    state
        .metrics
        .observe(webhook, operation, &outcome, start.elapsed());
    match encoded {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}
