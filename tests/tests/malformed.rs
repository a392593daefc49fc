//! Attacks of one conversation whose packets no network stack sends, live: `sensor run` with
//! the shipped settings in the gateway lab ([`integration_tests::shipped::Lab`]). A `land`
//! attack (SYNs from the target's own address and port to itself) and pings of death (echo
//! requests whose second fragment reaches past 65,535 bytes) are each one conversation, or a
//! few, that the model flags and no flood, scan or sweep threshold counts: flagged, but no
//! incident (so no page) until December 6. Teardrop-like fragments to port 53 (the first
//! odd-sized with more to come) make one conversation the model finds ordinary: not even
//! flagged. Each must now be one `malformed` incident.
//!
//! Bounded: 20 land packets, 5 two-fragment echo trains, 5 two-fragment UDP trains, each
//! `hping3` run bounded to 20 s;
//! all addresses (the land's spoofed one too) in 198.18.0.0/15; the lab's guards remove
//! everything on every exit path.
use std::time::Duration;

use integration_tests::{require_root, shipped::Lab, wait_until};
use xtask::gateway::{FLOOD_SOURCE, HTTP_SERVER};

#[test]
fn a_land_attack_pings_of_death_and_teardrop_are_one_malformed_incident_each() {
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
    for id in 5_001..=5_005 {
        // 36 bytes with more to come (not a multiple of 8: wrong), then the rest, from fixed
        // ports: one conversation.
        lab.attack(
            &format!("hping3 --udp -s 3000 -k -p 53 -N {id} -x -d 28 -c 1 {HTTP_SERVER}"),
            1,
        );
        lab.attack(
            &format!("hping3 --udp -s 3000 -k -p 53 -N {id} -g 3 -d 30 -c 1 {HTTP_SERVER}"),
            1,
        );
    }
    // The echoes' records come at the end (ICMP's idle timeout is a minute): their early
    // verdicts open the incident, or the final records at the sensor's stop do.
    wait_until(Duration::from_secs(10), || lab.opened("malformed") >= 3);
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
    let teardrop: Vec<&serde_json::Value> = out
        .records
        .iter()
        .filter(|r| r["protocol"] == "udp" && r["features"]["wrong_fragment"].as_f64() > Some(0.0))
        .collect();
    println!(
        "land: {} conversations, {} flagged; pings of death: {} conversations, {} flagged; teardrop: {:?}",
        land.len(),
        land.iter().filter(|r| r["anomalous"] == true).count(),
        pods.len(),
        pods.iter().filter(|r| r["anomalous"] == true).count(),
        teardrop
            .iter()
            .map(|r| (&r["features"]["wrong_fragment"], &r["detector"]))
            .collect::<Vec<_>>()
    );
    assert_eq!(land.len(), 1, "one conversation: {land:?}");
    assert_eq!(pods.len(), 5, "{pods:?}");
    assert_eq!(teardrop.len(), 1, "one conversation: {teardrop:?}");
    assert_eq!(teardrop[0]["anomalous"], true, "{}", teardrop[0]);
    let opens = out.opened();
    for o in &opens {
        println!("opened: {o}");
    }
    let malformed: Vec<&&serde_json::Value> =
        opens.iter().filter(|o| o["kind"] == "malformed").collect();
    assert_eq!(malformed.len(), 3, "{opens:?}");
    assert_eq!(opens.len(), 3, "nothing else: {opens:?}");
    // The land's source is its target; the attacker's are the pings' and the fragments'.
    let of = |src: &str, protocol: &str| {
        malformed
            .iter()
            .find(|o| o["sources"] == serde_json::json!([src]) && o["protocol"] == protocol)
            .unwrap_or_else(|| panic!("no {protocol} malformed incident from {src}: {malformed:?}"))
    };
    for (src, protocol) in [
        (HTTP_SERVER, "tcp"),
        (FLOOD_SOURCE, "icmp"),
        (FLOOD_SOURCE, "udp"),
    ] {
        assert_eq!(
            of(src, protocol)["targets"],
            serde_json::json!([HTTP_SERVER])
        );
    }
    let closed = out
        .alerts
        .iter()
        .rfind(|a| a["kind"] == "malformed" && a["protocol"] == "icmp" && a["state"] == "closed")
        .expect("the pings' incident closed at the stop");
    assert_eq!(closed["connections"], 5, "{closed}");
}
