//! Connections as the stages after capture see them: [`ConnEvent`]s (a connection began, its
//! handshake's outcome became known, it finished) and the finished [`ConnectionRecord`],
//! oriented from the originator, built from a flow table entry (live) or from the same
//! accounting run in user space (replay).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sensor_common::{
    FlowKey, FlowValue,
    account::{peer, stream_bytes},
    conn_state::{ConnState, datagram_conn_state, tcp_conn_state},
    flow::{history, ipproto, value_flags},
    parse::tunnel,
};
use serde::{Deserialize, Serialize};

/// Transport protocol, as KDD names it (`protocol_type`: `tcp`, `udp`, `icmp`; ICMPv6 is
/// `icmp` with `ip_version` 6), and the two kinds the KDD data does not have: SCTP, and every
/// other IP protocol (OSPF, VRRP, PIM, ESP, a GRE or IP-in-IP carrier, ...), which Zeek logs
/// as `unknown_transport` with the protocol number in `ip_proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
    Icmp,
    Sctp,
    #[serde(rename = "unknown_transport")]
    Unknown,
}

impl Transport {
    /// Every transport, in [`Transport::index`] order.
    pub const ALL: [Transport; 5] = [
        Transport::Tcp,
        Transport::Udp,
        Transport::Icmp,
        Transport::Sctp,
        Transport::Unknown,
    ];

    /// From an IP protocol number.
    pub fn from_ipproto(p: u8) -> Transport {
        match p {
            ipproto::TCP => Transport::Tcp,
            ipproto::UDP => Transport::Udp,
            ipproto::ICMP | ipproto::ICMPV6 => Transport::Icmp,
            ipproto::SCTP => Transport::Sctp,
            _ => Transport::Unknown,
        }
    }

    /// The KDD `protocol_type` name, or Zeek's `proto` name for the others (`sctp`,
    /// `unknown_transport`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Icmp => "icmp",
            Transport::Sctp => "sctp",
            Transport::Unknown => "unknown_transport",
        }
    }

    /// Position in [`Transport::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the KDD data has this transport (`tcp`, `udp`, `icmp`): the feature engine and
    /// the model know no other.
    pub fn is_kdd(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Udp | Transport::Icmp)
    }
}

/// A tunnel kind: what carried a connection's packets, or what a carrier connection carries
/// (`sensor_common::encap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tunnel {
    /// GRE (also PPTP's enhanced GRE) with IP or Ethernet inside.
    Gre,
    /// ERSPAN (types I-III): mirrored Ethernet frames in GRE.
    Erspan,
    Vxlan,
    Geneve,
    /// IP directly in IP (4in4, 6in4, 4in6, 6in6).
    IpInIp,
    Teredo,
    /// GTP-U.
    Gtp,
    Ayiya,
}

impl Tunnel {
    /// From a flow value's kind byte (`sensor_common::parse::tunnel`); `None` for 0.
    pub fn from_kind(kind: u8) -> Option<Tunnel> {
        match kind {
            tunnel::GRE => Some(Tunnel::Gre),
            tunnel::ERSPAN => Some(Tunnel::Erspan),
            tunnel::VXLAN => Some(Tunnel::Vxlan),
            tunnel::GENEVE => Some(Tunnel::Geneve),
            tunnel::IP_IN_IP => Some(Tunnel::IpInIp),
            tunnel::TEREDO => Some(Tunnel::Teredo),
            tunnel::GTP => Some(Tunnel::Gtp),
            tunnel::AYIYA => Some(Tunnel::Ayiya),
            _ => None,
        }
    }

