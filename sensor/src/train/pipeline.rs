//! The training pipeline: split, normal profiles, search, final forest and thresholds, the model
//! and its comparison with each detector alone on the holdout.

use std::{collections::BTreeMap, path::Path, time::Instant};

use super::{
    config::TrainConfig,
    evaluate::{Evaluation, detector_scores, evaluate, training_labels},
    fit::{
        ForestParams, ProfileParams, Splits, TrainError, fit_forest, fit_profile, fit_tree,
        progress_bar, reestimate_leaves,
    },
    search::{self, NOVELTY_FOLDS, NovelRecall, SearchRow, novelty_folds},
    thresholds::{choose_thresholds, no_lower_than, normal_scores, threshold_at_fpr},
};
use crate::{
    dataset::Sample,
    features::{ColdWindow, FeatureConfig},
    kdd::{self, FLAGS, FeatureSet, PROTOCOLS, SERVICES, VOCABULARY_VERSION},
    model::{
        AttackSupport, ClassificationMetrics, Ensemble, FORMAT_VERSION, Model, ModelData, Node,
        NormalProfile, Scale, Thresholds, TrainingMetadata, Tree,
    },
};

/// What training produced.
pub struct Trained {
    pub model: Model,
    pub search: Vec<SearchRow>,
    /// Leave-types-out recall of the chosen configuration at each operating point (combined
    /// validation false-positive rate), and the one chosen.
    pub operating: Vec<(f64, NovelRecall)>,
    pub operating_fpr: f64,
    /// The leave-types-out groups: attack name → group.
    pub novelty_folds: BTreeMap<String, usize>,
    pub candidates: Vec<(String, Evaluation)>,
    pub holdout: Evaluation,
    pub train_labels: Vec<String>,
    pub chosen: ForestParams,
    /// How the cold-window verdict was calibrated.
    pub cold: ColdCalibration,
    /// What the forest's attack boxes change on validation.
    pub support: SupportEffect,
}

/// The deployed model on the validation rows with every forest vote counted and with the
/// attack boxes' rule ([`AttackSupport`]): the rule only withdraws verdicts, so its false
/// positives and recall are at most those without it.
#[derive(Clone, Debug)]
pub struct SupportEffect {
    /// Attack-voting leaves with a box, over all trees.
    pub boxes: usize,
    pub without: ClassificationMetrics,
    pub with: ClassificationMetrics,
}

/// The cold-window thresholds ([`ModelData::cold_thresholds`]) and what they do on the
/// validation rows scored as the sensor scores a connection whose host window it has not seen
/// (the mean over the cold contexts of the row alone in its window).
#[derive(Clone, Debug)]
pub struct ColdCalibration {
    pub thresholds: Thresholds,
    /// Validation normal rows flagged, scored cold, at the warm thresholds and at the cold ones.
    pub normal_flagged_at_warm: f64,
    pub normal_flagged_at_cold: f64,
    /// Validation attack rows flagged, scored cold, at the warm and at the cold thresholds.
    pub attacks_flagged_at_warm: f64,
    pub attacks_flagged_at_cold: f64,
}

