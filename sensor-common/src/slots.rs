//! The flow table's layout: an open-addressing hash table in a BPF array.
//!
//! Why not a BPF hash map: its lookup (a helper call hashing the 40-byte key with jhash, then a
//! bucket walk and a `memcmp`) was a third of the program's per-packet cost. An array lookup
//! is inlined by the verifier into pointer arithmetic, so the program hashes the key itself
//! ([`key_hash`], a few multiplies) and probes the array directly; a hit on the hot path costs
//! one slot compare.
//!
//! Layout: `slots` entries of [`FlowSlot`] (`slots` a power of two, [`slot_count`]); a key
//! lives within [`PROBES`] slots of its home slot `hash & (slots - 1)` (linear probing). The
//! kernel checks the home slot inline and walks the rest with `bpf_loop` (see `sensor-ebpf`). Each
//! slot's `state` word says whether it is empty, being written, in use or a tombstone
//! ([`state`]), with a fingerprint of the key's hash in its upper bits. The number of keys in
//! use is kept apart (`FLOW_COUNT`), so that the table holds exactly `capacity` flows, as the
//! hash map did: `slots` is at least twice `capacity`, which makes a probe sequence longer than
//! [`PROBES`] practically impossible (linear probing at load 1/2: a run of 128 occupied slots
//! has probability ~1e-11 per slot, `(0.5 e^0.5)^128`), so an insert finds room whenever the
//! count allows it, and replay's plain capacity check (`sensor::replay`) counts the same.
//! Tombstones (below) count as free for inserts, so they never make the table look full; they
//! only lengthen the walk of a lookup for an absent key (a new flow), never beyond `PROBES`.
//!
//! A slot is 128 bytes, two cache lines (the array's data is page-aligned, being mmapable):
//! the first holds the state, the key and the words every packet writes besides its counters
//! (`last_seen_ns`, the TCP history), the second the counters and the TCP sequence spans. A
//! packet touches one aligned 128-byte block, which CPUs fetch together (the adjacent-line
//! prefetch), where a 112-byte slot straddled up to three lines of two blocks.
//!
//! # A full table: evicting attempts and finished connections
//!
//! A flood of new flows (spoofed SYNs, ACKs or data, one-way UDP or ICMP) must not blind the
//! sensor to the other connections by filling the table. When an insert finds the table full,
//! the inserting CPU evicts ([`evictable`]) a flow whose responder sent nothing, a TCP
//! handshake its originator never completed (a SYN and no ACK from it, whether the responder
//! answered or not: a spoofed SYN flood at a server that answers each SYN is nothing else), a
//! finished TCP connection (FINs both ways or a RST ended it, and its entry only lingers for
//! trailing packets after its record), or a UDP or ICMP flow (answered or not: an answer
//! proves nothing about the source it went to, and a spoofed flood of queries at a server
//! that answers each is a table of such exchanges) to make room:
//!
//! - **Which**: the one whose last packet is oldest among the flows in a window of
//!   [`EVICT_WINDOW`] slots (extended up to [`EVICT_WINDOW_MAX`] until it holds a candidate)
//!   that a per-CPU hand sweeps around the table. At full load the
//!   window holds about 8 flows, so the victim is on average older than ~90% of the attempts in
//!   the table (sampled oldest-first, as Redis approximates LRU), without an ordering structure
//!   that every packet would have to maintain. No minimum age: a new connection is an attempt
//!   only for one round trip, while a flood's attempts fill the table for far longer (a
//!   262,144-flow table holds 1.3 s of a 200,000 flows/s flood), so a new attempt is almost
//!   never the oldest of its window; a minimum age would instead refuse every new flow, normal
//!   ones included, once the flood outpaced it.
//! - **Conversations that prove nothing, by their age** ([`eviction_rank`]): UDP and ICMP
//!   flows, and one-sided TCP connections. A one-sided connection is a flow whose originator
//!   acknowledged a SYN-ACK the sensor did not see, with nothing from its responder, is a
//!   connection on a route that carries one direction only, or one older than the sensor, or a
//!   packet of a spoofed ACK (data, FIN-ACK) flood to an address that does not answer: the
//!   packets look alike. It may be evicted too, or such a flood would take the table for good
//!   (every other new flow would count `table_full`), but its last packet counts as later by
//!   the connection's age: a connection that has carried packets for a minute keeps its slot a
//!   minute longer than a flood's one-packet flows, which rank as attempts do; a UDP or ICMP
//!   flow likewise (a DNS exchange a moment old ranks by its last packet, a long QUIC or
//!   VoIP session by its age more). Evicted, it is recorded (end reason `evicted`), and its
//!   next packet opens a record of its own.
//! - **TCP connections are never evicted while open** (the originator completed its handshake
//!   and the responder answered: neither address was spoofed): they keep their slot until
//!   they end, so the table cannot be taken from them by a flood; a table full of them counts
//!   `table_full` as before. Once ended, a connection's record is made (or
//!   on its way: its finish event came first), and its lingering entry is the cheapest room
//!   there is: taking it costs at most a trailing packet (a retransmitted FIN, or the final ACK
//!   of a connection taken between its second FIN and that ACK) that then opens a record of
//!   its own. Without this a busy gateway's table would fill with the lingering
//!   entries of connections that ended in the last seconds (`close_linger`, 5 s, as Zeek's
//!   `tcp_close_delay`), which no flood is needed for.
//! - **Nothing disappears uncounted**: the evicted flow goes to user space as an
//!   [`crate::flow::event::EVICTED`] event with its key and value, whose ring-buffer room is
//!   reserved before anything is evicted; user space finalises an attempt as a record (end
//!   reason `evicted`), scored, counted and grouped into the flood's incident like any other,
//!   and a finished connection as the record of its end (FIN or RST) unless it had one. With
//!   the ring full nothing is evicted, and the new flow counts as `table_full` and
//!   `evict_ring_full`.
//! - **The room goes to the evicting CPU**: the victim's unit of `FLOW_COUNT` passes to the
//!   new flow (the count does not change), so no other CPU can take it in between.
//!
//! The victim's slot becomes a tombstone, which the evicting CPU turns back into an empty slot
//! when the slot after it is empty (see [`reclaim_step`]), as user space does after a removal:
//! evictions at flood rate would otherwise use up the empty slots that end the walks of new keys.
//!
//! # Concurrency
//!
//! Kernel CPUs insert, update and evict, user space reads and removes:
//! - insert: a CPU claims a free slot with a compare-and-swap of its state (free -> busy with
//!   the key's fingerprint), writes key and value, then publishes it (busy -> in use). A
//!   lookup that meets a busy slot with its key's fingerprint waits (a bounded spin) for it to be
//!   published, so that two CPUs creating the same flow do not insert it twice; after claiming,
//!   the inserting CPU also checks the slots before its own for the same key (claimed by another
//!   CPU meanwhile in a slot a removal freed) and gives its slot back if so.
//! - removal (user space) and eviction (kernel) claim the slot the same way (in use -> busy,
//!   a compare-and-swap on the state they read), check that it still holds what they meant to
//!   remove, and make it a tombstone; so a flow is removed or evicted once, never both, and a
//!   removal never takes a new connection that reused the slot meanwhile. Tombstones keep probe
//!   sequences intact and are reused by inserts.
//! - reclaiming a tombstone as empty ([`reclaim_step`]): an empty slot ends every walk through
//!   it, so a tombstone may become empty only while the slot after it is empty. The reclaimer
//!   locks the tombstone ([`state::RECLAIM`]), then reads the next slot; an inserting CPU
//!   claims its slot, then checks the slots before it and claims again if it sees an empty or
//!   locked one. Both orders end well: either the reclaimer sees the claim and gives up, or the
//!   inserting CPU sees the lock and moves.
//!
//! - memory ordering: state changes are full-barrier atomics (compare-and-swap, exchange), but
//!   BPF before ISA v4 has no load-acquire, so a reader loads the state and then the key with
//!   plain loads. On x86-64 (TSO) that is ordered. On a weakly ordered CPU a reader could in a
//!   rare race see a just-published state with the key not yet visible: the key then does not
//!   match, the packet takes the insert path, and the insert's re-check of the earlier slots
//!   finds the flow (`Exists`), so nothing is inserted twice.
//!
//! The user side maps the array into its memory (`BPF_F_MMAPABLE`) and reads and removes
//! entries there, without a syscall per entry.

