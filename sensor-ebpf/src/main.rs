//! Kernel side of the sensor: XDP on ingress and a TC (clsact) classifier on egress of every
//! watched interface, both accounting packets into one flow table.
//!
//! Per packet: parse (shared code in `sensor_common::parse`), then the flow-table update shared
//! with offline replay (`sensor_common::table::update`: canonical key, lookup, in-place update
//! with `sensor_common::account`) over this program's maps. A map insert happens only for a
//! flow's first packet. What the per-packet parse hands on (L2 headers deeper than two VLAN
//! tags, tunnels) goes to a continuation program by tail call, one level per call
//! (`sensor_common::encap`), so that plain traffic pays nothing for it and each level has its
//! own verifier budget. A connection's beginning, its TCP handshake's outcome and its TCP end
//! are announced on a ring buffer (a few events per connection, none per ordinary packet);
//! everything that
//! cannot be accounted is counted in the per-CPU health counters. The programs never drop or
//! modify traffic.
#![no_std]
#![no_main]
// `asm!` on the BPF target (an empty compiler barrier, see `process`).
#![feature(asm_experimental_arch)]

use aya_ebpf::cty::c_void;
use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_OK, xdp_action},
    helpers::{bpf_jiffies64, bpf_ktime_get_ns, bpf_loop},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::warn;
use sensor_common::{
    FlowEvent, FlowKey, FlowValue, Health,
    atomic::{atomic_add, compare_exchange_u64, load_u64, publish_u64},
    encap::{Level, Marks, Pending, count_error, examine, settle, update_marked},
    flow::event,
    flow::{FragKey, FragValue},
    parse::{HeaderView, PacketData, Parsed, next, parse_ethernet},
    slots::{
        BPF_F_MMAPABLE, DEFAULT_FLOW_CAPACITY, EVICT_WINDOW, EVICT_WINDOW_MAX, FlowSlot, PROBES,
        evictable, fingerprint, key_eq, key_hash, reclaim_step, slot_count, state,
    },
    table::{Clock, FlowTables, Insert, Updated, update},
};

/// The flow table: open addressing in an array (`sensor_common::slots` explains the layout
/// and why). The loader sizes it (`slots::slot_count` of `--table-size`) and sets the globals
/// below to match; user space maps it into its memory.
#[map(name = "FLOWS")]
static FLOWS: Array<FlowSlot> =
    Array::with_max_entries(slot_count(DEFAULT_FLOW_CAPACITY), BPF_F_MMAPABLE);

/// Flows in `FLOWS`, at most `FLOW_CAPACITY` (user space decrements it when it removes one).
#[map(name = "FLOW_COUNT")]
static FLOW_COUNT: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Slots in `FLOWS` minus one. Set by the loader.
#[unsafe(no_mangle)]
static FLOW_SLOT_MASK: u32 = slot_count(DEFAULT_FLOW_CAPACITY) - 1;

/// How many flows `FLOWS` may hold. Set by the loader.
#[unsafe(no_mangle)]
static FLOW_CAPACITY: u64 = DEFAULT_FLOW_CAPACITY as u64;

/// Seed of `slots::key_hash`. Set by the loader (random).
#[unsafe(no_mangle)]
static FLOW_HASH_SEED: u64 = 0;

/// How many times a lookup re-reads a slot that another CPU is filling with the same key's
/// fingerprint before giving up (the packet then counts as `table_full`, see `on_vanished`).
///
/// The writer needs a few dozen instructions, but it can be interrupted (and, under
/// BPF_PROG_TEST_RUN, preempted) in between, for longer than 1,024 reads on a loaded machine;
/// 65,536 reads (~100-200 us) outlast that (the two-CPU race test in `tests/tests/xdp_packets.rs`
/// checks it). Only a CPU that meets a flow being created at that very moment ever spins.
const BUSY_SPIN: u32 = 1 << 16;

/// Non-first fragments find their flow here, by the IP fragment identity of the first fragment.
/// An LRU map: fragment trains are short-lived, and an evicted entry only makes a late fragment
/// count as `unattributed_fragments`.
#[map(name = "FRAGS")]
static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(4_096, 0);

#[map(name = "HEALTH")]
static HEALTH: PerCpuArray<Health> = PerCpuArray::with_max_entries(1, 0);

