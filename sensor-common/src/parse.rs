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
//! transport header, nothing more, so that plain traffic costs what it always did. What lies
//! beyond it is handed on through [`Parsed::next`]: an L2 header it does not walk (a third tag,
//! MPLS, PPPoE, FabricPath: [`next::L2`]) or a tunnel's payload (a [`tunnel`] kind). The kernel
//! then tail-calls a second program that continues with [`parse_from`] and [`crate::encap`]
//! (replay runs the same functions in a loop). There every offset is first passed through
//! [`PacketData::forget`], so that the many paths through tags, labels and tunnel headers meet
//! in one verifier state before the IP parser instead of each walking it again. (And the kernel
//! hands every parse result to the flow update through a map, so that the verifier walks the
//! update once for all of them: see `sensor-ebpf`.)

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
    /// The frame's length in bytes: the captured bytes in user space, the whole packet in the
    /// kernel (which may extend past the part the TC program can read). Used where an IPv4
    /// header's total length is 0.
    fn frame_len(&self) -> usize;
    /// `off`, unchanged, but no longer known to the kernel's verifier as the constant or narrow
    /// range it tracked: paths that reach one header at different offsets then share one
    /// verifier state instead of each walking the rest of the parser again. The identity in
    /// user space.
    #[inline(always)]
    fn forget(&self, off: usize) -> usize {
        off
    }
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
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len()
    }
}

/// Ethertypes the parser follows.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// The pre-standard QinQ service tag some switches still send.
    pub const QINQ_9100: u16 = 0x9100;
    /// MPLS unicast.
    pub const MPLS: u16 = 0x8847;
    /// MPLS multicast.
    pub const MPLS_MULTICAST: u16 = 0x8848;
    /// PPPoE session stage (discovery, 0x8863, carries no IP).
    pub const PPPOE_SESSION: u16 = 0x8864;
    /// Cisco FabricPath: an outer MAC header and a 4-byte tag in front of the whole frame.
    pub const FABRICPATH: u16 = 0x8903;
    /// Transparent Ethernet bridging: an Ethernet frame inside GRE or Geneve.
    pub const TEB: u16 = 0x6558;
    /// ERSPAN type I (no ERSPAN header) and II (8-byte header), as a GRE protocol type.
    pub const ERSPAN: u16 = 0x88be;
    /// ERSPAN type III (12-byte header, 8 more with the platform-specific subheader).
    pub const ERSPAN_III: u16 = 0x22eb;
    /// PPP inside enhanced GRE (PPTP, GRE version 1).
    pub const PPP: u16 = 0x880b;
}

/// PPP protocol numbers (PPPoE, PPTP, PPP links).
pub mod ppp {
    pub const IPV4: u16 = 0x0021;
    pub const IPV6: u16 = 0x0057;
}

/// Tunnel kinds: how an inner packet was carried ([`crate::FlowValue::tunnel`]) and what a
/// carrier connection carries ([`crate::FlowValue::carries`]). 0 is none.
pub mod tunnel {
    pub const NONE: u8 = 0;
    /// GRE (version 0, or version 1 carrying PPP as PPTP does) with IP or Ethernet inside.
    pub const GRE: u8 = 1;
    /// ERSPAN type I, II or III: mirrored Ethernet frames in GRE.
    pub const ERSPAN: u8 = 2;
    /// VXLAN (UDP 4789): Ethernet frames.
    pub const VXLAN: u8 = 3;
    /// Geneve (UDP 6081), with its options: Ethernet frames or IP.
    pub const GENEVE: u8 = 4;
    /// IP directly in IP (IP protocol 4 or 41): 4in4, 6in4, 4in6, 6in6.
    pub const IP_IN_IP: u8 = 5;
    /// Teredo (IPv6 in UDP, RFC 4380), with its authentication and origin indications.
    pub const TEREDO: u8 = 6;
    /// GTP-U (GTPv1 user plane, UDP 2152): IP packets of mobile subscribers.
    pub const GTP: u8 = 7;
    /// AYIYA (UDP 5072): IPv6 or IPv4 in UDP.
    pub const AYIYA: u8 = 8;
    /// The largest kind.
    pub const MAX: u8 = AYIYA;

    /// UDP ports that announce a tunnel (either port of a datagram).
    pub mod port {
        pub const VXLAN: u16 = 4789;
        pub const GENEVE: u16 = 6081;
        pub const TEREDO: u16 = 3544;
        pub const GTP_U: u16 = 2152;
        pub const AYIYA: u16 = 5072;
    }
}

/// Values of [`Parsed::next`] besides the [`tunnel`] kinds.
pub mod next {
    /// Nothing left: the packet is parsed.
    pub const NONE: u8 = 0;
    /// The frame's own L2 headers go on past what [`super::parse_ethernet`] walks (a third
    /// VLAN tag, MPLS, PPPoE, FabricPath): [`super::Parsed::next_off`] is the offset of the
    /// ethertype field to continue at. Not a tunnel, and the packet has no IP header yet.
    pub const L2: u8 = 0xff;
}

