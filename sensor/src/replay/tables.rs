//! The flow and fragment tables in user space, with the kernel maps' capacity rules.

use std::collections::VecDeque;

use sensor_common::{
    FlowKey, FlowValue, Health,
    flow::{FragKey, FragValue},
    slots::evictable,
    table::{FlowTables, Insert},
};

use super::FRAG_TABLE_CAPACITY;
use crate::{hashing::Map, lifecycle::FlowStore};

/// The flow and fragment tables in user space: what the kernel's BPF maps are to the XDP
/// program, with the same capacity rules. Seeded maps (`crate::hashing`), as the kernel's
/// table is seeded: a capture of a flood from sources computed against a fixed hash replays as
/// fast as any other. Their order is never seen: the lifecycle's flush sorts the entries, and
/// replay runs no table scan.
#[derive(Debug)]
pub struct UserTables {
    flows: Map<FlowKey, FlowValue>,
    capacity: usize,
    frags: Map<FragKey, FragValue>,
    /// Insertion order of `frags`, to evict the oldest when full. The kernel's LRU map evicts
    /// approximately the least recently *used*; fragment trains are short, so the two agree
    /// except under fragment floods far beyond the map's size.
    frag_order: VecDeque<FragKey>,
    /// Eviction candidates in the order they became one, `(key, first_seen_ns)`: a flow when
    /// it was inserted (an attempt), again when it finished (entries of flows gone or answered
    /// since are skipped, and dropped when they outnumber the table).
    flow_order: VecDeque<(FlowKey, u64)>,
    /// Flows evicted by the last inserts, with the time they left, for the lifecycle
    /// ([`Replayer::packet`] hands them over at once, as the kernel's ring buffer does).
    pub(super) evicted: Vec<(FlowKey, FlowValue, u64)>,
    /// Connections whose entries the last update restarted for a new connection on the same
    /// 5-tuple, as they ended (the kernel's `REPLACED` events).
    pub(super) replaced: Vec<(FlowKey, FlowValue)>,
}

impl UserTables {
    pub fn new(capacity: u32) -> UserTables {
        UserTables {
            flows: Map::default(),
            capacity: capacity as usize,
            frags: Map::default(),
            frag_order: VecDeque::new(),
            flow_order: VecDeque::new(),
            evicted: Vec::new(),
            replaced: Vec::new(),
        }
    }

    /// Evicts the [`evictable`] flow that became a candidate first (an attempt when it entered
    /// the table, a TCP connection when it finished); whether there was one. The kernel evicts
    /// the one of the lowest rank (about the oldest last packet) among a sample
    /// (`sensor_common::slots`): the two agree on a flood of one-packet attempts, and differ
    /// only in which candidate leaves when the table is full of older, longer ones.
    fn evict(&mut self, now_ns: u64) -> bool {
        // Each entry is looked at once: one that is not evictable now will not be until it
        // finishes, which queues it again (`finished`).
        while let Some((key, first_seen)) = self.flow_order.pop_front() {
            if let Some(v) = self.flows.get(&key)
                && v.first_seen_ns == first_seen
                && evictable(&key, v)
            {
                let v = *v;
                self.flows.remove(&key);
                self.evicted.push((key, v, now_ns));
                return true;
            }
        }
        false
    }

    /// Remembers a TCP connection that just finished (FINs both ways, or a RST) as a candidate
    /// for eviction: its entry only lingers now.
    pub fn finished(&mut self, key: &FlowKey, first_seen_ns: u64) {
        self.inserted(key, first_seen_ns);
    }

    /// Remembers a flow just inserted, as a candidate for eviction.
    fn inserted(&mut self, key: &FlowKey, first_seen_ns: u64) {
        self.flow_order.push_back((*key, first_seen_ns));
        if self.flow_order.len() > 2 * self.capacity + 1024 {
            let flows = &self.flows;
            self.flow_order.retain(|(k, t)| {
                flows
                    .get(k)
                    .is_some_and(|v| v.first_seen_ns == *t && evictable(k, v))
            });
        }
    }

    /// Entries in the flow table.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&FlowValue> {
        self.flows.get(key)
    }

    /// Every flow entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowValue)> {
        self.flows.iter()
    }
}

impl FlowStore for UserTables {
    fn get(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key).copied()
    }

    fn remove(&mut self, key: &FlowKey, first_seen_ns: u64) -> Option<FlowValue> {
        if self
            .flows
            .get(key)
            .is_none_or(|v| v.first_seen_ns != first_seen_ns)
        {
            return None;
        }
        self.flows.remove(key)
    }

    fn entries(&self) -> Vec<(FlowKey, FlowValue)> {
        self.flows.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

impl FlowTables for UserTables {
    #[inline]
    fn flow_ptr(&mut self, key: &FlowKey) -> Option<*mut FlowValue> {
        self.flows.get_mut(key).map(|v| v as *mut FlowValue)
    }

    #[inline]
    fn flow_insert(&mut self, key: &FlowKey, value: &FlowValue, h: &mut Health) -> Insert {
        if self.flows.contains_key(key) {
            return Insert::Exists;
        }
        // The kernel table holds its capacity (its `FLOW_COUNT`; `sensor_common::slots` explains
        // why it never runs out of slots before), then makes room by evicting an attempt or a
        // finished connection.
        if self.flows.len() >= self.capacity {
            if !self.evict(value.first_seen_ns) {
                return Insert::Full;
            }
            h.flows_evicted += 1;
            h.events_sent += 1;
        }
        self.flows.insert(*key, *value);
        self.inserted(key, value.first_seen_ns);
        Insert::Done
    }

    #[inline]
    fn on_restart(&mut self, key: &FlowKey, old: &FlowValue, now_ns: u64, h: &mut Health) {
        self.replaced.push((*key, *old));
        h.events_sent += 1;
        // The new connection in the entry is an attempt: a candidate for eviction.
        self.inserted(key, now_ns);
    }

    #[inline]
    fn frag_get(&mut self, key: &FragKey) -> Option<FragValue> {
        self.frags.get(key).copied()
    }

    #[inline]
    fn frag_insert(&mut self, key: &FragKey, value: &FragValue) {
        if self.frags.insert(*key, *value).is_none() {
            self.frag_order.push_back(*key);
            while self.frags.len() > FRAG_TABLE_CAPACITY {
                match self.frag_order.pop_front() {
                    Some(old) => {
                        self.frags.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }
}