    /// Its name in records (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Tunnel::Gre => "gre",
            Tunnel::Erspan => "erspan",
            Tunnel::Vxlan => "vxlan",
            Tunnel::Geneve => "geneve",
            Tunnel::IpInIp => "ip_in_ip",
            Tunnel::Teredo => "teredo",
            Tunnel::Gtp => "gtp",
            Tunnel::Ayiya => "ayiya",
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
    /// No packet for the protocol's idle timeout (the lifecycle's idle deadline).
    Idle,
    /// The sensor stopped; the connection was still open.
    Shutdown,
    /// An unanswered attempt taken out of the full flow table to make room for a new flow
    /// (see `sensor_common::slots`): over as far as the sensor can tell, like an idle one.
    Evicted,
    /// Not over: the record of a connection still open, for an early verdict.
    Ongoing,
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
    /// Sent to a group address (IP multicast or broadcast, or a link-layer group address): a
    /// one-to-many datagram, not a conversation between two hosts.
    #[serde(default)]
    pub to_group: bool,
    pub end_reason: EndReason,
    /// The IP protocol number (Zeek's `ip_proto`): the protocol of an `unknown_transport`
    /// connection. 0 in records written before the field existed.
    #[serde(default)]
    pub ip_proto: u8,
    /// The tunnel this connection's packets came through (its outer connection is a record of
    /// its own, marked `carries`); absent when not tunnelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    /// The tunnel this connection carries: it is a tunnel's outer connection, whose payload
    /// the inner connections' records describe. Not scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carries: Option<Tunnel>,
    /// When the outcome of the originator's SYN became known (TCP connections opened with a
    /// SYN that got an answer): the responder's first packet, or the originator's first ACK
    /// where the responder's side was not seen. Unix ns.
    #[serde(default)]
    pub answer_unix_ns: Option<u64>,
    /// When the connection became final, Unix ns: its last packet when FIN or RST ended it, its
    /// last packet plus the idle timeout that applied when it went idle, the moment it left the
    /// table for `evicted`, the end of observation (sensor stopped, capture ended) for
    /// `shutdown`.
    #[serde(default)]
    pub final_unix_ns: u64,
    /// TCP: which kinds of packet each side sent (Zeek's history letters, as a set: `S` SYN,
    /// `H` SYN-ACK, `A` ACK, `D` data, `F` FIN, `R` RST; upper case the originator, lower case
    /// the responder). Empty for UDP and ICMP.
    #[serde(default)]
    pub history: History,
    /// TCP: the data bytes each side sent (originator, responder) as their sequence numbers
    /// count them, as Zeek's `orig_bytes` and `resp_bytes` do: retransmitted data once, data
    /// the capture missed but the peer acknowledged included (`account::stream_bytes`). The
    /// `conn.log` rows write these; the KDD features and the JSON and CSV rows keep the payload
    /// of the packets seen ([`Self::orig_bytes`], as the model was trained). `None` for other
    /// transports and for records read back from files (not serialized).
    #[serde(skip)]
    pub stream_bytes: Option<(u64, u64)>,
}

/// The TCP history bits of both sides ([`history`]), as Zeek's history letters in JSON.
///
/// Zeek's `history` lists events in the order they happened (with repeats); the flow table
/// keeps one bit per kind of packet per side, so this is the set of letters in a fixed order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub orig: u8,
    pub resp: u8,
}

impl History {
    /// Zeek's letter for each history bit, in the order they are written.
    const LETTERS: [(u8, char); 6] = [
        (history::SYN, 's'),
        (history::SYN_ACK, 'h'),
        (history::ACK, 'a'),
        (history::DATA, 'd'),
        (history::FIN, 'f'),
        (history::RST, 'r'),
    ];

    /// Whether the originator's SYN was seen: the connection's start. False for a connection
    /// picked up mid-stream (begun before the sensor watched, or after its entry timed out),
    /// and for a record without TCP history (UDP, ICMP, records from older files).
    pub fn start_seen(&self) -> bool {
        self.orig & history::SYN != 0
    }

    /// Whether any TCP packet was recorded.
    pub fn is_empty(&self) -> bool {
        self.orig | self.resp == 0
    }

    /// The Zeek-style letters: the originator's (upper case), then the responder's.
    pub fn letters(&self) -> String {
        let side = |bits: u8, upper: bool| {
            Self::LETTERS
                .iter()
                .filter(move |(b, _)| bits & b != 0)
                .map(move |(_, c)| if upper { c.to_ascii_uppercase() } else { *c })
        };
        side(self.orig, true)
            .chain(side(self.resp, false))
            .collect()
    }

