//! A slow attack on a web server, live: `sensor run` with the shipped settings in the gateway
//! lab ([`integration_tests::shipped::Lab`]) while the attacker holds 150 connections of the
//! web server open with requests whose headers never end, a line every 5 s on each (the shape
//! of `slowloris` and `slowhttptest -H`), and a client fetches pages from the same server all
//! along. Each held connection is an ordinary established one, which the model judges normal;
//! the held-request rule (`sensor::detect::held`) must report the attack as one `flood` of the
//! web port naming the attacker, counting every held request from the bar on, while the
//! client's fetches stay normal and open nothing.
//!
//! Bounded: 150 connections, each held 25 s, 30 fetches at most; all addresses in 198.18.0.0/15; the
//! lab's guards remove everything on every exit path.
use std::{thread, time::Duration};

use integration_tests::{require_root, shipped::Lab, traffic, wait_until};
use xtask::gateway::{self, CLIENT, FLOOD_SOURCE, HTTP_SERVER};

const CONNECTIONS: u32 = 150;
const LINE_EVERY_SECS: &str = "5";
const HELD_SECS: &str = "25";

#[test]
fn a_slow_headers_attack_is_one_flood_and_the_servers_clients_stay_normal() {
    require_root();
    let lab = Lab::start(&[], 120);
    let (fetched, attack) = thread::scope(|s| {
        let fetches = s.spawn(|| {
            gateway::host_loop(
                &lab.lab.client,
                30,
                30,
                &format!("curl -sf -o /dev/null --max-time 3 http://{HTTP_SERVER}/index.html"),
                "1",
            )
            .output()
            .expect("fetch loop")
        });
        let attack = s.spawn(|| {
            lab.lab
                .attacker
                .cmd("timeout")
                .args(["60", "python3", &traffic("slow_headers.py")])
                .args([FLOOD_SOURCE, HTTP_SERVER, "80", &CONNECTIONS.to_string()])
                .args([LINE_EVERY_SECS, HELD_SECS])
                .output()
                .expect("slow_headers.py")
        });
        (
            fetches.join().expect("client thread"),
            attack.join().expect("attacker thread"),
        )
    });
    let held: u64 = String::from_utf8_lossy(&attack.stdout)
        .strip_prefix("held ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("slow_headers.py: {attack:?}"));
    assert_eq!(held, u64::from(CONNECTIONS), "{attack:?}");
    assert!(
        wait_until(Duration::from_secs(20), || lab.opened("\"flood\"") >= 1),
        "no flood: {}",
        lab.alerts_so_far()
    );
    let out = lab.stop();
    let text = String::from_utf8_lossy(&fetched.stdout);
    let ok: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);

    // One incident: the web port's flood, from the attacker alone.
    let opened = out.opened();
    assert_eq!(opened.len(), 1, "{:#?}", out.alerts);
    let inc = opened[0];
    assert_eq!(inc["kind"], "flood", "{inc}");
    assert_eq!(inc["targets"], serde_json::json!([HTTP_SERVER]), "{inc}");
    assert_eq!(inc["ports"], serde_json::json!([80]), "{inc}");
    assert_eq!(inc["sources"], serde_json::json!([FLOOD_SOURCE]), "{inc}");
    // Every held request from the bar on was flagged, on the incident's last line.
    let bar = u64::from(sensor::detect::VolumeConfig::default().held_requests_per_min);
    let last = out
        .alerts
        .iter()
        .rfind(|a| a["type"] == "incident" && a["id"] == inc["id"])
        .expect("the incident's lines");
    assert_eq!(last["held_requests"], held - (bar - 1), "{last}");
    assert_eq!(last["state"], "closed", "{last}");

    // The client's fetches: every one recorded, complete and normal, none the attacker's.
    assert!(ok >= 20, "fetches: {text}");
    let normal = out.normal();
    assert_eq!(normal.len() as u64, ok, "{text}");
    assert!(
        normal
            .iter()
            .all(|r| r["flag"] == "SF" && r["anomalous"] == false),
        "{normal:#?}"
    );
    assert!(
        out.records
            .iter()
            .filter(|r| r["orig_addr"] == CLIENT)
            .all(|r| r["anomalous"] == false),
        "a client connection flagged"
    );
}
