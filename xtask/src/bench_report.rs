//! The end of `cargo xtask bench`: every ratio the benchmarks wrote to `target/bench-*.json`,
//! each printed next to the CPU it was measured on, which also goes into each file
//! (`cpu_model`). A ratio travels better between machines than an absolute time, but not
//! perfectly: the same XDP program measured 2.2x its baseline on one Intel CPU and 5.1x on
//! another (`docs/performance.md`), so a figure without its CPU cannot be compared.

use std::{path::Path, time::SystemTime};

use anyhow::{Context, Result};
use serde_json::Value;

/// The CPU model as `/proc/cpuinfo` names it (its first `model name`), or what is known.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| model_name(&text))
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

/// The first `model name` of a `/proc/cpuinfo` text.
fn model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// Whether a report key names a ratio: `*ratio*` or `*_vs_baseline` (the replay bench's).
fn is_ratio(key: &str) -> bool {
    key.contains("ratio") || key.ends_with("_vs_baseline")
}

/// Every ratio of a bench report ([`is_ratio`]), by its path of keys (nested objects joined
/// with `.`).
fn ratios(prefix: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    if let Value::Object(map) = v {
        for (k, v) in map {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Number(n) if is_ratio(k) => {
                    if let Some(x) = n.as_f64() {
                        out.push((name, x));
                    }
                }
                Value::Object(_) => ratios(&name, v, out),
                _ => {}
            }
        }
    }
}

/// Adds the CPU model to every `bench-*.json` in `target` written since `since` (this run's:
/// older files may come from another machine) and prints each ratio with it.
pub fn report(target: &Path, since: SystemTime) -> Result<()> {
    let cpu = cpu_model();
    let mut files: Vec<_> = std::fs::read_dir(target)
        .with_context(|| format!("reading {}", target.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("bench-") && n.ends_with(".json"))
                && std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= since)
        })
        .collect();
    files.sort();
    println!("bench ratios (CPU: {cpu}):");
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON bench report", path.display()))?;
        let mut found = Vec::new();
        ratios("", &v, &mut found);
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        for (key, x) in found {
            println!("  {name} {key} = {x:.2}x  [{cpu}]");
        }
        if let Value::Object(map) = &mut v {
            map.insert("cpu_model".into(), Value::String(cpu.clone()));
            std::fs::write(&path, v.to_string())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_model_name_is_the_cpu() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: Other\n";
        assert_eq!(
            model_name(text).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(model_name("processor\t: 0\n"), None);
    }

    #[test]
    fn ratios_are_found_at_any_depth() {
        let v: Value = serde_json::json!({
            "hot_ratio": 5.5, "baseline_hot_ns": 16.0,
            "encapsulations_hot": {"gre_ratio": 14.0, "note": "x"},
            "full_time_vs_baseline": 7.0,
        });
        let mut out = Vec::new();
        ratios("", &v, &mut out);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            out,
            [
                ("encapsulations_hot.gre_ratio".to_string(), 14.0),
                ("full_time_vs_baseline".to_string(), 7.0),
                ("hot_ratio".to_string(), 5.5)
            ]
        );
    }
}
