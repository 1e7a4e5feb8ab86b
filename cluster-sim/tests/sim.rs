//! The deterministic simulation: thousands of seeded fault schedules against the real engine,
//! invariants checked after every event. `FWCLUSTER_SIM_SEEDS` sets the count (default 10,000);
//! `cargo xtask sim --seeds N` runs more.

use cluster_sim::{describe, run_schedule, schedule, shapes};

#[test]
fn seeded_fault_schedules_keep_every_invariant() {
    let seeds: u64 = std::env::var("FWCLUSTER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let shapes = shapes();
    let mut grants = 0;
    for seed in 0..seeds {
        let (name, shape) = &shapes[(seed % shapes.len() as u64) as usize];
        match run_schedule(shape, seed, 12) {
            Ok(stats) => grants += stats.takeovers,
            Err(violation) => panic!(
                "{name}: {violation}\n--- schedule ---\n{}\nreplay: cargo xtask sim --start {seed} --seeds 1",
                describe(&schedule(shape, seed, 12))
            ),
        }
    }
    // The schedules exercise takeovers, not just a quiet cluster.
    assert!(
        grants > seeds * 2,
        "only {grants} lease grants in {seeds} schedules"
    );
}
