//! What every component asks of a GuildDatabase — the names of what it is made of, its
//! ports, its replicas and image as defaulted — and the condition types and reasons of its
//! status.

use super::{DatabaseUser, GuildDatabase, Table};
use crate::workspace::facts::spelled;

/// The image run when `spec.image` is not set: RethinkDB 2.4, pinned.
pub const DEFAULT_IMAGE: &str = "docker.io/library/rethinkdb:2.4.4-bookworm-slim";

/// The port clients (the ReQL driver protocol) connect to.
pub const DRIVER_PORT: i32 = 28015;

/// The port the servers of one database talk to each other on.
pub const CLUSTER_PORT: i32 = 29015;

/// The key of the admin password in [`admin_secret_name`].
pub const ADMIN_PASSWORD_KEY: &str = "password";

/// RethinkDB's own system database (users, permissions, server configuration).
pub const SYSTEM_DATABASE: &str = "rethinkdb";

/// The database GuildNet keeps in each GuildDatabase's servers for itself: the audit log of
/// the database API, in [`AUDIT_TABLE`].
pub const AUDIT_DATABASE: &str = "guildnet";

/// The table of [`AUDIT_DATABASE`] each write through the database API is recorded in.
pub const AUDIT_TABLE: &str = "guildnet_audit";

/// The longest database or table name (as `spec.databases` allows).
pub const MAX_NAME_LENGTH: usize = 64;

/// Whether `name` is a database or table name as `spec.databases` allows: 1 to
/// [`MAX_NAME_LENGTH`] letters, digits and `_`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The headless Service that gives each server of database `name` its DNS name, which the
/// others join through: `<name>-cluster`.
pub fn cluster_service_name(name: &str) -> String {
    format!("{name}-cluster")
}

/// The Secret holding the generated admin password of database `name`: `<name>-admin`.
pub fn admin_secret_name(name: &str) -> String {
    format!("{name}-admin")
}

/// The key of database `name` in `namespace` in the Secret the operator hands the proxy
/// admin passwords in (`--database-credentials-secret`): `<namespace>.<name>`, unambiguous
/// because a namespace has no dot.
pub fn credentials_key(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// The database that [`credentials_key`] made `key` for, as `(namespace, name)`.
pub fn from_credentials_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.')
        .filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty())
}

impl GuildDatabase {
    /// How many servers it runs (`spec.replicas`, 1 when not set).
    pub fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }

    /// The image its servers run.
    pub fn image(&self) -> &str {
        self.spec.image.as_deref().unwrap_or(DEFAULT_IMAGE)
    }
}

impl Table {
    /// Its primary key field (`primaryKey`, `id` when not set, as RethinkDB defaults it).
    pub fn primary_key(&self) -> &str {
        self.primary_key.as_deref().unwrap_or("id")
    }
}

/// The key of a user's password in its Secret when `passwordSecretRef.key` is not set.
pub const USER_PASSWORD_KEY: &str = "password";

impl DatabaseUser {
    /// The key of its password in its Secret.
    pub fn password_key(&self) -> &str {
        self.password_secret_ref
            .key
            .as_deref()
            .unwrap_or(USER_PASSWORD_KEY)
    }
}

impl GuildDatabase {
    /// The stable id of the owner (`guildnet.io/owner`, set by the webhook).
    pub fn owner_id(&self) -> Option<&str> {
        crate::ownership::owner_id(&self.metadata)
    }

    /// The owner's readable user name (`guildnet.io/owner-name`).
    pub fn owner_name(&self) -> Option<&str> {
        crate::ownership::owner_name(&self.metadata)
    }

    /// The owner as Capabilities and Quotas match them; `None` without an owner name.
    pub fn owner(&self) -> Option<crate::policy::User> {
        crate::ownership::owner(&self.metadata)
    }

    /// The persistent storage its servers claim: `spec.replicas` volumes of
    /// `spec.storage.size`, in milli-bytes; an unparsable size counts as nothing (the
    /// schema refuses one).
    pub fn storage_milli(&self) -> i128 {
        crate::policy::quantity_milli(&self.spec.storage.size).unwrap_or(0)
            * i128::from(self.replicas())
    }

    /// Whether it declares any database or user (else no schema is applied to its servers).
    pub fn declares_schema(&self) -> bool {
        !self.spec.databases.is_empty() || !self.spec.users.is_empty()
    }
}

/// Where clients of the database `name` in `namespace` connect: its client Service.
pub fn endpoint(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.svc:{DRIVER_PORT}")
}

spelled! {
    /// The condition types of a GuildDatabase's status.
    ConditionType {
        /// Every server runs and answers on the driver port.
        Ready,
        /// A change is being rolled out, or servers are starting.
        Progressing,
        /// The spec cannot be run as given; the message says what to change.
        Failed,
        /// The declared databases, tables and users exist in the server.
        SchemaApplied,
    }
}

spelled! {
    /// The reasons of a GuildDatabase's conditions and Events. Never rename one.
    Reason {
        /// Every server is ready.
        ServersReady,
        /// Some servers are not ready yet.
        ServersNotReady,
        /// The StatefulSet is rolling out a change.
        RollingOut,
        /// Nothing is changing.
        RolledOut,
        /// Nothing is wrong.
        NoFailure,
        /// An object of a name the database needs belongs to someone else.
        NameConflict,
        /// Every declared database, table and user is in the servers.
        AsDeclared,
        /// No databases, tables or users are declared.
        NothingDeclared,
        /// No server is ready to apply the schema to yet.
        NoServerReady,
        /// No server can be reached on the driver port.
        Unreachable,
        /// The servers refused the admin password in the `<name>-admin` Secret.
        AuthenticationFailed,
        /// A database or table a query needs does not exist.
        SchemaMissing,
        /// A server failed a query.
        ServerError,
        /// A declared user's password Secret, or its key, does not exist.
        UserSecretMissing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_key_names_its_database_back() {
        let key = credentials_key("team-a", "inventory.v2");
        assert_eq!(key, "team-a.inventory.v2");
        assert_eq!(from_credentials_key(&key), Some(("team-a", "inventory.v2")));
        assert_eq!(from_credentials_key("no-dot"), None);
        assert_eq!(from_credentials_key(".name"), None);
    }
}
