//! What the tasks share: root checks, running cargo and the lab's binaries, the workspace root.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (network namespaces, XDP, bpffs); run it as root");
    }
    Ok(())
}

/// The cargo arguments that run a binary of the lab crate in release mode (arguments follow).
pub const LAB_BINARY: [&str; 6] = [
    "run",
    "--quiet",
    "--release",
    "-p",
    "fwcluster-lab",
    "--bin",
];

/// Runs `binary` of the lab crate (release) with `first` and then `rest` as its arguments.
pub fn run_lab_binary(binary: &str, first: &[&str], rest: &[String]) -> Result<()> {
    let mut cargo_args = LAB_BINARY.to_vec();
    cargo_args.extend([binary, "--"]);
    cargo_args.extend(first);
    cargo_args.extend(rest.iter().map(String::as_str));
    cargo(&cargo_args)
}

/// Runs cargo with `args` from the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}
