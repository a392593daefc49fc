//! The flow table's key and value, and the ring-buffer event.
//!
//! A connection is stored once, under a *canonical* key: its two endpoints ordered so that
//! `(addr_lo, port_lo) <= (addr_hi, port_hi)`. Packets in both directions therefore find the same
//! entry with one lookup. Per-direction counters are indexed by [`Side`] (which endpoint sent the
//! packet), and the value records which side originated the connection.

/// IP protocol numbers the sensor parses (every other protocol is accounted by addresses).
pub mod ipproto {
    pub const ICMP: u8 = 1;
    /// IPv4 in IP.
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    /// IPv6 in IP.
    pub const IPV6: u8 = 41;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header": nothing follows.
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const SCTP: u8 = 132;
}

/// Which endpoint of the canonical key sent a packet.
pub type Side = usize;
/// The endpoint `(addr_lo, port_lo)`.
pub const SIDE_LO: Side = 0;
/// The endpoint `(addr_hi, port_hi)`.
pub const SIDE_HI: Side = 1;

/// Per-direction TCP history bits, kept in [`FlowValue::history`] (one byte per side).
///
/// They are what the Zeek `conn_state` derivation needs (see [`crate::conn_state`]): which
/// handshake packets each side sent, whether it closed (FIN) or aborted (RST).
pub mod history {
    /// A SYN without ACK.
    pub const SYN: u8 = 1 << 0;
    /// A SYN with ACK.
    pub const SYN_ACK: u8 = 1 << 1;
    /// A packet without SYN (a bare ACK, data, FIN or RST).
    pub const NON_SYN: u8 = 1 << 2;
    /// A FIN.
    pub const FIN: u8 = 1 << 3;
    /// A RST.
    pub const RST: u8 = 1 << 4;
    /// A packet carrying payload.
    pub const DATA: u8 = 1 << 5;
    /// A packet without SYN or RST that carries ACK: it acknowledges the peer's SYN, so its
    /// sender completed a handshake even where the peer's SYN-ACK was not seen (one-sided
    /// capture, asymmetric routing).
    pub const ACK: u8 = 1 << 6;
    /// A packet sent after both sides' FINs (the final ACK, a retransmitted FIN): set on the
    /// first side that sends one, on neither after that. Not a Zeek letter.
    pub const AFTER_FINS: u8 = 1 << 7;
}

/// The flow table key. IPv4 addresses occupy the first word of each address, the rest is zero.
///
/// For ICMP echo request/reply (v4 and v6) both ports hold the echo identifier, so a request and
/// its reply meet in one entry; for other ICMP messages `port_lo`/`port_hi` are zero and the
/// message type is kept in the value.
///
/// 8-aligned (its size is 40 either way, and so are the layouts that embed it), so that the
/// flow table compares and hashes it as five 64-bit words ([`FlowKey::words`]).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Lower endpoint's address, network byte order words.
    pub addr_lo: [u32; 4],
    /// Higher endpoint's address, network byte order words.
    pub addr_hi: [u32; 4],
    /// Lower endpoint's port (host byte order).
    pub port_lo: u16,
    /// Higher endpoint's port (host byte order).
    pub port_hi: u16,
    /// IP protocol number ([`ipproto`]).
    pub protocol: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Explicit padding, always zero (the key is hashed byte by byte).
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// Builds the canonical key of a packet from `src` to `dst`, and says which side sent it.
    #[inline(always)]
    pub fn canonical(
        src: &[u32; 4],
        sport: u16,
        dst: &[u32; 4],
        dport: u16,
        protocol: u8,
        ip_version: u8,
    ) -> (FlowKey, Side) {
        if endpoint_le(src, sport, dst, dport) {
            (
                FlowKey {
                    addr_lo: *src,
                    addr_hi: *dst,
                    port_lo: sport,
                    port_hi: dport,
                    protocol,
                    ip_version,
                    _pad: [0; 2],
                },
                SIDE_LO,
            )
        } else {
            (
                FlowKey {
                    addr_lo: *dst,
                    addr_hi: *src,
                    port_lo: dport,
                    port_hi: sport,
                    protocol,
                    ip_version,
                    _pad: [0; 2],
                },
                SIDE_HI,
            )
        }
    }

    /// The key as five native-endian 64-bit words (the last one holds ports, protocol, IP
    /// version and the zero padding).
    #[inline(always)]
    pub fn words(&self) -> [u64; 5] {
        // SAFETY: `FlowKey` is `repr(C)`, 40 bytes, 8-aligned, without implicit padding, so it
        // is readable as `[u64; 5]` (every bit pattern is a valid u64).
        unsafe { *(self as *const FlowKey).cast::<[u64; 5]>() }
    }

    /// The address and port of a side.
    #[inline(always)]
    pub fn endpoint(&self, side: Side) -> (&[u32; 4], u16) {
        if side == SIDE_LO {
            (&self.addr_lo, self.port_lo)
        } else {
            (&self.addr_hi, self.port_hi)
        }
    }
}