    /// Parses [`History::letters`]; `None` names the first letter that is not one of them.
    pub fn from_letters(text: &str) -> Result<History, char> {
        let mut h = History::default();
        for c in text.chars() {
            let (bit, _) = Self::LETTERS
                .iter()
                .find(|(_, l)| *l == c.to_ascii_lowercase())
                .ok_or(c)?;
            if c.is_ascii_uppercase() {
                h.orig |= bit;
            } else {
                h.resp |= bit;
            }
        }
        Ok(h)
    }
}

impl Serialize for History {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&self.letters())
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<History, D::Error> {
        let text = String::deserialize(de)?;
        History::from_letters(&text).map_err(|c| {
            serde::de::Error::custom(format!("history {text:?}: unknown letter {c:?}"))
        })
    }
}

/// Identifies one connection among all that used a 5-tuple: its endpoints and its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnId {
    pub start_unix_ns: u64,
    pub transport: Transport,
    pub orig_addr: IpAddr,
    pub orig_port: u16,
    pub resp_addr: IpAddr,
    pub resp_port: u16,
}

/// Four fixed-width words (the start, the two addresses as 128 bits, and the ports,
/// transport and address families packed in one), where the derived `Hash` fed the hasher
/// field by field: each address's variant, then its bytes as a length-prefixed slice. An id is
/// hashed for every index operation of the open connections and the incidents' maps (several
/// per connection), and the derived form was about 3% of the live path
/// (`cargo bench -p sensor --bench pipeline`). Every field goes in, so ids equal as
/// `PartialEq` says hash alike.
impl std::hash::Hash for ConnId {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        /// The address's bits, and 1 for IPv6.
        #[inline]
        fn bits(a: &IpAddr) -> (u128, u64) {
            match a {
                IpAddr::V4(a) => (u128::from(u32::from(*a)), 0),
                IpAddr::V6(a) => (u128::from(*a), 1),
            }
        }
        let (orig, orig_v6) = bits(&self.orig_addr);
        let (resp, resp_v6) = bits(&self.resp_addr);
        state.write_u64(self.start_unix_ns);
        state.write_u128(orig);
        state.write_u128(resp);
        state.write_u64(
            u64::from(self.orig_port) << 32
                | u64::from(self.resp_port) << 16
                | (self.transport as u64) << 2
                | orig_v6 << 1
                | resp_v6,
        );
    }
}

/// What is known of a connection when it begins: enough to place it in the feature windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnStart {
    pub id: ConnId,
    pub ip_version: u8,
    /// ICMP type and code of the originator's first packet (ICMP only).
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// A TCP connection whose originator opened with a SYN: its handshake's outcome (answered,
    /// refused, unanswered) is still to come. False for UDP, ICMP and TCP picked up mid-stream.
    pub awaits_answer: bool,
}

/// One step of a connection's life, in the order the lifecycle learnt it (which is the order
/// of the packets that caused it, up to the live path's small cross-CPU disorder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnEvent {
    /// Its first packet was seen.
    Opened(ConnStart),
    /// Its originator's SYN was answered at `at_unix_ns`; `refused` when the answer was a RST
    /// without a SYN-ACK (KDD `REJ`).
    Answered {
        id: ConnId,
        at_unix_ns: u64,
        refused: bool,
    },
    /// It is still open after the lifecycle's early-verdict delay and has not established a
    /// TCP connection (an unanswered attempt, or any UDP or ICMP conversation, whose end comes
    /// only with an idle timeout): its record so far (end reason `ongoing`), for an early
    /// verdict that incidents can act on while the attack lasts.
    Ongoing(ConnectionRecord),
    /// It is over.
    Finished(ConnectionRecord),
    /// A connection ended by FINs or a RST left the table, after the linger that catches its
    /// trailing packets (the ACKs of a crossed close, retransmitted FINs, a second RST): its
    /// record again, with the packet and byte counts of every packet the entry saw. Exactly one
    /// follows each such `Finished` (same [`ConnectionRecord::id`]). Not scored: detection
    /// does not wait for stragglers. It is for the logs other tools read, whose counts Zeek and
    /// Suricata take when they drop a connection's state (`replay::output::LogRows`).
    Settled(ConnectionRecord),
}

