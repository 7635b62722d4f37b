//! Owner assignment: creating a workspace for someone else.
//!
//! A GitOps controller (Argo CD, Flux) applies the workspaces of many developers; without
//! assignment each would be the controller's. A requester granted `assignOwners` in a
//! Capabilities names the intended owner with the annotation `guildnet.io/owner-name` on
//! CREATE, and the workspace is recorded as that user's:
//!
//! - The owner's Capabilities and Quotas decide what the workspace may be, as if the owner
//!   had created it; the requester's own grants do not count.
//! - The owner's groups cannot be known: the API server tells admission only the
//!   requester's. An assigned owner is recorded with `system:authenticated` alone, the
//!   group every signed-in user has, so Capabilities and Quotas that name her by user name,
//!   or everyone signed in, apply to her workspace; those naming only her groups do not.
//! - The requester acts for the owners it may assign: it may also update and delete their
//!   workspaces, as a controller re-applies and prunes what it applied.
//! - The owner never changes afterwards: an update repeating the annotation (every
//!   re-apply) changes nothing, one naming anyone else is refused.
//! - Naming anyone but oneself without the grant is refused rather than ignored, so a
//!   controller missing the grant fails loudly instead of owning what it applies.

use super::capabilities::effective_capabilities;
use super::denial::{Denial, DenialReason};
use super::owner::{owner_id, owner_name};
use super::subjects::{AUTHENTICATED_GROUP, User};
use crate::capabilities::{Capabilities, CapabilitiesSpec};
use crate::labels;
use std::collections::BTreeSet;

/// The `assignOwners.users` entry that allows any user.
pub const ANY_USER: &str = "*";

/// Whom a user may make owners of the workspaces they create: the union of their grants'
/// `assignOwners`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignableOwners {
    /// No grant has `assignOwners`: only themselves.
    Nobody,
    /// Some grant lists `*`.
    Anyone,
    /// These user names.
    Only(BTreeSet<String>),
}

impl AssignableOwners {
    /// The union of the `assignOwners` of `specs`.
    pub(crate) fn of_grants<'a>(specs: impl Iterator<Item = &'a CapabilitiesSpec>) -> Self {
        let mut users = BTreeSet::new();
        let mut granted = false;
        for assignment in specs.filter_map(|spec| spec.assign_owners.as_ref()) {
            granted = true;
            users.extend(assignment.users.iter().cloned());
        }
        match granted {
            false => Self::Nobody,
            true if users.contains(ANY_USER) => Self::Anyone,
            true => Self::Only(users),
        }
    }

    /// Whether the user named `username` may be made an owner.
    pub fn allows(&self, username: &str) -> bool {
        match self {
            Self::Nobody => false,
            Self::Anyone => true,
            Self::Only(users) => users.contains(username),
        }
    }

    /// Whether the owner whose id (`guildnet.io/owner` label) is `id` may be assigned: the
    /// requester then acts for that owner.
    pub fn allows_owner_id(&self, id: &str) -> bool {
        match self {
            Self::Nobody => false,
            Self::Anyone => true,
            Self::Only(users) => users.iter().any(|user| owner_id(user) == id),
        }
    }
}

/// Whom a CREATE asks to own the new workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestedOwner<'a> {
    /// The requester: the annotation `guildnet.io/owner-name` is absent or names them.
    Requester,
    /// The user the annotation names.
    Assigned(&'a str),
}

/// Whom a CREATE by `requester` with `owner_name` (the `guildnet.io/owner-name` annotation
/// as sent) asks to own the workspace. The requester's name as the annotation records it
/// (shortened, see [`owner_name`]) is the requester too, so a manifest read back and applied
/// again by its owner is no assignment.
pub fn requested_owner<'a>(
    requester: &User,
    owner_name_annotation: Option<&'a str>,
) -> RequestedOwner<'a> {
    match owner_name_annotation {
        Some(name) if name != requester.username && name != owner_name(&requester.username) => {
            RequestedOwner::Assigned(name)
        }
        _ => RequestedOwner::Requester,
    }
}

