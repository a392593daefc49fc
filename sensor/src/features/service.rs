//! KDD `service` (feature 3): the responder's port (TCP/UDP) or the originator's ICMP type,
//! mapped onto the NSL-KDD vocabulary ([`crate::kdd::SERVICES`]).
//!
//! # Rules
//!
//! | transport | condition | service |
//! |---|---|---|
//! | TCP | responder port in [`TCP_PORTS`] | that name (`http` 80, `smtp` 25, `ftp` 21, `ftp_data` 20, `telnet` 23, `domain` 53, `http_443` 443, `http_8001` 8001, `http_2784` 2784, `finger` 79, `auth` 113, ...) |
//! | UDP | 53 / 123 / 69 | `domain_u` / `ntp_u` / `tftp_u` (the only named UDP services in NSL-KDD) |
//! | TCP/UDP | unnamed port `< private_port_below` (default 1024) | `private` |
//! | TCP/UDP | unnamed port `>= private_port_below` | `other` |
//! | ICMP | echo request (v4 type 8, v6 128) | `eco_i` |
//! | ICMP | echo reply (v4 0, v6 129) | `ecr_i` |
//! | ICMP | unreachable, port (v4 3/3, v6 1/4) | `urp_i` |
//! | ICMP | unreachable, any other code (v4 3/*, v6 1/*) | `urh_i` |
//! | ICMP | redirect (v4 5, v6 137) | `red_i` |
//! | ICMP | timestamp request/reply (v4 13, 14) | `tim_i` |
//! | ICMP | anything else | `other` (NSL-KDD has no `oth_i`; see below) |
//!
//! # Why `private` means "unnamed port below 1024"
//!
//! The original DARPA/KDD tooling is not published. The one public reimplementation we found,
//! AI-IDS/kdd99_feature_extractor, maps unnamed ports `>= 49152` (IANA dynamic range) to
//! `private` and the rest to `other`. The data contradicts that choice for our purpose: in
//! KDDTrain+ TCP `private` has 18,558 attack rows and 4 normal rows, TCP `other` 1,518 attack and
//! 353 normal. The attacks behind `private` are neptune (SYN floods walking the port range from 1
//! up), portsweep, satan and nmap, which probe the *low* ports; normal clients seldom connect to
//! an unnamed low port, but do connect to unnamed high ports (`other`). Mapping unnamed privileged
//! ports (< 1024) to `private` reproduces that split; the IANA-dynamic rule would hand a live
//! SYN flood against ports 1-1023 to the model as `other`, a service it learned as mostly benign.
//! The threshold is [`super::FeatureConfig::private_port_below`] so that it can be revisited.
//!
//! Services of the vocabulary with no well-known port (`harvest`, `pm_dump`) are never produced;
//! `oth_i` is not in the NSL-KDD vocabulary, so other ICMP types become `other`.

use std::sync::LazyLock;

use crate::{
    flows::{ConnStart, Transport},
    kdd::{SERVICES, vocab_index},
};

/// Named TCP services by responder port (well-known assignments, /etc/services and IANA).
pub const TCP_PORTS: &[(u16, &str)] = &[
    (5, "rje"),
    (7, "echo"),
    (9, "discard"),
    (11, "systat"),
    (13, "daytime"),
    (15, "netstat"),
    (20, "ftp_data"),
    (21, "ftp"),
    (22, "ssh"),
    (23, "telnet"),
    (25, "smtp"),
    (37, "time"),
    (42, "name"),
    (43, "whois"),
    (53, "domain"),
    (57, "mtp"),
    (70, "gopher"),
    (71, "remote_job"),
    (79, "finger"),
    (80, "http"),
    (84, "ctf"),
    (87, "link"),
    (95, "supdup"),
    (101, "hostnames"),
    (102, "iso_tsap"),
    (105, "csnet_ns"),
    (109, "pop_2"),
    (110, "pop_3"),
    (111, "sunrpc"),
    (113, "auth"),
    (117, "uucp_path"),
    (119, "nntp"),
    (137, "netbios_ns"),
    (138, "netbios_dgm"),
    (139, "netbios_ssn"),
    (143, "imap4"),
    (150, "sql_net"),
    (175, "vmnet"),
    (179, "bgp"),
    (194, "IRC"),
    (210, "Z39_50"),
    (389, "ldap"),
    (433, "nnsp"),
    (443, "http_443"),
    (512, "exec"),
    (513, "login"),
    (514, "shell"),
    (515, "printer"),
    (520, "efs"),
    (530, "courier"),
    (540, "uucp"),
    (543, "klogin"),
    (544, "kshell"),
    (2784, "http_2784"),
    (5190, "aol"),
    (6000, "X11"),
    (6667, "IRC"),
    (8001, "http_8001"),
];

/// Named UDP services by responder port: the only three NSL-KDD has (check:
/// `awk -F, '$2=="udp"{print $3}' KDDTrain+.txt KDDTest+.txt | sort -u`).
pub const UDP_PORTS: &[(u16, &str)] = &[(53, "domain_u"), (69, "tftp_u"), (123, "ntp_u")];

/// First and last X11 display port (6000 + display number).
const X11_PORTS: std::ops::RangeInclusive<u16> = 6000..=6063;

fn index_of(name: &str) -> u8 {
    // The tables above are checked against the vocabulary by a test; a typo panics there.
    vocab_index(&SERVICES, name).unwrap_or_else(|| panic!("{name} not in SERVICES")) as u8
}

/// Port -> service index (`u8::MAX` = unnamed), built once: a table lookup per connection.
struct PortTables {
    tcp: Box<[u8; 65536]>,
    udp: Box<[u8; 65536]>,
}

