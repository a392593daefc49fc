//! The `sensor train` and `sensor evaluate` commands: NSL-KDD files in, a model, its card and
//! reports out. Reports go to a writer (stdout from `main`); when its reader has gone
//! (`sensor evaluate ... | head`), the rest of the report is dropped and the command ends
//! normally.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::{
    card::{CardInputs, model_card},
    config::TrainConfig,
    evaluate::{Evaluation, evaluate as evaluate_model, training_labels},
    pipeline::{Trained, train as train_model},
    plot::card_figures,
};
use crate::{
    dataset::{self, LoadOptions, Sample},
    kdd::FeatureSet,
    model::{ClassificationMetrics, Model, hex},
};

/// The NSL-KDD training file, in the data directory.
pub const TRAIN_FILE: &str = "KDDTrain+.txt";
/// A fifth of it, for quick runs.
pub const TRAIN_FILE_20_PERCENT: &str = "KDDTrain+_20Percent.txt";
/// The NSL-KDD test file, in the data directory: reported in the model card only.
pub const TEST_FILE: &str = "KDDTest+.txt";

/// What `sensor train` does.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The NSL-KDD directory (training and test files).
    pub data_dir: PathBuf,
    pub seed: u64,
    /// False-positive rate the thresholds are chosen for, on validation data.
    pub target_fpr: f64,
    pub feature_set: FeatureSet,
    /// The model file; the model card (MODEL_CARD.md) and its figures go beside it.
    pub out: PathBuf,
    /// [`TrainConfig::quick`] instead of [`TrainConfig::standard`].
    pub quick: bool,
    /// Also train the same pipeline on all 41 features and report it on KDDTest+.
    pub compare: bool,
    /// Train on [`TRAIN_FILE_20_PERCENT`].
    pub twenty_percent: bool,
    /// The command line, recorded in the model and its card.
    pub command: String,
}

impl TrainOptions {
    fn train_file(&self) -> PathBuf {
        self.data_dir.join(if self.twenty_percent {
            TRAIN_FILE_20_PERCENT
        } else {
            TRAIN_FILE
        })
    }

    fn config(&self, set: FeatureSet) -> TrainConfig {
        let mut cfg = if self.quick {
            TrainConfig::quick(set)
        } else {
            TrainConfig::standard(set)
        };
        cfg.seed = self.seed;
        cfg.target_fpr = self.target_fpr;
        cfg
    }
}

/// What `sensor evaluate` does.
#[derive(Clone, Debug)]
pub struct EvaluateOptions {
    pub model: PathBuf,
    /// A labelled NSL-KDD text or ARFF file.
    pub data: PathBuf,
    /// The training file whose attack names count as seen in training; `None`: [`TRAIN_FILE`]
    /// in [`dataset::default_data_dir`].
    pub train_data: Option<PathBuf>,
    /// JSON instead of a table.
    pub json: bool,
}

/// The command line as the model and its card record it: the program name without the build
/// directory.
pub fn command_line() -> String {
    std::iter::once("sensor".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> io::Result<String> {
    Ok(hex(&Sha256::digest(std::fs::read(path)?)))
}

/// `sensor train`: trains, writes the model, evaluates it on KDDTest+ and writes the model card
/// and its figures beside the model. Progress goes to `report`.
pub fn train(o: &TrainOptions, report: impl Write) -> anyhow::Result<()> {
    let mut out = Report::new(report);
    let started = Instant::now();
    let train_file = o.train_file();
    let samples = dataset::load(&train_file, LoadOptions::default())
        .with_context(|| {
            format!(
                "loading {} (get NSL-KDD from the UNB site; see README)",
                train_file.display()
            )
        })?
        .samples;
    let sha =
        file_sha256(&train_file).with_context(|| format!("hashing {}", train_file.display()))?;
    let trained = train_model(
        &samples,
        &train_file,
        &sha,
        &o.config(o.feature_set),
        &o.command,
    )?;
    print_training(&mut out, &trained)?;
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    trained.model.save(&o.out)?;
    writeln!(out, "model written to {}", o.out.display())?;

    let test = TestResults::of(o, &trained, &samples, &train_file, &sha)?;
    test.print(&mut out, o.feature_set)?;
    let card = write_card(o, &trained, &train_file, &sha, &test, started)?;
    writeln!(out, "model card: {}", card.display())?;
    Ok(out.flush()?)
}

/// `sensor evaluate`: a model's metrics on a labelled file, as a table or JSON on `report`.
pub fn evaluate(o: &EvaluateOptions, report: impl Write) -> anyhow::Result<()> {
    let model = Model::load(&o.model)?;
    let train_labels = seen_in_training(o.train_data.as_deref())?;
    let data = dataset::load(&o.data, LoadOptions::default())?;
    let e = evaluate_model(
        &model,
        &data.samples,
        &o.data.display().to_string(),
        &train_labels,
    );
    let mut out = Report::new(report);
    if o.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&e)?)?;
    } else {
        print_evaluation(&mut out, &e)?;
    }
    Ok(out.flush()?)
}

