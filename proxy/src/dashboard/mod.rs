//! The dashboard: its pages, the JSON API behind them, workspace events and logs.

pub mod api;
pub mod events;
pub mod logs;
pub mod pages;
