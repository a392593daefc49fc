//! The connection lifecycle, written once for live capture and for replay: which connections
//! are open, when each one is final, and the [`ConnEvent`]s that tell the stages after capture.
//!
//! It runs over a [`FlowStore`] (the kernel's flow table live, replay's table offline) and is
//! driven by two inputs:
//!
//! * [`Lifecycle::on_event`]: what the per-packet flow-table update signalled
//!   ([`sensor_common::flow::event`]): a connection began, the outcome of its TCP handshake
//!   became known, it finished (FIN both ways or RST). The first two become
//!   [`ConnEvent::Opened`] and [`ConnEvent::Answered`] at once, so that the feature windows see
//!   connections in the order they began, whenever they end; a finished connection becomes a
//!   [`ConnEvent::Finished`] record (at once after a RST; after the second FIN, at the final
//!   ACK's event or after a short `close_settle` if none comes, so that the final ACK is in it,
//!   as in Zeek's) and its entry lingers for
//!   `close_linger`, so that later trailing packets do not open a phantom connection; when the
//!   entry leaves, its record comes once more with those packets counted
//!   ([`ConnEvent::Settled`], where `LifecycleConfig::settled_records` asks for it).
//! * [`Lifecycle::advance`]: the passing of time. Every open connection has one pending idle
//!   check, due at its last packet plus the idle timeout that applies to it
//!   ([`idle_timeout`]), or for an unanswered TCP attempt 5 s after its SYN, as Zeek's attempt
//!   timer ends it ([`final_deadline_ns`]). The check reads the entry and either finalises the
//!   connection (end reason `idle`, final at that deadline, or at its last packet if one came
//!   after it before the removal) or moves the check to the new deadline, so the cost is one
//!   lookup per connection and timeout period whatever the table's size, and an idle
//!   connection is final within one call of `advance` after its deadline.
//!
//! A full table evicts anything but an open TCP connection to make room for new flows
//! (`sensor_common::slots`); each evicted flow comes with its value
//! ([`Lifecycle::on_evicted`]): an attempt or a UDP/ICMP flow is finalised as an idle one is,
//! with end reason
//! `evicted`, final at the moment it left the table; a finished connection has the record of
//! its end (made already, or made then), and a flow of its trailing packets that the eviction
//! left to open on its 5-tuple within its linger is folded into it, not recorded
//! ([`LifecycleStats::trailing_folded`]).
//!
//! A live sensor can lose events (a full ring buffer, counted by the kernel). A scan of the
//! whole store every `table_scan_interval` (in [`SCAN_PARTS`] parts spread over it) adopts
//! the connections whose events were lost: it emits their `Opened` late (counted in
//! [`LifecycleStats::adopted_by_scan`]) and finalises finished TCP connections whose
//! `FIN`/`RST` event never came ([`LifecycleStats::finished_by_scan`]).
//! A FIN-closed connection whose second FIN signalled nothing (two kernel CPUs took the last
//! FINs at once) is finalised earlier, at the event of its final ACK
//! ([`LifecycleStats::finished_at_final_ack`]).
//! A SYN that reuses a finished connection's 5-tuple restarts its entry; the kernel hands the
//! old value over first ([`event::REPLACED`]), so a connection whose finish event was lost is
//! still finalised ([`LifecycleStats::finished_on_restart`]).
//! Replay loses nothing and does not scan. (An eviction's event cannot be lost: the kernel
//! evicts nothing without room for it.)
//!
//! [`Lifecycle::flush`] ends observation: every connection still open is finalised with end
//! reason `shutdown`.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
};

use sensor_common::{
    FlowKey, FlowValue,
    account::{answered, peer},
    flow::{event, history, ipproto},
};

use crate::{
    flows::{ConnEvent, ConnStart, ConnectionRecord, EndReason},
    hashing::{Map, Set},
};

mod store;
mod timeouts;

pub use store::{FlowStore, LifecycleStats};
pub use timeouts::{
    LifecycleConfig, Timeouts, final_deadline_ns, held_request, idle_timeout, retransmitted_syn,
    tcp_finished, unanswered_syn_attempt,
};

/// What a pending check of a connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    /// The early verdict ([`LifecycleConfig::early_verdict_after`]).
    Early,
    /// The idle deadline.
    Idle,
    /// The end of a FIN-closed connection's settle ([`LifecycleConfig::close_settle`]).
    Close,
    /// An answered TCP connection's look for a held request
    /// ([`LifecycleConfig::HELD_REQUEST_AFTER`]).
    Held,
}

/// A finished connection already reported (`Finished`), while its entry lingers.
#[derive(Clone, Copy, Debug)]
struct Reported {
    first_seen_ns: u64,
    reason: EndReason,
    /// Its value as last read: at the report, or later (its `REPLACED` or `EVICTED` event).
    value: FlowValue,
    /// Its [`ConnEvent::Settled`] record was emitted.
    settled: bool,
    /// Not a connection: trailing packets of one the full table evicted while it lingered
    /// ([`Lifecycle::fold_trailing`]); settled from the start, it makes no record.
    trailing: bool,
}

/// A connection the lifecycle knows to be open.
#[derive(Clone, Copy, Debug)]
struct OpenConn {
    first_seen_ns: u64,
    /// When its handshake's outcome became known (table clock).
    answer_ns: Option<u64>,
}

/// How soon a check looks again at an entry it could not read or remove, though the
/// connection was open: the entry was evicted (its event is on the way) or restarted, or a
/// kernel CPU held its slot for a moment. A capture tick's default.
const RECHECK_NS: u64 = 10_000_000;

/// Parts the table scan is cut into, one every `table_scan_interval / SCAN_PARTS`: the scan
/// runs on the thread that reads the events, and the shipped table (524,288 slots of 128
/// bytes) took 12 ms to walk whole, a pause in every connection's verdict that fell in it
/// (`docs/performance.md`, "The table scan in parts").
pub const SCAN_PARTS: usize = 16;

