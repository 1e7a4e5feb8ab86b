//! `cargo xtask sim --seeds N [--start S] [--faults F]`: runs seeded fault schedules against the
//! cluster engine on virtual time and prints a summary, or the seed, trace and schedule of the
//! first violation (replay it with `--start SEED --seeds 1`).

use std::time::Instant;

use clap::Parser;
use cluster_sim::{describe, run_schedule, schedule, shapes};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    seeds: u64,
    #[arg(long, default_value_t = 0)]
    start: u64,
    #[arg(long, default_value_t = 12)]
    faults: usize,
}

fn main() {
    let args = Args::parse();
    let shapes = shapes();
    let started = Instant::now();
    let (mut events, mut takeovers, mut faults, mut refusals) = (0, 0, 0, 0);
    for seed in args.start..args.start + args.seeds {
        let (name, shape) = &shapes[(seed % shapes.len() as u64) as usize];
        match run_schedule(shape, seed, args.faults) {
            Ok(stats) => {
                events += stats.events;
                takeovers += stats.takeovers;
                faults += stats.faults;
                refusals += stats.refusals;
            }
            Err(violation) => {
                eprintln!("VIOLATION ({name}): {violation}");
                eprintln!(
                    "--- schedule ---\n{}",
                    describe(&schedule(shape, seed, args.faults))
                );
                eprintln!(
                    "replay: cargo xtask sim --start {seed} --seeds 1 --faults {}",
                    args.faults
                );
                std::process::exit(1);
            }
        }
    }
    println!(
        "{} schedules passed ({} shapes, {faults} faults, {takeovers} lease grants, {refusals} refused commands, {events} events) in {:.1} s",
        args.seeds,
        shapes.len(),
        started.elapsed().as_secs_f64()
    );
}
