//! Per-key counters shared by the two windows: updated on insert and on expiry, so a window's
//! features cost O(1) per connection and no window is ever rescanned.
//!
//! Every map entry is removed when its count drops to 0, so the maps hold at most one entry per
//! connection in the window, however many distinct hosts the sensor has seen.
//!
//! Hosts are counted by a dense id ([`HostIds`]) rather than their 128-bit address: the
//! per-host counts are a vector indexed by it, and the per-host-and-service and
//! per-host-and-port maps have 64-bit keys, cheaper to hash and half the size.

use std::hash::Hash;

use super::service::ServiceKey;
use crate::{hashing::Map, kdd::SERVICES};

// The maps are `crate::hashing::Map`s, seeded per map: keys are addresses an attacker
// chooses, and with an unseeded hash a flood of keys computed to collide would turn every
// lookup into a walk of all of them (see `crate::hashing`).

/// A destination host: the address as 128 bits (IPv4 as v4-mapped IPv6).
pub type HostKey = u128;

/// A host's dense id ([`HostIds`]).
pub type HostId = u32;

/// Dense ids for the hosts the windows and the open connections name, reference counted: an id
/// is free again once nothing names it, so the ids stay as few as the hosts held.
#[derive(Clone, Debug, Default)]
pub struct HostIds {
    ids: Map<HostKey, HostId>,
    /// Per id: its host, and how many entries or connections name it (0: free).
    hosts: Vec<(HostKey, u32)>,
    free: Vec<HostId>,
}

impl HostIds {
    /// The id of `key`, with one more reference.
    #[inline]
    pub fn acquire(&mut self, key: HostKey) -> HostId {
        let hosts = &mut self.hosts;
        let free = &mut self.free;
        let id = *self.ids.entry(key).or_insert_with(|| match free.pop() {
            Some(id) => {
                hosts[id as usize] = (key, 0);
                id
            }
            None => {
                hosts.push((key, 0));
                (hosts.len() - 1) as HostId
            }
        });
        self.hosts[id as usize].1 += 1;
        id
    }

    /// One more reference to a held id.
    #[inline]
    pub fn retain(&mut self, id: HostId) {
        self.hosts[id as usize].1 += 1;
    }

    /// One reference less; the id is free when none is left.
    #[inline]
    pub fn release(&mut self, id: HostId) {
        let Some(h) = self.hosts.get_mut(id as usize) else {
            return;
        };
        h.1 -= 1;
        if h.1 == 0 {
            self.ids.remove(&h.0);
            self.free.push(id);
        }
    }

    /// Ids in use.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Heap bytes (capacity-based estimate).
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * (size_of::<(HostKey, HostId)>() + 1)
            + self.hosts.capacity() * size_of::<(HostKey, u32)>()
            + self.free.capacity() * size_of::<HostId>()
    }
}

/// One connection as the windows see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowEntry {
    pub host: HostId,
    /// The KDD service (an index into [`SERVICES`]).
    pub service: u8,
    /// The service as the windows count it (`super::service::window_key`).
    pub service_key: ServiceKey,
    pub syn_error: bool,
    pub rej_error: bool,
    pub src_port: u16,
}

/// Connections, their errors, and how many distinct values of the other key they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrCounts {
    pub n: u32,
    pub syn_errors: u32,
    pub rej_errors: u32,
    /// Distinct services among a host's connections, or distinct hosts among a service's
    /// (KDD's `diff_srv_rate` and `srv_diff_host_rate` count these, see
    /// `super::distinct_rate`).
    pub distinct: u32,
}

impl ErrCounts {
    /// Counts one more connection.
    #[inline]
    pub fn add(&mut self, e: &WindowEntry) {
        self.n += 1;
        self.syn_errors += u32::from(e.syn_error);
        self.rej_errors += u32::from(e.rej_error);
    }
    /// Counts one connection fewer.
    #[inline]
    pub fn sub(&mut self, e: &WindowEntry) {
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
    /// By host id (grown to the largest id seen).
    per_host: Vec<ErrCounts>,
    /// Hosts with a connection counted.
    hosts: usize,
    /// By `host << 32 | service key`.
    per_host_service: Map<u64, u32>,
    /// By `host << 16 | port`.
    per_host_src_port: Map<u64, u32>,
    /// By service key, for the named services (keys below [`SERVICES`]'s length).
    per_service: Vec<ErrCounts>,
    /// By service key, for the unnamed ports (each a service, `super::service::window_key`);
    /// an entry is removed when its count drops to 0.
    per_port_service: Map<ServiceKey, ErrCounts>,
    track_src_port: bool,
}

#[inline]
fn host_service(e: &WindowEntry) -> u64 {
    u64::from(e.host) << 32 | u64::from(e.service_key)
}

#[inline]
fn host_port(e: &WindowEntry) -> u64 {
    u64::from(e.host) << 16 | u64::from(e.src_port)
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
        let h = e.host as usize;
        if h >= self.per_host.len() {
            self.per_host.resize(h + 1, ErrCounts::default());
        }
        self.hosts += usize::from(self.per_host[h].n == 0);
        let pair = self.per_host_service.entry(host_service(e)).or_default();
        *pair += 1;
        // The pair's first connection: one more service of the host, one more host of the
        // service.
        let new_pair = u32::from(*pair == 1);
        self.per_host[h].add(e);
        self.per_host[h].distinct += new_pair;
        if self.track_src_port {
            *self.per_host_src_port.entry(host_port(e)).or_default() += 1;
        }
        let s = self.service_mut(e.service_key);
        s.add(e);
        s.distinct += new_pair;
    }