/// How a frame (or a tunnel's payload) begins, for [`parse_from`].
pub mod link {
    /// An Ethernet header.
    pub const ETHERNET: u8 = 1;
    /// An ethertype field (the last two bytes of an Ethernet header, or a Linux cooked
    /// capture's protocol field).
    pub const ETHERTYPE: u8 = 2;
    /// An IPv4 header.
    pub const IPV4: u8 = 3;
    /// An IPv6 header.
    pub const IPV6: u8 = 4;
    /// IPv4 or IPv6, by the version nibble (MPLS payloads, GTP-U, raw IP captures).
    pub const IP: u8 = 5;
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

/// The most L2 headers (VLAN tags, a PPPoE header, a FabricPath tag, an MPLS stack) walked in
/// front of IP. Past it a frame counts as [`ParseError::TooDeep`].
pub const MAX_L2_HEADERS: usize = 8;

/// The most MPLS labels in a stack. Past it a frame counts as [`ParseError::TooDeep`].
pub const MAX_MPLS_LABELS: usize = 8;

/// The furthest offset at which [`parse_from`] starts a header (what the verifier needs to
/// bound a [`PacketData::forget`] offset). Headers further into a frame than this count as
/// [`ParseError::TooDeep`]; real frames keep their headers well within it.
pub const MAX_HEADER_OFFSET: usize = 2048;

/// Why a packet was not accounted into a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4 or IPv6 after the L2 headers.
    NonIp,
    /// The frame ends before a header the packet's own headers announce.
    Truncated,
    /// Headers contradict themselves (version, IHL, lengths, TCP data offset, ...).
    Malformed,
    /// Too long an IPv6 extension header chain, or an IPv6 packet with no next header (59),
    /// which carries nothing (Teredo's bubbles are such packets): no connection, as in Zeek.
    UnsupportedL4,
    /// More L2 headers, MPLS labels or nested tunnels than the parser follows
    /// ([`MAX_L2_HEADERS`], [`MAX_MPLS_LABELS`], [`crate::encap::MAX_TUNNEL_DEPTH`]), or a
    /// header beyond [`MAX_HEADER_OFFSET`].
    TooDeep,
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
    /// Source port (TCP, UDP, SCTP); for ICMP echo request/reply the echo identifier; else 0.
    pub sport: u16,
    /// Destination port (TCP, UDP, SCTP); for ICMP echo request/reply the echo identifier;
    /// else 0.
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
    /// Transport payload bytes, from the IP header's lengths (not the captured length): after
    /// the TCP, UDP, ICMP or SCTP header; the whole IP payload for other protocols.
    pub payload_len: u32,
    pub fragment: Fragment,
    /// 1 when the frame went to a link-layer group address (broadcast or multicast): a
    /// one-to-many datagram rather than a conversation between two hosts; else 0. A number,
    /// not a `bool`: turning the address bit into a `bool` takes a branch, which doubles the
    /// paths the verifier walks through the rest of the program.
    pub l2_group: u8,
    /// What follows that this parse did not walk: [`next::NONE`], [`next::L2`], or the
    /// [`tunnel`] kind the packet's protocol or ports announce (a candidate: the tunnel header
    /// is checked by [`crate::encap`]).
    pub next: u8,
    /// Where [`Parsed::next`] begins: the ethertype field to continue at ([`next::L2`]), the GRE
    /// header, the inner IP header (IP-in-IP) or the UDP payload.
    pub next_off: u16,
}

/// Parses a frame that starts with an Ethernet header: the per-packet path of the kernel
/// program (up to two VLAN tags; deeper L2 headers are handed on as [`next::L2`]).
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
        ethertype::VLAN
        | ethertype::QINQ
        | ethertype::QINQ_9100
        | ethertype::MPLS
        | ethertype::MPLS_MULTICAST
        | ethertype::PPPOE_SESSION
        | ethertype::FABRICPATH => Ok(Parsed {
            next: next::L2,
            next_off: (off - 2) as u16,
            l2_group,
            ..Parsed::default()
        }),
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
    match version {
        4 => parse_ipv4_in(pkt, ip_off, l2_group),
        _ => parse_ipv6_in(pkt, ip_off, l2_group),
    }
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
            return Ok(p);
        }
    }
    parse_l4(pkt, off + ihl, ip_payload, p)
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
                        return Ok(p);
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
            p.next_off = (off + 8) as u16;
            p.next = match udp_tunnel_port(p.dport) {
                tunnel::NONE => udp_tunnel_port(p.sport),
                k => k,
            };
            if p.next == tunnel::NONE
                && let Some(ip6) = pkt.header::<6>(off + 8)
                && ip6.u8(0) >> 4 == 6
                && u32::from(ip6.be16(4)) + 40 == p.payload_len
            {
                // Teredo between a client and a peer is on any port: a datagram that is
                // exactly one IPv6 packet is a candidate (`crate::encap` checks the rest).
                p.next = tunnel::TEREDO;
            }
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