static TABLES: LazyLock<PortTables> = LazyLock::new(|| {
    let mut tcp = Box::new([u8::MAX; 65536]);
    let mut udp = Box::new([u8::MAX; 65536]);
    for &(p, n) in TCP_PORTS {
        tcp[usize::from(p)] = index_of(n);
    }
    for p in X11_PORTS {
        tcp[usize::from(p)] = index_of("X11");
    }
    for &(p, n) in UDP_PORTS {
        udp[usize::from(p)] = index_of(n);
    }
    PortTables { tcp, udp }
});

/// Indices of the fixed names used below.
struct Named {
    private: u8,
    other: u8,
    ftp_data: u8,
    eco_i: u8,
    ecr_i: u8,
    urp_i: u8,
    urh_i: u8,
    red_i: u8,
    tim_i: u8,
}

static NAMED: LazyLock<Named> = LazyLock::new(|| Named {
    private: index_of("private"),
    other: index_of("other"),
    ftp_data: index_of("ftp_data"),
    eco_i: index_of("eco_i"),
    ecr_i: index_of("ecr_i"),
    urp_i: index_of("urp_i"),
    urh_i: index_of("urh_i"),
    red_i: index_of("red_i"),
    tim_i: index_of("tim_i"),
});

/// The FTP control port: a TCP connection to it is an FTP session, whose data connections go to
/// ports it negotiates ([`ftp_data_of`]).
pub const FTP_CONTROL_PORT: u16 = 21;

/// `ftp_data` for a TCP connection whose port names no service while an FTP session between
/// the same two hosts is open (`session_open`), or that comes from port 20 (active mode's
/// data port); else `service` unchanged. An FTP session negotiates its data connections'
/// ports (`PASV`/`EPSV` to a server port, `PORT`/`EPRT` from the server to a client port),
/// which the 1998 data's services call `ftp_data` (4,984 normal rows of KDDTrain+), and Zeek
/// `ftp-data`; by their ports alone they would be `other` or `private`, services the data
/// knows mostly from probes.
pub fn ftp_data_of(conn: &ConnStart, service: u8, session_open: bool) -> u8 {
    if conn.id.transport == Transport::Tcp
        && is_port_bucket(service)
        && (session_open || conn.id.orig_port == 20)
    {
        NAMED.ftp_data
    } else {
        service
    }
}

/// Whether `service` is one of the buckets of ports no name covers (`private`, `other`).
fn is_port_bucket(service: u8) -> bool {
    service == NAMED.other || service == NAMED.private
}

/// A service as the windows count it: what "the same service" means in `srv_count`,
/// `same_srv_rate`, `dst_host_srv_count` and the distinct services of `diff_srv_rate`.
pub type ServiceKey = u32;

/// The windows' identity of the service `service` of a connection: the service itself when
/// it is named, and for the port buckets `private` and `other` the transport with the
/// responder port (the ICMP type for ICMP, ICMPv6 apart from ICMPv4, whose type numbers mean
/// other messages): each unnamed port is a service of its own.
///
/// The training data counts them so. A SYN flood over private ports (`neptune`, service
/// `private`) has `srv_count` 14 among `count` 144 (same_srv_rate 0.10), where one `private`
/// service would give 144; a `satan` scan of unnamed ports prints `srv_count` 1 and
/// `dst_host_diff_srv_rate` 1.00 over 511 connections (511 distinct services, far more than the
/// vocabulary's 70); 2,307 normal `udp other` rows have more than 70 distinct services in
/// their host window. Named services spread over many ports still count once: `ftp_data`
/// connections (whose ports vary) print `dst_host_diff_srv_rate` 0.02-0.03 beside
/// `dst_host_same_srv_rate` 0.22-0.40.
pub fn window_key(conn: &ConnStart, service: u8) -> ServiceKey {
    if !is_port_bucket(service) {
        return ServiceKey::from(service);
    }
    let (transport, port) = match conn.id.transport {
        Transport::Tcp => (1, conn.id.resp_port),
        Transport::Udp => (2, conn.id.resp_port),
        Transport::Icmp => (
            if conn.ip_version == 6 { 5 } else { 3 },
            u16::from(conn.icmp_type.unwrap_or(u8::MAX)),
        ),
        Transport::Sctp | Transport::Unknown => (4, conn.id.resp_port),
    };
    transport << 16 | ServiceKey::from(port)
}

/// The KDD service index of a connection (see the module table).
pub fn service_index(conn: &ConnStart, private_port_below: u16) -> u8 {
    let n = &*NAMED;
    let resp_port = conn.id.resp_port;
    let by_port = |table: &[u8; 65536]| {
        let s = table[usize::from(resp_port)];
        if s != u8::MAX {
            s
        } else if resp_port < private_port_below {
            n.private
        } else {
            n.other
        }
    };
    match conn.id.transport {
        Transport::Tcp => by_port(&TABLES.tcp),
        Transport::Udp => by_port(&TABLES.udp),
        // Not KDD transports (never scored).
        Transport::Sctp | Transport::Unknown => n.other,
        Transport::Icmp => {
            let (t, c) = (
                conn.icmp_type.unwrap_or(u8::MAX),
                conn.icmp_code.unwrap_or(0),
            );
            if conn.ip_version == 6 {
                match (t, c) {
                    (128, _) => n.eco_i,
                    (129, _) => n.ecr_i,
                    (1, 4) => n.urp_i,
                    (1, _) => n.urh_i,
                    (137, _) => n.red_i,
                    _ => n.other,
                }
            } else {
                match (t, c) {
                    (8, _) => n.eco_i,
                    (0, _) => n.ecr_i,
                    (3, 3) => n.urp_i,
                    (3, _) => n.urh_i,
                    (5, _) => n.red_i,
                    (13 | 14, _) => n.tim_i,
                    _ => n.other,
                }
            }
        }
    }
}
