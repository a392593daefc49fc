//! Per-key counters shared by the two windows: updated on insert and on expiry, so a window's
//! features cost O(1) per connection and no window is ever rescanned.
//!
//! Every map entry is removed when its count drops to 0, so the maps hold at most one entry per
//! connection in the window, however many distinct hosts the sensor has seen.

use std::hash::Hash;

use rustc_hash::FxHashMap as FxMap;

use crate::kdd::SERVICES;

// The maps use the Fx hash (rustc-hash). Keys are addresses an attacker chooses, but the maps
// are bounded by the windows and hold counters only, so collision flooding costs CPU, not
// memory; SipHash would cost ~2x on every connection.

/// A destination host: the address as 128 bits (IPv4 as v4-mapped IPv6).
pub type HostKey = u128;

/// One connection as the windows see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// Counts one more connection.
    #[inline]
    pub fn add(&mut self, e: &WindowEntry) {
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

    /// Whether connections are also counted by source port.
    pub fn tracks_src_port(&self) -> bool {
        self.track_src_port
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
fn dec<K: Hash + Eq>(m: &mut FxMap<K, u32>, k: K) {
    if let Some(c) = m.get_mut(&k) {
        *c -= 1;
        if *c == 0 {
            m.remove(&k);
        }
    }
}
