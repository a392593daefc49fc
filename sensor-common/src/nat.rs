//! Address translation learned where a forwarded packet leaves, and undone where its answers
//! enter: a NAT gateway watched on all its interfaces sees each connection whole.
//!
//! Why: the kernel side accounts a forwarded packet once, where it enters (XDP, before the
//! host's netfilter), and skips it where it leaves. On a gateway that translates addresses
//! (masquerade or SNAT, as most Linux gateways do; DNAT port forwards alike), a connection's two
//! directions then enter with different addresses: the inside client's request with its own
//! (`client:port -> server:port`), the server's answer with the gateway's (`server:port ->
//! gateway:port'`). Each connection would become two halves, a request never answered and an
//! answer never asked for, which the model reads as probes (239 of 652 connections flagged on a
//! NAT gateway watched on both sides, December 7 namespaces).
//!
//! How, per connection (nothing per ordinary packet):
//!
//! 1. The XDP program remembers the first packet of each connection it opens that begins with
//!    a TCP SYN, a UDP datagram or an ICMP echo request ([`first_packet_kind`]; [`Seen`], in a
//!    small per-CPU table indexed by [`seen_index`]): its addresses and ports, and what a
//!    translation leaves alone (protocol, lengths, IP identification, TCP sequence numbers,
//!    ICMP type, a datagram's first bytes).
//! 2. The TC egress program looks at packets forwarded from a watched interface (which it does
//!    not account): one that [`Seen::same_packet`] recognises, leaving with other addresses or
//!    ports, was translated on the way through. Forwarding happens on the CPU that ran XDP
//!    (the same softirq), so the per-CPU table suffices, and an entry lives only until the next
//!    connection of the same fingerprint on that CPU. The answer's tuple as it will enter
//!    ([`reply_key`]) then maps to the original connection in an LRU map.
//! 3. The XDP program looks each entering packet up in that map (only once a translation has
//!    been learned: a host that translates nothing pays one array read), and one that is found
//!    is accounted as the answer it is, under the original connection ([`untranslate`]).
//!    Before the lookup, a bitmap of the answers' destinations ([`filter_bit`]) passes only
//!    packets that may be answers: a hash map lookup (a helper call hashing the 40-byte key)
//!    more than doubled the cost of every packet on a gateway that translates (`cargo xtask
//!    bench`, "xdp on a translating gateway"), most of which, a client's requests on the
//!    inside and the gateway's own traffic, are no answers.
//!
//! A connection the host opens itself (TC egress, not forwarded) removes a stale mapping of
//! its answers' tuple, so a port that a translation once used does not lend its answers to an
//! old connection. What is not learned (an entry overwritten before its packet left, receive
//! packet steering moving the forward to another CPU, the LRU map full) stays split, as
//! before, and `sensor::capture::nat` still counts such halves.

use crate::{
    flow::{copy_address, ipproto},
    parse::{Parsed, tcp_flags},
};

/// Slots of the per-CPU table of connections' first packets (a power of two).
pub const SEEN_SLOTS: u32 = 256;

/// Translations remembered at once (an LRU map: the oldest make room).
pub const TRANSLATIONS: u32 = 65_536;

/// Words of one half of the bitmap of answers' destinations (`NAT_FILTER`, [`filter_bit`]):
/// 2^21 bits, 256 KiB. The map holds two halves ([`filter_base`]).
pub const FILTER_WORDS: u32 = 1 << 15;

/// Bits of one half of the filter.
pub const FILTER_BITS: u64 = FILTER_WORDS as u64 * 64;

/// Where the half of `NAT_FILTER` that entering packets read starts (a word index), from
/// the `NAT_ACTIVE` word: `None` (0) until a translation has been learned, then 1 or 2 for the
/// first or the second half.
///
/// Why two halves: the LRU map of translations forgets without telling, so the kernel can set
/// bits but never clear them, and a filter whose keys grow (the outside clients of port
/// forwards) would fill up and pass every packet on to the lookup. The kernel sets a learned
/// translation's bit in both halves; user space (`sensor::capture::nat_filter`) rebuilds the
/// half not in use from the translations the map still holds and then switches `NAT_ACTIVE`
/// to it. A translation learned during the rebuild has its bit in the new half too, since the
/// kernel inserts it before setting its bits and user space clears the half before it reads
/// the map.
#[inline(always)]
pub fn filter_base(active: u64) -> Option<u32> {
    if active == 0 {
        None
    } else {
        Some(((active - 1) & 1) as u32 * FILTER_WORDS)
    }
}

