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
//!
//! The rebuild reads the map key by key (a system call each, up to `nat::TRANSLATIONS` of
//! them), so it runs in a thread of its own ([`NatFilter::spawn_keeper`]): the capture loop,
//! which must keep draining the ring buffer, never waits for it.

use std::{
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData},
};
use log::{info, warn};
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

/// How often the keeper counts the bits (a scan of 256 KiB).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The least time between two rebuilds. A spoofed flood through a port forward gives every
/// packet a new outside client, which can fill an eighth of the bits within a second; reading
/// the translations (a system call per key) that often would cost a good part of a core
/// during an attack. Meanwhile the filter passes more packets on to the lookup, which costs
/// what it did without a filter, and is never wrong.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_secs(10);

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
    /// Keys read from the translations' map: the translations held, and any read again where
    /// a key removed meanwhile sent the walk back to the start.
    pub translations: u64,
}

/// Why a rebuild did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("eBPF map {name} failed")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "the translations' map changed too fast to be read ({read} keys read); the filter stays"
    )]
    TooBusy { read: usize },
}

/// The filter, mapped into this process, with handles of its own on the maps it reads and
/// switches (so that it can live in another thread than the loaded object).
pub struct NatFilter {
    words: Mapping,
    active: Array<MapData, u64>,
    replies: HashMap<MapData, Tuple, Tuple>,
    rebuilds: Arc<AtomicU64>,
}

/// A second handle on map `name` of a loaded object (a duplicate of its descriptor).
fn handle(ebpf: &Ebpf, name: &'static str) -> Result<Map, CaptureError> {
    let map = ebpf.map(name).ok_or(CaptureError::MissingMap { name })?;
    let data = match map {
        Map::Array(d) | Map::LruHashMap(d) | Map::HashMap(d) => d,
        _ => {
            return Err(CaptureError::MapMemory {
                name,
                source: std::io::Error::other("not an array or hash map"),
            });
        }
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| CaptureError::MapMemory { name, source })?;
    MapData::from_fd(fd)
        .and_then(Map::from_map_data)
        .map_err(|source| CaptureError::Map { name, source })
}

impl NatFilter {
    /// Maps `NAT_FILTER` of a loaded object and opens `NAT_ACTIVE` and `NAT_REPLIES`.
    pub fn open(ebpf: &Ebpf) -> Result<NatFilter, CaptureError> {
        let name = map_names::NAT_FILTER;
        let Map::Array(filter) = ebpf.map(name).ok_or(CaptureError::MissingMap { name })? else {
            return Err(CaptureError::MapMemory {
                name,
                source: std::io::Error::other("not an array map"),
            });
        };
        let len = 2 * FILTER_WORDS as usize * size_of::<u64>();
        let words =
            Mapping::new(filter, len).map_err(|source| CaptureError::MapMemory { name, source })?;
        let (active, replies) = (map_names::NAT_ACTIVE, map_names::NAT_REPLIES);
        Ok(NatFilter {
            words,
            active: Array::try_from(handle(ebpf, active)?).map_err(|source| CaptureError::Map {
                name: active,
                source,
            })?,
            replies: HashMap::try_from(handle(ebpf, replies)?).map_err(|source| {
                CaptureError::Map {
                    name: replies,
                    source,
                }
            })?,
            rebuilds: Arc::default(),
        })
    }

    /// Word `index` of the two halves. Panics beyond them (`base` arguments are 0 or
    /// `FILTER_WORDS`): the check that keeps the pointer below in the mapping.
    fn word(&self, index: u32) -> &AtomicU64 {
        assert!((index as usize + 1) * size_of::<u64>() <= self.words.len());
        // SAFETY: in bounds (asserted), 8-aligned (a page-aligned mapping of u64 words), and
        // the kernel changes the word only atomically (an atomic OR).
        unsafe { AtomicU64::from_ptr(self.words.as_ptr().cast::<u64>().add(index as usize)) }
    }

