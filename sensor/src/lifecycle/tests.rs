use std::time::Duration;

use super::*;
// Fx, unseeded: the store's iteration order (the table scan's) is the same on every run.
use rustc_hash::FxHashMap;
use sensor_common::flow::{SIDE_HI, SIDE_LO, ipproto};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// The default close linger, which the tests run with.
const LINGER_NS: u64 = LifecycleConfig::DEFAULT_CLOSE_LINGER.as_nanos() as u64;

/// The kernel table as the lifecycle sees it; `evict_on_remove` plays a kernel CPU that
/// evicts the entry just before user space removes it, `packet_on_remove` one that counts a
/// packet in it between the lifecycle's read and its removal.
#[derive(Default)]
struct Store {
    flows: FxHashMap<FlowKey, FlowValue>,
    evict_on_remove: bool,
    packet_on_remove: Option<FlowValue>,
    /// What the kernel parked (its ring full when a SYN restarted these entries).
    parked: Vec<(FlowKey, FlowValue)>,
}

impl FlowStore for Store {
    fn get(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key).copied()
    }
    fn remove(&mut self, key: &FlowKey, first_seen_ns: u64) -> Option<FlowValue> {
        if self.evict_on_remove {
            self.flows.remove(key);
            return None;
        }
        match self.flows.get(key) {
            Some(v) if v.first_seen_ns == first_seen_ns => {
                let removed = self.flows.remove(key);
                self.packet_on_remove.take().or(removed)
            }
            _ => None,
        }
    }
    fn entries(&self) -> Vec<(FlowKey, FlowValue)> {
        self.flows.iter().map(|(k, v)| (*k, *v)).collect()
    }
    fn take_parked(&mut self) -> Vec<(FlowKey, FlowValue)> {
        std::mem::take(&mut self.parked)
    }
}

fn key(port: u16, protocol: u8) -> FlowKey {
    FlowKey {
        addr_lo: [u32::to_be(0xc612_0001), 0, 0, 0],
        addr_hi: [u32::to_be(0xc612_0002), 0, 0, 0],
        port_lo: port,
        port_hi: 80,
        protocol,
        ip_version: 4,
        _pad: [0; 2],
    }
}

/// A one-packet attempt from the low side at `t`.
fn attempt(t: u64, protocol: u8) -> FlowValue {
    let mut v = FlowValue {
        first_seen_ns: t,
        last_seen_ns: t,
        ..FlowValue::default()
    };
    v.packets[SIDE_LO] = 1;
    if protocol == ipproto::TCP {
        v.history[SIDE_LO] = history::SYN;
    }
    v
}

fn lifecycle() -> Lifecycle {
    Lifecycle::new(
        LifecycleConfig {
            table_scan_interval: None,
            early_verdict_after: None,
            ..LifecycleConfig::default()
        },
        0,
    )
}

fn finished(out: &[ConnEvent]) -> Vec<&ConnectionRecord> {
    out.iter().filter_map(ConnEvent::finished).collect()
}

#[test]
fn an_evicted_attempt_is_one_record_final_when_it_left() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, v) = (key(1000, ipproto::TCP), attempt(S, ipproto::TCP));
    l.on_event(&k, &v, event::OPEN, &mut out);
    l.on_evicted(&k, &v, S + 300_000_000, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, EndReason::Evicted);
    assert_eq!(recs[0].final_unix_ns, S + 300_000_000);
    let st = l.stats();
    assert_eq!(
        (st.records_evicted, st.records(), st.open_connections),
        (1, 1, 0)
    );
    // Its idle check comes up later and finds nothing to do.
    let mut store = Store::default();
    out.clear();
    l.advance(10 * S, &mut store, &mut out);
    assert!(out.is_empty());
}

#[test]
fn an_eviction_whose_open_event_was_lost_is_adopted() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, v) = (key(1001, ipproto::UDP), attempt(S, ipproto::UDP));
    l.on_evicted(&k, &v, 2 * S, &mut out);
    assert!(matches!(out[0], ConnEvent::Opened(_)));
    assert_eq!(finished(&out).len(), 1);
    assert_eq!(l.stats().adopted_by_scan, 1);
}

#[test]
fn a_reported_connection_evicted_while_it_lingers_makes_no_second_record() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let k = key(1002, ipproto::TCP);
    let mut v = attempt(S, ipproto::TCP);
    l.on_event(&k, &v, event::OPEN, &mut out);
    // The originator gives up with a RST: reported at once.
    v.history[SIDE_LO] |= history::RST;
    v.packets[SIDE_LO] = 2;
    l.on_event(&k, &v, event::RST, &mut out);
    l.on_evicted(&k, &v, S + 1, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, EndReason::Rst);
    assert_eq!(l.stats().evicted_after_report, 1);
}

#[test]
fn an_idle_check_racing_an_eviction_leaves_the_record_to_the_eviction() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, v) = (key(1003, ipproto::UDP), attempt(S, ipproto::UDP));
    let mut store = Store::default();
    store.flows.insert(k, v);
    l.on_event(&k, &v, event::OPEN, &mut out);
    // The idle deadline passes; the kernel evicts the entry as user space removes it.
    store.evict_on_remove = true;
    l.advance(S + 61 * S, &mut store, &mut out);
    assert!(finished(&out).is_empty(), "no idle record: {out:?}");
    l.on_evicted(&k, &v, S + 61 * S, &mut out);
    l.advance(S + 62 * S, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, EndReason::Evicted);
}

/// Zeek's attempt timer: a connection that began with the originator's SYN and got no answer is
/// final 5 s (the attempt timeout) after the SYN, though the originator keeps sending, with the
/// packets counted until the entry was removed; its next packet starts a new connection.
#[test]
fn an_unanswered_attempt_ends_at_the_attempt_timeout_after_its_syn_while_still_sending() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let k = key(1010, ipproto::TCP);
    let mut v = attempt(S, ipproto::TCP);
    let mut store = Store::default();
    store.flows.insert(k, v);
    l.on_event(&k, &v, event::OPEN, &mut out);
    // The originator (whose server's answers the capture misses) acknowledges and sends data
    // every second.
    for t in 1..=4 {
        v.history[SIDE_LO] |= history::NON_SYN | history::ACK | history::DATA;
        v.packets[SIDE_LO] += 1;
        v.payload_bytes[SIDE_LO] += 100;
        v.last_seen_ns = S + t * S;
        store.flows.insert(k, v);
        l.advance(S + t * S, &mut store, &mut out);
    }
    assert!(finished(&out).is_empty(), "{out:?}");
    // One more packet just before the deadline.
    v.packets[SIDE_LO] += 1;
    v.last_seen_ns = S + 5 * S - 1;
    store.flows.insert(k, v);
    l.advance(S + 5 * S, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(recs[0].end_reason, EndReason::Idle);
    assert_eq!(recs[0].final_unix_ns, S + 5 * S);
    assert_eq!((recs[0].orig_packets, recs[0].resp_packets), (6, 0));
    assert_eq!(recs[0].orig_bytes, 400);
    assert!(store.flows.is_empty(), "the entry was removed");
    assert_eq!(l.stats().open_connections, 0);
}

/// A packet counted between the idle check's read and its removal is in the record, and its
/// event, coming after, opens nothing: a RST makes the record a reset one; an answer leaves it
/// idle, and its late `ANSWER` event is a duplicate.
#[test]
fn a_packet_between_the_idle_checks_read_and_removal_is_in_the_record_once() {
    for (port, rst) in [(1012u16, true), (1013, false)] {
        let (mut l, mut out) = (lifecycle(), Vec::new());
        let k = key(port, ipproto::TCP);
        let v = attempt(S, ipproto::TCP);
        let mut store = Store::default();
        store.flows.insert(k, v);
        l.on_event(&k, &v, event::OPEN, &mut out);
        let mut last = v;
        last.last_seen_ns = S + 5 * S;
        if rst {
            last.history[SIDE_LO] |= history::RST | history::NON_SYN;
            last.packets[SIDE_LO] += 1;
        } else {
            last.history[SIDE_HI] = history::SYN_ACK;
            last.packets[SIDE_HI] = 1;
        }
        store.packet_on_remove = Some(last);
        l.advance(S + 5 * S, &mut store, &mut out);
        let kinds = if rst { event::RST } else { event::ANSWER };
        l.on_event(&k, &last, kinds, &mut out);
        l.advance(S + 5 * S + LINGER_NS + S, &mut store, &mut out);
        let recs = finished(&out);
        assert_eq!(recs.len(), 1, "{out:?}");
        let want = if rst { EndReason::Rst } else { EndReason::Idle };
        assert_eq!(recs[0].end_reason, want);
        assert_eq!(recs[0].orig_packets + recs[0].resp_packets, 2);
        let opened = out
            .iter()
            .filter(|e| matches!(e, ConnEvent::Opened(_)))
            .count();
        assert_eq!(opened, 1, "opened once: {out:?}");
        let st = l.stats();
        assert_eq!((st.open_connections, st.duplicate_events), (0, 1));
    }
}

