//! Capture writers and golden captures shared by the replay tests and the replay benchmark
//! (`#[path]`-included there), over the workspace's one frame builder (`tests/src/frames.rs`).
#![allow(dead_code)]

use std::{borrow::Cow, path::PathBuf, time::Duration};

use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};

#[path = "../../../tests/src/frames.rs"]
mod frames;
/// Only some of the test crates that include this module build frames with their own sequence
/// numbers.
#[allow(unused_imports)]
pub use frames::tcp4_seq;
pub use frames::{
    Ipv4, ethernet,
    flags::{ACK, FIN, PSH, RST, SYN},
    icmp, ipv6, tcp, tcp4, udp, udp4, v4, v6,
};

/// Frames with their capture time (Unix nanoseconds).
#[derive(Default)]
pub struct Frames(pub Vec<(u64, Vec<u8>)>);

impl Frames {
    pub fn push(&mut self, t_ns: u64, frame: Vec<u8>) {
        self.0.push((t_ns, frame));
    }

    /// A classic pcap (little endian, microseconds; the times must be whole microseconds).
    pub fn pcap(&self, link: DataLink) -> Vec<u8> {
        let header = PcapHeader {
            datalink: link,
            snaplen: 65_535,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).expect("pcap header");
        for (t, f) in &self.0 {
            assert_eq!(t % 1_000, 0, "pcap (µs) times must be whole microseconds");
            w.write_packet(&PcapPacket::new(
                Duration::from_nanos(*t),
                f.len() as u32,
                f,
            ))
            .expect("pcap packet");
        }
        w.into_writer()
    }

    /// A pcapng with one Ethernet interface with nanosecond timestamps (`if_tsresol` 9).
    pub fn pcapng(&self) -> Vec<u8> {
        let mut w = PcapNgWriter::with_endianness(Vec::new(), Endianness::Little).expect("shb");
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfTsResol(9)],
        })
        .expect("idb");
        for (t, f) in &self.0 {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(*t),
                original_len: f.len() as u32,
                data: Cow::Borrowed(f),
                options: vec![],
            })
            .expect("epb");
        }
        w.into_inner()
    }
}

/// The committed fixture captures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures")
}

/// The committed model.
pub fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model")
}

/// 2023-11-14T22:13:20Z: the golden captures' epoch.
pub const T0: u64 = 1_700_000_000_000_000_000;
/// One millisecond in ns.
pub const MS: u64 = 1_000_000;

