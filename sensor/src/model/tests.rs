use std::path::Path;

use super::{tree::WalkTree, *};

fn stump(feature: u32, threshold: f64) -> Tree {
    Tree {
        nodes: vec![
            Node::split(feature as usize, threshold, 1),
            Node::leaf(0.0),
            Node::leaf(1.0),
        ],
    }
}

#[test]
fn trees_follow_the_linfa_rule_and_reject_bad_indices() {
    let t = stump(1, 5.0);
    assert_eq!(t.leaf(&[0.0, 4.9]), 0.0);
    assert_eq!(t.leaf(&[0.0, 5.0]), 1.0, "equal goes right, as in linfa");
    assert!(t.validate(2).is_ok());
    assert!(t.validate(1).is_err(), "feature out of range");
    let mut bad = t.clone();
    bad.nodes[0].left = 0;
    assert!(bad.validate(2).is_err(), "a child pointing back would loop");
}

#[test]
fn batch_scoring_equals_row_by_row_including_the_tail() {
    // Two trees of different depths; batches of 1 to 29 rows: every size of the last lane
    // group, the ones walked in lanes filled up with copies of their last row and the ones
    // too small for that walked row by row. From two groups on, the rows are taken in the
    // order of the first tree's leaves (the stump splits them in two), so that the groups
    // and the tail mix rows from all over the batch.
    let deep = Tree {
        nodes: vec![
            Node::split(0, 5.0, 1),
            Node::leaf(0.25),
            Node::split(1, 2.0, 3),
            Node::leaf(0.5),
            Node::leaf(1.0),
        ],
    };
    let e = Ensemble::new(vec![stump(1, 1.0), deep]);
    assert_eq!(e.trees[1].depth(), 2);
    let all: Vec<[f64; 2]> = (0..29).map(|i| [(i % 13) as f64, (i % 4) as f64]).collect();
    for n in 1..=all.len() {
        let rows = &all[..n];
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        let mut out = Vec::new();
        e.mean_batch(&flat, 2, &mut out);
        let expected: Vec<f64> = rows.iter().map(|r| e.mean(r)).collect();
        assert_eq!(out, expected, "{n} rows");
        // The same walk handing each row's leaves on: every row once, with its own leaves.
        let mut seen = vec![0; n];
        let mut again = Vec::new();
        e.mean_batch_then(&flat, 2, &mut again, |r, mean, leaves| {
            seen[r] += 1;
            assert_eq!(mean, expected[r], "{n} rows, row {r}");
            let want: Vec<u32> = e
                .trees
                .iter()
                .map(|t| t.leaf_index(&rows[r]) as u32)
                .collect();
            assert_eq!(leaves, &want[..], "{n} rows, row {r}");
        });
        assert_eq!(again, expected, "{n} rows");
        assert!(seen.iter().all(|&k| k == 1), "{n} rows: {seen:?}");
        if n == all.len() {
            assert!(out.contains(&0.125) && out.contains(&1.0), "{out:?}");
        }
    }
}

#[test]
fn the_unchecked_walk_refuses_trees_it_cannot_prove_in_bounds() {
    let mut bad = stump(1, 1.0);
    bad.nodes[0].left = 2; // right child would be node 3 of 3
    assert!(WalkTree::of(&bad).is_none());
    let mut back = stump(1, 1.0);
    back.nodes[0].left = 0;
    assert!(WalkTree::of(&back).is_none(), "a child pointing back");
    assert_eq!(WalkTree::of(&stump(1, 1.0)).map(|w| w.width), Some(2));
}

