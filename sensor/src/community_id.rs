//! Community ID v1 flow hashes, as Zeek and Suricata log them (the `community-id-spec`):
//! `"1:" + base64(SHA-1(seed, addresses, protocol, 0, ports))`, the endpoints ordered so that
//! the same connection seen from either side hashes alike.
//!
//! Computed when a record is written (replay's `jsonl`, `zeek` and `eve` rows), from the
//! record's addresses, ports, protocol and ICMP type and code: the records themselves do not
//! carry it, so the live path pays nothing for it.
//!
//! The hash input, all in network byte order: the seed (2 bytes), the smaller endpoint's
//! address then the other's (4 or 16 bytes each), the IP protocol (1 byte), a zero byte, then
//! for TCP, UDP, SCTP, ICMP and ICMPv6 the two ports (2 bytes each) in the same order. Other
//! protocols hash no ports. ICMP has no ports: its type stands for the source port and the
//! type of the answer (echo request 8 -> echo reply 0, ...) for the destination port, so that
//! a request and its reply hash alike; a type without an answer (unreachable, time exceeded,
//! ...) is one-way: the code stands for the destination port and the endpoints keep their
//! order.

use std::net::IpAddr;

use base64::{Engine, engine::general_purpose::STANDARD};
use sha1::{Digest, Sha1};

use crate::flows::{ConnectionRecord, Transport};

/// IP protocol numbers hashed with ports.
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// The ICMP (IPv4) types that come in request/answer pairs, and their counterparts (Zeek's
/// `ICMP4_counterpart`).
fn icmp4_counterpart(ty: u8) -> Option<u8> {
    Some(match ty {
        8 => 0, // echo request -> echo reply
        0 => 8,
        13 => 14, // timestamp
        14 => 13,
        15 => 16, // information
        16 => 15,
        10 => 9, // router solicitation -> router advertisement
        9 => 10,
        17 => 18, // address mask
        18 => 17,
        _ => return None,
    })
}

/// The ICMPv6 types that come in pairs (Zeek's `ICMP6_counterpart`).
fn icmp6_counterpart(ty: u8) -> Option<u8> {
    Some(match ty {
        128 => 129, // echo request -> echo reply
        129 => 128,
        133 => 134, // router solicitation -> advertisement
        134 => 133,
        135 => 136, // neighbor solicitation -> advertisement
        136 => 135,
        130 => 131, // multicast listener query -> report
        131 => 130,
        139 => 140, // node information query -> response
        140 => 139,
        144 => 145, // home agent address discovery request -> reply
        145 => 144,
        _ => return None,
    })
}

/// The port equivalents of an ICMP message: `(type, counterpart type or code, one_way)`.
pub fn icmp_ports(v6: bool, ty: u8, code: u8) -> (u16, u16, bool) {
    let counterpart = if v6 {
        icmp6_counterpart(ty)
    } else {
        icmp4_counterpart(ty)
    };
    match counterpart {
        Some(c) => (ty.into(), c.into(), false),
        None => (ty.into(), code.into(), true),
    }
}

/// The Community ID of a flow from `src` to `dst` over IP protocol `proto`, with `ports`
/// `(source, destination)` for the protocols that have them (`None` for the others). `one_way`
/// keeps the endpoints in the given order (one-way ICMP messages); otherwise the smaller
/// `(address, port)` goes first.
pub fn community_id_v1(
    seed: u16,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ports: Option<(u16, u16)>,
    one_way: bool,
) -> String {
    let octets = |a: IpAddr| -> Vec<u8> {
        match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    };
    let (mut sa, mut da) = (octets(src), octets(dst));
    let (mut sp, mut dp) = ports.unwrap_or((0, 0));
    if !one_way && (sa > da || (sa == da && sp > dp)) {
        std::mem::swap(&mut sa, &mut da);
        std::mem::swap(&mut sp, &mut dp);
    }
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(&sa);
    h.update(&da);
    h.update([proto, 0]);
    if ports.is_some() {
        h.update(sp.to_be_bytes());
        h.update(dp.to_be_bytes());
    }
    format!("1:{}", STANDARD.encode(h.finalize()))
}

/// The IP protocol number of a record's connection.
pub fn ip_proto(rec: &ConnectionRecord) -> u8 {
    match rec.transport {
        Transport::Tcp => TCP,
        Transport::Udp => UDP,
        Transport::Sctp => SCTP,
        Transport::Icmp if rec.ip_version == 6 => ICMPV6,
        Transport::Icmp => ICMP,
        Transport::Unknown => rec.ip_proto,
    }
}

