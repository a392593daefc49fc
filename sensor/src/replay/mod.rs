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

pub mod ecosystem;
pub mod output;
mod reader;

use std::{collections::VecDeque, path::PathBuf};

use rustc_hash::FxHashMap;
use sensor_common::{
    FlowKey, FlowValue, Health,
    encap::{Marks, Pending, count_error, follow, update_marked},
    flow::{FragKey, FragValue},
    parse::{ParseError, Parsed, link, next, parse_ethernet, parse_from, ppp_ip_version},
    slots::evictable,
    table::{FlowTables, Insert},
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
    pub table_size: u32,
    pub timeouts: Timeouts,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            table_size: CaptureConfig::DEFAULT_TABLE_SIZE,
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
        "{file}: packet {packet}: link type {link_type} is not supported (Ethernet, raw IP, Linux cooked v1 and v2, BSD loopback, PPP, Cisco HDLC and 802.11 captures are)"
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

/// Parses one captured frame of link type `link` with the kernel's parser: Ethernet as the
/// kernel's per-packet path does (what it hands on is followed by [`Replayer::packet`] as the
/// kernel's continuation does), the other link layers straight to IP.
#[inline]
pub fn parse_frame(link: LinkType, data: &[u8]) -> Result<Parsed, ParseError> {
    let (kind, off) = match link {
        LinkType::Ethernet => return parse_ethernet(data),
        LinkType::RawIp => (link::IP, 0),
        LinkType::Ipv4 => (link::IPV4, 0),
        LinkType::Ipv6 => (link::IPV6, 0),
        // Linux cooked capture (SLL): 16-byte header, protocol (an ethertype) at 14.
        LinkType::LinuxSll => (link::ETHERTYPE, 14),
        // SLL2: 20-byte header, protocol at 0.
        LinkType::LinuxSll2 => {
            let Some(proto) = data.get(0..2) else {
                return Err(ParseError::Truncated);
            };
            match u16::from_be_bytes([proto[0], proto[1]]) {
                sensor_common::parse::ethertype::IPV4 => (link::IPV4, 20),
                sensor_common::parse::ethertype::IPV6 => (link::IPV6, 20),
                _ => return Err(ParseError::NonIp),
            }
        }
        LinkType::Null => {
            let Some(family) = data.get(0..4) else {
                return Err(ParseError::Truncated);
            };
            let family = [family[0], family[1], family[2], family[3]];
            let known = |f: u32| match f {
                2 => Some(link::IPV4),
                // AF_INET6 on Linux, Windows, NetBSD/OpenBSD, FreeBSD, macOS.
                10 | 23 | 24 | 28 | 30 => Some(link::IPV6),
                _ => None,
            };
            match known(u32::from_le_bytes(family)).or(known(u32::from_be_bytes(family))) {
                Some(kind) => (kind, 4),
                None => return Err(ParseError::NonIp),
            }
        }
        LinkType::Ppp => {
            // Address 0xff and control 0x03 when present; a protocol field of one byte when
            // compressed (odd first byte), else two.
            let off = if data.starts_with(&[0xff, 0x03]) {
                2
            } else {
                0
            };
            let Some(&first) = data.get(off) else {
                return Err(ParseError::Truncated);
            };
            let (protocol, len) = if first & 1 == 1 {
                (u16::from(first), 1)
            } else {
                match data.get(off + 1) {
                    Some(&second) => (u16::from_be_bytes([first, second]), 2),
                    None => return Err(ParseError::Truncated),
                }
            };
            match ppp_ip_version(protocol)? {
                4 => (link::IPV4, off + len),
                _ => (link::IPV6, off + len),
            }
        }
        // Cisco HDLC: address, control, then an ethertype.
        LinkType::CiscoHdlc => (link::ETHERTYPE, 2),
        LinkType::Ieee80211 => (link::ETHERTYPE, wifi_ethertype(data, 0)?),
        // Radiotap: its length (little-endian) at 2.
        LinkType::Radiotap => {
            let len = le16_at(data, 2)?;
            (link::ETHERTYPE, wifi_ethertype(data, usize::from(len))?)
        }
        // PPI: its length at 2 and the link type it wraps at 4 (little-endian).
        LinkType::Ppi => {
            let len = le16_at(data, 2)?;
            if le16_at(data, 4)? != 105 {
                return Err(ParseError::NonIp);
            }
            (link::ETHERTYPE, wifi_ethertype(data, usize::from(len))?)
        }
    };
    parse_from(data, kind, off, 0)
}

fn le16_at(data: &[u8], off: usize) -> Result<u16, ParseError> {
    match data.get(off..off + 2) {
        Some(b) => Ok(u16::from_le_bytes([b[0], b[1]])),
        None => Err(ParseError::Truncated),
    }
}

/// The offset of the ethertype in the LLC/SNAP header of the 802.11 frame at `off`: data frames
/// with a payload, not protected. Anything else (management, control, encrypted, null data,
/// no SNAP) carries no IP the sensor can read.
fn wifi_ethertype(data: &[u8], off: usize) -> Result<usize, ParseError> {
    let Some(fc) = data.get(off..off + 2) else {
        return Err(ParseError::Truncated);
    };
    let (kind, subtype, flags) = ((fc[0] >> 2) & 3, fc[0] >> 4, fc[1]);
    // Data frames (type 2) other than the null-data subtypes (bit 2); not protected (0x40).
    if kind != 2 || subtype & 0x4 != 0 || flags & 0x40 != 0 {
        return Err(ParseError::NonIp);
    }
    let mut len = 24;
    if flags & 0x03 == 0x03 {
        // To and from the distribution system: a fourth address.
        len += 6;
    }
    if subtype & 0x8 != 0 {
        // QoS control, and an HT control field when the order bit says so.
        len += 2 + if flags & 0x80 != 0 { 4 } else { 0 };
    }
    let snap = off + len;
    match data.get(snap..snap + 6) {
        Some([0xaa, 0xaa, 0x03, _, _, _]) => Ok(snap + 6),
        Some(_) => Err(ParseError::NonIp),
        None => Err(ParseError::Truncated),
    }
}

/// The most levels [`Replayer::packet`] follows in one frame: the kernel's limit of tail calls
/// (`MAX_TAIL_CALL_CNT`), which the continuation program's chain of levels meets.
const MAX_LEVELS: usize = 33;

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
            tables: UserTables::new(config.table_size),
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
            Err(e) => return count_error(h, e, 1),
        };
        let (tables, lifecycle, clock) = (&mut self.tables, &mut self.lifecycle, self.clock_ns);
        let mut account = |h: &mut Health, p: &Parsed, marks| {
            let u = update_marked(tables, p, h, clock, 1, marks);
            // Flows the insert evicted to make room (a full table) are finished as they stood.
            for (key, value, at_ns) in tables.evicted.drain(..) {
                lifecycle.on_evicted(&key, &value, at_ns, out);
            }
            let Some(u) = u else {
                return;
            };
            if u.events != 0 {
                // SAFETY: `u.value` points into the flow table, which nothing touched since
                // `update` returned it (draining `evicted` leaves the table alone).
                let value = unsafe { *u.value };
                h.events_sent += 1;
                lifecycle.on_event(&u.key, &value, u.events, out);
            }
        };
        if p.next == next::NONE {
            return account(h, &p, Marks::default());
        }
        // What the kernel's continuation program does, one level per tail call.
        let mut pending = Pending {
            p,
            segments: 1,
            ..Pending::default()
        };
        for _ in 0..MAX_LEVELS {
            match follow(data, h, &pending, &mut account) {
                Some(next) => pending = next,
                None => return,
            }
        }
        h.too_deep += 1;
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
pub fn replay_files<E>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::flow::ipproto;

    /// IPv4/UDP 198.18.0.1:1000 -> 198.18.0.2:53 with 4 bytes.
    fn ip4() -> Vec<u8> {
        let mut f = vec![0x45, 0, 0, 32, 0, 1, 0, 0, 64, ipproto::UDP, 0, 0];
        f.extend([198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend([0x03, 0xe8, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
        f
    }

    /// IPv6/ICMPv6 echo request 2001:2::1 -> 2001:2::2.
    fn ip6() -> Vec<u8> {
        let mut f = vec![0x60, 0, 0, 0, 0, 8, ipproto::ICMPV6, 64];
        f.extend([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend([128, 0, 0, 0, 0, 9, 0, 1]);
        f
    }

    fn with(header: &[u8], ip: &[u8]) -> Vec<u8> {
        [header, ip].concat()
    }

    #[test]
    fn link_types_lead_to_ip() {
        let ok4 = |link, header: &[u8]| {
            let p = parse_frame(link, &with(header, &ip4())).unwrap();
            assert_eq!((p.ip_version, p.dport), (4, 53), "{link:?} {header:?}");
        };
        let ok6 = |link, header: &[u8]| {
            let p = parse_frame(link, &with(header, &ip6())).unwrap();
            assert_eq!((p.ip_version, p.icmp_type), (6, 128), "{link:?} {header:?}");
        };
        // BSD loopback: the family in either byte order; AF_INET6 of every system.
        ok4(LinkType::Null, &[2, 0, 0, 0]);
        ok4(LinkType::Null, &[0, 0, 0, 2]);
        for af6 in [10u32, 24, 28, 30] {
            ok6(LinkType::Null, &af6.to_le_bytes());
            ok6(LinkType::Null, &af6.to_be_bytes());
        }
        assert_eq!(
            parse_frame(LinkType::Null, &with(&[7, 0, 0, 0], &ip4())),
            Err(ParseError::NonIp)
        );
        // PPP: with and without address and control, with a compressed protocol field.
        ok4(LinkType::Ppp, &[0xff, 0x03, 0x00, 0x21]);
        ok4(LinkType::Ppp, &[0x00, 0x21]);
        ok4(LinkType::Ppp, &[0x21]);
        ok6(LinkType::Ppp, &[0xff, 0x03, 0x00, 0x57]);
        assert_eq!(
            parse_frame(
                LinkType::Ppp,
                &with(&[0xff, 0x03, 0xc0, 0x21], &[1, 1, 0, 4])
            ),
            Err(ParseError::NonIp)
        );
        // Cisco HDLC: address, control, ethertype.
        ok4(LinkType::CiscoHdlc, &[0x0f, 0x00, 0x08, 0x00]);
        ok6(LinkType::CiscoHdlc, &[0x8f, 0x00, 0x86, 0xdd]);
        // Linux cooked v1 (protocol at 14) and v2 (protocol at 0, 20-byte header).
        let mut sll = vec![0u8; 14];
        sll.extend([0x08, 0x00]);
        ok4(LinkType::LinuxSll, &sll);
        let mut sll2 = vec![0x86, 0xdd];
        sll2.extend([0u8; 18]);
        ok6(LinkType::LinuxSll2, &sll2);
        // 802.11 data frames with LLC/SNAP: plain, QoS with four addresses, behind radiotap
        // and PPI; management frames and protected ones are not IP.
        let mut wifi = vec![0x08, 0x00];
        wifi.extend([0u8; 22]);
        wifi.extend([0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
        ok4(LinkType::Ieee80211, &wifi);
        let mut qos = vec![0x88, 0x03];
        qos.extend([0u8; 22 + 6 + 2]);
        qos.extend([0xaa, 0xaa, 0x03, 0, 0, 0, 0x86, 0xdd]);
        ok6(LinkType::Ieee80211, &qos);
        ok4(
            LinkType::Radiotap,
            &[&[0, 0, 8, 0, 0, 0, 0, 0][..], &wifi].concat(),
        );
        ok4(
            LinkType::Ppi,
            &[&[0, 0, 8, 0, 105, 0, 0, 0][..], &wifi].concat(),
        );
        let mut beacon = wifi.clone();
        beacon[0] = 0x80;
        let mut protected = wifi.clone();
        protected[1] = 0x40;
        for f in [beacon, protected] {
            assert_eq!(
                parse_frame(LinkType::Ieee80211, &with(&f, &ip4())),
                Err(ParseError::NonIp)
            );
        }
        // Raw IP of either version, and a header cut short.
        ok4(LinkType::RawIp, &[]);
        ok6(LinkType::RawIp, &[]);
        for link in [
            LinkType::Null,
            LinkType::Ppp,
            LinkType::CiscoHdlc,
            LinkType::LinuxSll2,
        ] {
            assert_eq!(
                parse_frame(link, &[]),
                Err(ParseError::Truncated),
                "{link:?}"
            );
        }
    }
}