#[test]
fn depth_counts_the_deepest_way_into_a_node_with_two_parents() {
    // Node 3 is unreachable but valid on file; it also points at node 4, which the root
    // reaches at depth 2. A depth taken from the last parent would say 2, and the lockstep
    // walk would stop on node 4 (an internal node) for rows that go 0 -> 2 -> 4 -> 6/7.
    let t = Tree {
        nodes: vec![
            Node::split(0, 1.0, 1),
            Node::leaf(0.1),
            Node::split(0, 2.0, 4),
            Node::split(0, 3.0, 4),
            Node::split(0, 4.0, 6),
            Node::leaf(0.2),
            Node::leaf(0.3),
            Node::leaf(0.4),
        ],
    };
    assert!(t.validate(1).is_ok());
    assert_eq!(t.depth(), 3);
    let e = Ensemble::new(vec![t]);
    let rows: Vec<f64> = (0..24).map(|i| (i % 6) as f64).collect();
    let mut out = Vec::new();
    e.mean_batch(&rows, 1, &mut out);
    let expected: Vec<f64> = rows.iter().map(|&x| e.mean(&[x])).collect();
    assert_eq!(out, expected);
}

#[test]
#[should_panic(expected = "index out of bounds")]
fn rows_narrower_than_a_tree_take_the_checked_walk() {
    // The tree reads feature 1; rows of width 1 must not be read past their end.
    let e = Ensemble::new(vec![stump(1, 1.0)]);
    let mut out = Vec::new();
    e.mean_batch(&[0.0; 24], 1, &mut out);
}

#[test]
fn isolation_normaliser_matches_the_paper() {
    assert!((c_factor(256.0) - 10.244).abs() < 0.01);
    assert_eq!(c_factor(1.0), 0.0);
}

#[test]
fn path_attribution_of_a_hand_built_forest_is_exact() {
    // Tree A: x0 < 5 -> 0.2; else x1 < 2 -> 0.4, else 1.0. Node expectations: the split on
    // x1 is (0.4 + 1.0) / 2 = 0.7, the root (0.2 + 0.7) / 2 = 0.45.
    let a = Tree {
        nodes: vec![
            Node::split(0, 5.0, 1),
            Node::leaf(0.2),
            Node::split(1, 2.0, 3),
            Node::leaf(0.4),
            Node::leaf(1.0),
        ],
    };
    // Tree B: x1 < 1 -> 0.0, else 0.6; root 0.3.
    let b = Tree {
        nodes: vec![Node::split(1, 1.0, 1), Node::leaf(0.0), Node::leaf(0.6)],
    };
    let forest = Ensemble::new(vec![a, b]);
    let x = [6.0, 3.0, 100.0];
    let mut c = [9.0; 3];
    let bias = forest.contributions(&x, &mut c);
    // A: x0 moved 0.45 -> 0.7, x1 0.7 -> 1.0; B: x1 moved 0.3 -> 0.6. Averaged over two.
    assert!((bias - 0.375).abs() < 1e-12, "{bias}");
    assert!((c[0] - 0.125).abs() < 1e-12, "{c:?}");
    assert!((c[1] - 0.3).abs() < 1e-12, "{c:?}");
    assert_eq!(c[2], 0.0, "a feature no split reads contributes nothing");
    assert!((bias + c.iter().sum::<f64>() - forest.mean(&x)).abs() < 1e-12);
    // Left of every split: the contributions are negative and still add up.
    let x = [0.0, 0.0, 0.0];
    let bias = forest.contributions(&x, &mut c);
    assert!((bias + c.iter().sum::<f64>() - forest.mean(&x)).abs() < 1e-12);
    assert!(c[0] < 0.0 && c[1] < 0.0, "{c:?}");
}

#[test]
fn path_attribution_adds_up_on_the_committed_model() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let m = Model::load(&p).expect("committed model");
    let w = m.input_width();
    let mut c = vec![0.0; w];
    for seed in 0..50u64 {
        // Inputs spread over the ranges the features take (rates, counts, bytes).
        let x: Vec<f64> = (0..w as u64)
            .map(|j| {
                let h = (seed * 31 + j * 17 + 7).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                (h % 1000) as f64 / [1000.0, 2.0, 0.01][(j % 3) as usize]
            })
            .collect();
        for forest in [
            &m.data.supervised,
            &m.data.normal_profile.as_ref().unwrap().forest,
        ] {
            let bias = forest.contributions(&x, &mut c);
            let mean = forest.mean(&x);
            let sum = bias + c.iter().sum::<f64>();
            assert!(
                (sum - mean).abs() < 1e-9 * mean.abs().max(1.0),
                "{sum} vs {mean}"
            );
        }
    }
}