/// Connection events (a connection began, its handshake's outcome became known, it finished:
/// `sensor_common::flow::event`). Size set by the loader; a power-of-two number of pages.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Interfaces (ifindex -> 1) whose ingress the XDP program watches. The TC egress program skips
/// packets forwarded from one of them: XDP already accounted them on the way in, and a gateway
/// watching all its interfaces would otherwise count every forwarded packet twice.
#[map(name = "WATCHED")]
static WATCHED: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

/// This CPU's last clock reading and the jiffy it was taken in: see [`KernelClock`].
#[map(name = "CLOCK")]
static CLOCK: PerCpuArray<ClockCache> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's eviction hand: the slot where its next eviction window starts (see
/// `sensor_common::slots`). 0 until the first eviction seeds it with a hash.
#[map(name = "EVICT_HAND")]
static EVICT_HAND: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Counter of the benchmark baseline program.
#[map(name = "BASELINE")]
static BASELINE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The continuation of `sensor_xdp` (`sensor_common::program_names::XDP_NEXT`), installed by
/// the loader.
#[map(name = "XDP_NEXT_PROG")]
static XDP_NEXT_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The continuation of `sensor_tc_egress`.
#[map(name = "TC_NEXT_PROG")]
static TC_NEXT_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The packet a program hands to its continuation. Per CPU: the programs of one CPU run one
/// at a time, and a tail call stays on its CPU.
#[map(name = "HANDOFF")]
static HANDOFF: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// Where `PacketData::forget` passes values through.
#[map(name = "FORGET")]
static FORGET: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// What the continuation's parse of a level found (`sensor_common::encap::examine`).
#[map(name = "LEVEL")]
static LEVEL: PerCpuArray<Level> = PerCpuArray::with_max_entries(1, 0);

/// The parse result the flow update reads (see `process`).
#[map(name = "PARSED")]
static PARSED: PerCpuArray<Parsed> = PerCpuArray::with_max_entries(1, 0);

/// The headers the parser may need, made linear on the TC path (Ethernet, 2 VLAN tags, IPv6 with
/// a few extension headers, TCP with options).
const TC_PULL_BYTES: u32 = 256;

/// What the TC continuation makes linear: outer headers, a tunnel header with options, and the
/// inner headers.
const TC_NEXT_PULL_BYTES: u32 = 512;

/// Bounds-checked access to the packet between `data` and `data_end`.
struct KernelPacket<'a, C> {
    /// Asked for the frame's length, which is rarely needed (`PacketData::frame_len`): one
    /// value fewer kept live through the parse.
    ctx: &'a C,
    start: usize,
    end: usize,
}

/// A frame's whole length, as `PacketData::frame_len` gives it.
trait FrameLen {
    fn frame_len(&self) -> usize;
}

impl FrameLen for XdpContext {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.data_end() - self.data()
    }
}

impl FrameLen for TcContext {
    /// The skb's length: the whole packet, also the part the program cannot read directly.
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len() as usize
    }
}

/// `N` packet bytes at `p`, checked against `data_end` by [`KernelPacket::header`].
#[derive(Clone, Copy)]
struct KernelHeader<const N: usize> {
    p: usize,
}

impl<C: FrameLen> PacketData for KernelPacket<'_, C> {
    type Header<const N: usize> = KernelHeader<N>;

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<KernelHeader<N>> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        Some(KernelHeader { p })
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.ctx.frame_len()
    }

    /// A round trip through a map value: the verifier does not track what map memory holds,
    /// so the value read back is an unknown scalar (which `parse` then bounds). The lookup of
    /// index 0 of an array cannot fail (the verifier knows it too, so the `None` arm is dead).
    #[inline(always)]
    fn forget(&self, value: usize) -> usize {
        match FORGET.get_ptr_mut(0) {
            // SAFETY: this CPU's own slot of a per-CPU array, valid and 8-aligned for the
            // program run.
            Some(slot) => unsafe {
                core::ptr::write_volatile(slot, value as u64);
                core::ptr::read_volatile(slot) as usize
            },
            None => value,
        }
    }
}

// The loads below are single BPF loads of the field's width. Packet data has no alignment
// guarantee, and the BPF ISA and the x86-64/arm64 JITs allow unaligned loads from packet memory
// (the verifier only rejects them under strict alignment, which these architectures do not
// use), so the natural-width load is what we want; `read_unaligned` would be split into byte
// loads by the BPF backend.
impl<const N: usize> HeaderView for KernelHeader<N> {
    #[inline(always)]
    fn u8(&self, i: usize) -> u8 {
        // SAFETY: `i < N` at every call site (constant offsets), and `[p, p + N)` was checked
        // against `data_end`.
        unsafe { *((self.p + i) as *const u8) }
    }
    #[inline(always)]
    fn be16(&self, i: usize) -> u16 {
        // SAFETY: as above, `i + 2 <= N`; unaligned packet loads are allowed (see above).
        u16::from_be(unsafe { *((self.p + i) as *const u16) })
    }
    #[inline(always)]
    fn ne32(&self, i: usize) -> u32 {
        // SAFETY: as above, `i + 4 <= N`; unaligned packet loads are allowed (see above).
        unsafe { *((self.p + i) as *const u32) }
    }
}

