//! Capture files: pcap (micro- and nanosecond, either byte order) and pcapng, read with the
//! `pcap-file` crate; this module only numbers the packets, converts timestamps and link types,
//! and turns the crate's errors into ones that name the file and the packet.

use std::{
    fs::File,
    io::{Cursor, Read},
    path::Path,
};

use pcap_file::{
    DataLink, TsResolution,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader, blocks::interface_description::InterfaceDescriptionOption},
};

use super::ReplayError;

/// The link layers replay understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1): what the sensor sees on an interface.
    Ethernet,
    /// LINKTYPE_RAW (101; also the platform values 12 and 14 that some files carry): IPv4 or
    /// IPv6 by the version nibble.
    RawIp,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_LINUX_SLL (113): `tcpdump -i any` on older systems.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): `tcpdump -i any` on current systems.
    LinuxSll2,
    /// LINKTYPE_NULL (0) and LINKTYPE_LOOP (108): BSD and macOS loopback, a 4-byte address
    /// family (in the capturing machine's byte order for NULL, big-endian for LOOP: both are
    /// accepted either way).
    Null,
    /// LINKTYPE_PPP (9) and LINKTYPE_PPP_HDLC (50): PPP, with or without the HDLC address and
    /// control bytes, with a one- or two-byte protocol field.
    Ppp,
    /// LINKTYPE_C_HDLC (104): Cisco HDLC, an ethertype after address and control.
    CiscoHdlc,
    /// LINKTYPE_IEEE802_11 (105): Wi-Fi data frames with LLC/SNAP.
    Ieee80211,
    /// LINKTYPE_IEEE802_11_RADIOTAP (127): the same behind a radiotap header.
    Radiotap,
    /// LINKTYPE_PPI (192): the same behind a PPI header.
    Ppi,
}

impl LinkType {
    fn of(d: DataLink) -> Option<LinkType> {
        match d {
            DataLink::ETHERNET => Some(LinkType::Ethernet),
            DataLink::RAW => Some(LinkType::RawIp),
            DataLink::IPV4 => Some(LinkType::Ipv4),
            DataLink::IPV6 => Some(LinkType::Ipv6),
            DataLink::LINUX_SLL => Some(LinkType::LinuxSll),
            DataLink::LINUX_SLL2 => Some(LinkType::LinuxSll2),
            DataLink::NULL | DataLink::LOOP => Some(LinkType::Null),
            DataLink::PPP | DataLink::PPP_HDLC => Some(LinkType::Ppp),
            DataLink::C_HDLC => Some(LinkType::CiscoHdlc),
            DataLink::IEEE802_11 => Some(LinkType::Ieee80211),
            DataLink::IEEE802_11_RADIOTAP => Some(LinkType::Radiotap),
            DataLink::PPI => Some(LinkType::Ppi),
            DataLink::Unknown(12 | 14) => Some(LinkType::RawIp),
            _ => None,
        }
    }
}

/// One captured packet.
#[derive(Clone, Copy, Debug)]
pub struct PacketRef<'a> {
    /// 1-based number in its file (pcapng: counting packet blocks only), as Wireshark shows.
    pub number: u64,
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire (may exceed `data.len()` when the capture was cut at a snap length).
    pub wire_len: u32,
    pub link: LinkType,
    pub data: &'a [u8],
}

const PCAP_MAGICS: [u32; 2] = [0xa1b2_c3d4, 0xa1b2_3c4d];
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;

fn link_error(file: &Path, packet: u64, d: DataLink) -> ReplayError {
    ReplayError::UnsupportedLinkType {
        file: file.to_path_buf(),
        packet,
        link_type: format!("{} ({d:?})", u32::from(d)),
    }
}

