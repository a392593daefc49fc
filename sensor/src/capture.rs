//! Capture stage: load the kernel programs, attach them, and run the connection
//! [`Lifecycle`] over the kernel's flow table and its event ring.
//!
//! The kernel signals, through the `EVENTS` ring buffer, the packets user space must learn of
//! at once: a connection's first packet, the answer to its SYN, its FIN-both-ways or RST. The
//! lifecycle ([`crate::lifecycle`], shared with replay) turns them into [`ConnEvent`]s, finalises
//! idle connections by deadline, and adopts what lost events missed with a periodic scan of the
//! memory-mapped table.
//!
//! Everything attached is owned by [`Capture`] through bpf_links (XDP and TCX), nothing is pinned:
//! dropping it, or the process dying, detaches the programs.

pub mod nat;
pub mod nat_filter;

use std::{io, os::fd::AsRawFd, sync::Arc, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, ProgramArray, RingBuf},
    programs::{ProgramError, ProgramFd, SchedClassifier, TcAttachType, Xdp, XdpMode},
};
use log::{debug, warn};
use sensor_common::{
    FlowEvent, FlowKey, FlowValue, Health,
    flow::{ParkedKey, event},
    global_names, map_names, program_names,
    slots::{seed_words, slot_count},
    watched,
};

use crate::{
    capture::nat_filter::{Keeper, NatFilter},
    flow_table::{FlowTable, FlowTableError, hash_seed},
    flows::ConnEvent,
    lifecycle::{FlowStore, Lifecycle, LifecycleConfig, LifecycleStats},
};

/// The eBPF object built by `build.rs` (aya-build).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));

/// How to attach XDP.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// Native (driver) mode where the driver supports it, else generic.
    #[default]
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (SKB) mode: works on any interface, slower.
    Generic,
}

/// What to watch and how.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Interfaces to attach to (XDP ingress + TC egress on each).
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpAttachMode,
    /// Flow table capacity (entries). A packet whose new flow does not fit is counted in
    /// `Health::table_full`.
    pub table_size: u32,
    /// Ring buffer size in bytes (a power-of-two multiple of the page size).
    pub ring_bytes: u32,
    /// How connections are finalised. Its table scan reads the whole memory-mapped slot array
    /// (two slots per flow of capacity, 128 bytes each: 64 MiB for 262,144 flows).
    pub lifecycle: LifecycleConfig,
}

impl CaptureConfig {
    /// Default flow table capacity, in connections.
    pub const DEFAULT_TABLE_SIZE: u32 = sensor_common::slots::DEFAULT_FLOW_CAPACITY;
    /// Default ring buffer size.
    pub const DEFAULT_RING_BYTES: u32 = 4 << 20;
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interfaces: Vec::new(),
            xdp_mode: XdpAttachMode::Auto,
            table_size: Self::DEFAULT_TABLE_SIZE,
            ring_bytes: Self::DEFAULT_RING_BYTES,
            lifecycle: LifecycleConfig::default(),
        }
    }
}

