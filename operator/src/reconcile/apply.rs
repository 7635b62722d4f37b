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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

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
}
