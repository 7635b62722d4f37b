//! Names, labels and owner references shared by every child of a workspace.

use super::Error;
use guildnet_api::workspace::validate_name;
use guildnet_api::{Workspace, labels};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// What every child inherits from its workspace: the name, namespace, labels and the owner
/// reference that lets Kubernetes garbage-collect the child with the workspace.
#[derive(Clone, Debug)]
pub(super) struct Parent {
    pub name: String,
    namespace: Option<String>,
    /// `guildnet.io/managed`, `guildnet.io/id` and, when the workspace has one,
    /// `guildnet.io/owner`, so children can be listed per workspace and per user.
    pub labels: BTreeMap<String, String>,
    owner: OwnerReference,
}

impl Parent {
    pub fn new(ws: &Workspace) -> Result<Self, Error> {
        let name = ws
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingMetadata("name"))?;
        validate_name(&name)?;
        let owner = OwnerReference {
            // Under foreground deletion the workspace stays until this child is gone, so
            // `kubectl delete --cascade=foreground` returns only when nothing of it runs.
            block_owner_deletion: Some(true),
            ..ws.controller_owner_ref(&())
                .ok_or(Error::MissingMetadata("uid"))?
        };
        Ok(Self::named(ws, name, ws.namespace(), owner))
    }

    /// The parent of a placed workspace's objects in its cluster: named `name` in
    /// `namespace` there, owned by its anchor there (`anchor`, a controller reference: a
    /// Workspace is not a kind that cluster knows), and labelled with `remote_labels` (its
    /// origin and its hub workspace) besides the workspace's own labels.
    pub fn placed(
        ws: &Workspace,
        name: &str,
        namespace: &str,
        anchor: OwnerReference,
        remote_labels: &BTreeMap<String, String>,
    ) -> Result<Self, Error> {
        validate_name(name)?;
        let mut parent = Self::named(ws, name.to_owned(), Some(namespace.to_owned()), anchor);
        parent.labels.extend(remote_labels.clone());
        Ok(parent)
    }

    fn named(
        ws: &Workspace,
        name: String,
        namespace: Option<String>,
        owner: OwnerReference,
    ) -> Self {
        let mut labels = selector(&name);
        if let Some(owner) = ws.owner_id() {
            labels.insert(labels::OWNER.to_owned(), owner.to_owned());
        }
        Self {
            name,
            namespace,
            labels,
            owner,
        }
    }

    /// Labels that select the workspace's pods. The owner label is left out: selectors of
    /// Deployments are immutable, and the pods are identified by the workspace alone.
    pub fn selector(&self) -> BTreeMap<String, String> {
        selector(&self.name)
    }

    /// Metadata of a child that is deleted with the workspace.
    pub fn owned_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![self.owner.clone()]),
            ..self.unowned_meta(name)
        }
    }

    /// Metadata of a child that outlives the workspace (a retained volume claim).
    pub fn unowned_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: self.namespace.clone(),
            labels: Some(self.labels.clone()),
            ..ObjectMeta::default()
        }
    }
}

fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::ID.to_owned(), name.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::test_support::workspace;
    use guildnet_api::workspace::SpecError;

    #[test]
    fn children_carry_workspace_labels_and_a_blocking_controller_reference() {
        let parent = Parent::new(&workspace("nginx")).unwrap();
        let meta = parent.owned_meta("ide".into());
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        let labels = meta.labels.unwrap();
        assert_eq!(labels[labels::MANAGED], "true");
        assert_eq!(labels[labels::ID], "ide");
        assert_eq!(labels[labels::OWNER], "alice-id");
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Workspace", "ide", "uid-1")
        );
        assert_eq!(owner.api_version, "guildnet.io/v1alpha1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }

    #[test]
    fn owner_label_is_copied_only_when_present_and_never_selected_on() {
        let mut ws = workspace("nginx");
        ws.metadata.labels = None;
        let parent = Parent::new(&ws).unwrap();
        assert!(!parent.labels.contains_key(labels::OWNER));
        let with_owner = Parent::new(&workspace("nginx")).unwrap();
        assert!(!with_owner.selector().contains_key(labels::OWNER));
    }

    #[test]
    fn objects_not_from_the_api_server_are_refused() {
        let mut no_uid = workspace("nginx");
        no_uid.metadata.uid = None;
        assert_eq!(
            Parent::new(&no_uid).unwrap_err(),
            Error::MissingMetadata("uid")
        );
        let mut no_name = workspace("nginx");
        no_name.metadata.name = None;
        assert_eq!(
            Parent::new(&no_name).unwrap_err(),
            Error::MissingMetadata("name")
        );
        let mut long = workspace("nginx");
        long.metadata.name = Some("w".repeat(64));
        assert!(matches!(
            Parent::new(&long).unwrap_err(),
            Error::Spec(SpecError::InvalidName { .. })
        ));
    }
}