/// The full pipeline on the training file's samples: candidates fitted on the 70% split,
/// hyperparameters and thresholds chosen on the 15% validation split, metrics on the 15%
/// holdout. `data_file` (its name only) and `data_sha256` are recorded in the model, with
/// `command`.
pub fn train(
    samples: &[Sample],
    data_file: &Path,
    data_sha256: &str,
    cfg: &TrainConfig,
    command: &str,
) -> Result<Trained, TrainError> {
    let split = Splits::new(samples, cfg.seed, cfg.feature_set);
    let normal_rows = split.normal_fit_rows();
    if normal_rows.is_empty() {
        return Err(TrainError::NoRows { what: "normal" });
    }
    let started = Instant::now();
    let mut profiles = fit_profiles(&split, &normal_rows, cfg);
    let mut profile_scores: Vec<Vec<f64>> = profiles
        .iter()
        .map(|p| validation_scores(p, &split))
        .collect();

    let fold_of = novelty_folds(&split.fit, NOVELTY_FOLDS);
    let choice = search::search(&split, &fold_of, &profile_scores, cfg)?;
    let profile_scores = profile_scores.swap_remove(choice.profile);
    let operating =
        search::operating_points(&split.validation, &fold_of, &choice, &profile_scores, cfg);
    let operating_fpr = search::operating_fpr(&operating, cfg.target_fpr);
    let chosen = ForestParams {
        trees: cfg.trees,
        ..choice.forest
    };
    let hybrid = fit_hybrid(
        &split,
        cfg,
        &chosen,
        Chosen {
            profile: profiles.swap_remove(choice.profile),
            profile_scores,
            operating_fpr,
        },
    )?;

    let support = fit_support(&split, cfg.feature_set, &hybrid.forest);
    let cold = calibrate_cold(&split, cfg, &hybrid, &support, operating_fpr);
    let maker = ModelMaker::new(cfg, data_file, data_sha256, command);
    let train_labels = training_labels(split.fit.iter().copied());
    let hyperparameters = serde_json::json!({
        "forest": chosen,
        "normal_profile": ProfileParams {
            trees: cfg.profile_trees,
            sample_size: cfg.profile_sizes[choice.profile],
        },
        "target_fpr": cfg.target_fpr,
        "operating_fpr": operating_fpr,
    });
    let (model, support) = deployed_model(
        &maker,
        &hybrid,
        support,
        cold.thresholds,
        &split,
        hyperparameters,
        &train_labels,
    )?;

    let holdout_rows: Vec<Sample> = split.holdout.iter().map(|s| (*s).clone()).collect();
    let holdout = evaluate(&model, &holdout_rows, "holdout", &train_labels);
    let mut candidates = Vec::new();
    for alone in detectors_alone(&split, cfg, &chosen, &hybrid)? {
        let m = maker.make(
            alone.supervised,
            alone.profile,
            alone.thresholds,
            None,
            ClassificationMetrics::default(),
            alone.hyperparameters,
        )?;
        let e = evaluate(&m, &holdout_rows, "holdout", &train_labels);
        candidates.push((alone.name.to_string(), e));
    }
    candidates.push((
        "hybrid: forest OR normal profile (deployed)".to_string(),
        holdout.clone(),
    ));
    if !cfg.quiet {
        eprintln!("trained in {:.0} s", started.elapsed().as_secs_f64());
    }
    Ok(Trained {
        model,
        search: choice.table,
        operating,
        operating_fpr,
        novelty_folds: fold_of,
        candidates,
        holdout,
        train_labels,
        chosen,
        cold,
        support,
    })
}

/// The cold thresholds: [`choose_thresholds`] (same target and operating point) over the
/// validation rows scored as a connection alone in a cold host window is scored, the mean of
/// each detector's score over the cold contexts ([`ColdWindow::lone`], `Model::mean_verdict`),
/// each never below the warm one ([`no_lower_than`]). Averaging over contexts narrows the
/// scores, so the share of normal rows over the warm thresholds is not the target.
fn calibrate_cold(
    split: &Splits<'_>,
    cfg: &TrainConfig,
    h: &Hybrid,
    support: &AttackSupport,
    operating_fpr: f64,
) -> ColdCalibration {
    let features = FeatureConfig::default();
    let idx = cfg.feature_set.indices();
    let (mut sup, mut unsup) = (Vec::new(), Vec::new());
    let (mut contexts, mut x) = (Vec::new(), Vec::new());
    let (mut s, mut u) = (Vec::new(), Vec::new());
    for row in &split.validation {
        let f = &row.features;
        contexts.clear();
        ColdWindow::lone(
            f.0[kdd::FLAG] as u8,
            features.host_window_connections,
            features.round_rates,
        )
        .contexts(f, &mut contexts);
        x.clear();
        for g in &contexts {
            x.extend(idx.iter().map(|&i| g.0[i]));
        }
        h.forest.mean_batch(&x, idx.len(), &mut s);
        h.profile.score_batch(&x, idx.len(), &mut u);
        // Each context's forest score as the model scores it (`Model::supported`).
        for ((s, &u), row) in s.iter_mut().zip(&u).zip(x.chunks_exact(idx.len())) {
            *s = support.score(&h.forest, row, *s, u, None);
        }
        let n = contexts.len().max(1) as f64;
        sup.push(s.iter().sum::<f64>() / n);
        unsup.push(u.iter().sum::<f64>() / n);
    }
    let attack = &split.attack_validation;
    let thresholds = no_lower_than(
        choose_thresholds(&sup, &unsup, attack, cfg.target_fpr, operating_fpr),
        &h.thresholds,
    );
    let flagged = |t: &Thresholds, attacks: bool| {
        let (mut hit, mut n) = (0usize, 0usize);
        for ((s, u), a) in sup.iter().zip(&unsup).zip(attack) {
            if *a == attacks {
                n += 1;
                hit += usize::from(*s >= t.supervised || *u >= t.unsupervised);
            }
        }
        hit as f64 / n.max(1) as f64
    };
    ColdCalibration {
        normal_flagged_at_warm: flagged(&h.thresholds, false),
        normal_flagged_at_cold: flagged(&thresholds, false),
        attacks_flagged_at_warm: flagged(&h.thresholds, true),
        attacks_flagged_at_cold: flagged(&thresholds, true),
        thresholds,
    }
}

