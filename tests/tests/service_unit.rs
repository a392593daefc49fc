//! `sensor run` under the shipped unit's settings (`deploy/sensor.service`), as far as they can
//! be applied without systemd as PID 1 (these machines have none):
//! * as an unprivileged user with exactly the unit's capabilities (setpriv: bounding, ambient
//!   and inheritable sets, no_new_privs), in a lab namespace, with the shipped configuration: it
//!   attaches, records a TCP connection, serves /metrics and reloads its model on SIGHUP (the
//!   unit's ExecReload);
//! * without any one of those capabilities it fails to start: each one is needed;
//! * every system call it made from its exec to its exit (`strace -f`) is one the unit's
//!   `SystemCallFilter=` allows (its groups expanded by `systemd-analyze syscall-filter`), every
//!   socket it opened is of a family `RestrictAddressFamilies=` allows, and every file it opened
//!   is reachable under the unit's file-system settings (`ProcSubset=pid`, `PrivateDevices=`,
//!   `ProtectSystem=strict` with the log directory the only writable place).
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    Pair, deploy::Unit, lab::TempDir, require_root, sensor_bin, traffic, wait_listening, wait_until,
};

/// The user the test runs the sensor as (the package's `sensor` user does not exist here):
/// Debian's `nogroup`/`nobody`, which owns nothing.
const UID: &str = "65534";

/// setpriv's spelling of the unit's capabilities: `CAP_NET_ADMIN` -> `+net_admin`.
fn setpriv_caps(caps: &[&str]) -> String {
    let mut s = String::from("-all");
    for c in caps {
        s.push_str(",+");
        s.push_str(&c.trim_start_matches("CAP_").to_lowercase());
    }
    s
}

/// `setpriv` arguments that drop to the unprivileged user with exactly `caps`.
fn as_service_user(caps: &[&str]) -> Vec<String> {
    let caps = setpriv_caps(caps);
    vec![
        "setpriv".into(),
        format!("--reuid={UID}"),
        format!("--regid={UID}"),
        "--clear-groups".into(),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set={caps}"),
        "--no-new-privs".into(),
    ]
}

/// The sensor's files as the package lays them out, in a directory the unprivileged user can
/// read: the binary, the model, the shipped configuration, and a log directory it owns (the
/// unit's LogsDirectory).
struct Files {
    dir: TempDir,
    sensor: PathBuf,
    model: PathBuf,
    config: PathBuf,
    logs: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = TempDir::new("unit").expect("temp dir");
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        mode(&dir.path, 0o755);
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let copy = |from: PathBuf, name: &str| {
            let to = dir.join(name);
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
            to
        };
        let sensor = copy(sensor_bin(), "sensor");
        let model = copy(root.join("models/nsl-kdd-flow.model"), "model");
        let config = copy(root.join("deploy/sensor.toml"), "sensor.toml");
        mode(&sensor, 0o755);
        mode(&model, 0o644);
        mode(&config, 0o644);
        let logs = dir.join("log");
        std::fs::create_dir(&logs).expect("log dir");
        let st = Command::new("chown")
            .arg(format!("{UID}:{UID}"))
            .arg(&logs)
            .status()
            .expect("chown");
        assert!(st.success());
        mode(&logs, 0o750);
        Files {
            dir,
            sensor,
            model,
            config,
            logs,
        }
    }

    /// `sensor run` arguments: the shipped configuration, with the lab's interface, these
    /// files, records on stdout and a bound on its run time.
    fn run_args(&self, iface: &str) -> Vec<String> {
        [
            self.sensor.to_string_lossy().as_ref(),
            "run",
            "--config",
            &self.config.to_string_lossy(),
            "--iface",
            iface,
            "--model",
            &self.model.to_string_lossy(),
            "--alerts",
            &self.logs.join("alerts.jsonl").to_string_lossy(),
            "--records",
            "stdout",
            "--metrics-addr",
            "127.0.0.1:9464",
            "--duration-secs",
            "60",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// The pid of the process whose argv[0] is `program` (the sensor under strace and setpriv).
fn pid_of(program: &Path) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0).next() == Some(program.as_os_str().as_encoded_bytes())
            })
        })
}

fn kill(sig: &str, pid: u32) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig} {pid}");
}

fn scrape(pair: &Pair) -> String {
    xtask::metrics::scrape(&pair.server, "127.0.0.1:9464", 3).unwrap_or_default()
}

/// What `strace -f -o` recorded of one program, from its exec on.
#[derive(Default, Debug)]
struct Trace {
    /// System calls by name, with how often each was made.
    calls: BTreeMap<String, usize>,
    /// Address families of the sockets it opened (`socket(AF_INET, ...)`).
    families: BTreeSet<String>,
    /// Files it opened: path, flags, and whether the call succeeded.
    opened: Vec<(String, String, bool)>,
}

