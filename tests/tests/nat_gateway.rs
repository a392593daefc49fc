//! A gateway that translates addresses, live: the gateway lab with masquerade on the gateway's
//! server-side interface (`tests/traffic/nat.py`, nftables), `sensor run` with the shipped
//! settings, and a client that looks names up (UDP request and answer) and fetches pages
//! through it.
//!
//! Watched on its inside (client-side) interface alone, the sensor sees each connection whole
//! with the client's address (requests on ingress, answers on egress after the translation was
//! undone): every one recorded, answered, none flagged, no incident. Watched on both sides, each
//! translated connection splits in two (the answers enter with the gateway's address), and the
//! sensor must say so: `sensor_nat_split_connections_total` and a warning in its log
//! (`sensor::capture::nat`).
//!
//! Bounded: 100 lookups and 30 fetches per run, two runs; all addresses in 198.18.0.0/15; the
//! lab's guards remove every namespace, process and rule (they live in the gateway's namespace)
//! on every exit path.
use integration_tests::{require_root, shipped::Lab, traffic};
use xtask::gateway::{CLIENT, HTTP_SERVER};

/// The gateway's interfaces in `GatewayLab::gw_ifaces`: towards the client, and the server.
const TO_CLIENT: usize = 0;
const TO_SERVER: usize = 3;
/// The gateway's address on the server's link: the translated source.
const GATEWAY_OUTSIDE: &str = "198.18.2.254";
const LOOKUP_PORT: u16 = 53;
const LOOKUPS: u32 = 100;
const FETCHES: u32 = 30;
const SPLIT_METRIC: &str = "sensor_nat_split_connections_total";

/// What one run saw: the records, the stderr, the split counter at the end.
struct Seen {
    out: integration_tests::shipped::Outcome,
    split: f64,
}

/// One run with the sensor watching the interfaces `watch` picks.
fn run(watch: impl Fn(usize) -> bool) -> Seen {
    let lab = Lab::start_watching(watch, &[], 120);
    let server_if = lab.lab.gw_ifaces[TO_SERVER].clone();
    let nat = lab
        .lab
        .gateway
        .cmd("python3")
        .args([&traffic("nat.py"), "masquerade", &server_if])
        .output()
        .expect("nat.py");
    assert!(
        nat.status.success(),
        "masquerade on {server_if}: {}",
        String::from_utf8_lossy(&nat.stderr)
    );
    let _resolver = lab
        .lab
        .server
        .spawn_logged(
            "timeout",
            &[
                "100",
                "python3",
                &traffic("udp_server.py"),
                HTTP_SERVER,
                &LOOKUP_PORT.to_string(),
                "120",
                "90",
            ],
            &lab.dir.join("resolver.log"),
        )
        .expect("resolver");
    integration_tests::wait_udp_bound(&lab.lab.server, LOOKUP_PORT);
    let out = lab.client_sh(&format!(
        "python3 {} {HTTP_SERVER} {LOOKUP_PORT} 40 {LOOKUPS} 0.02 30000 && \
         for i in $(seq {FETCHES}); do curl -sf -o /dev/null --max-time 3 http://{HTTP_SERVER}/index.html || exit 1; done",
        traffic("udp_client.py")
    ));
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        LOOKUPS.to_string(),
        "every lookup answered through the translation"
    );
    // Whole fetches end with FIN both ways; an answering half (the server's packets alone,
    // its handshake never completed) at the attempt timeout (5 s) and the next idle scan; the
    // lookups' conversations at the UDP idle timeout (60 s), or at the stop (recorded then).
    let split_now = || {
        let scrape = lab.scrape();
        assert!(scrape.contains(SPLIT_METRIC), "no {SPLIT_METRIC}: {scrape}");
        xtask::metrics::sum(&scrape, SPLIT_METRIC, &[])
    };
    integration_tests::wait_until(std::time::Duration::from_secs(15), || {
        split_now() >= f64::from(FETCHES)
    });
    let split = split_now();
    Seen {
        out: lab.stop(),
        split,
    }
}

#[test]
fn a_nat_gateway_watched_inside_sees_whole_connections_and_watched_both_sides_says_so() {
    require_root();
    // Inside only: whole connections, the client's address, nothing flagged.
    let inside = run(|i| i == TO_CLIENT);
    let client_recs: Vec<&serde_json::Value> = inside
        .out
        .records
        .iter()
        .filter(|r| r["orig_addr"] == CLIENT && r["resp_addr"] == HTTP_SERVER)
        .collect();
    let lookups = client_recs
        .iter()
        .filter(|r| r["resp_port"] == LOOKUP_PORT)
        .count();
    let fetches = client_recs.iter().filter(|r| r["resp_port"] == 80).count();
    println!(
        "inside only: {} records, {lookups} lookups, {fetches} fetches, {} flagged, split {}",
        inside.out.records.len(),
        client_recs
            .iter()
            .filter(|r| r["anomalous"] == true)
            .count(),
        inside.split
    );
    assert_eq!(lookups, LOOKUPS as usize);
    assert_eq!(fetches, FETCHES as usize);
    for r in &client_recs {
        assert!(r["resp_packets"].as_u64() > Some(0), "answer seen: {r}");
        assert_eq!(r["anomalous"], false, "{r}");
    }
    assert!(
        !inside
            .out
            .records
            .iter()
            .any(|r| r["orig_addr"] == GATEWAY_OUTSIDE || r["resp_addr"] == GATEWAY_OUTSIDE),
        "no half with the translated address"
    );
    assert_eq!(inside.split, 0.0);
    assert!(inside.out.opened().is_empty(), "{:?}", inside.out.opened());
    assert!(!inside.out.stderr.contains("NAT"), "{}", inside.out.stderr);

    // Both sides: the fetches' answers enter with the gateway's address, without its SYNs.
    let both = run(|_| true);
    let halves = both
        .out
        .records
        .iter()
        .filter(|r| r["orig_addr"] == GATEWAY_OUTSIDE && r["orig_packets"] == 0)
        .count();
    println!(
        "both sides: {} records, {halves} answering halves from the gateway's address, {} flagged, split {}",
        both.out.records.len(),
        both.out
            .records
            .iter()
            .filter(|r| r["anomalous"] == true)
            .count(),
        both.split
    );
    assert!(halves >= FETCHES as usize, "{halves} halves");
    assert!(both.split >= f64::from(FETCHES), "split {}", both.split);
    assert!(
        both.out
            .stderr
            .contains("translates addresses (NAT) between interfaces the sensor watches"),
        "no warning: {}",
        both.out.stderr
    );
}
