//! Parity with Zeek's `conn.log` (issue 12): every pair of `pairs.tsv` in Zeek's test data
//! (`../shared/data/zeek` from the repository root, or `ZEEK_DATA_DIR`; see its README) is
//! replayed with `sensor replay --format zeek` (the sensor's own `conn.log`), and each of Zeek's
//! connections is looked up among its rows by 5-tuple (either orientation: Zeek flips some; ICMP keyed as Zeek keys it, the
//! type as the originator's "port" and, as the responder's, the counterpart type of a
//! request/reply pair, else the code). For the connections found it compares `conn_state`, both
//! packet counts and both byte counts, and prints a report by category with every difference
//! grouped by its reason.
//!
//! Differences that are on purpose (`docs/replay.md`, "Where records differ from Zeek on purpose")
//! or known behaviours are excluded by name: each is a [`Why`] with its explanation, found by a
//! precise rule ([`explain_packets`], [`explain_bytes`]) or named with its
//! trace in [`BY_TRACE`]. What is left is asserted at the level measured today (the `MEASURED_*`
//! constants): they catch a regression, they are not the goal. The goal of the issue: every
//! trace read, every Zeek connection matched, `conn_state` and counts in agreement.
//!
//! The data is not part of the repository. Where it is absent the test says so and passes,
//! except under `CI=true`, where it fails: CI must run it.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

/// Measured level, not the goal (which is all of them): Zeek's connections found by 5-tuple,
/// of 331 rows (the 18 not found are excluded by name: 17 SCTP rows found by their addresses,
/// 1 merged with its tunnelled twin).
const MEASURED_MATCHED: usize = 313;
/// Goal of issue 12: Zeek's TCP, UDP and ICMP connections found among the records (its
/// `unknown_transport` rows, SCTP and other IP protocols, are not in the goal's count).
const MATCHED_GOAL: f64 = 0.97;
/// Measured level of that measure: 297 of 298 (the other excluded by name, below).
const MEASURED_KDD_MATCHED: usize = 297;
/// Measured level: matched connections whose `conn_state` agrees with Zeek's.
const MEASURED_STATE: usize = 310;
/// Measured level: matched connections whose two packet counts agree with Zeek's.
const MEASURED_PACKETS: usize = 307;
/// Measured level: matched connections whose two byte counts agree with Zeek's as the two
/// `conn.log`s write them (41 of them unset in both: connections of duration 0).
const MEASURED_BYTES: usize = 307;
/// Measured level: matched connections whose `conn.log` row names the originator Zeek names
/// (`ecosystem::orientation`; the one other is `misordered-ntp.pcap`, which Zeek's NTP analyzer
/// turns round by the payload).
const MEASURED_ORIENTED: usize = 312;
/// Measured level of the second part of that: `^` in both histories or in neither.
const MEASURED_CARET: usize = 313;
/// Measured level: matched connections whose `conn_state` agrees or differs for a named reason.
const MEASURED_STATE_EXPLAINED: usize = 313;
/// Measured level: matched connections whose packet counts agree or differ for a named reason.
const MEASURED_PACKETS_EXPLAINED: usize = 313;
/// Measured level: matched connections whose byte counts agree or differ for a named reason.
const MEASURED_BYTES_EXPLAINED: usize = 313;
/// Differences (unmatched rows, and state, packet or byte mismatches) that no named reason
/// explains: none, and a new one fails the test.
const MEASURED_UNEXPLAINED: usize = 0;