/// The attempt timer leaves alone what Zeek's leaves alone: an answered connection, and one
/// whose originator closed it; both idle out from their last packet. And which idle timeout
/// applies: a conversation picked up mid-stream is established, a one-sided one is not.
#[test]
fn the_attempt_timer_leaves_answered_and_closed_connections_to_their_idle_timeouts() {
    let t = Timeouts::default();
    let k = key(1011, ipproto::TCP);
    let attempt_ns = t.tcp_attempt.as_nanos() as u64;
    let mut v = attempt(S, ipproto::TCP);
    v.last_seen_ns = S + 3 * S;
    assert!(unanswered_syn_attempt(&k, &v));
    assert_eq!(final_deadline_ns(&t, &k, &v), S + attempt_ns);
    // Answered by a RST... or by anything: the responder sent a packet.
    let mut answered = v;
    answered.packets[SIDE_HI] = 1;
    assert!(!unanswered_syn_attempt(&k, &answered));
    assert_eq!(final_deadline_ns(&t, &k, &answered), S + 3 * S + attempt_ns);
    // The originator sent a FIN: Zeek's timer finds it closed.
    let mut closed = v;
    closed.history[SIDE_LO] |= history::FIN;
    assert!(!unanswered_syn_attempt(&k, &closed));
    assert_eq!(final_deadline_ns(&t, &k, &closed), S + 3 * S + attempt_ns);
    // Picked up mid-stream (no SYN), and UDP: idle from the last packet.
    let mut mid = v;
    mid.history[SIDE_LO] = history::NON_SYN | history::ACK;
    assert_eq!(final_deadline_ns(&t, &k, &mid), S + 3 * S + attempt_ns);
    // Mid-stream with both sides talking: established; until one side closes.
    mid.history[SIDE_HI] = history::NON_SYN | history::ACK | history::DATA;
    mid.packets[SIDE_HI] = 1;
    let established_ns = t.tcp_established.as_nanos() as u64;
    assert_eq!(final_deadline_ns(&t, &k, &mid), S + 3 * S + established_ns);
    mid.history[SIDE_HI] |= history::FIN;
    assert_eq!(final_deadline_ns(&t, &k, &mid), S + 3 * S + attempt_ns);
    // A handshake the originator never completed (a SYN flood's, answered): an attempt.
    let mut half_open = v;
    half_open.history[SIDE_HI] = history::SYN_ACK;
    half_open.packets[SIDE_HI] = 1;
    assert_eq!(
        final_deadline_ns(&t, &k, &half_open),
        S + 3 * S + attempt_ns
    );
    let u = key(1011, ipproto::UDP);
    assert_eq!(
        final_deadline_ns(&t, &u, &v),
        S + 3 * S + t.udp.as_nanos() as u64
    );
}

/// A lifecycle that scans the table every second, as a live sensor does.
fn scanning() -> Lifecycle {
    Lifecycle::new(
        LifecycleConfig {
            table_scan_interval: Some(Duration::from_secs(1)),
            early_verdict_after: None,
            ..LifecycleConfig::default()
        },
        0,
    )
}

/// An attempt from `t` refused by a RST from the responder at `t` + 1 ms.
fn refused(t: u64) -> FlowValue {
    let mut v = attempt(t, ipproto::TCP);
    v.history[SIDE_HI] = history::RST;
    v.packets[SIDE_HI] = 1;
    v.last_seen_ns = t + 1_000_000;
    v
}

#[test]
fn a_scan_leaves_a_fresh_connection_to_its_events() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, v) = (key(1004, ipproto::TCP), refused(10 * S));
    let mut store = Store::default();
    store.flows.insert(k, v);
    // The scan runs while the connection's events are still in the ring.
    l.advance(10 * S + 5_000_000, &mut store, &mut out);
    assert!(out.is_empty(), "adopted too early: {out:?}");
    l.on_event(&k, &v, event::OPEN, &mut out);
    l.on_event(&k, &v, event::ANSWER | event::RST, &mut out);
    l.advance(12 * S, &mut store, &mut out);
    l.advance(20 * S, &mut store, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    let st = l.stats();
    assert_eq!((st.adopted_by_scan, st.finished_by_scan), (0, 0));
}

#[test]
fn late_events_of_a_connection_the_scan_finished_make_no_second_record() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, v) = (key(1005, ipproto::TCP), refused(10 * S));
    let mut store = Store::default();
    store.flows.insert(k, v);
    // Its events were held up for longer than a scan period.
    l.advance(12 * S, &mut store, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    l.on_event(&k, &v, event::OPEN, &mut out);
    l.on_event(&k, &v, event::ANSWER | event::RST, &mut out);
    for t in 13..80 {
        l.advance(t * S, &mut store, &mut out);
    }
    let opened = out
        .iter()
        .filter(|e| matches!(e, ConnEvent::Opened(_)))
        .count();
    assert_eq!((opened, finished(&out).len()), (1, 1), "{out:?}");
    let st = l.stats();
    assert_eq!(
        (st.adopted_by_scan, st.finished_by_scan, st.duplicate_events),
        (1, 1, 2)
    );
    assert_eq!(st.open_connections, 0);
}

#[test]
fn checks_of_ended_connections_do_not_pile_up() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    // A million connections that each end by their own event long before their idle
    // check (five minutes for an established one) would come up.
    for i in 0..1_000_000u64 {
        let k = FlowKey {
            port_lo: (i % 60_000) as u16,
            port_hi: (i / 60_000) as u16,
            ..key(0, ipproto::UDP)
        };
        let v = attempt(S + i * 1000, ipproto::UDP);
        l.on_event(&k, &v, event::OPEN, &mut out);
        l.on_evicted(&k, &v, S + i * 1000, &mut out);
        out.clear();
    }
    assert!(l.checks.len() <= 2 * 4096 + 8, "{} checks", l.checks.len());
    assert_eq!(l.stats().records_evicted, 1_000_000);
}

#[test]
fn a_finish_whose_open_event_was_lost_is_adopted_first() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, v) = (key(1006, ipproto::TCP), refused(10 * S));
    // Its `OPEN` and `ANSWER` events were dropped; the RST's event came.
    l.on_event(&k, &v, event::RST, &mut out);
    assert!(matches!(out[0], ConnEvent::Opened(_)), "{out:?}");
    assert_eq!(finished(&out).len(), 1);
    assert_eq!(l.stats().adopted_by_scan, 1);
    assert_eq!(l.stats().open_connections, 0);
}

/// A completed exchange from `t`: handshake, data, both FINs, the last packet at `t` + 10 ms.
fn closed(t: u64) -> FlowValue {
    let mut v = attempt(t, ipproto::TCP);
    v.history[SIDE_LO] |= history::ACK | history::NON_SYN | history::DATA | history::FIN;
    v.history[SIDE_HI] = history::SYN_ACK | history::NON_SYN | history::DATA | history::FIN;
    v.packets = [5, 4];
    v.last_seen_ns = t + 10_000_000;
    v
}

/// The kernel's part of a port reuse: the old value as `REPLACED`, then the new one's `OPEN`.
fn reuse(l: &mut Lifecycle, k: &FlowKey, old: &FlowValue, t: u64, out: &mut Vec<ConnEvent>) {
    l.on_event(k, old, event::REPLACED, out);
    l.on_event(k, &attempt(t, ipproto::TCP), event::OPEN, out);
}

#[test]
fn a_reused_five_tuple_hands_over_a_connection_whose_finish_event_was_lost() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, old) = (key(1007, ipproto::TCP), closed(10 * S));
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    // The FIN event was dropped; the client reuses the port before the scan comes.
    reuse(&mut l, &k, &old, 10 * S + 20_000_000, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(
        (recs[0].end_reason, recs[0].orig_packets),
        (EndReason::Fin, 5)
    );
    let st = l.stats();
    assert_eq!((st.finished_on_restart, st.lost_on_restart), (1, 0));
    assert_eq!(st.open_connections, 1, "the new connection is open");
}

/// The kernel's part of a port reuse while its ring was full: the old connection (open here
/// from its first packet at 10 s) had its `REPLACED` value parked, and the new connection's
/// entry `new` got its event (`kinds`) through.
fn park_and_restart(
    l: &mut Lifecycle,
    store: &mut Store,
    k: &FlowKey,
    old: &FlowValue,
    new: FlowValue,
    kinds: u32,
    out: &mut Vec<ConnEvent>,
) {
    l.on_event(k, &attempt(10 * S, ipproto::TCP), event::OPEN, out);
    store.parked.push((*k, *old));
    store.flows.insert(*k, new);
    l.on_event(k, &new, kinds, out);
}

#[test]
fn a_connection_parked_by_the_kernel_gets_its_record_at_the_scan() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let mut store = Store::default();
    let (k, old) = (key(1010, ipproto::TCP), closed(10 * S));
    let new_start = 10 * S + 20_000_000;
    // The FIN event was dropped, and the ring was still full at the restart: the kernel parked
    // the old value. The new connection's OPEN got through.
    let new = attempt(new_start, ipproto::TCP);
    park_and_restart(&mut l, &mut store, &k, &old, new, event::OPEN, &mut out);
    assert!(finished(&out).is_empty(), "not known yet: {out:?}");
    l.advance(11 * S, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(
        (
            recs[0].end_reason,
            recs[0].orig_packets,
            recs[0].resp_packets
        ),
        (EndReason::Fin, 5, 4)
    );
    assert_eq!(settled(&out).len(), 1, "its entry is gone: settled at once");
    let st = l.stats();
    assert_eq!(
        (
            st.taken_from_park,
            st.finished_on_restart,
            st.lost_on_restart
        ),
        (1, 1, 0)
    );
    assert_eq!(st.open_connections, 1, "the new connection is still open");
    // The new connection keeps its own record.
    l.on_event(&k, &refused(new_start), event::RST, &mut out);
    assert_eq!(finished(&out).len(), 2, "{out:?}");
}

