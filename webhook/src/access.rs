//! May the requester read what a workspace names? A pod reads any Secret or ConfigMap of
//! its namespace that its spec names, whoever wrote the spec, so without this check any
//! user who may create Workspaces could read every Secret of the namespace — another
//! user's workspace password included. One SubjectAccessReview (`get`) per referenced
//! object, as the requester, answered from a short cache when the same question repeats.

use guildnet_api::policy::references::Reference;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer is reused: long enough for a burst of applies, short enough that a
/// revoked right stops admitting new references soon.
const ANSWER_TTL: Duration = Duration::from_secs(10);
/// Answers kept at most; the cache starts over when full.
const MAX_ANSWERS: usize = 10_000;
/// How long one review may take: the API server gives the whole admission a few seconds.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the API server, and remembers its answers briefly.
pub struct AccessReviewer {
    client: Client,
    answers: Mutex<HashMap<Question, (Instant, bool)>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Question {
    user: String,
    uid: Option<String>,
    groups: Vec<String>,
    extra: Vec<(String, Vec<String>)>,
    namespace: String,
    resource: &'static str,
    name: String,
}

/// Why access could not be decided; the request is refused, since an unchecked reference
/// would be readable.
#[derive(Debug, thiserror::Error)]
#[error("cannot check whether {user} may get {kind} {namespace}/{name}: {source}")]
pub struct Unavailable {
    user: String,
    kind: String,
    namespace: String,
    name: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl AccessReviewer {
    /// A reviewer asking through `client`, which needs `create` on SubjectAccessReviews.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            answers: Mutex::default(),
        }
    }

    /// The references of `references` that `user` may not `get` in `namespace`. Reviews not
    /// answered from the cache run concurrently, so several references cost one round trip.
    pub async fn denied(
        &self,
        user: &UserInfo,
        namespace: &str,
        references: Vec<Reference>,
    ) -> Result<Vec<Reference>, Unavailable> {
        let answers = references.into_iter().map(|reference| async move {
            let question = Question {
                user: user.username.clone().unwrap_or_default(),
                uid: user.uid.clone(),
                groups: user.groups.clone().unwrap_or_default(),
                extra: user
                    .extra
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                namespace: namespace.to_owned(),
                resource: reference.kind.resource(),
                name: reference.name.clone(),
            };
            let allowed = match self.cached(&question) {
                Some(allowed) => allowed,
                None => {
                    let allowed =
                        self.ask(user, &question)
                            .await
                            .map_err(|source| Unavailable {
                                user: question.user.clone(),
                                kind: reference.kind.to_string(),
                                namespace: namespace.to_owned(),
                                name: reference.name.clone(),
                                source,
                            })?;
                    self.remember(question, allowed);
                    allowed
                }
            };
            Ok::<_, Unavailable>((!allowed).then_some(reference))
        });
        let answers = futures::future::join_all(answers).await;
        answers.into_iter().filter_map(Result::transpose).collect()
    }

    fn cached(&self, question: &Question) -> Option<bool> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let (at, allowed) = answers.get(question)?;
        (at.elapsed() < ANSWER_TTL).then_some(*allowed)
    }

    fn remember(&self, question: Question, allowed: bool) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if answers.len() >= MAX_ANSWERS {
            answers.clear();
        }
        answers.insert(question, (Instant::now(), allowed));
    }

    async fn ask(
        &self,
        user: &UserInfo,
        question: &Question,
    ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid.clone(),
                groups: user.groups.clone(),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(question.namespace.clone()),
                    verb: Some("get".to_owned()),
                    resource: Some(question.resource.to_owned()),
                    name: Some(question.name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let created =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| format!("no answer within {REVIEW_TIMEOUT:?}"))??;
        Ok(created.status.is_some_and(|s| s.allowed))
    }
}
