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
//! everything that cannot be accounted is counted in the per-CPU health counters. Packets a
//! gateway forwards are accounted where they enter; where they leave they are only recognised,
//! so that an address translation is learned and its answers accounted under the original
//! connection (`sensor_common::nat`). The programs never drop or modify traffic.
#![no_std]
#![no_main]
// `asm!` on the BPF target (an empty compiler barrier, see `process`).
#![feature(asm_experimental_arch)]

mod clock;
mod evict;
mod packet;
mod signal;
mod table;

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_OK, xdp_action},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use sensor_common::{
    FlowValue, Health,
    atomic::{atomic_or_u64, compare_exchange_u64, load_u64},
    encap::{Level, Marks, Pending, count_error, examine, settle, update_marked},
    flow::{FragKey, FragValue, ParkedKey, event},
    nat::{
        FILTER_WORDS, SEEN_SLOTS, Seen, TRANSLATIONS, Tuple, filter_base, filter_bit,
        first_packet_kind, seen_index, untranslate, waiting,
    },
    parse::{FragmentKind, Parsed, next, parse_ethernet_into},
    slots::{BPF_F_MMAPABLE, DEFAULT_FLOW_CAPACITY, FlowSlot, slot_count},
    table::{Clock, update},
    watched,
};

use clock::{ClockCache, KernelClock};
use packet::{FrameLen, KernelPacket};
use signal::signal;
use table::KernelTables;

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

/// Seed of `slots::key_hash`, as its `slots::seed_words`. Set by the loader (random).
#[unsafe(no_mangle)]
static FLOW_HASH_SEED: [u64; 5] = [0; 5];

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

/// Connections whose entry a port-reusing SYN restarted while `EVENTS` was full (see
/// `signal::replaced`); user space takes them out at its table scan. Sized for a burst of
/// such restarts between two scans; a restart that finds it full too is a counted loss.
#[map(name = "PARKED")]
static PARKED: HashMap<ParkedKey, FlowValue> = HashMap::with_max_entries(16_384, 0);

/// Where `signal::replaced` builds a `PARKED` key.
#[map(name = "PARK_KEY")]
static PARK_KEY: PerCpuArray<ParkedKey> = PerCpuArray::with_max_entries(1, 0);

/// Interfaces (ifindex -> 1) whose ingress the XDP program watches. The TC egress program does
/// not account packets forwarded from one of them: XDP already accounted them on the way in,
/// and a gateway watching all its interfaces would otherwise count every forwarded packet
/// twice. It only looks at them, to learn address translations (`sensor_common::nat`).
#[map(name = "WATCHED")]
static WATCHED: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

/// `WATCHED`'s direct-mapped index, read first (`sensor_common::watched`): one inlined array
/// read for nearly every packet instead of a hash map lookup.
#[map(name = "WATCHED_INDEX")]
static WATCHED_INDEX: Array<u32> = Array::with_max_entries(watched::INDEX_SLOTS, 0);

/// Each CPU's recent connections' first packets as they entered, for recognising them where
/// they leave translated (`sensor_common::nat`; indexed by `nat::seen_index`).
#[map(name = "NAT_SEEN")]
static NAT_SEEN: PerCpuArray<Seen> = PerCpuArray::with_max_entries(SEEN_SLOTS, 0);

/// Answers' tuples as they will enter, to the original connection a translation gave them
/// (`sensor_common::nat`). An LRU map: the oldest translations make room.
#[map(name = "NAT_REPLIES")]
static NAT_REPLIES: LruHashMap<Tuple, Tuple> = LruHashMap::with_max_entries(TRANSLATIONS, 0);

/// 0 until a translation has been learned: until then entering packets skip the `NAT_REPLIES`
/// lookup (a host that translates nothing pays one array read). Then 1 or 2, the half of
/// `NAT_FILTER` they read (`nat::filter_base`), which user space switches when it rebuilds the
/// filter.
#[map(name = "NAT_ACTIVE")]
static NAT_ACTIVE: Array<u64> = Array::with_max_entries(1, 0);

