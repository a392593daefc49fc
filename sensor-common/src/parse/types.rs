//! What the parser knows and returns: protocol numbers, its bounds, [`ParseError`] and
//! [`Parsed`].

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
    /// The frame's own L2 headers go on past what [`parse_ethernet`](crate::parse::parse_ethernet) walks (a third
    /// VLAN tag, MPLS, PPPoE, FabricPath): [`super::Parsed::next_off`] is the offset of the
    /// ethertype field to continue at. Not a tunnel, and the packet has no IP header yet.
    pub const L2: u8 = 0xff;
}

/// How a frame (or a tunnel's payload) begins, for [`parse_from`](super::parse_from).
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

/// The furthest offset at which [`parse_from`](super::parse_from) starts a header (what the
/// verifier needs to bound a [`PacketData::forget`](super::PacketData::forget) offset). Headers
/// further into a frame than this count as [`ParseError::TooDeep`]; real frames keep their
/// headers well within it.
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
///
/// Aligned to 8 bytes so that [`Parsed::clear`] can zero it with word stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(align(8))]
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
    /// TCP sequence number (host byte order; 0 otherwise).
    pub tcp_seq: u32,
    /// TCP acknowledgment number (host byte order; 0 otherwise), meaningful with the ACK flag.
    pub tcp_ack: u32,
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
    /// IPv4 identification (0 for IPv6): what an address translation leaves alone, so that a
    /// forwarded packet is recognised where it leaves ([`crate::nat`]).
    pub ip_id: u16,
    /// What follows the transport header and no translation changes, for recognising a
    /// forwarded packet ([`crate::nat`]): a UDP payload's first 4 bytes (a DNS query's
    /// identifier and flags, a QUIC packet's first byte and connection ID or version), an ICMP
    /// message's bytes 4 to 7 less an echo's identifier (which masquerade changes): its
    /// sequence number. 0 where there are fewer.
    pub head: u32,
}

impl Parsed {
    /// Sets every field to its default, with one store per 8-byte word.
    ///
    /// Why not `*self = Parsed::default()`: where `self` is a BPF map value (the kernel parses
    /// into one, see `crate::parse::parse_ethernet_into`), LLVM turns the zero fields of such an
    /// assignment into a call of a byte-wise `memset`. Volatile word stores are neither merged
    /// into one nor dropped.
    #[inline(always)]
    pub fn clear(&mut self) {
        const WORDS: usize = core::mem::size_of::<Parsed>() / 8;
        const _: () = assert!(core::mem::size_of::<Parsed>().is_multiple_of(8));
        let words = (self as *mut Parsed).cast::<u64>();
        let mut i = 0;
        while i < WORDS {
            // SAFETY: `self` is valid for writes of its whole size and 8-aligned
            // (`repr(align(8))`); every field's default is all zero bits (a test checks it), so
            // the result is a valid `Parsed`.
            unsafe { words.add(i).write_volatile(0) };
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_gives_the_default() {
        let mut p = Parsed {
            src: [1, 2, 3, 4],
            dst: [5, 6, 7, 8],
            sport: 9,
            dport: 10,
            protocol: 11,
            ip_version: 6,
            tcp_flags: 12,
            icmp_type: 13,
            icmp_code: 14,
            payload_len: 15,
            tcp_seq: 19,
            tcp_ack: 20,
            fragment: Fragment {
                kind: FragmentKind::Later,
                id: 16,
                wrong: true,
            },
            l2_group: 1,
            next: 17,
            next_off: 18,
            ip_id: 21,
            head: 22,
        };
        p.clear();
        assert_eq!(p, Parsed::default());
    }
}
