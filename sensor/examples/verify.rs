//! Loads every program of the eBPF object into the kernel and prints the verifier's verdict
//! (with its log on failure): `sudo cargo run -p sensor --example verify`.
/// A program loaded before is no error here.
fn loaded(e: aya::programs::ProgramError) -> Result<(), aya::programs::ProgramError> {
    match e {
        aya::programs::ProgramError::AlreadyLoaded => Ok(()),
        e => Err(e),
    }
}

fn main() -> anyhow::Result<()> {
    let mut ebpf = sensor::capture::load_object(1024, 1 << 16)?;
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    for name in names {
        let Some(prog) = ebpf.program_mut(&name) else {
            continue;
        };
        // `load_object` loaded the continuation programs already.
        let res = match prog {
            aya::programs::Program::Xdp(p) => p.load().or_else(loaded).and_then(|()| p.info()),
            aya::programs::Program::SchedClassifier(p) => {
                p.load().or_else(loaded).and_then(|()| p.info())
            }
            _ => continue,
        };
        match res {
            Ok(i) => println!(
                "{name}: ok, verified {:?} insns",
                i.verified_instruction_count()
            ),
            Err(e) => println!("{name}: {e:?}"),
        }
    }
    Ok(())
}