    /// The counts of a service key, created at zero for an unnamed port not counted yet.
    #[inline]
    fn service_mut(&mut self, key: ServiceKey) -> &mut ErrCounts {
        if (key as usize) < self.per_service.len() {
            &mut self.per_service[key as usize]
        } else {
            self.per_port_service.entry(key).or_default()
        }
    }

    #[inline]
    fn service(&self, key: ServiceKey) -> ErrCounts {
        match self.per_service.get(key as usize) {
            Some(c) => *c,
            None => self.per_port_service.get(&key).copied().unwrap_or_default(),
        }
    }

    /// Replaces the error status of an entry previously inserted (`old` and `new` differ only
    /// there): only the per-host and per-service counts carry it.
    #[inline]
    pub fn update_status(&mut self, old: &WindowEntry, new: &WindowEntry) {
        let (ds, dr) = (
            u32::from(new.syn_error).wrapping_sub(u32::from(old.syn_error)),
            u32::from(new.rej_error).wrapping_sub(u32::from(old.rej_error)),
        );
        let bump = |c: &mut ErrCounts| {
            c.syn_errors = c.syn_errors.wrapping_add(ds);
            c.rej_errors = c.rej_errors.wrapping_add(dr);
        };
        if let Some(h) = self.per_host.get_mut(old.host as usize) {
            bump(h);
        }
        bump(self.service_mut(old.service_key));
    }

    /// Forgets an entry previously inserted.
    #[inline]
    pub fn remove(&mut self, e: &WindowEntry) {
        // The pair's last connection: one service of the host fewer, one host of the service.
        let gone_pair = u32::from(dec(&mut self.per_host_service, host_service(e)));
        if let Some(h) = self.per_host.get_mut(e.host as usize) {
            h.sub(e);
            h.distinct -= gone_pair;
            self.hosts -= usize::from(h.n == 0);
        }
        if self.track_src_port {
            dec(&mut self.per_host_src_port, host_port(e));
        }
        let s = self.service_mut(e.service_key);
        s.sub(e);
        s.distinct -= gone_pair;
        if s.n == 0 && e.service_key as usize >= self.per_service.len() {
            self.per_port_service.remove(&e.service_key);
        }
    }

    #[inline]
    pub fn view(&self, e: &WindowEntry) -> WindowView {
        WindowView {
            host: self
                .per_host
                .get(e.host as usize)
                .copied()
                .unwrap_or_default(),
            service: self.service(e.service_key),
            host_service: self
                .per_host_service
                .get(&host_service(e))
                .copied()
                .unwrap_or(0),
            host_src_port: if self.track_src_port {
                self.per_host_src_port
                    .get(&host_port(e))
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
        self.hosts
    }

    /// Heap bytes of the maps (capacity, keys, values and one control byte per slot).
    pub fn heap_bytes(&self) -> usize {
        fn map_bytes<K, V>(m: &Map<K, V>) -> usize {
            m.capacity() * (size_of::<(K, V)>() + 1)
        }
        self.per_host.capacity() * size_of::<ErrCounts>()
            + map_bytes(&self.per_host_service)
            + map_bytes(&self.per_host_src_port)
            + map_bytes(&self.per_port_service)
            + self.per_service.capacity() * size_of::<ErrCounts>()
    }
}

/// One less of `k`, removed at 0; whether it reached 0.
#[inline]
fn dec<K: Hash + Eq>(m: &mut Map<K, u32>, k: K) -> bool {
    if let Some(c) = m.get_mut(&k) {
        *c -= 1;
        if *c == 0 {
            m.remove(&k);
            return true;
        }
    }
    false
}
