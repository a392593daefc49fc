//! The live agent's user-side path, connection events -> features -> verdict -> metrics, on one
//! core.
//!
//! Run: `cargo bench -p sensor --bench pipeline` (part of `cargo xtask bench`). Reported as
//! connections per CPU second of the benchmark's thread and as a ratio against the feature
//! engine alone, measured in the same run (the machines are noisy; ratios travel better than
//! absolute figures). Figures also go to `target/bench-pipeline.json`. The pipeline's memory
//! with millions of distinct hosts is `pipeline_memory.rs`, a bench of its own because it
//! counts every allocation, which would slow what this one times.

mod workload;

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::Arc,
    time::Duration,
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sensor::{
    detect::Pipeline,
    export::Metrics,
    features::{FeatureConfig, FeatureEngine},
    flows::{ConnEvent, ConnectionRecord, EndReason, Transport},
};
use sensor_common::conn_state::ConnState;
use workload::{NoKernel, T0_NS, agent_batch, batches, model, records};

const N: usize = 100_000;

/// Issue 13's flood: SYNs from four spoofed sources with changing source ports to one port
/// of one host, 5 us apart (200,000 packets/s), none answered, each evicted from the full
/// kernel table 1 ms later (its final moment). After the first few hundred their features
/// saturate, so the verdict cache answers most of them: what one core does under a flood.
fn flood_records(n: usize, t0_ns: u64) -> Vec<ConnectionRecord> {
    (0..n)
        .map(|i| {
            let start = t0_ns + i as u64 * 5_000;
            ConnectionRecord {
                orig_packets: 1,
                conn_state: ConnState::S0,
                end_reason: EndReason::Evicted,
                final_unix_ns: start + 1_000_000,
                ..ConnectionRecord::new(
                    Transport::Tcp,
                    (
                        IpAddr::V4(Ipv4Addr::new(198, 18, 4, 1 + (i % 4) as u8)),
                        1024 + (i % 60_000) as u16,
                    ),
                    (IpAddr::V4(Ipv4Addr::new(198, 18, 2, 99)), 443),
                    start,
                )
            }
        })
        .collect()
}

/// `recs` moved `dt_ns` later: every time they carry.
fn shifted(recs: &[ConnectionRecord], dt_ns: u64) -> Vec<ConnectionRecord> {
    recs.iter()
        .map(|r| ConnectionRecord {
            start_unix_ns: r.start_unix_ns + dt_ns,
            end_unix_ns: r.end_unix_ns + dt_ns,
            answer_unix_ns: r.answer_unix_ns.map(|t| t + dt_ns),
            final_unix_ns: r.final_unix_ns + dt_ns,
            ..*r
        })
        .collect()
}

