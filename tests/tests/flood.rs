//! The sensor under attack (issue 13), in the gateway lab ([`xtask::gateway::GatewayLab`]:
//! client, attacker, gateway and server namespaces): `sensor run` with the shipped settings
//! (`deploy/sensor.toml`) watches every gateway interface while
//!
//! * a SYN flood from four spoofed sources with changing source ports (hping3, bounded in
//!   packets and seconds) fills a deliberately small flow table many times over, and a client
//!   fetches a page from a real HTTP server all along: the normal connections must be recorded
//!   and scored normal, the flood reported (incident, counters), the agent's memory bounded, and
//!   every counter must add up; and the same with bare ACKs, each a one-sided "connection" to
//!   an address that does not answer;
//! * the ring buffer is made tiny, so that connection events are dropped under bursts of
//!   normal connections: the table scan must recover every finished connection;
//! * floods that keep one conversation (`ping -f`, hping3's UDP datagrams from one source
//!   port), which the model sees as one ordinary exchange each, and hping3's default UDP flood
//!   (a new source port per datagram: one ordinary conversation each): the volume rule must
//!   report each as an incident by its rate while a client's ordinary pings stay normal;
//! * a SYN flood from one address at 1,000 a second, reset by its own kernel, at a web server
//!   a client fetches from: the source's own rate must report it while the fetches stay normal;
//! * a UDP flood from one address (a new source port per datagram) at about 2,500 a second,
//!   under the service's bar, at the DNS server a client looks names up at: the source's own
//!   rate must report it while the lookups stay normal;
//! * big datagrams, and SYN-ACKs, reflected at ever new ports of a host from four spoofed
//!   servers: one incident listing the four, each.
//!
//! Test-size choices (the only settings besides the lab's interfaces, files and metrics
//! address): `--table-size 4096` for the flood (the shipped 262,144 would need a flood 64 times
//! as long to fill), and `--ring-bytes 4096` (one page, 32 events) for the ring test. All
//! addresses, spoofed ones too, are in 198.18.0.0/15; every generator is bounded by a count and
//! `timeout`; the lab's guards remove every namespace, process and file on every exit path.
use std::{
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use integration_tests::{require_root, shipped::Lab, wait_until};
use xtask::{
    gateway::{
        self, CLIENT, DNS_SERVER, FLOOD_SOURCE, FLOOD_TARGET, GatewayLab, HTTP_SERVER,
        IdleTimeouts, PING_FLOOD_SOURCE, PORT_SCAN_SOURCE, PORT_SCAN_TARGET, SWEEP_SOURCE,
        UDP_RR_SERVER, UDP_SCAN_SOURCE, UDP_SCAN_TARGET,
    },
    metrics,
};

/// The two tests share the machine's two cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The flood's spoofed sources (an unused /24 of the lab range).
const SPOOFED: [&str; 4] = ["198.18.5.1", "198.18.5.2", "198.18.5.3", "198.18.5.4"];
/// SYNs per source, and the gap between two (5,000 per second each, 20,000 in all).
const SYNS_PER_SOURCE: u32 = 15_000;
const SYN_GAP: &str = "u200";
/// The test's flow table: 4,096 connections, filled 14 times over by the flood.
const TABLE_SIZE: &str = "4096";

/// Goals of issue 13.
const NORMAL_MIN_RECORDED: f64 = 0.98;
/// Resident memory of the agent at its peak: the model, the feature windows (capped) and the
/// lifecycle's connections (bounded by the table and the ring), with room.
const RSS_MAX_MB: u64 = 400;

/// The client's fetch loop: one page per round every `pause` seconds, for `secs` seconds and at
/// most `max` rounds; prints the rounds run and how many succeeded.
fn fetch_loop(lab: &GatewayLab, secs: u64, pause: &str, max: u32) -> std::process::Command {
    let fetch = format!("curl -sf -o /dev/null --max-time 3 http://{HTTP_SERVER}/index.html");
    gateway::host_loop(&lab.client, secs, max, &fetch, pause)
}

fn made_and_ok(out: &std::process::Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|w| w.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// `/proc/<pid>/stat` CPU time (user + system) in seconds, and `/proc/<pid>/status` VmRSS in
/// MB.
fn cpu_and_rss(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((ticks / hz, kb / 1024))
}

/// A network interface counter (`/sys/class/net/<iface>/statistics/<name>`) in a namespace.
fn iface_counter(lab: &GatewayLab, iface: &str, name: &str) -> u64 {
    lab.gateway
        .run(
            "cat",
            &[&format!("/sys/class/net/{iface}/statistics/{name}")],
        )
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn quantile(v: &[f64], q: f64) -> f64 {
    gateway::quantile(v, q)
}

#[test]
fn a_syn_flood_from_spoofed_sources_neither_blinds_nor_overwhelms_the_sensor() {
    spoofed_flood("-S", "SYNs", FLOOD_TARGET, "443", Some("flood"));
}

/// The same flood with bare ACKs (`hping3 -A`): each packet acknowledges a SYN-ACK the sensor
/// never saw, a one-sided "connection" such as a route that carries one direction shows, and
/// the target's resets go nowhere (the spoofed sources have no route). Such flows are evicted
/// as attempts are (`sensor_common::slots::eviction_rank`); were they not, the flood would take
/// the table for good and every later connection would go unrecorded.
#[test]
fn an_ack_flood_from_spoofed_sources_neither_blinds_nor_overwhelms_the_sensor() {
    spoofed_flood("-A", "ACKs", FLOOD_TARGET, "443", Some("flood"));
}

/// The same SYN flood at the web server the client fetches from, which answers every SYN (its
/// SYN-ACKs, SYN cookies once its queue is full, pass the gateway towards the spoofed sources):
/// each flow a handshake its originator never completes, evicted as an attempt is.
#[test]
fn a_syn_flood_the_server_answers_neither_blinds_nor_overwhelms_the_sensor() {
    spoofed_flood("-S", "SYNs", HTTP_SERVER, "80", Some("flood"));
}

/// The same from changing source ports with UDP datagrams, at a UDP service that answers each
/// (`udp_server.py`, its answers passing the gateway towards the spoofed sources): each flow an
/// answered exchange, which proves nothing about its source and is evicted by its age. No
/// incident is expected: four sources each answered 15,000 times look like clients of a busy
/// service to the model and to the rate rules (a known gap, `docs/design.md`); the flood shows
/// in the evictions, which the test checks add up.
#[test]
fn a_udp_flood_the_server_answers_neither_blinds_nor_overwhelms_the_sensor() {
    spoofed_flood("--udp", "datagrams", UDP_RR_SERVER, "123", None);
}

/// Issue 13's flood: `hping3 <flag>` from four spoofed sources with changing source ports at
/// `port` of `target`, filling a small table 14 times over while a client fetches a page from a
/// real server (and a UDP service answers at its address); `what` names the packets in the
/// output, `kind` the incident expected (if any).
fn spoofed_flood(flag: &str, what: &str, target: &str, port: &str, kind: Option<&str>) {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let timeouts = IdleTimeouts::from_file(&gateway::shipped_config()).expect("shipped config");
    let lab = Lab::start(&["--table-size", TABLE_SIZE], 180);
    let _udp_service = gateway::start_udp_rr(&lab.lab, &lab.dir, "180").expect("udp_server.py");
    let gw_attacker_if = lab.lab.gw_ifaces[2].clone();
    let drops_before = iface_counter(&lab.lab, &gw_attacker_if, "rx_dropped");

    // The client fetches the page every 20 ms for 8 s; the flood starts 1 s in and lasts 3 s.
    let mut fetches = fetch_loop(&lab.lab, 8, "0.02", 400);
    let fetcher = thread::spawn(move || fetches.output());
    thread::sleep(Duration::from_secs(1));
    let (cpu0, _) = cpu_and_rss(lab.pid()).expect("sensor /proc");
    let flood_start = Instant::now();
    let floods: Vec<_> = SPOOFED
        .iter()
        .map(|src| {
            let mut c = lab.lab.attacker.cmd("timeout");
            c.args([
                "20", "hping3", "-q", flag, "-a", src, "-p", port, "-i", SYN_GAP,
            ])
            .args(["-c", &SYNS_PER_SOURCE.to_string(), target]);
            thread::spawn(move || c.output())
        })
        .collect();
    // The agent's resident memory while the flood lasts (and its CPU time over it).
    let mut rss_max = 0;
    while floods.iter().any(|f| !f.is_finished()) {
        if let Some((_, rss)) = cpu_and_rss(lab.pid()) {
            rss_max = rss_max.max(rss);
        }
        thread::sleep(Duration::from_millis(100));
    }
    let flood_secs = flood_start.elapsed().as_secs_f64();
    let (cpu1, _) = cpu_and_rss(lab.pid()).expect("sensor /proc");
    let mut sent = 0u64;
    for f in floods {
        let out = f.join().expect("hping3 thread").expect("hping3");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        sent += text
            .lines()
            .find_map(|l| {
                l.split_once(" packets transmitted")?
                    .0
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("hping3 printed no statistics: {text}"));
    }
    let (made, ok) = made_and_ok(&fetcher.join().expect("fetch thread").expect("fetch loop"));
    let dropped = iface_counter(&lab.lab, &gw_attacker_if, "rx_dropped") - drops_before;

    // The flood's last attempts end by the shipped attempt timeout.
    thread::sleep(timeouts.settle());
    let metrics = lab.scrape();
    let out = lab.stop();

    let normal = out.normal();
    let normal_ok = normal
        .iter()
        .filter(|r| r["anomalous"] == false && r["flag"] == "SF")
        .count() as u64;
    let spoofed_at = |r: &serde_json::Value, end: &str| SPOOFED.iter().any(|s| r[end] == *s);
    // The flood's records: a spoofed source at either end (an answer that outlived its flood
    // packet's flow in the table is a record of its own, the target its originator).
    let flood: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| spoofed_at(r, "orig_addr") || spoofed_at(r, "resp_addr"))
        .collect();
    // The spoofed sources' packets, and the target's answers to them (none from an address
    // nobody answers).
    let packets_of = |from_spoofed: bool| -> u64 {
        let side = |r: &serde_json::Value| {
            if spoofed_at(r, "orig_addr") == from_spoofed {
                "orig_packets"
            } else {
                "resp_packets"
            }
        };
        flood.iter().map(|r| r[side(r)].as_u64().unwrap_or(0)).sum()
    };
    let (flood_packets, answers) = (packets_of(true), packets_of(false));
    let evicted = flood
        .iter()
        .filter(|r| r["end_reason"] == "evicted")
        .count();
    let latency = |rs: &[&serde_json::Value]| -> Vec<f64> {
        rs.iter().filter_map(|r| r["latency_ms"].as_f64()).collect()
    };
    let (normal_lat, flood_lat) = (latency(&normal), latency(&flood));
    let cpu_pct = 100.0 * (cpu1 - cpu0) / flood_secs;
    println!(
        "flood: {sent} {what} from {} spoofed sources in {flood_secs:.1} s ({dropped} dropped by the gateway's veth before XDP); table {TABLE_SIZE}",
        SPOOFED.len()
    );
    println!(
        "normal: {made} fetches ({ok} served), {} recorded, {normal_ok} recorded SF and scored normal",
        normal.len()
    );
    println!(
        "flood records: {} ({evicted} evicted, {} anomalous), {flood_packets} packets and {answers} answers",
        flood.len(),
        flood.iter().filter(|r| r["anomalous"] == true).count()
    );
    println!(
        "agent during the flood: CPU {cpu_pct:.0}% of a core, RSS max {rss_max} MB; detection latency p50/p99: normal {:.1}/{:.1} ms, flood {:.1}/{:.1} ms",
        quantile(&normal_lat, 0.5),
        quantile(&normal_lat, 0.99),
        quantile(&flood_lat, 0.5),
        quantile(&flood_lat, 0.99)
    );
    println!("summary: {}", out.summary);

    // The normal connections: recorded and scored normal.
    assert!(
        made >= 100 && ok == made,
        "fetches: {made} made, {ok} served"
    );
    assert!(
        normal_ok as f64 >= NORMAL_MIN_RECORDED * made as f64,
        "{normal_ok} of {made} fetches recorded and scored normal"
    );
    // The flood reported: an incident naming its target, and the counters.
    if let Some(kind) = kind {
        let flood_incident = out.alerts.iter().any(|l| {
            l["type"] == "incident"
                && l["kind"] == kind
                && l["targets"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|a| a == target))
        });
        let incidents: Vec<_> = out
            .alerts
            .iter()
            .filter(|l| l["type"] == "incident")
            .collect();
        assert!(
            flood_incident,
            "no {kind} incident naming {target}: {incidents:?}"
        );
        assert!(metrics::sum(&metrics, "sensor_incidents_total", &[("kind", kind)]) >= 1.0);
    }
    let evicted_kernel = out.health("flows_evicted");
    assert!(evicted_kernel > 0, "nothing evicted: {}", out.summary);
    assert_eq!(
        metrics::sum(&metrics, "sensor_kernel_flows_evicted_total", &[]),
        evicted_kernel as f64,
        "the metric reads the kernel's counter"
    );
    assert!(
        metrics::sum(
            &metrics,
            "sensor_connections_total",
            &[("end_reason", "evicted")]
        ) > 0.0
    );
    // Memory bounded.
    assert!(rss_max > 0 && rss_max <= RSS_MAX_MB, "RSS {rss_max} MB");
    // The counters add up: every packet has one outcome; every flow created became one record
    // (none still open after the stop); every eviction is a record or the end of one already
    // reported; every flood packet is in a flood record (nothing was refused a flow).
    let outcomes: u64 = [
        "accounted",
        "non_ip",
        "parse_errors",
        "truncated",
        "unsupported_l4",
        "unattributed_fragments",
        "table_full",
    ]
    .iter()
    .map(|n| out.health(n))
    .sum();
    assert_eq!(outcomes, out.health("packets"), "{}", out.summary);
    // A flow refused room is counted (`table_full`), never lost silently. With two CPUs
    // inserting and evicting at once a handful still are (a few in 60,000: the flow another
    // CPU's eviction took between its insert and its lookup, counted as vanished); more than
    // one in a thousand means eviction is not keeping the table open.
    let refused = out.health("table_full");
    assert!(
        refused * 1000 <= sent,
        "{refused} refused of {sent}: {}",
        out.summary
    );
    assert_eq!(out.health("evict_ring_full"), 0, "{}", out.summary);
    let records_total = [
        "records_fin",
        "records_rst",
        "records_idle",
        "records_shutdown",
    ]
    .iter()
    .chain(&["records_evicted"])
    .map(|n| out.capture(n))
    .sum::<u64>();
    // Every flow the kernel created is a record, a loss counted as one, or trailing packets
    // folded into the connection they trail (its lingering entry evicted by the full table).
    assert_eq!(
        out.health("flows_created") + out.health("flows_restarted"),
        records_total + out.capture("lost_on_restart") + out.capture("trailing_folded"),
        "{}",
        out.summary
    );
    assert_eq!(
        records_total,
        out.records.len() as u64,
        "every record written"
    );
    // Every eviction is a record: an attempt's own (`evicted`), or a finished connection's
    // end, reported before the eviction or at it.
    assert_eq!(
        out.capture("records_evicted")
            + out.capture("evicted_after_report")
            + out.capture("evicted_before_report"),
        evicted_kernel,
        "{}",
        out.summary
    );
    // Evicted records beside the flood's: none of the client's connections (not even a
    // phantom of trailing packets after the full table evicted a finished one's lingering
    // entry: those are folded into it, `trailing_folded`); the gateway's ICMP errors about the
    // flood (a target's answers to spoofed sources with no route) may be.
    let others: Vec<_> = out
        .records
        .iter()
        .filter(|r| r["end_reason"] == "evicted")
        .filter(|r| !spoofed_at(r, "orig_addr") && !spoofed_at(r, "resp_addr"))
        .collect();
    assert_eq!(
        evicted + others.len(),
        out.capture("records_evicted") as usize
    );
    assert!(
        others.iter().all(|r| r["protocol"] == "icmp"
            && r["orig_addr"] != CLIENT
            && r["resp_addr"] != CLIENT),
        "evicted records beside the flood's: {others:?}"
    );
    assert!(
        flood_packets + dropped <= sent && flood_packets + dropped + refused >= sent,
        "every flood packet is in a flood record or counted as refused: {flood_packets} + {dropped} dropped + {refused} refused, {sent} sent"
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// Fetches made one after another from one client port, while the ring is full.
const REUSED_FETCHES: u64 = 10;
/// Their client port. It is reserved in the client's namespace (`ip_local_reserved_ports`), so
/// that none of the other fetches, whose ports the kernel picks from the ephemeral range, can
/// share it (one once did, one CI rehearsal in many: 11 records on the port for 10 fetches).
const REUSED_PORT: u16 = 45_000;

/// Fetches the page `n` times from one client port (argv: server, port, n), printing `ok` or
/// `failed` for each. It reads each response to the end, so that the server closes first and
/// the client port is free again at once (no TIME_WAIT on the client's side).
const REUSE_CLIENT: &str = r#"
import socket, sys
server, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(10)
        s.bind(("", port))
        s.connect((server, 80))
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        print("ok" if data.startswith(b"HTTP/1.0 200") else "failed", flush=True)
    except OSError as e:
        print("failed", e, file=sys.stderr, flush=True)
        print("failed", flush=True)
"#;

/// A process stopped (SIGSTOP) until this is dropped (SIGCONT), on every exit path.
struct Paused(libc::pid_t);

impl Paused {
    fn new(pid: u32) -> Paused {
        let pid = pid as libc::pid_t;
        // SAFETY: kill has no memory preconditions; `pid` is our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn dropped_ring_buffer_events_lose_no_finished_connection() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&["--ring-bytes", "4096"], 120);
    // Bursts of 200 fetches, 32 at a time, while the agent is stopped (SIGSTOP), so that it
    // reads nothing and the ring (32 events; each connection sends four) overflows whatever
    // the machine's speed: an agent that keeps up would otherwise leave nothing dropped.
    let reserve = lab.client_sh(&format!(
        "sysctl -qw net.ipv4.ip_local_reserved_ports={REUSED_PORT}"
    ));
    assert!(
        reserve.status.success(),
        "reserving the reused port: {reserve:?}"
    );
    let pid = lab.sensor.child.as_ref().expect("sensor running").id();
    let (mut made, mut ok) = (0u64, 0u64);
    let mut drops = 0.0;
    for _ in 0..5 {
        let paused = Paused::new(pid);
        let out = lab.client_sh(&format!(
            "seq 1 200 | xargs -P 32 -I{{}} sh -c 'curl -sf -o /dev/null --max-time 10 http://{HTTP_SERVER}/index.html && echo ok || echo failed'"
        ));
        // With the ring full, fetches that all reuse one client port: each SYN restarts the
        // entry of the connection before it, whose value the kernel can only park.
        let reuse = lab.client_sh(&format!(
            "python3 -c '{REUSE_CLIENT}' {HTTP_SERVER} {REUSED_PORT} {REUSED_FETCHES}"
        ));
        drop(paused);
        for out in [&out, &reuse] {
            let text = String::from_utf8_lossy(&out.stdout);
            made += text.lines().count() as u64;
            ok += text.lines().filter(|l| *l == "ok").count() as u64;
        }
        // The health counters are read on the agent's next poll.
        let _ = wait_until(Duration::from_secs(5), || {
            metrics::sum(&lab.scrape(), "sensor_kernel_ringbuf_drops_total", &[]) > 0.0
        });
        drops = metrics::sum(&lab.scrape(), "sensor_kernel_ringbuf_drops_total", &[]);
        if drops > 0.0 {
            break;
        }
    }
    assert!(drops > 0.0, "no event dropped with a 4 KiB ring");
    // The table scan (every second with the shipped timeouts) finds what the events missed;
    // then the linger ends and every entry is gone.
    let settled = wait_until(Duration::from_secs(20), || {
        let m = lab.scrape();
        metrics::sum(&m, "sensor_connections_total", &[("end_reason", "fin")])
            + metrics::sum(&m, "sensor_connections_total", &[("end_reason", "rst")])
            >= ok as f64
    });
    thread::sleep(Duration::from_secs(3));
    let out = lab.stop();
    let normal = out.normal();
    println!(
        "ring: {made} fetches ({ok} served), {} events dropped, {} recorded; adopted by the scan {}, finished by the scan {}, finished on restart {}",
        out.health("ringbuf_drops"),
        normal.len(),
        out.capture("adopted_by_scan"),
        out.capture("finished_by_scan"),
        out.capture("finished_on_restart")
    );
    assert!(settled, "the records did not come: {}", out.summary);
    assert_eq!(ok, made, "every fetch was served");
    assert_eq!(normal.len() as u64, made, "a record for every fetch");
    for r in &normal {
        assert_eq!(r["flag"], "SF", "{r}");
        assert_ne!(r["end_reason"], "shutdown", "{r}");
    }
    // Nothing lost silently: each fetch is three events (begun, answered, both FINs) and a
    // fourth for the first packet after both FINs (normally the final ACK; none if no packet
    // followed them while the entry was in the table: one CI rehearsal in many had 1,599 of
    // 1,600 with every record there), plus one when its client port reused an entry still in
    // the table (the old connection handed over); every event the kernel could not put on the
    // ring is counted, and what reached user space was read.
    // A restart's hand-over is an event, or parked when the ring is full. Two CPUs racing on
    // one flow can send an event twice (`sensor_common::account::account`; user space counts
    // and ignores the duplicates it receives, `duplicate_events`); here nearly every event is
    // dropped, so a duplicate shows only as one more drop, which cannot be named: one run in
    // about four had 850 for the 849 of four per fetch (December 4, the fetches 32 at a time on
    // 2 CPUs); a duplicate is the one known way to get more. So up to 2% more is allowed and
    // reported; a double count of one kind of event would be a fetch's worth more.
    let (sent, dropped) = (out.health("events_sent"), out.health("ringbuf_drops"));
    let (restarted, parked) = (out.health("flows_restarted"), out.health("restarts_parked"));
    assert!(dropped > 0);
    let handled = sent + dropped + parked;
    let duplicates_allowed = made / 50;
    assert!(
        (3 * made + restarted..=4 * made + restarted + duplicates_allowed).contains(&handled),
        "{handled} events sent, dropped or parked for {made} fetches: {}",
        out.summary
    );
    if handled > 4 * made + restarted {
        println!(
            "{} events more than four per fetch: duplicates of racing CPUs",
            handled - 4 * made - restarted
        );
    }
    if handled < 4 * made + restarted {
        println!(
            "{} fetches without a packet after both FINs in the table",
            4 * made + restarted - handled
        );
    }
    // The fetches from one port: each after the first restarted its predecessor's entry with
    // the ring full, so the kernel parked it, and the scan made its record.
    let reused = normal
        .iter()
        .filter(|r| r["orig_port"].as_u64() == Some(u64::from(REUSED_PORT)))
        .count() as u64;
    println!("port reuse: {reused} records, {parked} parked");
    assert_eq!(reused, REUSED_FETCHES, "{}", out.summary);
    assert!(parked >= REUSED_FETCHES - 1, "{}", out.summary);
    assert_eq!(parked, out.capture("taken_from_park"), "{}", out.summary);
    assert_eq!(out.health("restarts_lost"), 0, "{}", out.summary);
    assert_eq!(out.capture("lost_on_restart"), 0, "{}", out.summary);
    assert_eq!(out.capture("events"), sent, "{}", out.summary);
    // Which events were dropped decides who recovers each connection (a lost `OPEN` is adopted
    // from its next event or by the scan, a lost `ANSWER` needs nothing, a lost FIN event is the
    // scan's), so the counts of recoveries are reported, not required.
}

/// The volume rule's case (`sensor::detect::volume`): floods whose packets all belong to one
/// conversation, so that the model, which reads one row per conversation, sees one ordinary
/// exchange. `ping -f` (one echo identifier, 5,000 requests, answered by the server) and hping3
/// UDP datagrams from one source port to a closed port (20,000, every 10 us at most, unanswered
/// but for the server's rate-limited ICMP errors); then hping3's default UDP flood, a new
/// source port per datagram (20,000 to closed port 53 of another host), whose conversations
/// are one datagram each, and the same to the next destination port every datagram (a third
/// host), which no port's rate gives away but the host's; and a SYN flood to the web server's
/// open port from an address of the attacker's own (20,000 SYNs, each SYN-ACK reset by the
/// attacker's kernel: zero-byte attempts the model leaves normal on a web port), which the
/// service's rate of attempts that never complete gives away. Each is bounded by count and
/// `timeout`, while a client pings the same server as a person would. Shipped settings.
#[test]
fn floods_the_model_cannot_see_are_reported_by_their_rate() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&[], 90);
    let pings = {
        let mut c = lab.lab.client.cmd("timeout");
        c.args(["20", "ping", "-q", "-c", "10", "-i", "0.2", HTTP_SERVER]);
        thread::spawn(move || c.output())
    };
    lab.attack(
        &format!("ping -q -f -c 5000 -I {FLOOD_SOURCE} {HTTP_SERVER}"),
        5_000,
    );
    lab.attack(
        &format!(
            "hping3 -q --udp -k -s 40000 -p 9999 -a {UDP_SCAN_SOURCE} -i u10 -c 20000 {UDP_SCAN_TARGET}"
        ),
        20_000,
    );
    // hping3's default: a new source port per datagram.
    lab.attack(
        &format!("hping3 -q --udp -p 53 -a {PORT_SCAN_SOURCE} -i u10 -c 20000 {PORT_SCAN_TARGET}"),
        20_000,
    );
    // And the next destination port with every datagram (`-p ++1`): no port gets more than
    // one, the host gets them all.
    lab.attack(
        &format!("hping3 -q --udp -p ++1 -a {SWEEP_SOURCE} -i u10 -c 20000 {FLOOD_TARGET}"),
        20_000,
    );
    // A SYN flood from an address of the attacker's own, to the web server's open port: the
    // server answers each SYN, the attacker's kernel resets each answer (a zero-byte `RSTO`
    // each, which the model leaves to the rule on a web port).
    lab.attack(
        &format!("hping3 -q -S -p 80 -a {PING_FLOOD_SOURCE} -i u10 -c 20000 {HTTP_SERVER}"),
        20_000,
    );
    let pinged = pings.join().expect("ping thread").expect("ping");
    assert!(pinged.status.success(), "the client's pings: {pinged:?}");

    // Each flood's incident opens on its early verdict, a second after its first packet.
    assert!(
        wait_until(Duration::from_secs(15), || lab.opened("\"icmp_flood\"") > 0
            && lab.opened("\"udp_flood\"") > 2
            && lab.opened("\"flood\"") > 0),
        "no incidents: {}",
        lab.alerts_so_far()
    );
    let metrics = lab.scrape();
    let out = lab.stop();

    let incidents = |kind: &str| -> Vec<&serde_json::Value> {
        out.opened()
            .into_iter()
            .filter(|a| a["kind"] == kind)
            .collect()
    };
    let (icmp, mut udp) = (incidents("icmp_flood"), incidents("udp_flood"));
    let syn = incidents("flood");
    assert_eq!(icmp.len(), 1, "one incident for the ping flood: {icmp:?}");
    assert_eq!(udp.len(), 3, "one incident for each UDP flood: {udp:?}");
    assert_eq!(syn.len(), 1, "one incident for the SYN flood: {syn:?}");
    udp.sort_by_key(|inc| inc["targets"][0].as_str().unwrap_or_default().to_string());
    for (inc, source, target, floor) in [
        (icmp[0], FLOOD_SOURCE, HTTP_SERVER, 1_000.0),
        (udp[0], PORT_SCAN_SOURCE, PORT_SCAN_TARGET, 5_000.0),
        (udp[1], UDP_SCAN_SOURCE, UDP_SCAN_TARGET, 5_000.0),
        (udp[2], SWEEP_SOURCE, FLOOD_TARGET, 5_000.0),
        (syn[0], PING_FLOOD_SOURCE, HTTP_SERVER, 5_000.0),
    ] {
        assert_eq!(inc["sources"], serde_json::json!([source]), "{inc}");
        assert_eq!(inc["targets"], serde_json::json!([target]), "{inc}");
        // The rate is in the incident's last line (closed at the sensor's stop). Not always
        // in its first: the model alone flags a flood's first connections, judged in cold
        // windows, and where 100 of them come before the rate's bar is reached (the SYN
        // flood's, in some runs) they open the incident before the rate does.
        let closed = out
            .alerts
            .iter()
            .find(|a| a["id"] == inc["id"] && a["state"] == "closed")
            .unwrap_or_else(|| panic!("the incident closes when the sensor stops: {inc}"));
        let pps = closed["peak_packets_per_second"].as_f64().unwrap_or(0.0);
        assert!(pps >= floor, "its rate is the evidence: {closed}");
    }
    // The flood over many ports is one incident at its host, naming its ports (when it
    // closes, at the sensor's stop, it has all of them).
    let host_flood_closed = out
        .alerts
        .iter()
        .find(|a| a["id"] == udp[2]["id"] && a["state"] == "closed")
        .expect("the host's flood closes when the sensor stops");
    assert!(
        host_flood_closed["port_count"].as_u64().unwrap_or(0) >= 10_000,
        "{host_flood_closed}"
    );
    // Its first conversations, judged by the model while the volume rule could not judge the
    // host yet, walk ports from one source: no port scan opens for them, the flood holds them.
    assert!(
        incidents("port_scan").is_empty(),
        "the flood over many ports is one incident: {:?}",
        incidents("port_scan")
    );
    // Every conversation of the floods is the volume rule's, and nothing else is.
    let by_volume: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| r["detector"] == "volume")
        .collect();
    assert!(!by_volume.is_empty(), "no volume verdict in the records");
    for r in &by_volume {
        assert!(
            [
                FLOOD_SOURCE,
                UDP_SCAN_SOURCE,
                PORT_SCAN_SOURCE,
                SWEEP_SOURCE,
                PING_FLOOD_SOURCE
            ]
            .contains(&r["orig_addr"].as_str().unwrap_or_default()),
            "the volume rule flagged {r}"
        );
        assert_eq!(r["anomalous"], true, "{r}");
        assert!(r["packets_per_second"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    }
    // The client's ordinary pings: recorded, normal.
    let client_pings: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| r["orig_addr"] == CLIENT && r["protocol"] == "icmp")
        .collect();
    assert!(
        !client_pings.is_empty(),
        "the client's pings were not recorded"
    );
    for r in &client_pings {
        assert_eq!(r["anomalous"], false, "an ordinary ping flagged: {r}");
    }
    // The SYN flood's attempts: most flagged by the rule (not those before its rate reached
    // the bar), and never a client's fetch.
    let syn_attempts: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| r["orig_addr"] == PING_FLOOD_SOURCE && r["protocol"] == "tcp")
        .collect();
    let syn_flagged = syn_attempts
        .iter()
        .filter(|r| r["detector"] == "volume")
        .count();
    println!(
        "SYN flood: {syn_flagged} of {} attempts flagged by their rate",
        syn_attempts.len()
    );
    assert!(
        syn_attempts.len() >= 19_000 && syn_flagged * 2 >= syn_attempts.len(),
        "{syn_flagged} of {} SYN flood attempts flagged by their rate",
        syn_attempts.len()
    );
    for (kind, n) in [("icmp_flood", 1.0), ("udp_flood", 3.0), ("flood", 1.0)] {
        assert_eq!(
            metrics::sum(&metrics, "sensor_incidents_total", &[("kind", kind)]),
            n,
            "sensor_incidents_total{{kind={kind:?}}}"
        );
    }
}

/// One attacker address, as a lab's single attacker host has: a SYN scan of 200 ports of the
/// web server (hping3, the next port each SYN), then a SYN flood of its open port 80 whose
/// SYN-ACKs the attacker's kernel resets. Two attacks, two incidents: the scan, still open when
/// the flood begins, must not take the flood (it took it whole until December 6). Shipped
/// settings.
#[test]
fn a_scan_then_a_flood_from_one_address_are_two_incidents() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&[], 60);
    lab.attack(
        &format!("hping3 -q -S -p ++1 -a {PORT_SCAN_SOURCE} -i u1000 -c 200 {HTTP_SERVER}"),
        200,
    );
    lab.attack(
        &format!("hping3 -q -S -p 80 -a {PORT_SCAN_SOURCE} -i u10 -c 20000 {HTTP_SERVER}"),
        20_000,
    );
    assert!(
        wait_until(Duration::from_secs(15), || lab.opened("") >= 2),
        "fewer than two incidents: {}",
        lab.alerts_so_far()
    );
    let out = lab.stop();
    let closed: Vec<&serde_json::Value> = out
        .alerts
        .iter()
        .filter(|a| a["type"] == "incident" && a["state"] == "closed")
        .collect();
    let kinds: Vec<&str> = closed
        .iter()
        .map(|a| a["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds.len(), 2, "{closed:?}");
    for inc in &closed {
        assert_eq!(
            inc["sources"],
            serde_json::json!([PORT_SCAN_SOURCE]),
            "{inc}"
        );
        assert_eq!(inc["targets"], serde_json::json!([HTTP_SERVER]), "{inc}");
    }
    let of = |kind: &str| {
        closed
            .iter()
            .find(|a| a["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}: {closed:?}"))
    };
    let (scan, flood) = (of("port_scan"), of("flood"));
    let count = |inc: &serde_json::Value, field: &str| inc[field].as_u64().unwrap_or(0);
    println!(
        "one address: port_scan of {} ports, {} connections; flood of {} connections",
        count(scan, "port_count"),
        count(scan, "connections"),
        count(flood, "connections")
    );
    assert!(count(scan, "port_count") >= 150, "{scan}");
    assert!(count(scan, "connections") < 1_000, "{scan}");
    assert!(count(flood, "connections") >= 19_000, "{flood}");
    assert_eq!(flood["ports"], serde_json::json!([80]), "{flood}");
}

/// A SYN flood from one address at a moderate rate (`hping3 -S -p 80 -i u1000`: 3,000 SYNs at
/// 1,000 a second, each SYN-ACK reset by the attacker's kernel) while a client fetches pages
/// from the same web server. Under the service's bar (5,000 failed attempts a second), and
/// zero-byte `RSTO`s the model leaves normal on a web port: missed until December 6. The
/// source's own rate of attempts that never complete flags it from about its 100th attempt;
/// one `flood` incident names the attacker; the client's fetches are recorded and normal.
/// Shipped settings.
#[test]
fn a_moderate_syn_flood_from_one_address_is_flagged_by_its_own_rate() {
    flood_from_one_address("-S", "SYN", 10);
}

/// The same with bare ACKs (`hping3 -A`, each reset by the server) : stray segments, which no
/// connection of the server's knows, each a conversation of its own (hping3 walks its source
/// ports) that the sensor did not see begin. The model left them all normal and no rule
/// counted them (0 of 20,000 flagged in a replayed capture, December 6); the volume rule now
/// counts a stray segment as a failed attempt. The client goes on fetching for 50 s: the
/// flood's incident must close `quiet_secs` (30 s) after the flood while the fetches, which
/// it counts, go on (they kept it open until December 6).
#[test]
fn an_ack_flood_from_one_address_is_flagged_by_its_own_rate() {
    flood_from_one_address("-A", "ACK", 50);
}

/// The same with bare FINs (`hping3 -F`), which the server's listening socket drops: each
/// unanswered, its record at the 5 s attempt timeout.
#[test]
fn a_fin_flood_from_one_address_is_flagged_by_its_own_rate() {
    flood_from_one_address("-F", "FIN", 10);
}

/// The same with bare RSTs (`hping3 -R`), which nothing answers: conversations of answers
/// to nothing, which the model does not judge (0 of 20,000 flagged in a replayed capture,
/// December 6).
#[test]
fn a_rst_flood_from_one_address_is_flagged_by_its_own_rate() {
    flood_from_one_address("-R", "RST", 10);
}

/// The same with SYN-ACKs nobody asked for (`hping3 -SA`), each reset by the server. The
/// flow table takes a SYN-ACK's sender for the responder (as Zeek does), so each record runs
/// from the server's port 80 to the attacker; the incident must still name the attacker as
/// its source and port 80 as the port flooded (0 of 20,000 flagged in a replayed capture,
/// December 6).
#[test]
fn a_syn_ack_flood_from_one_address_is_flagged_by_its_own_rate() {
    flood_from_one_address("-SA", "SYN-ACK", 10);
}

/// The same SYN flood with each SYN sent as a tiny first fragment (`hping3 -S -f`: 8 bytes of
/// the TCP header, the flags in the next fragment, RFC 1858). The parser refused such a first
/// fragment as truncated and the next fragment found no connection, so no SYN was seen and
/// each conversation was a SYN-ACK and a reset, answers to nothing (0 of 10,000 flagged in a
/// replayed capture, December 6). The first fragment now opens its connection and counts as a
/// wrong fragment, and a conversation begun with one is an attempt.
#[test]
fn a_syn_flood_of_tiny_fragments_from_one_address_is_flagged_by_its_own_rate() {
    flood_from_one_address("-S -f", "fragmented SYN", 10);
}

/// 3,000 segments with `hping3_flag` from one address at 1,000 a second to the web server
/// while a client fetches pages from it (a page every 0.2 s for `fetch_secs`): flagged by the
/// source's rate from about the 100th, one `flood` naming the attacker, the fetches recorded
/// and normal; where the fetches outlast the flood by more than the incident's quiet time,
/// the incident closes while they go on.
fn flood_from_one_address(hping3_flag: &str, what: &str, fetch_secs: u64) {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&[], fetch_secs + 50);
    let fetches = {
        let rounds = u32::try_from(fetch_secs * 5).unwrap_or(u32::MAX);
        let mut c = fetch_loop(&lab.lab, fetch_secs, "0.2", rounds);
        thread::spawn(move || c.output())
    };
    lab.attack(
        &format!(
            "hping3 -q {hping3_flag} -p 80 -a {PORT_SCAN_SOURCE} -i u1000 -c 3000 {HTTP_SERVER}"
        ),
        3_000,
    );
    let flood_end = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || lab.opened("") >= 1),
        "no incident: {}",
        lab.alerts_so_far()
    );
    // Quiet time (30 s shipped) after the flood's last segment (its records come at once, or
    // at the 5 s attempt timeout), and a few seconds for the tick.
    let closes_within = Duration::from_secs(30 + 5 + 5);
    let outlasted = Duration::from_secs(fetch_secs) > closes_within + Duration::from_secs(3);
    if outlasted {
        let closed = wait_until(closes_within, || {
            lab.alerts_so_far().contains("\"state\":\"closed\"")
        });
        let fetching = !fetches.is_finished();
        assert!(
            closed,
            "the incident did not close {} s after the flood while the fetches went on: {}",
            flood_end.elapsed().as_secs(),
            lab.alerts_so_far()
        );
        assert!(fetching, "the fetches ended before the incident closed");
    }
    let (made, fetched) = made_and_ok(&fetches.join().expect("fetch thread").expect("curl"));
    assert!(made > 0 && fetched == made, "{fetched} of {made} fetches");
    let out = lab.stop();
    let opens = out.opened();
    assert_eq!(opens.len(), 1, "one incident: {opens:?}");
    assert_eq!(opens[0]["kind"], "flood", "{}", opens[0]);
    assert_eq!(opens[0]["sources"], serde_json::json!([PORT_SCAN_SOURCE]));
    assert_eq!(opens[0]["targets"], serde_json::json!([HTTP_SERVER]));
    assert_eq!(opens[0]["ports"], serde_json::json!([80]), "{}", opens[0]);
    // The attacker's conversations, whichever end the table took it for (a SYN-ACK's sender
    // is the responder).
    let attempts: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| {
            (r["orig_addr"] == PORT_SCAN_SOURCE || r["resp_addr"] == PORT_SCAN_SOURCE)
                && r["protocol"] == "tcp"
        })
        .collect();
    let by_rate = attempts
        .iter()
        .filter(|r| r["detector"] == "volume")
        .count();
    println!(
        "moderate {what} flood: {by_rate} of {} segments flagged by the source's rate",
        attempts.len()
    );
    // hping3 walks its source ports, so each segment is a conversation of its own (a few may
    // reuse a 5-tuple still open); the first hundred or so come before the source's rate
    // counts.
    assert!(attempts.len() >= 2_900, "{} segments", attempts.len());
    assert!(
        by_rate + 150 >= attempts.len(),
        "{by_rate} of {}",
        attempts.len()
    );
    let normal = out.normal();
    assert_eq!(normal.len() as u64, made, "every fetch recorded");
    for r in normal {
        assert_eq!(r["anomalous"], false, "a fetch flagged: {r}");
    }
}

