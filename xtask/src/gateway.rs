//! The gateway lab and its traffic scenario, shared by `cargo xtask demo` and the end-to-end
//! test: client - gateway - server namespaces, `sensor run` on both gateway interfaces, normal
//! traffic (HTTP, DNS-like UDP, ping) throughout, and attacks from real tools (an hping3 SYN
//! flood, nmap TCP and UDP port scans, an nmap ping sweep) one after another.
//!
//! Addresses (all in 198.18.0.0/15; no namespace has a route beyond it):
//! * client 198.18.1.1; gateway 198.18.1.254 / 198.18.2.254;
//! * server: HTTP 198.18.2.1, DNS-like UDP 198.18.2.2, ping 198.18.2.3, scan target 198.18.2.4,
//!   ping-sweep targets 198.18.2.10-29 (20 addresses; .30-.39 answer nothing);
//! * flood target 198.18.2.99: blackholed on the gateway, so the SYNs are never answered (a
//!   host that no longer answers, as a flood's victim does; it yields KDD's `S0`).
//!
//! Every generator is bounded in packets and seconds; everything is removed on every exit path
//! (the guards' `Drop`).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use crate::lab::{Netns, Veth};

pub const CLIENT: &str = "198.18.1.1";
pub const HTTP_SERVER: &str = "198.18.2.1";
pub const DNS_SERVER: &str = "198.18.2.2";
pub const PING_SERVER: &str = "198.18.2.3";
pub const SCAN_TARGET: &str = "198.18.2.4";
pub const FLOOD_TARGET: &str = "198.18.2.99";
/// Ping-sweep range: .10-.29 exist on the server, .30-.39 do not.
pub const SWEEP_RANGE: &str = "198.18.2.10-39";
/// Sizes of the attacks (bounded; also what the test expects to see).
pub const FLOOD_SYNS: u32 = 2000;
pub const TCP_SCAN_PORTS: u32 = 1000;
pub const UDP_SCAN_PORTS: u32 = 500;
pub const SWEEP_HOSTS: u32 = 30;

/// The three namespaces and the gateway's two interfaces.
pub struct GatewayLab {
    pub client: Netns,
    pub gateway: Netns,
    pub server: Netns,
    pub gw_ifaces: [String; 2],
}

impl GatewayLab {
    pub fn new() -> Result<GatewayLab, String> {
        let client = Netns::new("cli")?;
        let gateway = Netns::new("gw")?;
        let server = Netns::new("srv")?;
        let cv = Veth::new("c", &client, &gateway)?;
        let sv = Veth::new("s", &server, &gateway)?;
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", &cv.a])?;
        gateway.ip(&["addr", "add", "198.18.1.254/24", "dev", &cv.b])?;
        gateway.ip(&["addr", "add", "198.18.2.254/24", "dev", &sv.b])?;
        server.ip(&["addr", "add", &format!("{HTTP_SERVER}/24"), "dev", &sv.a])?;
        let mut extra: Vec<String> = [DNS_SERVER, PING_SERVER, SCAN_TARGET]
            .iter()
            .map(|s| s.to_string())
            .collect();
        extra.extend((10..30).map(|i| format!("198.18.2.{i}")));
        for a in &extra {
            server.ip(&["addr", "add", &format!("{a}/32"), "dev", &sv.a])?;
        }
        client.ip(&["route", "add", "198.18.2.0/24", "via", "198.18.1.254"])?;
        server.ip(&["route", "add", "198.18.1.0/24", "via", "198.18.2.254"])?;
        gateway.ip(&["route", "add", "blackhole", &format!("{FLOOD_TARGET}/32")])?;
        gateway.sysctl("net.ipv4.ip_forward", "1")?;
        // Answer every closed UDP port of the scan (the default rate limit drops most replies).
        server.sysctl("net.ipv4.icmp_ratelimit", "0")?;
        // IPv4 only: keeps link-local IPv6 chatter (router and MLD messages) out of the lab.
        for ns in [&client, &gateway, &server] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        }
        Ok(GatewayLab {
            client,
            gateway,
            server,
            gw_ifaces: [cv.b, sv.b],
        })
    }
}

/// What the scenario runs.
#[derive(Clone, Debug)]
pub struct ScenarioOptions {
    /// The `sensor` binary.
    pub sensor: PathBuf,
    /// Model file given to `sensor run`.
    pub model: PathBuf,
    /// How long the normal traffic runs, seconds (attacks happen within it).
    pub seconds: u64,
    pub attacks: bool,
    /// Directory for the records and alerts files.
    pub work_dir: PathBuf,
    /// Print progress lines.
    pub verbose: bool,
}

/// What came out of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Every scored connection (`"type": "connection"` lines of `--records`).
    pub connections: Vec<serde_json::Value>,
    /// The alert file's lines (alerts and suppression summaries).
    pub alert_lines: Vec<serde_json::Value>,
    /// `/metrics` scraped after the traffic, while the sensor still ran.
    pub metrics: String,
    /// `promtool check metrics` on that scrape: Ok, or its complaint.
    pub promtool: Result<(), String>,
    /// Connections each generator made, by kind (as far as the tool reports it).
    pub generated: BTreeMap<&'static str, u64>,
    pub sensor_stderr: String,
    pub metrics_addr: String,
}

