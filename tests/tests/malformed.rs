//! Attacks of one conversation whose packets no network stack sends, live: `sensor run` with
//! the shipped settings in the gateway lab ([`integration_tests::shipped::Lab`]). A `land`
//! attack (SYNs from the target's own address and port to itself) and pings of death (echo
//! requests whose second fragment reaches past 65,535 bytes) are each one conversation, or a
//! few, that the model flags and no flood, scan or sweep threshold counts: flagged, but no
//! incident (so no page) until December 6. Each must now be one `malformed` incident.
//!
//! Bounded: 20 land packets, 5 two-fragment echo trains, each `hping3` run bounded to 20 s;
//! all addresses (the land's spoofed one too) in 198.18.0.0/15; the lab's guards remove
//! everything on every exit path.
use std::time::Duration;

use integration_tests::{require_root, shipped::Lab, wait_until};
use xtask::gateway::{FLOOD_SOURCE, HTTP_SERVER};

#[test]
fn a_land_attack_and_pings_of_death_are_one_malformed_incident_each() {
    require_root();
    let lab = Lab::start(&[], 60);
    lab.attack(
        &format!("hping3 -S -a {HTTP_SERVER} -s 80 -p 80 -k -c 20 -i u50000 {HTTP_SERVER}"),
        20,
    );
    for id in 4_001..=4_005 {
        // The first fragment (more to come), then one at offset 65,000 bytes with the same IP
        // identification: together past 65,535.
        lab.attack(
            &format!("hping3 --icmp -N {id} -x -d 1400 -c 1 {HTTP_SERVER}"),
            1,
        );
        lab.attack(
            &format!("hping3 --icmp -N {id} -g 65000 -d 1400 -c 1 {HTTP_SERVER}"),
            1,
        );
    }
    // The echoes' records come at the end (ICMP's idle timeout is a minute): their early
    // verdicts open the incident, or the final records at the sensor's stop do.
    wait_until(Duration::from_secs(10), || lab.opened("malformed") >= 2);
    let out = lab.stop();
    let land: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| r["features"]["land"] == 1.0)
        .collect();
    let pods: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| r["protocol"] == "icmp" && r["features"]["wrong_fragment"] == 1.0)
        .collect();
    println!(
        "land: {} conversations, {} flagged; pings of death: {} conversations, {} flagged",
        land.len(),
        land.iter().filter(|r| r["anomalous"] == true).count(),
        pods.len(),
        pods.iter().filter(|r| r["anomalous"] == true).count()
    );
    assert_eq!(land.len(), 1, "one conversation: {land:?}");
    assert_eq!(pods.len(), 5, "{pods:?}");
    let opens = out.opened();
    for o in &opens {
        println!("opened: {o}");
    }
    let malformed: Vec<&&serde_json::Value> =
        opens.iter().filter(|o| o["kind"] == "malformed").collect();
    assert_eq!(malformed.len(), 2, "{opens:?}");
    assert_eq!(opens.len(), 2, "nothing else: {opens:?}");
    let of = |src: &str| {
        malformed
            .iter()
            .find(|o| o["sources"] == serde_json::json!([src]))
            .unwrap_or_else(|| panic!("no malformed incident from {src}: {malformed:?}"))
    };
    assert_eq!(of(HTTP_SERVER)["targets"], serde_json::json!([HTTP_SERVER]));
    assert_eq!(of(HTTP_SERVER)["protocol"], "tcp");
    assert_eq!(
        of(FLOOD_SOURCE)["targets"],
        serde_json::json!([HTTP_SERVER])
    );
    assert_eq!(of(FLOOD_SOURCE)["protocol"], "icmp");
    let closed = out
        .alerts
        .iter()
        .rfind(|a| a["kind"] == "malformed" && a["protocol"] == "icmp" && a["state"] == "closed")
        .expect("the pings' incident closed at the stop");
    assert_eq!(closed["connections"], 5, "{closed}");
}
