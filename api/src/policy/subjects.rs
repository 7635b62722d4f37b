//! Who a policy names: matching [`Subject`]s of Capabilities and Quotas against the
//! authenticated user of a request.

use crate::common::{Subject, SubjectKind};
use k8s_openapi::api::authentication::v1::UserInfo;

/// The group the API server gives every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Kubernetes' cluster administrators: RBAC allows its members everything and cannot be
/// told otherwise, so GuildNet's ownership rules let them act on any workspace too.
pub const CLUSTER_ADMIN_GROUP: &str = "system:masters";
/// The group the API server gives anonymous requests.
const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The user name of anonymous requests.
const ANONYMOUS_USER: &str = "system:anonymous";
/// The prefix of a service account's user name, `system:serviceaccount:<ns>:<name>`.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The authenticated user of a request, as the API server reports it in an
/// AdmissionRequest's `userInfo`. Service accounts are users too
/// (`system:serviceaccount:<namespace>:<name>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// The user name; what RBAC and GuildNet's ownership key on.
    pub username: String,
    /// The authenticator's id for the user, when it gives one. Informational only.
    pub uid: Option<String>,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
}

impl User {
    /// A user with `username` in `groups`.
    pub fn new(
        username: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            username: username.into(),
            uid: None,
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }

    /// The user of an AdmissionRequest; `None` without a user name, which then cannot own
    /// or be granted anything.
    pub fn from_user_info(info: &UserInfo) -> Option<Self> {
        let username = info.username.as_deref().filter(|name| !name.is_empty())?;
        Some(Self {
            username: username.to_owned(),
            uid: info.uid.clone().filter(|uid| !uid.is_empty()),
            groups: info.groups.clone().unwrap_or_default(),
        })
    }

    /// Whether the user is authenticated, i.e. not the anonymous user. Decided from the
    /// user name and the unauthenticated group rather than from the presence of
    /// `system:authenticated`, so a caller that builds a user without that group (a test, a
    /// token review) still gets the grants meant for everyone signed in.
    pub fn is_authenticated(&self) -> bool {
        self.username != ANONYMOUS_USER && !self.in_group(UNAUTHENTICATED_GROUP)
    }

    /// Whether the user is a cluster administrator (group `system:masters`).
    pub fn is_cluster_admin(&self) -> bool {
        self.in_group(CLUSTER_ADMIN_GROUP)
    }

