//! The per-packet flow update: what one packet adds to its connection's [`FlowValue`].
//!
//! Shared by the kernel programs and user space (replay, tests). The update happens in place on
//! the map value returned by a lookup.
//!
//! Concurrency: the per-side fields (packet and byte counters, history byte) are written only by
//! packets of that side, and one side of a flow is processed by one CPU at a time in the normal
//! case: a NIC's receive-side scaling steers one direction of a flow to one queue, whose NAPI
//! poll (and XDP program) runs on one CPU at a time, and veth has one queue per direction. The
//! exception is the flow's creation, when two CPUs may meet on a new flow (the insert race of
//! `crate::slots`, and egress packets of a new connection sent from several CPUs): so a side's
//! first [`SHARED_PACKETS`] packets are counted with atomic adds, the rest with plain ones. Why:
//! an atomic add is a locked instruction, about 20 ns on this project's Intel machines, and the
//! two per packet were 40% of the program's time for a steady flow. The rare counters (URG,
//! wrong fragments) are plain saturating adds too. A TCP side's sequence span is moved by its
//! own packets and by its peer's acknowledgments (so by both directions): it only ever moves to
//! a sequence number a packet carried, measured from the side's first sequence number once that
//! is set (never before: 0 means unset), so a lost race leaves it behind until the next packet.

use crate::{
    atomic::atomic_add,
    flow::{FlowKey, FlowValue, SIDE_HI, SIDE_LO, Side, event, history, ipproto, value_flags},
    parse::{Parsed, tcp_flags},
};

/// The other side.
#[inline(always)]
pub fn peer(side: Side) -> Side {
    (side & 1) ^ 1
}

/// The value of a new flow whose first seen packet is `p`, sent by `side` of `key`.
///
/// The originator is the packet's sender, except for a SYN-ACK: then the connection was opened by
/// its receiver before the sensor started, and the record is oriented as Zeek does ("flipped").
/// The returned value has no packets yet; [`account`] adds `p` after the insert.
#[inline(always)]
pub fn new_value(p: &Parsed, key: &FlowKey, side: Side, now_ns: u64) -> FlowValue {
    let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
    let flipped = p.protocol == ipproto::TCP && p.tcp_flags & syn_ack == syn_ack;
    let mut flags = 0;
    if flipped {
        flags |= value_flags::FLIPPED;
    }
    if key.addr_lo == key.addr_hi && key.port_lo == key.port_hi {
        flags |= value_flags::LAND;
    }
    flags |= (p.l2_group & 1) * value_flags::GROUP;
    FlowValue {
        first_seen_ns: now_ns,
        last_seen_ns: now_ns,
        orig_side: (if flipped { peer(side) } else { side }) as u8,
        flags,
        icmp_type: p.icmp_type,
        icmp_code: p.icmp_code,
        ..FlowValue::default()
    }
}

/// How many packets of a side are counted with atomic adds (see the module docs): the first
/// ones, which may race with the flow's creation on another CPU.
pub const SHARED_PACKETS: u64 = 2;

/// TCP history bits one packet sets for its sender.
///
/// The flags' part is one load from [`FLAG_HISTORY`] (a table in the object's read-only data,
/// 256 bytes) and the payload's part is branch-free: this runs on every TCP packet, and the
/// verifier explores every branch of every path through the program. The table replaced about
/// twenty instructions per packet.
#[inline(always)]
pub fn history_bits(tcp: u8, payload_len: u32) -> u8 {
    let data = ((payload_len | payload_len.wrapping_neg()) >> 31) as u8;
    FLAG_HISTORY[tcp as usize] | (data * history::DATA)
}

/// [`flag_history`] of every flags byte.
pub static FLAG_HISTORY: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = flag_history(i as u8);
        i += 1;
    }
    t
};