/// The old connection's final ACK event, read after a new connection on its 5-tuple opened
/// (the kernel parked the old one's `REPLACED` value, its ring full): it must not disturb the
/// new connection; the old record comes from the parked value at the scan.
#[test]
fn a_late_final_ack_event_of_a_replaced_connection_leaves_the_new_one_alone() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let mut store = Store::default();
    let (k, old) = (key(1016, ipproto::TCP), closed(10 * S));
    let new_start = 10 * S + 20_000_000;
    let new = attempt(new_start, ipproto::TCP);
    park_and_restart(&mut l, &mut store, &k, &old, new, event::OPEN, &mut out);
    let opened = out.len();
    l.on_event(&k, &old, event::CLOSED, &mut out);
    assert_eq!(out.len(), opened, "nothing from the stale event: {out:?}");
    l.advance(11 * S, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(recs[0].start_unix_ns, old.first_seen_ns);
    let st = l.stats();
    assert_eq!(
        (
            st.finished_at_final_ack,
            st.taken_from_park,
            st.lost_on_restart,
            st.open_connections
        ),
        (0, 1, 0, 1)
    );
    let opened: Vec<_> = out
        .iter()
        .filter(|e| matches!(e, ConnEvent::Opened(_)))
        .collect();
    assert_eq!(opened.len(), 2, "one Opened per connection: {out:?}");
    // The new connection keeps its own record.
    l.on_event(&k, &refused(new_start), event::RST, &mut out);
    assert_eq!(finished(&out).len(), 2, "{out:?}");
}

#[test]
fn a_connection_parked_after_the_new_one_finished_leaves_the_new_one_alone() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let mut store = Store::default();
    let (k, old) = (key(1013, ipproto::TCP), closed(10 * S));
    let new_start = 10 * S + 20_000_000;
    // The old value parked; the new connection opened, was refused and reported, all before
    // the scan took the parked value out.
    let new = refused(new_start);
    park_and_restart(
        &mut l,
        &mut store,
        &k,
        &old,
        new,
        event::OPEN | event::RST,
        &mut out,
    );
    l.advance(11 * S, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 2, "one record each: {out:?}");
    assert_eq!(
        (recs[0].end_reason, recs[1].end_reason),
        (EndReason::Rst, EndReason::Fin)
    );
    assert_eq!(
        settled(&out).len(),
        1,
        "only the parked one settles now: {out:?}"
    );
    let new_id = recs[0].id();
    // The new one lingers until its own linger ends, and is settled then, once.
    l.advance(11 * S + LINGER_NS, &mut store, &mut out);
    assert_eq!(finished(&out).len(), 2, "no second record: {out:?}");
    let done = settled(&out);
    assert_eq!(done.len(), 2, "{out:?}");
    assert_eq!(done[1].id(), new_id);
    assert!(
        store.flows.is_empty(),
        "the new one's entry removed at its linger's end"
    );
    assert_eq!(l.stats().lost_on_restart, 0);
}

/// The old connection was reported (its FIN event came), but the ring was full at the
/// restart, so its `REPLACED` value was parked; the new connection then finished and was
/// reported too, all before the scan took the parked value out. The parked value is the
/// first connection's last value, not a connection of its own: no second record.
#[test]
fn a_parked_value_of_a_connection_reported_before_the_new_one_finished_makes_no_second_record() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let mut store = Store::default();
    let (k, old) = (key(1017, ipproto::TCP), closed(10 * S));
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    l.on_event(&k, &old, event::FIN_BOTH, &mut out);
    l.on_event(&k, &old, event::CLOSED, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    // A third connection on the same 5-tuple (the client cycles through its ports fast).
    for (i, start) in [10 * S + 20_000_000, 10 * S + 40_000_000]
        .into_iter()
        .enumerate()
    {
        let new = refused(start);
        let replaced = if i == 0 {
            old
        } else {
            refused(10 * S + 20_000_000)
        };
        store.parked.push((k, replaced));
        store.flows.insert(k, new);
        l.on_event(&k, &new, event::OPEN | event::RST, &mut out);
    }
    assert_eq!(finished(&out).len(), 3, "{out:?}");
    l.advance(11 * S, &mut store, &mut out);
    l.advance(12 * S, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 3, "one record per connection: {out:?}");
    let mut ids: Vec<_> = recs.iter().map(|r| r.start_unix_ns).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{out:?}");
    let st = l.stats();
    assert_eq!((st.taken_from_park, st.lost_on_restart), (2, 0));
}

#[test]
fn a_parked_connection_whose_events_were_all_lost_is_adopted_and_finished() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let mut store = Store::default();
    let (k, old) = (key(1011, ipproto::TCP), closed(10 * S));
    store.parked.push((k, old));
    l.advance(11 * S, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(recs[0].end_reason, EndReason::Fin);
    let st = l.stats();
    assert_eq!((st.taken_from_park, st.adopted_by_scan), (1, 1));
}

#[test]
fn a_displaced_connection_without_a_parked_value_counts_as_lost_at_the_scan() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let mut store = Store::default();
    let k = key(1012, ipproto::TCP);
    let new_start = 10 * S + 20_000_000;
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    // Both its FIN and its REPLACED were lost (the parking map full too).
    store.flows.insert(k, attempt(new_start, ipproto::TCP));
    l.on_event(&k, &attempt(new_start, ipproto::TCP), event::OPEN, &mut out);
    assert_eq!(
        l.stats().lost_on_restart,
        0,
        "maybe parked: not counted yet"
    );
    l.advance(11 * S, &mut store, &mut out);
    assert!(finished(&out).is_empty(), "{out:?}");
    assert_eq!(l.stats().lost_on_restart, 1);
}

#[test]
fn a_reused_five_tuple_after_a_reported_finish_makes_no_second_record() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, old) = (key(1008, ipproto::TCP), closed(10 * S));
    let mut store = Store::default();
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    l.on_event(&k, &old, event::FIN_BOTH, &mut out);
    l.advance(10 * S + 15_000_000, &mut store, &mut out);
    assert!(
        finished(&out).is_empty(),
        "waiting for the final ACK: {out:?}"
    );
    l.advance(10 * S + 30_000_000, &mut store, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    reuse(&mut l, &k, &old, 10 * S + 40_000_000, &mut out);
    // The replaced event can also come after the linger forgot the report.
    store
        .flows
        .insert(k, attempt(10 * S + 40_000_000, ipproto::TCP));
    l.advance(15 * S, &mut store, &mut out);
    l.on_event(&k, &old, event::REPLACED, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    let st = l.stats();
    assert_eq!((st.finished_on_restart, st.lost_on_restart), (0, 0));
}

#[test]
fn a_fin_closed_record_waits_for_the_final_ack_and_counts_it() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, at_fin) = (key(1009, ipproto::TCP), closed(10 * S));
    let mut store = Store::default();
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
    // The final ACK, 1 ms after the second FIN.
    let mut now = at_fin;
    now.packets[SIDE_LO] += 1;
    now.last_seen_ns += 1_000_000;
    store.flows.insert(k, now);
    // A scan and an idle check during the wait leave it to its close check.
    l.advance(10 * S + 15_000_000, &mut store, &mut out);
    assert!(finished(&out).is_empty(), "{out:?}");
    l.advance(10 * S + 25_000_000, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!((recs[0].orig_packets, recs[0].resp_packets), (6, 4));
    // It ends at the second FIN, as Zeek's duration does, and became final at its last
    // packet, the final ACK (detection latency runs from there).
    assert_eq!(recs[0].end_unix_ns, at_fin.last_seen_ns);
    assert_eq!(recs[0].final_unix_ns, now.last_seen_ns);
    let st = l.stats();
    assert_eq!(
        (st.records_fin, st.finished_by_scan, st.open_connections),
        (1, 0, 0)
    );
    // A duplicate FIN event, a later scan and the shutdown add nothing.
    l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
    l.advance(12 * S, &mut store, &mut out);
    l.flush(13 * S, &mut store, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
}

#[test]
fn the_wait_for_the_final_ack_follows_the_longer_round_trip() {
    // (SYN-ACK after the SYN, the originator's first ACK after the SYN-ACK (0: none; negative:
    // before it, as when the sensor saw that ACK but not the SYN-ACK in time), when the final
    // ACK comes after the second FIN, whether the record counts it): a WAN responder (80 ms)
    // gets 120 ms, a LAN one the configured 10 ms, a retransmitted SYN's answer (3 s) at most
    // `MAX_CLOSE_SETTLE`; a WAN originator (80 ms) behind a LAN responder gets 120 ms; an ACK
    // before the answer times nothing.
    const MS_I: i64 = 1_000_000;
    for (port, rtt, orig_rtt, ack_after, counted) in [
        (1020, 80 * MS, 0, 75 * MS, true),
        (1021, 80 * MS, 0, 130 * MS, false),
        (1022, MS / 10, 0, 8 * MS, true),
        (1023, MS / 10, 0, 12 * MS, false),
        (1024, 3_000 * MS, 0, 900 * MS, true),
        (1025, 3_000 * MS, 0, 1_100 * MS, false),
        (1026, MS / 10, 80 * MS_I, 110 * MS, true),
        (1027, MS / 10, 80 * MS_I, 130 * MS, false),
        (1028, 80 * MS, MS_I / 10, 110 * MS, true),
        (1029, 2 * MS, -MS_I, 12 * MS, false),
    ] {
        let (mut l, mut out) = (scanning(), Vec::new());
        let k = key(port, ipproto::TCP);
        let syn = attempt(10 * S, ipproto::TCP);
        l.on_event(&k, &syn, event::OPEN, &mut out);
        let mut answered = syn;
        answered.history[SIDE_HI] = history::SYN_ACK;
        answered.packets[SIDE_HI] = 1;
        answered.last_seen_ns += rtt;
        l.on_event(&k, &answered, event::ANSWER, &mut out);
        let mut at_fin = closed(10 * S);
        at_fin.last_seen_ns = 20 * S;
        if orig_rtt != 0 {
            at_fin.set_orig_ack_ns(answered.last_seen_ns.saturating_add_signed(orig_rtt));
        }
        l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
        // The final ACK: in the table, its event late or lost.
        let mut acked = at_fin;
        acked.packets[SIDE_LO] += 1;
        acked.last_seen_ns += ack_after;
        let mut store = Store::default();
        store.flows.insert(k, at_fin);
        l.advance(at_fin.last_seen_ns + ack_after - 1, &mut store, &mut out);
        store.flows.insert(k, acked);
        l.advance(at_fin.last_seen_ns + 2 * S, &mut store, &mut out);
        let recs = finished(&out);
        assert_eq!(recs.len(), 1, "{port}: {out:?}");
        let want = if counted { 6 } else { 5 };
        assert_eq!(
            recs[0].orig_packets, want,
            "{port}: rtt {rtt}, ack after {ack_after}"
        );
        assert_eq!(recs[0].end_unix_ns, at_fin.last_seen_ns, "{port}");
    }
}

#[test]
fn a_fin_closed_connection_still_waiting_at_shutdown_is_recorded_once() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, at_fin) = (key(1010, ipproto::TCP), closed(10 * S));
    let mut store = Store::default();
    store.flows.insert(k, at_fin);
    l.on_event(&k, &at_fin, event::OPEN, &mut out);
    l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
    l.flush(10 * S + 11_000_000, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(recs[0].end_reason, EndReason::Fin);
    assert_eq!(l.stats().finished_by_scan, 0);
}

