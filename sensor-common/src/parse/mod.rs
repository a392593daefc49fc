//! Packet parsing: Ethernet with VLAN tags (802.1Q, 802.1ad/QinQ, more than two), MPLS label
//! stacks, PPPoE sessions and Cisco FabricPath; IPv4 (options, fragments), IPv6 (extension
//! headers); TCP, UDP, ICMP, ICMPv6, SCTP, and every other IP protocol by number; and the
//! tunnels gateways carry (GRE with ERSPAN, IP-in-IP, VXLAN, Geneve, Teredo, GTP-U, AYIYA),
//! whose payloads [`crate::encap`] follows.
//!
//! The parser is generic over [`PacketData`] so the same code runs in the kernel (over the XDP/TC
//! packet pointers, where every read is bounds-checked against `data_end` for the verifier) and in
//! user space (over a byte slice, for replay and tests). Every loop is bounded and every offset
//! stays below 64 KiB, as the verifier requires.
//!
//! # Two depths
//!
//! [`parse_ethernet`] is the kernel's per-packet path: Ethernet, up to two VLAN tags, IP and the
//! transport header (and a datagram's first 4 bytes, `Parsed::head`), nothing more, so that
//! plain traffic costs what it always did. What lies
//! beyond it is handed on through [`Parsed::next`]: an L2 header it does not walk (a third tag,
//! MPLS, PPPoE, FabricPath: [`next::L2`]) or a tunnel's payload (a [`tunnel`] kind). The kernel
//! then tail-calls a second program that continues with [`parse_from`] and [`crate::encap`]
//! (replay runs the same functions in a loop). There every offset is first passed through
//! [`PacketData::forget`], so that the many paths through tags, labels and tunnel headers meet
//! in one verifier state before the IP parser instead of each walking it again. (And the kernel
//! hands every parse result to the flow update through a map, so that the verifier walks the
//! update once for all of them: see `sensor-ebpf`.)
mod data;
mod types;

pub use data::{Bytes, HeaderView, PacketData};
pub use types::{
    Fragment, FragmentKind, MAX_HEADER_OFFSET, MAX_IPV6_EXT_HEADERS, MAX_L2_HEADERS,
    MAX_MPLS_LABELS, ParseError, Parsed, ethertype, link, next, ppp, tcp_flags, tunnel,
};

use crate::flow::ipproto;

/// Parses a frame that starts with an Ethernet header: the per-packet path of the kernel
/// program (up to two VLAN tags; deeper L2 headers are handed on as [`next::L2`]).
#[inline(always)]
pub fn parse_ethernet<P: PacketData + ?Sized>(pkt: &P) -> Result<Parsed, ParseError> {
    let mut p = Parsed::default();
    parse_ethernet_into(pkt, &mut p)?;
    Ok(p)
}

/// [`parse_ethernet`] into `out`, which it overwrites whole when it succeeds (and leaves in an
/// unspecified state when it fails).
///
/// Why a destination rather than a return value: the kernel parses straight into the map value
/// the flow update reads (see `sensor-ebpf`). A returned `Parsed` is built in registers that
/// the BPF backend, with its ten registers, spills to the stack field by field, and then copied
/// to the map value: about a fifth of the per-packet path on the CPUs measured
/// (`docs/performance.md`).
#[inline(always)]
pub fn parse_ethernet_into<P: PacketData + ?Sized>(
    pkt: &P,
    out: &mut Parsed,
) -> Result<(), ParseError> {
    let eth = pkt.header::<14>(0).ok_or(ParseError::Truncated)?;
    let mut ether_type = eth.be16(12);
    let mut off = 14usize;
    // Up to two tags: 802.1ad outer (or 802.1Q), 802.1Q inner.
    let mut tags = 0;
    while tags < 2 {
        if ether_type != ethertype::VLAN && ether_type != ethertype::QINQ {
            break;
        }
        let tag = pkt.header::<4>(off).ok_or(ParseError::Truncated)?;
        ether_type = tag.be16(2);
        off += 4;
        tags += 1;
    }
    // The I/G bit of the destination MAC address: set for broadcast and multicast. Handed to
    // the IP parsers rather than set afterwards, which would add a merge of their results.
    let l2_group = eth.u8(0) & 1;
    match ether_type {
        ethertype::IPV4 => parse_ipv4_into(pkt, off, l2_group, out),
        ethertype::IPV6 => parse_ipv6_into(pkt, off, l2_group, out),
        ethertype::VLAN
        | ethertype::QINQ
        | ethertype::QINQ_9100
        | ethertype::MPLS
        | ethertype::MPLS_MULTICAST
        | ethertype::PPPOE_SESSION
        | ethertype::FABRICPATH => {
            out.clear();
            out.next = next::L2;
            out.next_off = (off - 2) as u16;
            out.l2_group = l2_group;
            Ok(())
        }
        _ => Err(ParseError::NonIp),
    }
}

