//! R-SPLIT-1 and R-HB-4 on the simulator: one-way loss, delays of several timeouts, held-back
//! frames and pauses never leave two nodes with an unexpired lease of one group. The simulator
//! checks that after every event, for the whole fault, not only once things settled; these
//! scenarios make sure the faults that used to open the window are played.

use cluster_engine::{Failback, GroupState};
use cluster_sim::{Fault, Shape, Sim};

const MS: u64 = 1_000_000;
const FWS1: usize = 0;
const FWS2: usize = 1;
const GROUP0: usize = 0;

fn started(shape: Shape, seed: u64) -> Sim {
    let mut sim = Sim::new(shape, seed);
    sim.start_all();
    let settle = sim.settle_time();
    sim.advance(settle).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(sim.holders(GROUP0), [FWS1]);
    sim
}

/// The fault on each of the two interconnects.
fn on_both_links(sim: &mut Sim, fault: impl Fn(usize) -> Fault) {
    for link in 0..2 {
        sim.inject(fault(link));
    }
}

fn advance(sim: &mut Sim, ms: u64) {
    sim.advance(ms * MS).unwrap_or_else(|v| panic!("{v}"));
}

fn state(sim: &Sim, node: usize) -> GroupState {
    sim.engine(node).expect("running").group_state(GROUP0)
}

/// The seed's 10 ms / 30 ms, and the headline 1 ms / 5 ms.
fn fast(mut shape: Shape) -> Shape {
    shape.interval = std::time::Duration::from_millis(1);
    shape.timeout = std::time::Duration::from_millis(5);
    shape.wait = std::time::Duration::from_millis(10);
    shape
}

#[test]
fn heartbeats_lost_from_the_holder_only_move_the_group_without_overlap() {
    for seed in 0..50 {
        let mut sim = started(Shape::hot_standby(Failback::Manual), seed);
        on_both_links(&mut sim, |link| Fault::OneWay {
            from: FWS1,
            to: FWS2,
            link,
        });
        // fws2 hears nothing and takes over; fws1 hears that and gives up. Its lease, bounded
        // by what fws2 acknowledged, ran out before fws2's takeover.
        advance(&mut sim, 200);
        assert_eq!(sim.holders(GROUP0), [FWS2], "seed {seed}");
        assert_eq!(state(&sim, FWS1), GroupState::Offline, "seed {seed}");
    }
}

#[test]
fn heartbeats_lost_towards_the_holder_only_leave_the_group_where_it_is() {
    for seed in 0..50 {
        let mut sim = started(Shape::hot_standby(Failback::Manual), seed);
        on_both_links(&mut sim, |link| Fault::OneWay {
            from: FWS2,
            to: FWS1,
            link,
        });
        // fws2 still hears the holder and never takes over; fws1's lease lapses for at most a
        // timeout (no acknowledgements) and resumes once it is alone.
        advance(&mut sim, 500);
        assert_eq!(sim.holders(GROUP0), [FWS1], "seed {seed}");
        assert_eq!(state(&sim, FWS2), GroupState::Offline, "seed {seed}");
        assert_eq!(sim.stats.takeovers, 1, "seed {seed}: nothing moved");
    }
}

#[test]
fn heartbeats_delayed_for_several_timeouts_in_one_direction_never_give_two_owners() {
    for (seed, delay) in (0..40).zip([10, 30, 60, 120, 200].into_iter().cycle()) {
        let mut sim = started(Shape::hot_standby(Failback::Manual), seed);
        on_both_links(&mut sim, |link| Fault::Delay {
            from: FWS1,
            to: FWS2,
            link,
            by: delay * MS,
        });
        advance(&mut sim, 600);
        sim.inject(Fault::Heal { a: FWS1, b: FWS2 });
        advance(&mut sim, 600);
        assert_eq!(
            sim.holders(GROUP0).len(),
            1,
            "seed {seed}, delay {delay} ms"
        );
    }
}

#[test]
fn heartbeats_held_back_and_delivered_in_a_burst_never_give_two_owners() {
    for seed in 0..50 {
        let mut sim = started(Shape::hot_standby(Failback::Manual), seed);
        on_both_links(&mut sim, |link| Fault::Hold {
            from: FWS1,
            to: FWS2,
            link,
        });
        advance(&mut sim, 100);
        // The burst: every held heartbeat of the old holder at once, after fws2 took over.
        sim.inject(Fault::Heal { a: FWS1, b: FWS2 });
        advance(&mut sim, 300);
        assert_eq!(sim.holders(GROUP0), [FWS2], "seed {seed}");
    }
}

#[test]
fn a_holder_paused_beyond_its_lease_is_replaced_without_overlap() {
    for (seed, pause) in (0..50).zip([35, 50, 80, 150, 400].into_iter().cycle()) {
        let mut sim = started(Shape::hot_standby(Failback::Manual), seed);
        sim.inject(Fault::Pause {
            node: Some(FWS1),
            duration: pause * MS,
        });
        advance(&mut sim, pause + 300);
        assert_eq!(sim.holders(GROUP0), [FWS2], "seed {seed}, pause {pause} ms");
    }
}

#[test]
fn a_paused_holder_that_cannot_hear_its_peer_does_not_resume_beside_it() {
    // fws1 hears nothing (one-way loss towards it) and runs alone; then it stalls long enough
    // for fws2 to take over. Thawed, it must not resume on its own.
    for seed in 0..50 {
        let mut sim = started(Shape::hot_standby(Failback::Manual), seed);
        on_both_links(&mut sim, |link| Fault::OneWay {
            from: FWS2,
            to: FWS1,
            link,
        });
        advance(&mut sim, 100);
        sim.inject(Fault::Pause {
            node: Some(FWS1),
            duration: 60 * MS,
        });
        advance(&mut sim, 300);
        assert_eq!(sim.holders(GROUP0).len(), 1, "seed {seed}");
    }
}

#[test]
fn stalls_of_the_whole_machine_cause_no_false_offline_and_no_failover() {
    // R-HB-4 at 1 ms / 5 ms: both daemons frozen together for 20–200 ms, 200 times.
    let mut sim = started(fast(Shape::hot_standby(Failback::Manual)), 1);
    let grants = sim.stats.takeovers;
    for i in 0..200u64 {
        let pause = 20 + (i * 37) % 181;
        sim.inject(Fault::Pause {
            node: None,
            duration: pause * MS,
        });
        advance(&mut sim, pause + 20);
    }
    assert_eq!(sim.stats.declared_offline, 0, "false OFFLINE after stalls");
    assert_eq!(sim.stats.takeovers, grants, "false failovers after stalls");
    assert_eq!(sim.holders(GROUP0), [FWS1]);
}

#[test]
fn one_daemon_frozen_beyond_its_lease_is_taken_over_at_1_ms() {
    for seed in 0..50 {
        let mut sim = started(fast(Shape::hot_standby(Failback::Manual)), seed);
        sim.inject(Fault::Pause {
            node: Some(FWS1),
            duration: (10 + seed % 40) * MS,
        });
        advance(&mut sim, 100);
        assert_eq!(sim.holders(GROUP0), [FWS2], "seed {seed}");
    }
}
