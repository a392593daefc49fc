//! The Debian package (`cargo xtask dist`), built with `dpkg-deb` from a tree generated here, so
//! that every file, permission and maintainer script is in one place and the build needs no
//! tool beyond dpkg-dev (`cargo xtask bootstrap` installs it, and lintian to check the result).
//!
//! What it installs:
//! * `/usr/bin/sensor` (stripped) and its man page, `sensor(1)`, made from the `--help` texts;
//! * `/usr/share/sensor/`: the model, the Grafana dashboard, the Prometheus alert rules and an
//!   example scrape configuration with file-based service discovery;
//! * `/etc/sensor/sensor.toml` (a conffile: local edits survive upgrades) and
//!   `/etc/logrotate.d/sensor`;
//! * `/lib/systemd/system/sensor.service`, not enabled on installation: the interfaces to
//!   watch must be set first;
//! * `/usr/share/doc/sensor/`: the README, the reference pages of `docs/`, the model card.
//!
//! The maintainer scripts create the `sensor` system user on configuration and, on purge,
//! remove it with its log directory and systemd's state about the unit: nothing is left.
use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::lab::{TempDir, run};

/// The package's name, and the name of its user, unit and directories.
pub const PACKAGE: &str = "sensor";
/// Where the package puts the model; `deploy/sensor.toml` must point there.
pub const MODEL_PATH: &str = "/usr/share/sensor/nsl-kdd-flow.model";
const MAINTAINER: &str = "Network anomaly sensor maintainers <maintainers@example.invalid>";

/// What to package.
#[derive(Clone, Debug)]
pub struct DistOptions {
    /// The `sensor` binary (release build); stripped into the package.
    pub sensor: PathBuf,
    /// Directory the `.deb` is written to.
    pub out_dir: PathBuf,
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// The workspace's version (`[workspace.package] version`), the package's version.
pub fn version() -> Result<String, String> {
    let path = workspace_root().join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    table
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{}: no [workspace.package] version", path.display()))
}

fn output(cmd: &mut Command) -> Result<String, String> {
    run(cmd).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The time the package's files carry: the last commit's, so that two builds of one commit
/// are identical (`SOURCE_DATE_EPOCH`), or now outside a git checkout.
fn source_date() -> (u64, String) {
    let git = |fmt: &str| {
        output(
            Command::new("git")
                .args(["log", "-1", &format!("--format={fmt}")])
                .current_dir(workspace_root()),
        )
        .ok()
        .filter(|s| !s.is_empty())
    };
    match (git("%ct").and_then(|s| s.parse().ok()), git("%aD")) {
        (Some(epoch), Some(rfc2822)) => (epoch, rfc2822),
        _ => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let date = output(Command::new("date").args(["-R", "-d", &format!("@{now}")]))
                .unwrap_or_default();
            (now, date)
        }
    }
}

/// Builds the tree under `root` (a `DEBIAN/` directory and the files in their installed places).
struct Tree {
    root: PathBuf,
}

impl Tree {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn write(&self, rel: &str, data: &[u8], mode: u32) -> Result<(), String> {
        let path = self.path(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    fn copy(&self, rel: &str, from: &Path, mode: u32) -> Result<(), String> {
        let data = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
        self.write(rel, &data, mode)
    }

    /// Writes `data` gzip-compressed (`gzip -9n`: no name or time in the header).
    fn write_gz(&self, rel: &str, data: &[u8]) -> Result<(), String> {
        let mut child = Command::new("gzip")
            .args(["-9n", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("gzip: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("gzip: no stdin")?;
        let input = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().map_err(|e| format!("gzip: {e}"))?;
        writer
            .join()
            .map_err(|_| "gzip writer panicked")?
            .map_err(|e| format!("gzip: {e}"))?;
        if !out.status.success() {
            return Err(format!("gzip failed ({})", out.status));
        }
        self.write(rel, &out.stdout, 0o644)
    }

    /// Every regular file under the tree except `DEBIAN/`, as paths relative to the root.
    fn files(&self) -> Result<Vec<String>, String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) -> Result<(), String> {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, out)?;
                } else {
                    let rel = p.strip_prefix(root).map_err(|e| e.to_string())?;
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out)?;
        out.retain(|f| !f.starts_with("DEBIAN/"));
        Ok(out)
    }
}

/// Builds the package; returns the path of the `.deb`.
pub fn build_deb(opts: &DistOptions) -> Result<PathBuf, String> {
    let src = workspace_root();
    let version = version()?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let (epoch, date) = source_date();
    let work = TempDir::new("dist")?;
    let tree = Tree {
        root: work.join("root"),
    };
    std::fs::create_dir(&tree.root).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&tree.root, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let bin = install_binary(&tree, opts)?;
    install_data(&tree, &src)?;
    install_config(&tree, &src)?;
    install_docs(&tree, &src, opts, &version, epoch, &date)?;
    write_control_files(&tree, &work, &bin, &version, &arch)?;

    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| format!("{}: {e}", opts.out_dir.display()))?;
    let deb = opts.out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree.root)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", epoch.to_string()))?;
    Ok(deb)
}

/// The binary, stripped of its debug information and build notes; returns its path.
fn install_binary(tree: &Tree, opts: &DistOptions) -> Result<PathBuf, String> {
    let bin = tree.path("/usr/bin/sensor");
    std::fs::create_dir_all(bin.parent().ok_or("no parent")?).map_err(|e| e.to_string())?;
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
            "-o",
        ])
        .arg(&bin)
        .arg(&opts.sensor))
    .map_err(|e| format!("stripping the binary: {e}"))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(bin)
}

