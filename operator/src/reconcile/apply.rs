//! Writing children: server-side apply with [`FIELD_MANAGER`], forced (the operator is the
//! only author of its children's specs), but only onto objects that are the parent's own.
//!
//! A child is named after its parent, so any user who may create objects in the namespace
//! can create one with that name first — a Service called like someone's workspace, a claim
//! called like someone's volume. Writing over it would hand that object to the workspace
//! (and to the garbage collector when the workspace goes). So before every write the
//! existing object, if any, is checked against [`Owner`]: its controller reference must be
//! the parent's uid, or, for objects that outlive their parent (retained volume claims), it
//! must have no controller and carry the parent's identifying labels. Anything else is a
//! [`NameConflict`]: nothing is written or deleted — unless the owner says it is a leftover
//! of an earlier parent of the same name ([`Owner::leftover`]), which is deleted (on its
//! uid) and replaced.
//!
//! The check reads, then writes: an object created in the milliseconds between the two is
//! not caught. It needs create rights in the namespace and exact timing; every object that
//! existed before the parent's first reconcile, and every later reconcile, is caught.

use super::FIELD_MANAGER;
use data_encoding::BASE32_NOPAD;
use guildnet_api::labels;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

/// Whose children a controller writes: the rule an existing object must pass.
#[derive(Clone, Copy)]
pub struct Owner<'a> {
    /// The parent's uid: an object whose controller reference names it is the parent's.
    pub uid: &'a str,
    /// For objects that outlive the parent (no controller reference): the labels they must
    /// carry, each equal to the value given or, for `None`, absent.
    pub labels: &'a [(&'a str, Option<&'a str>)],
    /// Which objects that are not the parent's are an earlier parent's leftovers, to be
    /// replaced (children an orphaning delete left behind). `None`: none are.
    pub leftover: Option<&'a (dyn Fn(&ObjectMeta) -> bool + Sync)>,
}

/// A child's name is taken by an object that is not the parent's own.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} {namespace}/{name} already exists and {why}; it was left untouched: rename the workspace (or the volume), or delete that {kind} if nothing needs it"
)]
pub struct NameConflict {
    /// The existing object's kind, e.g. `Service` or `PersistentVolumeClaim`.
    pub kind: String,
    /// Its namespace, the parent's.
    pub namespace: String,
    /// Its name, the one the child needs.
    pub name: String,
    /// Who the object belongs to instead.
    pub why: String,
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a read, apply or delete of the child.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The child's name is taken by another owner's object; nothing was written.
    #[error(transparent)]
    NameConflict(#[from] NameConflict),
}

impl Owner<'_> {
    /// `Ok` when `existing` is this owner's; otherwise who it belongs to.
    pub fn check(&self, existing: &ObjectMeta) -> Result<(), String> {
        let controller = existing
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        match controller {
            Some(c) if c.uid == self.uid => Ok(()),
            Some(c) => Err(format!(
                "is controlled by {} {} (uid {})",
                c.kind, c.name, c.uid
            )),
            None if self.labels.is_empty() => Err("is not controlled by this workspace".to_owned()),
            None => {
                let labels = existing.labels.as_ref();
                let differs = self.labels.iter().find(|(key, wanted)| {
                    labels.and_then(|l| l.get(*key)).map(String::as_str) != *wanted
                });
                match differs {
                    None => Ok(()),
                    Some((key, _)) => Err(format!(
                        "belongs to someone else (its {key} label is {})",
                        labels
                            .and_then(|l| l.get(*key))
                            .map_or_else(|| "missing".to_owned(), |v| format!("{v:?}"))
                    )),
                }
            }
        }
    }

    fn conflict(&self, kind: &str, existing: &ObjectMeta) -> Option<NameConflict> {
        self.check(existing).err().map(|why| NameConflict {
            kind: kind.to_owned(),
            namespace: existing.namespace.clone().unwrap_or_default(),
            name: existing.name.clone().unwrap_or_default(),
            why,
        })
    }
}

/// Server-side applies `obj` through `api`, unless an object of its name exists that is not
/// `owner`'s. Returns the object as the API server has it after the write.
pub async fn apply_owned<K>(api: &Api<K>, obj: &K, owner: &Owner<'_>) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    apply_owned_cached(api, obj, owner, None).await
}