use crate::flow::{FlowKey, FlowValue, ipproto};

/// The longest probe sequence: a key lives in one of the `PROBES` slots from its home slot.
pub const PROBES: u32 = 128;

/// The map flag that lets user space `mmap` an array map (`BPF_F_MMAPABLE`).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Values of [`FlowSlot::state`]: the low byte is the kind, bits 8..32 the key's
/// fingerprint ([`fingerprint`]) for `BUSY` and `USED`.
pub mod state {
    /// Never used: ends every probe sequence through it.
    pub const EMPTY: u64 = 0;
    /// Claimed by an inserting CPU that is writing key and value.
    pub const BUSY: u64 = 1;
    /// Holds a flow.
    pub const USED: u64 = 2;
    /// Held a flow that was removed or evicted: free for inserts, but probe sequences go on.
    pub const TOMB: u64 = 3;
    /// A tombstone being reclaimed as empty ([`super::reclaim_step`]): becomes `EMPTY` or
    /// `TOMB` again. Not free; walks go on; an inserting CPU that sees it before its own slot
    /// claims again.
    pub const RECLAIM: u64 = 4;
    /// The kind bits.
    pub const KIND: u64 = 0xff;
}

/// One entry of the flow array: 128 bytes, two cache lines (see the module docs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    /// [`state`]; changed with atomic operations only (64-bit: see `crate::atomic`).
    pub state: u64,
    pub key: FlowKey,
    pub value: FlowValue,
}

