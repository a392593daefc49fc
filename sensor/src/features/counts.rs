//! Per-key counters shared by the two windows: updated on insert and on expiry, so a window's
//! features cost O(1) per connection and no window is ever rescanned.
//!
//! Every map entry is removed when its count drops to 0, so the maps hold at most one entry per
//! connection in the window, however many distinct hosts the sensor has seen.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use crate::kdd::SERVICES;

/// A fast non-cryptographic hasher (the Fx multiply-rotate scheme of rustc). Keys are addresses
/// an attacker chooses, but the maps are bounded by the window and hold counters only, so
/// collision flooding costs CPU, not memory; SipHash would cost ~2x on every connection.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A destination host: the address as 128 bits (IPv4 as v4-mapped IPv6).
pub type HostKey = u128;

/// One connection as the windows see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowEntry {
    pub host: HostKey,
    pub service: u8,
    pub syn_error: bool,
    pub rej_error: bool,
    pub src_port: u16,
}

/// Connections and their errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrCounts {
    pub n: u32,
    pub syn_errors: u32,
    pub rej_errors: u32,
}

impl ErrCounts {
    #[inline]
    fn add(&mut self, e: &WindowEntry) {
        self.n += 1;
        self.syn_errors += u32::from(e.syn_error);
        self.rej_errors += u32::from(e.rej_error);
    }
    #[inline]
    fn sub(&mut self, e: &WindowEntry) {
        self.n -= 1;
        self.syn_errors -= u32::from(e.syn_error);
        self.rej_errors -= u32::from(e.rej_error);
    }
}

/// What a window reports for the current connection (already counted in it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowView {
    /// Connections to the current destination host.
    pub host: ErrCounts,
    /// Connections to the current service (any host).
    pub service: ErrCounts,
    /// Connections to the current host and service.
    pub host_service: u32,
    /// Connections to the current host from the current source port (0 unless tracked).
    pub host_src_port: u32,
}

/// Counters over the entries of one window.
#[derive(Clone, Debug, Default)]
pub struct WindowCounts {
    per_host: FxMap<HostKey, ErrCounts>,
    per_host_service: FxMap<(HostKey, u8), u32>,
    per_host_src_port: FxMap<(HostKey, u16), u32>,
    per_service: Vec<ErrCounts>,
    track_src_port: bool,
}

impl WindowCounts {
    pub fn new(track_src_port: bool) -> WindowCounts {
        WindowCounts {
            per_service: vec![ErrCounts::default(); SERVICES.len()],
            track_src_port,
            ..WindowCounts::default()
        }
    }

    #[inline]
    pub fn insert(&mut self, e: &WindowEntry) {
        self.per_host.entry(e.host).or_default().add(e);
        *self
            .per_host_service
            .entry((e.host, e.service))
            .or_default() += 1;
        if self.track_src_port {
            *self
                .per_host_src_port
                .entry((e.host, e.src_port))
                .or_default() += 1;
        }
        self.per_service[usize::from(e.service)].add(e);
    }

    /// Forgets an entry previously inserted.
    #[inline]
    pub fn remove(&mut self, e: &WindowEntry) {
        if let Some(h) = self.per_host.get_mut(&e.host) {
            h.sub(e);
            if h.n == 0 {
                self.per_host.remove(&e.host);
            }
        }
        dec(&mut self.per_host_service, (e.host, e.service));
        if self.track_src_port {
            dec(&mut self.per_host_src_port, (e.host, e.src_port));
        }
        self.per_service[usize::from(e.service)].sub(e);
    }

    #[inline]
    pub fn view(&self, e: &WindowEntry) -> WindowView {
        WindowView {
            host: self.per_host.get(&e.host).copied().unwrap_or_default(),
            service: self.per_service[usize::from(e.service)],
            host_service: self
                .per_host_service
                .get(&(e.host, e.service))
                .copied()
                .unwrap_or(0),
            host_src_port: if self.track_src_port {
                self.per_host_src_port
                    .get(&(e.host, e.src_port))
                    .copied()
                    .unwrap_or(0)
            } else {
                0
            },
        }
    }

    /// Distinct destination hosts currently counted.
    pub fn hosts(&self) -> usize {
        self.per_host.len()
    }

    /// Heap bytes of the maps (capacity, keys, values and one control byte per slot).
    pub fn heap_bytes(&self) -> usize {
        fn map_bytes<K, V>(m: &FxMap<K, V>) -> usize {
            m.capacity() * (size_of::<(K, V)>() + 1)
        }
        map_bytes(&self.per_host)
            + map_bytes(&self.per_host_service)
            + map_bytes(&self.per_host_src_port)
            + self.per_service.capacity() * size_of::<ErrCounts>()
    }
}

#[inline]
fn dec<K: std::hash::Hash + Eq>(m: &mut FxMap<K, u32>, k: K) {
    if let Some(c) = m.get_mut(&k) {
        *c -= 1;
        if *c == 0 {
            m.remove(&k);
        }
    }
}
