//! What a user may do: the union of every Capabilities that names them, and the checks a
//! workspace spec must pass against it.

use super::assignment::AssignableOwners;
use super::denial::{Denial, DenialReason};
use super::image::{ImagePattern, ImageRef};
use super::owner::owner_id;
use super::quantity::{QuantityStyle, format_milli, quantity_milli};
use super::subjects::{User, any_subject_matches};
use crate::capabilities::{Capabilities, CapabilitiesSpec, IngressGrant};
use crate::database::GuildDatabaseSpec;
use crate::database::facts::DEFAULT_IMAGE;
use crate::workspace::{
    Exposure, ExposureType, IngressExposure, Placement, WorkspaceSpec, WorkspaceVolume,
};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The cluster name that grants every registered cluster.
const ALL_CLUSTERS: &str = "*";
/// At most this many allowed patterns are listed in a denial message.
const PATTERNS_SHOWN: usize = 10;

/// A per-workspace ceiling on one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ceiling {
    /// Some matching grant sets no ceiling.
    Unlimited,
    /// At most this many milli-units.
    AtMost(i128),
}

impl Ceiling {
    /// The more generous of two ceilings: grants add up, so the largest wins.
    fn max(self, other: Self) -> Self {
        match (self, other) {
            (Self::AtMost(a), Self::AtMost(b)) => Self::AtMost(a.max(b)),
            _ => Self::Unlimited,
        }
    }

    /// The ceiling one grant sets: none is unlimited; a malformed one (which the schema's
    /// `isQuantity` rule should have refused) grants nothing rather than everything.
    fn of_grant(quantity: Option<&Quantity>) -> Self {
        quantity.map_or(Self::Unlimited, |q| {
            Self::AtMost(quantity_milli(q).unwrap_or(0))
        })
    }
}

/// The registered clusters a user may place workspaces on. The local cluster (no
/// placement) is always allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterGrant {
    /// `*`: every ClusterRegistration.
    All,
    /// These ClusterRegistrations by name; empty allows only the local cluster.
    Only(BTreeSet<String>),
}

impl ClusterGrant {
    /// Whether the ClusterRegistration `name` is granted.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(name),
        }
    }
}

/// The union of the Capabilities that name a user.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectiveCapabilities {
    /// Names of the Capabilities that matched, for messages and audit.
    pub grants: Vec<String>,
    /// Every allowed image pattern. Malformed patterns (which the schema should have
    /// refused) are left out: they admit nothing.
    pub images: Vec<ImagePattern>,
    /// The largest per-workspace CPU among the grants.
    pub max_cpu: Ceiling,
    /// The largest per-workspace memory among the grants.
    pub max_memory: Ceiling,
    /// The largest per-workspace ephemeral storage among the grants.
    pub max_ephemeral_storage: Ceiling,
    /// The other resources some grant names, each with its largest ceiling; any resource
    /// not here is refused.
    pub extended: BTreeMap<String, i128>,
    /// The largest size of one volume among the grants.
    pub max_volume_size: Ceiling,
    /// Allowed exposure types; always includes ClusterIP, which every grant allows (an
    /// empty list means ClusterIP only, and the other types are built on a ClusterIP
    /// Service anyway).
    pub exposure: Vec<ExposureType>,
    /// Allowed registered clusters.
    pub clusters: ClusterGrant,
    /// What an Ingress exposure may ask for: the union of the grants' `ingress`.
    pub ingress: IngressGrant,
    /// Whether any grant makes the user an admin (acts on others' workspaces).
    pub admin: bool,
    /// Whether the user may opt workspaces out of idle reaping (`keepAlive`, or admin).
    pub keep_alive: bool,
    /// Whom the user may create workspaces for (`assignOwners`).
    pub assign_owners: AssignableOwners,
    /// What GuildDatabases the user may create: `None` when no grant has `databases`.
    pub databases: Option<DatabaseCapabilities>,
}

/// The union of the `databases` grants that name a user.
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseCapabilities {
    /// Allowed image patterns besides the pinned default.
    pub images: Vec<ImagePattern>,
    /// The most servers one database may run; `None`: no ceiling.
    pub max_replicas: Option<i32>,
    /// The largest volume of one server.
    pub max_storage: Ceiling,
}

/// The union of the grants' `databases`: their image patterns, the largest ceilings (a
/// grant without one makes it unlimited); `None` when no grant has `databases`.
fn granted_databases<'a>(
    specs: impl Iterator<Item = &'a CapabilitiesSpec>,
) -> Option<DatabaseCapabilities> {
    specs
        .filter_map(|spec| spec.databases.as_ref())
        .map(|grant| DatabaseCapabilities {
            images: grant
                .images
                .iter()
                .filter_map(|pattern| ImagePattern::parse(pattern).ok())
                .collect(),
            max_replicas: grant.max_replicas,
            max_storage: Ceiling::of_grant(grant.max_storage.as_ref()),
        })
        .reduce(|a, b| DatabaseCapabilities {
            images: a.images.into_iter().chain(b.images).collect(),
            max_replicas: a.max_replicas.zip(b.max_replicas).map(|(a, b)| a.max(b)),
            max_storage: a.max_storage.max(b.max_storage),
        })
}

/// The union of every Capabilities in `all` that names `user`: all their image patterns,
/// the largest of their CPU and memory ceilings (a grant without a ceiling makes it
/// unlimited: grants only ever add rights), all their exposure types and clusters, and
/// admin if any grants it. `None` when none names the user, who may then do nothing.
pub fn effective_capabilities(user: &User, all: &[Capabilities]) -> Option<EffectiveCapabilities> {
    let matching: Vec<&Capabilities> = all
        .iter()
        .filter(|caps| any_subject_matches(&caps.spec.subjects, user))
        .collect();
    if matching.is_empty() {
        return None;
    }
    // Non-empty from here on, so every `reduce` below yields a value.
    let specs = || matching.iter().map(|caps| &caps.spec);
    Some(EffectiveCapabilities {
        grants: matching
            .iter()
            .map(|caps| caps.metadata.name.clone().unwrap_or_default())
            .collect(),
        images: specs()
            .flat_map(|spec| &spec.images.allow)
            .filter_map(|pattern| ImagePattern::parse(pattern).ok())
            .collect(),
        max_cpu: specs()
            .map(|spec| Ceiling::of_grant(max_per_workspace(spec).cpu))
            .reduce(Ceiling::max)?,
        max_memory: specs()
            .map(|spec| Ceiling::of_grant(max_per_workspace(spec).memory))
            .reduce(Ceiling::max)?,
        max_ephemeral_storage: specs()
            .map(|spec| Ceiling::of_grant(max_per_workspace(spec).ephemeral_storage))
            .reduce(Ceiling::max)?,
        extended: granted_extended(specs()),
        max_volume_size: specs()
            .map(|spec| {
                Ceiling::of_grant(
                    spec.resources
                        .as_ref()
                        .and_then(|r| r.max_volume_size.as_ref()),
                )
            })
            .reduce(Ceiling::max)?,
        exposure: granted_exposure(specs()),
        clusters: granted_clusters(specs()),
        ingress: granted_ingress(specs()),
        admin: specs().any(|spec| spec.admin),
        keep_alive: specs().any(|spec| spec.keep_alive || spec.admin),
        assign_owners: AssignableOwners::of_grants(specs()),
        databases: granted_databases(specs()),
    })
}

