//! Offline analysis: a capture file run through exactly what the live sensor does.
//!
//! ```text
//! pcap / pcapng ─► reader (pcap-file) ─► link layer ─► sensor_common::parse ─► table::update
//!   (the kernel program's own per-packet function, over user-space maps: [`UserTables`])
//!   ─► lifecycle::Lifecycle (the live sensor's, on the capture's clock) ─► ConnEvent
//!   ─► detect::Pipeline (the live feature engine and model) ─► rows
//! ```
//!
//! Parity with live mode is the point, so nothing here re-implements accounting or the
//! connection lifecycle: the packet parser and the flow-table update are `sensor_common`'s,
//! compiled once for the kernel and once for this module, and the lifecycle is
//! [`crate::lifecycle`], run here over [`UserTables`] with the capture's timestamps as its clock.
//! Time moves with the packets: idle deadlines fall due when a packet's timestamp passes them,
//! so the cost follows the packets, not the span of the capture's clock.
//!
//! What cannot be the same: a capture has no GSO super-packets (each frame counts once, as on the
//! wire), the kernel's timestamps are its own monotonic clock where replay uses the capture's,
//! and the live sensor finalises an idle connection at the first tick of its loop after the
//! deadline where replay does it at the deadline (a packet arriving within that tick joins the
//! old connection live, and starts a new one here).

pub mod output;
mod reader;

use std::{collections::VecDeque, path::PathBuf};

use rustc_hash::FxHashMap;
use sensor_common::{
    FlowKey, FlowValue, Health,
    flow::{FragKey, FragValue},
    parse::{ParseError, Parsed, ethertype, parse_ethernet, parse_ipv4, parse_ipv6},
    slots::evictable,
    table::{FlowTables, Insert, update},
};

use crate::{
    capture::CaptureConfig,
    flows::{ConnEvent, ConnectionRecord},
    incidents::{IncidentLine, IncidentTracker},
    lifecycle::{FlowStore, Lifecycle, LifecycleConfig, LifecycleStats, Timeouts},
};

pub use reader::{LinkType, PacketRef, for_each_packet};

/// Capacity of the kernel's fragment map (`FRAGS` in `sensor-ebpf`).
pub const FRAG_TABLE_CAPACITY: usize = 4_096;

/// How to replay: the live sensor's settings that shape its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Flow table capacity (`--table-size` of the live sensor).
    pub table_capacity: u32,
    pub timeouts: Timeouts,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            table_capacity: CaptureConfig::DEFAULT_TABLE_CAPACITY,
            timeouts: Timeouts::default(),
        }
    }
}

/// What went wrong reading a capture. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{file}: cannot read the capture file")]
    Open {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a pcap or pcapng capture (magic number {magic:#010x})")]
    NotACapture { file: PathBuf, magic: u32 },
    #[error("{file}: bad capture file header")]
    Header {
        file: PathBuf,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error(
        "{file}: packet {packet}: the capture is truncated or corrupt ({} earlier packets were replayed)",
        packet - 1
    )]
    Corrupt {
        file: PathBuf,
        /// 1-based number of the packet that could not be read, as Wireshark numbers frames.
        packet: u64,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("{file}: packet {packet}: {reason}")]
    BadPacket {
        file: PathBuf,
        packet: u64,
        reason: &'static str,
    },
    #[error(
        "{file}: packet {packet}: link type {link_type} is not supported (Ethernet, raw IP and Linux cooked captures are)"
    )]
    UnsupportedLinkType {
        file: PathBuf,
        packet: u64,
        /// The pcap LINKTYPE_ value and its name.
        link_type: String,
    },
}

/// The flow and fragment tables in user space: what the kernel's BPF maps are to the XDP
/// program, with the same capacity rules.
#[derive(Debug)]
pub struct UserTables {
    flows: FxHashMap<FlowKey, FlowValue>,
    capacity: usize,
    frags: FxHashMap<FragKey, FragValue>,
    /// Insertion order of `frags`, to evict the oldest when full. The kernel's LRU map evicts
    /// approximately the least recently *used*; fragment trains are short, so the two agree
    /// except under fragment floods far beyond the map's size.
    frag_order: VecDeque<FragKey>,
    /// Flows in the order they were inserted, `(key, first_seen_ns)`, for evictions (entries
    /// of flows gone since are skipped, and dropped when they outnumber the table).
    flow_order: VecDeque<(FlowKey, u64)>,
    /// Flows evicted by the last inserts, with the time they left, for the lifecycle
    /// ([`Replayer::packet`] hands them over at once, as the kernel's ring buffer does).
    evicted: Vec<(FlowKey, FlowValue, u64)>,
}