impl Trace {
    /// Parses strace's output after the successful `execve` of `program`. Lines are
    /// `PID name(args) = result`, or split into `name(args <unfinished ...>` and
    /// `<... name resumed>...) = result` when threads interleave; signals and exits are
    /// `---`/`+++` lines.
    fn parse(text: &str, program: &Path) -> Trace {
        let exec = format!("execve(\"{}\"", program.display());
        let lines: Vec<&str> = text.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.contains(&exec) && l.trim_end().ends_with("= 0"))
            .unwrap_or_else(|| panic!("no successful {exec} in the trace"));
        let mut t = Trace::default();
        // Unfinished openat calls by pid: (path, flags).
        let mut pending: BTreeMap<&str, (String, String)> = BTreeMap::new();
        // The result follows the last `= ` (padded with spaces in resumed lines); errors
        // are negative.
        let ok = |rest: &str| {
            rest.rsplit_once("= ")
                .is_some_and(|(_, r)| !r.trim_start().starts_with('-'))
        };
        let open_args = |call: &str| -> Option<(String, String)> {
            let args = call.split_once('(')?.1;
            let (_, path_and_rest) = args.split_once('"')?;
            let (path, rest) = path_and_rest.split_once('"')?;
            let flags = rest
                .trim_start_matches(", ")
                .split([',', ')', ' '])
                .next()?;
            Some((path.to_string(), flags.to_string()))
        };
        for line in &lines[start..] {
            let Some((pid, rest)) = line.split_once(' ') else {
                continue;
            };
            let rest = rest.trim_start();
            if rest.starts_with("---") || rest.starts_with("+++") {
                continue;
            }
            if let Some(resumed) = rest.strip_prefix("<... ") {
                if resumed.starts_with("openat resumed>")
                    && let Some((path, flags)) = pending.remove(pid)
                {
                    t.opened.push((path, flags, ok(resumed)));
                }
                continue;
            }
            let Some((name, _)) = rest.split_once('(') else {
                continue;
            };
            *t.calls.entry(name.to_string()).or_default() += 1;
            if name == "socket"
                && let Some(fam) = rest["socket(".len()..].split([',', ')']).next()
            {
                t.families.insert(fam.to_string());
            }
            if (name == "openat" || name == "open")
                && let Some((path, flags)) = open_args(rest)
            {
                if rest.contains("<unfinished ...>") {
                    pending.insert(pid, (path, flags));
                } else {
                    t.opened.push((path, flags, ok(rest)));
                }
            }
        }
        t
    }
}

/// Whether a file the sensor opened is reachable, and opened as allowed, under the unit's
/// file-system settings; `own` are the test's stand-ins for the package's files (read) and
/// `logs` for the log directory (the only writable place).
fn file_allowed(path: &str, flags: &str, succeeded: bool, own: &Path, logs: &Path) -> bool {
    if !succeeded {
        // A file it looked for and did without (the loader's search path, an optional probe):
        // absent under the unit as well.
        return true;
    }
    let writes =
        flags.contains("O_WRONLY") || flags.contains("O_RDWR") || flags.contains("O_CREAT");
    if let Some(proc_path) = path.strip_prefix("/proc/") {
        // ProcSubset=pid: only the processes' own directories exist.
        let first = proc_path.split('/').next().unwrap_or_default();
        let per_process =
            ["self", "thread-self"].contains(&first) || first.chars().all(|c| c.is_ascii_digit());
        return !writes && per_process;
    }
    if let Some(dev) = path.strip_prefix("/dev/") {
        // PrivateDevices: only the pseudo devices.
        return ["null", "zero", "full", "random", "urandom"].contains(&dev);
    }
    if writes {
        // ProtectSystem=strict: the log directory only.
        return Path::new(path).starts_with(logs);
    }
    // Reads: the package's files, the system's libraries and configuration, /sys read-only
    // (ProtectKernelTunables); nothing in home directories (ProtectHome).
    Path::new(path).starts_with(own)
        || ["/usr/", "/lib", "/etc/", "/sys/"]
            .iter()
            .any(|p| path.starts_with(p))
}

