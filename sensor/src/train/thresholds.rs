//! Thresholds chosen on validation scores of normal rows for a false-positive budget: each
//! detector alone, and the hybrid's pair (the normal profile at a fixed share of the budget, the
//! forest at what the profile leaves).

use crate::model::Thresholds;

/// The smallest threshold `t` over `scores` of normal rows such that the fraction of them with
/// score ≥ t is at most `fpr` (so ties never push the rate above the budget).
pub fn threshold_at_fpr(normal_scores: &[f64], fpr: f64) -> f64 {
    threshold_flagging(
        normal_scores.to_vec(),
        rows_within(fpr, normal_scores.len()),
    )
    .unwrap_or(0.0)
}

/// How many of `n` rows a false-positive rate `fpr` allows. (The epsilon keeps a rate like
/// 0.0145 x 2000 from flooring to 28 through rounding.)
fn rows_within(fpr: f64, n: usize) -> usize {
    (fpr * n as f64 + 1e-9).floor() as usize
}

/// The smallest threshold that flags at most `allowed` of `scores`: just above the
/// (allowed+1)-th largest, so ties never push the count over. `None` when every row may be
/// flagged.
fn threshold_flagging(mut scores: Vec<f64>, allowed: usize) -> Option<f64> {
    scores.sort_by(|a, b| b.total_cmp(a));
    scores.get(allowed).map(|&v| next_up(v))
}

/// The scores of the rows that are not attacks.
pub(super) fn normal_scores(scores: &[f64], attack: &[bool]) -> Vec<f64> {
    scores
        .iter()
        .zip(attack)
        .filter(|(_, a)| !**a)
        .map(|(s, _)| *s)
        .collect()
}

fn next_up(v: f64) -> f64 {
    if v.is_nan() || v == f64::INFINITY {
        v
    } else if v == 0.0 {
        f64::MIN_POSITIVE
    } else if v > 0.0 {
        f64::from_bits(v.to_bits() + 1)
    } else {
        f64::from_bits(v.to_bits() - 1)
    }
}

/// The normal profile's share of the false-positive budget. Its job is attacks unlike any in
/// training; it gets a fixed share because its threshold cannot be traded against the forest's
/// on labelled data without favouring the attacks that data happens to hold.
pub const PROFILE_SHARE: f64 = 0.5;

/// The profile's threshold: `PROFILE_SHARE` of the budget over validation normal rows.
pub fn profile_threshold(normal_unsup: &[f64], target_fpr: f64) -> f64 {
    threshold_at_fpr(normal_unsup, target_fpr * PROFILE_SHARE)
}

/// The lowest forest threshold such that the hybrid (forest OR profile at `t_u`) flags at most
/// a fraction `fpr` of the normal rows whose scores are `normal_sup` / `normal_unsup`. Rows the
/// profile flags already spend budget; `f64::MAX` when they spend all of it.
pub fn forest_threshold(normal_sup: &[f64], normal_unsup: &[f64], t_u: f64, fpr: f64) -> f64 {
    let allowed = rows_within(fpr, normal_sup.len());
    let by_profile = normal_unsup.iter().filter(|&&u| u >= t_u).count();
    let Some(left) = allowed.checked_sub(by_profile) else {
        return f64::MAX;
    };
    let rest: Vec<f64> = normal_sup
        .iter()
        .zip(normal_unsup)
        .filter(|(_, u)| **u < t_u)
        .map(|(s, _)| *s)
        .collect();
    threshold_flagging(rest, left).map_or(1e-9, |t| t.max(1e-9))
}

/// Hybrid thresholds on validation scores: the profile at its share of `target_fpr`, the forest
/// at the lowest threshold that keeps the combined rate over validation normals within
/// `operating_fpr` (at most `target_fpr`; the search picks it from leave-types-out recall).
pub fn choose_thresholds(
    sup: &[f64],
    unsup: &[f64],
    attack: &[bool],
    target_fpr: f64,
    operating_fpr: f64,
) -> Thresholds {
    let (ns, nu) = (normal_scores(sup, attack), normal_scores(unsup, attack));
    let t_u = profile_threshold(&nu, target_fpr);
    Thresholds {
        supervised: forest_threshold(&ns, &nu, t_u, operating_fpr.min(target_fpr)),
        unsupervised: t_u,
        target_fpr,
    }
}

