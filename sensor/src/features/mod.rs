//! The KDD feature engine: connection events ([`ConnEvent`]) in, the 41-column [`KddFeatures`]
//! of each finished connection out, in the semantics and ranges of the NSL-KDD training data.
//!
//! One file per feature family: [`basic`] (1-9 and the flag mapping), [`service`] (port / ICMP
//! type -> service), [`window`] (the time window, 23-31, and the host window, 32-41); [`counts`]
//! holds the incremental counters both windows share.
//!
//! # A connection's moment
//!
//! The window features describe the connection's own moment, whatever happens later: when the
//! lifecycle finalises it (idle timeouts), how it batches records, live or replay. The moment
//! is when the connection's handshake was decided: the answer to its originator's SYN (a
//! SYN-ACK, a RST, or the originator's own ACK where the answer was not seen), or its first
//! packet for a connection that was never answered and for UDP, ICMP and TCP picked up
//! mid-stream. The windows hold the connections that *began* up to that moment, each with the
//! outcome of its own handshake as known then: a SYN still unanswered counts as a SYN error
//! (KDD `S0`), a SYN refused with a RST as a REJ error, anything else as neither. The current
//! connection itself counts with its final state (its KDD `flag`). `docs/features.md` has the
//! evidence for this choice.
//!
//! So an `Opened` event places a connection in the windows and takes its snapshot, an
//! `Answered` event updates its status (in every snapshot taken afterwards) and retakes its own
//! snapshot, and a `Finished` event combines the snapshot with the record's basic features.
//!
//! * Content features 10-22 are always 0: a header-only sensor does not observe login sessions.
//!   Deployed models use [`crate::kdd::FeatureSet::Flow`], which leaves them out.
//! * Rates are rounded to 2 decimals by default ([`FeatureConfig::round_rates`]): the data prints
//!   two decimals, so trees learned thresholds between those values (e.g. 0.995); unrounded rates
//!   such as 0.996 would fall on the other side of a split the model never saw fall that way.
//! * Each event costs O(1) amortized (a few hash-map updates per window) and the engine's memory
//!   is bounded by the window caps and the open connections, not by the number of distinct
//!   hosts.

pub mod basic;
pub mod cold_contexts;
pub mod counts;
mod resume;
pub mod service;
pub mod window;

#[cfg(test)]
mod tests;

use std::{hash::BuildHasher, net::IpAddr};

use crate::{
    flows::{ConnEvent, ConnId, ConnStart, ConnectionRecord, EndReason},
    hashing::{Map, Seeded},
    kdd::{KddFeatures, NUM_FEATURES},
};

use counts::{HostKey, WindowEntry};
use resume::Resumptions;
use window::{Snapshot, Windows};

/// Saturation of `count` and `srv_count` (the data's maximum).
pub const TIME_COUNT_MAX: u32 = 511;
/// Saturation of `dst_host_count` and `dst_host_srv_count` (the data's maximum).
pub const HOST_COUNT_MAX: u32 = 255;

/// Engine settings. Defaults reproduce the training data's semantics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureConfig {
    /// Length of the time-based window (KDD: 2 s).
    pub time_window_ns: u64,
    /// Cap on connections held in the time-based window; bounds its memory at high rates.
    /// Each held connection costs about 250 heap bytes (queue entry plus its share of the
    /// per-host maps, measured by `a_million_distinct_hosts_stay_bounded`), so the default
    /// 2^20 (a full 2 s window up to 524,288 connections/s) costs at most about 260 MB; lower it
    /// on small machines: past the cap the window covers less than 2 s and the early expiries are
    /// counted in [`EngineStats::time_window_overflow_evictions_total`].
    pub max_time_window_connections: usize,
    /// Connections in the host-based window, the current one included (see [`window`]).
    pub host_window_connections: usize,
    /// Unnamed TCP/UDP ports below this are `private`, the rest `other` (see [`service`]).
    pub private_port_below: u16,
    /// Round rates to 2 decimals as the data files print them.
    pub round_rates: bool,
    /// Until the host window holds its `host_window_connections` (the first connections after
    /// the sensor starts, or of a capture), fill the slots not seen yet with the training
    /// data's normal traffic ([`window::COLD_PRIOR`]): the connections the sensor has not seen
    /// are assumed to be like the normal traffic of the training data, not absent. The training
    /// data's windows are full, so small counts there mean rare hosts and services
    /// (attack-like), which is not what a sensor that just started, or a short capture, knows.
    /// The verdict on such a connection is the mean over [`cold_contexts::COLD_CONTEXTS`]
    /// ([`ColdWindow::contexts`]); the features it carries use the mean composition.
    pub fill_cold_host_window: bool,
    /// A UDP or ICMP conversation that its idle timeout ended and that resumes on the same
    /// address and port pair within this gap (from its last packet) is the same conversation
    /// for the windows: its next record does not enter them again (see `features::resume`). So
    /// the window features do not depend on UDP/ICMP idle timeouts up to this gap (default
    /// 60 s, the shipped timeouts, Zeek's).
    pub resume_gap_ns: u64,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            time_window_ns: 2_000_000_000,
            max_time_window_connections: 1 << 20,
            host_window_connections: 255,
            private_port_below: 1024,
            round_rates: true,
            fill_cold_host_window: true,
            resume_gap_ns: 60_000_000_000,
        }
    }
}

