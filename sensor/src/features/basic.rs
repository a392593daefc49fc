//! Basic features (KDD 1-9) from the connection's own headers, and the `flag` mapping.
//!
//! # Flag mapping (`conn_state` -> KDD `flag`)
//!
//! | transport | `conn_state` | flag | why |
//! |---|---|---|---|
//! | TCP | the 11 NSL-KDD states | the same name | 1:1 |
//! | TCP | `RSTRH` | `RSTR` | the responder aborted; the data's `RSTR` is the "responder sent RST after answering" family |
//! | TCP | `SHR` | `OTH` | no SYN from the originator was seen, which is what `OTH` means; `SH` is the originator's SYN+FIN scan signature and would be wrong |
//! | UDP, ICMP | any | `SF` | every UDP and ICMP row of KDDTrain+ carries `SF` (`awk -F, '$2!="tcp"{print $4}' \| sort -u`) |
//!
//! # One side not seen
//!
//! The flag is Zeek's `conn_state` of the connection as a sensor that saw both sides would have
//! recorded it, which is what the 1998 tooling saw. Where the sensor saw only one side (a capture
//! of one direction, asymmetric routing), the visible side can prove the handshake completed,
//! and then the flag is taken from that instead of the `S0`/`SH`/`SHR` the visible packets alone
//! give (states that are 99% attacks in KDDTrain+: `S0` 34,497 of 34,851 rows, `SH` 269 of 271):
//!
//! | seen | proof | flag |
//! |---|---|---|
//! | originator only (`S0`, `SH`) | it acknowledged a SYN-ACK (its first ACK after its SYN) | `SF` if it closed (FIN), else `S1` |
//! | responder only (`SHR`) | it sent data after its SYN-ACK (a server answers only an established connection) | `SF` if it closed, else `S1` |
//!
//! The record keeps Zeek's `conn_state` of what was seen.
//!
//! # Duration
//!
//! Whole seconds, truncated (floor): the data prints integers and 92% of KDDTrain+ rows have
//! duration 0, i.e. sub-second connections are 0, not rounded up to 1.

use sensor_common::conn_state::ConnState;

use crate::{
    flows::{ConnectionRecord, Transport},
    kdd::{FLAGS, vocab_index},
};

/// Whether the sensor saw one side of a TCP connection only, while that side proves the
/// other exists: the originator acknowledged a SYN-ACK that was not seen (`S0`, `SH` with an
/// answer), or the responder sent data after a SYN-ACK to an originator that was not seen
/// (`SHR`).
pub fn one_sided(rec: &ConnectionRecord) -> bool {
    use ConnState::*;
    let originator_only =
        rec.resp_packets == 0 && rec.answer_unix_ns.is_some() && matches!(rec.conn_state, S0 | SH);
    let responder_only = rec.orig_packets == 0 && rec.resp_bytes > 0 && rec.conn_state == SHR;
    rec.transport == Transport::Tcp && (originator_only || responder_only)
}

/// The state the KDD `flag` is derived from: the record's `conn_state`, or where only one side
/// was seen and it proves the handshake completed ([`one_sided`]), the state of an established
/// connection (see the module docs).
pub fn kdd_state(rec: &ConnectionRecord) -> ConnState {
    use ConnState::*;
    match rec.conn_state {
        SH | SHR if one_sided(rec) => SF,
        _ if one_sided(rec) => S1,
        s => s,
    }
}

/// Index of the KDD `flag` in [`FLAGS`] for a connection.
pub fn flag_index(transport: Transport, state: ConnState) -> u8 {
    let name = match transport {
        Transport::Udp | Transport::Icmp => "SF",
        // Not KDD transports (never scored): no flag of theirs means anything.
        Transport::Sctp | Transport::Unknown => "OTH",
        Transport::Tcp => match state {
            ConnState::RSTRH => "RSTR",
            ConnState::SHR => "OTH",
            s => s.as_str(),
        },
    };
    // Every name above is one of the 11 (tested), so the lookup cannot fail.
    vocab_index(&FLAGS, name).unwrap_or(0) as u8
}

/// Whether a flag (index into [`FLAGS`]) counts as a SYN error (`S0`, `S1`, `S2`, `S3`, per
/// kdd-features.md; some implementations also count `RSTOS0`/`SH`, we follow the spec).
pub fn is_syn_error(flag: u8) -> bool {
    matches!(FLAGS[usize::from(flag)], "S0" | "S1" | "S2" | "S3")
}

/// Whether a flag counts as a REJ error (`REJ`).
pub fn is_rej_error(flag: u8) -> bool {
    FLAGS[usize::from(flag)] == "REJ"
}

/// Index of the protocol in [`crate::kdd::PROTOCOLS`] (`tcp`, `udp`, `icmp`); one past the
/// vocabulary for the transports the KDD data does not have (never scored).
pub fn protocol_index(t: Transport) -> u8 {
    match t {
        Transport::Tcp => 0,
        Transport::Udp => 1,
        Transport::Icmp => 2,
        Transport::Sctp | Transport::Unknown => crate::kdd::PROTOCOLS.len() as u8,
    }
}

/// Duration in whole seconds, truncated.
pub fn duration_whole_secs(rec: &ConnectionRecord) -> u64 {
    rec.end_unix_ns.saturating_sub(rec.start_unix_ns) / 1_000_000_000
}

/// Writes KDD 1, 2, 4-9 into `out` (the service, 3, is [`super::service`]'s).
pub fn fill_basic(rec: &ConnectionRecord, flag: u8, out: &mut [f64; 41]) {
    // ICMP rows are single messages in the data (all 8,291 of KDDTrain+ have duration 0; see
    // `kdd_bytes`).
    out[0] = if rec.transport == Transport::Icmp {
        0.0
    } else {
        duration_whole_secs(rec) as f64
    };
    out[1] = f64::from(protocol_index(rec.transport));
    out[3] = f64::from(flag);
    let (src_bytes, dst_bytes) = kdd_bytes(rec);
    out[4] = src_bytes as f64;
    out[5] = dst_bytes as f64;
    out[6] = f64::from(u8::from(rec.land));
    out[7] = f64::from(rec.wrong_fragments);
    out[8] = f64::from(rec.urgent_packets);
}

/// The ICMP header's length, which the data's ICMP byte counts include.
const ICMP_HEADER_BYTES: u64 = 8;

/// KDD 5-6. TCP and UDP: the payload bytes each way. ICMP: the data's rows are single messages
/// with the header counted (`src_bytes` 8 for `ipsweep`'s and `nmap`'s empty echoes, 30 or 64
/// for the normal rows' echoes), so a conversation reads as one exchange: the originator's mean
/// message with its header, and the responder's (0 if it sent nothing). The data's `dst_bytes`
/// is always 0 for ICMP (an answer is a row of its own there); keeping the answer's size keeps
/// the evidence that the destination answered (docs/features.md, "ICMP byte counts").
fn kdd_bytes(rec: &ConnectionRecord) -> (u64, u64) {
    match rec.transport {
        Transport::Icmp => {
            let message = |bytes: u64, packets: u64| {
                bytes
                    .checked_div(packets)
                    .map_or(0, |b| b + ICMP_HEADER_BYTES)
            };
            (
                message(rec.orig_bytes, rec.orig_packets),
                message(rec.resp_bytes, rec.resp_packets),
            )
        }
        _ => (rec.orig_bytes, rec.resp_bytes),
    }
}