/// Errors of the capture stage.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "loading the eBPF object failed (are you root, or do you have CAP_BPF and CAP_NET_ADMIN?)"
    )]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("eBPF map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("eBPF program {name} failed to load into the kernel (verifier)")]
    Verify {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "attaching XDP to {iface} in {mode:?} mode failed; try --xdp-mode generic if the driver has no native XDP"
    )]
    AttachXdp {
        iface: String,
        mode: XdpAttachMode,
        #[source]
        source: ProgramError,
    },
    #[error("attaching the TC egress classifier to {iface} failed")]
    AttachTc {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("no interface named {name:?} in this network namespace")]
    UnknownInterface { name: String },
    #[error("flow table capacity must be at least 1, got {capacity}")]
    BadCapacity { capacity: u32 },
    #[error("ring buffer size {bytes} is not a power-of-two multiple of the page size")]
    BadRingSize { bytes: u32 },
    #[error("reading eBPF map {name} failed")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading the clocks failed")]
    Clock(#[source] io::Error),
    #[error("opening the flow table failed")]
    FlowTable(#[source] FlowTableError),
    #[error("starting the thread that keeps the NAT answers' filter failed")]
    Thread(#[source] io::Error),
    #[error("mapping eBPF map {name} into memory failed (an array created mmapable?)")]
    MapMemory {
        name: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Loaded and attached kernel programs plus the user-side bookkeeping.
pub struct Capture {
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    flows: FlowTable,
    /// The thread that rebuilds the kernel's filter of translated connections' answers when
    /// it fills (`nat_filter`).
    nat_filter: Keeper,
    /// Connections the kernel parked when its ring was full (see [`KernelStore`]).
    parked: HashMap<MapData, ParkedKey, FlowValue>,
    health: Arc<HealthReader>,
    events: RingBuf<MapData>,
    config: CaptureConfig,
    lifecycle: Lifecycle,
    /// Events read from the ring, before they are ordered and handed to the lifecycle.
    pending: Vec<(u64, FlowKey, FlowValue, u32)>,
    /// Drains aya-log messages of the kernel programs (none in normal operation).
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// The kernel's flow store for the lifecycle: the flow table, and the map where the kernel
/// parks connections whose `REPLACED` event the full ring had no room for.
struct KernelStore<'a> {
    table: &'a mut FlowTable,
    parked: &'a mut HashMap<MapData, ParkedKey, FlowValue>,
}

impl FlowStore for KernelStore<'_> {
    fn get(&self, key: &FlowKey) -> Option<FlowValue> {
        self.table.get(key)
    }

    fn remove(&mut self, key: &FlowKey, first_seen_ns: u64) -> Option<FlowValue> {
        self.table.remove_connection(key, first_seen_ns)
    }

    fn entries(&self) -> Vec<(FlowKey, FlowValue)> {
        self.table.entries()
    }

    fn entries_part(&self, part: usize, parts: usize) -> Vec<(FlowKey, FlowValue)> {
        self.table.entries_part(part, parts)
    }

    /// Each parked connection, removed from the map. A map read that fails leaves the entry
    /// for the next scan (logged).
    fn take_parked(&mut self) -> Vec<(FlowKey, FlowValue)> {
        let keys: Vec<ParkedKey> = self.parked.keys().filter_map(Result::ok).collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match self.parked.get(&k, 0) {
                Ok(v) => {
                    if let Err(e) = self.parked.remove(&k) {
                        warn!("removing a parked connection failed: {e}");
                    }
                    out.push((k.key, v));
                }
                Err(e) => warn!("reading a parked connection failed: {e}"),
            }
        }
        out
    }
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF maps against it (before 5.11).
pub fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            io::Error::last_os_error()
        );
    }
}

fn clock_ns(clock: libc::clockid_t) -> Result<i128, CaptureError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer to a timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(CaptureError::Clock(io::Error::last_os_error()));
    }
    Ok(ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128)
}

/// The kernel's `bpf_ktime_get_ns()` clock, now.
pub fn monotonic_now_ns() -> Result<u64, CaptureError> {
    Ok(clock_ns(libc::CLOCK_MONOTONIC)? as u64)
}

/// Loads the eBPF object with the configured map sizes, without attaching anything; loads the
/// continuation programs that the XDP and TC programs tail-call for deeper L2 headers and
/// tunnels (`sensor_common::encap`) and installs them in their program arrays.
///
/// Used by [`Capture::start`] and by packet-level tests and benchmarks (BPF_PROG_TEST_RUN).
pub fn load_object(table_size: u32, ring_bytes: u32) -> Result<Ebpf, CaptureError> {
    if table_size == 0 {
        return Err(CaptureError::BadCapacity {
            capacity: table_size,
        });
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    if ring_bytes < page || !ring_bytes.is_power_of_two() {
        return Err(CaptureError::BadRingSize { bytes: ring_bytes });
    }
    raise_memlock_limit();
    let slots = slot_count(table_size);
    let (mask, capacity) = (slots - 1, u64::from(table_size));
    let seed = seed_words(hash_seed());
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(map_names::FLOWS, slots)
        .map_max_entries(map_names::EVENTS, ring_bytes)
        .override_global(global_names::FLOW_SLOT_MASK, &mask, true)
        .override_global(global_names::FLOW_CAPACITY, &capacity, true)
        .override_global(global_names::FLOW_HASH_SEED, &seed, true)
        .load(EBPF_OBJECT)
        .map_err(CaptureError::Load)?;
    let xdp_next = load_xdp(&mut ebpf, program_names::XDP_NEXT)?.fd();
    let xdp_next = program_fd(program_names::XDP_NEXT, xdp_next)?;
    install(&mut ebpf, map_names::XDP_NEXT_PROG, &xdp_next)?;
    let tc_next = load_tc(&mut ebpf, program_names::TC_NEXT)?.fd();
    let tc_next = program_fd(program_names::TC_NEXT, tc_next)?;
    install(&mut ebpf, map_names::TC_NEXT_PROG, &tc_next)?;
    Ok(ebpf)
}

/// A loaded program's fd, owned (so that the program array can be borrowed next).
fn program_fd(
    name: &'static str,
    fd: Result<&ProgramFd, ProgramError>,
) -> Result<ProgramFd, CaptureError> {
    fd.and_then(|fd| fd.try_clone().map_err(ProgramError::from))
        .map_err(|source| CaptureError::Verify { name, source })
}

/// Puts `prog` at index 0 of the program array `name`. The array stays in `ebpf`: a program
/// array is emptied when user space closes its last descriptor of it.
fn install(ebpf: &mut Ebpf, name: &'static str, prog: &ProgramFd) -> Result<(), CaptureError> {
    let map = ebpf
        .map_mut(name)
        .ok_or(CaptureError::MissingMap { name })?;
    let mut array: ProgramArray<&mut MapData> =
        ProgramArray::try_from(map).map_err(|source| CaptureError::Map { name, source })?;
    array
        .set(0, prog, 0)
        .map_err(|source| CaptureError::Map { name, source })
}

/// A program of the object as its type `P`, not loaded yet.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, CaptureError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(CaptureError::MissingProgram { name })?
        .try_into()
        .map_err(|source| CaptureError::Verify { name, source })
}

