//! `cargo xtask fuzz`: every fuzz target for a while (cargo-fuzz, nightly).

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, workspace_root};

const FUZZ_TARGETS: [&str; 5] = [
    "heartbeat_decoder",
    "heartbeat_tap",
    "api_request",
    "config_loader",
    "engine_events",
];

/// Runs each fuzz target for `seconds` (installing cargo-fuzz when missing); a crash fails.
pub fn run(seconds: u64, only: &[String]) -> Result<()> {
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
        // The target's corpus (kept between runs, not in git), then its seeds from the tree
        // when it has any (libFuzzer reads every directory and writes to the first).
        let fuzz_dir = workspace_root().join("fuzz");
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let seeds = fuzz_dir.join("seeds").join(target);
        let mut directories = vec![corpus];
        if seeds.is_dir() {
            directories.push(seeds);
        }
        let status = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target])
            .args(&directories)
            .arg("--")
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
