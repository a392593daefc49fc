//! Frame builders for packet-level tests: Ethernet (VLAN tags), IPv4 (every header field
//! overridable), IPv6 with extension headers, TCP, UDP, ICMP and the encapsulations the parser
//! follows. The one builder of the workspace: the integration tests use it as
//! `integration_tests::frames`; the `sensor` crate's replay tests and bench include this file
//! with `#[path]` (it depends on nothing but `std`).
//!
//! Addresses come from 198.18.0.0/15 and 2001:2::/48 only. Checksums are left zero: neither
//! the sensor's parser nor the kernel path it mirrors reads them.
#![allow(dead_code)]

/// `198.18.a.b` as bytes.
pub fn v4(a: u8, b: u8) -> [u8; 4] {
    [198, 18, a, b]
}

/// `2001:2::<last>` as bytes.
pub fn v6(last: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0..4].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
    a[14..16].copy_from_slice(&last.to_be_bytes());
    a
}

/// An Ethernet header (with VLAN tags as `(tpid, vid)`) followed by `payload`.
pub fn ethernet(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (tpid, vid) in tags {
        f.extend(tpid.to_be_bytes());
        f.extend(vid.to_be_bytes());
    }
    f.extend(ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 header fields; `None` means "derive the correct value".
#[derive(Clone, Debug, Default)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: u8,
    /// Options (padded to 4 bytes by the caller).
    pub options: Vec<u8>,
    /// Overrides the IHL nibble.
    pub ihl: Option<u8>,
    /// Overrides the version nibble.
    pub version: Option<u8>,
    /// Overrides the total length.
    pub total_len: Option<u16>,
    pub id: u16,
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
}

impl Ipv4 {
    pub fn new(src: [u8; 4], dst: [u8; 4], protocol: u8) -> Ipv4 {
        Ipv4 {
            src,
            dst,
            protocol,
            ..Ipv4::default()
        }
    }

    /// The header followed by `payload`.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        let ihl = self.ihl.unwrap_or((hlen / 4) as u8);
        let total = self.total_len.unwrap_or((hlen + payload.len()) as u16);
        let mut h = vec![(self.version.unwrap_or(4) << 4) | (ihl & 0x0f), 0];
        h.extend(total.to_be_bytes());
        h.extend(self.id.to_be_bytes());
        let ff = (u16::from(self.more_fragments) << 13) | (self.frag_offset & 0x1fff);
        h.extend(ff.to_be_bytes());
        h.extend([64, self.protocol, 0, 0]);
        h.extend(self.src);
        h.extend(self.dst);
        h.extend_from_slice(&self.options);
        h.extend_from_slice(payload);
        h
    }
}

/// An IPv6 header with extension headers `(type, bytes)` (each already 8-byte multiple, its
/// first byte rewritten with the next header), then `payload` of protocol `protocol`.
pub fn ipv6(
    src: [u8; 16],
    dst: [u8; 16],
    exts: &[(u8, Vec<u8>)],
    protocol: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = exts.get(i + 1).map(|e| e.0).unwrap_or(protocol);
        body.extend(b);
    }
    body.extend_from_slice(payload);
    let first = exts.first().map(|e| e.0).unwrap_or(protocol);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend((body.len() as u16).to_be_bytes());
    h.extend([first, 64]);
    h.extend(src);
    h.extend(dst);
    h.extend(body);
    h
}

/// An 8-byte IPv6 extension header of the options kind (hop-by-hop, destination options,
/// routing), length field 0.
pub fn ext8() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

/// An IPv6 fragment header: `offset` in 8-byte units.
pub fn ipv6_fragment(offset: u16, more: bool, id: u32) -> Vec<u8> {
    let fo = (offset << 3) | u16::from(more);
    let mut h = vec![0, 0];
    h.extend(fo.to_be_bytes());
    h.extend(id.to_be_bytes());
    h
}

/// A TCP segment (20-byte header unless `doff` overrides the data offset, in 32-bit words),
/// with sequence and acknowledgment numbers 1 (see [`tcp4_seq`] for real ones).
pub fn tcp(sport: u16, dport: u16, flags: u8, doff: Option<u8>, payload: &[u8]) -> Vec<u8> {
    tcp_seq(sport, dport, flags, doff, 1, 1, payload)
}