/// Loads (verifies) a TC classifier of the object.
pub fn load_tc<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, CaptureError> {
    let prog: &mut SchedClassifier = program(ebpf, name)?;
    prog.load()
        .map_err(|source| CaptureError::Verify { name, source })?;
    Ok(prog)
}

/// Marks the interfaces `ifindexes` as watched by XDP (`WATCHED` and its index,
/// `sensor_common::watched`): the egress program then only looks at packets forwarded from
/// them, which XDP accounted where they entered.
pub fn watch_ifindexes(ebpf: &mut Ebpf, ifindexes: &[u32]) -> Result<(), CaptureError> {
    let map_err = |name| move |source| CaptureError::Map { name, source };
    let mut set: HashMap<&mut MapData, u32, u8> = HashMap::try_from(
        ebpf.map_mut(map_names::WATCHED)
            .ok_or(CaptureError::MissingMap {
                name: map_names::WATCHED,
            })?,
    )
    .map_err(map_err(map_names::WATCHED))?;
    for &i in ifindexes {
        set.insert(i, 1, 0).map_err(map_err(map_names::WATCHED))?;
    }
    let mut index: Array<&mut MapData, u32> = Array::try_from(
        ebpf.map_mut(map_names::WATCHED_INDEX)
            .ok_or(CaptureError::MissingMap {
                name: map_names::WATCHED_INDEX,
            })?,
    )
    .map_err(map_err(map_names::WATCHED_INDEX))?;
    for &i in ifindexes {
        let slot = watched::slot(i);
        let held = index
            .get(&slot, 0)
            .map_err(map_err(map_names::WATCHED_INDEX))?;
        index
            .set(slot, watched::with(held, i), 0)
            .map_err(map_err(map_names::WATCHED_INDEX))?;
    }
    Ok(())
}

/// Loads (verifies) an XDP program of the object.
pub fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, CaptureError> {
    let prog: &mut Xdp = program(ebpf, name)?;
    prog.load()
        .map_err(|source| CaptureError::Verify { name, source })?;
    Ok(prog)
}

