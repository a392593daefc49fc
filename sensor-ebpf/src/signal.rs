//! Connection events on the ring buffer.

use sensor_common::{
    FlowEvent, FlowKey, FlowValue, Health,
    flow::{ParkedKey, event},
    table::Updated,
};

use aya_ebpf::bindings::BPF_NOEXIST;

use crate::{EVENTS, PARK_KEY, PARKED};

/// Sends what an update did that user space must learn to the ring buffer.
#[inline(always)]
pub(crate) fn signal(h: &mut Health, u: &Updated) {
    if u.events == 0 {
        return;
    }
    send(h, &u.key, u.value.cast_const(), u.events, 0);
}

/// Sends the connection an entry held before a port-reusing SYN restarts it
/// ([`event::REPLACED`]), with its value as it ended.
///
/// The restart overwrites that value, the only copy of the old connection: where the ring
/// has no room, it is parked in `PARKED` instead (counted in `h.restarts_parked`), which user
/// space empties at its table scan. Only a restart that finds both full loses its connection
/// (counted in `h.restarts_lost` and `h.ringbuf_drops`).
#[inline(always)]
pub(crate) fn replaced(key: &FlowKey, old: &FlowValue, now_ns: u64, h: &mut Health) {
    if try_send(h, key, old, event::REPLACED, now_ns) {
        return;
    }
    // The parking key is built in a per-CPU map value, not on the stack (the flow update's
    // frame leaves no room for it); the lookup of index 0 cannot fail.
    if let Some(k) = PARK_KEY.get_ptr_mut(0) {
        // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run; `old` is
        // a live value of FLOWS.
        let parked = unsafe {
            (*k).key = *key;
            (*k).first_seen_ns = old.first_seen_ns;
            let k: &ParkedKey = &*k;
            PARKED.insert(k, old, u64::from(BPF_NOEXIST)).is_ok()
        };
        if parked {
            h.restarts_parked += 1;
            return;
        }
    }
    h.restarts_lost += 1;
    h.ringbuf_drops += 1;
}

/// One event, counted in `h.events_sent`, or in `h.ringbuf_drops` when the ring is full.
#[inline(always)]
fn send(h: &mut Health, key: &FlowKey, value: *const FlowValue, kinds: u32, evicted_ns: u64) {
    if !try_send(h, key, value, kinds, evicted_ns) {
        h.ringbuf_drops += 1;
    }
}

/// One event, counted in `h.events_sent`; false (and nothing counted) when the ring is full.
///
/// The event is written in place in the ring (reserve, fill, submit) rather than built on the
/// stack and copied by `bpf_ringbuf_output`: a `FlowEvent` is 136 bytes, and the flow update
/// that calls this leaves little room in the 512-byte stack (with a full table's eviction
/// inlined into it, the copy no longer fit).
#[inline(always)]
fn try_send(
    h: &mut Health,
    key: &FlowKey,
    value: *const FlowValue,
    kinds: u32,
    evicted_ns: u64,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        return false;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved ring entry, ours until submitted; `value` is a live value
    // of FLOWS (a concurrent update only makes the snapshot include a later packet; a restart
    // overwrites it only after this returns).
    unsafe {
        (*ev).key = *key;
        core::ptr::copy_nonoverlapping(value, &raw mut (*ev).value, 1);
        (*ev).kinds = kinds;
        (*ev)._pad = 0;
        (*ev).evicted_ns = evicted_ns;
    }
    entry.submit(0);
    h.events_sent += 1;
    true
}
