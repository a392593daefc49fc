//! The two traffic windows, over one sequence of connections in the order they began:
//!
//! * **time window** (KDD 23-31): the connections that began in the 2 seconds up to the current
//!   connection's moment, the current one included;
//! * **host window** (KDD 32-41): the last 255 connections that began up to that moment (all
//!   hosts), the current one included. Why 255 and "all traffic" is in `docs/features.md`.
//!
//! Each connection is an entry of the sequence from its `Opened` event on; its error status
//! (`syn_error`: a SYN not answered yet; `rej_error`: refused with a RST) changes in place when
//! its handshake's outcome arrives ([`Windows::update`]). The time window is the suffix of the
//! sequence that began after `now - 2 s`, the host window the last 255 entries; each keeps its
//! own [`WindowCounts`], so a view costs a few hash lookups and nothing is ever rescanned.
//!
//! * **Boundary:** half-open `(t - 2 s, t]`: an entry that began exactly 2 s before `t` is out.
//! * **Saturation** is the engine's ([`super::TIME_COUNT_MAX`], [`super::HOST_COUNT_MAX`]); the
//!   rates come from the true counts.
//! * **The current connection is always counted**, even when its moment (its handshake's
//!   answer) comes more than 2 s, or more than 254 connections, after it began.
//! * **Disorder:** the live path delivers `Opened` events in the order the kernel sent them,
//!   which can differ from the order of their timestamps by the few microseconds two CPUs race;
//!   an entry is expired when it reaches the front of the sequence, so such an entry stays in
//!   the time window for at most that long too long.
//! * **Memory:** the time window is capped at `max_time_entries`; past the cap the oldest entry
//!   is expired early and counted ([`Windows::overflow_evictions`]). The host window holds 255
//!   entries. The sequence holds what either window still needs.

use std::collections::VecDeque;

use super::counts::{HostId, HostIds, HostKey, WindowCounts, WindowEntry, WindowView};

/// How many connections begun during a handshake [`Windows::snapshot_answered`] looks at for
/// SYNs in flight: 16,384 is 80 ms of handshake at 200,000 new connections per second, a bound
/// on the work per answered connection under a flood.
pub const IN_FLIGHT_SCAN: u64 = 16_384;

/// What one slot of the host window holds on average in the training data's normal traffic,
/// as shares of a connection: how often it goes to the current connection's host, to its
/// service, to both, from its source port, and is a SYN or REJ error on the host or service.
/// Used for the slots a cold window has not filled yet (see
/// [`super::FeatureConfig::fill_cold_host_window`]).
///
/// Means over the 67,343 normal rows of KDDTrain+, e.g. `host` is the mean of
/// `dst_host_count / 255` and `host_service` of `dst_host_count * dst_host_same_srv_rate / 255`:
/// `awk -F, '$42=="normal"{h+=$32/255; hs+=$32*$34/255; n++} END{print h/n, hs/n}' KDDTrain+.txt`.
#[derive(Clone, Copy, Debug)]
pub struct SlotPrior {
    pub host: f64,
    pub service: f64,
    pub host_service: f64,
    pub host_src_port: f64,
    pub host_syn: f64,
    pub service_syn: f64,
    pub host_rej: f64,
    pub service_rej: f64,
    /// Distinct services beyond the current connection's own that one of the other slots
    /// adds to its host's connections: `(D - 1) / 254` for a row whose host window holds `D`
    /// distinct services among its `dst_host_count` connections (`D` =
    /// `dst_host_diff_srv_rate x dst_host_count`, 1 where that rate is 0: see
    /// `super::distinct_rate`), so that a window of the connection alone plus 254 such slots
    /// holds the row's `D`.
    pub host_distinct: f64,
    /// The same for the distinct hosts of the service's connections
    /// (`dst_host_srv_diff_host_rate x dst_host_srv_count`).
    pub service_distinct: f64,
}

