//! Capture stage: load the kernel programs, attach them, and turn flow-table entries into
//! [`ConnectionRecord`]s.
//!
//! Connections end in one of two ways. A finished TCP connection (FIN both ways, or RST) is
//! announced by the kernel on the `EVENTS` ring buffer and finalised at once; its entry stays in
//! the table for `close_linger` so that the trailing ACK does not open a phantom connection, and
//! is removed by the sweep afterwards. Every other connection is finalised by the periodic
//! [`Capture::sweep`] once idle for its protocol's timeout. The sweep also finalises a finished
//! TCP connection whose event was dropped (the drop is counted by the kernel), so no connection is
//! lost because the ring buffer was full.
//!
//! Everything attached is owned by [`Capture`] through bpf_links (XDP and TCX), nothing is pinned:
//! dropping it, or the process dying, detaches the programs.

use std::{
    collections::{HashMap as StdHashMap, VecDeque},
    io,
    os::fd::AsRawFd,
    sync::Arc,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode},
};
use log::{debug, warn};
use sensor_common::{
    FlowEvent, FlowKey, FlowValue, Health,
    account::peer,
    flow::{SIDE_HI, SIDE_LO, event_reason, history, ipproto},
    global_names, map_names, program_names,
    slots::slot_count,
};

use crate::{
    flow_table::{FlowTable, FlowTableError, hash_seed},
    flows::{ConnectionRecord, EndReason},
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

/// Idle timeouts after which a connection without packets is finalised.
///
/// Defaults follow Zeek (`tcp_inactivity_timeout` 5 min, `udp_inactivity_timeout` and
/// `icmp_inactivity_timeout` 1 min, `tcp_attempt_delay` 5 s), whose connection semantics the KDD
/// features were derived with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// An established TCP connection that neither closed nor reset.
    pub tcp_established: Duration,
    /// A TCP connection attempt without an established handshake (S0, half-open, mid-stream).
    pub tcp_attempt: Duration,
    pub udp: Duration,
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: Duration::from_secs(300),
            tcp_attempt: Duration::from_secs(5),
            udp: Duration::from_secs(60),
            icmp: Duration::from_secs(60),
        }
    }
}

/// What to watch and how.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Interfaces to attach to (XDP ingress + TC egress on each).
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpAttachMode,
    /// Flow table capacity (entries). A packet whose new flow does not fit is counted in
    /// `Health::table_full`.
    pub table_capacity: u32,
    /// Ring buffer size in bytes (a power-of-two multiple of the page size).
    pub ring_bytes: u32,
    pub timeouts: Timeouts,
    /// How long a finished TCP connection's entry stays in the table after it was reported.
    pub close_linger: Duration,
    /// Period of the full idle scan, which bounds how late an idle connection is finalised
    /// (its detection latency). `None`: a quarter of the shortest idle timeout, within
    /// 50 ms..5 s. Each scan reads the whole memory-mapped slot array (two slots per flow of
    /// capacity, 112 bytes each: 56 MiB for 262,144 flows), so a short period suits small
    /// tables (the demo lab) better than a full-size one.
    pub idle_scan_interval: Option<Duration>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interfaces: Vec::new(),
            xdp_mode: XdpAttachMode::Auto,
            table_capacity: 262_144,
            ring_bytes: 4 << 20,
            timeouts: Timeouts::default(),
            close_linger: Duration::from_secs(2),
            idle_scan_interval: None,
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
}

/// Counters of the user-side stage, for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaptureStats {
    /// Ring-buffer events received.
    pub events: u64,
    /// Events for a connection already reported (two CPUs raced on its last packets).
    pub duplicate_events: u64,
    /// Finished TCP connections the sweep found before any event for them (a dropped event, or
    /// two CPUs racing on the last FINs so that neither signalled).
    pub finished_by_sweep: u64,
    /// Records emitted, by end reason: fin, rst, idle, shutdown.
    pub records_fin: u64,
    pub records_rst: u64,
    pub records_idle: u64,
    pub records_shutdown: u64,
    /// Entries in the flow table at the last sweep.
    pub table_entries: u64,
}

impl CaptureStats {
    /// Counts one emitted record by why it ended (live capture and replay alike).
    pub fn count_record(&mut self, reason: EndReason) {
        match reason {
            EndReason::Fin => self.records_fin += 1,
            EndReason::Rst => self.records_rst += 1,
            EndReason::Idle => self.records_idle += 1,
            EndReason::Shutdown => self.records_shutdown += 1,
        }
    }
}

