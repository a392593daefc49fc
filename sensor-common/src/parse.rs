//! Packet parsing: Ethernet, up to two VLAN tags, IPv4 (options, fragments), IPv6 (extension
//! headers), TCP, UDP, ICMP, ICMPv6.
//!
//! The parser is generic over [`PacketData`] so the same code runs in the kernel (over the XDP/TC
//! packet pointers, where every read is bounds-checked against `data_end` for the verifier) and in
//! user space (over a byte slice, for replay and tests). Every loop is bounded and every offset
//! stays below 64 KiB, as the verifier requires.

use crate::flow::ipproto;

/// Random access to a frame's bytes, one bounds check per header.
///
/// [`PacketData::header`] checks once that `N` bytes exist at `off`; the returned view then reads
/// fields at constant offsets below `N` without further checks. In the kernel that is exactly the
/// shape the verifier proves safe (one comparison against `data_end`, then loads at fixed offsets
/// from the checked pointer), and each field is one load instead of a byte-by-byte copy.
pub trait PacketData {
    /// A view of the `N` bytes at `off`.
    type Header<const N: usize>: HeaderView;
    /// The `N` bytes at `off`, or `None` if the frame ends before `off + N`.
    fn header<const N: usize>(&self, off: usize) -> Option<Self::Header<N>>;
}

/// Field reads inside a bounds-checked header. Offsets are constants below the header's size.
pub trait HeaderView {
    /// The byte at `i`.
    fn u8(&self, i: usize) -> u8;
    /// The big-endian 16-bit field at `i`.
    fn be16(&self, i: usize) -> u16;
    /// The 32-bit word at `i`, kept in network byte order (addresses: compared, not read).
    fn ne32(&self, i: usize) -> u32;
}

/// A header copied out of a byte slice (user space).
#[derive(Clone, Copy)]
pub struct Bytes<const N: usize>(pub [u8; N]);

impl<const N: usize> HeaderView for Bytes<N> {
    #[inline(always)]
    fn u8(&self, i: usize) -> u8 {
        self.0[i]
    }
    #[inline(always)]
    fn be16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.0[i], self.0[i + 1]])
    }
    #[inline(always)]
    fn ne32(&self, i: usize) -> u32 {
        u32::from_ne_bytes([self.0[i], self.0[i + 1], self.0[i + 2], self.0[i + 3]])
    }
}

impl PacketData for [u8] {
    type Header<const N: usize> = Bytes<N>;
    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<Bytes<N>> {
        let end = off.checked_add(N)?;
        let s = self.get(off..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Some(Bytes(out))
    }
}

/// Ethertypes the parser follows.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
}

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// The most IPv6 extension headers followed before giving up (counted as unsupported).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Why a packet was not accounted into a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4 or IPv6 after the VLAN tags.
    NonIp,
    /// The frame ends before a header the packet's own headers announce.
    Truncated,
    /// Headers contradict themselves (version, IHL, lengths, TCP data offset, ...).
    Malformed,
    /// An IP transport the sensor does not account, or too long an IPv6 extension chain.
    UnsupportedL4,
}

/// Where a packet stands in IP fragmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FragmentKind {
    /// Not a fragment.
    #[default]
    None,
    /// First fragment (offset 0, more fragments follow): carries the transport header.
    First,
    /// A later fragment: no transport header, attributed through the fragment map.
    Later,
}

/// IP fragmentation facts about a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    pub kind: FragmentKind,
    /// IP identification of the fragment train.
    pub id: u32,
    /// A *wrong* fragment in the KDD sense: a non-last fragment whose payload is not a multiple
    /// of 8 bytes, a fragment with no payload, or one that reaches past 65,535 bytes (the
    /// ping-of-death and teardrop shapes).
    pub wrong: bool,
}

/// What a packet contributes to its flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Source address, network byte order words (IPv4 in word 0).
    pub src: [u32; 4],
    /// Destination address.
    pub dst: [u32; 4],
    /// Source port; for ICMP echo request/reply the echo identifier; else 0.
    pub sport: u16,
    /// Destination port; for ICMP echo request/reply the echo identifier; else 0.
    pub dport: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// TCP flags (0 otherwise).
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type (0 otherwise).
    pub icmp_type: u8,
    /// ICMP/ICMPv6 code.
    pub icmp_code: u8,
    /// Transport payload bytes, from the IP header's lengths (not the captured length).
    pub payload_len: u32,
    pub fragment: Fragment,
    /// 1 when the frame went to a link-layer group address (broadcast or multicast): a
    /// one-to-many datagram rather than a conversation between two hosts; else 0. A number,
    /// not a `bool`: turning the address bit into a `bool` takes a branch, which doubles the
    /// paths the verifier walks through the rest of the program.
    pub l2_group: u8,
}

/// Parses a frame that starts with an Ethernet header.
#[inline(always)]
pub fn parse_ethernet<P: PacketData + ?Sized>(pkt: &P) -> Result<Parsed, ParseError> {
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
        ethertype::IPV4 => parse_ipv4_in(pkt, off, l2_group),
        ethertype::IPV6 => parse_ipv6_in(pkt, off, l2_group),
        _ => Err(ParseError::NonIp),
    }
}