/// A setting the engine cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeatureConfigError {
    #[error("time window must be longer than 0 ns")]
    EmptyTimeWindow,
    #[error("window capacity {field} must be at least 1 (the current connection)")]
    EmptyWindow { field: &'static str },
}

impl FeatureConfig {
    fn validate(&self) -> Result<(), FeatureConfigError> {
        if self.time_window_ns == 0 {
            return Err(FeatureConfigError::EmptyTimeWindow);
        }
        if self.max_time_window_connections == 0 {
            return Err(FeatureConfigError::EmptyWindow {
                field: "max_time_window_connections",
            });
        }
        if self.host_window_connections == 0 {
            return Err(FeatureConfigError::EmptyWindow {
                field: "host_window_connections",
            });
        }
        Ok(())
    }
}

/// Health and size figures of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineStats {
    pub connections_total: u64,
    /// Finished connections whose `Opened` event the engine never saw (its windows were then
    /// taken at the finish, an approximation; the lifecycle counts why).
    pub unopened_total: u64,
    /// Time-window entries expired early because of `max_time_window_connections`.
    pub time_window_overflow_evictions_total: u64,
    pub time_window_connections: usize,
    pub time_window_hosts: usize,
    pub host_window_hosts: usize,
    /// Open connections waiting for their end.
    pub open_connections: usize,
    /// Connections that resumed a UDP/ICMP conversation its idle timeout ended, and so did
    /// not enter the windows again ([`FeatureConfig::resume_gap_ns`]).
    pub resumed_total: u64,
    /// Ended conversations forgotten early because the memory of them was full (a resumption
    /// of one enters the windows as a new connection).
    pub resume_forgotten_total: u64,
    /// Heap bytes held by the windows (capacity-based estimate).
    pub heap_bytes: usize,
}

/// An open connection: its place in the windows (none for a resumed conversation) and its
/// latest snapshot.
#[derive(Clone, Copy, Debug)]
struct OpenEntry {
    seq: Option<u64>,
    entry: WindowEntry,
    snapshot: Snapshot,
}

/// The open connections by id. The entries (about 120 bytes) and their ids live in a slab,
/// and the index holds only their slab positions (4 bytes each, the ids compared in the
/// slab): with the tens of thousands of connections a busy gateway holds open, an index of
/// `(id, position)` pairs (56 bytes each) outgrew the caches, and its probes were a tenth of
/// the live path's time (`docs/performance.md`, "The open connections' index").
#[derive(Debug, Default)]
struct OpenConnections {
    index: hashbrown::HashTable<u32>,
    /// Hashes the ids: seeded, as every map of traffic-chosen keys (`crate::hashing`).
    hasher: Seeded,
    slab: Vec<(ConnId, OpenEntry)>,
    free: Vec<u32>,
}