impl ConnEvent {
    /// The record of an event that gets a verdict: `Finished` and `Ongoing`.
    pub fn record(&self) -> Option<&ConnectionRecord> {
        match self {
            ConnEvent::Finished(r) | ConnEvent::Ongoing(r) => Some(r),
            _ => None,
        }
    }

    /// The record of a finished connection.
    pub fn finished(&self) -> Option<&ConnectionRecord> {
        match self {
            ConnEvent::Finished(r) => Some(r),
            _ => None,
        }
    }
}

impl ConnectionRecord {
    /// Whether the sensor saw a TCP conversation begin: the originator's SYN
    /// ([`History::start_seen`]), or a wrong fragment, which is what a SYN sent as a tiny
    /// first fragment (RFC 1858; `hping3 -f`), its flags in the next fragment, leaves in the
    /// record. Such a conversation is neither picked up mid-stream nor answers to nothing.
    pub fn tcp_start_seen(&self) -> bool {
        self.history.start_seen() || self.wrong_fragments > 0
    }

    /// Whether this is the held-request verdict of a TCP connection still open
    /// (`crate::lifecycle::held_request`): the only early verdict (`Ongoing`) of an answered
    /// TCP connection, as an unanswered attempt's comes before any answer.
    pub fn held_request(&self) -> bool {
        self.end_reason == EndReason::Ongoing
            && self.transport == Transport::Tcp
            && self.answer_unix_ns.is_some()
    }

    /// Whether the conversation carries packets no network stack sends, which make an attack of
    /// one conversation: `land` (the same address and port at both ends: the 1997 `land`
    /// attack), or wrong fragments of a UDP or ICMP datagram (odd-sized, empty, or reaching
    /// past 65,535 bytes: teardrop, ping of death). Not a TCP connection's wrong fragments: a
    /// SYN sent as a tiny first fragment is one ([`Self::tcp_start_seen`]), and such SYNs are a
    /// fragmented scan's or flood's (`nmap -f`), judged as such.
    pub fn malformed(&self) -> bool {
        self.land || (self.wrong_fragments > 0 && self.transport != Transport::Tcp)
    }

    /// The same conversation seen from its other end: originator and responder swapped, with
    /// their ports, counts, bytes and history (state, times and the rest unchanged). For a
    /// conversation whose responder is the one attacking (`crate::detect::VolumeHit::reversed`).
    pub fn reversed(&self) -> ConnectionRecord {
        ConnectionRecord {
            orig_addr: self.resp_addr,
            orig_port: self.resp_port,
            resp_addr: self.orig_addr,
            resp_port: self.orig_port,
            orig_packets: self.resp_packets,
            resp_packets: self.orig_packets,
            orig_bytes: self.resp_bytes,
            resp_bytes: self.orig_bytes,
            history: History {
                orig: self.history.resp,
                resp: self.history.orig,
            },
            stream_bytes: self.stream_bytes.map(|(o, r)| (r, o)),
            ..self.clone()
        }
    }

