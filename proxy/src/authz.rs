//! Who may enter a workspace: its owner, or whoever RBAC allows `get` on
//! `workspaces/proxy` for it. Decisions are cached briefly.
//!
//! A caller who may not enter gets the same answer whether or not the workspace exists:
//! both paths ask the same (cached) SubjectAccessReview before anything else is decided.

use std::time::Duration;

use guildnet_api::workspace::Workspace;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::auth::Identity;
use crate::cache::TtlCache;

/// RBAC `get workspaces/proxy` on `name` (all names when None) in `namespace`, for one
/// user and their groups.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Question {
    username: String,
    groups: Vec<String>,
    namespace: String,
    name: Option<String>,
}

impl Question {
    fn new(identity: &Identity, namespace: &str, name: Option<&str>) -> Self {
        Self {
            username: identity.username.clone(),
            groups: identity.groups.clone(),
            namespace: namespace.to_owned(),
            name: name.map(str::to_owned),
        }
    }
}

/// Decides who may open a workspace, reusing SubjectAccessReview answers for a while.
pub struct Authorizer {
    client: kube::Client,
    decisions: TtlCache<Question, bool>,
}

/// Whether `identity` owns `workspace` (the label the webhook set from the creator's name).
pub fn owns(identity: &Identity, workspace: &Workspace) -> bool {
    workspace.owner_id() == Some(identity.owner_id())
}

impl Authorizer {
    /// An authorizer asking SubjectAccessReviews through `client`, each answer kept for `ttl`.
    pub fn new(client: kube::Client, ttl: Duration) -> Self {
        Self {
            client,
            decisions: TtlCache::new(ttl),
        }
    }

    /// May `identity` open the workspace `namespace/name` (`workspace` when it exists)?
    pub async fn may_open(
        &self,
        identity: &Identity,
        namespace: &str,
        name: &str,
        workspace: Option<&Workspace>,
    ) -> bool {
        if workspace.is_some_and(|ws| owns(identity, ws)) {
            return true;
        }
        self.may_proxy(identity, namespace, Some(name)).await
    }

    /// May `identity` open every workspace of `namespace` (RBAC `get workspaces/proxy`
    /// without a resource name)?
    pub async fn may_open_all(&self, identity: &Identity, namespace: &str) -> bool {
        self.may_proxy(identity, namespace, None).await
    }

    /// RBAC `get workspaces/proxy` on `name` (all names when None) in `namespace`.
    async fn may_proxy(&self, identity: &Identity, namespace: &str, name: Option<&str>) -> bool {
        self.allowed(Question::new(identity, namespace, name), identity)
            .await
    }

    async fn allowed(&self, question: Question, identity: &Identity) -> bool {
        if let Some(answer) = self.decisions.get(&question) {
            return answer;
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(identity.username.clone()),
                uid: identity.uid.clone(),
                groups: Some(identity.groups.clone()),
                extra: Some(identity.extra.clone()).filter(|e| !e.is_empty()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("guildnet.io".into()),
                    resource: Some("workspaces".into()),
                    subresource: Some("proxy".into()),
                    verb: Some("get".into()),
                    namespace: Some(question.namespace.clone()),
                    name: question.name.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = match Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(reviewed) => reviewed.status.is_some_and(|s| s.allowed),
            Err(error) => {
                // Refuse, and ask again next time rather than remember an outage.
                tracing::warn!(%error, "SubjectAccessReview failed");
                return false;
            }
        };
        self.decisions.insert(question, answer);
        answer
    }
}

/// Tests decide RBAC questions without an API server: as if a SubjectAccessReview had.
#[cfg(test)]
impl Authorizer {
    pub(crate) fn remember(
        &self,
        identity: &Identity,
        namespace: &str,
        name: Option<&str>,
        allowed: bool,
    ) {
        self.decisions
            .insert(Question::new(identity, namespace, name), allowed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guildnet_api::labels;
    use std::collections::BTreeMap;

    fn identity(name: &str) -> Identity {
        Identity::new(name.into(), None, vec![], BTreeMap::new())
    }

    #[test]
    fn the_owner_label_decides_ownership() {
        let mut ws = Workspace::new("ide", Default::default());
        assert!(!owns(&identity("alice"), &ws));
        ws.metadata.labels = Some(BTreeMap::from([(
            labels::OWNER.to_owned(),
            identity("alice").owner_id().to_owned(),
        )]));
        assert!(owns(&identity("alice"), &ws));
        assert!(!owns(&identity("bob"), &ws));
    }
}
