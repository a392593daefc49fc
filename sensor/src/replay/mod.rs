//! Offline analysis: a capture file run through exactly what the live sensor does.
//!
//! ```text
//! pcap / pcapng ─► reader (pcap-file) ─► link layer ─► sensor_common::parse ─► table::update
//!   (the kernel program's own per-packet function, over user-space maps: [`UserTables`])
//!   ─► events and idle sweeps on the capture's clock ([`Replayer`], mirroring `capture.rs`)
//!   ─► ConnectionRecord ─► detect::Pipeline (the live feature engine and model) ─► rows
//! ```
//!
//! Parity with live mode is the point, so nothing here re-implements accounting: the packet
//! parser and the flow-table update are `sensor_common`'s, compiled once for the kernel and once
//! for this module. What the live agent does in user space (finalise a connection when the kernel
//! signals its end, keep a finished entry lingering so trailing ACKs do not open a phantom
//! connection, sweep idle flows with per-protocol timeouts, flush at the end) is mirrored by
//! [`Replayer`] with the capture's timestamps as the clock, including the sweep cadence, so that
//! records reach the feature engine in the order live mode would have produced them.
//!
//! What cannot be the same: a capture has no GSO super-packets (each frame counts once, as on the
//! wire), and the kernel's timestamps are its own monotonic clock where replay uses the capture's.

pub mod output;
mod reader;

use std::{collections::VecDeque, path::PathBuf, time::Duration};

use rustc_hash::FxHashMap;
use sensor_common::{
    FlowKey, FlowValue, Health,
    flow::{FragKey, FragValue, event_reason},
    parse::{ParseError, Parsed, ethertype, parse_ethernet, parse_ipv4, parse_ipv6},
    table::{FlowTables, Insert, update},
};

