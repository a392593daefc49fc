//! Rows of `sensor replay`: one per connection.
//!
//! * `csv`: the NSL-KDD text layout (41 features with `protocol_type`, `service` and `flag` by
//!   name, then the label and a difficulty column), no header, so that `sensor evaluate`,
//!   `sensor dataset summary` and other NSL-KDD tools read it. The label is the verdict
//!   (`normal` or `anomaly`, the ARFF files' class names); the difficulty column is 0 (unknown).
//!   That layout has no room for addresses: use `wide-csv` or `jsonl` for them. Nor for
//!   transports other than `tcp`, `udp` and `icmp` (SCTP, other IP protocols): their rows are
//!   left out of it.
//! * `wide-csv`: a header line, the 41 features, then the 5-tuple, start and end time, the
//!   verdict and the score.
//! * `jsonl`: the connection record, its Community ID, the 41 features in NSL-KDD order and the
//!   verdict.
//! * `zeek`: Zeek's `conn.log` (TSV with Zeek's `#` header lines and `#close` footer), plus
//!   `community_id`, `verdict` and `score` columns ([`crate::ecosystem`]).
//! * `eve`: Suricata EVE JSON `flow` events, one line per connection ([`crate::ecosystem`]).

use std::io::{self, Write};

use crate::{
    community_id,
    detect::Scored,
    flows::{ConnId, ConnectionRecord, EndReason},
    hashing::Map,
    kdd::{FEATURE_NAMES, FLAG, FLAGS, KddFeatures, PROTOCOL_TYPE, PROTOCOLS, SERVICE, SERVICES},
};

/// Output formats; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    WideCsv,
    Jsonl,
    /// Zeek `conn.log` (TSV).
    Zeek,
    /// Suricata EVE JSON `flow` events.
    Eve,
}

/// Writes rows of one format: a header, one row per connection, a footer. Holds what the rows
/// need besides the connection: the Community ID seed.
#[derive(Clone, Copy, Debug)]
pub struct RowWriter {
    pub format: Format,
    /// Community ID seed (0 unless both sides of a comparison agree on another).
    pub community_id_seed: u16,
}

impl RowWriter {
    pub fn new(format: Format, community_id_seed: u16) -> RowWriter {
        RowWriter {
            format,
            community_id_seed,
        }
    }

    /// The header lines, if the format has them (`wide-csv`, `zeek`).
    pub fn header(&self, w: &mut impl Write) -> io::Result<()> {
        match self.format {
            Format::Zeek => crate::ecosystem::write_zeek_header(w, std::time::SystemTime::now()),
            f => write_header(w, f),
        }
    }

    /// One connection's row.
    pub fn row(&self, w: &mut impl Write, rec: &ConnectionRecord, s: &Scored) -> io::Result<()> {
        let seed = self.community_id_seed;
        match self.format {
            Format::Zeek => crate::ecosystem::write_zeek_row(w, rec, s, seed),
            Format::Eve => crate::ecosystem::write_eve_row(w, rec, s, seed),
            Format::Jsonl => {
                serde_json::to_writer(&mut *w, &json_row_seeded(rec, s, seed))?;
                w.write_all(b"\n")
            }
            f => write_row(w, f, rec, s),
        }
    }

    /// The footer line, if the format has one (`zeek`: `#close`).
    pub fn footer(&self, w: &mut impl Write) -> io::Result<()> {
        match self.format {
            Format::Zeek => crate::ecosystem::write_zeek_footer(w, std::time::SystemTime::now()),
            _ => Ok(()),
        }
    }
}

/// Rows in the order a log takes them: [`RowWriter`]'s rows, except that in the layouts of the
/// logs other tools read (`zeek`, `eve`) a connection ended by FINs or a RST is written when its
/// entry leaves the table ([`crate::flows::ConnEvent::Settled`]), with the packet and byte
/// counts of its trailing packets (the ACKs of a crossed close, retransmitted FINs), as Zeek
/// and Suricata write a connection when they drop its state. Its verdict and every other
/// column are those of the record that was scored; its row comes at least the linger
/// (`close_linger`, 5 s) after the connection's last packet, later while packets keep coming.
/// The sensor's own layouts (`jsonl`, CSV) are the scored records, written at once.
#[derive(Debug)]
pub struct LogRows {
    writer: RowWriter,
    /// Rows waiting for their connection's `Settled` record.
    held: Map<ConnId, (ConnectionRecord, Scored)>,
}

impl LogRows {
    pub fn new(writer: RowWriter) -> LogRows {
        LogRows {
            writer,
            held: Map::default(),
        }
    }

    /// The header lines ([`RowWriter::header`]).
    pub fn header(&self, w: &mut impl Write) -> io::Result<()> {
        self.writer.header(w)
    }

    /// Whether rows of `format` wait for their connections' `Settled` records.
    pub fn uses_settled(format: Format) -> bool {
        matches!(format, Format::Zeek | Format::Eve)
    }

    /// A finished connection: its row now, or held for its `Settled` record.
    pub fn row(
        &mut self,
        w: &mut impl Write,
        rec: &ConnectionRecord,
        s: &Scored,
    ) -> io::Result<()> {
        let waits = Self::uses_settled(self.writer.format)
            && matches!(rec.end_reason, EndReason::Fin | EndReason::Rst);
        if waits {
            self.held.insert(rec.id(), (rec.clone(), s.clone()));
            Ok(())
        } else {
            self.writer.row(w, rec, s)
        }
    }