    /// A connection over `transport` from `orig` to `resp` (address and port, as a `SocketAddr` or a pair; for
    /// ICMP echo the identifier, for other ICMP 0) whose first packet came at `start_unix_ns`, with
    /// nothing else known: no packet counted, Zeek state `OTH`, its last packet and final
    /// moment its first, ended `idle`. The IP version follows the originator's address, the
    /// IP protocol number the transport. The agent builds its records from the flow table
    /// ([`Self::from_flow`]); tests, benchmarks and tools that make records of their own set
    /// what they know beyond this with struct update syntax (`ConnectionRecord { orig_packets:
    /// 3, ..ConnectionRecord::new(..) }`), so that a new field is added in one place.
    pub fn new(
        transport: Transport,
        orig: impl Into<SocketAddr>,
        resp: impl Into<SocketAddr>,
        start_unix_ns: u64,
    ) -> ConnectionRecord {
        let (orig, resp): (SocketAddr, SocketAddr) = (orig.into(), resp.into());
        let ip_version = if orig.is_ipv4() { 4 } else { 6 };
        ConnectionRecord {
            start_unix_ns,
            end_unix_ns: start_unix_ns,
            transport,
            ip_version,
            orig_addr: orig.ip(),
            orig_port: orig.port(),
            resp_addr: resp.ip(),
            resp_port: resp.port(),
            icmp_type: None,
            icmp_code: None,
            orig_packets: 0,
            resp_packets: 0,
            orig_bytes: 0,
            resp_bytes: 0,
            conn_state: ConnState::OTH,
            urgent_packets: 0,
            wrong_fragments: 0,
            land: false,
            to_group: false,
            end_reason: EndReason::Idle,
            ip_proto: match (transport, ip_version) {
                (Transport::Tcp, _) => 6,
                (Transport::Udp, _) => 17,
                (Transport::Icmp, 4) => 1,
                (Transport::Icmp, _) => 58,
                (Transport::Sctp, _) => 132,
                (Transport::Unknown, _) => 0,
            },
            tunnel: None,
            carries: None,
            answer_unix_ns: None,
            final_unix_ns: start_unix_ns,
            history: History::default(),
            stream_bytes: None,
        }
    }

    /// An ICMP echo conversation (request or reply: ICMP types 8 and 0, ICMPv6 128 and 129).
    pub fn is_icmp_echo(&self) -> bool {
        self.transport == Transport::Icmp
            && match self.ip_version {
                6 => matches!(self.icmp_type, Some(128 | 129)),
                _ => matches!(self.icmp_type, Some(0 | 8)),
            }
    }

    /// Builds the record of a flow table entry. `mono_to_unix_ns` converts the entry's clock
    /// (CLOCK_MONOTONIC in the kernel; 0 for replay, whose clock is already Unix time).
    pub fn from_flow(
        key: &FlowKey,
        v: &FlowValue,
        mono_to_unix_ns: i128,
        end_reason: EndReason,
    ) -> Option<ConnectionRecord> {
        let start = ConnStart::from_flow(key, v, mono_to_unix_ns)?;
        let transport = start.id.transport;
        let orig = usize::from(v.orig_side & 1);
        let resp = peer(orig);
        let conn_state = match transport {
            Transport::Tcp => tcp_conn_state(
                v.history[orig],
                v.history[resp],
                v.payload_bytes[orig],
                v.payload_bytes[resp],
            ),
            Transport::Udp => datagram_conn_state(v.packets[orig], v.packets[resp]),
            // Zeek follows no state for these: `OTH` whatever was seen. (ICMP's KDD `flag` is
            // `SF` whatever the state, `features::basic::flag_index`; whether an echo was
            // answered is in the packet counts.)
            Transport::Icmp | Transport::Sctp | Transport::Unknown => ConnState::OTH,
        };
        let end_unix_ns = to_unix(v.last_seen_ns, mono_to_unix_ns);
        Some(ConnectionRecord {
            start_unix_ns: start.id.start_unix_ns,
            end_unix_ns,
            transport,
            ip_version: start.ip_version,
            orig_addr: start.id.orig_addr,
            orig_port: start.id.orig_port,
            resp_addr: start.id.resp_addr,
            resp_port: start.id.resp_port,
            icmp_type: start.icmp_type,
            icmp_code: start.icmp_code,
            orig_packets: v.packets[orig],
            resp_packets: v.packets[resp],
            orig_bytes: v.payload_bytes[orig],
            resp_bytes: v.payload_bytes[resp],
            conn_state,
            urgent_packets: u32::from(v.urgent_packets),
            wrong_fragments: u32::from(v.wrong_fragments),
            land: v.flags & value_flags::LAND != 0,
            to_group: v.flags & value_flags::GROUP != 0 || is_group_address(start.id.resp_addr),
            end_reason,
            ip_proto: key.protocol,
            tunnel: Tunnel::from_kind(v.tunnel),
            carries: Tunnel::from_kind(v.carries),
            answer_unix_ns: None,
            final_unix_ns: end_unix_ns,
            history: match transport {
                // Without `AFTER_FINS`, which only ends the record's wait and has no letter:
                // the history is what its letters say.
                Transport::Tcp => History {
                    orig: v.history[orig] & !history::AFTER_FINS,
                    resp: v.history[resp] & !history::AFTER_FINS,
                },
                _ => History::default(),
            },
            stream_bytes: (transport == Transport::Tcp).then(|| {
                (
                    stream_bytes(key.protocol, v, orig),
                    stream_bytes(key.protocol, v, resp),
                )
            }),
        })
    }

