//! `baton-telemetry` owns what SREs see of a Baton process: the metric names and collectors
//! (declared once, in [`metrics`]), the HTTP endpoint serving `/metrics`, `/healthz`,
//! `/readyz` and `/loglevel`, and the tracing subscriber (text or JSON, level changeable at
//! run time).

pub mod http;
pub mod logging;
pub mod metrics;

pub use http::{Health, serve};
pub use logging::{LogFormat, LogHandle, init_logging};
pub use metrics::Metrics;
