//! GuildDatabase: a RethinkDB instance and the databases, tables and users declared in it.

pub mod facts;

use crate::common::{Condition, SecretKeyRef};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A RethinkDB instance (StatefulSet, Services, PersistentVolumeClaims) and the databases,
/// tables and users declared here, kept in place by the operator.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "guildnet.io",
    version = "v1alpha1",
    kind = "GuildDatabase",
    namespaced,
    shortname = "gdb",
    category = "guildnet",
    status = "GuildDatabaseStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A RethinkDB instance and the databases, tables and users declared in it.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Schema",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"SchemaApplied\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GuildDatabaseSpec {
    /// RethinkDB server replicas. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: Option<i32>,
    /// The RethinkDB image. Defaults to `docker.io/library/rethinkdb:2.4.4-bookworm-slim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Storage of each replica.
    pub storage: DatabaseStorage,
    /// CPU and memory of each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Databases and their tables, created when missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(d, self.exists_one(e, e.name == d.name))")
        .message("spec.databases names must be unique: remove the duplicate database"))]
    pub databases: Vec<Database>,
    /// Users and their grants, created when missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(u, self.exists_one(v, v.name == u.name))")
        .message("spec.users names must be unique: remove the duplicate user"))]
    pub users: Vec<DatabaseUser>,
}

/// Storage of a RethinkDB replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStorage {
    /// Size of each replica's volume, e.g. `10Gi`.
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("spec.storage.size must be a positive quantity, e.g. 10Gi"))]
    pub size: Quantity,
    /// StorageClass of the volumes. Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// A RethinkDB database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// The database's name: letters, digits and `_`, as RethinkDB requires.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9_]+$') && self != 'rethinkdb' && self != 'guildnet'")
        .message("spec.databases name must use only letters, digits and _ and must not be rethinkdb or guildnet (kept by RethinkDB and GuildNet), e.g. inventory"))]
    pub name: String,
    /// Tables of the database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tables: Vec<Table>,
}

/// A RethinkDB table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// The table's name: letters, digits and `_`.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9_]+$')")
        .message("spec.databases tables name must use only letters, digits and _, e.g. items"))]
    pub name: String,
    /// The primary key field. Defaults to `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub primary_key: Option<String>,
}

/// A RethinkDB user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseUser {
    /// The user's name.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9_]+$') && self != 'admin'")
        .message("spec.users name must use only letters, digits and _ and must not be admin"))]
    pub name: String,
    /// Secret (in the same namespace) holding the user's password; key `password` unless
    /// given.
    pub password_secret_ref: SecretKeyRef,
    /// Permissions on databases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub grants: Vec<Grant>,
}

/// Permissions of a user on one database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The database the grant is on.
    #[schemars(length(min = 1, max = 64))]
    pub database: String,
    /// May read.
    #[serde(default)]
    pub read: bool,
    /// May write.
    #[serde(default)]
    pub write: bool,
    /// May create and drop tables.
    #[serde(default)]
    pub config: bool,
}

/// The observed state of a GuildDatabase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuildDatabaseStatus {
    /// Pending, Running or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Ready replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The client Service's cluster DNS name and port, e.g. `app.team-a.svc:28015`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The latest observations: Ready, Progressing, SchemaApplied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The declared users as last applied to the servers, so a changed password Secret or
    /// grant is applied again (RethinkDB cannot give a password back to compare).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub users: Vec<AppliedUser>,
}

/// A declared user as last applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedUser {
    /// The user's name.
    pub name: String,
    /// HMAC-SHA256, keyed with the admin password, of the password and grants applied: it
    /// says whether they changed and nothing about the password.
    pub digest: String,
}
