//! The admission decisions for Workspaces: pure functions from a [`Review`] (and, for
//! validation, a [`Snapshot`] of the policy objects) to an AdmissionResponse. No I/O happens
//! here, so every rule is unit-tested from recorded AdmissionReviews; the server only feeds
//! requests in and answers with what comes out. Every rule itself lives in
//! [`guildnet_api::policy`] and [`apply_defaults`]; this module decides which apply when.
//!
//! Mutating ([`mutate`]), CREATE and UPDATE:
//! - CREATE: the owner label `guildnet.io/owner` and annotations `guildnet.io/owner-name`
//!   and `guildnet.io/owner-groups` are set from the requesting user, replacing the label
//!   and groups the user wrote. An owner name naming someone else asks for an assignment
//!   ([`policy::assignment`]): that user is recorded as the owner, and validation refuses
//!   the request unless the requester may assign them.
//! - UPDATE: the owner is copied from the stored object, so it never changes; an owner name
//!   naming anyone else is refused.
//! - Both: the spec is defaulted with [`apply_defaults`], so what users read back runs.
//!
//! Validating ([`validate`]):
//! - Exactly the configured [`Settings::trusted_users`] pass unchecked: GuildNet's operator
//!   and proxy, Kubernetes' namespace controller and garbage collector. The operator
//!   suspends idle workspaces; refusing it would stop GuildNet, and refusing the namespace
//!   controller or the garbage collector would leave namespaces and dependents behind.
//! - CREATE: the owner (the requester, or the user assigned) needs Capabilities; the
//!   defaulted spec must pass them (image, resources, exposure, placement) and fit every
//!   Quota that applies to the owner.
//! - UPDATE: only the owner, whoever may assign the owner, or an admin (Capabilities
//!   `admin`, or `system:masters`) may update. A change that leaves the defaulted spec as it
//!   was (labels, finalizers, status) passes; a spec change is checked like a create,
//!   against the requester's Capabilities (the owner's when an assigner acts for them),
//!   and the owner's Quotas see what it adds.
//! - DELETE: only the owner, whoever may assign the owner, or an admin may delete.

use crate::review::Review;
use guildnet_api::cluster::placement;
use guildnet_api::ownership;
use guildnet_api::policy::credentials::plaintext_credential_warnings;
use guildnet_api::policy::references::{Reference, added_references, references};
use guildnet_api::policy::{
    self, ApplicableQuota, Denial, DenialReason, QuantityError, RequestedOwner, Standing, Usage,
    User,
};
use guildnet_api::workspace::facts::encode_owner_groups;
use guildnet_api::workspace::{SpecError, apply_defaults, check_annotations};
use guildnet_api::{
    Capabilities, ClusterRegistration, GuildDatabase, Quota, Workspace, WorkspaceSpec, labels,
};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::Status;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::{Resource, ResourceExt};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the decisions depend on besides the request: set from the webhook's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The user names whose requests pass unchecked: GuildNet's operator and proxy, and
    /// Kubernetes' controllers that must never be blocked (namespace deletion, garbage
    /// collection).
    pub trusted_users: Vec<String>,
    /// GuildNet's own namespace: cluster-wide Quotas live there.
    pub system_namespace: String,
}

impl Settings {
    /// Whether the request comes from one of [`Self::trusted_users`], by exact user name:
    /// anyone who may create a ServiceAccount somewhere would pass a rule by prefix or
    /// namespace.
    pub fn is_trusted(&self, user: &User) -> bool {
        self.trusted_users.contains(&user.username)
    }
}

