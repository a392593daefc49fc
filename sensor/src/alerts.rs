//! The alert stream: incidents ([`crate::incidents`], one JSON line per state change) and,
//! where the operator asks for them, one line per anomalous connection, rate-limited.
//!
//! A flood produces thousands of anomalous connections a second; writing each would bury the
//! operator and the disk. A token bucket lets `burst` connection alerts through at once and
//! `max_per_second` sustained; the rest are counted, by detector and flag, and reported in one
//! `suppressed` line when alerts flow again (or at shutdown), so nothing is lost silently.
pub mod eve;

use std::{collections::BTreeMap, io::Write, net::IpAddr};

use serde::Serialize;

use crate::{
    config::AlertFormat,
    detect::Scored,
    flows::ConnectionRecord,
    kdd::{FLAGS, FeatureSet, PROTOCOLS, SERVICES},
    model::Detector,
};

/// One scored connection as a JSON line: an alert (`"type": "alert"`) or, in the records
/// stream, every connection (`"type": "connection"`).
#[derive(Debug, Serialize)]
pub struct ScoredLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the verdict was made, RFC 3339 UTC.
    pub time: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// Verdict time minus the moment the connection was final (see `agent`), milliseconds.
    pub latency_ms: f64,
    pub protocol: &'static str,
    pub orig_addr: IpAddr,
    pub orig_port: u16,
    pub resp_addr: IpAddr,
    pub resp_port: u16,
    /// Community ID v1 (seed 0), as Zeek and Suricata log it, to join their logs.
    pub community_id: String,
    pub service: &'static str,
    pub flag: &'static str,
    pub orig_packets: u64,
    pub resp_packets: u64,
    pub end_reason: crate::flows::EndReason,
    pub anomalous: bool,
    pub score: f64,
    pub detector: Detector,
    pub supervised_score: f64,
    pub unsupervised_score: Option<f64>,
    /// Why the model did not judge this connection (its verdict is then normal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_scored: Option<crate::detect::NotScored>,
    /// Where the volume rule flagged the connection (`detector` `volume`;
    /// `crate::detect::volume`): whose rate it measured, `conversation` (the originator's
    /// packets per second in this conversation), `target` (new conversations per second to
    /// its responder's service, which answers at most 1% of them; for TCP the attempts per
    /// second that never completed their handshake) or `host` (the same as `target` over all
    /// the responder's UDP ports), and that rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_scope: Option<crate::detect::VolumeScope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_per_second: Option<f64>,
    /// Where the model flagged the connection and the routine-check rule withdrew the verdict
    /// (`crate::detect::checks`): the exchange's repeats at its pace so far and the pace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routine_check: Option<crate::detect::CheckHit>,
    /// The model's inputs (the 28 flow features), by KDD name.
    pub features: BTreeMap<&'static str, f64>,
    /// In alerts: the features that moved the score most ([`crate::model::Model::explain`]),
    /// so the operator sees why. Not computed for records (every connection).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_features: Vec<crate::model::FeatureContribution>,
}

impl ScoredLine {
    pub fn new(
        kind: &'static str,
        rec: &ConnectionRecord,
        s: &Scored,
        now_unix_ns: u64,
        latency_ms: f64,
    ) -> ScoredLine {
        let f = &s.features.0;
        let name = |table: &[&'static str], v: f64| table.get(v as usize).copied().unwrap_or("?");
        let features = FeatureSet::Flow
            .indices()
            .iter()
            .map(|&i| (crate::kdd::FEATURE_NAMES[i], f[i]))
            .collect();
        ScoredLine {
            kind,
            time: humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_nanos(now_unix_ns),
            )
            .to_string(),
            start_unix_ns: rec.start_unix_ns,
            end_unix_ns: rec.end_unix_ns,
            latency_ms,
            protocol: name(&PROTOCOLS, f[1]),
            orig_addr: rec.orig_addr,
            orig_port: rec.orig_port,
            resp_addr: rec.resp_addr,
            resp_port: rec.resp_port,
            community_id: crate::community_id::of_record(rec, 0),
            service: name(&SERVICES, f[2]),
            flag: name(&FLAGS, f[3]),
            orig_packets: rec.orig_packets,
            resp_packets: rec.resp_packets,
            end_reason: rec.end_reason,
            anomalous: s.verdict.anomalous,
            score: s.verdict.score,
            detector: s.verdict.detector,
            supervised_score: s.verdict.supervised_score,
            unsupervised_score: s.verdict.unsupervised_score,
            not_scored: s.not_scored,
            volume_scope: s.volume.map(|h| h.scope),
            packets_per_second: s.volume.map(|h| h.packets_per_second.round()),
            routine_check: s.routine_check,
            features,
            top_features: Vec::new(),
        }
    }

