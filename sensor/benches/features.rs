//! Connections per second through the KDD feature engine.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo bench -p sensor --bench features`. Inputs are generated once
//! (seeded) so the measurement is the engine alone: 1 us between connections (1,000,000 conn/s,
//! so the 2 s window is full at its cap) over a few thousand hosts, and over distinct hosts only.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sensor::{
    features::{FeatureConfig, FeatureEngine},
    flows::{ConnectionRecord, EndReason, Transport},
};
use sensor_common::conn_state::ConnState;

const N: usize = 200_000;
const T0_NS: u64 = 1_700_000_000_000_000_000;

fn records(distinct_hosts: bool) -> Vec<ConnectionRecord> {
    let mut rng = StdRng::seed_from_u64(1);
    let ports = [80, 443, 25, 53, 22, 21, 8080, 1234, 50000];
    (0..N)
        .map(|i| {
            let host = if distinct_hosts {
                i as u32
            } else {
                rng.random_range(0..5_000)
            };
            let start = T0_NS + i as u64 * 1_000;
            let end = start + rng.random_range(0..3_000_000_000);
            // Drawn in the order the mix has always drawn them, so that it stays the same.
            let transport = if rng.random_bool(0.8) {
                Transport::Tcp
            } else {
                Transport::Udp
            };
            let orig = (
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                rng.random_range(1024..65535),
            );
            let resp = (
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + host)),
                ports[rng.random_range(0..ports.len())],
            );
            ConnectionRecord {
                end_unix_ns: end,
                orig_packets: 5,
                resp_packets: 4,
                orig_bytes: 300,
                resp_bytes: 1500,
                conn_state: ConnState::ALL[rng.random_range(0..ConnState::ALL.len())],
                end_reason: EndReason::Fin,
                final_unix_ns: end,
                ..ConnectionRecord::new(transport, orig, resp, start)
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("feature_engine");
    g.throughput(Throughput::Elements(N as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, distinct) in [("5000_hosts", false), ("distinct_hosts", true)] {
        let recs = records(distinct);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut e = FeatureEngine::new(FeatureConfig::default()).expect("default config");
                let mut acc = 0.0;
                for r in &recs {
                    acc += e.push(r).0[22];
                }
                black_box(acc)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