#[xdp]
pub fn sensor_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    process(&ctx, start, end, (end - start) as u64, 1, &XDP_NEXT_PROG);
    xdp_action::XDP_PASS
}

/// `sensor_xdp`'s continuation: one level of what its parse handed on.
#[xdp]
pub fn sensor_xdp_next(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    continue_packet(&ctx, start, end, &XDP_NEXT_PROG);
    xdp_action::XDP_PASS
}

#[classifier]
pub fn sensor_tc_egress(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel passed to this program.
    let ingress_ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // SAFETY: the value is only tested for presence.
    if ingress_ifindex != 0 && unsafe { WATCHED.get(ingress_ifindex) }.is_some() {
        if let Some(h) = HEALTH.get_ptr_mut(0) {
            // SAFETY: this CPU's own slot of a per-CPU array.
            unsafe { (*h).egress_already_seen += 1 };
        }
        return TC_ACT_OK;
    }
    let len = ctx.len();
    if ((ctx.data_end() - ctx.data()) as u32) < len {
        // Non-linear skb: make the headers directly readable. On failure, parse what is linear;
        // a too-short view is then counted as truncated.
        let _ = ctx.pull_data(if len < TC_PULL_BYTES {
            len
        } else {
            TC_PULL_BYTES
        });
    }
    // A GSO super-packet stands for several wire packets.
    // SAFETY: `skb` is the context pointer the kernel passed to this program.
    let segments = unsafe { (*ctx.skb.skb).gso_segs };
    process(
        &ctx,
        ctx.data(),
        ctx.data_end(),
        len as u64,
        if segments > 1 { segments } else { 1 },
        &TC_NEXT_PROG,
    );
    TC_ACT_OK
}

/// `sensor_tc_egress`'s continuation: one level of what its parse handed on.
#[classifier]
pub fn sensor_tc_next(ctx: TcContext) -> i32 {
    let len = ctx.len();
    if ((ctx.data_end() - ctx.data()) as u32) < len {
        // As in `sensor_tc_egress`, with room for the tunnel's inner headers.
        let _ = ctx.pull_data(if len < TC_NEXT_PULL_BYTES {
            len
        } else {
            TC_NEXT_PULL_BYTES
        });
    }
    continue_packet(&ctx, ctx.data(), ctx.data_end(), &TC_NEXT_PROG);
    TC_ACT_OK
}