    /// An alert line for `s`, with its explanation by `model`.
    pub fn alert(
        rec: &ConnectionRecord,
        s: &Scored,
        model: &crate::model::Model,
        now_unix_ns: u64,
        latency_ms: f64,
    ) -> ScoredLine {
        let mut line = ScoredLine::new("alert", rec, s, now_unix_ns, latency_ms);
        line.top_features = s.explain(model);
        line
    }
}

/// The line written for alerts held back by the rate limit.
#[derive(Debug, Serialize, PartialEq)]
pub struct SuppressedLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub suppressed: u64,
    pub first_unix_ns: u64,
    pub last_unix_ns: u64,
    pub by_detector: BTreeMap<String, u64>,
    pub by_flag: BTreeMap<String, u64>,
}

/// What happened to an offered alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    Written,
    Suppressed,
}

/// Token bucket plus the pending summary of what it held back.
#[derive(Debug)]
pub struct RateLimiter {
    per_ns: f64,
    burst: f64,
    tokens: f64,
    last_ns: u64,
    pending: Option<SuppressedLine>,
}

impl RateLimiter {
    pub fn new(max_per_second: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            per_ns: max_per_second / 1e9,
            burst,
            tokens: burst,
            last_ns: 0,
            pending: None,
        }
    }

    /// Takes a token at `now_ns` if one is left.
    pub fn admit(&mut self, now_ns: u64) -> bool {
        if now_ns > self.last_ns {
            let refill = (now_ns - self.last_ns) as f64 * self.per_ns;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.last_ns = now_ns;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn hold(&mut self, now_ns: u64, detector: &str, flag: &str) {
        let p = self.pending.get_or_insert_with(|| SuppressedLine {
            kind: "suppressed",
            suppressed: 0,
            first_unix_ns: now_ns,
            last_unix_ns: now_ns,
            by_detector: BTreeMap::new(),
            by_flag: BTreeMap::new(),
        });
        p.suppressed += 1;
        p.last_unix_ns = now_ns;
        *p.by_detector.entry(detector.to_string()).or_default() += 1;
        *p.by_flag.entry(flag.to_string()).or_default() += 1;
    }
}

/// Writes alerts to a sink through the rate limit.
pub struct AlertSink {
    out: Box<dyn Write + Send>,
    format: AlertFormat,
    limiter: RateLimiter,
    /// Per-connection alert lines written and held back by the rate limit.
    pub written_total: u64,
    pub suppressed_total: u64,
    /// Incident lines written.
    pub incidents_written_total: u64,
}

impl AlertSink {
    pub fn new(out: Box<dyn Write + Send>, max_per_second: f64, burst: u32) -> AlertSink {
        AlertSink {
            out,
            format: AlertFormat::Json,
            limiter: RateLimiter::new(max_per_second, burst),
            written_total: 0,
            suppressed_total: 0,
            incidents_written_total: 0,
        }
    }

    /// The same sink writing `format`.
    pub fn with_format(self, format: AlertFormat) -> AlertSink {
        AlertSink { format, ..self }
    }

    /// Offers one anomalous connection's alert at `now_ns` (Unix ns); what is to be written is
    /// appended to `buf` (see [`AlertSink::write`]).
    pub fn offer(&mut self, line: &ScoredLine, now_ns: u64, buf: &mut Vec<u8>) -> Offer {
        if !self.limiter.admit(now_ns) {
            self.limiter.hold(now_ns, line.detector.as_str(), line.flag);
            self.suppressed_total += 1;
            return Offer::Suppressed;
        }
        self.flush_suppressed(buf);
        write_connection_alert(self.format, buf, line);
        self.written_total += 1;
        Offer::Written
    }

    /// Appends an incident's line. Incident lines are not rate-limited: the tracker writes at
    /// most one per incident and `update_every`.
    pub fn incident(&mut self, line: &crate::incidents::IncidentLine, buf: &mut Vec<u8>) {
        write_incident(self.format, buf, line);
        self.incidents_written_total += 1;
    }

    /// Appends the summary of held-back alerts, if any (when alerts flow again, on a tick once
    /// the bucket has refilled, and at shutdown).
    pub fn flush_suppressed(&mut self, buf: &mut Vec<u8>) {
        if let Some(p) = self.limiter.pending.take() {
            match self.format {
                AlertFormat::Json => push_line(buf, &p),
                AlertFormat::Eve => drop(eve::write_other(buf, p.kind, p.last_unix_ns, &p)),
            }
        }
    }

    /// Appends the summary if the bucket has a token again at `now_ns` (the flood is over).
    pub fn tick(&mut self, now_ns: u64, buf: &mut Vec<u8>) {
        if self.limiter.pending.is_some() && self.limiter.admit(now_ns) {
            self.limiter.tokens += 1.0; // only peeked
            self.flush_suppressed(buf);
        }
    }

    /// Writes what [`AlertSink::offer`] and friends appended, in one write.
    pub fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.out.write_all(buf)?;
        self.out.flush()
    }
}