/// The lifecycle; see the module docs.
#[derive(Debug)]
pub struct Lifecycle {
    config: LifecycleConfig,
    /// Table clock + this = Unix time (CLOCK_REALTIME − CLOCK_MONOTONIC live, 0 for replay).
    mono_to_unix_ns: i128,
    open: Map<FlowKey, OpenConn>,
    /// Pending checks `(due_ns, kind, key, first_seen_ns)`, earliest first ([`Check`]). A check
    /// whose connection has ended or was replaced is dropped when it comes up.
    checks: BinaryHeap<Reverse<(u64, Check, FlowKey, u64)>>,
    /// TCP connections closed by FINs whose record waits for the final ACK
    /// ([`LifecycleConfig::close_settle`]), with their value at the second FIN.
    closing: Map<FlowKey, FlowValue>,
    /// Finished connections already reported and still lingering.
    reported: Map<FlowKey, Reported>,
    /// The same connections in the order their linger ends: `(due_ns, key, first_seen_ns)`.
    lingering: VecDeque<(u64, FlowKey, u64)>,
    /// Table-clock time of the next part of the table scan.
    next_scan_ns: u64,
    /// The part of the table the next scan walks (`0..SCAN_PARTS`), and when the current
    /// pass's first part ran.
    scan_part: usize,
    scan_pass_start_ns: u64,
    /// Entries the current pass has counted so far.
    scan_entries: u64,
    /// Connections `(key, first_seen_ns)` whose entry a new connection took over before their
    /// end was known here, and whose `REPLACED` value has not come yet: the kernel may have
    /// parked it (its ring full), so they count as lost only if the next table scan finds no
    /// parked value for them either.
    displaced: Set<(FlowKey, u64)>,
    /// Reported connections `(key, first_seen_ns)` that are no longer the one
    /// [`Self::reported`] holds for their 5-tuple: a later report took their place, or their
    /// record was made from a parked value while another connection on the 5-tuple was
    /// tracked (`finish_detached`). Their parked `REPLACED` value, or their own events still
    /// in the ring (written after a tick's read of the ring and before its scan took the park
    /// out, with the SYNs that restarted the entry), must be known as theirs, not taken for a
    /// connection whose end was never seen: each would make a second record. The kernel parks
    /// a value before the new connection's first event, so the first scan after it takes it
    /// out, and the ring is read at every tick; entries are dropped at the second scan after
    /// they were made (`superseded_before` holds the previous scan's; one made during a scan's
    /// own taking of the park lives one period), which bounds the set by the port reuses of two
    /// scan periods. Only a scanning lifecycle (live) keeps them: replay loses no event and parks
    /// nothing.
    superseded: Set<(FlowKey, u64)>,
    superseded_before: Set<(FlowKey, u64)>,
    stats: LifecycleStats,
}

impl Lifecycle {
    pub fn new(config: LifecycleConfig, mono_to_unix_ns: i128) -> Lifecycle {
        Lifecycle {
            config,
            mono_to_unix_ns,
            open: Map::default(),
            checks: BinaryHeap::new(),
            closing: Map::default(),
            reported: Map::default(),
            lingering: VecDeque::new(),
            next_scan_ns: 0,
            scan_part: 0,
            scan_pass_start_ns: 0,
            scan_entries: 0,
            displaced: Set::default(),
            superseded: Set::default(),
            superseded_before: Set::default(),
            stats: LifecycleStats::default(),
        }
    }

    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    pub fn stats(&self) -> LifecycleStats {
        LifecycleStats {
            open_connections: self.open.len() as u64,
            ..self.stats
        }
    }

    /// Table clock + this = Unix time.
    pub fn mono_to_unix_ns(&self) -> i128 {
        self.mono_to_unix_ns
    }

    /// What the update of one packet signalled (`kinds`: [`event`] bits), with the entry's value
    /// as that packet left it.
    pub fn on_event(&mut self, key: &FlowKey, v: &FlowValue, kinds: u32, out: &mut Vec<ConnEvent>) {
        self.stats.events += 1;
        if kinds & event::REPLACED != 0 {
            return self.on_replaced(key, v, out);
        }
        if self.is_superseded(key, v.first_seen_ns) {
            // A late event of a connection recorded already (see `superseded`).
            self.stats.duplicate_events += 1;
            return;
        }
        if kinds & event::CLOSED != 0 && self.is_closing(key, v.first_seen_ns) {
            // The final ACK came: the record needs no more waiting.
            return self.close_with(key, v, out);
        }
        if self.is_reported(key, v.first_seen_ns) {
            // Reported already: the table scan finished it while this event was in the ring.
            // Its `OPEN` or `ANSWER` must not reopen it (a second record would follow). A final
            // ACK that came after the settle is no duplicate: it is only late.
            if kinds != event::CLOSED {
                self.stats.duplicate_events += 1;
            }
            return;
        }
        if self.fold_trailing(key, v) {
            return;
        }
        if kinds & (event::CLOSED | event::FINISHED) == event::CLOSED {
            // The first packet after both FINs, for a connection not waiting for its final
            // ACK: its second FIN signalled nothing here. Two CPUs took the two FINs at once
            // (a simultaneous close, or the two directions' packets crossing) and neither saw
            // the other's, or that event is still behind this one in the ring. Either way the
            // connection is over: finalised now rather than left to the table scan, a second
            // later. It ends at this packet, since the second FIN's time is not known here.
            // A late event of a connection whose 5-tuple a later one took over says nothing
            // about the later one: the old record comes with its `REPLACED` value.
            if self.later_known(key, v.first_seen_ns) {
                return;
            }
            self.adopt(key, v, out);
            self.stats.finished_at_final_ack += 1;
            return self.finish(key, v, EndReason::Fin, v.last_seen_ns, out);
        }
        if kinds & event::OPEN != 0 {
            self.open_conn(key, v, out);
        }
        if kinds & event::ANSWER != 0 {
            self.answer(key, v, v.last_seen_ns, out);
        }
        if kinds & event::FINISHED != 0 {
            if kinds & event::OPEN == 0 {
                // If its `OPEN` event was lost: adopted, so that the windows see it begin.
                self.adopt(key, v, out);
            }
            if self.is_closing(key, v.first_seen_ns) {
                // A RST after both FINs: the connection was over at the second FIN.
                self.close_with(key, v, out);
            } else if kinds & event::RST != 0 {
                self.finish(key, v, EndReason::Rst, v.last_seen_ns, out);
            } else if self.config.close_settle.is_zero() {
                self.finish(key, v, EndReason::Fin, v.last_seen_ns, out);
            } else {
                self.settle(key, v);
            }
        }
    }