/// Benchmark baseline: the cheapest useful XDP program, bumping one per-CPU counter.
#[xdp]
pub fn baseline_xdp(_ctx: XdpContext) -> u32 {
    if let Some(c) = BASELINE.get_ptr_mut(0) {
        // SAFETY: a per-CPU array slot: only this CPU writes it, and the pointer is valid.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn process<C: EbpfContext + FrameLen>(
    ctx: &C,
    start: usize,
    end: usize,
    frame_len: u64,
    segments: u32,
    next_prog: &ProgramArray,
) {
    let Some(h) = HEALTH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's own slot of a per-CPU array, valid for the whole program run.
    let h = unsafe { &mut *h };
    h.packets += segments as u64;
    h.bytes += frame_len;
    // Every packet (and every tunnel payload, in the continuation) lands in exactly one of:
    // accounted, non_ip, truncated, parse_errors, unsupported_l4, unattributed_fragments,
    // table_full, too_deep. Tests check that invariant.
    let pkt = KernelPacket { ctx, start, end };
    match parse_ethernet(&pkt) {
        Ok(p) if p.next != next::NONE => hand_on(ctx, &p, (0, 0), h, segments, next_prog),
        // The update reads the packet from a map value, whose contents the verifier does not
        // track: it walks the update once for every path through the parser, instead of once
        // per path (each of which knows other constants: the protocol, the fragment kind, zero
        // ports or address words, ...). The lookup of index 0 cannot fail (the verifier knows).
        Ok(p) => {
            if let Some(slot) = PARSED.get_ptr_mut(0) {
                // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run; the
                // programs of one CPU run one at a time. The empty `asm!` (which may read and
                // write any memory, for all the compiler knows) keeps the compiler from handing
                // the stored values on to the update instead of its reads of the slot.
                unsafe {
                    core::ptr::copy_nonoverlapping(&p, slot, 1);
                    core::arch::asm!("");
                    account_packet(ctx, &*slot, h, segments);
                }
            }
        }
        Err(e) => count_error(h, e, segments as u64),
    }
}

/// Hands a packet whose parse goes on to the continuation program (a tail call that does not
/// return when it succeeds).
#[inline(always)]
fn hand_on<C: EbpfContext>(
    ctx: &C,
    p: &Parsed,
    (tunnel, depth): (u8, u8),
    h: &mut Health,
    segments: u32,
    next_prog: &ProgramArray,
) {
    if let Some(s) = HANDOFF.get_ptr_mut(0) {
        // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run. Written
        // field by field: a whole `Pending` would be built on the stack first.
        unsafe {
            core::ptr::copy_nonoverlapping(p, &raw mut (*s).p, 1);
            (*s).tunnel = tunnel;
            (*s).depth = depth;
            (*s).segments = segments;
            next_prog.tail_call(ctx, 0);
        }
    }
    // No continuation installed, or the tail-call limit reached: not followed.
    h.too_deep += segments as u64;
}

/// One level of a handed-on packet (`sensor_common::encap`), and the tail call to the next
/// level if there is one.
///
/// The stack has room for one flow update's frame (~400 bytes) and little else: the parse runs
/// in a function of its own (`examine_level`) that leaves its result in the `LEVEL` map, and
/// both packets are accounted from maps (`HANDOFF`, `LEVEL`) by `account_marked`, so that this
/// frame holds only pointers.
#[inline(always)]
fn continue_packet<C: EbpfContext + FrameLen>(
    ctx: &C,
    start: usize,
    end: usize,
    next_prog: &ProgramArray,
) {
    let (Some(h), Some(s), Some(l)) = (
        HEALTH.get_ptr_mut(0),
        HANDOFF.get_ptr_mut(0),
        LEVEL.get_ptr_mut(0),
    ) else {
        return;
    };
    let pkt = KernelPacket { ctx, start, end };
    // SAFETY: this CPU's own slots of per-CPU arrays, valid for the program run.
    let (h, pending, level) = unsafe { (&mut *h, &*s, &mut *l) };
    examine_level(&pkt, pending, level);
    let segments = pending.segments;
    if settle(h, pending, level, |h, p, marks| {
        account_marked(ctx, p, h, segments, marks)
    }) {
        let depth = (level.inner_tunnel, level.inner_depth);
        hand_on(ctx, &level.inner, depth, h, segments, next_prog);
    }
}

/// `sensor_common::encap::examine` in a stack frame of its own.
#[inline(never)]
fn examine_level<C: FrameLen>(pkt: &KernelPacket<C>, pending: &Pending, level: &mut Level) {
    examine(pkt, pending, level);
}

/// The kernel's [`FlowTables`]: the program's BPF maps. The per-packet logic itself is
/// `sensor_common::table::update`, shared with offline replay so that both account alike.
struct KernelTables<'a, C: EbpfContext> {
    ctx: &'a C,
}

/// Globals are read through a volatile load: the compiler must not fold their initial values.
#[inline(always)]
fn global<T: Copy>(g: &T) -> T {
    // SAFETY: a valid reference to a global.
    unsafe { core::ptr::read_volatile(g) }
}

/// The slot at `idx` (masked, so always in bounds of the array).
#[inline(always)]
fn slot(idx: u32) -> Option<*mut FlowSlot> {
    FLOWS.get_ptr_mut(idx & global(&FLOW_SLOT_MASK))
}

