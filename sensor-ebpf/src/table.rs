//! The flow table over the `FLOWS` array (`sensor_common::slots`): the kernel's `FlowTables`,
//! probe, insert (with the capacity reservation) and the wait for a slot another CPU fills.

use aya_ebpf::{EbpfContext, cty::c_void, helpers::bpf_loop};
use aya_log_ebpf::warn;
use sensor_common::{
    FlowKey, FlowValue, Health,
    atomic::{atomic_add, compare_exchange_u64, load_u64, publish_u64},
    flow::{FragKey, FragValue, copy_words},
    slots::{FlowSlot, PROBES, fingerprint, key_eq, key_hash_words, state},
    table::{FlowTables, Insert},
};

use crate::evict::{evict, reclaim_from};
use crate::{FLOW_CAPACITY, FLOW_COUNT, FLOW_HASH_SEED, FLOW_SLOT_MASK, FLOWS, FRAGS};

/// How many times a lookup re-reads a slot that another CPU is filling with the same key's
/// fingerprint before giving up (the packet then counts as `table_full`, see `on_vanished`).
///
/// The writer needs a few dozen instructions, but it can be interrupted (and, under
/// BPF_PROG_TEST_RUN, preempted) in between, for longer than 1,024 reads on a loaded machine;
/// 65,536 reads (~100-200 us) outlast that (the two-CPU race test in `tests/tests/xdp_packets.rs`
/// checks it). Only a CPU that meets a flow being created at that very moment ever spins.
const BUSY_SPIN: u32 = 1 << 16;

/// The kernel's [`FlowTables`]: the program's BPF maps. The per-packet logic itself is
/// `sensor_common::table::update`, shared with offline replay so that both account alike.
pub(crate) struct KernelTables<'a, C: EbpfContext> {
    pub(crate) ctx: &'a C,
    /// The hash of the packet's flow key once computed. A `KernelTables` serves one packet's
    /// update, which asks about one flow key only (`sensor_common::table::update`: a new flow
    /// is looked up, inserted and looked up again), so the hash is computed once, not three
    /// times (about fifty instructions each). `None` at the start is a constant the verifier
    /// knows, so the cache does not split the paths it walks where one update runs (the
    /// continuations, which run two updates with tables of their own, take about 20,000
    /// instructions more to verify).
    hash: Option<u64>,
}

