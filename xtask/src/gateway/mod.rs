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
//! another from the attacker: an hping3 SYN flood, nmap TCP and UDP port scans, an nmap ping
//! sweep. After the traffic the scenario waits out the shipped idle timeouts, so every
//! connection ends the way it would in production rather than in the shutdown flush.
//!
//! Addresses (all in 198.18.0.0/15; no namespace has a route beyond it; IPv6 is link-local only):
//! * client 198.18.1.1, second client 198.18.3.1;
//! * attacker: one address per attack, so that a connection or an incident names its attack by
//!   address alone: 198.18.4.1 flood, .2 TCP scan, .3 UDP scan, .4 ping sweep;
//! * gateway 198.18.N.254 on each segment;
//! * server: HTTP 198.18.2.1, DNS 198.18.2.2, ping 198.18.2.3, TCP scan target 198.18.2.4,
//!   SSH 198.18.2.5, UDP scan target 198.18.2.6, UDP request/response 198.18.2.7, ping-sweep
//!   targets 198.18.2.10-29 (20 addresses; .30-.39 answer nothing);
//! * flood target 198.18.2.99: blackholed on the gateway, so the SYNs are never answered (a
//!   host that no longer answers, as a flood's victim does; it yields KDD's `S0`).
//!
//! Every generator is bounded in packets and seconds; every namespace, process and temporary
//! file is removed on every exit path (the guards' `Drop`).
//!
//! `services` runs the servers, `report` turns a run into per-kind figures (kinds, incidents,
//! the table).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::lab::{Netns, TempDir, Veth};

mod prometheus;
mod report;
mod services;

pub use report::{
    ATTACK_KINDS, EXACT_KINDS, Incident, KindSummary, NORMAL_KINDS, PROVOKED_KIND, all_kinds,
    incidents, kind, parse_rfc3339_utc, quantile, summarize, table,
};
use services::Services;

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
/// Router solicitations a host sends when no router answers. The kernel's default (-1) keeps
/// soliciting forever with a growing interval (RFC 7559), a generator without a bound; 3 is
/// RFC 4861's MAX_RTR_SOLICITATIONS (and Linux's old default).
const ROUTER_SOLICITATIONS: &str = "3";

/// The shipped configuration, `deploy/sensor.toml`.
pub fn shipped_config() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sensor.toml");
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The idle timeouts of a configuration file and its capture tick, which decide how long the
/// scenario waits after its traffic. Read from the file rather than restated here, so that the
/// lab follows the shipped settings when they change.
#[derive(Clone, Copy, Debug)]
pub struct IdleTimeouts {
    pub tcp: Duration,
    pub tcp_attempt: Duration,
    pub udp: Duration,
    pub icmp: Duration,
    /// How late after its timeout an idle connection is finalised: the file's `tick_ms`
    /// (10 ms if unset, the sensor's default).
    pub tick: Duration,
}

impl IdleTimeouts {
    pub fn from_file(path: &Path) -> Result<IdleTimeouts, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
        let secs = |key: &str| -> Result<Duration, String> {
            let v = table
                .get("timeouts")
                .and_then(|t| t.get(key))
                .and_then(number)
                .ok_or_else(|| format!("{}: no [timeouts] {key}", path.display()))?;
            Duration::try_from_secs_f64(v)
                .map_err(|e| format!("{}: [timeouts] {key} = {v}: {e}", path.display()))
        };
        let tick = match table.get("tick_ms").and_then(number) {
            Some(ms) => Duration::try_from_secs_f64(ms / 1e3)
                .map_err(|e| format!("{}: tick_ms = {ms}: {e}", path.display()))?,
            None => Duration::from_millis(10),
        };
        Ok(IdleTimeouts {
            tcp: secs("tcp_secs")?,
            tcp_attempt: secs("tcp_attempt_secs")?,
            udp: secs("udp_secs")?,
            icmp: secs("icmp_secs")?,
            tick,
        })
    }

    /// How long after its last packet every lab connection has been finalised by its own end:
    /// the longest idle timeout it can end by, the tick that notices, and a second for the
    /// capture loop to hand the records over. Established TCP connections in the lab all close
    /// with FIN or RST, so the established timeout (300 s shipped) is not waited for; one that
    /// did not close would show in the table's `shutdown` column.
    pub fn settle(&self) -> Duration {
        self.tcp_attempt.max(self.udp).max(self.icmp) + self.tick + Duration::from_secs(1)
    }
}