#[test]
fn the_final_ack_event_ends_the_wait_at_once() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, at_fin) = (key(1011, ipproto::TCP), closed(10 * S));
    l.on_event(&k, &at_fin, event::OPEN, &mut out);
    l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
    assert!(finished(&out).is_empty());
    let mut acked = at_fin;
    acked.packets[SIDE_LO] += 1;
    acked.last_seen_ns += 200_000;
    l.on_event(&k, &acked, event::CLOSED, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(recs[0].orig_packets, 6);
    assert_eq!(recs[0].end_unix_ns, at_fin.last_seen_ns);
    // Its close check finds it finished; a second side's packet after the FINs adds nothing.
    l.advance(11 * S, &mut Store::default(), &mut out);
    l.on_event(&k, &acked, event::CLOSED, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
}

/// A scanning lifecycle whose close settle (5 s) outlasts the scan's grace and the idle
/// timeouts (1 s), so that a connection waiting for its final ACK meets both.
fn slow_settle() -> Lifecycle {
    Lifecycle::new(
        LifecycleConfig {
            timeouts: Timeouts {
                tcp_established: Duration::from_secs(1),
                tcp_attempt: Duration::from_secs(1),
                ..Timeouts::default()
            },
            close_settle: Duration::from_secs(5),
            table_scan_interval: Some(Duration::from_secs(1)),
            early_verdict_after: None,
            ..LifecycleConfig::default()
        },
        0,
    )
}

#[test]
fn neither_the_scan_nor_an_idle_check_finishes_a_connection_waiting_for_its_final_ack() {
    let (mut l, mut out) = (slow_settle(), Vec::new());
    let (k, at_fin) = (key(1012, ipproto::TCP), closed(10 * S));
    let mut store = Store::default();
    store.flows.insert(k, at_fin);
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
    for t in 11..15 {
        l.advance(t * S, &mut store, &mut out);
    }
    assert!(finished(&out).is_empty(), "{out:?}");
    l.advance(16 * S, &mut store, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    let st = l.stats();
    assert_eq!((st.finished_by_scan, st.records_fin), (0, 1));
}

#[test]
fn a_new_connection_on_the_five_tuple_ends_the_wait_with_the_old_record() {
    for replaced_event_came in [true, false] {
        let (mut l, mut out) = (slow_settle(), Vec::new());
        let (k, at_fin) = (key(1013, ipproto::TCP), closed(10 * S));
        l.on_event(&k, &at_fin, event::OPEN, &mut out);
        l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
        let mut later = at_fin;
        later.packets[SIDE_LO] += 1;
        later.last_seen_ns += 1_000_000;
        if replaced_event_came {
            reuse(&mut l, &k, &later, 10 * S + 50_000_000, &mut out);
        } else {
            let new = attempt(10 * S + 50_000_000, ipproto::TCP);
            l.on_event(&k, &new, event::OPEN, &mut out);
        }
        let recs = finished(&out);
        assert_eq!(recs.len(), 1, "{replaced_event_came}: {out:?}");
        assert_eq!(
            recs[0].end_unix_ns, at_fin.last_seen_ns,
            "ends at the second FIN"
        );
        let want_packets = if replaced_event_came { 6 } else { 5 };
        assert_eq!(recs[0].orig_packets, want_packets);
        let st = l.stats();
        assert_eq!((st.lost_on_restart, st.finished_on_restart), (0, 0));
        assert_eq!(st.open_connections, 1, "the new connection");
        // Its close check, when it comes, finds nothing to do.
        l.advance(16 * S, &mut Store::default(), &mut out);
        assert_eq!(finished(&out).len(), 1, "{out:?}");
    }
}

#[test]
fn a_final_ack_event_before_the_fin_event_finishes_the_connection_once() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, at_fin) = (key(1014, ipproto::TCP), closed(10 * S));
    let mut acked = at_fin;
    acked.packets[SIDE_LO] += 1;
    acked.last_seen_ns += 100_000;
    let mut store = Store::default();
    store.flows.insert(k, acked);
    l.on_event(&k, &at_fin, event::OPEN, &mut out);
    // Two CPUs: the final ACK's event is read before the second FIN's.
    l.on_event(&k, &acked, event::CLOSED, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(recs[0].orig_packets, 6, "the final ACK counted");
    assert_eq!(recs[0].conn_state, sensor_common::conn_state::ConnState::SF);
    assert_eq!(recs[0].final_unix_ns, acked.last_seen_ns);
    // The second FIN's time is not known from this event: the record ends at the final ACK
    // (one round trip later than from the FIN's event).
    assert_eq!(recs[0].end_unix_ns, acked.last_seen_ns);
    // The second FIN's event, the settle's time and the scan add nothing.
    l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
    l.advance(10 * S + 30_000_000, &mut store, &mut out);
    l.advance(12 * S, &mut store, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    let st = l.stats();
    assert_eq!(
        (
            st.finished_at_final_ack,
            st.duplicate_events,
            st.finished_by_scan,
            st.records_fin
        ),
        (1, 1, 0, 1)
    );
}

/// Two kernel CPUs took the two sides' last FINs at once, and neither saw the other's: no
/// `FIN_BOTH` came. The final ACK's `CLOSED` finalises the connection at once (it was left to
/// the table scan, a second later: an HTTP exchange's detection latency of 1.4 s in one demo).
#[test]
fn a_connection_whose_second_fin_signalled_nothing_is_finished_at_its_final_ack() {
    for open_event_came in [true, false] {
        let (mut l, mut out) = (scanning(), Vec::new());
        let (k, at_fin) = (key(1015, ipproto::TCP), closed(10 * S));
        let mut acked = at_fin;
        acked.packets[SIDE_HI] += 1;
        acked.last_seen_ns += 300_000;
        let mut store = Store::default();
        store.flows.insert(k, acked);
        if open_event_came {
            l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
        }
        l.on_event(&k, &acked, event::CLOSED, &mut out);
        assert!(
            matches!(out[0], ConnEvent::Opened(_)),
            "{open_event_came}: {out:?}"
        );
        let recs = finished(&out);
        assert_eq!(recs.len(), 1, "{open_event_came}: {out:?}");
        assert_eq!(recs[0].end_reason, EndReason::Fin);
        assert_eq!((recs[0].orig_packets, recs[0].resp_packets), (5, 5));
        assert_eq!(recs[0].final_unix_ns, acked.last_seen_ns);
        // The scan finds it reported; a second packet after the FINs adds nothing.
        l.advance(12 * S, &mut store, &mut out);
        l.on_event(&k, &acked, event::CLOSED, &mut out);
        assert_eq!(finished(&out).len(), 1, "{out:?}");
        let st = l.stats();
        assert_eq!(
            (
                st.finished_at_final_ack,
                st.finished_by_scan,
                st.adopted_by_scan,
                st.open_connections
            ),
            (1, 0, u64::from(!open_event_came), 0)
        );
    }
}

#[test]
fn a_connection_whose_events_were_all_lost_is_recorded_from_its_replaced_event() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, old) = (key(1015, ipproto::TCP), closed(10 * S));
    // OPEN, ANSWER, FIN and final-ACK events all dropped; the client reuses the port.
    reuse(&mut l, &k, &old, 10 * S + 50_000_000, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!((recs[0].start_unix_ns, recs[0].orig_packets), (10 * S, 5));
    let st = l.stats();
    assert_eq!(
        (
            st.adopted_by_scan,
            st.finished_on_restart,
            st.lost_on_restart
        ),
        (1, 1, 0)
    );
}

#[test]
fn a_reported_connection_taken_over_during_its_linger_is_not_recorded_again() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let (k, old) = (key(1016, ipproto::TCP), closed(10 * S));
    let mut store = Store::default();
    store.flows.insert(k, old);
    l.on_event(&k, &old, event::OPEN, &mut out);
    l.on_event(&k, &old, event::FIN_BOTH, &mut out);
    l.on_event(&k, &old, event::CLOSED, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    // A new connection takes the entry over; the linger ends before its REPLACED event is read.
    let new = attempt(11 * S, ipproto::TCP);
    store.flows.insert(k, new);
    l.advance(13 * S, &mut store, &mut out);
    reuse(&mut l, &k, &old, 11 * S, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    let st = l.stats();
    // (The scan at 13 s adopted the new connection, whose OPEN event was still unread.)
    assert_eq!(
        (
            st.adopted_by_scan,
            st.finished_on_restart,
            st.lost_on_restart
        ),
        (1, 0, 0)
    );
}

fn settled(out: &[ConnEvent]) -> Vec<&ConnectionRecord> {
    out.iter()
        .filter_map(|e| match e {
            ConnEvent::Settled(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn a_finished_connection_settles_once_with_its_trailing_packets() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let mut store = Store::default();
    // FIN-closed, its record at the final ACK; then a crossed close's second ACK and a
    // retransmitted FIN land in the lingering entry.
    let (k, at_fin) = (key(1020, ipproto::TCP), closed(10 * S));
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
    let mut last = at_fin;
    last.packets[SIDE_LO] += 1;
    last.last_seen_ns += MS;
    l.on_event(&k, &last, event::CLOSED, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!((recs[0].orig_packets, recs[0].resp_packets), (6, 4));
    assert!(
        settled(&out).is_empty(),
        "no settled record before the linger: {out:?}"
    );
    last.packets = [7, 5];
    last.last_seen_ns += 5 * MS;
    store.flows.insert(k, last);
    // The linger runs from the last packet; until it is over the entry stays.
    l.advance(last.last_seen_ns + S, &mut store, &mut out);
    assert!(settled(&out).is_empty(), "{out:?}");
    l.advance(last.last_seen_ns + LINGER_NS + S, &mut store, &mut out);
    let done = settled(&out);
    assert_eq!(done.len(), 1, "{out:?}");
    assert_eq!(done[0].id(), finished(&out)[0].id());
    assert_eq!((done[0].orig_packets, done[0].resp_packets), (7, 5));
    assert_eq!(done[0].end_reason, EndReason::Fin);
    assert!(store.flows.is_empty());

    // Refused, reported at the RST; its entry evicted while it lingers: settled by the
    // eviction, with the value the kernel handed over. A shutdown adds nothing.
    let (k2, v2) = (key(1021, ipproto::TCP), refused(20 * S));
    l.on_event(&k2, &v2, event::OPEN | event::RST, &mut out);
    let mut gone = v2;
    gone.packets[SIDE_HI] += 1;
    l.on_evicted(&k2, &gone, 20 * S + 2 * MS, &mut out);
    let done = settled(&out);
    assert_eq!(done.len(), 2, "{out:?}");
    assert_eq!((done[1].orig_packets, done[1].resp_packets), (1, 2));
    assert_eq!(done[1].end_reason, EndReason::Rst);

    // One still lingering at the shutdown: settled by the flush, as its entry leaves.
    let (k3, v3) = (key(1022, ipproto::TCP), refused(30 * S));
    l.on_event(&k3, &v3, event::OPEN | event::RST, &mut out);
    store.flows.insert(k3, v3);
    l.flush(30 * S + 10 * MS, &mut store, &mut out);
    let (recs, done) = (finished(&out), settled(&out));
    assert_eq!((recs.len(), done.len()), (3, 3), "{out:?}");
    assert_eq!(done[2].id(), recs[2].id());
    // Every finished record by FINs or a RST is settled exactly once.
    let ids: std::collections::HashSet<_> = done.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn a_reused_five_tuple_settles_the_old_connection_once() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let mut store = Store::default();
    // Refused and reported at its RST; a SYN reusing the 5-tuple restarts the entry while it
    // lingers: the REPLACED value (with a late retransmitted RST) settles it at once.
    let (k, old) = (key(1030, ipproto::TCP), refused(10 * S));
    l.on_event(&k, &old, event::OPEN | event::RST, &mut out);
    let mut last = old;
    last.packets[SIDE_HI] += 1;
    reuse(&mut l, &k, &last, 10 * S + 50 * MS, &mut out);
    let done = settled(&out);
    assert_eq!(done.len(), 1, "{out:?}");
    assert_eq!((done[0].orig_packets, done[0].resp_packets), (1, 2));
    // Its linger ends later, the entry held by the new connection: nothing more.
    store
        .flows
        .insert(k, attempt(10 * S + 50 * MS, ipproto::TCP));
    l.advance(13 * S, &mut store, &mut out);
    assert_eq!(settled(&out).len(), 1, "{out:?}");

    // The new one is refused too, and reported: settled on its own, once, at the shutdown.
    let second = refused(10 * S + 50 * MS);
    l.on_event(&k, &second, event::RST, &mut out);
    store.flows.insert(k, second);
    l.flush(14 * S, &mut store, &mut out);
    let done = settled(&out);
    assert_eq!(done.len(), 2, "{out:?}");
    assert_eq!(done[1].start_unix_ns, 10 * S + 50 * MS);

    // Never reported (its RST event lost): the REPLACED value finishes and settles it at once.
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, old) = (key(1031, ipproto::TCP), refused(20 * S));
    l.on_event(&k, &attempt(20 * S, ipproto::TCP), event::OPEN, &mut out);
    reuse(&mut l, &k, &old, 20 * S + 50 * MS, &mut out);
    let (recs, done) = (finished(&out), settled(&out));
    assert_eq!((recs.len(), done.len()), (1, 1), "{out:?}");
    assert_eq!(recs[0].id(), done[0].id());
    assert_eq!(recs[0].end_reason, EndReason::Rst);
}

#[test]
fn no_settled_records_where_no_log_reads_them() {
    let (mut l, mut out) = (
        Lifecycle::new(
            LifecycleConfig {
                table_scan_interval: None,
                early_verdict_after: None,
                settled_records: false,
                ..LifecycleConfig::default()
            },
            0,
        ),
        Vec::new(),
    );
    let mut store = Store::default();
    let (k, v) = (key(1040, ipproto::TCP), refused(10 * S));
    l.on_event(&k, &v, event::OPEN | event::RST, &mut out);
    store.flows.insert(k, v);
    l.advance(11 * S + LINGER_NS, &mut store, &mut out);
    // The record as ever, its entry gone after the linger, and nothing more.
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    assert!(store.flows.is_empty());
    assert!(settled(&out).is_empty(), "{out:?}");
    l.flush(12 * S + LINGER_NS, &mut store, &mut out);
    assert!(settled(&out).is_empty(), "{out:?}");
}

/// A full table evicts finished connections too (`slots::evictable`): one that waited for its
/// final ACK is recorded as closed by its FINs, once, though its `FIN_BOTH` event was handled
/// and a late duplicate of it comes after the eviction.
#[test]
fn a_closing_connection_the_table_evicted_is_one_fin_record() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, at_fin) = (key(1050, ipproto::TCP), closed(10 * S));
    assert!(sensor_common::slots::evictable(&k, &at_fin));
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
    assert!(finished(&out).is_empty(), "waiting for the final ACK");
    l.on_evicted(&k, &at_fin, at_fin.last_seen_ns + 1_000, &mut out);
    l.on_event(&k, &at_fin, event::FIN_BOTH, &mut out);
    let mut store = Store::default();
    l.advance(at_fin.last_seen_ns + LINGER_NS + S, &mut store, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(recs[0].end_reason, EndReason::Fin);
    assert_eq!((recs[0].orig_packets, recs[0].resp_packets), (5, 4));
    let st = l.stats();
    assert_eq!(
        (
            st.records_fin,
            st.records_evicted,
            st.evicted_before_report,
            st.open_connections
        ),
        (1, 0, 1, 0)
    );
}

/// A finished connection whose finish event was lost, evicted: its record says how it ended.
#[test]
fn a_finished_connection_evicted_before_its_event_keeps_its_end_reason() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let k = key(1051, ipproto::TCP);
    let mut v = refused(10 * S);
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    v.packets[SIDE_LO] = 1;
    l.on_evicted(&k, &v, 11 * S, &mut out);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:?}");
    assert_eq!(recs[0].end_reason, EndReason::Rst);
    assert_eq!(recs[0].final_unix_ns, v.last_seen_ns);
    // Its event, late: no second record.
    l.on_event(&k, &v, event::ANSWER | event::RST, &mut out);
    assert_eq!(finished(&out).len(), 1, "{out:?}");
    let st = l.stats();
    assert_eq!((st.finished_by_scan, st.evicted_before_report), (1, 1));
}

/// The kernel for [`many_port_reusing_connections_under_ring_drops_get_one_record_each`]: the
/// real per-packet update (`sensor_common::table::update`) over the test store, with a ring
/// buffer that drops events at random and a parking map that is never full.
struct Kernel {
    store: Store,
    /// Events written and not read yet, in the order they were written.
    ring: Vec<(FlowKey, FlowValue, u32)>,
    rng: rand::rngs::StdRng,
    /// The chance that the ring has no room for an event.
    drop: f64,
    /// The ring has no room for anything (a burst of drops).
    full: bool,
    dropped: u64,
}

impl Kernel {
    fn ring_has_room(&mut self) -> bool {
        use rand::Rng;
        let room = !self.full && !self.rng.random_bool(self.drop);
        if !room {
            self.dropped += 1;
        }
        room
    }

    /// One packet of the connection on `k` at `t`, from its client (the low side) or server.
    fn packet(&mut self, k: &FlowKey, t: u64, from_client: bool, flags: u8, len: u32) {
        let (client, server) = ((k.addr_lo, k.port_lo), (k.addr_hi, k.port_hi));
        let ((src, sport), (dst, dport)) = if from_client {
            (client, server)
        } else {
            (server, client)
        };
        let p = sensor_common::parse::Parsed {
            src,
            dst,
            sport,
            dport,
            protocol: ipproto::TCP,
            ip_version: 4,
            tcp_flags: flags,
            payload_len: len,
            ..Default::default()
        };
        let mut h = sensor_common::Health::default();
        let Some(u) = sensor_common::table::update(self, &p, &mut h, t, 1) else {
            panic!("packet not accounted at {t}");
        };
        if u.events != 0 && self.ring_has_room() {
            let v = self.store.flows[&u.key];
            self.ring.push((u.key, v, u.events));
        }
    }
}

impl sensor_common::table::FlowTables for Kernel {
    fn flow_ptr(&mut self, key: &FlowKey) -> Option<*mut FlowValue> {
        self.store.flows.get_mut(key).map(|v| v as *mut FlowValue)
    }
    fn flow_insert(
        &mut self,
        key: &FlowKey,
        value: &FlowValue,
        _h: &mut sensor_common::Health,
    ) -> sensor_common::table::Insert {
        if self.store.flows.contains_key(key) {
            return sensor_common::table::Insert::Exists;
        }
        self.store.flows.insert(*key, *value);
        sensor_common::table::Insert::Done
    }
    /// `sensor-ebpf`'s `signal::replaced`: the ring if it has room, else the parking map.
    fn on_restart(
        &mut self,
        key: &FlowKey,
        old: &FlowValue,
        _now_ns: u64,
        _h: &mut sensor_common::Health,
    ) {
        if self.ring_has_room() {
            self.ring.push((*key, *old, event::REPLACED));
        } else {
            self.store.parked.push((*key, *old));
        }
    }
    fn frag_get(
        &mut self,
        _key: &sensor_common::flow::FragKey,
    ) -> Option<sensor_common::flow::FragValue> {
        None
    }
    fn frag_insert(
        &mut self,
        _key: &sensor_common::flow::FragKey,
        _value: &sensor_common::flow::FragValue,
    ) {
    }
}

/// Whole TCP connections, packet by packet through the kernel's own flow update, on a few
/// 5-tuples that clients reuse over and over (the next connection a few ms to seconds after
/// the previous one ended, a refused one often retried at once, now and then just before a
/// table scan; within its linger, the entry is restarted with a `REPLACED`), over LAN or WAN
/// round trips, with a ring that drops 0-60% of the events (in bursts too; a dropped
/// `REPLACED` is parked, the park never full), read every 10 ms tick as the capture loop
/// does (`Capture::tick`: everything written up to a moment 0-2 ms before the lifecycle's
/// `advance`, in the order of `Capture::drain_events`; what the kernel writes in between
/// waits for the next tick), the table scanned every second, flushed at the end. Whatever
/// was lost, every connection has exactly one `Finished` record, ended as it ended (FIN or
/// RST), at most one `Settled` and at most one `Opened`, nothing else has a record, and no
/// restart counts as lost. (The CI run of stop 28: 10,009 records for 10,000 connections.)
///
/// It found, on seed 159, what the first fix of that run missed: a connection finalised from a
/// parked `REPLACED` value at a scan, while its own events (written after the tick's ring read,
/// just before the scan) were still in the ring, got a second record from those events, since
/// `finish_detached` remembered nothing and `remember_reported` forgot earlier reports whose
/// last value had been read (`reported` holds one connection per 5-tuple). Both are now
/// remembered in `Lifecycle::superseded`, whose late events count as duplicates.
#[test]
fn many_port_reusing_connections_under_ring_drops_get_one_record_each() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use sensor_common::parse::tcp_flags::{ACK, FIN, PSH, RST, SYN};
    use std::collections::HashMap;

    const TICK: u64 = 10 * MS;
    let window = 2 * MS;
    let mut totals: HashMap<&str, u64> = HashMap::new();
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let drop = rng.random_range(0.0..0.6);
        let burst = if rng.random_bool(0.5) { 0.1 } else { 0.0 };
        let keys: Vec<FlowKey> = (0..rng.random_range(3..=8))
            .map(|i| key(40_000 + i, ipproto::TCP))
            .collect();
        // (time, key, from the client, TCP flags, payload); expected end by (port, start).
        let mut packets: Vec<(u64, usize, bool, u8, u32)> = Vec::new();
        let mut expected: HashMap<(u16, u64), EndReason> = HashMap::new();
        for (ki, k) in keys.iter().enumerate() {
            let mut t = S + rng.random_range(0..500 * MS);
            // Its round trips: a LAN's or a WAN's.
            let rtts = if rng.random_bool(0.5) {
                50_000..500_000
            } else {
                MS..20 * MS
            };
            for _ in 0..rng.random_range(5..30) {
                let mut pkt = |t: u64, client: bool, flags: u8, len: u32| {
                    packets.push((t, ki, client, flags, len));
                };
                let start = t;
                let rtt = rng.random_range(rtts.clone());
                pkt(t, true, SYN, 0);
                t += rtt;
                let refused = rng.random_bool(0.15);
                let reason = if refused {
                    pkt(t, false, RST | ACK, 0);
                    EndReason::Rst
                } else {
                    pkt(t, false, SYN | ACK, 0);
                    t += rng.random_range(10_000..2 * MS);
                    pkt(t, true, ACK, 0);
                    for _ in 0..rng.random_range(1..5) {
                        t += rng.random_range(10_000..5 * MS);
                        pkt(t, true, PSH | ACK, rng.random_range(1..1000));
                        t += rng.random_range(10_000..5 * MS);
                        pkt(t, false, PSH | ACK, rng.random_range(1..1500));
                    }
                    t += rng.random_range(10_000..5 * MS);
                    let first = rng.random_bool(0.5);
                    if rng.random_bool(0.15) {
                        pkt(t, first, RST | ACK, 0);
                        EndReason::Rst
                    } else {
                        pkt(t, first, FIN | ACK, 0);
                        t += rng.random_range(10_000..rtt.max(20_000));
                        pkt(t, !first, FIN | ACK, 0);
                        if rng.random_bool(0.9) {
                            t += rng.random_range(10_000..rtt.max(20_000));
                            pkt(t, first, ACK, 0);
                        }
                        if rng.random_bool(0.1) {
                            // A retransmitted FIN and its ACK, trailing.
                            t += rng.random_range(MS..50 * MS);
                            pkt(t, !first, FIN | ACK, 0);
                            pkt(t + 100_000, first, ACK, 0);
                            t += 100_000;
                        }
                        EndReason::Fin
                    }
                };
                expected.insert((k.port_lo, start), reason);
                // The client's next connection on this port: a refused one is often retried
                // at once (a scanner's fixed source port).
                t += match rng.random_range(0..10) {
                    _ if refused && rng.random_bool(0.9) => rng.random_range(20_000..MS),
                    0..3 => rng.random_range(MS..20 * MS),
                    3..7 => rng.random_range(20 * MS..S),
                    _ => rng.random_range(S..8 * S),
                };
                // Now and then just before a table scan (at every second + 10 ms), while
                // the ring's last events wait to be read.
                let scan_at = (t - 10 * MS).next_multiple_of(S) + 10 * MS;
                if rng.random_bool(0.2) && scan_at - t > 3 * MS {
                    t = scan_at - rng.random_range(0..3 * MS);
                }
            }
        }
        packets.sort_by_key(|p| p.0);
        let last = packets.last().unwrap().0;
        let end = last + rng.random_range(0..8 * S);

        let mut kernel = Kernel {
            store: Store::default(),
            ring: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            drop,
            full: false,
            dropped: 0,
        };
        let (mut l, mut out) = (scanning(), Vec::new());
        // `Capture::drain_events`: what is read, in the order of the packets' times.
        let drain = |l: &mut Lifecycle, batch: Vec<(FlowKey, FlowValue, u32)>, out: &mut _| {
            let mut batch: Vec<_> = batch
                .into_iter()
                .map(|(k, v, kinds)| {
                    let at = if kinds & event::OPEN != 0 {
                        v.first_seen_ns
                    } else {
                        v.last_seen_ns
                    };
                    (at, k, v, kinds)
                })
                .collect();
            batch.sort_by_key(|e| e.0);
            for (_, k, v, kinds) in batch {
                l.on_event(&k, &v, kinds, out);
            }
        };
        let (mut next, mut now) = (0, TICK);
        while now <= end || next < packets.len() {
            kernel.full = rng.random_bool(burst);
            // The capture loop reads the ring up to a moment just before the scan: the
            // events of the packets in between wait for the next tick.
            let read_to = now - rng.random_range(0..=window);
            while next < packets.len() && packets[next].0 <= read_to {
                let (t, ki, client, flags, len) = packets[next];
                kernel.packet(&keys[ki], t, client, flags, len);
                next += 1;
            }
            let batch = std::mem::take(&mut kernel.ring);
            drain(&mut l, batch, &mut out);
            while next < packets.len() && packets[next].0 <= now {
                let (t, ki, client, flags, len) = packets[next];
                kernel.packet(&keys[ki], t, client, flags, len);
                next += 1;
            }
            // The parking map's order is a hash map's.
            let parked = &mut kernel.store.parked;
            for i in (1..parked.len()).rev() {
                parked.swap(i, rng.random_range(0..=i));
            }
            l.advance(now, &mut kernel.store, &mut out);
            now += TICK;
        }
        let batch = std::mem::take(&mut kernel.ring);
        drain(&mut l, batch, &mut out);
        l.flush(now, &mut kernel.store, &mut out);

        // One `Finished` each, as it ended; at most one `Settled` and `Opened`; nothing else.
        let mut seen: HashMap<(u16, u64), [u32; 3]> = HashMap::new();
        let ctx = |what: &str| {
            format!(
                "seed {seed} (drop {drop:.2}, bursts {burst}, {} keys, {} connections): {what}",
                keys.len(),
                expected.len()
            )
        };
        for e in &out {
            let (id, slot) = match e {
                ConnEvent::Opened(s) => ((s.id.orig_port, s.id.start_unix_ns), 0),
                ConnEvent::Finished(r) => {
                    let id = (r.orig_port, r.start_unix_ns);
                    let want = expected.get(&id);
                    assert!(want.is_some(), "{}", ctx(&format!("phantom record {r:?}")));
                    assert_eq!(
                        Some(&r.end_reason),
                        want,
                        "{}",
                        ctx(&format!("end reason of {r:?}"))
                    );
                    (id, 1)
                }
                ConnEvent::Settled(r) => ((r.orig_port, r.start_unix_ns), 2),
                _ => continue,
            };
            seen.entry(id).or_default()[slot] += 1;
        }
        let mut without_opened = 0;
        for id in expected.keys() {
            let [opened, finished, settled] = seen.get(id).copied().unwrap_or_default();
            assert_eq!(
                finished,
                1,
                "{}",
                ctx(&format!("{id:?}: {finished} Finished records"))
            );
            assert!(
                settled <= 1,
                "{}",
                ctx(&format!("{id:?}: {settled} Settled"))
            );
            assert!(opened <= 1, "{}", ctx(&format!("{id:?}: {opened} Opened")));
            if opened == 0 {
                without_opened += 1;
            }
        }
        assert_eq!(
            seen.len(),
            expected.len(),
            "{}",
            ctx("events of unknown connections")
        );
        let st = l.stats();
        for (name, n) in [
            ("connections", expected.len() as u64),
            ("events dropped", kernel.dropped),
            ("without Opened", without_opened),
            ("taken_from_park", st.taken_from_park),
            ("finished_on_restart", st.finished_on_restart),
            ("finished_by_scan", st.finished_by_scan),
            ("finished_at_final_ack", st.finished_at_final_ack),
            ("lost_on_restart", st.lost_on_restart),
            ("duplicate_events", st.duplicate_events),
        ] {
            *totals.entry(name).or_default() += n;
        }
        assert_eq!(st.lost_on_restart, 0, "{}", ctx("lost on restart"));
    }
    let mut totals: Vec<_> = totals.into_iter().collect();
    totals.sort();
    println!("port reuse under ring drops, 200 seeds: {totals:?}");
}