/// The `NAT_ACTIVE` word that makes entering packets read the half starting at word `base`
/// (0 or [`FILTER_WORDS`]): the inverse of [`filter_base`].
#[inline(always)]
pub fn active_for(base: u32) -> u64 {
    1 + u64::from(base / FILTER_WORDS)
}

/// The bit of the answers' destination filter for an answer entering to `dst`, `dport`
/// (`protocol`): its word in a half of `NAT_FILTER` and the mask within it. Taken from the
/// packet's own fields, so that a packet that is no answer costs no key built. Set where a
/// translation is learned; cleared only when user space rebuilds the filter
/// ([`filter_base`]); an entering packet whose bit is clear is no answer of any translation
/// learned.
///
/// Why the destination alone (address, port, protocol), not the whole tuple: between two
/// rebuilds the bits only accumulate, so what they are keyed on should grow slowly. A
/// masquerading gateway's answers all go to its outside address, so their destinations are at
/// most its ports per protocol (about 200,000 keys, a tenth of the bits), however many
/// connections it translates. Answers of port forwards go to the outside clients' addresses,
/// which do grow, until a rebuild keeps only the translations the map still holds (at most
/// [`TRANSLATIONS`], a thirty-second of the bits); a filter that fills up passes more packets
/// on to the lookup, which costs what it did without a filter, and is never wrong.
#[inline(always)]
pub fn filter_bit(dst: &[u32; 4], dport: u16, protocol: u8) -> (u32, u64) {
    let addr = dst[0] ^ dst[1].rotate_left(8) ^ dst[2].rotate_left(16) ^ dst[3].rotate_left(24);
    // Port and protocol in the low bits, which a multiply spreads over the high bits taken.
    let x = (u64::from(addr) << 32) | (u64::from(dport) << 8) | u64::from(protocol);
    let x = (x ^ (x >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let h = x >> (64 - 6 - FILTER_WORDS.trailing_zeros());
    ((h >> 6) as u32, 1 << (h & 63))
}

/// One direction of a connection as packets carry it: addresses, ports (ICMP echo: the
/// identifier, both), protocol. The LRU map's key (an answer as it enters) and value (the
/// original request).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub ip_version: u8,
    /// Explicit padding, always zero (the key is hashed byte by byte).
    pub _pad: [u8; 2],
}

impl Tuple {
    /// The packet's own direction.
    #[inline(always)]
    pub fn of(p: &Parsed) -> Tuple {
        Tuple {
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
            protocol: p.protocol,
            ip_version: p.ip_version,
            _pad: [0; 2],
        }
    }
}

/// The tuple an answer to `p` carries: `p`'s turned round.
#[inline(always)]
pub fn reply_key(p: &Parsed) -> Tuple {
    Tuple {
        src: p.dst,
        dst: p.src,
        sport: p.dport,
        dport: p.sport,
        protocol: p.protocol,
        ip_version: p.ip_version,
        _pad: [0; 2],
    }
}

/// Rewrites an entering answer whose tuple a translation gave it back to the original
/// connection's: from the original destination to the original source.
#[inline(always)]
pub fn untranslate(p: &mut Parsed, original: &Tuple) {
    copy_address(&mut p.src, &original.dst);
    p.sport = original.dport;
    copy_address(&mut p.dst, &original.src);
    p.dport = original.sport;
}

/// [`Seen::waiting`] values.
pub mod waiting {
    /// Nothing waits: recognised, or never filled.
    pub const NO: u32 = 0;
    /// The packet has not left yet.
    pub const YES: u32 = 1;
    /// Two connections' first packets that nothing tells apart (UDP datagrams of one length
    /// and the same first bytes from sockets that send IP identification 0, to one server)
    /// waited at once: the first of them to leave is learned for neither.
    pub const AMBIGUOUS: u32 = 2;
}

/// How long an entry waits for its packet to leave. Forwarding happens in the softirq that
/// received the packet, microseconds later; a packet delivered to the host itself (or dropped
/// by its firewall) never leaves, and its entry must not make a later packet ambiguous.
pub const FORWARD_WITHIN_NS: u64 = 5_000_000;

/// A connection's first packet as it entered, for recognising it where it leaves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub tuple: Tuple,
    pub payload_len: u32,
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub ip_id: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// [`waiting`].
    pub waiting: u32,
    /// [`Parsed::head`].
    pub head: u32,
    /// When it entered (CLOCK_MONOTONIC).
    pub at_ns: u64,
}