/// The policy objects and workspaces a validation decides with, as the webhook's watch
/// caches hold them.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every Capabilities.
    pub capabilities: Vec<Capabilities>,
    /// Every Quota.
    pub quotas: Vec<Arc<Quota>>,
    /// The workspaces Quotas may count: at least those of the request's
    /// [`quota_owner`], including those admitted but not yet seen by the cache.
    pub workspaces: Vec<Arc<Workspace>>,
    /// Of the references the request adds ([`references_to_review`]), those one of its
    /// [`reference_readers`] may not read, as SubjectAccessReviews answered.
    pub denied_references: Vec<DeniedReference>,
    /// The cached workspaces, in any namespace, whose Ingress uses the host the request's
    /// workspace asks for ([`ingress_host`]).
    pub host_users: Vec<Arc<Workspace>>,
    /// The storage of the [`quota_owner`]'s retained claims that no workspace asks for any
    /// more, per namespace: they count against Quotas until deleted.
    pub retained_claims: Vec<(String, Usage)>,
    /// Every ClusterRegistration: a new workspace's placement must name one that takes
    /// workspaces.
    pub clusters: Vec<Arc<ClusterRegistration>>,
    /// The [`quota_owner`]'s GuildDatabases: their servers' storage counts against Quotas.
    pub databases: Vec<Arc<GuildDatabase>>,
}

/// The Ingress host the request's workspace asks for, if it asks for one.
pub fn ingress_host(review: &Review) -> Option<&str> {
    let spec = &review.request.object.as_ref()?.spec;
    Some(spec.exposure.as_ref()?.ingress.as_ref()?.host.as_str())
}

/// A Secret or ConfigMap a request makes its workspace read that `reader` may not `get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeniedReference {
    /// The user name of the reader refused.
    pub reader: String,
    /// What the spec names.
    pub reference: Reference,
}

/// Secrets and ConfigMaps a request makes its workspace read, to be reviewed as each of its
/// [`reference_readers`] before the decision: every one on a CREATE, the new ones on an
/// UPDATE; none for trusted requesters, deletes, subresources and objects that cannot be
/// read.
pub fn references_to_review(review: &Review, settings: &Settings) -> Vec<Reference> {
    let request = &review.request;
    let Some(object) = object_to_review(review, settings) else {
        return Vec::new();
    };
    let name = object.metadata.name.as_deref().unwrap_or(&request.name);
    match (&request.operation, &request.old_object) {
        (Operation::Create, _) => references(name, &object.spec),
        (Operation::Update, Some(old)) => added_references(name, &object.spec, &old.spec),
        _ => Vec::new(),
    }
}

/// The object of a request whose references are to be reviewed: none for objects that
/// cannot be read, subresources and trusted requesters.
pub(crate) fn object_to_review<'a, K: Resource>(
    review: &'a Review<K>,
    settings: &Settings,
) -> Option<&'a K> {
    let request = &review.request;
    if review.unreadable_object.is_some() || request.sub_resource.is_some() {
        return None;
    }
    let trusted =
        User::from_user_info(&request.user_info).is_none_or(|user| settings.is_trusted(&user));
    request.object.as_ref().filter(|_| !trusted)
}

/// Who must be allowed to read what a request's workspace names
/// ([`references_to_review`]): the requester, who writes the spec, and the workspace's
/// owner when that is someone else (an assigned owner, or the owner of a workspace an
/// assigner or admin changes), who opens the workspace and so reads what it reads. The owner
/// is asked about with the groups recorded for them.
pub fn reference_readers(review: &Review) -> Vec<UserInfo> {
    let request = &review.request;
    let mut readers = vec![request.user_info.clone()];
    let Some(user) = User::from_user_info(&request.user_info) else {
        return readers;
    };
    let owner = match (&request.operation, &request.object, &request.old_object) {
        (Operation::Create, Some(object), _) => {
            match policy::requested_owner(&user, object.owner_name()) {
                RequestedOwner::Requester => None,
                RequestedOwner::Assigned(name) => Some(policy::assigned_owner(name)),
            }
        }
        (Operation::Update, _, Some(old))
            if old.owner_id() != Some(policy::owner_id(&user.username).as_str()) =>
        {
            old.owner()
        }
        _ => None,
    };
    if let Some(owner) = owner {
        readers.push(UserInfo {
            username: Some(owner.username),
            groups: Some(owner.groups),
            ..UserInfo::default()
        });
    }
    readers
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A policy refuses it; see [`DenialReason`].
    #[error(transparent)]
    Denied(#[from] Denial),
    /// The object cannot be judged: not a valid Workspace, an unusable annotation, a
    /// quantity that is not one. The message names the field and the fix.
    #[error("{0}")]
    Invalid(String),
    /// The webhook cannot decide yet (its caches are not synced); the client may retry.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// The machine-readable reason in the response status: the denial's stable reason, or
    /// the Kubernetes status reason for the other cases.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Denied(denial) => denial.reason.as_str(),
            Self::Invalid(_) => "Invalid",
            Self::Unavailable(_) => "ServiceUnavailable",
        }
    }

    /// The HTTP status code the API server answers the client with.
    pub fn code(&self) -> u16 {
        match self {
            Self::Denied(denial) => denial.reason.http_code(),
            Self::Invalid(_) => 422,
            Self::Unavailable(_) => 503,
        }
    }

    /// The message users see, starting with the reason: `kubectl` shows the message only.
    fn message(&self) -> String {
        match self {
            Self::Denied(denial) => denial.to_string(),
            Self::Invalid(message) | Self::Unavailable(message) => {
                format!("{}: {message}", self.reason())
            }
        }
    }
}