/// The boxes of the forest's attack-voting leaves over the fit split's attack rows.
fn fit_support(split: &Splits<'_>, set: FeatureSet, forest: &Ensemble) -> AttackSupport {
    let scales: Vec<Scale> = set.names().into_iter().map(Scale::of).collect();
    let attack: Vec<bool> = split.y_fit.iter().map(|&y| y == 1).collect();
    let x_fit: Vec<f64> = split.x_fit.iter().copied().collect();
    AttackSupport::fit(forest, &scales, &x_fit, &attack)
}

/// The normal profile's scores on the validation rows.
fn validation_scores(profile: &NormalProfile, split: &Splits<'_>) -> Vec<f64> {
    split
        .x_validation
        .rows()
        .into_iter()
        .map(|r| profile.score(&r.to_vec()))
        .collect()
}

/// Normal profiles fitted on the normal fit rows only, one per searched sample size.
fn fit_profiles(
    split: &Splits<'_>,
    normal_rows: &[usize],
    cfg: &TrainConfig,
) -> Vec<NormalProfile> {
    let xn = split.x_fit.select(ndarray::Axis(0), normal_rows);
    cfg.profile_sizes
        .iter()
        .map(|&sample_size| {
            fit_profile(
                &xn,
                &ProfileParams {
                    trees: cfg.profile_trees,
                    sample_size,
                },
                cfg.seed,
                "NSL-KDD KDDTrain+ normal rows (70% split)",
            )
        })
        .collect()
}

/// What the search chose besides the forest's configuration.
struct Chosen {
    profile: NormalProfile,
    /// The profile's validation scores.
    profile_scores: Vec<f64>,
    operating_fpr: f64,
}

/// The deployed detectors, their thresholds and their validation scores.
struct Hybrid {
    forest: Ensemble,
    /// The forest's validation scores.
    forest_scores: Vec<f64>,
    profile: NormalProfile,
    profile_scores: Vec<f64>,
    thresholds: Thresholds,
}

/// The final forest with the chosen hyperparameters on all fit rows; the hybrid's thresholds on
/// validation at the chosen operating point.
fn fit_hybrid(
    split: &Splits<'_>,
    cfg: &TrainConfig,
    chosen: &ForestParams,
    c: Chosen,
) -> Result<Hybrid, TrainError> {
    let pb = progress_bar(cfg.trees, "final forest", cfg.quiet);
    let forest = fit_forest(&split.x_fit, &split.y_fit, chosen, cfg.seed, &pb)?;
    pb.finish_and_clear();
    let (forest_scores, _) = detector_scores(&forest, None, &split.x_validation);
    let thresholds = choose_thresholds(
        &forest_scores,
        &c.profile_scores,
        &split.attack_validation,
        cfg.target_fpr,
        c.operating_fpr,
    );
    Ok(Hybrid {
        forest,
        forest_scores,
        profile: c.profile,
        profile_scores: c.profile_scores,
        thresholds,
    })
}

/// The deployed model, with its own metrics on the validation rows recorded in it, and what
/// its attack boxes change there.
fn deployed_model(
    maker: &ModelMaker<'_>,
    h: &Hybrid,
    support: AttackSupport,
    cold: Thresholds,
    split: &Splits<'_>,
    hyperparameters: serde_json::Value,
    train_labels: &[String],
) -> Result<(Model, SupportEffect), TrainError> {
    let boxes = support.box_count();
    let make = |validation: ClassificationMetrics,
                hp: serde_json::Value,
                support: Option<AttackSupport>| {
        let mut m = maker.make(
            h.forest.clone(),
            Some(h.profile.clone()),
            h.thresholds,
            Some(cold),
            validation,
            hp,
        )?;
        m.set_attack_support(support)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        Ok::<Model, TrainError>(m)
    };
    let validation_rows: Vec<Sample> = split.validation.iter().map(|s| (*s).clone()).collect();
    let on_validation =
        |m: &Model| evaluate(m, &validation_rows, "validation", train_labels).metrics;
    let every_vote = make(
        ClassificationMetrics::default(),
        hyperparameters.clone(),
        None,
    )?;
    let provisional = make(
        ClassificationMetrics::default(),
        hyperparameters.clone(),
        Some(support.clone()),
    )?;
    let effect = SupportEffect {
        boxes,
        without: on_validation(&every_vote),
        with: on_validation(&provisional),
    };
    let model = make(effect.with.clone(), hyperparameters, Some(support))?;
    Ok((model, effect))
}

