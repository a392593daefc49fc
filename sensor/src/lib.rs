//! The sensor agent as a library: one module per stage of the data's path.
//!
//! ```text
//! capture (eBPF load/attach, ring buffer, idle sweep) -> flows (ConnectionRecord)
//! ```
pub mod capture;
pub mod dataset;
pub mod export;
pub mod flows;
pub mod kdd;
pub mod model;
pub mod train;
