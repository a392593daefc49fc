//! User-side view of the kernel flow table (`FLOWS`, open addressing in an array; layout and
//! concurrency rules in [`sensor_common::slots`]).
//!
//! Both maps are created `BPF_F_MMAPABLE` and mapped into this process: reading the whole table
//! is a memory scan, not two syscalls per entry as with a BPF hash map, and a lookup walks the
//! same probe sequence as the kernel program. This side removes entries from one thread
//! (`&mut self`); the kernel evicts entries from a full table, and a removal claims its slot the
//! way an eviction does, so that each entry goes once.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::OnceLock,
};

use aya::maps::{Map, MapData};
use sensor_common::{
    FlowKey, FlowValue,
    atomic::{compare_exchange_u64, fetch_add_u64, load_u64, publish_u64},
    slots::{FlowSlot, Probe, key_eq, key_hash, probe, reclaim_step, state},
};

/// The seed of [`key_hash`] for every object this process loads: random, so that remote hosts
/// cannot aim their flows at one probe sequence. 0 only if the kernel has no `getrandom`.
pub fn hash_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let mut seed = 0u64;
        // SAFETY: getrandom writes at most 8 bytes into `seed`.
        let n = unsafe { libc::getrandom((&raw mut seed).cast(), 8, 0) };
        if n != 8 {
            log::warn!(
                "getrandom failed ({}); flow hash seed 0",
                io::Error::last_os_error()
            );
            seed = 0;
        }
        seed
    })
}

/// A shared, writable mapping of an array map.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain shared memory; its users access it atomically or through `&mut`.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `map` (an array created `BPF_F_MMAPABLE`).
    pub(crate) fn new(map: &MapData, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks `len` against the
        // array's size and that the map is mmapable.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave NULL"))?,
            len,
        })
    }
}

