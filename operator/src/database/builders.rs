//! What a GuildDatabase is made of, as pure functions of it: the StatefulSet of its
//! RethinkDB servers, the headless Service they find each other through, the client
//! Service, a PodDisruptionBudget when there is more than one server, and the admin
//! password Secret. Everything is controlled by the GuildDatabase except the servers'
//! volume claims, which the StatefulSet keeps when it is deleted: data is never lost by
//! default.

use std::collections::BTreeMap;

use guildnet_api::GuildDatabase;
use guildnet_api::database::facts::{
    ADMIN_PASSWORD_KEY, CLUSTER_PORT, DRIVER_PORT, admin_secret_name, cluster_service_name,
};
use guildnet_api::labels;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, Secret, SecretKeySelector, Service,
    ServicePort, ServiceSpec, TCPSocketAction, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::workspace::{container_security_context, pod_security_context};

/// Where each server keeps its data, on its volume.
const DATA_DIR: &str = "/data";

/// The name of the servers' volume claim template (claims `data-<name>-<ordinal>`).
const DATA_VOLUME: &str = "data";

/// Why a GuildDatabase cannot be built: it was not read from the API server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("GuildDatabase has no metadata.{0}: build only from objects read from the API server")]
pub struct MissingMetadata(pub &'static str);

/// What a GuildDatabase is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// The servers.
    pub stateful_set: StatefulSet,
    /// Their names in DNS (`<name>-cluster`), for `--join`.
    pub cluster_service: Service,
    /// Where clients connect (`<name>:28015`).
    pub client_service: Service,
    /// At most one server down at a time for voluntary disruptions, with two or more.
    pub disruption_budget: Option<PodDisruptionBudget>,
}

/// The labels of database `name`'s servers and their volume claims, and the selector of
/// its Services, budget and StatefulSet. Not `guildnet.io/managed`: the StatefulSet
/// controller makes the pods and claims, and that label is the operator's alone (a
/// workspace's child).
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "rethinkdb".to_owned()),
        (labels::DATABASE.to_owned(), name.to_owned()),
    ])
}

/// The labels of what the operator makes for database `name`.
fn made_labels(name: &str) -> BTreeMap<String, String> {
    let mut made = selector(name);
    made.insert(labels::MANAGED.to_owned(), "true".to_owned());
    made
}