/// Slots an eviction looks at for its victim (see the module docs): about 8 flows at full load.
pub const EVICT_WINDOW: u32 = 16;
/// Slots an eviction looks at when its first [`EVICT_WINDOW`] hold nothing [`evictable`] (a
/// table mostly of open TCP connections), before it gives up (the new flow counts as
/// `table_full`).
pub const EVICT_WINDOW_MAX: u32 = 64;

/// Whether a full table may evict the flow `k`, `v` (see the module docs): a flow whose
/// responder sent nothing (an unanswered attempt, or a one-sided connection), a TCP handshake
/// its originator never completed (a SYN, and no ACK from it: the half-open connections of a
/// SYN flood at a server that answers), a finished TCP connection (FINs both ways, or a RST),
/// whose entry only lingers, or any flow of another transport (UDP, ICMP: an answer proves
/// nothing about the source it went to, and a spoofed flood of queries that a server answers
/// is a table of such exchanges). Only an open TCP connection whose originator completed its
/// handshake and whose responder answered is never taken. Which goes first: [`eviction_rank`].
#[inline(always)]
pub fn evictable(k: &FlowKey, v: &FlowValue) -> bool {
    use crate::flow::history::{ACK, SYN};
    let orig = usize::from(v.orig_side & 1);
    let half_open = v.history[orig] & (SYN | ACK) == SYN;
    (k.protocol != ipproto::TCP) | (v.packets[orig ^ 1] == 0) | half_open | finished(v)
}

/// FINs both ways, or a RST either way.
#[inline(always)]
fn finished(v: &FlowValue) -> bool {
    use crate::flow::history::{FIN, RST};
    let (a, b) = (v.history[0], v.history[1]);
    ((a | b) & RST != 0) | (a & b & FIN != 0)
}

