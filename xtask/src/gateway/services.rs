//! The lab's real services on the server host: an HTTP server, dnsmasq, OpenSSH's sshd and a
//! UDP responder, each bounded by `timeout` (or its own limit) and killed on drop, with their
//! configuration, keys and logs in the scenario's temporary directory.
use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use super::{
    DNS_NAMES, DNS_SERVER, GUESS_TARGET, GatewayLab, HTTP_SERVER, SSH_SERVER, UDP_RR_PORT,
    UDP_RR_SERVER, traffic_script,
};
use crate::lab::{Proc, TempDir};

/// The lab's servers, each bounded by `timeout` and killed on drop.
pub(super) struct Services {
    _procs: Vec<Proc>,
}

/// Files of the SSH setup: the client's key and the server's known host key.
pub(super) struct SshClient {
    key: PathBuf,
    /// A key the server does not authorise: every login with it is refused.
    guess_key: PathBuf,
    known_hosts: PathBuf,
}

impl SshClient {
    /// The shell command of one non-interactive session (key login) running `command` on the
    /// lab server.
    pub(super) fn command(&self, command: &str) -> String {
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o BatchMode=yes \
             -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \
             -o ConnectTimeout=5 -o LogLevel=ERROR root@{SSH_SERVER} {command}",
            self.key.display(),
            self.known_hosts.display()
        )
    }
}

impl SshClient {
    /// The shell command of one refused login from `source` to the guessing target: a
    /// password guess's session (key exchange, one refused authentication, close).
    pub(super) fn guess(&self, source: &str) -> String {
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o BatchMode=yes \
             -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null \
             -o StrictHostKeyChecking=no -o ConnectTimeout=5 -o LogLevel=QUIET \
             -b {source} root@{GUESS_TARGET} true",
            self.guess_key.display()
        )
    }
}

fn keygen(path: &Path) -> Result<(), String> {
    crate::lab::run(Command::new("ssh-keygen").args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "sensor-lab",
        "-f",
        &path.to_string_lossy(),
    ]))
    .map(drop)
}

impl Services {
    /// Starts the servers on the server host and checks each answers (from the server host
    /// itself: over loopback, so the checks are not lab traffic).
    pub(super) fn start(
        lab: &GatewayLab,
        dir: &TempDir,
        secs: u64,
    ) -> Result<(Services, SshClient), String> {
        let bound = secs.to_string();
        let mut procs = Vec::new();
        procs.push(start_http(lab, dir, &bound)?);
        procs.push(start_dns(lab, dir, &bound)?);
        let (sshd, ssh) = start_ssh(lab, dir, &bound)?;
        procs.push(sshd);
        procs.push(start_udp_rr(lab, dir, &bound)?);
        let services = Services { _procs: procs };
        wait_until_answering(lab, dir, &ssh)?;
        Ok((services, ssh))
    }
}

/// HTTP: a small page and a larger file.
pub fn start_http(lab: &GatewayLab, dir: &TempDir, bound: &str) -> Result<Proc, String> {
    let www = dir.join("www");
    std::fs::create_dir(&www).map_err(|e| format!("{}: {e}", www.display()))?;
    std::fs::write(www.join("index.html"), "<html><body>lab</body></html>\n")
        .map_err(|e| e.to_string())?;
    std::fs::write(www.join("file.bin"), vec![b'x'; 64 * 1024]).map_err(|e| e.to_string())?;
    lab.server.spawn_logged(
        "timeout",
        &[
            bound,
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            HTTP_SERVER,
            "--directory",
            &www.to_string_lossy(),
        ],
        &dir.join("http.log"),
    )
}

