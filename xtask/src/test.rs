//! `cargo xtask test`: the one test command.
//!
//! Runs every test of the default workspace members: unit tests, the BPF_PROG_TEST_RUN tests of
//! the XDP program and the network-namespace integration tests. The last two need root; without
//! root they are skipped with a loud note (the engine's simulator and the other pure tests still
//! run), except under CI=true, where that is an error.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

#[derive(Default, Debug, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    /// Adds the counts of a libtest summary line
    /// (`test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; …`).
    fn add_summary(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return false;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
        true
    }
}

/// The integration tests that need neither root nor the lab: the engine in the simulator, its
/// rules and split-brain cases, and the config, wire and engine-input tests.
const WITHOUT_ROOT: &[&str] = &[
    "sim",
    "engine_rules",
    "split_brain",
    "config",
    "clpcfg",
    "mismatch",
    "heartbeat_wire",
    "engine_input",
];

pub fn run(args: &[String]) -> Result<()> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let root = crate::util::is_root();
    // Every test binary runs even when one fails, so the counts are complete.
    let mut cargo_args: Vec<String> = vec!["test".into(), "--no-fail-fast".into()];
    if !root {
        if ci {
            bail!(
                "CI=true and not root: the XDP and namespace tests cannot run, and CI skips nothing"
            );
        }
        eprintln!(
            "NOTE: not root: running the tests that need no root (unit tests, the engine's \
             simulator and rules, config and wire tests); the XDP and network-namespace tests \
             are SKIPPED (run as root for the full suite)"
        );
        cargo_args.push("--lib".into());
        for test in WITHOUT_ROOT {
            cargo_args.extend(["--test".into(), (*test).into()]);
        }
    }
    cargo_args.push("--".into());
    // Each lab test runs two daemons at 10 ms (some at 1 ms) heartbeats and times what they
    // do; on this machine kind (two cores) a second lab starting or being torn down beside one
    // starves a daemon for tens of milliseconds, longer than a 30 ms timeout. One test at a
    // time: the suite takes longer, its verdicts are about the daemons.
    cargo_args.push("--test-threads=1".into());
    cargo_args.extend(args.iter().cloned());

    let mut child = Command::new(env!("CARGO"))
        .args(&cargo_args)
        .current_dir(crate::util::workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning cargo test")?;
    let mut counts = Counts::default();
    let mut binaries = 0;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if counts.add_summary(&line) {
            binaries += 1;
        }
    }
    let status = child.wait()?;
    println!();
    println!("fwcluster tests: {binaries} test binaries");
    println!(
        "{} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    if !status.success() || counts.failed > 0 {
        bail!("tests failed");
    }
    if ci && counts.ignored > 0 {
        bail!(
            "CI=true: {} tests were ignored; CI skips nothing",
            counts.ignored
        );
    }
    if binaries == 0 {
        bail!("no test binary ran");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_are_counted() {
        let mut counts = Counts::default();
        assert!(counts.add_summary(
            "test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.1s"
        ));
        assert!(!counts.add_summary("running 3 tests"));
        assert!(counts.add_summary("test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured"));
        assert_eq!(
            counts,
            Counts {
                passed: 7,
                failed: 1,
                ignored: 2
            }
        );
    }
}