/// The history bits a TCP packet's flags set (all but [`history::DATA`], which its payload
/// decides).
pub const fn flag_history(tcp: u8) -> u8 {
    const fn bit(tcp: u8, flag: u8) -> u8 {
        (tcp & flag) >> flag.trailing_zeros()
    }
    let (syn, ack) = (bit(tcp, tcp_flags::SYN), bit(tcp, tcp_flags::ACK));
    let (fin, rst) = (bit(tcp, tcp_flags::FIN), bit(tcp, tcp_flags::RST));
    let non_syn = syn ^ 1;
    ((syn & (ack ^ 1)) * history::SYN)
        | ((syn & ack) * history::SYN_ACK)
        | (non_syn * history::NON_SYN)
        | (fin * history::FIN)
        | (rst * history::RST)
        | ((non_syn & ack & (rst ^ 1)) * history::ACK)
}

/// Adds packet `p`, sent by `side`, to the flow value at `v`. `segments` is how many wire
/// packets it stands for (more than 1 only for a GSO super-packet seen on the TC egress path).
///
/// Returns the [`event`] bits user space must learn from this packet: [`event::ANSWER`] when it
/// made the outcome of the originator's SYN known (see [`answered`]), [`event::RST`] for a side's
/// first RST, [`event::FIN_BOTH`] for the first FIN of the second side, [`event::CLOSED`] for
/// the first packet after both FINs; 0 for most packets. A
/// retransmitted FIN or a repeated RST sets no new bit and signals nothing; user space ignores
/// the rare duplicate that two CPUs racing on the same flow could produce. The converse race,
/// two CPUs taking the two sides' last FINs at once so that neither sees the other's, signals
/// no `FIN_BOTH`: the next packet (the final ACK) still signals `CLOSED`, from which user space
/// finalises the connection.
///
/// # Safety
/// `v` must point to a live, properly aligned `FlowValue` (a map value or a local) for the
/// duration of the call. Concurrent callers on the same value are allowed (the kernel's CPUs;
/// the module docs say when their plain adds are exact).
#[inline(always)]
pub unsafe fn account(
    v: *mut FlowValue,
    p: &Parsed,
    side: Side,
    now_ns: u64,
    segments: u32,
) -> u32 {
    // SAFETY: the caller's guarantees are `account_bits`'s.
    unsafe {
        account_bits(
            v,
            p,
            side,
            history_bits(p.tcp_flags, p.payload_len),
            now_ns,
            segments,
        )
    }
}