/// DNS: dnsmasq with a few local names, on the lab address only, no upstream.
fn start_dns(lab: &GatewayLab, dir: &TempDir, bound: &str) -> Result<Proc, String> {
    let mut dns_args: Vec<String> = [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        "--local=/lab.test/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    dns_args.push(format!("--listen-address={DNS_SERVER}"));
    dns_args.push(format!(
        "--pid-file={}",
        dir.join("dnsmasq.pid").to_string_lossy()
    ));
    dns_args.push(format!(
        "--log-facility={}",
        dir.join("dnsmasq.log").to_string_lossy()
    ));
    dns_args.extend(
        DNS_NAMES
            .iter()
            .map(|(name, a)| format!("--host-record={name},{a}")),
    );
    let mut args: Vec<&str> = vec![bound, "dnsmasq"];
    args.extend(dns_args.iter().map(String::as_str));
    lab.server
        .spawn_logged("timeout", &args, &dir.join("dnsmasq.out"))
}

/// SSH: sshd with its own configuration and host key, key login only, no PAM, on the lab
/// address only; with the client's files.
fn start_ssh(lab: &GatewayLab, dir: &TempDir, bound: &str) -> Result<(Proc, SshClient), String> {
    let host_key = dir.join("ssh_host_ed25519_key");
    let client_key = dir.join("client_ed25519_key");
    let guess_key = dir.join("guess_ed25519_key");
    keygen(&host_key)?;
    keygen(&client_key)?;
    keygen(&guess_key)?;
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()));
    let authorized = dir.join("authorized_keys");
    std::fs::write(&authorized, read(client_key.with_extension("pub"))?)
        .map_err(|e| e.to_string())?;
    let known_hosts = dir.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("{SSH_SERVER} {}", read(host_key.with_extension("pub"))?),
    )
    .map_err(|e| e.to_string())?;
    let sshd_config = dir.join("sshd_config");
    std::fs::write(
        &sshd_config,
        format!(
            "ListenAddress {SSH_SERVER}:22\n\
             ListenAddress {GUESS_TARGET}:22\n\
             HostKey {}\n\
             AuthorizedKeysFile {}\n\
             PidFile none\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             AllowUsers root\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             StrictModes no\n\
             UseDNS no\n\
             PrintMotd no\n\
             X11Forwarding no\n\
             AllowTcpForwarding no\n\
             AllowAgentForwarding no\n\
             PermitTunnel no\n\
             LogLevel ERROR\n",
            host_key.display(),
            authorized.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    // sshd's privilege separation directory; Debian's service unit creates it at start.
    let privsep = Path::new("/run/sshd");
    if !privsep.exists() {
        std::fs::create_dir_all(privsep).map_err(|e| format!("{}: {e}", privsep.display()))?;
    }
    let sshd = lab.server.spawn_logged(
        "timeout",
        &[
            bound,
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
            &sshd_config.to_string_lossy(),
        ],
        &dir.join("sshd.log"),
    )?;
    let ssh = SshClient {
        key: client_key,
        guess_key,
        known_hosts,
    };
    Ok((sshd, ssh))
}

/// UDP request/response: 48-byte requests and answers on NTP's port.
pub fn start_udp_rr(lab: &GatewayLab, dir: &TempDir, bound: &str) -> Result<Proc, String> {
    lab.server.spawn_logged(
        "python3",
        &[
            &traffic_script("udp_server.py"),
            UDP_RR_SERVER,
            &UDP_RR_PORT.to_string(),
            "48",
            bound,
        ],
        &dir.join("udp_rr.log"),
    )
}

/// Waits (15 s at most) until each service answers, checked from the server host over
/// loopback; the error names the first that does not, with the services' logs.
fn wait_until_answering(lab: &GatewayLab, dir: &TempDir, ssh: &SshClient) -> Result<(), String> {
    let checks: [(&str, String); 4] = [
        (
            "http",
            format!("curl -sf -o /dev/null --max-time 2 http://{HTTP_SERVER}/"),
        ),
        (
            "dns",
            format!(
                "dig @{DNS_SERVER} +short +tries=1 +time=1 www.lab.test A | grep -qx {HTTP_SERVER}"
            ),
        ),
        ("ssh", ssh.command("true")),
        (
            "udp-rr",
            format!(
                "[ \"$(python3 {} {UDP_RR_SERVER} {UDP_RR_PORT} 48 1)\" = 1 ]",
                traffic_script("udp_client.py")
            ),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    for (name, check) in checks {
        loop {
            let st = lab
                .server
                .cmd("timeout")
                .args(["10", "sh", "-c", &check])
                .output()
                .map_err(|e| e.to_string())?;
            if st.status.success() {
                break;
            }
            if Instant::now() > deadline {
                let logs: String = [
                    "http.log",
                    "dnsmasq.out",
                    "dnsmasq.log",
                    "sshd.log",
                    "udp_rr.log",
                ]
                .iter()
                .map(|f| {
                    format!(
                        "--- {f}:\n{}\n",
                        std::fs::read_to_string(dir.join(f)).unwrap_or_default()
                    )
                })
                .collect();
                return Err(format!(
                    "the lab's {name} service does not answer ({check}): {}{}\n{logs}",
                    String::from_utf8_lossy(&st.stdout),
                    String::from_utf8_lossy(&st.stderr)
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}
