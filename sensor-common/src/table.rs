//! The per-packet flow-table update, written once for the kernel program and for offline replay.
//!
//! [`update`] is everything the XDP/TC programs do with a parsed packet: attribute a later IP
//! fragment through the fragment table, remember a first fragment, find or create the flow
//! (restarting it in place when a SYN reuses a finished 5-tuple), count a full table, and add the
//! packet with [`account`]. Only the map operations differ between the two worlds, so they are
//! behind [`FlowTables`]: BPF maps in the kernel (`sensor-ebpf`), hash maps in user space
//! (`sensor::replay`).
//!
//! Why this split and not a shared function per step: exact parity between live mode and
//! `sensor replay` is the point of replay, and the subtle parts (the order of the fragment map
//! insert and the flow lookup, what a lost insert race or a full table counts, when a restarted
//! flow counts as created, which packets count as accounted) live *between* the map calls. With
//! this function both sides cannot drift apart; the kernel keeps its exact instruction shape
//! because everything here is `#[inline(always)]` and the trait is implemented on a zero-sized
//! type whose methods are the same map calls the program made before.
//!
//! The ring-buffer output stays with the caller ([`Updated::reason`] says when to signal): in
//! the kernel a full ring buffer is a health counter, in replay the event is handled at once.

use crate::{
    FlowKey, FlowValue, Health,
    account::{account, new_value, starts_new_connection},
    flow::{FragKey, FragValue},
    parse::{FragmentKind, Parsed},
};

/// Result of inserting a new flow (the `BPF_NOEXIST` semantics of a BPF hash map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// Inserted.
    Done,
    /// Another CPU inserted the same key between our lookup and insert (`-EEXIST`).
    Exists,
    /// The table is full (or the insert failed otherwise).
    Full,
}

/// The map operations [`update`] needs.
pub trait FlowTables {
    /// The value stored under `key`, in place, or `None`.
    ///
    /// The pointer must stay valid until the next call on `self` (a BPF map value pointer, or a
    /// pointer into a user-space map that is not mutated meanwhile).
    fn flow_ptr(&mut self, key: &FlowKey) -> Option<*mut FlowValue>;
    /// Inserts `value` under `key` unless the key exists.
    fn flow_insert(&mut self, key: &FlowKey, value: &FlowValue) -> Insert;
    /// The flow and side a fragment train's first fragment was attributed to.
    fn frag_get(&mut self, key: &FragKey) -> Option<FragValue>;
    /// Remembers a first fragment's flow. Failure is tolerated (later fragments then count as
    /// unattributed).
    fn frag_insert(&mut self, key: &FragKey, value: &FragValue);
    /// Called after `table_full` was bumped (the kernel logs at powers of two).
    #[inline(always)]
    fn on_table_full(&mut self, _table_full: u64) {}
    /// Called when the entry just inserted could not be looked up (removed concurrently by
    /// user space); the packet is counted as `table_full`.
    #[inline(always)]
    fn on_vanished(&mut self) {}
}

/// A packet accounted into a flow.
#[derive(Clone, Copy, Debug)]
pub struct Updated {
    pub key: FlowKey,
    /// The flow's value in the table, after the update (see [`FlowTables::flow_ptr`]).
    pub value: *mut FlowValue,
    /// Non-zero ([`crate::flow::event_reason`]) when this packet finished the TCP connection:
    /// the caller signals it (ring buffer in the kernel, at once in replay).
    pub reason: u32,
}

/// Adds parsed packet `p` (`segments` wire packets, seen at `now_ns`) to the flow tables and
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
    now_ns: u64,
    segments: u32,
) -> Option<Updated> {
    // Built only for fragments (a closure, as the kernel program always did): most packets are
    // not, and the BPF stack is small.
    let frag_key = || FragKey {
        src: p.src,
        dst: p.dst,
        id: p.fragment.id,
        protocol: p.protocol,
        ip_version: p.ip_version,
        _pad: [0; 2],
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

    let v = match t.flow_ptr(&key) {
        Some(v) => {
            // SAFETY: `flow_ptr` returned a live value; see `account` for the concurrency
            // contract of reading it while other CPUs update it.
            if starts_new_connection(unsafe { &*v }, p) {
                // SAFETY: as above; a port-reusing SYN restarts the entry in place.
                unsafe { *v = new_value(p, &key, side, now_ns) };
                h.flows_restarted += 1;
            }
            v
        }
        None => {
            let fresh = new_value(p, &key, side, now_ns);
            match t.flow_insert(&key, &fresh) {
                Insert::Done => h.flows_created += 1,
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
    // SAFETY: `v` is a live, aligned value of the flow table (see `FlowTables::flow_ptr`);
    // concurrent updates are allowed by `account`.
    let reason = unsafe { account(v, p, side, now_ns, segments) };
    Some(Updated {
        key,
        value: v,
        reason,
    })
}