    /// Holds the record of a connection whose second FIN `v` is, until its final ACK comes
    /// ([`event::CLOSED`]) or the settle is over ([`Check::Close`]): whichever is first.
    fn settle(&mut self, key: &FlowKey, v: &FlowValue) {
        if self.is_closing(key, v.first_seen_ns) {
            // A second FIN event (two CPUs raced on the last FINs).
            self.stats.duplicate_events += 1;
            return;
        }
        let due = v.last_seen_ns.saturating_add(self.close_settle_ns(key, v));
        self.closing.insert(*key, *v);
        self.checks
            .push(Reverse((due, Check::Close, *key, v.first_seen_ns)));
    }

    /// How long after its second FIN (`v`) the record of `key`'s connection waits for its
    /// final ACK: the configured settle, or, when the handshake timed the round trips from the
    /// sensor (the responder's: its SYN-ACK after the originator's SYN; the originator's: its
    /// first ACK after that SYN-ACK, [`FlowValue::orig_ack_ns`]), one and a half of the longer
    /// one, up to [`LifecycleConfig::MAX_CLOSE_SETTLE`]. The final ACK follows the second FIN
    /// by the round trip of the side that sends it: on Zeek's WAN captures (`ftp`, `pop3`,
    /// `http/no_crlf`, `modbus`), 47-346 ms, which a fixed 10 ms missed, while in a LAN or on a
    /// gateway next to the hosts the settle stays the configured one. Its event (`CLOSED`)
    /// ends the wait at once in any case, so a longer settle delays only a record whose final
    /// ACK never comes. A connection the table scan adopted (its `ANSWER` lost) has its answer
    /// at its first packet, so its originator's round trip includes the responder's: the wait
    /// errs long, never short.
    fn close_settle_ns(&self, key: &FlowKey, v: &FlowValue) -> u64 {
        let configured = self.config.close_settle.as_nanos() as u64;
        let orig = usize::from(v.orig_side & 1);
        let timed =
            v.history[orig] & history::SYN != 0 && v.history[peer(orig)] & history::SYN_ACK != 0;
        let answer = match self.open.get(key) {
            Some(o) if timed && o.first_seen_ns == v.first_seen_ns => o.answer_ns,
            _ => None,
        };
        let Some(answer_ns) = answer else {
            return configured;
        };
        // The responder's round trip (SYN to SYN-ACK) and the originator's (SYN-ACK to its
        // first ACK, when that came after the SYN-ACK): the final ACK is the one of the side
        // whose peer sent the second FIN, either of them.
        let resp_rtt = answer_ns.saturating_sub(v.first_seen_ns);
        let orig_rtt = v.orig_ack_ns().saturating_sub(answer_ns);
        let rtt = resp_rtt.max(orig_rtt);
        let max = (LifecycleConfig::MAX_CLOSE_SETTLE.as_nanos() as u64).max(configured);
        (rtt.saturating_mul(3) / 2).clamp(configured, max)
    }

    /// Whether the connection of `key` that began at `first_seen` waits for its final ACK.
    fn is_closing(&self, key: &FlowKey, first_seen: u64) -> bool {
        self.closing
            .get(key)
            .is_some_and(|c| c.first_seen_ns == first_seen)
    }

    /// The end of a close settle: the record, with the counts the entry holds now (the final
    /// ACK and anything else that trailed the FINs), or as it was at the second FIN if the
    /// entry is gone. Its end stays the second FIN, as Zeek's duration does (and the KDD
    /// `duration` it was trained on): only the counts take the trailing packets in.
    fn close(
        &mut self,
        key: &FlowKey,
        first_seen: u64,
        store: &impl FlowStore,
        out: &mut Vec<ConnEvent>,
    ) {
        if !self.is_closing(key, first_seen) {
            return; // finished meanwhile (a RST, a reuse of its 5-tuple, its final ACK)
        }
        let now = store.get(key).filter(|v| v.first_seen_ns == first_seen);
        if let Some(v) = now.or_else(|| self.closing.get(key).copied()) {
            self.close_with(key, &v, out);
        }
    }

    /// The record of a connection closed by FINs, with the counts of `v` (a later value of
    /// its entry) and the end of its second FIN (Zeek's `duration`). A RST after both FINs
    /// counts as a packet but leaves the state what the FINs made it (`SF`, as in Zeek's
    /// `conn.log`): the connection was over at the second FIN. It became final at its last
    /// packet, normally the final ACK: detection latency runs from there.
    fn close_with(&mut self, key: &FlowKey, v: &FlowValue, out: &mut Vec<ConnEvent>) {
        let Some(at_fin) = self.closing.get(key).copied() else {
            return;
        };
        let final_ns = v.last_seen_ns.max(at_fin.last_seen_ns);
        let mut v = *v;
        v.last_seen_ns = at_fin.last_seen_ns;
        for (now, then) in v.history.iter_mut().zip(at_fin.history) {
            *now &= !history::RST | then;
        }
        self.finish(key, &v, EndReason::Fin, final_ns, out);
    }