/// Loaded and attached kernel programs plus the user-side bookkeeping.
pub struct Capture {
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    flows: FlowTable,
    health: Arc<HealthReader>,
    events: RingBuf<MapData>,
    config: CaptureConfig,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, to turn kernel timestamps into Unix time.
    mono_to_unix_ns: i128,
    /// Finished connections already reported and still lingering in the table, by their
    /// `first_seen_ns` (a reused 5-tuple has another one).
    reported: StdHashMap<FlowKey, u64>,
    /// The same connections in the order their linger ends: `(due_ns, key, first_seen_ns)`.
    /// Removing them needs no scan of the table.
    lingering: VecDeque<(u64, FlowKey, u64)>,
    /// Kernel-clock time of the next full idle scan.
    next_scan_ns: u64,
    stats: CaptureStats,
    /// Drains aya-log messages of the kernel programs (none in normal operation).
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
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

/// Loads the eBPF object with the configured map sizes, without attaching anything.
///
/// Used by [`Capture::start`] and by packet-level tests and benchmarks (BPF_PROG_TEST_RUN).
pub fn load_object(table_capacity: u32, ring_bytes: u32) -> Result<Ebpf, CaptureError> {
    if table_capacity == 0 {
        return Err(CaptureError::BadCapacity {
            capacity: table_capacity,
        });
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    if ring_bytes < page || !ring_bytes.is_power_of_two() {
        return Err(CaptureError::BadRingSize { bytes: ring_bytes });
    }
    raise_memlock_limit();
    let slots = slot_count(table_capacity);
    let (mask, capacity, seed) = (slots - 1, u64::from(table_capacity), hash_seed());
    EbpfLoader::new()
        .map_max_entries(map_names::FLOWS, slots)
        .map_max_entries(map_names::EVENTS, ring_bytes)
        .override_global(global_names::FLOW_SLOT_MASK, &mask, true)
        .override_global(global_names::FLOW_CAPACITY, &capacity, true)
        .override_global(global_names::FLOW_HASH_SEED, &seed, true)
        .load(EBPF_OBJECT)
        .map_err(CaptureError::Load)
}

/// Loads (verifies) an XDP program of the object.
pub fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, CaptureError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(CaptureError::MissingProgram { name })?
        .try_into()
        .map_err(|source| CaptureError::Verify { name, source })?;
    prog.load()
        .map_err(|source| CaptureError::Verify { name, source })?;
    Ok(prog)
}

impl Capture {
    /// Loads the programs, attaches them to every configured interface, and opens the maps.
    pub fn start(config: CaptureConfig) -> Result<Capture, CaptureError> {
        let mut ebpf = load_object(config.table_capacity, config.ring_bytes)?;
        // Before attaching, so that no forwarded packet is ever counted twice.
        {
            let mut watched: HashMap<&mut MapData, u32, u8> = HashMap::try_from(
                ebpf.map_mut(map_names::WATCHED)
                    .ok_or(CaptureError::MissingMap {
                        name: map_names::WATCHED,
                    })?,
            )
            .map_err(|source| CaptureError::Map {
                name: map_names::WATCHED,
                source,
            })?;
            for iface in &config.interfaces {
                let ifindex = ifindex(iface)?;
                watched
                    .insert(ifindex, 1, 0)
                    .map_err(|source| CaptureError::Map {
                        name: map_names::WATCHED,
                        source,
                    })?;
            }
        }
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
            let name = program_names::TC_EGRESS;
            let tc: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(CaptureError::MissingProgram { name })?
                .try_into()
                .map_err(|source| CaptureError::Verify { name, source })?;
            tc.load()
                .map_err(|source| CaptureError::Verify { name, source })?;
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
        let health = Arc::new(HealthReader(take_map(&mut ebpf, map_names::HEALTH)?));
        let events = take_map(&mut ebpf, map_names::EVENTS)?;
        let mono_to_unix_ns = clock_ns(libc::CLOCK_REALTIME)? - clock_ns(libc::CLOCK_MONOTONIC)?;
        Ok(Capture {
            _ebpf: ebpf,
            flows,
            health,
            events,
            config,
            mono_to_unix_ns,
            reported: StdHashMap::new(),
            lingering: VecDeque::new(),
            next_scan_ns: 0,
            stats: CaptureStats::default(),
            logger,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &CaptureConfig {
        &self.config
    }

    /// User-side counters.
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start: records' Unix times are kernel times plus this.
    pub fn mono_to_unix_ns(&self) -> i128 {
        self.mono_to_unix_ns
    }

    pub fn stats(&self) -> CaptureStats {
        self.stats
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

    /// Reads every pending ring-buffer event and finalises those connections.
    pub fn drain_events(&mut self, out: &mut Vec<ConnectionRecord>) {
        loop {
            let ev: FlowEvent = {
                let Some(item) = self.events.next() else {
                    break;
                };
                if item.len() < std::mem::size_of::<FlowEvent>() {
                    warn!("short ring-buffer event ({} bytes) ignored", item.len());
                    continue;
                }
                // SAFETY: the kernel wrote a whole FlowEvent (size checked above);
                // read_unaligned copes with any alignment of the ring's data.
                unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) }
            };
            self.stats.events += 1;
            let v = ev.value;
            if self.reported.get(&ev.key) == Some(&v.first_seen_ns) {
                self.stats.duplicate_events += 1;
                continue;
            }
            let reason = if ev.reason == event_reason::RST {
                EndReason::Rst
            } else {
                EndReason::Fin
            };
            self.mark_reported(ev.key, &v);
            self.emit(&ev.key, &v, reason, out);
        }
    }

    fn mark_reported(&mut self, key: FlowKey, v: &FlowValue) {
        self.reported.insert(key, v.first_seen_ns);
        let due = v
            .last_seen_ns
            .saturating_add(self.config.close_linger.as_nanos() as u64);
        self.lingering.push_back((due, key, v.first_seen_ns));
    }

    /// One step of the capture loop: pending events, lingering entries whose time is up, and a
    /// full idle scan when one is due (at most every quarter of the shortest idle timeout, so a
    /// large table is not walked on every tick).
    pub fn tick(
        &mut self,
        now_ns: u64,
        out: &mut Vec<ConnectionRecord>,
    ) -> Result<(), CaptureError> {
        self.drain_events(out);
        self.expire_lingering(now_ns)?;
        if now_ns >= self.next_scan_ns {
            self.sweep(now_ns, false, out)?;
            let t = &self.config.timeouts;
            let shortest = t.tcp_established.min(t.tcp_attempt).min(t.udp).min(t.icmp);
            let every = self.config.idle_scan_interval.unwrap_or_else(|| {
                (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
            });
            self.next_scan_ns = now_ns + every.as_nanos() as u64;
        }
        Ok(())
    }

    /// Removes finished connections whose linger is over. An entry that still sees packets
    /// (trailing ACKs, retransmissions) lingers on; one that a new connection on the same
    /// 5-tuple took over is left to that connection.
    fn expire_lingering(&mut self, now_ns: u64) -> Result<(), CaptureError> {
        let linger_ns = self.config.close_linger.as_nanos() as u64;
        while let Some(&(due, key, first_seen)) = self.lingering.front() {
            if due > now_ns {
                break;
            }
            self.lingering.pop_front();
            if self.reported.get(&key) != Some(&first_seen) {
                continue; // superseded by a later report of the same 5-tuple
            }
            match self.flows.get(&key) {
                Some(v) if v.first_seen_ns == first_seen => {
                    if now_ns.saturating_sub(v.last_seen_ns) >= linger_ns {
                        self.remove_entry(&key)?;
                        self.reported.remove(&key);
                    } else {
                        self.lingering
                            .push_back((v.last_seen_ns + linger_ns, key, first_seen));
                    }
                }
                // Gone, or taken over by a new connection on the same 5-tuple.
                _ => {
                    self.reported.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn remove_entry(&mut self, key: &FlowKey) -> Result<(), CaptureError> {
        // A packet may re-create the entry right after; that is a new connection.
        self.flows.remove(key);
        Ok(())
    }

    /// Walks the table: finalises idle connections (and finished ones whose event never came).
    ///
    /// `now_ns` is on the kernel's clock ([`monotonic_now_ns`]). With `flush_all`, every
    /// remaining connection is finalised (reason `Shutdown`) and every entry removed.
    pub fn sweep(
        &mut self,
        now_ns: u64,
        flush_all: bool,
        out: &mut Vec<ConnectionRecord>,
    ) -> Result<(), CaptureError> {
        let entries = self.flows.entries();
        self.stats.table_entries = entries.len() as u64;
        let mut remove = Vec::new();
        for (key, v) in entries {
            let idle_ns = now_ns.saturating_sub(v.last_seen_ns);
            if self.reported.get(&key) == Some(&v.first_seen_ns) {
                // Lingering after its report: `expire_lingering` removes it in time.
                if flush_all {
                    remove.push(key);
                }
                continue;
            }
            let finished = tcp_finished(&key, &v);
            if let Some(reason) = finished {
                // Its event was lost (ring full) or never sent (a race): finalise it now.
                self.stats.finished_by_sweep += 1;
                self.mark_reported(key, &v);
                self.emit(&key, &v, reason, out);
                if flush_all {
                    remove.push(key);
                }
                continue;
            }
            if flush_all {
                self.emit(&key, &v, EndReason::Shutdown, out);
                remove.push(key);
            } else if idle_ns >= self.idle_timeout(&key, &v).as_nanos() as u64 {
                self.emit(&key, &v, EndReason::Idle, out);
                remove.push(key);
            }
        }
        for key in remove {
            self.remove_entry(&key)?;
            self.reported.remove(&key);
        }
        if flush_all {
            self.lingering.clear();
        }
        Ok(())
    }

    fn idle_timeout(&self, key: &FlowKey, v: &FlowValue) -> Duration {
        idle_timeout(&self.config.timeouts, key, v)
    }

    fn emit(
        &mut self,
        key: &FlowKey,
        v: &FlowValue,
        reason: EndReason,
        out: &mut Vec<ConnectionRecord>,
    ) {
        let Some(rec) = ConnectionRecord::from_flow(key, v, self.mono_to_unix_ns, reason) else {
            return;
        };
        self.stats.count_record(reason);
        out.push(rec);
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

impl crate::export::metrics::HealthSource for HealthReader {
    fn read(&self) -> Option<Health> {
        self.read_sum()
            .map_err(|e| log::warn!("reading health counters: {e}"))
            .ok()
    }
}

/// The idle timeout that applies to a flow: the established one once the originator completed
/// the handshake, the attempt one before; per protocol otherwise. Replay applies the same rule.
pub fn idle_timeout(t: &Timeouts, key: &FlowKey, v: &FlowValue) -> Duration {
    match key.protocol {
        ipproto::TCP => {
            let orig = usize::from(v.orig_side & 1);
            let established = v.history[orig] & history::SYN != 0
                && v.history[peer(orig)] & history::SYN_ACK != 0
                && v.history[orig] & history::NON_SYN != 0;
            if established {
                t.tcp_established
            } else {
                t.tcp_attempt
            }
        }
        ipproto::UDP => t.udp,
        _ => t.icmp,
    }
}

/// A TCP connection whose end the kernel signals (or should have): FIN both ways, or a RST.
/// Replay applies the same rule.
pub fn tcp_finished(key: &FlowKey, v: &FlowValue) -> Option<EndReason> {
    if key.protocol != ipproto::TCP {
        return None;
    }
    let (a, b) = (v.history[SIDE_LO], v.history[SIDE_HI]);
    if (a | b) & history::RST != 0 {
        Some(EndReason::Rst)
    } else if a & b & history::FIN != 0 {
        Some(EndReason::Fin)
    } else {
        None
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

/// Runs the capture loop until `shutdown` resolves: ring-buffer events as they arrive, an idle
/// sweep every `sweep_interval`, and a final flush of every open connection (reason `Shutdown`).
/// Records go to `sink` in batches (whatever one wake-up finalised), each sorted by end time:
/// an idle scan finds connections in hash order, and the feature windows must see them in the
/// order they ended. The capture counters come along as they stand.
pub async fn run(
    mut capture: Capture,
    sweep_interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
    mut sink: impl FnMut(&[ConnectionRecord], &CaptureStats),
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
    let mut tick = tokio::time::interval(sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            guard = ready.readable() => {
                let mut guard = guard.map_err(CaptureError::Clock)?;
                capture.drain_events(&mut out);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                capture.tick(monotonic_now_ns()?, &mut out)?;
                capture.flush_logs();
            }
            _ = &mut shutdown => break,
        }
        if !out.is_empty() {
            out.sort_by_key(|r| r.end_unix_ns);
            sink(&out, &capture.stats());
            out.clear();
        }
    }
    capture.drain_events(&mut out);
    capture.sweep(monotonic_now_ns()?, true, &mut out)?;
    capture.flush_logs();
    out.sort_by_key(|r| r.end_unix_ns);
    sink(&out, &capture.stats());
    drop(ready);
    Ok(capture)
}
