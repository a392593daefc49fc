//! A gateway that translates addresses, live: the gateway lab with masquerade on the gateway's
//! server-side interface (`tests/traffic/nat.py`, nftables), `sensor run` with the shipped
//! settings, and a client that looks names up (UDP request and answer) and fetches pages
//! through it, while the gateway fetches pages of its own.
//!
//! Watched on its inside (client-side) interface alone, the sensor sees each connection whole
//! with the client's address (requests on ingress, answers on egress after the translation was
//! undone). Watched on both sides, as the shipped settings do, the answers enter with the
//! gateway's address; the kernel learns each translation where the connection's first packet
//! leaves and accounts those answers under the original connection (`sensor_common::nat`), so
//! the sensor sees the same: every connection recorded whole with the client's address,
//! answered, none flagged, no incident, no half with the translated address, nothing counted as
//! split (`sensor_nat_split_connections_total`), the translations counted. The gateway's own
//! connections from the translated address stay its own.
//!
//! Bounded: 100 lookups, 30 fetches and 5 of the gateway's own per run, two runs; all
//! addresses in 198.18.0.0/15; the lab's guards remove every namespace, process and rule (they
//! live in the gateway's namespace) on every exit path.
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
/// The gateway's own fetches from its translated address.
const OWN_FETCHES: u32 = 5;
const SPLIT_METRIC: &str = "sensor_nat_split_connections_total";
const TRANSLATIONS_METRIC: &str = "sensor_kernel_nat_translations_total";
const ANSWERS_METRIC: &str = "sensor_kernel_nat_answers_total";

/// What one run saw: the records, the stderr, the counters at the end.
struct Seen {
    out: integration_tests::shipped::Outcome,
    split: f64,
    translations: f64,
    answers: f64,
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
    for _ in 0..OWN_FETCHES {
        let own = lab
            .lab
            .gateway
            .cmd("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "--max-time",
                "3",
                &format!("http://{HTTP_SERVER}/index.html"),
            ])
            .status()
            .expect("curl on the gateway");
        assert!(own.success(), "the gateway's own fetch: {own}");
    }
    // Give a split answer (the server's packets alone, its handshake never completed) time to
    // end at the attempt timeout (5 s) and be counted at the next idle scan, had any been.
    std::thread::sleep(std::time::Duration::from_secs(7));
    let scrape = lab.scrape();
    for metric in [SPLIT_METRIC, TRANSLATIONS_METRIC, ANSWERS_METRIC] {
        assert!(scrape.contains(metric), "no {metric}: {scrape}");
    }
    let metric = |name| xtask::metrics::sum(&scrape, name, &[]);
    let (split, translations, answers) = (
        metric(SPLIT_METRIC),
        metric(TRANSLATIONS_METRIC),
        metric(ANSWERS_METRIC),
    );
    Seen {
        out: lab.stop(),
        split,
        translations,
        answers,
    }
}

/// Checks that a run saw every connection whole, with the client's and the gateway's own
/// addresses, none flagged, nothing split; returns how many records carried the client's.
fn assert_whole(seen: &Seen, label: &str) {
    let recs = &seen.out.records;
    let client_recs: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["orig_addr"] == CLIENT && r["resp_addr"] == HTTP_SERVER)
        .collect();
    let lookups = client_recs
        .iter()
        .filter(|r| r["resp_port"] == LOOKUP_PORT)
        .count();
    let fetches = client_recs.iter().filter(|r| r["resp_port"] == 80).count();
    let translated: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["orig_addr"] == GATEWAY_OUTSIDE || r["resp_addr"] == GATEWAY_OUTSIDE)
        .collect();
    println!(
        "{label}: {} records, {lookups} lookups, {fetches} fetches, {} with the gateway's outside address, {} flagged, split {}, translations {}, answers undone {}",
        recs.len(),
        translated.len(),
        recs.iter().filter(|r| r["anomalous"] == true).count(),
        seen.split,
        seen.translations,
        seen.answers
    );
    assert_eq!(lookups, LOOKUPS as usize, "{label}");
    assert_eq!(fetches, FETCHES as usize, "{label}");
    for r in &client_recs {
        assert!(
            r["resp_packets"].as_u64() > Some(0),
            "{label}: answer seen: {r}"
        );
        assert_eq!(r["anomalous"], false, "{label}: {r}");
    }
    for r in &translated {
        assert_eq!(r["anomalous"], false, "{label}: {r}");
    }
    assert_eq!(seen.split, 0.0, "{label}");
    assert!(
        seen.out.opened().is_empty(),
        "{label}: {:?}",
        seen.out.opened()
    );
    assert!(
        !seen.out.stderr.contains("NAT"),
        "{label}: {}",
        seen.out.stderr
    );
}

#[test]
fn a_nat_gateway_watched_inside_or_on_both_sides_sees_whole_connections() {
    require_root();
    // Inside only: the translation is undone before the answers leave towards the client.
    let inside = run(|i| i == TO_CLIENT);
    assert_whole(&inside, "inside only");
    assert!(
        !inside.out.records.iter().any(|r| {
            (r["orig_addr"] == GATEWAY_OUTSIDE || r["resp_addr"] == GATEWAY_OUTSIDE)
                && r["resp_port"] != 80
        }),
        "inside only: nothing with the translated address but the gateway's own fetches"
    );
    assert_eq!(
        inside.translations, 0.0,
        "nothing forwarded leaves a watched interface"
    );

    // Both sides (the shipped settings watch every interface): the answers enter with the
    // gateway's address, and are accounted under the client's connection.
    let both = run(|_| true);
    assert_whole(&both, "both sides");
    let own: Vec<&serde_json::Value> = both
        .out
        .records
        .iter()
        .filter(|r| r["orig_addr"] == GATEWAY_OUTSIDE)
        .collect();
    assert_eq!(
        own.len(),
        OWN_FETCHES as usize,
        "only the gateway's own fetches carry its outside address: {own:?}"
    );
    for r in &own {
        assert_eq!(r["resp_port"], 80, "{r}");
        assert!(
            r["orig_packets"].as_u64() > Some(0) && r["resp_packets"].as_u64() > Some(0),
            "the gateway's own fetch, whole: {r}"
        );
    }
    assert!(
        both.translations >= f64::from(LOOKUPS + FETCHES),
        "a translation per forwarded connection: {}",
        both.translations
    );
    assert!(both.answers > 0.0);
}