/// The ports a flow log shows for a record (`id.orig_p`, `id.resp_p`) and whether the
/// connection is one-way: the record's ports, or for ICMP the type and the counterpart type
/// or code (as Zeek logs them); `None` for protocols without ports.
pub fn flow_ports(rec: &ConnectionRecord) -> Option<(u16, u16, bool)> {
    match rec.transport {
        Transport::Tcp | Transport::Udp | Transport::Sctp => {
            Some((rec.orig_port, rec.resp_port, false))
        }
        Transport::Icmp => Some(icmp_ports(
            rec.ip_version == 6,
            rec.icmp_type.unwrap_or(0),
            rec.icmp_code.unwrap_or(0),
        )),
        Transport::Unknown => None,
    }
}

/// The Community ID of a record's connection (originator as the source).
pub fn of_record(rec: &ConnectionRecord, seed: u16) -> String {
    let ports = flow_ports(rec);
    community_id_v1(
        seed,
        rec.orig_addr,
        rec.resp_addr,
        ip_proto(rec),
        ports.map(|(s, d, _)| (s, d)),
        ports.is_some_and(|(_, _, one_way)| one_way),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tuple of the spec's baseline (`baseline/baseline_deflt.json` and
    /// `baseline_seed1.json`): protocol, source, destination, ports (for ICMP: the type and
    /// the code), and the IDs for seeds 0 and 1.
    type Vector = (
        u8,
        &'static str,
        &'static str,
        Option<(u16, u16)>,
        &'static str,
        &'static str,
    );

    const VECTORS: &[Vector] = &[
        // ICMPv6 neighbor solicitation/advertisement, both directions of two exchanges.
        (
            58,
            "fe80::200:86ff:fe05:80da",
            "fe80::260:97ff:fe07:69ea",
            Some((135, 0)),
            "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
            "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY=",
        ),
        (
            58,
            "fe80::260:97ff:fe07:69ea",
            "fe80::200:86ff:fe05:80da",
            Some((136, 0)),
            "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
            "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY=",
        ),
        (
            58,
            "fe80::260:97ff:fe07:69ea",
            "fe80::200:86ff:fe05:80da",
            Some((135, 0)),
            "1:zavyT/cezQr1fmImYCwYnMXbgck=",
            "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM=",
        ),
        (
            58,
            "fe80::200:86ff:fe05:80da",
            "fe80::260:97ff:fe07:69ea",
            Some((136, 0)),
            "1:zavyT/cezQr1fmImYCwYnMXbgck=",
            "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM=",
        ),
        // ICMPv6 time exceeded and destination unreachable (code 4): one-way.
        (
            58,
            "3ffe:501:1800:2345::2",
            "3ffe:507:0:1:200:86ff:fe05:80da",
            Some((3, 0)),
            "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=",
            "1:lVEtCZpYu84Xqaa++3lXFyuu2n4=",
        ),
        (
            58,
            "3ffe:501:410:0:2c0:dfff:fe47:33e",
            "3ffe:507:0:1:200:86ff:fe05:80da",
            Some((1, 4)),
            "1:hLZd0XGWojozrvxqE0dWB1iM6R0=",
            "1:W8MHwXpWzpoSTD+cGcaJr4u0ys8=",
        ),
        // ICMPv6 echo request and reply.
        (
            58,
            "3ffe:507:0:1:200:86ff:fe05:80da",
            "3ffe:501:0:1001::2",
            Some((128, 0)),
            "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=",
            "1:GfZxjAkDk2MkegpBYHV6tadtFXQ=",
        ),
        (
            58,
            "3ffe:501:0:1001::2",
            "3ffe:507:0:1:200:86ff:fe05:80da",
            Some((129, 0)),
            "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=",
            "1:GfZxjAkDk2MkegpBYHV6tadtFXQ=",
        ),
        // ICMPv6 router solicitation and advertisement, to multicast groups.
        (
            58,
            "fe80::200:86ff:fe05:80da",
            "ff02::2",
            Some((133, 0)),
            "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=",
            "1:L7Ka0ZMYu+J3bL4ulW2PrqyXNo8=",
        ),
        (
            58,
            "fe80::260:97ff:fe07:69ea",
            "ff02::1",
            Some((134, 0)),
            "1:pkvHqCL88/tg1k4cPigmZXUtL00=",
            "1:K/ee5UCqAMAQXDorP5nSa2CGLjc=",
        ),
        // ICMP echo request and reply; time exceeded (one-way).
        (
            1,
            "192.168.0.89",
            "192.168.0.1",
            Some((8, 0)),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            "1:03g6IloqVBdcZlPyX8r0hgoE7kA=",
        ),
        (
            1,
            "192.168.0.1",
            "192.168.0.89",
            Some((0, 0)),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            "1:03g6IloqVBdcZlPyX8r0hgoE7kA=",
        ),
        (
            1,
            "10.0.0.1",
            "10.0.0.2",
            Some((11, 0)),
            "1:YHxtAirCG//0OzkcVAukqKQN9xM=",
            "1:XjUibYHaafLQ3pxQeiMI8g25q20=",
        ),
        // TCP over IPv6, both directions.
        (
            6,
            "2001:470:e5bf:dead:4957:2174:e82c:4887",
            "2607:f8b0:400c:c03::1a",
            Some((63943, 25)),
            "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
            "1:eJYTW6AOzFLlSUoESovMjnu7rMw=",
        ),
        (
            6,
            "2607:f8b0:400c:c03::1a",
            "2001:470:e5bf:dead:4957:2174:e82c:4887",
            Some((25, 63943)),
            "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
            "1:eJYTW6AOzFLlSUoESovMjnu7rMw=",
        ),
        // SCTP, equal ports.
        (
            132,
            "192.168.170.8",
            "192.168.170.56",
            Some((7, 7)),
            "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=",
            "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg=",
        ),
        (
            132,
            "192.168.170.56",
            "192.168.170.8",
            Some((7, 7)),
            "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=",
            "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg=",
        ),
        // TCP and UDP over IPv4, both directions.
        (
            6,
            "128.232.110.120",
            "66.35.250.204",
            Some((34855, 80)),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            "1:3V71V58M3Ksw/yuFALMcW0LAHvc=",
        ),
        (
            6,
            "66.35.250.204",
            "128.232.110.120",
            Some((80, 34855)),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            "1:3V71V58M3Ksw/yuFALMcW0LAHvc=",
        ),
        (
            17,
            "192.168.1.52",
            "8.8.8.8",
            Some((54585, 53)),
            "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            "1:Q9We8WO3piVF8yEQBNJF4uiSVrI=",
        ),
        (
            17,
            "8.8.8.8",
            "192.168.1.52",
            Some((53, 54585)),
            "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            "1:Q9We8WO3piVF8yEQBNJF4uiSVrI=",
        ),
        // RSVP (46): no ports.
        (
            46,
            "10.1.12.1",
            "10.1.12.2",
            None,
            "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=",
            "1:rYir8gphR31noO9iDRQmF/BteEI=",
        ),
        (
            46,
            "10.1.12.2",
            "10.1.12.1",
            None,
            "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=",
            "1:rYir8gphR31noO9iDRQmF/BteEI=",
        ),
    ];

    fn id(seed: u16, (proto, src, dst, ports, ..): &Vector) -> String {
        let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
        match (proto, ports) {
            (1 | 58, Some((ty, code))) => {
                let (s, d, one_way) = icmp_ports(*proto == 58, *ty as u8, *code as u8);
                community_id_v1(seed, src, dst, *proto, Some((s, d)), one_way)
            }
            _ => community_id_v1(seed, src, dst, *proto, *ports, false),
        }
    }

    #[test]
    fn spec_baseline_vectors_seed_0() {
        for v in VECTORS {
            assert_eq!(id(0, v), v.4, "{v:?}");
        }
    }

    #[test]
    fn spec_baseline_vectors_seed_1() {
        for v in VECTORS {
            assert_eq!(id(1, v), v.5, "{v:?}");
        }
    }

    #[test]
    fn icmp_ports_pair_requests_with_answers_and_keep_codes_of_one_way_types() {
        assert_eq!(icmp_ports(false, 8, 0), (8, 0, false));
        assert_eq!(icmp_ports(false, 0, 0), (0, 8, false));
        assert_eq!(icmp_ports(false, 13, 0), (13, 14, false));
        assert_eq!(icmp_ports(false, 3, 1), (3, 1, true));
        assert_eq!(icmp_ports(true, 128, 0), (128, 129, false));
        assert_eq!(icmp_ports(true, 1, 4), (1, 4, true));
    }

    #[test]
    fn records_hash_their_icmp_type_not_the_echo_identifier() {
        let json = r#"{"start_unix_ns":0,"end_unix_ns":0,"transport":"icmp","ip_version":4,
            "orig_addr":"192.168.0.89","orig_port":4711,"resp_addr":"192.168.0.1","resp_port":0,
            "icmp_type":8,"icmp_code":0,"orig_packets":1,"resp_packets":1,"orig_bytes":56,
            "resp_bytes":56,"conn_state":"SF","urgent_packets":0,"wrong_fragments":0,
            "land":false,"end_reason":"idle"}"#;
        let mut rec: ConnectionRecord = serde_json::from_str(json).unwrap();
        assert_eq!(of_record(&rec, 0), "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=");
        rec.transport = Transport::Tcp;
        rec.orig_port = 34855;
        rec.resp_port = 80;
        rec.orig_addr = "128.232.110.120".parse().unwrap();
        rec.resp_addr = "66.35.250.204".parse().unwrap();
        assert_eq!(of_record(&rec, 1), "1:3V71V58M3Ksw/yuFALMcW0LAHvc=");
        rec.transport = Transport::Unknown;
        rec.ip_proto = 46;
        rec.orig_addr = "10.1.12.2".parse().unwrap();
        rec.resp_addr = "10.1.12.1".parse().unwrap();
        assert_eq!(of_record(&rec, 0), "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=");
    }
}