/// What a webhook decided.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The answer for the API server.
    pub response: AdmissionResponse,
    /// Whether the request was allowed, and why not; for metrics and logs.
    pub outcome: Result<(), Refusal>,
    /// A workspace whose creation or spec change was admitted (not a dry run), with its
    /// owner label and defaulted spec, so its Quota usage counts before the cache sees it.
    pub admitted: Option<Workspace>,
}

impl Decision {
    pub(crate) fn allowed<K: Resource>(
        request: &AdmissionRequest<K>,
        admitted: Option<Workspace>,
    ) -> Self {
        Self {
            response: AdmissionResponse::from(request),
            outcome: Ok(()),
            admitted,
        }
    }

    /// A refusal of `request`, with the reason and code in the response status.
    pub fn refused<K: Resource>(request: &AdmissionRequest<K>, refusal: Refusal) -> Self {
        let mut response = AdmissionResponse::from(request);
        response.allowed = false;
        response.result =
            Status::failure(&refusal.message(), refusal.reason()).with_code(refusal.code());
        Self {
            response,
            outcome: Err(refusal),
            admitted: None,
        }
    }
}

/// The mutating webhook's decision; see the module documentation. An object that is not a
/// valid Workspace passes unchanged, so the API server's schema check refuses it with its
/// own message; status and other subresources pass unchanged too.
pub fn mutate(review: &Review) -> Decision {
    let request = &review.request;
    if review.unreadable_object.is_some() || request.sub_resource.is_some() {
        return Decision::allowed(request, None);
    }
    patched(request, mutation(request))
}

/// The mutating webhook's answer: `patch` applied (none: the object unchanged), or the
/// refusal that kept it from being made.
pub(crate) fn patched<K: Resource>(
    request: &AdmissionRequest<K>,
    patch: Result<Option<json_patch::Patch>, Refusal>,
) -> Decision {
    let patched = patch.and_then(|patch| {
        let response = AdmissionResponse::from(request);
        match patch {
            Some(patch) => response
                .with_patch(patch)
                .map_err(|error| Refusal::Invalid(error.to_string())),
            None => Ok(response),
        }
    });
    match patched {
        Ok(response) => Decision {
            response,
            outcome: Ok(()),
            admitted: None,
        },
        Err(refusal) => Decision::refused(request, refusal),
    }
}

/// The JSON patch from the object as sent to the object with its owner and defaults;
/// `None` when nothing changes.
fn mutation(request: &AdmissionRequest<Workspace>) -> Result<Option<json_patch::Patch>, Refusal> {
    let Some(object) = &request.object else {
        return Ok(None);
    };
    let mut mutated = object.clone();
    let old = request.old_object.as_ref().map(|old| &old.metadata);
    if !stamp_owner(request, &object.metadata, old, &mut mutated.metadata)? {
        return Ok(None);
    }
    mutated.spec = defaulted(&mutated)?;
    let before = to_json(object)?;
    let after = to_json(&mutated)?;
    let patch = json_patch::diff(&before, &after);
    Ok((!patch.0.is_empty()).then_some(patch))
}

