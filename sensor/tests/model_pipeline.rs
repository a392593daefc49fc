//! The model pipeline end to end, without root: ETL on fixtures, training reproducibility,
//! save/load, refusal of bad files, and the committed model's accuracy floor on KDDTest+.

use std::path::{Path, PathBuf};

use sensor::{
    dataset::{self, DatasetError, LoadOptions},
    kdd::FeatureSet,
    model::{FORMAT_VERSION, Model, ModelError, save_data},
    train::{self, TrainConfig},
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The NSL-KDD directory, or `None` after a loud message; under CI the data must be there.
fn data_dir() -> Option<PathBuf> {
    let dir = dataset::default_data_dir();
    if dir.join("KDDTrain+.txt").exists() && dir.join("KDDTest+.txt").exists() {
        return Some(dir);
    }
    let msg = format!(
        "NSL-KDD data not found in {} (set NSL_KDD_DIR; see README): this test cannot run",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n!!!!! {msg} !!!!!\n");
    None
}

#[test]
fn malformed_rows_are_errors_with_file_line_and_field_or_counted_when_skipped() {
    let path = fixture("malformed.txt");
    let err = dataset::load(&path, LoadOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::FieldCount {
                line: 3,
                found: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3:", path.display())),
        "{err}"
    );
    let loaded = dataset::load(
        &path,
        LoadOptions {
            skip_malformed: true,
        },
    )
    .unwrap();
    assert_eq!(loaded.samples.len(), 3, "three good rows");
    assert_eq!(loaded.skipped, 3, "three bad rows counted");
    assert!(
        loaded.first_errors[1].contains(":4: field 3 (service): unknown service"),
        "{:?}",
        loaded.first_errors
    );
    assert!(
        loaded.first_errors[2].contains(":5: field 1 (duration): not a number"),
        "{:?}",
        loaded.first_errors
    );
    let good = dataset::load(&fixture("good3.txt"), LoadOptions::default()).unwrap();
    assert_eq!(good.samples.len(), 3);
    assert_eq!(good.samples[0].label, "normal");
    assert_eq!(good.samples[0].difficulty, Some(20));
}

#[test]
fn arff_rows_load_with_their_class() {
    let loaded = dataset::load(&fixture("small.arff"), LoadOptions::default()).unwrap();
    assert_eq!(loaded.samples.len(), 4);
    let labels: Vec<&str> = loaded.samples.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["normal", "normal", "anomaly", "normal"]);
    assert!(loaded.samples.iter().all(|s| s.difficulty.is_none()));
    // The same rows as the text file, feature for feature.
    let text = dataset::load(&fixture("good3.txt"), LoadOptions::default()).unwrap();
    for (a, t) in loaded.samples.iter().zip(&text.samples) {
        assert_eq!(a.features, t.features);
    }
}

fn quick_model(dir: &Path, seed: u64) -> (Model, Vec<dataset::Sample>) {
    let file = dir.join("KDDTrain+_20Percent.txt");
    let samples = dataset::load(&file, LoadOptions::default())
        .unwrap()
        .samples;
    let mut cfg = TrainConfig::quick(FeatureSet::Flow);
    cfg.seed = seed;
    let t = train::train(&samples, &file, "test", &cfg, "test").unwrap();
    (t.model, samples)
}

#[test]
fn training_is_reproducible_and_models_round_trip_with_identical_scores() {
    let Some(dir) = data_dir() else { return };
    let tmp = std::env::temp_dir().join(format!("sensor-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (a, samples) = quick_model(&dir, 11);
    let (b, _) = quick_model(&dir, 11);
    let (c, _) = quick_model(&dir, 12);
    let (pa, pb, pc) = (
        tmp.join("a.model"),
        tmp.join("b.model"),
        tmp.join("c.model"),
    );
    a.save(&pa).unwrap();
    b.save(&pb).unwrap();
    c.save(&pc).unwrap();
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    // (assert! rather than assert_eq!: a failure should not print two megabytes.)
    assert!(bytes(&pa) == bytes(&pb), "same seed, same model file");
    assert!(bytes(&pa) != bytes(&pc), "another seed, another model");

    let loaded = Model::load(&pa).unwrap();
    let rows: Vec<_> = samples.iter().take(2000).map(|s| s.features).collect();
    assert_eq!(
        loaded.score_batch(&rows),
        a.score_batch(&rows),
        "identical verdicts after load"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// Needs no data set: it damages the committed model file in every way a loader must catch.
#[test]
fn corrupted_truncated_and_mismatched_files_are_refused() {
    let tmp = std::env::temp_dir().join(format!("sensor-model-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let m = Model::load(&committed).unwrap_or_else(|e| panic!("{}: {e}", committed.display()));
    let good = tmp.join("good.model");
    m.save(&good).unwrap();
    let text = std::fs::read_to_string(&good).unwrap();
    let again = Model::load(&good).expect("a saved model loads again");
    assert_eq!(again.data(), m.data(), "attack boxes included");
    assert!(m.data().attack_support.is_some());
    assert_eq!(m.data().format_version, FORMAT_VERSION);

    // A file of the previous layout (version 1, no attack boxes) still loads, and judges with
    // every vote.
    let mut v1 = m.data().clone();
    v1.format_version = 1;
    v1.attack_support = None;
    let old = tmp.join("v1.model");
    save_data(&v1, &old).unwrap();
    assert!(
        std::fs::read_to_string(&old)
            .unwrap()
            .starts_with("SENSOR-MODEL v1 ")
    );
    assert!(Model::load(&old).unwrap().data().attack_support.is_none());

    let corrupted = tmp.join("corrupted.model");
    let pos = text.len() / 2;
    let mut b = text.clone().into_bytes();
    b[pos] = if b[pos] == b'1' { b'2' } else { b'1' };
    std::fs::write(&corrupted, &b).unwrap();
    assert!(matches!(
        Model::load(&corrupted),
        Err(ModelError::Checksum { .. })
    ));

    let truncated = tmp.join("truncated.model");
    std::fs::write(&truncated, &text[..text.len() * 2 / 3]).unwrap();
    assert!(matches!(
        Model::load(&truncated),
        Err(ModelError::Checksum { .. })
    ));

    let not_a_model = tmp.join("other.model");
    std::fs::write(&not_a_model, "hello\nworld").unwrap();
    assert!(matches!(
        Model::load(&not_a_model),
        Err(ModelError::NotAModel { .. })
    ));

    let future = tmp.join("future.model");
    std::fs::write(
        &future,
        text.replacen(
            &format!("SENSOR-MODEL v{FORMAT_VERSION} "),
            "SENSOR-MODEL v9 ",
            1,
        ),
    )
    .unwrap();
    assert!(matches!(
        Model::load(&future),
        Err(ModelError::Version { found: 9, .. })
    ));

    // Valid checksum, but features in another order: refused as a mismatch.
    let mut data = m.data().clone();
    data.feature_names.swap(0, 1);
    let mismatched = tmp.join("mismatched.model");
    save_data(&data, &mismatched).unwrap();
    let err = Model::load(&mismatched).unwrap_err();
    assert!(matches!(err, ModelError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("feature names"), "{err}");

    let mut data = m.data().clone();
    data.services[3] = "not-a-service".into();
    save_data(&data, &mismatched).unwrap();
    assert!(matches!(
        Model::load(&mismatched),
        Err(ModelError::Mismatch { .. })
    ));

    let mut data = m.data().clone();
    data.supervised.trees[0].nodes[0].left = 0;
    save_data(&data, &mismatched).unwrap();
    assert!(matches!(
        Model::load(&mismatched),
        Err(ModelError::Malformed { .. })
    ));
    std::fs::remove_dir_all(&tmp).ok();
}

/// The committed default model on KDDTest+ (never used for fitting, search or thresholds).
/// Floors: the project's, at least 86% accuracy at a false-positive rate of at most 4%. The
/// committed model measures 86.17% at 3.15% (models/MODEL_CARD.md): the forest's attack boxes
/// (`docs/model.md`, "Where the forest extrapolates") gave up 0.93 points for half the false
/// alarms on real benign captures, so the margin is small, and a change that takes from it must
/// be weighed against this floor, not the floor moved.
#[test]
fn the_committed_model_keeps_its_accuracy_on_kddtest() {
    let Some(dir) = data_dir() else { return };
    let model_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let model =
        Model::load(&model_path).unwrap_or_else(|e| panic!("the committed model must load: {e}"));
    assert_eq!(model.feature_set(), FeatureSet::Flow);
    let test = dataset::load(&dir.join("KDDTest+.txt"), LoadOptions::default())
        .unwrap()
        .samples;
    assert_eq!(test.len(), 22_544);
    let e = train::evaluate(&model, &test, "KDDTest+", &[]);
    let m = &e.metrics;
    eprintln!(
        "KDDTest+: accuracy {:.4} fpr {:.4} recall {:.4} auc {:.4}",
        m.accuracy, m.false_positive_rate, m.recall, m.roc_auc
    );
    assert!(
        m.false_positive_rate <= 0.04,
        "false-positive rate {:.4} above 4%",
        m.false_positive_rate
    );
    assert!(
        m.accuracy >= ACCURACY_FLOOR,
        "accuracy {:.4} below the floor {ACCURACY_FLOOR}",
        m.accuracy
    );
}

/// See `the_committed_model_keeps_its_accuracy_on_kddtest`.
const ACCURACY_FLOOR: f64 = 0.86;

/// The leave-types-out search on a small configuration: every attack type of the fit split is
/// held out exactly once, the operating point is the lowest false-positive rate within the
/// tolerance of the best unseen-type recall, and the thresholds keep validation within it.
#[test]
fn leave_types_out_search_picks_the_lowest_sufficient_operating_point() {
    let Some(dir) = data_dir() else { return };
    let file = dir.join("KDDTrain+_20Percent.txt");
    let samples = dataset::load(&file, LoadOptions::default())
        .unwrap()
        .samples;
    let t = train::train(
        &samples,
        &file,
        "test",
        &TrainConfig::quick(FeatureSet::Flow),
        "test",
    )
    .unwrap();
    let groups: std::collections::BTreeSet<usize> = t.novelty_folds.values().copied().collect();
    assert_eq!(groups.len(), train::NOVELTY_FOLDS, "{:?}", t.novelty_folds);
    assert!(!t.novelty_folds.contains_key("normal"));
    assert!(t.novelty_folds.contains_key("neptune"));

    let best = t
        .operating
        .iter()
        .map(|o| o.1.macro_recall)
        .fold(0.0, f64::max);
    let tol = train::SEARCH_TOLERANCE;
    for (fpr, nr) in &t.operating {
        if *fpr < t.operating_fpr {
            assert!(nr.macro_recall < best - tol, "{fpr} was enough: {nr:?}");
        } else if *fpr == t.operating_fpr {
            assert!(nr.macro_recall >= best - tol);
        }
    }
    let th = t.model.thresholds();
    assert!(t.operating_fpr <= th.target_fpr + 1e-12);
    let v = &t.model.data().metadata.validation;
    assert!(
        v.false_positive_rate <= t.operating_fpr + 1e-12,
        "validation FPR {} above the operating point {}",
        v.false_positive_rate,
        t.operating_fpr
    );
    // Recall on unseen types is a real measurement: between nothing and everything, and the
    // search table is filled for every configuration.
    assert!(best > 0.0 && best <= 1.0, "{best}");
    assert_eq!(t.search.len(), 4, "2 depths x 2 feature counts x 1 profile");

    // The cold-window thresholds: chosen on the validation rows scored cold, within the
    // operating point there; saved in the model.
    let cold = &t.cold;
    assert_eq!(t.model.cold_thresholds(), Some(cold.thresholds));
    assert!(
        cold.normal_flagged_at_cold <= t.operating_fpr + 1e-12,
        "{cold:?}"
    );
    // Never below the warm thresholds (a cold window is judged on less evidence), so never
    // flagging more than they would.
    assert!(cold.thresholds.supervised >= th.supervised, "{cold:?}");
    assert!(cold.thresholds.unsupervised >= th.unsupervised, "{cold:?}");
    assert!(
        cold.attacks_flagged_at_cold <= cold.attacks_flagged_at_warm,
        "{cold:?}"
    );
    // A connection alone in a cold window keeps only its own and its 2 s window's evidence, but
    // its verdict still tells attacks from normal traffic.
    assert!(
        cold.attacks_flagged_at_cold > 10.0 * cold.normal_flagged_at_cold.max(0.01),
        "{cold:?}"
    );
    // A verdict over a window half seen is judged halfway between the two.
    let half = t.model.thresholds_at(0.5);
    assert!(
        (half.supervised - (th.supervised + cold.thresholds.supervised) / 2.0).abs() < 1e-12,
        "{half:?}"
    );
    assert_eq!(t.model.thresholds_at(0.0), th);
}

/// The contexts a cold host window is completed with are what their doc says: normal rows of
/// `KDDTrain+.txt`, evenly spaced in file order, with their host-window shares.
#[test]
fn cold_contexts_are_the_training_data_normal_rows() {
    use sensor::features::cold_contexts::{COLD_CONTEXT_COUNT, COLD_CONTEXTS};
    let Some(dir) = data_dir() else { return };
    let path = dir.join("KDDTrain+.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let normal: Vec<Vec<f64>> = text
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c.len() > 41 && c[41] == "normal")
        .map(|c| c[31..41].iter().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(normal.len(), 67_343, "{}", path.display());
    let (n, k) = (normal.len(), COLD_CONTEXT_COUNT);
    for (i, got) in COLD_CONTEXTS.iter().enumerate() {
        let row = &normal[(2 * i * (n - 1) + (k - 1)) / (2 * (k - 1))];
        // dst_host_count, dst_host_srv_count, same_srv, diff_srv, same_src_port,
        // srv_diff_host, serror, srv_serror, rerror, srv_rerror
        let (dh, ds) = (row[0], row[1]);
        // Distinct services of the host's connections beyond the current one's, and distinct
        // hosts of the service's, per other slot (1 distinct where the rate is 0).
        let extra = |n: f64, rate: f64| {
            if rate > 0.0 {
                (n * rate - 1.0).max(0.0) / 254.0
            } else {
                0.0
            }
        };
        let want = [
            dh / 255.0,
            ds / 255.0,
            dh * row[2] / 255.0,
            dh * row[4] / 255.0,
            dh * row[6] / 255.0,
            ds * row[7] / 255.0,
            dh * row[8] / 255.0,
            ds * row[9] / 255.0,
            extra(dh, row[3]),
            extra(ds, row[5]),
        ];
        let have = [
            got.host,
            got.service,
            got.host_service,
            got.host_src_port,
            got.host_syn,
            got.service_syn,
            got.host_rej,
            got.service_rej,
            got.host_distinct,
            got.service_distinct,
        ];
        for (w, h) in want.iter().zip(have) {
            assert!(
                (w - h).abs() <= 0.5e-4 + 1e-9,
                "context {i}: {have:?} vs {want:?}"
            );
        }
    }
}
