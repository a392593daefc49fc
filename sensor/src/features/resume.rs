//! UDP and ICMP conversations that an idle timeout split: which new connection resumes one.
//!
//! An idle timeout ends a UDP or ICMP conversation (there is no close to wait for), and when
//! the same two endpoints talk again the sensor writes a new record. How often that happens
//! depends on the timeout: with 2 s, a DNS client that asks every 5 s is a new connection each
//! time; with 60 s it is one. If each record entered the windows, every other connection's
//! window features would depend on the timeouts. So the windows hold a conversation once, from
//! when it began: a connection that resumes one (the same transport, address and port pair,
//! either way round, its first packet at most `resume_gap` after the last packet of a record
//! that an idle timeout ended) is recorded and scored, with the windows as they stand, but does
//! not enter them again. Up to that gap, the features of every connection are the same whatever
//! the timeouts (docs/features.md, "A connection's moment").

use std::collections::VecDeque;

use super::host_key;
use crate::{
    flows::{ConnId, ConnectionRecord, Transport},
    hashing::Map,
};

/// Both endpoints, the lower one first, so that a conversation resumed by the other side is
/// found too.
type PairKey = (Transport, (u128, u16), (u128, u16));

/// The endpoint pair of a UDP or ICMP connection; `None` for other transports.
fn pair(id: &ConnId) -> Option<PairKey> {
    if !matches!(id.transport, Transport::Udp | Transport::Icmp) {
        return None;
    }
    let a = (host_key(id.orig_addr), id.orig_port);
    let b = (host_key(id.resp_addr), id.resp_port);
    Some(if a <= b {
        (id.transport, a, b)
    } else {
        (id.transport, b, a)
    })
}

/// Conversations an idle timeout ended in the last `resume_gap`, by endpoint pair.
#[derive(Debug, Default)]
pub struct Resumptions {
    /// The last packet of each pair's latest idle-ended record.
    last_ns: Map<PairKey, u64>,
    /// The same, in the order they ended, to forget them after the gap (an entry whose pair
    /// ended again later, or resumed, is skipped when it comes up).
    order: VecDeque<(u64, PairKey)>,
    /// Connections that resumed a conversation (not entered in the windows again).
    pub resumed_total: u64,
    /// Ended conversations forgotten before their gap passed, because `CAPACITY` were held: a
    /// resumption of one enters the windows as a new connection.
    pub forgotten_total: u64,
}

impl Resumptions {
    /// Ended conversations remembered at most (about 100 bytes each in the queue, as many in
    /// the map): a flood of one-packet UDP flows ends a conversation per packet, and must not
    /// grow this without bound. The queue is what is bounded (the map never holds more than
    /// it), so that conversations ending and resuming over and over cannot grow it either.
    pub const CAPACITY: usize = 1 << 16;

    /// A record ended by its idle timeout: remembered for `gap_ns` (UDP and ICMP only).
    pub fn ended(&mut self, rec: &ConnectionRecord, gap_ns: u64) {
        let Some(key) = pair(&rec.id()) else {
            return;
        };
        self.expire(rec.end_unix_ns.saturating_sub(gap_ns));
        while self.order.len() >= Self::CAPACITY {
            let Some((t, k)) = self.order.pop_front() else {
                break;
            };
            if self.last_ns.get(&k) == Some(&t) {
                self.last_ns.remove(&k);
                self.forgotten_total += 1;
            }
        }
        self.last_ns.insert(key, rec.end_unix_ns);
        self.order.push_back((rec.end_unix_ns, key));
    }

    /// Whether a connection that begins now resumes a conversation ended within `gap_ns`
    /// (then it is no longer remembered: its own record will be, if it too ends idle).
    pub fn resumes(&mut self, id: &ConnId, gap_ns: u64) -> bool {
        if self.last_ns.is_empty() {
            return false;
        }
        let Some(key) = pair(id) else {
            return false;
        };
        match self.last_ns.get(&key) {
            Some(&last) if last <= id.start_unix_ns && id.start_unix_ns - last <= gap_ns => {
                self.last_ns.remove(&key);
                self.resumed_total += 1;
                true
            }
            _ => false,
        }
    }

    /// Forgets the conversations whose last packet was before `horizon_ns`.
    fn expire(&mut self, horizon_ns: u64) {
        while let Some(&(t, k)) = self.order.front() {
            if t >= horizon_ns {
                break;
            }
            self.order.pop_front();
            if self.last_ns.get(&k) == Some(&t) {
                self.last_ns.remove(&k);
            }
        }
    }

    /// Heap bytes held (capacity-based estimate).
    pub fn heap_bytes(&self) -> usize {
        self.last_ns.capacity() * (size_of::<(PairKey, u64)>() + 1)
            + self.order.capacity() * size_of::<(u64, PairKey)>()
    }
}
