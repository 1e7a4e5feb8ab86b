//! `cargo xtask chaos --iterations N --seed S [--from I]`: randomized faults on real daemons in
//! the seed network, audited after each (see `fwcluster_lab::chaos`). Prints a summary and, on a
//! failure, the command that replays it.

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Seed of the fault sequence (default: drawn, and printed).
    #[arg(long)]
    seed: Option<u64>,
    /// First iteration (to replay a failure).
    #[arg(long, default_value_t = 0)]
    from: usize,
    /// Write the summary (JSON) here, for the report.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    println!("chaos: seed {seed}");
    let summary = fwcluster_lab::chaos::run(seed, args.from, args.iterations)?;
    fwcluster_lab::chaos::print(&summary);
    if let Some(path) = &args.json {
        fwcluster_lab::chaos::write_json(&summary, path)?;
    }
    fwcluster_lab::chaos::check(&summary)
}