/// Like [`effective_capabilities`], but refuses with [`DenialReason::NoCapabilities`] when
/// nothing names the user: secure by default.
pub fn require_capabilities(
    user: &User,
    all: &[Capabilities],
) -> Result<EffectiveCapabilities, Denial> {
    effective_capabilities(user, all).ok_or_else(|| {
        Denial::new(
            DenialReason::NoCapabilities,
            format!(
                "no Capabilities grants anything to user {:?}: ask an admin to add you, or one of your groups, to the spec.subjects of a Capabilities",
                user.username
            ),
        )
    })
}

/// Why a user may act on a workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// They own it.
    Owner,
    /// They may assign its owner (`assignOwners`, see [`assignment`](super::assignment)),
    /// so they act for the owner: a spec they write is checked against the owner's
    /// Capabilities.
    ActsForOwner,
    /// An admin: `admin: true` in a Capabilities naming them, or a cluster administrator
    /// (`system:masters`).
    Admin,
}

/// Whether `user` may act on a workspace whose `guildnet.io/owner` label is `owner_label`,
/// and as what: its owner may, so may whoever may assign that owner, and so may an admin. A
/// workspace without the label (created before the webhook ran) belongs to nobody, so only
/// admins may act on it.
pub fn check_owner(
    user: &User,
    owner_label: Option<&str>,
    all: &[Capabilities],
) -> Result<Standing, Denial> {
    let owner_id = owner_id(&user.username);
    if owner_label == Some(owner_id.as_str()) {
        return Ok(Standing::Owner);
    }
    let effective = effective_capabilities(user, all);
    let acts_for_owner = owner_label.is_some_and(|label| {
        effective
            .as_ref()
            .is_some_and(|caps| caps.assign_owners.allows_owner_id(label))
    });
    if acts_for_owner {
        return Ok(Standing::ActsForOwner);
    }
    if user.is_cluster_admin() || effective.is_some_and(|caps| caps.admin) {
        return Ok(Standing::Admin);
    }
    Err(Denial::new(
        DenialReason::NotOwner,
        format!(
            "user {:?} (owner id {owner_id}) does not own it (owner {}), has no admin rights and may not assign its owner: act on what you own, or ask an admin",
            user.username,
            owner_label.unwrap_or("unset"),
        ),
    ))
}

/// Whether `user` may exempt workspaces from idle reaping (`guildnet.io/keepalive=true`):
/// `keepAlive` or `admin` in a Capabilities naming them, or a cluster administrator.
pub fn may_keep_alive(user: &User, all: &[Capabilities]) -> bool {
    user.is_cluster_admin() || effective_capabilities(user, all).is_some_and(|caps| caps.keep_alive)
}

/// The CPU, memory and ephemeral-storage ceilings of one grant, each `None` when unset.
struct GrantCeilings<'a> {
    cpu: Option<&'a Quantity>,
    memory: Option<&'a Quantity>,
    ephemeral_storage: Option<&'a Quantity>,
}

fn max_per_workspace(spec: &CapabilitiesSpec) -> GrantCeilings<'_> {
    let amounts = spec
        .resources
        .as_ref()
        .and_then(|resources| resources.max_per_workspace.as_ref());
    GrantCeilings {
        cpu: amounts.and_then(|a| a.cpu.as_ref()),
        memory: amounts.and_then(|a| a.memory.as_ref()),
        ephemeral_storage: amounts.and_then(|a| a.ephemeral_storage.as_ref()),
    }
}

/// Every extended resource some grant names, with the largest ceiling among them (a
/// malformed one grants nothing).
fn granted_extended<'a>(
    specs: impl Iterator<Item = &'a CapabilitiesSpec>,
) -> BTreeMap<String, i128> {
    let mut granted = BTreeMap::new();
    let named = specs
        .filter_map(|spec| spec.resources.as_ref()?.max_per_workspace.as_ref())
        .flat_map(|amounts| &amounts.extended);
    for (resource, ceiling) in named {
        let ceiling = quantity_milli(ceiling).unwrap_or(0);
        let entry = granted.entry(resource.clone()).or_insert(ceiling);
        *entry = (*entry).max(ceiling);
    }
    granted
}

fn granted_exposure<'a>(specs: impl Iterator<Item = &'a CapabilitiesSpec>) -> Vec<ExposureType> {
    let mut granted = vec![ExposureType::ClusterIP];
    for exposure in specs.flat_map(|spec| &spec.exposure) {
        if !granted.contains(exposure) {
            granted.push(*exposure);
        }
    }
    granted
}

/// The union of the grants' Ingress settings; any grant allowing any host allows any.
fn granted_ingress<'a>(specs: impl Iterator<Item = &'a CapabilitiesSpec>) -> IngressGrant {
    let mut union = IngressGrant::default();
    let mut any_host = false;
    for spec in specs.filter(|s| s.exposure.contains(&ExposureType::Ingress)) {
        let grant = spec.ingress.clone().unwrap_or_default();
        any_host |= grant.hosts.is_empty();
        union.hosts.extend(grant.hosts);
        union.class_names.extend(grant.class_names);
        union.cluster_issuers.extend(grant.cluster_issuers);
        union.annotations.extend(grant.annotations);
    }
    if any_host {
        union.hosts.clear();
    }
    union
}

fn granted_clusters<'a>(specs: impl Iterator<Item = &'a CapabilitiesSpec>) -> ClusterGrant {
    let names: BTreeSet<String> = specs.flat_map(|spec| spec.clusters.clone()).collect();
    if names.contains(ALL_CLUSTERS) {
        ClusterGrant::All
    } else {
        ClusterGrant::Only(names)
    }
}

