//! NSL-KDD ETL: text files (43 fields) and ARFF files (42 fields, class normal/anomaly) into
//! typed samples, plus the stratified, seeded train/validation/holdout split.
//!
//! A malformed row is an error naming the file, line, field and reason; with
//! [`LoadOptions::skip_malformed`] it is skipped and counted instead, never dropped silently.

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use crate::kdd::{
    FEATURE_NAMES, FLAG, FLAGS, KddFeatures, NUM_FEATURES, PROTOCOL_TYPE, PROTOCOLS, SERVICE,
    SERVICES, vocab_index,
};

/// Attack categories by the usual mapping of NSL-KDD attack names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Category {
    Normal,
    DoS,
    Probe,
    R2L,
    U2R,
    /// ARFF rows only say "anomaly"; or a name outside the mapping.
    UnknownAttack,
}

impl Category {
    /// The category of an NSL-KDD label (training and test attack names).
    pub fn of(label: &str) -> Category {
        match label {
            "normal" => Category::Normal,
            "back" | "land" | "neptune" | "pod" | "smurf" | "teardrop" | "apache2" | "mailbomb"
            | "processtable" | "udpstorm" => Category::DoS,
            "ipsweep" | "nmap" | "portsweep" | "satan" | "mscan" | "saint" => Category::Probe,
            "ftp_write" | "guess_passwd" | "imap" | "multihop" | "phf" | "spy" | "warezclient"
            | "warezmaster" | "httptunnel" | "named" | "sendmail" | "snmpgetattack"
            | "snmpguess" | "worm" | "xlock" | "xsnoop" => Category::R2L,
            "buffer_overflow" | "loadmodule" | "perl" | "rootkit" | "ps" | "sqlattack"
            | "xterm" => Category::U2R,
            _ => Category::UnknownAttack,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Category::Normal => "normal",
            Category::DoS => "DoS",
            Category::Probe => "Probe",
            Category::R2L => "R2L",
            Category::U2R => "U2R",
            Category::UnknownAttack => "attack (unnamed)",
        };
        f.write_str(s)
    }
}

/// One labelled connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub features: KddFeatures,
    /// `normal`, an attack name, or `anomaly` (ARFF).
    pub label: String,
    /// NSL-KDD difficulty level (text files only).
    pub difficulty: Option<u8>,
}

impl Sample {
    pub fn is_attack(&self) -> bool {
        self.label != "normal"
    }

    pub fn category(&self) -> Category {
        Category::of(&self.label)
    }
}

/// Errors reading a data file.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {file}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: field {field} ({name}): {reason}")]
    Field {
        file: PathBuf,
        line: usize,
        field: usize,
        name: &'static str,
        reason: String,
    },
    #[error("{file}:{line}: expected {expected} comma-separated fields, found {found}")]
    FieldCount {
        file: PathBuf,
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("{file}: no data rows")]
    Empty { file: PathBuf },
}

/// How to treat bad rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Skip (and count) malformed rows instead of failing on the first.
    pub skip_malformed: bool,
}

/// A loaded file.
#[derive(Debug)]
pub struct Loaded {
    pub samples: Vec<Sample>,
    /// Rows skipped as malformed (only with `skip_malformed`), with the first few errors.
    pub skipped: usize,
    pub first_errors: Vec<String>,
}

