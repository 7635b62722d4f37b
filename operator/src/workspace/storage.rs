//! Volumes of the workspace pod and the PersistentVolumeClaims behind persistent ones.

use super::meta::Parent;
use guildnet_api::workspace::facts::claim_name;
use guildnet_api::workspace::is_code_server;
use guildnet_api::workspace::{
    EphemeralMedium, EphemeralVolume, PersistentVolume, ReclaimPolicy, WorkspaceSpec,
    WorkspaceVolume,
};
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Volume, VolumeMount, VolumeResourceRequirements,
};
use std::collections::BTreeMap;

/// A directory the workspace must be able to write to whatever the image's file ownership:
/// the pod runs as uid 1000, and an emptyDir (group-owned by fsGroup 1000) is writable where
/// the image's own directory may not be. Hardening stays intact: no root, no extra
/// capabilities, just a place to write.
struct ScratchDir {
    volume: &'static str,
    path: &'static str,
}

/// Every program expects a writable /tmp.
const TMP: ScratchDir = ScratchDir {
    volume: "guildnet-tmp",
    path: "/tmp",
};

/// code-server keeps extensions and user data under ~/.local and its config under ~/.config.
const CODE_SERVER_DIRS: [ScratchDir; 2] = [
    ScratchDir {
        volume: "guildnet-local",
        path: "/home/coder/.local",
    },
    ScratchDir {
        volume: "guildnet-config",
        path: "/home/coder/.config",
    },
];

/// The pod's volumes: the user's, then the scratch directories they do not already cover.
pub(super) fn volumes(parent: &Parent, spec: &WorkspaceSpec) -> Vec<Volume> {
    let user = spec.volumes.iter().map(|volume| Volume {
        name: volume.name.clone(),
        ..volume_source(&parent.name, volume)
    });
    let scratch = scratch_dirs(spec).map(|dir| Volume {
        name: dir.volume.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    user.chain(scratch).collect()
}

/// Where the container mounts each of [`volumes`].
pub(super) fn volume_mounts(spec: &WorkspaceSpec) -> Vec<VolumeMount> {
    let user = spec
        .volumes
        .iter()
        .map(|volume| mount(&volume.name, &volume.mount_path));
    let scratch = scratch_dirs(spec).map(|dir| mount(dir.volume, dir.path));
    user.chain(scratch).collect()
}

/// The claims of the persistent volumes. A claim is owned by the workspace only with
/// `reclaimPolicy: Delete`; with `Retain` (the default) it has no owner reference, so
/// deleting the workspace never garbage-collects the user's data.
pub(super) fn persistent_volume_claims(
    parent: &Parent,
    spec: &WorkspaceSpec,
) -> Vec<PersistentVolumeClaim> {
    spec.volumes
        .iter()
        .filter_map(|volume| {
            let persistent = volume.persistent.as_ref()?;
            let name = claim_name(&parent.name, &volume.name);
            let metadata = match persistent.reclaim_policy.unwrap_or_default() {
                ReclaimPolicy::Delete => parent.owned_meta(name),
                ReclaimPolicy::Retain => parent.unowned_meta(name),
            };
            Some(PersistentVolumeClaim {
                metadata,
                spec: Some(claim_spec(persistent)),
                status: None,
            })
        })
        .collect()
}

/// ReadWriteOnce: a workspace runs one pod at a time (the Deployment recreates rather than
/// rolls), and RWO is what every storage class offers.
fn claim_spec(persistent: &PersistentVolume) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_owned(),
                persistent.size.clone(),
            )])),
            limits: None,
        }),
        storage_class_name: persistent.storage_class_name.clone(),
        ..PersistentVolumeClaimSpec::default()
    }
}

/// A persistent volume mounts its claim; anything else is an emptyDir (the API server
/// guarantees exactly one of `persistent` and `ephemeral` is set).
fn volume_source(workspace: &str, volume: &WorkspaceVolume) -> Volume {
    match &volume.persistent {
        Some(_) => Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(workspace, &volume.name),
                read_only: None,
            }),
            ..Volume::default()
        },
        None => Volume {
            empty_dir: Some(empty_dir(volume.ephemeral.as_ref())),
            ..Volume::default()
        },
    }
}

fn empty_dir(ephemeral: Option<&EphemeralVolume>) -> EmptyDirVolumeSource {
    let ephemeral = ephemeral.cloned().unwrap_or_default();
    EmptyDirVolumeSource {
        medium: ephemeral.medium.map(|medium| match medium {
            EphemeralMedium::Memory => "Memory".to_owned(),
        }),
        size_limit: ephemeral.size_limit,
        mode: None,
    }
}

fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

/// The scratch directories this workspace needs: /tmp always, code-server's when it is
/// code-server; each left out when a user volume is mounted at it or above it, since the
/// user's volume then provides (and must not be shadowed at) that path.
fn scratch_dirs(spec: &WorkspaceSpec) -> impl Iterator<Item = &'static ScratchDir> {
    let code_server: &'static [ScratchDir] = if is_code_server(&spec.image) {
        &CODE_SERVER_DIRS
    } else {
        &[]
    };
    std::iter::once(&TMP).chain(code_server).filter(|dir| {
        !spec
            .volumes
            .iter()
            .any(|volume| is_at_or_above(&volume.mount_path, dir.path))
    })
}

