//! What the kernel programs and user space must agree on, written once.
//!
//! Everything here is `no_std` so that it compiles for `bpfel-unknown-none` (the XDP and TC
//! programs) and for the host (the agent, the offline replay path and the tests). The per-packet
//! logic itself lives here too ([`parse`], [`account`], the flow-table update [`table`], and
//! the following of tunnels and deeper headers [`encap`]):
//! the kernel and user space run the very same code, so offline replay and packet-level tests see
//! what the live sensor sees.
#![no_std]
// The kernel build needs the atomic-add intrinsic (see `atomic`); it is built with nightly.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

pub mod account;
pub mod atomic;
pub mod conn_state;
pub mod encap;
pub mod flow;
pub mod health;
pub mod nat;
pub mod parse;
pub mod slots;
pub mod table;
pub mod watched;

pub use flow::{FlowEvent, FlowKey, FlowValue};
pub use health::Health;

/// Names of the maps in the eBPF object, so that user space and the kernel cannot drift apart.
pub mod map_names {
    /// `Array<FlowSlot>`: the flow table, open addressing (see [`crate::slots`]).
    pub const FLOWS: &str = "FLOWS";
    /// `Array<u64>` with one entry: flows in `FLOWS` (see [`crate::slots`]).
    pub const FLOW_COUNT: &str = "FLOW_COUNT";
    /// `LruHashMap<FragKey, FlowKey>`: which flow a non-first IP fragment belongs to.
    pub const FRAGS: &str = "FRAGS";
    /// `PerCpuArray<Health>` with one entry: health counters.
    pub const HEALTH: &str = "HEALTH";
    /// `RingBuf` of [`crate::FlowEvent`]: connections begun, answered and finished.
    pub const EVENTS: &str = "EVENTS";
    /// `HashMap<ParkedKey, FlowValue>`: connections whose entry a port-reusing SYN restarted
    /// while the ring buffer was full (their `REPLACED` event had no room); user space takes
    /// them out at its table scan (see [`crate::flow::ParkedKey`]).
    pub const PARKED: &str = "PARKED";
    /// `HashMap<u32, u8>`: ifindexes whose ingress XDP watches.
    pub const WATCHED: &str = "WATCHED";
    /// `Array<u32>` of [`crate::watched::INDEX_SLOTS`]: a direct-mapped index of `WATCHED`
    /// (see [`crate::watched`]).
    pub const WATCHED_INDEX: &str = "WATCHED_INDEX";
    /// `ProgramArray` with one entry: the XDP continuation program
    /// ([`crate::program_names::XDP_NEXT`]), which the XDP program tail-calls for what its
    /// per-packet parse hands on (deeper L2 headers, tunnels: see [`crate::encap`]).
    pub const XDP_NEXT_PROG: &str = "XDP_NEXT_PROG";
    /// `ProgramArray` with one entry: the TC continuation program
    /// ([`crate::program_names::TC_NEXT`]).
    pub const TC_NEXT_PROG: &str = "TC_NEXT_PROG";
    /// `LruHashMap<nat::Tuple, nat::Tuple>`: answers' tuples as they enter, to the original
    /// connection a translation gave them (see [`crate::nat`]).
    pub const NAT_REPLIES: &str = "NAT_REPLIES";
    /// `Array<u64>` with one entry: nonzero once a translation has been learned, so that XDP
    /// looks entering packets up in `NAT_REPLIES` only on a host that translates; which half
    /// of `NAT_FILTER` it reads ([`crate::nat::filter_base`]).
    pub const NAT_ACTIVE: &str = "NAT_ACTIVE";
    /// `Array<u64>`, mmapable, two halves of [`crate::nat::FILTER_WORDS`]: the bitmap of the
    /// answers' destinations ([`crate::nat::filter_bit`]), one half in use.
    pub const NAT_FILTER: &str = "NAT_FILTER";
}

/// Names of the read-only globals the loader sets (`EbpfLoader::set_global`).
pub mod global_names {
    /// `u32`: slots in `FLOWS` minus one (a power of two minus one).
    pub const FLOW_SLOT_MASK: &str = "FLOW_SLOT_MASK";
    /// `u64`: how many flows `FLOWS` may hold.
    pub const FLOW_CAPACITY: &str = "FLOW_CAPACITY";
    /// `[u64; 5]`: the [`crate::slots::seed_words`] of the seed of [`crate::slots::key_hash`].
    pub const FLOW_HASH_SEED: &str = "FLOW_HASH_SEED";
}

/// Names of the programs in the eBPF object.
pub mod program_names {
    /// XDP program for the ingress path of each watched interface.
    pub const XDP_INGRESS: &str = "sensor_xdp";
    /// TC (clsact) classifier for the egress path.
    pub const TC_EGRESS: &str = "sensor_tc_egress";
    /// A trivial XDP program that only bumps a per-CPU counter: the benchmark baseline.
    pub const XDP_BASELINE: &str = "baseline_xdp";
    /// A trivial TC classifier that only bumps a per-CPU counter: the egress benchmark's
    /// baseline.
    pub const TC_BASELINE: &str = "baseline_tc";
    /// The XDP continuation: one level of deeper L2 headers or tunnels per tail call.
    pub const XDP_NEXT: &str = "sensor_xdp_next";
    /// The TC continuation.
    pub const TC_NEXT: &str = "sensor_tc_next";
}