#[test]
fn sensor_run_works_with_the_units_capabilities_user_system_calls_and_files() {
    require_root();
    let t0 = Instant::now();
    let unit = Unit::shipped();
    let caps = unit.words("AmbientCapabilities");
    let mut bounding = unit.words("CapabilityBoundingSet");
    bounding.sort_unstable();
    let mut ambient = caps.clone();
    ambient.sort_unstable();
    assert_eq!(bounding, ambient, "bounding and ambient sets differ");
    let allowed = unit.allowed_syscalls();
    let families: BTreeSet<&str> = unit.words("RestrictAddressFamilies").into_iter().collect();

    let files = Files::new();
    let pair = Pair::new().expect("lab");
    let _server = pair
        .server
        .spawn(
            "python3",
            &[
                &traffic("tcp_server.py"),
                &pair.server_v4,
                "7000",
                "100",
                "300",
                "close",
                "120",
            ],
        )
        .expect("tcp server");
    wait_listening(&pair.server, 7000);

    // Each capability is needed: without it the sensor does not start.
    for missing in &caps {
        let fewer: Vec<&str> = caps.iter().copied().filter(|c| c != missing).collect();
        let mut args = as_service_user(&fewer);
        args.extend(files.run_args(&pair.veth.b));
        let out = pair
            .server
            .cmd("timeout")
            .arg("30")
            .args(&args)
            .output()
            .expect("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && (stderr.contains("Operation not permitted")
                    || stderr.contains("Permission denied")),
            "without {missing} the sensor should fail to start ({}): {stderr}",
            out.status
        );
        println!(
            "without {missing}: fails: {}",
            stderr.lines().next().unwrap_or("")
        );
    }

    // With exactly the unit's capabilities, traced.
    let trace_file = files.dir.join("strace.out");
    let mut args: Vec<String> = [
        "-f",
        "-qq",
        "-o",
        &trace_file.to_string_lossy(),
        "-e",
        "trace=all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(as_service_user(&caps));
    args.extend(files.run_args(&pair.veth.b));
    // systemd's environment: its fixed PATH and the unit's Environment=, nothing inherited.
    let mut cmd = pair.server.cmd("strace");
    cmd.args(&args).env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for assignment in unit.words("Environment") {
        let (k, v) = assignment.split_once('=').expect("Environment=KEY=VALUE");
        cmd.env(k, v);
    }
    let mut sensor = integration_tests::Proc::spawn(&mut cmd).expect("spawn strace");
    sensor
        .wait_for_stderr("watching", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the sensor did not start with {caps:?}: {e}"));
    let pid = pid_of(&files.sensor).expect("the sensor's pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    println!(
        "sensor pid {pid}: {}",
        status
            .lines()
            .filter(|l| l.starts_with("Uid:") || l.starts_with("Cap"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert!(
        status.contains(&format!("Uid:\t{UID}\t{UID}\t{UID}\t{UID}")),
        "{status}"
    );

    let n = pair
        .client
        .run(
            "python3",
            &[
                &traffic("tcp_client.py"),
                &pair.server_v4,
                "7000",
                "100",
                "300",
                "close",
                "1",
                "10",
            ],
        )
        .expect("tcp client");
    assert_eq!(n.trim(), "1", "the client's exchange");
    assert!(
        wait_until(Duration::from_secs(20), || scrape(&pair).lines().any(|l| l
            .starts_with("sensor_connections_total{")
            && l.contains("protocol=\"tcp\""))),
        "the connection was not counted: {}",
        scrape(&pair)
    );
    // ExecReload.
    kill("-HUP", pid);
    assert!(
        wait_until(Duration::from_secs(20), || scrape(&pair)
            .contains("sensor_model_reloads_total{result=\"ok\"} 1")),
        "the model was not reloaded on SIGHUP: {}",
        scrape(&pair)
    );
    kill("-TERM", pid);
    let (status, stdout, stderr) = sensor
        .wait_output(Duration::from_secs(60))
        .expect("the sensor stops");
    assert!(status.success(), "sensor run failed ({status}): {stderr}");
    let record = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["orig_addr"] == pair.client_v4.as_str() && r["resp_port"] == 7000)
        .unwrap_or_else(|| panic!("no record of the connection: {stdout}"));
    assert_eq!(record["protocol"], "tcp", "{record}");
    assert_eq!(record["end_reason"], "fin", "{record}");

    let trace = Trace::parse(
        &std::fs::read_to_string(&trace_file).expect("the trace"),
        &files.sensor,
    );
    println!(
        "system calls of sensor run ({}): {}",
        trace.calls.len(),
        trace
            .calls
            .iter()
            .map(|(c, n)| format!("{c}({n})"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let denied: Vec<&String> = trace
        .calls
        .keys()
        .filter(|c| !allowed.contains(*c))
        .collect();
    assert!(
        denied.is_empty(),
        "system calls the unit's filter denies: {denied:?}"
    );
    assert!(trace.calls.contains_key("bpf"), "no bpf() in the trace");
    println!("socket families: {:?}", trace.families);
    let unlisted: Vec<&String> = trace
        .families
        .iter()
        .filter(|f| !families.contains(f.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "socket families RestrictAddressFamilies does not allow: {unlisted:?}"
    );
    println!(
        "files opened: {:?}",
        trace
            .opened
            .iter()
            .map(|(p, _, ok)| format!("{p}{}", if *ok { "" } else { " (failed)" }))
            .collect::<Vec<_>>()
    );
    let outside: Vec<_> = trace
        .opened
        .iter()
        .filter(|(p, f, ok)| !file_allowed(p, f, *ok, &files.dir.path, &files.logs))
        .collect();
    assert!(
        outside.is_empty(),
        "files the unit's settings would not let it open: {outside:?}"
    );
    assert!(
        trace
            .opened
            .iter()
            .any(|(p, _, ok)| *ok && p.ends_with("alerts.jsonl")),
        "the alert file was not opened"
    );
    println!("service unit test: {:.1} s", t0.elapsed().as_secs_f64());
}
