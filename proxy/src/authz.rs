//! Who may enter a workspace: its owner, or whoever RBAC allows `get` on
//! `workspaces/proxy` for it; and who may use a GuildDatabase's data: its owner, or whoever
//! RBAC allows the verb of the request on `guilddatabases/data`. Decisions are cached
//! briefly.
//!
//! A caller who may not enter gets the same answer whether or not the object exists: both
//! paths ask the same (cached) SubjectAccessReview before anything else is decided.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use guildnet_api::GuildDatabase;
use guildnet_api::workspace::Workspace;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::auth::Identity;
use crate::cache::{Verdict, Verdicts};

/// Refused RBAC questions remembered at most (apart from the allowed ones, which refusals
/// never push out: anyone can ask about workspaces that do not exist).
const MAX_REFUSALS: usize = 10_000;

/// What is asked of RBAC: a verb on a subresource of a `guildnet.io` resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// The resource, e.g. `workspaces`.
    pub resource: &'static str,
    /// The subresource, e.g. `proxy`.
    pub subresource: &'static str,
    /// The verb, e.g. `get`.
    pub verb: &'static str,
}

impl Access {
    /// Entering a workspace: `get workspaces/proxy`, as `kubectl port-forward` asks of pods.
    pub const OPEN_WORKSPACE: Self = Self {
        resource: "workspaces",
        subresource: "proxy",
        verb: "get",
    };

    /// Using a GuildDatabase's data through the database API with `verb` (`get` to read,
    /// `create`, `update`, `patch` or `delete` to write): `<verb> guilddatabases/data`.
    pub const fn database_data(verb: &'static str) -> Self {
        Self {
            resource: "guilddatabases",
            subresource: "data",
            verb,
        }
    }
}

/// RBAC `access` on `name` (all names when None) in `namespace`, for one user and their
/// groups.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Question {
    username: String,
    groups: Vec<String>,
    access: Access,
    namespace: String,
    name: Option<String>,
}

impl Question {
    fn new(identity: &Identity, access: Access, namespace: &str, name: Option<&str>) -> Self {
        Self {
            username: identity.username.clone(),
            groups: identity.groups.clone(),
            access,
            namespace: namespace.to_owned(),
            name: name.map(str::to_owned),
        }
    }
}

/// One RBAC question as a [`AccessReviewer`] gets it: may `identity` do `access` (e.g.
/// `get workspaces/proxy`) on `name` (every name when None) in `namespace`?
#[derive(Clone, Copy, Debug)]
pub struct AccessQuestion<'a> {
    /// Who asks: user name, uid, groups and extras, as authenticated.
    pub identity: &'a Identity,
    /// What they would do.
    pub access: Access,
    /// The object's namespace.
    pub namespace: &'a str,
    /// The object's name; None asks about every object of the namespace.
    pub name: Option<&'a str>,
}

/// Who answers RBAC questions: the API server's SubjectAccessReview
/// ([`SubjectAccessReviews`]), or a stand-in for tests and benchmarks.
pub trait AccessReviewer: Send + Sync {
    /// RBAC's answer to `question`; an error when it could not be asked (then the caller is
    /// refused, and the question asked again next time).
    fn review<'a>(&'a self, question: AccessQuestion<'a>) -> BoxFuture<'a, anyhow::Result<bool>>;
}

/// Asks the API server: a SubjectAccessReview per question.
pub struct SubjectAccessReviews {
    client: kube::Client,
}