/// Parses a frame, or a tunnel's payload, that begins at `off` with a header of kind
/// [`link`]: every L2 header the sensor knows, then IP. `l2_group` is the link-layer group bit
/// known so far (an Ethernet header read here sets its own).
///
/// The continuation of [`parse_ethernet`] ([`next::L2`]) and the parser of tunnel payloads
/// and of capture link types other than Ethernet. The IP header's offset goes through
/// [`PacketData::forget`], so this function has one IPv4 and one IPv6 parser in the verifier's
/// eyes however many L2 paths lead to them.
#[inline(always)]
pub fn parse_from<P: PacketData + ?Sized>(
    pkt: &P,
    kind: u8,
    off: usize,
    l2_group: u8,
) -> Result<Parsed, ParseError> {
    let off = forget_offset(pkt, off)?;
    let (version, ip_off, l2_group) = match kind {
        link::ETHERNET => {
            let eth = pkt.header::<14>(off).ok_or(ParseError::Truncated)?;
            walk_l2(pkt, off + 12, eth.u8(0) & 1)?
        }
        link::ETHERTYPE => walk_l2(pkt, off, l2_group)?,
        link::IPV4 => (4, off, l2_group),
        link::IPV6 => (6, off, l2_group),
        _ => (ip_version_at(pkt, off)?, off, l2_group),
    };
    let ip_off = forget_offset(pkt, ip_off)?;
    let mut p = Parsed::default();
    match version {
        4 => parse_ipv4_into(pkt, ip_off, l2_group, &mut p)?,
        _ => parse_ipv6_into(pkt, ip_off, l2_group, &mut p)?,
    }
    Ok(p)
}

/// `off` through [`PacketData::forget`], and bounded by [`MAX_HEADER_OFFSET`] (the bound the
/// verifier needs for an offset it no longer knows).
#[inline(always)]
pub fn forget_offset<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Result<usize, ParseError> {
    let off = pkt.forget(off);
    if off > MAX_HEADER_OFFSET {
        return Err(ParseError::TooDeep);
    }
    Ok(off)
}

/// The IP version (4 or 6) of the header at `off`, by its first nibble.
#[inline(always)]
fn ip_version_at<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Result<u8, ParseError> {
    match pkt.header::<1>(off).ok_or(ParseError::Truncated)?.u8(0) >> 4 {
        4 => Ok(4),
        6 => Ok(6),
        _ => Err(ParseError::NonIp),
    }
}

/// The IP version a PPP protocol number carries.
#[inline(always)]
pub fn ppp_ip_version(protocol: u16) -> Result<u8, ParseError> {
    match protocol {
        ppp::IPV4 => Ok(4),
        ppp::IPV6 => Ok(6),
        _ => Err(ParseError::NonIp),
    }
}

/// Walks the L2 headers from the ethertype field at `et_off` to IP: VLAN tags of every TPID,
/// PPPoE session headers, FabricPath tags and MPLS label stacks, at most [`MAX_L2_HEADERS`] of
/// them. Returns the IP version, the IP header's offset and the link-layer group bit (a
/// FabricPath frame's own destination decides it).
#[inline(always)]
fn walk_l2<P: PacketData + ?Sized>(
    pkt: &P,
    et_off: usize,
    l2_group: u8,
) -> Result<(u8, usize, u8), ParseError> {
    let mut et_off = et_off;
    let mut l2_group = l2_group;
    let mut i = 0;
    while i < MAX_L2_HEADERS {
        let et = pkt
            .header::<2>(et_off)
            .ok_or(ParseError::Truncated)?
            .be16(0);
        let off = et_off + 2;
        match et {
            ethertype::IPV4 => return Ok((4, off, l2_group)),
            ethertype::IPV6 => return Ok((6, off, l2_group)),
            ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_9100 => {
                // TCI, then the next ethertype.
                pkt.header::<4>(off).ok_or(ParseError::Truncated)?;
                et_off = off + 2;
            }
            ethertype::FABRICPATH => {
                // The FTAG/TTL word, then the frame's own Ethernet header.
                let inner = pkt.header::<16>(off).ok_or(ParseError::Truncated)?;
                l2_group = inner.u8(2) & 1;
                et_off = off + 2 + 12;
            }
            ethertype::PPPOE_SESSION => {
                // Version/type 0x11, code 0, session id, length; then the PPP protocol.
                let h = pkt.header::<8>(off).ok_or(ParseError::Truncated)?;
                if h.u8(0) != 0x11 || h.u8(1) != 0 {
                    return Err(ParseError::Malformed);
                }
                return Ok((ppp_ip_version(h.be16(6))?, off + 8, l2_group));
            }
            ethertype::MPLS | ethertype::MPLS_MULTICAST => {
                let ip = skip_mpls(pkt, off)?;
                return Ok((ip_version_at(pkt, ip)?, ip, l2_group));
            }
            _ => return Err(ParseError::NonIp),
        }
        i += 1;
    }
    Err(ParseError::TooDeep)
}