/// A connection recorded from its parked value at a scan, while an earlier connection on its
/// 5-tuple is still open here, makes no second record from its own events read after the scan.
#[test]
fn a_connection_recorded_from_the_park_ignores_its_own_late_events() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let mut store = Store::default();
    let k = key(1060, ipproto::TCP);
    l.advance(10 * S, &mut store, &mut out); // a scan at 10 s; the next at 11 s
    // A: its SYN's OPEN read; then the ring fills: A's RST event is dropped.
    let a = refused(10 * S);
    l.on_event(&k, &attempt(10 * S, ipproto::TCP), event::OPEN, &mut out);
    // B's SYN restarts A's entry just before the 11 s scan (after that tick's ring read):
    // A's REPLACED parked. B is refused; its OPEN and RST events make it into the ring but
    // are not read before the scan. C's SYN restarts B's entry: B's REPLACED parked.
    let b = refused(11 * S - 2 * MS); // SYN at 10.998 s, RST at 10.999 s
    let c = attempt(11 * S - MS / 2, ipproto::TCP);
    store.parked.push((k, b)); // the park's (hash) order: B before A
    store.parked.push((k, a));
    store.flows.insert(k, c);
    l.advance(11 * S, &mut store, &mut out);
    // The next tick's ring read: B's OPEN and RST, C's OPEN.
    refused_events(&mut l, &k, &b, &mut out);
    l.on_event(&k, &c, event::OPEN, &mut out);
    let recs = finished(&out);
    let of_b = recs
        .iter()
        .filter(|r| r.start_unix_ns == b.first_seen_ns)
        .count();
    assert_eq!((recs.len(), of_b), (2, 1), "{out:#?}");
}