/// The order in which a full table evicts [`evictable`] flows, lowest first: the time of the
/// last packet, so that the oldest goes first; for a conversation that may still be going on
/// and proved nothing (a one-sided TCP connection that has not finished, whose originator
/// acknowledged a SYN-ACK the sensor did not see: a route that carries one direction only, or
/// a connection older than the sensor; any UDP or ICMP flow) that time plus the flow's age, so
/// that one that has carried packets for a minute keeps its slot a minute longer than a flow
/// of one packet. A spoofed flood (ACKs, data or FIN-ACKs at a silent address, queries at a
/// server that answers each), one packet or one exchange per flow, ranks as a flood of
/// attempts does: by its age, never ahead of a connection begun after it.
#[inline(always)]
pub fn eviction_rank(k: &FlowKey, v: &FlowValue) -> u64 {
    use crate::flow::history::ACK;
    let orig = usize::from(v.orig_side & 1);
    let tcp = k.protocol == ipproto::TCP;
    let one_sided = (v.history[orig] & ACK != 0) & !finished(v);
    let credit = !tcp | one_sided;
    let age_ns = v.last_seen_ns.saturating_sub(v.first_seen_ns);
    v.last_seen_ns
        .saturating_add(age_ns & 0u64.wrapping_sub(u64::from(credit)))
}

/// One step of reclaiming tombstones as empty slots: the tombstone whose state word is `s`
/// becomes empty if the slot after it (state word `next`) is empty; whether it did. Callers
/// walk backwards from a slot they made a tombstone, while this succeeds.
///
/// The tombstone is locked ([`state::RECLAIM`]) before the next slot is read: see the module
/// docs for why an inserting CPU cannot end up behind the new empty slot.
///
/// # Safety
/// `s` and `next` must be valid, 8-aligned state words of the table, `next` the one after `s`.
#[inline(always)]
pub unsafe fn reclaim_step(s: *mut u64, next: *const u64) -> bool {
    use crate::atomic::{compare_exchange_u64, load_u64, publish_u64};
    // SAFETY: forwarded from the caller.
    unsafe {
        if !compare_exchange_u64(s, state::TOMB, state::RECLAIM) {
            return false;
        }
        let empty = load_u64(next) == state::EMPTY;
        // EMPTY (0) if the next slot is empty, TOMB otherwise, without a branch.
        publish_u64(s, state::TOMB * u64::from(!empty));
        empty
    }
}

/// Slots for a table of `capacity` flows: twice as many, rounded up to a power of two (see the
/// module docs), and at least [`PROBES`].
pub const fn slot_count(capacity: u32) -> u32 {
    let want = (if capacity == 0 { 1 } else { capacity } as u64 * 2).next_power_of_two();
    if want < PROBES as u64 {
        PROBES
    } else if want > 1 << 31 {
        1 << 31
    } else {
        want as u32
    }
}

/// The flow table's default capacity, in connections (`--table-size`): the user-side default
/// and the size the eBPF object is built with before the loader resizes it.
pub const DEFAULT_FLOW_CAPACITY: u32 = 262_144;

/// The hash of `key` under `seed` (a random value the loader picks, so that remote hosts cannot
/// aim their flows at one probe sequence without seeing the table).
///
/// Multiplies each of the key's five 64-bit words ([`FlowKey::words`]), mixed with the seed, by
/// its own odd constant, folds the products together with rotations, and finishes with an
/// avalanche step: the five multiplies are independent (the CPU runs them in parallel, two
/// multiply latencies in all), and every key bit reaches the low bits used as index.
#[inline(always)]
pub fn key_hash(key: &FlowKey, seed: u64) -> u64 {
    key_hash_words(key, &seed_words(seed))
}