/// The namespaces and the interfaces between them.
pub struct GatewayLab {
    pub client: Netns,
    pub client2: Netns,
    pub attacker: Netns,
    pub gateway: Netns,
    pub server: Netns,
    /// The gateway's interfaces: towards client, client2, attacker, server.
    pub gw_ifaces: Vec<String>,
    client_if: String,
    client2_if: String,
    attacker_if: String,
    server_if: String,
}

impl GatewayLab {
    pub fn new() -> Result<GatewayLab, String> {
        let client = Netns::new("cli")?;
        let client2 = Netns::new("cl2")?;
        let attacker = Netns::new("atk")?;
        let gateway = Netns::new("gw")?;
        let server = Netns::new("srv")?;
        // IPv6 stays off until the sensor watches (`enable_ipv6`), so that the kernel's
        // link-local chatter happens in front of it, as it does when a host boots.
        for ns in [&client, &client2, &attacker, &gateway, &server] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        let cv = Veth::new("c", &client, &gateway)?;
        let dv = Veth::new("d", &client2, &gateway)?;
        let av = Veth::new("a", &attacker, &gateway)?;
        let sv = Veth::new("s", &server, &gateway)?;
        let addr = |ns: &Netns, a: &str, dev: &str| ns.ip(&["addr", "add", a, "dev", dev]);
        addr(&client, &format!("{CLIENT}/24"), &cv.a)?;
        addr(&client2, &format!("{CLIENT2}/24"), &dv.a)?;
        addr(&attacker, &format!("{FLOOD_SOURCE}/24"), &av.a)?;
        for a in [PORT_SCAN_SOURCE, UDP_SCAN_SOURCE, SWEEP_SOURCE] {
            addr(&attacker, &format!("{a}/32"), &av.a)?;
        }
        addr(&gateway, "198.18.1.254/24", &cv.b)?;
        addr(&gateway, "198.18.3.254/24", &dv.b)?;
        addr(&gateway, "198.18.4.254/24", &av.b)?;
        addr(&gateway, "198.18.2.254/24", &sv.b)?;
        addr(&server, &format!("{HTTP_SERVER}/24"), &sv.a)?;
        let mut extra: Vec<String> = [
            DNS_SERVER,
            PING_SERVER,
            PORT_SCAN_TARGET,
            SSH_SERVER,
            UDP_SCAN_TARGET,
            UDP_RR_SERVER,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        extra.extend((SWEEP_FIRST..=29).map(|i| format!("198.18.2.{i}")));
        for a in &extra {
            addr(&server, &format!("{a}/32"), &sv.a)?;
        }
        // Each host reaches the rest of the lab through the gateway, and nothing beyond it.
        for (ns, gw) in [
            (&client, "198.18.1.254"),
            (&client2, "198.18.3.254"),
            (&attacker, "198.18.4.254"),
            (&server, "198.18.2.254"),
        ] {
            ns.ip(&["route", "add", "198.18.0.0/15", "via", gw])?;
        }
        gateway.ip(&["route", "add", "blackhole", &format!("{FLOOD_TARGET}/32")])?;
        gateway.sysctl("net.ipv4.ip_forward", "1")?;
        // Answer every closed UDP port of the scan (the default rate limit drops most replies).
        server.sysctl("net.ipv4.icmp_ratelimit", "0")?;
        Ok(GatewayLab {
            client,
            client2,
            attacker,
            gateway,
            server,
            gw_ifaces: vec![cv.b, dv.b, av.b, sv.b],
            client_if: cv.a,
            client2_if: dv.a,
            attacker_if: av.a,
            server_if: sv.a,
        })
    }

    /// Switches IPv6 on for every lab interface: each gets a link-local address (after
    /// duplicate address detection), joins its multicast groups (MLD reports) and solicits a
    /// router (none answers: the gateway does not route IPv6, and no host gets an address
    /// beyond the link).
    pub fn enable_ipv6(&self) -> Result<(), String> {
        let hosts: [(&Netns, Vec<&str>); 5] = [
            (&self.client, vec![&self.client_if]),
            (&self.client2, vec![&self.client2_if]),
            (&self.attacker, vec![&self.attacker_if]),
            (&self.server, vec![&self.server_if]),
            (
                &self.gateway,
                self.gw_ifaces.iter().map(String::as_str).collect(),
            ),
        ];
        for (ns, ifaces) in hosts {
            ns.sysctl("net.ipv6.conf.all.forwarding", "0")?;
            for i in ifaces {
                ns.sysctl(
                    &format!("net.ipv6.conf.{i}.router_solicitations"),
                    ROUTER_SOLICITATIONS,
                )?;
                ns.sysctl(&format!("net.ipv6.conf.{i}.accept_dad"), "1")?;
                ns.sysctl(&format!("net.ipv6.conf.{i}.disable_ipv6"), "0")?;
            }
        }
        Ok(())
    }
}

/// What the scenario runs.
#[derive(Clone, Debug)]
pub struct ScenarioOptions {
    /// The `sensor` binary.
    pub sensor: PathBuf,
    /// The configuration file given to `sensor run` (the shipped `deploy/sensor.toml`).
    pub config: PathBuf,
    /// Model file given to `sensor run`.
    pub model: PathBuf,
    /// How long the normal traffic runs, seconds (attacks happen within it).
    pub seconds: u64,
    pub attacks: bool,
    /// Directory for the records and alerts files.
    pub work_dir: PathBuf,
    /// Print progress lines.
    pub verbose: bool,
    /// Run a Prometheus server on the gateway with the shipped configuration and alert rules,
    /// scraping the sensor, and ask it at the end what fired ([`Outcome::prometheus`]).
    pub prometheus: Option<PrometheusOptions>,
}

/// What a generator reports: rounds run (one connection each) and how many succeeded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Made {
    pub connections: u64,
    pub succeeded: u64,
}