/// Like [`apply_owned`], but `cached` (the object as a watch cache last saw it) saves the
/// read when it shows the object is already `owner`'s; otherwise the API server is asked,
/// as the cache may lag.
pub async fn apply_owned_cached<K>(
    api: &Api<K>,
    obj: &K,
    owner: &Owner<'_>,
    cached: Option<&ObjectMeta>,
) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    if cached.is_none_or(|meta| owner.check(meta).is_err()) {
        refuse_foreign(api, &obj.name_any(), &kind_of(obj), owner).await?;
    }
    Ok(api
        .patch(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

/// How a child's version is read to tell a change by someone else from a cache that lags:
/// `metadata.generation` where the object has a status others write (a Deployment's changes
/// with every pod), `metadata.resourceVersion` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionBy {
    /// `metadata.generation`: moves only when the spec changes.
    Generation,
    /// `metadata.resourceVersion`: moves with every change.
    ResourceVersion,
}

impl VersionBy {
    fn of(self, meta: &ObjectMeta) -> Option<u64> {
        match self {
            Self::Generation => meta.generation.and_then(|g| u64::try_from(g).ok()),
            Self::ResourceVersion => meta.resource_version.as_deref()?.parse().ok(),
        }
    }
}

/// The versions of children as this process last wrote them, by uid. A child whose cached
/// version is newer was changed by someone else since, and is applied again; an older one
/// only lags in the cache.
#[derive(Debug, Default)]
pub struct Written {
    versions: Mutex<HashMap<String, u64>>,
}

impl Written {
    fn record(&self, meta: &ObjectMeta, by: VersionBy) {
        if let (Some(uid), Some(version)) = (meta.uid.clone(), by.of(meta)) {
            self.versions.lock().unwrap().insert(uid, version);
        }
    }

    /// Whether `meta` shows a change since this process last wrote the object. Without a
    /// record (another replica wrote it, or this one restarted) the applied hash decides.
    fn changed_since(&self, meta: &ObjectMeta, by: VersionBy) -> bool {
        let versions = self.versions.lock().unwrap();
        let recorded = meta.uid.as_ref().and_then(|uid| versions.get(uid));
        match (recorded, by.of(meta)) {
            (Some(recorded), Some(current)) => current > *recorded,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Forgets the children whose uid `exists` no longer knows.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.versions.lock().unwrap().retain(|uid, _| exists(uid));
    }
}

/// A hash of `obj` as it would be applied: the value of its [`labels::APPLIED`] annotation.
pub fn fingerprint<K: Serialize>(obj: &K) -> String {
    let json = serde_json::to_vec(obj).unwrap_or_default();
    let digest = Sha256::digest(&json);
    BASE32_NOPAD.encode(&digest[..16]).to_ascii_lowercase()
}

/// Applies `obj` like [`apply_owned_cached`] unless `cached` shows it is already what `obj`
/// asks for: the parent's own, with `obj`'s [`fingerprint`] in its [`labels::APPLIED`]
/// annotation, and unchanged since this process wrote it (see [`Written`]). Returns the
/// object as written, or `None` when nothing needed writing: a settled workspace makes no
/// writes, and neither does a new leader that finds everything in place.
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    obj: &K,
    owner: &Owner<'_>,
    cached: Option<&ObjectMeta>,
    written: &Written,
    by: VersionBy,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let hash = fingerprint(obj);
    if cached.is_some_and(|meta| is_current(meta, &hash, owner, written, by)) {
        return Ok(None);
    }
    let mut stamped = obj.clone();
    stamped
        .annotations_mut()
        .insert(labels::APPLIED.to_owned(), hash);
    let applied = apply_owned_cached(api, &stamped, owner, cached).await?;
    written.record(applied.meta(), by);
    Ok(Some(applied))
}

/// Whether the cached child `meta` already is what `hash` describes: the owner's, applied
/// from that hash, and not changed by someone else since this process wrote it.
fn is_current(
    meta: &ObjectMeta,
    hash: &str,
    owner: &Owner<'_>,
    written: &Written,
    by: VersionBy,
) -> bool {
    let applied = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::APPLIED));
    owner.check(meta).is_ok()
        && applied.map(String::as_str) == Some(hash)
        && !written.changed_since(meta, by)
}

