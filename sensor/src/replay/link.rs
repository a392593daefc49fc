//! Link layers: a captured frame to the kernel's parser.

use sensor_common::parse::{ParseError, Parsed, link, parse_ethernet, parse_from, ppp_ip_version};

use super::LinkType;

/// Parses one captured frame of link type `link` with the kernel's parser: Ethernet as the
/// kernel's per-packet path does (what it hands on is followed by [`Replayer::packet`](super::replayer::Replayer::packet) as the
/// kernel's continuation does), the other link layers straight to IP.
#[inline]
pub fn parse_frame(link: LinkType, data: &[u8]) -> Result<Parsed, ParseError> {
    let (kind, off) = match link {
        LinkType::Ethernet => return parse_ethernet(data),
        LinkType::RawIp => (link::IP, 0),
        LinkType::Ipv4 => (link::IPV4, 0),
        LinkType::Ipv6 => (link::IPV6, 0),
        // Linux cooked capture (SLL): 16-byte header, protocol (an ethertype) at 14.
        LinkType::LinuxSll => (link::ETHERTYPE, 14),
        // SLL2: 20-byte header, protocol at 0.
        LinkType::LinuxSll2 => {
            let Some(proto) = data.get(0..2) else {
                return Err(ParseError::Truncated);
            };
            match u16::from_be_bytes([proto[0], proto[1]]) {
                sensor_common::parse::ethertype::IPV4 => (link::IPV4, 20),
                sensor_common::parse::ethertype::IPV6 => (link::IPV6, 20),
                _ => return Err(ParseError::NonIp),
            }
        }
        LinkType::Null => {
            let Some(family) = data.get(0..4) else {
                return Err(ParseError::Truncated);
            };
            let family = [family[0], family[1], family[2], family[3]];
            let known = |f: u32| match f {
                2 => Some(link::IPV4),
                // AF_INET6 on Linux, Windows, NetBSD/OpenBSD, FreeBSD, macOS.
                10 | 23 | 24 | 28 | 30 => Some(link::IPV6),
                _ => None,
            };
            match known(u32::from_le_bytes(family)).or(known(u32::from_be_bytes(family))) {
                Some(kind) => (kind, 4),
                None => return Err(ParseError::NonIp),
            }
        }
        LinkType::Ppp => {
            // Address 0xff and control 0x03 when present; a protocol field of one byte when
            // compressed (odd first byte), else two.
            let off = if data.starts_with(&[0xff, 0x03]) {
                2
            } else {
                0
            };
            let Some(&first) = data.get(off) else {
                return Err(ParseError::Truncated);
            };
            let (protocol, len) = if first & 1 == 1 {
                (u16::from(first), 1)
            } else {
                match data.get(off + 1) {
                    Some(&second) => (u16::from_be_bytes([first, second]), 2),
                    None => return Err(ParseError::Truncated),
                }
            };
            match ppp_ip_version(protocol)? {
                4 => (link::IPV4, off + len),
                _ => (link::IPV6, off + len),
            }
        }
        // Cisco HDLC: address, control, then an ethertype.
        LinkType::CiscoHdlc => (link::ETHERTYPE, 2),
        LinkType::Ieee80211 => (link::ETHERTYPE, wifi_ethertype(data, 0)?),
        // Radiotap: its length (little-endian) at 2.
        LinkType::Radiotap => {
            let len = le16_at(data, 2)?;
            (link::ETHERTYPE, wifi_ethertype(data, usize::from(len))?)
        }
        // PPI: its length at 2 and the link type it wraps at 4 (little-endian).
        LinkType::Ppi => {
            let len = le16_at(data, 2)?;
            if le16_at(data, 4)? != 105 {
                return Err(ParseError::NonIp);
            }
            (link::ETHERTYPE, wifi_ethertype(data, usize::from(len))?)
        }
    };
    parse_from(data, kind, off, 0)
}

fn le16_at(data: &[u8], off: usize) -> Result<u16, ParseError> {
    match data.get(off..off + 2) {
        Some(b) => Ok(u16::from_le_bytes([b[0], b[1]])),
        None => Err(ParseError::Truncated),
    }
}

/// The offset of the ethertype in the LLC/SNAP header of the 802.11 frame at `off`: data frames
/// with a payload, not protected. Anything else (management, control, encrypted, null data,
/// no SNAP) carries no IP the sensor can read.
fn wifi_ethertype(data: &[u8], off: usize) -> Result<usize, ParseError> {
    let Some(fc) = data.get(off..off + 2) else {
        return Err(ParseError::Truncated);
    };
    let (kind, subtype, flags) = ((fc[0] >> 2) & 3, fc[0] >> 4, fc[1]);
    // Data frames (type 2) other than the null-data subtypes (bit 2); not protected (0x40).
    if kind != 2 || subtype & 0x4 != 0 || flags & 0x40 != 0 {
        return Err(ParseError::NonIp);
    }
    let mut len = 24;
    if flags & 0x03 == 0x03 {
        // To and from the distribution system: a fourth address.
        len += 6;
    }
    if subtype & 0x8 != 0 {
        // QoS control, and an HT control field when the order bit says so.
        len += 2 + if flags & 0x80 != 0 { 4 } else { 0 };
    }
    let snap = off + len;
    match data.get(snap..snap + 6) {
        Some([0xaa, 0xaa, 0x03, _, _, _]) => Ok(snap + 6),
        Some(_) => Err(ParseError::NonIp),
        None => Err(ParseError::Truncated),
    }
}
