//! Logs through tracing: JSON lines for log collectors, or text for a person at a terminal.
//! Each JSON line carries the spans it was written in, so every line of a reconcile names
//! its workspace (`namespace`, `workspace`) and its `reconcile_id`. `RUST_LOG` filters as
//! usual (default `info`).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, with the current span and the span list.
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// The format when none is asked for: text on a terminal, JSON everywhere else (a pod's
    /// log, a file, a pipe).
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        }
    }
}

/// Installs the global subscriber, writing to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}
