//! A SYN flood whose flow keys were computed to collide under an unseeded hash (`sensor::hashing`).
//!
//! Run: `cargo bench -p sensor --bench hashing` (part of `cargo xtask bench`). Spoofed IPv6
//! sources whose first eight bytes are Fx's public `SEED1` give flow keys that all hash to one
//! value under Fx (rustc-hash), whatever their last eight bytes. The bench sends 20,000 of them
//! and 20,000 ordinary spoofed sources (random, seeded) to one server port:
//!
//! - through the lifecycle (`Lifecycle::on_event`, an `OPEN` event each: its maps hold every
//!   open connection), as the live path takes a flood's first packets;
//! - into a map keyed by flow keys, once with Fx (the lifecycle's hasher before) and once with
//!   `sensor::hashing::Map` (its hasher now).
//!
//! Reported as the crafted flood's time over the ordinary flood's in the same run: about 1 when
//! crafted keys cost what any keys cost; Fx's ratio is what the attack did before. Figures go
//! to `target/bench-hashing.json`.

use std::{hint::black_box, path::Path, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sensor::{
    hashing::Map,
    lifecycle::{Lifecycle, LifecycleConfig},
};
use sensor_common::flow::{FlowKey, FlowValue, SIDE_LO, event, history, ipproto};

const N: usize = 20_000;
/// Fx's first seed (rustc-hash 2.1, `src/lib.rs`), a public constant.
const FX_SEED1: u64 = 0x243f6a8885a308d3;

fn key(source: [u8; 16], source_port: u16) -> FlowKey {
    let words = |b: &[u8; 16]| -> [u32; 4] {
        std::array::from_fn(|w| {
            u32::from_ne_bytes([b[4 * w], b[4 * w + 1], b[4 * w + 2], b[4 * w + 3]])
        })
    };
    let mut server = [0u8; 16];
    server[0] = 0xfd;
    server[15] = 1;
    FlowKey {
        addr_lo: words(&source),
        addr_hi: words(&server),
        port_lo: source_port,
        port_hi: 443,
        protocol: ipproto::TCP,
        ip_version: 6,
        _pad: [0; 2],
    }
}

/// Sources `SEED1 : i`: one Fx hash for all.
fn crafted() -> Vec<FlowKey> {
    (0..N as u64)
        .map(|i| {
            let mut s = [0u8; 16];
            s[..8].copy_from_slice(&FX_SEED1.to_le_bytes());
            s[8..].copy_from_slice(&(i + 1).to_be_bytes());
            key(s, 40000)
        })
        .collect()
}

/// Random sources (seeded), the same port.
fn ordinary() -> Vec<FlowKey> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..N)
        .map(|_| {
            let mut s: [u8; 16] = rng.random();
            s[0] = 0x20; // below the server's fd00::/8, as the crafted ones are: the low side
            key(s, 40000)
        })
        .collect()
}

/// Every key's first SYN through a fresh lifecycle: its `OPEN` event.
fn flood_lifecycle(keys: &[FlowKey]) -> usize {
    let mut l = Lifecycle::new(LifecycleConfig::default(), 0);
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let t = 1_000_000_000 + i as u64 * 5_000;
        let mut v = FlowValue {
            first_seen_ns: t,
            last_seen_ns: t,
            ..FlowValue::default()
        };
        v.packets[SIDE_LO] = 1;
        v.history[SIDE_LO] = history::SYN;
        l.on_event(k, &v, event::OPEN, &mut out);
    }
    out.len()
}

/// Inserts every key into `m`, then looks each up.
fn fill<S: std::hash::BuildHasher>(
    mut m: std::collections::HashMap<FlowKey, u64, S>,
    keys: &[FlowKey],
) -> usize {
    for (i, k) in keys.iter().enumerate() {
        m.insert(*k, i as u64);
    }
    keys.iter().filter(|k| m.contains_key(k)).count()
}

fn secs(f: &mut dyn FnMut() -> usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn bench(c: &mut Criterion) {
    let (bad, good) = (crafted(), ordinary());
    let mut g = c.benchmark_group("hashing");
    g.sample_size(10);
    g.bench_function("lifecycle_crafted_flood", |b| {
        b.iter(|| flood_lifecycle(&bad))
    });
    g.bench_function("lifecycle_ordinary_flood_baseline", |b| {
        b.iter(|| flood_lifecycle(&good))
    });
    g.finish();

    let lifecycle = secs(&mut || flood_lifecycle(&bad)) / secs(&mut || flood_lifecycle(&good));
    let seeded =
        secs(&mut || fill(Map::default(), &bad)) / secs(&mut || fill(Map::default(), &good));
    let fx = secs(&mut || fill(rustc_hash::FxHashMap::default(), &bad))
        / secs(&mut || fill(rustc_hash::FxHashMap::default(), &good));
    println!(
        "hashing: {N} SYNs from sources crafted to collide under Fx, over {N} ordinary ones: lifecycle {lifecycle:.2}x; flow-key map with the sensor's seeded hash {seeded:.2}x, with Fx (before) {fx:.1}x"
    );
    let summary = serde_json::json!({
        "connections": N,
        "lifecycle_crafted_over_ordinary_ratio": lifecycle,
        "seeded_map_crafted_over_ordinary_ratio": seeded,
        "fx_map_crafted_over_ordinary_ratio": fx,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-hashing.json");
    if let Err(e) = std::fs::write(&out, summary.to_string()) {
        eprintln!("cannot write {}: {e}", out.display());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