impl UserTables {
    pub fn new(capacity: u32) -> UserTables {
        UserTables {
            flows: FxHashMap::default(),
            capacity: capacity as usize,
            frags: FxHashMap::default(),
            frag_order: VecDeque::new(),
            flow_order: VecDeque::new(),
            evicted: Vec::new(),
        }
    }

    /// Evicts the unanswered attempt that entered the table first; whether there was one. The
    /// kernel evicts the one with the oldest last packet among a sample
    /// (`sensor_common::slots`): the two agree on a flood of one-packet attempts, and differ
    /// only in which attempt leaves when the table is full of older, longer ones.
    fn evict(&mut self, now_ns: u64) -> bool {
        // Each entry is looked at once: one that is not evicted now never will be (gone, or
        // answered, which an attempt does not undo).
        while let Some((key, first_seen)) = self.flow_order.pop_front() {
            if let Some(v) = self.flows.get(&key)
                && v.first_seen_ns == first_seen
                && evictable(v)
            {
                let v = *v;
                self.flows.remove(&key);
                self.evicted.push((key, v, now_ns));
                return true;
            }
        }
        false
    }

    /// Remembers a flow just inserted, as a candidate for eviction.
    fn inserted(&mut self, key: &FlowKey, first_seen_ns: u64) {
        self.flow_order.push_back((*key, first_seen_ns));
        if self.flow_order.len() > 2 * self.capacity + 1024 {
            let flows = &self.flows;
            self.flow_order.retain(|(k, t)| {
                flows
                    .get(k)
                    .is_some_and(|v| v.first_seen_ns == *t && evictable(v))
            });
        }
    }

    /// Entries in the flow table.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&FlowValue> {
        self.flows.get(key)
    }

    /// Every flow entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowValue)> {
        self.flows.iter()
    }
}