impl EffectiveCapabilities {
    /// Checks everything a workspace spec asks for, in the order a user would fix it:
    /// image, resources, exposure, placement. Call it after defaulting, so resources
    /// chosen from `hint` are checked too.
    pub fn check_workspace(&self, spec: &WorkspaceSpec) -> Result<(), Denial> {
        self.check_image(&spec.image)?;
        self.check_resources(spec.resources.as_ref())?;
        self.check_volumes(&spec.volumes)?;
        self.check_exposure(spec.exposure.as_ref())?;
        self.check_placement(spec.placement.as_ref())
    }

    /// Checks what a GuildDatabase asks for, in the order a user would fix it: that the
    /// user may create databases at all, then image, servers, storage and each server's
    /// CPU and memory (against `resources.maxPerWorkspace`).
    pub fn check_database(&self, spec: &GuildDatabaseSpec) -> Result<(), Denial> {
        let Some(grant) = &self.databases else {
            return Err(Denial::new(
                DenialReason::NoCapabilities,
                format!(
                    "your Capabilities ({}) do not let you create GuildDatabases: ask an admin to add spec.databases to a Capabilities naming you",
                    self.grants.join(", ")
                ),
            ));
        };
        if let Some(image) = spec
            .image
            .as_deref()
            .filter(|image| *image != DEFAULT_IMAGE)
        {
            let reference = ImageRef::parse(image).map_err(|error| {
                Denial::new(
                    DenialReason::ImageDenied,
                    format!("spec.image: {error}; leave it unset for {DEFAULT_IMAGE}"),
                )
            })?;
            if !grant.images.iter().any(|p| p.matches(&reference)) {
                let allowed: Vec<String> = grant.images.iter().map(ToString::to_string).collect();
                return Err(Denial::new(
                    DenialReason::ImageDenied,
                    format!(
                        "spec.image {image:?} ({reference}) is neither {DEFAULT_IMAGE} nor matches your allowed database images [{}]: leave it unset, or ask an admin to add it to spec.databases.images of a Capabilities",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let denied = |message| Denial::new(DenialReason::ResourceLimitExceeded, message);
        let replicas = spec.replicas.unwrap_or(1);
        if let Some(max) = grant.max_replicas
            && replicas > max
        {
            return Err(denied(format!(
                "spec.replicas is {replicas}, above your ceiling of {max} servers per database: lower it to at most {max}, or ask an admin to raise spec.databases.maxReplicas of a Capabilities"
            )));
        }
        if let Ceiling::AtMost(max) = grant.max_storage {
            let size = &spec.storage.size;
            let asked = quantity_milli(size)
                .map_err(|error| denied(format!("spec.storage.size: {error}")))?;
            if asked > max {
                let max = format_milli(max, QuantityStyle::BinarySI).0;
                return Err(denied(format!(
                    "spec.storage.size is {}, above your ceiling of {max} per server: lower it to at most {max}, or ask an admin to raise spec.databases.maxStorage of a Capabilities",
                    size.0
                )));
            }
        }
        self.check_resources(spec.resources.as_ref())
    }

    /// Parses `image` and checks it against the allowed patterns.
    pub fn check_image(&self, image: &str) -> Result<ImageRef, Denial> {
        let reference = ImageRef::parse(image).map_err(|error| {
            Denial::new(
                DenialReason::ImageDenied,
                format!("spec.image: {error}; use a reference such as codercom/code-server:4.96.2"),
            )
        })?;
        if self
            .images
            .iter()
            .any(|pattern| pattern.matches(&reference))
        {
            return Ok(reference);
        }
        Err(Denial::new(
            DenialReason::ImageDenied,
            format!(
                "spec.image {image:?} ({reference}) matches none of your allowed image patterns [{}]: use a matching image, or ask an admin to add it to spec.images.allow of a Capabilities",
                self.shown_patterns()
            ),
        ))
    }

    /// Checks the CPU and memory requests and limits against the ceilings. Absent resources
    /// pass: defaulting fills them in before the check. Quantities are parsed only where a
    /// ceiling applies; one that cannot be parsed there is refused, as it cannot be shown
    /// to be within the ceiling.
    pub fn check_resources(&self, resources: Option<&ResourceRequirements>) -> Result<(), Denial> {
        let Some(resources) = resources else {
            return Ok(());
        };
        let lists = [
            ("requests", resources.requests.as_ref()),
            ("limits", resources.limits.as_ref()),
        ];
        for (list, amounts) in lists {
            for resource in amounts.iter().flat_map(|a| a.keys()) {
                let field = format!("spec.resources.{list}.{resource}");
                let (ceiling, style) = self.ceiling_of(&field, resource)?;
                check_amount(&field, amounts, resource, ceiling, style)?;
            }
        }
        Ok(())
    }

    /// The ceiling of `resource` and how to write its amounts; refuses a resource no grant
    /// names (GPUs, hugepages and other extended resources must be granted by name).
    fn ceiling_of(&self, field: &str, resource: &str) -> Result<(Ceiling, QuantityStyle), Denial> {
        match resource {
            "cpu" => Ok((self.max_cpu, QuantityStyle::DecimalSI)),
            "memory" => Ok((self.max_memory, QuantityStyle::BinarySI)),
            "ephemeral-storage" => Ok((self.max_ephemeral_storage, QuantityStyle::BinarySI)),
            other => match self.extended.get(other) {
                Some(max) => Ok((Ceiling::AtMost(*max), QuantityStyle::of_resource(other))),
                None => Err(Denial::new(
                    DenialReason::ResourceLimitExceeded,
                    format!(
                        "{field}: {other} is not granted to you: remove it, or ask an admin to add it to spec.resources.maxPerWorkspace.extended of a Capabilities"
                    ),
                )),
            },
        }
    }

    /// Checks each volume's size (persistent) or size limit (ephemeral, then required)
    /// against the volume size ceiling.
    pub fn check_volumes(&self, volumes: &[WorkspaceVolume]) -> Result<(), Denial> {
        let Ceiling::AtMost(max) = self.max_volume_size else {
            return Ok(());
        };
        let shown = format_milli(max, QuantityStyle::BinarySI).0;
        let denied = |message| Denial::new(DenialReason::ResourceLimitExceeded, message);
        for (index, volume) in volumes.iter().enumerate() {
            let (field, size) = match (&volume.persistent, &volume.ephemeral) {
                (Some(p), _) => ("persistent.size", Some(&p.size)),
                (None, Some(e)) => ("ephemeral.sizeLimit", e.size_limit.as_ref()),
                (None, None) => continue,
            };
            let field = format!("spec.volumes[{index}].{field}");
            let Some(size) = size else {
                return Err(denied(format!(
                    "{field} is unset, so the volume is unbounded, above your per-volume ceiling of {shown}: set it to at most {shown}"
                )));
            };
            let asked =
                quantity_milli(size).map_err(|error| denied(format!("{field}: {error}")))?;
            if asked > max {
                return Err(denied(format!(
                    "{field} is {}, above your per-volume ceiling of {shown}: lower it to at most {shown}, or ask an admin to raise spec.resources.maxVolumeSize of a Capabilities",
                    size.0
                )));
            }
        }
        Ok(())
    }

    /// Checks the exposure type (ClusterIP when unset), and what an Ingress asks for.
    pub fn check_exposure(&self, exposure: Option<&Exposure>) -> Result<(), Denial> {
        let wanted = exposure.map(|e| e.type_).unwrap_or_default();
        if self.exposure.contains(&wanted) {
            return match exposure.and_then(|e| e.ingress.as_ref()) {
                Some(ingress) if wanted == ExposureType::Ingress => self.check_ingress(ingress),
                _ => Ok(()),
            };
        }
        Err(Denial::new(
            DenialReason::ExposureDenied,
            format!(
                "spec.exposure.type {wanted:?} is not granted to you (allowed: {}): use an allowed type, or ask an admin to add it to spec.exposure of a Capabilities",
                join_debug(&self.exposure)
            ),
        ))
    }

    /// Checks an Ingress exposure's host, class, issuer and annotations against the grants.
    pub fn check_ingress(&self, ingress: &IngressExposure) -> Result<(), Denial> {
        let denied = |field: &str, what: &str, granted: &[String], grant_field: &str| {
            let granted = if granted.is_empty() {
                "none".to_owned()
            } else {
                granted.join(", ")
            };
            Denial::new(
                DenialReason::ExposureDenied,
                format!(
                    "spec.exposure.ingress.{field} {what} is not granted to you (allowed: {granted}): change it, or ask an admin to add it to spec.ingress.{grant_field} of a Capabilities"
                ),
            )
        };
        let grant = &self.ingress;
        // A wildcard host captures every subdomain nobody else claimed: only when a grant
        // names that wildcard itself.
        if ingress.host.starts_with("*.") && !grant.hosts.contains(&ingress.host) {
            return Err(denied(
                "host",
                &format!("{:?}", ingress.host),
                &grant.hosts,
                "hosts",
            ));
        }
        if !grant.hosts.is_empty() && !grant.hosts.iter().any(|p| host_matches(p, &ingress.host)) {
            return Err(denied(
                "host",
                &format!("{:?}", ingress.host),
                &grant.hosts,
                "hosts",
            ));
        }
        if let Some(class) = &ingress.class_name
            && !grant.class_names.contains(class)
        {
            return Err(denied(
                "className",
                &format!("{class:?}"),
                &grant.class_names,
                "classNames",
            ));
        }
        if let Some(issuer) = ingress.tls.as_ref().and_then(|t| t.cluster_issuer.as_ref())
            && !grant.cluster_issuers.contains(issuer)
        {
            let field = "tls.clusterIssuer";
            return Err(denied(
                field,
                &format!("{issuer:?}"),
                &grant.cluster_issuers,
                "clusterIssuers",
            ));
        }
        if let Some(key) = ingress
            .annotations
            .keys()
            .find(|key| !grant.annotations.iter().any(|p| annotation_matches(p, key)))
        {
            let what = format!("key {key:?}");
            return Err(denied(
                "annotations",
                &what,
                &grant.annotations,
                "annotations",
            ));
        }
        Ok(())
    }

    /// Checks the placement. No placement (the local cluster) always passes; a named
    /// cluster must be granted; a cluster selector needs every cluster granted (`*`),
    /// because the clusters it selects change as registrations are labelled.
    pub fn check_placement(&self, placement: Option<&Placement>) -> Result<(), Denial> {
        let Some(placement) = placement else {
            return Ok(());
        };
        if let Some(cluster) = &placement.cluster
            && !self.clusters.allows(cluster)
        {
            return Err(self.cluster_denied(format!(
                "spec.placement.cluster {cluster:?} is not granted to you"
            )));
        }
        if placement.cluster_selector.is_some() && self.clusters != ClusterGrant::All {
            return Err(self.cluster_denied(
                "spec.placement.clusterSelector needs every cluster granted (clusters: [\"*\"]); name a granted cluster in spec.placement.cluster instead".to_owned(),
            ));
        }
        Ok(())
    }

    fn cluster_denied(&self, what: String) -> Denial {
        let granted = match &self.clusters {
            ClusterGrant::All => "all".to_owned(),
            ClusterGrant::Only(names) if names.is_empty() => "only the local cluster".to_owned(),
            ClusterGrant::Only(names) => names.iter().cloned().collect::<Vec<_>>().join(", "),
        };
        Denial::new(
            DenialReason::ClusterDenied,
            format!(
                "{what} (granted clusters: {granted}): ask an admin to add it to spec.clusters of a Capabilities"
            ),
        )
    }

    fn shown_patterns(&self) -> String {
        let mut shown: Vec<String> = self
            .images
            .iter()
            .take(PATTERNS_SHOWN)
            .map(ToString::to_string)
            .collect();
        if self.images.len() > PATTERNS_SHOWN {
            shown.push(format!("… {} more", self.images.len() - PATTERNS_SHOWN));
        }
        shown.join(", ")
    }
}

/// Checks one resource of a requests or limits list against its ceiling.
fn check_amount(
    field: &str,
    amounts: Option<&BTreeMap<String, Quantity>>,
    resource: &str,
    ceiling: Ceiling,
    style: QuantityStyle,
) -> Result<(), Denial> {
    let (Ceiling::AtMost(max), Some(quantity)) = (ceiling, amounts.and_then(|a| a.get(resource)))
    else {
        return Ok(());
    };
    let denied = |message| Denial::new(DenialReason::ResourceLimitExceeded, message);
    let asked = quantity_milli(quantity).map_err(|error| denied(format!("{field}: {error}")))?;
    if asked <= max {
        return Ok(());
    }
    let max = format_milli(max, style).0;
    Err(denied(format!(
        "{field} is {}, above your per-workspace ceiling of {max}: lower it to at most {max}, or ask an admin to raise spec.resources.maxPerWorkspace.{resource} of a Capabilities",
        quantity.0
    )))
}

/// Whether `host` matches `pattern`: equal, or `*.<suffix>` with exactly one label before
/// the suffix.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|label| label.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern == host,
    }
}

/// Whether annotation `key` matches `pattern`: equal, or a prefix ending in `*` — which
/// never matches a snippet annotation (arbitrary controller configuration), which must be
/// granted by its full key.
fn annotation_matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix) && !key.ends_with("-snippet"),
        None => pattern == key,
    }
}