/// Writes `status` as the status of `name` (server-side apply with [`FIELD_MANAGER`] on the
/// `/status` subresource): the status is the operator's alone.
pub async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
}

/// Creates `obj` unless it exists; an existing one is never rewritten, but it must be
/// `owner`'s. For children whose content must not change once made (a generated password).
pub async fn create_once<K>(api: &Api<K>, obj: &K, owner: &Owner<'_>) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let (name, kind) = (obj.name_any(), kind_of(obj));
    if refuse_foreign(api, &name, &kind, owner).await? {
        return Ok(());
    }
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, obj).await {
        Ok(_) => Ok(()),
        // Created since the read, by a reconcile that raced this one or by someone else.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            refuse_foreign(api, &name, &kind, owner).await.map(|_| ())
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes `name` if it exists and is `owner`'s; an object that is not is left alone (it
/// was never ours to remove). The delete is preconditioned on the uid that was checked.
pub async fn delete_owned<K>(api: &Api<K>, name: &str, owner: &Owner<'_>) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(existing) = api.get_metadata_opt(name).await? else {
        return Ok(());
    };
    if owner.check(&existing.metadata).is_err() {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        // Gone, or replaced by another object since the read (the uid precondition).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `name` exists (`Ok(true)`), is free (`Ok(false)`), or is someone else's (`Err`).
async fn refuse_foreign<K>(
    api: &Api<K>,
    name: &str,
    kind: &str,
    owner: &Owner<'_>,
) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(existing) = api.get_metadata_opt(name).await? else {
        return Ok(false);
    };
    let Some(conflict) = owner.conflict(kind, &existing.metadata) else {
        return Ok(true);
    };
    if !owner
        .leftover
        .is_some_and(|leftover| leftover(&existing.metadata))
    {
        return Err(conflict.into());
    }
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(
                kind,
                name,
                "replaced a child an earlier workspace of this name left behind"
            );
            Ok(false)
        }
        // Gone already; or replaced since the read, so look again next time.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The kind an object names itself by: typed objects serialize it, dynamic ones carry it.
fn kind_of<K: Serialize>(obj: &K) -> String {
    serde_json::to_value(obj)
        .ok()
        .and_then(|v| v.get("kind")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "object".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn meta(controller_uid: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("x-pv-home".into()),
            namespace: Some("default".into()),
            owner_references: controller_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "guildnet.io/v1alpha1".into(),
                    kind: "Workspace".into(),
                    name: "x-pv".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_the_controllers_own_objects_pass() {
        let owner = Owner {
            uid: "bob-uid",
            labels: &[],
            leftover: None,
        };
        assert!(owner.check(&meta(Some("bob-uid"), &[])).is_ok());
        let why = owner.check(&meta(Some("alice-uid"), &[])).unwrap_err();
        assert_eq!(why, "is controlled by Workspace x-pv (uid alice-uid)");
        // An object nobody controls (the `kubernetes` Service, a user's own Secret).
        assert!(owner.check(&meta(None, &[])).is_err());
    }

    #[test]
    fn an_unowned_object_passes_only_with_every_label_of_the_owner() {
        let labels = [
            ("guildnet.io/id", Some("x")),
            ("guildnet.io/owner", Some("u-bob")),
        ];
        let owner = Owner {
            uid: "bob-uid",
            labels: &labels,
            leftover: None,
        };
        let retained = |id, who| meta(None, &[("guildnet.io/id", id), ("guildnet.io/owner", who)]);
        assert!(owner.check(&retained("x", "u-bob")).is_ok());
        // Alice's retained claim of a workspace called x: bob's x must not mount it.
        let why = owner.check(&retained("x", "u-alice")).unwrap_err();
        assert_eq!(
            why,
            "belongs to someone else (its guildnet.io/owner label is \"u-alice\")"
        );
        // Alice's claim of workspace x-pv, volume home, has the same name as bob's x, pv-home.
        assert!(owner.check(&retained("x-pv", "u-bob")).is_err());
        assert!(
            owner
                .check(&meta(None, &[("guildnet.io/id", "x")]))
                .is_err()
        );
        // A controlled object is judged by its controller even when the labels match.
        let mut controlled = retained("x", "u-bob");
        controlled.owner_references = meta(Some("alice-uid"), &[]).owner_references;
        assert!(owner.check(&controlled).is_err());
        // A label the owner lacks must be absent on the object too.
        let ownerless = [("guildnet.io/id", Some("x")), ("guildnet.io/owner", None)];
        let ownerless = Owner {
            uid: "uid",
            labels: &ownerless,
            leftover: None,
        };
        assert!(ownerless.check(&retained("x", "u-alice")).is_err());
        assert!(
            ownerless
                .check(&meta(None, &[("guildnet.io/id", "x")]))
                .is_ok()
        );
    }

    #[test]
    fn a_conflict_names_the_object_and_the_fix() {
        let conflict = NameConflict {
            kind: "Service".into(),
            namespace: "default".into(),
            name: "kubernetes".into(),
            why: "is not controlled by this workspace".into(),
        };
        assert_eq!(
            conflict.to_string(),
            "Service default/kubernetes already exists and is not controlled by this workspace; it was left untouched: rename the workspace (or the volume), or delete that Service if nothing needs it"
        );
    }

    fn applied(uid: &str, generation: i64, hash: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            generation: Some(generation),
            resource_version: Some((generation * 10).to_string()),
            annotations: Some([(labels::APPLIED.to_owned(), hash.to_owned())].into()),
            ..meta(Some("ws-uid"), &[])
        }
    }

    #[test]
    fn a_child_already_applied_from_the_same_hash_is_not_written_again() {
        let owner = Owner {
            uid: "ws-uid",
            labels: &[],
            leftover: None,
        };
        let written = Written::default();
        let by = VersionBy::Generation;
        // Without a record (a restart, a new leader), the applied hash decides.
        assert!(is_current(
            &applied("d", 3, "h1"),
            "h1",
            &owner,
            &written,
            by
        ));
        assert!(!is_current(
            &applied("d", 3, "h0"),
            "h1",
            &owner,
            &written,
            by
        ));
        let mut unstamped = applied("d", 3, "h1");
        unstamped.annotations = None;
        assert!(!is_current(&unstamped, "h1", &owner, &written, by));
        // Someone else's object is never current, whatever it says.
        let mut foreign = applied("d", 3, "h1");
        foreign.owner_references = None;
        assert!(!is_current(&foreign, "h1", &owner, &written, by));

        // After this process wrote generation 4: a cache still at 3 only lags, while 5 is
        // an edit by someone else (kubectl edit), which is applied over again.
        written.record(&applied("d", 4, "h1"), by);
        assert!(is_current(
            &applied("d", 3, "h1"),
            "h1",
            &owner,
            &written,
            by
        ));
        assert!(is_current(
            &applied("d", 4, "h1"),
            "h1",
            &owner,
            &written,
            by
        ));
        assert!(!is_current(
            &applied("d", 5, "h1"),
            "h1",
            &owner,
            &written,
            by
        ));
        // Resource versions serve objects whose status others write less.
        let by_version = VersionBy::ResourceVersion;
        written.record(&applied("s", 1, "h2"), by_version);
        assert!(is_current(
            &applied("s", 1, "h2"),
            "h2",
            &owner,
            &written,
            by_version
        ));
        assert!(!is_current(
            &applied("s", 2, "h2"),
            "h2",
            &owner,
            &written,
            by_version
        ));
        // Forgotten once gone.
        written.retain(|uid| uid != "d");
        assert!(is_current(
            &applied("d", 5, "h1"),
            "h1",
            &owner,
            &written,
            by
        ));
    }

    #[test]
    fn the_fingerprint_follows_the_object_and_nothing_else() {
        use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
        let service = |port: i32| Service {
            metadata: ObjectMeta {
                name: Some("ide".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        assert_eq!(fingerprint(&service(80)), fingerprint(&service(80)));
        assert_ne!(fingerprint(&service(80)), fingerprint(&service(8080)));
        assert_eq!(
            fingerprint(&service(80)).len(),
            26,
            "a short annotation value"
        );
    }
}