/// One attack as it ran.
#[derive(Clone, Debug)]
pub struct AttackRun {
    pub kind: &'static str,
    /// When the tool was started (wall clock, Unix ns).
    pub start_unix_ns: u64,
    pub made: Made,
}

/// How long the phases took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Lab, services and sensor start.
    pub setup: Duration,
    /// Normal traffic (the attacks run within it).
    pub traffic: Duration,
    /// After the traffic: the longest idle timeout and an idle scan.
    pub settle: Duration,
    /// The whole scenario, up to the sensor's exit.
    pub total: Duration,
}

/// What came out of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Every scored connection (`"type": "connection"` lines of `--records`).
    pub connections: Vec<serde_json::Value>,
    /// The alert file's lines (alerts, suppression summaries, incidents).
    pub alert_lines: Vec<serde_json::Value>,
    /// `/metrics` scraped after the traffic had ended and timed out, while the sensor still ran.
    pub metrics: String,
    /// `promtool check metrics` on that scrape: Ok, or its complaint.
    pub promtool: Result<(), String>,
    /// Connections each generator made, by kind.
    pub generated: BTreeMap<&'static str, Made>,
    pub attacks: Vec<AttackRun>,
    pub timings: Timings,
    /// The configuration file the sensor ran with, and its idle timeouts.
    pub config: PathBuf,
    pub timeouts: IdleTimeouts,
    pub sensor_stderr: String,
    pub metrics_addr: String,
    /// What the Prometheus server reported, if the options asked for one.
    pub prometheus: Option<PrometheusOutcome>,
    /// When the traffic started (Unix seconds).
    pub traffic_start_unix: f64,
}

fn traffic_script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/traffic")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A shell loop on a host, bounded by a count and by `timeout`: runs `body` (one connection per
/// round, `$n` is the round number) every `pause` seconds for `secs` seconds, and prints the
/// rounds run and how many succeeded (`body` exited 0).
fn host_loop(ns: &Netns, secs: u64, body: &str, pause: &str) -> Command {
    let mut c = ns.cmd("timeout");
    c.args([
        &(secs + 15).to_string(),
        "sh",
        "-c",
        &format!(
            "end=$(($(date +%s)+{secs})); n=0; ok=0; \
             while [ $(date +%s) -lt $end ] && [ $n -lt 1000 ]; do \
             if {body}; then ok=$((ok+1)); fi; n=$((n+1)); sleep {pause}; done; echo $n $ok"
        ),
    ]);
    c
}

