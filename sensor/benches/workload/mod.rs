//! The workload of the pipeline benches (`pipeline.rs`, `pipeline_memory.rs`): the seeded
//! connection mix, its events in capture-loop batches, and what the agent does per batch.
//! Each bench uses part of it.
#![allow(dead_code)]

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::Arc,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use sensor::{
    capture::HealthSource,
    detect::Pipeline,
    export::Metrics,
    features::events_from_records,
    flows::{ConnEvent, ConnectionRecord, EndReason, Transport},
    model::Model,
};
use sensor_common::{Health, conn_state::ConnState};

pub const T0_NS: u64 = 1_700_000_000_000_000_000;
/// Connections handed over together, as one wake-up of the capture loop does.
pub const BATCH: usize = 256;

/// A kernel side that reports nothing.
pub struct NoKernel;
impl HealthSource for NoKernel {
    fn read(&self) -> Option<Health> {
        Some(Health::default())
    }
}

/// The committed model.
pub fn model() -> Arc<Model> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    Arc::new(Model::load(&p).unwrap_or_else(|e| panic!("the committed model {}: {e}", p.display())))
}

/// A seeded mix: mostly completed connections to 5,000 hosts, some scans and floods; starting 2
/// us apart (500,000 connections/s of traffic, so the 2 s window is full).
pub fn records(n: usize, distinct_hosts: bool, seed: u64) -> Vec<ConnectionRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| record(i, distinct_hosts, &mut rng))
        .collect()
}

/// The `i`-th connection of [`records`]' mix (`rng` carries the sequence).
pub fn record(i: usize, distinct_hosts: bool, rng: &mut StdRng) -> ConnectionRecord {
    let ports = [80, 443, 25, 53, 22, 21, 8080, 1234, 50000];
    let host = if distinct_hosts {
        i as u32
    } else {
        rng.random_range(0..5_000)
    };
    let start = T0_NS + i as u64 * 2_000;
    let end = start + rng.random_range(0..200_000_000);
    let attack = rng.random_bool(0.2);
    // Drawn in the order the mix has always drawn them, so that it stays the same.
    let transport = if rng.random_bool(0.8) {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let orig = (
        IpAddr::V4(Ipv4Addr::new(198, 18, 1, rng.random_range(1..200))),
        rng.random_range(1024..65535),
    );
    let resp = (
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + host)),
        if attack {
            rng.random_range(1..1024)
        } else {
            ports[rng.random_range(0..ports.len())]
        },
    );
    ConnectionRecord {
        end_unix_ns: end,
        orig_packets: 5,
        resp_packets: 4,
        orig_bytes: rng.random_range(0..2_000),
        resp_bytes: rng.random_range(0..20_000),
        conn_state: if attack {
            [ConnState::S0, ConnState::REJ][rng.random_range(0..2)]
        } else {
            ConnState::SF
        },
        end_reason: EndReason::Fin,
        answer_unix_ns: (!attack).then_some(start + 100_000),
        final_unix_ns: end,
        ..ConnectionRecord::new(transport, orig, resp, start)
    }
}

/// The events of `recs` cut into the batches one wake-up of the capture loop hands over
/// (`BATCH` finished connections each).
pub fn batches(recs: &[ConnectionRecord]) -> Vec<Vec<ConnEvent>> {
    let mut out = vec![Vec::new()];
    let mut finished = 0;
    for ev in events_from_records(recs) {
        let done = matches!(ev, ConnEvent::Finished(_));
        out.last_mut().expect("never empty").push(ev);
        finished += usize::from(done);
        if done && finished.is_multiple_of(BATCH) {
            out.push(Vec::new());
        }
    }
    out
}

/// Records made at a time by the memory part.
pub const STREAM_CHUNK: usize = 10_000;

/// Events in time order from records made chunk by chunk: a chunk's events later than the
/// next chunk's first start wait for it, so the pipeline sees them in the order a capture
/// loop would hand them over (the mix's connections last up to 200 ms, a chunk spans 20).
#[derive(Default)]
pub struct EventStream {
    /// Events not handed over yet, with their time, in time order.
    pending: Vec<(u64, u8, ConnEvent)>,
    finished: usize,
}

impl EventStream {
    /// Bytes of heap the events held back take (their vector; the records own no heap).
    pub fn heap_bytes(&self) -> usize {
        self.pending.capacity() * std::mem::size_of::<(u64, u8, ConnEvent)>()
    }

    /// Adds `recs` (starting after every record pushed before) and returns the batches of
    /// the events now due: those before the next chunk can start.
    pub fn push(&mut self, recs: &[ConnectionRecord]) -> Vec<Vec<ConnEvent>> {
        let horizon_ns = recs.last().map_or(u64::MAX, |r| r.start_unix_ns);
        let mut all = std::mem::take(&mut self.pending);
        all.extend(events_from_records(recs).into_iter().map(|ev| {
            let (at, kind) = match &ev {
                ConnEvent::Opened(s) => (s.id.start_unix_ns, 0),
                ConnEvent::Answered { at_unix_ns, .. } => (*at_unix_ns, 1),
                ConnEvent::Finished(r) => (r.final_unix_ns.max(r.end_unix_ns), 2),
                _ => (0, 3),
            };
            (at, kind, ev)
        }));
        all.sort_by_key(|(at, kind, _)| (*at, *kind));
        let due = all.partition_point(|(at, _, _)| *at < horizon_ns);
        self.pending = all.split_off(due);
        let mut out = vec![Vec::new()];
        for (_, _, ev) in all {
            let done = matches!(ev, ConnEvent::Finished(_));
            out.last_mut().expect("never empty").push(ev);
            self.finished += usize::from(done);
            if done && self.finished.is_multiple_of(BATCH) {
                out.push(Vec::new());
            }
        }
        out
    }
}

/// What the agent does per batch, minus the I/O: features, verdicts, metrics.
pub fn agent_batch(p: &mut Pipeline, m: &Metrics, batch: &[ConnEvent]) -> usize {
    let mut flagged = 0;
    let finished = batch.iter().filter_map(|e| match e {
        ConnEvent::Finished(r) => Some(r),
        _ => None,
    });
    let mut observed = m.scored_batch();
    for (rec, s) in finished.zip(p.process_events(batch)) {
        m.observe_connection(rec);
        observed.observe(rec, &s, 0.001);
        flagged += usize::from(s.verdict.anomalous);
    }
    flagged
}

/// A field of `/proc/self/status` in kB (`VmRSS:`, `VmHWM:`), 0 when unreadable.
pub fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