/// [`account`] with the packet's [`history_bits`] already computed (`bits`, ignored for
/// protocols other than TCP): the flow update computes them once for [`adds_history_bits`]
/// and for this.
///
/// # Safety
/// As for [`account`].
#[inline(always)]
pub unsafe fn account_bits(
    v: *mut FlowValue,
    p: &Parsed,
    side: Side,
    bits: u8,
    now_ns: u64,
    segments: u32,
) -> u32 {
    // Masked so that indexing provably stays in bounds (no panic path for the verifier), even
    // for a side read back from a map.
    let side = side & 1;
    // SAFETY: the caller guarantees `v` is valid and aligned; the fields below are naturally
    // aligned u64/u32 inside a #[repr(C)] struct, as the atomic types require.
    unsafe {
        let (packets, bytes) = (
            &raw mut (*v).packets[side],
            &raw mut (*v).payload_bytes[side],
        );
        let seen = *packets;
        if seen < SHARED_PACKETS {
            atomic_add(packets, segments as u64);
            atomic_add(bytes, p.payload_len as u64);
        } else {
            *packets = seen + segments as u64;
            *bytes += p.payload_len as u64;
        }
        if now_ns > (*v).last_seen_ns {
            (*v).last_seen_ns = now_ns;
        }
        if p.fragment.wrong {
            (*v).wrong_fragments = (*v).wrong_fragments.saturating_add(1);
        }
        if p.protocol != ipproto::TCP {
            return 0;
        }
        if p.tcp_flags & tcp_flags::URG != 0 {
            (*v).urgent_packets = (*v).urgent_packets.saturating_add(1);
        }
        // The side's sequence space (`FlowValue::seq_top`): from its first packet's sequence
        // number (after a SYN's octet) to the highest its packets reached (a FIN's octet
        // included) or its peer acknowledged.
        // Without branches but the first packet's store: BPF has no conditional set, so each
        // comparison would be a branch, and each branch doubles the paths the verifier walks
        // in the continuation programs, which inline several flow updates.
        let syn = u32::from(p.tcp_flags & tcp_flags::SYN) >> 1;
        let fin = u32::from(p.tcp_flags & tcp_flags::FIN);
        let start = p.tcp_seq.wrapping_add(syn);
        if seen == 0 {
            // Never 0, which says "not set yet" to a CPU that races this first packet (its
            // count is already up): such a CPU leaves the span alone rather than measure it
            // from 0. (A start of 0 is taken as 1: one byte short, once in 2^32.) A side's first
            // packet is never a later fragment (those follow their first fragment).
            (*v).seq_base[side] = start | (((i64::from(start) - 1) >> 63) as u32 & 1);
        }
        // All ones unless the packet has no TCP flags: a later IP fragment (no TCP header, its
        // sequence fields zero), or a flagless probe (a null scan), which carry no sequence
        // numbers to count. (The flags, not the fragment kind, so that the verifier's paths do
        // not split on the kind: with it, the continuation programs took 900k instructions.)
        let header = nonzero_mask(u64::from(p.tcp_flags));
        let end = start.wrapping_add(p.payload_len).wrapping_add(fin);
        advance_seq(
            &raw mut (*v).seq_top[side],
            (*v).seq_base[side],
            end,
            header,
        );
        let other_side = peer(side);
        let ack = 0u64.wrapping_sub(u64::from(p.tcp_flags & tcp_flags::ACK) >> 4);
        advance_seq(
            &raw mut (*v).seq_top[other_side],
            (*v).seq_base[other_side],
            p.tcp_ack,
            header & ack,
        );
        let old = (*v).history[side];
        let other = (*v).history[other_side];
        // 1 for the first packet after both FINs: both had sent one before it, and neither
        // side has sent a packet after them yet.
        let both_fins = (old & other & history::FIN) >> history::FIN.trailing_zeros();
        let after_before =
            ((old | other) & history::AFTER_FINS) >> history::AFTER_FINS.trailing_zeros();
        let after = both_fins & (after_before ^ 1);
        let new = old | bits | (after * history::AFTER_FINS);
        if new == old {
            return 0;
        }
        (*v).history[side] = new;
        // Branch-free (the verifier walks every branch of every packet's path): `m` is all ones
        // when this packet's sender is the originator.
        let m = 0u8.wrapping_sub(u8::from(side == usize::from((*v).orig_side & 1)));
        let (orig_old, resp_old) = ((old & m) | (other & !m), (other & m) | (old & !m));
        let (orig_new, resp_new) = ((new & m) | (other & !m), (other & m) | (new & !m));
        let answer = answered_bit(orig_new, resp_new) & !answered_bit(orig_old, resp_old);
        // The originator's first ACK: its time. Stored only by that packet (a store on every
        // history change, from either side, could write a stale 0 back over another CPU's).
        if orig_new & !orig_old & history::ACK != 0 {
            (*v).set_orig_ack_ns(now_ns);
        }
        let mut events = (answer * event::ANSWER) | (u32::from(after) * event::CLOSED);
        let added = new & !old;
        if added & history::RST != 0 {
            events |= event::RST;
        } else if added & history::FIN != 0 && other & history::FIN != 0 {
            events |= event::FIN_BOTH;
        }
        events
    }
}

/// All ones when `x` is not 0, else 0, without a branch.
#[inline(always)]
fn nonzero_mask(x: u64) -> u64 {
    // `x | -x` has the top bit set exactly when `x` is not 0.
    ((x | x.wrapping_neg()) as i64 >> 63) as u64
}

/// Moves a side's sequence span (`top`, counted from `base`) up to `seq` if `seq` lies ahead
/// of it, the base is set (not 0) and `valid` is all ones (the packet carries the number). A
/// `seq` behind it (a retransmission, an old duplicate, a reordered segment) or more than 2 GiB
/// ahead changes nothing. Without a branch (see the caller): the span is always stored.
///
/// # Safety
/// `top` must be valid and aligned for the duration of the call.
#[inline(always)]
unsafe fn advance_seq(top: *mut u32, base: u32, seq: u32, valid: u64) {
    // SAFETY: forwarded from the caller. A plain read-modify-write: both sides' packets move a
    // side's span (its data, its peer's acknowledgments), and a lost race only leaves it behind
    // until the next packet of either moves it again.
    unsafe {
        let cur = *top;
        let span = seq.wrapping_sub(base);
        // All ones when the distance is positive as a 32-bit signed number.
        let ahead = i64::from(span.wrapping_sub(cur) as i32);
        let ahead = !((ahead - 1) >> 63) as u64;
        let m = (ahead & nonzero_mask(u64::from(base)) & valid) as u32;
        *top = (span & m) | (cur & !m);
    }
}