/// Two connections on one 5-tuple taken from the park in one scan: their late events make no
/// second record of either.
#[test]
fn two_parked_connections_of_one_five_tuple_are_recorded_once_each() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let mut store = Store::default();
    let k = key(1061, ipproto::TCP);
    l.advance(10 * S, &mut store, &mut out); // the next scan at 11 s
    // Just before the 11 s scan (after that tick's ring read): B is refused, C's SYN restarts
    // B's entry (B's REPLACED parked), C is refused, D's SYN restarts C's entry (C's REPLACED
    // parked). B's and C's OPEN and RST events are in the ring, unread at the scan.
    let b = refused(11 * S - 4 * MS);
    let c = refused(11 * S - 2 * MS);
    let d = attempt(11 * S - MS / 2, ipproto::TCP);
    store.parked.push((k, b));
    store.parked.push((k, c));
    store.flows.insert(k, d);
    l.advance(11 * S, &mut store, &mut out);
    assert_eq!(finished(&out).len(), 2, "{out:#?}");
    // The next tick's ring read.
    for v in [b, c] {
        refused_events(&mut l, &k, &v, &mut out);
    }
    l.on_event(&k, &d, event::OPEN, &mut out);
    assert_eq!(finished(&out).len(), 2, "one record each: {out:#?}");
}