/// Sets the owner label and annotations of `mutated` (a copy of `object`, the object as
/// sent): on CREATE the requester's, or the user `guildnet.io/owner-name` assigns; on
/// UPDATE the stored object's (`old`), refusing an owner name naming anyone else. `false`
/// for the operations that change nothing (DELETE, CONNECT).
pub(crate) fn stamp_owner<K: Resource>(
    request: &AdmissionRequest<K>,
    object: &ObjectMeta,
    old: Option<&ObjectMeta>,
    mutated: &mut ObjectMeta,
) -> Result<bool, Refusal> {
    match request.operation {
        Operation::Create => {
            let owner =
                User::from_user_info(&request.user_info).map(|user| requested_owner(user, object));
            let id = owner.as_ref().map(|o| policy::owner_id(&o.username));
            let name = owner.as_ref().map(|o| policy::owner_name(&o.username));
            let groups = owner.as_ref().map(|o| encode_owner_groups(&o.groups));
            set_owner(mutated, id.as_deref(), name.as_deref(), groups.as_deref());
        }
        Operation::Update => {
            let stored_name = old.and_then(ownership::owner_name);
            policy::check_owner_kept(ownership::owner_name(object), stored_name)?;
            let id = old.and_then(ownership::owner_id);
            let groups = old
                .and_then(|old| old.annotations.as_ref())
                .and_then(|a| a.get(labels::OWNER_GROUPS));
            set_owner(mutated, id, stored_name, groups.map(String::as_str));
        }
        Operation::Delete | Operation::Connect => return Ok(false),
    }
    Ok(true)
}

/// Whom a CREATE by `user` of `object` is for: the requester, or the user its
/// `guildnet.io/owner-name` assigns (whether `user` may assign them, validation decides).
pub(crate) fn requested_owner(user: User, object: &ObjectMeta) -> User {
    match policy::requested_owner(&user, ownership::owner_name(object)) {
        RequestedOwner::Requester => user,
        RequestedOwner::Assigned(name) => policy::assigned_owner(name),
    }
}

/// Sets (or, for `None`, removes) the owner label and annotations.
pub(crate) fn set_owner(
    metadata: &mut ObjectMeta,
    id: Option<&str>,
    name: Option<&str>,
    groups: Option<&str>,
) {
    put(&mut metadata.labels, labels::OWNER, id);
    put(&mut metadata.annotations, labels::OWNER_NAME, name);
    put(&mut metadata.annotations, labels::OWNER_GROUPS, groups);
}

pub(crate) fn put(map: &mut Option<BTreeMap<String, String>>, key: &str, value: Option<&str>) {
    match (value, map.as_mut()) {
        (Some(value), _) => {
            map.get_or_insert_default()
                .insert(key.to_owned(), value.to_owned());
        }
        (None, Some(map)) => {
            map.remove(key);
        }
        (None, None) => {}
    }
}

fn to_json(workspace: &Workspace) -> Result<serde_json::Value, Refusal> {
    serde_json::to_value(workspace).map_err(|error| Refusal::Invalid(error.to_string()))
}

/// The workspace's spec with [`apply_defaults`] applied, as the controller will run it.
fn defaulted(workspace: &Workspace) -> Result<WorkspaceSpec, Refusal> {
    let mut spec = workspace.spec.clone();
    let invalid = |error: SpecError| Refusal::Invalid(error.to_string());
    apply_defaults(&mut spec, workspace.annotations()).map_err(invalid)?;
    check_annotations(workspace.annotations()).map_err(invalid)?;
    Ok(spec)
}

/// Whose workspaces and databases a validation of `request` (of either kind) may count
/// against Quotas: the requested owner's on CREATE (the requester's, or the user assigned),
/// the stored object's owner on UPDATE, nobody's otherwise. A [`Snapshot`] needs no other
/// owner's.
pub fn quota_owner<K: Resource>(request: &AdmissionRequest<K>) -> Option<String> {
    match request.operation {
        Operation::Create => {
            let user = User::from_user_info(&request.user_info)?;
            let owner = requested_owner(user, request.object.as_ref()?.meta());
            Some(policy::owner_id(&owner.username))
        }
        Operation::Update => {
            ownership::owner_id(request.old_object.as_ref()?.meta()).map(str::to_owned)
        }
        Operation::Delete | Operation::Connect => None,
    }
}

