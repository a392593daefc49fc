//! Measuring a model: binary metrics, ROC curve and ROC-AUC, and the evaluation on labelled
//! samples that the model card and `sensor evaluate` report.

use std::collections::BTreeMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::{
    dataset::Sample,
    model::{ClassificationMetrics, Ensemble, Model, NormalProfile},
};

/// Binary metrics of verdicts `pred` against truth `attack`, with ROC-AUC over `score`.
pub fn metrics(attack: &[bool], pred: &[bool], score: &[f64]) -> ClassificationMetrics {
    let mut c = [[0u64; 2]; 2];
    for (&a, &p) in attack.iter().zip(pred) {
        c[usize::from(a)][usize::from(p)] += 1;
    }
    let (tn, fp, fneg, tp) = (
        c[0][0] as f64,
        c[0][1] as f64,
        c[1][0] as f64,
        c[1][1] as f64,
    );
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let precision = div(tp, tp + fp);
    let recall = div(tp, tp + fneg);
    ClassificationMetrics {
        rows: attack.len(),
        accuracy: div(tp + tn, tp + tn + fp + fneg),
        precision,
        recall,
        f1: div(2.0 * precision * recall, precision + recall),
        false_positive_rate: div(fp, fp + tn),
        roc_auc: roc_auc(attack, score),
        confusion: c,
    }
}

/// ROC-AUC by the rank-sum (Mann-Whitney) statistic, ties counted half.
pub fn roc_auc(attack: &[bool], score: &[f64]) -> f64 {
    let mut v: Vec<(f64, bool)> = score.iter().copied().zip(attack.iter().copied()).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i) = (0.0, 0);
    let pos = attack.iter().filter(|&&a| a).count() as f64;
    let neg = attack.len() as f64 - pos;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // ranks i+1..=j
        rank_sum += avg_rank * v[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    if pos == 0.0 || neg == 0.0 {
        0.5
    } else {
        (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
    }
}

/// ROC points (false-positive rate, true-positive rate) of `score`, at up to ~200 thresholds.
pub fn roc_curve(attack: &[bool], score: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, bool)> = score.iter().copied().zip(attack.iter().copied()).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = attack.iter().filter(|&&a| a).count().max(1) as f64;
    let neg = (attack.len() as f64 - pos).max(1.0);
    let step = (v.len() / 200).max(1);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0)];
    for (k, (_, a)) in v.iter().enumerate() {
        if *a {
            tp += 1.0
        } else {
            fp += 1.0
        }
        if k % step == 0 || k + 1 == v.len() {
            pts.push((fp / neg, tp / pos));
        }
    }
    pts
}

/// Scores of a model's detectors on rows of `x` (in model input order).
pub fn detector_scores(
    sup: &Ensemble,
    profile: Option<&NormalProfile>,
    x: &Array2<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let mut s = Vec::with_capacity(x.nrows());
    let mut u = Vec::with_capacity(x.nrows());
    for row in x.rows() {
        let r = row
            .as_slice()
            .map(<[f64]>::to_vec)
            .unwrap_or_else(|| row.to_vec());
        s.push(sup.mean(&r));
        u.push(profile.map(|p| p.score(&r)).unwrap_or(0.0));
    }
    (s, u)
}

/// Evaluation of a model on labelled samples, with per-category and novel-attack recall.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evaluation {
    pub data: String,
    pub metrics: ClassificationMetrics,
    /// Recall per attack category (and the rows in it).
    pub recall_by_category: BTreeMap<String, (f64, usize)>,
    /// Recall over attack types that never occur in the training data.
    pub novel_attack_recall: Option<(f64, usize)>,
    /// Share of flags by each detector among the flagged rows.
    pub flagged_by: BTreeMap<String, usize>,
    #[serde(skip)]
    pub roc: Vec<(f64, f64)>,
}

/// Evaluates `model` on `samples`; `train_labels` are the attack names seen in training.
pub fn evaluate(
    model: &Model,
    samples: &[Sample],
    data: &str,
    train_labels: &[String],
) -> Evaluation {
    let verdicts = model.score_batch(&samples.iter().map(|s| s.features).collect::<Vec<_>>());
    let attack: Vec<bool> = samples.iter().map(Sample::is_attack).collect();
    let pred: Vec<bool> = verdicts.iter().map(|v| v.anomalous).collect();
    let score: Vec<f64> = verdicts.iter().map(|v| v.score).collect();
    let mut by_cat: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut novel_hit, mut novel_n) = (0, 0);
    let mut flagged_by = BTreeMap::new();
    for ((s, &p), v) in samples.iter().zip(&pred).zip(&verdicts) {
        if p {
            *flagged_by
                .entry(format!("{:?}", v.detector).to_lowercase())
                .or_insert(0) += 1;
        }
        if !s.is_attack() {
            continue;
        }
        let e = by_cat.entry(s.category().to_string()).or_default();
        e.1 += 1;
        e.0 += usize::from(p);
        if !train_labels.iter().any(|l| l == &s.label) {
            novel_n += 1;
            novel_hit += usize::from(p);
        }
    }
    Evaluation {
        data: data.to_string(),
        metrics: metrics(&attack, &pred, &score),
        recall_by_category: by_cat
            .into_iter()
            .map(|(k, (h, n))| (k, (h as f64 / n.max(1) as f64, n)))
            .collect(),
        novel_attack_recall: (novel_n > 0).then(|| (novel_hit as f64 / novel_n as f64, novel_n)),
        flagged_by,
        roc: roc_curve(&attack, &score),
    }
}

/// The distinct labels of `samples`, sorted: for [`evaluate`], the attack names seen in training.
pub fn training_labels<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<String> {
    let mut labels: Vec<String> = samples.into_iter().map(|s| s.label.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// A fraction as a percentage with two decimals, as the model card and its figures write it.
pub(super) fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_on_a_known_case() {
        let attack = [false, false, false, false, true, true];
        let score = [0.1, 0.2, 0.3, 0.9, 0.8, 0.95];
        // Pairs (attack > normal): 0.8 beats 3 of 4, 0.95 beats 4 of 4 -> 7/8.
        assert!((roc_auc(&attack, &score) - 0.875).abs() < 1e-12);
    }
}
