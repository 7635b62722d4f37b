//! guildnet-proxy: one browser origin for every workspace, and the dashboard.
//!
//! `/w/{namespace}/{name}/…` is forwarded (HTTP and WebSocket) to the workspace's endpoints,
//! found in a watch cache; the caller is authenticated (TokenReview and a session cookie, a
//! trusted front-proxy header, or nobody on a loopback dev setup) and authorised per
//! workspace (its owner, or RBAC `get workspaces/proxy`). Traffic is remembered and written
//! to `status.lastAccessTime` so the operator's reaper sees real use.

pub mod activity;
pub mod api;
pub mod app;
pub mod auth;
pub mod authz;
pub mod cache;
pub mod config;
pub mod dashboard;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod forward;
pub mod logs;
pub mod rewrite;
pub mod route;
pub mod session;