/// A UDP flood from one address that changes its source port per datagram (hping3's
/// default), under the service's bar: 6,000 empty datagrams to the DNS server's port 53 at
/// about 2,500 a second (`-i u400`), which dnsmasq does not answer, while a client looks names
/// up there (a query every 0.2 s, each from a source port of its own). Each datagram is one
/// ordinary conversation to the model, and the service's rate is under its bar (5,000 new
/// conversations a second): missed whole until December 7 (a replayed capture of 20,646 at
/// 3,400 a second: none flagged, no incident). The source's rate flags it from about its
/// hundredth datagram (`udp_one_way_per_source_pps`, 1,000 a second); one `udp_flood` names
/// the attacker, the server and port 53; every lookup is recorded, answered and normal.
/// Shipped settings.
#[test]
fn a_udp_flood_from_one_address_is_flagged_by_its_own_rate() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const DATAGRAMS: u32 = 6_000;
    let lab = Lab::start(&[], 60);
    let lookups = {
        let body = format!(
            "dig @{DNS_SERVER} -b {CLIENT}#$((20000+n)) +tries=1 +time=2 +short www.lab.test A | grep -q ."
        );
        let mut c = gateway::host_loop(&lab.lab.client, 10, 50, &body, "0.2");
        thread::spawn(move || c.output())
    };
    lab.attack(
        &format!("hping3 -q --udp -p 53 -a {PORT_SCAN_SOURCE} -i u400 -c {DATAGRAMS} {DNS_SERVER}"),
        DATAGRAMS,
    );
    assert!(
        wait_until(Duration::from_secs(15), || lab.opened("udp_flood") >= 1),
        "no udp_flood: {}",
        lab.alerts_so_far()
    );
    let (made, answered) = made_and_ok(&lookups.join().expect("lookup thread").expect("dig"));
    assert!(
        made > 0 && answered == made,
        "{answered} of {made} lookups answered"
    );
    let out = lab.stop();
    let opens = out.opened();
    assert_eq!(opens.len(), 1, "one incident: {opens:?}");
    assert_eq!(opens[0]["kind"], "udp_flood", "{}", opens[0]);
    assert_eq!(opens[0]["sources"], serde_json::json!([PORT_SCAN_SOURCE]));
    assert_eq!(opens[0]["targets"], serde_json::json!([DNS_SERVER]));
    assert_eq!(opens[0]["ports"], serde_json::json!([53]), "{}", opens[0]);
    let datagrams: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| r["orig_addr"] == PORT_SCAN_SOURCE && r["protocol"] == "udp")
        .collect();
    let by_rate = datagrams
        .iter()
        .filter(|r| r["detector"] == "volume")
        .count();
    println!(
        "UDP flood from one address: {by_rate} of {} datagrams flagged by the source's rate",
        datagrams.len()
    );
    // hping3 walks its source ports: a conversation per datagram (a few may reuse a 5-tuple
    // still open). Left normal: only the first hundred or so, which come before the source's
    // answered share counts; the flood's last second, a part of a second under the bar, is
    // the flood's too.
    assert!(datagrams.len() >= 5_800, "{} datagrams", datagrams.len());
    let start = |r: &serde_json::Value| r["start_unix_ns"].as_u64().unwrap_or(0);
    let mut starts: Vec<u64> = datagrams.iter().map(|r| start(r)).collect();
    starts.sort_unstable();
    let first_ns = starts[149];
    let missed: Vec<&&serde_json::Value> = datagrams
        .iter()
        .filter(|r| r["detector"] != "volume")
        .filter(|r| start(r) > first_ns)
        .collect();
    assert!(
        missed.is_empty(),
        "{} left normal after the first 150: {:?}",
        missed.len(),
        missed.first()
    );
    assert!(
        by_rate * 2 >= datagrams.len(),
        "{by_rate} of {}",
        datagrams.len()
    );
    let queries: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| r["orig_addr"] == CLIENT && r["resp_addr"] == DNS_SERVER)
        .collect();
    assert_eq!(queries.len() as u64, made, "every lookup recorded");
    for r in queries {
        assert_eq!(r["anomalous"], false, "a lookup flagged: {r}");
    }
}