/// Skips the MPLS label stack at `off` (to its bottom-of-stack label); returns the payload's
/// offset. The payload's protocol is not encoded (RFC 3032): as Zeek does, it is taken to be IP
/// and its version read from the first nibble.
#[inline(always)]
fn skip_mpls<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Result<usize, ParseError> {
    let mut off = off;
    let mut i = 0;
    while i < MAX_MPLS_LABELS {
        let label = pkt.header::<4>(off).ok_or(ParseError::Truncated)?;
        off += 4;
        if label.u8(2) & 1 != 0 {
            return Ok(off);
        }
        i += 1;
    }
    Err(ParseError::TooDeep)
}

/// Parses an IPv4 packet at `off`.
#[inline(always)]
pub fn parse_ipv4<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Result<Parsed, ParseError> {
    let mut p = Parsed::default();
    parse_ipv4_into(pkt, off, 0, &mut p)?;
    Ok(p)
}

/// [`parse_ipv4`] of a frame sent to a link-layer group address or not ([`Parsed::l2_group`]),
/// into `out` (see [`parse_ethernet_into`]).
#[inline(always)]
fn parse_ipv4_into<P: PacketData + ?Sized>(
    pkt: &P,
    off: usize,
    l2_group: u8,
    out: &mut Parsed,
) -> Result<(), ParseError> {
    let h = pkt.header::<20>(off).ok_or(ParseError::Truncated)?;
    let vihl = h.u8(0);
    if vihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    let mut total_len = h.be16(2) as usize;
    if total_len == 0 {
        // A TSO/GSO segment as capture tools record it (the NIC fills the length in): the
        // frame's bytes from here, as Zeek takes them.
        total_len = pkt.frame_len().wrapping_sub(off) & 0xffff;
    }
    if total_len < ihl {
        return Err(ParseError::Malformed);
    }
    // Options must be present in the frame (they are part of the header).
    if ihl > 20 {
        pkt.header::<1>(off + ihl - 1)
            .ok_or(ParseError::Truncated)?;
    }
    let flags_frag = h.be16(6);
    let more_fragments = flags_frag & 0x2000 != 0;
    let frag_offset = ((flags_frag & 0x1fff) as usize) * 8;
    let ip_payload = total_len - ihl;

    let protocol = h.u8(9);
    // Field by field after `clear`: see `Parsed::clear`.
    out.clear();
    out.src[0] = h.ne32(12);
    out.dst[0] = h.ne32(16);
    out.protocol = protocol;
    out.ip_version = 4;
    out.ip_id = h.be16(4);
    out.l2_group = l2_group;
    if more_fragments || frag_offset != 0 {
        out.fragment = Fragment {
            kind: if frag_offset == 0 {
                FragmentKind::First
            } else {
                FragmentKind::Later
            },
            id: h.be16(4) as u32,
            wrong: fragment_is_wrong(more_fragments, frag_offset, ip_payload, ihl),
        };
        if frag_offset != 0 {
            out.payload_len = ip_payload as u32;
            return Ok(());
        }
    }
    parse_l4_into(pkt, off + ihl, ip_payload, protocol, out)
}

/// See [`Fragment::wrong`]. `header_len` is the IP header (plus extension headers) length.
#[inline(always)]
fn fragment_is_wrong(more: bool, offset: usize, payload: usize, header_len: usize) -> bool {
    (more && !payload.is_multiple_of(8)) || payload == 0 || offset + payload + header_len > 65_535
}

