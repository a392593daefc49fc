//! The connection lifecycle (`sensor::lifecycle`, shared with the live sensor) on the capture
//! clock (`replay::Replayer`): the events it emits, linger after a finished connection, port
//! reuse, duplicate end signals, idle timeouts per protocol with exact final moments, a full
//! table, fragments, the health invariant, and a cost that follows the packets.
mod common;

use common::*;
use sensor::{
    flows::{ConnEvent, ConnectionRecord, EndReason},
    replay::{LinkType, ReplayConfig, Replayer},
};
use sensor_common::{Health, conn_state::ConnState};

struct Run {
    r: Replayer,
    out: Vec<ConnEvent>,
}

impl Run {
    fn new(config: ReplayConfig) -> Run {
        Run {
            r: Replayer::new(config),
            out: Vec::new(),
        }
    }
    fn at(&mut self, t_ms: u64, frame: Vec<u8>) -> &mut Self {
        self.r.packet(
            T0 + t_ms * MS,
            frame.len() as u64,
            LinkType::Ethernet,
            &frame,
            &mut self.out,
        );
        self
    }
    /// The connections finished since the last call.
    fn take(&mut self) -> Vec<ConnectionRecord> {
        finished(std::mem::take(&mut self.out))
    }
}

fn finished(events: Vec<ConnEvent>) -> Vec<ConnectionRecord> {
    events
        .into_iter()
        .filter_map(|e| match e {
            ConnEvent::Finished(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn outcomes_add_up(h: &Health) {
    assert_eq!(h.outcomes(), h.packets + h.tunnel_payloads, "{h:?}");
}

const C: [u8; 4] = [198, 18, 0, 2];
const S: [u8; 4] = [198, 18, 0, 1];

fn handshake_and_close(run: &mut Run, t: u64, port: u16) {
    run.at(t, tcp4(C, port, S, 80, SYN, &[]))
        .at(t + 1, tcp4(S, 80, C, port, SYN | ACK, &[]))
        .at(t + 2, tcp4(C, port, S, 80, ACK, &[]))
        .at(t + 3, tcp4(C, port, S, 80, PSH | ACK, &[b'x'; 10]))
        .at(t + 4, tcp4(C, port, S, 80, FIN | ACK, &[]))
        .at(t + 5, tcp4(S, 80, C, port, FIN | ACK, &[]))
        .at(t + 6, tcp4(C, port, S, 80, ACK, &[]));
}

#[test]
fn a_trailing_ack_lingers_and_the_entry_goes_after_the_linger() {
    let mut run = Run::new(ReplayConfig::default());
    handshake_and_close(&mut run, 0, 40000);
    let recs = run.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].conn_state, recs[0].end_reason),
        (ConnState::SF, EndReason::Fin)
    );
    // The final ACK is in the record (its event ended the wait for it).
    assert_eq!((recs[0].orig_packets, recs[0].resp_packets), (5, 2));
    assert_eq!(
        recs[0].end_unix_ns,
        T0 + 5 * MS,
        "it ends at the second FIN"
    );
    // A repeated ACK and a retransmitted FIN: accounted into the lingering entry, no new record.
    run.at(7, tcp4(C, 40000, S, 80, ACK, &[]))
        .at(500, tcp4(S, 80, C, 40000, FIN | ACK, &[]));
    assert!(run.take().is_empty());
    assert_eq!(run.r.tables().len(), 1);
    // 5 s linger after its last packet (500 ms), removed when the clock passes it.
    run.at(5400, udp4(C, 1, S, 2, &[b'u'; 1]));
    assert_eq!(run.r.tables().len(), 2, "still lingering at 5.4 s");
    run.at(5700, udp4(C, 1, S, 2, &[b'u'; 1]));
    assert_eq!(run.r.tables().len(), 1, "gone after 5.5 s");
    run.r.finish(&mut run.out);
    let recs = run.take();
    assert_eq!(recs.len(), 1, "only the UDP flow is left: {recs:#?}");
    assert_eq!(recs[0].end_reason, EndReason::Shutdown);
    let s = run.r.stats();
    assert_eq!(
        (s.records_fin, s.records_shutdown, s.duplicate_events),
        (1, 1, 0)
    );
    outcomes_add_up(&run.r.health());
}

#[test]
fn a_syn_reusing_a_finished_five_tuple_is_a_new_connection() {
    let mut run = Run::new(ReplayConfig::default());
    handshake_and_close(&mut run, 0, 40000);
    handshake_and_close(&mut run, 100, 40000);
    let recs = run.take();
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for r in &recs {
        assert_eq!((r.orig_packets, r.resp_packets, r.orig_bytes), (5, 2, 10));
    }
    assert_eq!(recs[1].start_unix_ns, T0 + 100 * MS);
    let h = run.r.health();
    // Each connection: opened, answered, finished, its final ACK; and the first one handed
    // over again when the second restarted its entry (already reported: no second record).
    assert_eq!(
        (h.flows_created, h.flows_restarted, h.events_sent),
        (1, 1, 9)
    );
    let s = run.r.stats();
    assert_eq!((s.finished_on_restart, s.lost_on_restart), (0, 0));
}

#[test]
fn a_half_closed_connection_whose_port_is_reused_keeps_its_record() {
    let mut run = Run::new(ReplayConfig::default());
    run.at(0, tcp4(C, 40000, S, 80, SYN, &[]))
        .at(1, tcp4(S, 80, C, 40000, SYN | ACK, &[]))
        .at(2, tcp4(C, 40000, S, 80, ACK | PSH, &[b'x'; 10]))
        .at(3, tcp4(C, 40000, S, 80, FIN | ACK, &[]));
    // The server never closes its side; the client opens a new connection from the same port.
    handshake_and_close(&mut run, 100, 40000);
    let recs = run.take();
    assert_eq!(recs.len(), 2, "{recs:#?}");
    assert_eq!((recs[0].start_unix_ns, recs[0].orig_packets), (T0, 3));
    assert_eq!(recs[1].start_unix_ns, T0 + 100 * MS);
    let s = run.r.stats();
    assert_eq!((s.finished_on_restart, s.lost_on_restart), (1, 0));
}

#[test]
fn a_close_without_a_final_ack_is_recorded_after_the_settle() {
    let mut run = Run::new(ReplayConfig::default());
    run.at(0, tcp4(C, 40000, S, 80, SYN, &[]))
        .at(1, tcp4(S, 80, C, 40000, SYN | ACK, &[]))
        .at(2, tcp4(C, 40000, S, 80, ACK, &[]))
        .at(3, tcp4(C, 40000, S, 80, FIN | ACK, &[]))
        .at(4, tcp4(S, 80, C, 40000, FIN | ACK, &[]));
    assert!(run.take().is_empty(), "waiting for the final ACK");
    run.at(13, udp4(C, 1, S, 2, &[b'u'; 1]));
    assert!(run.take().is_empty(), "still within the 10 ms settle");
    run.at(15, udp4(C, 1, S, 2, &[b'u'; 1]));
    let recs = run.take();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!((recs[0].orig_packets, recs[0].resp_packets), (3, 2));
    assert_eq!(recs[0].final_unix_ns, T0 + 4 * MS);
}

#[test]
fn a_second_rst_is_a_duplicate_end_signal() {
    let mut run = Run::new(ReplayConfig::default());
    run.at(0, tcp4(C, 40000, S, 80, SYN, &[]))
        .at(1, tcp4(S, 80, C, 40000, SYN | ACK, &[]))
        .at(2, tcp4(C, 40000, S, 80, RST, &[]))
        .at(3, tcp4(S, 80, C, 40000, RST, &[]));
    let recs = run.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].conn_state, ConnState::RSTO);
    assert_eq!(recs[0].resp_packets, 1, "the snapshot at the first RST");
    let s = run.r.stats();
    // Opened, answered, the first RST, the second RST (a duplicate end signal).
    assert_eq!((s.events, s.duplicate_events), (4, 1));
}

