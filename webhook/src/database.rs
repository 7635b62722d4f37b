//! The admission decisions for GuildDatabases, like those for Workspaces
//! ([`admission`](crate::admission)), and pure in the same way: a [`Review`] of a
//! GuildDatabase and a [`Snapshot`] in, a [`Decision`] out.
//!
//! Mutating ([`mutate`]): CREATE sets the owner label `guildnet.io/owner` and annotations
//! `guildnet.io/owner-name` and `guildnet.io/owner-groups` from the requester (or the user
//! `guildnet.io/owner-name` assigns); UPDATE copies them from the stored object, so the
//! owner never changes.
//!
//! Validating ([`validate`]):
//! - the trusted users pass unchecked, as for workspaces;
//! - CREATE: the owner needs a Capabilities with `databases`, and the spec must be within
//!   it ([`EffectiveCapabilities::check_database`](guildnet_api::policy::EffectiveCapabilities::check_database):
//!   image, servers, storage, each server's CPU and memory); its servers' storage
//!   (replicas × size) must fit every Quota that applies to the owner, counted with their
//!   workspaces, retained claims and other databases;
//! - CREATE and UPDATE: each password Secret `spec.users` names (every one on a CREATE, the
//!   new ones on an UPDATE) must be one the requester may `get` (`ReferenceDenied`), as a
//!   workspace's references must: the operator makes its password a database user's;
//! - UPDATE: only the owner, whoever may assign the owner, or an admin; a spec change is
//!   checked like a create, and the storage it adds against the Quotas;
//! - DELETE: only the owner, whoever may assign the owner, or an admin.

use crate::admission::{
    Deciding, Decision, DeniedReference, QuotaCheck, Refusal, Settings, Snapshot, database_demand,
    object_to_review, patched, stamp_owner,
};
use crate::review::Review;
use guildnet_api::policy::references::{Reference, database_references};
use guildnet_api::policy::{self, Denial, DenialReason, RequestedOwner, Standing, Usage, User};
use guildnet_api::{GuildDatabase, labels};
use kube::core::admission::{AdmissionRequest, Operation};

/// The mutating webhook's decision for a GuildDatabase: the owner set on CREATE, kept on
/// UPDATE. An object that is not a valid GuildDatabase, and subresources, pass unchanged.
pub fn mutate(review: &Review<GuildDatabase>) -> Decision {
    let request = &review.request;
    if review.unreadable_object.is_some() || request.sub_resource.is_some() {
        return Decision::allowed(request, None);
    }
    patched(request, mutation(request))
}

fn mutation(
    request: &AdmissionRequest<GuildDatabase>,
) -> Result<Option<json_patch::Patch>, Refusal> {
    let Some(object) = &request.object else {
        return Ok(None);
    };
    let mut mutated = object.clone();
    let old = request.old_object.as_ref().map(|old| &old.metadata);
    if !stamp_owner(request, &object.metadata, old, &mut mutated.metadata)? {
        return Ok(None);
    }
    let json = |db: &GuildDatabase| {
        serde_json::to_value(db).map_err(|error| Refusal::Invalid(error.to_string()))
    };
    let patch = json_patch::diff(&json(object)?, &json(&mutated)?);
    Ok((!patch.0.is_empty()).then_some(patch))
}