/// Data and examples the operator points other programs at.
fn install_data(tree: &Tree, src: &Path) -> Result<(), String> {
    tree.copy(MODEL_PATH, &src.join("models/nsl-kdd-flow.model"), 0o644)?;
    tree.copy(
        "/usr/share/sensor/grafana/sensor.json",
        &src.join("deploy/grafana/sensor.json"),
        0o644,
    )?;
    for f in ["sensor.rules.yml", "prometheus.yml", "sensor-targets.yml"] {
        tree.copy(
            &format!("/usr/share/sensor/prometheus/{f}"),
            &src.join("deploy").join(f),
            0o644,
        )?;
    }
    Ok(())
}

/// Configuration: the shipped settings, which must use the packaged model.
fn install_config(tree: &Tree, src: &Path) -> Result<(), String> {
    let config = src.join("deploy/sensor.toml");
    let text =
        std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    if !text.contains(&format!("model = \"{MODEL_PATH}\"")) {
        return Err(format!(
            "{}: `model` must be \"{MODEL_PATH}\", where the package installs it",
            config.display()
        ));
    }
    tree.write("/etc/sensor/sensor.toml", text.as_bytes(), 0o644)?;
    tree.write("/etc/logrotate.d/sensor", LOGROTATE.as_bytes(), 0o644)?;
    tree.copy(
        "/lib/systemd/system/sensor.service",
        &src.join("deploy/sensor.service"),
        0o644,
    )?;
    Ok(())
}