/// A TCP segment with sequence number `seq` and acknowledgment number `ack`.
pub fn tcp_seq(
    sport: u16,
    dport: u16,
    flags: u8,
    doff: Option<u8>,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(sport.to_be_bytes());
    t.extend(dport.to_be_bytes());
    t.extend(seq.to_be_bytes());
    t.extend(ack.to_be_bytes());
    t.extend([doff.unwrap_or(5) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// A UDP datagram (`len` overrides the length field).
pub fn udp(sport: u16, dport: u16, len: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend(sport.to_be_bytes());
    u.extend(dport.to_be_bytes());
    u.extend(len.unwrap_or(8 + payload.len() as u16).to_be_bytes());
    u.extend([0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An ICMP (or ICMPv6) message with identifier `id`.
pub fn icmp(kind: u8, code: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut c = vec![kind, code, 0, 0];
    c.extend(id.to_be_bytes());
    c.extend([0, 1]);
    c.extend_from_slice(payload);
    c
}

/// An Ethernet/IPv4/TCP frame, with sequence and acknowledgment numbers 1.
pub fn tcp4(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp4_seq(src, sport, dst, dport, flags, 1, 1, payload)
}

/// An Ethernet/IPv4/TCP frame with sequence number `seq` and acknowledgment number `ack`.
#[allow(clippy::too_many_arguments)]
pub fn tcp4_seq(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    ethernet(
        &[],
        0x0800,
        &Ipv4::new(src, dst, 6).build(&tcp_seq(sport, dport, flags, None, seq, ack, payload)),
    )
}

/// An Ethernet/IPv4/UDP frame.
pub fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(
        &[],
        0x0800,
        &Ipv4::new(src, dst, 17).build(&udp(sport, dport, None, payload)),
    )
}

/// TCP flag bits, for readability in tests.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

// Encapsulations: what the continuation program (`sensor_common::encap`) follows.

/// A VXLAN datagram's payload: the 8-byte header (I flag, VNI 42), then the Ethernet `frame`.
pub fn vxlan(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    v.extend_from_slice(frame);
    v
}

/// A Geneve header without options, then the Ethernet `frame`.
pub fn geneve(frame: &[u8]) -> Vec<u8> {
    let mut g = vec![0, 0, 0x65, 0x58, 0, 0, 42, 0];
    g.extend_from_slice(frame);
    g
}

/// A GRE header (version 0, a key) for a payload of ethertype `protocol`, then `payload`.
pub fn gre(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut g = vec![0x20, 0];
    g.extend(protocol.to_be_bytes());
    g.extend([0, 0, 0, 42]);
    g.extend_from_slice(payload);
    g
}

/// A GTP-U G-PDU (TEID 1), then the IP packet `ip`.
pub fn gtp_u(ip: &[u8]) -> Vec<u8> {
    let mut g = vec![0x30, 0xff];
    g.extend((ip.len() as u16).to_be_bytes());
    g.extend([0, 0, 0, 1]);
    g.extend_from_slice(ip);
    g
}

/// An MPLS stack of `labels` labels (bottom of stack on the last), then `payload`.
pub fn mpls(labels: usize, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for i in 0..labels {
        m.extend([0, 0x10, u8::from(i + 1 == labels), 64]);
    }
    m.extend_from_slice(payload);
    m
}

/// A PPPoE session header and the PPP protocol IPv4, then `ip`.
pub fn pppoe(ip: &[u8]) -> Vec<u8> {
    let mut p = vec![0x11, 0, 0, 1];
    p.extend(((ip.len() + 2) as u16).to_be_bytes());
    p.extend([0, 0x21]);
    p.extend_from_slice(ip);
    p
}

/// One frame of each encapsulation the parser follows beyond two VLAN tags, each carrying the
/// same TCP segment from `198.18.10.1:40000` to `198.18.10.2:80` (10 bytes of payload) between
/// tunnel endpoints `198.18.20.1` and `198.18.20.2` (2001:2::20:1/2 for IPv6), with its name.
pub fn encapsulated_frames() -> Vec<(&'static str, Vec<u8>)> {
    let (c, s) = (v4(10, 1), v4(10, 2));
    let (a, b) = (v4(20, 1), v4(20, 2));
    let inner = Ipv4::new(c, s, 6).build(&tcp(40000, 80, flags::ACK, None, &[7; 10]));
    let inner_frame = ethernet(&[], 0x0800, &inner);
    let outer = |protocol: u8, payload: &[u8]| {
        ethernet(&[], 0x0800, &Ipv4::new(a, b, protocol).build(payload))
    };
    let udp_outer = |sport, dport, payload: &[u8]| outer(17, &udp(sport, dport, None, payload));
    vec![
        (
            "qinq-3-tags",
            ethernet(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], 0x0800, &inner),
        ),
        ("mpls-2-labels", ethernet(&[], 0x8847, &mpls(2, &inner))),
        ("pppoe", ethernet(&[], 0x8864, &pppoe(&inner))),
        ("gre", outer(47, &gre(0x0800, &inner))),
        ("gre-teb", outer(47, &gre(0x6558, &inner_frame))),
        ("ipip", outer(4, &inner)),
        (
            "6in6",
            ethernet(
                &[],
                0x86dd,
                &ipv6(
                    v6(0x2001),
                    v6(0x2002),
                    &[],
                    41,
                    &ipv6(
                        v6(0x1001),
                        v6(0x1002),
                        &[],
                        6,
                        &tcp(40000, 80, flags::ACK, None, &[7; 10]),
                    ),
                ),
            ),
        ),
        ("vxlan", udp_outer(51000, 4789, &vxlan(&inner_frame))),
        ("geneve", udp_outer(51000, 6081, &geneve(&inner_frame))),
        ("gtp-u", udp_outer(2152, 2152, &gtp_u(&inner))),
    ]
}
