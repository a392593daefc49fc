//! `sensor(1)`, written from the binary's own `--help` texts (clap's), so that the manual never
//! disagrees with the program: a section per command, an entry per option.
use std::{path::Path, process::Command};

/// One `Title:` block of a help text (`Options:`, `Arguments:`, `Commands:`): entries of a
/// head (`--config <CONFIG>`) and its description lines.
#[derive(Debug, Default, PartialEq)]
pub struct Section {
    pub title: String,
    pub entries: Vec<(String, Vec<String>)>,
}

/// A clap help text, parsed.
#[derive(Debug, Default, PartialEq)]
pub struct Help {
    /// The paragraphs before `Usage:`.
    pub about: Vec<String>,
    pub usage: String,
    pub sections: Vec<Section>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Parses clap's help layout: `about`, `Usage: ...`, then titled sections whose entries start at
/// an indent of at most six columns, with the description either after two or more spaces on
/// the same line or on the following, deeper-indented lines.
pub fn parse(text: &str) -> Help {
    let mut help = Help::default();
    let mut para = String::new();
    let mut lines = text.lines();
    for line in lines.by_ref() {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            help.usage = usage.trim().to_string();
            break;
        }
        if line.trim().is_empty() {
            if !para.is_empty() {
                help.about.push(std::mem::take(&mut para));
            }
        } else {
            if !para.is_empty() {
                para.push(' ');
            }
            para.push_str(line.trim());
        }
    }
    if !para.is_empty() {
        help.about.push(para);
    }
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        if indent(line) == 0 && line.ends_with(':') {
            help.sections.push(Section {
                title: line.trim_end_matches(':').to_string(),
                entries: Vec::new(),
            });
            continue;
        }
        let Some(section) = help.sections.last_mut() else {
            continue;
        };
        let trimmed = line.trim();
        if indent(line) <= 6 {
            let (head, desc) = match trimmed.split_once("  ") {
                Some((h, d)) => (h.trim(), d.trim()),
                None => (trimmed, ""),
            };
            let desc = if desc.is_empty() {
                vec![]
            } else {
                vec![desc.to_string()]
            };
            section.entries.push((head.to_string(), desc));
        } else if let Some((_, desc)) = section.entries.last_mut() {
            desc.push(trimmed.to_string());
        }
    }
    help
}