impl FlowStore for UserTables {
    fn get(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key).copied()
    }

    fn remove(&mut self, key: &FlowKey, first_seen_ns: u64) -> bool {
        if self
            .flows
            .get(key)
            .is_none_or(|v| v.first_seen_ns != first_seen_ns)
        {
            return false;
        }
        self.flows.remove(key).is_some()
    }

    fn entries(&self) -> Vec<(FlowKey, FlowValue)> {
        self.flows.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

impl FlowTables for UserTables {
    #[inline]
    fn flow_ptr(&mut self, key: &FlowKey) -> Option<*mut FlowValue> {
        self.flows.get_mut(key).map(|v| v as *mut FlowValue)
    }

    #[inline]
    fn flow_insert(&mut self, key: &FlowKey, value: &FlowValue, h: &mut Health) -> Insert {
        if self.flows.contains_key(key) {
            return Insert::Exists;
        }
        // The kernel table holds its capacity (its `FLOW_COUNT`; `sensor_common::slots` explains
        // why it never runs out of slots before), then makes room by evicting an attempt.
        if self.flows.len() >= self.capacity {
            if !self.evict(value.first_seen_ns) {
                return Insert::Full;
            }
            h.flows_evicted += 1;
            h.events_sent += 1;
        }
        self.flows.insert(*key, *value);
        self.inserted(key, value.first_seen_ns);
        Insert::Done
    }

    #[inline]
    fn frag_get(&mut self, key: &FragKey) -> Option<FragValue> {
        self.frags.get(key).copied()
    }

    #[inline]
    fn frag_insert(&mut self, key: &FragKey, value: &FragValue) {
        if self.frags.insert(*key, *value).is_none() {
            self.frag_order.push_back(*key);
            while self.frags.len() > FRAG_TABLE_CAPACITY {
                match self.frag_order.pop_front() {
                    Some(old) => {
                        self.frags.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }
}

/// Parses one captured frame of link type `link` with the kernel's parser.
#[inline]
pub fn parse_frame(link: LinkType, data: &[u8]) -> Result<Parsed, ParseError> {
    match link {
        LinkType::Ethernet => parse_ethernet(data),
        LinkType::RawIp => match data.first().map(|b| b >> 4) {
            Some(4) => parse_ipv4(data, 0),
            Some(6) => parse_ipv6(data, 0),
            Some(_) => Err(ParseError::NonIp),
            None => Err(ParseError::Truncated),
        },
        LinkType::Ipv4 => parse_ipv4(data, 0),
        LinkType::Ipv6 => parse_ipv6(data, 0),
        // Linux cooked capture (SLL): 16-byte header, protocol (an ethertype) at 14.
        LinkType::LinuxSll => {
            let Some(proto) = data.get(14..16) else {
                return Err(ParseError::Truncated);
            };
            match u16::from_be_bytes([proto[0], proto[1]]) {
                ethertype::IPV4 => parse_ipv4(data, 16),
                ethertype::IPV6 => parse_ipv6(data, 16),
                _ => Err(ParseError::NonIp),
            }
        }
    }
}

/// The live sensor on a capture's clock: the kernel's per-packet update over [`UserTables`] and
/// the connection [`Lifecycle`] (events at the packet that caused them: replay has no ring
/// buffer to fill, so `ringbuf_drops` stays 0, and no table scan is needed).
#[derive(Debug)]
pub struct Replayer {
    tables: UserTables,
    health: Health,
    lifecycle: Lifecycle,
    /// The replay clock: the latest capture timestamp seen (the kernel's clock never goes back;
    /// a capture's may, by a little, across CPUs).
    clock_ns: u64,
}

impl Replayer {
    pub fn new(config: ReplayConfig) -> Replayer {
        let lifecycle = LifecycleConfig {
            timeouts: config.timeouts,
            close_linger: LifecycleConfig::DEFAULT_CLOSE_LINGER,
            table_scan_interval: None,
            early_verdict_after: Some(LifecycleConfig::DEFAULT_EARLY_VERDICT_AFTER),
        };
        Replayer {
            tables: UserTables::new(config.table_capacity),
            health: Health::default(),
            // Capture timestamps are Unix time already: no clock offset.
            lifecycle: Lifecycle::new(lifecycle, 0),
            clock_ns: 0,
        }
    }

    /// The health counters, as the kernel would have counted them.
    pub fn health(&self) -> Health {
        self.health
    }

    /// The lifecycle's counters, as `capture::Capture::stats`.
    pub fn stats(&self) -> LifecycleStats {
        self.lifecycle.stats()
    }

    pub fn tables(&self) -> &UserTables {
        &self.tables
    }

    /// The replay clock (latest capture timestamp), Unix nanoseconds.
    pub fn clock_ns(&self) -> u64 {
        self.clock_ns
    }

    /// One captured frame: `wire_len` bytes on the wire at `ts_ns` (Unix time), of which `data`
    /// were captured. What it and the time before it caused is appended to `out`.
    #[inline]
    pub fn packet(
        &mut self,
        ts_ns: u64,
        wire_len: u64,
        link: LinkType,
        data: &[u8],
        out: &mut Vec<ConnEvent>,
    ) {
        self.advance(ts_ns, out);
        let h = &mut self.health;
        h.packets += 1;
        h.bytes += wire_len;
        let p = match parse_frame(link, data) {
            Ok(p) => p,
            Err(ParseError::NonIp) => return h.non_ip += 1,
            Err(ParseError::Truncated) => return h.truncated += 1,
            Err(ParseError::Malformed) => return h.parse_errors += 1,
            Err(ParseError::UnsupportedL4) => return h.unsupported_l4 += 1,
        };
        let u = update(&mut self.tables, &p, h, self.clock_ns, 1);
        for (key, value, at_ns) in self.tables.evicted.drain(..) {
            self.lifecycle.on_evicted(&key, &value, at_ns, out);
        }
        let Some(u) = u else {
            return;
        };
        if u.events != 0 {
            // SAFETY: `u.value` points into `self.tables.flows`, which nothing touched since
            // `update` returned it.
            let value = unsafe { *u.value };
            self.health.events_sent += 1;
            self.lifecycle.on_event(&u.key, &value, u.events, out);
        }
    }

    /// Moves the clock to `ts_ns`: idle deadlines and lingers that fall before it come due.
    pub fn advance(&mut self, ts_ns: u64, out: &mut Vec<ConnEvent>) {
        self.clock_ns = self.clock_ns.max(ts_ns);
        self.lifecycle.advance(self.clock_ns, &mut self.tables, out);
    }

    /// The end of the input: every connection still open is finalised (end reason `shutdown`)
    /// at the time of the last packet.
    pub fn finish(&mut self, out: &mut Vec<ConnEvent>) {
        self.lifecycle.flush(self.clock_ns, &mut self.tables, out);
    }
}

/// What a replay saw, for the summary line.
#[derive(Debug)]
pub struct ReplayReport {
    /// Each file and the packets read from it.
    pub files: Vec<(PathBuf, u64)>,
    pub connections: u64,
    pub anomalous: u64,
    pub health: Health,
    pub stats: LifecycleStats,
    /// The error that stopped reading, if any. Everything read before it was replayed and its
    /// connections finalised; the files after it were not read.
    pub error: Option<ReplayError>,
}

impl ReplayReport {
    /// `{"health": {...}, "capture": {...}, "replay": {...}}`, as live mode's summary line.
    pub fn summary_json(&self) -> serde_json::Value {
        let health: serde_json::Map<String, serde_json::Value> = Health::FIELD_NAMES
            .iter()
            .zip(self.health.as_array())
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        let files: Vec<serde_json::Value> = self
            .files
            .iter()
            .map(|(f, n)| serde_json::json!({"file": f.display().to_string(), "packets": n}))
            .collect();
        serde_json::json!({
            "health": health,
            "capture": self.stats,
            "replay": {
                "files": files,
                "packets": self.health.packets,
                "connections": self.connections,
                "anomalous": self.anomalous,
                "error": self.error.as_ref().map(|e| e.to_string()),
            },
        })
    }
}

/// Verdicts per scoring batch ([`crate::detect::Pipeline::process_events`]): the model walks
/// the trees for many rows at once (12 in lockstep), which is faster than one by one and gives
/// the same verdicts.
const SCORE_BATCH: usize = 256;

/// What replay hands to its caller, in order.
#[derive(Debug)]
pub enum Output<'a> {
    /// A finished connection and its verdict.
    Connection {
        record: &'a ConnectionRecord,
        scored: &'a crate::detect::Scored,
    },
    /// An incident's state change.
    Incident(&'a IncidentLine),
}

/// Connection events in order, scored in batches; finished connections and incident lines
/// handed to the sink in order.
struct Scorer<'a, S, E> {
    pipeline: &'a mut crate::detect::Pipeline,
    incidents: &'a mut IncidentTracker,
    sink: S,
    sink_error: Option<E>,
    events: Vec<ConnEvent>,
    verdicts: usize,
    connections: u64,
    anomalous: u64,
}

impl<S, E> Scorer<'_, S, E>
where
    S: FnMut(Output<'_>) -> Result<(), E>,
{
    fn push(&mut self, out: &mut Vec<ConnEvent>) {
        for ev in out.drain(..) {
            self.verdicts += usize::from(ev.record().is_some());
            self.events.push(ev);
            if self.verdicts >= SCORE_BATCH {
                self.flush();
            }
        }
    }

    fn emit(&mut self, o: Output<'_>) {
        if self.sink_error.is_none()
            && let Err(e) = (self.sink)(o)
        {
            self.sink_error = Some(e);
        }
    }

    fn flush(&mut self) {
        let scored = self.pipeline.process_events(&self.events);
        let events = std::mem::take(&mut self.events);
        let mut lines = Vec::new();
        let mut clock = 0;
        for (ev, s) in events.iter().filter(|e| e.record().is_some()).zip(&scored) {
            let Some(rec) = ev.record() else { continue };
            clock = clock.max(rec.final_unix_ns);
            self.incidents
                .observe(rec, s, rec.final_unix_ns, &mut lines);
            if let ConnEvent::Finished(record) = ev {
                self.connections += 1;
                self.anomalous += u64::from(s.verdict.anomalous);
                self.emit(Output::Connection { record, scored: s });
            }
            for line in lines.drain(..) {
                self.emit(Output::Incident(&line));
            }
        }
        self.incidents.tick(clock, &mut lines);
        for line in lines.drain(..) {
            self.emit(Output::Incident(&line));
        }
        self.events = events;
        self.events.clear();
        self.verdicts = 0;
    }
}

/// Replays `files` in order as one capture (their packets on one clock, as `mergecap -a` would
/// join them), scoring each connection with `pipeline` as it is finalised, grouping anomalous
/// ones into `incidents`, and handing finished connections and incident lines to `sink`, in
/// order. Reading stops at the first damaged file; what was read is still finalised and
/// reported, and the error is in the report. A `sink` error stops the output and is returned.
pub fn run<E>(
    files: &[PathBuf],
    config: ReplayConfig,
    pipeline: &mut crate::detect::Pipeline,
    incidents: &mut IncidentTracker,
    sink: impl FnMut(Output<'_>) -> Result<(), E>,
) -> Result<ReplayReport, E> {
    let mut r = Replayer::new(config);
    let mut scorer = Scorer {
        pipeline,
        incidents,
        sink,
        sink_error: None,
        events: Vec::new(),
        verdicts: 0,
        connections: 0,
        anomalous: 0,
    };
    let mut report = ReplayReport {
        files: Vec::new(),
        connections: 0,
        anomalous: 0,
        health: Health::default(),
        stats: LifecycleStats::default(),
        error: None,
    };
    let mut out = Vec::new();
    for file in files {
        let mut read = 0;
        let res = for_each_packet(file, |p| {
            read = p.number;
            r.packet(p.ts_ns, u64::from(p.wire_len), p.link, p.data, &mut out);
            if !out.is_empty() {
                scorer.push(&mut out);
            }
        });
        report.files.push((file.clone(), read));
        if let Err(e) = res {
            report.error = Some(e);
            break;
        }
    }
    r.finish(&mut out);
    scorer.push(&mut out);
    scorer.flush();
    let mut lines = Vec::new();
    scorer.incidents.finish(&mut lines);
    for line in &lines {
        scorer.emit(Output::Incident(line));
    }
    if let Some(e) = scorer.sink_error {
        return Err(e);
    }
    report.connections = scorer.connections;
    report.anomalous = scorer.anomalous;
    report.health = r.health();
    report.stats = r.stats();
    Ok(report)
}
