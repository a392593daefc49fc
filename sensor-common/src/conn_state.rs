//! Zeek's `conn_state` (the KDD `flag`) from the per-side TCP history bits.
//!
//! Zeek derives `conn_state` from each endpoint's final TCP state (`Conn::conn_state` in
//! `base/protocols/conn/main.zeek`). We keep, per side, which kinds of packets it sent
//! ([`crate::flow::history`]), rebuild each endpoint's final state from them, and apply Zeek's
//! decision table unchanged.

use crate::flow::history;

/// The connection states of Zeek's `conn_state` (13 values; NSL-KDD uses 11 of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ConnState {
    S0,
    S1,
    SF,
    REJ,
    S2,
    S3,
    RSTO,
    RSTR,
    RSTOS0,
    RSTRH,
    SH,
    SHR,
    OTH,
}

impl ConnState {
    /// Every state, in declaration order.
    pub const ALL: [ConnState; 13] = [
        ConnState::S0,
        ConnState::S1,
        ConnState::SF,
        ConnState::REJ,
        ConnState::S2,
        ConnState::S3,
        ConnState::RSTO,
        ConnState::RSTR,
        ConnState::RSTOS0,
        ConnState::RSTRH,
        ConnState::SH,
        ConnState::SHR,
        ConnState::OTH,
    ];

