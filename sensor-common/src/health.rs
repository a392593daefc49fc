//! Per-CPU health counters: every packet is counted somewhere, so nothing is lost silently.
//!
//! One `PerCpuArray<Health>` entry per CPU; the kernel bumps fields without atomics (the slot is
//! the CPU's own) and user space sums the CPUs at read time.

/// Health counters of one CPU. Field order is the ABI; append only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Every packet the programs saw (wire packets: a GSO super-packet counts its segments).
    pub packets: u64,
    /// Their frame bytes.
    pub bytes: u64,
    /// Frames (or tunnel payloads) that carry neither IPv4 nor IPv6 after their L2 headers.
    pub non_ip: u64,
    /// IP packets whose headers contradict themselves (bad version, IHL, lengths, TCP offset, ...).
    pub parse_errors: u64,
    /// Packets that end before a header their own headers announce.
    pub truncated: u64,
    /// Packets whose new flow could not be stored: the flow table was full and held no flow
    /// that may be evicted (see [`crate::slots`]), or the ring buffer had no room for the
    /// evicted flow's record (also counted in `evict_ring_full`), or, very rarely, another CPU
    /// was still creating the flow after a long wait (see `sensor-ebpf`).
    pub table_full: u64,
    /// Connection events (begun, answered, finished) the ring buffer had no room for.
    pub ringbuf_drops: u64,
    /// IPv6 packets whose extension header chain is longer than the parser follows, or that
    /// carry nothing (no next header).
    pub unsupported_l4: u64,
    /// Non-first IP fragments whose first fragment was not seen (not attributed to a flow).
    pub unattributed_fragments: u64,
    /// Packets accounted into a flow (wire packets: a GSO super-packet counts its segments).
    pub accounted: u64,
    /// Flows created.
    pub flows_created: u64,
    /// Connection events sent through the ring buffer.
    pub events_sent: u64,
    /// Forwarded packets the TC egress program skipped because XDP already saw them on a
    /// watched ingress interface (not part of `packets`).
    pub egress_already_seen: u64,
    /// Flows restarted in place by a SYN on a 5-tuple whose connection had ended (port reuse).
    pub flows_restarted: u64,
    /// Tunnel payloads found (a packet through two nested tunnels counts two): each also gets
    /// one outcome (`accounted` into its inner connection, or why not), so that the outcomes
    /// add up to `packets + tunnel_payloads` (see `crate::encap`).
    pub tunnel_payloads: u64,
    /// Packets, or tunnel payloads, whose headers nest deeper than the parser follows: more L2
    /// headers or MPLS labels than `parse::MAX_L2_HEADERS` / `parse::MAX_MPLS_LABELS`, tunnels
    /// nested more than `encap::MAX_TUNNEL_DEPTH` deep, or headers beyond
    /// `parse::MAX_HEADER_OFFSET`.
    pub too_deep: u64,
    /// Flows taken out of the full table to make room for a new one (unanswered attempts, see
    /// [`crate::slots`]), each handed to user space as a finished record through the ring buffer
    /// (also counted in `events_sent`).
    pub flows_evicted: u64,
    /// Packets whose new flow found the table full and an evictable flow, but no room in the
    /// ring buffer for its record, so nothing was evicted (also counted in `table_full`).
    pub evict_ring_full: u64,
    /// Connections whose entry a port-reusing SYN restarted while the ring buffer had no room
    /// for their `REPLACED` event: their value was parked in `map_names::PARKED` for user
    /// space to take at its table scan (not counted in `ringbuf_drops`).
    pub restarts_parked: u64,
    /// Connections lost when a port-reusing SYN restarted their entry: neither the ring buffer
    /// nor the parking map had room for them (also counted in `ringbuf_drops`).
    pub restarts_lost: u64,
    /// Address translations learned: a connection's first packet, forwarded from a watched
    /// interface, left with other addresses or ports than it entered with (see [`crate::nat`]).
    pub nat_translations: u64,
    /// Packets that entered with a translated connection's outside tuple and were accounted
    /// as the answers they are, under the original connection (also counted in `accounted`).
    pub nat_answers: u64,
}

impl Health {
    /// The outcome counters summed: each packet, and each tunnel payload found in one, has
    /// exactly one outcome, so this equals `packets + tunnel_payloads` when nothing is lost.
    pub fn outcomes(&self) -> u64 {
        self.accounted
            + self.non_ip
            + self.parse_errors
            + self.truncated
            + self.unsupported_l4
            + self.unattributed_fragments
            + self.table_full
            + self.too_deep
    }

    /// Names of the fields, in order, for reports and metrics.
    pub const FIELD_NAMES: [&'static str; 22] = [
        "packets",
        "bytes",
        "non_ip",
        "parse_errors",
        "truncated",
        "table_full",
        "ringbuf_drops",
        "unsupported_l4",
        "unattributed_fragments",
        "accounted",
        "flows_created",
        "events_sent",
        "egress_already_seen",
        "flows_restarted",
        "tunnel_payloads",
        "too_deep",
        "flows_evicted",
        "evict_ring_full",
        "restarts_parked",
        "restarts_lost",
        "nat_translations",
        "nat_answers",
    ];

    /// The fields in [`Self::FIELD_NAMES`] order.
    pub fn as_array(&self) -> [u64; 22] {
        [
            self.packets,
            self.bytes,
            self.non_ip,
            self.parse_errors,
            self.truncated,
            self.table_full,
            self.ringbuf_drops,
            self.unsupported_l4,
            self.unattributed_fragments,
            self.accounted,
            self.flows_created,
            self.events_sent,
            self.egress_already_seen,
            self.flows_restarted,
            self.tunnel_payloads,
            self.too_deep,
            self.flows_evicted,
            self.evict_ring_full,
            self.restarts_parked,
            self.restarts_lost,
            self.nat_translations,
            self.nat_answers,
        ]
    }

    /// Adds another CPU's counters to these.
    pub fn merge(&mut self, other: &Health) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.non_ip += other.non_ip;
        self.parse_errors += other.parse_errors;
        self.truncated += other.truncated;
        self.table_full += other.table_full;
        self.ringbuf_drops += other.ringbuf_drops;
        self.unsupported_l4 += other.unsupported_l4;
        self.unattributed_fragments += other.unattributed_fragments;
        self.accounted += other.accounted;
        self.flows_created += other.flows_created;
        self.events_sent += other.events_sent;
        self.egress_already_seen += other.egress_already_seen;
        self.flows_restarted += other.flows_restarted;
        self.tunnel_payloads += other.tunnel_payloads;
        self.too_deep += other.too_deep;
        self.flows_evicted += other.flows_evicted;
        self.evict_ring_full += other.evict_ring_full;
        self.restarts_parked += other.restarts_parked;
        self.restarts_lost += other.restarts_lost;
        self.nat_translations += other.nat_translations;
        self.nat_answers += other.nat_answers;
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, `Copy`, only `u64` fields: no padding, every bit pattern is valid.
unsafe impl aya::Pod for Health {}
