//! Loads every program of the eBPF object into the kernel and reports the verifier's verdict.
fn main() {
    let mut ebpf = match sensor::capture::load_object(1024, 1 << 16) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e:?}");
            std::process::exit(1)
        }
    };
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    for name in names {
        let prog = ebpf.program_mut(&name).unwrap();
        let res = match prog {
            aya::programs::Program::Xdp(p) => p.load(),
            aya::programs::Program::SchedClassifier(p) => p.load(),
            _ => continue,
        };
        match res {
            Ok(()) => println!("{name}: ok"),
            Err(e) => println!("{name}: {e:?}"),
        }
    }
}