/// The password Secrets a request makes the operator read, to be reviewed as the requester
/// before the decision: every one on a CREATE, the new ones on an UPDATE; none for trusted
/// requesters, deletes, subresources and objects that cannot be read.
pub fn references_to_review(review: &Review<GuildDatabase>, settings: &Settings) -> Vec<Reference> {
    let request = &review.request;
    let Some(object) = object_to_review(review, settings) else {
        return Vec::new();
    };
    let named = database_references(&object.spec);
    match (&request.operation, &request.old_object) {
        (Operation::Create, _) => named,
        (Operation::Update, Some(old)) => {
            let before = database_references(&old.spec);
            named
                .into_iter()
                .filter(|r| !before.iter().any(|b| b.name == r.name))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The GuildDatabase a `decision` admitted whose storage must be reserved until the cache
/// shows it: a CREATE or spec change that was allowed, not a dry run, with `owner` (the
/// [`quota_owner`](crate::admission::quota_owner)) as its owner label so the reservation counts for the right owner.
pub fn admitted(
    review: &Review<GuildDatabase>,
    decision: &Decision,
    owner: Option<&str>,
) -> Option<GuildDatabase> {
    let request = &review.request;
    let object = request.object.as_ref()?;
    let changed = match (&request.operation, &request.old_object) {
        (Operation::Create, _) => true,
        (Operation::Update, Some(old)) => old.spec != object.spec,
        _ => false,
    };
    if decision.outcome.is_err() || request.dry_run || !changed {
        return None;
    }
    let mut admitted = object.clone();
    crate::admission::put(&mut admitted.metadata.labels, labels::OWNER, Some(owner?));
    Some(admitted)
}

/// The validating webhook's decision for a GuildDatabase; see the module documentation.
pub fn validate(
    review: &Review<GuildDatabase>,
    settings: &Settings,
    snapshot: &Snapshot,
) -> Decision {
    let request = &review.request;
    let outcome = match &review.unreadable_object {
        Some(problem) if request.operation != Operation::Delete => Err(Refusal::Invalid(format!(
            "the object is not a valid GuildDatabase ({problem}): fix the field it names"
        ))),
        _ => validation(request, settings, snapshot),
    };
    match outcome {
        Ok(()) => Decision::allowed(request, None),
        Err(refusal) => Decision::refused(request, refusal),
    }
}

fn validation(
    request: &AdmissionRequest<GuildDatabase>,
    settings: &Settings,
    snapshot: &Snapshot,
) -> Result<(), Refusal> {
    let Some(user) = User::from_user_info(&request.user_info) else {
        return Err(Denial::new(
            DenialReason::NoCapabilities,
            "the request carries no user name, so it can neither own nor be granted anything: authenticate as a user",
        )
        .into());
    };
    if settings.is_trusted(&user) || request.sub_resource.is_some() {
        return Ok(());
    }
    let invalid = |what: &str| Refusal::Invalid(format!("the request carries no {what}"));
    let namespace = request
        .namespace
        .as_deref()
        .ok_or_else(|| invalid("namespace"))?;
    let quotas = |owner: &User, owner_id: &str, this: Usage, change: Usage| {
        QuotaCheck {
            namespace,
            deciding: Deciding::Database(&request.name),
            owner,
            owner_id,
            settings,
            snapshot,
        }
        .check(this, change)
    };
    match request.operation {
        Operation::Create => {
            let object = request.object.as_ref().ok_or_else(|| invalid("object"))?;
            let owner = match policy::requested_owner(&user, object.owner_name()) {
                RequestedOwner::Requester => user.clone(),
                RequestedOwner::Assigned(name) => {
                    policy::check_assignment(&user, name, &snapshot.capabilities)?;
                    policy::assigned_owner(name)
                }
            };
            policy::require_capabilities(&owner, &snapshot.capabilities)?
                .check_database(&object.spec)?;
            check_references(namespace, snapshot)?;
            let owner_id = policy::owner_id(&owner.username);
            quotas(&owner, &owner_id, Usage::default(), database_demand(object))
        }
        Operation::Update => {
            let old = request
                .old_object
                .as_ref()
                .ok_or_else(|| invalid("oldObject"))?;
            let object = request.object.as_ref().ok_or_else(|| invalid("object"))?;
            let standing = policy::check_owner(&user, old.owner_id(), &snapshot.capabilities)?;
            if object.spec == old.spec {
                return Ok(());
            }
            let owner = match standing {
                Standing::Owner => user.clone(),
                Standing::ActsForOwner | Standing::Admin => {
                    old.owner().unwrap_or_else(|| user.clone())
                }
            };
            // An assigner acts for the owner; an admin (or the owner) in their own right.
            let grantee = match standing {
                Standing::ActsForOwner => &owner,
                Standing::Owner | Standing::Admin => &user,
            };
            policy::require_capabilities(grantee, &snapshot.capabilities)?
                .check_database(&object.spec)?;
            check_references(namespace, snapshot)?;
            let Some(owner_id) = old.owner_id() else {
                return Ok(());
            };
            let before = database_demand(old);
            let added = database_demand(object).saturating_sub(&before);
            quotas(&owner, owner_id, before, added)
        }
        Operation::Delete => {
            let old = request
                .old_object
                .as_ref()
                .ok_or_else(|| invalid("oldObject"))?;
            policy::check_owner(&user, old.owner_id(), &snapshot.capabilities)?;
            Ok(())
        }
        Operation::Connect => Ok(()),
    }
}

/// A GuildDatabase may name only password Secrets its requester may read
/// ([`references_to_review`], answered by SubjectAccessReviews into the snapshot).
fn check_references(namespace: &str, snapshot: &Snapshot) -> Result<(), Refusal> {
    let Some(DeniedReference { reader, reference }) = snapshot.denied_references.first() else {
        return Ok(());
    };
    Err(Denial::new(
        DenialReason::ReferenceDenied,
        format!(
            "{} names Secret {namespace}/{}, which {reader} may not get: a database user's password may only come from a Secret whoever writes the spec may read; use one of your own, or ask for get on it",
            reference.field, reference.name
        ),
    )
    .into())
}
