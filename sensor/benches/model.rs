//! Scoring throughput of the deployed ensemble representation (flattened node arrays) against
//! linfa's own `predict` on the same trees and rows, in the same run.
//!
//! Trees: linfa-trees decision trees fitted like the committed forest's (its tree count, depth and
//! features per tree, read from `models/nsl-kdd-flow.model`; bootstrap samples) on
//! KDDTrain+_20Percent; rows: 20,000 rows of it. The ratio and rows/s go to stdout and to
//! `target/bench-model.json`. The committed model as a whole (forest and normal profile) is
//! timed on the same rows too, for the figure a connection costs.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use linfa::prelude::Predict;
use ndarray::{Array1, Array2};
use sensor::{
    dataset::{self, LoadOptions, SplitMix64},
    kdd::FeatureSet,
    kdd::KddFeatures,
    model::{Ensemble, Model},
    train::{ForestParams, fit_tree, matrix},
};

const ROWS: usize = 20_000;

fn bench(c: &mut Criterion) {
    let model_file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let model = Model::load(&model_file).unwrap_or_else(|e| panic!("the committed model: {e}"));
    let p: ForestParams =
        serde_json::from_value(model.data().metadata.hyperparameters["forest"].clone())
            .unwrap_or_else(|e| panic!("forest hyperparameters of the committed model: {e}"));
    let trees = p.trees;
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
    for _ in 0..trees {
        let rows: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
        let mut cols: Vec<usize> = (0..d).collect();
        rng.shuffle(&mut cols);
        cols.truncate(p.features_per_tree.clamp(1, d));
        cols.sort_unstable();
        let (t, f) = fit_tree(&x, &y, &rows, &cols, p.max_depth, p.min_weight_leaf)
            .unwrap_or_else(|e| panic!("fitting a tree on {}: {e}", file.display()));
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
    let features: Vec<KddFeatures> = samples
        .iter()
        .take(rows.nrows())
        .map(|s| s.features)
        .collect();

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
        assert!((*a as f64 / trees as f64 - b).abs() < 1e-9, "scores differ");
    }

    let mut g = c.benchmark_group("model");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("compact_forest_20k_rows", |b| b.iter(compact_score));
    g.bench_function("linfa_predict_20k_rows", |b| b.iter(linfa_score));
    g.bench_function("committed_model_20k_rows", |b| {
        b.iter(|| model.score_batch(&features))
    });
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
    let tm = time(&|| {
        std::hint::black_box(model.score_batch(&features));
    });
    let (rc, rl) = (rows.nrows() as f64 / tc, rows.nrows() as f64 / tl);
    let rm = rows.nrows() as f64 / tm;
    println!(
        "model: compact {rc:.0} rows/s, linfa predict {rl:.0} rows/s, ratio {:.2}x ({trees} trees, depth {}, one core); committed model with its normal profile {rm:.0} rows/s",
        rc / rl,
        p.max_depth
            .map_or("unbounded".to_string(), |d| d.to_string()),
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-model.json");
    let json = serde_json::json!({"compact_rows_per_s": rc, "linfa_rows_per_s": rl, "ratio": rc / rl, "trees": trees, "committed_model_rows_per_s": rm});
    if let Err(e) = std::fs::write(&out, json.to_string()) {
        eprintln!("could not write {}: {e}", out.display());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