/// IPv6 extension headers the parser steps over.
mod ipv6_ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const DEST_OPTS: u8 = 60;
}

/// Parses an IPv6 packet at `off`, skipping hop-by-hop, routing, fragment and
/// destination-options headers.
#[inline(always)]
pub fn parse_ipv6<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Result<Parsed, ParseError> {
    let mut p = Parsed::default();
    parse_ipv6_into(pkt, off, 0, &mut p)?;
    Ok(p)
}

/// [`parse_ipv6`] of a frame sent to a link-layer group address or not ([`Parsed::l2_group`]),
/// into `out` (see [`parse_ethernet_into`]).
#[inline(always)]
fn parse_ipv6_into<P: PacketData + ?Sized>(
    pkt: &P,
    off: usize,
    l2_group: u8,
    out: &mut Parsed,
) -> Result<(), ParseError> {
    let h = pkt.header::<40>(off).ok_or(ParseError::Truncated)?;
    if h.u8(0) >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let mut remaining = h.be16(4) as usize;
    let mut next = h.u8(6);
    // Field by field after `clear`: see `Parsed::clear`.
    out.clear();
    out.src = [h.ne32(8), h.ne32(12), h.ne32(16), h.ne32(20)];
    out.dst = [h.ne32(24), h.ne32(28), h.ne32(32), h.ne32(36)];
    out.ip_version = 6;
    out.l2_group = l2_group;
    let mut l4 = off + 40;
    let mut i = 0;
    while i < MAX_IPV6_EXT_HEADERS {
        match next {
            ipv6_ext::HOP_BY_HOP | ipv6_ext::ROUTING | ipv6_ext::DEST_OPTS => {
                let e = pkt.header::<2>(l4).ok_or(ParseError::Truncated)?;
                let len = (e.u8(1) as usize + 1) * 8;
                if len > remaining {
                    return Err(ParseError::Malformed);
                }
                next = e.u8(0);
                l4 += len;
                remaining -= len;
            }
            ipv6_ext::FRAGMENT => {
                let e = pkt.header::<8>(l4).ok_or(ParseError::Truncated)?;
                if remaining < 8 {
                    return Err(ParseError::Malformed);
                }
                next = e.u8(0);
                l4 += 8;
                remaining -= 8;
                let fo = e.be16(2);
                let offset = (fo & 0xfff8) as usize;
                let more = fo & 1 != 0;
                if more || offset != 0 {
                    out.fragment = Fragment {
                        kind: if offset == 0 {
                            FragmentKind::First
                        } else {
                            FragmentKind::Later
                        },
                        id: u32::from_be(e.ne32(4)),
                        wrong: fragment_is_wrong(more, offset, remaining, 0),
                    };
                    if offset != 0 {
                        out.protocol = next;
                        out.payload_len = remaining as u32;
                        return Ok(());
                    }
                }
            }
            _ => {
                out.protocol = next;
                return parse_l4_into(pkt, l4, remaining, next, out);
            }
        }
        i += 1;
    }
    Err(ParseError::UnsupportedL4)
}

/// The tunnel a UDP port announces, or 0.
#[inline(always)]
fn udp_tunnel_port(port: u16) -> u8 {
    match port {
        tunnel::port::VXLAN => tunnel::VXLAN,
        tunnel::port::GENEVE => tunnel::GENEVE,
        tunnel::port::TEREDO => tunnel::TEREDO,
        tunnel::port::GTP_U => tunnel::GTP,
        tunnel::port::AYIYA => tunnel::AYIYA,
        _ => tunnel::NONE,
    }
}