impl<'a, C: EbpfContext> KernelTables<'a, C> {
    /// The tables of one packet's update.
    #[inline(always)]
    pub(crate) fn new(ctx: &'a C) -> KernelTables<'a, C> {
        KernelTables { ctx, hash: None }
    }

    /// The hash of `key`, the packet's flow key (see `hash`).
    #[inline(always)]
    fn key_hash(&mut self, key: &FlowKey) -> u64 {
        match self.hash {
            Some(h) => h,
            None => {
                let h = key_hash_words(key, &seed());
                self.hash = Some(h);
                h
            }
        }
    }
}

/// Globals are read through a volatile load: the compiler must not fold their initial values.
#[inline(always)]
pub(crate) fn global<T: Copy>(g: &T) -> T {
    // SAFETY: a valid reference to a global.
    unsafe { core::ptr::read_volatile(g) }
}

/// The hash seed's words (`FLOW_HASH_SEED`), each read through a volatile load (see [`global`]).
#[inline(always)]
fn seed() -> [u64; 5] {
    let s = (&raw const FLOW_HASH_SEED).cast::<u64>();
    // SAFETY: five reads within the global array.
    unsafe { core::array::from_fn(|i| core::ptr::read_volatile(s.add(i))) }
}

/// The slot at `idx` (masked, so always in bounds of the array).
#[inline(always)]
pub(crate) fn slot(idx: u32) -> Option<*mut FlowSlot> {
    FLOWS.get_ptr_mut(idx & global(&FLOW_SLOT_MASK))
}

/// No probe position.
pub(crate) const NONE: u64 = u64::MAX;

/// What a probe found ([`Probe::found`]).
mod found {
    /// The key is not in the table.
    pub const ABSENT: u64 = 0;
    /// In use at [`super::Probe::pos`].
    pub const USED: u64 = 1;
    /// Another CPU is filling the slot at [`super::Probe::pos`] with a key of the same
    /// fingerprint (most likely this key: two CPUs creating the same flow at once).
    pub const BUSY: u64 = 2;
}

/// A walk of one key's probe sequence, as the context of the `bpf_loop` callback
/// [`probe_step`]. Positions count from the key's home slot.
///
/// Why `bpf_loop` and not a plain loop: the verifier walks a plain bounded loop once per
/// iteration and per path into it, and with the several probes of one packet (lookup, insert,
/// the insert's re-check, lookup again) that exceeded its million-instruction budget; a
/// `bpf_loop` callback is verified once. The hot path does not get here: [`home_hit`] checks
/// the home slot inline first.
#[repr(C)]
struct Probe {
    key: FlowKey,
    hash: u64,
    /// Stop before this position.
    stop: u64,
    /// [`found`].
    found: u64,
    pos: u64,
    /// The first free (empty or tombstone) position before the end of the sequence, or
    /// [`NONE`], and its state then.
    free_pos: u64,
    free_state: u64,
    /// 1 when an empty slot ended the walk before `stop`, or a slot before it was being
    /// reclaimed (`state::RECLAIM`).
    ended: u64,
}

/// One position of a [`Probe`]: 0 to go on, 1 to stop.
#[inline(never)]
extern "C" fn probe_step(pos: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Probe` that `probe` passed to `bpf_loop`, on its stack.
    let c = unsafe { &mut *ctx.cast::<Probe>() };
    if pos >= c.stop {
        return 1;
    }
    let Some(s) = slot((c.hash as u32).wrapping_add(pos as u32)) else {
        return 1;
    };
    let fp = fingerprint(c.hash);
    // SAFETY: `s` is a slot of FLOWS, valid for the program run.
    let st = unsafe { load_u64(&raw const (*s).state) };
    match st & state::KIND {
        state::EMPTY => {
            if c.free_pos == NONE {
                (c.free_pos, c.free_state) = (pos, st);
            }
            c.ended = 1;
            return 1;
        }
        // SAFETY: a used slot's key is not written any more (only a removal and a new insert
        // would, and then the fingerprint or the key no longer matches).
        state::USED if st == state::USED | fp && key_eq(unsafe { &(*s).key }, &c.key) => {
            (c.found, c.pos) = (found::USED, pos);
            return 1;
        }
        state::BUSY if st == state::BUSY | fp => {
            (c.found, c.pos) = (found::BUSY, pos);
            return 1;
        }
        state::TOMB if c.free_pos == NONE => (c.free_pos, c.free_state) = (pos, st),
        // Becomes empty or a tombstone again: not free, and keys may lie beyond it.
        state::RECLAIM => c.ended = 1,
        _ => {}
    }
    0
}

/// Walks `key`'s probe sequence up to position `stop` (exclusive).
///
/// The first position is looked at inline: a walk that stops at once (nothing to walk, or an
/// empty home slot, as for most new flows in a table at most half full) needs no `bpf_loop`.
/// A new flow walked three times (the lookup, the insert, the insert's re-check of the
/// positions before its slot), each a helper call and a callback.
#[inline(always)]
fn probe(key: &FlowKey, hash: u64, stop: u64) -> Probe {
    // Field by field, the zeros through volatile stores, into the very value the callback
    // reads: LLVM merged the adjacent zero fields of a struct literal into `memset` calls, which
    // the BPF build runs as a byte-by-byte loop (two per walk; see `copy_words`).
    let mut c = core::mem::MaybeUninit::<Probe>::uninit();
    let p = c.as_mut_ptr();
    // SAFETY: `p` points to the stack value `c`; every field is written before `bpf_loop`
    // reads it and before `assume_init`. `probe_step` has the callback signature `bpf_loop`
    // expects, and `c` outlives the call.
    unsafe {
        (&raw mut (*p).key).write(*key);
        (&raw mut (*p).hash).write(hash);
        (&raw mut (*p).stop).write(stop);
        (&raw mut (*p).found).write_volatile(found::ABSENT);
        (&raw mut (*p).pos).write_volatile(0);
        (&raw mut (*p).free_pos).write(NONE);
        (&raw mut (*p).free_state).write_volatile(0);
        (&raw mut (*p).ended).write_volatile(0);
        if stop == 0 {
            return c.assume_init();
        }
        // `probe_step` at position 0 when the slot is empty. `s` is a slot of FLOWS, valid
        // for the program run; its state is read atomically.
        if let Some(s) = slot(hash as u32) {
            let st = load_u64(&raw const (*s).state);
            if st & state::KIND == state::EMPTY {
                (*p).free_pos = 0;
                (*p).free_state = st;
                (*p).ended = 1;
                return c.assume_init();
            }
        }
        bpf_loop(PROBES, probe_step as *mut c_void, p.cast::<c_void>(), 0);
        c.assume_init()
    }
}

/// The slot at `pos` of `hash`'s probe sequence.
#[inline(always)]
fn slot_at(hash: u64, pos: u64) -> Option<*mut FlowSlot> {
    slot((hash as u32).wrapping_add(pos as u32))
}

/// The hot path: `key`'s value when it sits in its home slot.
#[inline(always)]
fn home_hit(key: &FlowKey, hash: u64) -> Option<*mut FlowValue> {
    let s = slot(hash as u32)?;
    // SAFETY: `s` is a slot of FLOWS, valid for the program run; a used slot's key is stable.
    unsafe {
        let st = load_u64(&raw const (*s).state);
        if st == state::USED | fingerprint(hash) && key_eq(&(*s).key, key) {
            return Some(&raw mut (*s).value);
        }
    }
    None
}

/// A wait for a slot another CPU is filling, as the context of [`spin_step`].
#[repr(C)]
struct Spin {
    slot: *mut FlowSlot,
    busy: u64,
    state: u64,
}

/// Reads the slot's state: 1 (stop) once it is no longer busy.
#[inline(never)]
extern "C" fn spin_step(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Spin` that `settled` passed to `bpf_loop`, on its stack; its slot
    // is a slot of FLOWS.
    unsafe {
        let c = &mut *ctx.cast::<Spin>();
        c.state = load_u64(&raw const (*c.slot).state);
        (c.state != c.busy) as i64
    }
}

/// Waits (at most `BUSY_SPIN` reads) for a slot that another CPU is filling, then returns its
/// value if it holds `key`.
#[inline(always)]
fn settled(s: *mut FlowSlot, key: &FlowKey, fp: u64) -> Option<*mut FlowValue> {
    let mut c = Spin {
        slot: s,
        busy: state::BUSY | fp,
        state: state::BUSY | fp,
    };
    // SAFETY: as in `probe`.
    unsafe {
        bpf_loop(
            BUSY_SPIN,
            spin_step as *mut c_void,
            (&raw mut c).cast::<c_void>(),
            0,
        )
    };
    // SAFETY: `s` is a slot of FLOWS; published, so its key is written.
    if c.state == state::USED | fp && key_eq(unsafe { &(*s).key }, key) {
        // SAFETY: as above.
        return Some(unsafe { &raw mut (*s).value });
    }
    None
}

/// How many times an insert retries reserving a unit of `FLOW_COUNT` when other CPUs change
/// it under its compare-and-swap (each failure is another CPU's success).
const RESERVE_TRIES: u32 = 16;

/// Reserves one unit of the table's capacity in `FLOW_COUNT`: false when it is all taken.
///
/// A compare-and-swap loop, not an atomic fetch-and-add: the object is built for the baseline
/// BPF CPU, whose atomic add returns nothing.
#[inline(always)]
fn reserve(count: *mut u64) -> bool {
    let capacity = global(&FLOW_CAPACITY);
    let mut i = 0;
    while i < RESERVE_TRIES {
        // SAFETY: the count slot of FLOW_COUNT, valid and 8-aligned.
        let n = unsafe { core::ptr::read_volatile(count) };
        if n >= capacity {
            return false;
        }
        // SAFETY: as above.
        if unsafe { compare_exchange_u64(count, n, n + 1) } {
            return true;
        }
        i += 1;
    }
    false
}

/// Takes back one unit of `FLOW_COUNT` reserved by an insert that did not insert.
#[inline(always)]
fn unreserve(count: *mut u64) {
    // SAFETY: the count slot of FLOW_COUNT, valid and 8-aligned.
    unsafe { atomic_add(count, u64::MAX) };
}

impl<C: EbpfContext> FlowTables for KernelTables<'_, C> {
    #[inline(always)]
    fn flow_ptr(&mut self, key: &FlowKey) -> Option<*mut FlowValue> {
        let hash = self.key_hash(key);
        if let Some(v) = home_hit(key, hash) {
            return Some(v);
        }
        let c = probe(key, hash, PROBES as u64);
        let s = slot_at(hash, c.pos)?;
        match c.found {
            // SAFETY: a slot of FLOWS; the value field stays valid for the program run.
            found::USED => Some(unsafe { &raw mut (*s).value }),
            found::BUSY => settled(s, key, fingerprint(hash)),
            _ => None,
        }
    }