/// A SYN flood of two ports of one host at once (ports 80 and 443 of an address nobody
/// answers, each from its own spoofed source, 4,000 SYNs each): one attack on the host, one
/// `flood` incident listing both ports (two incidents, one per port, until December 6).
/// Shipped settings.
#[test]
fn a_flood_of_two_ports_of_one_host_is_one_incident() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&[], 60);
    thread::scope(|s| {
        for (src, port) in [(SPOOFED[0], 80), (SPOOFED[1], 443)] {
            let lab = &lab;
            s.spawn(move || {
                lab.attack(
                    &format!("hping3 -q -S -p {port} -a {src} -i u500 -c 4000 {FLOOD_TARGET}"),
                    4_000,
                )
            });
        }
    });
    assert!(
        wait_until(Duration::from_secs(15), || lab.opened("") >= 1),
        "no incident: {}",
        lab.alerts_so_far()
    );
    // Every attempt's record (at the 5 s attempt timeout), then a moment for the lines.
    thread::sleep(Duration::from_secs(7));
    let out = lab.stop();
    let opens = out.opened();
    assert_eq!(opens.len(), 1, "one incident: {opens:?}");
    assert_eq!(opens[0]["kind"], "flood", "{}", opens[0]);
    let closed = out
        .alerts
        .iter()
        .rfind(|a| a["id"] == opens[0]["id"] && a["state"] == "closed")
        .expect("the incident closes when the sensor stops");
    println!("two-port flood: {closed}");
    assert_eq!(
        closed["targets"],
        serde_json::json!([FLOOD_TARGET]),
        "{closed}"
    );
    assert_eq!(closed["ports"], serde_json::json!([80, 443]), "{closed}");
    assert_eq!(closed["source_count"], 2, "{closed}");
    assert!(
        closed["anomalous_connections"].as_u64() >= Some(7_500),
        "{closed}"
    );
}