    /// The namespace and name when the user is a service account.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        self.username
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)?
            .split_once(':')
    }

    fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Whether `subject` names `user`. Names compare exactly (Kubernetes user and group names
/// are case-sensitive). A ServiceAccount subject without a namespace names nobody (the
/// schema refuses one; failing closed keeps a stray object harmless).
pub fn subject_matches(subject: &Subject, user: &User) -> bool {
    match subject.kind {
        SubjectKind::User => user.username == subject.name,
        SubjectKind::Group if subject.name == AUTHENTICATED_GROUP => user.is_authenticated(),
        SubjectKind::Group => user.in_group(&subject.name),
        SubjectKind::ServiceAccount => subject
            .namespace
            .as_deref()
            .is_some_and(|namespace| user.service_account() == Some((namespace, &subject.name))),
    }
}

/// Whether any of `subjects` names `user`.
pub fn any_subject_matches(subjects: &[Subject], user: &User) -> bool {
    subjects
        .iter()
        .any(|subject| subject_matches(subject, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(kind: SubjectKind, name: &str, namespace: Option<&str>) -> Subject {
        Subject {
            kind,
            name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
        }
    }

    #[test]
    fn users_match_by_exact_name() {
        let alice = User::new("alice", ["system:authenticated"]);
        assert!(subject_matches(
            &subject(SubjectKind::User, "alice", None),
            &alice
        ));
        assert!(!subject_matches(
            &subject(SubjectKind::User, "Alice", None),
            &alice
        ));
        assert!(!subject_matches(
            &subject(SubjectKind::User, "alic", None),
            &alice
        ));
        assert!(!subject_matches(
            &subject(SubjectKind::User, "alice2", None),
            &alice
        ));
    }

    #[test]
    fn groups_match_membership() {
        let alice = User::new("alice", ["guildnet:users", "system:authenticated"]);
        assert!(subject_matches(
            &subject(SubjectKind::Group, "guildnet:users", None),
            &alice
        ));
        assert!(!subject_matches(
            &subject(SubjectKind::Group, "guildnet:admins", None),
            &alice
        ));
        assert!(!subject_matches(
            &subject(SubjectKind::Group, "guildnet", None),
            &alice
        ));
        // A group is not a user name.
        assert!(!subject_matches(
            &subject(SubjectKind::Group, "alice", None),
            &alice
        ));
    }

    #[test]
    fn system_authenticated_matches_everyone_signed_in_and_no_anonymous() {
        let everyone = subject(SubjectKind::Group, AUTHENTICATED_GROUP, None);
        assert!(subject_matches(
            &everyone,
            &User::new("alice", ["system:authenticated"])
        ));
        assert!(subject_matches(
            &everyone,
            &User::new("bob", Vec::<String>::new())
        ));
        let sa = User::new(
            "system:serviceaccount:ci:deployer",
            ["system:serviceaccounts"],
        );
        assert!(subject_matches(&everyone, &sa));
        let anonymous = User::new("system:anonymous", ["system:unauthenticated"]);
        assert!(!subject_matches(&everyone, &anonymous));
        assert!(!subject_matches(
            &everyone,
            &User::new("system:anonymous", Vec::<String>::new())
        ));
    }

    #[test]
    fn service_accounts_match_their_user_name() {
        let deployer = User::new(
            "system:serviceaccount:ci:deployer",
            ["system:serviceaccounts"],
        );
        let matching = subject(SubjectKind::ServiceAccount, "deployer", Some("ci"));
        assert!(subject_matches(&matching, &deployer));
        assert!(!subject_matches(
            &subject(SubjectKind::ServiceAccount, "deployer", Some("prod")),
            &deployer
        ));
        assert!(!subject_matches(
            &subject(SubjectKind::ServiceAccount, "deploy", Some("ci")),
            &deployer
        ));
        assert!(!subject_matches(
            &subject(SubjectKind::ServiceAccount, "deployer", None),
            &deployer
        ));
        // A user merely named like the account is not the account.
        assert!(!subject_matches(
            &matching,
            &User::new("deployer", ["system:authenticated"])
        ));
        // Nor does a colon in the name let one account pass for another.
        let tricky = User::new("system:serviceaccount:ci:deployer:x", Vec::<String>::new());
        assert!(!subject_matches(&matching, &tricky));
        // A User subject with the full name matches too: it is the user's name.
        assert!(subject_matches(
            &subject(SubjectKind::User, "system:serviceaccount:ci:deployer", None),
            &deployer
        ));
    }

    #[test]
    fn any_subject_matches_needs_one_match() {
        let alice = User::new("alice", ["dev"]);
        let subjects = [
            subject(SubjectKind::User, "bob", None),
            subject(SubjectKind::Group, "dev", None),
        ];
        assert!(any_subject_matches(&subjects, &alice));
        assert!(!any_subject_matches(&subjects[..1], &alice));
        assert!(!any_subject_matches(&[], &alice));
    }

    #[test]
    fn user_info_becomes_a_user() {
        let info = UserInfo {
            username: Some("alice".into()),
            uid: Some("42".into()),
            groups: Some(vec!["dev".into()]),
            extra: None,
        };
        assert_eq!(
            User::from_user_info(&info),
            Some(User {
                username: "alice".into(),
                uid: Some("42".into()),
                groups: vec!["dev".into()],
            })
        );
        assert_eq!(User::from_user_info(&UserInfo::default()), None);
        let nameless = UserInfo {
            username: Some(String::new()),
            ..UserInfo::default()
        };
        assert_eq!(User::from_user_info(&nameless), None);
    }
}