impl Capture {
    /// Loads the programs, attaches them to every configured interface, and opens the maps.
    pub fn start(config: CaptureConfig) -> Result<Capture, CaptureError> {
        let mut ebpf = load_object(config.table_size, config.ring_bytes)?;
        // Before attaching, so that no forwarded packet is ever counted twice.
        let ifindexes = config
            .interfaces
            .iter()
            .map(|iface| ifindex(iface))
            .collect::<Result<Vec<_>, _>>()?;
        watch_ifindexes(&mut ebpf, &ifindexes)?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                debug!("aya-log not initialised: {e}");
                None
            }
        };
        {
            let xdp = load_xdp(&mut ebpf, program_names::XDP_INGRESS)?;
            for iface in &config.interfaces {
                attach_xdp(xdp, iface, config.xdp_mode)?;
            }
        }
        {
            let tc = load_tc(&mut ebpf, program_names::TC_EGRESS)?;
            for iface in &config.interfaces {
                tc.attach(iface, TcAttachType::Egress).map_err(|source| {
                    CaptureError::AttachTc {
                        iface: iface.clone(),
                        source,
                    }
                })?;
            }
        }
        let flows = open_flow_table(&ebpf)?;
        let nat_filter = NatFilter::open(&ebpf)?
            .spawn_keeper()
            .map_err(CaptureError::Thread)?;
        let health = Arc::new(HealthReader(take_map(&mut ebpf, map_names::HEALTH)?));
        let events = take_map(&mut ebpf, map_names::EVENTS)?;
        let parked = take_map(&mut ebpf, map_names::PARKED)?;
        let mono_to_unix_ns = clock_ns(libc::CLOCK_REALTIME)? - clock_ns(libc::CLOCK_MONOTONIC)?;
        Ok(Capture {
            _ebpf: ebpf,
            flows,
            nat_filter,
            parked,
            health,
            events,
            lifecycle: Lifecycle::new(config.lifecycle.clone(), mono_to_unix_ns),
            config,
            pending: Vec::new(),
            logger,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &CaptureConfig {
        &self.config
    }

    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start: records' Unix times are kernel times plus this.
    pub fn mono_to_unix_ns(&self) -> i128 {
        self.lifecycle.mono_to_unix_ns()
    }

    /// The lifecycle's counters (and the capture's own: the filter's rebuilds).
    pub fn stats(&self) -> LifecycleStats {
        LifecycleStats {
            nat_filter_rebuilds: self.nat_filter.rebuilds(),
            ..self.lifecycle.stats()
        }
    }

    /// The kernel health counters, summed over CPUs (read now, from the map).
    pub fn health(&self) -> Result<Health, CaptureError> {
        self.health.read_sum()
    }

    /// A reader of the health counters that outlives borrows of `self` (for the metrics
    /// endpoint, which reads them at scrape time from another thread).
    pub fn health_source(&self) -> Arc<HealthReader> {
        Arc::clone(&self.health)
    }

    /// File descriptor of the ring buffer, to wait for readability (epoll / tokio `AsyncFd`).
    pub fn events_fd(&self) -> std::os::fd::RawFd {
        self.events.as_raw_fd()
    }

    /// Flushes kernel log messages to the `log` crate.
    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// Reads every pending ring-buffer event and hands them to the lifecycle, in the order of
    /// their packets' times: two CPUs may reserve their events in the other order.
    pub fn drain_events(&mut self, out: &mut Vec<ConnEvent>) {
        while let Some(item) = self.events.next() {
            if item.len() < std::mem::size_of::<FlowEvent>() {
                warn!("short ring-buffer event ({} bytes) ignored", item.len());
                continue;
            }
            // SAFETY: the kernel wrote a whole FlowEvent (size checked above); read_unaligned
            // copes with any alignment of the ring's data.
            let ev: FlowEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let at = if ev.kinds & event::OPEN != 0 {
                ev.value.first_seen_ns
            } else if ev.kinds & event::EVICTED != 0 {
                ev.evicted_ns
            } else {
                ev.value.last_seen_ns
            };
            self.pending.push((at, ev.key, ev.value, ev.kinds));
        }
        self.pending.sort_by_key(|e| e.0);
        for (at, key, value, kinds) in self.pending.drain(..) {
            if kinds & event::EVICTED != 0 {
                self.lifecycle.on_evicted(&key, &value, at, out);
            } else {
                self.lifecycle.on_event(&key, &value, kinds, out);
            }
        }
    }

    /// One step of the capture loop at `now_ns` (kernel clock): pending events, then the
    /// lifecycle's due idle checks, lingering entries and table scan.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<ConnEvent>) {
        self.drain_events(out);
        let mut store = KernelStore {
            table: &mut self.flows,
            parked: &mut self.parked,
        };
        self.lifecycle.advance(now_ns, &mut store, out);
    }

    /// The end of observation: every connection still open is finalised and removed.
    pub fn flush(&mut self, now_ns: u64, out: &mut Vec<ConnEvent>) {
        self.drain_events(out);
        let mut store = KernelStore {
            table: &mut self.flows,
            parked: &mut self.parked,
        };
        self.lifecycle.flush(now_ns, &mut store, out);
    }

    /// Flow table entries now, and the table's capacity.
    pub fn table_occupancy(&self) -> (u64, u64) {
        (self.flows.len(), u64::from(self.config.table_size))
    }
}

/// Kernel health counters and user-side stats as one JSON object
/// (`{"health": {...}, "capture": {...}}`), for logs and tests.
pub fn summary_json(capture: &Capture) -> Result<serde_json::Value, CaptureError> {
    let h = capture.health()?;
    let health: serde_json::Map<String, serde_json::Value> = Health::FIELD_NAMES
        .iter()
        .zip(h.as_array())
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    Ok(serde_json::json!({ "health": health, "capture": capture.stats() }))
}

/// Reads the per-CPU health counters map.
pub struct HealthReader(PerCpuArray<MapData, Health>);

