use std::sync::Arc;

use sensor_common::Health;

use super::Metrics;
use crate::{capture::HealthSource, flows::ConnectionRecord};

struct Fixed(Health);
impl HealthSource for Fixed {
    fn read(&self) -> Option<Health> {
        Some(self.0)
    }
}

#[test]
fn kernel_counters_are_read_at_scrape_time_and_connections_counted() {
    let h = Health {
        packets: 10,
        accounted: 7,
        non_ip: 2,
        table_full: 1,
        bytes: 900,
        tunnel_payloads: 3,
        too_deep: 3,
        ..Health::default()
    };
    let m = Metrics::new(Arc::new(Fixed(h)), 1024).unwrap();
    let rec: ConnectionRecord = serde_json::from_str(
        r#"{"start_unix_ns":1,"end_unix_ns":2,"transport":"tcp","ip_version":4,"orig_addr":"198.18.0.1","orig_port":1,"resp_addr":"198.18.0.2","resp_port":80,"icmp_type":null,"icmp_code":null,"orig_packets":1,"resp_packets":1,"orig_bytes":0,"resp_bytes":0,"conn_state":"REJ","urgent_packets":0,"wrong_fragments":0,"land":false,"end_reason":"rst"}"#,
    )
    .unwrap();
    m.observe_connection(&rec);
    m.observe_connection(&rec);
    let text = m.render();
    assert!(
        text.contains("sensor_kernel_packets_total{outcome=\"accounted\"} 7"),
        "{text}"
    );
    assert!(
        text.contains("sensor_kernel_packets_total{outcome=\"table_full\"} 1"),
        "{text}"
    );
    assert!(text.contains("sensor_kernel_bytes_total 900"), "{text}");
    assert!(
        text.contains("sensor_kernel_packets_total{outcome=\"too_deep\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("sensor_kernel_tunnel_payloads_total 3"),
        "{text}"
    );
    assert!(text.contains("sensor_flow_table_capacity 1024"), "{text}");
    assert!(
        text.contains(
            "sensor_connections_total{end_reason=\"rst\",flag=\"REJ\",protocol=\"tcp\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("sensor_model_reloads_total{result=\"error\"} 0"),
        "{text}"
    );
    // A second scrape does not double the kernel values.
    let again = m.render();
    assert!(again.contains("sensor_kernel_bytes_total 900"), "{again}");
}

/// A batch's histograms reach the scrape when the batch is dropped, all of them, once.
#[test]
fn a_scored_batch_publishes_its_histograms_when_dropped() {
    use crate::{
        detect::Scored,
        kdd::KddFeatures,
        model::{Detector, Verdict},
    };
    let m = Metrics::new(Arc::new(Fixed(Health::default())), 1024).unwrap();
    let rec: ConnectionRecord = serde_json::from_str(
        r#"{"start_unix_ns":1,"end_unix_ns":2,"transport":"udp","ip_version":4,"orig_addr":"198.18.0.1","orig_port":1,"resp_addr":"198.18.0.2","resp_port":53,"icmp_type":null,"icmp_code":null,"orig_packets":1,"resp_packets":1,"orig_bytes":30,"resp_bytes":90,"conn_state":"SF","urgent_packets":0,"wrong_fragments":0,"land":false,"end_reason":"idle"}"#,
    )
    .unwrap();
    let s = Scored {
        features: KddFeatures([0.0; 41]),
        verdict: Verdict {
            anomalous: false,
            score: 0.25,
            detector: Detector::None,
            supervised_score: 0.1,
            unsupervised_score: None,
            supervised_score_plain: 0.1,
            withdrawn_by_attack_boxes: false,
        },
        not_scored: None,
        suppressed_by: None,
        cold: None,
        volume: None,
        volume_pending: false,
        routine_check: None,
    };
    let count = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let mut batch = m.scored_batch();
    for _ in 0..3 {
        batch.observe(&rec, &s, 0.002);
    }
    let before = m.render();
    drop(batch);
    let after = m.render();
    let latency = "sensor_detection_latency_seconds_count{finalised_by=\"idle_timeout\"}";
    assert_eq!(count(&before, "sensor_score_count"), Some(0), "{before}");
    assert_eq!(count(&after, "sensor_score_count"), Some(3), "{after}");
    assert_eq!(count(&after, latency), Some(3), "{after}");
    m.scored_batch().observe(&rec, &s, 0.002);
    assert_eq!(count(&m.render(), latency), Some(4));
    // A verdict the attack boxes withdrew is counted as such, at once, and as a normal verdict.
    let withdrawn = "sensor_verdicts_withdrawn_by_attack_boxes_total";
    assert_eq!(count(&m.render(), withdrawn), Some(0));
    let mut w = s.clone();
    w.verdict.supervised_score_plain = 0.9;
    w.verdict.withdrawn_by_attack_boxes = true;
    m.scored_batch().observe(&rec, &w, 0.002);
    let text = m.render();
    assert_eq!(count(&text, withdrawn), Some(1), "{text}");
    // (The service is the features' index 0: the test's features are zeros.)
    let normal = "sensor_verdicts_total{detector=\"none\",protocol=\"udp\"";
    assert_eq!(count(&text, normal), Some(5), "{text}");
}

/// The incident tracker's losses reach the scrape as counters, at their running totals.
#[test]
fn incident_tracker_losses_are_exported() {
    let m = Metrics::new(Arc::new(Fixed(Health::default())), 1024).unwrap();
    let before = m.render();
    for name in [
        "sensor_incident_candidates_dropped_total",
        "sensor_incident_candidates_restarted_total",
        "sensor_incident_exchanges_untracked_total",
        "sensor_incident_early_verdicts_forgotten_total",
    ] {
        assert!(
            before.contains(&format!("\n{name} 0\n")),
            "{name}: {before}"
        );
    }
    let stats = crate::incidents::IncidentStats {
        candidates_dropped: 12,
        candidates_restarted: 3,
        exchanges_untracked: 7,
        early_verdicts_forgotten: 9,
        ..Default::default()
    };
    // Set twice: running totals, not increments.
    m.set_incident_stats(&stats);
    m.set_incident_stats(&stats);
    let text = m.render();
    assert!(
        text.contains("\nsensor_incident_candidates_dropped_total 12\n"),
        "{text}"
    );
    assert!(
        text.contains("\nsensor_incident_candidates_restarted_total 3\n"),
        "{text}"
    );
    assert!(
        text.contains("\nsensor_incident_exchanges_untracked_total 7\n"),
        "{text}"
    );
    assert!(
        text.contains("\nsensor_incident_early_verdicts_forgotten_total 9\n"),
        "{text}"
    );
}