impl OpenConnections {
    fn position(&self, id: &ConnId) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(self.hasher.hash_one(id), |&i| slab[i as usize].0 == *id)
            .copied()
    }

    fn contains_key(&self, id: &ConnId) -> bool {
        self.position(id).is_some()
    }

    fn get(&self, id: &ConnId) -> Option<&OpenEntry> {
        self.position(id).map(|i| &self.slab[i as usize].1)
    }

    fn get_mut(&mut self, id: &ConnId) -> Option<&mut OpenEntry> {
        self.position(id).map(|i| &mut self.slab[i as usize].1)
    }

    /// Adds or replaces `id`'s entry; the one it replaced.
    fn insert(&mut self, id: ConnId, e: OpenEntry) -> Option<OpenEntry> {
        let hash = self.hasher.hash_one(id);
        let (slab, hasher) = (&mut self.slab, &self.hasher);
        match self.index.entry(
            hash,
            |&i| slab[i as usize].0 == id,
            |&i| hasher.hash_one(slab[i as usize].0),
        ) {
            hashbrown::hash_table::Entry::Occupied(o) => {
                Some(std::mem::replace(&mut slab[*o.get() as usize].1, e))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                let i = match self.free.pop() {
                    Some(i) => {
                        slab[i as usize] = (id, e);
                        i
                    }
                    None => {
                        slab.push((id, e));
                        (slab.len() - 1) as u32
                    }
                };
                v.insert(i);
                None
            }
        }
    }

    fn remove(&mut self, id: &ConnId) -> Option<OpenEntry> {
        let slab = &self.slab;
        let (i, _) = self
            .index
            .find_entry(self.hasher.hash_one(id), |&i| slab[i as usize].0 == *id)
            .ok()?
            .remove();
        self.free.push(i);
        Some(self.slab[i as usize].1)
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn heap_bytes(&self) -> usize {
        self.index.capacity() * (size_of::<u32>() + 1)
            + self.slab.capacity() * size_of::<(ConnId, OpenEntry)>()
            + self.free.capacity() * size_of::<u32>()
    }
}

/// Turns connection events into KDD feature vectors; see the module docs.
#[derive(Debug)]
pub struct FeatureEngine {
    config: FeatureConfig,
    windows: Windows,
    open: OpenConnections,
    /// Open FTP control connections by (client, server) host pair ([`service::ftp_data_of`]).
    ftp_sessions: Map<(HostKey, HostKey), u32>,
    resumptions: Resumptions,
    connections_total: u64,
    unopened_total: u64,
    /// The host window as the last features computed saw it, when it was cold: what
    /// [`ColdWindow::contexts`] completes with each of [`cold_contexts::COLD_CONTEXTS`].
    last_cold: Option<ColdWindow>,
}

/// A cold host window's known part: the snapshot (with the connection's own final status) and
/// how many of its slots were not seen yet. Small and `Copy`, so that a verdict's explanation
/// can rebuild the contexts it was the mean over ([`ColdWindow::contexts`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColdWindow {
    snap: Snapshot,
    unseen: f64,
    round: bool,
}

impl ColdWindow {
    /// The cold window of a connection the sensor saw alone, the first it saw: of a host window
    /// of `host_window_connections`, only the connection itself is known, with the error
    /// status of its `flag` (an index into [`crate::kdd::FLAGS`]). The training pipeline scores
    /// validation rows this way to choose the cold thresholds
    /// (`crate::model::ModelData::cold_thresholds`).
    pub fn lone(flag: u8, host_window_connections: usize, round: bool) -> ColdWindow {
        let own = counts::ErrCounts {
            n: 1,
            syn_errors: u32::from(basic::is_syn_error(flag)),
            rej_errors: u32::from(basic::is_rej_error(flag)),
            distinct: 1,
        };
        let host = counts::WindowView {
            host: own,
            service: own,
            host_service: 1,
            host_src_port: 1,
        };
        // The 2 s window does not track source ports.
        let time = counts::WindowView {
            host_src_port: 0,
            ..host
        };
        ColdWindow {
            snap: Snapshot {
                time,
                host,
                host_window_len: 1,
                own_syn_error: own.syn_errors > 0,
                own_rej_error: own.rej_errors > 0,
            },
            unseen: host_window_connections.saturating_sub(1) as f64,
            round,
        }
    }

    /// The share of the host window not seen, of the slots other than the connection's own:
    /// 1 for the first connection a sensor sees, falling to 0 as the window fills. The
    /// verdict's thresholds move from the cold ones to the warm ones with it
    /// (`crate::model::Model::thresholds_at`).
    pub fn unseen_share(&self) -> f64 {
        let others = self.unseen + f64::from(self.snap.host_window_len.saturating_sub(1));
        if others > 0.0 {
            self.unseen / others
        } else {
            0.0
        }
    }

