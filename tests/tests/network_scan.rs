//! A scan of a network, live: `sensor run` with the shipped settings in the gateway lab
//! ([`integration_tests::shipped::Lab`]) while the client runs `nmap -sS` over 12 hosts and 25
//! ports, and the attacker, at the same time, scans the web server's ports with two decoys
//! (`nmap -D`: each probe also sent from two spoofed addresses). Such a network scan is, to the
//! incident thresholds, a port scan of each host and a sweep of each port (37 incidents, one
//! page each, before the widening of `sensor::incidents`), and the decoy scan a port scan from
//! each of its three addresses; each must be one incident, the network scan's listing every
//! host and port, the decoy scan's its three sources. A second test: a fragmented SYN scan
//! (`nmap -f`), which the sensor did not see at all until December 6, is one `port_scan`. A
//! third: a decoy scan of a host whose scan from another address is still open is one incident
//! beside that one's. A fourth: host discovery (`nmap -sn`), ICMP and TCP probes of 50
//! addresses at once, is one `host_sweep` listing both protocols.
//!
//! Bounded: `nmap` runs of at most 300 probes (host discovery: 120) each, 30 s at most; all addresses in
//! 198.18.0.0/15; the lab's guards remove everything on every exit path.
use std::time::Duration;

use integration_tests::{require_root, shipped::Lab, wait_until};
use xtask::gateway::{CLIENT, FLOOD_SOURCE, HTTP_SERVER};

/// The decoy scan's spoofed addresses (nothing answers them).
const DECOYS: [&str; 2] = ["198.18.5.1", "198.18.5.2"];

/// The scanned hosts: addresses of the server (`198.18.2.10` to `.21`).
const HOSTS: &str = "198.18.2.10-21";
const HOST_COUNT: u64 = 12;
/// The scanned ports (nothing listens: each probe is refused).
const PORTS: &str = "1000-1024";
const PORT_COUNT: u64 = 25;
/// The addresses host discovery probes: the server's (`198.18.2.10` to `.29`) and 30 that
/// nobody has (`.30` to `.59`).
const DISCOVERED: &str = "198.18.2.10-59";

