//! Library side of `xtask`: the network-namespace lab shared by `cargo xtask demo` and the
//! integration tests (the `tests` crate). Std, serde_json and toml only, so it builds before the eBPF toolchain exists.
pub mod gateway;
pub mod lab;