/// See [`SlotPrior`].
pub const COLD_PRIOR: SlotPrior = SlotPrior {
    host: 0.5782,
    service: 0.7462,
    host_service: 0.4509,
    host_src_port: 0.0509,
    host_syn: 0.0104,
    service_syn: 0.0016,
    host_rej: 0.0093,
    service_rej: 0.0313,
    host_distinct: 0.0253,
    service_distinct: 0.0143,
};

/// What the two windows say about one connection at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub time: WindowView,
    pub host: WindowView,
    /// Entries in the host window (less than its length only in the first connections the
    /// sensor saw).
    pub host_window_len: u32,
    /// The current connection's own error status as counted in the views.
    pub own_syn_error: bool,
    pub own_rej_error: bool,
}

impl Snapshot {
    /// The views with the current connection's own status replaced by its final one: the
    /// current connection counts with its final state (KDD's `flag`), the others with the
    /// status they had at the snapshot's moment.
    pub fn with_own_status(mut self, syn_error: bool, rej_error: bool) -> Snapshot {
        let ds = i64::from(syn_error) - i64::from(self.own_syn_error);
        let dr = i64::from(rej_error) - i64::from(self.own_rej_error);
        for v in [&mut self.time, &mut self.host] {
            for c in [&mut v.host, &mut v.service] {
                c.syn_errors = (i64::from(c.syn_errors) + ds).max(0) as u32;
                c.rej_errors = (i64::from(c.rej_errors) + dr).max(0) as u32;
            }
        }
        self.own_syn_error = syn_error;
        self.own_rej_error = rej_error;
        self
    }
}

/// The sequence and its two windows; see the module docs.
#[derive(Debug)]
pub struct Windows {
    /// `(start_ns, entry)` of every connection either window still holds, oldest first.
    entries: VecDeque<(u64, WindowEntry)>,
    /// Sequence number of `entries[0]`.
    base: u64,
    /// Sequence number the next connection gets.
    next: u64,
    /// First sequence number in the time window.
    time_front: u64,
    /// First sequence number in the host window.
    host_front: u64,
    window_ns: u64,
    host_len: u64,
    max_time_entries: u64,
    time: WindowCounts,
    host: WindowCounts,
    overflow_evictions: u64,
    now_ns: u64,
    /// The ids of the hosts the entries and the open connections name.
    hosts: HostIds,
}

impl Windows {
    pub fn new(window_ns: u64, host_len: usize, max_time_entries: usize) -> Windows {
        Windows {
            entries: VecDeque::new(),
            base: 0,
            next: 0,
            time_front: 0,
            host_front: 0,
            window_ns,
            host_len: host_len as u64,
            max_time_entries: max_time_entries as u64,
            time: WindowCounts::new(false),
            host: WindowCounts::new(true),
            overflow_evictions: 0,
            now_ns: 0,
            hosts: HostIds::default(),
        }
    }

    /// The id of host `key` for an open connection's entry, held until [`Windows::release_host`].
    pub fn acquire_host(&mut self, key: HostKey) -> HostId {
        self.hosts.acquire(key)
    }

    /// Drops an open connection's hold on its host's id.
    pub fn release_host(&mut self, id: HostId) {
        self.hosts.release(id);
    }

    fn entry(&self, seq: u64) -> Option<&(u64, WindowEntry)> {
        self.entries
            .get(usize::try_from(seq.checked_sub(self.base)?).ok()?)
    }

    /// Adds a connection that began at `start_ns`, its host acquired ([`Windows::acquire_host`]);
    /// returns its sequence number.
    pub fn open(&mut self, start_ns: u64, e: WindowEntry) -> u64 {
        self.advance(start_ns);
        self.hosts.retain(e.host);
        let seq = self.next;
        self.next += 1;
        self.entries.push_back((start_ns, e));
        self.time.insert(&e);
        self.host.insert(&e);
        while self.next - self.host_front > self.host_len {
            if let Some(&(_, old)) = self.entry(self.host_front) {
                self.host.remove(&old);
            }
            self.host_front += 1;
        }
        while self.next - self.time_front > self.max_time_entries {
            if let Some(&(_, old)) = self.entry(self.time_front) {
                self.time.remove(&old);
            }
            self.time_front += 1;
            self.overflow_evictions += 1;
        }
        self.trim();
        seq
    }

