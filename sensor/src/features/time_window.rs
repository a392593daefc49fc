//! Time-based traffic features (KDD 23-31): connections that ended in the past 2 seconds.
//!
//! * **Clock: connection end time.** Features are computed when a connection ends and look back at
//!   connections that ended before it (kdd-features.md), so the window is keyed on
//!   `end_unix_ns`, and the reference time is the current connection's end.
//! * **Boundary: half-open `(t - 2 s, t]`.** A connection that ended exactly 2 s before the current
//!   one is *out*; 1 ns later it is in. The current connection is always counted: in KDDTrain+
//!   27,763 rows have `count` = 1 and all of them have `same_srv_rate` = 1.00.
//! * **Saturation:** `count` and `srv_count` are clamped to 511 (the data's maximum); the rates are
//!   computed from the true counts.
//! * **Disorder:** entries are expired from the front of an arrival-ordered queue while the front
//!   ended at or before `t - 2 s`. A connection arriving late (ending before one already pushed)
//!   is counted normally; it may stay in the window up to the disorder's size too long, and a
//!   connection pushed early counts in its predecessors' windows. Nothing is lost or double
//!   counted, so the error is bounded by the disorder.
//! * **Memory:** the queue is capped at `max_time_window_connections`; past the cap the oldest
//!   entry is expired early and counted in [`TimeWindow::overflow_evictions`]. This bounds tracked
//!   hosts whatever the connection rate.

use std::collections::VecDeque;

use super::counts::{WindowCounts, WindowEntry, WindowView};

/// The 2-second window.
#[derive(Debug)]
pub struct TimeWindow {
    window_ns: u64,
    max_entries: usize,
    queue: VecDeque<(u64, WindowEntry)>,
    counts: WindowCounts,
    overflow_evictions: u64,
}

impl TimeWindow {
    pub fn new(window_ns: u64, max_entries: usize) -> TimeWindow {
        TimeWindow {
            window_ns,
            max_entries,
            queue: VecDeque::new(),
            counts: WindowCounts::new(false),
            overflow_evictions: 0,
        }
    }

    /// Adds the connection that ended at `end_ns` and returns its view of the window.
    pub fn push(&mut self, end_ns: u64, e: WindowEntry) -> WindowView {
        let horizon_ns = end_ns.saturating_sub(self.window_ns);
        while let Some((t, old)) = self.queue.front() {
            // `end_ns < window_ns` (first 2 s of the epoch, i.e. tests): nothing is old enough.
            if end_ns >= self.window_ns && *t <= horizon_ns {
                self.counts.remove(old);
                self.queue.pop_front();
            } else {
                break;
            }
        }
        if self.queue.len() >= self.max_entries
            && let Some((_, old)) = self.queue.pop_front()
        {
            self.counts.remove(&old);
            self.overflow_evictions += 1;
        }
        self.queue.push_back((end_ns, e));
        self.counts.insert(&e);
        self.counts.view(&e)
    }

    /// Entries expired before their 2 s because of the size cap.
    pub fn overflow_evictions(&self) -> u64 {
        self.overflow_evictions
    }

    /// Connections currently in the window.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Distinct destination hosts in the window.
    pub fn hosts(&self) -> usize {
        self.counts.hosts()
    }

    pub fn heap_bytes(&self) -> usize {
        self.queue.capacity() * size_of::<(u64, WindowEntry)>() + self.counts.heap_bytes()
    }
}