/// The data bytes a TCP side sent as its sequence numbers count them, as Zeek sizes it (its
/// `orig_bytes`/`resp_bytes`): the side's span ([`FlowValue::seq_top`]) without the octet of
/// its FIN. Retransmitted data counts once; data the capture missed but the peer acknowledged
/// counts. 0 for a side that sent nothing, and for other protocols.
///
/// The span is 32 bits: beyond 4 GiB it wraps. The wraps are taken as those that put it
/// nearest the payload the side's packets carried (64 bits, [`FlowValue::payload_bytes`]), so
/// a long transfer the capture saw is counted right; only one whose retransmitted and missed
/// data differ by more than 2 GiB is not.
#[inline(always)]
pub fn stream_bytes(protocol: u8, v: &FlowValue, side: Side) -> u64 {
    let side = side & 1;
    if protocol != ipproto::TCP || v.packets[side] == 0 {
        return 0;
    }
    if v.seq_base[side] == 0 {
        // Its packets were all later fragments: no TCP header seen.
        return v.payload_bytes[side];
    }
    let span = u64::from(v.seq_top[side]);
    let wraps = (v.payload_bytes[side].saturating_sub(span) + (1 << 31)) >> 32;
    let fin = v.history[side] & history::FIN != 0;
    (span + (wraps << 32)).saturating_sub(u64::from(fin))
}

/// [`answered`] as 0 or 1, computed without branches.
#[inline(always)]
fn answered_bit(orig: u8, resp: u8) -> u32 {
    let syn = u32::from(orig & history::SYN) >> history::SYN.trailing_zeros();
    let ack = u32::from(orig & history::ACK) >> history::ACK.trailing_zeros();
    // 1 when `resp` is not 0: its negation has the top bit set.
    let resp_any = (u32::from(resp).wrapping_neg() >> 31) & 1;
    syn & (resp_any | ack)
}

/// Whether the outcome of a TCP originator's SYN is known, from the originator's (`orig`) and
/// the responder's (`resp`) history bits: the responder sent anything (a SYN-ACK, a RST), or the
/// originator acknowledged a SYN-ACK that the sensor did not see ([`history::ACK`]). Always
/// false for a connection whose originator opened without a SYN (picked up mid-stream): there
/// is no handshake to wait for.
#[inline(always)]
pub fn answered(orig: u8, resp: u8) -> bool {
    answered_bit(orig, resp) != 0
}

/// Whether TCP packet `p` from `side`, whose [`history_bits`] are `bits`, would set a history
/// bit that `v` does not have yet (the packets whose time must be exact, see
/// `crate::table::Clock`). Always false for other protocols.
#[inline(always)]
pub fn adds_history_bits(v: &FlowValue, p: &Parsed, side: Side, bits: u8) -> bool {
    let old = v.history[side & 1];
    p.protocol == ipproto::TCP && old | bits != old
}

