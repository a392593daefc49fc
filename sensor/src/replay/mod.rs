//! Offline analysis: a capture file run through exactly what the live sensor does.
//!
//! ```text
//! pcap / pcapng ─► reader (pcap-file) ─► link layer ─► sensor_common::parse ─► table::update
//!   (the kernel program's own per-packet function, over user-space maps: [`UserTables`])
//!   ─► lifecycle::Lifecycle (the live sensor's, on the capture's clock) ─► ConnEvent
//!   ─► detect::Pipeline (the live feature engine and model) ─► rows
//! ```
//!
//! Parity with live mode is the point, so nothing here re-implements accounting or the
//! connection lifecycle: the packet parser and the flow-table update are `sensor_common`'s,
//! compiled once for the kernel and once for this module, and the lifecycle is
//! [`crate::lifecycle`], run here over [`UserTables`] with the capture's timestamps as its clock.
//! Time moves with the packets: idle deadlines fall due when a packet's timestamp passes them,
//! so the cost follows the packets, not the span of the capture's clock.
//!
//! What cannot be the same: a capture has no GSO super-packets (each frame counts once, as on the
//! wire), the kernel's timestamps are its own monotonic clock where replay uses the capture's,
//! and the live sensor finalises an idle connection at the first tick of its loop after the
//! deadline where replay does it at the deadline (a packet arriving within that tick joins the
//! old connection live, and starts a new one here).

pub mod output;
mod reader;

mod driver;
mod link;
mod replayer;
mod tables;

use std::path::PathBuf;

use crate::{capture::CaptureConfig, lifecycle::Timeouts};

pub use driver::{Output, ReplayReport, replay_files};
pub use link::parse_frame;
pub use reader::{LinkType, PacketRef, for_each_packet};
pub use replayer::Replayer;
pub use tables::UserTables;

/// Capacity of the kernel's fragment map (`FRAGS` in `sensor-ebpf`).
pub const FRAG_TABLE_CAPACITY: usize = 4_096;

/// How to replay: the live sensor's settings that shape its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Flow table capacity (`--table-size` of the live sensor).
    pub table_size: u32,
    pub timeouts: Timeouts,
    /// [`LifecycleConfig::settled_records`](crate::lifecycle::LifecycleConfig::settled_records).
    pub settled_records: bool,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            table_size: CaptureConfig::DEFAULT_TABLE_SIZE,
            timeouts: Timeouts::default(),
            settled_records: true,
        }
    }
}

