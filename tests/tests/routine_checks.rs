//! A monitoring host's port checks, live: `sensor run` with the shipped settings in the gateway
//! lab ([`integration_tests::shipped::Lab`]) while the client checks three services of the
//! server every second, as Nagios' `check_ssh` and `check_tcp` or a load balancer do: an
//! SSH-like banner read and reset, a web port connected and closed without a byte, and a
//! database port whose service is down (refused); and, every two seconds, a host that is down
//! (an address the gateway delivers to a MAC nobody has: its SYNs go unanswered, and the
//! checker's stack sends each again). The model flags such checks (a probe's shape); the
//! routine-check rule (`sensor::detect::checks`) must withdraw its verdicts from the fourth
//! repeat of each exchange on, so that no incident opens; then the same address scans the
//! server, and that must still be a `port_scan`.
//!
//! Bounded: 40 rounds of checks (about 40 s), one `nmap` of 300 ports; all addresses in
//! 198.18.0.0/15; the lab's guards remove everything on every exit path.
//!
//! Also here: other clients whose traffic the model reads as probes (one-way messages to
//! collectors; calls to many services of a host, some down), each followed by a scan that must
//! still be one.
use std::time::Duration;

use integration_tests::{require_root, shipped::Lab, traffic, wait_until};
use xtask::gateway::{CLIENT, HTTP_SERVER};

/// Runs `timeout` with `args` (its bound in seconds, then a command) on the server host, its
/// output in `<name>.log` of the lab's directory; it goes with the lab.
fn on_server(lab: &Lab, name: &str, args: &[&str]) -> xtask::lab::Proc {
    lab.lab
        .server
        .spawn_logged("timeout", args, &lab.dir.join(&format!("{name}.log")))
        .unwrap_or_else(|e| panic!("{name} on the server: {e}"))
}

/// The client's SYN scan of `ports` of the web server (`nmap`, bounded to 30 s): a `port_scan`
/// must open within 10 s.
fn syn_scan_opens_port_scan(lab: &Lab, ports: &str) {
    let scan = integration_tests::syn_scan(&lab.lab.client, 30, ports, HTTP_SERVER)
        .output()
        .expect("nmap");
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab.opened("port_scan") >= 1),
        "no port_scan: {}",
        lab.alerts_so_far()
    );
}

const ROUNDS: u32 = 40;
/// The checked ports: a banner service (32 bytes, as an SSH server's version line), the web
/// server, and a port nothing listens on.
const BANNER_PORT: u16 = 22;
const WEB_PORT: u16 = 80;
const DOWN_PORT: u16 = 5432;
/// A host that is down: an address of the server's link that the gateway sends to a MAC
/// address nobody has, and the port checked there every two seconds.
const DEAD_HOST: &str = "198.18.2.250";
const DEAD_PORT: u16 = 9999;
const DEAD_ROUNDS: u32 = 20;
/// `[checks] repeats` of the shipped settings: the exchange at a pace from which verdicts are
/// withdrawn.
const REPEATS: usize = 4;