/// A bitmap of the answers' destinations in `NAT_REPLIES` (`nat::filter_bit`): an entering
/// packet whose bit is clear is looked up no further. A plain array, so the verifier inlines
/// the lookup: no helper call, no hashing of the key. Two halves (`nat::filter_base`), mapped
/// into user space, which rebuilds the one not in use.
#[map(name = "NAT_FILTER")]
static NAT_FILTER: Array<u64> = Array::with_max_entries(2 * FILTER_WORDS, BPF_F_MMAPABLE);

/// Where the `NAT_REPLIES` key is built (not on the stack, which the flow update fills).
#[map(name = "NAT_KEY")]
static NAT_KEY: PerCpuArray<Tuple> = PerCpuArray::with_max_entries(1, 0);

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

/// What [`process`] does with a packet.
mod mode {
    /// Entering (XDP): accounted, a learned translation undone, a connection's first packet
    /// remembered.
    pub const INGRESS: u8 = 0;
    /// Leaving, sent by this host (TC egress): accounted.
    pub const LOCAL: u8 = 1;
    /// Leaving, forwarded from a watched interface: accounted where it entered, so only
    /// recognised here, to learn a translation.
    pub const FORWARDED: u8 = 2;
}

#[xdp]
pub fn sensor_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    process(
        &ctx,
        start,
        end,
        (end - start) as u64,
        1,
        &XDP_NEXT_PROG,
        mode::INGRESS,
    );
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
    let forwarded = ingress_ifindex != 0
        && match WATCHED_INDEX.get(watched::slot(ingress_ifindex)) {
            Some(held) => match watched::answer(*held, ingress_ifindex) {
                Some(w) => w,
                // SAFETY: the value is only tested for presence.
                None => unsafe { WATCHED.get(ingress_ifindex) }.is_some(),
            },
            None => false,
        };
    if forwarded && let Some(h) = HEALTH.get_ptr_mut(0) {
        // SAFETY: this CPU's own slot of a per-CPU array.
        unsafe { (*h).egress_already_seen += 1 };
    }
    let len = ctx.len();
    // A forwarded packet is only looked at (see `learn_translation`), and its headers are in
    // the linear part the receive path built; a pull could copy the head of every forwarded
    // packet whose skb is shared (a packet capture on the host clones them).
    if !forwarded && ((ctx.data_end() - ctx.data()) as u32) < len {
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
        if forwarded {
            mode::FORWARDED
        } else {
            mode::LOCAL
        },
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

/// Benchmark baseline for the TC egress program: the same per-CPU counter bump, as a
/// classifier.
#[classifier]
pub fn baseline_tc(_ctx: TcContext) -> i32 {
    if let Some(c) = BASELINE.get_ptr_mut(0) {
        // SAFETY: a per-CPU array slot: only this CPU writes it, and the pointer is valid.
        unsafe { *c += 1 };
    }
    TC_ACT_OK
}

#[inline(always)]
fn process<C: EbpfContext + FrameLen>(
    ctx: &C,
    start: usize,
    end: usize,
    frame_len: u64,
    segments: u32,
    next_prog: &ProgramArray,
    mode: u8,
) {
    let Some(h) = HEALTH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's own slot of a per-CPU array, valid for the whole program run.
    let h = unsafe { &mut *h };
    if mode != mode::FORWARDED {
        h.packets += segments as u64;
        h.bytes += frame_len;
    }
    // Every packet (and every tunnel payload, in the continuation) lands in exactly one of:
    // accounted, non_ip, truncated, parse_errors, unsupported_l4, unattributed_fragments,
    // table_full, too_deep. Tests check that invariant. (A forwarded packet leaving was counted
    // where it entered.)
    let pkt = KernelPacket { ctx, start, end };
    // The parse writes straight into a map value and the update reads it from there. The
    // verifier does not track what map memory holds: it walks the update once for every path
    // through the parser, instead of once per path (each of which knows other constants: the
    // protocol, the fragment kind, zero ports or address words, ...). And no `Parsed` is built
    // on the stack and copied (`parse_ethernet_into` says what that cost). The lookup of index
    // 0 cannot fail (the verifier knows).
    let Some(slot) = PARSED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run; the programs
    // of one CPU run one at a time, and nothing else holds a reference to it.
    let p = unsafe { &mut *slot };
    match parse_ethernet_into(&pkt, p) {
        Ok(()) => {
            // SAFETY: an empty `asm!`: it may read and write any memory for all the compiler
            // knows, which keeps the compiler from handing the values the parse stored on to
            // the update instead of the update's reads of the slot.
            unsafe { core::arch::asm!("") };
            if mode == mode::FORWARDED {
                if p.next == next::NONE {
                    learn_translation(p, h);
                }
            } else if p.next != next::NONE {
                hand_on(ctx, p, (0, 0), h, segments, next_prog);
            } else {
                let undone = mode == mode::INGRESS && undo_translation(p);
                match account_packet(ctx, p, h, segments) {
                    // An answer of a translated connection: counted, and never remembered as a
                    // first packet (its tuple is not the one it travelled with).
                    Some(_) if undone => h.nat_answers += segments as u64,
                    Some(true) if mode == mode::INGRESS => remember_first_packet(p),
                    Some(true) => forget_translation(p),
                    _ => {}
                }
            }
        }
        Err(e) => {
            if mode != mode::FORWARDED {
                count_error(h, e, segments as u64)
            }
        }
    }
}

/// The first word of the half of `NAT_FILTER` in use, once a translation has been learned
/// (`NAT_ACTIVE`).
#[inline(always)]
fn nat_filter_base() -> Option<u32> {
    filter_base(*NAT_ACTIVE.get(0)?)
}

/// Sets `mask` in word `index` of `NAT_FILTER`: an atomic OR, since other CPUs (and user
/// space) may set other bits of the word meanwhile.
#[inline(always)]
fn set_filter_bit(index: u32, mask: u64) {
    if let Some(w) = NAT_FILTER.get_ptr_mut(index) {
        // SAFETY: a slot of an array map, valid and 8-aligned for the program run; other CPUs
        // and user space change it only atomically.
        unsafe { atomic_or_u64(w, mask) };
    }
}

/// Builds `t` in this CPU's `NAT_KEY` slot, field by field (see `Parsed::clear` for why not
/// a whole-struct store), and returns it.
#[inline(always)]
fn nat_key(
    src: &[u32; 4],
    sport: u16,
    dst: &[u32; 4],
    dport: u16,
    p: &Parsed,
) -> Option<&'static Tuple> {
    let k = NAT_KEY.get_ptr_mut(0)?;
    // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run; the programs
    // of one CPU run one at a time.
    unsafe {
        (*k).src = *src;
        (*k).dst = *dst;
        (*k).sport = sport;
        (*k).dport = dport;
        (*k).protocol = p.protocol;
        (*k).ip_version = p.ip_version;
        (*k)._pad = [0; 2];
        Some(&*k)
    }
}