/// Fetches of the burst and how many at a time: Python's `http.server` accepts on one thread
/// with a listen queue of 5, so 64 clients at once overflow it and it drops SYNs.
const BURST_FETCHES: u64 = 1_500;
const BURST_CLIENTS: u32 = 64;

/// The server's count of SYNs its full listen queues dropped (`TcpExt` `ListenDrops` of its
/// namespace's `/proc/net/netstat`).
fn listen_drops(lab: &GatewayLab) -> u64 {
    let out = lab
        .server
        .cmd("cat")
        .arg("/proc/net/netstat")
        .output()
        .expect("read the server's /proc/net/netstat");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next().unwrap_or(""), tcp_ext.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenDrops")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no ListenDrops in the server's netstat: {text}"))
}

/// Benign load, not an attack: a burst of real clients on a small web server (1,500 fetches,
/// 64 at a time). Its listen queue overflows and drops SYNs; each client's stack retransmits
/// its SYN a second later and is served. The lifecycle used to judge such an attempt early at
/// the moment of the retransmission, when it looked like a SYN flood's half-open connection
/// (`S0` among others to the same service), and a replay of this burst opened a `flood`
/// incident of 1,039 connections though every fetch completed. Shipped settings: every fetch is
/// served and recorded, at most 1% of them flagged, and no incident opens.
#[test]
fn a_burst_of_clients_on_a_small_web_server_is_not_a_flood() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&[], 120);
    let drops_before = listen_drops(&lab.lab);
    let burst = lab.client_sh(&format!(
        "seq 1 {BURST_FETCHES} | xargs -P {BURST_CLIENTS} -I{{}} sh -c 'curl -sf -o /dev/null --max-time 20 http://{HTTP_SERVER}/index.html && echo ok || echo failed'"
    ));
    let drops = listen_drops(&lab.lab) - drops_before;
    let text = String::from_utf8_lossy(&burst.stdout);
    let (made, ok) = (
        text.lines().count() as u64,
        text.lines().filter(|l| *l == "ok").count() as u64,
    );
    let settled = wait_until(Duration::from_secs(20), || {
        let m = lab.scrape();
        metrics::sum(&m, "sensor_connections_total", &[("end_reason", "fin")])
            + metrics::sum(&m, "sensor_connections_total", &[("end_reason", "rst")])
            >= ok as f64
    });
    let out = lab.stop();
    let normal = out.normal();
    // A fetch of a small page takes milliseconds; one that took a second or more waited for
    // its retransmitted SYN.
    let waited = normal
        .iter()
        .filter(|r| {
            let (start, end) = (r["start_unix_ns"].as_u64(), r["end_unix_ns"].as_u64());
            end.zip(start).is_some_and(|(e, s)| e - s >= 1_000_000_000)
        })
        .count();
    let flagged: Vec<_> = normal.iter().filter(|r| r["anomalous"] == true).collect();
    let incidents: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a["type"] == "incident")
        .collect();
    println!(
        "burst: {made} fetches ({ok} served), {drops} SYNs dropped by the server's listen queue, {} recorded ({} of them unanswered attempts ended at 5 s), {waited} took a second or more, {} flagged, {} incident lines",
        normal.len(),
        normal.iter().filter(|r| r["flag"] == "S0").count(),
        flagged.len(),
        incidents.len()
    );
    assert!(settled, "the records did not come: {}", out.summary);
    assert_eq!(
        (made, ok),
        (BURST_FETCHES, BURST_FETCHES),
        "every fetch served"
    );
    // A fetch whose SYN the full queue dropped for 5 s (served at the client's fourth SYN, 7 s
    // after its first, which a loaded machine sees) is two records by design: the attempt timer
    // ends the unanswered attempt as `S0` 5 s after its first SYN (Zeek's `tcp_attempt_delay`),
    // and the SYN that got its answer opens the connection that served the page.
    let (served, split): (Vec<&serde_json::Value>, Vec<_>) =
        normal.iter().partition(|r| r["flag"] != "S0");
    assert_eq!(
        served.len() as u64,
        made,
        "one served record for every fetch"
    );
    for s in &split {
        assert!(
            served.iter().any(|r| r["orig_port"] == s["orig_port"]),
            "an unanswered attempt that no served fetch continued: {s}"
        );
    }
    // The case this test is about: the server dropped SYNs and clients waited for their
    // retransmissions.
    assert!(
        drops > 0 && waited as u64 >= BURST_FETCHES / 100,
        "the burst did not overflow the server's listen queue ({drops} SYNs dropped, {waited} fetches waited a second): the test did not test its case"
    );
    assert!(
        flagged.len() as u64 <= BURST_FETCHES / 100,
        "{} of {made} fetches flagged, first: {:?}",
        flagged.len(),
        flagged.first()
    );
    assert!(
        incidents.is_empty(),
        "incidents on benign load: {incidents:?}"
    );
}