/// Why a record differs from Zeek's row: on purpose, a known behaviour of the sensor, or one of
/// Zeek's (the `Zeek*` ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Why {
    /// SCTP is `sctp` with its ports here; Zeek 7 logs it as `unknown_transport` without ports
    /// (docs/replay.md). The Zeek row (`ip_proto` 132) is looked up by its two addresses.
    SctpPorts,
    /// A packet came after the entry's linger had ended (5 s after its last packet): it is
    /// missing from this row's counts and opened a record of its own (a FIN retransmitted
    /// after the linger: one of the records without a Zeek row). Both `SF`, one side exactly
    /// one packet short. (The rows of connections ended by FINs or a RST are written when
    /// their entry leaves the table, so every packet within the linger is counted:
    /// `replay::output::LogRows`.)
    PacketAfterLinger,
    /// Zeek left the byte counts unset (its duration 0) where the sensor's record has a
    /// duration, so the sensor's `conn.log` row has them (none today: the 41 rows Zeek leaves
    /// unset have duration 0 here too, and both `conn.log`s write `-`).
    ZeekUnsetBytes,
    /// Both count TCP bytes by sequence numbers (bytes missed in the capture, `missed_bytes` >
    /// 0, included; retransmitted data, `t`/`T` in Zeek's history, once), but the flow table
    /// keeps a side's span in 32 bits and takes its wraps from the payload seen: a side that
    /// sent more than 4 GiB, most of it missed in the capture, is counted modulo 4 GiB (one
    /// transfer of 5.4 GB in `ftp/bigtransfer.pcap`), where Zeek counts the wraps.
    SequenceNumberBytes,
    /// IP fragments are not reassembled: a tunnel in a fragmented outer packet is followed from
    /// its first fragment and the carrier counts every fragment (docs/replay.md).
    Fragments,
    /// A TCP connection seen without its handshake and from one side only idles out after the 5
    /// s attempt timeout (so that spoofed packets nobody answers hold no table room for
    /// minutes), so a longer pause splits it in two records; Zeek keeps one. (Picked up
    /// mid-stream with both sides talking, it is established: `lifecycle::idle_timeout`.)
    AttemptTimeoutSplit,
    /// The flow key is the 5-tuple: a connection inside a tunnel and the same 5-tuple outside it
    /// are one record here, two rows in Zeek (`tunnel_parents` differs).
    TunnelNotInKey,
    /// Zeek's side: the btest's GridFTP script skips further processing of a data channel once
    /// it recognises it (`GridFTP::skip_data`), so Zeek's counts stop there (`S1`, no FINs).
    ZeekSkipsGridFtpData,
    /// Zeek's side: the server's NTP reply came first; Zeek flips the connection after that
    /// packet (`D^`) and counts both packets on one side (`S0`, 2 and 0); the sensor's record
    /// has one packet each way.
    ZeekFlipAfterFirstPacket,
}

/// Differences excluded by name: the trace, the port of the connection (`None`: every
/// connection of the trace) and the reason, checked by hand on the records (docs/replay.md).
/// A precise rule, where one applies, takes precedence.
const BY_TRACE: &[(&str, Option<u64>, Why)] = &[
    (
        "traces/tunnels/gtp/gtp1_gn_normal_incl_fragmentation.pcap",
        None,
        Why::Fragments,
    ),
    (
        "traces/ssh/ssh.server-side-half-duplex.pcap",
        Some(57189),
        Why::AttemptTimeoutSplit,
    ),
    (
        "traces/tunnels/Teredo.pcap",
        Some(1920),
        Why::TunnelNotInKey,
    ),
    (
        "traces/globus-url-copy.pcap",
        Some(55968),
        Why::ZeekSkipsGridFtpData,
    ),
    (
        "traces/ntp/misordered-ntp.pcap",
        None,
        Why::ZeekFlipAfterFirstPacket,
    ),
];

fn zeek_data() -> Option<PathBuf> {
    let dir = match std::env::var_os("ZEEK_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/zeek"),
    };
    dir.join("pairs.tsv").is_file().then_some(dir)
}

type Key = (String, (String, u64), (String, u64));

fn key(proto: &str, a: &str, ap: u64, b: &str, bp: u64) -> Key {
    let (x, y) = ((a.to_string(), ap), (b.to_string(), bp));
    if x <= y {
        (proto.to_string(), x, y)
    } else {
        (proto.to_string(), y, x)
    }
}

struct ZeekRow {
    proto: String,
    orig: String,
    orig_port: u64,
    resp: String,
    resp_port: u64,
    state: String,
    history: String,
    packets: (u64, u64),
    bytes: Option<(u64, u64)>,
    missed_bytes: u64,
    ip_proto: Option<u64>,
}

fn zeek_rows(path: &Path) -> Vec<ZeekRow> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_conn_log(&text, &path.display().to_string())
}

/// The rows of a `conn.log` (Zeek's, or the sensor's own `--format zeek` output).
fn parse_conn_log(text: &str, what: &str) -> Vec<ZeekRow> {
    let mut fields: Vec<&str> = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("#fields\t") {
            fields = f.split('\t').collect();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let row: HashMap<&str, &str> = fields.iter().copied().zip(line.split('\t')).collect();
        let get = |f: &str| -> Option<&str> {
            row.get(f).copied().filter(|v| *v != "-" && *v != "(empty)")
        };
        let num =
            |f: &str| get(f).map(|v| v.parse::<u64>().unwrap_or_else(|e| panic!("{f}={v}: {e}")));
        let bytes = num("orig_bytes").zip(num("resp_bytes"));
        rows.push(ZeekRow {
            proto: get("proto").unwrap().to_string(),
            orig: get("id.orig_h").unwrap().to_string(),
            orig_port: num("id.orig_p").unwrap(),
            resp: get("id.resp_h").unwrap().to_string(),
            resp_port: num("id.resp_p").unwrap(),
            state: get("conn_state").unwrap_or("").to_string(),
            history: get("history").unwrap_or("").to_string(),
            packets: (num("orig_pkts").unwrap(), num("resp_pkts").unwrap()),
            bytes,
            missed_bytes: num("missed_bytes").unwrap_or(0),
            ip_proto: num("ip_proto"),
        });
    }
    assert!(!fields.is_empty(), "{what}: no #fields header");
    rows
}

