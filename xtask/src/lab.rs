//! Network namespaces, veth pairs and processes inside them, all removed on drop.
//!
//! Every name carries a per-process unique suffix so that tests can run in parallel, and every
//! address comes from the benchmarking ranges 198.18.0.0/15 and 2001:2::/48 (RFC 2544/5180): no
//! lab namespace gets a route beyond them. Cleanup happens in `Drop`, so a failing test (a panic
//! unwinding through the guards) still removes what it created.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// `ip ARGS...`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args)).map(drop)
}

/// A short unique tag for names: process id and a counter (interface names are max 15 bytes).
pub fn unique_tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{}", std::process::id() % 0xffff, n)
}

/// A network namespace, deleted on drop (which also removes its interfaces).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates namespace `sn-<prefix>-<tag>` with loopback up.
    pub fn new(prefix: &str) -> Result<Netns, String> {
        let name = format!("sn-{prefix}-{}", unique_tag());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        // Addresses appear at once (no IPv6 duplicate address detection delay).
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        run(self
            .cmd("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]))
        .map(drop)
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace and returns its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = run(self.cmd(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a background process inside the namespace, killed on drop.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Proc, String> {
        Proc::spawn(self.cmd(program).args(args))
    }

    /// Starts a background daemon inside the namespace with its stdout and stderr appended to
    /// `log` (a daemon that logs per request would otherwise fill a pipe nobody reads and
    /// stall), killed on drop.
    pub fn spawn_logged(&self, program: &str, args: &[&str], log: &Path) -> Result<Proc, String> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| format!("{}: {e}", log.display()))
        };
        let mut cmd = self.cmd(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?);
        let child = cmd.spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
        Ok(Proc {
            child: Some(child),
            stdout_reader: None,
            stderr_reader: None,
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs in it, then delete it (removing its veth ends).
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A private directory under the system temp dir (mode 0700), removed with its contents on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/sensor-<prefix>-<tag>`; fails if it exists.
    pub fn new(prefix: &str) -> Result<TempDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("sensor-{prefix}-{}", unique_tag()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A veth pair between two namespaces, addressed from the benchmarking ranges.
pub struct Veth {
    /// Interface name in namespace `a`.
    pub a: String,
    /// Interface name in namespace `b`.
    pub b: String,
}

impl Veth {
    /// Creates a veth pair with one end in each namespace, both up, named `<prefix>a<tag>` and
    /// `<prefix>b<tag>`. Removed with the namespaces.
    pub fn new(prefix: &str, a: &Netns, b: &Netns) -> Result<Veth, String> {
        let tag = unique_tag();
        let (na, nb) = (format!("{prefix}a{tag}"), format!("{prefix}b{tag}"));
        if na.len() > 15 {
            return Err(format!("interface name {na} too long"));
        }
        ip(&[
            "link", "add", &na, "netns", &a.name, "type", "veth", "peer", "name", &nb, "netns",
            &b.name,
        ])?;
        a.ip(&["link", "set", &na, "up"])?;
        b.ip(&["link", "set", &nb, "up"])?;
        Ok(Veth { a: na, b: nb })
    }
}

/// A child process killed (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub child: Option<Child>,
    /// Collects stdout from the start.
    stdout_reader: Option<thread::JoinHandle<String>>,
    /// Collects stderr once [`Proc::wait_for_stderr`] took it over.
    stderr_reader: Option<thread::JoinHandle<String>>,
}

impl Proc {
    /// Spawns with piped stdout/stderr. Stdout is read as it comes, by a thread of its own:
    /// a child that prints a line per record (`sensor flows`) would otherwise block on the
    /// full pipe (64 KiB) long before [`Proc::wait_output`], and a sensor blocked on its
    /// output stops reading its ring buffer, whose overflow the test would then measure
    /// instead of the traffic.
    pub fn spawn(cmd: &mut Command) -> Result<Proc, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {cmd:?}: {e}"))?;
        let stdout_reader = child.stdout.take().map(|mut so| {
            thread::spawn(move || {
                let mut s = String::new();
                let _ = so.read_to_string(&mut s);
                s
            })
        });
        Ok(Proc {
            child: Some(child),
            stdout_reader,
            stderr_reader: None,
        })
    }

    /// Sends SIGTERM (to `ip netns exec`, which execs the program, so the program gets it).
    pub fn terminate(&mut self) {
        if let Some(c) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// Waits up to `limit` for exit, collecting stdout and stderr; kills it past the limit.
    pub fn wait_output(mut self, limit: Duration) -> Result<(ExitStatus, String, String), String> {
        let mut child = self.child.take().ok_or("process already collected")?;
        let t1 = self.stdout_reader.take().ok_or("no stdout")?;
        let t2 = match (self.stderr_reader.take(), child.stderr.take()) {
            (Some(reader), _) => reader,
            (None, Some(mut se)) => thread::spawn(move || {
                let mut s = String::new();
                let _ = se.read_to_string(&mut s);
                s
            }),
            (None, None) => return Err("no stderr".into()),
        };
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                break st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let st = child.wait().map_err(|e| e.to_string())?;
                return Err(format!(
                    "process did not exit within {limit:?} ({st}); stderr: {}",
                    t2.join().unwrap_or_default()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        };
        Ok((
            status,
            t1.join().unwrap_or_default(),
            t2.join().unwrap_or_default(),
        ))
    }

    /// Reads stderr lines until one contains `needle` (or `limit` passes). The rest of stderr
    /// keeps flowing into a background reader so the child never blocks on a full pipe.
    pub fn wait_for_stderr(&mut self, needle: &str, limit: Duration) -> Result<(), String> {
        let child = self.child.as_mut().ok_or("process already collected")?;
        let se = child.stderr.take().ok_or("stderr already taken")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let wanted = needle.to_string();
        self.stderr_reader = Some(thread::spawn(move || {
            let needle = wanted;
            let mut seen = String::new();
            let mut found = false;
            for line in BufReader::new(se).lines().map_while(Result::ok) {
                if !found && line.contains(&needle) {
                    found = true;
                    let _ = tx.send(Ok(()));
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            if !found {
                let _ = tx.send(Err(seen.clone()));
            }
            seen
        }));
        match rx.recv_timeout(limit) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(seen)) => Err(format!("process ended without printing {needle:?}: {seen}")),
            Err(_) => Err(format!("no {needle:?} on stderr within {limit:?}")),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two namespaces joined by a veth pair: `client` (198.18.X.1) and `server` (198.18.X.2), with
/// IPv6 2001:2:0:X::1 and ::2. `X` is unique per pair so that parallel labs never share addresses
/// in logs; the namespaces are isolated anyway.
pub struct Pair {
    pub client: Netns,
    pub server: Netns,
    pub veth: Veth,
    pub client_v4: String,
    pub server_v4: String,
    pub client_v6: String,
    pub server_v6: String,
}

impl Pair {
    pub fn new() -> Result<Pair, String> {
        static SUBNET: AtomicU32 = AtomicU32::new(0);
        let x = (std::process::id() + SUBNET.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
        let client = Netns::new("c")?;
        let server = Netns::new("s")?;
        let veth = Veth::new("v", &client, &server)?;
        let p = Pair {
            client_v4: format!("198.18.{x}.1"),
            server_v4: format!("198.18.{x}.2"),
            client_v6: format!("2001:2:0:{x:x}::1"),
            server_v6: format!("2001:2:0:{x:x}::2"),
            client,
            server,
            veth,
        };
        p.client.ip(&[
            "addr",
            "add",
            &format!("{}/24", p.client_v4),
            "dev",
            &p.veth.a,
        ])?;
        p.server.ip(&[
            "addr",
            "add",
            &format!("{}/24", p.server_v4),
            "dev",
            &p.veth.b,
        ])?;
        p.client.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", p.client_v6),
            "dev",
            &p.veth.a,
            "nodad",
        ])?;
        p.server.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", p.server_v6),
            "dev",
            &p.veth.b,
            "nodad",
        ])?;
        Ok(p)
    }
}