/// Documentation: README, model card, docs pages, copyright, changelog and man page.
fn install_docs(
    tree: &Tree,
    src: &Path,
    opts: &DistOptions,
    version: &str,
    epoch: u64,
    date: &str,
) -> Result<(), String> {
    let doc = "/usr/share/doc/sensor";
    tree.copy(&format!("{doc}/README.md"), &src.join("README.md"), 0o644)?;
    tree.copy(
        &format!("{doc}/MODEL_CARD.md"),
        &src.join("models/MODEL_CARD.md"),
        0o644,
    )?;
    let docs = src.join("docs");
    let mut pages: Vec<_> = std::fs::read_dir(&docs)
        .map_err(|e| format!("{}: {e}", docs.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    for p in pages {
        let name = p
            .file_name()
            .ok_or("no name")?
            .to_string_lossy()
            .into_owned();
        tree.copy(&format!("{doc}/docs/{name}"), &p, 0o644)?;
    }
    let year = output(Command::new("date").args(["-u", "-d", &format!("@{epoch}"), "+%Y"]))?;
    tree.write(
        &format!("{doc}/copyright"),
        copyright(src, &year)?.as_bytes(),
        0o644,
    )?;
    tree.write_gz(
        &format!("{doc}/changelog.gz"),
        format!(
            "{PACKAGE} ({version}) unstable; urgency=medium\n\n  * Built from the project's \
             repository; its git history is the changelog.\n\n -- {MAINTAINER}  {date}\n"
        )
        .as_bytes(),
    )?;
    let man = crate::manpage::render(&opts.sensor, version, epoch)?;
    tree.write_gz("/usr/share/man/man1/sensor.1.gz", man.as_bytes())?;
    tree.write(
        "/usr/share/lintian/overrides/sensor",
        LINTIAN_OVERRIDES.as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// Control files: control, conffiles, md5sums and the maintainer scripts.
fn write_control_files(
    tree: &Tree,
    work: &TempDir,
    bin: &Path,
    version: &str,
    arch: &str,
) -> Result<(), String> {
    let files = tree.files()?;
    let conffiles: Vec<String> = files
        .iter()
        .filter(|f| f.starts_with("etc/"))
        .map(|f| format!("/{f}"))
        .collect();
    let mut md5sums = String::new();
    let mut installed_kib = 0u64;
    for f in &files {
        let len = std::fs::metadata(tree.root.join(f))
            .map_err(|e| e.to_string())?
            .len();
        installed_kib += len.div_ceil(1024);
        if !conffiles.contains(&format!("/{f}")) {
            let sum = output(Command::new("md5sum").arg(f).current_dir(&tree.root))?;
            md5sums.push_str(&sum);
            md5sums.push('\n');
        }
    }
    let depends = shlib_depends(work, bin)?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         Depends: adduser, {depends}\n\
         Suggests: prometheus, logrotate\n\
         Section: net\n\
         Priority: optional\n\
         Description: network anomaly sensor for Linux gateways (eBPF/XDP)\n \
         An XDP program (and a TC egress program) accounts every packet into\n \
         per-connection records; a daemon turns each finished connection into a KDD\n \
         connection record, scores it with a tree ensemble trained on NSL-KDD, groups\n \
         anomalous connections into incidents (scans, sweeps, floods) and reports them\n \
         as JSON lines and Prometheus metrics.\n \
         .\n \
         The package ships the model, a hardened systemd unit, alert rules and a\n \
         Grafana dashboard. It needs Linux 6.6 or later.\n"
    );
    tree.write("DEBIAN/control", control.as_bytes(), 0o644)?;
    tree.write(
        "DEBIAN/conffiles",
        format!("{}\n", conffiles.join("\n")).as_bytes(),
        0o644,
    )?;
    tree.write("DEBIAN/md5sums", md5sums.as_bytes(), 0o644)?;
    tree.write("DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    tree.write("DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    tree.write("DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
    Ok(())
}

/// The binary's library dependencies as Debian package relations (`dpkg-shlibdeps`).
fn shlib_depends(work: &TempDir, bin: &Path) -> Result<String, String> {
    // dpkg-shlibdeps wants to run in a source tree: a minimal debian/control is enough.
    let dir = work.join("shlibdeps");
    std::fs::create_dir_all(dir.join("debian")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )
    .map_err(|e| e.to_string())?;
    let out = output(
        Command::new("dpkg-shlibdeps")
            .arg("-O")
            .arg(format!("-e{}", bin.display()))
            .current_dir(&dir),
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .ok_or_else(|| format!("dpkg-shlibdeps printed no dependencies: {out}"))
}

/// The copyright file (machine-readable format).
fn copyright(src: &Path, year: &str) -> Result<String, String> {
    let cargo = src.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo).map_err(|e| format!("{}: {e}", cargo.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
    let package = table
        .get("workspace")
        .and_then(|w| w.get("package"))
        .ok_or("no [workspace.package]")?;
    let license = package
        .get("license")
        .and_then(|l| l.as_str())
        .ok_or("no license")?;
    if license != "MIT OR Apache-2.0" {
        return Err(format!(
            "the copyright file states MIT or Apache-2.0, the workspace says {license}: update dist.rs"
        ));
    }
    let repository = package
        .get("repository")
        .and_then(|r| r.as_str())
        .unwrap_or_default();
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: {PACKAGE}\n\
         Source: {repository}\n\
         Comment: The binary links Rust crates from crates.io statically, each under its own\n \
         license (MIT, Apache-2.0 and compatible ones); `cargo tree` in the source lists them.\n\
         \n\
         Files: *\n\
         Copyright: {year} The network anomaly sensor authors\n\
         License: MIT or Apache-2.0\n\
         \n\
         Files: usr/share/sensor/nsl-kdd-flow.model\n\
         Copyright: {year} The network anomaly sensor authors\n\
         License: MIT or Apache-2.0\n\
         Comment: A model trained on the NSL-KDD data set (Canadian Institute for\n \
         Cybersecurity, University of New Brunswick); see MODEL_CARD.md.\n\
         \n\
         License: Apache-2.0\n \
         On Debian systems, the full text of the Apache License, Version 2.0 can be\n \
         found in /usr/share/common-licenses/Apache-2.0.\n\
         \n\
         License: MIT\n{MIT}"
    ))
}

const MIT: &str = " Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the \"Software\"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.
";

/// The alert log grows by a line per incident change; the sensor keeps its file open, so the
/// rotation copies and truncates it.
const LOGROTATE: &str = "/var/log/sensor/alerts.jsonl {
\tsu sensor sensor
\tdaily
\trotate 14
\tmissingok
\tnotifempty
\tcompress
\tdelaycompress
\tcopytruncate
}
";

/// The lintian tags that do not apply, each with the reason (shipped in the package, as
/// Debian does, so that anyone running lintian sees them).
const LINTIAN_OVERRIDES: &str = "\
# Rust does not call glibc's fortifiable functions (memcpy, sprintf, ...) through the
# _FORTIFY_SOURCE wrappers: its own code is bounds-checked.
sensor: hardening-no-fortify-functions [usr/bin/sensor]
# The sensor's hardening (unprivileged user, capabilities, system-call filter) lives in its
# systemd unit; an init.d script would run it as root without any of it.
sensor: package-supports-alternative-init-but-no-init.d-script [lib/systemd/system/sensor.service]
# Bytes of the embedded eBPF object and of compressed tables, not words.
sensor: spelling-error-in-binary *
";

/// Creates the system user, then what debhelper's dh_installsystemd writes for a unit that is
/// not enabled on installation (`--no-enable`): an operator's enabling survives upgrades, a
/// running sensor is restarted on upgrade.
const POSTINST: &str = r#"#!/bin/sh
set -e

if [ "$1" = "configure" ]; then
	adduser --system --group --quiet --home /nonexistent --no-create-home sensor
fi

if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ]; then
	if deb-systemd-helper debian-installed 'sensor.service'; then
		deb-systemd-helper unmask 'sensor.service' >/dev/null || true
		if deb-systemd-helper --quiet was-enabled 'sensor.service'; then
			deb-systemd-helper enable 'sensor.service' >/dev/null || true
		fi
	fi
	deb-systemd-helper update-state 'sensor.service' >/dev/null || true
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			deb-systemd-invoke try-restart 'sensor.service' >/dev/null || true
		fi
	fi
fi
"#;

const PRERM: &str = r#"#!/bin/sh
set -e

if [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
	deb-systemd-invoke stop 'sensor.service' >/dev/null || true
fi
"#;

/// On purge: systemd's state about the unit, the alert log, the user and its group.
const POSTRM: &str = r#"#!/bin/sh
set -e

if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi

if [ "$1" = "remove" ] && [ -x "/usr/bin/deb-systemd-helper" ]; then
	deb-systemd-helper mask 'sensor.service' >/dev/null || true
fi

if [ "$1" = "purge" ]; then
	if [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper purge 'sensor.service' >/dev/null || true
		deb-systemd-helper unmask 'sensor.service' >/dev/null || true
	fi
	rm -rf /var/log/sensor
	if getent passwd sensor >/dev/null; then
		deluser --system --quiet sensor
	fi
	if getent group sensor >/dev/null; then
		delgroup --system --quiet sensor
	fi
fi
"#;

/// `lintian` on a package: its tags (errors, warnings and informational ones), one a line, and
/// whether it passed (no error or warning that the package does not override).
pub fn lintian(deb: &Path) -> Result<(bool, String), String> {
    let out = Command::new("lintian")
        .args([
            "--display-level",
            ">=info",
            "--fail-on",
            "error,warning",
            "--tag-display-limit",
            "0",
        ])
        .arg(deb)
        .output()
        .map_err(|e| format!("lintian: {e} (installed by `cargo xtask bootstrap`)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}