    /// A connection whose entry a port-reusing SYN restarted, with its value as it ended
    /// ([`event::REPLACED`]). Usually its end was reported already (its finish event came
    /// first) and this says nothing new, or it waits for its final ACK and is finalised now.
    /// A connection still open here lost its finish event (or was only half closed): it is
    /// finalised now, before the new connection's `OPEN`. One neither open nor reported lost
    /// all its events: it is adopted and finalised (a reported one stays in `reported` while
    /// a new connection holds its entry, so it is not taken for one).
    fn on_replaced(&mut self, key: &FlowKey, v: &FlowValue, out: &mut Vec<ConnEvent>) {
        if self.is_reported(key, v.first_seen_ns) {
            // Its finish event came first: the usual case. Its entry's last value is here.
            self.settle_report(key, Some(v), out);
            return;
        }
        if self.is_superseded(key, v.first_seen_ns) {
            // Reported, and no longer the report held for its 5-tuple while this value sat in
            // the kernel's park: its record and its settled record are out.
            return;
        }
        // The new connection's events came first (it is open here, or even reported): the
        // kernel parked this value (its ring was full) and the table scan took it out. What
        // is tracked of the new one stays as it is; this one's record is final as it stands.
        if self.later_known(key, v.first_seen_ns) {
            self.displaced.remove(&(*key, v.first_seen_ns));
            self.finish_detached(key, v, out);
            return;
        }
        // Open here, or (neither open nor reported) all its events were lost and it is adopted
        // now (a reported connection stays in `reported` while a new one holds its entry, see
        // `expire_lingering`).
        self.adopt(key, v, out);
        if self.is_closing(key, v.first_seen_ns) {
            self.close_with(key, v, out);
        } else {
            self.stats.finished_on_restart += 1;
            let reason = tcp_finished(key, v).unwrap_or(EndReason::Fin);
            self.finish(key, v, reason, v.last_seen_ns, out);
        }
        // Its entry is the new connection's now: this was its last value.
        self.settle_report(key, Some(v), out);
    }

    /// A flow the table evicted at `at_ns` to make room, with its value as it left; the entry is
    /// gone already. An attempt (its responder silent, or its handshake never completed), or a
    /// UDP or ICMP flow: its record, final at that moment (end reason `evicted`). A finished TCP connection: its record was made (its settled record now), or
    /// is made now as closed by its FINs or reset.
    pub fn on_evicted(
        &mut self,
        key: &FlowKey,
        v: &FlowValue,
        at_ns: u64,
        out: &mut Vec<ConnEvent>,
    ) {
        self.stats.events += 1;
        if self.is_reported(key, v.first_seen_ns) || self.fold_trailing(key, v) {
            // Ended by FINs or a RST and reported (or trailing packets of one such); lingering
            // when the table took it. It stays among the reported until its linger ends (its
            // entry gone), so that packets still trailing it are known as its own.
            self.settle_report(key, Some(v), out);
            self.stats.evicted_after_report += 1;
            return;
        }
        self.adopt(key, v, out);
        if let Some(reason) = tcp_finished(key, v) {
            // Finished but not reported yet: waiting for its final ACK, or its finish event is
            // late or lost. Its record is that of its end, from the value as it left; it stays
            // among the reported (its entry gone) until its linger ends, so that a finish event
            // still on its way makes no second record.
            self.stats.evicted_before_report += 1;
            if self.is_closing(key, v.first_seen_ns) {
                self.close_with(key, v, out);
            } else {
                self.finish_unsignalled(key, v, reason, out);
            }
            return;
        }
        self.finish(key, v, EndReason::Evicted, at_ns.max(v.last_seen_ns), out);
    }

    /// Whether a connection on `key` later than the one that began at `first_seen` is known
    /// here (open, or reported and still lingering).
    fn later_known(&self, key: &FlowKey, first_seen: u64) -> bool {
        self.open
            .get(key)
            .is_some_and(|o| o.first_seen_ns != first_seen)
            || self
                .reported
                .get(key)
                .is_some_and(|r| r.first_seen_ns > first_seen)
    }

    /// Whether the connection of `key` that began at `first_seen` is open here.
    fn is_open(&self, key: &FlowKey, first_seen: u64) -> bool {
        self.open
            .get(key)
            .is_some_and(|o| o.first_seen_ns == first_seen)
    }

    /// Starts tracking a connection whose `OPEN` event was lost, unless it is open already
    /// (counted in [`LifecycleStats::adopted_by_scan`]).
    fn adopt(&mut self, key: &FlowKey, v: &FlowValue, out: &mut Vec<ConnEvent>) {
        if !self.is_open(key, v.first_seen_ns) {
            self.stats.adopted_by_scan += 1;
            self.open_conn(key, v, out);
        }
    }

    /// Folds a flow of trailing packets into the finished connection they trail, when a full
    /// table evicted that connection's entry while it lingered: the final ACK or a
    /// retransmitted FIN then finds no entry and opens a new flow on the 5-tuple, with no
    /// handshake, which would otherwise be recorded as a connection of its own (`OTH`, a packet
    /// or two, which the model flags). A TCP flow with no SYN from either side on the 5-tuple
    /// of an earlier connection still among the reported (lingering: while its entry is in
    /// the table, packets without a SYN go to that entry, so a new flow means it is gone) is
    /// known instead as reported and settled (its entry lingers and goes as a reported one's
    /// does, without a record), and counted in [`LifecycleStats::trailing_folded`]. Whether
    /// it was folded (now or before).
    fn fold_trailing(&mut self, key: &FlowKey, v: &FlowValue) -> bool {
        let Some(r) = self.reported.get(key) else {
            return false;
        };
        if r.first_seen_ns == v.first_seen_ns {
            return r.trailing;
        }
        let trailing = key.protocol == ipproto::TCP
            && r.first_seen_ns < v.first_seen_ns
            && v.history
                .iter()
                .all(|h| h & (history::SYN | history::SYN_ACK) == 0)
            && !self.open.contains_key(key);
        if !trailing {
            return false;
        }
        self.stats.trailing_folded += 1;
        self.linger(key, v, EndReason::Fin, true);
        true
    }