/// CPU time this thread has used, in seconds.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn bench(c: &mut Criterion) {
    let recs = records(N, false, 1);
    let events = batches(&recs);
    let model = model();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(N as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.bench_function("features_only_baseline", |b| {
        b.iter(|| {
            let mut e = FeatureEngine::new(FeatureConfig::default())
                .expect("the default feature config is valid");
            let mut acc = 0.0;
            for ev in events.iter().flatten() {
                if let Some(f) = e.on_event(ev) {
                    acc += f.0[22];
                }
            }
            black_box(acc)
        })
    });
    g.bench_function("records_features_verdict_metrics", |b| {
        let metrics = Metrics::new(Arc::new(NoKernel), 1 << 18)
            .expect("fixed metric names and buckets are valid");
        b.iter(|| {
            let mut p = Pipeline::new(Arc::clone(&model), FeatureConfig::default())
                .expect("the default feature config is valid");
            let mut flagged = 0;
            for batch in &events {
                flagged += agent_batch(&mut p, &metrics, batch);
            }
            black_box(flagged)
        })
    });
    g.finish();

    // The same two, timed once more by hand for the summary line and the JSON file, in this
    // thread's CPU time: on a machine shared with other jobs, wall time also counts the time
    // the thread waited for a core, which says nothing about the code (best of 5).
    let time = |f: &mut dyn FnMut()| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = thread_cpu_secs();
            f();
            best = best.min(thread_cpu_secs() - t);
        }
        best
    };
    let base_s = time(&mut || {
        let mut e = FeatureEngine::new(FeatureConfig::default())
            .expect("the default feature config is valid");
        for ev in events.iter().flatten() {
            black_box(e.on_event(ev));
        }
    });
    let metrics = Metrics::new(Arc::new(NoKernel), 1 << 18)
        .expect("fixed metric names and buckets are valid");
    let full_s = time(&mut || {
        let mut p = Pipeline::new(Arc::clone(&model), FeatureConfig::default())
            .expect("the default feature config is valid");
        for batch in &events {
            black_box(agent_batch(&mut p, &metrics, batch));
        }
    });
    // CPU seconds of `timed` on a pipeline that has seen `warm` (untimed), best of 5.
    let running = |warm: &[Vec<ConnEvent>], timed: &[Vec<ConnEvent>]| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let mut p = Pipeline::new(Arc::clone(&model), FeatureConfig::default())
                .expect("the default feature config is valid");
            for batch in warm {
                black_box(agent_batch(&mut p, &metrics, batch));
            }
            let t = thread_cpu_secs();
            for batch in timed {
                black_box(agent_batch(&mut p, &metrics, batch));
            }
            best = best.min(thread_cpu_secs() - t);
        }
        best
    };
    // The mixed workload on a running sensor: the pipeline has seen the mix once (untimed: its
    // cold host windows, scored over the contexts, are behind it) when the same mix comes
    // again 10 s later. What one core sustains, where the figure above includes a start.
    let later = batches(&shifted(&recs, 10_000_000_000));
    let running_s = running(&events, &later);
    // The same two on the flood (a fresh pipeline each time: its first 255 connections are a
    // cold host window, scored over the contexts, as when a sensor starts under a flood).
    let flood = batches(&flood_records(N, T0_NS));
    let flood_base_s = time(&mut || {
        let mut e = FeatureEngine::new(FeatureConfig::default())
            .expect("the default feature config is valid");
        for ev in flood.iter().flatten() {
            black_box(e.on_event(ev));
        }
    });
    let flood_s = time(&mut || {
        let mut p = Pipeline::new(Arc::clone(&model), FeatureConfig::default())
            .expect("the default feature config is valid");
        for batch in &flood {
            black_box(agent_batch(&mut p, &metrics, batch));
        }
    });
    // And on a running sensor: the pipeline has seen 512 ordinary connections (its host window
    // is full, untimed) when the flood starts 10 s later.
    let late_flood = batches(&flood_records(N, T0_NS + 10_000_000_000));
    let flood_running_s = running(&events[..2], &late_flood);

    let summary = serde_json::json!({
        "connections_per_second": N as f64 / full_s,
        "features_only_connections_per_second": N as f64 / base_s,
        "ratio_full_over_features_only": full_s / base_s,
        "running_connections_per_second": N as f64 / running_s,
        "running_ratio_over_features_only": running_s / base_s,
        "flood_connections_per_second": N as f64 / flood_s,
        "flood_features_only_connections_per_second": N as f64 / flood_base_s,
        "flood_ratio_full_over_features_only": flood_s / flood_base_s,
        "flood_running_connections_per_second": N as f64 / flood_running_s,
        "flood_running_ratio_over_features_only": flood_running_s / flood_base_s,
    });
    println!(
        "pipeline: {:.0} connections per CPU second on one core (events -> features -> verdict -> metrics), {:.2}x the feature engine alone ({:.0}/s)",
        N as f64 / full_s,
        full_s / base_s,
        N as f64 / base_s
    );
    println!(
        "pipeline once running (the same mix again, its cold start behind it): {:.0} connections per CPU second, {:.2}x the feature engine alone",
        N as f64 / running_s,
        running_s / base_s
    );
    println!(
        "pipeline under a SYN flood (spoofed sources, one target): {:.0} connections per CPU second, {:.2}x the feature engine alone on the same records ({:.0}/s)",
        N as f64 / flood_s,
        flood_s / flood_base_s,
        N as f64 / flood_base_s
    );
    println!(
        "pipeline under the same flood once running (host window full): {:.0} connections per CPU second, {:.2}x the feature engine alone",
        N as f64 / flood_running_s,
        flood_running_s / flood_base_s
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-pipeline.json");
    if let Err(e) = std::fs::write(&out, summary.to_string()) {
        eprintln!("cannot write {}: {e}", out.display());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
