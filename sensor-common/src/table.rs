//! The per-packet flow-table update, written once for the kernel program and for offline replay.
//!
//! [`update`] is everything the XDP/TC programs do with a parsed packet: attribute a later IP
//! fragment through the fragment table, remember a first fragment, find or create the flow
//! (restarting it in place when a SYN reuses a finished 5-tuple), count a full table, and add the
//! packet with [`account`](crate::account::account). Only the map operations differ between the
//! two worlds, so they are behind [`FlowTables`]: BPF maps in the kernel (`sensor-ebpf`, the
//! flow table being open addressing in a BPF array, see [`crate::slots`]), hash maps in user
//! space (`sensor::replay`).
//!
//! Why this split and not a shared function per step: exact parity between live mode and
//! `sensor replay` is the point of replay, and the subtle parts (the order of the fragment map
//! insert and the flow lookup, what a lost insert race or a full table counts, when a restarted
//! flow counts as created, which packets count as accounted) live *between* the map calls. With
//! this function both sides cannot drift apart; the kernel keeps its exact instruction shape
//! because everything here is `#[inline(always)]` and the trait is implemented on a zero-sized
//! type whose methods are the same map calls the program made before.
//!
//! The ring-buffer output stays with the caller ([`Updated::events`] says what to signal): in
//! the kernel a full ring buffer is a health counter, in replay the event is handled at once.
//!
//! Time comes from a [`Clock`] with two readings, asked for lazily: [`Clock::exact`] where the
//! timestamp identifies or orders something (a flow's creation or restart, whose `first_seen_ns`
//! tells two connections on one reused 5-tuple apart, and a TCP packet that sets a new history
//! bit: handshake, first data, FIN, RST), [`Clock::coarse`] for every other packet, which only
//! moves `last_seen_ns` forward. In the kernel the exact reading is the `bpf_ktime_get_ns`
//! helper (~16 ns a call here) and the coarse one a per-CPU copy of it refreshed once per
//! jiffy, so a steady flow pays no helper call; replay has one timestamp per packet and
//! uses it for both ([`Clock`] is implemented for `u64`).

use crate::{
    FlowKey, FlowValue, Health,
    account::{account_bits, adds_history_bits, history_bits, new_value, starts_new_connection},
    flow::{FragKey, FragValue, copy_address, copy_words, event},
    parse::{FragmentKind, Parsed},
};

/// Result of inserting a new flow (the `BPF_NOEXIST` semantics of a BPF hash map, which the
/// kernel's open-addressing table, `crate::slots`, keeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// Inserted.
    Done,
    /// Another CPU inserted the same key between our lookup and insert (`-EEXIST`).
    Exists,
    /// The table is full and no flow could be evicted (or the insert failed otherwise).
    Full,
}

/// Where [`update`] takes the packet's time from (nanoseconds, CLOCK_MONOTONIC in the kernel).
pub trait Clock {
    /// The time now, exactly: used for a flow's first packet (and a restart), and for a TCP
    /// packet that adds a history bit.
    fn exact(&mut self) -> u64;
    /// The time now, possibly a little early (the kernel's by less than one jiffy, see
    /// `sensor-ebpf`) but never later than [`Clock::exact`] would say. It only ever moves
    /// `last_seen_ns` forward (`account` keeps the maximum), so an early reading is harmless.
    fn coarse(&mut self) -> u64;
}

/// A fixed timestamp (replay, tests): exact and coarse alike.
impl Clock for u64 {
    #[inline(always)]
    fn exact(&mut self) -> u64 {
        *self
    }
    #[inline(always)]
    fn coarse(&mut self) -> u64 {
        *self
    }
}