/// What went wrong reading a capture. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{file}: cannot read the capture file")]
    Open {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a pcap or pcapng capture (magic number {magic:#010x})")]
    NotACapture { file: PathBuf, magic: u32 },
    #[error("{file}: bad capture file header")]
    Header {
        file: PathBuf,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error(
        "{file}: packet {packet}: the capture is truncated or corrupt ({} earlier packets were replayed)",
        packet - 1
    )]
    Corrupt {
        file: PathBuf,
        /// 1-based number of the packet that could not be read, as Wireshark numbers frames.
        packet: u64,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("{file}: packet {packet}: {reason}")]
    BadPacket {
        file: PathBuf,
        packet: u64,
        reason: &'static str,
    },
    #[error(
        "{file}: packet {packet}: link type {link_type} is not supported (Ethernet, raw IP, Linux cooked v1 and v2, BSD loopback, PPP, Cisco HDLC and 802.11 captures are)"
    )]
    UnsupportedLinkType {
        file: PathBuf,
        packet: u64,
        /// The pcap LINKTYPE_ value and its name.
        link_type: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::{flow::ipproto, parse::ParseError};

    /// IPv4/UDP 198.18.0.1:1000 -> 198.18.0.2:53 with 4 bytes.
    fn ip4() -> Vec<u8> {
        let mut f = vec![0x45, 0, 0, 32, 0, 1, 0, 0, 64, ipproto::UDP, 0, 0];
        f.extend([198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend([0x03, 0xe8, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
        f
    }

    /// IPv6/ICMPv6 echo request 2001:2::1 -> 2001:2::2.
    fn ip6() -> Vec<u8> {
        let mut f = vec![0x60, 0, 0, 0, 0, 8, ipproto::ICMPV6, 64];
        f.extend([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend([128, 0, 0, 0, 0, 9, 0, 1]);
        f
    }

    fn with(header: &[u8], ip: &[u8]) -> Vec<u8> {
        [header, ip].concat()
    }

    #[test]
    fn link_types_lead_to_ip() {
        let ok4 = |link, header: &[u8]| {
            let p = parse_frame(link, &with(header, &ip4())).unwrap();
            assert_eq!((p.ip_version, p.dport), (4, 53), "{link:?} {header:?}");
        };
        let ok6 = |link, header: &[u8]| {
            let p = parse_frame(link, &with(header, &ip6())).unwrap();
            assert_eq!((p.ip_version, p.icmp_type), (6, 128), "{link:?} {header:?}");
        };
        // BSD loopback: the family in either byte order; AF_INET6 of every system.
        ok4(LinkType::Null, &[2, 0, 0, 0]);
        ok4(LinkType::Null, &[0, 0, 0, 2]);
        for af6 in [10u32, 24, 28, 30] {
            ok6(LinkType::Null, &af6.to_le_bytes());
            ok6(LinkType::Null, &af6.to_be_bytes());
        }
        assert_eq!(
            parse_frame(LinkType::Null, &with(&[7, 0, 0, 0], &ip4())),
            Err(ParseError::NonIp)
        );
        // PPP: with and without address and control, with a compressed protocol field.
        ok4(LinkType::Ppp, &[0xff, 0x03, 0x00, 0x21]);
        ok4(LinkType::Ppp, &[0x00, 0x21]);
        ok4(LinkType::Ppp, &[0x21]);
        ok6(LinkType::Ppp, &[0xff, 0x03, 0x00, 0x57]);
        assert_eq!(
            parse_frame(
                LinkType::Ppp,
                &with(&[0xff, 0x03, 0xc0, 0x21], &[1, 1, 0, 4])
            ),
            Err(ParseError::NonIp)
        );
        // Cisco HDLC: address, control, ethertype.
        ok4(LinkType::CiscoHdlc, &[0x0f, 0x00, 0x08, 0x00]);
        ok6(LinkType::CiscoHdlc, &[0x8f, 0x00, 0x86, 0xdd]);
        // Linux cooked v1 (protocol at 14) and v2 (protocol at 0, 20-byte header).
        let mut sll = vec![0u8; 14];
        sll.extend([0x08, 0x00]);
        ok4(LinkType::LinuxSll, &sll);
        let mut sll2 = vec![0x86, 0xdd];
        sll2.extend([0u8; 18]);
        ok6(LinkType::LinuxSll2, &sll2);
        // 802.11 data frames with LLC/SNAP: plain, QoS with four addresses, behind radiotap
        // and PPI; management frames and protected ones are not IP.
        let mut wifi = vec![0x08, 0x00];
        wifi.extend([0u8; 22]);
        wifi.extend([0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
        ok4(LinkType::Ieee80211, &wifi);
        let mut qos = vec![0x88, 0x03];
        qos.extend([0u8; 22 + 6 + 2]);
        qos.extend([0xaa, 0xaa, 0x03, 0, 0, 0, 0x86, 0xdd]);
        ok6(LinkType::Ieee80211, &qos);
        ok4(
            LinkType::Radiotap,
            &[&[0, 0, 8, 0, 0, 0, 0, 0][..], &wifi].concat(),
        );
        ok4(
            LinkType::Ppi,
            &[&[0, 0, 8, 0, 105, 0, 0, 0][..], &wifi].concat(),
        );
        let mut beacon = wifi.clone();
        beacon[0] = 0x80;
        let mut protected = wifi.clone();
        protected[1] = 0x40;
        for f in [beacon, protected] {
            assert_eq!(
                parse_frame(LinkType::Ieee80211, &with(&f, &ip4())),
                Err(ParseError::NonIp)
            );
        }
        // Raw IP of either version, and a header cut short.
        ok4(LinkType::RawIp, &[]);
        ok6(LinkType::RawIp, &[]);
        for link in [
            LinkType::Null,
            LinkType::Ppp,
            LinkType::CiscoHdlc,
            LinkType::LinuxSll2,
        ] {
            assert_eq!(
                parse_frame(link, &[]),
                Err(ParseError::Truncated),
                "{link:?}"
            );
        }
    }
}