/// The five words [`key_hash`] mixes into the key's five words: the seed rotated by 13 bits
/// more for each. Computed once by the loader and handed to the kernel program as a global,
/// which then spends no instructions on them per packet ([`key_hash_words`]).
#[inline(always)]
pub const fn seed_words(seed: u64) -> [u64; 5] {
    [
        seed,
        seed.rotate_left(13),
        seed.rotate_left(26),
        seed.rotate_left(39),
        seed.rotate_left(52),
    ]
}

/// [`key_hash`] with the seed's [`seed_words`] already computed.
#[inline(always)]
pub fn key_hash_words(key: &FlowKey, seed: &[u64; 5]) -> u64 {
    const K: [u64; 5] = [
        0x9e37_79b9_7f4a_7c15,
        0xc2b2_ae3d_27d4_eb4f,
        0x1656_67b1_9e37_79f9,
        0xd6e8_feb8_6659_fd93,
        0xff51_afd7_ed55_8ccd,
    ];
    let w = key.words();
    let m = |i: usize| (w[i] ^ seed[i]).wrapping_mul(K[i]);
    let mut h = m(0)
        ^ m(1).rotate_left(13)
        ^ m(2).rotate_left(26)
        ^ m(3).rotate_left(39)
        ^ m(4).rotate_left(52);
    h ^= h >> 32;
    h = h.wrapping_mul(K[0]);
    h ^ (h >> 29)
}

/// The fingerprint stored in a busy or used slot's state: 24 hash bits not used by the index of
/// any table smaller than 2^40 slots.
#[inline(always)]
pub fn fingerprint(hash: u64) -> u64 {
    (hash >> 40) << 8
}

/// Whether two keys are equal, as five 64-bit compares.
#[inline(always)]
pub fn key_eq(a: &FlowKey, b: &FlowKey) -> bool {
    let (a, b) = (a.words(), b.words());
    a[0] == b[0] && a[4] == b[4] && a[2] == b[2] && a[1] == b[1] && a[3] == b[3]
}

/// Where a probe for a key found it, or where it may be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// In use at this index.
    Found(u32),
    /// Absent; the first free slot of its probe sequence is this index.
    Absent(u32),
    /// Absent, and no free slot within [`PROBES`].
    NoRoom,
}

