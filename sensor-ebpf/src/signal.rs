//! Connection events on the ring buffer.

use sensor_common::{FlowEvent, FlowKey, FlowValue, Health, flow::event, table::Updated};

use crate::EVENTS;

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
#[inline(always)]
pub(crate) fn replaced(key: &FlowKey, old: &FlowValue, now_ns: u64, h: &mut Health) {
    send(h, key, old, event::REPLACED, now_ns);
}

/// One event, counted in `h.events_sent`, or in `h.ringbuf_drops` when the ring is full.
///
/// The event is written in place in the ring (reserve, fill, submit) rather than built on the
/// stack and copied by `bpf_ringbuf_output`: a `FlowEvent` is 128 bytes, and the flow update
/// that calls this leaves little room in the 512-byte stack (with a full table's eviction
/// inlined into it, the copy no longer fit).
#[inline(always)]
fn send(h: &mut Health, key: &FlowKey, value: *const FlowValue, kinds: u32, evicted_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        h.ringbuf_drops += 1;
        return;
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
}
