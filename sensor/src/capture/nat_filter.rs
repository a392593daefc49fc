//! The kernel's filter of translated connections' answers, rebuilt before it fills up.
//!
//! Why: an entering packet is looked up among the learned translations only if its bit in a
//! bitmap of the answers' destinations is set (`sensor_common::nat::filter_bit`: the lookup, a
//! helper call hashing a 40-byte key, made every packet of a translating gateway cost 1.6x).
//! The kernel sets a translation's bit where it learns it, but cannot clear it: the LRU map of
//! translations forgets without telling. On a gateway with port forwards the answers go to
//! ever new outside clients, so the bits would accumulate until every packet passed the
//! filter and paid the lookup again. So the map holds two halves (`nat::filter_base`): the
//! kernel sets each new bit in both, and this side, when the half in use has more than
//! [`REBUILD_AT_BITS`] bits set, clears the other half, sets the bits of the translations the
//! LRU map still holds (at most `nat::TRANSLATIONS`, a thirty-second of the bits) and switches
//! `NAT_ACTIVE` to it. Nothing is lost in between: the kernel inserts a translation before it
//! sets its bits, and this side clears the half before it reads the map, so each translation
//! is either read from the map or sets its own bit after the clear. Both sides change the
//! filter's words only atomically.

use std::sync::atomic::{AtomicU64, Ordering};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use sensor_common::{
    map_names,
    nat::{FILTER_BITS, FILTER_WORDS, TRANSLATIONS, Tuple, active_for, filter_base, filter_bit},
};

use super::CaptureError;
use crate::flow_table::Mapping;

/// Bits set in the half in use beyond which the filter is rebuilt: an eighth, so that at most
/// about one packet in eight that is no answer pays the lookup. A rebuild leaves at most
/// `TRANSLATIONS` bits (a thirty-second), so the next one comes only after about 200,000 new
/// answer destinations, never from the translations alone.
pub const REBUILD_AT_BITS: u64 = FILTER_BITS / 8;

/// How often the capture loop counts the bits (a scan of 256 KiB).
const CHECK_EVERY_NS: u64 = 1_000_000_000;

/// Keys read from the translations' map at most, per rebuild: a key the kernel removes while
/// it is read sends the walk back to the start of the map, so a busy map is read again in
/// part; a walk that takes longer is given up (the filter stays as it was, never wrong).
const MAX_KEYS_READ: usize = 4 * TRANSLATIONS as usize;

/// A rebuild of the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuilt {
    /// Bits set in the half in use before.
    pub bits_before: u64,
    /// Bits set in the half switched to (each translation's, and any learned meanwhile).
    pub bits_after: u64,
    /// Translations read from the map.
    pub translations: u64,
}

/// Why a rebuild did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading eBPF map {name} failed")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error(
        "the translations' map changed too fast to be read ({read} keys read); the filter stays"
    )]
    TooBusy { read: usize },
}

/// The filter, mapped into this process (the mapping keeps the map alive).
pub struct NatFilter {
    words: Mapping,
    rebuilds: u64,
    next_check_ns: u64,
}

impl NatFilter {
    /// Maps `NAT_FILTER` of a loaded object.
    pub fn open(ebpf: &Ebpf) -> Result<NatFilter, CaptureError> {
        let name = map_names::NAT_FILTER;
        let map = match ebpf.map(name) {
            Some(aya::maps::Map::Array(d)) => d,
            Some(_) => {
                return Err(CaptureError::MapMemory {
                    name,
                    source: std::io::Error::other("not an array map"),
                });
            }
            None => return Err(CaptureError::MissingMap { name }),
        };
        let len = 2 * FILTER_WORDS as usize * size_of::<u64>();
        let words =
            Mapping::new(map, len).map_err(|source| CaptureError::MapMemory { name, source })?;
        Ok(NatFilter {
            words,
            rebuilds: 0,
            next_check_ns: 0,
        })
    }

