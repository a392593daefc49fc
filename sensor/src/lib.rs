//! The sensor agent as a library: one module per stage of the data's path.
//!
//! ```text
//! capture (eBPF load/attach, ring buffer, idle sweep) -> flows (ConnectionRecord)
//!   -> features (KDD feature vector) -> model (verdict) -> export (Prometheus)
//! dataset + train: NSL-KDD ETL and model fitting, apart from the live path
//! ```
pub mod agent;
pub mod alerts;
pub mod baseline;
pub mod capture;
pub mod config;
pub mod dataset;
pub mod detect;
pub mod export;
pub mod features;
pub mod flow_table;
pub mod flows;
pub mod incidents;
pub mod kdd;
pub mod lifecycle;
pub mod model;
pub mod replay;
pub mod train;