    /// Starts tracking a connection (from its `OPEN` event, or adopted by a scan).
    fn open_conn(&mut self, key: &FlowKey, v: &FlowValue, out: &mut Vec<ConnEvent>) {
        match self.open.get(key) {
            Some(o) if o.first_seen_ns == v.first_seen_ns => return,
            // The entry was restarted for a new connection while the old one waited for its
            // final ACK (its `REPLACED` event lost): its record, as it was at the second FIN.
            Some(o) if self.is_closing(key, o.first_seen_ns) => {
                if let Some(at_fin) = self.closing.get(key).copied() {
                    self.close_with(key, &at_fin, out);
                    // Its entry is the new connection's: nothing more will be read of it.
                    self.settle_report(key, None, out);
                }
            }
            // The entry was restarted for a new connection before the old one's end was
            // reported, and its `REPLACED` event did not come first: the kernel parked it
            // (its ring full) or lost it. The next table scan tells which.
            Some(o) => {
                self.displaced.insert((*key, o.first_seen_ns));
            }
            None => {}
        }
        let Some(start) = ConnStart::from_flow(key, v, self.mono_to_unix_ns) else {
            return;
        };
        self.open.insert(
            *key,
            OpenConn {
                first_seen_ns: v.first_seen_ns,
                answer_ns: None,
            },
        );
        let due = final_deadline_ns(&self.config.timeouts, key, v);
        self.checks
            .push(Reverse((due, Check::Idle, *key, v.first_seen_ns)));
        let early_after = if key.protocol == ipproto::TCP {
            self.config.tcp_early_verdict_after()
        } else {
            self.config.early_verdict_after
        };
        if let Some(after) = early_after {
            let due = v.first_seen_ns.saturating_add(after.as_nanos() as u64);
            self.checks
                .push(Reverse((due, Check::Early, *key, v.first_seen_ns)));
        }
        self.compact_checks();
        out.push(ConnEvent::Opened(start));
    }

    /// Drops the pending checks of connections no longer open, once they outnumber the live
    /// ones: a connection that ends by its own event (FIN, RST, eviction) leaves its checks
    /// in the heap until they come up, up to an idle timeout later (five minutes for an
    /// established TCP connection), which at a high connection rate would hold far more dead
    /// checks than open connections. Amortised O(1) per connection: after a compaction the
    /// heap holds at most the live checks, and the next one waits until it has doubled.
    fn compact_checks(&mut self) {
        if self.checks.len() <= 4 * self.open.len() + 4096 {
            return;
        }
        let open = &self.open;
        self.checks.retain(|Reverse((_, _, key, first_seen))| {
            matches!(open.get(key), Some(o) if o.first_seen_ns == *first_seen)
        });
    }

    /// Records the outcome of a connection's handshake, known at `at_ns`.
    fn answer(&mut self, key: &FlowKey, v: &FlowValue, at_ns: u64, out: &mut Vec<ConnEvent>) {
        self.adopt(key, v, out);
        let Some(o) = self.open.get_mut(key) else {
            return;
        };
        if o.answer_ns.is_some() || o.first_seen_ns != v.first_seen_ns {
            return;
        }
        o.answer_ns = Some(at_ns);
        let Some(start) = ConnStart::from_flow(key, v, self.mono_to_unix_ns) else {
            return;
        };
        let resp = v.history[peer(usize::from(v.orig_side & 1))];
        let refused = resp & history::RST != 0 && resp & history::SYN_ACK == 0;
        // A connection the server took may hold a request later (a refused one is over).
        if key.protocol == ipproto::TCP && !refused && self.config.early_verdict_after.is_some() {
            let after = LifecycleConfig::HELD_REQUEST_AFTER.as_nanos() as u64;
            let due = v.first_seen_ns.saturating_add(after);
            self.checks
                .push(Reverse((due, Check::Held, *key, v.first_seen_ns)));
        }
        out.push(ConnEvent::Answered {
            id: start.id,
            at_unix_ns: self.to_unix(at_ns),
            refused,
        });
    }

    fn to_unix(&self, t: u64) -> u64 {
        (t as i128 + self.mono_to_unix_ns).clamp(0, u64::MAX as i128) as u64
    }

    /// Emits the record of a connection that is over, final at `final_ns` (table clock).
    fn finish(
        &mut self,
        key: &FlowKey,
        v: &FlowValue,
        reason: EndReason,
        final_ns: u64,
        out: &mut Vec<ConnEvent>,
    ) {
        if self.is_closing(key, v.first_seen_ns) {
            self.closing.remove(key);
        }
        let answer_ns = match self.open.remove(key) {
            Some(o) if o.first_seen_ns == v.first_seen_ns => o.answer_ns,
            Some(o) => {
                // A later connection on this 5-tuple is the open one; keep tracking it.
                self.open.insert(*key, o);
                None
            }
            None => None,
        };
        if matches!(reason, EndReason::Fin | EndReason::Rst) {
            self.remember_reported(key, v, reason, out);
        }
        let Some(mut rec) = ConnectionRecord::from_flow(key, v, self.mono_to_unix_ns, reason)
        else {
            return;
        };
        let orig = usize::from(v.orig_side & 1);
        rec.answer_unix_ns = answer_ns
            .or_else(|| answered(v.history[orig], v.history[peer(orig)]).then_some(v.last_seen_ns))
            .map(|t| self.to_unix(t));
        rec.final_unix_ns = self.to_unix(final_ns);
        self.stats.count_record(reason);
        out.push(ConnEvent::Finished(rec));
    }

    /// The record of a finished TCP connection (`reason`: FIN or RST) whose finish event has not
    /// come (lost, late, or never signalled: two CPUs raced on its last FINs), final at its last
    /// packet; counted in [`LifecycleStats::finished_by_scan`].
    fn finish_unsignalled(
        &mut self,
        key: &FlowKey,
        v: &FlowValue,
        reason: EndReason,
        out: &mut Vec<ConnEvent>,
    ) {
        self.stats.finished_by_scan += 1;
        self.finish(key, v, reason, v.last_seen_ns, out);
    }