impl Mapping {
    /// The start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Errors opening the table.
#[derive(Debug, thiserror::Error)]
pub enum FlowTableError {
    #[error("map {0} is not an array")]
    NotAnArray(&'static str),
    #[error("reading the size of map {0} failed")]
    Info(&'static str, #[source] aya::maps::MapError),
    #[error("map {name} has {slots} slots, not a power of two")]
    BadSize { name: &'static str, slots: u32 },
    #[error("mapping map {0} into memory failed")]
    Mmap(&'static str, #[source] io::Error),
}

/// The flow table, mapped into this process. The mappings keep the maps alive.
pub struct FlowTable {
    slots: Mapping,
    count: Mapping,
    slot_count: u32,
    seed: u64,
}

// SAFETY: the mappings are plain shared memory; every access goes through `&self`/`&mut self`
// with atomic state accesses as `sensor_common::slots` prescribes.
unsafe impl Send for FlowTable {}

fn array<'a>(map: &'a Map, name: &'static str) -> Result<&'a MapData, FlowTableError> {
    match map {
        Map::Array(d) => Ok(d),
        _ => Err(FlowTableError::NotAnArray(name)),
    }
}

impl FlowTable {
    /// Maps `FLOWS` and `FLOW_COUNT` of an object loaded with [`hash_seed`].
    pub fn new(flows: &Map, count: &Map) -> Result<FlowTable, FlowTableError> {
        use sensor_common::map_names::{FLOW_COUNT, FLOWS};
        let flows = array(flows, FLOWS)?;
        let count = array(count, FLOW_COUNT)?;
        let slot_count = flows
            .info()
            .map_err(|e| FlowTableError::Info(FLOWS, e))?
            .max_entries();
        if !slot_count.is_power_of_two() {
            return Err(FlowTableError::BadSize {
                name: FLOWS,
                slots: slot_count,
            });
        }
        let len = slot_count as usize * size_of::<FlowSlot>();
        Ok(FlowTable {
            slots: Mapping::new(flows, len).map_err(|e| FlowTableError::Mmap(FLOWS, e))?,
            count: Mapping::new(count, size_of::<u64>())
                .map_err(|e| FlowTableError::Mmap(FLOW_COUNT, e))?,
            slot_count,
            seed: hash_seed(),
        })
    }

    fn slot(&self, idx: u32) -> *mut FlowSlot {
        debug_assert!(idx < self.slot_count);
        // SAFETY: `idx` is in bounds of the mapping, whose slots are 8-aligned (page start,
        // 128-byte slots).
        unsafe { self.slots.ptr.as_ptr().cast::<FlowSlot>().add(idx as usize) }
    }

    /// The state of slot `idx` and, when in use, its key and value (read while the kernel may
    /// be updating the value: as with a map lookup syscall, the copy is not atomic).
    fn read(&self, idx: u32) -> (u64, FlowKey, FlowValue) {
        let s = self.slot(idx);
        // SAFETY: a slot of the mapping; the state is read atomically, the rest with volatile
        // reads because kernel CPUs write it concurrently.
        unsafe {
            let st = load_u64(&raw const (*s).state);
            if st & state::KIND != state::USED {
                return (st, FlowKey::default(), FlowValue::default());
            }
            (
                st,
                std::ptr::read_volatile(&raw const (*s).key),
                std::ptr::read_volatile(&raw const (*s).value),
            )
        }
    }

    fn find(&self, key: &FlowKey) -> Option<u32> {
        let hash = key_hash(key, self.seed);
        match probe(self.slot_count, hash, key, |i| {
            let (st, k, _) = self.read(i);
            (st, k)
        }) {
            Probe::Found(idx) => Some(idx),
            Probe::Absent(_) | Probe::NoRoom => None,
        }
    }

    /// Every flow in the table.
    pub fn entries(&self) -> Vec<(FlowKey, FlowValue)> {
        self.entries_part(0, 1)
    }

    /// The flows in part `part` of `parts` (`part < parts`) of the slots: consecutive slots,
    /// the parts of about equal size, together every slot once.
    /// A `part` past the last is empty.
    pub fn entries_part(&self, part: usize, parts: usize) -> Vec<(FlowKey, FlowValue)> {
        let (n, parts) = (u64::from(self.slot_count), parts.max(1) as u64);
        let bound = |k: u64| (n * k.min(parts) / parts) as u32;
        (bound(part as u64)..bound(part as u64 + 1))
            .filter_map(|i| {
                let (st, k, v) = self.read(i);
                (st & state::KIND == state::USED).then_some((k, v))
            })
            .collect()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &FlowKey) -> Option<FlowValue> {
        self.find(key).map(|i| self.read(i).2)
    }

    /// Removes `key`; whether it was present. A kernel CPU that still updates the entry at that
    /// moment updates a removed slot (as with a BPF hash map, whose removed elements are
    /// reused).
    pub fn remove(&mut self, key: &FlowKey) -> bool {
        self.remove_where(key, |_| true).is_some()
    }

    /// Removes `key` if it holds the connection that began at `first_seen_ns` (not a later one
    /// on the same 5-tuple), and returns its value as removed (read while the slot was
    /// claimed: only a packet a kernel CPU was counting at that very moment can miss it, see
    /// [`Self::remove`]). `None` also when the
    /// kernel evicted it meanwhile: its `EVICTED` event then brings its record.
    pub fn remove_connection(&mut self, key: &FlowKey, first_seen_ns: u64) -> Option<FlowValue> {
        self.remove_where(key, |v| v.first_seen_ns == first_seen_ns)
    }

    /// Removes `key` if its value passes `wanted`, and returns that value: the slot is claimed
    /// (in use -> busy, by compare-and-swap on the state read), checked, then made a tombstone,
    /// as a kernel eviction does (`sensor_common::slots`); so an entry is removed or evicted,
    /// once.
    fn remove_where(
        &mut self,
        key: &FlowKey,
        wanted: impl Fn(&FlowValue) -> bool,
    ) -> Option<FlowValue> {
        let idx = self.find(key)?;
        let s = self.slot(idx);
        let count = self.count.ptr.as_ptr().cast::<u64>();
        // SAFETY: a slot of the mapping and the count word of FLOW_COUNT's mapping (8-aligned);
        // key and value are read while the slot is claimed.
        let v = unsafe {
            let st = load_u64(&raw const (*s).state);
            if st & state::KIND != state::USED
                || !compare_exchange_u64(&raw mut (*s).state, st, state::BUSY | (st & !state::KIND))
            {
                return None;
            }
            let k = std::ptr::read_volatile(&raw const (*s).key);
            let v = std::ptr::read_volatile(&raw const (*s).value);
            if !key_eq(&k, key) || !wanted(&v) {
                publish_u64(&raw mut (*s).state, st);
                return None;
            }
            publish_u64(&raw mut (*s).state, state::TOMB);
            fetch_add_u64(count, u64::MAX);
            v
        };
        self.reclaim(idx);
        Some(v)
    }

    /// Turns the tombstone at `idx`, and the tombstones just before it, back into empty slots
    /// when the slot after it is empty (`sensor_common::slots::reclaim_step`, which the kernel
    /// applies after an eviction too).
    ///
    /// Without this, churn would use up the empty slots, and every lookup of an absent key (each
    /// new flow) would walk the whole probe sequence. It is safe because an empty slot only
    /// ends probe sequences that no key lies beyond: a key sits in the first free slot of its
    /// sequence, so no sequence through an empty slot reaches a key after it, and turning a
    /// tombstone that directly precedes an empty slot into an empty one keeps that true.
    fn reclaim(&mut self, idx: u32) {
        let mask = self.slot_count - 1;
        let mut i = idx;
        for _ in 0..self.slot_count {
            let next = self.slot(i.wrapping_add(1) & mask);
            // SAFETY: state words of two consecutive slots of the mapping, 8-aligned.
            if !unsafe { reclaim_step(&raw mut (*self.slot(i)).state, &raw const (*next).state) } {
                return;
            }
            i = i.wrapping_sub(1) & mask;
        }
    }

    /// How many slots are in use and how many are tombstones (the rest are empty or being
    /// filled).
    pub fn occupancy(&self) -> (u64, u64) {
        let (mut used, mut tombs) = (0, 0);
        for i in 0..self.slot_count {
            // SAFETY: a slot of the mapping, its state read atomically.
            match unsafe { load_u64(&raw const (*self.slot(i)).state) } & state::KIND {
                state::USED => used += 1,
                state::TOMB => tombs += 1,
                _ => {}
            }
        }
        (used, tombs)
    }

    /// Flows in the table (the kernel's count).
    pub fn len(&self) -> u64 {
        // SAFETY: the count word of FLOW_COUNT's mapping, 8-aligned; read atomically.
        unsafe { fetch_add_u64(self.count.ptr.as_ptr().cast::<u64>(), 0) }
    }

    /// Whether the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