/// The labels of the training file (`train_data`, else [`TRAIN_FILE`] in the data directory):
/// the attack names an evaluation counts as seen in training.
fn seen_in_training(train_data: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let file = train_data.map_or_else(
        || dataset::default_data_dir().join(TRAIN_FILE),
        Path::to_path_buf,
    );
    if !file.exists() {
        anyhow::bail!(
            "{}: no such training file; it tells the attack types seen in training from new ones \
             (give it with --train-data FILE, or the NSL-KDD directory in NSL_KDD_DIR)",
            file.display()
        );
    }
    let loaded = dataset::load(&file, LoadOptions::default())?;
    Ok(training_labels(&loaded.samples))
}

/// KDDTest+ for the card: reported, never used for any choice in training.
struct TestResults {
    sha256: Option<String>,
    /// The trained model.
    deployed: Option<Evaluation>,
    /// The same pipeline on all 41 features, for comparison.
    all_features: Option<Evaluation>,
}

impl TestResults {
    fn of(
        o: &TrainOptions,
        trained: &Trained,
        samples: &[Sample],
        train_file: &Path,
        sha: &str,
    ) -> anyhow::Result<TestResults> {
        let test_file = o.data_dir.join(TEST_FILE);
        let test = match dataset::load(&test_file, LoadOptions::default()) {
            Ok(t) => t.samples,
            Err(e) => {
                eprintln!("warning: no KDDTest+ evaluation in the model card: {e}");
                return Ok(TestResults {
                    sha256: None,
                    deployed: None,
                    all_features: None,
                });
            }
        };
        let deployed = evaluate_model(&trained.model, &test, "KDDTest+", &trained.train_labels);
        let all_features = if o.compare && o.feature_set != FeatureSet::All {
            let mut cfg = o.config(FeatureSet::All);
            cfg.quiet = true;
            eprintln!("training the same pipeline on all 41 features for comparison...");
            let t = train_model(samples, train_file, sha, &cfg, &o.command)?;
            Some(evaluate_model(&t.model, &test, "KDDTest+", &t.train_labels))
        } else {
            None
        };
        Ok(TestResults {
            sha256: file_sha256(&test_file).ok(),
            deployed: Some(deployed),
            all_features,
        })
    }

    fn print(&self, out: &mut impl Write, set: FeatureSet) -> io::Result<()> {
        if let Some(e) = &self.deployed {
            print_test_line(out, &format!("{set:?} features"), &e.metrics)?;
        }
        if let Some(e) = &self.all_features {
            print_test_line(out, "all features", &e.metrics)?;
        }
        Ok(())
    }
}

