//! Project tasks: `cargo xtask setup | lint | test | demo | docs | package | fuzz | sim | chaos |
//! bench | report`.
//!
//! xtask depends on nothing that needs the eBPF toolchain, so `cargo xtask setup` builds on a
//! fresh machine and installs that toolchain.

mod fuzz;
mod lint;
mod package;
mod report;
mod setup;
mod test;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

use util::{cargo, require_root, run_lab_binary};

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
    /// Check formatting and run clippy on the whole workspace, warnings denied.
    Lint,
    /// Run all tests: the lint, then unit, BPF_PROG_TEST_RUN and network-namespace integration
    /// tests (with a name filter or other test arguments, the tests alone).
    Test {
        /// Extra arguments passed to the test binaries (e.g. a name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the demo on the built-in seed network.
    Demo,
    /// Write man pages and shell completions to target/docs.
    Docs,
    /// Build the Debian package target/debian/fwcluster_<version>_amd64.deb.
    Package {
        /// The package's version (default: the workspace's).
        #[arg(long)]
        version: Option<String>,
    },
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
        /// Minutes of each of the four 1 ms soaks (real-time and normal scheduling, idle and busy); 0 leaves them out.
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
        Task::Lint => {
            setup::ensure()?;
            lint::run()
        }
        Task::Test { args } => {
            setup::ensure()?;
            if args.is_empty() {
                lint::run()?;
            }
            test::run(&args)
        }
        Task::Fuzz { seconds, targets } => {
            setup::ensure()?;
            fuzz::run(seconds, &targets)
        }
        Task::Package { version } => {
            setup::ensure()?;
            package::run(version.as_deref()).map(|_| ())
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
        // The simulator is the engine alone: no eBPF build, no setup, no root. Its profile
        // is optimised with the engine's debug assertions on, so every event of every schedule
        // checks the engine's invariants too.
        Task::Sim { args } => {
            let mut cargo_args = vec![
                "run",
                "--quiet",
                "--profile",
                "sim",
                "-p",
                "cluster-sim",
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