/// The children of `db`.
pub fn children(db: &GuildDatabase) -> Result<Children, MissingMetadata> {
    let owner = owner(db)?;
    let name = db.name_any();
    let namespace = db.namespace().ok_or(MissingMetadata("namespace"))?;
    let meta = |child: String| ObjectMeta {
        name: Some(child),
        namespace: Some(namespace.clone()),
        labels: Some(made_labels(&name)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };
    let port = |port_name: &str, port: i32| ServicePort {
        name: Some(port_name.to_owned()),
        port,
        target_port: Some(IntOrString::String(port_name.to_owned())),
        ..ServicePort::default()
    };
    let cluster_service = Service {
        metadata: meta(cluster_service_name(&name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            // Servers join each other before they are ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(&name)),
            ports: Some(vec![
                port("cluster", CLUSTER_PORT),
                port("driver", DRIVER_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let client_service = Service {
        metadata: meta(name.clone()),
        spec: Some(ServiceSpec {
            selector: Some(selector(&name)),
            ports: Some(vec![port("driver", DRIVER_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let disruption_budget = (db.replicas() > 1).then(|| PodDisruptionBudget {
        metadata: meta(name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    });
    Ok(Children {
        stateful_set: stateful_set(db, &name, &namespace, meta(name.clone())),
        cluster_service,
        client_service,
        disruption_budget,
    })
}

/// The admin password Secret of `db`, holding `password`: created once, immutable, deleted
/// with the database.
pub fn admin_secret(db: &GuildDatabase, password: &str) -> Result<Secret, MissingMetadata> {
    let name = db.name_any();
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(admin_secret_name(&name)),
            namespace: Some(db.namespace().ok_or(MissingMetadata("namespace"))?),
            labels: Some(made_labels(&name)),
            owner_references: Some(vec![owner(db)?]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            ADMIN_PASSWORD_KEY.to_owned(),
            ByteString(password.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}

fn owner(db: &GuildDatabase) -> Result<OwnerReference, MissingMetadata> {
    db.meta().uid.as_ref().ok_or(MissingMetadata("uid"))?;
    db.controller_owner_ref(&()).ok_or(MissingMetadata("name"))
}

/// The servers: each joins the first (ordinal 0) through the headless Service, names
/// itself after its pod (RethinkDB allows only letters, digits and `_`), and is reached
/// at its pod IP.
fn stateful_set(db: &GuildDatabase, name: &str, namespace: &str, meta: ObjectMeta) -> StatefulSet {
    let first = format!(
        "{name}-0.{}.{namespace}.svc:{CLUSTER_PORT}",
        cluster_service_name(name)
    );
    // The first server starts the cluster; the others join it. `--initial-password`
    // applies only when the data directory is new.
    let script = format!(
        "ordinal=\"${{POD_NAME##*-}}\"\n\
         join=\"\"\n\
         if [ \"$ordinal\" != 0 ]; then join=\"--join {first}\"; fi\n\
         exec rethinkdb --bind all --directory {DATA_DIR}/rethinkdb_data \
         --server-name \"$(echo \"$POD_NAME\" | tr - _)\" --canonical-address \"$POD_IP\" \
         --no-update-check --initial-password \"$ADMIN_PASSWORD\" $join\n"
    );
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..ObjectFieldSelector::default()
        }),
        ..EnvVarSource::default()
    };
    let env = vec![
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(field("metadata.name")),
            ..EnvVar::default()
        },
        EnvVar {
            name: "POD_IP".into(),
            value_from: Some(field("status.podIP")),
            ..EnvVar::default()
        },
        EnvVar {
            name: "ADMIN_PASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: admin_secret_name(name),
                    key: ADMIN_PASSWORD_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ];
    let container_port = |port_name: &str, port: i32| ContainerPort {
        name: Some(port_name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let container = Container {
        name: "rethinkdb".into(),
        image: Some(db.image().to_owned()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), script]),
        env: Some(env),
        ports: Some(vec![
            container_port("driver", DRIVER_PORT),
            container_port("cluster", CLUSTER_PORT),
        ]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("driver".into()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: db.spec.resources.clone(),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(selector(name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: db.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    db.spec.storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: meta,
        spec: StatefulSetSpec {
            replicas: Some(db.replicas()),
            service_name: Some(cluster_service_name(name)),
            selector: LabelSelector {
                match_labels: Some(selector(name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector(name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security_context()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            // Data outlives the database and any scale-down: delete the claims to drop it.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(replicas: Option<i32>) -> GuildDatabase {
        let mut db: GuildDatabase = serde_json::from_value(serde_json::json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
            "metadata": {"name": "inventory", "namespace": "team-a", "uid": "u-1"},
            "spec": {"storage": {"size": "5Gi", "storageClassName": "fast"}},
        }))
        .unwrap();
        db.spec.replicas = replicas;
        db
    }

    #[test]
    fn servers_join_the_first_keep_their_data_and_run_hardened() {
        let children = children(&database(Some(3))).unwrap();
        let sts = children.stateful_set;
        let spec = &sts.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("inventory-cluster"));
        let retention = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "5Gi"
        );
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.security_context, Some(pod_security_context()));
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some(guildnet_api::database::facts::DEFAULT_IMAGE)
        );
        assert_eq!(
            container.security_context,
            Some(container_security_context())
        );
        let script = &container.command.as_ref().unwrap()[2];
        for flag in [
            "--bind all",
            "--directory /data/rethinkdb_data",
            "--canonical-address \"$POD_IP\"",
            "--no-update-check",
            "--initial-password \"$ADMIN_PASSWORD\"",
            "--join inventory-0.inventory-cluster.team-a.svc:29015",
        ] {
            assert!(script.contains(flag), "{flag} missing from {script}");
        }
        let password = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "ADMIN_PASSWORD");
        let from = password
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (from.name.as_str(), from.key.as_str()),
            ("inventory-admin", "password")
        );
        assert_eq!(
            sts.metadata.owner_references.unwrap()[0].uid,
            "u-1",
            "the database controls its servers"
        );
    }

    #[test]
    fn services_publish_the_cluster_and_driver_ports() {
        let children = children(&database(None)).unwrap();
        let headless = children.cluster_service.spec.unwrap();
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        let ports: Vec<i32> = headless.ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [29015, 28015]);
        let client = children.client_service;
        assert_eq!(client.metadata.name.as_deref(), Some("inventory"));
        let ports: Vec<i32> = client
            .spec
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [28015]);
    }

    #[test]
    fn a_disruption_budget_only_with_more_than_one_server() {
        assert!(
            children(&database(None))
                .unwrap()
                .disruption_budget
                .is_none()
        );
        let budget = children(&database(Some(3)))
            .unwrap()
            .disruption_budget
            .unwrap();
        assert_eq!(
            budget.spec.unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
    }

    #[test]
    fn the_admin_secret_is_immutable_and_the_databases() {
        let secret = admin_secret(&database(None), "pw").unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("inventory-admin"));
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.data.unwrap()["password"].0, b"pw");
        assert_eq!(secret.metadata.owner_references.unwrap()[0].uid, "u-1");
    }

    #[test]
    fn what_the_stateful_set_controller_makes_carries_no_label_reserved_to_the_operator() {
        let sts = children(&database(Some(3))).unwrap().stateful_set;
        let pod = sts.spec.template.metadata.unwrap().labels.unwrap();
        let claim = sts.spec.volume_claim_templates.unwrap()[0]
            .metadata
            .labels
            .clone()
            .unwrap();
        for made in [pod, claim] {
            assert!(!made.contains_key(labels::MANAGED), "{made:?}");
            assert_eq!(made[labels::DATABASE], "inventory");
        }
        assert_eq!(sts.metadata.labels.unwrap()[labels::MANAGED], "true");
    }

    #[test]
    fn objects_not_read_from_the_api_server_are_refused() {
        let mut db = database(None);
        db.metadata.uid = None;
        assert_eq!(children(&db).unwrap_err(), MissingMetadata("uid"));
    }
}
