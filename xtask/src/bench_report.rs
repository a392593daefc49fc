//! The end of `cargo xtask bench`: every ratio the benchmarks wrote to `target/bench-*.json`,
//! each printed next to the CPU it was measured on, which also goes into each file
//! (`cpu_model`, and the kernel's call and return mitigations in `cpu_mitigations`). A ratio
//! travels better between machines than an absolute time, but not perfectly: the same XDP
//! program measured 2.2x its baseline on one Intel CPU and 5.1x on another, 2.3x on one AMD
//! EPYC VM and 5.0x on another (`docs/performance.md`), so a figure without its CPU cannot be
//! compared.

use std::{path::Path, time::SystemTime};

use anyhow::{Context, Result};
use serde_json::Value;

/// The CPU as `/proc/cpuinfo` names it (its first `model name`), with its family, model and
/// stepping numbers, or what is known. The numbers are there because a VM often names the CPU
/// only by its line ("AMD EPYC"), which covers several generations with different costs.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| describe_cpu(&text))
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

/// The first processor's `model name` of a `/proc/cpuinfo` text, followed by its `cpu family`,
/// `model` and `stepping` where the text has them.
fn describe_cpu(cpuinfo: &str) -> Option<String> {
    let first = cpuinfo.split("\n\n").next().unwrap_or(cpuinfo);
    let field = |name: &str| {
        first.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_string())
        })
    };
    let name = field("model name")?;
    let numbers: Vec<String> = [
        ("cpu family", "family"),
        ("model", "model"),
        ("stepping", "stepping"),
    ]
    .iter()
    .filter_map(|(key, label)| field(key).map(|v| format!("{label} {v}")))
    .collect();
    Some(if numbers.is_empty() {
        name
    } else {
        format!("{name} ({})", numbers.join(", "))
    })
}

/// The kernel's mitigations that change what a call and a return cost (retpolines, return
/// thunks), as `/sys/devices/system/cpu/vulnerabilities` states them, as a JSON object. Every
/// call and return of JIT-compiled BPF code pays them, and the XDP program makes more than
/// its trivial baseline does; recorded so that ratios from two machines with the same CPU
/// can be told apart (whether they explain the differences seen so far was not measured).
fn call_mitigations() -> serde_json::Map<String, Value> {
    let dir = Path::new("/sys/devices/system/cpu/vulnerabilities");
    ["spectre_v2", "retbleed", "spec_rstack_overflow"]
        .iter()
        .filter_map(|name| {
            let text = std::fs::read_to_string(dir.join(name)).ok()?;
            Some((name.to_string(), Value::String(text.trim().to_string())))
        })
        .collect()
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
    let mitigations = call_mitigations();
    println!("bench ratios (CPU: {cpu}):");
    for (name, state) in &mitigations {
        println!(
            "  kernel mitigation {name}: {}",
            state.as_str().unwrap_or_default()
        );
    }
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
            map.insert("cpu_mitigations".into(), Value::Object(mitigations.clone()));
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
    fn the_first_processor_names_the_cpu_with_its_numbers() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nmodel name\t: Other\nmodel\t\t: 9\n";
        assert_eq!(
            describe_cpu(text).as_deref(),
            Some("AMD EPYC (family 25, model 1, stepping 1)")
        );
        let bare = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            describe_cpu(bare).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(describe_cpu("processor\t: 0\n"), None);
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