/// Appends an incident's line in `format` (also for `sensor replay`'s alert stream).
pub fn write_incident(
    format: AlertFormat,
    buf: &mut Vec<u8>,
    line: &crate::incidents::IncidentLine,
) {
    match format {
        AlertFormat::Json => push_line(buf, line),
        // Writing to memory cannot fail.
        AlertFormat::Eve => drop(eve::write_incident(buf, line)),
    }
}

/// Appends a connection alert's line in `format` (also for `sensor replay`'s alert stream).
pub fn write_connection_alert(format: AlertFormat, buf: &mut Vec<u8>, line: &ScoredLine) {
    match format {
        AlertFormat::Json => push_line(buf, line),
        AlertFormat::Eve => drop(eve::write_connection_alert(buf, line)),
    }
}

fn push_line<T: Serialize>(buf: &mut Vec<u8>, v: &T) {
    // Serialising these structs to memory cannot fail.
    if serde_json::to_writer(&mut *buf, v).is_ok() {
        buf.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bucket_allows_burst_then_the_sustained_rate() {
        let mut r = RateLimiter::new(10.0, 3);
        let admitted = (0..10).filter(|_| r.admit(1_000)).count();
        assert_eq!(admitted, 3, "the burst");
        assert!(!r.admit(1_000 + 50_000_000), "half a token after 50 ms");
        assert!(
            r.admit(1_000 + 100_000_000),
            "one token after 100 ms at 10/s"
        );
        assert!(!r.admit(1_000 + 100_000_000));
    }

    fn record() -> ConnectionRecord {
        ConnectionRecord {
            end_unix_ns: 2,
            orig_packets: 1,
            conn_state: sensor_common::conn_state::ConnState::S0,
            end_reason: crate::flows::EndReason::Idle,
            ip_proto: 6,
            final_unix_ns: 5_000_000_002,
            ..ConnectionRecord::new(
                crate::flows::Transport::Tcp,
                ("198.18.1.1".parse::<IpAddr>().unwrap(), 40000),
                ("198.18.2.1".parse::<IpAddr>().unwrap(), 80),
                1,
            )
        }
    }

    #[test]
    fn a_flood_is_summarised_not_lost() {
        let buf = Buf::default();
        let mut sink = AlertSink::new(Box::new(buf.clone()), 1.0, 2);
        let rec = record();
        let scored = Scored {
            features: crate::kdd::KddFeatures([0.0; 41]),
            verdict: crate::model::Verdict {
                anomalous: true,
                score: 2.0,
                detector: Detector::Supervised,
                supervised_score: 1.0,
                unsupervised_score: None,
                supervised_score_plain: 1.0,
                withdrawn_by_attack_boxes: false,
            },
            not_scored: None,
            suppressed_by: None,
            cold: None,
            volume: None,
            volume_pending: false,
            routine_check: None,
        };
        let t0 = 1_700_000_000_000_000_000u64;
        let mut outcomes = Vec::new();
        let mut out = Vec::new();
        for i in 0..10 {
            let line = ScoredLine::new("alert", &rec, &scored, t0 + i, 0.0);
            outcomes.push(sink.offer(&line, t0 + i, &mut out));
        }
        sink.write(&out).unwrap();
        assert_eq!(outcomes.iter().filter(|o| **o == Offer::Written).count(), 2);
        assert_eq!(sink.suppressed_total, 8);
        // Two seconds later the bucket has refilled: the summary comes out on the tick.
        let mut out = Vec::new();
        sink.tick(t0 + 1_000, &mut out);
        assert!(out.is_empty(), "still flooding: no summary yet");
        sink.tick(t0 + 2_000_000_000, &mut out);
        sink.write(&out).unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["type"], "alert");
        assert_eq!(lines[0]["resp_port"], 80);
        assert_eq!(lines[0]["detector"], "supervised");
        assert_eq!(lines[0]["features"].as_object().unwrap().len(), 28);
        assert_eq!(lines[2]["type"], "suppressed");
        assert_eq!(lines[2]["suppressed"], 8);
        assert_eq!(lines[2]["by_detector"]["supervised"], 8);
        assert_eq!(lines[2]["first_unix_ns"], t0 + 2);
        assert_eq!(lines[2]["last_unix_ns"], t0 + 9);
    }
}
