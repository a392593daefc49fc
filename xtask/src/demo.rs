//! `cargo xtask demo`: a gateway lab of three network namespaces, client - gateway - server, with
//! the sensor on both gateway interfaces and live traffic between client and server. Prints every
//! finished connection as it is reported, then a summary per kind of traffic.
//!
//! Everything is bounded (traffic generators run for a fixed count and time) and removed on
//! every exit path (the lab guards' `Drop`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use xtask::lab::{Netns, Veth};

/// The lab: addresses from 198.18.0.0/15 only; the client and server reach each other through
/// the gateway and have no other route.
struct GatewayLab {
    client: Netns,
    gateway: Netns,
    server: Netns,
    /// Gateway-side interface names (the sensor watches both).
    gw_ifaces: [String; 2],
}

const CLIENT: &str = "198.18.1.1";
const SERVERS: [&str; 3] = ["198.18.2.1", "198.18.2.2", "198.18.2.3"];

impl GatewayLab {
    fn new() -> Result<GatewayLab> {
        let e = |s: String| anyhow!(s);
        let client = Netns::new("cli").map_err(e)?;
        let gateway = Netns::new("gw").map_err(e)?;
        let server = Netns::new("srv").map_err(e)?;
        let cv = Veth::new("c", &client, &gateway).map_err(e)?;
        let sv = Veth::new("s", &server, &gateway).map_err(e)?;
        let ip = |ns: &Netns, args: &[&str]| ns.ip(args).map_err(e);
        ip(
            &client,
            &["addr", "add", &format!("{CLIENT}/24"), "dev", &cv.a],
        )?;
        ip(&gateway, &["addr", "add", "198.18.1.254/24", "dev", &cv.b])?;
        ip(&gateway, &["addr", "add", "198.18.2.254/24", "dev", &sv.b])?;
        for (i, addr) in SERVERS.iter().enumerate() {
            let label = format!("{addr}/24");
            if i == 0 {
                ip(&server, &["addr", "add", &label, "dev", &sv.a])?;
            } else {
                ip(
                    &server,
                    &["addr", "add", &format!("{addr}/32"), "dev", &sv.a],
                )?;
            }
        }
        ip(
            &client,
            &["route", "add", "198.18.2.0/24", "via", "198.18.1.254"],
        )?;
        ip(
            &server,
            &["route", "add", "198.18.1.0/24", "via", "198.18.2.254"],
        )?;
        gateway.sysctl("net.ipv4.ip_forward", "1").map_err(e)?;
        // IPv4 only: keeps link-local IPv6 chatter (router and MLD messages) out of the demo.
        for ns in [&client, &gateway, &server] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
                .map_err(e)?;
        }
        Ok(GatewayLab {
            client,
            gateway,
            server,
            gw_ifaces: [cv.b, sv.b],
        })
    }
}

fn traffic_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/traffic")
}

fn script(name: &str) -> String {
    traffic_dir().join(name).to_string_lossy().into_owned()
}