impl SubjectAccessReviews {
    /// SubjectAccessReviews made through `client` (the proxy's service account).
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl AccessReviewer for SubjectAccessReviews {
    fn review<'a>(&'a self, question: AccessQuestion<'a>) -> BoxFuture<'a, anyhow::Result<bool>> {
        let identity = question.identity;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(identity.username.clone()),
                uid: identity.uid.clone(),
                groups: Some(identity.groups.clone()),
                extra: Some(identity.extra.clone()).filter(|e| !e.is_empty()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("guildnet.io".into()),
                    resource: Some(question.access.resource.into()),
                    subresource: Some(question.access.subresource.into()),
                    verb: Some(question.access.verb.into()),
                    namespace: Some(question.namespace.to_owned()),
                    name: question.name.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        Box::pin(async move {
            let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await?;
            Ok(reviewed.status.is_some_and(|s| s.allowed))
        })
    }
}

/// Decides who may open a workspace or use a database, reusing RBAC answers for a while (allowed and refused
/// ones apart, so a flood of refusals never pushes out what was allowed).
pub struct Authorizer {
    reviewer: Arc<dyn AccessReviewer>,
    decisions: Verdicts<Question, ()>,
}

/// Whether `identity` owns `workspace` (the label the webhook set from the creator's name).
pub fn owns(identity: &Identity, workspace: &Workspace) -> bool {
    workspace.owner_id() == Some(identity.owner_id())
}

impl Authorizer {
    /// An authorizer asking SubjectAccessReviews through `client`, each answer kept for `ttl`.
    pub fn new(client: kube::Client, ttl: Duration) -> Self {
        Self::with_reviewer(Arc::new(SubjectAccessReviews::new(client)), ttl)
    }

    /// An authorizer asking `reviewer`, each answer kept for `ttl`.
    pub fn with_reviewer(reviewer: Arc<dyn AccessReviewer>, ttl: Duration) -> Self {
        Self {
            reviewer,
            decisions: Verdicts::new(ttl, MAX_REFUSALS),
        }
    }

    /// How long an answer is reused (`--auth-cache-ttl`).
    pub fn ttl(&self) -> Duration {
        self.decisions.ttl()
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
        self.may(identity, Access::OPEN_WORKSPACE, namespace, Some(name))
            .await
    }

    /// May `identity` open every workspace of `namespace` (RBAC `get workspaces/proxy`
    /// without a resource name)?
    pub async fn may_open_all(&self, identity: &Identity, namespace: &str) -> bool {
        self.may(identity, Access::OPEN_WORKSPACE, namespace, None)
            .await
    }

    /// May `identity` use the data of database `namespace/name` (`db` when it exists) with
    /// `verb`? Its owner may do anything; anyone else as RBAC allows on
    /// `guilddatabases/data`.
    pub async fn may_use_database(
        &self,
        identity: &Identity,
        verb: &'static str,
        namespace: &str,
        name: &str,
        db: Option<&GuildDatabase>,
    ) -> bool {
        if db.is_some_and(|db| db.owner_id() == Some(identity.owner_id())) {
            return true;
        }
        self.may(identity, Access::database_data(verb), namespace, Some(name))
            .await
    }

    /// Those of `namespaces` where RBAC grants `identity` `access` on every object (no
    /// resource name), each asked once: what a list shows besides the caller's own.
    pub async fn namespaces_granting(
        &self,
        identity: &Identity,
        access: Access,
        namespaces: impl IntoIterator<Item = String>,
    ) -> HashSet<String> {
        let mut granted = HashSet::new();
        for namespace in namespaces.into_iter().collect::<BTreeSet<_>>() {
            if self.may(identity, access, &namespace, None).await {
                granted.insert(namespace);
            }
        }
        granted
    }

    /// RBAC `access` on `name` (all names when None) in `namespace`.
    async fn may(
        &self,
        identity: &Identity,
        access: Access,
        namespace: &str,
        name: Option<&str>,
    ) -> bool {
        let question = Question::new(identity, access, namespace, name);
        if let Some(verdict) = self.decisions.get(&question) {
            return verdict == Verdict::Accepted(());
        }
        let asked = AccessQuestion {
            identity,
            access,
            namespace,
            name,
        };
        match self.reviewer.review(asked).await {
            Ok(true) => {
                self.decisions.accept(question, ());
                true
            }
            Ok(false) => {
                self.decisions.refuse(question);
                false
            }
            Err(error) => {
                // Refuse, and ask again next time rather than remember an outage.
                tracing::warn!(%error, "SubjectAccessReview failed");
                false
            }
        }
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
        self.remember_access(identity, Access::OPEN_WORKSPACE, namespace, name, allowed);
    }

    pub(crate) fn remember_access(
        &self,
        identity: &Identity,
        access: Access,
        namespace: &str,
        name: Option<&str>,
        allowed: bool,
    ) {
        let question = Question::new(identity, access, namespace, name);
        if allowed {
            self.decisions.accept(question, ());
        } else {
            self.decisions.refuse(question);
        }
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
