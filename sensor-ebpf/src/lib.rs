//! Empty on purpose: the library target lets `sensor`'s build script depend on this crate so that
//! cargo rebuilds the agent when the kernel programs change. The programs are in `main.rs`.
#![no_std]
