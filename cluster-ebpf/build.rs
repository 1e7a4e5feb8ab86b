use which::which;

/// Rebuild the eBPF object when bpf-linker changes (a new linker may emit different code), as
/// aya-template does.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