/// Parses an IPv4 packet at `off`.
#[inline(always)]
pub fn parse_ipv4<P: PacketData + ?Sized>(pkt: &P, off: usize) -> Result<Parsed, ParseError> {
    parse_ipv4_in(pkt, off, 0)
}

/// [`parse_ipv4`] of a frame sent to a link-layer group address or not ([`Parsed::l2_group`]).
#[inline(always)]
fn parse_ipv4_in<P: PacketData + ?Sized>(
    pkt: &P,
    off: usize,
    l2_group: u8,
) -> Result<Parsed, ParseError> {
    let h = pkt.header::<20>(off).ok_or(ParseError::Truncated)?;
    let vihl = h.u8(0);
    if vihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    let total_len = h.be16(2) as usize;
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

    let mut p = Parsed {
        src: [h.ne32(12), 0, 0, 0],
        dst: [h.ne32(16), 0, 0, 0],
        protocol: h.u8(9),
        ip_version: 4,
        l2_group,
        ..Parsed::default()
    };
    if more_fragments || frag_offset != 0 {
        p.fragment = Fragment {
            kind: if frag_offset == 0 {
                FragmentKind::First
            } else {
                FragmentKind::Later
            },
            id: h.be16(4) as u32,
            wrong: fragment_is_wrong(more_fragments, frag_offset, ip_payload, ihl),
        };
        if frag_offset != 0 {
            p.payload_len = ip_payload as u32;
            return check_l4_protocol(p);
        }
    }
    parse_l4(pkt, off + ihl, ip_payload, p)
}

/// See [`Fragment::wrong`]. `header_len` is the IP header (plus extension headers) length.
#[inline(always)]
fn fragment_is_wrong(more: bool, offset: usize, payload: usize, header_len: usize) -> bool {
    (more && !payload.is_multiple_of(8)) || payload == 0 || offset + payload + header_len > 65_535
}

#[inline(always)]
fn check_l4_protocol(p: Parsed) -> Result<Parsed, ParseError> {
    match p.protocol {
        ipproto::TCP | ipproto::UDP | ipproto::ICMP | ipproto::ICMPV6 => Ok(p),
        _ => Err(ParseError::UnsupportedL4),
    }
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
    parse_ipv6_in(pkt, off, 0)
}

/// [`parse_ipv6`] of a frame sent to a link-layer group address or not ([`Parsed::l2_group`]).
#[inline(always)]
fn parse_ipv6_in<P: PacketData + ?Sized>(
    pkt: &P,
    off: usize,
    l2_group: u8,
) -> Result<Parsed, ParseError> {
    let h = pkt.header::<40>(off).ok_or(ParseError::Truncated)?;
    if h.u8(0) >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let mut remaining = h.be16(4) as usize;
    let mut next = h.u8(6);
    let mut p = Parsed {
        src: [h.ne32(8), h.ne32(12), h.ne32(16), h.ne32(20)],
        dst: [h.ne32(24), h.ne32(28), h.ne32(32), h.ne32(36)],
        ip_version: 6,
        l2_group,
        ..Parsed::default()
    };
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
                    p.fragment = Fragment {
                        kind: if offset == 0 {
                            FragmentKind::First
                        } else {
                            FragmentKind::Later
                        },
                        id: u32::from_be(e.ne32(4)),
                        wrong: fragment_is_wrong(more, offset, remaining, 0),
                    };
                    if offset != 0 {
                        p.protocol = next;
                        p.payload_len = remaining as u32;
                        return check_l4_protocol(p);
                    }
                }
            }
            _ => {
                p.protocol = next;
                return parse_l4(pkt, l4, remaining, p);
            }
        }
        i += 1;
    }
    Err(ParseError::UnsupportedL4)
}

/// Parses the transport header at `off`; `ip_payload` is the transport segment's length
/// according to the IP header.
#[inline(always)]
fn parse_l4<P: PacketData + ?Sized>(
    pkt: &P,
    off: usize,
    ip_payload: usize,
    mut p: Parsed,
) -> Result<Parsed, ParseError> {
    match p.protocol {
        ipproto::TCP => {
            let t = pkt.header::<20>(off).ok_or(ParseError::Truncated)?;
            let doff = ((t.u8(12) >> 4) as usize) * 4;
            if doff < 20 || doff > ip_payload {
                return Err(ParseError::Malformed);
            }
            p.sport = t.be16(0);
            p.dport = t.be16(2);
            p.tcp_flags = t.u8(13);
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
            p.sport = u.be16(0);
            p.dport = u.be16(2);
            p.payload_len = (ip_payload - 8) as u32;
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            let c = pkt.header::<8>(off).ok_or(ParseError::Truncated)?;
            if ip_payload < 8 {
                return Err(ParseError::Malformed);
            }
            p.icmp_type = c.u8(0);
            p.icmp_code = c.u8(1);
            if is_echo(p.protocol, p.icmp_type) {
                let id = c.be16(4);
                p.sport = id;
                p.dport = id;
            }
            p.payload_len = (ip_payload - 8) as u32;
        }
        _ => return Err(ParseError::UnsupportedL4),
    }
    Ok(p)
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
