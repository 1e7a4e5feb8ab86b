//! A short chaos run (every fault kind at least once) on real daemons; the long runs are
//! `cargo xtask chaos`. The seed is drawn unless FWCLUSTER_CHAOS_SEED names one, and printed.

#[test]
fn twenty_random_faults_leave_one_holder_per_group_and_nothing_leaked() -> anyhow::Result<()> {
    let seed = std::env::var("FWCLUSTER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos seed {seed}");
    let summary = fwcluster_lab::chaos::run(seed, 0, 20)?;
    fwcluster_lab::chaos::print(&summary);
    assert_eq!(
        summary.faults.len(),
        fwcluster_lab::chaos::FaultKind::ALL.len(),
        "every fault kind ran"
    );
    fwcluster_lab::chaos::check(&summary)
}