/// No probe position.
const NONE: u64 = u64::MAX;

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
#[inline(always)]
fn probe(key: &FlowKey, hash: u64, stop: u64) -> Probe {
    let mut c = Probe {
        key: *key,
        hash,
        stop,
        found: found::ABSENT,
        pos: 0,
        free_pos: NONE,
        free_state: 0,
        ended: 0,
    };
    // SAFETY: `probe_step` has the callback signature `bpf_loop` expects, and `c` outlives
    // the call.
    unsafe {
        bpf_loop(
            PROBES,
            probe_step as *mut c_void,
            (&raw mut c).cast::<c_void>(),
            0,
        )
    };
    c
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

/// The search for an eviction victim, as the context of the `bpf_loop` callback
/// [`victim_step`]: the evictable flow with the oldest last packet in a window of slots.
#[repr(C)]
struct Victim {
    /// The window's first slot.
    start: u64,
    /// The candidate's slot index ([`NONE`] while there is none), its state and last packet.
    idx: u64,
    state: u64,
    last_seen_ns: u64,
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
        if st & state::KIND == state::USED
            && evictable(v)
            && (c.idx == NONE || v.last_seen_ns < c.last_seen_ns)
        {
            (c.idx, c.state, c.last_seen_ns) = (idx, st, v.last_seen_ns);
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

/// Makes room in a full table for a new flow: evicts the unanswered attempt with the oldest
/// last packet in this CPU's next window of [`EVICT_WINDOW`] slots (more, up to
/// [`EVICT_WINDOW_MAX`], until the window holds one) and hands it to user space as an
/// `EVICTED` event (`sensor_common::slots` explains the policy). `hash` seeds the hand on a
/// CPU's first eviction; `now_ns` is the event's time. True when a flow was evicted: its unit
/// of `FLOW_COUNT` is the caller's.
#[inline(always)]
fn evict(hash: u64, now_ns: u64, h: &mut Health) -> bool {
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
    let mut c = Victim {
        start,
        idx: NONE,
        state: 0,
        last_seen_ns: 0,
    };
    // SAFETY: `victim_step` has the callback signature `bpf_loop` expects, and `c` outlives
    // the call.
    let looked = unsafe {
        bpf_loop(
            EVICT_WINDOW_MAX,
            victim_step as *mut c_void,
            (&raw mut c).cast::<c_void>(),
            0,
        )
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
        if !evictable(&(*ev).value) {
            // Answered since the window was read: it stays.
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
fn reclaim_from(idx: u64) {
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
        let hash = key_hash(key, global(&FLOW_HASH_SEED));
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
        let hash = key_hash(key, global(&FLOW_HASH_SEED));
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
                // reclaimed if it was empty: a table full of answered connections would
                // otherwise turn an empty slot into a tombstone with every refused flow.
                // SAFETY: as above.
                unsafe { publish_u64(&raw mut (*s).state, state::TOMB) };
                reclaim_from((hash as u32).wrapping_add(c.free_pos as u32) as u64);
                break;
            }
            // SAFETY: as above.
            unsafe {
                (*s).key = *key;
                (*s).value = *value;
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

/// A `bpf_ktime_get_ns()` reading, taken on this CPU while `jiffies` was current.
#[repr(C)]
struct ClockCache {
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
/// at the usual CONFIG_HZ=250, 1 ms at 1000) and never late. [`update`] asks for the coarse time
/// only for packets that merely move `last_seen_ns` on (see `sensor_common::table::Clock`); a
/// flow's creation and every TCP packet that adds a history bit (handshake, first payload, FIN,
/// RST) read the exact clock, so `first_seen_ns` and the finishing packet's time are exact.
///
/// The cache is per CPU, as the health counters are: the programs on one CPU do not interrupt
/// each other (XDP runs in softirq, TC egress with bottom halves disabled), so its two fields
/// are written together.
#[derive(Clone, Copy)]
struct KernelClock;

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

#[inline(always)]
fn account_packet<C: EbpfContext>(ctx: &C, p: &Parsed, h: &mut Health, segments: u32) {
    if let Some(u) = update(&mut KernelTables { ctx }, p, h, KernelClock, segments) {
        signal(h, &u);
    }
}

/// A packet of the continuation accounted: a function of its own (a BPF subprogram), because
/// the continuation accounts up to two packets (a tunnel's carrier and its payload) and two
/// inlined flow updates would not fit the stack together.
#[inline(never)]
fn account_marked<C: EbpfContext>(
    ctx: &C,
    p: &Parsed,
    h: &mut Health,
    segments: u32,
    marks: Marks,
) {
    if let Some(u) = update_marked(
        &mut KernelTables { ctx },
        p,
        h,
        KernelClock,
        segments,
        marks,
    ) {
        signal(h, &u);
    }
}

/// Sends what an update did that user space must learn to the ring buffer.
///
/// The event is written in place in the ring (reserve, fill, submit) rather than built on the
/// stack and copied by `bpf_ringbuf_output`: a `FlowEvent` is ~150 bytes, and the flow update
/// that calls this leaves little room in the 512-byte stack (with a full table's eviction
/// inlined into it, the copy no longer fit).
#[inline(always)]
fn signal(h: &mut Health, u: &Updated) {
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