/// The ring's events of the refused connection `v` on `k`, as a tick reads them: its OPEN (the
/// value of its SYN) and its RST.
fn refused_events(l: &mut Lifecycle, k: &FlowKey, v: &FlowValue, out: &mut Vec<ConnEvent>) {
    l.on_event(k, &attempt(v.first_seen_ns, ipproto::TCP), event::OPEN, out);
    l.on_event(k, v, event::ANSWER | event::RST, out);
}

/// A store that records the parts the scan asks for, one too-recent entry in each.
#[derive(Default)]
struct Parts {
    asked: std::cell::RefCell<Vec<usize>>,
    parked_takes: usize,
}
impl FlowStore for Parts {
    fn get(&self, _: &FlowKey) -> Option<FlowValue> {
        None
    }
    fn remove(&mut self, _: &FlowKey, _: u64) -> Option<FlowValue> {
        None
    }
    fn entries(&self) -> Vec<(FlowKey, FlowValue)> {
        panic!("the scan asks for parts, never for the whole table")
    }
    fn entries_part(&self, part: usize, parts: usize) -> Vec<(FlowKey, FlowValue)> {
        assert_eq!(parts, SCAN_PARTS);
        self.asked.borrow_mut().push(part);
        // One entry a part, too recent to be adopted.
        vec![(
            key(1000 + part as u16, ipproto::UDP),
            attempt(u64::MAX / 2, ipproto::UDP),
        )]
    }
    fn take_parked(&mut self) -> Vec<(FlowKey, FlowValue)> {
        self.parked_takes += 1;
        Vec::new()
    }
}

/// The table scan walks one part of the table a tick, the parts of a pass spread over the
/// scan interval (part `k` at the pass's start plus `k` sixteenths of it), every part once a
/// pass and the park taken before each; after a pause, every part that fell due runs at once.
#[test]
fn the_table_scan_walks_one_part_a_tick_and_every_part_once_a_pass() {
    let (mut l, mut out, mut store) = (scanning(), Vec::new(), Parts::default());
    let mut when: Vec<(usize, u64)> = Vec::new();
    // Ticks of 10 ms from 10 s to 12.99 s: three passes.
    for i in 0..300 {
        let t = 10 * S + i * 10 * MS;
        let before = store.asked.borrow().len();
        l.advance(t, &mut store, &mut out);
        let asked = store.asked.borrow();
        assert!(asked.len() <= before + 1, "two parts in the tick at {t}");
        if asked.len() > before {
            when.push((asked[before], t - 10 * S));
        }
    }
    assert_eq!(when.len(), 3 * SCAN_PARTS, "{when:?}");
    for (i, &(part, at)) in when.iter().enumerate() {
        assert_eq!(part, i % SCAN_PARTS, "{when:?}");
        // The first tick at or after its moment.
        let due = (i / SCAN_PARTS) as u64 * S + (i % SCAN_PARTS) as u64 * S / SCAN_PARTS as u64;
        assert!(
            at >= due && at < due + 10 * MS,
            "part {i} at {at}, due {due}"
        );
    }
    assert_eq!(
        store.parked_takes,
        3 * SCAN_PARTS,
        "the park before every part"
    );
    assert_eq!(
        l.stats().table_entries,
        SCAN_PARTS as u64,
        "a whole pass's entries"
    );
    // A pass begins at 13 s; the loop pauses until 13.5 s: parts 1 to 8 at once.
    l.advance(13 * S, &mut store, &mut out);
    let before = store.asked.borrow().len();
    l.advance(13 * S + S / 2, &mut store, &mut out);
    assert_eq!(store.asked.borrow()[before..], [1, 2, 3, 4, 5, 6, 7, 8]);
}

/// A scan interval of 0 (the configuration accepts it) walks the whole table at every tick,
/// and the catch-up loop ends.
#[test]
fn a_scan_interval_of_zero_walks_every_part_at_every_tick() {
    let mut l = Lifecycle::new(
        LifecycleConfig {
            table_scan_interval: Some(Duration::ZERO),
            early_verdict_after: None,
            ..LifecycleConfig::default()
        },
        0,
    );
    let (mut out, mut store) = (Vec::new(), Parts::default());
    l.advance(10 * S, &mut store, &mut out);
    l.advance(10 * S + 10 * MS, &mut store, &mut out);
    let every: Vec<usize> = (0..2 * SCAN_PARTS).map(|i| i % SCAN_PARTS).collect();
    assert_eq!(*store.asked.borrow(), every);
    assert_eq!(
        store.parked_takes,
        2 * SCAN_PARTS,
        "the park before every part"
    );
}

