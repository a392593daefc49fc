//! Host-based traffic features (KDD 32-41): the last N connections (default 255, the current one
//! included), counted by destination host and by service.
//!
//! # Why "the last 255 connections of all traffic"
//!
//! The textual definition says "the past 100 connections", but in KDDTrain+ `dst_host_count` and
//! `dst_host_srv_count` reach 255 (74,099 rows at 255, 91,492 above 100), so the window is larger
//! than 100. What it counts over follows from three facts (awk over KDDTrain+):
//!
//! 1. For all 74,099 rows with `dst_host_count` = 255, `dst_host_srv_count` equals
//!    255 x `dst_host_same_srv_rate` (within 2): when every connection in the window goes to this
//!    host, the same-service count is the same-host-same-service count. A window larger than 255
//!    with counts clipped at 255 would break this (e.g. 1,000 connections, half `http`: 255 vs 127).
//! 2. For every row, `dst_host_srv_count` >= `dst_host_count` x `dst_host_same_srv_rate`: the
//!    service count is over *all* hosts, a superset of this host's same-service connections.
//! 3. 2,964 of the 3,119 rows with `dst_host_count` = 1 have `dst_host_srv_count` > 1 (often 255):
//!    the service count is not restricted to the host, and the window is shared, not per-host.
//!
//! A single sliding window of the last 255 connections (all hosts), in which `dst_host_count`
//! counts those to the current host and `dst_host_srv_count` those to the current service, is the
//! simplest definition that satisfies all three and never exceeds 255. The current connection is
//! included (all 3,119 `dst_host_count` = 1 rows have `dst_host_same_srv_rate` and
//! `dst_host_same_src_port_rate` = 1.00). Counts are still clamped to 255 should the window be
//! configured larger.
//!
//! * `dst_host_same_src_port_rate`: fraction of the `dst_host_count` connections from the current
//!   connection's originator port.
//! * `dst_host_srv_diff_host_rate`: fraction of the `dst_host_srv_count` connections to a
//!   destination host other than the current one (the textual definition). **Open question:** the
//!   data's values are lower than this predicts (rows with `dst_host_count` = 1 and
//!   `dst_host_srv_count` = 255 print 0.01-0.07, where "other destination" gives 1.00); the
//!   original tooling may have compared source hosts, which the data files do not carry to check.
//!   The same mismatch exists for the 2-second `srv_diff_host_rate` (9,328 of 27,763 rows with
//!   `count` = 1).
//!
//! Memory is bounded by N whatever the number of distinct hosts: a ring of N entries and counters
//! that are removed at zero.

use std::collections::VecDeque;

use super::counts::{WindowCounts, WindowEntry, WindowView};

/// The last-N-connections window.
#[derive(Debug)]
pub struct HostWindow {
    capacity: usize,
    ring: VecDeque<WindowEntry>,
    counts: WindowCounts,
}

impl HostWindow {
    pub fn new(capacity: usize) -> HostWindow {
        HostWindow {
            capacity,
            ring: VecDeque::with_capacity(capacity),
            counts: WindowCounts::new(true),
        }
    }

    /// Adds the current connection (evicting the oldest when full) and returns its view.
    pub fn push(&mut self, e: WindowEntry) -> WindowView {
        if self.ring.len() >= self.capacity
            && let Some(old) = self.ring.pop_front()
        {
            self.counts.remove(&old);
        }
        self.ring.push_back(e);
        self.counts.insert(&e);
        self.counts.view(&e)
    }

    /// Distinct destination hosts in the window.
    pub fn hosts(&self) -> usize {
        self.counts.hosts()
    }

    pub fn heap_bytes(&self) -> usize {
        self.ring.capacity() * size_of::<WindowEntry>() + self.counts.heap_bytes()
    }
}