    /// The features `base` of its connection once per context of
    /// [`cold_contexts::COLD_CONTEXTS`] (appended to `out`): its host-window features with the
    /// slots not seen yet filled like the host window of one normal connection of the training
    /// data.
    pub fn contexts(&self, base: &KddFeatures, out: &mut Vec<KddFeatures>) {
        for prior in &cold_contexts::COLD_CONTEXTS {
            let mut f = base.0;
            host_features(
                &HostCounts::of(&self.snap, self.unseen, prior),
                self.round,
                &mut f,
            );
            out.push(KddFeatures(f));
        }
    }
}

/// Whether a connection is an FTP session's control connection.
fn is_ftp_control(id: &ConnId) -> bool {
    id.transport == crate::flows::Transport::Tcp && id.resp_port == service::FTP_CONTROL_PORT
}

/// The window key of an address: IPv4 as v4-mapped IPv6, so both families share one map.
pub fn host_key(addr: IpAddr) -> HostKey {
    match addr {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl FeatureEngine {
    pub fn new(config: FeatureConfig) -> Result<FeatureEngine, FeatureConfigError> {
        config.validate()?;
        Ok(FeatureEngine {
            windows: Windows::new(
                config.time_window_ns,
                config.host_window_connections,
                config.max_time_window_connections,
            ),
            config,
            open: OpenConnections::default(),
            ftp_sessions: Map::default(),
            resumptions: Resumptions::default(),
            connections_total: 0,
            unopened_total: 0,
            last_cold: None,
        })
    }

    /// Takes one event; returns the features of a finished connection.
    ///
    /// Connections of transports the KDD data does not have (SCTP, other IP protocols) stay
    /// out of the windows, as they were out of the data: their features are their own basic
    /// ones (they are not scored, see `crate::detect::NotScored`).
    pub fn on_event(&mut self, ev: &ConnEvent) -> Option<KddFeatures> {
        match ev {
            ConnEvent::Opened(s) if !s.id.transport.is_kdd() => None,
            ConnEvent::Ongoing(rec) | ConnEvent::Finished(rec) if !rec.transport.is_kdd() => {
                Some(self.outside_kdd(rec))
            }
            ConnEvent::Opened(s) => {
                self.opened(s);
                None
            }
            ConnEvent::Answered {
                id,
                at_unix_ns,
                refused,
            } => {
                self.answered(id, *at_unix_ns, *refused);
                None
            }
            ConnEvent::Ongoing(rec) => Some(self.ongoing(rec)),
            ConnEvent::Finished(rec) => Some(self.finished(rec)),
            ConnEvent::Settled(_) => None,
        }
    }

    /// The features of a connection still open, as of its record so far (its place in the
    /// windows stays until it finishes).
    pub fn ongoing(&mut self, rec: &ConnectionRecord) -> KddFeatures {
        let id = rec.id();
        if !self.open.contains_key(&id) {
            self.unopened_total += 1;
            self.open_from_record(rec);
        }
        match self.open.get(&id) {
            Some(o) => self.features(rec, o.entry.service, o.snapshot),
            None => self.features(rec, 0, Snapshot::default()),
        }
    }

    /// A connection began: it enters the windows, unanswered if it awaits an answer, unless it
    /// resumes a UDP/ICMP conversation its idle timeout ended (`features::resume`): that one is
    /// already in them, from when it began.
    pub fn opened(&mut self, s: &ConnStart) {
        let (orig, resp) = (host_key(s.id.orig_addr), host_key(s.id.resp_addr));
        let session_open = !self.ftp_sessions.is_empty()
            && (self.ftp_sessions.contains_key(&(orig, resp))
                || self.ftp_sessions.contains_key(&(resp, orig)));
        let service = service::ftp_data_of(
            s,
            service::service_index(s, self.config.private_port_below),
            session_open,
        );
        if is_ftp_control(&s.id) {
            *self.ftp_sessions.entry((orig, resp)).or_default() += 1;
        }
        let entry = WindowEntry {
            host: self.windows.acquire_host(resp),
            service,
            service_key: service::window_key(s, service),
            syn_error: s.awaits_answer,
            rej_error: false,
            src_port: s.id.orig_port,
        };
        let start = s.id.start_unix_ns;
        let (seq, snapshot) = if self.resumptions.resumes(&s.id, self.config.resume_gap_ns) {
            (None, self.windows.snapshot_outside(start, &entry))
        } else {
            let seq = self.windows.open(start, entry);
            (Some(seq), self.windows.snapshot(seq, &entry))
        };
        let replaced = self.open.insert(
            s.id,
            OpenEntry {
                seq,
                entry,
                snapshot,
            },
        );
        if let Some(old) = replaced {
            self.windows.release_host(old.entry.host);
            self.ftp_session_ended(&s.id);
        }
    }

    /// A connection's handshake was decided at `at_unix_ns`: its status changes in the windows
    /// and its own moment is now.
    pub fn answered(&mut self, id: &ConnId, at_unix_ns: u64, refused: bool) {
        self.windows.advance(at_unix_ns);
        let Some(o) = self.open.get_mut(id) else {
            return;
        };
        let entry = WindowEntry {
            syn_error: false,
            rej_error: refused,
            ..o.entry
        };
        o.entry = entry;
        o.snapshot = match o.seq {
            Some(seq) => {
                self.windows.update(seq, entry);
                self.windows.snapshot_answered(seq, &entry)
            }
            None => self.windows.snapshot_outside(at_unix_ns, &entry),
        };
    }

    /// A connection finished: its 41 features.
    pub fn finished(&mut self, rec: &ConnectionRecord) -> KddFeatures {
        let id = rec.id();
        let open = match self.open.remove(&id) {
            Some(o) => Some(o),
            None => {
                self.unopened_total += 1;
                self.open_from_record(rec);
                self.open.remove(&id)
            }
        };
        self.connections_total += 1;
        if rec.end_reason == EndReason::Idle {
            self.resumptions.ended(rec, self.config.resume_gap_ns);
        }
        match open {
            Some(o) => {
                self.windows.release_host(o.entry.host);
                self.ftp_session_ended(&id);
                self.features(rec, o.entry.service, o.snapshot)
            }
            None => self.features(rec, 0, Snapshot::default()),
        }
    }

    /// A connection left the open set: if it was an FTP session, one fewer between its hosts.
    fn ftp_session_ended(&mut self, id: &ConnId) {
        if !is_ftp_control(id) {
            return;
        }
        let key = (host_key(id.orig_addr), host_key(id.resp_addr));
        if let Some(n) = self.ftp_sessions.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.ftp_sessions.remove(&key);
            }
        }
    }

    /// Opens (and answers) a connection known only from its record.
    fn open_from_record(&mut self, rec: &ConnectionRecord) {
        self.opened(&rec.start());
        if let Some((at, refused)) = rec.handshake_answer() {
            self.answered(&rec.id(), at, refused);
        }
    }

    /// Computes the features of a connection known only from its record, adding it to the
    /// windows as if it began, was answered and finished now, in that order. For records in
    /// the order they began (tests, benchmarks); [`events_from_records`] rebuilds the exact
    /// event order of a set of records.
    pub fn push(&mut self, rec: &ConnectionRecord) -> KddFeatures {
        if !rec.transport.is_kdd() {
            return self.outside_kdd(rec);
        }
        self.open_from_record(rec);
        self.finished(rec)
    }

    /// The features of a connection of a transport the KDD data does not have: its basic ones,
    /// with the service `service_index` gives such transports (`other`), never a named one.
    fn outside_kdd(&mut self, rec: &ConnectionRecord) -> KddFeatures {
        let service = service::service_index(&rec.start(), self.config.private_port_below);
        self.features(rec, service, Snapshot::default())
    }

    fn features(&mut self, rec: &ConnectionRecord, service: u8, snap: Snapshot) -> KddFeatures {
        let mut out = [0.0; NUM_FEATURES];
        let flag = basic::flag_index(rec.transport, basic::kdd_state(rec));
        basic::fill_basic(rec, flag, &mut out);
        out[2] = f64::from(service);
        let snap = snap.with_own_status(basic::is_syn_error(flag), basic::is_rej_error(flag));
        let round = self.config.round_rates;
        let r = |num: u32, den: u32| rate(num, den, round);

        let t = snap.time;
        out[22] = f64::from(t.host.n.min(TIME_COUNT_MAX));
        out[23] = f64::from(t.service.n.min(TIME_COUNT_MAX));
        out[24] = r(t.host.syn_errors, t.host.n);
        out[25] = r(t.service.syn_errors, t.service.n);
        out[26] = r(t.host.rej_errors, t.host.n);
        out[27] = r(t.service.rej_errors, t.service.n);
        out[28] = r(t.host_service, t.host.n);
        out[29] = distinct_rate(f64::from(t.host.distinct), f64::from(t.host.n), round);
        out[30] = distinct_rate(f64::from(t.service.distinct), f64::from(t.service.n), round);

        let unseen = self.unseen_slots(snap.host_window_len);
        host_features(
            &HostCounts::of(&snap, unseen, &window::COLD_PRIOR),
            round,
            &mut out,
        );
        self.last_cold = (unseen > 0.0).then_some(ColdWindow {
            snap,
            unseen,
            round,
        });
        KddFeatures(out)
    }

    /// The cold host window of the connection whose features the engine computed last; `None`
    /// when its window was full. The model's verdict on a connection in a cold window is the
    /// mean over its contexts ([`ColdWindow::contexts`], `crate::detect::Pipeline`): the
    /// expected score given what was seen, where the single mean context of
    /// [`window::COLD_PRIOR`] is a mix of compositions that no normal connection has (a little
    /// of every error rate), which trees split on as if it were seen.
    pub fn last_cold(&self) -> Option<ColdWindow> {
        self.last_cold
    }

    /// Slots of the host window not filled yet, when the cold window is filled with the
    /// prior (0 once full, or with filling off).
    fn unseen_slots(&self, held: u32) -> f64 {
        let full = self.config.host_window_connections as f64;
        if self.config.fill_cold_host_window {
            (full - f64::from(held)).max(0.0)
        } else {
            0.0
        }
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    pub fn stats(&self) -> EngineStats {
        let (time_hosts, host_hosts) = self.windows.hosts();
        EngineStats {
            connections_total: self.connections_total,
            unopened_total: self.unopened_total,
            time_window_overflow_evictions_total: self.windows.overflow_evictions(),
            time_window_connections: self.windows.time_len(),
            time_window_hosts: time_hosts,
            host_window_hosts: host_hosts,
            open_connections: self.open.len(),
            resumed_total: self.resumptions.resumed_total,
            resume_forgotten_total: self.resumptions.forgotten_total,
            heap_bytes: self.windows.heap_bytes()
                + self.resumptions.heap_bytes()
                + self.open.heap_bytes(),
        }
    }
}

/// The events a set of finished connections went through, in the order the live sensor would
/// have seen them: each connection opens at its start, is answered at its answer, and finishes
/// at its final moment (ties: opens, then answers, then finishes; then by start). For
/// connections known only as records (`sensor flows` output, `sensor baseline --records`).
pub fn events_from_records(records: &[ConnectionRecord]) -> Vec<ConnEvent> {
    let mut timed: Vec<(u64, u8, u64, usize)> = Vec::with_capacity(records.len() * 3);
    for (i, r) in records.iter().enumerate() {
        timed.push((r.start_unix_ns, 0, r.start_unix_ns, i));
        if let Some((a, _)) = r.handshake_answer() {
            timed.push((a, 1, r.start_unix_ns, i));
        }
        timed.push((r.final_unix_ns.max(r.end_unix_ns), 2, r.start_unix_ns, i));
    }
    timed.sort_unstable();
    timed
        .into_iter()
        .map(|(at, kind, _, i)| {
            let r = &records[i];
            match kind {
                0 => ConnEvent::Opened(r.start()),
                1 => ConnEvent::Answered {
                    id: r.id(),
                    at_unix_ns: at,
                    refused: r.handshake_answer().is_some_and(|(_, refused)| refused),
                },
                _ => ConnEvent::Finished(r.clone()),
            }
        })
        .collect()
}

/// The host window's counts, the slots not seen yet filled with a composition of the training
/// data's normal traffic ([`window::COLD_PRIOR`], or one of [`cold_contexts::COLD_CONTEXTS`]).
#[derive(Clone, Copy, Debug)]
struct HostCounts {
    host: f64,
    service: f64,
    host_service: f64,
    host_src_port: f64,
    host_syn: f64,
    service_syn: f64,
    host_rej: f64,
    service_rej: f64,
    host_distinct: f64,
    service_distinct: f64,
}

impl HostCounts {
    fn of(snap: &Snapshot, unseen: f64, p: &window::SlotPrior) -> HostCounts {
        let h = &snap.host;
        let c = |seen: u32, share: f64| f64::from(seen) + unseen * share;
        HostCounts {
            host: c(h.host.n, p.host),
            service: c(h.service.n, p.service),
            host_service: c(h.host_service, p.host_service),
            host_src_port: c(h.host_src_port, p.host_src_port),
            host_syn: c(h.host.syn_errors, p.host_syn),
            service_syn: c(h.service.syn_errors, p.service_syn),
            host_rej: c(h.host.rej_errors, p.host_rej),
            service_rej: c(h.service.rej_errors, p.service_rej),
            host_distinct: c(h.host.distinct, p.host_distinct),
            service_distinct: c(h.service.distinct, p.service_distinct),
        }
    }
}

/// KDD 32-41 from the host window's counts, into `out`.
fn host_features(h: &HostCounts, round: bool, out: &mut [f64; NUM_FEATURES]) {
    let rf = |num: f64, den: f64| rate_f(num, den, round);
    let count = |c: f64| round_half_up(c).min(f64::from(HOST_COUNT_MAX));
    out[31] = count(h.host);
    out[32] = count(h.service);
    out[33] = rf(h.host_service, h.host);
    out[34] = distinct_rate(h.host_distinct, h.host, round);
    out[35] = rf(h.host_src_port, h.host);
    out[36] = distinct_rate(h.service_distinct, h.service, round);
    out[37] = rf(h.host_syn, h.host);
    out[38] = rf(h.service_syn, h.service);
    out[39] = rf(h.host_rej, h.host);
    out[40] = rf(h.service_rej, h.service);
}

/// KDD's "different" rates (`diff_srv_rate`, `srv_diff_host_rate` and their host-window
/// twins) from the `distinct` services (or hosts) among a group of `n` connections, the
/// current one's included: 0 when they all share one, else `distinct / n`.
///
/// Not the share of the group that differs, which the textual definition suggests: the
/// training data never prints a single different connection's `1 / n`. Where `count` is 2 to
/// 60, every one of the 8,728 rows with a nonzero `diff_srv_rate` prints `k / count` for a
/// `k` of at least 2 (and 5,135 of 5,135 for `dst_host_diff_srv_rate`); `srv_count` 2 prints
/// `srv_diff_host_rate` 0 or 1.00 (never 0.50), `srv_count` 3 prints 0, 0.67 or 1.00, and 4
/// prints 0, 0.50, 0.75 or 1.00. A host with 254 connections to one service and one to
/// another prints `dst_host_diff_srv_rate` 0.01 (2 / 255), where the share would be 0.00; one
/// with 200 of 255 to its main service and 55 spread over three others prints 0.02 (4 / 255)
/// where the share would be 0.22, a value the data knows from scans. `distinct` may be a
/// weighted count (a cold window's); under 1.5 it is one.
#[inline]
fn distinct_rate(distinct: f64, n: f64, round: bool) -> f64 {
    if distinct < 1.5 {
        0.0
    } else {
        rate_f(distinct, n, round)
    }
}

/// [`rate`] of weighted counts.
#[inline]
fn rate_f(num: f64, den: f64, round: bool) -> f64 {
    if den <= 0.0 {
        return 0.0;
    }
    let x = (num / den).clamp(0.0, 1.0);
    if round { round2(x) } else { x }
}

/// `num / den` in [0, 1], rounded to 2 decimals if `round`; 0 for an empty denominator (cannot
/// happen for the current connection's own groups, which include it).
#[inline]
pub fn rate(num: u32, den: u32, round: bool) -> f64 {
    if den == 0 {
        return 0.0;
    }
    let x = f64::from(num) / f64::from(den);
    if round { round2(x) } else { x }
}

/// `x` in [0, 1] rounded to 2 decimals, as `(x * 100.0).round() / 100.0` (ties away from zero),
/// in a few additions and compares: the baseline x86-64 target has no rounding instruction, so
/// `f64::round` is a call into libm, and a float-to-integer conversion with Rust's saturating
/// semantics a dozen instructions; with 20 rates per connection either was a fifth of the
/// feature engine's instructions.
#[inline]
fn round2(x: f64) -> f64 {
    (round_half_up(x * 100.0)) / 100.0
}

/// `y.round()` for `0 <= y < 2^51` (also NaN in, NaN out): adding and subtracting 2^52 rounds
/// to the nearest integer (ties to even) exactly in that range; from it, the whole part, and
/// from that, rounding half away from zero.
#[inline]
fn round_half_up(y: f64) -> f64 {
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    let nearest = (y + TWO_52) - TWO_52;
    let whole = if nearest > y { nearest - 1.0 } else { nearest };
    if y - whole >= 0.5 { whole + 1.0 } else { whole }
}