/// The traffic kind of a scored connection, from its addresses and ports.
pub fn kind(c: &serde_json::Value) -> &'static str {
    let s = |k: &str| c[k].as_str().unwrap_or("");
    let port = c["resp_port"].as_u64().unwrap_or(0);
    let resp = s("resp_addr");
    let sweep = resp
        .strip_prefix("198.18.2.")
        .and_then(|x| x.parse::<u32>().ok())
        .is_some_and(|x| (10..40).contains(&x));
    match (s("protocol"), resp) {
        ("tcp", HTTP_SERVER) if port == 80 => "http",
        ("udp", DNS_SERVER) if port == 53 => "dns",
        ("icmp", PING_SERVER) => "ping",
        ("tcp", FLOOD_TARGET) => "syn-flood",
        ("tcp", SCAN_TARGET) => "port-scan",
        ("udp", SCAN_TARGET) => "udp-scan",
        ("icmp", _) if sweep => "ping-sweep",
        _ => "other",
    }
}

/// Normal kinds (should not be flagged) and attack kinds (should be).
pub const NORMAL_KINDS: [&str; 3] = ["http", "dns", "ping"];
pub const ATTACK_KINDS: [&str; 4] = ["syn-flood", "port-scan", "udp-scan", "ping-sweep"];

fn traffic_script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/traffic")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A shell loop in the client namespace, bounded by a count and by `timeout`.
fn client_loop(lab: &GatewayLab, secs: u64, body: &str, pause: &str) -> Command {
    let mut c = lab.client.cmd("timeout");
    c.args([
        &(secs + 5).to_string(),
        "sh",
        "-c",
        &format!("end=$(($(date +%s)+{secs})); n=0; while [ $(date +%s) -lt $end ] && [ $n -lt 1000 ]; do {body}; n=$((n+1)); sleep {pause}; done; echo $n"),
    ]);
    c
}

