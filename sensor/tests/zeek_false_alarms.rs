//! The false-alarm report on real benign traffic (issue 10): every capture of Zeek's own test
//! traces (`../shared/data/zeek/traces` from the repository root, or `ZEEK_DATA_DIR`) replayed
//! as a user would on their own captures, with the shipped settings and the committed model:
//!
//! ```text
//! sensor replay --format jsonl --alerts alerts.jsonl capture.pcap > connections.jsonl
//! ```
//!
//! It prints flagged connections and incidents by trace, transport, state and service, and
//! checks that no incident opens (the traces are benign) and that the flagged share stays
//! within [`MAX_FLAGGED`].
//!
//! The bound is issue 10's goal, at most 5% flagged (measured: 14 of 333, 4.2%, since the
//! forest's attack boxes, `docs/model.md`). Each capture is replayed on its own, as its own
//! timeline (their clocks are years apart).
//!
//! A second test replays every capture with 2 s and with 60 s UDP/ICMP idle timeouts and
//! compares the window features (KDD 23-41) of the connections both runs have: a connection's
//! features describe its own moment, whatever the timeouts, the scan cadence or the order in
//! which connections were finalised.
//!
//! The data is not part of the repository. Where it is absent the test says so and passes,
//! except under `CI=true`, where it fails: CI must run it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

/// The share of connections flagged that fails the test: issue 10's goal. Measured 14 of 333
/// (4.2%); 29 (8.7%) before the forest's attack boxes.
const MAX_FLAGGED: f64 = 0.05;

/// Goal of issue 10 for the window features of shared connections under 2 s and 60 s
/// timeouts (measured: 331 of 331, since a conversation the 2 s timeout splits is held once in
/// the windows; before that, 323 of 331).
const SAME_WINDOWS_GOAL: f64 = 0.99;

fn zeek_traces() -> Option<PathBuf> {
    let dir = match std::env::var_os("ZEEK_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/zeek"),
    };
    let traces = dir.join("traces");
    traces.is_dir().then_some(traces)
}

fn captures(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            captures(&p, out);
        } else if p.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
            out.push(p);
        }
    }
}

/// Flagged and total connections of one group.
#[derive(Default)]
struct Tally {
    flagged: u64,
    total: u64,
}

impl Tally {
    fn add(&mut self, flagged: bool) {
        self.total += 1;
        self.flagged += u64::from(flagged);
    }
}

fn print_table(title: &str, groups: &BTreeMap<String, Tally>) {
    eprintln!("{title}:");
    for (k, t) in groups {
        if t.flagged > 0 {
            eprintln!("  {k:50} {:4} of {:4} flagged", t.flagged, t.total);
        }
    }
    let clean = groups.values().filter(|t| t.flagged == 0).count();
    eprintln!("  ({clean} more with none flagged)");
}

/// The traces directory and its captures; `None` (after saying so, or failing under
/// `CI=true`) when the data is absent.
fn zeek_captures(test: &str) -> Option<(PathBuf, Vec<PathBuf>)> {
    let Some(traces) = zeek_traces() else {
        let msg = format!(
            "Zeek's traces not found (../shared/data/zeek from the repository root, or \
             ZEEK_DATA_DIR): {test} did not run"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("{msg}");
        return None;
    };
    let mut files = Vec::new();
    captures(&traces, &mut files);
    assert!(
        files.len() >= 50,
        "only {} captures in {}",
        files.len(),
        traces.display()
    );
    Some((traces, files))
}

/// `sensor replay --format jsonl FILE` with `args`: one JSON value per connection.
fn replay_rows(file: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["replay", "--format", "jsonl"])
        .args(args)
        .arg(file)
        .output()
        .expect("running sensor replay");
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: row {}: {e}: {l}", file.display(), i + 1))
        })
        .collect()
}