    /// Moves the time window's end to `now_ns` (never back).
    pub fn advance(&mut self, now_ns: u64) {
        if now_ns <= self.now_ns {
            return;
        }
        self.now_ns = now_ns;
        // In the first 2 s of the clock (tests) nothing is old enough.
        let Some(horizon) = now_ns.checked_sub(self.window_ns) else {
            return;
        };
        while self.time_front < self.next {
            match self.entry(self.time_front) {
                Some(&(t, old)) if t <= horizon => {
                    self.time.remove(&old);
                    self.time_front += 1;
                }
                _ => break,
            }
        }
        self.trim();
    }

    /// Drops the entries neither window holds any more.
    fn trim(&mut self) {
        let keep = self.time_front.min(self.host_front);
        while self.base < keep {
            let Some((_, e)) = self.entries.pop_front() else {
                break;
            };
            self.hosts.release(e.host);
            self.base += 1;
        }
    }

    /// Replaces the status of connection `seq` (its handshake's outcome arrived): `new` differs
    /// from its entry only in `syn_error` and `rej_error`.
    pub fn update(&mut self, seq: u64, new: WindowEntry) {
        let (in_time, in_host) = (seq >= self.time_front, seq >= self.host_front);
        let Some(i) = seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(slot) = self.entries.get_mut(i) else {
            return;
        };
        let old = std::mem::replace(&mut slot.1, new);
        debug_assert_eq!(
            (old.host, old.service, old.service_key, old.src_port),
            (new.host, new.service, new.service_key, new.src_port)
        );
        if in_time {
            self.time.update_status(&old, &new);
        }
        if in_host {
            self.host.update_status(&old, &new);
        }
    }

    /// Both windows as connection `seq` (whose entry is `e`) sees them now.
    pub fn snapshot(&self, seq: u64, e: &WindowEntry) -> Snapshot {
        Snapshot {
            time: view_including(&self.time, seq >= self.time_front, e, None),
            host: self.host_view(seq >= self.host_front, e),
            host_window_len: (self.next - self.host_front) as u32,
            own_syn_error: e.syn_error,
            own_rej_error: e.rej_error,
        }
    }

    /// Both windows as connection `seq` (whose entry is `e`) sees them at its handshake's
    /// answer: as [`Windows::snapshot`], except that a SYN still unanswered that began after
    /// `seq` did is not a SYN error. It has waited less than the current connection's own
    /// handshake took, so it is in flight, not failed: a browser's parallel connections to one
    /// server, or two clients' concurrent requests, would otherwise read as SYN errors of each
    /// other at their answers. An unanswered attempt's moment is its first packet, after which
    /// nothing has begun, so a flood's SYNs are errors of each other as before. At most
    /// [`IN_FLIGHT_SCAN`] later connections are looked at (the rest count as they stand).
    pub fn snapshot_answered(&self, seq: u64, e: &WindowEntry) -> Snapshot {
        let mut snap = self.snapshot(seq, e);
        // Nothing to take back once no view counts a SYN error of the current host or service
        // (ordinary traffic: at once).
        let none_left = |s: &Snapshot| {
            s.time.host.syn_errors == 0
                && s.time.service.syn_errors == 0
                && s.host.host.syn_errors == 0
                && s.host.service.syn_errors == 0
        };
        let end = self.next.min(seq.saturating_add(1 + IN_FLIGHT_SCAN));
        // The host view's first entry: past the oldest one when the current connection took its
        // place (`Windows::host_view`).
        let host_first = self.host_front + u64::from(seq < self.host_front);
        for q in seq + 1..end {
            if none_left(&snap) {
                break;
            }
            let Some(&(_, d)) = self.entry(q) else {
                continue;
            };
            if !d.syn_error || (d.host != e.host && d.service_key != e.service_key) {
                continue;
            }
            for (view, inside) in [
                (&mut snap.time, q >= self.time_front),
                (&mut snap.host, q >= host_first),
            ] {
                if inside {
                    if d.host == e.host {
                        view.host.syn_errors = view.host.syn_errors.saturating_sub(1);
                    }
                    if d.service_key == e.service_key {
                        view.service.syn_errors = view.service.syn_errors.saturating_sub(1);
                    }
                }
            }
        }
        snap
    }