/// The park is taken before every part of the scan, not once a pass: a connection whose entry
/// a later SYN restarted while the ring was full is recorded at the next part, a sixteenth of
/// the interval later.
#[test]
fn the_park_is_taken_before_every_part_of_the_scan() {
    let (mut l, mut out) = (scanning(), Vec::new());
    let mut store = Store::default();
    let k = key(1070, ipproto::TCP);
    l.advance(10 * S, &mut store, &mut out); // part 0 at 10 s, part 1 at 10.0625 s
    let a = refused(10 * S + MS);
    l.on_event(
        &k,
        &attempt(10 * S + MS, ipproto::TCP),
        event::OPEN,
        &mut out,
    );
    // B's SYN restarts A's entry; A's REPLACED is parked, its RST event lost.
    store.parked.push((k, a));
    store
        .flows
        .insert(k, attempt(10 * S + 20 * MS, ipproto::TCP));
    l.advance(10 * S + 60 * MS, &mut store, &mut out);
    assert!(finished(&out).is_empty(), "no part due yet: {out:#?}");
    l.advance(10 * S + 70 * MS, &mut store, &mut out);
    assert_eq!(l.stats().taken_from_park, 1);
    let recs = finished(&out);
    assert_eq!(recs.len(), 1, "{out:#?}");
    assert_eq!(recs[0].start_unix_ns, a.first_seen_ns);
}

/// A connection from the low side begun at `t` and answered by a SYN-ACK at once: the
/// originator's handshake completed, then `orig_packets` packets from it in all with
/// `orig_payload` bytes, and `resp_payload` bytes from the responder.
fn established(t: u64, orig_packets: u64, orig_payload: u64, resp_payload: u64) -> FlowValue {
    let mut v = attempt(t, ipproto::TCP);
    v.history[SIDE_LO] |= history::NON_SYN | history::ACK;
    v.history[SIDE_HI] = history::SYN_ACK | history::NON_SYN | history::ACK;
    v.packets = [orig_packets, 2];
    v.payload_bytes = [orig_payload, resp_payload];
    if orig_payload > 0 {
        v.history[SIDE_LO] |= history::DATA;
    }
    if resp_payload > 0 {
        v.history[SIDE_HI] |= history::DATA;
    }
    v.last_seen_ns = t + 9 * S;
    v
}

#[test]
fn a_connection_holding_its_request_gets_one_held_verdict_at_ten_seconds() {
    let mut l = Lifecycle::new(
        LifecycleConfig {
            table_scan_interval: None,
            ..LifecycleConfig::default()
        },
        0,
    );
    let (mut out, mut store) = (Vec::new(), Store::default());
    let held_ns = LifecycleConfig::HELD_REQUEST_AFTER.as_nanos() as u64;
    // A slow attack's connection (a request's lines, a packet every few seconds, no answer);
    // an answered request; an upload (many packets a second, answered at its end); a
    // preconnect (no request yet); and one that holds a request but half-closed.
    let mut half_closed = established(S, 4, 70, 0);
    half_closed.history[SIDE_LO] |= history::FIN;
    let conns = [
        (key(2000, ipproto::TCP), established(S, 4, 70, 0)),
        (key(2001, ipproto::TCP), established(S, 4, 70, 900)),
        (key(2002, ipproto::TCP), established(S, 5_000, 7_000_000, 0)),
        (key(2003, ipproto::TCP), established(S, 2, 0, 0)),
        (key(2004, ipproto::TCP), half_closed),
    ];
    for (k, v) in &conns {
        l.on_event(k, v, event::OPEN | event::ANSWER, &mut out);
        store.flows.insert(*k, *v);
    }
    out.clear();
    l.advance(S + held_ns - 1, &mut store, &mut out);
    assert!(out.is_empty(), "{out:?}");
    l.advance(S + held_ns, &mut store, &mut out);
    let held: Vec<&ConnectionRecord> = out.iter().filter_map(ConnEvent::record).collect();
    assert_eq!(held.len(), 1, "{out:?}");
    assert_eq!(held[0].orig_port, 2000);
    assert!(held[0].held_request());
    assert_eq!(held[0].end_reason, EndReason::Ongoing);
    assert_eq!(held[0].final_unix_ns, S + held_ns);
    // Once: it is not looked at again while it lasts.
    out.clear();
    l.advance(S + 4 * held_ns, &mut store, &mut out);
    assert!(out.iter().all(|e| e.record().is_none()), "{out:?}");
}

/// A connection closed by FINs and its final ACK, reported, then evicted by a full table while
/// it lingers; returns its key and last value.
fn closed_and_evicted(
    l: &mut Lifecycle,
    port: u16,
    out: &mut Vec<ConnEvent>,
) -> (FlowKey, FlowValue) {
    let k = key(port, ipproto::TCP);
    let mut v = attempt(S, ipproto::TCP);
    l.on_event(&k, &v, event::OPEN, out);
    v.history[SIDE_HI] = history::SYN_ACK | history::ACK | history::DATA;
    v.packets[SIDE_HI] = 1;
    v.last_seen_ns = S + MS;
    l.on_event(&k, &v, event::ANSWER, out);
    v.history[SIDE_LO] |= history::ACK | history::DATA | history::FIN;
    v.history[SIDE_HI] |= history::FIN;
    v.packets = [5, 4];
    v.last_seen_ns = S + 20 * MS;
    l.on_event(&k, &v, event::FIN_BOTH, out);
    v.packets[SIDE_LO] = 6;
    v.last_seen_ns = S + 21 * MS;
    l.on_event(&k, &v, event::CLOSED, out);
    l.on_evicted(&k, &v, S + 30 * MS, out);
    (k, v)
}

/// A flow of `packets` trailing packets (no SYN: a final ACK or a retransmitted FIN) from the
/// low side, first at `t`.
fn trailing(t: u64, packets: u64) -> FlowValue {
    let mut v = FlowValue {
        first_seen_ns: t,
        last_seen_ns: t,
        ..FlowValue::default()
    };
    v.packets[SIDE_LO] = packets;
    v.history[SIDE_LO] = history::ACK | history::FIN | history::NON_SYN;
    v
}

#[test]
fn trailing_packets_after_a_lingering_connection_was_evicted_are_folded_into_it() {
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, _) = closed_and_evicted(&mut l, 1100, &mut out);
    assert_eq!(finished(&out).len(), 1);
    assert_eq!(l.stats().evicted_after_report, 1);
    // The client's retransmitted FIN finds no entry: the kernel opens a flow on the 5-tuple.
    let mut store = Store::default();
    let t = trailing(S + 200 * MS, 1);
    store.flows.insert(k, t);
    out.clear();
    l.on_event(&k, &t, event::OPEN, &mut out);
    // Neither the event nor the entry's end makes a connection of it.
    l.advance(S + 200 * MS + 2 * LINGER_NS + 10 * S, &mut store, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert!(
        store.flows.is_empty(),
        "its entry goes as a lingering one's does"
    );
    let st = l.stats();
    assert_eq!(
        (st.trailing_folded, st.records(), st.open_connections),
        (1, 1, 0)
    );
}

#[test]
fn trailing_packets_evicted_in_turn_or_found_by_the_scan_are_folded_once() {
    // Evicted again before their `OPEN` event was read: folded, counted once, no record.
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, _) = closed_and_evicted(&mut l, 1101, &mut out);
    out.clear();
    let t = trailing(S + 100 * MS, 2);
    l.on_evicted(&k, &t, S + 150 * MS, &mut out);
    assert!(out.is_empty(), "{out:?}");
    let st = l.stats();
    assert_eq!(
        (st.trailing_folded, st.evicted_after_report, st.records()),
        (1, 2, 1)
    );
    // Their `OPEN` event lost: the table scan finds the entry and folds it, no adoption.
    let mut l = Lifecycle::new(
        LifecycleConfig {
            table_scan_interval: Some(Duration::from_millis(100)),
            early_verdict_after: None,
            ..LifecycleConfig::default()
        },
        0,
    );
    let mut out = Vec::new();
    let (k, _) = closed_and_evicted(&mut l, 1102, &mut out);
    out.clear();
    let mut store = Store::default();
    let t = trailing(S + 100 * MS, 1);
    store.flows.insert(k, t);
    for i in 0..40 {
        l.advance(S + 100 * MS + i * 100 * MS, &mut store, &mut out);
    }
    assert!(finished(&out).is_empty(), "{out:?}");
    let st = l.stats();
    assert_eq!((st.trailing_folded, st.adopted_by_scan), (1, 0));
}

#[test]
fn a_new_connection_or_packets_after_the_linger_are_no_trailing_packets() {
    // A SYN reusing the 5-tuple at once is a connection.
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, _) = closed_and_evicted(&mut l, 1103, &mut out);
    out.clear();
    let syn = attempt(S + 100 * MS, ipproto::TCP);
    l.on_event(&k, &syn, event::OPEN, &mut out);
    l.on_evicted(&k, &syn, S + 200 * MS, &mut out);
    assert_eq!(finished(&out).len(), 1);
    assert_eq!(l.stats().trailing_folded, 0);
    // Packets without a SYN long after the linger are a connection seen in its middle.
    let (mut l, mut out) = (lifecycle(), Vec::new());
    let (k, _) = closed_and_evicted(&mut l, 1104, &mut out);
    let mut store = Store::default();
    let late_ns = S + 30 * MS + LINGER_NS + S;
    l.advance(late_ns, &mut store, &mut out);
    out.clear();
    let t = trailing(late_ns, 1);
    store.flows.insert(k, t);
    l.on_event(&k, &t, event::OPEN, &mut out);
    l.on_evicted(&k, &t, late_ns + MS, &mut out);
    store.flows.clear();
    let recs = finished(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, EndReason::Evicted);
    assert_eq!(l.stats().trailing_folded, 0);
}
