//! Children whose workspace is gone. `kubectl delete workspace --cascade=orphan` deletes the
//! Workspace but leaves its Deployment — and so its pod — running, outside every Quota and
//! every idle timeout; the garbage collector strips the owner reference, so nothing would
//! ever remove it. The sweeper finds such children in the caches and deletes them.
//!
//! Deployments, Services, NetworkPolicies and Ingresses are swept, and so is the password
//! Secret of a workspace they show is gone (the operator may not list Secrets, so it asks
//! for that name): they carry nothing of the user's. Claims are data and stay (retained
//! claims outlive workspaces by design).
//!
//! A workspace re-created under the name before the sweep ran finds such children in its
//! way; the reconcile replaces them by the same rule ([`is_left_behind`]) instead of
//! reporting a NameConflict.

use guildnet_api::labels;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;

/// A child to delete: where it is, its workspace, and the uid its delete is preconditioned
/// on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub namespace: String,
    pub name: String,
    /// The workspace it was made for (`guildnet.io/id`).
    pub workspace: String,
    pub uid: String,
}

/// Whether `meta` is a child that GuildNet made (`guildnet.io/managed=true`), that no
/// Workspace owns any more, and whose workspace (`guildnet.io/id`) does not exist — or was
/// created in or after the second of the child, so the child was left by an earlier
/// workspace of that name. `workspace_created(namespace, name)` is when the current
/// workspace of that name was created, if there is one.
pub fn is_left_behind(
    meta: &ObjectMeta,
    workspace_created: impl Fn(&str, &str) -> Option<Time>,
) -> bool {
    let Some(labels) = meta.labels.as_ref() else {
        return false;
    };
    let (Some(workspace), Some(namespace)) = (labels.get(labels::ID), meta.namespace.as_ref())
    else {
        return false;
    };
    if labels.get(labels::MANAGED).map(String::as_str) != Some("true")
        || meta.deletion_timestamp.is_some()
    {
        return false;
    }
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Workspace" && o.api_version.starts_with("guildnet.io/"));
    let earlier = match workspace_created(namespace, workspace) {
        None => true,
        Some(created) => meta
            .creation_timestamp
            .as_ref()
            // Creation times have whole seconds: a child of the same second as the
            // workspace is still an earlier one's (the workspace's own children are
            // always owned).
            .is_some_and(|child| child.0 <= created.0),
    };
    !owned && earlier
}

/// The `children` that [`is_left_behind`].
pub fn orphans<'a, K: Resource + 'a>(
    children: impl IntoIterator<Item = &'a K>,
    workspace_created: impl Fn(&str, &str) -> Option<Time>,
) -> Vec<Orphan> {
    children
        .into_iter()
        .map(|child| child.meta())
        .filter(|meta| is_left_behind(meta, &workspace_created))
        .filter_map(|meta| {
            Some(Orphan {
                namespace: meta.namespace.clone()?,
                name: meta.name.clone()?,
                workspace: meta.labels.as_ref()?.get(labels::ID)?.clone(),
                uid: meta.uid.clone()?,
            })
        })
        .collect()
}

/// The anchors, in a registered cluster, of this hub's workspaces that are gone: made by
/// this hub (`origin`), not being deleted, and no hub workspace of the namespace and name
/// their labels give follows that cluster (`follows(namespace, name)`: is placed there or
/// waits to be placed). Anchors of other hubs are never among them. Deleting one lets that
/// cluster's garbage collector remove the rest.
pub fn stray_anchors<'a, K: Resource + 'a>(
    anchors: impl IntoIterator<Item = &'a K>,
    origin: &str,
    follows: impl Fn(&str, &str) -> bool,
) -> Vec<Orphan> {
    anchors
        .into_iter()
        .map(|anchor| anchor.meta())
        .filter(|meta| meta.deletion_timestamp.is_none())
        .filter_map(|meta| {
            let labels = meta.labels.as_ref()?;
            let label = |key| labels.get(key).map(String::as_str);
            if label(labels::ORIGIN) != Some(origin) || label(labels::MANAGED) != Some("true") {
                return None;
            }
            let (namespace, name) = (label(labels::HUB_NAMESPACE)?, label(labels::HUB_NAME)?);
            if follows(namespace, name) {
                return None;
            }
            Some(Orphan {
                namespace: meta.namespace.clone()?,
                name: meta.name.clone()?,
                workspace: format!("{namespace}/{name}"),
                uid: meta.uid.clone()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::api::PartialObjectMeta;
    use std::collections::BTreeMap;

    fn child(name: &str, labels: &[(&str, &str)], owned: bool) -> PartialObjectMeta<Deployment> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                owner_references: owned.then(|| {
                    vec![OwnerReference {
                        api_version: "guildnet.io/v1alpha1".into(),
                        kind: "Workspace".into(),
                        name: name.into(),
                        uid: "ws-uid".into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                ..ObjectMeta::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn only_unowned_guildnet_children_of_missing_workspaces_are_swept() {
        let managed = |id: &'static str| [("guildnet.io/managed", "true"), ("guildnet.io/id", id)];
        let mut deleting = child("going", &managed("going"), false);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let at = |second| Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap());
        let mut children = [
            child("orphan", &managed("orphan"), false),
            child("owned", &managed("owned"), true),
            child("alive", &managed("alive"), false),
            child("theirs", &[("app", "billing")], false),
            deleting,
            child("recreated", &managed("recreated"), false),
        ];
        for child in &mut children {
            child.metadata.creation_timestamp = Some(at(100));
        }
        // alive's workspace is older than its child; recreated's is as old (the same
        // second: a new workspace of the old name, right after an orphaning delete).
        let workspaces = |namespace: &str, name: &str| match (namespace, name) {
            ("team", "alive") => Some(at(50)),
            ("team", "recreated") => Some(at(100)),
            _ => None,
        };
        let found = orphans(&children, workspaces);
        let names: Vec<&str> = found.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["orphan", "recreated"]);
        assert_eq!(found[0].uid, "uid-orphan");
    }

    #[test]
    fn only_this_hubs_anchors_of_workspaces_that_do_not_follow_the_cluster_are_stray() {
        let anchor = |name: &str, origin: &str, hub_name: &str| {
            let labels = [
                ("guildnet.io/managed", "true"),
                ("guildnet.io/origin", origin),
                ("guildnet.io/hub-namespace", "team-a"),
                ("guildnet.io/hub-name", hub_name),
            ];
            child(name, &labels, false)
        };
        let mut deleting = anchor("going-1", "hub-1", "going");
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let anchors = [
            anchor("gone-1", "hub-1", "gone"),
            anchor("ide-1", "hub-1", "ide"),
            anchor("gone-2", "hub-2", "gone"),
            deleting,
            child("plain", &[("guildnet.io/origin", "hub-1")], false),
        ];
        let follows = |namespace: &str, name: &str| (namespace, name) == ("team-a", "ide");
        let stray = stray_anchors(&anchors, "hub-1", follows);
        assert_eq!(
            stray,
            [Orphan {
                namespace: "team".into(),
                name: "gone-1".into(),
                workspace: "team-a/gone".into(),
                uid: "uid-gone-1".into(),
            }]
        );
    }
}
