//! What the lifecycle runs over (the [`FlowStore`]) and what it counts ([`LifecycleStats`]).

use sensor_common::{FlowKey, FlowValue};

use crate::flows::EndReason;

/// The flow table the lifecycle runs over.
pub trait FlowStore {
    /// A copy of the value stored under `key`.
    fn get(&self, key: &FlowKey) -> Option<FlowValue>;
    /// Removes `key`'s entry if it holds the connection that began at `first_seen_ns` (a
    /// packet may create it again: that is a new connection), and returns its value as it was
    /// removed: a packet counted after the caller's last read of it is in it. `None` when the entry
    /// is gone or holds a later connection, or was evicted meanwhile (its `EVICTED` event then
    /// brings its record).
    fn remove(&mut self, key: &FlowKey, first_seen_ns: u64) -> Option<FlowValue>;
    /// Every entry, in no particular order.
    fn entries(&self) -> Vec<(FlowKey, FlowValue)>;
    /// The entries of part `part` of `parts` (`part < parts`): together the parts hold every
    /// entry once, if none moves meanwhile. A store that cannot cut itself cheaply returns
    /// every entry in part 0 and none in the others.
    fn entries_part(&self, part: usize, _parts: usize) -> Vec<(FlowKey, FlowValue)> {
        if part == 0 {
            self.entries()
        } else {
            Vec::new()
        }
    }
    /// Takes out the connections the kernel parked when a port-reusing SYN restarted their
    /// entry and the ring buffer had no room for their `REPLACED` event (`map_names::PARKED`),
    /// each with its value as it ended. Stores without a ring buffer (replay's) have none.
    fn take_parked(&mut self) -> Vec<(FlowKey, FlowValue)> {
        Vec::new()
    }
}

/// Counters of the lifecycle, for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LifecycleStats {
    /// Events received from the flow-table update.
    pub events: u64,
    /// Finish events for a connection already reported (two CPUs raced on its last packets).
    pub duplicate_events: u64,
    /// Connections the table scan found without having seen their `Opened` event (lost).
    pub adopted_by_scan: u64,
    /// Finished TCP connections finalised by an idle check, the table scan or their eviction
    /// because their finish event had not come (lost, late in the ring, or two CPUs raced on
    /// the last FINs so that neither signalled, and no packet followed the FINs: see
    /// `finished_at_final_ack`).
    pub finished_by_scan: u64,
    /// TCP connections closed by FINs whose second FIN's event had not come when the first
    /// packet after both FINs (normally the final ACK) signalled: two CPUs took the last FINs
    /// at once and neither saw the other's, or that event was behind in the ring or lost.
    /// Finalised at that packet.
    #[serde(default)]
    pub finished_at_final_ack: u64,
    /// Connections whose entry was restarted for a new connection on the same 5-tuple before
    /// their own end was reported, and whose `REPLACED` event (which carries the old value)
    /// was lost too: their records are lost.
    pub lost_on_restart: u64,
    /// Connections whose `REPLACED` value the kernel parked (its ring buffer full) and the
    /// table scan took out: each finalised then, or settled if it was reported already.
    #[serde(default)]
    pub taken_from_park: u64,
    /// Connections finalised from their `REPLACED` event: their finish event was lost (or the
    /// connection was only half closed) when a SYN reused their 5-tuple.
    #[serde(default)]
    pub finished_on_restart: u64,
    /// Records emitted, by end reason: fin, rst, idle, shutdown, evicted.
    pub records_fin: u64,
    pub records_rst: u64,
    pub records_idle: u64,
    pub records_shutdown: u64,
    #[serde(default)]
    pub records_evicted: u64,
    /// Evicted flows whose end had been reported already (FINs or a RST ended them): no second
    /// record.
    #[serde(default)]
    pub evicted_after_report: u64,
    /// Evicted finished TCP connections whose end was not reported yet (waiting for the final
    /// ACK, or their finish event late or lost): recorded then, by how they ended (`fin` or
    /// `rst`, not `evicted`). With `records_evicted` and `evicted_after_report`, every flow the
    /// table evicted.
    #[serde(default)]
    pub evicted_before_report: u64,
    /// Flows of trailing packets (no SYN either way: a final ACK, a retransmitted FIN) on the
    /// 5-tuple of a finished connection that the full table evicted while it lingered, within
    /// its linger: folded into that connection, whose record is out, instead of recorded as a
    /// connection of their own. With the records and `lost_on_restart`, every flow the kernel
    /// created.
    #[serde(default)]
    pub trailing_folded: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// Entries in the flow table at the last scan.
    pub table_entries: u64,
    /// Rebuilds of the kernel's filter of translated connections' answers
    /// ([`crate::capture::nat_filter`]): filled by the capture, not the lifecycle.
    #[serde(default)]
    pub nat_filter_rebuilds: u64,
}

impl LifecycleStats {
    /// Counts one emitted record by why it ended.
    pub fn count_record(&mut self, reason: EndReason) {
        match reason {
            EndReason::Fin => self.records_fin += 1,
            EndReason::Rst => self.records_rst += 1,
            EndReason::Idle => self.records_idle += 1,
            EndReason::Shutdown => self.records_shutdown += 1,
            EndReason::Evicted => self.records_evicted += 1,
            EndReason::Ongoing => {}
        }
    }

    /// Records emitted, whatever their end reason.
    pub fn records(&self) -> u64 {
        self.records_fin
            + self.records_rst
            + self.records_idle
            + self.records_shutdown
            + self.records_evicted
    }
}