    /// The view of a connection that does not enter the windows (a resumed conversation, see
    /// `FeatureEngine::opened`): the windows as they stand at `now_ns`, itself added.
    pub fn snapshot_outside(&mut self, now_ns: u64, e: &WindowEntry) -> Snapshot {
        self.advance(now_ns);
        Snapshot {
            time: view_including(&self.time, false, e, None),
            host: self.host_view(false, e),
            host_window_len: (self.next - self.host_front + 1).min(self.host_len) as u32,
            own_syn_error: e.syn_error,
            own_rej_error: e.rej_error,
        }
    }

    /// The host window's view of `e`'s groups, `e` in the window when `inside`. Otherwise `e`
    /// (answered after the window moved past it, or a resumed conversation) is added, and
    /// takes the place of the oldest entry when the window is full: the window is the last
    /// `host_len` connections, the current one included, never one more (KDD's
    /// `dst_host_count` is at most 255, and its rates are over that count).
    fn host_view(&self, inside: bool, e: &WindowEntry) -> WindowView {
        let front = match inside {
            false if self.next - self.host_front >= self.host_len => {
                self.entry(self.host_front).map(|(_, f)| f)
            }
            _ => None,
        };
        view_including(&self.host, inside, e, front)
    }

    /// Entries expired before their 2 s because of the cap.
    pub fn overflow_evictions(&self) -> u64 {
        self.overflow_evictions
    }

    /// Connections in the time window.
    pub fn time_len(&self) -> usize {
        (self.next - self.time_front) as usize
    }

    /// Distinct destination hosts in the time and host windows.
    pub fn hosts(&self) -> (usize, usize) {
        (self.time.hosts(), self.host.hosts())
    }

    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<(u64, WindowEntry)>()
            + self.time.heap_bytes()
            + self.host.heap_bytes()
            + self.hosts.heap_bytes()
    }
}

/// `counts`' view of `e`'s groups, with `e` itself added when it is no longer in the window,
/// in place of `replaced` (an entry of the window) if given.
fn view_including(
    counts: &WindowCounts,
    inside: bool,
    e: &WindowEntry,
    replaced: Option<&WindowEntry>,
) -> WindowView {
    let mut v = counts.view(e);
    if let (false, Some(f)) = (inside, replaced) {
        let (same_host, same_service) = (f.host == e.host, f.service_key == e.service_key);
        // The replaced entry was its host-and-service pair's last: one service of its host
        // fewer, one host of its service fewer.
        let gone_pair = u32::from(counts.view(f).host_service == 1);
        if same_host {
            v.host.sub(f);
            v.host.distinct -= gone_pair;
            v.host_src_port -= u32::from(counts.tracks_src_port() && f.src_port == e.src_port);
        }
        if same_service {
            v.service.sub(f);
            v.service.distinct -= gone_pair;
        }
        v.host_service -= u32::from(same_host && same_service);
    }
    if !inside {
        // Its host-and-service pair's first connection: a new service of the host, a new host
        // of the service.
        let new_pair = u32::from(v.host_service == 0);
        v.host.add(e);
        v.host.distinct += new_pair;
        v.service.add(e);
        v.service.distinct += new_pair;
        v.host_service += 1;
        v.host_src_port += u32::from(counts.tracks_src_port());
    }
    v
}