/// The validating webhook's decision; see the module documentation.
pub fn validate(review: &Review, settings: &Settings, snapshot: &Snapshot) -> Decision {
    let request = &review.request;
    let outcome = match &review.unreadable_object {
        Some(problem) if request.operation != Operation::Delete => Err(Refusal::Invalid(format!(
            "the object is not a valid Workspace ({problem}): fix the field it names"
        ))),
        _ => validation(request, settings, snapshot),
    };
    match outcome {
        Ok(admitted) => {
            let mut decision = Decision::allowed(request, admitted.filter(|_| !request.dry_run));
            let warnings = request
                .object
                .as_ref()
                .map(|ws| plaintext_credential_warnings(&ws.spec))
                .unwrap_or_default();
            if !warnings.is_empty() {
                decision.response.warnings = Some(warnings);
            }
            decision
        }
        Err(refusal) => Decision::refused(request, refusal),
    }
}

/// Decides a readable request; returns the admitted workspace of a CREATE.
fn validation(
    request: &AdmissionRequest<Workspace>,
    settings: &Settings,
    snapshot: &Snapshot,
) -> Result<Option<Workspace>, Refusal> {
    let Some(user) = User::from_user_info(&request.user_info) else {
        return Err(Denial::new(
            DenialReason::NoCapabilities,
            "the request carries no user name, so it can neither own nor be granted anything: authenticate as a user",
        )
        .into());
    };
    if settings.is_trusted(&user) {
        return Ok(None);
    }
    let target = Target::of(request)?;
    match request.operation {
        Operation::Create => validate_create(&target, &user, settings, snapshot).map(Some),
        Operation::Update => validate_update(&target, &user, settings, snapshot),
        Operation::Delete => check_ownership(&target, &user, snapshot).map(|_| None),
        Operation::Connect => Ok(None),
    }
}

/// The workspace a request is about: where it lives, and its new and stored versions.
struct Target<'a> {
    namespace: &'a str,
    name: &'a str,
    object: Option<&'a Workspace>,
    old: Option<&'a Workspace>,
}

impl<'a> Target<'a> {
    fn of(request: &'a AdmissionRequest<Workspace>) -> Result<Self, Refusal> {
        let object = request.object.as_ref();
        let old = request.old_object.as_ref();
        let stored = object.or(old);
        let namespace = request
            .namespace
            .as_deref()
            .or_else(|| stored?.metadata.namespace.as_deref())
            .ok_or_else(|| Refusal::Invalid("the request names no namespace".to_owned()))?;
        let name = stored
            .and_then(|ws| ws.metadata.name.as_deref())
            .unwrap_or(&request.name);
        Ok(Self {
            namespace,
            name,
            object,
            old,
        })
    }

    fn object(&self) -> Result<&'a Workspace, Refusal> {
        self.object
            .ok_or_else(|| Refusal::Invalid("the request carries no object".to_owned()))
    }

    fn old(&self) -> Result<&'a Workspace, Refusal> {
        self.old
            .ok_or_else(|| Refusal::Invalid("the request carries no oldObject".to_owned()))
    }
}

fn validate_create(
    target: &Target<'_>,
    user: &User,
    settings: &Settings,
    snapshot: &Snapshot,
) -> Result<Workspace, Refusal> {
    let object = target.object()?;
    let owner = match policy::requested_owner(user, object.owner_name()) {
        RequestedOwner::Requester => user.clone(),
        RequestedOwner::Assigned(name) => {
            policy::check_assignment(user, name, &snapshot.capabilities)?;
            policy::assigned_owner(name)
        }
    };
    let capabilities = policy::require_capabilities(&owner, &snapshot.capabilities)?;
    check_references(target, snapshot)?;
    check_keep_alive(target, &owner, snapshot)?;
    let mut admitted = object.clone();
    admitted.spec = defaulted(&admitted)?;
    capabilities.check_workspace(&admitted.spec)?;
    // Placement cannot change afterwards (the schema refuses it), so only a create asks.
    placement::check_admissible(
        admitted.spec.placement.as_ref(),
        snapshot.clusters.iter().map(AsRef::as_ref),
    )?;
    let owner_id = policy::owner_id(&owner.username);
    check_host(target, &owner_id, snapshot)?;
    let demand = demand(&admitted.spec)?;
    let quotas = QuotaCheck {
        namespace: target.namespace,
        deciding: Deciding::Workspace(target.name),
        owner: &owner,
        owner_id: &owner_id,
        settings,
        snapshot,
    };
    quotas.check(Usage::default(), demand)?;
    // The mutating webhook set the same label; set it here too, so the reservation counts
    // for the right owner even where another mutating webhook interfered.
    put(
        &mut admitted.metadata.labels,
        labels::OWNER,
        Some(&owner_id),
    );
    Ok(admitted)
}