use crate::{
    capture::{CaptureConfig, CaptureStats, Timeouts, idle_timeout, tcp_finished},
    flows::{ConnectionRecord, EndReason},
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
    /// How long a finished TCP connection's entry lingers after it was reported.
    pub close_linger: Duration,
    /// The live capture loop's tick (`--sweep-interval-ms`): lingering entries are removed and
    /// idle scans happen on these ticks of the capture clock, as live.
    pub sweep_interval: Duration,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        let c = CaptureConfig::default();
        ReplayConfig {
            table_capacity: c.table_capacity,
            timeouts: c.timeouts,
            close_linger: c.close_linger,
            sweep_interval: Duration::from_millis(250),
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
}

impl UserTables {
    pub fn new(capacity: u32) -> UserTables {
        UserTables {
            flows: FxHashMap::default(),
            capacity: capacity as usize,
            frags: FxHashMap::default(),
            frag_order: VecDeque::new(),
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

impl FlowTables for UserTables {
    #[inline]
    fn flow_ptr(&mut self, key: &FlowKey) -> Option<*mut FlowValue> {
        self.flows.get_mut(key).map(|v| v as *mut FlowValue)
    }

    #[inline]
    fn flow_insert(&mut self, key: &FlowKey, value: &FlowValue) -> Insert {
        if self.flows.contains_key(key) {
            return Insert::Exists;
        }
        // The kernel table refuses a new key once it holds its capacity (its `FLOW_COUNT`;
        // `sensor_common::slots` explains why it never runs out of slots before).
        if self.flows.len() >= self.capacity {
            return Insert::Full;
        }
        self.flows.insert(*key, *value);
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

/// The live sensor's user-side connection lifecycle (`capture::Capture`) on a capture's clock.
///
/// Mirrors, step for step: `drain_events` (here at the packet that finished the connection:
/// replay has no ring buffer to fill, so `ringbuf_drops` stays 0), `tick` (lingering expiry and
/// the idle scan every quarter of the shortest timeout, clamped to 50 ms..5 s), `sweep` and the
/// final flush of `capture::run`. Records of one scan are emitted in end-time order (live mode
/// walks the BPF map in hash order), so that replay is deterministic.
#[derive(Debug)]
pub struct Replayer {
    tables: UserTables,
    health: Health,
    stats: CaptureStats,
    config: ReplayConfig,
    reported: FxHashMap<FlowKey, u64>,
    lingering: VecDeque<(u64, FlowKey, u64)>,
    /// The replay clock: the latest capture timestamp seen (the kernel's clock never goes back;
    /// a capture's may, by a little, across CPUs).
    clock_ns: u64,
    /// The next tick of the live loop, on the capture clock; `None` before the first packet.
    next_tick_ns: Option<u64>,
    next_scan_ns: u64,
}

impl Replayer {
    pub fn new(config: ReplayConfig) -> Replayer {
        Replayer {
            tables: UserTables::new(config.table_capacity),
            health: Health::default(),
            stats: CaptureStats::default(),
            config,
            reported: FxHashMap::default(),
            lingering: VecDeque::new(),
            clock_ns: 0,
            next_tick_ns: None,
            next_scan_ns: 0,
        }
    }

    /// The health counters, as the kernel would have counted them.
    pub fn health(&self) -> Health {
        self.health
    }

    /// The user-side counters, as `capture::Capture::stats`.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    pub fn tables(&self) -> &UserTables {
        &self.tables
    }

    /// The replay clock (latest capture timestamp), Unix nanoseconds.
    pub fn clock_ns(&self) -> u64 {
        self.clock_ns
    }

    /// One captured frame: `wire_len` bytes on the wire at `ts_ns` (Unix time), of which `data`
    /// were captured. Finalised connections are appended to `out`, in the order live mode would
    /// have finalised them.
    #[inline]
    pub fn packet(
        &mut self,
        ts_ns: u64,
        wire_len: u64,
        link: LinkType,
        data: &[u8],
        out: &mut Vec<ConnectionRecord>,
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
        let Some(u) = update(&mut self.tables, &p, h, self.clock_ns, 1) else {
            return;
        };
        if u.reason != 0 {
            // SAFETY: `u.value` points into `self.tables.flows`, which nothing touched since
            // `update` returned it.
            let value = unsafe { *u.value };
            self.health.events_sent += 1;
            self.event(u.key, value, u.reason, out);
        }
    }

    /// Moves the clock to `ts_ns`, running the live loop's ticks that fall before it.
    pub fn advance(&mut self, ts_ns: u64, out: &mut Vec<ConnectionRecord>) {
        self.clock_ns = self.clock_ns.max(ts_ns);
        let interval = (self.config.sweep_interval.as_nanos() as u64).max(1);
        let mut next = match self.next_tick_ns {
            Some(t) => t,
            // The live loop's first tick comes at once (tokio interval).
            None => self.clock_ns,
        };
        while next <= self.clock_ns {
            // A tick does something only once the oldest lingering entry is due or a scan is:
            // skip the empty ticks before that (exactly what running them would do).
            let due = self
                .lingering
                .front()
                .map_or(self.next_scan_ns, |l| l.0.min(self.next_scan_ns));
            if due > next {
                let skip = (due - next).div_ceil(interval);
                next = next.saturating_add(skip.saturating_mul(interval));
                continue;
            }
            self.tick(next, out);
            next += interval;
        }
        self.next_tick_ns = Some(next);
    }

    /// The end of the input: what `capture::run` does at shutdown, at the time of the last
    /// packet. Every connection still open is finalised (reason `Shutdown`).
    pub fn finish(&mut self, out: &mut Vec<ConnectionRecord>) {
        self.sweep(self.clock_ns, true, out);
    }

    fn event(&mut self, key: FlowKey, v: FlowValue, reason: u32, out: &mut Vec<ConnectionRecord>) {
        self.stats.events += 1;
        if self.reported.get(&key) == Some(&v.first_seen_ns) {
            self.stats.duplicate_events += 1;
            return;
        }
        let reason = if reason == event_reason::RST {
            EndReason::Rst
        } else {
            EndReason::Fin
        };
        self.mark_reported(key, &v);
        self.emit(&key, &v, reason, out);
    }

    fn mark_reported(&mut self, key: FlowKey, v: &FlowValue) {
        self.reported.insert(key, v.first_seen_ns);
        let due = v
            .last_seen_ns
            .saturating_add(self.config.close_linger.as_nanos() as u64);
        self.lingering.push_back((due, key, v.first_seen_ns));
    }

    fn tick(&mut self, now_ns: u64, out: &mut Vec<ConnectionRecord>) {
        self.expire_lingering(now_ns);
        if now_ns >= self.next_scan_ns {
            self.sweep(now_ns, false, out);
            let t = &self.config.timeouts;
            let shortest = t.tcp_established.min(t.tcp_attempt).min(t.udp).min(t.icmp);
            let every = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
            self.next_scan_ns = now_ns + every.as_nanos() as u64;
        }
    }

    fn expire_lingering(&mut self, now_ns: u64) {
        let linger_ns = self.config.close_linger.as_nanos() as u64;
        while let Some(&(due, key, first_seen)) = self.lingering.front() {
            if due > now_ns {
                break;
            }
            self.lingering.pop_front();
            if self.reported.get(&key) != Some(&first_seen) {
                continue;
            }
            match self.tables.flows.get(&key) {
                Some(v) if v.first_seen_ns == first_seen => {
                    if now_ns.saturating_sub(v.last_seen_ns) >= linger_ns {
                        self.tables.flows.remove(&key);
                        self.reported.remove(&key);
                    } else {
                        let due = v.last_seen_ns + linger_ns;
                        self.lingering.push_back((due, key, first_seen));
                    }
                }
                _ => {
                    self.reported.remove(&key);
                }
            }
        }
    }

    fn sweep(&mut self, now_ns: u64, flush_all: bool, out: &mut Vec<ConnectionRecord>) {
        self.stats.table_entries = self.tables.flows.len() as u64;
        let mut remove = Vec::new();
        let mut finalised: Vec<(FlowKey, FlowValue, EndReason)> = Vec::new();
        for (key, v) in &self.tables.flows {
            if self.reported.get(key) == Some(&v.first_seen_ns) {
                if flush_all {
                    remove.push(*key);
                }
                continue;
            }
            if let Some(reason) = tcp_finished(key, v) {
                // Replay signals every finish at once, so this only happens to a connection
                // finished by the very packets of this instant; handled as live does.
                finalised.push((*key, *v, reason));
                if flush_all {
                    remove.push(*key);
                }
                continue;
            }
            if flush_all {
                finalised.push((*key, *v, EndReason::Shutdown));
                remove.push(*key);
            } else if now_ns.saturating_sub(v.last_seen_ns)
                >= idle_timeout(&self.config.timeouts, key, v).as_nanos() as u64
            {
                finalised.push((*key, *v, EndReason::Idle));
                remove.push(*key);
            }
        }
        finalised.sort_unstable_by_key(|(k, v, _)| (v.last_seen_ns, v.first_seen_ns, *k));
        for (key, v, reason) in finalised {
            if matches!(reason, EndReason::Fin | EndReason::Rst) {
                self.stats.finished_by_sweep += 1;
                self.mark_reported(key, &v);
            }
            self.emit(&key, &v, reason, out);
        }
        for key in remove {
            self.tables.flows.remove(&key);
            self.reported.remove(&key);
        }
        if flush_all {
            self.lingering.clear();
        }
    }

    fn emit(
        &mut self,
        key: &FlowKey,
        v: &FlowValue,
        reason: EndReason,
        out: &mut Vec<ConnectionRecord>,
    ) {
        // Capture timestamps are Unix time already: no clock offset.
        let Some(rec) = ConnectionRecord::from_flow(key, v, 0, reason) else {
            return;
        };
        self.stats.count_record(reason);
        out.push(rec);
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
    pub stats: CaptureStats,
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

/// Connections scored together with [`crate::detect::Pipeline::process_batch`]: the same verdicts as
/// one at a time, about 1.4 times faster (the trees are walked by 8 rows in lockstep).
const SCORE_BATCH: usize = 256;

/// Connections in finalisation order, scored in batches, handed to the sink in the same order.
struct Scorer<'a, S, E> {
    pipeline: &'a mut crate::detect::Pipeline,
    sink: S,
    sink_error: Option<E>,
    records: Vec<ConnectionRecord>,
    connections: u64,
    anomalous: u64,
}

impl<S, E> Scorer<'_, S, E>
where
    S: FnMut(&ConnectionRecord, &crate::detect::Scored) -> Result<(), E>,
{
    fn push(&mut self, out: &mut Vec<ConnectionRecord>) {
        for rec in out.drain(..) {
            self.records.push(rec);
            if self.records.len() >= SCORE_BATCH {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        let scored = self.pipeline.process_batch(&self.records);
        for (rec, s) in self.records.drain(..).zip(scored) {
            self.connections += 1;
            self.anomalous += u64::from(s.verdict.anomalous);
            if self.sink_error.is_none()
                && let Err(e) = (self.sink)(&rec, &s)
            {
                self.sink_error = Some(e);
            }
        }
    }
}

/// Replays `files` in order as one capture (their packets on one clock, as `mergecap -a` would
/// join them), scoring each connection with `pipeline` as it is finalised and handing it to
/// `sink`, in finalisation order. Reading stops at the first damaged file; what was read is still
/// finalised and reported, and the error is in the report. A `sink` error stops the output and
/// is returned.
pub fn run<E>(
    files: &[PathBuf],
    config: ReplayConfig,
    pipeline: &mut crate::detect::Pipeline,
    sink: impl FnMut(&ConnectionRecord, &crate::detect::Scored) -> Result<(), E>,
) -> Result<ReplayReport, E> {
    let mut r = Replayer::new(config);
    let mut scorer = Scorer {
        pipeline,
        sink,
        sink_error: None,
        records: Vec::with_capacity(SCORE_BATCH),
        connections: 0,
        anomalous: 0,
    };
    let mut report = ReplayReport {
        files: Vec::new(),
        connections: 0,
        anomalous: 0,
        health: Health::default(),
        stats: CaptureStats::default(),
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
    if let Some(e) = scorer.sink_error {
        return Err(e);
    }
    report.connections = scorer.connections;
    report.anomalous = scorer.anomalous;
    report.health = r.health();
    report.stats = r.stats();
    Ok(report)
}
