//! Eviction from a full flow table: the victim search, its hand-over to user space and the
//! reclaim of tombstones.

use aya_ebpf::{cty::c_void, helpers::bpf_loop};
use sensor_common::{
    FlowEvent, Health,
    atomic::{compare_exchange_u64, load_u64, publish_u64},
    flow::event,
    slots::{EVICT_WINDOW, EVICT_WINDOW_MAX, evictable, eviction_rank, reclaim_step, state},
};

use crate::table::{NONE, slot};
use crate::{EVENTS, EVICT_HAND};

/// The search for an eviction victim, as the context of the `bpf_loop` callback
/// [`victim_step`]: the evictable flow of the lowest [`eviction_rank`] (about the oldest last
/// packet) in a window of slots.
#[repr(C)]
struct Victim {
    /// The window's first slot.
    start: u64,
    /// The candidate's slot index ([`NONE`] while there is none), its state and its
    /// [`eviction_rank`].
    idx: u64,
    state: u64,
    rank: u64,
}

/// One slot of a [`Victim`] window: 0 to go on, 1 once the window has its [`EVICT_WINDOW`]
/// slots and a candidate.
#[inline(never)]
extern "C" fn victim_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Victim` that `evict` passed to `bpf_loop`, on its stack.
    let c = unsafe { &mut *ctx.cast::<Victim>() };
    let idx = c.start.wrapping_add(i);
    let Some(s) = slot(idx as u32) else {
        return 1;
    };
    // SAFETY: `s` is a slot of FLOWS, valid for the program run. The value is read while
    // other CPUs may update it: the choice is re-checked once the slot is claimed.
    unsafe {
        let st = load_u64(&raw const (*s).state);
        let v = &(*s).value;
        let k = &(*s).key;
        let rank = eviction_rank(k, v);
        if st & state::KIND == state::USED && evictable(k, v) && (c.idx == NONE || rank < c.rank) {
            (c.idx, c.state, c.rank) = (idx, st, rank);
        }
    }
    i64::from(i + 1 >= u64::from(EVICT_WINDOW) && c.idx != NONE)
}

/// The walk back of [`reclaim_step`] from a slot just made a tombstone, as the context of the
/// `bpf_loop` callback [`reclaim_back_step`].
#[repr(C)]
struct Reclaim {
    idx: u64,
}

/// Reclaims the tombstone at `idx` if the slot after it is empty, then moves to the one
/// before: 1 (stop) at the first slot it cannot reclaim.
#[inline(never)]
extern "C" fn reclaim_back_step(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Reclaim` that `evict` passed to `bpf_loop`, on its stack.
    let c = unsafe { &mut *ctx.cast::<Reclaim>() };
    let (Some(s), Some(next)) = (slot(c.idx as u32), slot((c.idx as u32).wrapping_add(1))) else {
        return 1;
    };
    // SAFETY: state words of two consecutive slots of FLOWS (masked indexes wrap around).
    if unsafe { reclaim_step(&raw mut (*s).state, &raw const (*next).state) } {
        c.idx = c.idx.wrapping_sub(1);
        return 0;
    }
    1
}

/// Tombstones an eviction reclaims at most, walking back from its victim's slot.
const RECLAIM_WALK: u32 = 32;

/// Makes room in a full table for a new flow: evicts the [`evictable`] flow (anything but an
/// open TCP connection whose handshake completed) of the lowest [`eviction_rank`] (the oldest
/// last packet; a one-sided TCP connection's, or a UDP or ICMP flow's, later by its age) in
/// this CPU's next window of [`EVICT_WINDOW`] slots (more, up to [`EVICT_WINDOW_MAX`], until
/// the window holds one) and hands it to user space as an `EVICTED` event
/// (`sensor_common::slots` explains the policy). `hash` seeds the hand on a CPU's first
/// eviction; `now_ns` is the event's time. True when a flow was evicted: its unit of
/// `FLOW_COUNT` is the caller's.
#[inline(always)]
pub(crate) fn evict(hash: u64, now_ns: u64, h: &mut Health) -> bool {
    match evict_victim(hash, now_ns) {
        evicted::DONE => {
            h.flows_evicted += 1;
            h.events_sent += 1;
            true
        }
        evicted::RING_FULL => {
            h.evict_ring_full += 1;
            false
        }
        _ => false,
    }
}

