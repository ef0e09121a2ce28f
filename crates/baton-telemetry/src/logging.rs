//! Tracing setup: human text (coloured only on a terminal) or JSON lines, filter from
//! `RUST_LOG`/`--log-level`, changeable at run time through the [`LogHandle`] (exposed at
//! `PUT /loglevel`).

use std::ffi::OsStr;
use std::io::IsTerminal as _;
use std::sync::Arc;

use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

/// Output format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Handle to change the log filter of a running process.
#[derive(Clone)]
pub struct LogHandle {
    inner: Arc<reload::Handle<EnvFilter, Registry>>,
}

impl LogHandle {
    /// Replace the filter (`info`, `baton_delivery=debug,info`, ...).
    pub fn set(&self, directive: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directive).map_err(|e| e.to_string())?;
        self.inner.reload(filter).map_err(|e| e.to_string())
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.inner
            .with_current(|f| f.to_string())
            .unwrap_or_default()
    }
}

/// Whether text logs carry ANSI colours: only on a terminal, and not when `NO_COLOR` is set
/// to a non-empty value (<https://no-color.org>). Logs written to a file or a pipe (systemd,
/// kubectl logs, a test harness) stay plain text.
fn colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Install the global subscriber. Safe to call once per process; a second call returns `None`.
pub fn init_logging(level: &str, format: LogFormat) -> Option<LogHandle> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let ok = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour(
                        std::io::stderr().is_terminal(),
                        std::env::var_os("NO_COLOR").as_deref(),
                    ))
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .is_ok(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .is_ok(),
    };
    ok.then(|| LogHandle {
        inner: Arc::new(handle),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new(""))));
    }
}