/// The map operations [`update`] needs.
pub trait FlowTables {
    /// The value stored under `key`, in place, or `None`.
    ///
    /// The pointer must stay valid until the next call on `self` (a BPF map value pointer, or a
    /// pointer into a user-space map that is not mutated meanwhile).
    fn flow_ptr(&mut self, key: &FlowKey) -> Option<*mut FlowValue>;
    /// Inserts `value` under `key` unless the key exists. A full table makes room by evicting an
    /// unanswered attempt or a finished TCP connection, which it hands to user space with its
    /// value (see
    /// [`crate::slots`]), counting it in `h.flows_evicted` (and an eviction the ring buffer had
    /// no room for in `h.evict_ring_full`). `value.first_seen_ns` is the time now.
    fn flow_insert(&mut self, key: &FlowKey, value: &FlowValue, h: &mut Health) -> Insert;
    /// Hands the connection in the entry `old` to user space before a SYN reusing its
    /// 5-tuple restarts the entry in place (at `now_ns`): an [`event::REPLACED`] event with its
    /// value, counted in `h.events_sent` (or `h.ringbuf_drops` when the ring has no room).
    fn on_restart(&mut self, key: &FlowKey, old: &FlowValue, now_ns: u64, h: &mut Health);
    /// The flow and side a fragment train's first fragment was attributed to.
    fn frag_get(&mut self, key: &FragKey) -> Option<FragValue>;
    /// Remembers a first fragment's flow. Failure is tolerated (later fragments then count as
    /// unattributed).
    fn frag_insert(&mut self, key: &FragKey, value: &FragValue);
    /// Called after `table_full` was bumped (the kernel logs at powers of two).
    #[inline(always)]
    fn on_table_full(&mut self, _table_full: u64) {}
    /// Called when the entry just inserted (or found being inserted by another CPU) could not
    /// be looked up: removed concurrently by user space, or, in the kernel's open-addressing
    /// table, still not published by the other CPU after a long wait. The packet is counted as
    /// `table_full`.
    #[inline(always)]
    fn on_vanished(&mut self) {}
}

/// A packet accounted into a flow.
#[derive(Clone, Copy, Debug)]
pub struct Updated {
    pub key: FlowKey,
    /// The flow's value in the table, after the update (see [`FlowTables::flow_ptr`]).
    pub value: *mut FlowValue,
    /// What this packet did that user space must learn ([`crate::flow::event`] bits: a new
    /// connection, a handshake's outcome, a finished TCP connection), 0 for most packets: the
    /// caller signals it (ring buffer in the kernel, at once in replay).
    pub events: u32,
}

