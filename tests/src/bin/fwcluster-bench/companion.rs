//! The benchmark's own XDP object (`cluster-ebpf-bench`, built beside the product's by
//! cluster-ctl's build script and embedded only here): a cost floor, the ARP path with an undo
//! for repeated runs, a traffic generator and a sink. Its programs are loaded against a node's
//! pinned maps, so they run the product's code on the product's maps.

use anyhow::{Context as _, Result};
use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use cluster_common::PROGRAM_NAME;
use cluster_ctl::dataplane::{self, Dataplane};

static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("FWCLUSTER_BENCH_OBJECT"));

/// `XDP_PASS` and nothing else: the floor every program's cost is measured against.
pub const FLOOR: &str = "fwcluster_floor";
/// The data path followed by turning its ARP reply back into the request.
pub const ARP: &str = "fwcluster_bench_arp";
/// The data path followed by turning its Neighbor Advertisement back into the solicitation.
pub const NS: &str = "fwcluster_bench_ns";
/// The traffic generator (BPF_PROG_TEST_RUN live frames, `XDP_TX`).
pub const GENERATOR: &str = "fwcluster_bench_gen";
/// The receiver: counts and drops every frame.
pub const SINK: &str = "fwcluster_bench_sink";

/// Loads program `name` against `dp`'s pinned maps: the product's program from the product's
/// object, any other from the benchmark's. The program outlives the load (pinned aside for a
/// moment and reopened) and is not left pinned.
pub fn load(dp: &Dataplane, name: &str) -> Result<Xdp> {
    let object = if name == PROGRAM_NAME {
        dataplane::OBJECT
    } else {
        OBJECT
    };
    let mut ebpf = dataplane::load_against_pins(dp.pins(), object, 2)?;
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name} in the XDP object"))?
        .try_into()?;
    program.load()?;
    let pin = dp.pins().join(format!("tmp_{name}"));
    let _ = std::fs::remove_file(&pin);
    program
        .pin(&pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    let reopened = Xdp::from_pin(&pin, XdpAttachType::Interface);
    let _ = std::fs::remove_file(&pin);
    Ok(reopened?)
}