fn nmap(lab: &Lab, on_attacker: bool, ports: &str, targets: &str) -> std::process::Child {
    let ns = if on_attacker {
        &lab.lab.attacker
    } else {
        &lab.lab.client
    };
    let mut cmd = integration_tests::syn_scan(ns, 30, ports, targets);
    if on_attacker {
        cmd.args(["-D", &format!("{},{},ME", DECOYS[0], DECOYS[1])]);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nmap")
}

/// Runs an `nmap` command to its end, its output discarded, and checks that it succeeded.
fn run_to_end(cmd: &mut std::process::Command) {
    let out = cmd
        .stdout(std::process::Stdio::null())
        .output()
        .expect("nmap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_scan_of_a_network_is_one_incident_and_a_decoy_scan_another() {
    require_root();
    let lab = Lab::start(&[], 90);
    let network = nmap(&lab, false, PORTS, HOSTS);
    let other = nmap(&lab, true, "2000-2299", HTTP_SERVER);
    for (what, child) in [("network scan", network), ("port scan", other)] {
        let out = child.wait_with_output().expect("nmap");
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || lab.opened(CLIENT) >= 1
            && lab.opened(&format!("\"targets\":[\"{HTTP_SERVER}\"]")) >= 1),
        "no incident for each scan: {}",
        lab.alerts_so_far()
    );
    // Every probe has been judged (each refused at once); then a moment for lines to come.
    std::thread::sleep(Duration::from_secs(3));
    let out = lab.stop();

    let probes = out
        .records
        .iter()
        .filter(|r| {
            r["orig_addr"] == CLIENT
                && r["resp_port"]
                    .as_u64()
                    .is_some_and(|p| (1000..=1024).contains(&p))
        })
        .count();
    let flagged = out
        .records
        .iter()
        .filter(|r| r["orig_addr"] == CLIENT && r["anomalous"] == true)
        .count();
    println!("network scan: {probes} probes recorded, {flagged} flagged");
    assert_eq!(
        probes as u64,
        HOST_COUNT * PORT_COUNT,
        "one record per probe"
    );

    let opens = out.opened();
    for o in &opens {
        println!("opened: {o}");
    }
    let of = |src: &str| -> Vec<&&serde_json::Value> {
        opens
            .iter()
            .filter(|o| o["sources"] == serde_json::json!([src]))
            .collect()
    };
    let network = of(CLIENT);
    let other: Vec<&&serde_json::Value> = opens
        .iter()
        .filter(|o| o["targets"] == serde_json::json!([HTTP_SERVER]))
        .collect();
    assert_eq!(
        network.len(),
        1,
        "the network scan: one incident: {opens:?}"
    );
    assert_eq!(other.len(), 1, "the decoy scan: one incident: {opens:?}");
    assert_eq!(opens.len(), 2, "{opens:?}");
    assert_eq!(other[0]["kind"], "port_scan");
    assert_ne!(network[0]["id"], other[0]["id"]);

    // The network scan's incident grew to every host and port; the other stayed one host's.
    let closed = |id: &serde_json::Value| {
        out.alerts
            .iter()
            .rfind(|a| a["id"] == *id && a["state"] == "closed")
            .unwrap_or_else(|| panic!("incident {id} never closed: {:?}", out.alerts))
    };
    let n = closed(&network[0]["id"]);
    println!("network scan closed: {n}");
    assert_eq!(n["kind"], network[0]["kind"], "the kind it opened with");
    assert!(
        matches!(n["kind"].as_str(), Some("port_scan" | "host_sweep")),
        "{n}"
    );
    assert_eq!(n["target_count"].as_u64(), Some(HOST_COUNT), "{n}");
    // Each port is probed on 12 hosts: all but a port whose every probe the model let pass.
    assert!(n["port_count"].as_u64() >= Some(PORT_COUNT - 1), "{n}");
    let o = closed(&other[0]["id"]);
    println!("decoy scan closed: {o}");
    assert_eq!(o["target_count"].as_u64(), Some(1), "{o}");
    let sources = integration_tests::sorted_sources(o);
    let mut expected = vec![DECOYS[0], DECOYS[1], FLOOD_SOURCE];
    expected.sort_unstable();
    assert_eq!(sources, expected, "{o}");
}

/// A fragmented SYN scan (`nmap -sS -f`: each probe's TCP header split over two IP fragments,
/// the first carrying 8 bytes, the flags in the second, to slip past filters that look at
/// first fragments only). The parser refused such first fragments as truncated and the
/// second fragments found no connection, so no probe was seen: each conversation was the
/// target's reset alone, answers to nothing, not scored (a replayed capture of 300 probes: 0
/// flagged, no incident, December 6). Now each probe is its connection, with a wrong
/// fragment, and the scan is one `port_scan`.
#[test]
fn a_fragmented_scan_is_seen_and_is_one_port_scan() {
    require_root();
    let lab = Lab::start(&[], 60);
    run_to_end(
        integration_tests::syn_scan(&lab.lab.attacker, 30, "3000-3199", HTTP_SERVER).arg("-f"),
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab.opened("") >= 1),
        "no incident: {}",
        lab.alerts_so_far()
    );
    std::thread::sleep(Duration::from_secs(3));
    let out = lab.stop();
    let probes: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| {
            r["orig_addr"] == FLOOD_SOURCE
                && r["resp_port"]
                    .as_u64()
                    .is_some_and(|p| (3000..=3199).contains(&p))
        })
        .collect();
    let flagged = probes.iter().filter(|r| r["anomalous"] == true).count();
    println!(
        "fragmented scan: {} probes recorded, {flagged} flagged",
        probes.len()
    );
    assert_eq!(probes.len(), 200, "one record per probe");
    for r in &probes {
        assert_eq!(r["features"]["wrong_fragment"], 1.0, "{r}");
    }
    assert!(flagged >= 190, "{flagged} of 200");
    let opens = out.opened();
    assert_eq!(opens.len(), 1, "{opens:?}");
    assert_eq!(opens[0]["kind"], "port_scan", "{}", opens[0]);
    assert_eq!(opens[0]["sources"], serde_json::json!([FLOOD_SOURCE]));
    assert_eq!(opens[0]["targets"], serde_json::json!([HTTP_SERVER]));
}

