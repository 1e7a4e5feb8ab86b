use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds `cluster-ebpf` for bpfel-unknown-none with the nightly toolchain and bpf-linker: one
/// object per binary of that package lands in OUT_DIR. The product's (`cluster-ebpf`) is
/// embedded by `dataplane::OBJECT`; the benchmark's (`cluster-ebpf-bench`) is only named to
/// the lab's build script (through this package's `links` key), never embedded here.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "cluster-ebpf")
        .ok_or_else(|| anyhow!("cluster-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?
        .as_str();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
    println!("cargo::metadata=bench_object={out_dir}/cluster-ebpf-bench");
    Ok(())
}