    fn word(&self, index: u32) -> &AtomicU64 {
        assert!((index as usize + 1) * size_of::<u64>() <= self.words.len());
        // SAFETY: in bounds (asserted), 8-aligned (a page-aligned mapping of u64 words), and
        // the kernel changes the word only atomically (compare-and-swap).
        unsafe { AtomicU64::from_ptr(self.words.as_ptr().cast::<u64>().add(index as usize)) }
    }

    /// The first word of the half entering packets read, `None` until a translation has been
    /// learned.
    pub fn active_base(ebpf: &Ebpf) -> Result<Option<u32>, RebuildError> {
        let name = map_names::NAT_ACTIVE;
        let map = ebpf.map(name).ok_or(RebuildError::MissingMap { name })?;
        let a: Array<&MapData, u64> =
            Array::try_from(map).map_err(|source| RebuildError::Map { name, source })?;
        let active = a
            .get(&0, 0)
            .map_err(|source| RebuildError::Map { name, source })?;
        Ok(filter_base(active))
    }

    /// Bits set in the half starting at word `base`.
    pub fn bits_set(&self, base: u32) -> u64 {
        (base..base + FILTER_WORDS)
            .map(|i| u64::from(self.word(i).load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Whether the half starting at `base` passes an answer entering to `dst`, `dport`.
    pub fn passes(&self, base: u32, dst: &[u32; 4], dport: u16, protocol: u8) -> bool {
        let (word, mask) = filter_bit(dst, dport, protocol);
        self.word(base + word).load(Ordering::Relaxed) & mask != 0
    }

    /// Rebuilds the half not in use from the translations the kernel holds and switches to
    /// it. `None` when no translation has been learned (no half in use).
    pub fn rebuild(&mut self, ebpf: &mut Ebpf) -> Result<Option<Rebuilt>, RebuildError> {
        let Some(base) = Self::active_base(ebpf)? else {
            return Ok(None);
        };
        let bits_before = self.bits_set(base);
        let other = FILTER_WORDS - base;
        // Cleared first: a translation learned from here on sets its bit in it.
        for i in other..other + FILTER_WORDS {
            self.word(i).store(0, Ordering::SeqCst);
        }
        let name = map_names::NAT_REPLIES;
        let map = ebpf.map(name).ok_or(RebuildError::MissingMap { name })?;
        let replies: HashMap<&MapData, Tuple, Tuple> =
            HashMap::try_from(map).map_err(|source| RebuildError::Map { name, source })?;
        let mut translations = 0u64;
        let mut read = 0usize;
        for key in replies.keys() {
            let k = key.map_err(|source| RebuildError::Map { name, source })?;
            read += 1;
            if read > MAX_KEYS_READ {
                return Err(RebuildError::TooBusy { read });
            }
            let (word, mask) = filter_bit(&k.dst, k.dport, k.protocol);
            self.word(other + word).fetch_or(mask, Ordering::SeqCst);
            translations += 1;
        }
        let name = map_names::NAT_ACTIVE;
        let map = ebpf
            .map_mut(name)
            .ok_or(RebuildError::MissingMap { name })?;
        let mut active: Array<&mut MapData, u64> =
            Array::try_from(map).map_err(|source| RebuildError::Map { name, source })?;
        active
            .set(0, active_for(other), 0)
            .map_err(|source| RebuildError::Map { name, source })?;
        self.rebuilds += 1;
        Ok(Some(Rebuilt {
            bits_before,
            bits_after: self.bits_set(other),
            translations,
        }))
    }

    /// The capture loop's check at `now_ns` (at most once a second): rebuilds the filter when
    /// the half in use has more than [`REBUILD_AT_BITS`] bits set.
    pub fn tick(&mut self, ebpf: &mut Ebpf, now_ns: u64) -> Result<Option<Rebuilt>, RebuildError> {
        if now_ns < self.next_check_ns {
            return Ok(None);
        }
        self.next_check_ns = now_ns.saturating_add(CHECK_EVERY_NS);
        match Self::active_base(ebpf)? {
            Some(base) if self.bits_set(base) > REBUILD_AT_BITS => self.rebuild(ebpf),
            _ => Ok(None),
        }
    }

    /// Rebuilds so far.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }
}