/// Whether a SYN on a flow whose connection already ended starts a new connection on the same
/// 5-tuple (port reuse), so the value must be reset before accounting.
#[inline(always)]
pub fn starts_new_connection(v: &FlowValue, p: &Parsed) -> bool {
    let ended = (v.history[SIDE_LO] | v.history[SIDE_HI]) & (history::FIN | history::RST) != 0;
    ended
        && p.protocol == ipproto::TCP
        && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;
    use crate::flow::FlowKey;

    fn tcp(src_last: u32, sport: u16, dst_last: u32, dport: u16, flags: u8, len: u32) -> Parsed {
        Parsed {
            src: [u32::to_be(0xc612_0000 | src_last), 0, 0, 0],
            dst: [u32::to_be(0xc612_0000 | dst_last), 0, 0, 0],
            sport,
            dport,
            protocol: ipproto::TCP,
            ip_version: 4,
            tcp_flags: flags,
            payload_len: len,
            ..Parsed::default()
        }
    }

    fn key_side(p: &Parsed) -> (FlowKey, Side) {
        FlowKey::canonical(&p.src, p.sport, &p.dst, p.dport, p.protocol, p.ip_version)
    }

    #[test]
    fn a_full_exchange_signals_once_on_the_second_fin() {
        use tcp_flags::*;
        let c = |f, l| tcp(2, 40000, 1, 80, f, l);
        let s = |f, l| tcp(1, 80, 2, 40000, f, l);
        let pkts = [
            c(SYN, 0),
            s(SYN | ACK, 0),
            c(ACK, 0),
            c(ACK | PSH, 100),
            s(ACK | PSH, 300),
            c(FIN | ACK, 0),
            c(FIN | ACK, 0), // retransmitted FIN: no new bit
            s(FIN | ACK, 0),
            c(ACK, 0),
        ];
        const U: u64 = crate::flow::ORIG_ACK_UNIT_NS;
        let (key, side0) = key_side(&pkts[0]);
        let mut v = new_value(&pkts[0], &key, side0, 10 * U);
        let mut events = [0u32; 9];
        for (i, p) in pkts.iter().enumerate() {
            let (k, side) = key_side(p);
            assert_eq!(k, key);
            // SAFETY: `v` is a live local.
            events[i] = unsafe { account(&mut v, p, side, (10 + i as u64) * U, 1) };
        }
        assert_eq!(
            events,
            [
                0,
                event::ANSWER,
                0,
                0,
                0,
                0,
                0,
                event::FIN_BOTH,
                event::CLOSED
            ]
        );
        let orig = v.orig_side as usize;
        assert_eq!(orig, side0);
        assert_eq!(v.packets[orig], 6);
        assert_eq!(v.packets[peer(orig)], 3);
        assert_eq!(v.payload_bytes[orig], 100);
        assert_eq!(v.payload_bytes[peer(orig)], 300);
        assert_eq!((v.first_seen_ns, v.last_seen_ns), (10 * U, 18 * U));
        // The originator's first ACK (the third packet), kept through its later ACKs.
        assert_eq!(v.orig_ack_ns(), 12 * U);
    }

    #[test]
    fn the_originators_first_ack_is_timed_only_by_the_originator() {
        use tcp_flags::*;
        let c = |f, l| tcp(2, 40000, 1, 80, f, l);
        let s = |f, l| tcp(1, 80, 2, 40000, f, l);
        const U: u64 = crate::flow::ORIG_ACK_UNIT_NS;
        let time_of = |pkts: &[Parsed]| {
            let (key, side0) = key_side(&pkts[0]);
            let mut v = new_value(&pkts[0], &key, side0, 100 * U);
            for (i, p) in pkts.iter().enumerate() {
                let (_, side) = key_side(p);
                // SAFETY: `v` is a live local.
                unsafe { account(&mut v, p, side, (100 + i as u64) * U, 1) };
            }
            v.orig_ack_ns() / U
        };
        // The responder's ACKs and a RST do not count; the originator's data ACK does.
        assert_eq!(time_of(&[c(SYN, 0), s(SYN | ACK, 0), s(ACK, 0)]), 0);
        assert_eq!(time_of(&[c(SYN, 0), s(SYN | ACK, 0), c(RST | ACK, 0)]), 0);
        assert_eq!(
            time_of(&[c(SYN, 0), s(SYN | ACK, 0), c(ACK | PSH, 20), c(ACK, 0)]),
            102
        );
        // Picked up at its SYN-ACK (flipped): the client is the originator.
        assert_eq!(time_of(&[s(SYN | ACK, 0), c(ACK, 0)]), 101);
        // UDP has none.
        let u = |src, sport, dst, dport| Parsed {
            protocol: ipproto::UDP,
            ..tcp(src, sport, dst, dport, 0, 10)
        };
        assert_eq!(time_of(&[u(2, 40000, 1, 53), u(1, 53, 2, 40000)]), 0);
    }

    /// A side's bytes as Zeek counts them: sequence space, so a retransmission counts once and
    /// data the capture missed but the peer acknowledged counts; the SYN's and FIN's octets do
    /// not. The payload counters still count every packet's payload.
    #[test]
    fn stream_bytes_follow_the_sequence_numbers() {
        use tcp_flags::*;
        let seg = |from_client: bool, f: u8, seq: u32, ack: u32, len: u32| {
            let mut p = if from_client {
                tcp(2, 40000, 1, 80, f, len)
            } else {
                tcp(1, 80, 2, 40000, f, len)
            };
            (p.tcp_seq, p.tcp_ack) = (seq, ack);
            p
        };
        // Sequence numbers near the wrap, so that the span crosses it.
        let (c0, s0) = (u32::MAX - 50, 7_000);
        let pkts = [
            seg(true, SYN, c0, 0, 0),
            seg(false, SYN | ACK, s0, c0.wrapping_add(1), 0),
            seg(true, ACK, c0.wrapping_add(1), s0 + 1, 0),
            seg(true, ACK | PSH, c0.wrapping_add(1), s0 + 1, 100),
            // Retransmitted.
            seg(true, ACK | PSH, c0.wrapping_add(1), s0 + 1, 100),
            // The server's first 300 bytes are not in the capture; its next 200 are.
            seg(false, ACK | PSH, s0 + 301, c0.wrapping_add(101), 200),
            seg(true, FIN | ACK, c0.wrapping_add(101), s0 + 501, 0),
            seg(false, FIN | ACK, s0 + 501, c0.wrapping_add(102), 0),
            seg(true, ACK, c0.wrapping_add(102), s0 + 502, 0),
        ];
        let (key, side0) = key_side(&pkts[0]);
        let mut v = new_value(&pkts[0], &key, side0, 1);
        for p in &pkts {
            let (_, side) = key_side(p);
            // SAFETY: `v` is a live local.
            unsafe { account(&mut v, p, side, 1, 1) };
        }
        let (o, r) = (usize::from(v.orig_side), peer(usize::from(v.orig_side)));
        assert_eq!(
            (
                stream_bytes(ipproto::TCP, &v, o),
                stream_bytes(ipproto::TCP, &v, r)
            ),
            (100, 500)
        );
        assert_eq!((v.payload_bytes[o], v.payload_bytes[r]), (200, 200));
        // Mid-stream (no SYN): from the first packet's sequence number.
        let (key, side0) = key_side(&pkts[3]);
        let mut v = new_value(&pkts[3], &key, side0, 1);
        for p in &pkts[3..5] {
            // SAFETY: `v` is a live local.
            unsafe { account(&mut v, p, side0, 1, 1) };
        }
        assert_eq!(stream_bytes(ipproto::TCP, &v, side0), 100);
        assert_eq!(stream_bytes(ipproto::TCP, &v, peer(side0)), 0);
        // A later IP fragment of the same side (no TCP header: its sequence fields are zero)
        // counts its payload and leaves the span alone.
        let mut later = pkts[3];
        (later.tcp_seq, later.tcp_ack, later.tcp_flags) = (0, 0, 0);
        later.fragment.kind = crate::parse::FragmentKind::Later;
        later.payload_len = 500;
        // SAFETY: `v` is a live local.
        unsafe { account(&mut v, &later, side0, 1, 1) };
        assert_eq!(stream_bytes(ipproto::TCP, &v, side0), 100);
        assert_eq!(v.payload_bytes[side0], 700);
        // A peer whose first packet another CPU is still counting (its count up, its base not
        // yet set): an ACK leaves its span alone rather than measure it from 0.
        let mut racing = v;
        racing.packets[peer(side0)] = 1;
        let mut ack = pkts[3];
        (ack.payload_len, ack.tcp_ack) = (0, 123_456);
        // SAFETY: `racing` is a live local.
        unsafe { account(&mut racing, &ack, side0, 1, 1) };
        assert_eq!(racing.seq_top[peer(side0)], 0);
        // A side that sent 10 GiB and some: its 32-bit span wrapped twice, which the payload
        // its packets carried tells.
        v.payload_bytes[side0] = (10 << 30) + 1_000;
        v.seq_top[side0] = (2 << 30) + 900;
        assert_eq!(stream_bytes(ipproto::TCP, &v, side0), (10 << 30) + 900);
    }

    /// The events each packet of `pkts` signals (the first one opens the flow).
    fn events_of(pkts: &[Parsed]) -> Vec<u32> {
        let (key, side0) = key_side(&pkts[0]);
        let mut v = new_value(&pkts[0], &key, side0, 1);
        pkts.iter()
            .map(|p| {
                let (_, side) = key_side(p);
                // SAFETY: `v` is a live local.
                unsafe { account(&mut v, p, side, 2, 1) }
            })
            .collect()
    }

    #[test]
    fn the_handshake_outcome_is_signalled_once_however_it_shows() {
        use tcp_flags::*;
        let c = |f, l| tcp(2, 40000, 1, 80, f, l);
        let s = |f, l| tcp(1, 80, 2, 40000, f, l);
        // Refused: the responder's RST answers and finishes at once.
        assert_eq!(
            events_of(&[c(SYN, 0), s(RST | ACK, 0)]),
            [0, event::ANSWER | event::RST]
        );
        // Only the client's side was captured: its ACK proves the SYN-ACK it got.
        assert_eq!(
            events_of(&[c(SYN, 0), c(ACK, 0), c(ACK | PSH, 20), s(ACK, 0)]),
            [0, event::ANSWER, 0, 0]
        );
        // A SYN followed by the originator's own RST (no ACK) proves nothing.
        assert_eq!(events_of(&[c(SYN, 0), c(RST, 0)]), [0, event::RST]);
        // Unanswered retransmissions: nothing.
        assert_eq!(events_of(&[c(SYN, 0), c(SYN, 0), c(SYN, 0)]), [0, 0, 0]);
        // Picked up mid-stream: no handshake to wait for, so no answer either.
        assert_eq!(events_of(&[c(ACK | PSH, 10), s(ACK, 0)]), [0, 0]);
        // Seen from the SYN-ACK on (flipped): the originator's SYN was not seen.
        assert_eq!(events_of(&[s(SYN | ACK, 0), c(ACK, 0)]), [0, 0]);
    }

    #[test]
    fn the_first_packet_after_both_fins_signals_closed_once() {
        use tcp_flags::*;
        let c = |f| tcp(2, 40000, 1, 80, f, 0);
        let s = |f| tcp(1, 80, 2, 40000, f, 0);
        let close = [
            c(SYN),
            s(SYN | ACK),
            c(ACK),
            c(FIN | ACK),
            s(FIN | ACK),
            c(ACK),       // the final ACK
            s(ACK),       // nothing new
            c(FIN | ACK), // a retransmitted FIN
        ];
        assert_eq!(
            events_of(&close),
            [0, event::ANSWER, 0, 0, event::FIN_BOTH, event::CLOSED, 0, 0]
        );
        // The FINs crossed: the first packet after both, from either side, is the one.
        let crossed = [
            c(SYN),
            s(SYN | ACK),
            c(FIN | ACK),
            s(FIN | ACK),
            s(ACK),
            c(ACK),
        ];
        assert_eq!(
            events_of(&crossed),
            [0, event::ANSWER, 0, event::FIN_BOTH, event::CLOSED, 0]
        );
    }

    #[test]
    fn syn_ack_first_flips_the_originator() {
        let p = tcp(1, 80, 2, 40000, tcp_flags::SYN | tcp_flags::ACK, 0);
        let (key, side) = key_side(&p);
        let v = new_value(&p, &key, side, 1);
        assert_eq!(v.orig_side as usize, peer(side));
        assert_ne!(v.flags & value_flags::FLIPPED, 0);
    }

    #[test]
    fn land_is_detected() {
        let p = tcp(1, 80, 1, 80, tcp_flags::SYN, 0);
        let (key, side) = key_side(&p);
        assert_ne!(new_value(&p, &key, side, 1).flags & value_flags::LAND, 0);
    }
}