/// An entering packet with a translated connection's outside tuple: rewritten to the original
/// connection's, whose answer it is (`sensor_common::nat`); true when it was. Fragments are
/// left alone (a later fragment finds its flow through the first fragment's addresses).
#[inline(always)]
fn undo_translation(p: &mut Parsed) -> bool {
    let Some(base) = nat_filter_base() else {
        return false;
    };
    if p.fragment.kind != FragmentKind::None {
        return false;
    }
    let (word, mask) = filter_bit(&p.dst, p.dport, p.protocol);
    match NAT_FILTER.get(base + word) {
        Some(w) if *w & mask != 0 => {}
        _ => return false,
    }
    let Some(k) = nat_key(&p.src, p.sport, &p.dst, p.dport, p) else {
        return false;
    };
    // SAFETY: the value is read at once, before any other map call.
    match unsafe { NAT_REPLIES.get(k) } {
        Some(original) => {
            untranslate(p, original);
            true
        }
        None => false,
    }
}

/// A connection's first packet as it entered, in this CPU's `NAT_SEEN` slot for it (unless
/// the slot waits for a packet nothing tells from this one: then for neither).
#[inline(always)]
fn remember_first_packet(p: &Parsed) {
    if !first_packet_kind(p) {
        return;
    }
    let Some(e) = NAT_SEEN.get_ptr_mut(seen_index(p)) else {
        return;
    };
    // The packet's own time: the flow update that opened its connection just read the exact
    // clock, which the coarse reading returns from this CPU's cache within the same jiffy
    // (a helper call fewer per new connection; a jiffy's turn in between reads it anew).
    let now_ns = KernelClock.coarse();
    // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run; the programs
    // of one CPU run one at a time.
    let e = unsafe { &mut *e };
    if e.yields_to(p, now_ns) {
        e.fill(p, now_ns);
    } else {
        e.waiting = waiting::AMBIGUOUS;
    }
}

