//! Names the benchmark's XDP object, which cluster-ctl's build script builds with the product's
//! (see its `links` key), so that `fwcluster-bench` embeds it and the product does not.
fn main() {
    let object = std::env::var("DEP_FWCLUSTER_EBPF_BENCH_OBJECT")
        .expect("cluster-ctl's build script names the benchmark object");
    println!("cargo::rustc-env=FWCLUSTER_BENCH_OBJECT={object}");
    println!("cargo::rerun-if-env-changed=DEP_FWCLUSTER_EBPF_BENCH_OBJECT");
}
