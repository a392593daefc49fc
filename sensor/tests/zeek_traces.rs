//! Zeek's own test traces (`../shared/data/zeek` from the repository root, or `ZEEK_DATA_DIR`;
//! see its README): every capture is read by replay without an error, whatever its link type
//! and encapsulation, and every packet and tunnel payload gets one outcome.
//!
//! The data is not part of the repository. Where it is absent the test says so and passes,
//! except under `CI=true`, where it fails: CI must run it.

use std::path::{Path, PathBuf};

use sensor::replay::{ReplayConfig, Replayer, for_each_packet};

fn zeek_data() -> Option<PathBuf> {
    let dir = match std::env::var_os("ZEEK_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/zeek"),
    };
    dir.join("traces").is_dir().then_some(dir)
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

#[test]
fn every_zeek_trace_is_read() {
    let Some(dir) = zeek_data() else {
        let msg = "Zeek's traces not found (../shared/data/zeek from the repository root, or \
                   ZEEK_DATA_DIR): every_zeek_trace_is_read did not run";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("{msg}");
        return;
    };
    let mut files = Vec::new();
    captures(&dir.join("traces"), &mut files);
    assert!(
        files.len() >= 50,
        "{} captures in {}",
        files.len(),
        dir.display()
    );
    let mut tunnels = 0;
    for file in &files {
        let mut r = Replayer::new(ReplayConfig::default());
        let mut out = Vec::new();
        let n = for_each_packet(file, |p| {
            r.packet(p.ts_ns, u64::from(p.wire_len), p.link, p.data, &mut out);
        })
        .unwrap_or_else(|e| panic!("{e}"));
        r.finish(&mut out);
        let h = r.health();
        assert!(n > 0 && h.packets == n, "{}: {h:?}", file.display());
        assert_eq!(
            h.outcomes(),
            h.packets + h.tunnel_payloads,
            "{}: every packet and payload has one outcome: {h:?}",
            file.display()
        );
        assert!(h.accounted > 0, "{}: {h:?}", file.display());
        let name = file.to_string_lossy();
        if name.contains("tunnels/") && !name.contains("false_gtp") || name.contains("erspan") {
            assert!(h.tunnel_payloads > 0, "{name}: no tunnel found: {h:?}");
            tunnels += 1;
        }
    }
    assert!(tunnels >= 7, "{tunnels} tunnel traces");
}
