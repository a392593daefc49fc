//! The live sensor's per-packet path and connection lifecycle, on a capture's clock.

use sensor_common::{
    Health,
    encap::{Marks, Pending, count_error, follow, update_marked},
    flow::event,
    parse::{Parsed, next},
};

use super::{LinkType, ReplayConfig, UserTables, parse_frame};
use crate::{
    flows::ConnEvent,
    lifecycle::{Lifecycle, LifecycleConfig, LifecycleStats},
};

/// The most levels [`Replayer::packet`] follows in one frame: the kernel's limit of tail calls
/// (`MAX_TAIL_CALL_CNT`), which the continuation program's chain of levels meets.
const MAX_LEVELS: usize = 33;

/// The live sensor on a capture's clock: the kernel's per-packet update over [`UserTables`] and
/// the connection [`Lifecycle`] (events at the packet that caused them: replay has no ring
/// buffer to fill, so `ringbuf_drops` stays 0, and no table scan is needed).
#[derive(Debug)]
pub struct Replayer {
    tables: UserTables,
    health: Health,
    lifecycle: Lifecycle,
    /// The replay clock: the latest capture timestamp seen (the kernel's clock never goes back;
    /// a capture's may, by a little, across CPUs).
    clock_ns: u64,
}

impl Replayer {
    pub fn new(config: ReplayConfig) -> Replayer {
        let lifecycle = LifecycleConfig {
            timeouts: config.timeouts,
            close_linger: LifecycleConfig::DEFAULT_CLOSE_LINGER,
            close_settle: LifecycleConfig::DEFAULT_CLOSE_SETTLE,
            table_scan_interval: None,
            early_verdict_after: Some(LifecycleConfig::DEFAULT_EARLY_VERDICT_AFTER),
            settled_records: config.settled_records,
        };
        Replayer {
            tables: UserTables::new(config.table_size),
            health: Health::default(),
            // Capture timestamps are Unix time already: no clock offset.
            lifecycle: Lifecycle::new(lifecycle, 0),
            clock_ns: 0,
        }
    }

    /// The health counters, as the kernel would have counted them.
    pub fn health(&self) -> Health {
        self.health
    }

    /// The lifecycle's counters, as `capture::Capture::stats`.
    pub fn stats(&self) -> LifecycleStats {
        self.lifecycle.stats()
    }

    pub fn tables(&self) -> &UserTables {
        &self.tables
    }

    /// The replay clock (latest capture timestamp), Unix nanoseconds.
    pub fn clock_ns(&self) -> u64 {
        self.clock_ns
    }

    /// One captured frame: `wire_len` bytes on the wire at `ts_ns` (Unix time), of which `data`
    /// were captured. What it and the time before it caused is appended to `out`.
    #[inline]
    pub fn packet(
        &mut self,
        ts_ns: u64,
        wire_len: u64,
        link: LinkType,
        data: &[u8],
        out: &mut Vec<ConnEvent>,
    ) {
        self.advance(ts_ns, out);
        let h = &mut self.health;
        h.packets += 1;
        h.bytes += wire_len;
        let p = match parse_frame(link, data) {
            Ok(p) => p,
            Err(e) => return count_error(h, e, 1),
        };
        let (tables, lifecycle, clock) = (&mut self.tables, &mut self.lifecycle, self.clock_ns);
        let mut account = |h: &mut Health, p: &Parsed, marks| {
            let u = update_marked(tables, p, h, clock, 1, marks);
            // Flows the insert evicted to make room (a full table) are finished as they stood.
            for (key, value, at_ns) in tables.evicted.drain(..) {
                lifecycle.on_evicted(&key, &value, at_ns, out);
            }
            // A connection whose entry a port-reusing SYN restarted, before the new one opens.
            for (key, value) in tables.replaced.drain(..) {
                lifecycle.on_event(&key, &value, event::REPLACED, out);
            }
            let Some(u) = u else {
                return;
            };
            if u.events != 0 {
                // SAFETY: `u.value` points into the flow table, which nothing touched since
                // `update` returned it (draining `evicted` leaves the table alone).
                let value = unsafe { *u.value };
                if u.events & event::FINISHED != 0 {
                    tables.finished(&u.key, value.first_seen_ns);
                }
                h.events_sent += 1;
                lifecycle.on_event(&u.key, &value, u.events, out);
            }
        };
        if p.next == next::NONE {
            return account(h, &p, Marks::default());
        }
        // What the kernel's continuation program does, one level per tail call.
        let mut pending = Pending {
            p,
            segments: 1,
            ..Pending::default()
        };
        for _ in 0..MAX_LEVELS {
            match follow(data, h, &pending, &mut account) {
                Some(next) => pending = next,
                None => return,
            }
        }
        h.too_deep += 1;
    }

    /// Moves the clock to `ts_ns`: idle deadlines and lingers that fall before it come due.
    pub fn advance(&mut self, ts_ns: u64, out: &mut Vec<ConnEvent>) {
        self.clock_ns = self.clock_ns.max(ts_ns);
        self.lifecycle.advance(self.clock_ns, &mut self.tables, out);
    }

    /// The end of the input: every connection still open is finalised (end reason `shutdown`)
    /// at the time of the last packet.
    pub fn finish(&mut self, out: &mut Vec<ConnEvent>) {
        self.lifecycle.flush(self.clock_ns, &mut self.tables, out);
    }
}
