//! Installs what the build and the tests need, idempotently: quick when everything is there,
//! and a message naming the missing piece when something cannot be installed.
//!
//! - the nightly toolchain's `rust-src` (the eBPF crate is built with `-Z build-std=core`);
//! - `bpf-linker`, built from crates.io against the nightly's own LLVM shared library (Debian's
//!   LLVM is too old for rustc's bitcode, and no prebuilt download is reachable);
//! - Debian tools the tests, the demo and the package build use.
//!
//! See ../shared/docs/toolchain.md for the facts behind each step.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The bpf-linker release known to work with the nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages: (command that proves it is installed, package).
const DEBIAN_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("curl", "curl"),
    ("python3", "python3"),
    ("tcpdump", "tcpdump"),
    ("ethtool", "ethtool"),
    ("promtool", "prometheus"),
    ("ss", "iproute2"),
    // Normal traffic of the demo lab and its end-to-end test: real services and clients.
    // dnsmasq-base is the daemon without the package that would run it as a system service.
    ("dnsmasq", "dnsmasq-base"),
    ("dig", "bind9-dnsutils"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    // The lab runs its own sshd (own configuration and host key, lab address only). Note that
    // on a host whose init system runs package services, installing openssh-server also starts
    // the system's own ssh service.
    ("sshd", "openssh-server"),
    // Attack traffic of the demo lab and its end-to-end test.
    ("nmap", "nmap"),
    ("hping3", "hping3"),
    // The Debian package (`cargo xtask dist`) and its checks.
    ("dpkg-deb", "dpkg"),
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("strip", "binutils"),
    ("lintian", "lintian"),
    // The unit's checks: its exposure and system-call groups, the system calls and capabilities
    // of the sensor under its settings.
    ("systemd-analyze", "systemd"),
    ("strace", "strace"),
    ("setpriv", "util-linux"),
    // The end-to-end alerting test runs a Prometheus server (the package ships promtool too).
    ("prometheus", "prometheus"),
];

pub fn ensure() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    debian_tools()?;
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn nightly_sysroot() -> Result<PathBuf> {
    output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .map(PathBuf::from)
        .context(
            "the nightly toolchain is missing: install it with `rustup toolchain install nightly`",
        )
}

fn nightly_rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
    {
        return Ok(());
    }
    eprintln!("bootstrap: installing rust-src for the nightly toolchain");
    output(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("could not install rust-src for nightly (needed for -Z build-std=core)")?;
    Ok(())
}

/// The nightly's LLVM major version, from `rustc +nightly -vV`.
fn nightly_llvm_major() -> Result<String> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no LLVM version")?;
    Ok(version.split('.').next().unwrap_or(version).to_string())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

fn bpf_linker() -> Result<()> {
    let major = nightly_llvm_major()?;
    let bin = cargo_home().join("bin/bpf-linker");
    // A marker records which LLVM the installed linker was built against.
    let marker = cargo_home().join(format!(".bpf-linker-llvm-{major}"));
    let sysroot = nightly_sysroot()?;
    let lib_dir = sysroot.join("lib");
    // The linker loads the nightly's libLLVM, which rustc finds through its sysroot; probe it
    // the same way, or the probe fails and every run would rebuild it.
    if bin.exists()
        && marker.exists()
        && Command::new(&bin)
            .arg("--version")
            .env("LD_LIBRARY_PATH", &lib_dir)
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            n.starts_with(&format!("libLLVM.so.{major}"))
                || n.starts_with(&format!("libLLVM-{major}"))
        })
        .with_context(|| format!("no libLLVM {major} shared library in {}", lib_dir.display()))?;
    let prefix = cargo_home().join(format!("bpf-linker-llvm-{major}"));
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lib_dir.join(&libllvm), &link)
        .with_context(|| format!("linking {}", link.display()))?;
    eprintln!(
        "bootstrap: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} ({libllvm}); about a minute"
    );
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTC")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!(
            "building bpf-linker failed ({status}); it needs crates.io and the nightly's libLLVM in {}",
            lib_dir.display()
        );
    }
    std::fs::write(&marker, libllvm)?;
    Ok(())
}

fn have(cmd: &str) -> bool {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ]
    .iter()
    .any(|d| Path::new(d).join(cmd).exists())
}

fn debian_tools() -> Result<()> {
    let mut missing: Vec<&str> = DEBIAN_TOOLS
        .iter()
        .filter(|(c, _)| !have(c))
        .map(|(_, p)| *p)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "bootstrap: installing Debian packages {}",
        missing.join(" ")
    );
    let install = |pkgs: &[&str]| {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install(&missing).is_ok_and(|s| s.success()) {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        let st = install(&missing).context("running apt-get")?;
        if !st.success() {
            bail!(
                "could not install {} with apt-get (are you root?)",
                missing.join(" ")
            );
        }
    }
    Ok(())
}