fn join_debug<T: fmt::Debug>(items: &[T]) -> String {
    items
        .iter()
        .map(|item| format!("{item:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::{ImagePolicy, ResourceAmounts, ResourceCeilings};
    use crate::common::{Subject, SubjectKind};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn group(name: &str) -> Subject {
        Subject {
            kind: SubjectKind::Group,
            name: name.to_owned(),
            namespace: None,
        }
    }

    fn grant(name: &str, subjects: Vec<Subject>, images: &[&str]) -> Capabilities {
        Capabilities::new(
            name,
            CapabilitiesSpec {
                subjects,
                images: ImagePolicy {
                    allow: images.iter().map(|s| (*s).to_owned()).collect(),
                },
                ..CapabilitiesSpec::default()
            },
        )
    }

    fn with_ceilings(
        mut caps: Capabilities,
        cpu: Option<&str>,
        memory: Option<&str>,
    ) -> Capabilities {
        caps.spec.resources = Some(ResourceCeilings {
            max_per_workspace: Some(ResourceAmounts {
                cpu: cpu.map(|q| Quantity(q.to_owned())),
                memory: memory.map(|q| Quantity(q.to_owned())),
                ..ResourceAmounts::default()
            }),
            max_volume_size: None,
        });
        caps
    }

    fn developers() -> Capabilities {
        let mut caps = with_ceilings(
            grant(
                "developers",
                vec![group("guildnet:users")],
                &["docker.io/codercom/code-server:*", "quay.io/jupyter/*"],
            ),
            Some("4"),
            Some("8Gi"),
        );
        caps.spec.clusters = vec!["edge-berlin".into()];
        caps
    }

    fn alice() -> User {
        User::new("alice", ["guildnet:users", "system:authenticated"])
    }

    fn resources(list: &str, cpu: &str, memory: &str) -> ResourceRequirements {
        let amounts = BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ]);
        match list {
            "requests" => ResourceRequirements {
                requests: Some(amounts),
                ..ResourceRequirements::default()
            },
            _ => ResourceRequirements {
                limits: Some(amounts),
                ..ResourceRequirements::default()
            },
        }
    }

    #[test]
    fn nobody_named_gets_nothing() {
        let caps = [developers()];
        let mallory = User::new("mallory", ["system:authenticated"]);
        assert_eq!(effective_capabilities(&mallory, &caps), None);
        assert_eq!(effective_capabilities(&alice(), &[]), None);
        let denial = require_capabilities(&mallory, &caps).unwrap_err();
        assert_eq!(denial.reason, DenialReason::NoCapabilities);
        assert!(denial.message.contains("\"mallory\""));
    }

    #[test]
    fn a_single_grant_is_taken_as_is() {
        let effective = effective_capabilities(&alice(), &[developers()]).unwrap();
        assert_eq!(effective.grants, ["developers"]);
        assert_eq!(effective.images.len(), 2);
        assert_eq!(effective.max_cpu, Ceiling::AtMost(4_000));
        assert_eq!(effective.max_memory, Ceiling::AtMost(8 * (1 << 30) * 1_000));
        assert_eq!(effective.exposure, [ExposureType::ClusterIP]);
        assert_eq!(
            effective.clusters,
            ClusterGrant::Only(BTreeSet::from(["edge-berlin".to_owned()]))
        );
        assert!(!effective.admin);
    }

    #[test]
    fn grants_add_up() {
        let mut big = with_ceilings(
            grant(
                "big",
                vec![group("system:authenticated")],
                &["nginx", "not a pattern"],
            ),
            Some("16"),
            Some("4Gi"),
        );
        big.spec.exposure = vec![ExposureType::Ingress, ExposureType::ClusterIP];
        big.spec.clusters = vec!["*".into()];
        let mut admins = grant("admins", vec![group("guildnet:users")], &[]);
        admins.spec.admin = true;
        let unrelated = with_ceilings(grant("other", vec![group("ops")], &["*"]), None, None);
        let capped_admins = with_ceilings(admins.clone(), Some("1"), Some("1Gi"));
        let effective =
            effective_capabilities(&alice(), &[developers(), big, capped_admins, unrelated])
                .unwrap();
        assert_eq!(effective.grants, ["developers", "big", "admins"]);
        // Malformed patterns admit nothing; the valid ones of every grant count.
        assert_eq!(effective.images.len(), 3);
        assert_eq!(effective.max_cpu, Ceiling::AtMost(16_000));
        assert_eq!(effective.max_memory, Ceiling::AtMost(8 * (1 << 30) * 1_000));
        assert_eq!(
            effective.exposure,
            [ExposureType::ClusterIP, ExposureType::Ingress]
        );
        assert_eq!(effective.clusters, ClusterGrant::All);
        assert!(effective.admin);
        // The `admins` grant sets no ceiling: alice's ceilings become unlimited.
        let effective = effective_capabilities(&alice(), &[developers(), admins]).unwrap();
        assert_eq!(effective.max_cpu, Ceiling::Unlimited);
        assert_eq!(effective.max_memory, Ceiling::Unlimited);
    }

    #[test]
    fn a_missing_ceiling_is_unlimited_per_resource_and_a_malformed_one_grants_nothing() {
        let cpu_only = with_ceilings(
            grant("cpu-only", vec![group("guildnet:users")], &[]),
            Some("2"),
            None,
        );
        let effective = effective_capabilities(&alice(), &[cpu_only]).unwrap();
        assert_eq!(effective.max_cpu, Ceiling::AtMost(2_000));
        assert_eq!(effective.max_memory, Ceiling::Unlimited);
        let broken = with_ceilings(
            grant("broken", vec![group("guildnet:users")], &[]),
            Some("lots"),
            Some("8Gi"),
        );
        let effective = effective_capabilities(&alice(), &[broken]).unwrap();
        assert_eq!(effective.max_cpu, Ceiling::AtMost(0));
    }

    #[test]
    fn checks_images() {
        let effective = effective_capabilities(&alice(), &[developers()]).unwrap();
        let image = effective
            .check_image("codercom/code-server:4.96.2")
            .unwrap();
        assert_eq!(image.to_string(), "docker.io/codercom/code-server:4.96.2");
        assert!(
            effective
                .check_image("quay.io/jupyter/base-notebook")
                .is_ok()
        );
        let denial = effective
            .check_image("docker.io/codercom/code-server-evil:1")
            .unwrap_err();
        assert_eq!(denial.reason, DenialReason::ImageDenied);
        assert!(
            denial
                .message
                .contains("docker.io/codercom/code-server-evil:1")
        );
        assert!(denial.message.contains("quay.io/jupyter/*"));
        assert!(denial.message.contains("spec.images.allow"));
        let denial = effective.check_image("Quay.io/Jupyter/x").unwrap_err();
        assert_eq!(denial.reason, DenialReason::ImageDenied);
        assert!(denial.message.starts_with("spec.image: "));
    }

    #[test]
    fn checks_resources_against_ceilings() {
        let effective = effective_capabilities(&alice(), &[developers()]).unwrap();
        assert!(effective.check_resources(None).is_ok());
        assert!(
            effective
                .check_resources(Some(&ResourceRequirements::default()))
                .is_ok()
        );
        assert!(
            effective
                .check_resources(Some(&resources("limits", "4", "8Gi")))
                .is_ok()
        );
        assert!(
            effective
                .check_resources(Some(&resources("requests", "3500m", "8192Mi")))
                .is_ok()
        );
        let denial = effective
            .check_resources(Some(&resources("limits", "4001m", "1Gi")))
            .unwrap_err();
        assert_eq!(denial.reason, DenialReason::ResourceLimitExceeded);
        assert!(
            denial
                .message
                .starts_with("spec.resources.limits.cpu is 4001m"),
            "{}",
            denial.message
        );
        assert!(denial.message.contains("at most 4,"));
        let denial = effective
            .check_resources(Some(&resources("requests", "1", "8.5Gi")))
            .unwrap_err();
        assert!(
            denial
                .message
                .starts_with("spec.resources.requests.memory is 8.5Gi")
        );
        assert!(denial.message.contains("at most 8Gi"));
        let denial = effective
            .check_resources(Some(&resources("limits", "many", "1Gi")))
            .unwrap_err();
        assert_eq!(denial.reason, DenialReason::ResourceLimitExceeded);
        assert!(denial.message.contains("\"many\" is not a quantity"));
        let unlimited =
            effective_capabilities(&alice(), &[grant("u", vec![group("guildnet:users")], &[])])
                .unwrap();
        assert!(
            unlimited
                .check_resources(Some(&resources("limits", "512", "1Ti")))
                .is_ok()
        );
    }

    #[test]
    fn checks_exposure() {
        let effective = effective_capabilities(&alice(), &[developers()]).unwrap();
        assert!(effective.check_exposure(None).is_ok());
        let cluster_ip = Exposure::default();
        assert!(effective.check_exposure(Some(&cluster_ip)).is_ok());
        let balancer = Exposure {
            type_: ExposureType::LoadBalancer,
            ingress: None,
        };
        let denial = effective.check_exposure(Some(&balancer)).unwrap_err();
        assert_eq!(denial.reason, DenialReason::ExposureDenied);
        assert!(denial.message.contains("LoadBalancer"));
        assert!(denial.message.contains("allowed: ClusterIP"));
    }

    #[test]
    fn checks_placement() {
        let effective = effective_capabilities(&alice(), &[developers()]).unwrap();
        let named = |name: &str| Placement {
            cluster: Some(name.to_owned()),
            cluster_selector: None,
        };
        let selector = Placement {
            cluster: None,
            cluster_selector: Some(LabelSelector::default()),
        };
        assert!(effective.check_placement(None).is_ok());
        assert!(
            effective
                .check_placement(Some(&Placement::default()))
                .is_ok()
        );
        assert!(
            effective
                .check_placement(Some(&named("edge-berlin")))
                .is_ok()
        );
        let denial = effective
            .check_placement(Some(&named("edge-paris")))
            .unwrap_err();
        assert_eq!(denial.reason, DenialReason::ClusterDenied);
        assert!(denial.message.contains("granted clusters: edge-berlin"));
        let denial = effective.check_placement(Some(&selector)).unwrap_err();
        assert_eq!(denial.reason, DenialReason::ClusterDenied);
        let mut everywhere = developers();
        everywhere.spec.clusters = vec!["*".into()];
        let effective = effective_capabilities(&alice(), &[everywhere]).unwrap();
        assert!(effective.check_placement(Some(&selector)).is_ok());
        assert!(
            effective
                .check_placement(Some(&named("edge-paris")))
                .is_ok()
        );
        let local_only =
            effective_capabilities(&alice(), &[grant("l", vec![group("guildnet:users")], &[])])
                .unwrap();
        let denial = local_only
            .check_placement(Some(&named("edge-berlin")))
            .unwrap_err();
        assert!(denial.message.contains("only the local cluster"));
    }

    #[test]
    fn checks_a_whole_workspace_in_order() {
        let effective = effective_capabilities(&alice(), &[developers()]).unwrap();
        let mut spec = WorkspaceSpec {
            image: "codercom/code-server:4.96.2".into(),
            resources: Some(resources("limits", "2", "4Gi")),
            ..WorkspaceSpec::default()
        };
        assert!(effective.check_workspace(&spec).is_ok());
        spec.resources = Some(resources("limits", "8", "4Gi"));
        spec.image = "evil/miner".into();
        assert_eq!(
            effective.check_workspace(&spec).unwrap_err().reason,
            DenialReason::ImageDenied
        );
        spec.image = "quay.io/jupyter/scipy-notebook:2025-01-01".into();
        assert_eq!(
            effective.check_workspace(&spec).unwrap_err().reason,
            DenialReason::ResourceLimitExceeded
        );
    }

    #[test]
    fn owners_admins_and_assigners_may_act() {
        let alice = alice();
        let alice_id = owner_id("alice");
        assert_eq!(
            check_owner(&alice, Some(&alice_id), &[]),
            Ok(Standing::Owner)
        );
        let denial = check_owner(&alice, Some("u-someoneelse"), &[developers()]).unwrap_err();
        assert_eq!(denial.reason, DenialReason::NotOwner);
        assert!(denial.message.contains("u-someoneelse"));
        assert_eq!(
            check_owner(&alice, None, &[]).unwrap_err().reason,
            DenialReason::NotOwner
        );
        // The readable name is not the id: a label set to the user name does not pass.
        assert!(check_owner(&alice, Some("alice"), &[]).is_err());

        let mut admins = grant("admins", vec![group("guildnet:users")], &[]);
        admins.spec.admin = true;
        let admin = [admins];
        assert_eq!(
            check_owner(&alice, Some("u-someoneelse"), &admin),
            Ok(Standing::Admin)
        );
        assert_eq!(check_owner(&alice, None, &admin), Ok(Standing::Admin));
        // system:masters administers without any Capabilities.
        let root = User::new("root", ["system:masters", "system:authenticated"]);
        assert_eq!(
            check_owner(&root, Some("u-someoneelse"), &[]),
            Ok(Standing::Admin)
        );
        assert!(may_keep_alive(&root, &[]));
        assert!(!may_keep_alive(&alice, &[developers()]));

        let mut assigning = grant("gitops", vec![group("guildnet:users")], &[]);
        assigning.spec.assign_owners = Some(crate::capabilities::OwnerAssignment {
            users: vec!["bob".into()],
        });
        let assign = [assigning];
        let bob_id = owner_id("bob");
        assert_eq!(
            check_owner(&alice, Some(&bob_id), &assign),
            Ok(Standing::ActsForOwner)
        );
        assert!(check_owner(&alice, Some("u-someoneelse"), &assign).is_err());
        assert!(check_owner(&alice, None, &assign).is_err());
    }

    fn asking(resource: &str, amount: &str) -> ResourceRequirements {
        ResourceRequirements {
            limits: Some(BTreeMap::from([(
                resource.to_owned(),
                Quantity(amount.to_owned()),
            )])),
            ..ResourceRequirements::default()
        }
    }

    #[test]
    fn gpus_and_other_extended_resources_need_a_grant_by_name() {
        let plain = effective_capabilities(&alice(), &[developers()]).unwrap();
        let refused = plain
            .check_resources(Some(&asking("nvidia.com/gpu", "1")))
            .unwrap_err();
        assert_eq!(refused.reason, DenialReason::ResourceLimitExceeded);
        assert!(
            refused.message.starts_with(
                "spec.resources.limits.nvidia.com/gpu: nvidia.com/gpu is not granted to you"
            ),
            "{}",
            refused.message
        );
        // Even a grant without CPU or memory ceilings does not hand out GPUs.
        let unlimited = effective_capabilities(
            &alice(),
            &[grant("all", vec![group("guildnet:users")], &[])],
        )
        .unwrap();
        assert!(
            unlimited
                .check_resources(Some(&asking("hugepages-2Mi", "1Gi")))
                .is_err()
        );

        let mut gpus = developers();
        let amounts = gpus
            .spec
            .resources
            .as_mut()
            .unwrap()
            .max_per_workspace
            .as_mut()
            .unwrap();
        amounts.extended = BTreeMap::from([("nvidia.com/gpu".to_owned(), Quantity("1".into()))]);
        amounts.ephemeral_storage = Some(Quantity("20Gi".into()));
        let granted = effective_capabilities(&alice(), &[gpus]).unwrap();
        assert!(
            granted
                .check_resources(Some(&asking("nvidia.com/gpu", "1")))
                .is_ok()
        );
        let above = granted
            .check_resources(Some(&asking("nvidia.com/gpu", "2")))
            .unwrap_err();
        assert!(
            above
                .message
                .contains("above your per-workspace ceiling of 1"),
            "{}",
            above.message
        );
        assert!(
            granted
                .check_resources(Some(&asking("ephemeral-storage", "20Gi")))
                .is_ok()
        );
        let disk = granted
            .check_resources(Some(&asking("ephemeral-storage", "21Gi")))
            .unwrap_err();
        assert!(disk.message.contains("ceiling of 20Gi"), "{}", disk.message);
    }

    #[test]
    fn volumes_stay_under_the_per_volume_ceiling() {
        use crate::workspace::{EphemeralVolume, PersistentVolume};
        let mut capped = developers();
        capped.spec.resources.as_mut().unwrap().max_volume_size = Some(Quantity("50Gi".into()));
        let caps = effective_capabilities(&alice(), &[capped]).unwrap();
        let persistent = |size: &str| WorkspaceVolume {
            name: "home".into(),
            mount_path: "/home".into(),
            persistent: Some(PersistentVolume {
                size: Quantity(size.into()),
                storage_class_name: None,
                reclaim_policy: None,
            }),
            ephemeral: None,
        };
        let ephemeral = |limit: Option<&str>| WorkspaceVolume {
            name: "tmp".into(),
            mount_path: "/scratch".into(),
            persistent: None,
            ephemeral: Some(EphemeralVolume {
                size_limit: limit.map(|l| Quantity(l.into())),
                medium: None,
            }),
        };
        assert!(
            caps.check_volumes(&[persistent("50Gi"), ephemeral(Some("1Gi"))])
                .is_ok()
        );
        let big = caps.check_volumes(&[persistent("51Gi")]).unwrap_err();
        assert!(
            big.message.starts_with(
                "spec.volumes[0].persistent.size is 51Gi, above your per-volume ceiling of 50Gi"
            ),
            "{}",
            big.message
        );
        let unbounded = caps
            .check_volumes(&[persistent("1Gi"), ephemeral(None)])
            .unwrap_err();
        assert!(
            unbounded
                .message
                .starts_with("spec.volumes[1].ephemeral.sizeLimit is unset"),
            "{}",
            unbounded.message
        );
        // No ceiling: anything goes.
        let free = effective_capabilities(&alice(), &[developers()]).unwrap();
        assert!(
            free.check_volumes(&[persistent("10Ti"), ephemeral(None)])
                .is_ok()
        );
    }

    fn ingress(host: &str) -> IngressExposure {
        IngressExposure {
            host: host.into(),
            ..IngressExposure::default()
        }
    }

    fn with_ingress(grant: IngressGrant) -> EffectiveCapabilities {
        let mut caps = developers();
        caps.spec.exposure = vec![ExposureType::Ingress];
        caps.spec.ingress = Some(grant);
        effective_capabilities(&alice(), &[caps]).unwrap()
    }

    #[test]
    fn an_ingress_uses_only_granted_hosts_classes_issuers_and_annotations() {
        let caps = with_ingress(IngressGrant {
            hosts: vec!["*.dev.example.com".into(), "ide.example.com".into()],
            class_names: vec!["nginx".into()],
            cluster_issuers: vec!["letsencrypt".into()],
            annotations: vec!["nginx.ingress.kubernetes.io/proxy-*".into()],
        });
        assert!(
            caps.check_ingress(&ingress("alice.dev.example.com"))
                .is_ok()
        );
        assert!(caps.check_ingress(&ingress("ide.example.com")).is_ok());
        for host in [
            "a.b.dev.example.com",
            "dev.example.com",
            "evil.example.com",
            ".dev.example.com",
        ] {
            let refused = caps.check_ingress(&ingress(host)).unwrap_err();
            assert_eq!(refused.reason, DenialReason::ExposureDenied, "{host}");
            assert!(
                refused.message.starts_with("spec.exposure.ingress.host"),
                "{}",
                refused.message
            );
        }
        let mut asked = ingress("ide.example.com");
        asked.class_name = Some("internal".into());
        assert!(
            caps.check_ingress(&asked)
                .unwrap_err()
                .message
                .contains("className \"internal\"")
        );
        let mut asked = ingress("ide.example.com");
        asked.annotations.insert(
            "nginx.ingress.kubernetes.io/proxy-body-size".into(),
            "1g".into(),
        );
        assert!(caps.check_ingress(&asked).is_ok());
        // A snippet runs arbitrary controller configuration: never matched by a pattern.
        asked.annotations.insert(
            "nginx.ingress.kubernetes.io/proxy-snippet".into(),
            "x".into(),
        );
        let refused = caps.check_ingress(&asked).unwrap_err();
        assert!(
            refused.message.contains("proxy-snippet"),
            "{}",
            refused.message
        );
        let mut asked = ingress("ide.example.com");
        asked.tls = Some(crate::workspace::IngressTls {
            secret_name: None,
            cluster_issuer: Some("internal-ca".into()),
        });
        assert!(
            caps.check_ingress(&asked)
                .unwrap_err()
                .message
                .contains("clusterIssuer")
        );
    }

    #[test]
    fn without_an_ingress_grant_only_the_default_class_and_no_annotations() {
        let caps = with_ingress(IngressGrant::default());
        assert!(caps.check_ingress(&ingress("anything.example.com")).is_ok());
        assert!(
            caps.check_ingress(&ingress("*.example.com")).is_err(),
            "wildcards must be named"
        );
        let named = with_ingress(IngressGrant {
            hosts: vec!["*.dev.example.com".into()],
            ..IngressGrant::default()
        });
        assert!(named.check_ingress(&ingress("*.dev.example.com")).is_ok());
        let mut asked = ingress("anything.example.com");
        asked.annotations.insert(
            "nginx.ingress.kubernetes.io/server-snippet".into(),
            "x".into(),
        );
        assert!(caps.check_ingress(&asked).is_err());
    }

    fn database(spec: serde_json::Value) -> GuildDatabaseSpec {
        serde_json::from_value(spec).unwrap()
    }

    fn with_databases(grants: Vec<crate::capabilities::DatabaseGrant>) -> EffectiveCapabilities {
        let all: Vec<Capabilities> = grants
            .into_iter()
            .map(|grant| {
                let mut caps = developers();
                caps.spec.databases = Some(grant);
                caps
            })
            .collect();
        effective_capabilities(&alice(), &all).unwrap()
    }

    #[test]
    fn databases_need_a_grant_and_stay_within_its_image_servers_and_storage() {
        use crate::capabilities::DatabaseGrant;
        let small = database(serde_json::json!({"storage": {"size": "5Gi"}}));
        let denied = effective_capabilities(&alice(), &[developers()])
            .unwrap()
            .check_database(&small)
            .unwrap_err();
        assert_eq!(denied.reason, DenialReason::NoCapabilities);
        assert!(
            denied.message.contains("spec.databases"),
            "{}",
            denied.message
        );

        let caps = with_databases(vec![DatabaseGrant {
            images: vec!["registry.example.com/rethinkdb:*".into()],
            max_replicas: Some(3),
            max_storage: Some(Quantity("10Gi".into())),
        }]);
        assert_eq!(caps.check_database(&small), Ok(()));
        let pinned =
            database(serde_json::json!({"image": DEFAULT_IMAGE, "storage": {"size": "1Gi"}}));
        assert_eq!(
            caps.check_database(&pinned),
            Ok(()),
            "the default is always allowed"
        );
        let mirrored = database(
            serde_json::json!({"image": "registry.example.com/rethinkdb:2.4", "storage": {"size": "1Gi"}}),
        );
        assert_eq!(caps.check_database(&mirrored), Ok(()));
        let cases = [
            (
                serde_json::json!({"image": "evil/miner", "storage": {"size": "1Gi"}}),
                DenialReason::ImageDenied,
                "spec.image",
            ),
            (
                serde_json::json!({"replicas": 5, "storage": {"size": "1Gi"}}),
                DenialReason::ResourceLimitExceeded,
                "spec.replicas is 5",
            ),
            (
                serde_json::json!({"storage": {"size": "20Gi"}}),
                DenialReason::ResourceLimitExceeded,
                "spec.storage.size is 20Gi",
            ),
            (
                serde_json::json!({"storage": {"size": "1Gi"}, "resources": {"limits": {"cpu": "16"}}}),
                DenialReason::ResourceLimitExceeded,
                "spec.resources.limits.cpu",
            ),
        ];
        for (spec, reason, names) in cases {
            let denied = caps.check_database(&database(spec.clone())).unwrap_err();
            assert_eq!(denied.reason, reason, "{spec}");
            assert!(denied.message.contains(names), "{spec}: {}", denied.message);
        }

        // Grants add up: a second grant without ceilings lifts them.
        let union = with_databases(vec![
            DatabaseGrant {
                max_replicas: Some(1),
                ..DatabaseGrant::default()
            },
            DatabaseGrant::default(),
        ]);
        let big = database(serde_json::json!({"replicas": 9, "storage": {"size": "1Ti"}}));
        assert_eq!(union.check_database(&big), Ok(()));
    }
}