/// Runs `attack(source)` from each of the four spoofed sources at once in a fresh lab with the
/// shipped settings, each sending `packets` to ever new ports of the flood target from one
/// source port (`from_port`), and checks that the target's records of them are flagged (at
/// least `min_flagged`) and make one incident listing the four sources. Returns its closed
/// line.
fn reflected_at_the_target_from_four(
    attack: impl Fn(&str) -> String + Sync,
    packets: u32,
    from_port: u64,
    min_flagged: usize,
) -> serde_json::Value {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(&[], 60);
    thread::scope(|s| {
        for src in SPOOFED {
            let (lab, attack) = (&lab, &attack);
            s.spawn(move || lab.attack(&attack(src), packets));
        }
    });
    assert!(
        wait_until(Duration::from_secs(15), || lab.opened("") >= 1),
        "no incident: {}",
        lab.alerts_so_far()
    );
    // Every record has come (at most a second after its packet); then a moment for lines.
    thread::sleep(Duration::from_secs(3));
    let out = lab.stop();
    // A SYN-ACK's record names the target the originator (the flow table takes a SYN-ACK's
    // sender for the responder), a datagram's the responder.
    let reflected: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| {
            (r["orig_port"] == from_port && r["resp_addr"] == FLOOD_TARGET)
                || (r["resp_port"] == from_port && r["orig_addr"] == FLOOD_TARGET)
        })
        .collect();
    let flagged = reflected.iter().filter(|r| r["anomalous"] == true).count();
    println!(
        "reflected: {} conversations recorded, {flagged} flagged",
        reflected.len()
    );
    assert!(flagged >= min_flagged, "{flagged} of {}", reflected.len());
    let opens = out.opened();
    assert_eq!(opens.len(), 1, "one incident: {opens:?}");
    let closed = out
        .alerts
        .iter()
        .rfind(|a| a["id"] == opens[0]["id"] && a["state"] == "closed")
        .unwrap_or_else(|| panic!("never closed: {:?}", out.alerts))
        .clone();
    println!("closed: {closed}");
    let sources = integration_tests::sorted_sources(&closed);
    assert_eq!(sources, SPOOFED, "{closed}");
    assert_eq!(
        closed["targets"],
        serde_json::json!([FLOOD_TARGET]),
        "{closed}"
    );
    closed
}

