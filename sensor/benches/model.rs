//! Scoring throughput of the deployed ensemble representation (flattened node arrays) against
//! linfa's own `predict` on the same trees and rows, in the same run.
//!
//! Trees: 60 linfa-trees decision trees fitted like the committed forest's (bootstrap sample, 14
//! random features of 28, depth 14) on KDDTrain+_20Percent; rows: 20,000 rows of it. The ratio
//! and rows/s go to stdout and to `target/bench-model.json`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use linfa::prelude::Predict;
use ndarray::{Array1, Array2};
use sensor::{
    dataset::{self, LoadOptions, SplitMix64},
    kdd::FeatureSet,
    model::Ensemble,
    train::{fit_tree, matrix},
};

const TREES: usize = 60;
const ROWS: usize = 20_000;
/// The committed model's configuration (models/MODEL_CARD.md): depth 14, 14 of 28 features.
const DEPTH: usize = 14;

fn bench(c: &mut Criterion) {
    let file = dataset::default_data_dir().join("KDDTrain+_20Percent.txt");
    let samples = dataset::load(&file, LoadOptions::default())
        .unwrap_or_else(|e| panic!("the model benchmark needs NSL-KDD: {e}"))
        .samples;
    let refs: Vec<&dataset::Sample> = samples.iter().collect();
    let x = matrix(&refs, FeatureSet::Flow);
    let y: Array1<usize> = samples.iter().map(|s| usize::from(s.is_attack())).collect();
    let mut rng = SplitMix64(1);
    let (n, d) = (x.nrows(), x.ncols());
    let mut linfa_trees = Vec::new();
    let mut flat = Vec::new();
    for _ in 0..TREES {
        let rows: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
        let mut cols: Vec<usize> = (0..d).collect();
        rng.shuffle(&mut cols);
        cols.truncate(d / 2);
        cols.sort_unstable();
        let (t, f) = fit_tree(&x, &y, &rows, &cols, Some(DEPTH), 1.0).expect("fit");
        linfa_trees.push((t, cols));
        flat.push(f);
    }
    let ensemble = Ensemble::new(flat);
    let rows: Array2<f64> = x.slice(ndarray::s![..ROWS.min(n), ..]).to_owned();
    // linfa trees were fitted on column subsets: give each its own view, prepared outside the
    // timed region so that only `predict` is measured.
    let views: Vec<Array2<f64>> = linfa_trees
        .iter()
        .map(|(_, cols)| rows.select(ndarray::Axis(1), cols))
        .collect();
    let flat_rows: Vec<f64> = rows.iter().copied().collect();

    let linfa_score = || {
        let mut votes = vec![0usize; rows.nrows()];
        for ((t, _), v) in linfa_trees.iter().zip(&views) {
            let p: Array1<usize> = t.predict(v);
            for (acc, q) in votes.iter_mut().zip(p.iter()) {
                *acc += q;
            }
        }
        votes
    };
    let compact_score = || {
        let mut out = Vec::new();
        ensemble.mean_batch(&flat_rows, d, &mut out);
        out
    };
    // Same answers: the flattened trees are the linfa trees.
    let (lv, cv) = (linfa_score(), compact_score());
    for (a, b) in lv.iter().zip(&cv) {
        assert!((*a as f64 / TREES as f64 - b).abs() < 1e-9, "scores differ");
    }

    let mut g = c.benchmark_group("model");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("compact_60_trees_20k_rows", |b| b.iter(compact_score));
    g.bench_function("linfa_predict_60_trees_20k_rows", |b| b.iter(linfa_score));
    g.finish();

    let time = |f: &dyn Fn()| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    };
    let tc = time(&|| {
        std::hint::black_box(compact_score());
    });
    let tl = time(&|| {
        std::hint::black_box(linfa_score());
    });
    let (rc, rl) = (rows.nrows() as f64 / tc, rows.nrows() as f64 / tl);
    println!(
        "model: compact {rc:.0} rows/s, linfa predict {rl:.0} rows/s, ratio {:.2}x ({TREES} trees, one core)",
        rc / rl
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-model.json");
    let json = serde_json::json!({"compact_rows_per_s": rc, "linfa_rows_per_s": rl, "ratio": rc / rl, "trees": TREES});
    if let Err(e) = std::fs::write(&out, json.to_string()) {
        eprintln!("could not write {}: {e}", out.display());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