/// The attacks, one after another from the attacker host, each at its second of the traffic
/// phase (`started`) and from its own address; each tool bounded by its size and `timeout`.
fn run_attacks(
    lab: &GatewayLab,
    started: Instant,
    say: &dyn Fn(&str),
) -> Result<Vec<AttackRun>, String> {
    let iface = &lab.attacker_if;
    // (kind, second of the traffic phase, tool, arguments, connections it makes: for nmap one
    // per port or host; hping3 says how many SYNs it sent).
    let plan: [(&'static str, u64, &str, String, Option<u32>); 4] = [
        // 2000 SYNs at 1 kpps, source port incrementing: 2000 distinct connection attempts,
        // none answered.
        (
            "syn-flood",
            4,
            "hping3",
            format!("-q -S -a {FLOOD_SOURCE} -p 443 -i u500 -c {FLOOD_SYNS} {FLOOD_TARGET}"),
            None,
        ),
        (
            "port-scan",
            10,
            "nmap",
            format!(
                "-sS -n -Pn -e {iface} -S {PORT_SCAN_SOURCE} --max-retries 0 -T4 -p 1-{TCP_SCAN_PORTS} {PORT_SCAN_TARGET}"
            ),
            Some(TCP_SCAN_PORTS),
        ),
        (
            "udp-scan",
            15,
            "nmap",
            format!(
                "-sU -n -Pn -e {iface} -S {UDP_SCAN_SOURCE} --max-retries 0 --min-rate 1000 -p 1-{UDP_SCAN_PORTS} {UDP_SCAN_TARGET}"
            ),
            Some(UDP_SCAN_PORTS),
        ),
        (
            "ping-sweep",
            20,
            "nmap",
            format!("-sn -PE -n -e {iface} -S {SWEEP_SOURCE} --max-retries 0 {SWEEP_RANGE}"),
            Some(SWEEP_HOSTS),
        ),
    ];
    let mut runs = Vec::new();
    for (kind, at, program, args, size) in plan {
        if let Some(d) = Duration::from_secs(at).checked_sub(started.elapsed()) {
            thread::sleep(d);
        }
        say(&format!("attack: {kind}: {program} {args}"));
        let start_unix_ns = unix_now_ns();
        let out = lab
            .attacker
            .cmd("timeout")
            .arg("20")
            .arg(program)
            .args(args.split_whitespace())
            .output()
            .map_err(|e| format!("{kind}: {program}: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let connections = match size {
            // nmap ran to its end (not cut short by `timeout`).
            Some(n) => {
                if !out.status.success() || !text.contains("Nmap done") {
                    return Err(format!(
                        "{kind}: nmap did not finish ({}): {text}",
                        out.status
                    ));
                }
                u64::from(n)
            }
            // hping3 exits 1 when nothing answered (the flood's point); its statistics say
            // what it sent: "2000 packets transmitted, 0 packets received, ...".
            None => text
                .lines()
                .find_map(|l| l.split_once(" packets transmitted")?.0.trim().parse().ok())
                .ok_or_else(|| format!("{kind}: hping3 printed no statistics: {text}"))?,
        };
        runs.push(AttackRun {
            kind,
            start_unix_ns,
            made: Made {
                connections,
                succeeded: connections,
            },
        });
    }
    Ok(runs)
}

/// `GET /metrics` from the gateway namespace.
fn scrape(lab: &GatewayLab, metrics_addr: &str) -> Result<String, String> {
    lab.gateway.run(
        "curl",
        &[
            "-s",
            "--max-time",
            "5",
            &format!("http://{metrics_addr}/metrics"),
        ],
    )
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
    let mut args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        opts.config.to_string_lossy().into_owned(),
    ];
    for i in &lab.gw_ifaces {
        args.extend(["--iface".into(), i.clone()]);
    }
    args.extend([
        "--model".into(),
        opts.model.to_string_lossy().into_owned(),
        "--records".into(),
        records.to_string_lossy().into_owned(),
        "--alerts".into(),
        alerts.to_string_lossy().into_owned(),
        "--metrics-addr".into(),
        metrics_addr.into(),
        "--duration-secs".into(),
        bound_secs.to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sensor = lab.gateway.spawn(&opts.sensor.to_string_lossy(), &args)?;
    sensor
        .wait_for_stderr("watching", Duration::from_secs(30))
        .map_err(|e| format!("the sensor did not start: {e}"))?;
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
    let udp_client = traffic_script("udp_client.py");
    let names: Vec<&str> = DNS_NAMES.iter().map(|(n, _)| *n).collect();
    // One connection per round. DNS and UDP rounds use their own source port each (the round
    // number), so that no two rounds share a 5-tuple within the idle timeout and the counts are
    // exact.
    let dig = |src: &str, base: u32| {
        format!(
            "set -- {names}; shift $((n % {count})); dig @{DNS_SERVER} -b {src}#$(({base}+n)) +tries=1 +time=2 +short \"$1\" A | grep -q .",
            names = names.join(" "),
            count = names.len(),
        )
    };
    let curl =
        |path: &str| format!("curl -sf -o /dev/null --max-time 3 http://{HTTP_SERVER}/{path}");
    let udp_rr = format!(
        "[ \"$(python3 {udp_client} {UDP_RR_SERVER} {UDP_RR_PORT} 48 1 0 $((30000+n)))\" = 1 ]"
    );
    let ping = |count: u32, interval: &str| {
        format!("ping -q -c {count} -i {interval} -W 1 {PING_SERVER} >/dev/null")
    };
    // (kind, host, one round, pause between rounds in seconds)
    let normal: [(&'static str, &Netns, String, &str); 9] = [
        ("http", &lab.client, curl("index.html"), "0.5"),
        ("http", &lab.client2, curl("file.bin"), "0.8"),
        ("dns", &lab.client, dig(CLIENT, 20000), "0.5"),
        ("dns", &lab.client2, dig(CLIENT2, 20000), "1"),
        ("ssh", &lab.client, ssh.command("uname -sr >/dev/null"), "3"),
        ("ssh", &lab.client2, ssh.command("ls / >/dev/null"), "5"),
        ("udp-rr", &lab.client, udp_rr, "1"),
        ("ping", &lab.client, ping(2, "0.2"), "1"),
        ("ping", &lab.client2, ping(3, "0.5"), "2"),
    ];
    let handles: Vec<_> = normal
        .into_iter()
        .map(|(name, host, body, pause)| {
            let mut cmd = host_loop(host, normal_secs, &body, pause);
            thread::spawn(move || {
                let out = cmd.output();
                let text = out
                    .as_ref()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let mut it = text
                    .split_whitespace()
                    .map(|w| w.parse::<u64>().unwrap_or(0));
                let made = Made {
                    connections: it.next().unwrap_or(0),
                    succeeded: it.next().unwrap_or(0),
                };
                (name, made)
            })
        })
        .collect();

    let mut attacks = Vec::new();
    if opts.attacks {
        attacks = run_attacks(&lab, started, &say)?;
    }
    let mut generated: BTreeMap<&'static str, Made> = BTreeMap::new();
    for h in handles {
        let (name, made) = h.join().map_err(|_| "generator thread panicked")?;
        let e = generated.entry(name).or_default();
        e.connections += made.connections;
        e.succeeded += made.succeeded;
    }
    for a in &attacks {
        generated.insert(a.kind, a.made);
    }
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
    let metrics = scrape(&lab, metrics_addr)?;
    let _ = std::fs::write(opts.work_dir.join("metrics.txt"), &metrics);
    let promtool = check_metrics(&opts.work_dir, &metrics);
    let prometheus = match (&prometheus, &opts.prometheus) {
        (Some(p), Some(o)) => Some(p.collect(&lab, traffic_start_unix, &o.queries)?),
        _ => None,
    };
    sensor.terminate();
    let (status, _stdout, stderr) = sensor
        .wait_output(Duration::from_secs(30))
        .map_err(|e| format!("sensor: {e}"))?;
    if !status.success() {
        return Err(format!("the sensor failed ({status}): {stderr}"));
    }
    let read = |p: &Path| -> Result<Vec<serde_json::Value>, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}: {l}", p.display())))
            .collect()
    };
    Ok(Outcome {
        connections: read(&records)?,
        alert_lines: read(&alerts)?,
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

/// `promtool check metrics` on a scrape.
pub fn check_metrics(dir: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .current_dir(dir)
        .spawn()
        .map_err(|e| format!("promtool: {e} (installed by `cargo xtask bootstrap`)"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
