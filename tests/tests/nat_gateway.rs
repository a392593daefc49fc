//! A gateway that translates addresses, live: the gateway lab with masquerade on the gateway's
//! server-side interface (`tests/traffic/nat.py`, nftables), `sensor run` with the shipped
//! settings, and a client that looks names up (UDP request and answer) and fetches pages
//! through it, while the gateway fetches pages of its own and the server's side fetches pages
//! of the client's web server through a port forward (DNAT) of the gateway's outside address.
//!
//! Watched on its inside (client-side) interface alone, the sensor sees each connection whole
//! with the client's address (requests on ingress, answers on egress after the translation was
//! undone). Watched on both sides, as the shipped settings do, the answers enter with the
//! gateway's address; the kernel learns each translation where the connection's first packet
//! leaves and accounts those answers under the original connection (`sensor_common::nat`), so
//! the sensor sees the same: every connection recorded whole with the client's address,
//! answered, none flagged, no incident, no half with the translated address, nothing counted as
//! split (`sensor_nat_split_connections_total`), the translations counted. The gateway's own
//! connections from the translated address stay its own, and the port forward's are seen whole,
//! as the outside made them.
//!
//! Bounded: 100 lookups, 30 fetches, 5 of the gateway's own and 10 through the port forward
//! per run, two runs; all
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
/// Fetches from the server's side through the gateway's port forward to the client's port 80.
const FORWARDS: u32 = 10;
const FORWARD_PORT: u16 = 8080;
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
    let forward_port = FORWARD_PORT.to_string();
    for rule in [
        vec!["masquerade", server_if.as_str()],
        vec!["forward", server_if.as_str(), &forward_port, CLIENT, "80"],
    ] {
        let nat = lab
            .lab
            .gateway
            .cmd("python3")
            .arg(traffic("nat.py"))
            .args(&rule)
            .output()
            .expect("nat.py");
        assert!(
            nat.status.success(),
            "{rule:?}: {}",
            String::from_utf8_lossy(&nat.stderr)
        );
    }
    // The client's own web server, which the gateway's port forward reaches from outside.
    let _client_web = lab
        .lab
        .client
        .spawn_logged(
            "timeout",
            &[
                "100",
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                CLIENT,
            ],
            &lab.dir.join("client_web.log"),
        )
        .expect("client's web server");
    integration_tests::wait_listening(&lab.lab.client, 80);
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
    // From outside, through the port forward (DNAT) to the client's web server.
    let forwarded = lab
        .lab
        .server
        .cmd("sh")
        .args([
            "-c",
            &format!(
                "for i in $(seq {FORWARDS}); do curl -sf -o /dev/null --max-time 3 http://{GATEWAY_OUTSIDE}:{FORWARD_PORT}/ || exit 1; done"
            ),
        ])
        .status()
        .expect("fetches through the port forward");
    assert!(forwarded.success(), "through the port forward: {forwarded}");
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
/// addresses and the port forward's, none flagged, nothing split.
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
    // Through the port forward: seen from outside (to the gateway's port) where the outside
    // is watched, from inside (to the client's port 80) where only the inside is.
    let forwards: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| {
            (r["resp_addr"] == GATEWAY_OUTSIDE && r["resp_port"] == FORWARD_PORT)
                || (r["resp_addr"] == CLIENT && r["resp_port"] == 80)
        })
        .collect();
    assert_eq!(forwards.len(), FORWARDS as usize, "{label}: {forwards:?}");
    for r in &forwards {
        assert!(
            r["orig_packets"].as_u64() > Some(0) && r["resp_packets"].as_u64() > Some(0),
            "{label}: through the port forward, whole: {r}"
        );
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
    assert!(
        both.out
            .records
            .iter()
            .all(|r| r["resp_addr"] != CLIENT || r["resp_port"] != 80),
        "the port forward's connections are seen as the outside made them"
    );
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
        both.translations >= f64::from(LOOKUPS + FETCHES + FORWARDS),
        "a translation per forwarded connection: {}",
        both.translations
    );
    assert!(both.answers > 0.0);
}
