//! Frame builders for packet-level tests, and a harness that runs the real XDP program on a
//! frame through BPF_PROG_TEST_RUN and reads the maps back.
//!
//! Addresses come from 198.18.0.0/15 and 2001:2::/48 only.

use aya::{
    Ebpf,
    maps::{Array, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use sensor_common::{FlowKey, FlowValue, Health, map_names, program_names};

pub use crate::frames::*;

/// Keeps the calling thread on `cpu`: BPF_PROG_TEST_RUN runs a program on the CPU of the
/// thread that asks, and what XDP remembers per CPU (`sensor_common::nat`'s first packets) is
/// found again by a later run only on the same CPU, as on a gateway, where a packet is
/// forwarded on the CPU that received it.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE on any machine this runs on (checked by the call).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        r,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// The real programs, loaded for BPF_PROG_TEST_RUN.
pub struct XdpHarness {
    pub ebpf: Ebpf,
}

impl XdpHarness {
    /// Loads the object with a flow table of `capacity` and verifies `sensor_xdp` and the
    /// baseline program.
    pub fn new(capacity: u32) -> XdpHarness {
        XdpHarness::with_ring(capacity, 1 << 16)
    }

    /// [`XdpHarness::new`] with an event ring of `ring_bytes` (a power of two, whole pages):
    /// room for the events of many new flows that nothing drains.
    pub fn with_ring(capacity: u32, ring_bytes: u32) -> XdpHarness {
        crate::require_root();
        let mut ebpf =
            sensor::capture::load_object(capacity, ring_bytes).expect("load eBPF object");
        sensor::capture::load_xdp(&mut ebpf, program_names::XDP_INGRESS)
            .expect("verify sensor_xdp");
        sensor::capture::load_xdp(&mut ebpf, program_names::XDP_BASELINE).expect("verify baseline");
        sensor::capture::load_tc(&mut ebpf, program_names::TC_EGRESS)
            .expect("verify sensor_tc_egress");
        sensor::capture::load_tc(&mut ebpf, program_names::TC_BASELINE)
            .expect("verify baseline_tc");
        XdpHarness { ebpf }
    }

    /// Average ns per run of TC classifier `name` on `frame` leaving, repeated `repeat` times
    /// in the kernel. `ingress_ifindex` is the interface the packet entered by (0: sent by
    /// this host), as the kernel's `skb->skb_iif` (BPF_PROG_TEST_RUN sets it from the
    /// context's `ingress_ifindex`, the one field of the context given here).
    pub fn time_tc_ns(
        &mut self,
        name: &str,
        frame: &[u8],
        repeat: u32,
        ingress_ifindex: u32,
    ) -> f64 {
        // `struct __sk_buff` up to `ifindex` (offset 40): `ingress_ifindex` at offset 36, the
        // rest zero (the kernel zero-fills a shorter context and refuses fields it does not
        // take).
        let mut ctx = [0u8; 44];
        ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("tc program");
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat,
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(r.return_value, 0, "TC_ACT_OK expected");
        r.duration.as_nanos() as f64
    }

    /// Sets whether XDP looks entering packets up among learned translations (`NAT_ACTIVE`,
    /// which the egress program sets when it learns one), so a bench can time the same
    /// packets both ways in one round.
    pub fn set_nat_active(&mut self, active: bool) {
        let mut a: Array<_, u64> = Array::try_from(
            self.ebpf
                .map_mut(map_names::NAT_ACTIVE)
                .expect("NAT_ACTIVE map"),
        )
        .expect("NAT_ACTIVE type");
        a.set(0, u64::from(active), 0).expect("set NAT_ACTIVE");
    }

    /// Marks `ifindex` as watched by XDP, as the agent does for each interface it attaches to:
    /// packets forwarded from it are then only looked at where they leave.
    pub fn watch(&mut self, ifindex: u32) {
        sensor::capture::watch_ifindexes(&mut self.ebpf, &[ifindex]).expect("watch");
    }

    fn prog(&mut self, name: &str) -> &mut Xdp {
        self.ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("xdp program")
    }

    /// Runs `sensor_xdp` once on `frame`; panics unless it returns XDP_PASS.
    pub fn run(&mut self, frame: &[u8]) {
        let r = self
            .prog(program_names::XDP_INGRESS)
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(r.return_value, 2, "XDP_PASS expected");
    }

    /// Average ns per run of program `name` on `frame`, repeated `repeat` times in the kernel.
    pub fn time_ns(&mut self, name: &str, frame: &[u8], repeat: u32) -> f64 {
        let r = self
            .prog(name)
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN");
        r.duration.as_nanos() as f64
    }

    /// The health counters, summed over CPUs.
    pub fn health(&self) -> Health {
        let map = self.ebpf.map(map_names::HEALTH).expect("HEALTH map");
        let arr: PerCpuArray<_, Health> = PerCpuArray::try_from(map).expect("HEALTH type");
        let mut total = Health::default();
        for h in arr.get(&0, 0).expect("read HEALTH").iter() {
            total.merge(h);
        }
        total
    }

    /// The agent's view of the flow table (the test that asked fails if it cannot be opened).
    fn table(&self) -> sensor::flow_table::FlowTable {
        sensor::capture::open_flow_table(&self.ebpf).expect("FLOWS map")
    }

    /// Every flow table entry.
    pub fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        self.table().entries()
    }

    /// The flow table entries of part `part` of `parts` of its slots (the table scan's parts).
    pub fn flows_part(&self, part: usize, parts: usize) -> Vec<(FlowKey, FlowValue)> {
        self.table().entries_part(part, parts)
    }

    /// Removes every flow table entry.
    pub fn clear_flows(&mut self) {
        let mut table = self.table();
        for (k, _) in table.entries() {
            assert!(table.remove(&k), "remove entry");
        }
    }
}