#[test]
fn a_monitoring_hosts_checks_are_withdrawn_after_three_repeats_and_its_scan_is_still_a_scan() {
    require_root();
    let lab = Lab::start(&[], 120);
    let _banner = on_server(
        &lab,
        "banner",
        &[
            "100",
            "python3",
            &traffic("tcp_server.py"),
            HTTP_SERVER,
            &BANNER_PORT.to_string(),
            "0",
            "32",
            "close",
            "95",
        ],
    );
    integration_tests::wait_listening(&lab.lab.server, BANNER_PORT);

    let server_link = &lab.lab.gw_ifaces[3];
    lab.lab
        .gateway
        .ip(&[
            "neigh",
            "add",
            DEAD_HOST,
            "lladdr",
            "02:00:00:00:00:fa",
            "dev",
            server_link,
        ])
        .expect("the dead host's neighbour entry");
    let check = traffic("port_check.py");
    let out = lab.client_sh(&format!(
        "python3 {check} {HTTP_SERVER} {ROUNDS} 1 {BANNER_PORT}:32 {WEB_PORT}:0 {DOWN_PORT}:0 & \
         python3 {check} {DEAD_HOST} {DEAD_ROUNDS} 2 {DEAD_PORT}:0; wait"
    ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for (port, connected, refused, unanswered) in [
        (BANNER_PORT, ROUNDS, 0, 0),
        (WEB_PORT, ROUNDS, 0, 0),
        (DOWN_PORT, 0, ROUNDS, 0),
        (DEAD_PORT, 0, 0, DEAD_ROUNDS),
    ] {
        let line = format!("{port} {connected} {refused} {unanswered}");
        assert!(
            text.lines().any(|l| l == line),
            "checks of port {port}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every check has been judged (each ends at once, the refused one at its RST, the
    // unanswered one at the attempt timeout: 5 s shipped).
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(lab.opened(""), 0, "{}", lab.alerts_so_far());
    let withdrawn_metric = xtask::metrics::sum(
        &lab.scrape(),
        "sensor_verdicts_withdrawn_as_checks_total",
        &[],
    );

    // The checker's address scans the server: still an attack.
    syn_scan_opens_port_scan(&lab, "1000-1299");
    let out = lab.stop();

    let mut withdrawn_records = 0;
    for (host, port, rounds, period_secs) in [
        (HTTP_SERVER, BANNER_PORT, ROUNDS, 1.0),
        (HTTP_SERVER, WEB_PORT, ROUNDS, 1.0),
        (HTTP_SERVER, DOWN_PORT, ROUNDS, 1.0),
        (DEAD_HOST, DEAD_PORT, DEAD_ROUNDS, 2.0),
    ] {
        let recs: Vec<&serde_json::Value> = out
            .records
            .iter()
            .filter(|r| {
                r["orig_addr"] == CLIENT && r["resp_addr"] == host && r["resp_port"] == port
            })
            .collect();
        let flagged = recs.iter().filter(|r| r["anomalous"] == true).count();
        let withdrawn: Vec<&&serde_json::Value> = recs
            .iter()
            .filter(|r| r.get("routine_check").is_some())
            .collect();
        println!(
            "port {port}: {} records ({} states), {flagged} flagged, {} withdrawn as checks",
            recs.len(),
            recs.iter()
                .map(|r| r["flag"].as_str().unwrap_or("?"))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join("/"),
            withdrawn.len()
        );
        withdrawn_records += withdrawn.len();
        // One record per check (the scan's ports are others).
        assert_eq!(recs.len(), rounds as usize, "port {port}");
        assert!(
            flagged < REPEATS,
            "port {port}: {flagged} checks flagged, at most {} expected",
            REPEATS - 1
        );
        for w in &withdrawn {
            assert_eq!(w["anomalous"], false, "{w}");
            let rc = &w["routine_check"];
            assert!(rc["repeats"].as_u64() >= Some(REPEATS as u64), "{w}");
            let p = rc["period_secs"].as_f64().unwrap_or(0.0);
            assert!(
                (p - period_secs).abs() < 0.5,
                "a {period_secs} s schedule: {w}"
            );
        }
        // The model flags the banner check and the refused check (almost) every time: what
        // it flags beyond the first three is the rule's.
        if port != WEB_PORT {
            assert!(
                withdrawn.len() + flagged + REPEATS >= rounds as usize,
                "port {port}: the model flagged {} of {rounds}",
                withdrawn.len() + flagged
            );
        }
    }
    assert_eq!(withdrawn_metric as usize, withdrawn_records);
    let opens = out.opened();
    assert_eq!(opens.len(), 1, "only the scan: {opens:?}");
    assert_eq!(opens[0]["kind"], "port_scan", "{}", opens[0]);
    assert_eq!(opens[0]["sources"], serde_json::json!([CLIENT]));
}

/// The mail relay's port: a service every server address runs in this test.
const MAIL_PORT: u16 = 25;
/// Addresses of the server (all answer on the mail port) and addresses of its link that
/// answer nothing (no host has them).
const MAIL_HOSTS: std::ops::RangeInclusive<u32> = 10..=29;
const DEAD_MAIL_HOSTS: std::ops::RangeInclusive<u32> = 30..=45;

/// A mail relay delivering its queue, live: a message to each of the server's 20 addresses
/// twice (1,000 bytes out, 300 back, one session after another), and among them attempts at
/// 16 addresses that answer nothing (dead MX hosts: their connections go unanswered). The
/// model flags the failed attempts, which reach the host-sweep threshold (10 hosts on one
/// port), and they opened a `host_sweep` until December 6; the relay was served more than
/// twice as often as it failed, which no sweep is: no incident now.
#[test]
fn a_mail_relay_meeting_dead_hosts_is_no_sweep() {
    require_root();
    let lab = Lab::start(&[], 120);
    let _mail = on_server(
        &lab,
        "mail",
        &[
            "100",
            "python3",
            &traffic("tcp_server.py"),
            "0.0.0.0",
            &MAIL_PORT.to_string(),
            "1000",
            "300",
            "close",
            "95",
        ],
    );
    integration_tests::wait_listening(&lab.lab.server, MAIL_PORT);
    let client = traffic("tcp_client.py");
    let mut script = String::new();
    for round in 0..2 {
        for host in MAIL_HOSTS {
            script += &format!("python3 {client} 198.18.2.{host} {MAIL_PORT} 1000 300 close 1 5; ");
            let dead = DEAD_MAIL_HOSTS.start() + (host - MAIL_HOSTS.start());
            if round == 0 && DEAD_MAIL_HOSTS.contains(&dead) {
                script +=
                    &format!("python3 {client} 198.18.2.{dead} {MAIL_PORT} 1000 300 close 1 3 & ");
            }
            script += "sleep 0.3; ";
        }
    }
    script += "wait";
    let out = lab.client_sh(&script);
    let served: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();
    assert_eq!(
        served,
        2 * MAIL_HOSTS.clone().count() as u64,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every attempt has been judged (the unanswered ones at the attempt timeout, 5 s).
    std::thread::sleep(Duration::from_secs(7));
    let out = lab.stop();
    let dead_flagged: std::collections::BTreeSet<&str> = out
        .records
        .iter()
        .filter(|r| {
            r["orig_addr"] == CLIENT && r["resp_port"] == MAIL_PORT && r["anomalous"] == true
        })
        .filter_map(|r| r["resp_addr"].as_str())
        .collect();
    println!("failed deliveries flagged, by host: {dead_flagged:?}");
    // Enough for a sweep by the failures alone: the test shows the relay's service, not a
    // threshold out of reach.
    assert!(dead_flagged.len() >= 10, "{dead_flagged:?}");
    let opens = out.opened();
    assert!(opens.is_empty(), "{opens:?}");
}

/// Collector ports on the server: statsd, syslog, two flow exports (NetFlow, IPFIX), Graylog's
/// GELF.
const COLLECTOR_PORTS: [u16; 5] = [8125, 514, 2055, 4739, 12201];
const MESSAGES_PER_PORT: u32 = 60;
/// A name service on the same host, busier than the collectors (the host's usual traffic).
const LOOKUP_PORT: u16 = 53;

/// A client's one-way messages to collectors, live: 60 counters each to five UDP collector
/// ports of the web server (statsd, syslog, NetFlow, IPFIX, GELF), one port after the other, ten
/// a second, each from a new socket (a client library that opens one per message), while the
/// client also looks names up there (about 30 answered datagrams a second) and fetches pages.
/// The model reads each such datagram as a probe (`satan`'s UDP probes in the 1998 data: a
/// datagram to a service a busy host rarely sees, no answer) and flagged most of them: an
/// `anomalous_source` until December 6. The routine-check rule withdraws its verdicts from a
/// source's fourth message to a service on: no incident. Then the client scans 100 UDP ports
/// of the server with a payload in each probe (one message per port): still a `port_scan`.
#[test]
fn a_clients_one_way_messages_to_collectors_are_no_attack_and_its_udp_scan_still_is() {
    require_root();
    let lab = Lab::start(&[], 150);
    let ports = COLLECTOR_PORTS.map(|p| p.to_string()).join(",");
    let messages = traffic("udp_messages.py");
    let _sink = on_server(
        &lab,
        "sink",
        &[
            "120",
            "python3",
            &messages,
            "sink",
            HTTP_SERVER,
            &ports,
            "110",
        ],
    );
    let _resolver = on_server(
        &lab,
        "resolver",
        &[
            "120",
            "python3",
            &traffic("udp_server.py"),
            HTTP_SERVER,
            &LOOKUP_PORT.to_string(),
            "120",
            "110",
        ],
    );
    for port in COLLECTOR_PORTS.into_iter().chain([LOOKUP_PORT]) {
        integration_tests::wait_udp_bound(&lab.lab.server, port);
    }
    let lookups = traffic("udp_client.py");
    let out = lab.client_sh(&format!(
        "(for i in $(seq 150); do curl -sf -o /dev/null --max-time 3 http://{HTTP_SERVER}/index.html; sleep 0.2; done) & \
         python3 {lookups} {HTTP_SERVER} {LOOKUP_PORT} 40 1100 0.03 > /dev/null & \
         python3 {messages} send {HTTP_SERVER} {ports} {MESSAGES_PER_PORT} 0.1 20000; wait"
    ));
    let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        sent,
        (MESSAGES_PER_PORT * COLLECTOR_PORTS.len() as u32).to_string(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each message's early verdict comes a second after it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.opened(""), 0, "{}", lab.alerts_so_far());

    let scan = lab
        .lab
        .client
        .cmd("timeout")
        .args(["60", "nmap", "-sU", "-n", "-Pn", "--max-retries", "0"])
        .args([
            "--min-rate",
            "200",
            "--data-length",
            "20",
            "-p",
            "6000-6099",
        ])
        .arg(HTTP_SERVER)
        .output()
        .expect("nmap");
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab.opened("port_scan") >= 1),
        "no port_scan: {}",
        lab.alerts_so_far()
    );
    let out = lab.stop();

    let mut withdrawn_all = 0;
    for port in COLLECTOR_PORTS {
        let recs: Vec<&serde_json::Value> = out
            .records
            .iter()
            .filter(|r| {
                r["orig_addr"] == CLIENT
                    && r["resp_addr"] == HTTP_SERVER
                    && r["protocol"] == "udp"
                    && r["resp_port"] == port
            })
            .collect();
        let flagged = recs.iter().filter(|r| r["anomalous"] == true).count();
        let withdrawn = recs
            .iter()
            .filter(|r| r.get("routine_check").is_some())
            .count();
        println!(
            "port {port}: {} messages, {flagged} flagged, {withdrawn} withdrawn as a client's messages",
            recs.len()
        );
        assert_eq!(recs.len(), MESSAGES_PER_PORT as usize, "port {port}");
        assert!(flagged < REPEATS, "port {port}: {flagged} flagged");
        withdrawn_all += withdrawn;
    }
    // The model flags such messages: what the rule withdrew is most of them (the test shows
    // the rule at work, not messages the model finds ordinary).
    let total = MESSAGES_PER_PORT as usize * COLLECTOR_PORTS.len();
    assert!(
        withdrawn_all * 2 >= total,
        "{withdrawn_all} of {total} messages withdrawn"
    );
    let opens = out.opened();
    assert_eq!(opens.len(), 1, "only the scan: {opens:?}");
    assert_eq!(opens[0]["kind"], "port_scan", "{}", opens[0]);
    assert_eq!(opens[0]["protocol"], "udp", "{}", opens[0]);
    assert_eq!(opens[0]["sources"], serde_json::json!([CLIENT]));
}

/// The application's services: 25 on ports 8001-8025 of the web server; the client calls 30
/// (8026-8030 are down: nothing listens, the server refuses).
const SERVICES_FIRST: u16 = 8001;
const SERVICES_UP: u16 = 25;
const SERVICES_CALLED: u16 = 30;
const CALLS: u32 = 500;

/// A client of many services of one host, some of them down, live: an application calling 30
/// services of the web server in turn (a request and a 520-byte answer each, 20 calls a
/// second), five of which are down and refuse it. The model flags the refusals and, their
/// windows holding them, many of the served calls too, on every port: a `port_scan` naming 30
/// ports and then an `anomalous_source` until December 7 (replayed: 282 of 506 flagged). The
/// incident tracker now asks a scan for probes (connections that exchanged nothing) of 20
/// ports, and takes no flagged call to a service that served the same client ordinarily in
/// the last minute as evidence of an anomalous source: no incident. Then the client scans 300
/// ports of the server: still a `port_scan`.
#[test]
fn a_client_of_many_services_some_down_is_no_attack_and_its_scan_still_is() {
    require_root();
    let lab = Lab::start(&[], 150);
    let services = traffic("services.py");
    let (first, up) = (SERVICES_FIRST.to_string(), SERVICES_UP.to_string());
    let _services = on_server(
        &lab,
        "services",
        &[
            "120",
            "python3",
            &services,
            "serve",
            HTTP_SERVER,
            &first,
            &up,
            "110",
        ],
    );
    for port in SERVICES_FIRST..SERVICES_FIRST + SERVICES_UP {
        integration_tests::wait_listening(&lab.lab.server, port);
    }
    let out = lab.client_sh(&format!(
        "python3 {services} call {HTTP_SERVER} {first} {SERVICES_CALLED} {CALLS} 20"
    ));
    let counts = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (served, refused) = counts
        .split_once(' ')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("calls: {counts:?} {}", String::from_utf8_lossy(&out.stderr)));
    let down = u32::from(SERVICES_CALLED - SERVICES_UP);
    assert_eq!(
        refused,
        CALLS * down / u32::from(SERVICES_CALLED),
        "{counts}"
    );
    assert_eq!(served + refused, CALLS, "{counts}");
    // The last refusals' records come at once; the served calls' at their FIN.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.opened(""), 0, "{}", lab.alerts_so_far());

    syn_scan_opens_port_scan(&lab, "1-300");
    let out = lab.stop();

    let calls: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| {
            r["orig_addr"] == CLIENT
                && r["resp_addr"] == HTTP_SERVER
                && r["resp_port"].as_u64().is_some_and(|p| {
                    (u64::from(SERVICES_FIRST)..u64::from(SERVICES_FIRST + SERVICES_CALLED))
                        .contains(&p)
                })
        })
        .collect();
    let flagged = |state: &str| {
        calls
            .iter()
            .filter(|r| r["anomalous"] == true && r["flag"] == state)
            .count()
    };
    println!(
        "{} calls recorded: {} served ({} flagged), {} refused ({} flagged)",
        calls.len(),
        calls.iter().filter(|r| r["flag"] == "SF").count(),
        flagged("SF"),
        calls.iter().filter(|r| r["flag"] == "REJ").count(),
        flagged("REJ"),
    );
    assert_eq!(calls.len(), CALLS as usize);
    let opens = out.opened();
    assert_eq!(opens.len(), 1, "only the scan: {opens:?}");
    assert_eq!(opens[0]["kind"], "port_scan", "{}", opens[0]);
    assert_eq!(opens[0]["sources"], serde_json::json!([CLIENT]));
}
