//! `cargo xtask report`: runs the XDP and failover benchmarks and a chaos run, keeping their
//! tables and JSON results in `target/report/`, then writes `docs/report/README.md` and its SVG
//! plots from them. Every number in the report comes from this one run.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Runs cargo with `args`, echoing its standard output and keeping a copy in `copy`; returns
/// whether it succeeded.
fn cargo_tee(args: &[&str], copy: &Path) -> Result<bool> {
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(crate::util::workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let mut file = fs::File::create(copy)?;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        writeln!(file, "{line}")?;
    }
    Ok(child.wait()?.success())
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

pub fn run(runs: usize, chaos: usize, soak_minutes: u64) -> Result<()> {
    let root = crate::util::workspace_root();
    let dir = root.join("target/report");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()?
        .stdout;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    fs::write(
        dir.join("meta.json"),
        format!(
            "{{\"date\": {:?}, \"kernel\": {:?}, \"cpus\": {cpus}}}\n",
            String::from_utf8_lossy(&date).trim(),
            kernel.trim()
        ),
    )?;

    let xdp_json = dir.join("xdp.json");
    let mut args = crate::util::LAB_BINARY.to_vec();
    args.extend(["fwcluster-bench", "--", "xdp", "--json", path(&xdp_json)?]);
    if !cargo_tee(&args, &dir.join("xdp.md"))? {
        bail!("the XDP benchmark failed");
    }

    let failover_json = dir.join("failover.json");
    let (runs, soak) = (runs.to_string(), soak_minutes.to_string());
    let mut args = crate::util::LAB_BINARY.to_vec();
    args.extend([
        "fwcluster-bench",
        "--",
        "failover",
        "--runs",
        &runs,
        "--soak-minutes",
        &soak,
        "--json",
        path(&failover_json)?,
    ]);
    if !cargo_tee(&args, &dir.join("failover.md"))? {
        bail!("the failover benchmark failed");
    }

    let sessions_json = dir.join("sessions.json");
    let mut args = crate::util::LAB_BINARY.to_vec();
    args.extend([
        "fwcluster-bench",
        "--",
        "sessions",
        "--runs",
        &runs,
        "--json",
        path(&sessions_json)?,
    ]);
    if !cargo_tee(&args, &dir.join("sessions.md"))? {
        bail!("the sessions benchmark failed");
    }

    // A failed chaos run still goes into the report (with its seed); the task fails after.
    let chaos_json = dir.join("chaos.json");
    let iterations = chaos.to_string();
    let mut args = crate::util::LAB_BINARY.to_vec();
    args.extend([
        "fwcluster-chaos",
        "--",
        "--iterations",
        &iterations,
        "--json",
        path(&chaos_json)?,
    ]);
    let chaos_passed = cargo_tee(&args, &dir.join("chaos.md"))?;
    if !chaos_json.exists() {
        bail!("the chaos run failed before it could write its summary");
    }

    let output = root.join("docs/report");
    let mut args = crate::util::LAB_BINARY.to_vec();
    args.extend([
        "fwcluster-report",
        "--",
        "--input",
        path(&dir)?,
        "--output",
        path(&output)?,
    ]);
    crate::util::cargo(&args)?;
    if !chaos_passed {
        bail!("the chaos run failed: see docs/report/README.md");
    }
    Ok(())
}