/// Escapes text for roff: backslashes, hyphens (so that options are not hyphenated or turned
/// into dashes) and a leading dot or quote (which would be read as a request).
pub fn roff(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn help_of(sensor: &Path, path: &[&str]) -> Result<Help, String> {
    let out = Command::new(sensor)
        .args(path)
        .arg("--help")
        .output()
        .map_err(|e| format!("{}: {e}", sensor.display()))?;
    if !out.status.success() {
        return Err(format!(
            "sensor {} --help failed ({})",
            path.join(" "),
            out.status
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Appends the sections of one command's help (options, arguments), and recurses into its
/// subcommands.
fn command(sensor: &Path, path: &[&str], out: &mut String) -> Result<(), String> {
    let help = help_of(sensor, path)?;
    out.push_str(&format!(".SS \"sensor {}\"\n", path.join(" ")));
    for p in &help.about {
        out.push_str(&format!("{}\n.PP\n", roff(p)));
    }
    out.push_str(&format!(
        ".B sensor {}\n.PP\n",
        roff(help.usage.trim_start_matches("sensor "))
    ));
    let mut subcommands = Vec::new();
    for s in &help.sections {
        if s.title == "Commands" {
            subcommands.extend(
                s.entries
                    .iter()
                    .map(|(h, _)| h.clone())
                    .filter(|h| h != "help"),
            );
            continue;
        }
        for (head, desc) in &s.entries {
            out.push_str(&format!(".TP\n.B {}\n", roff(head)));
            let mut first = true;
            for line in desc {
                // clap's "Possible values:" lists: one value a line.
                if !first && (line.starts_with("- ") || line.ends_with(':')) {
                    out.push_str(".br\n");
                }
                out.push_str(&roff(line));
                out.push('\n');
                first = false;
            }
        }
    }
    for sub in subcommands {
        let mut p = path.to_vec();
        p.push(&sub);
        command(sensor, &p, out)?;
    }
    Ok(())
}

/// The manual page, in roff. `epoch` dates it (the commit's time, for reproducible builds).
pub fn render(sensor: &Path, version: &str, epoch: u64) -> Result<String, String> {
    let top = help_of(sensor, &[])?;
    let date = Command::new("date")
        .args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut out = format!(
        ".TH SENSOR 1 \"{date}\" \"sensor {version}\" \"User Commands\"\n\
         .SH NAME\n\
         sensor \\- network anomaly sensor for Linux gateways\n\
         .SH SYNOPSIS\n\
         .B sensor\n\
         .I command\n\
         .RI [ options ]\n\
         .SH DESCRIPTION\n"
    );
    for p in &top.about {
        out.push_str(&format!("{}\n.PP\n", roff(p)));
    }
    out.push_str(
        "On a gateway the sensor runs as the systemd service \\fBsensor.service\\fR \
         (\\fBsensor run \\-\\-config /etc/sensor/sensor.toml\\fR): set the interfaces to watch \
         in the configuration file, then \\fBsystemctl enable \\-\\-now sensor\\fR.\n",
    );
    out.push_str(".SH COMMANDS\n");
    let commands = top
        .sections
        .iter()
        .find(|s| s.title == "Commands")
        .ok_or("sensor --help lists no commands")?;
    for (name, _) in commands.entries.iter().filter(|(n, _)| n != "help") {
        command(sensor, &[name], &mut out)?;
    }
    out.push_str(
        ".SH SIGNALS\n\
         .TP\n.B SIGHUP\n\
         \\fBsensor run\\fR loads the model file again; a file that fails to load keeps the \
         running model (\\fBsystemctl reload sensor\\fR).\n\
         .TP\n.B SIGTERM, SIGINT\n\
         Stop: every open connection is finalised and scored, then the sensor exits.\n\
         .SH FILES\n\
         .TP\n.I /etc/sensor/sensor.toml\n\
         The configuration of \\fBsensor run\\fR; every key is documented in the file.\n\
         .TP\n.I /usr/share/sensor/nsl\\-kdd\\-flow.model\n\
         The model trained on NSL\\-KDD (see /usr/share/doc/sensor/MODEL_CARD.md).\n\
         .TP\n.I /var/log/sensor/alerts.jsonl\n\
         The alert stream: one JSON line per incident state change.\n\
         .TP\n.I /usr/share/sensor/prometheus/\n\
         Alert rules and an example scrape configuration for Prometheus.\n\
         .TP\n.I /usr/share/sensor/grafana/sensor.json\n\
         A Grafana dashboard of the sensor's metrics.\n\
         .SH SEE ALSO\n\
         .BR systemctl (1),\n\
         .BR prometheus (1),\n\
         /usr/share/doc/sensor/README.md\n",
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_of_clap_layouts() {
        let text = "Replay captures\n\nUsage: sensor replay [OPTIONS] <FILES>...\n\n\
                    Arguments:\n  <FILES>...  Capture files\n\n\
                    Options:\n      --model <MODEL>\n          Model file\n          [default: x]\n\
                    \x20     --xdp-mode <MODE>\n          Possible values:\n          - auto: Native\n\
                    \x20 -h, --help  Print help\n";
        let h = parse(text);
        assert_eq!(h.about, ["Replay captures"]);
        assert_eq!(h.usage, "sensor replay [OPTIONS] <FILES>...");
        assert_eq!(h.sections[0].title, "Arguments");
        assert_eq!(
            h.sections[0].entries,
            [("<FILES>...".to_string(), vec!["Capture files".to_string()])]
        );
        let opts = &h.sections[1].entries;
        assert_eq!(opts[0].0, "--model <MODEL>");
        assert_eq!(opts[0].1, ["Model file", "[default: x]"]);
        assert_eq!(opts[1].1, ["Possible values:", "- auto: Native"]);
        assert_eq!(
            opts[2],
            ("-h, --help".to_string(), vec!["Print help".to_string()])
        );
    }

    #[test]
    fn escapes_roff() {
        assert_eq!(roff("--iface a\\b"), "\\-\\-iface a\\eb");
        assert_eq!(roff(".hidden"), "\\&.hidden");
    }
}