    /// Claims the first free slot of the key's probe sequence (compare-and-swap of its state),
    /// reserves a unit of the capacity, fills the slot and publishes it. In a full table the
    /// unit is an evicted flow's: the insert evicts an unanswered attempt and takes its unit
    /// over (`FLOW_COUNT` does not change, so no other CPU can take the room in between). See
    /// `sensor_common::slots`.
    ///
    /// The order matters for two CPUs creating the same flow as the table fills up: the claim
    /// (visible to the other CPU as a busy slot with this key's fingerprint, which it waits for)
    /// comes before the reservation, so the other CPU never sees the capacity taken by this
    /// very flow without also seeing the flow; it gets `Exists`, as with a BPF hash map.
    #[inline(always)]
    fn flow_insert(&mut self, key: &FlowKey, value: &FlowValue, h: &mut Health) -> Insert {
        let Some(count) = FLOW_COUNT.get_ptr_mut(0) else {
            return Insert::Full;
        };
        let hash = self.key_hash(key);
        let fp = fingerprint(hash);
        // A lost compare-and-swap means another CPU took the slot, or a tombstone was
        // reclaimed: look again.
        let mut attempt = 0;
        while attempt < 3 {
            let c = probe(key, hash, PROBES as u64);
            if c.found != found::ABSENT {
                return Insert::Exists;
            }
            if c.free_pos == NONE {
                break;
            }
            let Some(s) = slot_at(hash, c.free_pos) else {
                break;
            };
            // SAFETY: `s` is a slot of FLOWS, its state 8-aligned.
            if !unsafe { compare_exchange_u64(&raw mut (*s).state, c.free_state, state::BUSY | fp) }
            {
                attempt += 1;
                continue;
            }
            // The slot is ours until published; a CPU creating the same flow waits for it.
            if !reserve(count) && !evict(hash, value.first_seen_ns, h) {
                // Given back as a tombstone (a CPU may have walked past it to a later slot), and
                // reclaimed if it was empty: a table full of open conversations would
                // otherwise turn an empty slot into a tombstone with every refused flow.
                // SAFETY: as above.
                unsafe { publish_u64(&raw mut (*s).state, state::TOMB) };
                reclaim_from((hash as u32).wrapping_add(c.free_pos as u32) as u64);
                break;
            }
            // SAFETY: as above; the value is 8-aligned in the slot and on the caller's side.
            unsafe {
                (*s).key = *key;
                copy_words(&raw mut (*s).value, value);
            }
            // Another CPU may have inserted the same key meanwhile in an earlier slot of the
            // sequence (freed by a removal after our walk): then that one is the flow.
            let before = probe(key, hash, c.free_pos);
            if before.found != found::ABSENT {
                // SAFETY: as above.
                unsafe { publish_u64(&raw mut (*s).state, state::TOMB) };
                unreserve(count);
                return Insert::Exists;
            }
            // A slot before ours may have become empty after our walk (a tombstone reclaimed,
            // see `sensor_common::slots::reclaim_step`): lookups would stop there and never
            // reach our slot. Give it back and claim again. Checked while our slot is busy,
            // which keeps the check true: a tombstone becomes empty only while the slot after
            // it is, and ours is not.
            if before.ended != 0 {
                // SAFETY: as above.
                unsafe { publish_u64(&raw mut (*s).state, state::TOMB) };
                unreserve(count);
                attempt += 1;
                continue;
            }
            // SAFETY: as above.
            unsafe { publish_u64(&raw mut (*s).state, state::USED | fp) };
            return Insert::Done;
        }
        Insert::Full
    }