/// Loads an NSL-KDD text file or, by its `.arff` extension, an ARFF file.
pub fn load(path: &Path, opts: LoadOptions) -> Result<Loaded, DatasetError> {
    let io = |source| DatasetError::Io {
        file: path.to_path_buf(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let arff = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("arff"));
    let mut in_data = !arff;
    let mut out = Loaded {
        samples: Vec::new(),
        skipped: 0,
        first_errors: Vec::new(),
    };
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        let lineno = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        if !in_data {
            if t.eq_ignore_ascii_case("@data") {
                in_data = true;
            }
            continue;
        }
        match parse_row(path, lineno, t, arff) {
            Ok(s) => out.samples.push(s),
            Err(e) if opts.skip_malformed => {
                out.skipped += 1;
                if out.first_errors.len() < 5 {
                    out.first_errors.push(e.to_string());
                }
            }
            Err(e) => return Err(e),
        }
    }
    if out.samples.is_empty() {
        return Err(DatasetError::Empty {
            file: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Parses one data row: 43 fields (text) or 42 (ARFF).
pub fn parse_row(file: &Path, line: usize, row: &str, arff: bool) -> Result<Sample, DatasetError> {
    let fields: Vec<&str> = row.split(',').map(str::trim).collect();
    let expected = if arff {
        NUM_FEATURES + 1
    } else {
        NUM_FEATURES + 2
    };
    // Some distributions of the text files have no difficulty column: accept 42 as well.
    let without_difficulty = !arff && fields.len() == NUM_FEATURES + 1;
    if fields.len() != expected && !without_difficulty {
        return Err(DatasetError::FieldCount {
            file: file.into(),
            line,
            expected,
            found: fields.len(),
        });
    }
    let err = |field: usize, reason: String| DatasetError::Field {
        file: file.into(),
        line,
        field: field + 1,
        name: FEATURE_NAMES
            .get(field)
            .copied()
            .unwrap_or(if field == NUM_FEATURES {
                "label"
            } else {
                "difficulty"
            }),
        reason,
    };
    let mut values = [0f64; NUM_FEATURES];
    for (i, v) in values.iter_mut().enumerate() {
        let raw = fields[i].trim_matches('\'');
        *v = match i {
            PROTOCOL_TYPE => vocab_index(&PROTOCOLS, raw)
                .ok_or_else(|| err(i, format!("unknown protocol_type {raw:?}")))?
                as f64,
            SERVICE => vocab_index(&SERVICES, raw)
                .ok_or_else(|| err(i, format!("unknown service {raw:?}")))?
                as f64,
            FLAG => vocab_index(&FLAGS, raw)
                .ok_or_else(|| err(i, format!("unknown flag {raw:?}")))? as f64,
            _ => {
                let x: f64 = raw
                    .parse()
                    .map_err(|_| err(i, format!("not a number: {raw:?}")))?;
                if !x.is_finite() || x < 0.0 {
                    return Err(err(i, format!("out of range: {raw:?}")));
                }
                x
            }
        };
    }
    let label = fields[NUM_FEATURES].trim_matches('\'').to_string();
    if label.is_empty() {
        return Err(err(NUM_FEATURES, "empty label".into()));
    }
    let difficulty = match fields.get(NUM_FEATURES + 1) {
        Some(d) if !arff => Some(
            d.parse::<u8>()
                .map_err(|_| err(NUM_FEATURES + 1, format!("not a difficulty level: {d:?}")))?,
        ),
        _ => None,
    };
    Ok(Sample {
        features: KddFeatures(values),
        label,
        difficulty,
    })
}

/// Counts for the `dataset summary` command.
#[derive(Debug, Default)]
pub struct Summary {
    pub rows: usize,
    pub normal: usize,
    pub attack: usize,
    pub by_category: BTreeMap<Category, usize>,
    pub by_label: BTreeMap<String, usize>,
}

impl Summary {
    pub fn of(samples: &[Sample]) -> Summary {
        let mut s = Summary {
            rows: samples.len(),
            ..Summary::default()
        };
        for x in samples {
            if x.is_attack() {
                s.attack += 1;
            } else {
                s.normal += 1;
            }
            *s.by_category.entry(x.category()).or_default() += 1;
            *s.by_label.entry(x.label.clone()).or_default() += 1;
        }
        s
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |n: usize| 100.0 * n as f64 / self.rows.max(1) as f64;
        writeln!(f, "rows      {:>8}", self.rows)?;
        writeln!(f, "normal    {:>8}  {:5.1}%", self.normal, pct(self.normal))?;
        writeln!(f, "attack    {:>8}  {:5.1}%", self.attack, pct(self.attack))?;
        writeln!(f, "by category:")?;
        for (c, n) in &self.by_category {
            writeln!(f, "  {:<18} {:>8}  {:5.1}%", c.to_string(), n, pct(*n))?;
        }
        writeln!(f, "by label:")?;
        for (l, n) in &self.by_label {
            writeln!(f, "  {l:<18} {n:>8}")?;
        }
        Ok(())
    }
}

/// Indices of a 70/15/15 split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub holdout: Vec<usize>,
}

/// A small deterministic generator (SplitMix64), so splits and models depend on the seed only.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// A stratified (by label: normal and each attack name), seeded 70/15/15 split.
///
/// Each label's rows are shuffled and cut 70/15/15, so every split keeps the class and attack
/// proportions (labels with fewer than 3 rows go to training first).
pub fn stratified_split(samples: &[Sample], seed: u64) -> Split {
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        by_label.entry(s.label.as_str()).or_default().push(i);
    }
    let mut rng = SplitMix64(seed);
    let mut split = Split {
        train: Vec::new(),
        validation: Vec::new(),
        holdout: Vec::new(),
    };
    for (_, mut idx) in by_label {
        rng.shuffle(&mut idx);
        let n = idx.len();
        let n_val = (n as f64 * 0.15).round() as usize;
        let n_hold = (n as f64 * 0.15).round() as usize;
        let n_train = n - n_val - n_hold;
        split.train.extend_from_slice(&idx[..n_train]);
        split
            .validation
            .extend_from_slice(&idx[n_train..n_train + n_val]);
        split.holdout.extend_from_slice(&idx[n_train + n_val..]);
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    split.holdout.sort_unstable();
    split
}

/// The default data directory: `NSL_KDD_DIR`, else `../shared/data/nsl-kdd` beside the repository.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("NSL_KDD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/nsl-kdd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str) -> String {
        let mut f: Vec<String> = vec!["0".into(), "tcp".into(), "http".into(), "SF".into()];
        f.extend((4..41).map(|i| format!("{}", i % 3)));
        f.push(label.into());
        f.push("20".into());
        f.join(",")
    }

    #[test]
    fn a_good_row_parses_into_vocabulary_indices() {
        let s = parse_row(Path::new("x.txt"), 1, &row("neptune"), false).unwrap();
        assert_eq!(s.features.0[1], 0.0);
        assert_eq!(
            s.features.0[2],
            vocab_index(&SERVICES, "http").unwrap() as f64
        );
        assert_eq!(s.features.0[3], vocab_index(&FLAGS, "SF").unwrap() as f64);
        assert_eq!(s.label, "neptune");
        assert_eq!(s.difficulty, Some(20));
        assert_eq!(s.category(), Category::DoS);
    }

    #[test]
    fn bad_rows_name_file_line_field_and_reason() {
        let bad_service = row("normal").replace("http", "gopherx");
        let e = parse_row(Path::new("d.txt"), 7, &bad_service, false)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "d.txt:7: field 3 (service): unknown service \"gopherx\"");
        let e = parse_row(Path::new("d.txt"), 8, "1,2,3", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.txt:8: expected 43"), "{e}");
        let nan = row("normal").replacen(",0,", ",zz,", 1);
        let e = parse_row(Path::new("d.txt"), 9, &nan, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("d.txt:9: field") && e.contains("not a number"),
            "{e}"
        );
    }

    #[test]
    fn split_is_stratified_disjoint_complete_and_deterministic() {
        let mut samples = Vec::new();
        for (label, n) in [
            ("normal", 1000),
            ("neptune", 600),
            ("satan", 100),
            ("phf", 2),
        ] {
            for _ in 0..n {
                samples.push(parse_row(Path::new("x"), 1, &row(label), false).unwrap());
            }
        }
        let s = stratified_split(&samples, 7);
        assert_eq!(s, stratified_split(&samples, 7), "same seed, same split");
        assert_ne!(
            s,
            stratified_split(&samples, 8),
            "another seed, another split"
        );
        let mut all: Vec<usize> = s
            .train
            .iter()
            .chain(&s.validation)
            .chain(&s.holdout)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..samples.len()).collect::<Vec<_>>(),
            "disjoint and complete"
        );
        let count = |idx: &[usize], l: &str| idx.iter().filter(|&&i| samples[i].label == l).count();
        assert_eq!(
            (
                count(&s.train, "normal"),
                count(&s.validation, "normal"),
                count(&s.holdout, "normal")
            ),
            (700, 150, 150)
        );
        assert_eq!(
            (
                count(&s.train, "neptune"),
                count(&s.validation, "neptune"),
                count(&s.holdout, "neptune")
            ),
            (420, 90, 90)
        );
        assert_eq!(
            (count(&s.train, "satan"), count(&s.validation, "satan")),
            (70, 15)
        );
    }
}