#[test]
fn idle_timeouts_follow_the_protocol_and_the_handshake() {
    let mut run = Run::new(ReplayConfig::default());
    run.at(0, udp4(C, 5000, S, 53, &[b'u'; 10])) // UDP: 60 s
        .at(0, tcp4(C, 40001, S, 22, SYN, &[])) // attempt: 5 s
        .at(0, tcp4(C, 40002, S, 80, SYN, &[])) // established: 300 s
        .at(1, tcp4(S, 80, C, 40002, SYN | ACK, &[]))
        .at(2, tcp4(C, 40002, S, 80, ACK, &[]));
    let ended = |run: &mut Run, t: u64| {
        run.at(t, ethernet(&[], 0x88b5, &[0; 46])); // a non-IP frame moves the clock
        run.take()
            .iter()
            .map(|r| (r.resp_port, r.end_reason))
            .collect::<Vec<_>>()
    };
    assert_eq!(ended(&mut run, 4_999), vec![]);
    assert_eq!(ended(&mut run, 5_000), vec![(22, EndReason::Idle)]);
    assert_eq!(ended(&mut run, 59_999), vec![]);
    assert_eq!(ended(&mut run, 61_300), vec![(53, EndReason::Idle)]);
    assert_eq!(ended(&mut run, 299_000), vec![]);
    let late = ended(&mut run, 302_000);
    assert_eq!(late, vec![(80, EndReason::Idle)]);
    assert!(run.r.tables().is_empty());
    assert_eq!(run.r.health().non_ip, 6);
}