/// The thresholds of a cold verdict (`cold`, chosen on the cold scores) raised to the warm ones
/// (`warm`) where they fall below, detector by detector. A cold window is judged on less
/// evidence than a full one (part of its host window is the training data's normal traffic,
/// not the connection's own): its verdict may need a higher bar, when averaging over the
/// contexts lets more normal rows over the warm one, but never a lower one. Below the warm
/// bar, a cold window's budget would be spent on connections the sensor knows less about, and
/// traffic unlike the training rows (every real network) raises the false-positive rate of any
/// threshold chosen on them.
pub fn no_lower_than(cold: Thresholds, warm: &Thresholds) -> Thresholds {
    Thresholds {
        supervised: cold.supervised.max(warm.supervised),
        unsupervised: cold.unsupervised.max(warm.unsupervised),
        ..cold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::SplitMix64;

    #[test]
    fn cold_thresholds_are_never_below_the_warm_ones() {
        let t = |s, u| Thresholds {
            supervised: s,
            unsupervised: u,
            target_fpr: 0.02,
        };
        let warm = t(0.23, 0.57);
        assert_eq!(no_lower_than(t(0.19, 0.60), &warm), t(0.23, 0.60));
        assert_eq!(no_lower_than(t(0.27, 0.55), &warm), t(0.27, 0.57));
        assert_eq!(no_lower_than(t(0.27, 0.59), &warm), t(0.27, 0.59));
    }

    #[test]
    fn threshold_at_fpr_on_a_known_case() {
        let normal = [0.1, 0.2, 0.3, 0.9];
        let t = threshold_at_fpr(&normal, 0.25);
        assert!(
            t > 0.3 && t <= 0.9,
            "one of four normal rows may be flagged: {t}"
        );
        assert_eq!(normal.iter().filter(|&&s| s >= t).count(), 1);
        let t0 = threshold_at_fpr(&normal, 0.0);
        assert!(t0 > 0.9);
    }

    #[test]
    fn hybrid_thresholds_spend_the_operating_budget_and_no_more() {
        let mut rng = SplitMix64(3);
        let n = 2000;
        let attack: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
        let sup: Vec<f64> = attack
            .iter()
            .map(|&a| {
                if a {
                    0.5 + rng.unit() * 0.5
                } else {
                    rng.unit() * 0.7
                }
            })
            .collect();
        let uns: Vec<f64> = (0..n).map(|_| rng.unit()).collect();
        let normals = attack.iter().filter(|a| !**a).count() as f64;
        let fpr_at = |ts: f64, tu: f64| {
            (0..n)
                .filter(|&i| !attack[i] && (sup[i] >= ts || uns[i] >= tu))
                .count() as f64
                / normals
        };
        for operating in [0.02, 0.03, 0.04] {
            let t = choose_thresholds(&sup, &uns, &attack, 0.04, operating);
            // The profile alone spends its share of the target, not of the operating point.
            let by_profile = fpr_at(f64::MAX, t.unsupervised);
            assert!(by_profile <= 0.04 * PROFILE_SHARE + 1e-12, "{by_profile}");
            assert!(
                by_profile > 0.04 * PROFILE_SHARE - 2.0 / normals,
                "{by_profile}"
            );
            // Together within the operating point; the next lower forest threshold breaks it.
            let fpr = fpr_at(t.supervised, t.unsupervised);
            assert!(fpr <= operating + 1e-12, "{fpr} > {operating}");
            let next_lower = sup
                .iter()
                .zip(&attack)
                .filter(|(s, a)| !**a && **s < t.supervised)
                .map(|(s, _)| *s)
                .fold(f64::MIN, f64::max);
            assert!(
                fpr_at(next_lower, t.unsupervised) > operating,
                "a lower threshold {next_lower} stays within {operating}"
            );
        }
        // An operating point above the target is capped at the target.
        let t = choose_thresholds(&sup, &uns, &attack, 0.04, 0.5);
        assert!(fpr_at(t.supervised, t.unsupervised) <= 0.04 + 1e-12);
        // A profile that spends the whole operating point leaves the forest silent.
        assert_eq!(
            forest_threshold(&[0.1, 0.2], &[0.9, 0.9], 0.5, 0.5),
            f64::MAX
        );
    }
}