    /// The first word of the half entering packets read, `None` until a translation has been
    /// learned.
    pub fn active_base(&self) -> Result<Option<u32>, RebuildError> {
        let active = self.active.get(&0, 0).map_err(|source| RebuildError::Map {
            name: map_names::NAT_ACTIVE,
            source,
        })?;
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
    pub fn rebuild(&mut self) -> Result<Option<Rebuilt>, RebuildError> {
        let Some(base) = self.active_base()? else {
            return Ok(None);
        };
        let bits_before = self.bits_set(base);
        let other = FILTER_WORDS - base;
        // Cleared first: a translation learned from here on sets its bit in it.
        for i in other..other + FILTER_WORDS {
            self.word(i).store(0, Ordering::SeqCst);
        }
        // The clear before any key is read (the system calls below are no promise of that on
        // every CPU architecture).
        std::sync::atomic::fence(Ordering::SeqCst);
        let mut translations = 0u64;
        for key in self.replies.keys() {
            let k = key.map_err(|source| RebuildError::Map {
                name: map_names::NAT_REPLIES,
                source,
            })?;
            if translations as usize >= MAX_KEYS_READ {
                return Err(RebuildError::TooBusy {
                    read: translations as usize,
                });
            }
            let (word, mask) = filter_bit(&k.dst, k.dport, k.protocol);
            self.word(other + word).fetch_or(mask, Ordering::SeqCst);
            translations += 1;
        }
        self.active
            .set(0, active_for(other), 0)
            .map_err(|source| RebuildError::Map {
                name: map_names::NAT_ACTIVE,
                source,
            })?;
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Rebuilt {
            bits_before,
            bits_after: self.bits_set(other),
            translations,
        }))
    }

    /// [`NatFilter::rebuild`] when the half in use has more than [`REBUILD_AT_BITS`] bits set.
    pub fn rebuild_if_full(&mut self) -> Result<Option<Rebuilt>, RebuildError> {
        match self.active_base()? {
            Some(base) if self.bits_set(base) > REBUILD_AT_BITS => self.rebuild(),
            _ => Ok(None),
        }
    }

    /// Rebuilds so far.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    /// Moves the filter into a thread that checks it every second and rebuilds it when full
    /// ([`NatFilter::rebuild_if_full`]), at most once every [`MIN_REBUILD_INTERVAL`], logging
    /// each rebuild and the first failure. It stops when the returned [`Keeper`] is dropped.
    pub fn spawn_keeper(mut self) -> std::io::Result<Keeper> {
        let rebuilds = Arc::clone(&self.rebuilds);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("nat-filter".into())
            .spawn(move || {
                let mut warned = false;
                let mut last_rebuild: Option<std::time::Instant> = None;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECK_EVERY) {
                    if last_rebuild.is_some_and(|t| t.elapsed() < MIN_REBUILD_INTERVAL) {
                        continue;
                    }
                    match self.rebuild_if_full() {
                        Ok(Some(r)) => {
                            last_rebuild = Some(std::time::Instant::now());
                            info!(
                                "filter of translated connections' answers rebuilt: {} bits set before, {} after ({} translations read)",
                                r.bits_before, r.bits_after, r.translations
                            )
                        }
                        Ok(None) => {}
                        Err(e) if !warned => {
                            warned = true;
                            warn!(
                                "rebuilding the filter of translated connections' answers failed: {e} (more packets pay the translation lookup; logged once)"
                            );
                        }
                        Err(_) => {}
                    }
                }
            })?;
        Ok(Keeper {
            stop: Some(stop),
            thread: Some(thread),
            rebuilds,
        })
    }
}

/// The thread that keeps the filter ([`NatFilter::spawn_keeper`]).
pub struct Keeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    rebuilds: Arc<AtomicU64>,
}

impl Keeper {
    /// Rebuilds so far.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
