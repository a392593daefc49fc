//! Helpers for the integration tests, which need root: the sensor binary run inside a lab of
//! network namespaces (from `xtask::lab`), and its output parsed back into typed records.
//!
//! The tests drive real traffic with the small generators in `tests/traffic/` (Python, stdlib
//! only), curl and ping; every generator is bounded in count and seconds.

pub mod deploy;
pub mod frames;
pub mod packet;
pub mod shipped;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

pub use sensor::flows::{ConnectionRecord, Transport};
pub use sensor_common::conn_state::ConnState;
pub use xtask::lab::{self, Netns, Pair, Proc, Veth};

/// Panics unless running as root (CI runs as root; the tests create namespaces and load BPF).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this integration test needs root (network namespaces, BPF programs)"
    );
}

/// The `sensor` binary built by the same `cargo test` run (target/<profile>/sensor), or
/// `$SENSOR_BIN`.
pub fn sensor_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SENSOR_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary> -> target/<profile>/sensor
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("sensor");
    assert!(
        bin.exists(),
        "sensor binary not found at {} (build it, or set SENSOR_BIN)",
        bin.display()
    );
    bin
}

/// Path of a traffic generator script.
pub fn traffic(script: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("traffic")
        .join(script)
        .to_string_lossy()
        .into_owned()
}

/// What the sensor reported when it stopped.
#[derive(Debug)]
pub struct Finished {
    pub records: Vec<ConnectionRecord>,
    /// Kernel health counters by name (`packets`, `accounted`, `table_full`, ...).
    pub health: serde_json::Map<String, serde_json::Value>,
    pub capture: serde_json::Map<String, serde_json::Value>,
    pub stderr: String,
}

impl Finished {
    /// A health counter.
    pub fn health(&self, name: &str) -> u64 {
        self.health
            .get(name)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("no health counter {name} in {:?}", self.health))
    }

    /// Records between two addresses (either orientation), leaving out lab noise.
    pub fn between(&self, a: &str, b: &str) -> Vec<&ConnectionRecord> {
        self.records
            .iter()
            .filter(|r| {
                let (o, s) = (r.orig_addr.to_string(), r.resp_addr.to_string());
                (o == a && s == b) || (o == b && s == a)
            })
            .collect()
    }

    /// Asserts the health invariant: every packet, and every tunnel payload found in one,
    /// landed in exactly one outcome counter.
    pub fn assert_packets_add_up(&self) {
        let outcomes = [
            "accounted",
            "non_ip",
            "parse_errors",
            "truncated",
            "unsupported_l4",
            "unattributed_fragments",
            "table_full",
            "too_deep",
        ];
        let sum: u64 = outcomes.iter().map(|n| self.health(n)).sum();
        assert_eq!(
            sum,
            self.health("packets") + self.health("tunnel_payloads"),
            "packets do not add up: {:?}",
            self.health
        );
    }
}

/// The sensor (`sensor flows`) running in a namespace, stopped with SIGTERM.
pub struct SensorRun {
    proc: Proc,
}

/// Short timeouts so tests finish quickly.
pub const FAST_TIMEOUTS: &[&str] = &[
    "--udp-timeout-secs",
    "1",
    "--icmp-timeout-secs",
    "1",
    "--tcp-attempt-timeout-secs",
    "1",
];

impl SensorRun {
    /// Starts `sensor flows` on `ifaces` inside `ns`, with `extra` arguments, and waits until
    /// the programs are attached.
    pub fn start(ns: &Netns, ifaces: &[&str], extra: &[&str]) -> SensorRun {
        let bin = sensor_bin();
        let mut args: Vec<&str> = vec!["flows"];
        for i in ifaces {
            args.extend(["--iface", i]);
        }
        args.extend_from_slice(extra);
        let mut proc = ns
            .spawn(&bin.to_string_lossy(), &args)
            .expect("spawn sensor");
        proc.wait_for_stderr("watching", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("sensor did not start: {e}"));
        SensorRun { proc }
    }

    /// Stops the sensor (SIGTERM: it flushes open connections) and parses what it printed.
    pub fn stop(mut self) -> Finished {
        self.proc.terminate();
        let (status, stdout, stderr) = self
            .proc
            .wait_output(Duration::from_secs(30))
            .expect("sensor exit");
        assert!(status.success(), "sensor failed ({status}): {stderr}");
        let records = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l:?}: {e}")))
            .collect();
        let summary_line = stderr
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .unwrap_or_else(|| panic!("no summary line in stderr: {stderr}"));
        let summary: serde_json::Value = serde_json::from_str(summary_line).expect("summary json");
        let obj = |k: &str| summary[k].as_object().cloned().unwrap_or_default();
        Finished {
            records,
            health: obj("health"),
            capture: obj("capture"),
            stderr,
        }
    }
}

/// `nmap -sS` from `ns` of `ports` on `targets`, each probe sent once (no retries, no host
/// discovery, no name lookups), bounded to `secs`: the lab tests' port scan.
pub fn syn_scan(ns: &Netns, secs: u64, ports: &str, targets: &str) -> std::process::Command {
    let mut cmd = ns.cmd("timeout");
    cmd.arg(secs.to_string()).args([
        "nmap",
        "-sS",
        "-n",
        "-Pn",
        "--max-retries",
        "0",
        "-p",
        ports,
        targets,
    ]);
    cmd
}

/// An incident line's sources, sorted (it lists them in the order they came).
pub fn sorted_sources(incident: &serde_json::Value) -> Vec<&str> {
    let mut sources: Vec<&str> = incident["sources"]
        .as_array()
        .map(|s| s.iter().filter_map(|a| a.as_str()).collect())
        .unwrap_or_default();
    sources.sort_unstable();
    sources
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Waits until something listens on TCP `port` in `ns`.
pub fn wait_listening(ns: &Netns, port: u16) {
    let ok = wait_until(Duration::from_secs(10), || {
        ns.run("ss", &["-Hltn", &format!("sport = :{port}")])
            .map(|o| !o.trim().is_empty())
            .unwrap_or(false)
    });
    assert!(ok, "nothing listens on TCP port {port} in {}", ns.name);
}

/// Waits until something is bound to UDP `port` in `ns`.
pub fn wait_udp_bound(ns: &Netns, port: u16) {
    let ok = wait_until(Duration::from_secs(10), || {
        ns.run("ss", &["-Hlun", &format!("sport = :{port}")])
            .map(|o| !o.trim().is_empty())
            .unwrap_or(false)
    });
    assert!(ok, "nothing bound to UDP port {port} in {}", ns.name);
}

/// The MAC address of `iface` in `ns`.
pub fn mac_of(ns: &Netns, iface: &str) -> String {
    ns.run("cat", &[&format!("/sys/class/net/{iface}/address")])
        .expect("read mac")
        .trim()
        .to_string()
}
