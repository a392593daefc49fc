//! Finished connections: [`ConnectionRecord`], oriented from the originator, built from a flow
//! table entry (live) or from the same accounting run in user space (replay).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sensor_common::{
    FlowKey, FlowValue,
    account::peer,
    conn_state::{ConnState, datagram_conn_state, tcp_conn_state},
    flow::{ipproto, value_flags},
};
use serde::{Deserialize, Serialize};

/// Transport protocol, as KDD names it (`protocol_type`); ICMPv6 is `icmp` with `ip_version` 6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
    Icmp,
}

impl Transport {
    /// From an IP protocol number; `None` for transports the sensor does not account.
    pub fn from_ipproto(p: u8) -> Option<Transport> {
        match p {
            ipproto::TCP => Some(Transport::Tcp),
            ipproto::UDP => Some(Transport::Udp),
            ipproto::ICMP | ipproto::ICMPV6 => Some(Transport::Icmp),
            _ => None,
        }
    }

    /// The KDD `protocol_type` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Icmp => "icmp",
        }
    }
}

/// Why a connection was finalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Both sides sent FIN (signalled by the kernel through the ring buffer).
    Fin,
    /// A side sent RST (signalled by the kernel).
    Rst,
    /// No packet for the protocol's idle timeout (user-side sweep).
    Idle,
    /// The sensor stopped; the connection was still open.
    Shutdown,
}

/// One finished connection: the input of the feature engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// First packet, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// Last packet, nanoseconds since the Unix epoch.
    pub end_unix_ns: u64,
    pub transport: Transport,
    pub ip_version: u8,
    /// The originator: the side that sent the first packet (for TCP, the SYN).
    pub orig_addr: IpAddr,
    /// Originator port (for ICMP echo: the identifier; other ICMP: 0).
    pub orig_port: u16,
    pub resp_addr: IpAddr,
    pub resp_port: u16,
    /// ICMP type of the originator's first packet (ICMP only).
    pub icmp_type: Option<u8>,
    /// ICMP code of the originator's first packet (ICMP only).
    pub icmp_code: Option<u8>,
    pub orig_packets: u64,
    pub resp_packets: u64,
    /// Transport payload bytes from originator to responder (KDD `src_bytes`).
    pub orig_bytes: u64,
    /// Transport payload bytes from responder to originator (KDD `dst_bytes`).
    pub resp_bytes: u64,
    /// Zeek `conn_state` (KDD `flag`).
    #[serde(with = "conn_state_serde")]
    pub conn_state: ConnState,
    /// Packets with URG set (KDD `urgent`).
    pub urgent_packets: u32,
    /// Wrong fragments (KDD `wrong_fragment`).
    pub wrong_fragments: u32,
    /// Same address and port on both ends (KDD `land`).
    pub land: bool,
    pub end_reason: EndReason,
}

impl ConnectionRecord {
    /// Builds the record of a flow table entry. `mono_to_unix_ns` converts the entry's clock
    /// (CLOCK_MONOTONIC in the kernel; 0 for replay, whose clock is already Unix time).
    pub fn from_flow(
        key: &FlowKey,
        v: &FlowValue,
        mono_to_unix_ns: i128,
        end_reason: EndReason,
    ) -> Option<ConnectionRecord> {
        let transport = Transport::from_ipproto(key.protocol)?;
        let orig = usize::from(v.orig_side & 1);
        let resp = peer(orig);
        let (orig_addr, orig_port) = key.endpoint(orig);
        let (resp_addr, resp_port) = key.endpoint(resp);
        let conn_state = match transport {
            Transport::Tcp => tcp_conn_state(
                v.history[orig],
                v.history[resp],
                v.payload_bytes[orig],
                v.payload_bytes[resp],
            ),
            _ => datagram_conn_state(v.packets[orig], v.packets[resp]),
        };
        let to_unix = |t: u64| (t as i128 + mono_to_unix_ns).clamp(0, u64::MAX as i128) as u64;
        let is_icmp = transport == Transport::Icmp;
        Some(ConnectionRecord {
            start_unix_ns: to_unix(v.first_seen_ns),
            end_unix_ns: to_unix(v.last_seen_ns),
            transport,
            ip_version: key.ip_version,
            orig_addr: to_ip(orig_addr, key.ip_version),
            orig_port,
            resp_addr: to_ip(resp_addr, key.ip_version),
            resp_port,
            icmp_type: is_icmp.then_some(v.icmp_type),
            icmp_code: is_icmp.then_some(v.icmp_code),
            orig_packets: v.packets[orig],
            resp_packets: v.packets[resp],
            orig_bytes: v.payload_bytes[orig],
            resp_bytes: v.payload_bytes[resp],
            conn_state,
            urgent_packets: v.urgent_packets,
            wrong_fragments: v.wrong_fragments,
            land: v.flags & value_flags::LAND != 0,
            end_reason,
        })
    }

    /// Duration from first to last packet, in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.end_unix_ns.saturating_sub(self.start_unix_ns) as f64 / 1e9
    }
}

/// An address from the key's network-order words.
pub fn to_ip(words: &[u32; 4], ip_version: u8) -> IpAddr {
    if ip_version == 4 {
        IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))
    } else {
        let mut b = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    }
}

/// `ConnState` as its Zeek name in JSON.
mod conn_state_serde {
    use sensor_common::conn_state::ConnState;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(s: &ConnState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<ConnState, D::Error> {
        let name = String::deserialize(de)?;
        ConnState::from_name(&name)
            .ok_or_else(|| D::Error::custom(format!("unknown conn_state {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::{
        account::{account, new_value},
        parse::parse_ethernet,
    };

    /// An Ethernet/IPv4/UDP frame from 198.18.0.2:5353 to 198.18.0.1:53 with `payload` bytes.
    fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = 20 + 8 + payload;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend(std::iter::repeat_n(0xab, payload));
        f
    }

    #[test]
    fn a_udp_exchange_becomes_an_oriented_record() {
        let q = udp_frame([198, 18, 0, 2], 5353, [198, 18, 0, 1], 53, 30);
        let r = udp_frame([198, 18, 0, 1], 53, [198, 18, 0, 2], 5353, 120);
        let pq = parse_ethernet(&q[..]).unwrap();
        let pr = parse_ethernet(&r[..]).unwrap();
        let (key, sq) = FlowKey::canonical(&pq.src, pq.sport, &pq.dst, pq.dport, 17, 4);
        let (_, sr) = FlowKey::canonical(&pr.src, pr.sport, &pr.dst, pr.dport, 17, 4);
        let mut v = new_value(&pq, &key, sq, 1_000);
        // SAFETY: `v` is a live local.
        unsafe {
            account(&mut v, &pq, sq, 1_000, 1);
            account(&mut v, &pr, sr, 3_000, 1);
        }
        let rec = ConnectionRecord::from_flow(&key, &v, 10, EndReason::Idle).unwrap();
        assert_eq!(rec.orig_addr, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((rec.orig_port, rec.resp_port), (5353, 53));
        assert_eq!(rec.resp_addr, "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((rec.orig_bytes, rec.resp_bytes), (30, 120));
        assert_eq!((rec.orig_packets, rec.resp_packets), (1, 1));
        assert_eq!(rec.conn_state, ConnState::SF);
        assert_eq!((rec.start_unix_ns, rec.end_unix_ns), (1_010, 3_010));
        let json = serde_json::to_string(&rec).unwrap();
        assert!(json.contains("\"conn_state\":\"SF\""), "{json}");
        let back: ConnectionRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
    }
}