/// `(a, ap) <= (b, bp)`, comparing addresses word by word in network order.
#[inline(always)]
fn endpoint_le(a: &[u32; 4], ap: u16, b: &[u32; 4], bp: u16) -> bool {
    let mut i = 0;
    while i < 4 {
        let (x, y) = (u32::from_be(a[i]), u32::from_be(b[i]));
        if x != y {
            return x < y;
        }
        i += 1;
    }
    ap <= bp
}

/// Bits of [`FlowValue::flags`].
pub mod value_flags {
    /// Source and destination address and port are equal (KDD `land`).
    pub const LAND: u8 = 1 << 0;
    /// The first packet seen was a SYN-ACK, so the originator was inferred as its receiver.
    pub const FLIPPED: u8 = 1 << 1;
    /// The first packet went to a link-layer group address (broadcast, multicast).
    pub const GROUP: u8 = 1 << 2;
}

/// Per-connection counters, updated in place by every packet (see [`crate::account`]).
///
/// Field order is the flow table's cache layout (`crate::slots::FlowSlot`): the words every
/// packet writes besides its counters (`last_seen_ns`, the TCP history) come first, so that they
/// share the slot's first cache line with its state and key; the counters fill the second line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Time of the latest packet. Exact when that packet created the flow or added a TCP
    /// history bit (handshake, first payload, FIN, RST); otherwise the kernel's coarse clock,
    /// up to one jiffy (4 ms at CONFIG_HZ=250) early (see [`crate::table::Clock`]).
    pub last_seen_ns: u64,
    /// TCP [`history`] bits of each side.
    pub history: [u8; 2],
    /// The [`Side`] that originated the connection.
    pub orig_side: u8,
    /// [`value_flags`] bits.
    pub flags: u8,
    /// ICMP type of the originator's first packet (0 for TCP/UDP).
    pub icmp_type: u8,
    /// ICMP code of the originator's first packet.
    pub icmp_code: u8,
    /// The tunnel kind ([`crate::parse::tunnel`]) this connection's packets came through, 0
    /// when they were not tunnelled (see [`crate::encap`]).
    pub tunnel: u8,
    /// The tunnel kind this connection carries, 0 when it is not a tunnel's outer connection.
    pub carries: u8,
    /// Packets sent by each [`Side`].
    pub packets: [u64; 2],
    /// Transport payload bytes sent by each [`Side`] (from the IP header lengths).
    pub payload_bytes: [u64; 2],
    /// `bpf_ktime_get_ns()` of the first packet (CLOCK_MONOTONIC), or the capture time in replay.
    pub first_seen_ns: u64,
    /// Packets with the TCP URG flag (both directions), saturating (plain adds: a rare
    /// counter, which two CPUs' packets of one flow almost never race on).
    pub urgent_packets: u16,
    /// Wrong IP fragments (see [`crate::parse::Fragment::wrong`]), saturating, as above.
    pub wrong_fragments: u16,
    /// When the TCP originator's first ACK came (normally the handshake's third packet), in
    /// [`ORIG_ACK_UNIT_NS`] after [`Self::first_seen_ns`], plus one; 0 until it came (read it
    /// with [`Self::orig_ack_ns`]). With the responder's SYN-ACK it times the originator's
    /// round trip from the sensor, which a close waits on for the originator's final ACK
    /// (`sensor`'s lifecycle). Written once per connection, by the originator's packet that
    /// first carries an ACK (a responder's packet never writes it, so it cannot race it back to
    /// 0), so it sits in the slot's second cache line. 32 bits, so that the sequence fields
    /// below fit the slot; an ACK more than 73 minutes after the first packet saturates.
    pub orig_ack_units: u32,
    /// TCP: the sequence number each [`Side`]'s data starts at (its first packet's, after a
    /// SYN's octet), set by that side's first packet.
    pub seq_base: [u32; 2],
    /// TCP: how far each [`Side`]'s sequence space reached from [`Self::seq_base`]: the highest
    /// sequence number its packets carried (a FIN's octet included) or its peer acknowledged,
    /// as Zeek sizes a side (its `orig_bytes`/`resp_bytes`: retransmitted data counts once,
    /// data the capture missed but the peer acknowledged counts). Read with
    /// [`crate::account::stream_bytes`].
    pub seq_top: [u32; 2],
}