#[test]
fn window_features_do_not_depend_on_the_idle_timeouts() {
    let Some((traces, files)) = zeek_captures("the window-equivalence test") else {
        return;
    };
    let key = |r: &serde_json::Value| {
        [
            "transport",
            "orig_addr",
            "orig_port",
            "resp_addr",
            "resp_port",
            "start_unix_ns",
        ]
        .map(|k| r[k].to_string())
    };
    let (mut shared, mut same) = (0u64, 0u64);
    // Differing connections whose 2-second window (KDD 23-31) agrees: only the host window
    // differs (which in these short captures is never full, so part of it is filled for the
    // slots not seen yet, docs/features.md, "A cold host window").
    let mut host_window_only = 0u64;
    let (mut shared_when_equal_sets, mut same_when_equal_sets) = (0u64, 0u64);
    for file in &files {
        let runs = ["2", "60"].map(|t| {
            replay_rows(file, &["--udp-timeout-secs", t, "--icmp-timeout-secs", t])
                .into_iter()
                .map(|r| (key(&r), r))
                .collect::<BTreeMap<_, _>>()
        });
        let equal_sets =
            runs[0].len() == runs[1].len() && runs[0].keys().all(|k| runs[1].contains_key(k));
        let mut differ = 0;
        for (k, a) in &runs[0] {
            let Some(b) = runs[1].get(k) else { continue };
            let windows = |r: &serde_json::Value| r["kdd"].as_array().unwrap()[22..].to_vec();
            let eq = windows(a) == windows(b);
            let time_window = |r: &serde_json::Value| r["kdd"].as_array().unwrap()[22..31].to_vec();
            host_window_only += u64::from(!eq && time_window(a) == time_window(b));
            shared += 1;
            same += u64::from(eq);
            if equal_sets {
                shared_when_equal_sets += 1;
                same_when_equal_sets += u64::from(eq);
            }
            differ += usize::from(!eq);
        }
        if differ > 0 {
            eprintln!(
                "{}: {differ} differ ({}; {} and {} connections)",
                file.strip_prefix(&traces).unwrap().display(),
                if equal_sets {
                    "same connections"
                } else {
                    "the 2 s timeouts split conversations"
                },
                runs[0].len(),
                runs[1].len(),
            );
        }
    }
    let share = same as f64 / shared.max(1) as f64;
    eprintln!(
        "window features equal under 2 s and 60 s timeouts: {same} of {shared} shared \
         connections ({:.1}%; goal {:.0}%); where both runs have the same connections: \
         {same_when_equal_sets} of {shared_when_equal_sets}; of the {} that differ, {host_window_only} \
         only in the host window",
        100.0 * share,
        100.0 * SAME_WINDOWS_GOAL,
        shared - same
    );
    assert!(shared >= 200, "only {shared} shared connections");
    // Where the timeouts change no connection, nothing else may change the features.
    assert_eq!(same_when_equal_sets, shared_when_equal_sets);
    assert!(share >= SAME_WINDOWS_GOAL, "{:.1}%", 100.0 * share);
}

#[test]
fn benign_captures_raise_no_incident_and_few_flags() {
    let Some((traces, files)) = zeek_captures("the false-alarm report") else {
        return;
    };
    let tmp = std::env::temp_dir().join(format!("sensor-false-alarms-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let alerts = tmp.join("alerts.jsonl");

    type Groups = BTreeMap<String, Tally>;
    let (mut by_trace, mut by_transport, mut by_state, mut by_service) =
        (Groups::new(), Groups::new(), Groups::new(), Groups::new());
    let (mut flagged, mut total, mut withdrawn) = (0u64, 0u64, 0u64);
    let mut incidents = Vec::new();
    for file in &files {
        let name = file.strip_prefix(&traces).unwrap().display().to_string();
        let _ = std::fs::remove_file(&alerts);
        let out = Command::new(env!("CARGO_BIN_EXE_sensor"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["replay", "--format", "jsonl", "--alerts"])
            .arg(&alerts)
            .arg(file)
            .output()
            .expect("running sensor replay");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (i, line) in String::from_utf8(out.stdout).unwrap().lines().enumerate() {
            let r: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: row {}: {e}: {line}", i + 1));
            let anomalous = r["anomalous"]
                .as_bool()
                .unwrap_or_else(|| panic!("{name}: row {} has no verdict", i + 1));
            // Marked only where the attack boxes' rule withdrew the forest's verdict.
            let boxed = r["withdrawn_by_attack_boxes"].as_bool().unwrap_or(false);
            assert!(!(boxed && anomalous), "{name}: row {}: {line}", i + 1);
            withdrawn += u64::from(boxed);
            let text = |k: &str| r[k].as_str().unwrap_or("?").to_string();
            let service = r["kdd"][2].as_str().unwrap_or("-").to_string();
            by_trace.entry(name.clone()).or_default().add(anomalous);
            by_transport
                .entry(text("transport"))
                .or_default()
                .add(anomalous);
            by_state
                .entry(format!("{} {}", text("transport"), text("conn_state")))
                .or_default()
                .add(anomalous);
            by_service.entry(service).or_default().add(anomalous);
            flagged += u64::from(anomalous);
            total += 1;
        }
        if alerts.exists() {
            for line in std::fs::read_to_string(&alerts).unwrap().lines() {
                let a: serde_json::Value = serde_json::from_str(line).unwrap();
                if a["type"] == "incident" && a["state"] == "open" {
                    incidents.push(format!("{name}: {line}"));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);

    print_table("by trace", &by_trace);
    print_table("by transport", &by_transport);
    print_table("by transport and state", &by_state);
    print_table("by service", &by_service);
    let share = flagged as f64 / total.max(1) as f64;
    eprintln!(
        "{} captures: {flagged} of {total} connections flagged ({:.1}%), {} incidents; \
         {withdrawn} more the forest alone would have flagged, left normal by the attack boxes",
        files.len(),
        100.0 * share,
        incidents.len()
    );
    assert!(
        total >= 200,
        "only {total} connections in {} captures",
        files.len()
    );
    assert!(
        incidents.is_empty(),
        "incidents on benign traffic:\n{}",
        incidents.join("\n")
    );
    assert!(
        share <= MAX_FLAGGED,
        "{:.1}% of benign connections flagged, more than {:.0}%",
        100.0 * share,
        100.0 * MAX_FLAGGED
    );
}