/// The golden captures: (file name, bytes). Deterministic: the same bytes on every run.
pub fn golden_captures() -> Vec<(&'static str, Vec<u8>)> {
    let (c, s, silent) = (v4(0, 2), v4(0, 1), v4(0, 3));
    // TCP: SF, REJ, RSTO, RSTR, an S0 finalised by the idle sweep, and a late UDP packet that
    // moves the capture clock past the S0's timeout.
    let mut states = Frames::default();
    let t = T0;
    let sf = [
        (true, SYN, 0),
        (false, SYN | ACK, 0),
        (true, ACK, 0),
        (true, PSH | ACK, 100),
        (false, ACK, 0),
        (false, PSH | ACK, 300),
        (true, FIN | ACK, 0),
        (false, FIN | ACK, 0),
        (true, ACK, 0),
    ];
    for (i, (from_client, flags, len)) in sf.into_iter().enumerate() {
        let at = t + i as u64 * MS;
        states.push(
            at,
            if from_client {
                tcp4(c, 40000, s, 80, flags, &vec![b'x'; len])
            } else {
                tcp4(s, 80, c, 40000, flags, &vec![b'x'; len])
            },
        );
    }
    states.push(t + 100 * MS, tcp4(c, 40001, s, 23, SYN, &[]));
    states.push(t + 101 * MS, tcp4(s, 23, c, 40001, RST | ACK, &[]));
    let rsto = [
        (true, SYN, 0),
        (false, SYN | ACK, 0),
        (true, ACK, 0),
        (true, PSH | ACK, 50),
        (false, PSH | ACK, 60),
        (true, RST, 0),
    ];
    for (i, (from_client, flags, len)) in rsto.into_iter().enumerate() {
        let at = t + 200 * MS + i as u64 * MS;
        states.push(
            at,
            if from_client {
                tcp4(c, 40002, s, 7000, flags, &vec![b'x'; len])
            } else {
                tcp4(s, 7000, c, 40002, flags, &vec![b'x'; len])
            },
        );
    }
    let rstr = [
        (true, SYN, 0),
        (false, SYN | ACK, 0),
        (true, ACK, 0),
        (true, PSH | ACK, 10),
        (false, RST | ACK, 0),
    ];
    for (i, (from_client, flags, len)) in rstr.into_iter().enumerate() {
        let at = t + 300 * MS + i as u64 * MS;
        states.push(
            at,
            if from_client {
                tcp4(c, 40003, s, 7000, flags, &vec![b'x'; len])
            } else {
                tcp4(s, 7000, c, 40003, flags, &vec![b'x'; len])
            },
        );
    }
    for at in [400, 1400, 3400] {
        states.push(t + at * MS, tcp4(c, 40004, silent, 22, SYN, &[]));
    }
    states.push(t + 20_000 * MS, udp4(c, 5000, s, 123, &[b'u'; 48]));

    // UDP and ICMP: two DNS exchanges, a one-way datagram, a two-request ping.
    let mut ui = Frames::default();
    ui.push(t, udp4(c, 5353, s, 53, &[b'u'; 30]));
    ui.push(t + MS, udp4(s, 53, c, 5353, &[b'u'; 120]));
    ui.push(t + 500 * MS, udp4(c, 5354, s, 53, &[b'u'; 31]));
    ui.push(t + 501 * MS, udp4(s, 53, c, 5354, &[b'u'; 121]));
    ui.push(t + 600 * MS, udp4(c, 6000, s, 9999, &[b'u'; 10]));
    for (i, (req, at)) in [(true, 1000), (false, 1001), (true, 2000), (false, 2001)]
        .into_iter()
        .enumerate()
    {
        let _ = i;
        let (a, b, kind) = if req { (c, s, 8) } else { (s, c, 0) };
        ui.push(
            t + at * MS,
            ethernet(
                &[],
                0x0800,
                &Ipv4::new(a, b, 1).build(&icmp(kind, 0, 0x1234, &[0x55; 56])),
            ),
        );
    }

    // IPv6 (pcapng, nanosecond stamps): an HTTP-like exchange and an ICMPv6 echo.
    let (c6, s6) = (v6(2), v6(1));
    let mut six = Frames::default();
    let steps = [
        (true, SYN, 0),
        (false, SYN | ACK, 0),
        (true, ACK, 0),
        (true, PSH | ACK, 20),
        (false, PSH | ACK, 40),
        (true, FIN | ACK, 0),
        (false, FIN | ACK, 0),
        (true, ACK, 0),
    ];
    for (i, (from_client, flags, len)) in steps.into_iter().enumerate() {
        let at = t + i as u64 * MS + 123;
        let (a, ap, b, bp) = if from_client {
            (c6, 40010, s6, 80)
        } else {
            (s6, 80, c6, 40010)
        };
        six.push(
            at,
            ethernet(
                &[],
                0x86dd,
                &ipv6(a, b, &[], 6, &tcp(ap, bp, flags, None, &vec![b'y'; len])),
            ),
        );
    }
    six.push(
        t + 50 * MS,
        ethernet(
            &[],
            0x86dd,
            &ipv6(c6, s6, &[], 58, &icmp(128, 0, 7, &[1; 16])),
        ),
    );
    six.push(
        t + 51 * MS,
        ethernet(
            &[],
            0x86dd,
            &ipv6(s6, c6, &[], 58, &icmp(129, 0, 7, &[1; 16])),
        ),
    );

    // VLAN: 802.1Q-tagged DNS, and a QinQ-tagged SYN refused with RST.
    let mut vlan = Frames::default();
    let q = [(0x8100, 10)];
    let qinq = [(0x88a8, 100), (0x8100, 10)];
    vlan.push(
        t,
        ethernet(
            &q,
            0x0800,
            &Ipv4::new(c, s, 17).build(&udp(6001, 53, None, &[b'q'; 33])),
        ),
    );
    vlan.push(
        t + MS,
        ethernet(
            &q,
            0x0800,
            &Ipv4::new(s, c, 17).build(&udp(53, 6001, None, &[b'r'; 77])),
        ),
    );
    vlan.push(
        t + 10 * MS,
        ethernet(
            &qinq,
            0x0800,
            &Ipv4::new(c, s, 6).build(&tcp(40020, 25, SYN, None, &[])),
        ),
    );
    vlan.push(
        t + 11 * MS,
        ethernet(
            &qinq,
            0x0800,
            &Ipv4::new(s, c, 6).build(&tcp(25, 40020, RST | ACK, None, &[])),
        ),
    );

    vec![
        ("tcp_states.pcap", states.pcap(DataLink::ETHERNET)),
        ("udp_icmp.pcap", ui.pcap(DataLink::ETHERNET)),
        ("ipv6.pcapng", six.pcapng()),
        ("vlan.pcap", vlan.pcap(DataLink::ETHERNET)),
    ]
}