impl Seen {
    /// `p` entering at `now_ns`.
    #[inline(always)]
    pub fn of(p: &Parsed, now_ns: u64) -> Seen {
        let mut s = Seen::default();
        s.fill(p, now_ns);
        s
    }

    /// Makes this slot `p` entering at `now_ns`, field by field: the kernel fills its per-CPU
    /// slot in place (a whole `Seen` built first would take the stack's room), and one writer
    /// keeps it and [`Seen::of`] from drifting apart.
    #[inline(always)]
    pub fn fill(&mut self, p: &Parsed, now_ns: u64) {
        copy_address(&mut self.tuple.src, &p.src);
        copy_address(&mut self.tuple.dst, &p.dst);
        self.tuple.sport = p.sport;
        self.tuple.dport = p.dport;
        self.tuple.protocol = p.protocol;
        self.tuple.ip_version = p.ip_version;
        self.tuple._pad = [0; 2];
        self.payload_len = p.payload_len;
        self.tcp_seq = p.tcp_seq;
        self.tcp_ack = p.tcp_ack;
        self.ip_id = p.ip_id;
        self.tcp_flags = p.tcp_flags;
        self.icmp_type = p.icmp_type;
        self.waiting = waiting::YES;
        self.head = p.head;
        self.at_ns = now_ns;
    }

    /// Whether what translation leaves alone is equal: protocol, lengths, IP identification,
    /// TCP sequence numbers and flags, ICMP type, the first bytes after the transport header
    /// ([`Parsed::head`]: without them, an ongoing UDP flow's datagram of the same length,
    /// with IP identification 0 as Linux sends unconnected UDP and IPv6 always has, would be
    /// taken for a new flow's first).
    #[inline(always)]
    pub fn same_fingerprint(&self, p: &Parsed) -> bool {
        self.tuple.protocol == p.protocol
            && self.tuple.ip_version == p.ip_version
            && self.payload_len == p.payload_len
            && self.tcp_seq == p.tcp_seq
            && self.tcp_ack == p.tcp_ack
            && self.ip_id == p.ip_id
            && self.tcp_flags == p.tcp_flags
            && self.icmp_type == p.icmp_type
            && self.head == p.head
    }

    /// Whether the entry still waits for its packet at `now_ns`.
    #[inline(always)]
    pub fn waits(&self, now_ns: u64) -> bool {
        self.waiting != waiting::NO && now_ns.wrapping_sub(self.at_ns) < FORWARD_WITHIN_NS
    }

    /// Whether `p`, entering at `now_ns`, may take this slot: not while the slot waits for a
    /// packet with `p`'s fingerprint (the slot then becomes [`waiting::AMBIGUOUS`]).
    #[inline(always)]
    pub fn yields_to(&self, p: &Parsed, now_ns: u64) -> bool {
        !(self.waits(now_ns) && self.same_fingerprint(p))
    }

    /// Whether `p`, leaving at `now_ns` with this entry's fingerprint, is its packet: the entry
    /// waits (unambiguously), and one of the two addresses is unchanged (source NAT keeps the
    /// destination, destination NAT the source; ports may change with either, and an ICMP
    /// echo's identifier with masquerade), or it is a TCP SYN, whose 32-bit initial sequence
    /// number tells it apart well enough for both to change (a port forward that also
    /// masquerades towards the inside, hairpin NAT).
    #[inline(always)]
    pub fn same_packet(&self, p: &Parsed, now_ns: u64) -> bool {
        self.waiting == waiting::YES
            && self.waits(now_ns)
            && self.same_fingerprint(p)
            && (self.tuple.src == p.src
                || self.tuple.dst == p.dst
                || (p.protocol == ipproto::TCP && p.tcp_flags & tcp_flags::SYN != 0))
    }

