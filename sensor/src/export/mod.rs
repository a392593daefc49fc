//! Export stage: Prometheus metrics (registry and `/metrics` endpoint).
pub mod http;
pub mod metrics;

pub use metrics::Metrics;