#[test]
fn an_explanation_over_rows_averages_their_contributions_and_values() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let m = Model::load(&p).expect("committed model");
    // Two connections that differ in their host window (as two contexts of a cold window do).
    let mut a = [0.0; NUM_FEATURES];
    a[1] = 0.0; // tcp
    a[3] = 1.0;
    a[22] = 40.0;
    a[23] = 40.0;
    a[24] = 1.0;
    a[25] = 1.0;
    a[31] = 255.0;
    a[32] = 10.0;
    let mut b = a;
    b[31] = 3.0;
    b[32] = 255.0;
    b[33] = 1.0;
    let rows = [KddFeatures(a), KddFeatures(b)];
    let v = m
        .mean_verdict(&[m.score(&rows[0]), m.score(&rows[1])], 0.0)
        .unwrap();
    // By hand: each row's supervised contributions, averaged; the top three positive ones.
    let w = m.input_width();
    let (mut ca, mut cb) = (vec![0.0; w], vec![0.0; w]);
    let (mut xa, mut xb) = ([0.0; NUM_FEATURES], [0.0; NUM_FEATURES]);
    m.inputs(&rows[0], &mut xa);
    m.inputs(&rows[1], &mut xb);
    m.data.supervised.contributions(&xa[..w], &mut ca);
    m.data.supervised.contributions(&xb[..w], &mut cb);
    let mean: Vec<f64> = ca.iter().zip(&cb).map(|(p, q)| (p + q) / 2.0).collect();
    let mut order: Vec<usize> = (0..w).filter(|&j| mean[j] > 0.0).collect();
    order.sort_by(|&i, &j| mean[j].total_cmp(&mean[i]));
    let want: Vec<(&str, f64, f64)> = order
        .iter()
        .take(super::explain::TOP_FEATURES)
        .map(|&j| {
            (
                crate::kdd::FEATURE_NAMES[m.indices[j]],
                (xa[j] + xb[j]) / 2.0,
                mean[j],
            )
        })
        .collect();
    let mut force = v;
    force.detector = Detector::Supervised;
    let got: Vec<(&str, f64, f64)> = m
        .explain_over(&rows, &force)
        .into_iter()
        .map(|c| (c.name, c.value, c.contribution))
        .collect();
    assert!(!got.is_empty());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0);
        assert!(
            (g.1 - w.1).abs() < 1e-12 && (g.2 - w.2).abs() < 1e-12,
            "{g:?} vs {w:?}"
        );
    }
    // One row: the plain explanation.
    assert_eq!(
        m.explain_over(&rows[..1], &force),
        m.explain(&rows[0], &force)
    );
}

