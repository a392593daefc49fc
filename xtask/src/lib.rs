//! Library side of `xtask`: the network-namespace lab shared by `cargo xtask demo` and the
//! integration tests (the `tests` crate), and the Debian package (`cargo xtask dist`, which the
//! package's integration test builds too). Std, serde_json and toml only, so it builds before
//! the eBPF toolchain exists.
pub mod bench_report;
pub mod dist;
pub mod gateway;
pub mod lab;
pub mod manpage;
pub mod metrics;