/// Adds parsed packet `p` (`segments` wire packets, seen at the time `clock` tells, see
/// [`Clock`]) to the flow tables and
/// the health counters `h`. `None` when it was not accounted (counted as unattributed fragment
/// or full table).
///
/// Every outcome is counted in exactly one of `h.accounted`, `h.unattributed_fragments` or
/// `h.table_full`; `h.packets`, `h.bytes` and the parse outcomes are the caller's.
#[inline(always)]
pub fn update<T: FlowTables>(
    t: &mut T,
    p: &Parsed,
    h: &mut Health,
    mut clock: impl Clock,
    segments: u32,
) -> Option<Updated> {
    // Built only for fragments (a closure, as the kernel program always did): most packets are
    // not, and the BPF stack is small.
    let frag_key = || {
        let mut k = FragKey {
            src: [0; 4],
            dst: [0; 4],
            id: p.fragment.id,
            protocol: p.protocol,
            ip_version: p.ip_version,
            _pad: [0; 2],
        };
        // Not `src: p.src`: see `copy_address`.
        copy_address(&mut k.src, &p.src);
        copy_address(&mut k.dst, &p.dst);
        k
    };
    let (key, side) = if p.fragment.kind == FragmentKind::Later {
        match t.frag_get(&frag_key()) {
            Some(f) => (f.key, f.side as usize),
            None => {
                h.unattributed_fragments += segments as u64;
                return None;
            }
        }
    } else {
        FlowKey::canonical(&p.src, p.sport, &p.dst, p.dport, p.protocol, p.ip_version)
    };
    if p.fragment.kind == FragmentKind::First {
        let f = FragValue {
            key,
            side: side as u32,
            _pad: 0,
        };
        t.frag_insert(&frag_key(), &f);
    }

    // The exact time, once read for a new or restarted flow.
    let mut exact_ns = None;
    // `event::OPEN` when this packet began a connection (another CPU's insert signals its own).
    let mut opened = 0;
    let v = match t.flow_ptr(&key) {
        Some(v) => {
            // SAFETY: `flow_ptr` returned a live value; see `account` for the concurrency
            // contract of reading it while other CPUs update it.
            if starts_new_connection(unsafe { &*v }, p) {
                let now_ns = clock.exact();
                exact_ns = Some(now_ns);
                // The old connection's finish event may have been lost; its value goes with
                // the entry, so it is handed over first.
                // SAFETY: as above.
                t.on_restart(&key, unsafe { &*v }, now_ns, h);
                // SAFETY: as above; a port-reusing SYN restarts the entry in place. Word by
                // word: see `copy_words`.
                unsafe { copy_words(v, &new_value(p, &key, side, now_ns)) };
                h.flows_restarted += 1;
                opened = event::OPEN;
            }
            v
        }
        None => {
            let now_ns = clock.exact();
            exact_ns = Some(now_ns);
            let fresh = new_value(p, &key, side, now_ns);
            match t.flow_insert(&key, &fresh, h) {
                Insert::Done => {
                    h.flows_created += 1;
                    opened = event::OPEN;
                }
                Insert::Exists => {}
                Insert::Full => {
                    h.table_full += segments as u64;
                    t.on_table_full(h.table_full);
                    return None;
                }
            }
            match t.flow_ptr(&key) {
                Some(v) => v,
                None => {
                    t.on_vanished();
                    h.table_full += segments as u64;
                    return None;
                }
            }
        }
    };
    h.accounted += segments as u64;
    // Once for both uses below.
    let bits = history_bits(p.tcp_flags, p.payload_len);
    let now_ns = match exact_ns {
        Some(ns) => ns,
        // SAFETY: as below; a racy read only decides which clock reading to take.
        None if adds_history_bits(unsafe { &*v }, p, side, bits) => clock.exact(),
        None => clock.coarse(),
    };
    // SAFETY: `v` is a live, aligned value of the flow table (see `FlowTables::flow_ptr`);
    // concurrent updates are allowed by `account`.
    let events = opened | unsafe { account_bits(v, p, side, bits, now_ns, segments) };
    Some(Updated {
        key,
        value: v,
        events,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{collections::HashMap, vec::Vec};

    use super::*;
    use crate::{
        flow::{ipproto, value_flags},
        parse::tcp_flags::*,
    };

    #[derive(Default)]
    struct Tables {
        flows: HashMap<FlowKey, FlowValue>,
        frags: HashMap<FragKey, FragValue>,
    }

    impl FlowTables for Tables {
        fn flow_ptr(&mut self, key: &FlowKey) -> Option<*mut FlowValue> {
            self.flows.get_mut(key).map(|v| v as *mut FlowValue)
        }
        fn flow_insert(&mut self, key: &FlowKey, value: &FlowValue, _h: &mut Health) -> Insert {
            self.flows.insert(*key, *value);
            Insert::Done
        }
        fn on_restart(&mut self, _: &FlowKey, _: &FlowValue, _: u64, h: &mut Health) {
            h.events_sent += 1;
        }
        fn frag_get(&mut self, key: &FragKey) -> Option<FragValue> {
            self.frags.get(key).copied()
        }
        fn frag_insert(&mut self, key: &FragKey, value: &FragValue) {
            self.frags.insert(*key, *value);
        }
    }

    /// Exact readings are `exact`, coarse ones 1 ns earlier; records which kind each packet
    /// asked for.
    struct TestClock<'a> {
        exact: u64,
        reads: &'a mut Vec<&'static str>,
    }

    impl Clock for TestClock<'_> {
        fn exact(&mut self) -> u64 {
            self.reads.push("exact");
            self.exact
        }
        fn coarse(&mut self) -> u64 {
            self.reads.push("coarse");
            self.exact - 1
        }
    }

    fn pkt(from_client: bool, protocol: u8, flags: u8, len: u32) -> Parsed {
        let (c, s) = (
            [u32::to_be(0xc612_0002), 0, 0, 0],
            [u32::to_be(0xc612_0001), 0, 0, 0],
        );
        let (src, sport, dst, dport) = if from_client {
            (c, 40000, s, 80)
        } else {
            (s, 80, c, 40000)
        };
        Parsed {
            src,
            dst,
            sport,
            dport,
            protocol,
            ip_version: 4,
            tcp_flags: flags,
            payload_len: len,
            ..Parsed::default()
        }
    }

    #[test]
    fn only_new_flows_and_new_tcp_history_read_the_exact_clock() {
        let mut t = Tables::default();
        let mut h = Health::default();
        let mut reads = Vec::new();
        let tcp = ipproto::TCP;
        let packets = [
            (pkt(true, tcp, SYN, 0), "exact"),          // new flow
            (pkt(false, tcp, SYN | ACK, 0), "exact"),   // server's SYN-ACK
            (pkt(true, tcp, ACK, 0), "exact"),          // client's first non-SYN
            (pkt(true, tcp, ACK | PSH, 10), "exact"),   // client's first data
            (pkt(true, tcp, ACK | PSH, 10), "coarse"),  // more data
            (pkt(false, tcp, ACK | PSH, 20), "exact"),  // server's first data
            (pkt(false, tcp, ACK, 0), "coarse"),        // nothing new
            (pkt(true, tcp, FIN | ACK, 0), "exact"),    // FIN
            (pkt(true, tcp, FIN | ACK, 0), "coarse"),   // retransmitted FIN
            (pkt(false, tcp, FIN | ACK, 0), "exact"),   // second FIN
            (pkt(true, tcp, ACK, 0), "coarse"),         // trailing ACK
            (pkt(true, tcp, SYN, 0), "exact"),          // port reuse: restart
            (pkt(true, ipproto::UDP, 0, 8), "exact"),   // new UDP flow
            (pkt(false, ipproto::UDP, 0, 8), "coarse"), // its answer
        ];
        for (i, (p, want)) in packets.iter().enumerate() {
            reads.clear();
            let clock = TestClock {
                exact: 100 * (i as u64 + 1),
                reads: &mut reads,
            };
            assert!(update(&mut t, p, &mut h, clock, 1).is_some());
            assert_eq!(reads, [*want], "packet {i}");
        }
        let tcp_flow = t.flows.values().find(|v| v.packets[0] + v.packets[1] == 1);
        assert!(
            tcp_flow.is_some(),
            "the restarted TCP flow holds only its SYN"
        );
        let v = tcp_flow.unwrap();
        assert_eq!((v.first_seen_ns, v.last_seen_ns), (1200, 1200));
        assert_eq!(v.flags & value_flags::FLIPPED, 0);
        let udp = t
            .flows
            .iter()
            .find(|(k, _)| k.protocol == ipproto::UDP)
            .unwrap()
            .1;
        // The answer's coarse reading (1 ns early) still moved `last_seen_ns` forward.
        assert_eq!((udp.first_seen_ns, udp.last_seen_ns), (1300, 1399));
        assert_eq!(
            (h.flows_created, h.flows_restarted, h.accounted),
            (2, 1, 14)
        );
    }

    #[test]
    fn a_coarse_reading_never_moves_last_seen_back() {
        let mut t = Tables::default();
        let mut h = Health::default();
        let mut reads = Vec::new();
        let p = pkt(true, ipproto::UDP, 0, 8);
        let clock = TestClock {
            exact: 1000,
            reads: &mut reads,
        };
        update(&mut t, &p, &mut h, clock, 1).unwrap();
        // A coarse reading from another CPU's older cache: earlier than the exact first packet.
        let clock = TestClock {
            exact: 1000,
            reads: &mut reads,
        };
        update(&mut t, &p, &mut h, clock, 1).unwrap();
        let v = t.flows.values().next().unwrap();
        assert_eq!(
            (v.first_seen_ns, v.last_seen_ns, v.packets[0] + v.packets[1]),
            (1000, 1000, 2)
        );
    }
}
