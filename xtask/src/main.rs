//! Project tasks: `cargo xtask setup | test | demo | docs | fuzz | sim | chaos | bench | report`.
//!
//! xtask depends on nothing that needs the eBPF toolchain, so `cargo xtask setup` builds on a
//! fresh machine and installs that toolchain.

mod report;
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
    /// Write man pages and shell completions to target/docs.
    Docs,
    /// Fuzz the heartbeat decoder, the API request decoder, the config loader and the engine
    /// with arbitrary authenticated events (cargo fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets.
        targets: Vec<String>,
    },
    /// Run seeded fault schedules against the cluster engine in the simulator.
    Sim {
        /// Arguments for the simulator (`--seeds N`, `--start S`, `--faults F`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Randomized faults on real daemons in the seed network, audited after each fault.
    Chaos {
        /// Arguments for the chaos run (`--iterations N`, `--seed S`, `--from I`, `--json F`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks and a chaos run, and write the Markdown report with SVG plots to
    /// docs/report/ from that run's numbers.
    Report {
        /// Failover runs per configuration.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Chaos iterations.
        #[arg(long, default_value_t = 20)]
        chaos: usize,
        /// Minutes of each 1 ms soak (idle, both cores busy); 0 leaves them out.
        #[arg(long, default_value_t = 0)]
        soak_minutes: u64,
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
        Task::Fuzz { seconds, targets } => {
            setup::ensure()?;
            fuzz(seconds, &targets)
        }
        Task::Docs => {
            setup::ensure()?;
            cargo(&[
                "run",
                "--quiet",
                "-p",
                "cluster-ctl",
                "--bin",
                "fwcluster-docs",
                "--",
                "target/docs",
            ])
        }
        Task::Sim { args } => run_lab_binary("fwcluster-sim", &[], &args),
        Task::Bench { which, args } => {
            setup::ensure()?;
            require_root("benchmarks")?;
            run_lab_binary("fwcluster-bench", &[&which], &args)
        }
        Task::Chaos { args } => {
            setup::ensure()?;
            require_root("the chaos run")?;
            run_lab_binary("fwcluster-chaos", &[], &args)
        }
        Task::Report {
            runs,
            chaos,
            soak_minutes,
        } => {
            setup::ensure()?;
            require_root("the report (benchmarks and chaos)")?;
            report::run(runs, chaos, soak_minutes)
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

const FUZZ_TARGETS: [&str; 4] = [
    "heartbeat_decoder",
    "api_request",
    "config_loader",
    "engine_events",
];

/// Runs each fuzz target for `seconds` (installing cargo-fuzz when missing); a crash fails.
fn fuzz(seconds: u64, only: &[String]) -> Result<()> {
    let installed = Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        println!("fuzz: cargo install cargo-fuzz");
        cargo(&["install", "cargo-fuzz", "--version", "^0.13"])?;
    }
    for target in FUZZ_TARGETS {
        if !only.is_empty() && !only.iter().any(|t| t == target) {
            continue;
        }
        println!("fuzz: {target} for {seconds} s");
        let status = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .current_dir(workspace_root().join("fuzz"))
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            bail!("fuzz target {target} failed: see fuzz/artifacts/{target}/");
        }
    }
    Ok(())
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
fn run_lab_binary(binary: &str, first: &[&str], rest: &[String]) -> Result<()> {
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