    /// Whether `p` (recognised by [`Seen::same_packet`]) left with other addresses or ports.
    #[inline(always)]
    pub fn translated(&self, p: &Parsed) -> bool {
        self.tuple.src != p.src
            || self.tuple.dst != p.dst
            || self.tuple.sport != p.sport
            || self.tuple.dport != p.dport
    }
}

/// Whether `p` may be a connection's first packet worth remembering (entering) or recognising
/// (leaving): a TCP SYN (its initial sequence number tells it apart; a connection picked up
/// mid-stream is not followed), a UDP datagram, an ICMP or ICMPv6 echo request. Not other ICMP
/// messages nor protocols without ports: keyed on addresses alone, one learned translation
/// would claim every such packet between the two addresses (errors about other connections).
#[inline(always)]
pub fn first_packet_kind(p: &Parsed) -> bool {
    match p.protocol {
        ipproto::TCP => p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN,
        ipproto::UDP => true,
        ipproto::ICMP => p.icmp_type == 8,
        ipproto::ICMPV6 => p.icmp_type == 128,
        _ => false,
    }
}

/// The per-CPU slot of a packet: from what translation leaves alone, so that the packet finds
/// the same slot entering and leaving.
#[inline(always)]
pub fn seen_index(p: &Parsed) -> u32 {
    let x = p.tcp_seq
        ^ p.payload_len.rotate_left(16)
        ^ (p.ip_id as u32)
        ^ p.head.rotate_left(8)
        ^ ((p.protocol as u32) << 24);
    x.wrapping_mul(0x9e37_79b1) >> (32 - SEEN_SLOTS.trailing_zeros())
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, `Copy`, integer fields with explicit padding: every bit pattern is
    // valid.
    unsafe impl aya::Pod for super::Tuple {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Seen {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u32) -> [u32; 4] {
        [a.to_be(), 0, 0, 0]
    }

    const CLIENT: u32 = 0xc612_0102;
    const GATEWAY: u32 = 0xc612_0201;
    const SERVER: u32 = 0xc612_0202;
    const T0: u64 = 1_000_000_000;

    fn syn(src: u32, sport: u16, dst: u32, dport: u16) -> Parsed {
        Parsed {
            src: v4(src),
            dst: v4(dst),
            sport,
            dport,
            protocol: ipproto::TCP,
            ip_version: 4,
            tcp_flags: 0x02,
            tcp_seq: 0x1234_5678,
            ip_id: 0x4242,
            ..Parsed::default()
        }
    }

    #[test]
    fn a_masqueraded_syn_is_recognised_and_its_answer_undone() {
        let inside = syn(CLIENT, 40000, SERVER, 443);
        let seen = Seen::of(&inside, T0);
        // Masquerade: the source address and port change.
        let outside = syn(GATEWAY, 61000, SERVER, 443);
        assert_eq!(seen_index(&inside), seen_index(&outside));
        assert!(seen.same_packet(&outside, T0 + 20_000));
        assert!(seen.translated(&outside));
        // The answer enters as server:443 -> gateway:61000 ...
        let mut answer = syn(SERVER, 443, GATEWAY, 61000);
        answer.tcp_flags = 0x12;
        assert_eq!(Tuple::of(&answer), reply_key(&outside));
        // ... passes the filter bit learning set from the answers' tuple ...
        let k = reply_key(&outside);
        assert_eq!(
            filter_bit(&answer.dst, answer.dport, answer.protocol),
            filter_bit(&k.dst, k.dport, k.protocol)
        );
        // ... and is accounted as server:443 -> client:40000.
        untranslate(&mut answer, &seen.tuple);
        assert_eq!(
            (answer.src, answer.sport, answer.dst, answer.dport),
            (v4(SERVER), 443, v4(CLIENT), 40000)
        );
    }

    #[test]
    fn a_port_forward_is_recognised_too() {
        // DNAT: gateway:8080 forwarded to the inside server's 80; the source stays.
        let entering = syn(CLIENT, 50000, GATEWAY, 8080);
        let seen = Seen::of(&entering, T0);
        let leaving = syn(CLIENT, 50000, SERVER, 80);
        assert!(seen.same_packet(&leaving, T0) && seen.translated(&leaving));
        let mut answer = syn(SERVER, 80, CLIENT, 50000);
        assert_eq!(Tuple::of(&answer), reply_key(&leaving));
        untranslate(&mut answer, &seen.tuple);
        assert_eq!(
            (answer.src, answer.sport, answer.dst, answer.dport),
            (v4(GATEWAY), 8080, v4(CLIENT), 50000)
        );
    }

    #[test]
    fn a_routed_packet_is_not_translated_and_another_packet_is_not_the_same() {
        let p = syn(CLIENT, 40000, SERVER, 443);
        let seen = Seen::of(&p, T0);
        assert!(seen.same_packet(&p, T0) && !seen.translated(&p));
        // Another connection's SYN: another sequence number.
        let mut other = syn(GATEWAY, 61000, SERVER, 443);
        other.tcp_seq ^= 1;
        assert!(!seen.same_packet(&other, T0));
        // Both addresses changed: a SYN still is this packet (its sequence number says so: a
        // port forward that also masquerades), a datagram is not.
        let moved = syn(GATEWAY, 40000, CLIENT, 443);
        assert!(seen.same_packet(&moved, T0));
        let datagram = |src, dst| Parsed {
            protocol: ipproto::UDP,
            tcp_flags: 0,
            tcp_seq: 0,
            ..syn(src, 40000, dst, 53)
        };
        let udp_seen = Seen::of(&datagram(CLIENT, SERVER), T0);
        assert!(udp_seen.same_packet(&datagram(GATEWAY, SERVER), T0));
        assert!(!udp_seen.same_packet(&datagram(GATEWAY, CLIENT), T0));
        // Another IP identification, length, flags or first bytes: not this packet.
        for f in [
            |p: &mut Parsed| p.ip_id ^= 1,
            |p: &mut Parsed| p.payload_len += 1,
            |p: &mut Parsed| p.tcp_flags = 0x10,
            |p: &mut Parsed| p.head = 7,
        ] {
            let mut q = syn(GATEWAY, 61000, SERVER, 443);
            f(&mut q);
            assert!(!seen.same_packet(&q, T0), "{q:?}");
        }
        // Recognised once only, and only while it may still be forwarded.
        let translated = syn(GATEWAY, 61000, SERVER, 443);
        let mut used = seen;
        used.waiting = waiting::NO;
        assert!(!used.same_packet(&translated, T0));
        assert!(!seen.same_packet(&translated, T0 + FORWARD_WITHIN_NS));
    }

    #[test]
    fn another_flows_datagram_of_the_same_length_is_not_the_first_packet() {
        // A new DNS query and, leaving while it waits, a datagram of an ongoing flow from
        // another client to the same server: one length, IP identification 0 both.
        let udp = |src, sport, head| Parsed {
            protocol: ipproto::UDP,
            tcp_flags: 0,
            tcp_seq: 0,
            ip_id: 0,
            payload_len: 40,
            head,
            ..syn(src, sport, SERVER, 53)
        };
        let seen = Seen::of(&udp(CLIENT, 40000, 0x1a2b_0100), T0);
        assert!(!seen.same_packet(&udp(GATEWAY, 50000, 0x77aa_0100), T0 + 1_000));
        // The query itself, masqueraded, is.
        assert!(seen.same_packet(&udp(GATEWAY, 40000, 0x1a2b_0100), T0 + 1_000));
    }

    #[test]
    fn only_first_packets_with_ports_or_an_echo_are_followed() {
        let mut p = syn(CLIENT, 40000, SERVER, 443);
        assert!(first_packet_kind(&p));
        p.tcp_flags = 0x12; // SYN-ACK: an answer
        assert!(!first_packet_kind(&p));
        p.tcp_flags = 0x10; // mid-stream
        assert!(!first_packet_kind(&p));
        let icmp = |protocol, icmp_type| Parsed {
            protocol,
            icmp_type,
            tcp_flags: 0,
            ..syn(CLIENT, 0, SERVER, 0)
        };
        assert!(first_packet_kind(&icmp(ipproto::ICMP, 8)));
        assert!(first_packet_kind(&icmp(ipproto::ICMPV6, 128)));
        // Errors, echo replies, and protocols without ports: no.
        assert!(!first_packet_kind(&icmp(ipproto::ICMP, 3)));
        assert!(!first_packet_kind(&icmp(ipproto::ICMP, 0)));
        assert!(!first_packet_kind(&icmp(50, 0)));
        assert!(first_packet_kind(&icmp(ipproto::UDP, 0)));
    }

    #[test]
    fn two_waiting_packets_nothing_tells_apart_are_learned_for_neither() {
        // Two clients' DNS queries of one length to one resolver, IP identification 0.
        let udp = |src, sport| Parsed {
            protocol: ipproto::UDP,
            tcp_flags: 0,
            tcp_seq: 0,
            ip_id: 0,
            payload_len: 40,
            ..syn(src, sport, SERVER, 53)
        };
        let (a, b) = (udp(CLIENT, 40000), udp(CLIENT + 1, 40001));
        let seen = Seen::of(&a, T0);
        assert_eq!(seen_index(&a), seen_index(&b));
        // B enters before A left: neither may be learned.
        assert!(!seen.yields_to(&b, T0 + 1_000));
        // A's entry long gone unforwarded (delivered to the host): B takes the slot.
        assert!(seen.yields_to(&b, T0 + FORWARD_WITHIN_NS));
        // A left already: B takes the slot.
        let mut left = seen;
        left.waiting = waiting::NO;
        assert!(left.yields_to(&b, T0 + 1_000));
        // Another fingerprint takes the slot whatever waits in it.
        let mut c = udp(CLIENT, 40002);
        c.payload_len = 41;
        assert!(seen.yields_to(&c, T0 + 1_000));
        // An ambiguous entry recognises nothing.
        let mut ambiguous = seen;
        ambiguous.waiting = waiting::AMBIGUOUS;
        let a_out = udp(GATEWAY, 40000);
        assert!(seen.same_packet(&a_out, T0 + 1_000));
        assert!(!ambiguous.same_packet(&a_out, T0 + 1_000));
    }

    #[test]
    fn slots_spread_over_the_table() {
        let mut hit = [false; SEEN_SLOTS as usize];
        for i in 0..4096u32 {
            let mut p = syn(CLIENT, 40000, SERVER, 443);
            p.tcp_seq = i.wrapping_mul(2_654_435_761);
            let s = seen_index(&p);
            assert!(s < SEEN_SLOTS);
            hit[s as usize] = true;
        }
        assert!(hit.iter().filter(|h| **h).count() > SEEN_SLOTS as usize * 9 / 10);
    }

    /// `NAT_ACTIVE`'s words name the two halves, and 0 none.
    #[test]
    fn the_active_word_names_a_half_of_the_filter() {
        assert_eq!(filter_base(0), None);
        assert_eq!(filter_base(1), Some(0));
        assert_eq!(filter_base(2), Some(FILTER_WORDS));
        for base in [0, FILTER_WORDS] {
            assert_eq!(filter_base(active_for(base)), Some(base));
        }
    }

    /// A masquerading gateway's answers (one outside address, every port, TCP and UDP) fall
    /// on distinct bits of the filter almost always, within its words.
    #[test]
    fn filter_bits_spread_a_gateways_ports() {
        let mut bits = [0u64; FILTER_WORDS as usize];
        let mut distinct = 0;
        for protocol in [ipproto::TCP, ipproto::UDP] {
            for port in 0..=u16::MAX {
                let k = Tuple {
                    src: v4(0xc612_c801),
                    dst: v4(0xc612_6401),
                    sport: 443,
                    dport: port,
                    protocol,
                    ip_version: 4,
                    _pad: [0; 2],
                };
                let (w, m) = filter_bit(&k.dst, k.dport, k.protocol);
                assert!(w < FILTER_WORDS);
                assert_eq!(m.count_ones(), 1);
                if bits[w as usize] & m == 0 {
                    distinct += 1;
                }
                bits[w as usize] |= m;
            }
        }
        // 131,072 keys into 2^21 bits: about 3% collide by chance.
        assert!(distinct > 131_072 * 95 / 100, "{distinct} distinct bits");
    }
}