    #[inline(always)]
    fn on_restart(&mut self, key: &FlowKey, old: &FlowValue, now_ns: u64, h: &mut Health) {
        crate::signal::replaced(key, old, now_ns, h);
    }

    #[inline(always)]
    fn frag_get(&mut self, key: &FragKey) -> Option<FragValue> {
        // SAFETY: the value is copied out at once.
        unsafe { FRAGS.get(key) }.copied()
    }

    #[inline(always)]
    fn frag_insert(&mut self, key: &FragKey, value: &FragValue) {
        // An LRU map makes room by itself; a failure leaves later fragments unattributed,
        // and they are counted then.
        let _ = FRAGS.insert(key, value, 0);
    }

    #[inline(always)]
    fn on_table_full(&mut self, n: u64) {
        // Log at powers of two only: a full table must not flood the log.
        if n & (n - 1) == 0 {
            warn!(
                self.ctx,
                "flow table full: {} packets not accounted on this CPU", n
            );
        }
    }

    #[inline(always)]
    fn on_vanished(&mut self) {
        // Removed by user space between insert and lookup, or another CPU creating the same
        // flow did not publish it within `BUSY_SPIN` reads (or gave its slot back because the
        // table filled up): counted, not guessed.
        warn!(self.ctx, "flow vanished after insert");
    }
}
