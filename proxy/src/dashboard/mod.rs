//! The dashboard: its pages, the JSON API behind them, workspace events and logs, retained
//! volume claims, the caller's Quota usage.

pub mod api;
pub mod claims;
pub mod events;
pub mod logs;
pub mod pages;
pub mod quotas;
