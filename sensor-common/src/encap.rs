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
mod tests;