/// An assigned owner as Capabilities and Quotas match them: the user name, and of groups
/// only `system:authenticated` (see the module documentation).
pub fn assigned_owner(username: &str) -> User {
    User::new(username, [AUTHENTICATED_GROUP])
}

/// Whether `requester` may create a workspace for the user named `owner`: a Capabilities
/// naming the requester must list `owner` (or `*`) in `assignOwners.users`, and the name must
/// be one the annotation records unchanged (printable, no surrounding spaces, at most 128
/// characters), since the owner id is derived from it.
pub fn check_assignment(requester: &User, owner: &str, all: &[Capabilities]) -> Result<(), Denial> {
    let denied = |message: String| Denial::new(DenialReason::OwnerAssignmentDenied, message);
    let annotation = labels::OWNER_NAME;
    let assignable = effective_capabilities(requester, all)
        .map_or(AssignableOwners::Nobody, |caps| caps.assign_owners);
    match &assignable {
        AssignableOwners::Nobody => {
            return Err(denied(format!(
                "metadata.annotations {annotation} names {owner:?}, but {:?} may not create workspaces for other users: remove the annotation to own the workspace yourself, or ask an admin for assignOwners in a Capabilities naming you",
                requester.username
            )));
        }
        AssignableOwners::Only(users) if !users.contains(owner) => {
            return Err(denied(format!(
                "metadata.annotations {annotation} names {owner:?}, but {:?} may create workspaces only for {}: name one of them, or ask an admin to add {owner:?} to spec.assignOwners.users of a Capabilities naming you",
                requester.username,
                users
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        AssignableOwners::Anyone | AssignableOwners::Only(_) => {}
    }
    if owner_name(owner) != owner {
        return Err(denied(format!(
            "metadata.annotations {annotation} {owner:?} is not a user name the annotation can hold as it is (control characters, surrounding spaces, or more than {} characters): name the owner exactly as the API server authenticates them",
            super::owner::OWNER_NAME_MAX_CHARS
        )));
    }
    Ok(())
}

/// An UPDATE keeps the owner: `guildnet.io/owner-name` as sent (`sent`) must be absent,
/// or what is stored (`stored`), or a name the annotation records as that (see
/// [`owner_name`]). Re-applying a manifest that names the owner changes nothing; naming
/// someone else is refused instead of silently put back, so a GitOps tool reports the
/// failed sync rather than a difference it can never settle.
pub fn check_owner_kept(sent: Option<&str>, stored: Option<&str>) -> Result<(), Denial> {
    match sent {
        Some(sent) if Some(sent) != stored && Some(owner_name(sent).as_str()) != stored => {
            Err(Denial::new(
                DenialReason::OwnerAssignmentDenied,
                format!(
                    "metadata.annotations {} is {sent:?}, but this workspace's owner is {}: the owner of a workspace never changes; set the annotation back or remove it, or delete the workspace and create it anew for {sent:?}",
                    labels::OWNER_NAME,
                    stored.map_or_else(|| "unset".to_owned(), |name| format!("{name:?}"))
                ),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::OwnerAssignment;
    use crate::common::{Subject, SubjectKind};

    fn argocd() -> User {
        User::new(
            "system:serviceaccount:argocd:argocd-application-controller",
            ["system:serviceaccounts", "system:authenticated"],
        )
    }

    fn assigning(name: &str, users: &[&str]) -> Capabilities {
        Capabilities::new(
            name,
            CapabilitiesSpec {
                subjects: vec![Subject {
                    kind: SubjectKind::ServiceAccount,
                    name: "argocd-application-controller".into(),
                    namespace: Some("argocd".into()),
                }],
                assign_owners: Some(OwnerAssignment {
                    users: users.iter().map(|u| (*u).to_owned()).collect(),
                }),
                ..CapabilitiesSpec::default()
            },
        )
    }

    #[test]
    fn the_annotation_naming_someone_else_asks_for_an_assignment() {
        let alice = User::new("alice", ["guildnet:users"]);
        assert_eq!(requested_owner(&alice, None), RequestedOwner::Requester);
        assert_eq!(
            requested_owner(&alice, Some("alice")),
            RequestedOwner::Requester
        );
        assert_eq!(
            requested_owner(&alice, Some("bob")),
            RequestedOwner::Assigned("bob")
        );
        assert_eq!(
            requested_owner(&alice, Some("Alice")),
            RequestedOwner::Assigned("Alice")
        );
        // A long name as the annotation shortened it is still the requester's own.
        let long = User::new("x".repeat(300), Vec::<String>::new());
        let recorded = owner_name(&long.username);
        assert_eq!(
            requested_owner(&long, Some(&recorded)),
            RequestedOwner::Requester
        );
    }

    #[test]
    fn only_granted_requesters_assign_and_only_the_users_listed() {
        let requester = argocd();
        let denial = check_assignment(&requester, "alice", &[]).unwrap_err();
        assert_eq!(denial.reason, DenialReason::OwnerAssignmentDenied);
        assert!(
            denial
                .message
                .contains("may not create workspaces for other users"),
            "{}",
            denial.message
        );
        assert!(
            denial.message.contains("assignOwners"),
            "{}",
            denial.message
        );

        let team = [assigning("team-a", &["alice", "carol"])];
        assert!(check_assignment(&requester, "alice", &team).is_ok());
        let denial = check_assignment(&requester, "bob", &team).unwrap_err();
        assert!(
            denial.message.contains("only for \"alice\", \"carol\""),
            "{}",
            denial.message
        );
        assert!(
            denial.message.contains("spec.assignOwners.users"),
            "{}",
            denial.message
        );
        // Someone the grant does not name gets nothing from it.
        let bob = User::new("bob", ["system:authenticated"]);
        assert!(check_assignment(&bob, "alice", &team).is_err());

        let everyone = [
            assigning("team-a", &["alice"]),
            assigning("all", &[ANY_USER]),
        ];
        assert!(check_assignment(&requester, "bob", &everyone).is_ok());
    }

    #[test]
    fn an_owner_name_the_annotation_would_change_is_refused() {
        let all = [assigning("all", &[ANY_USER])];
        for name in [" alice", "alice\n", "", &"x".repeat(200)] {
            let denial = check_assignment(&argocd(), name, &all).unwrap_err();
            assert!(
                denial.message.contains("exactly as the API server"),
                "{name:?}: {}",
                denial.message
            );
        }
        assert!(check_assignment(&argocd(), "alice@example.com", &all).is_ok());
    }

    #[test]
    fn assigners_act_for_the_owners_they_may_assign() {
        let only = AssignableOwners::of_grants([assigning("a", &["alice"]).spec].iter());
        assert!(only.allows("alice") && !only.allows("bob"));
        assert!(only.allows_owner_id(&owner_id("alice")));
        assert!(!only.allows_owner_id(&owner_id("bob")));
        let anyone = AssignableOwners::of_grants([assigning("a", &[ANY_USER]).spec].iter());
        assert!(anyone.allows_owner_id(&owner_id("bob")));
        let nobody = AssignableOwners::of_grants([CapabilitiesSpec::default()].iter());
        assert_eq!(nobody, AssignableOwners::Nobody);
        assert!(!nobody.allows_owner_id(&owner_id("alice")));
    }

    #[test]
    fn assigned_owners_count_as_signed_in_users_only() {
        let alice = assigned_owner("alice");
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.groups, [AUTHENTICATED_GROUP]);
    }

    #[test]
    fn the_owner_never_changes_on_update() {
        assert!(check_owner_kept(None, Some("alice")).is_ok());
        assert!(check_owner_kept(Some("alice"), Some("alice")).is_ok());
        let long = "x".repeat(300);
        assert!(check_owner_kept(Some(&long), Some(&owner_name(&long))).is_ok());
        let denial = check_owner_kept(Some("bob"), Some("alice")).unwrap_err();
        assert_eq!(denial.reason, DenialReason::OwnerAssignmentDenied);
        assert!(
            denial.message.contains("never changes"),
            "{}",
            denial.message
        );
        assert!(
            denial.message.contains("create it anew for \"bob\""),
            "{}",
            denial.message
        );
        assert!(
            check_owner_kept(Some("bob"), None)
                .unwrap_err()
                .message
                .contains("owner is unset")
        );
    }
}