/// A forwarded packet leaving: if it is a connection's first packet, remembered where it
/// entered, and it leaves with other addresses or ports, its answers' tuple maps to the
/// original connection from now on.
#[inline(always)]
fn learn_translation(p: &Parsed, h: &mut Health) {
    if p.fragment.kind == FragmentKind::Later || !first_packet_kind(p) {
        return;
    }
    let Some(e) = NAT_SEEN.get_ptr_mut(seen_index(p)) else {
        return;
    };
    // SAFETY: this CPU's own slot of a per-CPU array, valid for the program run.
    let e = unsafe { &mut *e };
    // Most forwarded packets stop here, before the clock is read.
    if e.waiting == waiting::NO || !e.same_fingerprint(p) {
        return;
    }
    if !e.same_packet(p, KernelClock.exact()) {
        // Another packet with the fingerprint (or the entry expired): the entry's own may
        // still come.
        return;
    }
    e.waiting = waiting::NO;
    if !e.translated(p) {
        return;
    }
    // The answers' tuple: this packet's turned round.
    let Some(k) = nat_key(&p.dst, p.dport, &p.src, p.sport, p) else {
        return;
    };
    // Passed from the map value where it lies (a copy would take the stack's room).
    let original: &Tuple = &e.tuple;
    if NAT_REPLIES.insert(k, original, 0).is_ok() {
        h.nat_translations += 1;
        // The answers enter to this packet's source (`k`'s destination). In both halves,
        // after the insert: a rebuild under way keeps it either way (`nat::filter_base`).
        let (word, mask) = filter_bit(&k.dst, k.dport, k.protocol);
        set_filter_bit(word, mask);
        set_filter_bit(FILTER_WORDS + word, mask);
        if let Some(a) = NAT_ACTIVE.get_ptr_mut(0) {
            // SAFETY: the one slot of an array map, valid and 8-aligned; from 0 to the first
            // half only (user space may have switched halves since), by compare-and-swap.
            unsafe {
                if load_u64(a) == 0 {
                    let _ = compare_exchange_u64(a, 0, 1);
                }
            }
        }
    }
}

/// A connection this host opened itself: a translation that once gave its answers' tuple to
/// another connection no longer holds.
#[inline(always)]
fn forget_translation(p: &Parsed) {
    if nat_filter_base().is_none() {
        return;
    }
    if let Some(k) = nat_key(&p.dst, p.dport, &p.src, p.sport, p) {
        let _ = NAT_REPLIES.remove(k);
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

/// Accounts a parsed packet: whether it began a connection, `None` when it was not accounted
/// (a full table, an unattributed fragment).
#[inline(always)]
fn account_packet<C: EbpfContext>(
    ctx: &C,
    p: &Parsed,
    h: &mut Health,
    segments: u32,
) -> Option<bool> {
    let u = update(&mut KernelTables::new(ctx), p, h, KernelClock, segments)?;
    signal(h, &u);
    Some(u.events & event::OPEN != 0)
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
        &mut KernelTables::new(ctx),
        p,
        h,
        KernelClock,
        segments,
        marks,
    ) {
        signal(h, &u);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