    /// Keeps a reported connection among the [`Self::reported`] ones until its linger ends: its
    /// entry's trailing packets are counted in its settled record, and an event of it that comes
    /// late is known as a duplicate instead of opening it again.
    fn remember_reported(
        &mut self,
        key: &FlowKey,
        v: &FlowValue,
        reason: EndReason,
        out: &mut Vec<ConnEvent>,
    ) {
        // An earlier connection on this 5-tuple still lingering (its `REPLACED` event was
        // lost, or parked and not taken out yet) is settled as last read.
        if let Some(earlier) = self
            .reported
            .get(key)
            .filter(|r| r.first_seen_ns != v.first_seen_ns)
        {
            let earlier = earlier.first_seen_ns;
            self.supersede(key, earlier);
            self.settle_report(key, None, out);
        }
        self.linger(key, v, reason, false);
    }

    /// Holds the entry of `key` (value `v`) among the reported ones until its linger ends: a
    /// reported connection's, or a flow of `trailing` packets folded into one (settled from
    /// the start: no record).
    fn linger(&mut self, key: &FlowKey, v: &FlowValue, reason: EndReason, trailing: bool) {
        self.reported.insert(
            *key,
            Reported {
                first_seen_ns: v.first_seen_ns,
                reason,
                value: *v,
                settled: trailing,
                trailing,
            },
        );
        let due = v
            .last_seen_ns
            .saturating_add(self.config.close_linger.as_nanos() as u64);
        self.lingering.push_back((due, *key, v.first_seen_ns));
    }

    /// The record of a connection whose entry a later connection holds already (its
    /// `REPLACED` value parked by the kernel and taken out after the new connection's `OPEN`):
    /// final as its value stands, and settled at once (its entry is gone), without touching
    /// what is tracked of the connection that holds the entry now.
    fn finish_detached(&mut self, key: &FlowKey, v: &FlowValue, out: &mut Vec<ConnEvent>) {
        let reason = tcp_finished(key, v).unwrap_or(EndReason::Fin);
        let Some(mut rec) = ConnectionRecord::from_flow(key, v, self.mono_to_unix_ns, reason)
        else {
            return;
        };
        self.stats.finished_on_restart += 1;
        // Its events may still be in the ring; and if it is the connection open here (a later
        // one held the 5-tuple's report), it is over: not displaced by the next `OPEN`.
        self.supersede(key, v.first_seen_ns);
        if self.is_open(key, v.first_seen_ns) {
            self.open.remove(key);
        }
        let orig = usize::from(v.orig_side & 1);
        rec.answer_unix_ns =
            answered(v.history[orig], v.history[peer(orig)]).then(|| self.to_unix(v.last_seen_ns));
        rec.final_unix_ns = self.to_unix(v.last_seen_ns);
        self.stats.count_record(reason);
        let settled = self.config.settled_records.then(|| rec.clone());
        out.push(ConnEvent::Finished(rec));
        if let Some(rec) = settled {
            out.push(ConnEvent::Settled(rec));
        }
    }

    /// The connections the kernel parked (see [`FlowStore::take_parked`]), each handled as its
    /// `REPLACED` event.
    fn take_park(&mut self, store: &mut impl FlowStore, out: &mut Vec<ConnEvent>) {
        for (key, v) in store.take_parked() {
            self.stats.taken_from_park += 1;
            self.on_replaced(&key, &v, out);
        }
    }

    /// Every displaced connection whose parked value a whole scan pass did not find is a
    /// loss; the reported connections superseded since the pass before are forgotten.
    fn count_displaced_losses(&mut self) {
        self.stats.lost_on_restart += self.displaced.len() as u64;
        self.displaced.clear();
        self.superseded_before = std::mem::take(&mut self.superseded);
    }

    /// Moves time on to `now_ns` (table clock): lingering entries whose time is up are removed,
    /// idle checks that are due run, and the table scan runs when due.
    pub fn advance(&mut self, now_ns: u64, store: &mut impl FlowStore, out: &mut Vec<ConnEvent>) {
        self.expire_lingering(now_ns, store, out);
        while let Some(&Reverse((due, kind, key, first_seen))) = self.checks.peek() {
            if due > now_ns {
                break;
            }
            self.checks.pop();
            match kind {
                Check::Idle => self.check(&key, first_seen, now_ns, store, out),
                Check::Early | Check::Held => self.look(kind, &key, first_seen, due, store, out),
                Check::Close => self.close(&key, first_seen, store, out),
            }
        }
        if let Some(every) = self.config.table_scan_interval {
            // At least 1 ns, so that a pass ends (an interval of 0 scans at every tick).
            let every_ns = (every.as_nanos() as u64).max(1);
            // Every part that is due: one a tick when the ticks keep up, all the missed ones
            // at once after a pause of the loop (as the whole table was walked before).
            while now_ns >= self.next_scan_ns {
                if self.scan_part == 0 {
                    self.scan_pass_start_ns = now_ns;
                }
                self.scan(now_ns, every_ns, store, out);
                // The parts of a pass spread over the interval, so that a pass still takes
                // `every` and no tick holds the events back for a whole table's walk.
                self.next_scan_ns = match self.scan_part {
                    0 => self.scan_pass_start_ns.saturating_add(every_ns),
                    k => self
                        .scan_pass_start_ns
                        .saturating_add(every_ns / SCAN_PARTS as u64 * k as u64),
                };
            }
        }
    }

