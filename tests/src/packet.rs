//! Frame builders for packet-level tests, and a harness that runs the real XDP program on a
//! frame through BPF_PROG_TEST_RUN and reads the maps back.
//!
//! Addresses come from 198.18.0.0/15 and 2001:2::/48 only.

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{TestRun, TestRunOptions, Xdp},
};
use sensor_common::{FlowKey, FlowValue, Health, map_names, program_names};

pub use crate::frames::*;

/// The real programs, loaded for BPF_PROG_TEST_RUN.
pub struct XdpHarness {
    pub ebpf: Ebpf,
}

impl XdpHarness {
    /// Loads the object with a flow table of `capacity` and verifies `sensor_xdp` and the
    /// baseline program.
    pub fn new(capacity: u32) -> XdpHarness {
        crate::require_root();
        let mut ebpf = sensor::capture::load_object(capacity, 1 << 16).expect("load eBPF object");
        sensor::capture::load_xdp(&mut ebpf, program_names::XDP_INGRESS)
            .expect("verify sensor_xdp");
        sensor::capture::load_xdp(&mut ebpf, program_names::XDP_BASELINE).expect("verify baseline");
        XdpHarness { ebpf }
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

    /// Every flow table entry.
    pub fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        sensor::capture::open_flow_table(&self.ebpf)
            .expect("FLOWS map")
            .entries()
    }

    /// Removes every flow table entry.
    pub fn clear_flows(&mut self) {
        let mut table = sensor::capture::open_flow_table(&self.ebpf).expect("FLOWS map");
        for (k, _) in table.entries() {
            assert!(table.remove(&k), "remove entry");
        }
    }
}
