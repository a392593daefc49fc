//! The Debian package (`cargo xtask dist`, [`xtask::dist`]) built from the binary under test:
//! lintian passes; `dpkg -i` installs it with its user; the installed `sensor --version` and
//! `sensor replay` (as the service user, with the installed model) work and agree with the
//! build; the unit passes `systemd-analyze verify`; `dpkg -r` keeps the configuration and
//! `dpkg --purge` leaves nothing behind: no file with the package's name anywhere it could
//! have written, no user, no group.
//!
//! The machine is left as it was on every exit path: a guard purges the package, and removes
//! the user, the group and any new file of the package's name if the purge did not; and the test refuses to run where a
//! package or user of that name already exists, rather than replace it.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{lab::TempDir, require_root, sensor_bin};
use xtask::dist::{self, DistOptions, MODEL_PATH, PACKAGE};

/// Where installing and purging the package may leave files: every directory dpkg, the
/// maintainer scripts, systemd's helpers and man-db write to.
const WATCHED: &[&str] = &["/etc", "/usr", "/lib", "/var/lib", "/var/log", "/var/cache"];

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `dpkg ARGS`, waiting (up to a minute) while another dpkg or apt holds the lock.
fn dpkg(args: &[&str]) -> (bool, String) {
    let start = Instant::now();
    loop {
        let (ok, text) = run("dpkg", args);
        if ok || !text.contains("lock") || start.elapsed() > Duration::from_secs(60) {
            return (ok, text);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", PACKAGE])
        .1
        .contains("ok installed")
}

fn user_exists() -> bool {
    run("getent", &["passwd", PACKAGE]).0
}

fn group_exists() -> bool {
    run("getent", &["group", PACKAGE]).0
}

/// Every path under the watched directories whose name contains the package's name.
fn named_paths() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if e.file_name().to_string_lossy().contains(PACKAGE) {
                out.insert(path.clone());
            }
            // Not through symbolic links (/lib is one on merged-/usr systems).
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for d in WATCHED {
        walk(Path::new(d), &mut out);
    }
    out
}

/// Purges the package on drop, and removes whatever a failed purge left: the user, the group,
/// and every path with the package's name that was not there before the test.
struct Installed {
    before: BTreeSet<PathBuf>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if run("dpkg-query", &["-W", PACKAGE]).0 {
            let _ = dpkg(&["--purge", PACKAGE]);
        }
        if user_exists() {
            let _ = run("userdel", &[PACKAGE]);
        }
        if group_exists() {
            let _ = run("groupdel", &[PACKAGE]);
        }
        for p in named_paths().difference(&self.before) {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

/// `sensor replay` of the committed captures as JSON lines, by `sensor` with `model`, run
/// with `prefix` (e.g. setpriv to another user).
fn replay(prefix: &[&str], sensor: &str, model: &str) -> String {
    let captures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sensor/tests/fixtures");
    let mut args: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    args.extend(
        [sensor, "replay", "--model", model, "--format", "jsonl"]
            .iter()
            .map(|s| s.to_string()),
    );
    for f in ["captures/tcp_states.pcap", "captures/udp_icmp.pcap"] {
        args.push(captures.join(f).to_string_lossy().into_owned());
    }
    let out = Command::new(&args[0])
        .args(&args[1..])
        .output()
        .expect("spawn replay");
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_package_installs_runs_and_purges_cleanly() {
    require_root();
    let t0 = Instant::now();
    assert!(
        !installed() && !run("dpkg-query", &["-W", PACKAGE]).0,
        "a package named {PACKAGE} is already on this machine: the test would replace it"
    );
    assert!(
        !user_exists() && !group_exists(),
        "a user or group named {PACKAGE} already exists: the test would take it over"
    );
    let before = named_paths();

    let out = TempDir::new("deb").expect("temp dir");
    let deb = dist::build_deb(&DistOptions {
        sensor: sensor_bin(),
        out_dir: out.path.clone(),
    })
    .expect("the package builds");
    let built = t0.elapsed();
    let (clean, report) = dist::lintian(&deb).expect("lintian");
    println!("lintian:\n{report}");
    assert!(
        clean,
        "lintian reports errors or warnings on {}:\n{report}",
        deb.display()
    );
    let linted = t0.elapsed();

    let guard = Installed {
        before: before.clone(),
    };
    let (ok, text) = dpkg(&["-i", &deb.to_string_lossy()]);
    assert!(ok, "dpkg -i: {text}");
    assert!(installed(), "not installed after dpkg -i: {text}");

    // The files, where the package says they are.
    let (ok, version) = run("/usr/bin/sensor", &["--version"]);
    assert!(ok, "sensor --version: {version}");
    assert_eq!(
        version.trim(),
        format!("sensor {}", dist::version().unwrap())
    );
    let config = std::fs::read_to_string("/etc/sensor/sensor.toml").expect("the configuration");
    assert!(
        config.contains(&format!("model = \"{MODEL_PATH}\"")),
        "{config}"
    );
    let (_, conffiles) = run("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    for f in ["/etc/sensor/sensor.toml", "/etc/logrotate.d/sensor"] {
        assert!(conffiles.contains(f), "{f} is not a conffile: {conffiles}");
    }
    for f in [
        MODEL_PATH,
        "/lib/systemd/system/sensor.service",
        "/usr/share/sensor/grafana/sensor.json",
        "/usr/share/sensor/prometheus/sensor.rules.yml",
        "/usr/share/sensor/prometheus/prometheus.yml",
        "/usr/share/doc/sensor/README.md",
        "/usr/share/doc/sensor/copyright",
        "/usr/share/man/man1/sensor.1.gz",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    let (ok, man) = run("sh", &["-c", "zcat /usr/share/man/man1/sensor.1.gz"]);
    assert!(
        ok && man.starts_with(".TH SENSOR 1") && man.contains(".SS \"sensor run\""),
        "man page: {}",
        &man[..man.len().min(300)]
    );
    let (ok, text) = run(
        "systemd-analyze",
        // Without its man-page check, which runs man(1) and leaves a cached page behind.
        &["verify", "--man=no", "/lib/systemd/system/sensor.service"],
    );
    assert!(ok, "systemd-analyze verify: {text}");

    // The service user: a system account without a login.
    let (_, passwd) = run("getent", &["passwd", PACKAGE]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "{passwd}");
    assert!(fields[6].ends_with("nologin"), "{passwd}");

    // The installed sensor replays the committed captures as the service user, with the
    // installed model, exactly as the build does with the repository's model.
    let as_user = [
        "setpriv",
        "--reuid=sensor",
        "--regid=sensor",
        "--init-groups",
        "--no-new-privs",
    ];
    let installed_rows = replay(&as_user, "/usr/bin/sensor", MODEL_PATH);
    let repo_model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
    let built_rows = replay(
        &[],
        &sensor_bin().to_string_lossy(),
        &repo_model.to_string_lossy(),
    );
    let rows = installed_rows.lines().count();
    assert!(rows >= 5, "replay printed {rows} rows: {installed_rows}");
    assert_eq!(
        installed_rows, built_rows,
        "the installed sensor and model disagree with the build"
    );

    // Remove: the configuration stays (a conffile), the program goes.
    let (ok, text) = dpkg(&["-r", PACKAGE]);
    assert!(ok, "dpkg -r: {text}");
    assert!(!Path::new("/usr/bin/sensor").exists());
    assert!(Path::new("/etc/sensor/sensor.toml").exists());
    // Purge: nothing of the package is left.
    let (ok, text) = dpkg(&["--purge", PACKAGE]);
    assert!(ok, "dpkg --purge: {text}");
    assert!(
        !run("dpkg-query", &["-W", PACKAGE]).0,
        "still known to dpkg"
    );
    assert!(!user_exists(), "the user is left after purge");
    assert!(!group_exists(), "the group is left after purge");
    let after = named_paths();
    let left: Vec<_> = after.difference(&before).collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    drop(guard);
    println!(
        "package: built in {:.1} s, lintian {:.1} s, install, checks, replay and purge {:.1} s",
        built.as_secs_f64(),
        (linted - built).as_secs_f64(),
        (t0.elapsed() - linted).as_secs_f64()
    );
}