    /// The idle check of one connection: finalise it if idle past its timeout, else check again
    /// at its new deadline.
    fn check(
        &mut self,
        key: &FlowKey,
        first_seen: u64,
        now_ns: u64,
        store: &mut impl FlowStore,
        out: &mut Vec<ConnEvent>,
    ) {
        if !self.is_open(key, first_seen) || self.is_closing(key, first_seen) {
            // Finished, replaced by a later connection with its own check, or closed by FINs
            // and waiting for its final ACK (its close check finishes it).
            return;
        }
        let Some(v) = store.get(key).filter(|v| v.first_seen_ns == first_seen) else {
            // Evicted (its `EVICTED` event brings the record) or restarted (its `OPEN` event
            // takes it from here): the next check finds it no longer open. Or a kernel CPU held
            // the slot for a moment (an eviction that changed its mind): look again.
            self.checks.push(Reverse((
                now_ns.saturating_add(RECHECK_NS),
                Check::Idle,
                *key,
                first_seen,
            )));
            return;
        };
        if let Some(reason) = tcp_finished(key, &v) {
            // Its finish event was lost.
            self.finish_unsignalled(key, &v, reason, out);
            return;
        }
        let deadline = final_deadline_ns(&self.config.timeouts, key, &v);
        if now_ns >= deadline {
            // Removed first: an eviction at this moment would otherwise report it too. The
            // record is the value as removed: an attempt that Zeek's attempt timer ends may
            // still be sending (`final_deadline_ns`), and its packets up to the removal are
            // its own (replay removes it before the first packet past the deadline).
            if let Some(last) = store.remove(key, first_seen) {
                if let Some(reason) = tcp_finished(key, &last) {
                    // Its RST (or last FIN) came between the read and the removal.
                    self.finish_unsignalled(key, &last, reason, out);
                } else {
                    let final_ns = deadline.max(last.last_seen_ns);
                    self.finish(key, &last, EndReason::Idle, final_ns, out);
                    if last != v {
                        // A packet came between the read and the removal (an answer, say), so
                        // its event may still be on its way: known as this record's, it must
                        // not open the connection again.
                        self.remember_reported(key, &last, EndReason::Idle, out);
                    }
                }
            } else {
                self.checks.push(Reverse((
                    now_ns.saturating_add(RECHECK_NS),
                    Check::Idle,
                    *key,
                    first_seen,
                )));
            }
        } else {
            self.checks
                .push(Reverse((deadline, Check::Idle, *key, first_seen)));
        }
    }

    /// A look at a connection still open at `at_ns` ([`Check::Early`] or [`Check::Held`]): its
    /// record so far as an early verdict, where the look asks for one.
    ///
    /// The early verdict is for a connection without an established TCP handshake (an
    /// answered one's verdict comes when it ends), unless it is over or a client's stack still
    /// waiting (its verdict comes when it is answered or gives up). The held-request verdict
    /// is for an answered TCP connection that holds a request open ([`held_request`]); its
    /// answer time set tells it from an unanswered attempt's early verdict
    /// ([`ConnectionRecord::held_request`]).
    fn look(
        &mut self,
        check: Check,
        key: &FlowKey,
        first_seen: u64,
        at_ns: u64,
        store: &impl FlowStore,
        out: &mut Vec<ConnEvent>,
    ) {
        let Some(o) = self.open.get(key).filter(|o| o.first_seen_ns == first_seen) else {
            return;
        };
        let answer_ns = o.answer_ns;
        // Decided before the table is read where the answer decides.
        let tcp_answered = key.protocol == ipproto::TCP && answer_ns.is_some();
        if tcp_answered != (check == Check::Held) {
            return;
        }
        let Some(v) = store.get(key).filter(|v| v.first_seen_ns == first_seen) else {
            return;
        };
        let wanted = match check {
            Check::Held => held_request(key, &v),
            _ => tcp_finished(key, &v).is_none() && !retransmitted_syn(key, &v),
        };
        if !wanted {
            return;
        }
        let Some(mut rec) =
            ConnectionRecord::from_flow(key, &v, self.mono_to_unix_ns, EndReason::Ongoing)
        else {
            return;
        };
        rec.answer_unix_ns = answer_ns.map(|t| self.to_unix(t));
        rec.final_unix_ns = self.to_unix(at_ns);
        out.push(ConnEvent::Ongoing(rec));
    }

    /// Remembers the connection of `key` that began at `first_seen` as recorded, though no
    /// longer the report held for its 5-tuple (see [`Self::superseded`]).
    fn supersede(&mut self, key: &FlowKey, first_seen: u64) {
        if self.config.table_scan_interval.is_some() {
            self.superseded.insert((*key, first_seen));
        }
    }

    /// Whether the connection of `key` that began at `first_seen` was recorded and is no longer
    /// the report held for its 5-tuple (see [`Self::superseded`]).
    fn is_superseded(&self, key: &FlowKey, first_seen: u64) -> bool {
        let id = (*key, first_seen);
        !(self.superseded.is_empty() && self.superseded_before.is_empty())
            && (self.superseded.contains(&id) || self.superseded_before.contains(&id))
    }

    /// Whether the connection of `key` that began at `first_seen` was reported and lingers.
    fn is_reported(&self, key: &FlowKey, first_seen: u64) -> bool {
        self.reported
            .get(key)
            .is_some_and(|r| r.first_seen_ns == first_seen)
    }

    /// Emits the [`ConnEvent::Settled`] record of the reported connection of `key`, once: from
    /// `v`, its entry's last value, where read, else from its value as last read.
    fn settle_report(&mut self, key: &FlowKey, v: Option<&FlowValue>, out: &mut Vec<ConnEvent>) {
        let Some(r) = self.reported.get_mut(key).filter(|r| !r.settled) else {
            return;
        };
        if let Some(v) = v.filter(|v| v.first_seen_ns == r.first_seen_ns) {
            r.value = *v;
        }
        r.settled = true;
        if !self.config.settled_records {
            return;
        }
        let (value, reason) = (r.value, r.reason);
        if let Some(rec) = ConnectionRecord::from_flow(key, &value, self.mono_to_unix_ns, reason) {
            out.push(ConnEvent::Settled(rec));
        }
    }