/// A row of the sensor's own `conn.log` (`sensor replay --format zeek`).
struct Record {
    orig: String,
    orig_port: u64,
    state: String,
    packets: (u64, u64),
    /// Unset (`None`) where all its packets came at one instant (duration 0), as in Zeek's
    /// (`ecosystem::write_zeek_row`, docs/formats.md).
    bytes: Option<(u64, u64)>,
    /// The outer connection of a GRE or IP-in-IP tunnel: a row here, `tunnel.log` in Zeek.
    carries: bool,
    /// Zeek turned it round by its ports (`^` first in the history).
    flipped: bool,
}

/// Replays a trace into the sensor's `conn.log` layout (oriented as Zeek orients connections,
/// `ecosystem::orientation`); its rows by Zeek's key, in output order, and whether it was
/// refused.
fn replay(trace: &Path) -> (BTreeMap<Key, Vec<Record>>, Option<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["replay", "--format", "zeek"])
        .arg(trace)
        .output()
        .expect("running sensor replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = if out.status.success() {
        None
    } else {
        Some(stderr.lines().last().unwrap_or("").to_string())
    };
    let mut records: BTreeMap<Key, Vec<Record>> = BTreeMap::new();
    let text = String::from_utf8(out.stdout).unwrap();
    if text.is_empty() {
        return (records, error);
    }
    for r in parse_conn_log(&text, &format!("replay of {}", trace.display())) {
        // ICMP's ports are already Zeek's (type, and counterpart type or code); Zeek's key for
        // SCTP is `unknown_transport` between the two addresses.
        let sctp = r.proto == "sctp";
        let (op, rp) = if sctp {
            (0, 0)
        } else {
            (r.orig_port, r.resp_port)
        };
        let k = key(&r.proto, &r.orig, op, &r.resp, rp);
        records.entry(k).or_default().push(Record {
            carries: r.proto == "unknown_transport" && matches!(r.ip_proto, Some(4 | 41 | 47)),
            orig: r.orig,
            orig_port: r.orig_port,
            state: r.state,
            packets: r.packets,
            bytes: r.bytes,
            flipped: r.history.starts_with('^'),
        });
    }
    (records, error)
}

fn explain_packets(z: &ZeekRow, r: &Record, packets: (u64, u64)) -> Option<Why> {
    if z.state != r.state || packets.0 > z.packets.0 || packets.1 > z.packets.1 {
        return None;
    }
    let short = (z.packets.0 - packets.0, z.packets.1 - packets.1);
    (z.state == "SF" && (short == (1, 0) || short == (0, 1))).then_some(Why::PacketAfterLinger)
}

fn explain_bytes(z: &ZeekRow, r: &Record) -> Option<Why> {
    if r.bytes.is_none() && z.bytes.is_some() {
        // The sensor's conn.log leaves them unset where Zeek's has them: no named reason.
        None
    } else if z.bytes.is_none() {
        Some(Why::ZeekUnsetBytes)
    } else if z.proto == "tcp"
        && (z.missed_bytes > 0 || z.history.contains('t') || z.history.contains('T'))
    {
        Some(Why::SequenceNumberBytes)
    } else {
        None
    }
}

/// Counts for one category (or all).
#[derive(Default, Clone, Copy)]
struct Tally {
    rows: usize,
    excluded: usize,
    matched: usize,
    state: usize,
    state_explained: usize,
    packets: usize,
    packets_explained: usize,
    bytes: usize,
    bytes_explained: usize,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.rows += o.rows;
        self.excluded += o.excluded;
        self.matched += o.matched;
        self.state += o.state;
        self.state_explained += o.state_explained;
        self.packets += o.packets;
        self.packets_explained += o.packets_explained;
        self.bytes += o.bytes;
        self.bytes_explained += o.bytes_explained;
    }

    fn line(&self, name: &str) -> String {
        let pct = |n: usize, d: usize| 100.0 * n as f64 / d.max(1) as f64;
        let m = self.matched;
        let agree =
            |n: usize, x: usize| format!("{n:3} {:5.1}% ({:5.1}%)", pct(n, m), pct(n + x, m));
        format!(
            "{name:12} {:3} rows, matched {m:3} {:5.1}% ({:5.1}% of {} not excluded by name)  \
             state {}  packets {}  bytes {}",
            self.rows,
            pct(m, self.rows),
            pct(m, self.rows - self.excluded),
            self.rows - self.excluded,
            agree(self.state, self.state_explained),
            agree(self.packets, self.packets_explained),
            agree(self.bytes, self.bytes_explained),
        )
    }
}