/// The model card and its figures, beside the model; returns the card's path.
fn write_card(
    o: &TrainOptions,
    trained: &Trained,
    train_file: &Path,
    sha: &str,
    test: &TestResults,
    started: Instant,
) -> anyhow::Result<PathBuf> {
    let dir = o.out.parent().map(PathBuf::from).unwrap_or_default();
    let figures = card_figures(&trained.holdout, test.deployed.as_ref())?;
    for f in &figures {
        let path = dir.join(f.file);
        std::fs::write(&path, &f.svg).with_context(|| format!("writing {}", path.display()))?;
    }
    let model_file = o
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let card = model_card(&CardInputs {
        trained,
        train_file,
        train_sha256: sha,
        test: test.deployed.as_ref(),
        test_all: test.all_features.as_ref(),
        test_sha256: test.sha256.as_deref(),
        model_file: &model_file,
        command: &o.command,
        seconds: started.elapsed().as_secs_f64(),
        figures: &figures,
    });
    let path = dir.join("MODEL_CARD.md");
    std::fs::write(&path, card).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The search table, the operating points and the candidates on the holdout.
fn print_training(out: &mut impl Write, trained: &Trained) -> io::Result<()> {
    writeln!(
        out,
        "hyperparameter search (leave-types-out recall on validation):"
    )?;
    for r in &trained.search {
        writeln!(
            out,
            "  {:<8} {:<40} mean over types {:6.2}%  all rows {:6.2}%",
            r.candidate,
            r.params,
            100.0 * r.novel_macro_recall,
            100.0 * r.novel_micro_recall,
        )?;
    }
    writeln!(
        out,
        "operating point (validation FPR -> leave-types-out recall, mean over types):"
    )?;
    for (fpr, nr) in &trained.operating {
        let mark = if *fpr == trained.operating_fpr {
            "  <- chosen"
        } else {
            ""
        };
        writeln!(
            out,
            "  {:5.2}%  {:6.2}%{mark}",
            100.0 * fpr,
            100.0 * nr.macro_recall
        )?;
    }
    writeln!(out, "candidates (holdout):")?;
    for (name, e) in &trained.candidates {
        let m = &e.metrics;
        writeln!(
            out,
            "  {:<45} acc {:6.2}%  fpr {:5.2}%  recall {:6.2}%  auc {:.4}",
            name,
            100.0 * m.accuracy,
            100.0 * m.false_positive_rate,
            100.0 * m.recall,
            m.roc_auc
        )?;
    }
    Ok(())
}

fn print_test_line(out: &mut impl Write, what: &str, m: &ClassificationMetrics) -> io::Result<()> {
    writeln!(
        out,
        "KDDTest+ ({what}): accuracy {:.2}%  fpr {:.2}%  recall {:.2}%  auc {:.4}",
        100.0 * m.accuracy,
        100.0 * m.false_positive_rate,
        100.0 * m.recall,
        m.roc_auc
    )
}

fn print_evaluation(out: &mut impl Write, e: &Evaluation) -> io::Result<()> {
    let m = &e.metrics;
    writeln!(out, "data        {}", e.data)?;
    writeln!(out, "rows        {}", m.rows)?;
    writeln!(out, "accuracy    {:.2}%", 100.0 * m.accuracy)?;
    writeln!(out, "precision   {:.2}%", 100.0 * m.precision)?;
    writeln!(out, "recall      {:.2}%", 100.0 * m.recall)?;
    writeln!(out, "F1          {:.2}%", 100.0 * m.f1)?;
    writeln!(out, "FPR         {:.2}%", 100.0 * m.false_positive_rate)?;
    writeln!(out, "ROC-AUC     {:.4}", m.roc_auc)?;
    writeln!(
        out,
        "confusion   truth normal: [{} normal, {} attack]; truth attack: [{} normal, {} attack]",
        m.confusion[0][0], m.confusion[0][1], m.confusion[1][0], m.confusion[1][1]
    )?;
    writeln!(out, "recall by category:")?;
    for (k, (r, n)) in &e.recall_by_category {
        writeln!(out, "  {k:<18} {:6.2}%  ({n} rows)", 100.0 * r)?;
    }
    if let Some((r, n)) = e.novel_attack_recall {
        writeln!(
            out,
            "  {:<18} {:6.2}%  ({n} rows)",
            "novel types",
            100.0 * r
        )?;
    }
    Ok(())
}

/// A report's writer: once its reader has gone (a broken pipe), the rest of the report is
/// dropped and writes succeed, so the command finishes its work (a model is still saved) and
/// exits normally, as Unix tools do when `head` has read enough.
pub struct Report<W> {
    inner: W,
    closed: bool,
}

impl<W: Write> Report<W> {
    pub fn new(inner: W) -> Report<W> {
        Report {
            inner,
            closed: false,
        }
    }

    /// `r`, unless it is the broken pipe of a reader that has gone.
    fn unless_closed<T>(&mut self, r: io::Result<T>, closed: T) -> io::Result<T> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(closed)
            }
            r => r,
        }
    }
}

impl<W: Write> Write for Report<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let r = self.inner.write(buf);
        self.unless_closed(r, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.inner.flush();
        self.unless_closed(r, ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that has gone: every write is a broken pipe.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    /// A full disk: an error the user must hear about.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::StorageFull.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_report_to_a_closed_pipe_is_dropped_and_other_errors_are_kept() {
        let mut gone = Report::new(Gone);
        writeln!(gone, "first line").unwrap();
        writeln!(gone, "second line").unwrap();
        gone.flush().unwrap();
        let err = writeln!(Report::new(Full), "a line").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn evaluate_names_a_missing_training_file() {
        let missing = Path::new("/nonexistent/KDDTrain+.txt");
        let err = seen_in_training(Some(missing)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/KDDTrain+.txt"), "{err}");
        assert!(err.contains("--train-data"), "{err}");
    }
}
