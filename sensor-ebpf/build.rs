//! Fails early, with the fix, when bpf-linker is missing.
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf")
        && which::which("bpf-linker").is_err()
    {
        panic!("bpf-linker not found on PATH: run `cargo xtask bootstrap`");
    }
}