/// A detector of the hybrid (or a single tree) on its own, for the comparison on the holdout.
struct Alone {
    name: &'static str,
    supervised: Ensemble,
    profile: Option<NormalProfile>,
    thresholds: Thresholds,
    hyperparameters: serde_json::Value,
}

/// A single decision tree, the forest and the normal profile, each alone at its own threshold for
/// the target rate on validation normal rows.
fn detectors_alone(
    split: &Splits<'_>,
    cfg: &TrainConfig,
    chosen: &ForestParams,
    h: &Hybrid,
) -> Result<[Alone; 3], TrainError> {
    let (x, y) = (&split.x_fit, &split.y_fit);
    let all_rows: Vec<usize> = (0..x.nrows()).collect();
    let cols: Vec<usize> = (0..x.ncols()).collect();
    let (_, mut tree) = fit_tree(x, y, &all_rows, &cols, chosen.max_depth, 1.0)?;
    reestimate_leaves(&mut tree, x, y, &all_rows);
    let single = Ensemble::new(vec![tree]);
    let (tree_scores, _) = detector_scores(&single, None, &split.x_validation);
    let at_target = |scores: &[f64]| {
        threshold_at_fpr(
            &normal_scores(scores, &split.attack_validation),
            cfg.target_fpr,
        )
    };
    let supervised_alone = |scores: &[f64]| Thresholds {
        supervised: at_target(scores).max(1e-9),
        unsupervised: f64::MAX,
        target_fpr: cfg.target_fpr,
    };
    // The normal profile alone: a supervised part that never fires.
    let never = Ensemble::new(vec![Tree {
        nodes: vec![Node::leaf(0.0)],
    }]);
    Ok([
        Alone {
            name: "decision tree (linfa-trees)",
            supervised: single,
            profile: None,
            thresholds: supervised_alone(&tree_scores),
            hyperparameters: serde_json::json!({"max_depth": chosen.max_depth}),
        },
        Alone {
            name: "random forest",
            supervised: h.forest.clone(),
            profile: None,
            thresholds: supervised_alone(&h.forest_scores),
            hyperparameters: serde_json::json!({}),
        },
        Alone {
            name: "isolation forest (normal profile)",
            supervised: never,
            profile: Some(h.profile.clone()),
            thresholds: Thresholds {
                supervised: f64::MAX,
                unsupervised: at_target(&h.profile_scores),
                target_fpr: cfg.target_fpr,
            },
            hyperparameters: serde_json::json!({}),
        },
    ])
}

/// Builds the models of one training run: they share its metadata and vocabularies.
struct ModelMaker<'a> {
    set: FeatureSet,
    data_file: String,
    data_sha256: &'a str,
    seed: u64,
    command: &'a str,
}

impl<'a> ModelMaker<'a> {
    fn new(
        cfg: &TrainConfig,
        data_file: &Path,
        data_sha256: &'a str,
        command: &'a str,
    ) -> ModelMaker<'a> {
        ModelMaker {
            set: cfg.feature_set,
            // The file name only: the model must not depend on where the data sat.
            data_file: data_file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            data_sha256,
            seed: cfg.seed,
            command,
        }
    }

    fn make(
        &self,
        supervised: Ensemble,
        normal_profile: Option<NormalProfile>,
        thresholds: Thresholds,
        cold_thresholds: Option<Thresholds>,
        validation: ClassificationMetrics,
        hyperparameters: serde_json::Value,
    ) -> Result<Model, TrainError> {
        let set = self.set;
        Ok(Model::from_data(ModelData {
            format_version: FORMAT_VERSION,
            vocabulary_version: VOCABULARY_VERSION,
            feature_set: set,
            feature_names: set.names().into_iter().map(String::from).collect(),
            protocols: PROTOCOLS.iter().map(|s| s.to_string()).collect(),
            services: SERVICES.iter().map(|s| s.to_string()).collect(),
            flags: FLAGS.iter().map(|s| s.to_string()).collect(),
            supervised,
            normal_profile,
            thresholds,
            cold_thresholds,
            attack_support: None,
            metadata: TrainingMetadata {
                data_file: self.data_file.clone(),
                data_sha256: self.data_sha256.to_string(),
                seed: self.seed,
                hyperparameters,
                validation,
                command: self.command.to_string(),
            },
        })?)
    }
}
