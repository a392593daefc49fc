//! Following a packet past what [`crate::parse::parse_ethernet`] walks: deeper L2 headers, and
//! tunnels, whose outer and inner connections are both accounted.
//!
//! # Inner and outer connections
//!
//! As Zeek does, a tunnelled packet counts in two connections: the *carrier* (the outer
//! connection: the UDP flow of VXLAN, Geneve, Teredo, GTP-U or AYIYA; the GRE or IP-in-IP flow
//! between the tunnel endpoints, keyed by protocol) and the *inner* connection it carries.
//! Each is an ordinary flow of the one flow table, updated by the ordinary
//! [`crate::table::update`]; the carrier's value is marked with the kind it carries
//! ([`crate::FlowValue::carries`], so the scorer leaves it alone) and the inner one with the
//! kind it came through ([`crate::FlowValue::tunnel`]). Nested tunnels (Teredo in GTP-U) repeat
//! this per level, up to [`MAX_TUNNEL_DEPTH`] tunnels deep (Zeek's `Tunnel::max_depth`).
//!
//! A UDP port or IP protocol only makes a packet a candidate ([`crate::parse::Parsed::next`]);
//! its tunnel header must check out (VXLAN's I flag, GTP-U's version and message type,
//! Teredo's inner IPv6 length, ...) before the datagram counts as a carrier, so that traffic
//! merely sent from such a port is scored as what it is.
//!
//! # One level at a time
//!
//! [`follow`] handles one [`Pending`] packet: it accounts it (as a carrier when its payload is
//! a tunnel) and parses what it carries; when that needs another level it returns the next
//! [`Pending`]. The kernel tail-calls its continuation program for each level (each one a fresh
//! verifier budget: see `sensor-ebpf`); replay loops. The per-packet path of plain traffic never
//! gets here.
//!
//! # Counting
//!
//! Every *level* gets exactly one outcome in the health counters (`accounted`, `non_ip`,
//! `truncated`, `parse_errors`, `unsupported_l4`, `unattributed_fragments`, `table_full`,
//! `too_deep`): the frame itself (counted in `packets`) and every tunnel payload found
//! (counted in `tunnel_payloads`). So the outcomes add up to `packets + tunnel_payloads`, and
//! `accounted` to the packets of all flows together.

use crate::{
    Health,
    flow::ipproto,
    parse::{
        HeaderView, PacketData, ParseError, Parsed, ethertype, forget_offset, link, next,
        parse_from, ppp_ip_version, tunnel,
    },
    table::{Clock, FlowTables, Updated, update},
};

/// The most tunnels followed into one packet (Zeek's default `Tunnel::max_depth`). A payload
/// nested deeper counts as `too_deep`; the packet that carries it is still accounted.
pub const MAX_TUNNEL_DEPTH: u8 = 2;

/// The most GTP-U extension headers followed.
pub const MAX_GTP_EXTENSIONS: usize = 4;

/// A packet whose parse is not finished: its [`Parsed::next`] says what follows. It is not
/// accounted yet; [`follow`] does that.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub p: Parsed,
    /// The tunnel kind `p` came through (0 for the frame itself).
    pub tunnel: u8,
    /// Tunnels `p` is nested in (0 for the frame itself).
    pub depth: u8,
    pub _pad: [u8; 2],
    /// Wire packets the frame stands for (see [`crate::table::update`]).
    pub segments: u32,
}

/// Counts a level that could not be parsed in its outcome counter.
#[inline(always)]
pub fn count_error(h: &mut Health, e: ParseError, n: u64) {
    match e {
        ParseError::NonIp => h.non_ip += n,
        ParseError::Truncated => h.truncated += n,
        ParseError::Malformed => h.parse_errors += n,
        ParseError::UnsupportedL4 => h.unsupported_l4 += n,
        ParseError::TooDeep => h.too_deep += n,
    }
}

/// A tunnel's payload: where it begins and how ([`link`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub link: u8,
    pub off: usize,
}

/// What a candidate carrier turned out to carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carried {
    /// The tunnel kind, 0 when the packet is not a tunnel after all.
    pub kind: u8,
    /// Its payload, or why it cannot be parsed (never read when `kind` is 0).
    pub payload: Result<Payload, ParseError>,
}

const NOT_A_TUNNEL: Carried = Carried {
    kind: tunnel::NONE,
    payload: Err(ParseError::NonIp),
};

/// Checks the tunnel header that `p` announces ([`Parsed::next`], a [`tunnel`] kind) and finds
/// its payload.
///
/// GRE and IP-in-IP are tunnels by their IP protocol: a header that does not check out is the
/// payload's outcome (malformed, truncated). A UDP datagram is a tunnel only when its header is
/// complete and valid; otherwise it is plain UDP ([`Carried::kind`] 0).
#[inline(always)]
pub fn carried<P: PacketData + ?Sized>(pkt: &P, p: &Parsed) -> Carried {
    let Ok(off) = forget_offset(pkt, usize::from(p.next_off)) else {
        return NOT_A_TUNNEL;
    };
    match p.next {
        tunnel::GRE => gre(pkt, off),
        tunnel::IP_IN_IP => Carried {
            kind: tunnel::IP_IN_IP,
            payload: Ok(Payload {
                link: if p.protocol == ipproto::IPIP {
                    link::IPV4
                } else {
                    link::IPV6
                },
                off,
            }),
        },
        tunnel::VXLAN => vxlan(pkt, off),
        tunnel::GENEVE => geneve(pkt, off),
        tunnel::TEREDO => teredo(pkt, off, p),
        tunnel::GTP => gtp(pkt, off),
        tunnel::AYIYA => ayiya(pkt, off),
        _ => NOT_A_TUNNEL,
    }
}

/// A tunnel of `kind` whose payload is `link` at `off`.
#[inline(always)]
fn ok(kind: u8, link: u8, off: usize) -> Carried {
    Carried {
        kind,
        payload: Ok(Payload { link, off }),
    }
}