/// Parses the transport header at `off` into `p`, whose IP part is filled in; `ip_payload` is
/// the transport segment's length according to the IP header, `protocol` the IP protocol (as
/// in `p`, passed to spare the kernel a read back of the map value).
#[inline(always)]
fn parse_l4_into<P: PacketData + ?Sized>(
    pkt: &P,
    off: usize,
    ip_payload: usize,
    protocol: u8,
    p: &mut Parsed,
) -> Result<(), ParseError> {
    match protocol {
        ipproto::TCP if ip_payload < 20 && p.fragment.kind == FragmentKind::First => {
            // A first fragment too short for the TCP header (RFC 1858's tiny fragment, made
            // so that a filter looking at it does not see the flags, which come in the next
            // fragment; `hping3 -f`): its ports attribute it and the next fragment to the
            // connection, its flags stay unknown (none), and it is a wrong fragment. Refused
            // as truncated or malformed, the connection's SYNs would not be seen at all.
            let t = pkt.header::<8>(off).ok_or(ParseError::Truncated)?;
            p.sport = t.be16(0);
            p.dport = t.be16(2);
            p.tcp_seq = u32::from_be(t.ne32(4));
            p.fragment.wrong = true;
        }
        ipproto::TCP => {
            let t = pkt.header::<20>(off).ok_or(ParseError::Truncated)?;
            let doff = ((t.u8(12) >> 4) as usize) * 4;
            if doff < 20 || doff > ip_payload {
                return Err(ParseError::Malformed);
            }
            p.sport = t.be16(0);
            p.dport = t.be16(2);
            p.tcp_flags = t.u8(13);
            p.tcp_seq = u32::from_be(t.ne32(4));
            p.tcp_ack = u32::from_be(t.ne32(8));
            p.payload_len = (ip_payload - doff) as u32;
        }
        ipproto::UDP => {
            let u = pkt.header::<8>(off).ok_or(ParseError::Truncated)?;
            let udp_len = u.be16(4) as usize;
            // A first fragment's UDP length covers the whole datagram, so only its lower bound
            // is checked.
            if ip_payload < 8 || udp_len < 8 {
                return Err(ParseError::Malformed);
            }
            let (sport, dport) = (u.be16(0), u.be16(2));
            let payload_len = (ip_payload - 8) as u32;
            let mut next = match udp_tunnel_port(dport) {
                tunnel::NONE => udp_tunnel_port(sport),
                k => k,
            };
            if next == tunnel::NONE
                && let Some(ip6) = pkt.header::<6>(off + 8)
                && ip6.u8(0) >> 4 == 6
                && u32::from(ip6.be16(4)) + 40 == payload_len
            {
                // Teredo between a client and a peer is on any port: a datagram that is
                // exactly one IPv6 packet is a candidate (`crate::encap` checks the rest).
                next = tunnel::TEREDO;
            }
            if payload_len >= 4
                && let Some(h) = pkt.header::<4>(off + 8)
            {
                p.head = h.ne32(0);
            }
            p.sport = sport;
            p.dport = dport;
            p.payload_len = payload_len;
            p.next_off = (off + 8) as u16;
            p.next = next;
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            let c = pkt.header::<8>(off).ok_or(ParseError::Truncated)?;
            if ip_payload < 8 {
                return Err(ParseError::Malformed);
            }
            let icmp_type = c.u8(0);
            p.icmp_type = icmp_type;
            p.icmp_code = c.u8(1);
            if is_echo(protocol, icmp_type) {
                let id = c.be16(4);
                p.sport = id;
                p.dport = id;
                p.head = c.be16(6) as u32;
            } else {
                p.head = c.ne32(4);
            }
            p.payload_len = (ip_payload - 8) as u32;
        }
        ipproto::SCTP => {
            // The common header: ports, verification tag, checksum.
            let s = pkt.header::<12>(off).ok_or(ParseError::Truncated)?;
            if ip_payload < 12 {
                return Err(ParseError::Malformed);
            }
            p.sport = s.be16(0);
            p.dport = s.be16(2);
            p.payload_len = (ip_payload - 12) as u32;
        }
        ipproto::GRE => {
            p.payload_len = ip_payload as u32;
            p.next = tunnel::GRE;
            p.next_off = off as u16;
        }
        ipproto::IPIP | ipproto::IPV6 => {
            p.payload_len = ip_payload as u32;
            p.next = tunnel::IP_IN_IP;
            p.next_off = off as u16;
        }
        ipproto::NO_NEXT_HEADER => return Err(ParseError::UnsupportedL4),
        // Any other protocol (OSPF, VRRP, PIM, ESP, ...): a connection between two addresses,
        // without ports, as Zeek keys it.
        _ => p.payload_len = ip_payload as u32,
    }
    Ok(())
}

/// ICMP echo request or reply (v4: 8/0, v6: 128/129).
#[inline(always)]
pub fn is_echo(protocol: u8, icmp_type: u8) -> bool {
    match protocol {
        ipproto::ICMP => icmp_type == 8 || icmp_type == 0,
        ipproto::ICMPV6 => icmp_type == 128 || icmp_type == 129,
        _ => false,
    }
}