/// Big datagrams reflected at a host: from port 53 of four spoofed "resolvers" at once, to
/// ever new ports of the target, 1,000 a second from each for 3 s (hping3 `--udp -s 53 -k -p
/// ++2000 -d 1200`). Under the volume rule's bar at the host (5,000 new unanswered
/// conversations a second), so the model's verdicts carry it: each source's datagrams are a
/// port scan of the host, and the four were four incidents until December 6. Scans of a host
/// that begin together are one attack: one incident listing the four sources.
#[test]
fn datagrams_reflected_from_four_servers_are_one_incident() {
    reflected_at_the_target_from_four(
        |src| {
            format!(
                "hping3 -q --udp -a {src} -s 53 -k -p ++2000 -d 1200 -i u1000 -c 3000 {FLOOD_TARGET}"
            )
        },
        3_000,
        53,
        11_000,
    );
}

/// SYN-ACKs reflected at a host: four spoofed "web servers" answer SYNs the target never
/// sent, from port 80 to ever new ports of it, 1,000 a second each for 3 s (hping3 `-S -A -s
/// 80 -k -p ++2000`). Answers to nothing, which the model does not judge, each to a port of
/// its own: none flagged and no incident until December 6. The volume rule judges each
/// sender's SYN-ACKs over all the target's ports at a source's bar: one `flood` listing the
/// four senders.
#[test]
fn syn_acks_reflected_from_four_servers_are_one_flood() {
    let closed = reflected_at_the_target_from_four(
        |src| {
            format!("hping3 -q -S -A -a {src} -s 80 -k -p ++2000 -i u1000 -c 3000 {FLOOD_TARGET}")
        },
        3_000,
        80,
        10_800,
    );
    assert_eq!(closed["kind"], "flood", "{closed}");
}
