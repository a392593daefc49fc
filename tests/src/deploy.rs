//! The deployment files in `deploy/` as the tools that read them see them: the systemd unit's
//! settings and system-call filter (`systemd-analyze`), the Prometheus files (`promtool`), and
//! the metric names they use.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

/// A file of `deploy/`.
pub fn deploy_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

/// Runs `promtool ARGS`, panicking with its output if it fails; returns stdout and stderr.
pub fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (installed by `cargo xtask bootstrap`)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

/// The metric names the sensor registers: every `"sensor_..."` string literal of the export
/// module and its submodules (each metric is registered once, by its literal name).
pub fn registered_metric_names() -> BTreeSet<String> {
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    sources(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sensor/src/export"),
        &mut files,
    );
    let mut names = BTreeSet::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for lit in text.split('"').skip(1).step_by(2) {
            if lit.starts_with("sensor_")
                && lit
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                names.insert(lit.to_string());
            }
        }
    }
    names
}

/// The metric names a PromQL expression (or any text) refers to that start with `sensor_`,
/// with a histogram's `_bucket`, `_sum` and `_count` series mapped to the histogram's name.
pub fn sensor_metric_names(text: &str, registered: &BTreeSet<String>) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sensor_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    w.strip_suffix(s)
                        .filter(|base| registered.contains(*base) && !registered.contains(w))
                })
                .unwrap_or(w)
                .to_string()
        })
        .collect()
}

/// A systemd unit file: its `Key=Value` assignments in file order.
pub struct Unit {
    pub path: PathBuf,
    assignments: Vec<(String, String)>,
}

impl Unit {
    pub fn load(path: &Path) -> Unit {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let assignments = text
            .lines()
            .map(str::trim)
            .filter(|l| !(l.is_empty() || l.starts_with('#') || l.starts_with(';')))
            .filter(|l| !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Unit {
            path: path.to_path_buf(),
            assignments,
        }
    }

    /// The shipped unit, `deploy/sensor.service`.
    pub fn shipped() -> Unit {
        Unit::load(&deploy_path("sensor.service"))
    }

    /// Every value assigned to `key`, in file order.
    pub fn values(&self, key: &str) -> Vec<&str> {
        self.assignments
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of `key`; panics unless it is assigned exactly once.
    pub fn value(&self, key: &str) -> &str {
        match self.values(key)[..] {
            [v] => v,
            ref vs => panic!("{}: {key} assigned {} times", self.path.display(), vs.len()),
        }
    }

    /// The words of every assignment of `key` (for list settings such as capabilities).
    pub fn words(&self, key: &str) -> Vec<&str> {
        self.values(key)
            .into_iter()
            .flat_map(str::split_whitespace)
            .collect()
    }

    /// The system calls the unit's `SystemCallFilter=` lines allow, as systemd computes them: the
    /// first line is an allow list (a `~` list would make it a deny list, which this refuses),
    /// and each later line adds its calls, or takes them away if it starts with `~`, in order.
    pub fn allowed_syscalls(&self) -> BTreeSet<String> {
        let lines = self.values("SystemCallFilter");
        assert!(
            lines.first().is_some_and(|l| !l.starts_with('~')),
            "{}: the system-call filter must start with an allow list",
            self.path.display()
        );
        let mut allowed = BTreeSet::new();
        for line in lines {
            let (remove, items) = match line.strip_prefix('~') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            for item in items.split_whitespace() {
                let calls = expand_syscall_group(item);
                if remove {
                    allowed.retain(|c| !calls.contains(c));
                } else {
                    allowed.extend(calls);
                }
            }
        }
        allowed
    }
}

/// The system calls of a `systemd-analyze syscall-filter` group (`@name`), nested groups
/// expanded; a plain name stands for itself.
pub fn expand_syscall_group(item: &str) -> BTreeSet<String> {
    if !item.starts_with('@') {
        return BTreeSet::from([item.to_string()]);
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", item])
        .output()
        .expect("systemd-analyze (installed by `cargo xtask bootstrap`)");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {item}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut calls = BTreeSet::new();
    // The first line names the group; members are indented; `#` lines are comments.
    for word in text.lines().skip(1).map(str::trim) {
        if word.is_empty() || word.starts_with('#') {
            continue;
        }
        if word.starts_with('@') {
            calls.extend(expand_syscall_group(word));
        } else {
            calls.insert(word.to_string());
        }
    }
    assert!(!calls.is_empty(), "systemd-analyze knows no group {item}");
    calls
}

/// `systemd-analyze security --offline=true UNIT`: the overall exposure, and the whole report.
pub fn exposure(unit: &Path) -> (f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (installed by `cargo xtask bootstrap`)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let score = text
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no exposure level from systemd-analyze security ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (score, text)
}

/// Every `expr` of the Grafana dashboard (`deploy/grafana/sensor.json`) (panels, rows' panels) and every metric a template
/// variable queries (`label_values(METRIC, label)`).
pub fn dashboard_queries() -> (Vec<String>, Vec<String>) {
    let path = deploy_path("grafana/sensor.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    fn walk(v: &serde_json::Value, exprs: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("expr", Some(e)) => exprs.push(e.to_string()),
                        _ => walk(v, exprs),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, exprs)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dash["panels"], &mut exprs);
    let variables = dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["definition"].as_str())
        .filter_map(|d| d.strip_prefix("label_values(")?.split_once(',')?.0.into())
        .map(|m: &str| m.trim().to_string())
        .collect();
    (exprs, variables)
}

/// A dashboard query as Prometheus gets it: Grafana's variables replaced by values.
pub fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".+")
}