pub fn run(seconds: u64) -> Result<()> {
    let sensor = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sensor");
    let lab = GatewayLab::new()?;
    println!(
        "lab: client {CLIENT} -> gateway ({}, {}) -> server {}",
        lab.gw_ifaces[0],
        lab.gw_ifaces[1],
        SERVERS.join(", ")
    );
    let secs = seconds.to_string();
    let mut sensor_proc = lab
        .gateway
        .spawn(
            &sensor.to_string_lossy(),
            &[
                "flows",
                "--iface",
                &lab.gw_ifaces[0],
                "--iface",
                &lab.gw_ifaces[1],
                "--udp-timeout-secs",
                "2",
                "--icmp-timeout-secs",
                "2",
                "--tcp-attempt-timeout-secs",
                "2",
                "--duration-secs",
                &(seconds + 6).to_string(),
            ],
        )
        .map_err(|s| anyhow!(s))?;
    sensor_proc
        .wait_for_stderr("watching", Duration::from_secs(20))
        .map_err(|s| anyhow!("the sensor did not start: {s}"))?;

    // Servers: HTTP on the first address, a DNS-like UDP responder on the second.
    let _http = lab
        .server
        .spawn(
            "python3",
            &["-m", "http.server", "80", "--bind", SERVERS[0]],
        )
        .map_err(|s| anyhow!(s))?;
    let _dns = lab
        .server
        .spawn(
            "python3",
            &[&script("udp_server.py"), SERVERS[1], "53", "120", &secs],
        )
        .map_err(|s| anyhow!(s))?;
    thread::sleep(Duration::from_millis(500));

    // Clients, in parallel, each bounded in count and time.
    let url = format!("http://{}/", SERVERS[0]);
    let count = (seconds * 2).to_string();
    let gens: Vec<(&str, Command)> = vec![
        ("http", {
            let mut c = lab.client.cmd("sh");
            c.args([
                "-c",
                &format!(
                    "for i in $(seq {count}); do curl -s -o /dev/null --max-time 2 {url}; sleep 0.4; done"
                ),
            ]);
            c
        }),
        ("dns", {
            let mut c = lab.client.cmd("python3");
            c.args([
                &script("udp_client.py"),
                SERVERS[1],
                "53",
                "40",
                &count,
                "0.4",
            ]);
            c
        }),
        ("ping", {
            let mut c = lab.client.cmd("ping");
            c.args(["-c", &count, "-i", "0.5", "-W", "1", SERVERS[2]]);
            c
        }),
    ];
    let handles: Vec<_> = gens
        .into_iter()
        .map(|(name, mut cmd)| {
            thread::spawn(move || {
                let st = cmd.stdout(std::process::Stdio::null()).status();
                (name, st.map(|s| s.success()).unwrap_or(false))
            })
        })
        .collect();
    for h in handles {
        let (name, ok) = h.join().map_err(|_| anyhow!("generator thread panicked"))?;
        println!(
            "traffic {name}: {}",
            if ok { "done" } else { "ended with errors" }
        );
    }
    let (status, stdout, stderr) = sensor_proc
        .wait_output(Duration::from_secs(30))
        .map_err(|s| anyhow!(s))?;
    if !status.success() {
        return Err(anyhow!("the sensor failed ({status}): {stderr}"));
    }
    summarize(&stdout, &stderr)
}

/// Prints each connection and a per-kind table.
fn summarize(stdout: &str, stderr: &str) -> Result<()> {
    let mut kinds: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    println!(
        "\n{:<6} {:<22} {:<22} {:<6} {:>6} {:>8} {:>8}",
        "proto", "originator", "responder", "state", "pkts", "src_B", "dst_B"
    );
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("bad record line {line}"))?;
        let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        println!(
            "{:<6} {:<22} {:<22} {:<6} {:>6} {:>8} {:>8}",
            s("transport"),
            format!("{}:{}", s("orig_addr"), n("orig_port")),
            format!("{}:{}", s("resp_addr"), n("resp_port")),
            s("conn_state"),
            n("orig_packets") + n("resp_packets"),
            n("orig_bytes"),
            n("resp_bytes")
        );
        let kind = match (s("transport").as_str(), n("resp_port")) {
            ("tcp", 80) => "http",
            ("udp", 53) => "dns",
            ("icmp", _) => "ping",
            _ => "other",
        };
        let e = kinds.entry(kind.to_string()).or_default();
        e.0 += 1;
        e.1 += n("orig_bytes");
        e.2 += n("resp_bytes");
    }
    println!(
        "\n{:<8} {:>12} {:>12} {:>12}",
        "kind", "connections", "src_bytes", "dst_bytes"
    );
    for (k, (c, a, b)) in &kinds {
        println!("{k:<8} {c:>12} {a:>12} {b:>12}");
    }
    for line in stderr.lines().filter(|l| l.starts_with("summary:")) {
        println!("{line}");
    }
    if kinds.is_empty() {
        return Err(anyhow!("the sensor reported no connections"));
    }
    Ok(())
}