    /// The name Zeek and the KDD data use.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnState::S0 => "S0",
            ConnState::S1 => "S1",
            ConnState::SF => "SF",
            ConnState::REJ => "REJ",
            ConnState::S2 => "S2",
            ConnState::S3 => "S3",
            ConnState::RSTO => "RSTO",
            ConnState::RSTR => "RSTR",
            ConnState::RSTOS0 => "RSTOS0",
            ConnState::RSTRH => "RSTRH",
            ConnState::SH => "SH",
            ConnState::SHR => "SHR",
            ConnState::OTH => "OTH",
        }
    }

    /// Parses a Zeek/KDD name.
    pub fn from_name(name: &str) -> Option<ConnState> {
        ConnState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A TCP endpoint's final state, as Zeek's TCP analyzer would have left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointState {
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset,
}

/// Rebuilds an endpoint's final state from what it (`own`) and its peer (`peer`) sent.
///
/// A RST wins over a FIN (Zeek moves a closed endpoint to RESET on a later RST; the order of a
/// RST before a FIN on the same side does not occur in a sane stack). An endpoint is established
/// once the three-way handshake completed: the SYN side sent a non-SYN packet after the peer's
/// SYN-ACK, which the bits approximate by "both happened".
pub fn endpoint_state(own: u8, peer: u8) -> EndpointState {
    let handshake_done = |syn_side: u8, synack_side: u8| {
        syn_side & history::SYN != 0
            && synack_side & history::SYN_ACK != 0
            && syn_side & history::NON_SYN != 0
    };
    if own & history::RST != 0 {
        EndpointState::Reset
    } else if own & history::FIN != 0 {
        EndpointState::Closed
    } else if handshake_done(own, peer) || handshake_done(peer, own) {
        EndpointState::Established
    } else if own & history::SYN != 0 {
        EndpointState::SynSent
    } else if own & history::SYN_ACK != 0 {
        EndpointState::SynAckSent
    } else if own & history::NON_SYN != 0 {
        EndpointState::Partial
    } else {
        EndpointState::Inactive
    }
}

/// Zeek's `conn_state` for a TCP connection.
///
/// `orig`/`resp` are the history bits of the originator and responder, `orig_bytes`/`resp_bytes`
/// their payload bytes.
pub fn tcp_conn_state(orig: u8, resp: u8, orig_bytes: u64, resp_bytes: u64) -> ConnState {
    use EndpointState::*;
    let os = endpoint_state(orig, resp);
    let rs = endpoint_state(resp, orig);
    let o_inactive = matches!(os, Inactive | Partial);
    let r_inactive = matches!(rs, Inactive | Partial);

    if rs == Reset {
        if os == SynSent || os == SynAckSent || (os == Reset && orig_bytes == 0 && resp_bytes == 0)
        {
            ConnState::REJ
        } else if o_inactive {
            ConnState::RSTRH
        } else {
            ConnState::RSTR
        }
    } else if os == Reset {
        if !r_inactive {
            ConnState::RSTO
        } else if orig & history::SYN != 0
            && orig & (history::SYN_ACK | history::ACK | history::FIN) == 0
        {
            // Zeek's rule: RSTOS0 only for a SYN followed by the RST with no handshake step
            // of the originator in between (history `^?S[^HAFGIQ]*R`); a lone RST is OTH.
            ConnState::RSTOS0
        } else {
            ConnState::OTH
        }
    } else if rs == Closed && os == Closed {
        ConnState::SF
    } else if os == Closed {
        if r_inactive {
            ConnState::SH
        } else {
            ConnState::S2
        }
    } else if rs == Closed {
        if o_inactive {
            ConnState::SHR
        } else {
            ConnState::S3
        }
    } else if os == SynSent && rs == Inactive {
        ConnState::S0
    } else if os == Established && rs == Established {
        ConnState::S1
    } else {
        ConnState::OTH
    }
}

/// Zeek's `conn_state` for UDP: which sides sent anything. (Zeek's ICMP `conn_state` is
/// always `OTH`.)
pub fn datagram_conn_state(orig_packets: u64, resp_packets: u64) -> ConnState {
    match (orig_packets > 0, resp_packets > 0) {
        (true, true) => ConnState::SF,
        (true, false) => ConnState::S0,
        (false, true) => ConnState::SHR,
        (false, false) => ConnState::OTH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::history::*;

    const EST_ORIG: u8 = SYN | NON_SYN;
    const EST_RESP: u8 = SYN_ACK | NON_SYN;

    #[test]
    fn states_of_typical_exchanges() {
        // Full handshake, data, FIN both ways.
        assert_eq!(
            tcp_conn_state(EST_ORIG | FIN | DATA, EST_RESP | FIN | DATA, 10, 20),
            ConnState::SF
        );
        // SYN, nothing back.
        assert_eq!(tcp_conn_state(SYN, 0, 0, 0), ConnState::S0);
        // SYN answered by RST (closed port).
        assert_eq!(tcp_conn_state(SYN, NON_SYN | RST, 0, 0), ConnState::REJ);
        // Established, then originator aborts.
        assert_eq!(
            tcp_conn_state(EST_ORIG | RST, EST_RESP, 5, 0),
            ConnState::RSTO
        );
        // Established, then responder aborts.
        assert_eq!(
            tcp_conn_state(EST_ORIG, EST_RESP | RST, 5, 0),
            ConnState::RSTR
        );
        // SYN then RST from the originator, no SYN-ACK.
        assert_eq!(
            tcp_conn_state(SYN | NON_SYN | RST, 0, 0, 0),
            ConnState::RSTOS0
        );
        // A lone RST from the originator (no SYN seen): Zeek's OTH, not RSTOS0; so is a SYN,
        // an ACK and then the RST.
        assert_eq!(tcp_conn_state(NON_SYN | RST, 0, 0, 0), ConnState::OTH);
        assert_eq!(
            tcp_conn_state(SYN | NON_SYN | ACK | RST, 0, 0, 0),
            ConnState::OTH
        );
        // Responder sent SYN-ACK then RST, no SYN seen.
        assert_eq!(
            tcp_conn_state(0, SYN_ACK | NON_SYN | RST, 0, 0),
            ConnState::RSTRH
        );
        // SYN then FIN, no SYN-ACK.
        assert_eq!(tcp_conn_state(SYN | NON_SYN | FIN, 0, 0, 0), ConnState::SH);
        // SYN-ACK then FIN from the responder, no SYN.
        assert_eq!(
            tcp_conn_state(0, SYN_ACK | NON_SYN | FIN, 0, 0),
            ConnState::SHR
        );
        // Established, only the originator closed.
        assert_eq!(
            tcp_conn_state(EST_ORIG | FIN, EST_RESP, 0, 0),
            ConnState::S2
        );
        // Established, only the responder closed.
        assert_eq!(
            tcp_conn_state(EST_ORIG, EST_RESP | FIN, 0, 0),
            ConnState::S3
        );
        // Established, not terminated.
        assert_eq!(
            tcp_conn_state(EST_ORIG | DATA, EST_RESP, 3, 0),
            ConnState::S1
        );
        // Midstream only.
        assert_eq!(
            tcp_conn_state(NON_SYN | DATA, NON_SYN, 3, 0),
            ConnState::OTH
        );
        // Both reset, no data: REJ by Zeek's rule.
        assert_eq!(
            tcp_conn_state(SYN | RST, SYN_ACK | RST, 0, 0),
            ConnState::REJ
        );
    }

    #[test]
    fn names_round_trip() {
        for s in ConnState::ALL {
            assert_eq!(ConnState::from_name(s.as_str()), Some(s));
        }
        assert_eq!(ConnState::from_name("XX"), None);
    }

    #[test]
    fn datagram_states() {
        assert_eq!(datagram_conn_state(1, 1), ConnState::SF);
        assert_eq!(datagram_conn_state(3, 0), ConnState::S0);
        assert_eq!(datagram_conn_state(0, 2), ConnState::SHR);
    }
}
