//! guildnet-proxy: one browser origin for every workspace, and the dashboard.
//!
//! `/w/{namespace}/{name}/…` is forwarded (HTTP and WebSocket) to the workspace's endpoints,
//! found in a watch cache; the caller is authenticated (TokenReview and a session cookie, a
//! trusted front-proxy header, or nobody on a loopback dev setup) and authorised per
//! workspace (its owner, or RBAC `get workspaces/proxy`). Traffic is remembered and written
//! to `status.lastAccessTime` so the operator's reaper sees real use.
//!
//! [`forward`] is the half that serves workspaces, [`dashboard`] the half that serves people,
//! [`database`] the data of GuildDatabases; the modules at the top level serve them all.

pub mod activity;
pub mod app;
pub mod auth;
pub mod authz;
pub mod body;
pub mod cache;
pub mod config;
pub mod dashboard;
pub mod database;
pub mod error;
pub mod forward;
pub mod handed;
pub mod limits;
pub mod router;
pub mod server;
pub mod session;
