//! GuildNet's admission webhook for Workspaces and GuildDatabases.
//!
//! - [`admission`]: the decisions, pure (owner label, defaults, Capabilities, Quotas,
//!   ownership), from a [`review::Review`] and a snapshot of the caches.
//! - [`database`]: the same for GuildDatabases (owner label, the `databases` grant, their
//!   storage against Quotas, ownership).
//! - [`access`]: SubjectAccessReviews for the Secrets and ConfigMaps a workspace names.
//! - [`review`]: reading AdmissionReviews, tolerant of objects the types cannot hold.
//! - [`reservations`]: admitted creates counted against Quotas until the cache sees them.
//! - [`caches`]: watch caches of Capabilities, Quotas, Workspaces, claims, registered
//!   clusters and GuildDatabases.
//! - [`certs`], [`cert_source`] and [`guildnet_runtime::tls`]: self-managed CA and serving certificates, or
//!   certificate files; rotation without restart.
//! - [`registration`]: the webhook configurations.
//! - [`server`], [`metrics`], [`cli`], [`app`]: serving, metrics, flags and wiring.

pub mod access;
pub mod admission;
pub mod app;
pub mod caches;
pub mod cert_source;
pub mod certs;
pub mod cli;
pub mod database;
pub mod metrics;
pub mod registration;
pub mod reservations;
pub mod review;
pub mod server;
