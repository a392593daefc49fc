//! The sensor agent as a library: one module per stage of the data's path.
//!
//! ```text
//! capture (eBPF load/attach, ring buffer, idle sweep) -> flows (ConnectionRecord)
//! ```
pub mod features;
pub mod flows;
pub mod kdd;