/// Calls `f` on every packet of the capture at `path`, in file order; returns how many there
/// were. On a damaged packet, the packets before it have been passed to `f` and the error names
/// the damaged packet's number.
pub fn for_each_packet(path: &Path, mut f: impl FnMut(&PacketRef<'_>)) -> Result<u64, ReplayError> {
    let open = |source| ReplayError::Open {
        file: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(open)?;
    let (le, be) = (u32::from_le_bytes(magic), u32::from_be_bytes(magic));
    // The crate reads the magic number again: hand it back in front of the rest.
    let input = Cursor::new(magic).chain(file);
    if PCAP_MAGICS.contains(&le) || PCAP_MAGICS.contains(&be) {
        read_pcap(path, input, &mut f)
    } else if le == PCAPNG_MAGIC {
        read_pcapng(path, input, &mut f)
    } else {
        Err(ReplayError::NotACapture {
            file: path.to_path_buf(),
            magic: be,
        })
    }
}

fn read_pcap(
    path: &Path,
    input: impl Read,
    f: &mut impl FnMut(&PacketRef<'_>),
) -> Result<u64, ReplayError> {
    let mut r = PcapReader::new(input).map_err(|source| ReplayError::Header {
        file: path.to_path_buf(),
        source,
    })?;
    let header = r.header();
    let frac_ns: u64 = match header.ts_resolution {
        TsResolution::MicroSecond => 1_000,
        TsResolution::NanoSecond => 1,
    };
    let Some(link) = LinkType::of(header.datalink) else {
        return Err(link_error(path, 1, header.datalink));
    };
    let mut n = 0u64;
    // Raw packets: the crate's validated `next_packet` rejects `orig_len > snaplen`, which is
    // exactly what a capture cut with `tcpdump -s` contains.
    while let Some(pkt) = r.next_raw_packet() {
        let number = n + 1;
        let at = At { path, number };
        let pkt = pkt.map_err(|e| at.corrupt(e))?;
        let bad = |reason| at.bad(reason);
        if u64::from(pkt.ts_frac) * frac_ns >= 1_000_000_000 {
            return Err(bad("timestamp fraction is a second or more"));
        }
        if pkt.incl_len > pkt.orig_len {
            return Err(bad("captured length exceeds the length on the wire"));
        }
        n = number;
        f(&PacketRef {
            number,
            ts_ns: u64::from(pkt.ts_sec) * 1_000_000_000 + u64::from(pkt.ts_frac) * frac_ns,
            wire_len: pkt.orig_len,
            link,
            data: &pkt.data,
        });
    }
    Ok(n)
}

/// Packet `number` (from 1) of the capture `path`, for its errors.
#[derive(Clone, Copy)]
struct At<'a> {
    path: &'a Path,
    number: u64,
}

impl At<'_> {
    /// The reader could not read the packet (or block) at all.
    fn corrupt(self, source: pcap_file::PcapError) -> ReplayError {
        ReplayError::Corrupt {
            file: self.path.to_path_buf(),
            packet: self.number,
            source,
        }
    }

    /// The packet was read and is inconsistent.
    fn bad(self, reason: &'static str) -> ReplayError {
        ReplayError::BadPacket {
            file: self.path.to_path_buf(),
            packet: self.number,
            reason,
        }
    }
}

/// An interface of a pcapng section: its link type and timestamp unit.
struct Interface {
    link: DataLink,
    /// `if_tsresol`: bit 7 clear = 10^-n s, set = 2^-n s. Default 6 (microseconds).
    tsresol: u8,
}

/// A pcapng timestamp in `tsresol` units as Unix nanoseconds.
fn pcapng_ns(ticks: u64, tsresol: u8) -> u64 {
    let n = u32::from(tsresol & 0x7f);
    let ns = if tsresol & 0x80 == 0 {
        if n <= 9 {
            u128::from(ticks) * 10u128.pow(9 - n)
        } else {
            u128::from(ticks) / 10u128.pow(n.min(38) - 9)
        }
    } else {
        (u128::from(ticks) * 1_000_000_000) >> n.min(127)
    };
    ns.min(u128::from(u64::MAX)) as u64
}

fn read_pcapng(
    path: &Path,
    input: impl Read,
    f: &mut impl FnMut(&PacketRef<'_>),
) -> Result<u64, ReplayError> {
    let mut r = PcapNgReader::new(input).map_err(|source| ReplayError::Header {
        file: path.to_path_buf(),
        source,
    })?;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut n = 0u64;
    let mut last_ts = 0u64;
    while let Some(block) = r.next_block() {
        let number = n + 1;
        let at = At { path, number };
        let block = block.map_err(|e| at.corrupt(e))?;
        let bad = |reason| at.bad(reason);
        // (interface, timestamp in that interface's units or None, wire length, data)
        let (iface, ticks, wire_len, data) = match &block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                let tsresol = idb
                    .options
                    .iter()
                    .find_map(|o| match o {
                        InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                        _ => None,
                    })
                    .unwrap_or(6);
                interfaces.push(Interface {
                    link: idb.linktype,
                    tsresol,
                });
                continue;
            }
            // The crate reads the 64-bit timestamp as nanoseconds whatever `if_tsresol` says:
            // take the raw value back and scale it ourselves.
            Block::EnhancedPacket(p) => (
                p.interface_id as usize,
                Some(p.timestamp.as_nanos() as u64),
                p.original_len,
                &p.data[..],
            ),
            Block::Packet(p) => (
                usize::from(p.interface_id),
                Some(p.timestamp),
                p.original_len,
                &p.data[..],
            ),
            // No timestamp: take the previous packet's.
            Block::SimplePacket(p) => (0, None, p.original_len, &p.data[..]),
            _ => continue,
        };
        let Some(i) = interfaces.get(iface) else {
            return Err(bad("no interface description block for its interface id"));
        };
        let Some(link) = LinkType::of(i.link) else {
            return Err(link_error(path, number, i.link));
        };
        let ts_ns = ticks.map_or(last_ts, |t| pcapng_ns(t, i.tsresol));
        last_ts = ts_ns;
        n = number;
        f(&PacketRef {
            number,
            ts_ns,
            wire_len: wire_len.max(data.len() as u32),
            link,
            data,
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::pcapng_ns;

    #[test]
    fn pcapng_timestamp_units() {
        assert_eq!(pcapng_ns(1_500_000, 6), 1_500_000_000);
        assert_eq!(pcapng_ns(7, 9), 7);
        assert_eq!(pcapng_ns(12_345, 12), 12);
        assert_eq!(pcapng_ns(3 << 10, 0x80 | 10), 3_000_000_000);
    }
}
