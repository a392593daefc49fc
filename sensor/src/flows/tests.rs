use super::*;

#[test]
fn history_reads_as_zeek_letters_and_back() {
    use history::*;
    let h = History {
        orig: SYN | NON_SYN | ACK | DATA | FIN,
        resp: SYN_ACK | NON_SYN | ACK | DATA | RST,
    };
    assert_eq!(h.letters(), "SADFhadr");
    let json = serde_json::to_string(&h).unwrap();
    assert_eq!(json, r#""SADFhadr""#);
    let back: History = serde_json::from_str(&json).unwrap();
    // The letters carry every bit but NON_SYN, which only the state machine uses.
    assert_eq!(back.orig, h.orig & !NON_SYN);
    assert_eq!(back.resp, h.resp & !NON_SYN);
    assert!(h.start_seen() && !History::default().start_seen());
    let e = serde_json::from_str::<History>(r#""SX""#).unwrap_err();
    assert!(e.to_string().contains("unknown letter 'X'"), "{e}");
}
use sensor_common::{
    account::{account, new_value},
    parse::parse_ethernet,
};

/// An Ethernet/IPv4/UDP frame from 198.18.0.2:5353 to 198.18.0.1:53 with `payload` bytes.
fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 8 + payload;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend(std::iter::repeat_n(0xab, payload));
    f
}

#[test]
fn a_udp_exchange_becomes_an_oriented_record() {
    let q = udp_frame([198, 18, 0, 2], 5353, [198, 18, 0, 1], 53, 30);
    let r = udp_frame([198, 18, 0, 1], 53, [198, 18, 0, 2], 5353, 120);
    let pq = parse_ethernet(&q[..]).unwrap();
    let pr = parse_ethernet(&r[..]).unwrap();
    let (key, sq) = FlowKey::canonical(&pq.src, pq.sport, &pq.dst, pq.dport, 17, 4);
    let (_, sr) = FlowKey::canonical(&pr.src, pr.sport, &pr.dst, pr.dport, 17, 4);
    let mut v = new_value(&pq, &key, sq, 1_000);
    // SAFETY: `v` is a live local.
    unsafe {
        account(&mut v, &pq, sq, 1_000, 1);
        account(&mut v, &pr, sr, 3_000, 1);
    }
    let rec = ConnectionRecord::from_flow(&key, &v, 10, EndReason::Idle).unwrap();
    assert_eq!(rec.orig_addr, "198.18.0.2".parse::<IpAddr>().unwrap());
    assert_eq!((rec.orig_port, rec.resp_port), (5353, 53));
    assert_eq!(rec.resp_addr, "198.18.0.1".parse::<IpAddr>().unwrap());
    assert_eq!((rec.orig_bytes, rec.resp_bytes), (30, 120));
    assert_eq!((rec.orig_packets, rec.resp_packets), (1, 1));
    assert_eq!(rec.conn_state, ConnState::SF);
    assert_eq!((rec.start_unix_ns, rec.end_unix_ns), (1_010, 3_010));
    let json = serde_json::to_string(&rec).unwrap();
    assert!(json.contains("\"conn_state\":\"SF\""), "{json}");
    let back: ConnectionRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rec);
}

/// `ConnId`'s hand-written `Hash` takes in every field: ids that differ in any one of them
/// hash apart (a seeded hasher, so a chance collision is 2^-64), and equal ids hash alike.
#[test]
fn a_connection_id_hashes_every_field() {
    use std::hash::BuildHasher;
    let hasher = foldhash::fast::FixedState::with_seed(7);
    let base = ConnId {
        start_unix_ns: 1_700_000_000_000_000_000,
        transport: Transport::Tcp,
        orig_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        orig_port: 40_000,
        resp_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        resp_port: 443,
    };
    let v6 = |a: Ipv4Addr| IpAddr::V6(Ipv6Addr::from(u128::from(u32::from(a))));
    let variants = [
        ConnId {
            start_unix_ns: base.start_unix_ns + 1,
            ..base
        },
        ConnId {
            transport: Transport::Udp,
            ..base
        },
        ConnId {
            transport: Transport::Unknown,
            ..base
        },
        ConnId {
            orig_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3)),
            ..base
        },
        ConnId {
            orig_port: 40_001,
            ..base
        },
        ConnId {
            resp_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9)),
            ..base
        },
        ConnId {
            resp_port: 80,
            ..base
        },
        // The same bits as the base's addresses, as IPv6: another id, another hash.
        ConnId {
            orig_addr: v6(Ipv4Addr::new(198, 18, 0, 2)),
            ..base
        },
        ConnId {
            resp_addr: v6(Ipv4Addr::new(198, 18, 0, 1)),
            ..base
        },
        // The ports swapped.
        ConnId {
            orig_port: 443,
            resp_port: 40_000,
            ..base
        },
    ];
    let h = hasher.hash_one(base);
    assert_eq!(h, hasher.hash_one(base));
    for v in variants {
        assert_ne!(v, base);
        assert_ne!(hasher.hash_one(v), h, "{v:?}");
    }
}