/// Returns the new version when its spec changed and it counts against Quotas, so its
/// usage is reserved until the cache shows it (concurrent updates of one owner's
/// workspaces would each see the old usage otherwise).
fn validate_update(
    target: &Target<'_>,
    user: &User,
    settings: &Settings,
    snapshot: &Snapshot,
) -> Result<Option<Workspace>, Refusal> {
    let standing = check_ownership(target, user, snapshot)?;
    let old = target.old()?;
    // Whose grants the workspace is held to: an assigner applies it for its owner, as it
    // created it; an admin (or the owner) acts in their own right.
    let grantee = match standing {
        Standing::ActsForOwner => old.owner().ok_or_else(|| {
            Refusal::Invalid(
                "the workspace has an owner label but no guildnet.io/owner-name, so whose Capabilities apply is unknown: ask an admin to change it".to_owned(),
            )
        })?,
        Standing::Owner | Standing::Admin => user.clone(),
    };
    check_keep_alive(target, &grantee, snapshot)?;
    let spec = defaulted(target.object()?)?;
    // An old object that no longer defaults (an annotation made unusable since) is
    // compared as stored: any change to the spec is then checked in full.
    let old_spec = defaulted(old).unwrap_or_else(|_| old.spec.clone());
    if spec == old_spec {
        return Ok(None);
    }
    policy::require_capabilities(&grantee, &snapshot.capabilities)?.check_workspace(&spec)?;
    check_references(target, snapshot)?;
    check_host(target, old.owner_id().unwrap_or_default(), snapshot)?;
    // A workspace without an owner counts against nobody's Quota.
    let Some(owner_id) = old.owner_id() else {
        return Ok(None);
    };
    let owner = match standing {
        Standing::Owner => user.clone(),
        Standing::ActsForOwner | Standing::Admin => old.owner().unwrap_or_else(|| user.clone()),
    };
    let quotas = QuotaCheck {
        namespace: target.namespace,
        deciding: Deciding::Workspace(target.name),
        owner: &owner,
        owner_id,
        settings,
        snapshot,
    };
    // A stored spec whose quantities do not parse counts as nothing, so fixing it is
    // judged on what it asks for now.
    let old_demand = demand(&old_spec).unwrap_or_default();
    let added = demand(&spec)?.saturating_sub(&old_demand);
    quotas.check(
        old_demand,
        Usage {
            workspaces: 0,
            ..added
        },
    )?;
    let mut admitted = target.object()?.clone();
    admitted.spec = spec;
    put(&mut admitted.metadata.labels, labels::OWNER, Some(owner_id));
    Ok(Some(admitted))
}

/// A workspace may name only Secrets and ConfigMaps its [`reference_readers`] may read (see
/// [`crate::access`]); its own generated password Secret is never asked about.
fn check_references(target: &Target<'_>, snapshot: &Snapshot) -> Result<(), Refusal> {
    let Some(DeniedReference { reader, reference }) = snapshot.denied_references.first() else {
        return Ok(());
    };
    Err(Denial::new(
        DenialReason::ReferenceDenied,
        format!(
            "{} names {} {}/{}, which {reader} may not get: a workspace may only read Secrets and ConfigMaps that whoever writes its spec and its owner may read; use one of your own, or ask for get on it",
            reference.field, reference.kind, target.namespace, reference.name
        ),
    )
    .into())
}

