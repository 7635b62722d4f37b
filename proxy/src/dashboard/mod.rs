//! The dashboard: its pages, the JSON API behind them, workspace events and logs, retained
//! volume claims.

pub mod api;
pub mod claims;
pub mod events;
pub mod logs;
pub mod pages;