/// `*to = *from`, as four word copies on the BPF target. A plain assignment between two map
/// values compiled to a call of the BPF build's `memmove`, a byte-by-byte loop (16 iterations,
/// about 130 instructions), in each place that copied one (an answer undone, a first packet remembered, a fragment's key): LLVM turned
/// the load and store into a `memmove` for want of knowing that the two do not overlap, and the
/// BPF backend expands only `memcpy` inline. A copy between a `&mut` and a `&` is a `memcpy`.
#[inline(always)]
pub fn copy_address(to: &mut [u32; 4], from: &[u32; 4]) {
    // SAFETY: both point to 4 valid, aligned `u32`s, and a `&mut` never overlaps a `&`.
    unsafe { core::ptr::copy_nonoverlapping(from.as_ptr(), to.as_mut_ptr(), 4) };
}

/// `*dst = *src` as 64-bit loads and stores that the compiler keeps apart. Why not the
/// assignment: a new flow's value is mostly zeros, and LLVM merged the zero fields' stores into
/// `memset` calls (34 and 24 bytes), which the BPF build runs as a byte-by-byte loop (its
/// `memset` is `compiler_builtins`' generic one): about 250 instructions per new flow, where
/// this is 20. Used wherever a new value is
/// written into the table (an insert, a port-reused connection's restart).
///
/// # Safety
/// `dst` and `src` must be valid, 8-aligned and not overlap; `T`'s size a multiple of 8.
#[inline(always)]
pub unsafe fn copy_words<T>(dst: *mut T, src: *const T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(8)) };
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: within both values (the caller's contract), word by word.
        unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) };
        i += 1;
    }
}

/// The unit of [`FlowValue::orig_ack_units`]: 1,024 ns (a shift, not a division, in the
/// kernel).
pub const ORIG_ACK_UNIT_NS: u64 = 1 << ORIG_ACK_UNIT_SHIFT;
/// `log2` of [`ORIG_ACK_UNIT_NS`].
pub const ORIG_ACK_UNIT_SHIFT: u32 = 10;

impl FlowValue {
    /// When the TCP originator's first ACK came (the table clock, to the unit of
    /// [`ORIG_ACK_UNIT_NS`]), or 0 if it has not.
    pub fn orig_ack_ns(&self) -> u64 {
        match self.orig_ack_units {
            0 => 0,
            u => self.first_seen_ns + (u64::from(u - 1) << ORIG_ACK_UNIT_SHIFT),
        }
    }

    /// Records `at_ns` as the time of the TCP originator's first ACK
    /// ([`Self::orig_ack_units`]).
    #[inline(always)]
    pub fn set_orig_ack_ns(&mut self, at_ns: u64) {
        let units = at_ns.saturating_sub(self.first_seen_ns) >> ORIG_ACK_UNIT_SHIFT;
        self.orig_ack_units = units.min(u64::from(u32::MAX - 1)) as u32 + 1;
    }
}