/// Runs the scenario; see the module docs.
pub fn run(opts: &ScenarioOptions) -> Result<Outcome, String> {
    let say = |s: &str| {
        if opts.verbose {
            println!("{s}");
        }
    };
    let lab = GatewayLab::new()?;
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| e.to_string())?;
    let records = opts.work_dir.join("connections.jsonl");
    let alerts = opts.work_dir.join("alerts.jsonl");
    for f in [&records, &alerts] {
        let _ = std::fs::remove_file(f);
    }
    let metrics_addr = "127.0.0.1:9464";
    let attack_secs = if opts.attacks { 24 } else { 0 };
    let normal_secs = opts.seconds.max(attack_secs + 6);
    let sensor_secs = normal_secs + 12;
    say(&format!(
        "lab: client {CLIENT} -> gateway ({}, {}) -> server {HTTP_SERVER} (HTTP), {DNS_SERVER} (DNS-like UDP), {PING_SERVER} (ping), {SCAN_TARGET} (scan target), 198.18.2.10-29 (sweep targets); {FLOOD_TARGET} blackholed",
        lab.gw_ifaces[0], lab.gw_ifaces[1]
    ));
    let mut sensor = lab.gateway.spawn(
        &opts.sensor.to_string_lossy(),
        &[
            "run",
            "--iface",
            &lab.gw_ifaces[0],
            "--iface",
            &lab.gw_ifaces[1],
            "--model",
            &opts.model.to_string_lossy(),
            "--records",
            &records.to_string_lossy(),
            "--alerts",
            &alerts.to_string_lossy(),
            "--alerts-max-per-second",
            "100000",
            "--alerts-burst",
            "100000",
            "--metrics-addr",
            metrics_addr,
            "--tcp-attempt-timeout-secs",
            "2",
            "--udp-timeout-secs",
            "2",
            "--icmp-timeout-secs",
            "2",
            "--duration-secs",
            &sensor_secs.to_string(),
        ],
    )?;
    sensor
        .wait_for_stderr("watching", Duration::from_secs(30))
        .map_err(|e| format!("the sensor did not start: {e}"))?;
    say(&format!(
        "sensor: running on the gateway, metrics on http://{metrics_addr}/metrics (inside the gateway namespace)"
    ));

    let _http = lab.server.spawn(
        "timeout",
        &[
            &(sensor_secs + 5).to_string(),
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            HTTP_SERVER,
        ],
    )?;
    let _dns = lab.server.spawn(
        "python3",
        &[
            &traffic_script("udp_server.py"),
            DNS_SERVER,
            "53",
            "120",
            &(sensor_secs + 5).to_string(),
        ],
    )?;
    thread::sleep(Duration::from_millis(700));

    let started = Instant::now();
    let url = format!("http://{HTTP_SERVER}/");
    let normal: Vec<(&'static str, Command)> = vec![
        (
            "http",
            client_loop(
                &lab,
                normal_secs,
                &format!("curl -s -o /dev/null --max-time 2 {url}"),
                "0.25",
            ),
        ),
        (
            "dns",
            client_loop(
                &lab,
                normal_secs,
                &format!(
                    "python3 {} {DNS_SERVER} 53 40 1 0 $((20000+n)) >/dev/null",
                    traffic_script("udp_client.py")
                ),
                "0.25",
            ),
        ),
        (
            "ping",
            client_loop(
                &lab,
                normal_secs,
                &format!("ping -q -c 2 -i 0.2 -W 1 {PING_SERVER} >/dev/null"),
                "0.6",
            ),
        ),
    ];
    let handles: Vec<_> = normal
        .into_iter()
        .map(|(name, mut cmd)| {
            thread::spawn(move || {
                let out = cmd.output();
                let n = out
                    .ok()
                    .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                    .unwrap_or(0u64);
                (name, n)
            })
        })
        .collect();

    let mut generated = BTreeMap::new();
    if opts.attacks {
        let wait_until = |t: u64| {
            let at = Duration::from_secs(t);
            if let Some(d) = at.checked_sub(started.elapsed()) {
                thread::sleep(d);
            }
        };
        let attack = |name: &str, program: &str, args: &[&str]| -> Result<String, String> {
            say(&format!("attack: {name}: {program} {}", args.join(" ")));
            let mut c = lab.client.cmd("timeout");
            c.arg("20").arg(program).args(args);
            let out = c.output().map_err(|e| format!("{program}: {e}"))?;
            Ok(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        };
        wait_until(4);
        // 2000 SYNs at 1 kpps from the client's own address, source port incrementing: 2000
        // distinct connection attempts, none answered.
        attack(
            "syn-flood",
            "hping3",
            &[
                "-q",
                "-S",
                "-p",
                "443",
                "-i",
                "u500",
                "-c",
                &FLOOD_SYNS.to_string(),
                FLOOD_TARGET,
            ],
        )?;
        generated.insert("syn-flood", u64::from(FLOOD_SYNS));
        wait_until(10);
        attack(
            "port-scan",
            "nmap",
            &[
                "-sS",
                "-n",
                "-Pn",
                "--max-retries",
                "0",
                "-T4",
                "-p",
                &format!("1-{TCP_SCAN_PORTS}"),
                SCAN_TARGET,
            ],
        )?;
        generated.insert("port-scan", u64::from(TCP_SCAN_PORTS));
        wait_until(15);
        attack(
            "udp-scan",
            "nmap",
            &[
                "-sU",
                "-n",
                "-Pn",
                "--max-retries",
                "0",
                "--min-rate",
                "1000",
                "-p",
                &format!("1-{UDP_SCAN_PORTS}"),
                SCAN_TARGET,
            ],
        )?;
        generated.insert("udp-scan", u64::from(UDP_SCAN_PORTS));
        wait_until(20);
        attack(
            "ping-sweep",
            "nmap",
            &["-sn", "-PE", "-n", "--max-retries", "0", SWEEP_RANGE],
        )?;
        generated.insert("ping-sweep", u64::from(SWEEP_HOSTS));
    }
    for h in handles {
        let (name, n) = h.join().map_err(|_| "generator thread panicked")?;
        say(&format!("traffic {name}: {n} rounds"));
        generated.insert(name, n);
    }
    // Let idle connections time out (2 s) and the last events arrive, then scrape.
    thread::sleep(Duration::from_secs(4));
    let metrics = lab.gateway.run(
        "curl",
        &[
            "-s",
            "--max-time",
            "5",
            &format!("http://{metrics_addr}/metrics"),
        ],
    )?;
    let promtool = check_metrics(&opts.work_dir, &metrics);
    let (status, _stdout, stderr) = sensor
        .wait_output(Duration::from_secs(sensor_secs + 30))
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
        sensor_stderr: stderr,
        metrics_addr: metrics_addr.to_string(),
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

/// Per-kind figures of a run.
#[derive(Clone, Debug, Default)]
pub struct KindSummary {
    pub connections: u64,
    pub flagged: u64,
    /// Detection latency percentiles (ms), over connections the kernel signalled (FIN/RST)
    /// and over those the idle scan finalised.
    pub latencies_ms: Vec<f64>,
}

pub fn summarize(connections: &[serde_json::Value]) -> BTreeMap<&'static str, KindSummary> {
    let mut out: BTreeMap<&'static str, KindSummary> = BTreeMap::new();
    for c in connections {
        if c["end_reason"] == "shutdown" {
            continue;
        }
        let e = out.entry(kind(c)).or_default();
        e.connections += 1;
        if c["anomalous"].as_bool() == Some(true) {
            e.flagged += 1;
        }
        if let Some(l) = c["latency_ms"].as_f64() {
            e.latencies_ms.push(l);
        }
    }
    out
}

/// The `q` quantile (0..1) of `v` (nearest rank); 0 for an empty slice.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}