    /// Removes finished connections whose linger is over, each with its
    /// [`ConnEvent::Settled`] record. An entry that still sees packets (trailing ACKs,
    /// retransmissions) lingers on; one that a new connection on the same 5-tuple took over is
    /// left to that connection.
    fn expire_lingering(
        &mut self,
        now_ns: u64,
        store: &mut impl FlowStore,
        out: &mut Vec<ConnEvent>,
    ) {
        let linger_ns = self.config.close_linger.as_nanos() as u64;
        while let Some(&(due, key, first_seen)) = self.lingering.front() {
            if due > now_ns {
                break;
            }
            self.lingering.pop_front();
            if !self.is_reported(&key, first_seen) {
                continue; // superseded by a later report of the same 5-tuple
            }
            match store.get(&key) {
                Some(v) if v.first_seen_ns == first_seen => {
                    if now_ns.saturating_sub(v.last_seen_ns) >= linger_ns {
                        if let Some(last) = store.remove(&key, first_seen) {
                            self.settle_report(&key, Some(&last), out);
                            self.reported.remove(&key);
                        } else {
                            // Evicted meanwhile (kept in `reported`, so that its `EVICTED`
                            // event makes no second record), or held for a moment: look again.
                            let due = now_ns.saturating_add(RECHECK_NS);
                            self.lingering.push_back((due, key, first_seen));
                        }
                    } else {
                        let due = v.last_seen_ns.saturating_add(linger_ns);
                        self.lingering.push_back((due, key, first_seen));
                    }
                }
                // Taken over by a new connection on the same 5-tuple: remembered while the new
                // one holds the entry, so that the old one's `REPLACED` event (which may come
                // after this) is known as reported.
                Some(_) => {
                    let due = now_ns.saturating_add(linger_ns);
                    self.lingering.push_back((due, key, first_seen));
                }
                // Gone.
                None => {
                    self.settle_report(&key, None, out);
                    self.reported.remove(&key);
                }
            }
        }
    }

    /// Walks the store at `now_ns` and adopts what the events missed: connections never opened
    /// here, and finished ones never reported.
    ///
    /// Only what is older than `grace_ns` counts as missed: a connection that began (or
    /// finished) less than `grace_ns` ago may have its event still in the ring (the kernel
    /// keeps writing while the scan runs, and two CPUs' events can come in either order).
    /// Adopting it would report it twice once that event arrives. A lost event is then
    /// recovered at most two scan periods after its packet, long before any idle deadline.
    fn scan(
        &mut self,
        now_ns: u64,
        grace_ns: u64,
        store: &mut impl FlowStore,
        out: &mut Vec<ConnEvent>,
    ) {
        let part = self.scan_part;
        // The park before every part, so that a parked connection is handled as its
        // `REPLACED` event before a part adopts its 5-tuple's later connection; the losses
        // counted once a pass, as before the scan had parts.
        self.take_park(store, out);
        if part == 0 {
            self.count_displaced_losses();
            self.scan_entries = 0;
        }
        let entries = store.entries_part(part, SCAN_PARTS);
        self.scan_entries += entries.len() as u64;
        self.scan_part = (part + 1) % SCAN_PARTS;
        if self.scan_part == 0 {
            self.stats.table_entries = self.scan_entries;
        }
        let settled = |t: u64| now_ns.saturating_sub(t) >= grace_ns;
        for (key, v) in entries {
            if self.is_reported(&key, v.first_seen_ns) || self.is_closing(&key, v.first_seen_ns) {
                continue; // lingering after its report, or waiting for its final ACK
            }
            let known = self.is_open(&key, v.first_seen_ns);
            if !known && !settled(v.first_seen_ns) {
                continue; // its `OPEN` event may still be on the way
            }
            if !known && self.fold_trailing(&key, &v) {
                continue; // its `OPEN` event lost, and no connection
            }
            if !known {
                self.adopt(&key, &v, out);
                let orig = usize::from(v.orig_side & 1);
                if answered(v.history[orig], v.history[peer(orig)]) {
                    // The exact moment is lost with the event; the first packet bounds it.
                    self.answer(&key, &v, v.first_seen_ns, out);
                }
            }
            if let Some(reason) = tcp_finished(&key, &v)
                && settled(v.last_seen_ns)
            {
                self.finish_unsignalled(&key, &v, reason, out);
            }
        }
    }

    /// The end of observation at `now_ns`: every connection still open is finalised (end
    /// reason `shutdown`, or `fin`/`rst` for finished ones whose event never came) and every
    /// entry removed.
    pub fn flush(&mut self, now_ns: u64, store: &mut impl FlowStore, out: &mut Vec<ConnEvent>) {
        self.take_park(store, out);
        self.count_displaced_losses();
        self.expire_lingering(now_ns, store, out);
        // Closed by FINs and waiting for the final ACK: their settle ends now.
        let mut closing: Vec<_> = self
            .closing
            .iter()
            .map(|(k, v)| (v.last_seen_ns, *k, v.first_seen_ns))
            .collect();
        closing.sort_unstable();
        for (_, key, first_seen) in closing {
            self.close(&key, first_seen, store, out);
        }
        let mut entries = store.entries();
        // Deterministic order: by last packet, then first packet, then key.
        entries.sort_unstable_by_key(|(k, v)| (v.last_seen_ns, v.first_seen_ns, *k));
        for (key, v) in entries {
            if self.is_reported(&key, v.first_seen_ns) {
                self.settle_report(&key, Some(&v), out);
            } else {
                self.adopt(&key, &v, out);
                match tcp_finished(&key, &v) {
                    Some(reason) => {
                        self.finish_unsignalled(&key, &v, reason, out);
                    }
                    None => self.finish(&key, &v, EndReason::Shutdown, now_ns, out),
                }
            }
            store.remove(&key, v.first_seen_ns);
        }
        // Reported ones whose entry is gone already (taken over by a connection that finished
        // since), in the order of their last packet.
        let mut left: Vec<_> = self
            .reported
            .iter()
            .filter(|(_, r)| !r.settled)
            .map(|(k, r)| (r.value.last_seen_ns, *k))
            .collect();
        left.sort_unstable();
        for (_, key) in left {
            self.settle_report(&key, None, out);
        }
        self.open.clear();
        self.checks.clear();
        self.reported.clear();
        self.lingering.clear();
    }
}

#[cfg(test)]
mod tests;