/// An Ingress host belongs to the first owner whose workspace uses it: another owner's
/// workspace asking for it would take over their traffic (ingress controllers merge or
/// pick between Ingresses of one host).
fn check_host(target: &Target<'_>, owner: &str, snapshot: &Snapshot) -> Result<(), Refusal> {
    let taken = snapshot.host_users.iter().find(|ws| {
        ws.owner_id() != Some(owner)
            && !(ws.metadata.namespace.as_deref() == Some(target.namespace)
                && ws.metadata.name.as_deref() == Some(target.name))
    });
    let Some(other) = taken else {
        return Ok(());
    };
    Err(Denial::new(
        DenialReason::ExposureDenied,
        format!(
            "spec.exposure.ingress.host is already used by workspace {}/{} of another owner: choose another host",
            other.metadata.namespace.as_deref().unwrap_or_default(),
            other.name_any()
        ),
    )
    .into())
}

/// Opting a workspace out of idle reaping (`guildnet.io/keepalive=true`) is a grant of
/// `grantee` (see [`validate_update`]): a workspace that never idles out holds its resources
/// for good. Checked when the label is added, so a grant narrowed later does not lock owners
/// out of their workspaces.
fn check_keep_alive(
    target: &Target<'_>,
    grantee: &User,
    snapshot: &Snapshot,
) -> Result<(), Refusal> {
    let adds =
        target.object()?.is_kept_alive() && !target.old.is_some_and(Workspace::is_kept_alive);
    if !adds || policy::may_keep_alive(grantee, &snapshot.capabilities) {
        return Ok(());
    }
    Err(Denial::new(
        DenialReason::KeepAliveDenied,
        format!(
            "metadata.labels guildnet.io/keepalive=true exempts the workspace from idle reaping, which no Capabilities grants {}: remove the label, or ask an admin for keepAlive: true",
            grantee.username
        ),
    )
    .into())
}

/// Only the owner (by the stored object's label), whoever may assign the owner, or an
/// admin may act on a workspace.
fn check_ownership(
    target: &Target<'_>,
    user: &User,
    snapshot: &Snapshot,
) -> Result<Standing, Refusal> {
    let owner = target.old()?.owner_id();
    Ok(policy::check_owner(user, owner, &snapshot.capabilities)?)
}

/// What a spec counts against Quotas.
/// What a GuildDatabase counts against Quotas, as [`policy::databases_usage`] counts it:
/// its servers' volumes as storage.
pub(crate) fn database_demand(db: &GuildDatabase) -> Usage {
    Usage {
        storage: db.storage_milli(),
        ..Usage::default()
    }
}

fn demand(spec: &WorkspaceSpec) -> Result<Usage, Refusal> {
    policy::workspace_demand(spec).map_err(|error| {
        Refusal::Invalid(format!(
            "spec.resources or spec.volumes: {error}; use quantities such as 500m, 2 or 8Gi"
        ))
    })
}

/// The object being decided, by name: its usage is given to the check, so its cached
/// version does not count as well.
#[derive(Clone, Copy)]
pub(crate) enum Deciding<'a> {
    Workspace(&'a str),
    Database(&'a str),
}

/// The Quota check of one request: the owner's usage as each applicable Quota counts it.
pub(crate) struct QuotaCheck<'a> {
    /// The namespace of the object decided.
    pub(crate) namespace: &'a str,
    pub(crate) deciding: Deciding<'a>,
    /// The owner as Quota subjects match them.
    pub(crate) owner: &'a User,
    pub(crate) owner_id: &'a str,
    pub(crate) settings: &'a Settings,
    pub(crate) snapshot: &'a Snapshot,
}

