//! VolumeSnapshots on request: the annotation `guildnet.io/snapshot=<name>` on a Workspace
//! asks for a snapshot of each of its persistent volumes, named `<claim>-<name>`. Snapshots
//! are backups, so they carry no owner reference and outlive the workspace.

use guildnet_api::{Workspace, labels};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

/// The CSI snapshot API (external-snapshotter's CRDs).
pub fn snapshot_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
    ))
}

/// The snapshot name the workspace asks for, if any.
pub fn requested(ws: &Workspace) -> Option<&str> {
    ws.annotations()
        .get(labels::SNAPSHOT)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// One VolumeSnapshot per claim, named `<claim>-<snapshot>`.
pub fn volume_snapshots(
    ws: &Workspace,
    claims: &[PersistentVolumeClaim],
    snapshot: &str,
) -> Vec<DynamicObject> {
    let resource = snapshot_resource();
    claims
        .iter()
        .map(|claim| {
            let name = format!("{}-{snapshot}", claim.name_any());
            // In the claim's namespace, with its labels: those that make a snapshot this
            // workspace's (it has no owner reference).
            let namespace = claim
                .namespace()
                .unwrap_or_else(|| ws.namespace().unwrap_or_default());
            let mut obj = DynamicObject::new(&name, &resource).within(&namespace);
            obj.metadata.labels = claim.metadata.labels.clone();
            obj.data = json!({"spec": {"source": {"persistentVolumeClaimName": claim.name_any()}}});
            obj
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::test_support::{ephemeral, persistent, workspace};
    use crate::workspace::{BuildContext, desired_children};

    #[test]
    fn a_snapshot_per_persistent_volume_named_after_its_claim() {
        let mut ws = workspace("nginx");
        ws.spec.volumes = vec![
            persistent("home", "/home", None),
            ephemeral("tmp", "/scratch", None, None),
            persistent("data", "/data", None),
        ];
        ws.metadata.annotations =
            Some([(labels::SNAPSHOT.to_string(), "before-upgrade".to_string())].into());
        let snapshot = requested(&ws).expect("annotation read");
        let claims = desired_children(&ws, &BuildContext::default())
            .unwrap()
            .pvcs;
        let snapshots = volume_snapshots(&ws, &claims, snapshot);
        let names: Vec<String> = snapshots.iter().map(|s| s.name_any()).collect();
        assert_eq!(
            names,
            ["ide-home-before-upgrade", "ide-data-before-upgrade"]
        );
        assert_eq!(
            snapshots[0].data["spec"]["source"]["persistentVolumeClaimName"],
            "ide-home"
        );
        assert!(
            snapshots[0].metadata.owner_references.is_none(),
            "a backup outlives its workspace"
        );
        assert_eq!(snapshots[0].types.as_ref().unwrap().kind, "VolumeSnapshot");
    }

    #[test]
    fn an_empty_annotation_asks_for_nothing() {
        let mut ws = workspace("nginx");
        assert_eq!(requested(&ws), None);
        ws.metadata.annotations = Some([(labels::SNAPSHOT.to_string(), String::new())].into());
        assert_eq!(requested(&ws), None);
    }
}
