//! The gateway lab and its traffic scenario, shared by `cargo xtask demo` and the end-to-end
//! test: two client hosts, an attacker host and a server host, each in its own network
//! namespace behind a gateway namespace that routes between them. `sensor run` watches every
//! gateway interface with the settings users get (`deploy/sensor.toml`); only what is specific
//! to the lab is overridden (interfaces, model, output files, metrics address, a run-time bound).
//!
//! Normal traffic comes from real services and clients: dnsmasq answering `dig`, OpenSSH
//! sessions with key login, HTTP (python3 http.server) fetched by both clients with curl, a UDP
//! request/response service (NTP-sized, `tests/traffic/udp_server.py`), ping, and the hosts'
//! own IPv6 link-local chatter (duplicate address detection, router solicitations, MLD
//! reports: IPv6 is switched on once the sensor watches). Attacks from real tools run one after
//! another from the attacker: a ping flood (`ping -f`, one conversation, which only the volume
//! rule sees), an hping3 SYN flood, nmap TCP and UDP port scans, an nmap ping sweep, and SSH
//! password guessing (OpenSSH's client with a key the server refuses, four at a time, as
//! `hydra` does, which only the login rule sees). After the traffic the scenario waits out the shipped idle timeouts, so every
//! connection ends the way it would in production rather than in the shutdown flush.
//!
//! Addresses (all in 198.18.0.0/15; no namespace has a route beyond it; IPv6 is link-local only):
//! * client 198.18.1.1, second client 198.18.3.1;
//! * attacker: one address per attack, so that a connection or an incident names its attack by
//!   address alone: 198.18.4.1 flood, .2 TCP scan, .3 UDP scan, .4 ping sweep, .5 ping flood,
//!   .6 SSH password guessing;
//! * gateway 198.18.N.254 on each segment;
//! * server: HTTP 198.18.2.1, DNS 198.18.2.2, ping 198.18.2.3, TCP scan target 198.18.2.4,
//!   SSH 198.18.2.5, UDP scan target 198.18.2.6, UDP request/response 198.18.2.7, ping-flood
//!   target 198.18.2.8, SSH guessing target 198.18.2.9 (the same sshd), ping-sweep
//!   targets 198.18.2.10-29 (20 addresses; .30-.39 answer nothing);
//! * flood target 198.18.2.99: blackholed on the gateway, so the SYNs are never answered (a
//!   host that no longer answers, as a flood's victim does; it yields KDD's `S0`).
//!
//! Every generator is bounded in packets and seconds; every namespace, process and temporary
//! file is removed on every exit path (the guards' `Drop`).
//!
//! `topology` builds the namespaces, `services` runs the servers, `traffic` the clients and the
//! attacks, `sensor` the sensor under test; `scenario` has the run's options and outcome, and
//! `report` turns a run into per-kind figures (kinds, incidents, the table).
use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use crate::lab::TempDir;

mod prometheus;
mod report;
mod scenario;
mod sensor;
mod services;
mod topology;
mod traffic;

pub use report::{
    ATTACK_KINDS, COLLATERAL_WINDOW_NS, EXACT_KINDS, Incident, KindSummary, NORMAL_KINDS,
    PROVOKED_KIND, all_kinds, incident_summary, incidents, kind, parse_rfc3339_utc, quantile,
    summarize, table,
};
pub use scenario::{AttackRun, IdleTimeouts, Made, Outcome, ScenarioOptions, Timings};
pub use sensor::check_metrics;
use services::Services;
pub use services::{start_http, start_udp_rr};
pub use topology::GatewayLab;
pub use traffic::host_loop;
use traffic::{traffic_script, unix_now_ns};

pub use prometheus::{PROMETHEUS_ADDR, PrometheusOptions, PrometheusOutcome};