impl QuotaCheck<'_> {
    /// Checks `change` against every Quota that applies. `this_object` is the stored
    /// version's demand on an update (its usage counts from the request, not from the
    /// cache, which may be older), nothing on a create.
    pub(crate) fn check(&self, this_object: Usage, change: Usage) -> Result<(), Refusal> {
        let system_namespace = &self.settings.system_namespace;
        let applicable: Vec<&Quota> = self
            .snapshot
            .quotas
            .iter()
            .map(Arc::as_ref)
            .filter(|quota| {
                policy::quota_applies(quota, self.owner, self.namespace, system_namespace)
            })
            .collect();
        if applicable.is_empty() {
            return Ok(());
        }
        let others = self.others()?;
        let names: Vec<String> = applicable.iter().map(|quota| display_name(quota)).collect();
        let quotas: Vec<ApplicableQuota<'_>> = applicable
            .iter()
            .zip(&names)
            .map(|(quota, name)| ApplicableQuota {
                name,
                limits: &quota.spec.per_owner,
                usage: others
                    .iter()
                    .filter(|(namespace, _)| {
                        policy::quota_counts_namespace(quota, namespace, system_namespace)
                    })
                    .fold(this_object.clone(), |total, (_, usage)| {
                        total.saturating_add(usage)
                    }),
            })
            .collect();
        Ok(policy::check_quotas(&quotas, &change)?)
    }

    /// The owner's other workspaces that are not being deleted, with their namespaces and
    /// defaulted demand (workspaces stored before the webhook ran may lack defaults), and
    /// the storage of their retained claims no workspace asks for and of their other
    /// GuildDatabases.
    fn others(&self) -> Result<Vec<(Cow<'_, str>, Usage)>, Refusal> {
        let databases = policy::databases_usage(
            (self.snapshot.databases.iter())
                .map(AsRef::as_ref)
                .filter(|db| !self.is_deciding_database(db)),
            self.owner_id,
        );
        self.snapshot
            .workspaces
            .iter()
            .filter(|ws| ws.owner_id() == Some(self.owner_id))
            .filter(|ws| ws.metadata.deletion_timestamp.is_none())
            .filter(|ws| !self.is_target(ws))
            .map(|ws| {
                let namespace = ws.metadata.namespace.as_deref().unwrap_or_default();
                let spec = defaulted(ws).unwrap_or_else(|_| ws.spec.clone());
                let usage = policy::workspace_demand(&spec)
                    .map_err(|error| self.uncountable(namespace, ws, &error))?;
                Ok((Cow::Borrowed(namespace), usage))
            })
            .chain(
                (self.snapshot.retained_claims.iter()).map(|(namespace, usage)| {
                    Ok((Cow::Borrowed(namespace.as_str()), usage.clone()))
                }),
            )
            .chain(
                (databases.into_iter())
                    .map(|(namespace, usage)| Ok((Cow::Owned(namespace), usage))),
            )
            .collect()
    }

    fn is_target(&self, workspace: &Workspace) -> bool {
        matches!(self.deciding, Deciding::Workspace(name)
            if workspace.metadata.namespace.as_deref() == Some(self.namespace)
                && workspace.metadata.name.as_deref() == Some(name))
    }

    fn is_deciding_database(&self, db: &GuildDatabase) -> bool {
        matches!(self.deciding, Deciding::Database(name)
            if db.metadata.namespace.as_deref() == Some(self.namespace)
                && db.metadata.name.as_deref() == Some(name))
    }

    fn uncountable(
        &self,
        namespace: &str,
        workspace: &Workspace,
        error: &QuantityError,
    ) -> Refusal {
        Refusal::Invalid(format!(
            "workspace {namespace}/{} of the same owner has an invalid quantity ({error}), so its Quota usage cannot be counted: fix its spec.resources or spec.volumes, or delete it",
            workspace.name_any()
        ))
    }
}

/// How messages name a Quota: `namespace/name`.
fn display_name(quota: &Quota) -> String {
    format!(
        "{}/{}",
        quota.metadata.namespace.as_deref().unwrap_or_default(),
        quota.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Review {
        let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
        crate::review::decode(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The server copies only these workspaces into a snapshot, so they must be the ones
    /// the Quota check counts: the new owner's on CREATE, the stored owner's on UPDATE.
    #[test]
    fn the_quota_owner_is_the_owner_a_validation_counts() {
        assert_eq!(
            quota_owner(&fixture("create").request),
            Some(policy::owner_id("alice"))
        );
        // bob updating alice's workspace would count against alice, its owner.
        let mut update = fixture("update");
        update.request.user_info.username = Some("bob".to_owned());
        assert_eq!(
            quota_owner(&update.request).as_deref(),
            Some("u-fpmansl7byak6gq7ymzi7j3dve")
        );
        assert_eq!(quota_owner(&fixture("delete").request), None);
    }
}