/// Whether a mount at `mount_path` contains `path` (`/home` contains `/home/coder/.local`;
/// `/home/co` does not).
fn is_at_or_above(mount_path: &str, path: &str) -> bool {
    let mount_path = mount_path.trim_end_matches('/');
    path.strip_prefix(mount_path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::test_support::{ephemeral, persistent, workspace};
    use guildnet_api::labels;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn mounts(spec: &WorkspaceSpec) -> Vec<(String, String)> {
        volume_mounts(spec)
            .into_iter()
            .map(|mount| (mount.name, mount.mount_path))
            .collect()
    }

    #[test]
    fn scratch_dirs_are_added_unless_a_user_volume_covers_them() {
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect()
        };
        let cases = [
            (
                "plain image",
                "nginx",
                vec![],
                owned(&[("guildnet-tmp", "/tmp")]),
            ),
            (
                "code-server",
                "codercom/code-server",
                vec![],
                owned(&[
                    ("guildnet-tmp", "/tmp"),
                    ("guildnet-local", "/home/coder/.local"),
                    ("guildnet-config", "/home/coder/.config"),
                ]),
            ),
            (
                "code-server with a home volume",
                "codercom/code-server",
                vec![persistent("home", "/home/coder", None)],
                owned(&[("home", "/home/coder"), ("guildnet-tmp", "/tmp")]),
            ),
            (
                "code-server with a volume above home",
                "codercom/code-server",
                vec![persistent("home", "/home/", None)],
                owned(&[("home", "/home/"), ("guildnet-tmp", "/tmp")]),
            ),
            (
                "code-server with a sibling volume",
                "codercom/code-server",
                vec![persistent("project", "/home/coder/project", None)],
                owned(&[
                    ("project", "/home/coder/project"),
                    ("guildnet-tmp", "/tmp"),
                    ("guildnet-local", "/home/coder/.local"),
                    ("guildnet-config", "/home/coder/.config"),
                ]),
            ),
            (
                "a user /tmp replaces the scratch /tmp",
                "nginx",
                vec![ephemeral("scratch", "/tmp", Some("1Gi"), None)],
                owned(&[("scratch", "/tmp")]),
            ),
            (
                "a path prefix is not a parent directory",
                "nginx",
                vec![ephemeral("t", "/tm", None, None)],
                owned(&[("t", "/tm"), ("guildnet-tmp", "/tmp")]),
            ),
        ];
        for (case, image, user_volumes, expected) in cases {
            let spec = WorkspaceSpec {
                image: image.to_owned(),
                volumes: user_volumes,
                ..WorkspaceSpec::default()
            };
            assert_eq!(mounts(&spec), expected, "{case}");
            let parent = Parent::new(&workspace(image)).unwrap();
            let names: Vec<String> = volumes(&parent, &spec)
                .into_iter()
                .map(|v| v.name)
                .collect();
            let mount_names: Vec<String> = expected.into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, mount_names, "{case}: every mount has its volume");
        }
    }

    #[test]
    fn user_volumes_become_claims_or_empty_dirs() {
        let spec = WorkspaceSpec {
            image: "nginx".to_owned(),
            volumes: vec![
                persistent("home", "/home/coder", None),
                ephemeral("scratch", "/scratch", Some("1Gi"), None),
                ephemeral("shm", "/dev/shm", None, Some(EphemeralMedium::Memory)),
            ],
            ..WorkspaceSpec::default()
        };
        let parent = Parent::new(&workspace("nginx")).unwrap();
        let volumes = volumes(&parent, &spec);

        let claim = volumes[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(claim.claim_name, "ide-home");
        assert!(volumes[0].empty_dir.is_none());

        let scratch = volumes[1].empty_dir.as_ref().unwrap();
        assert_eq!(scratch.size_limit, Some(Quantity("1Gi".into())));
        assert_eq!(scratch.medium, None);

        let shm = volumes[2].empty_dir.as_ref().unwrap();
        assert_eq!(shm.medium.as_deref(), Some("Memory"));
        assert_eq!(shm.size_limit, None);
    }

    #[test]
    fn only_deletable_claims_are_owned_by_the_workspace() {
        let cases = [
            (None, false),
            (Some(ReclaimPolicy::Retain), false),
            (Some(ReclaimPolicy::Delete), true),
        ];
        for (policy, owned) in cases {
            let spec = WorkspaceSpec {
                image: "nginx".to_owned(),
                volumes: vec![
                    persistent("home", "/home/coder", policy),
                    ephemeral("scratch", "/scratch", None, None),
                ],
                ..WorkspaceSpec::default()
            };
            let parent = Parent::new(&workspace("nginx")).unwrap();
            let claims = persistent_volume_claims(&parent, &spec);
            assert_eq!(claims.len(), 1, "only persistent volumes get claims");
            let meta = &claims[0].metadata;
            assert_eq!(meta.name.as_deref(), Some("ide-home"));
            assert_eq!(meta.namespace.as_deref(), Some("team-a"));
            assert_eq!(meta.labels.as_ref().unwrap()[labels::ID], "ide");
            assert_eq!(meta.owner_references.is_some(), owned, "policy {policy:?}");
        }
    }

    #[test]
    fn claims_request_the_size_and_class_read_write_once() {
        let mut home = persistent("home", "/home/coder", None);
        home.persistent.as_mut().unwrap().storage_class_name = Some("fast-ssd".into());
        let spec = WorkspaceSpec {
            image: "nginx".to_owned(),
            volumes: vec![home],
            ..WorkspaceSpec::default()
        };
        let parent = Parent::new(&workspace("nginx")).unwrap();
        let claim_spec = persistent_volume_claims(&parent, &spec)
            .remove(0)
            .spec
            .unwrap();
        assert_eq!(
            claim_spec.access_modes,
            Some(vec!["ReadWriteOnce".to_owned()])
        );
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast-ssd"));
        let requests = claim_spec.resources.unwrap().requests.unwrap();
        assert_eq!(requests["storage"], Quantity("10Gi".into()));
    }
}