/// The user-side probe over a snapshot view of the slots (`slot(i)` gives slot `i`'s state and
/// key): the same sequence the kernel program walks.
pub fn probe(
    slots: u32,
    hash: u64,
    key: &FlowKey,
    mut slot: impl FnMut(u32) -> (u64, FlowKey),
) -> Probe {
    let mask = slots - 1;
    let fp = fingerprint(hash);
    let mut free = None;
    for i in 0..PROBES {
        let idx = (hash as u32).wrapping_add(i) & mask;
        let (st, k) = slot(idx);
        match st & state::KIND {
            state::EMPTY => return Probe::Absent(free.unwrap_or(idx)),
            state::USED if st & !state::KIND == fp && key_eq(&k, key) => return Probe::Found(idx),
            state::TOMB if free.is_none() => free = Some(idx),
            _ => {}
        }
    }
    free.map_or(Probe::NoRoom, Probe::Absent)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, `Copy`, integers and explicit padding only (no implicit padding:
    // 8 + 40 + 64 + 16 bytes, the value 8-aligned at offset 48).
    unsafe impl aya::Pod for super::FlowSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_layout_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<FlowSlot>(), 8 + 40 + 80);
        assert_eq!(core::mem::offset_of!(FlowSlot, value), 48);
        // What every packet writes besides its counters shares the first line with the key.
        let v = core::mem::offset_of!(FlowSlot, value);
        assert!(v + core::mem::offset_of!(FlowValue, history) + 2 <= 64);
        assert_eq!(v + core::mem::offset_of!(FlowValue, packets), 64);
    }

    /// A flow as the table holds it: `orig` and `resp` packets, the originator's and the
    /// responder's history bits, seen from `first_ns` to `last_ns`.
    fn flow(orig: u64, resp: u64, hist: [u8; 2], first_ns: u64, last_ns: u64) -> FlowValue {
        FlowValue {
            packets: [orig, resp],
            history: hist,
            orig_side: 0,
            first_seen_ns: first_ns,
            last_seen_ns: last_ns,
            ..FlowValue::default()
        }
    }

    /// A key of the transport `protocol`.
    fn key(protocol: u8) -> FlowKey {
        FlowKey {
            protocol,
            ip_version: 4,
            ..FlowKey::default()
        }
    }

    #[test]
    fn a_full_table_may_evict_anything_but_an_open_tcp_connection() {
        use crate::flow::history::{ACK, DATA, FIN, NON_SYN, RST, SYN, SYN_ACK};
        let (tcp, udp, icmp) = (key(ipproto::TCP), key(ipproto::UDP), key(ipproto::ICMP));
        // An unanswered SYN, and one-sided connections: an ACK with data, a FIN-ACK, from an
        // originator whose responder sent nothing.
        for silent in [
            flow(1, 0, [SYN, 0], 5, 5),
            flow(1, 0, [NON_SYN | ACK | DATA, 0], 5, 5),
            flow(1, 0, [NON_SYN | ACK | FIN, 0], 5, 5),
        ] {
            assert!(evictable(&tcp, &silent), "{silent:?}");
        }
        // Handshakes the originator never completed: its SYN answered (retransmitted, too).
        assert!(evictable(&tcp, &flow(1, 1, [SYN, SYN_ACK], 5, 6)));
        assert!(evictable(&tcp, &flow(2, 3, [SYN, SYN_ACK], 5, 9)));
        // Finished: reset by either side, or FINs both ways.
        let open = [SYN | ACK | NON_SYN, SYN_ACK | NON_SYN];
        assert!(evictable(&tcp, &flow(4, 3, [open[0], open[1] | RST], 5, 9)));
        assert!(evictable(
            &tcp,
            &flow(4, 3, [open[0] | FIN, open[1] | FIN], 5, 9)
        ));
        // UDP and ICMP, one-way or answered (no history bits).
        for k in [udp, icmp] {
            assert!(evictable(&k, &flow(3, 0, [0, 0], 5, 9)));
            assert!(evictable(&k, &flow(1, 1, [0, 0], 5, 6)));
        }
        // Open TCP connections: never, whatever their age; nor after one FIN. A completed
        // handshake, one picked up in its middle (ACKs both ways).
        assert!(!evictable(&tcp, &flow(4, 3, open, 5, 9)));
        assert!(!evictable(
            &tcp,
            &flow(4, 3, [open[0] | FIN, open[1]], 5, 9)
        ));
        let completed = flow(2, 1, [SYN | NON_SYN | ACK, SYN_ACK], 5, 6);
        assert!(!evictable(&tcp, &completed));
        assert!(!evictable(
            &tcp,
            &flow(7, 5, [NON_SYN | ACK, NON_SYN | ACK], 5, 9)
        ));
    }

    #[test]
    fn conversations_that_prove_nothing_rank_later_by_their_age() {
        use crate::flow::history::{ACK, FIN, NON_SYN, RST, SYN};
        let (tcp, udp) = (key(ipproto::TCP), key(ipproto::UDP));
        let s = 1_000_000_000;
        let rank = |k: &FlowKey, v: FlowValue| eviction_rank(k, &v);
        // Attempts and finished connections: by their last packet alone.
        assert_eq!(rank(&tcp, flow(1, 0, [SYN, 0], 7 * s, 7 * s)), 7 * s);
        assert_eq!(rank(&tcp, flow(3, 0, [SYN, 0], 2 * s, 7 * s)), 7 * s);
        let reset = flow(5, 0, [NON_SYN | ACK | RST, 0], 2 * s, 7 * s);
        assert_eq!(rank(&tcp, reset), 7 * s);
        // A one-packet flow of a spoofed ACK flood, or a query and its answer a moment old,
        // rank as an attempt of the same moment: a new attempt is never evicted ahead of older
        // flood packets.
        let attempt = rank(&tcp, flow(1, 0, [SYN, 0], 7 * s, 7 * s));
        assert_eq!(
            rank(&tcp, flow(1, 0, [NON_SYN | ACK, 0], 7 * s, 7 * s)),
            attempt
        );
        assert_eq!(rank(&udp, flow(1, 1, [0, 0], 7 * s, 7 * s)), attempt);
        // A one-sided connection, or a UDP session, of a minute keeps its slot a minute longer
        // than its last packet alone would: after a flow of one packet seen 59 s after it.
        let minute = flow(900, 0, [SYN | NON_SYN | ACK, 0], s, 61 * s);
        assert_eq!(rank(&tcp, minute), 121 * s);
        assert!(rank(&tcp, minute) > rank(&tcp, flow(1, 0, [SYN, 0], 120 * s, 120 * s)));
        assert_eq!(rank(&udp, flow(900, 800, [0, 0], s, 61 * s)), 121 * s);
        // Once it is finished by its own FIN and a RST, its entry only lingers: no credit.
        let ended = flow(900, 0, [NON_SYN | ACK | FIN | RST, 0], s, 61 * s);
        assert_eq!(rank(&tcp, ended), 61 * s);
        // Clocks that do not add up cannot wrap the rank around.
        assert_eq!(rank(&tcp, flow(1, 0, [ACK, 0], 9, 5)), 5);
        assert_eq!(rank(&udp, flow(2, 0, [0, 0], 0, u64::MAX)), u64::MAX);
    }

    #[test]
    fn slot_counts_are_powers_of_two_with_room() {
        assert_eq!(slot_count(1), PROBES);
        assert_eq!(slot_count(16), PROBES);
        assert_eq!(slot_count(100), 256);
        assert_eq!(slot_count(262_144), 1 << 19);
        assert_eq!(slot_count(200_000), 1 << 19);
    }

    #[test]
    fn hashes_spread_similar_keys() {
        // 4096 IPv4 keys differing in one address byte and the port: no home slot of a
        // 16384-slot table gets more than a handful.
        let mut home = [0u8; 16384];
        for i in 0..4096u32 {
            let k = FlowKey {
                addr_lo: [u32::to_be(0xc612_0000 | (i >> 4)), 0, 0, 0],
                addr_hi: [u32::to_be(0xc612_ff01), 0, 0, 0],
                port_lo: 1024 + (i & 15) as u16,
                port_hi: 53,
                protocol: 17,
                ip_version: 4,
                _pad: [0; 2],
            };
            let h = key_hash(&k, 0x1234);
            home[(h & 16383) as usize] += 1;
        }
        assert!(home.iter().all(|&n| n <= 6), "{:?}", home.iter().max());
    }

    #[test]
    fn probe_skips_tombstones_and_reuses_the_first() {
        let key = FlowKey {
            port_lo: 1,
            ..FlowKey::default()
        };
        let other = FlowKey {
            port_lo: 2,
            ..FlowKey::default()
        };
        let h = 5u64 << 40 | 6; // home slot 6, fingerprint 5
        let fp = fingerprint(h);
        let mut s = [(state::EMPTY, FlowKey::default()); 64];
        s[6] = (state::USED | fingerprint(99 << 40), other);
        s[7] = (state::TOMB, other);
        s[8] = (state::USED | fp, other);
        assert_eq!(probe(64, h, &key, |i| s[i as usize]), Probe::Absent(7));
        s[9] = (state::USED | fp, key);
        assert_eq!(probe(64, h, &key, |i| s[i as usize]), Probe::Found(9));
        let full = [(state::USED, other); 64];
        assert_eq!(probe(64, h, &key, |i| full[i as usize]), Probe::NoRoom);
    }
}