/// A tunnel of `kind` whose payload cannot be parsed.
#[inline(always)]
fn bad(kind: u8, e: ParseError) -> Carried {
    Carried {
        kind,
        payload: Err(e),
    }
}

/// GRE (RFC 2784/2890; version 1 is PPTP's enhanced GRE, RFC 2637), with ERSPAN types I-III.
#[inline(always)]
fn gre<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Carried {
    let Some(g) = pkt.header::<4>(off) else {
        return bad(tunnel::GRE, ParseError::Truncated);
    };
    let flags = g.be16(0);
    let proto = g.be16(2);
    let version = flags & 0x7;
    // Routing (deprecated) and the reserved flag bits are not parsed, as in Zeek.
    if version > 1 || flags & 0x4078 != 0 {
        return bad(tunnel::GRE, ParseError::Malformed);
    }
    let bit = |b: u16| usize::from((flags >> b) & 1) * 4;
    // Checksum, key, sequence number and (version 1) acknowledgement, 4 bytes each.
    let len = 4 + bit(15) + bit(13) + bit(12) + bit(7);
    let payload = off + len;
    if version == 1 {
        // PPTP: PPP (address, control, protocol) in GRE.
        if proto != ethertype::PPP {
            return bad(tunnel::GRE, ParseError::Malformed);
        }
        let Some(ppp) = pkt.header::<4>(payload) else {
            return bad(tunnel::GRE, ParseError::Truncated);
        };
        return match ppp_ip_version(ppp.be16(2)) {
            Ok(4) => ok(tunnel::GRE, link::IPV4, payload + 4),
            Ok(_) => ok(tunnel::GRE, link::IPV6, payload + 4),
            Err(e) => bad(tunnel::GRE, e),
        };
    }
    match proto {
        ethertype::IPV4 => ok(tunnel::GRE, link::IPV4, payload),
        ethertype::IPV6 => ok(tunnel::GRE, link::IPV6, payload),
        ethertype::TEB => ok(tunnel::GRE, link::ETHERNET, payload),
        // Type II has a sequence number and an 8-byte ERSPAN header; type I neither.
        ethertype::ERSPAN => ok(tunnel::ERSPAN, link::ETHERNET, payload + bit(12) * 2),
        ethertype::ERSPAN_III => {
            let Some(e) = pkt.header::<12>(payload) else {
                return bad(tunnel::ERSPAN, ParseError::Truncated);
            };
            // The O flag: an 8-byte platform-specific subheader follows.
            let sub = usize::from(e.u8(11) & 1) * 8;
            ok(tunnel::ERSPAN, link::ETHERNET, payload + 12 + sub)
        }
        _ => bad(tunnel::GRE, ParseError::NonIp),
    }
}

/// VXLAN (RFC 7348): 8 bytes, the I flag set, then an Ethernet frame.
#[inline(always)]
fn vxlan<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Carried {
    match pkt.header::<8>(off) {
        Some(v) if v.u8(0) & 0x08 != 0 => ok(tunnel::VXLAN, link::ETHERNET, off + 8),
        _ => NOT_A_TUNNEL,
    }
}

/// Geneve (RFC 8926): version 0, options, then what the protocol type says.
#[inline(always)]
fn geneve<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Carried {
    let Some(g) = pkt.header::<8>(off) else {
        return NOT_A_TUNNEL;
    };
    if g.u8(0) >> 6 != 0 {
        return NOT_A_TUNNEL;
    }
    let payload = off + 8 + usize::from(g.u8(0) & 0x3f) * 4;
    match g.be16(2) {
        ethertype::TEB => ok(tunnel::GENEVE, link::ETHERNET, payload),
        ethertype::IPV4 => ok(tunnel::GENEVE, link::IPV4, payload),
        ethertype::IPV6 => ok(tunnel::GENEVE, link::IPV6, payload),
        _ => bad(tunnel::GENEVE, ParseError::NonIp),
    }
}

/// Teredo (RFC 4380): an optional authentication indication, an optional origin indication,
/// then one IPv6 packet filling the datagram. Away from port 3544 (a client talking to a peer)
/// one of the IPv6 addresses must also be a Teredo address (2001::/32) or link-local, as
/// Teredo's bubbles and router solicitations are.
#[inline(always)]
fn teredo<P: PacketData + ?Sized>(pkt: &P, off: usize, p: &Parsed) -> Carried {
    // The datagram's end, from the IP lengths.
    let end = usize::from(p.next_off) + p.payload_len as usize;
    let mut off = off;
    // Authentication: indicator 0x0001, id and value lengths, id, value, nonce, confirmation.
    if let Some(a) = pkt.header::<4>(off)
        && a.be16(0) == 1
    {
        off += 4 + usize::from(a.u8(2)) + usize::from(a.u8(3)) + 8 + 1;
    }
    let Ok(off) = forget_offset(pkt, off) else {
        return NOT_A_TUNNEL;
    };
    // Origin indication: indicator 0x0000, port and address (8 bytes).
    let off = match pkt.header::<2>(off) {
        Some(o) if o.be16(0) == 0 => off + 8,
        _ => off,
    };
    let Some(ip6) = pkt.header::<40>(off) else {
        return NOT_A_TUNNEL;
    };
    if ip6.u8(0) >> 4 != 6 || off + 40 + usize::from(ip6.be16(4)) != end {
        return NOT_A_TUNNEL;
    }
    let on_port = p.sport == tunnel::port::TEREDO || p.dport == tunnel::port::TEREDO;
    let teredo_or_local = |i: usize| {
        let w = u32::from_be(ip6.ne32(i));
        w == 0x2001_0000 || w >> 16 == 0xfe80
    };
    if !on_port && !teredo_or_local(8) && !teredo_or_local(24) {
        return NOT_A_TUNNEL;
    }
    ok(tunnel::TEREDO, link::IPV6, off)
}