    /// A connection's entry left the table: its held row, with the final counts.
    pub fn settled(&mut self, w: &mut impl Write, last: &ConnectionRecord) -> io::Result<()> {
        let Some((mut rec, s)) = self.held.remove(&last.id()) else {
            return Ok(());
        };
        // Only ever more: a trailing packet adds, nothing takes away.
        rec.orig_packets = rec.orig_packets.max(last.orig_packets);
        rec.resp_packets = rec.resp_packets.max(last.resp_packets);
        rec.orig_bytes = rec.orig_bytes.max(last.orig_bytes);
        rec.resp_bytes = rec.resp_bytes.max(last.resp_bytes);
        rec.stream_bytes = match (rec.stream_bytes, last.stream_bytes) {
            (Some((o, r)), Some((lo, lr))) => Some((o.max(lo), r.max(lr))),
            (a, b) => a.or(b),
        };
        self.writer.row(w, &rec, &s)
    }

    /// The end: rows still held (none, when the lifecycle flushed its table first) in the
    /// order their connections ended, then the footer.
    pub fn finish(&mut self, w: &mut impl Write) -> io::Result<()> {
        let mut held: Vec<_> = self.held.drain().map(|(_, row)| row).collect();
        // A total order (the connection's id breaks the ties), so that the map's order, which
        // differs from run to run, never shows.
        held.sort_unstable_by_key(|(r, _)| {
            (
                r.final_unix_ns,
                r.start_unix_ns,
                r.ip_proto,
                r.orig_addr,
                r.orig_port,
                r.resp_addr,
                r.resp_port,
            )
        });
        for (rec, s) in &held {
            self.writer.row(w, rec, s)?;
        }
        self.writer.footer(w)
    }
}

/// Feature `i` as the data files print it: categorical ones by name, numbers in their shortest
/// exact form (`0`, `1`, `0.05`), as the rounded rates are.
pub fn feature_text(f: &KddFeatures, i: usize) -> String {
    let x = f.0[i];
    let vocab: Option<&[&str]> = match i {
        PROTOCOL_TYPE => Some(&PROTOCOLS),
        SERVICE => Some(&SERVICES),
        FLAG => Some(&FLAGS),
        _ => None,
    };
    match vocab {
        Some(v) => v.get(x as usize).copied().unwrap_or("?").to_string(),
        None => format!("{x}"),
    }
}

fn features_csv(w: &mut impl Write, f: &KddFeatures) -> io::Result<()> {
    for i in 0..FEATURE_NAMES.len() {
        if i > 0 {
            w.write_all(b",")?;
        }
        w.write_all(feature_text(f, i).as_bytes())?;
    }
    Ok(())
}

/// Writes the header line of `format`, if it has one (`zeek`'s header and footer:
/// [`RowWriter`]).
pub fn write_header(w: &mut impl Write, format: Format) -> io::Result<()> {
    if format == Format::WideCsv {
        writeln!(
            w,
            "{},orig_addr,orig_port,resp_addr,resp_port,transport,start_unix_ns,end_unix_ns,verdict,score",
            FEATURE_NAMES.join(",")
        )?;
    }
    Ok(())
}

/// Writes one connection's row in `format`, with the Community ID seed 0.
pub fn write_row(
    w: &mut impl Write,
    format: Format,
    rec: &ConnectionRecord,
    s: &Scored,
) -> io::Result<()> {
    match format {
        Format::Csv if !rec.transport.is_kdd() => Ok(()),
        Format::Csv => {
            features_csv(w, &s.features)?;
            writeln!(w, ",{},0", s.verdict.label())
        }
        Format::WideCsv => {
            features_csv(w, &s.features)?;
            writeln!(
                w,
                ",{},{},{},{},{},{},{},{},{}",
                rec.orig_addr,
                rec.orig_port,
                rec.resp_addr,
                rec.resp_port,
                rec.transport.as_str(),
                rec.start_unix_ns,
                rec.end_unix_ns,
                s.verdict.label(),
                s.verdict.score
            )
        }
        Format::Jsonl | Format::Zeek | Format::Eve => RowWriter::new(format, 0).row(w, rec, s),
    }
}

/// The JSON object of a connection: the record's fields, `community_id` (seed 0), `kdd` (the 41
/// features in NSL-KDD order, categorical ones by name), and the verdict (`verdict`,
/// `anomalous`, `score`, `detector`).
pub fn json_row(rec: &ConnectionRecord, s: &Scored) -> serde_json::Value {
    json_row_seeded(rec, s, 0)
}

/// [`json_row`] with the Community ID of `seed`.
pub fn json_row_seeded(rec: &ConnectionRecord, s: &Scored, seed: u16) -> serde_json::Value {
    let mut v = serde_json::to_value(rec).unwrap_or_default();
    let kdd: Vec<serde_json::Value> = (0..FEATURE_NAMES.len())
        .map(|i| match i {
            PROTOCOL_TYPE | SERVICE | FLAG => feature_text(&s.features, i).into(),
            _ => s.features.0[i].into(),
        })
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "community_id".into(),
            community_id::of_record(rec, seed).into(),
        );
        o.insert("kdd".into(), kdd.into());
        o.insert("verdict".into(), s.verdict.label().into());
        o.insert("anomalous".into(), s.verdict.anomalous.into());
        o.insert("score".into(), s.verdict.score.into());
        o.insert(
            "detector".into(),
            serde_json::to_value(s.verdict.detector).unwrap_or_default(),
        );
        if s.verdict.withdrawn_by_attack_boxes {
            o.insert("withdrawn_by_attack_boxes".into(), true.into());
        }
        if let Some(c) = s.routine_check {
            o.insert(
                "routine_check".into(),
                serde_json::to_value(c).unwrap_or_default(),
            );
        }
        if let Some(n) = s.not_scored {
            o.insert(
                "not_scored".into(),
                serde_json::to_value(n).unwrap_or_default(),
            );
        }
    }
    v
}