/// Outcomes of an eviction.
mod evicted {
    /// No evictable flow in the window (or it changed under the eviction).
    pub const NO_VICTIM: u64 = 0;
    /// Evicted and handed to user space.
    pub const DONE: u64 = 1;
    /// A victim, but no room in the ring buffer for its record: not evicted.
    pub const RING_FULL: u64 = 2;
}

/// Finds, claims and hands over the victim (see [`evict`]); an [`evicted`] outcome.
#[inline(always)]
fn evict_victim(hash: u64, now_ns: u64) -> u64 {
    let Some(hand) = EVICT_HAND.get_ptr_mut(0) else {
        return evicted::NO_VICTIM;
    };
    // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run.
    let start = unsafe {
        if *hand == 0 {
            *hand = hash;
        }
        *hand
    };
    // Field by field into the value the callback reads, the zeros through volatile stores: a
    // struct literal's two adjacent zero fields became a call of the BPF build's byte-by-byte
    // `memset` (as `crate::table`'s probe walk did).
    let mut c = core::mem::MaybeUninit::<Victim>::uninit();
    let p = c.as_mut_ptr();
    // SAFETY: `p` points to the stack value `c`; every field is written before `bpf_loop` reads
    // it and before `assume_init`. `victim_step` has the callback signature `bpf_loop`
    // expects, and `c` outlives the call.
    let (looked, c) = unsafe {
        (&raw mut (*p).start).write(start);
        (&raw mut (*p).idx).write(NONE);
        (&raw mut (*p).state).write_volatile(0);
        (&raw mut (*p).rank).write_volatile(0);
        let looked = bpf_loop(
            EVICT_WINDOW_MAX,
            victim_step as *mut c_void,
            p.cast::<c_void>(),
            0,
        );
        (looked, c.assume_init())
    };
    // SAFETY: as above. The next window starts after this one.
    unsafe { *hand = start.wrapping_add(looked as u64) };
    if c.idx == NONE {
        return evicted::NO_VICTIM;
    }
    let Some(s) = slot(c.idx as u32) else {
        return evicted::NO_VICTIM;
    };
    // The record's room first: a flow leaves the table only with its record on the way.
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        return evicted::RING_FULL;
    };
    // SAFETY: `s` is a slot of FLOWS; its state is 8-aligned. Claimed (busy with the victim's
    // fingerprint, so that a lookup of the victim waits), the slot is this CPU's: user space
    // removes and other CPUs evict by the same compare-and-swap. The record is written in
    // place in the ring (the stack has no room for another copy).
    unsafe {
        let st = &raw mut (*s).state;
        if !compare_exchange_u64(st, c.state, state::BUSY | (c.state & !state::KIND)) {
            entry.discard(0);
            return evicted::NO_VICTIM;
        }
        let ev = entry.as_mut_ptr();
        core::ptr::copy_nonoverlapping(&raw const (*s).key, &raw mut (*ev).key, 1);
        core::ptr::copy_nonoverlapping(&raw const (*s).value, &raw mut (*ev).value, 1);
        if !evictable(&(*ev).key, &(*ev).value) {
            // A TCP connection since the window was read: it stays.
            publish_u64(st, c.state);
            entry.discard(0);
            return evicted::NO_VICTIM;
        }
        (*ev).kinds = event::EVICTED;
        (*ev)._pad = 0;
        (*ev).evicted_ns = now_ns;
        publish_u64(st, state::TOMB);
    }
    entry.submit(0);
    reclaim_from(c.idx);
    evicted::DONE
}

/// Reclaims the tombstone at slot `idx` and those before it while each is followed by an
/// empty slot (at most [`RECLAIM_WALK`]; see `sensor_common::slots::reclaim_step`).
#[inline(always)]
pub(crate) fn reclaim_from(idx: u64) {
    let mut r = Reclaim { idx };
    // SAFETY: `reclaim_back_step` has the callback signature `bpf_loop` expects, and `r`
    // outlives the call.
    unsafe {
        bpf_loop(
            RECLAIM_WALK,
            reclaim_back_step as *mut c_void,
            (&raw mut r).cast::<c_void>(),
            0,
        )
    };
}