/// The early verdicts (`ConnEvent::Ongoing`) emitted so far: port and moment, in ms after T0.
fn early_verdicts(run: &Run) -> Vec<(u16, u64)> {
    run.out
        .iter()
        .filter_map(|e| match e {
            ConnEvent::Ongoing(r) => Some((r.resp_port, (r.final_unix_ns - T0) / MS)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_client_retransmitting_its_syn_gets_no_early_verdict_and_a_spoofed_syn_gets_one_at_2_s() {
    let mut run = Run::new(ReplayConfig::default());
    // In time order:
    // * port 80: a busy server dropped the first SYN and answered its retransmission a second
    //   later;
    // * port 81: a client whose SYNs are never answered (a server that drops them);
    // * port 82: a spoofed SYN, sent once;
    // * port 83: SYNs poured into one 5-tuple, more than a client's stack sends;
    // * port 84: one SYN sent twice in a row (or captured twice), not a retransmission;
    // * port 53: a UDP conversation, judged a second after its first datagram as before.
    run.at(0, tcp4(C, 41000, S, 80, SYN, &[]))
        .at(10, tcp4(C, 41001, S, 81, SYN, &[]))
        .at(20, tcp4(C, 41002, S, 82, SYN, &[]))
        .at(30, tcp4(C, 41003, S, 83, SYN, &[]))
        .at(40, udp4(C, 5000, S, 53, &[b'u'; 10]))
        .at(50, tcp4(C, 41004, S, 84, SYN, &[]))
        .at(51, tcp4(C, 41004, S, 84, SYN, &[]))
        .at(130, tcp4(C, 41003, S, 83, SYN, &[]))
        .at(230, tcp4(C, 41003, S, 83, SYN, &[]))
        .at(330, tcp4(C, 41003, S, 83, SYN, &[]))
        .at(1_003, tcp4(C, 41000, S, 80, SYN, &[]))
        .at(1_004, tcp4(S, 80, C, 41000, SYN | ACK, &[]))
        .at(1_005, tcp4(C, 41000, S, 80, ACK, &[]))
        .at(1_010, tcp4(C, 41001, S, 81, SYN, &[]));
    // Past the UDP delay (1 s): only the UDP conversation has its early verdict; the TCP
    // attempts wait for their retransmissions' answers.
    run.at(1_900, udp4(C, 9, S, 9, &[b'u'; 1]));
    assert_eq!(early_verdicts(&run), [(53, 1_040)]);
    // Past 2 s: the spoofed SYN, the SYNs in one 5-tuple and the SYN sent twice, at 2 s after
    // their first packet; not the answered client, and not the client still retransmitting.
    run.at(2_100, udp4(C, 9, S, 9, &[b'u'; 1]));
    assert_eq!(
        early_verdicts(&run),
        [(53, 1_040), (82, 2_020), (83, 2_030), (84, 2_050)]
    );
    // The retransmitting client is judged at its final record, the attempt timeout (5 s) after
    // its first SYN, an unanswered attempt (S0).
    run.out.clear();
    run.at(7_000, udp4(C, 9, S, 9, &[b'u'; 1]));
    let recs = run.take();
    let waited = recs
        .iter()
        .find(|r| r.resp_port == 81)
        .expect("port 81's record");
    assert_eq!((waited.conn_state, waited.orig_packets), (ConnState::S0, 2));
}

#[test]
fn events_come_in_order_and_records_carry_their_final_moment() {
    let mut run = Run::new(ReplayConfig::default());
    run.at(0, tcp4(C, 40000, S, 80, SYN, &[]))
        .at(3, tcp4(S, 80, C, 40000, SYN | ACK, &[]))
        .at(4, tcp4(C, 40000, S, 80, ACK, &[]))
        .at(10, udp4(C, 5000, S, 53, &[b'u'; 10]))
        .at(20, tcp4(C, 40001, S, 81, SYN, &[]))
        .at(21, tcp4(S, 81, C, 40001, RST | ACK, &[]));
    let kinds: Vec<String> = run
        .out
        .iter()
        .map(|e| match e {
            ConnEvent::Opened(s) => format!("open {}", s.id.resp_port),
            ConnEvent::Answered { id, refused, .. } => {
                format!("answer {} refused={refused}", id.resp_port)
            }
            ConnEvent::Ongoing(r) => format!("ongoing {}", r.resp_port),
            ConnEvent::Finished(r) => format!("finish {} {:?}", r.resp_port, r.end_reason),
            ConnEvent::Settled(r) => format!("settled {}", r.resp_port),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "open 80",
            "answer 80 refused=false",
            "open 53",
            "open 81",
            "answer 81 refused=true",
            "finish 81 Rst"
        ]
    );
    let refused = &run.take()[0];
    assert_eq!(refused.answer_unix_ns, Some(T0 + 21 * MS));
    assert_eq!(refused.final_unix_ns, T0 + 21 * MS);
    // The UDP conversation, open a second later without an established handshake, gets an
    // early verdict; the answered TCP connection does not.
    run.at(1_500, udp4(C, 9, S, 9, &[b'u'; 1]));
    let ongoing: Vec<(u16, u64)> = run
        .out
        .iter()
        .filter_map(|e| match e {
            ConnEvent::Ongoing(r) => Some((r.resp_port, r.final_unix_ns)),
            _ => None,
        })
        .collect();
    assert_eq!(ongoing, [(53, T0 + 1010 * MS)]);
    run.take();
    // Idle: final at the last packet plus the timeout that applied, to the nanosecond.
    run.at(70_000, udp4(C, 9, S, 9, &[b'u'; 1]));
    let idle = run.take();
    let udp = idle.iter().find(|r| r.resp_port == 53).unwrap();
    assert_eq!(udp.final_unix_ns, T0 + 10 * MS + 60_000 * MS);
    run.at(302_000, udp4(C, 9, S, 9, &[b'u'; 1]));
    let idle = run.take();
    let tcp = idle.iter().find(|r| r.resp_port == 80).unwrap();
    assert_eq!(tcp.answer_unix_ns, Some(T0 + 3 * MS));
    assert_eq!(tcp.end_reason, EndReason::Idle);
    assert_eq!(tcp.final_unix_ns, T0 + 4 * MS + 300_000 * MS, "{tcp:?}");
}

#[test]
fn the_cost_follows_the_packets_not_the_span_of_the_clock() {
    // Fifty years between two packets. Walking the clock in ticks would take hours; the deadline
    // of the first conversation simply falls due at the second packet. The bound only proves
    // that nothing walks the span; the speed of replay is measured by `cargo bench`.
    let mut run = Run::new(ReplayConfig::default());
    let start = std::time::Instant::now();
    run.r.packet(
        1_000_000_000,
        60,
        LinkType::Ethernet,
        &udp4(C, 514, S, 514, &[b'u'; 20]),
        &mut run.out,
    );
    let later = 50 * 365 * 24 * 3600 * 1_000_000_000u64;
    run.r.packet(
        later,
        60,
        LinkType::Ethernet,
        &udp4(C, 514, S, 514, &[b'u'; 20]),
        &mut run.out,
    );
    run.r.finish(&mut run.out);
    let recs = run.take();
    assert_eq!(recs.len(), 2, "two conversations, 50 years apart");
    assert_eq!(recs[0].end_reason, EndReason::Idle);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

/// Open TCP connections keep their room; the oldest attempt gives its own.
#[test]
fn a_full_table_evicts_the_oldest_attempt_and_keeps_tcp_connections() {
    let mut run = Run::new(ReplayConfig {
        table_size: 2,
        ..ReplayConfig::default()
    });
    let open = |run: &mut Run, t: u64, port: u16| {
        run.at(t, tcp4(C, port, S, 80, PSH | ACK, &[b'u'; 10]))
            .at(t, tcp4(S, 80, C, port, PSH | ACK, &[b'u'; 20]));
    };
    run.at(0, tcp4(C, 1, S, 80, SYN, &[]))
        .at(0, tcp4(S, 80, C, 1, SYN | ACK, &[]));
    open(&mut run, 1, 1);
    run.at(2, udp4(C, 2, S, 53, &[b'u'; 10]))
        // Full: port 2's attempt (unanswered) makes room.
        .at(3, tcp4(C, 3, S, 80, SYN, &[]))
        .at(3, tcp4(S, 80, C, 3, SYN | ACK, &[]));
    open(&mut run, 4, 3);
    // Full of open TCP connections: nothing to evict.
    run.at(5, udp4(C, 4, S, 53, &[b'u'; 10]));
    let h = run.r.health();
    assert_eq!(
        (h.accounted, h.table_full, h.flows_created, h.flows_evicted),
        (9, 1, 3, 1)
    );
    outcomes_add_up(&h);
    let evicted = run.take();
    assert_eq!(evicted.len(), 1);
    let e = &evicted[0];
    assert_eq!((e.orig_port, e.end_reason), (2, EndReason::Evicted));
    assert_eq!(e.final_unix_ns, T0 + 3 * MS, "final when it left the table");
    run.r.finish(&mut run.out);
    let recs = run.take();
    // Flushed in end-time order: port 1's connection (last packet at 1 ms), then port 3's.
    let brief: Vec<_> = recs
        .iter()
        .map(|r| (r.orig_port, r.orig_bytes, r.resp_bytes))
        .collect();
    assert_eq!(brief, vec![(1, 10, 20), (3, 10, 20)]);
    let s = run.r.stats();
    assert_eq!(
        (s.records(), s.records_evicted),
        (h.flows_created, 1),
        "every flow created is a record"
    );
}

/// UDP exchanges, answered or not, are room too (an answer proves nothing about its source):
/// a table full of them takes a new flow in the place of the one seen last longest ago.
#[test]
fn a_full_table_evicts_the_oldest_udp_exchange() {
    let mut run = Run::new(ReplayConfig {
        table_size: 2,
        ..ReplayConfig::default()
    });
    run.at(0, udp4(C, 1, S, 53, &[b'u'; 10]))
        .at(1, udp4(S, 53, C, 1, &[b'u'; 20]))
        .at(2, udp4(C, 2, S, 53, &[b'u'; 10]))
        .at(3, udp4(S, 53, C, 2, &[b'u'; 20]))
        .at(4, udp4(C, 3, S, 53, &[b'u'; 10]));
    let h = run.r.health();
    assert_eq!((h.table_full, h.flows_created, h.flows_evicted), (0, 3, 1));
    let evicted = run.take();
    let brief: Vec<_> = evicted
        .iter()
        .map(|r| (r.orig_port, r.end_reason, r.orig_bytes, r.resp_bytes))
        .collect();
    assert_eq!(brief, vec![(1, EndReason::Evicted, 10, 20)]);
}

/// A finished connection's lingering entry is room a new flow may take: a table full of
/// connections that ended moments ago admits new ones, and each ended connection keeps its one
/// record.
#[test]
fn a_full_table_evicts_finished_connections_that_linger() {
    let mut run = Run::new(ReplayConfig {
        table_size: 2,
        ..ReplayConfig::default()
    });
    handshake_and_close(&mut run, 0, 40001);
    handshake_and_close(&mut run, 10, 40002);
    assert_eq!(run.r.tables().len(), 2, "both linger");
    let closed = run.take();
    assert_eq!(closed.len(), 2);
    // An open TCP connection takes the first one's room; a second the other's.
    for (t, port) in [(20, 3), (22, 4)] {
        run.at(t, tcp4(C, port, S, 80, SYN, &[]))
            .at(t, tcp4(S, 80, C, port, SYN | ACK, &[]))
            .at(t + 1, tcp4(C, port, S, 80, ACK, &[]));
    }
    let h = run.r.health();
    assert_eq!((h.table_full, h.flows_evicted), (0, 2), "{h:?}");
    assert!(run.take().is_empty(), "no second record of the closed ones");
    // Now full of open TCP connections: nothing to evict.
    run.at(24, udp4(C, 5, S, 53, &[b'u'; 10]));
    assert_eq!(run.r.health().table_full, 1);
    run.r.finish(&mut run.out);
    let recs = run.take();
    let ports: Vec<_> = recs.iter().map(|r| r.orig_port).collect();
    assert_eq!(ports, vec![3, 4]);
    let s = run.r.stats();
    assert_eq!(
        (s.records(), s.records_fin, s.evicted_after_report),
        (4, 2, 2)
    );
    outcomes_add_up(&run.r.health());
}

/// Replay's table evicts what the kernel's does: a one-sided flow (a spoofed ACK to an address
/// that does not answer) and a handshake its originator never completed (a spoofed SYN the
/// server answered) make room for new connections, each recorded with end reason `evicted`;
/// completed handshakes stay.
#[test]
fn a_full_table_evicts_one_sided_flows_and_half_open_handshakes() {
    let mut run = Run::new(ReplayConfig {
        table_size: 2,
        ..ReplayConfig::default()
    });
    const SPOOFED: [u8; 4] = [198, 18, 9, 1];
    run.at(0, tcp4(SPOOFED, 1000, S, 80, ACK, &[]))
        .at(1, tcp4(SPOOFED, 1001, S, 80, SYN, &[]))
        .at(2, tcp4(S, 80, SPOOFED, 1001, SYN | ACK, &[]));
    // Full: two connections, each in a flood packet's room (the one that entered first).
    for (t, port) in [(3, 40001), (6, 40002)] {
        run.at(t, tcp4(C, port, S, 80, SYN, &[]))
            .at(t + 1, tcp4(S, 80, C, port, SYN | ACK, &[]))
            .at(t + 2, tcp4(C, port, S, 80, ACK, &[]));
    }
    // Full of completed handshakes: nothing to evict.
    run.at(9, tcp4(SPOOFED, 1002, S, 80, ACK, &[]));
    let h = run.r.health();
    assert_eq!(
        (h.table_full, h.flows_created, h.flows_evicted),
        (1, 4, 2),
        "{h:?}"
    );
    outcomes_add_up(&h);
    let evicted: Vec<_> = run
        .take()
        .iter()
        .map(|r| (r.orig_port, r.end_reason, r.orig_packets, r.resp_packets))
        .collect();
    assert_eq!(
        evicted,
        vec![
            (1000, EndReason::Evicted, 1, 0),
            (1001, EndReason::Evicted, 1, 1)
        ]
    );
    run.r.finish(&mut run.out);
    let rest: Vec<_> = run
        .take()
        .iter()
        .map(|r| (r.orig_port, r.orig_packets, r.resp_packets))
        .collect();
    assert_eq!(rest, vec![(40001, 2, 1), (40002, 2, 1)]);
}

#[test]
fn fragments_are_attributed_through_the_first_one() {
    // A 2-fragment UDP datagram: the first carries the UDP header, the second only data.
    let frag = |more: bool, offset8: u16, payload: &[u8]| {
        let mut ip = Ipv4::new(C, S, 17).build(payload);
        let ff = (u16::from(more) << 13) | offset8;
        ip[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        ip[6..8].copy_from_slice(&ff.to_be_bytes());
        ethernet(&[], 0x0800, &ip)
    };
    let first = {
        let mut u = udp(7000, 9000, None, &[7; 32]);
        u[4..6].copy_from_slice(&(8u16 + 32 + 24).to_be_bytes());
        u
    };
    let mut run = Run::new(ReplayConfig::default());
    run.at(0, frag(true, 0, &first))
        .at(1, frag(false, 5, &[8; 24]));
    // A later fragment of an unknown train.
    let mut orphan = frag(false, 5, &[8; 24]);
    orphan[18..20].copy_from_slice(&0x1111u16.to_be_bytes());
    run.at(2, orphan);
    run.r.finish(&mut run.out);
    let recs = run.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].orig_packets, 2);
    assert_eq!(recs[0].orig_bytes, 32 + 24);
    let h = run.r.health();
    assert_eq!((h.accounted, h.unattributed_fragments), (2, 1));
    outcomes_add_up(&h);
}

#[test]
fn every_packet_of_the_golden_captures_is_counted_once() {
    for (name, _) in golden_captures() {
        let mut r = Replayer::new(ReplayConfig::default());
        let mut out: Vec<ConnEvent> = Vec::new();
        let n = sensor::replay::for_each_packet(&fixtures_dir().join(name), |p| {
            r.packet(p.ts_ns, u64::from(p.wire_len), p.link, p.data, &mut out)
        })
        .unwrap();
        let h = r.health();
        assert_eq!(h.packets, n, "{name}");
        outcomes_add_up(&h);
        // Truncated and non-IP frames land in their own counters.
        let mut short = tcp4(C, 1, S, 2, SYN, &[]);
        short.truncate(14 + 20 + 10);
        r.packet(T0, short.len() as u64, LinkType::Ethernet, &short, &mut out);
        assert_eq!(r.health().truncated, h.truncated + 1);
        outcomes_add_up(&r.health());
    }
}