#[test]
fn cold_thresholds_judge_cold_verdicts_and_move_with_overrides() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let mut m = Model::load(&p).expect("committed model");
    let warm = Thresholds {
        supervised: 0.2,
        unsupervised: 0.6,
        target_fpr: 0.02,
    };
    m.data.thresholds = warm;
    m.data.cold_thresholds = None;
    // Without cold thresholds every share is judged at the model's own.
    assert_eq!(m.thresholds_at(1.0), warm);
    m.data.cold_thresholds = Some(Thresholds {
        supervised: 0.3,
        unsupervised: 0.66,
        target_fpr: 0.02,
    });
    let at = |k: f64| m.thresholds_at(k);
    assert_eq!(at(0.0), warm);
    assert!((at(1.0).supervised - 0.3).abs() < 1e-12);
    assert!((at(0.25).supervised - 0.225).abs() < 1e-12);
    assert!((at(0.25).unsupervised - 0.615).abs() < 1e-12);
    assert_eq!(at(7.0), at(1.0), "the share is clamped");
    // A mean supervised score of 0.25 is anomalous in a full window, normal in an unseen one.
    let v = |s: f64| Verdict {
        anomalous: false,
        score: 0.0,
        detector: Detector::None,
        supervised_score: s,
        unsupervised_score: Some(0.1),
        supervised_score_plain: s as f32,
        withdrawn_by_attack_boxes: false,
    };
    assert!(m.mean_verdict(&[v(0.2), v(0.3)], 0.0).unwrap().anomalous);
    let cold = m.mean_verdict(&[v(0.2), v(0.3)], 1.0).unwrap();
    assert!(!cold.anomalous);
    assert!((cold.score - 0.25 / 0.3).abs() < 1e-12, "{}", cold.score);
    // An override moves the cold thresholds by the same factor.
    m.set_thresholds(Thresholds {
        supervised: 0.4,
        ..warm
    });
    let c = m.cold_thresholds().unwrap();
    assert!((c.supervised - 0.6).abs() < 1e-12, "{c:?}");
    assert!((c.unsupervised - 0.66).abs() < 1e-12, "{c:?}");
    // A new normal profile has no cold calibration: its own threshold judges both.
    let profile = m.data.normal_profile.clone().unwrap();
    let m = m.with_normal_profile(profile, 0.55).unwrap();
    assert_eq!(m.cold_thresholds().unwrap().unsupervised, 0.55);
}

#[test]
fn a_leaf_supports_only_what_its_training_attacks_span() {
    // One stump: inputs below 5 go to a "normal" leaf, the rest to an "attack" leaf.
    let forest = Ensemble::new(vec![stump(0, 5.0)]);
    let scales = [Scale::Linear, Scale::Log, Scale::Unboxed];
    // Attack rows reaching the attack leaf span [6, 8] and [10, 100] bytes; the normal row in
    // the attack leaf and the attack row in the normal leaf box nothing.
    let x = [
        6.0, 10.0, 3.0, 8.0, 100.0, 7.0, 7.0, 1e6, 0.0, 2.0, 50.0, 0.0,
    ];
    let attack = [true, true, false, true];
    let a = AttackSupport::fit(&forest, &scales, &x, &attack);
    assert_eq!(a.trees[0].box_of, vec![u32::MAX, u32::MAX, 0]);
    let s = |row: [f64; 3]| a.supported_mean(&forest, &row);
    assert_eq!(s([7.0, 50.0, 99.0]), 1.0, "inside; a category is not boxed");
    assert_eq!(s([8.05, 100.0, 0.0]), 1.0, "within the tolerance");
    assert_eq!(s([8.2, 50.0, 0.0]), 0.0, "a rate-like input beyond it");
    assert_eq!(
        s([7.0, 5_000.0, 0.0]),
        0.0,
        "bytes far beyond (on the log scale), where only a normal row went"
    );
    assert_eq!(s([7.0, 9.0, 0.0]), 1.0, "ln(10) - ln(11) is within 0.1");
    assert_eq!(s([1.0, 50.0, 0.0]), 0.0, "a normal leaf never votes");
    assert!(a.validate(&forest, 3).is_ok());
    assert!(
        a.validate(&forest, 2).is_err(),
        "scales must cover every input"
    );
    let mut bad = a.clone();
    bad.trees[0].box_of[0] = 0;
    assert!(bad.validate(&forest, 3).is_err(), "a box on a split node");
    let mut bad = a;
    bad.trees[0].box_of[2] = 1;
    assert!(
        bad.validate(&forest, 3).is_err(),
        "a box index out of range"
    );

    // Rates on the data's two decimals: exactly 0.1 beyond a bound is within, whatever the
    // bound's f32 rounding.
    let forest = Ensemble::new(vec![stump(0, 0.05)]);
    let a = AttackSupport::fit(&forest, &[Scale::Linear], &[0.3, 0.13], &[true, true]);
    let s = |v: f64| a.supported_mean(&forest, &[v]);
    assert_eq!((s(0.03), s(0.23), s(0.24)), (0.0, 1.0, 1.0));
    assert_eq!((s(0.40), s(0.41)), (1.0, 0.0));
    let a = AttackSupport::fit(&forest, &[Scale::Linear], &[0.3], &[true]);
    let s = |v: f64| a.supported_mean(&forest, &[v]);
    assert_eq!((s(0.19), s(0.20), s(0.40), s(0.41)), (0.0, 1.0, 1.0, 0.0));
}