pub const CLIENT: &str = "198.18.1.1";
pub const CLIENT2: &str = "198.18.3.1";
pub const HTTP_SERVER: &str = "198.18.2.1";
pub const DNS_SERVER: &str = "198.18.2.2";
pub const PING_SERVER: &str = "198.18.2.3";
pub const PORT_SCAN_TARGET: &str = "198.18.2.4";
pub const SSH_SERVER: &str = "198.18.2.5";
pub const UDP_SCAN_TARGET: &str = "198.18.2.6";
/// The UDP request/response service (NTP's port and packet size).
pub const UDP_RR_SERVER: &str = "198.18.2.7";
pub const UDP_RR_PORT: u16 = 123;
pub const FLOOD_TARGET: &str = "198.18.2.99";
/// Ping-sweep range: .10-.29 exist on the server, .30-.39 do not.
pub const SWEEP_RANGE: &str = "198.18.2.10-39";
const SWEEP_FIRST: u8 = 10;
const SWEEP_LAST: u8 = 39;
/// The attacker's addresses, one per attack.
pub const FLOOD_SOURCE: &str = "198.18.4.1";
pub const PORT_SCAN_SOURCE: &str = "198.18.4.2";
pub const UDP_SCAN_SOURCE: &str = "198.18.4.3";
pub const SWEEP_SOURCE: &str = "198.18.4.4";
pub const PING_FLOOD_SOURCE: &str = "198.18.4.5";
pub const GUESS_SOURCE: &str = "198.18.4.6";
/// The lab's sshd on an address of its own, so that the guessing and its incident name no
/// address of the normal SSH sessions.
pub const GUESS_TARGET: &str = "198.18.2.9";
/// SSH logins the guessing attack tries, each refused: twice the login rule's bar.
pub const GUESS_SESSIONS: u32 = 120;
/// The ping flood's target, a server address of its own (so that its incident names no
/// service of the lab).
pub const PING_FLOOD_TARGET: &str = "198.18.2.8";
/// Names dnsmasq serves (under `lab.test`, a reserved test domain).
pub const DNS_NAMES: [(&str, &str); 4] = [
    ("www.lab.test", HTTP_SERVER),
    ("ssh.lab.test", SSH_SERVER),
    ("time.lab.test", UDP_RR_SERVER),
    ("ping.lab.test", PING_SERVER),
];
/// Sizes of the attacks (bounded; also what the test expects to see).
pub const FLOOD_SYNS: u32 = 2000;
pub const TCP_SCAN_PORTS: u32 = 1000;
pub const UDP_SCAN_PORTS: u32 = 500;
pub const SWEEP_HOSTS: u32 = SWEEP_LAST as u32 - SWEEP_FIRST as u32 + 1;
/// Echo requests of the ping flood (`ping -f`: one identifier, so one conversation).
pub const PING_FLOOD_PACKETS: u32 = 5000;