#[test]
fn zeek_conn_log_parity() {
    let Some(dir) = zeek_data() else {
        let msg = "Zeek's data not found (../shared/data/zeek from the repository root, or \
                   ZEEK_DATA_DIR): zeek_conn_log_parity did not run";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("{msg}");
        return;
    };
    let pairs = std::fs::read_to_string(dir.join("pairs.tsv")).unwrap();
    let mut by_category: BTreeMap<String, Tally> = BTreeMap::new();
    // (reason, what) -> lines; reason `None` is unexplained.
    let mut diffs: BTreeMap<(Option<Why>, &str), Vec<String>> = BTreeMap::new();
    let mut refused = Vec::new();
    let mut extra = Vec::new();
    let mut n_pairs = 0;
    // Zeek's TCP, UDP and ICMP rows, and those found among the records (the goal's measure).
    let (mut kdd_rows, mut kdd_matched) = (0usize, 0usize);
    // Rows oriented as Zeek's, and with Zeek's `^` (or without, as Zeek's).
    let (mut oriented, mut caret) = (0usize, 0usize);
    let mut misoriented = Vec::new();
    for line in pairs
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let (id, category, trace, baseline) = (f[0], f[1], f[2], f[3]);
        n_pairs += 1;
        let (mut records, error) = replay(&dir.join(trace));
        if let Some(e) = error {
            refused.push(format!("{id} {trace}: {e}"));
        }
        let t = by_category.entry(category.to_string()).or_default();
        for z in zeek_rows(&dir.join(baseline)) {
            if !matches!(
                z.proto.as_str(),
                "tcp" | "udp" | "icmp" | "unknown_transport"
            ) {
                continue;
            }
            t.rows += 1;
            let kdd_transport = z.proto != "unknown_transport";
            kdd_rows += usize::from(kdd_transport);
            let by_trace = BY_TRACE
                .iter()
                .find(|&&(t, port, _)| {
                    t == trace && port.is_none_or(|p| p == z.orig_port || p == z.resp_port)
                })
                .map(|&(_, _, w)| w);
            let sctp = z.proto == "unknown_transport" && z.ip_proto == Some(132);
            let proto = if sctp { "sctp" } else { z.proto.as_str() };
            let k = key(proto, &z.orig, z.orig_port, &z.resp, z.resp_port);
            let found = records
                .get_mut(&k)
                .filter(|v| !v.is_empty())
                .map(|v| v.remove(0));
            let what = format!(
                "{id} {trace}: {} {}:{} > {}:{} Zeek {} {} {:?} {:?}",
                z.proto,
                z.orig,
                z.orig_port,
                z.resp,
                z.resp_port,
                z.state,
                z.history,
                z.packets,
                z.bytes
            );
            if sctp {
                // Found by addresses only (the record has ports Zeek does not know), or
                // unexplained.
                t.excluded += 1;
                let why = found.is_some().then_some(Why::SctpPorts);
                diffs.entry((why, "unmatched")).or_default().push(what);
                continue;
            }
            let Some(r) = found else {
                if by_trace.is_some() {
                    t.excluded += 1;
                }
                diffs.entry((by_trace, "unmatched")).or_default().push(what);
                continue;
            };
            t.matched += 1;
            kdd_matched += usize::from(kdd_transport);
            let flipped = r.orig != z.orig || (z.proto != "icmp" && r.orig_port != z.orig_port);
            oriented += usize::from(!flipped);
            caret += usize::from(r.flipped == z.history.starts_with('^'));
            let (packets, bytes) = if flipped {
                ((r.packets.1, r.packets.0), r.bytes.map(|(o, r)| (r, o)))
            } else {
                (r.packets, r.bytes)
            };
            let ours = format!(
                "{what} | sensor {} {packets:?} {bytes:?}{}",
                r.state,
                if flipped { " (flipped)" } else { "" }
            );
            if flipped || r.flipped != z.history.starts_with('^') {
                misoriented.push(ours.clone());
            }
            if r.state == z.state {
                t.state += 1;
            } else {
                let why = by_trace;
                t.state_explained += usize::from(why.is_some());
                diffs
                    .entry((why, "conn_state"))
                    .or_default()
                    .push(ours.clone());
            }
            if packets == z.packets {
                t.packets += 1;
            } else {
                let why = explain_packets(&z, &r, packets).or(by_trace);
                t.packets_explained += usize::from(why.is_some());
                diffs
                    .entry((why, "packets"))
                    .or_default()
                    .push(ours.clone());
            }
            // As the two `conn.log`s have them: unset for a connection of duration 0.
            if bytes == z.bytes {
                t.bytes += 1;
            } else {
                let why = explain_bytes(&z, &r).or(by_trace);
                t.bytes_explained += usize::from(why.is_some());
                diffs.entry((why, "bytes")).or_default().push(ours);
            }
        }
        for (k, rest) in records {
            for r in rest {
                if r.carries {
                    continue; // GRE and IP-in-IP carriers: records here, tunnel.log in Zeek
                }
                extra.push(format!(
                    "{id} {trace}: {} {:?} {:?} {} {:?}",
                    k.0, k.1, k.2, r.state, r.packets
                ));
            }
        }
    }

    let mut all = Tally::default();
    println!(
        "Zeek conn.log parity, {n_pairs} pairs (agreement among matched; in brackets: agreeing or differing for a named reason)"
    );
    for (c, t) in &by_category {
        println!("{}", t.line(c));
        all.add(t);
    }
    println!("{}", all.line("all"));
    let kdd_share = kdd_matched as f64 / kdd_rows.max(1) as f64;
    println!(
        "Zeek's TCP, UDP and ICMP connections found: {kdd_matched} of {kdd_rows} ({:.1}%; goal {:.0}%)",
        100.0 * kdd_share,
        100.0 * MATCHED_GOAL
    );
    println!(
        "oriented as Zeek's: {oriented} of {} matched; `^` as Zeek's: {caret}",
        all.matched
    );
    for m in &misoriented {
        println!("  orientation or ^ differs: {m}");
    }
    println!(
        "traces refused: {}; Zeek rows excluded from matching by name: {}; sensor records \
         without a Zeek row (carriers left out): {}",
        refused.len(),
        all.excluded,
        extra.len()
    );
    for r in &refused {
        println!("  refused: {r}");
    }
    for e in &extra {
        println!("  no Zeek row: {e}");
    }
    for ((why, what), lines) in &diffs {
        let name = why.map_or("UNEXPLAINED".to_string(), |w| format!("{w:?}"));
        println!("{name} / {what}: {}", lines.len());
        for l in lines
            .iter()
            .take(if why.is_none() { usize::MAX } else { 3 })
        {
            println!("    {l}");
        }
    }

    let unexplained: usize = diffs
        .iter()
        .filter(|((why, _), _)| why.is_none())
        .map(|(_, lines)| lines.len())
        .sum();
    println!("unexplained differences: {unexplained}");

    assert!(refused.is_empty(), "traces refused: {refused:?}");
    assert!(n_pairs >= 50, "{n_pairs} pairs in {}", dir.display());
    assert!(all.matched >= MEASURED_MATCHED, "matched {}", all.matched);
    assert!(
        kdd_share >= MATCHED_GOAL,
        "TCP, UDP and ICMP found: {kdd_share}"
    );
    assert!(
        kdd_matched >= MEASURED_KDD_MATCHED,
        "TCP, UDP and ICMP found: {kdd_matched}"
    );
    assert!(
        all.state >= MEASURED_STATE,
        "conn_state agrees {}",
        all.state
    );
    assert!(
        all.packets >= MEASURED_PACKETS,
        "packets agree {}",
        all.packets
    );
    assert!(all.bytes >= MEASURED_BYTES, "bytes agree {}", all.bytes);
    assert!(
        oriented >= MEASURED_ORIENTED,
        "oriented as Zeek's: {oriented}"
    );
    assert!(caret >= MEASURED_CARET, "`^` as Zeek's: {caret}");
    let state = all.state + all.state_explained;
    let packets = all.packets + all.packets_explained;
    let bytes = all.bytes + all.bytes_explained;
    assert!(state >= MEASURED_STATE_EXPLAINED, "conn_state {state}");
    assert!(packets >= MEASURED_PACKETS_EXPLAINED, "packets {packets}");
    assert!(bytes >= MEASURED_BYTES_EXPLAINED, "bytes {bytes}");
    assert_eq!(unexplained, MEASURED_UNEXPLAINED, "unexplained differences");
}