/// A normal profile whose score is `u` for every row.
fn constant_profile(u: f64) -> NormalProfile {
    let sample_size = 256;
    let path = -u.log2() * c_factor(sample_size as f64);
    NormalProfile {
        forest: Ensemble::new(vec![Tree {
            nodes: vec![Node::leaf(path)],
        }]),
        sample_size,
        source: "test".into(),
    }
}

/// A KDD row as the committed model sees it.
fn kdd_row(row: &str) -> KddFeatures {
    crate::dataset::parse_row(Path::new("<test>"), 1, row, false)
        .expect("a valid NSL-KDD row")
        .features
}

#[test]
fn the_forest_alone_outside_its_attacks_does_not_flag_what_the_profile_finds_ordinary() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let m = Model::load(&p).expect("committed model");
    assert!(
        m.data.attack_support.is_some(),
        "the committed model has its boxes"
    );
    let mut plain = m.clone();
    plain.data.attack_support = None;
    // A 6-byte request and a 9-byte response on an unnamed TCP port (a Redis PING) of a host
    // that serves several services: the data has no normal TCP `other` row with a response,
    // and the forest's nearest attack rows are `satan` probes, which never answered so.
    let ping = kdd_row(
        "0,tcp,other,SF,6,9,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,16,7,0,0,0,0,0.44,0.13,0,73,25,\
         0.34,0.04,0.01,0,0,0,0,0,normal,0",
    );
    let before = plain.score(&ping);
    assert!(
        before.anomalous && before.detector == Detector::Supervised,
        "{before:?}"
    );
    assert!(before.unsupervised_score.unwrap() < PROFILE_ORDINARY_BELOW);
    let after = m.score(&ping);
    assert!(!after.anomalous, "{after:?}");
    assert!(after.supervised_score < before.supervised_score);
    // The verdict says what the rule withdrew, and from which score.
    assert!(after.withdrawn_by_attack_boxes, "{after:?}");
    assert_eq!(after.supervised_score_plain, before.supervised_score as f32);
    assert!(!before.withdrawn_by_attack_boxes);
    assert_eq!(
        before.supervised_score_plain,
        before.supervised_score as f32
    );
    // The rule is the profile's to call: the same row, to a profile that finds it unusual
    // (0.55, not enough to flag it itself), keeps every vote; to one that finds it ordinary
    // (0.45), only the supported ones.
    let with_profile = |u: f64| {
        m.clone()
            .with_normal_profile(constant_profile(u), 0.9)
            .unwrap()
            .score(&ping)
    };
    let unusual = with_profile(0.55);
    assert!((unusual.unsupervised_score.unwrap() - 0.55).abs() < 1e-9);
    assert_eq!(unusual.supervised_score, before.supervised_score);
    assert_eq!(unusual.detector, Detector::Supervised);
    assert!(!unusual.withdrawn_by_attack_boxes);
    let ordinary = with_profile(0.45);
    assert_eq!(ordinary.supervised_score, after.supervised_score);
    assert!(!ordinary.anomalous);
    // A SYN flood row of the training data keeps its verdict: its votes are supported.
    let neptune = kdd_row(
        "0,tcp,private,S0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,123,6,1.00,1.00,0.00,0.00,0.05,\
         0.07,0.00,255,26,0.10,0.05,0.00,0.00,1.00,1.00,0.00,0.00,neptune,19",
    );
    assert!(m.score(&neptune).anomalous);
    assert!(!m.score(&neptune).withdrawn_by_attack_boxes);
    assert_eq!(
        m.score(&neptune).supervised_score,
        plain.score(&neptune).supervised_score
    );
}

