//! The sensor agent as a library: one module per stage of the data's path.
//!
//! ```text
//! capture (eBPF load/attach, event ring)  |  replay (pcap/pcapng through the same parser)
//!   -> lifecycle (one connection lifecycle over either flow table: events, idle deadlines)
//!   -> flows (ConnectionRecord, ConnEvent) -> features (the 41 KDD features, windows)
//!   -> detect (model verdict) -> incidents (one per attack)
//!   -> alerts (JSON lines) + export (Prometheus)          agent: the live composition
//! dataset + train + baseline: NSL-KDD ETL, model fitting, site calibration
//! cli: the subcommand bodies behind `sensor`
//! ```
pub mod agent;
pub mod alerts;
pub mod baseline;
pub mod capture;
pub mod cli;
pub mod community_id;
pub mod config;
pub mod dataset;
pub mod detect;
pub mod ecosystem;
pub mod export;
pub mod features;
pub mod flow_table;
pub mod flows;
pub mod hashing;
pub mod incidents;
pub mod kdd;
pub mod lifecycle;
pub mod model;
pub mod replay;
pub mod suppress;
pub mod train;
