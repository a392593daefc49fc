//! Connection events on the ring buffer.

use sensor_common::{FlowEvent, FlowKey, FlowValue, Health, flow::event, table::Updated};

use crate::EVENTS;

/// Sends what an update did that user space must learn to the ring buffer.
///
/// The event is written in place in the ring (reserve, fill, submit) rather than built on the
/// stack and copied by `bpf_ringbuf_output`: a `FlowEvent` is ~150 bytes, and the flow update
/// that calls this leaves little room in the 512-byte stack (with a full table's eviction
/// inlined into it, the copy no longer fit).
#[inline(always)]
pub(crate) fn signal(h: &mut Health, u: &Updated) {
    if u.events == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        h.ringbuf_drops += 1;
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved ring entry, ours until submitted; `u.value` is a live value
    // of FLOWS (a concurrent update only makes the snapshot include a later packet).
    unsafe {
        (*ev).key = u.key;
        core::ptr::copy_nonoverlapping(u.value.cast_const(), &raw mut (*ev).value, 1);
        (*ev).kinds = u.events;
        (*ev)._pad = 0;
        (*ev).evicted_ns = 0;
    }
    entry.submit(0);
    h.events_sent += 1;
}

/// Sends the connection an entry held before a port-reusing SYN restarts it
/// ([`event::REPLACED`]), with its value as it ended, written in place in the ring as
/// [`signal`] does.
#[inline(always)]
pub(crate) fn replaced(key: &FlowKey, old: &FlowValue, now_ns: u64, h: &mut Health) {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        h.ringbuf_drops += 1;
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved ring entry, ours until submitted; `old` is the value in
    // FLOWS, not yet overwritten by the restart.
    unsafe {
        (*ev).key = *key;
        core::ptr::copy_nonoverlapping(old, &raw mut (*ev).value, 1);
        (*ev).kinds = event::REPLACED;
        (*ev)._pad = 0;
        (*ev).evicted_ns = now_ns;
    }
    entry.submit(0);
    h.events_sent += 1;
}