#[test]
fn batch_verdicts_apply_the_support_as_row_verdicts_do() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let m = Model::load(&p).expect("committed model");
    // Variations of the small exchange on an unnamed port above and of a SYN flood row: sizes,
    // counts and rates moved, so that some stay vetoed, some not, and some the profile flags.
    let ping = kdd_row(
        "0,tcp,other,SF,6,9,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,16,7,0,0,0,0,0.44,0.13,0,73,25,\
         0.34,0.04,0.01,0,0,0,0,0,normal,0",
    );
    let neptune = kdd_row(
        "0,tcp,private,S0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,123,6,1.00,1.00,0.00,0.00,0.05,\
         0.07,0.00,255,26,0.10,0.05,0.00,0.00,1.00,1.00,0.00,0.00,neptune,19",
    );
    let mut rows = Vec::new();
    for i in 0..150u32 {
        for base in [&ping, &neptune] {
            let mut f = *base;
            f.0[4] = f64::from(i % 10) * 3.0; // src_bytes
            f.0[5] = f64::from(i % 7) * 20.0; // dst_bytes
            f.0[22] = f64::from(1 + i % 40); // count
            f.0[28] = f64::from(i % 5) / 4.0; // same_srv_rate
            rows.push(f);
        }
    }
    let batch = m.score_batch(&rows);
    let (mut vetoed, mut withdrawn) = (0, 0);
    for (i, (v, f)) in batch.iter().zip(&rows).enumerate() {
        assert_eq!(*v, m.score(f), "row {i}");
        let mut x = [0.0; NUM_FEATURES];
        let n = m.inputs(f, &mut x);
        let plain = m.data.supervised.mean(&x[..n]);
        vetoed += usize::from(v.supervised_score < plain);
        assert_eq!(v.supervised_score_plain, plain as f32, "row {i}");
        let flagged_alone = plain >= m.data.thresholds.supervised;
        assert_eq!(
            v.withdrawn_by_attack_boxes,
            flagged_alone && !v.anomalous,
            "row {i}: {v:?}"
        );
        withdrawn += usize::from(v.withdrawn_by_attack_boxes);
    }
    assert!(
        vetoed > 0 && vetoed < rows.len(),
        "{vetoed} of {} vetoed",
        rows.len()
    );
    assert!(withdrawn > 0, "some verdicts withdrawn");
}

#[test]
fn an_explanation_of_a_supported_score_attributes_the_votes_that_judged() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let m = Model::load(&p).expect("committed model");
    let a = m.data.attack_support.as_ref().unwrap();
    let forest = &m.data.supervised;
    // A small exchange on an unnamed port whose supported score still flags it.
    let f = kdd_row(
        "0,tcp,other,SF,27,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,10,7,0,0,0,0,1,0.13,0,73,25,\
         0.34,0.04,0.01,0,0,0,0,0,normal,0",
    );
    let v = m.score(&f);
    let mut x = [0.0; NUM_FEATURES];
    let n = m.inputs(&f, &mut x);
    let x = &x[..n];
    let plain = forest.mean(x);
    assert!(v.anomalous && v.supervised_score < plain, "{v:?} {plain}");
    let mut kept = vec![false; forest.trees.len()];
    a.for_each_supported(forest, x, |t, _| kept[t] = true);
    let mut c = vec![0.0; n];
    let bias = forest.contributions_of(x, &mut c, |t| kept[t]);
    let sum = bias + c.iter().sum::<f64>();
    assert!(
        (sum - v.supervised_score).abs() < 1e-9,
        "{sum} vs {}",
        v.supervised_score
    );
    // The explanation is of those votes: its top contribution is theirs, not the whole forest's.
    let top = &m.explain(&f, &v)[0];
    let j = (0..n)
        .find(|&j| crate::kdd::FEATURE_NAMES[m.indices[j]] == top.name)
        .unwrap();
    assert_eq!(top.contribution, c[j]);
}