/// The shipped configuration, `deploy/sensor.toml`.
pub fn shipped_config() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sensor.toml");
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// Runs the scenario; see the module docs.
pub fn run_scenario(opts: &ScenarioOptions) -> Result<Outcome, String> {
    let say = |s: &str| {
        if opts.verbose {
            println!("{s}");
        }
    };
    let t0 = Instant::now();
    let timeouts = IdleTimeouts::from_file(&opts.config)?;
    let settle_wait = timeouts.settle();
    let attack_secs = if opts.attacks { 24 } else { 0 };
    let normal_secs = opts.seconds.max(attack_secs + 6);
    // Upper bound of the sensor's and the servers' lifetime; the scenario stops them earlier.
    let bound_secs = normal_secs + settle_wait.as_secs() + 60;

    // Declared before the lab and the servers, so that it is removed after they are gone.
    let dir = TempDir::new("lab")?;
    let lab = GatewayLab::new()?;
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| e.to_string())?;
    let records = opts.work_dir.join("connections.jsonl");
    let alerts = opts.work_dir.join("alerts.jsonl");
    for f in [&records, &alerts] {
        let _ = std::fs::remove_file(f);
    }
    let metrics_addr = "127.0.0.1:9464";
    say(&format!(
        "lab: clients {CLIENT} and {CLIENT2}, attacker 198.18.4.1-4 -> gateway ({}) -> server: HTTP {HTTP_SERVER}, DNS {DNS_SERVER} (dnsmasq), SSH {SSH_SERVER} (OpenSSH), UDP request/response {UDP_RR_SERVER}:{UDP_RR_PORT}, ping {PING_SERVER}; scan targets {PORT_SCAN_TARGET} (TCP), {UDP_SCAN_TARGET} (UDP), sweep {SWEEP_RANGE}; {FLOOD_TARGET} blackholed",
        lab.gw_ifaces.join(", ")
    ));
    let mut sensor = sensor::start(&lab, opts, &records, &alerts, metrics_addr, bound_secs)?;
    say(&format!(
        "sensor: running on the gateway with {} (idle timeouts: TCP attempt {:?}, UDP {:?}, ICMP {:?}), metrics on http://{metrics_addr}/metrics (inside the gateway namespace)",
        opts.config.display(),
        timeouts.tcp_attempt,
        timeouts.udp,
        timeouts.icmp
    ));
    let prometheus = match &opts.prometheus {
        Some(_) => {
            let p = prometheus::Prometheus::start(&lab, &dir, metrics_addr, bound_secs)?;
            say(&format!(
                "prometheus: http://{PROMETHEUS_ADDR} (inside the gateway namespace) scrapes the sensor with deploy/prometheus.yml and deploy/sensor.rules.yml"
            ));
            Some(p)
        }
        None => None,
    };
    lab.enable_ipv6()?;
    let (_services, ssh) = Services::start(&lab, &dir, bound_secs)?;
    say("services: http.server, dnsmasq, sshd and the UDP responder answer; IPv6 link-local on");
    let setup = t0.elapsed();

    let started = Instant::now();
    let traffic_start_unix = unix_now_ns() as f64 / 1e9;
    let handles = traffic::start_normal(&lab, &ssh, normal_secs);

    let mut attacks = Vec::new();
    if opts.attacks {
        attacks = traffic::run_attacks(&lab, &ssh, started, &say)?;
    }
    let generated = traffic::tally(handles, &attacks)?;
    for (k, m) in &generated {
        say(&format!(
            "traffic {k}: {} connections, {} succeeded",
            m.connections, m.succeeded
        ));
    }
    let traffic = started.elapsed();
    if let Some(st) = sensor
        .child
        .as_mut()
        .and_then(|c| c.try_wait().ok().flatten())
    {
        let stderr = sensor
            .wait_output(Duration::from_secs(1))
            .map_or_else(|e| e, |(_, _, stderr)| stderr);
        return Err(format!(
            "the sensor stopped during the traffic ({st}): {stderr}"
        ));
    }

    // Let every connection end by its own idle timeout (the shipped ones) before the sensor
    // stops, so that none is finalised by the shutdown flush.
    say(&format!(
        "waiting {settle_wait:?} (the longest idle timeout in {} and an idle scan) for the last connections to end",
        opts.config.display()
    ));
    let settle_start = Instant::now();
    thread::sleep(settle_wait);
    let settle = settle_start.elapsed();
    let metrics = crate::metrics::scrape(&lab.gateway, metrics_addr, 5)?;
    let _ = std::fs::write(opts.work_dir.join("metrics.txt"), &metrics);
    let promtool = check_metrics(&opts.work_dir, &metrics);
    let prometheus = match (&prometheus, &opts.prometheus) {
        (Some(p), Some(o)) => Some(p.collect(&lab, traffic_start_unix, &o.queries)?),
        _ => None,
    };
    let stderr = sensor::stop(sensor)?;
    Ok(Outcome {
        connections: sensor::read_jsonl(&records)?,
        alert_lines: sensor::read_jsonl(&alerts)?,
        metrics,
        promtool,
        generated,
        attacks,
        timings: Timings {
            setup,
            traffic,
            settle,
            total: t0.elapsed(),
        },
        config: opts.config.clone(),
        timeouts,
        sensor_stderr: stderr,
        metrics_addr: metrics_addr.to_string(),
        prometheus,
        traffic_start_unix,
    })
}