impl HealthReader {
    /// The counters summed over CPUs.
    pub fn read_sum(&self) -> Result<Health, CaptureError> {
        let per_cpu = self.0.get(&0, 0).map_err(|source| CaptureError::Map {
            name: map_names::HEALTH,
            source,
        })?;
        let mut total = Health::default();
        for h in per_cpu.iter() {
            total.merge(h);
        }
        Ok(total)
    }
}

/// Reads the kernel health counters (summed over CPUs) when asked: the metrics endpoint does,
/// at scrape time. A trait so that tests and benchmarks can export without a kernel.
pub trait HealthSource: Send + Sync {
    fn read(&self) -> Option<Health>;
}

impl HealthSource for HealthReader {
    fn read(&self) -> Option<Health> {
        self.read_sum()
            .map_err(|e| log::warn!("reading health counters: {e}"))
            .ok()
    }
}

/// The interface index of `name` in the current network namespace.
fn ifindex(name: &str) -> Result<u32, CaptureError> {
    let c = std::ffi::CString::new(name).map_err(|_| CaptureError::UnknownInterface {
        name: name.to_string(),
    })?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(CaptureError::UnknownInterface {
            name: name.to_string(),
        });
    }
    Ok(idx)
}

fn attach_xdp(xdp: &mut Xdp, iface: &str, mode: XdpAttachMode) -> Result<(), CaptureError> {
    let err = |source| CaptureError::AttachXdp {
        iface: iface.to_string(),
        mode,
        source,
    };
    match mode {
        XdpAttachMode::Native => xdp.attach(iface, XdpMode::Driver).map(drop).map_err(err),
        XdpAttachMode::Generic => xdp.attach(iface, XdpMode::Skb).map(drop).map_err(err),
        XdpAttachMode::Auto => match xdp.attach(iface, XdpMode::Driver) {
            Ok(_) => Ok(()),
            Err(e) => {
                warn!("native XDP on {iface} failed ({e}); falling back to generic mode");
                xdp.attach(iface, XdpMode::Skb).map(drop).map_err(err)
            }
        },
    }
}

/// The user-side view of the object's flow table (see [`FlowTable`]).
pub fn open_flow_table(ebpf: &Ebpf) -> Result<FlowTable, CaptureError> {
    let map = |name| ebpf.map(name).ok_or(CaptureError::MissingMap { name });
    FlowTable::new(map(map_names::FLOWS)?, map(map_names::FLOW_COUNT)?)
        .map_err(CaptureError::FlowTable)
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(CaptureError::MissingMap { name })?;
    T::try_from(map).map_err(|source| CaptureError::Map { name, source })
}

/// Runs the capture loop until `shutdown` resolves: ring-buffer events as they arrive, the
/// lifecycle's deadlines every `tick`, and at the end the flush of every open connection (end
/// reason `shutdown`). Each wake-up hands its events (possibly none, on a tick) to `sink` in the
/// order the lifecycle produced them, with the lifecycle's counters as they stand. `tick`
/// bounds how late an idle connection is finalised after its timeout.
pub async fn run(
    mut capture: Capture,
    tick: Duration,
    shutdown: impl std::future::Future<Output = ()>,
    mut sink: impl FnMut(&[ConnEvent], &LifecycleStats),
) -> Result<Capture, CaptureError> {
    use tokio::io::{Interest, unix::AsyncFd};

    /// The ring buffer's fd, borrowed for readiness only (the map owns it).
    struct Fd(std::os::fd::RawFd);
    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            self.0
        }
    }

    // SAFETY: the fd stays open while `ready` lives: `capture` (which owns the map) outlives it
    // in this function, and the registration is dropped before `capture` is returned.
    let ready =
        unsafe { AsyncFd::register_with_interest(Fd(capture.events_fd()), Interest::READABLE) }
            .map_err(|e| CaptureError::Clock(e.into()))?;
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut out = Vec::new();
    loop {
        // Every tick reaches the sink, events or not: time moves on for it too (incidents
        // close when quiet, gauges follow an emptying table).
        let ticked = tokio::select! {
            guard = ready.readable() => {
                let mut guard = guard.map_err(CaptureError::Clock)?;
                capture.drain_events(&mut out);
                guard.clear_ready();
                false
            }
            _ = ticks.tick() => {
                capture.tick(monotonic_now_ns()?, &mut out);
                capture.flush_logs();
                true
            }
            _ = &mut shutdown => break,
        };
        if ticked || !out.is_empty() {
            sink(&out, &capture.stats());
            out.clear();
        }
    }
    capture.flush(monotonic_now_ns()?, &mut out);
    capture.flush_logs();
    sink(&out, &capture.stats());
    drop(ready);
    Ok(capture)
}