/// What a packet did to its connection that user space must learn at once: bits of
/// [`FlowEvent::kinds`]. One packet may do several things (a responder's RST both answers and
/// finishes a connection attempt).
pub mod event {
    /// Both sides sent FIN: the TCP connection is finished.
    pub const FIN_BOTH: u32 = 1 << 0;
    /// A side sent RST: the TCP connection is finished.
    pub const RST: u32 = 1 << 1;
    /// The packet created the flow (or restarted it for a new connection on a reused
    /// 5-tuple): a connection began.
    pub const OPEN: u32 = 1 << 2;
    /// The outcome of the originator's SYN became known: the responder's first packet
    /// (SYN-ACK, RST, ...) or, where that was not seen, the originator's first ACK.
    pub const ANSWER: u32 = 1 << 3;
    /// Either way of finishing.
    pub const FINISHED: u32 = FIN_BOTH | RST;
    /// The flow was taken out of a full table to make room for a new one (an unanswered
    /// attempt, see `crate::slots`): its record is final as it stands, at
    /// [`super::FlowEvent::evicted_ns`]. Sent alone, never with other bits.
    pub const EVICTED: u32 = 1 << 4;
    /// A SYN reused the 5-tuple of a connection that had ended (FIN or RST) and restarted its
    /// entry in place: the value is the old connection's as it ended, sent before the new
    /// connection's [`OPEN`]. Its own finish event may have been lost (a full ring buffer),
    /// and the restart overwrites the entry that the table scan would otherwise have found.
    /// Sent alone, never with other bits.
    pub const REPLACED: u32 = 1 << 5;
    /// The first packet after both FINs (normally the final ACK): a FIN-closed connection's
    /// record waits for it (or for a short settle, see `sensor::lifecycle`), so that it counts
    /// the final ACK as Zeek does.
    pub const CLOSED: u32 = 1 << 6;
}

/// Ring-buffer message: what a packet did to its connection ([`event`] bits), with the entry's
/// value as that packet left it (for [`event::EVICTED`]: as it was when it left the table).
///
/// Carrying the snapshot (rather than letting user space look the entry up) keeps the record
/// exact when the 5-tuple is reused at once by a new connection (a client reusing its port while
/// the event is still queued), and spares user space a map lookup per connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub key: FlowKey,
    pub value: FlowValue,
    /// [`event`] bits.
    pub kinds: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// For [`event::EVICTED`] and [`event::REPLACED`]: when the flow left the table (the
    /// evicting or restarting packet's time, on the flows' clock); 0 for the other events,
    /// whose time is the value's.
    pub evicted_ns: u64,
}

/// Key of the parking map (`map_names::PARKED`): a connection whose entry a port-reusing SYN
/// restarted while the ring buffer had no room for its [`event::REPLACED`] event. The value
/// is the old connection's [`FlowValue`] as it ended; the start time tells two connections of
/// one 5-tuple apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParkedKey {
    pub key: FlowKey,
    pub first_seen_ns: u64,
}

/// Key of the fragment map: the IP fragment identity (RFC 791 / RFC 8200).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// IPv4 identification (16 bits) or IPv6 fragment identification (32 bits).
    pub id: u32,
    pub protocol: u8,
    pub ip_version: u8,
    pub _pad: [u8; 2],
}

/// What the fragment map remembers of a first fragment: its flow and the side that sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    pub key: FlowKey,
    pub side: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, contain only integers and explicit padding
    // fields (no implicit padding), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ParkedKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 16 + 16 + 2 + 2 + 1 + 1 + 2);
        assert_eq!(core::mem::align_of::<FlowKey>(), 8);
        assert_eq!(core::mem::size_of::<FragValue>(), 40 + 4 + 4);
        assert_eq!(
            core::mem::size_of::<FlowValue>(),
            8 + 2 + 1 + 1 + 1 + 1 + 2 + 16 + 16 + 8 + 2 + 2 + 4 + 8 + 8
        );
        assert_eq!(core::mem::offset_of!(FlowValue, packets), 16);
        assert_eq!(
            core::mem::size_of::<FlowEvent>(),
            40 + core::mem::size_of::<FlowValue>() + 8 + 8
        );
        assert_eq!(core::mem::size_of::<FragKey>(), 16 + 16 + 4 + 4);
    }

    #[test]
    fn canonical_key_is_the_same_for_both_directions() {
        let a = [u32::to_be(0xc612_0001), 0, 0, 0];
        let b = [u32::to_be(0xc612_0002), 0, 0, 0];
        let (k1, s1) = FlowKey::canonical(&a, 40000, &b, 80, ipproto::TCP, 4);
        let (k2, s2) = FlowKey::canonical(&b, 80, &a, 40000, ipproto::TCP, 4);
        assert_eq!(k1, k2);
        assert_eq!(s1, SIDE_LO);
        assert_eq!(s2, SIDE_HI);
        // Same address: the port decides.
        let (k3, s3) = FlowKey::canonical(&a, 9, &a, 8, ipproto::UDP, 4);
        assert_eq!((k3.port_lo, k3.port_hi, s3), (8, 9, SIDE_HI));
    }
}