    /// The connection's identity.
    pub fn id(&self) -> ConnId {
        ConnId {
            start_unix_ns: self.start_unix_ns,
            transport: self.transport,
            orig_addr: self.orig_addr,
            orig_port: self.orig_port,
            resp_addr: self.resp_addr,
            resp_port: self.resp_port,
        }
    }

    /// What was known of it when it began.
    pub fn start(&self) -> ConnStart {
        ConnStart {
            id: self.id(),
            ip_version: self.ip_version,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            awaits_answer: self.opened_with_syn(),
        }
    }

    /// When and how its handshake was decided: `(Unix ns, refused)`, or `None` for a SYN never
    /// answered and for connections not opened with a SYN. A record without
    /// `answer_unix_ns` (written by an older sensor, or built by hand) is taken as answered at
    /// its start when its final state says the responder answered.
    pub fn handshake_answer(&self) -> Option<(u64, bool)> {
        use ConnState::*;
        if !self.opened_with_syn() {
            return None;
        }
        let refused = self.conn_state == REJ;
        match self.answer_unix_ns {
            Some(t) => Some((t, refused)),
            None if matches!(self.conn_state, S0 | SH | RSTOS0) => None,
            None => Some((self.start_unix_ns, refused)),
        }
    }

    /// Whether its originator opened with a SYN, as far as the record tells: an answer came, or
    /// the final state is one that starts with the originator's SYN (not `OTH`, `SHR`, `RSTRH`,
    /// the states of a connection picked up after its SYN).
    fn opened_with_syn(&self) -> bool {
        use ConnState::*;
        self.transport == Transport::Tcp
            && (self.answer_unix_ns.is_some() || !matches!(self.conn_state, OTH | SHR | RSTRH))
    }

    /// Duration from first to last packet, in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.end_unix_ns.saturating_sub(self.start_unix_ns) as f64 / 1e9
    }
}

/// A table timestamp in Unix ns.
fn to_unix(t: u64, mono_to_unix_ns: i128) -> u64 {
    (t as i128 + mono_to_unix_ns).clamp(0, u64::MAX as i128) as u64
}

impl ConnStart {
    /// What a flow table entry tells of its connection's beginning.
    pub fn from_flow(key: &FlowKey, v: &FlowValue, mono_to_unix_ns: i128) -> Option<ConnStart> {
        let transport = Transport::from_ipproto(key.protocol);
        let orig = usize::from(v.orig_side & 1);
        let (orig_addr, orig_port) = key.endpoint(orig);
        let (resp_addr, resp_port) = key.endpoint(peer(orig));
        let is_icmp = transport == Transport::Icmp;
        Some(ConnStart {
            id: ConnId {
                start_unix_ns: to_unix(v.first_seen_ns, mono_to_unix_ns),
                transport,
                orig_addr: to_ip(orig_addr, key.ip_version),
                orig_port,
                resp_addr: to_ip(resp_addr, key.ip_version),
                resp_port,
            },
            ip_version: key.ip_version,
            icmp_type: is_icmp.then_some(v.icmp_type),
            icmp_code: is_icmp.then_some(v.icmp_code),
            awaits_answer: transport == Transport::Tcp && v.history[orig] & history::SYN != 0,
        })
    }
}

/// An IP multicast address, or the IPv4 limited broadcast.
pub fn is_group_address(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
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
mod tests;
