//! Project tasks: `cargo xtask setup | test | demo`.
//!
//! xtask depends on nothing that needs the eBPF toolchain, so `cargo xtask setup` builds on a
//! fresh machine and installs that toolchain.

mod setup;
mod test;

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "fwcluster project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every prerequisite (Debian packages, nightly rust-src, bpf-linker, bpffs).
    Setup,
    /// Run all tests: unit, BPF_PROG_TEST_RUN and network-namespace integration tests.
    Test {
        /// Extra arguments passed to the test binaries (e.g. a name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the demo on the built-in seed network.
    Demo,
    /// Run seeded fault schedules against the cluster engine in the simulator.
    Sim {
        /// Arguments for the simulator (`--seeds N`, `--start S`, `--faults F`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a benchmark (`xdp`); prints a table of ratios against the anchor of the same run.
    Bench {
        /// Which benchmark.
        which: String,
        /// Arguments for the benchmark binary (e.g. `--seconds 5`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test { args } => {
            setup::ensure()?;
            test::run(&args)
        }
        Task::Sim { args } => {
            let mut cargo_args = vec![
                "run",
                "--quiet",
                "--release",
                "-p",
                "fwcluster-lab",
                "--bin",
                "fwcluster-sim",
                "--",
            ];
            cargo_args.extend(args.iter().map(String::as_str));
            cargo(&cargo_args)
        }
        Task::Bench { which, args } => {
            setup::ensure()?;
            require_root("benchmarks")?;
            let mut cargo_args = vec![
                "run",
                "--quiet",
                "--release",
                "-p",
                "fwcluster-lab",
                "--bin",
                "fwcluster-bench",
                "--",
                &which,
            ];
            cargo_args.extend(args.iter().map(String::as_str));
            cargo(&cargo_args)
        }
        Task::Demo => {
            setup::ensure()?;
            require_root("the demo")?;
            cargo(&[
                "run",
                "--quiet",
                "-p",
                "fwcluster-lab",
                "--bin",
                "fwcluster-demo",
            ])
        }
    }
}

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
