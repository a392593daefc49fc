//! The lab's traffic: bounded shell loops of real clients on the client hosts (normal traffic,
//! one connection per round) and the attacks from the attacker host.
use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    AttackRun, CLIENT, CLIENT2, DNS_NAMES, DNS_SERVER, FLOOD_SOURCE, FLOOD_SYNS, FLOOD_TARGET,
    GUESS_SESSIONS, GUESS_SOURCE, GatewayLab, HTTP_SERVER, Made, PING_FLOOD_PACKETS,
    PING_FLOOD_SOURCE, PING_FLOOD_TARGET, PING_SERVER, PORT_SCAN_SOURCE, PORT_SCAN_TARGET,
    SWEEP_HOSTS, SWEEP_RANGE, SWEEP_SOURCE, TCP_SCAN_PORTS, UDP_RR_PORT, UDP_RR_SERVER,
    UDP_SCAN_PORTS, UDP_SCAN_SOURCE, UDP_SCAN_TARGET, services::SshClient,
};
use crate::lab::Netns;

pub(super) fn traffic_script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/traffic")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

pub(super) fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A shell loop on a host, bounded by a count and by `timeout`: runs `body` (one connection per
/// round, `$n` is the round number) every `pause` seconds for `secs` seconds and at most `max`
/// rounds, and prints the rounds run and how many succeeded (`body` exited 0). Seconds are
/// counted on the boot clock (`/proc/uptime`), which a step of the wall clock (NTP, a paused
/// virtual machine) does not move.
pub fn host_loop(ns: &Netns, secs: u64, max: u32, body: &str, pause: &str) -> Command {
    let mut c = ns.cmd("timeout");
    c.args([
        &(secs + 15).to_string(),
        "sh",
        "-c",
        &format!(
            "now() {{ cut -d. -f1 /proc/uptime; }}; end=$(($(now)+{secs})); n=0; ok=0; \
             while [ $(now) -lt $end ] && [ $n -lt {max} ]; do \
             if {body}; then ok=$((ok+1)); fi; n=$((n+1)); sleep {pause}; done; echo $n $ok"
        ),
    ]);
    c
}

/// Starts the normal traffic: one bounded loop per (host, kind) for `secs` seconds, each in a
/// thread of its own that returns what its loop made.
pub(super) fn start_normal(
    lab: &GatewayLab,
    ssh: &SshClient,
    secs: u64,
) -> Vec<thread::JoinHandle<(&'static str, Made)>> {
    let udp_client = traffic_script("udp_client.py");
    let names: Vec<&str> = DNS_NAMES.iter().map(|(n, _)| *n).collect();
    // One connection per round. DNS and UDP rounds use their own source port each (the round
    // number), so that no two rounds share a 5-tuple within the idle timeout and the counts are
    // exact.
    let dig = |src: &str, base: u32| {
        format!(
            "set -- {names}; shift $((n % {count})); dig @{DNS_SERVER} -b {src}#$(({base}+n)) +tries=1 +time=2 +short \"$1\" A | grep -q .",
            names = names.join(" "),
            count = names.len(),
        )
    };
    let curl =
        |path: &str| format!("curl -sf -o /dev/null --max-time 3 http://{HTTP_SERVER}/{path}");
    let udp_rr = format!(
        "[ \"$(python3 {udp_client} {UDP_RR_SERVER} {UDP_RR_PORT} 48 1 0 $((30000+n)))\" = 1 ]"
    );
    let ping = |count: u32, interval: &str| {
        format!("ping -q -c {count} -i {interval} -W 1 {PING_SERVER} >/dev/null")
    };
    // (kind, host, one round, pause between rounds in seconds)
    let normal: [(&'static str, &Netns, String, &str); 9] = [
        ("http", &lab.client, curl("index.html"), "0.5"),
        ("http", &lab.client2, curl("file.bin"), "0.8"),
        ("dns", &lab.client, dig(CLIENT, 20000), "0.5"),
        ("dns", &lab.client2, dig(CLIENT2, 20000), "1"),
        ("ssh", &lab.client, ssh.command("uname -sr >/dev/null"), "3"),
        ("ssh", &lab.client2, ssh.command("ls / >/dev/null"), "5"),
        ("udp-rr", &lab.client, udp_rr, "1"),
        ("ping", &lab.client, ping(2, "0.2"), "1"),
        ("ping", &lab.client2, ping(3, "0.5"), "2"),
    ];
    normal
        .into_iter()
        .map(|(name, host, body, pause)| {
            let mut cmd = host_loop(host, secs, 1000, &body, pause);
            thread::spawn(move || {
                let out = cmd.output();
                let text = out
                    .as_ref()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let mut it = text
                    .split_whitespace()
                    .map(|w| w.parse::<u64>().unwrap_or(0));
                let made = Made {
                    connections: it.next().unwrap_or(0),
                    succeeded: it.next().unwrap_or(0),
                };
                (name, made)
            })
        })
        .collect()
}

/// Connections each generator made, by kind: the normal loops' (joined) and the attacks'.
pub(super) fn tally(
    handles: Vec<thread::JoinHandle<(&'static str, Made)>>,
    attacks: &[AttackRun],
) -> Result<BTreeMap<&'static str, Made>, String> {
    let mut generated: BTreeMap<&'static str, Made> = BTreeMap::new();
    for h in handles {
        let (name, made) = h.join().map_err(|_| "generator thread panicked")?;
        let e = generated.entry(name).or_default();
        e.connections += made.connections;
        e.succeeded += made.succeeded;
    }
    for a in attacks {
        generated.insert(a.kind, a.made);
    }
    Ok(generated)
}

/// How an attack's tool says how many connections it made.
#[derive(Clone, Copy)]
enum Size {
    /// nmap: one per port or host, once it ran to its end.
    Nmap(u32),
    /// hping3: one per packet, from its statistics.
    Hping3,
    /// One conversation (`ping -f`: one identifier), once all its packets were sent.
    Conversation(u32),
    /// The guessing script: one connection per attempt, each worker's count on a line
    /// `sessions N`.
    Sessions(u32),
}

/// Workers of the guessing attack: 4, the tasks `hydra` recommends against SSH (under sshd's
/// `MaxStartups`, 10 unauthenticated connections at once).
const GUESS_WORKERS: u32 = 4;

/// The attacks, one after another from the attacker host, each at its second of the traffic
/// phase (`started`) and from its own address; each tool bounded by its size and `timeout`.
pub(super) fn run_attacks(
    lab: &GatewayLab,
    ssh: &SshClient,
    started: Instant,
    say: &dyn Fn(&str),
) -> Result<Vec<AttackRun>, String> {
    let iface = &lab.attacker_if;
    // (kind, second of the traffic phase, tool, arguments, how it says the connections it made).
    let guess_script = format!(
        "w() {{ i=0; while [ $i -lt {per} ]; do {cmd}; i=$((i+1)); done; echo sessions $i; }}; \
         for k in $(seq {GUESS_WORKERS}); do w & done; wait",
        per = GUESS_SESSIONS / GUESS_WORKERS,
        cmd = ssh.guess(GUESS_SOURCE),
    );
    let plan: [(&'static str, u64, &str, String, Size); 6] = [
        // 5,000 echo requests as fast as the replies come, one identifier: one conversation,
        // which the model reads as one ping and the volume rule flags by its rate.
        (
            "ping-flood",
            2,
            "ping",
            format!("-q -f -c {PING_FLOOD_PACKETS} -I {PING_FLOOD_SOURCE} {PING_FLOOD_TARGET}"),
            Size::Conversation(PING_FLOOD_PACKETS),
        ),
        // 2000 SYNs at 1 kpps, source port incrementing: 2000 distinct connection attempts,
        // none answered.
        (
            "syn-flood",
            4,
            "hping3",
            format!("-q -S -a {FLOOD_SOURCE} -p 443 -i u500 -c {FLOOD_SYNS} {FLOOD_TARGET}"),
            Size::Hping3,
        ),
        (
            "port-scan",
            10,
            "nmap",
            format!(
                "-sS -n -Pn -e {iface} -S {PORT_SCAN_SOURCE} --max-retries 0 -T4 -p 1-{TCP_SCAN_PORTS} {PORT_SCAN_TARGET}"
            ),
            Size::Nmap(TCP_SCAN_PORTS),
        ),
        (
            "udp-scan",
            15,
            "nmap",
            format!(
                "-sU -n -Pn -e {iface} -S {UDP_SCAN_SOURCE} --max-retries 0 --min-rate 1000 -p 1-{UDP_SCAN_PORTS} {UDP_SCAN_TARGET}"
            ),
            Size::Nmap(UDP_SCAN_PORTS),
        ),
        (
            "ping-sweep",
            20,
            "nmap",
            format!("-sn -PE -n -e {iface} -S {SWEEP_SOURCE} --max-retries 0 {SWEEP_RANGE}"),
            Size::Nmap(SWEEP_HOSTS),
        ),
        // Password guessing on SSH: each login refused, four at a time.
        (
            "ssh-guessing",
            22,
            "sh",
            guess_script,
            Size::Sessions(GUESS_SESSIONS),
        ),
    ];
    let mut runs = Vec::new();
    for (kind, at, program, args, size) in plan {
        if let Some(d) = Duration::from_secs(at).checked_sub(started.elapsed()) {
            thread::sleep(d);
        }
        say(&format!("attack: {kind}: {program} {args}"));
        let start_unix_ns = unix_now_ns();
        let out = lab
            .attacker
            .cmd("timeout")
            // The guessing's sessions are each a key exchange: slower on a busy machine.
            .arg(if matches!(size, Size::Sessions(_)) {
                "40"
            } else {
                "20"
            })
            .arg(program)
            // The script is one argument; the tools' arguments are words.
            .args(match size {
                Size::Sessions(_) => vec!["-c", args.as_str()],
                _ => args.split_whitespace().collect(),
            })
            .output()
            .map_err(|e| format!("{kind}: {program}: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let connections = match size {
            // nmap ran to its end (not cut short by `timeout`).
            Size::Nmap(n) => {
                if !out.status.success() || !text.contains("Nmap done") {
                    return Err(format!(
                        "{kind}: nmap did not finish ({}): {text}",
                        out.status
                    ));
                }
                u64::from(n)
            }
            // Every request sent: "5000 packets transmitted, 5000 received, ...".
            Size::Conversation(n) => {
                if !text.contains(&format!("{n} packets transmitted")) {
                    return Err(format!("{kind}: {program} did not send {n}: {text}"));
                }
                1
            }
            // Every worker ran its share to the end.
            Size::Sessions(n) => {
                let made: u64 = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("sessions ")?.trim().parse::<u64>().ok())
                    .sum();
                if made != u64::from(n) {
                    return Err(format!("{kind}: {made} of {n} sessions made: {text}"));
                }
                made
            }
            // hping3 exits 1 when nothing answered (the flood's point); its statistics say
            // what it sent: "2000 packets transmitted, 0 packets received, ...".
            Size::Hping3 => text
                .lines()
                .find_map(|l| l.split_once(" packets transmitted")?.0.trim().parse().ok())
                .ok_or_else(|| format!("{kind}: hping3 printed no statistics: {text}"))?,
        };
        runs.push(AttackRun {
            kind,
            start_unix_ns,
            made: Made {
                connections,
                succeeded: connections,
            },
        });
    }
    Ok(runs)
}
