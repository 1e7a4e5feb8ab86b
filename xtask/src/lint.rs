//! `cargo xtask lint`: formatting and clippy on the whole workspace (the eBPF crate included,
//! built for the host), warnings denied. `cargo xtask test` runs it before the full suite.

use anyhow::Result;

use crate::util::cargo;

pub fn run() -> Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--quiet",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}
