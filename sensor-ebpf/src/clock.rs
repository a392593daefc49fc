//! The kernel's clock, cached per CPU and jiffy.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};
use sensor_common::table::Clock;

use crate::CLOCK;

/// A `bpf_ktime_get_ns()` reading, taken on this CPU while `jiffies` was current.
#[repr(C)]
pub(crate) struct ClockCache {
    jiffies: u64,
    ns: u64,
}

/// The kernel's [`Clock`]: CLOCK_MONOTONIC nanoseconds, as `bpf_ktime_get_ns()` gives them.
///
/// Why not the helper on every packet: the call costs ~16 ns here (the coarse variant
/// `bpf_ktime_get_coarse_ns` too: it is the call), a sixth of the whole program. `bpf_jiffies64`
/// is inlined by the verifier into one load of `jiffies`, so [`Clock::coarse`] costs a load, a
/// per-CPU array access (also inlined) and a compare: it returns this CPU's cached helper
/// reading while the jiffy is the same, and calls the helper once per jiffy otherwise. The
/// cached value was read during the current jiffy, so it is early by less than one jiffy (4 ms
/// at the usual CONFIG_HZ=250, 1 ms at 1000) and never late.
/// [`update`](sensor_common::table::update) asks for the coarse time only for packets that
/// merely move `last_seen_ns` on (see `sensor_common::table::Clock`); a
/// flow's creation and every TCP packet that adds a history bit (handshake, first payload, FIN,
/// RST) read the exact clock, so `first_seen_ns` and the finishing packet's time are exact.
///
/// The cache is per CPU, as the health counters are: the programs on one CPU do not interrupt
/// each other (XDP runs in softirq, TC egress with bottom halves disabled), so its two fields
/// are written together.
#[derive(Clone, Copy)]
pub(crate) struct KernelClock;

impl Clock for KernelClock {
    #[inline(always)]
    fn exact(&mut self) -> u64 {
        // SAFETY: helpers without preconditions.
        let (ns, jiffies) = unsafe { (bpf_ktime_get_ns(), bpf_jiffies64()) };
        if let Some(c) = CLOCK.get_ptr_mut(0) {
            // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run.
            unsafe { *c = ClockCache { jiffies, ns } };
        }
        ns
    }

    #[inline(always)]
    fn coarse(&mut self) -> u64 {
        // SAFETY: a helper without preconditions (inlined by the verifier: a load of jiffies).
        let jiffies = unsafe { bpf_jiffies64() };
        if let Some(c) = CLOCK.get_ptr_mut(0) {
            // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run.
            let c = unsafe { &mut *c };
            if c.jiffies == jiffies {
                return c.ns;
            }
            // SAFETY: a helper without preconditions.
            let ns = unsafe { bpf_ktime_get_ns() };
            *c = ClockCache { jiffies, ns };
            return ns;
        }
        // SAFETY: a helper without preconditions.
        unsafe { bpf_ktime_get_ns() }
    }
}