/// GTP-U (GTPv1, 3GPP TS 29.281): version 1, protocol type GTP, a G-PDU (message type 255),
/// the optional fields and extension headers, then an IP packet.
#[inline(always)]
fn gtp<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Carried {
    let Some(g) = pkt.header::<8>(off) else {
        return NOT_A_TUNNEL;
    };
    let flags = g.u8(0);
    if flags >> 5 != 1 || flags & 0x10 == 0 || g.u8(1) != 0xff {
        return NOT_A_TUNNEL;
    }
    let mut payload = off + 8;
    if flags & 0x07 != 0 {
        // Sequence number, N-PDU number, next extension header type.
        let Some(o) = pkt.header::<4>(payload) else {
            return bad(tunnel::GTP, ParseError::Truncated);
        };
        payload += 4;
        let mut next = o.u8(3);
        let mut i = 0;
        while next != 0 {
            if i == MAX_GTP_EXTENSIONS {
                return bad(tunnel::GTP, ParseError::TooDeep);
            }
            // Length in 4-byte units (the length byte and the next type included).
            let Some(e) = pkt.header::<1>(payload) else {
                return bad(tunnel::GTP, ParseError::Truncated);
            };
            let len = usize::from(e.u8(0)) * 4;
            if len == 0 {
                return bad(tunnel::GTP, ParseError::Malformed);
            }
            // Its last byte is the next type. (Through `forget`: the compiler would otherwise
            // fold the `- 1` into the packet pointer, which the verifier refuses.)
            let last = match forget_offset(pkt, payload + len - 1) {
                Ok(off) => off,
                Err(e) => return bad(tunnel::GTP, e),
            };
            let Some(n) = pkt.header::<1>(last) else {
                return bad(tunnel::GTP, ParseError::Truncated);
            };
            next = n.u8(0);
            payload = last + 1;
            i += 1;
        }
    }
    ok(tunnel::GTP, link::IP, payload)
}

/// AYIYA ("anything in anything"): identity and signature of the lengths its header gives,
/// then, for a forwarded packet (opcode 1), IPv6 or IPv4.
#[inline(always)]
fn ayiya<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Carried {
    let Some(a) = pkt.header::<8>(off) else {
        return NOT_A_TUNNEL;
    };
    let link = match a.u8(3) {
        ipproto::IPV6 => link::IPV6,
        ipproto::IPIP => link::IPV4,
        _ => return NOT_A_TUNNEL,
    };
    if a.u8(2) & 0x0f != 1 || a.u8(0) >> 4 > 8 {
        return NOT_A_TUNNEL;
    }
    let identity = 1usize << (a.u8(0) >> 4);
    let signature = usize::from(a.u8(1) >> 4) * 4;
    ok(tunnel::AYIYA, link, off + 8 + identity + signature)
}

/// How a flow is marked by [`update_marked`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// The tunnel kind the packet came through (0: leave the flow's mark alone).
    pub tunnel: u8,
    /// The tunnel kind the packet carries (0: leave the flow's mark alone).
    pub carries: u8,
}

/// The flow update of a packet that [`follow`] accounts: [`crate::table::update`], then the
/// flow's tunnel marks ([`crate::FlowValue::tunnel`], [`crate::FlowValue::carries`]). The
/// caller signals the update's events after it, so that the event's snapshot has the marks.
#[inline(always)]
pub fn update_marked<T: FlowTables, C: Clock>(
    t: &mut T,
    p: &Parsed,
    h: &mut Health,
    clock: C,
    segments: u32,
    marks: Marks,
) -> Option<Updated> {
    let u = update(t, p, h, clock, segments)?;
    // SAFETY: `u.value` is the live value `update` just accounted into (see
    // `FlowTables::flow_ptr`); one-byte writes of kinds, which a concurrent reader sees whole.
    unsafe {
        if marks.tunnel != 0 {
            (*u.value).tunnel = marks.tunnel;
        }
        if marks.carries != 0 {
            (*u.value).carries = marks.carries;
        }
    }
    Some(u)
}

/// What [`examine`] found in one level of a packet, for [`settle`]: which packets to account
/// with which marks, and what to count. Parsing and accounting are apart so that the kernel
/// can run them in separate stack frames (see `sensor-ebpf`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Level {
    /// The next packet of the level: the payload of a tunnel, or the packet itself when its L2
    /// headers went on. Meaningful when `inner_error` is [`NO_ERROR`].
    pub inner: Parsed,
    /// The marks of the pending packet itself, accounted first when `account_outer` is 1 (0
    /// when the level continued its L2 headers: the packet has no IP header yet).
    pub outer_marks: Marks,
    pub account_outer: u8,
    /// 1 when the level found a tunnel payload (`Health::tunnel_payloads`).
    pub payload: u8,
    /// What became of `inner`: [`NO_ERROR`] (parsed), [`NO_INNER`] (nothing follows: not a
    /// tunnel), or a [`ParseError`] as [`error_code`] numbers it.
    pub inner_error: u8,
    /// The tunnel `inner` came through, and how deep it is nested.
    pub inner_tunnel: u8,
    pub inner_depth: u8,
}

/// [`Level::inner_error`]: `inner` was parsed.
pub const NO_ERROR: u8 = 0;
/// [`Level::inner_error`]: nothing follows the pending packet.
pub const NO_INNER: u8 = 0xff;

/// A [`ParseError`] as a number (1-based) for [`Level::inner_error`].
#[inline(always)]
pub fn error_code(e: ParseError) -> u8 {
    match e {
        ParseError::NonIp => 1,
        ParseError::Truncated => 2,
        ParseError::Malformed => 3,
        ParseError::UnsupportedL4 => 4,
        ParseError::TooDeep => 5,
    }
}

/// The [`ParseError`] of an [`error_code`].
#[inline(always)]
fn error_of(code: u8) -> ParseError {
    match code {
        1 => ParseError::NonIp,
        2 => ParseError::Truncated,
        3 => ParseError::Malformed,
        4 => ParseError::UnsupportedL4,
        _ => ParseError::TooDeep,
    }
}