/// A decoy scan of a host whose scan from another address, begun seconds before, is still
/// open: the older scan began too early for the decoy scan's sources to join it, and until
/// December 6 it kept them apart too (one `port_scan` per decoy address: 4 incidents in all).
/// Now the decoy scan is one incident naming its three sources, the older scan its own.
#[test]
fn a_decoy_scan_is_one_incident_while_an_older_scan_of_its_host_is_open() {
    require_root();
    let lab = Lab::start(&[], 60);
    let first = nmap(&lab, false, "1000-1099", HTTP_SERVER)
        .wait_with_output()
        .expect("nmap");
    assert!(first.status.success(), "{first:?}");
    assert!(
        wait_until(Duration::from_secs(10), || lab.opened(CLIENT) >= 1),
        "no incident for the first scan: {}",
        lab.alerts_so_far()
    );
    // Well past the time within which scans of a host count as begun together (3 s).
    std::thread::sleep(Duration::from_secs(6));
    let decoys = nmap(&lab, true, "2000-2199", HTTP_SERVER)
        .wait_with_output()
        .expect("nmap");
    assert!(decoys.status.success(), "{decoys:?}");
    assert!(
        wait_until(Duration::from_secs(10), || lab.opened("") >= 2),
        "no incident for the decoy scan: {}",
        lab.alerts_so_far()
    );
    std::thread::sleep(Duration::from_secs(3));
    let out = lab.stop();
    let opens = out.opened();
    for o in &opens {
        println!("opened: {o}");
    }
    assert_eq!(
        opens.len(),
        2,
        "the older scan and the decoy scan: {opens:?}"
    );
    let older = opens
        .iter()
        .find(|o| o["sources"] == serde_json::json!([CLIENT]))
        .expect("the older scan's incident");
    let decoy = opens
        .iter()
        .find(|o| o["id"] != older["id"])
        .expect("the decoy scan's incident");
    let closed = out
        .alerts
        .iter()
        .rfind(|a| a["id"] == decoy["id"] && a["state"] == "closed")
        .unwrap_or_else(|| panic!("the decoy scan's incident never closed: {:?}", out.alerts));
    println!("decoy scan closed: {closed}");
    let sources = integration_tests::sorted_sources(closed);
    let mut expected = vec![DECOYS[0], DECOYS[1], FLOOD_SOURCE];
    expected.sort_unstable();
    assert_eq!(sources, expected, "{closed}");
    // The older scan kept its own: none of its probes counted in the decoy scan.
    assert!(
        !closed.to_string().contains(CLIENT),
        "the older scan's source in the decoy scan's incident: {closed}"
    );
}

/// `nmap -sn` (host discovery) from the client over 50 addresses of the server's network (20
/// answer, 30 do not), as root over a routed network: each host is probed at once with an ICMP echo
/// request, a TCP SYN to port 443, a TCP ACK to port 80 and an ICMP timestamp request. The
/// ICMP and the TCP probes were two `host_sweep`s for one run until December 7 (a replayed
/// capture of a 51-address sweep); a source's reconnaissance is now one incident over all its
/// transports, listing them (`protocols`).
#[test]
fn host_discovery_over_icmp_and_tcp_is_one_host_sweep() {
    require_root();
    let lab = Lab::start(&[], 60);
    run_to_end(
        lab.lab
            .client
            .cmd("timeout")
            .args(["30", "nmap", "-sn", "-n", "--max-retries", "0"])
            .arg(DISCOVERED),
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab.opened(CLIENT) >= 1),
        "no incident: {}",
        lab.alerts_so_far()
    );
    // Unanswered probes end at their timeouts (5 s for TCP attempts, ICMP's idle timeout):
    // then a moment for their lines.
    std::thread::sleep(Duration::from_secs(8));
    let out = lab.stop();
    let flagged_hosts = |protocol: &str| {
        let hosts: std::collections::BTreeSet<&str> = out
            .records
            .iter()
            .filter(|r| {
                r["orig_addr"] == CLIENT && r["protocol"] == protocol && r["anomalous"] == true
            })
            .filter_map(|r| r["resp_addr"].as_str())
            .collect();
        hosts.len()
    };
    let (icmp, tcp) = (flagged_hosts("icmp"), flagged_hosts("tcp"));
    println!("host discovery: flagged ICMP probes to {icmp} hosts, TCP probes to {tcp}");
    // Each part alone reaches the sweep threshold (10 hosts shipped): two incidents before.
    assert!(icmp >= 10 && tcp >= 10, "ICMP {icmp}, TCP {tcp} hosts");
    let opens = out.opened();
    for o in &opens {
        println!("opened: {o}");
    }
    assert_eq!(opens.len(), 1, "one incident: {opens:?}");
    assert_eq!(opens[0]["kind"], "host_sweep", "{}", opens[0]);
    assert_eq!(opens[0]["sources"], serde_json::json!([CLIENT]));
    let closed = out
        .alerts
        .iter()
        .rfind(|a| a["id"] == opens[0]["id"] && a["state"] == "closed")
        .unwrap_or_else(|| panic!("the sweep never closed: {:?}", out.alerts));
    println!("closed: {closed}");
    assert_eq!(closed["protocols"], serde_json::json!(["tcp", "icmp"]));
    // Its anomalous connections: the probes of the addresses that do not answer.
    assert!(closed["target_count"].as_u64() >= Some(10), "{closed}");
}