/// Parses one level of a packet ([`Pending`]) into `out`: what its payload is, if a tunnel,
/// and the next packet. Accounts and counts nothing: [`settle`] does, from `out`.
#[inline(always)]
pub fn examine<P: PacketData + ?Sized>(pkt: &P, pending: &Pending, out: &mut Level) {
    let p = &pending.p;
    out.payload = 0;
    if p.next == next::L2 {
        // The same level: its L2 headers go on.
        out.account_outer = 0;
        out.inner_tunnel = pending.tunnel;
        out.inner_depth = pending.depth;
        let r = parse_from(pkt, link::ETHERTYPE, usize::from(p.next_off), p.l2_group);
        set_inner(out, r);
        return;
    }
    let c = carried(pkt, p);
    out.account_outer = 1;
    out.outer_marks = Marks {
        tunnel: pending.tunnel,
        carries: c.kind,
    };
    if c.kind == tunnel::NONE {
        out.inner_error = NO_INNER;
        return;
    }
    out.payload = 1;
    out.inner_tunnel = c.kind;
    out.inner_depth = pending.depth + 1;
    if pending.depth >= MAX_TUNNEL_DEPTH {
        out.inner_error = error_code(ParseError::TooDeep);
        return;
    }
    let r = c
        .payload
        .and_then(|inner| parse_from(pkt, inner.link, inner.off, 0));
    set_inner(out, r);
}

#[inline(always)]
fn set_inner(out: &mut Level, r: Result<Parsed, ParseError>) {
    match r {
        Ok(p) => {
            out.inner = p;
            out.inner_error = NO_ERROR;
        }
        Err(e) => out.inner_error = error_code(e),
    }
}

/// Accounts and counts what [`examine`] found in `level`: the pending packet (as a carrier when
/// its payload is a tunnel), then the next packet, or why it cannot be. Returns true when the
/// next packet needs one more level (`level.inner` with `level.inner_tunnel` and
/// `level.inner_depth`).
///
/// `account` accounts a packet with its [`Marks`] ([`update_marked`], then the events: the
/// kernel sends them to the ring buffer, replay to the lifecycle). The kernel keeps both packets
/// in maps, whose contents the verifier does not track: it walks the update once for all the
/// paths through the parser.
#[inline(always)]
pub fn settle<F>(h: &mut Health, pending: &Pending, level: &Level, mut account: F) -> bool
where
    F: FnMut(&mut Health, &Parsed, Marks),
{
    let n = u64::from(pending.segments);
    if level.account_outer != 0 {
        account(h, &pending.p, level.outer_marks);
    }
    h.tunnel_payloads += n * u64::from(level.payload);
    match level.inner_error {
        NO_INNER => false,
        NO_ERROR if level.inner.next != next::NONE => true,
        NO_ERROR => {
            let marks = Marks {
                tunnel: level.inner_tunnel,
                carries: 0,
            };
            account(h, &level.inner, marks);
            false
        }
        e => {
            count_error(h, error_of(e), n);
            false
        }
    }
}

/// One level of a packet ([`Pending`]): [`examine`], then [`settle`]. The next level, if the
/// packet needs one more (a nested tunnel, an inner frame's deeper L2 headers).
#[inline(always)]
pub fn follow<P, F>(pkt: &P, h: &mut Health, pending: &Pending, account: F) -> Option<Pending>
where
    P: PacketData + ?Sized,
    F: FnMut(&mut Health, &Parsed, Marks),
{
    let mut level = Level::default();
    examine(pkt, pending, &mut level);
    settle(h, pending, &level, account).then_some(Pending {
        p: level.inner,
        tunnel: level.inner_tunnel,
        depth: level.inner_depth,
        _pad: [0; 2],
        segments: pending.segments,
    })
}

#[cfg(test)]
mod tests {
    //! Every encapsulation through the parser and [`follow`], as replay drives them, and every
    //! frame cut at every byte.
    extern crate std;

    use std::{vec, vec::Vec};

    use super::*;
    use crate::{
        flow::ipproto,
        parse::{parse_ethernet, tcp_flags},
    };

    // Frames, byte by byte. Addresses from 198.18.0.0/15 and 2001:2::/48.
    const A: [u8; 4] = [198, 18, 1, 1];
    const B: [u8; 4] = [198, 18, 1, 2];
    const C: [u8; 4] = [198, 18, 2, 1];
    const D: [u8; 4] = [198, 18, 2, 2];

    fn v6(last: u8) -> [u8; 16] {
        [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last]
    }

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend(ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut h = vec![0x45, 0];
        h.extend(total.to_be_bytes());
        h.extend([0, 1, 0, 0, 64, protocol, 0, 0]);
        h.extend(src);
        h.extend(dst);
        h.extend_from_slice(payload);
        h
    }

    fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend((payload.len() as u16).to_be_bytes());
        h.extend([next, 64]);
        h.extend(src);
        h.extend(dst);
        h.extend_from_slice(payload);
        h
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = sport.to_be_bytes().to_vec();
        u.extend(dport.to_be_bytes());
        u.extend(((8 + payload.len()) as u16).to_be_bytes());
        u.extend([0, 0]);
        u.extend_from_slice(payload);
        u
    }

    fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = sport.to_be_bytes().to_vec();
        t.extend(dport.to_be_bytes());
        t.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }

    fn echo(kind: u8, id: u16) -> Vec<u8> {
        let mut c = vec![kind, 0, 0, 0];
        c.extend(id.to_be_bytes());
        c.extend([0, 1, 9, 9, 9, 9]);
        c
    }

    /// The inner packet most tests carry: TCP from C:40000 to D:80 with 10 bytes.
    fn inner4() -> Vec<u8> {
        ipv4(
            C,
            D,
            ipproto::TCP,
            &tcp(40000, 80, tcp_flags::SYN, &[7; 10]),
        )
    }

    fn inner6() -> Vec<u8> {
        ipv6(v6(3), v6(4), ipproto::UDP, &udp(5000, 53, &[7; 12]))
    }

    fn gre(flags: u16, proto: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut g = flags.to_be_bytes().to_vec();
        g.extend(proto.to_be_bytes());
        g.extend_from_slice(options);
        g.extend_from_slice(payload);
        g
    }

    fn vxlan(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        v.extend_from_slice(payload);
        v
    }

    fn geneve(options: &[u8], proto: u16, payload: &[u8]) -> Vec<u8> {
        let mut g = vec![(options.len() / 4) as u8, 0];
        g.extend(proto.to_be_bytes());
        g.extend([0, 0, 42, 0]);
        g.extend_from_slice(options);
        g.extend_from_slice(payload);
        g
    }

    fn gtp(optional: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
        let mut g = vec![if optional.is_some() { 0x34 } else { 0x30 }, 0xff];
        let rest = optional.map(|o| o.len()).unwrap_or(0) + payload.len();
        g.extend((rest as u16).to_be_bytes());
        g.extend([0, 0, 0, 1]);
        if let Some(o) = optional {
            g.extend_from_slice(o);
        }
        g.extend_from_slice(payload);
        g
    }

    /// What [`follow`] and the fast path accounted, in order, and the health counters.
    struct Seen {
        accounted: Vec<(Parsed, Marks)>,
        h: Health,
    }

    /// Drives a frame as replay does (and the kernel, level by level).
    fn run(frame: &[u8]) -> Seen {
        let mut h = Health {
            packets: 1,
            ..Health::default()
        };
        let mut accounted = Vec::new();
        match parse_ethernet(frame) {
            Err(e) => count_error(&mut h, e, 1),
            Ok(p) if p.next == next::NONE => {
                h.accounted += 1;
                accounted.push((p, Marks::default()));
            }
            Ok(p) => {
                let mut pending = Pending {
                    p,
                    segments: 1,
                    ..Pending::default()
                };
                let mut levels = 0;
                loop {
                    levels += 1;
                    assert!(levels < 33, "levels do not end");
                    let next = follow(frame, &mut h, &pending, |h, p, marks| {
                        h.accounted += 1;
                        accounted.push((*p, marks));
                    });
                    match next {
                        Some(n) => pending = n,
                        None => break,
                    }
                }
            }
        }
        assert_eq!(h.outcomes(), h.packets + h.tunnel_payloads, "{h:?}");
        Seen { accounted, h }
    }

    fn addr(a: [u8; 4]) -> [u32; 4] {
        [u32::from_ne_bytes(a), 0, 0, 0]
    }

    /// Asserts a carrier (marked with `kind`) then the TCP inner packet of [`inner4`].
    fn assert_carries_inner4(s: &Seen, kind: u8) {
        assert_eq!(s.accounted.len(), 2, "{:?}", s.h);
        let (outer, om) = s.accounted[0];
        assert_eq!(om.carries, kind);
        assert_eq!(om.tunnel, 0);
        assert_ne!(outer.next, next::NONE);
        let (inner, im) = s.accounted[1];
        assert_eq!(
            im,
            Marks {
                tunnel: kind,
                carries: 0
            }
        );
        assert_eq!((inner.src, inner.dst), (addr(C), addr(D)));
        assert_eq!(
            (inner.sport, inner.dport, inner.protocol),
            (40000, 80, ipproto::TCP)
        );
        assert_eq!(inner.payload_len, 10);
        assert_eq!(inner.tcp_flags, tcp_flags::SYN);
        assert_eq!(s.h.tunnel_payloads, 1);
    }

    #[test]
    fn vlan_tags_of_every_kind_and_depth() {
        let ip = ipv4(A, B, ipproto::UDP, &udp(1, 2, &[0; 4]));
        // Two tags: the per-packet path alone.
        let mut two = eth(0x88a8, &[0, 5, 0x81, 0x00, 0, 6, 0x08, 0x00]);
        two.extend(&ip);
        let s = run(&two);
        assert_eq!((s.accounted.len(), s.h.tunnel_payloads), (1, 0));
        assert_eq!(parse_ethernet(&two[..]).unwrap().next, next::NONE);
        // Three and four tags (and the old 0x9100 TPID): the continuation.
        for tpids in [
            &[0x88a8u16, 0x8100, 0x8100][..],
            &[0x9100, 0x9100, 0x8100, 0x8100],
        ] {
            let mut f = eth(tpids[0], &[0, 5]);
            for t in &tpids[1..] {
                f.extend(t.to_be_bytes());
                f.extend([0, 6]);
            }
            f.extend([0x08, 0x00]);
            f.extend(&ip);
            let s = run(&f);
            assert_eq!(s.accounted.len(), 1, "{tpids:?}: {:?}", s.h);
            assert_eq!(s.accounted[0].0.sport, 1);
            assert_eq!(s.accounted[0].1, Marks::default());
        }
        // More tags than the parser follows.
        let mut f = eth(0x8100, &[0, 5]);
        for _ in 0..crate::parse::MAX_L2_HEADERS + 2 {
            f.extend([0x81, 0x00, 0, 6]);
        }
        f.extend([0x08, 0x00]);
        f.extend(&ip);
        let s = run(&f);
        assert_eq!((s.h.too_deep, s.h.accounted), (1, 0), "{:?}", s.h);
    }

    #[test]
    fn mpls_stacks_pppoe_and_fabricpath() {
        let ip4 = inner4();
        let ip6 = inner6();
        let labels = |n: usize, payload: &[u8]| {
            let mut l = Vec::new();
            for i in 0..n {
                l.extend([0, 0x10, if i + 1 == n { 0x01 } else { 0x00 }, 64]);
            }
            l.extend_from_slice(payload);
            l
        };
        for (n, payload, v) in [(1, &ip4, 4), (3, &ip6, 6), (8, &ip4, 4)] {
            let s = run(&eth(0x8847, &labels(n, payload)));
            assert_eq!(s.accounted.len(), 1, "{n} labels: {:?}", s.h);
            assert_eq!(s.accounted[0].0.ip_version, v);
        }
        // MPLS inside a VLAN tag; a stack without bottom; a payload that is not IP.
        let mut f = eth(0x8100, &[0, 9, 0x88, 0x47]);
        f.extend(labels(2, &ip4));
        assert_eq!(run(&f).accounted.len(), 1);
        assert_eq!(run(&eth(0x8847, &labels(9, &ip4))).h.too_deep, 1);
        assert_eq!(run(&eth(0x8847, &labels(1, &[0x00; 40]))).h.non_ip, 1);
        // PPPoE session with IPv4 and IPv6; PPP LCP is not IP.
        let pppoe = |proto: u16, payload: &[u8]| {
            let mut p = vec![0x11, 0, 0x12, 0x34];
            p.extend(((payload.len() + 2) as u16).to_be_bytes());
            p.extend(proto.to_be_bytes());
            p.extend_from_slice(payload);
            p
        };
        let s = run(&eth(0x8864, &pppoe(0x0021, &ip4)));
        assert_eq!((s.accounted.len(), s.accounted[0].0.dport), (1, 80));
        assert_eq!(
            run(&eth(0x8864, &pppoe(0x0057, &ip6))).accounted[0].0.dport,
            53
        );
        assert_eq!(run(&eth(0x8864, &pppoe(0xc021, &[1, 1, 0, 4]))).h.non_ip, 1);
        // PPPoE over QinQ.
        let mut f = eth(0x88a8, &[0, 1, 0x81, 0x00, 0, 2, 0x88, 0x64]);
        f.extend(pppoe(0x0021, &ip4));
        assert_eq!(run(&f).accounted.len(), 1);
        // FabricPath: a tag, then the frame's own Ethernet header (a group destination here).
        let mut fp = vec![0, 0x3f];
        fp.extend([0x01, 0, 0x5e, 0, 0, 1, 0x02, 0, 0, 0, 0, 3, 0x08, 0x00]);
        fp.extend(&ip4);
        let s = run(&eth(0x8903, &fp));
        assert_eq!(s.accounted.len(), 1, "{:?}", s.h);
        assert_eq!(s.accounted[0].0.l2_group, 1);
    }

    #[test]
    fn gre_with_options_ip_ethernet_and_pptp() {
        let ip4 = inner4();
        // Version 0: plain, with checksum, key and sequence number.
        for (flags, options) in [(0x0000u16, &[][..]), (0xb000, &[0u8; 12][..])] {
            let f = eth(
                0x0800,
                &ipv4(A, B, ipproto::GRE, &gre(flags, 0x0800, options, &ip4)),
            );
            let s = run(&f);
            assert_carries_inner4(&s, tunnel::GRE);
            let (outer, _) = s.accounted[0];
            assert_eq!(
                (outer.protocol, outer.sport, outer.dport),
                (ipproto::GRE, 0, 0)
            );
        }
        // IPv6 inside, and transparent Ethernet bridging.
        let s = run(&eth(
            0x0800,
            &ipv4(A, B, 47, &gre(0, 0x86dd, &[], &inner6())),
        ));
        assert_eq!(s.accounted[1].0.ip_version, 6);
        let s = run(&eth(
            0x0800,
            &ipv4(A, B, 47, &gre(0x2000, 0x6558, &[0; 4], &eth(0x0800, &ip4))),
        ));
        assert_carries_inner4(&s, tunnel::GRE);
        // PPTP: version 1, key (and an acknowledgement), PPP with IPv4.
        let ppp = [&[0xff, 0x03, 0x00, 0x21][..], &ip4].concat();
        let s = run(&eth(
            0x0800,
            &ipv4(A, B, 47, &gre(0x2081, 0x880b, &[0; 8], &ppp)),
        ));
        assert_carries_inner4(&s, tunnel::GRE);
        // Routing present, an unknown version, an unknown protocol: the payload's outcome.
        assert_eq!(
            run(&eth(
                0x0800,
                &ipv4(A, B, 47, &gre(0x4000, 0x0800, &[], &ip4))
            ))
            .h
            .parse_errors,
            1
        );
        assert_eq!(
            run(&eth(
                0x0800,
                &ipv4(A, B, 47, &gre(0x0002, 0x0800, &[], &ip4))
            ))
            .h
            .parse_errors,
            1
        );
        let s = run(&eth(0x0800, &ipv4(A, B, 47, &gre(0, 0x1234, &[], &ip4))));
        assert_eq!(
            (s.h.non_ip, s.accounted.len(), s.accounted[0].1.carries),
            (1, 1, tunnel::GRE)
        );
    }

    #[test]
    fn erspan_types_one_two_and_three() {
        let frame = eth(0x0800, &inner4());
        let type1 = gre(0x0000, 0x88be, &[], &frame);
        let type2 = gre(
            0x1000,
            0x88be,
            &[0, 0, 0, 1, 0x10, 0, 0, 0, 0, 0, 0, 0],
            &frame,
        );
        let mut h3 = vec![0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
        h3.extend([0; 8]); // platform-specific subheader (O flag)
        let type3 = gre(0x0000, 0x22eb, &[], &[&h3[..], &frame].concat());
        for g in [type1, type2, type3] {
            let s = run(&eth(0x0800, &ipv4(A, B, 47, &g)));
            assert_carries_inner4(&s, tunnel::ERSPAN);
        }
    }

    #[test]
    fn ip_in_ip_of_both_versions() {
        let s = run(&eth(0x0800, &ipv4(A, B, ipproto::IPIP, &inner4())));
        assert_carries_inner4(&s, tunnel::IP_IN_IP);
        let s = run(&eth(0x0800, &ipv4(A, B, ipproto::IPV6, &inner6())));
        assert_eq!(
            (s.accounted[1].0.dport, s.accounted[1].1.tunnel),
            (53, tunnel::IP_IN_IP)
        );
        let s = run(&eth(0x86dd, &ipv6(v6(1), v6(2), ipproto::IPIP, &inner4())));
        assert_carries_inner4(&s, tunnel::IP_IN_IP);
        let s = run(&eth(0x86dd, &ipv6(v6(1), v6(2), ipproto::IPV6, &inner6())));
        assert_eq!(s.accounted[1].0.ip_version, 6);
        // The inner header must be of the version the protocol says.
        assert_eq!(
            run(&eth(0x0800, &ipv4(A, B, ipproto::IPIP, &inner6())))
                .h
                .parse_errors,
            1
        );
    }

    #[test]
    fn vxlan_and_geneve() {
        let frame = eth(0x0800, &inner4());
        let s = run(&eth(
            0x0800,
            &ipv4(A, B, 17, &udp(51000, 4789, &vxlan(&frame))),
        ));
        assert_carries_inner4(&s, tunnel::VXLAN);
        let (outer, _) = s.accounted[0];
        assert_eq!((outer.sport, outer.dport), (51000, 4789));
        assert_eq!(outer.payload_len as usize, 8 + frame.len());
        // The reply direction (source port 4789) too; without the I flag it is plain UDP.
        let s = run(&eth(
            0x0800,
            &ipv4(B, A, 17, &udp(4789, 51000, &vxlan(&frame))),
        ));
        assert_carries_inner4(&s, tunnel::VXLAN);
        let mut bad = vxlan(&frame);
        bad[0] = 0;
        let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(51000, 4789, &bad))));
        assert_eq!(
            (
                s.accounted.len(),
                s.accounted[0].1.carries,
                s.h.tunnel_payloads
            ),
            (1, 0, 0)
        );
        // Geneve with 8 bytes of options, carrying Ethernet and IP.
        let g = geneve(&[0; 8], 0x6558, &frame);
        assert_carries_inner4(
            &run(&eth(0x0800, &ipv4(A, B, 17, &udp(1, 6081, &g)))),
            tunnel::GENEVE,
        );
        let g = geneve(&[], 0x0800, &inner4());
        assert_carries_inner4(
            &run(&eth(0x0800, &ipv4(A, B, 17, &udp(1, 6081, &g)))),
            tunnel::GENEVE,
        );
        let mut g = geneve(&[], 0x0800, &inner4());
        g[0] |= 0x40; // version 1
        assert_eq!(
            run(&eth(0x0800, &ipv4(A, B, 17, &udp(1, 6081, &g))))
                .h
                .tunnel_payloads,
            0
        );
    }

    #[test]
    fn teredo_with_indications_and_away_from_its_port() {
        let teredo_ip = |src: [u8; 16]| ipv6(src, v6(9), ipproto::ICMPV6, &echo(128, 77));
        let mut client = v6(1);
        client[..4].copy_from_slice(&[0x20, 0x01, 0, 0]);
        let plain = teredo_ip(client);
        let origin = [&[0, 0, 0x12, 0x34, 1, 2, 3, 4][..], &plain].concat();
        let auth = [&[0, 1, 2, 1, 0xaa, 0xbb, 0xcc][..], &[0; 9], &origin].concat();
        for payload in [&plain, &origin, &auth] {
            let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(3544, 40000, payload))));
            assert_eq!(s.accounted.len(), 2, "{:?}", s.h);
            assert_eq!(s.accounted[0].1.carries, tunnel::TEREDO);
            let (inner, m) = s.accounted[1];
            assert_eq!(
                (inner.icmp_type, inner.sport, m.tunnel),
                (128, 77, tunnel::TEREDO)
            );
        }
        // Client to peer on other ports: a Teredo address inside is needed.
        let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(40001, 40002, &plain))));
        assert_eq!(s.accounted[0].1.carries, tunnel::TEREDO);
        let other = teredo_ip(v6(5));
        let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(40001, 40002, &other))));
        assert_eq!((s.accounted.len(), s.h.tunnel_payloads), (1, 0));
        // A length that does not fill the datagram: not Teredo.
        let mut short = plain.clone();
        short[5] -= 1;
        let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(3544, 40000, &short))));
        assert_eq!(s.h.tunnel_payloads, 0);
    }

    #[test]
    fn gtp_u_with_extension_headers_and_nested_teredo() {
        let s = run(&eth(
            0x0800,
            &ipv4(A, B, 17, &udp(2152, 2152, &gtp(None, &inner4()))),
        ));
        assert_carries_inner4(&s, tunnel::GTP);
        // Sequence number and one extension header (PDU session container).
        let opt = [0, 1, 0, 0x85, 1, 0x10, 0x01, 0x00];
        let s = run(&eth(
            0x0800,
            &ipv4(A, B, 17, &udp(2152, 2152, &gtp(Some(&opt), &inner4()))),
        ));
        assert_carries_inner4(&s, tunnel::GTP);
        // Echo request (message type 1): not a G-PDU; DNS from port 2152 (Zeek's false GTP).
        let mut echo_req = gtp(None, &[]);
        echo_req[1] = 1;
        assert_eq!(
            run(&eth(0x0800, &ipv4(A, B, 17, &udp(2152, 2152, &echo_req))))
                .h
                .tunnel_payloads,
            0
        );
        let dns = [0x5a, 0x11, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(2152, 53, &dns))));
        assert_eq!((s.accounted.len(), s.h.tunnel_payloads), (1, 0));
        // Teredo in GTP: two tunnels deep, as deep as followed; a third is too deep.
        let mut client = v6(1);
        client[..4].copy_from_slice(&[0x20, 0x01, 0, 0]);
        let teredo = udp(
            3544,
            50000,
            &ipv6(client, v6(2), ipproto::ICMPV6, &echo(128, 5)),
        );
        let two = gtp(None, &ipv4(C, D, 17, &teredo));
        let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(2152, 2152, &two))));
        assert_eq!(s.accounted.len(), 3, "{:?}", s.h);
        assert_eq!(
            s.accounted[1].1,
            Marks {
                tunnel: tunnel::GTP,
                carries: tunnel::TEREDO
            }
        );
        assert_eq!(s.accounted[2].1.tunnel, tunnel::TEREDO);
        let three = gtp(None, &ipv4(C, D, 17, &udp(2152, 2152, &two)));
        let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(2152, 2152, &three))));
        assert_eq!(
            (s.accounted.len(), s.h.tunnel_payloads, s.h.too_deep),
            (3, 3, 1),
            "{:?}",
            s.h
        );
    }

    #[test]
    fn ayiya() {
        // Identity 16 bytes (2^4), signature 20 bytes (5 words), forward (opcode 1), IPv4.
        let mut a = vec![0x41, 0x52, 0x11, ipproto::IPIP, 0, 0, 0, 0];
        a.extend([0; 16 + 20]);
        a.extend(inner4());
        assert_carries_inner4(
            &run(&eth(0x0800, &ipv4(A, B, 17, &udp(5072, 5072, &a)))),
            tunnel::AYIYA,
        );
    }

    #[test]
    fn other_protocols_sctp_and_zero_total_length() {
        let s = run(&eth(0x0800, &ipv4(A, B, 89, &[0; 40])));
        let (p, m) = s.accounted[0];
        assert_eq!(
            (p.protocol, p.sport, p.dport, p.payload_len, m),
            (89, 0, 0, 40, Marks::default())
        );
        let mut sctp = 5000u16.to_be_bytes().to_vec();
        sctp.extend(38412u16.to_be_bytes());
        sctp.extend([0; 8 + 16]);
        let s = run(&eth(0x0800, &ipv4(A, B, ipproto::SCTP, &sctp)));
        let (p, _) = s.accounted[0];
        assert_eq!((p.sport, p.dport, p.payload_len), (5000, 38412, 16));
        // IPv6 with no next header: nothing to account (Teredo bubbles).
        assert_eq!(
            run(&eth(0x86dd, &ipv6(v6(1), v6(2), 59, &[])))
                .h
                .unsupported_l4,
            1
        );
        // Total length 0 (a TSO segment as captured): the frame's bytes count.
        let mut f = eth(0x0800, &inner4());
        f[16] = 0;
        f[17] = 0;
        let s = run(&f);
        assert_eq!(s.accounted[0].0.payload_len, 10);
    }

    /// Every frame of the tests above, cut at every byte: no panic, and each level's outcome is
    /// counted (the outcomes add up, which `run` checks), truncated where a header is cut.
    #[test]
    fn every_encapsulation_cut_at_every_byte() {
        let frame4 = eth(0x0800, &inner4());
        let mut client = v6(1);
        client[..4].copy_from_slice(&[0x20, 0x01, 0, 0]);
        let teredo = ipv6(client, v6(9), ipproto::ICMPV6, &echo(128, 77));
        let frames: Vec<(&str, Vec<u8>)> = vec![
            ("qinq3", {
                let mut f = eth(
                    0x88a8,
                    &[0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3, 0x08, 0x00],
                );
                f.extend(inner4());
                f
            }),
            (
                "mpls",
                eth(
                    0x8847,
                    &[&[0, 0x10, 0, 64, 0, 0x20, 1, 64][..], &inner4()].concat(),
                ),
            ),
            (
                "pppoe",
                eth(
                    0x8864,
                    &[&[0x11, 0, 0, 1, 0, 42, 0, 0x21][..], &inner4()].concat(),
                ),
            ),
            (
                "gre",
                eth(
                    0x0800,
                    &ipv4(A, B, 47, &gre(0x3000, 0x0800, &[0; 8], &inner4())),
                ),
            ),
            (
                "erspan",
                eth(
                    0x0800,
                    &ipv4(A, B, 47, &gre(0x1000, 0x88be, &[0; 12], &frame4)),
                ),
            ),
            ("ipip", eth(0x86dd, &ipv6(v6(1), v6(2), 4, &inner4()))),
            (
                "vxlan",
                eth(0x0800, &ipv4(A, B, 17, &udp(1, 4789, &vxlan(&frame4)))),
            ),
            (
                "geneve",
                eth(
                    0x0800,
                    &ipv4(A, B, 17, &udp(1, 6081, &geneve(&[0; 4], 0x6558, &frame4))),
                ),
            ),
            (
                "teredo",
                eth(
                    0x0800,
                    &ipv4(
                        A,
                        B,
                        17,
                        &udp(3544, 1, &[&[0, 0, 1, 2, 3, 4, 5, 6][..], &teredo].concat()),
                    ),
                ),
            ),
            (
                "gtp",
                eth(
                    0x0800,
                    &ipv4(
                        A,
                        B,
                        17,
                        &udp(2152, 2152, &gtp(Some(&[0, 1, 0, 0]), &inner4())),
                    ),
                ),
            ),
        ];
        for (name, f) in frames {
            let whole = run(&f);
            assert_eq!(
                whole.h.accounted,
                whole.h.packets + whole.h.tunnel_payloads,
                "{name}: {:?}",
                whole.h
            );
            for cut in 0..f.len() {
                let s = run(&f[..cut]);
                let h = s.h;
                // A frame cut inside its headers loses the level whose header is cut, as
                // truncated; a UDP tunnel whose header is cut is plain UDP; a frame cut in
                // the inner payload only is whole (lengths come from the IP headers).
                let lost = h.packets + h.tunnel_payloads - h.accounted;
                assert!(lost <= 1, "{name} cut at {cut}: {h:?}");
                if lost == 1 {
                    assert_eq!(h.truncated, 1, "{name} cut at {cut}: {h:?}");
                }
            }
        }
    }
}
