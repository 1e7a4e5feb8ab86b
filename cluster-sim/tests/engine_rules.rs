//! Table tests of the cluster rules of SPEC §4, written from the seed manual's own examples, on
//! the simulator (real engines, virtual time; invariants are checked throughout).

use cluster_engine::{Command, DenyCause, Failback, GroupState, Instant, Recover};
use cluster_sim::{Fault, Shape, Sim};

const FWS1: usize = 0;
const FWS2: usize = 1;
const GROUP0: usize = 0;
const GROUP1: usize = 1;

fn started(shape: Shape) -> Sim {
    let mut sim = Sim::new(shape, 7);
    sim.start_all();
    settle(&mut sim);
    sim
}

fn settle(sim: &mut Sim) {
    let settle = sim.settle_time();
    sim.advance(settle).unwrap_or_else(|v| panic!("{v}"));
}

fn state(sim: &Sim, node: usize, group: usize) -> GroupState {
    sim.engine(node).expect("running").group_state(group)
}

#[test]
fn hot_standby_starts_on_the_primary_and_fails_over_to_the_standby() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    assert_eq!(sim.holders(GROUP0), [FWS1]);
    assert_eq!(state(&sim, FWS2, GROUP0), GroupState::Offline);
    sim.inject(Fault::Crash { node: FWS1 });
    // Taken over within timeout + one interval (+ the resource steps).
    sim.advance(30_000_000 + 10_000_000 + 10_000_000).unwrap();
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    assert_eq!(state(&sim, FWS2, GROUP0), GroupState::Online);
}

#[test]
fn manual_failback_leaves_the_group_until_clpgrp_moves_it() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    sim.inject(Fault::Crash { node: FWS1 });
    settle(&mut sim);
    sim.inject(Fault::Restart { node: FWS1 });
    settle(&mut sim);
    // Roles inverted: the primary is back but the group stays on fws2.
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    // The move must be issued where the group runs.
    let refused = sim.command(
        FWS1,
        Command::Move {
            group: GROUP0,
            to: None,
        },
    );
    assert_eq!(
        refused.unwrap_err().to_string(),
        "group0 is not running on fws1 but on fws2; run the command there or use -h fws2"
    );
    sim.command(
        FWS2,
        Command::Move {
            group: GROUP0,
            to: None,
        },
    )
    .unwrap();
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS1]);
}

#[test]
fn auto_failback_returns_the_group_to_the_primary() {
    let mut sim = started(Shape::hot_standby(Failback::Auto));
    sim.inject(Fault::Crash { node: FWS1 });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    sim.inject(Fault::Restart { node: FWS1 });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS1]);
}

#[test]
fn with_session_sync_a_returning_primary_takes_its_group_back_only_after_the_sync_wait() {
    const MS: u64 = 1_000_000;
    let mut shape = Shape::hot_standby(Failback::Auto);
    shape.sync_wait = Some(std::time::Duration::from_millis(400));
    let mut sim = started(shape);
    sim.inject(Fault::Crash { node: FWS1 });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    sim.inject(Fault::Restart { node: FWS1 });
    // Past its startup wait (fws1 hears fws2 at once), but inside the sync wait: fws2 keeps
    // the group, whose connections fws1 does not have yet.
    sim.advance(300 * MS).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    // After it: failback.
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS1]);
}

#[test]
fn with_session_sync_a_standby_takes_over_at_once_when_the_holder_dies_during_its_wait() {
    const MS: u64 = 1_000_000;
    let mut shape = Shape::hot_standby(Failback::Manual);
    shape.sync_wait = Some(std::time::Duration::from_secs(60));
    let mut sim = started(shape);
    sim.inject(Fault::Crash { node: FWS2 });
    settle(&mut sim);
    sim.inject(Fault::Restart { node: FWS2 });
    sim.advance(200 * MS).unwrap_or_else(|v| panic!("{v}"));
    // fws2 waits for fws1's entries; fws1 dies: nothing left to wait for.
    sim.inject(Fault::Crash { node: FWS1 });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
}

#[test]
fn auto_failback_does_not_undo_an_operators_move() {
    let mut sim = started(Shape::hot_standby(Failback::Auto));
    sim.command(
        FWS1,
        Command::Move {
            group: GROUP0,
            to: None,
        },
    )
    .unwrap();
    settle(&mut sim);
    // The primary is healthy, but the operator put the group on fws2 (maintenance of fws1).
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    // A failure of fws2 moves it, and from then on failback applies again.
    sim.inject(Fault::Crash { node: FWS2 });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS1]);
}

#[test]
fn ipw_loss_on_the_active_fails_over_and_denies_start_until_the_target_returns() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    sim.inject(Fault::IpwLost {
        node: FWS1,
        group: GROUP0,
        entry: 0,
    });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    assert_eq!(sim.engine(FWS1).unwrap().deny(GROUP0), Some(DenyCause::Ipw));
    sim.inject(Fault::IpwBack {
        node: FWS1,
        group: GROUP0,
        entry: 0,
    });
    sim.advance(1_000_000).unwrap();
    assert_eq!(sim.engine(FWS1).unwrap().deny(GROUP0), None);
    // Manual failback: it stays on fws2.
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
}

#[test]
fn a_denied_node_does_not_get_the_group_back_when_the_other_fails_too() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    // The monitored process dies twice on fws1 (retry 1): failover, DENY (process).
    for _ in 0..2 {
        sim.inject(Fault::ProcessDies {
            node: FWS1,
            group: GROUP0,
            step: 2,
        });
        sim.advance(5_000_000).unwrap();
    }
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    assert_eq!(
        sim.engine(FWS1).unwrap().deny(GROUP0),
        Some(DenyCause::Process)
    );
    // Now fws2's IPW target is lost: the group is not moved back to the denied fws1.
    sim.inject(Fault::IpwLost {
        node: FWS2,
        group: GROUP0,
        entry: 0,
    });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    assert_eq!(state(&sim, FWS1, GROUP0), GroupState::Offline);
}

#[test]
fn a_denied_node_runs_the_group_when_every_interconnect_is_lost() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    for _ in 0..2 {
        sim.inject(Fault::ProcessDies {
            node: FWS1,
            group: GROUP0,
            step: 2,
        });
        sim.advance(5_000_000).unwrap();
    }
    settle(&mut sim);
    assert_eq!(
        sim.engine(FWS1).unwrap().deny(GROUP0),
        Some(DenyCause::Process)
    );
    sim.inject(Fault::Isolate { node: FWS1 });
    settle(&mut sim);
    // Both run it: fws1 must assume fws2 is dead.
    let mut holders = sim.holders(GROUP0);
    holders.sort();
    assert_eq!(holders, [FWS1, FWS2]);
    // When the interconnects return, one of them gives it up.
    sim.inject(Fault::Heal { a: FWS1, b: FWS2 });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0).len(), 1);
}

#[test]
fn an_unhealthy_standby_does_not_receive_the_group_but_a_manual_move_still_works() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    sim.inject(Fault::IpwLost {
        node: FWS2,
        group: GROUP0,
        entry: 0,
    });
    settle(&mut sim);
    for _ in 0..2 {
        sim.inject(Fault::ProcessDies {
            node: FWS1,
            group: GROUP0,
            step: 2,
        });
        sim.advance(5_000_000).unwrap();
    }
    settle(&mut sim);
    // R-FO-3: it stays on fws1.
    assert_eq!(sim.holders(GROUP0), [FWS1]);
    sim.command(
        FWS1,
        Command::Move {
            group: GROUP0,
            to: None,
        },
    )
    .unwrap();
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2], "{}", sim.trace());
}

#[test]
fn load_share_runs_each_group_on_its_primary_and_the_survivor_takes_both() {
    let mut sim = started(Shape::load_share(Failback::Manual));
    assert_eq!(sim.holders(GROUP0), [FWS1]);
    assert_eq!(sim.holders(GROUP1), [FWS2]);
    sim.inject(Fault::Crash { node: FWS2 });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS1]);
    assert_eq!(sim.holders(GROUP1), [FWS1]);
}

#[test]
fn losing_one_of_two_interconnects_is_not_a_failover() {
    let mut sim = started(Shape::load_share(Failback::Manual));
    sim.inject(Fault::Cut {
        a: FWS1,
        b: FWS2,
        link: 0,
    });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS1]);
    assert_eq!(sim.holders(GROUP1), [FWS2]);
    let status = sim.engine(FWS1).unwrap().status(Instant::ZERO);
    assert!(status.online[FWS2]);
}

#[test]
fn a_clean_shutdown_hands_over_before_the_heartbeat_timeout() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    sim.inject(Fault::Shutdown { node: FWS1 });
    // Well under the 30 ms timeout: deactivation, leaving message, activation.
    sim.advance(15_000_000).unwrap();
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    assert!(sim.engine(FWS1).is_none(), "fws1 exited");
}

#[test]
fn clpgrp_refusals_follow_the_seed() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    assert_eq!(
        sim.command(FWS2, Command::Start { group: GROUP0 })
            .unwrap_err()
            .to_string(),
        "group0 is already started on fws1"
    );
    assert_eq!(
        sim.command(FWS2, Command::Stop { group: GROUP0 })
            .unwrap_err()
            .to_string(),
        "group0 is not running on fws2 but on fws1; run the command there or use -h fws1"
    );
    sim.command(FWS1, Command::Stop { group: GROUP0 }).unwrap();
    settle(&mut sim);
    assert!(
        sim.holders(GROUP0).is_empty(),
        "stopped groups stay stopped"
    );
    assert_eq!(
        sim.command(FWS1, Command::Stop { group: GROUP0 })
            .unwrap_err()
            .to_string(),
        "group0 is not started on fws1"
    );
    sim.command(FWS2, Command::Start { group: GROUP0 }).unwrap();
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
}

#[test]
fn clpgrp_start_clears_start_deny() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    for _ in 0..2 {
        sim.inject(Fault::ProcessDies {
            node: FWS1,
            group: GROUP0,
            step: 2,
        });
        sim.advance(5_000_000).unwrap();
    }
    settle(&mut sim);
    assert_eq!(
        sim.engine(FWS1).unwrap().deny(GROUP0),
        Some(DenyCause::Process)
    );
    let refusal = sim
        .command(FWS1, Command::Start { group: GROUP0 })
        .unwrap_err()
        .to_string();
    assert_eq!(
        refusal,
        "group0 is already started on fws2 (STARTING=DENY cleared here)"
    );
    assert_eq!(sim.engine(FWS1).unwrap().deny(GROUP0), None);
}

#[test]
fn a_node_alone_waits_for_its_peer_then_starts_the_group() {
    let mut sim = Sim::new(Shape::hot_standby(Failback::Manual), 3);
    sim.inject(Fault::Restart { node: FWS2 });
    // Within the 60 ms startup wait nothing starts.
    sim.advance(50_000_000).unwrap();
    assert!(sim.holders(GROUP0).is_empty());
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
}

#[test]
fn an_isolated_node_that_reaches_no_tiebreaker_takes_nothing_over() {
    let mut shape = Shape::hot_standby(Failback::Manual);
    shape.tiebreakers = true;
    let mut sim = started(shape);
    sim.inject(Fault::Tiebreaker {
        node: FWS2,
        reachable: false,
    });
    sim.inject(Fault::Isolate { node: FWS2 });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS1]);
    // The side that reaches the tie-breaker keeps running; if fws1 cannot either, it gives up.
    sim.inject(Fault::Tiebreaker {
        node: FWS1,
        reachable: false,
    });
    settle(&mut sim);
    assert!(sim.holders(GROUP0).is_empty());
}

#[test]
fn a_failed_activation_is_retried_then_recovered_by_its_action() {
    let mut shape = Shape::hot_standby(Failback::Manual);
    shape.groups[0].steps[1].recover = Recover::Stop;
    let mut sim = Sim::new(shape, 11);
    sim.inject(Fault::StepBroken {
        node: FWS1,
        group: GROUP0,
        step: 1,
    });
    sim.start_all();
    settle(&mut sim);
    // STOP: the group is stopped on fws1 and not moved (an operator must look at it).
    assert_eq!(state(&sim, FWS1, GROUP0), GroupState::Error);
    assert!(sim.holders(GROUP0).is_empty());
    let status = sim.engine(FWS1).unwrap().status(Instant::ZERO);
    assert_eq!(status.groups[GROUP0].retries[1], 2, "RETRY count 2/2 used");
}

/// A holder frozen past its lease but not past the heartbeat timeout gives the group up and
/// starts it again; the cause says so instead of "cluster start" (which it used to say, in mails
/// and on the takeover counter alike).
#[test]
fn a_holder_frozen_past_its_lease_but_not_the_timeout_resumes_without_a_restart() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    let grants = sim.stats.takeovers;
    // The lease ends 29.4 ms after the last acknowledged heartbeat was sent, which is up to an
    // interval old: 25 ms frozen outlives it, not the 30 ms timeout of the peer.
    sim.inject(Fault::Freeze { node: FWS1 });
    sim.advance(25_000_000).unwrap();
    sim.inject(Fault::Thaw { node: FWS1 });
    settle(&mut sim);
    let trace = sim.trace();
    // Silent while unacknowledged, answering again on the next acknowledgement: no failover,
    // no restart of the group's resources.
    assert!(trace.contains("fws1 LeaseLapsed { group: 0 }"), "{trace}");
    assert!(trace.contains("fws1 LeaseResumed { group: 0"), "{trace}");
    assert!(!trace.contains("PeerOffline"), "{trace}");
    assert!(!trace.contains("GroupOffline"), "{trace}");
    assert_eq!(sim.stats.takeovers, grants);
    assert_eq!(sim.holders(GROUP0), [FWS1]);
}

#[test]
fn an_ipw_loss_reported_while_the_group_is_activating_still_moves_it() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    sim.command(
        FWS1,
        Command::Move {
            group: GROUP0,
            to: None,
        },
    )
    .unwrap();
    let mut steps = 0;
    while state(&sim, FWS2, GROUP0) != GroupState::Activating {
        sim.advance(50_000).unwrap();
        steps += 1;
        assert!(steps < 2_000, "fws2 never activated group0");
    }
    // The monitor reports the loss once, while fws2 is still starting the group.
    sim.inject(Fault::IpwLost {
        node: FWS2,
        group: GROUP0,
        entry: 0,
    });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS1]);
    assert_eq!(sim.engine(FWS2).unwrap().deny(GROUP0), Some(DenyCause::Ipw));
}

#[test]
fn with_every_target_lost_the_group_moves_once_the_standby_reaches_its_target_again() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    for node in [FWS2, FWS1] {
        sim.inject(Fault::IpwLost {
            node,
            group: GROUP0,
            entry: 0,
        });
        settle(&mut sim);
    }
    // Nobody healthy to take it: it stays (R-FO-3).
    assert_eq!(sim.holders(GROUP0), [FWS1]);
    sim.inject(Fault::IpwBack {
        node: FWS2,
        group: GROUP0,
        entry: 0,
    });
    settle(&mut sim);
    assert_eq!(sim.holders(GROUP0), [FWS2]);
    assert_eq!(sim.engine(FWS1).unwrap().deny(GROUP0), Some(DenyCause::Ipw));
}

#[test]
fn with_session_sync_and_flow_share_a_returning_node_gets_buckets_only_after_the_sync_wait() {
    const MS: u64 = 1_000_000;
    // No group at all: the peer's entries are those of the flows it passes.
    let mut shape = Shape::hot_standby(Failback::Manual);
    shape.groups.clear();
    shape.flow_share = true;
    shape.sync_wait = Some(std::time::Duration::from_millis(400));
    let mut sim = started(shape);
    sim.inject(Fault::Crash { node: FWS2 });
    settle(&mut sim);
    sim.inject(Fault::Restart { node: FWS2 });
    let deals_to_fws2 =
        |sim: &Sim| [FWS1, FWS2].map(|n| sim.engine(n).is_some_and(|e| e.shares_flows(FWS2)));
    // Past its startup wait, inside the sync wait: no buckets for fws2, in either view.
    sim.advance(300 * MS).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(deals_to_fws2(&sim), [false, false]);
    settle(&mut sim);
    assert_eq!(deals_to_fws2(&sim), [true, true]);
}

/// `clpcfg restart` of the holder (an upgrade) with a restart ten heartbeat timeouts long: the
/// standby grants the hold, the holder exits once its lease covers the restart, and its next
/// life adopts the group. Nothing moves, and the lease never lapses.
#[test]
fn a_planned_restart_of_the_holder_longer_than_the_timeout_moves_nothing() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    let grants = sim.stats.takeovers;
    sim.set_restart_duration(300_000_000 / 2);
    sim.inject(Fault::PlannedRestart { node: FWS1 });
    settle(&mut sim);
    settle(&mut sim);
    let trace = sim.trace();
    assert!(trace.contains("fws1 exits for a restart"), "{trace}");
    assert!(trace.contains("fws1 adopts group0"), "{trace}");
    assert_eq!(sim.holders(GROUP0), [FWS1], "{trace}");
    assert_eq!(
        sim.stats.takeovers, grants,
        "no new grant anywhere: {trace}"
    );
    assert!(!trace.contains("LeaseLapsed"), "{trace}");
    assert!(!trace.contains("PeerOffline"), "{trace}");
}

/// The standby restarts in place: the holder's lease, bounded by the standby's echoes, is
/// carried by the standby's promise instead and never lapses.
#[test]
fn a_planned_restart_of_the_standby_leaves_the_holder_answering() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    let grants = sim.stats.takeovers;
    sim.set_restart_duration(100_000_000);
    sim.inject(Fault::PlannedRestart { node: FWS2 });
    settle(&mut sim);
    let trace = sim.trace();
    assert!(trace.contains("fws2 exits for a restart"), "{trace}");
    assert_eq!(sim.holders(GROUP0), [FWS1], "{trace}");
    assert_eq!(sim.stats.takeovers, grants, "{trace}");
    assert!(!trace.contains("LeaseLapsed"), "{trace}");
}

/// A next life that does not come within the hold: the standby takes over once the hold and a
/// timeout have passed, after the held lease ran out (the invariants are checked throughout);
/// the late next life finds its lease gone and adopts nothing.
#[test]
fn a_planned_restart_that_outlasts_the_hold_ends_in_a_takeover_after_it() {
    let mut sim = started(Shape::hot_standby(Failback::Manual));
    sim.set_restart_duration(600_000_000);
    sim.inject(Fault::PlannedRestart { node: FWS1 });
    // Within the hold (300 ms): nobody took over, the held lease still answers.
    sim.advance(250_000_000).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(sim.holders(GROUP0), [FWS1], "{}", sim.trace());
    assert!(sim.engine(FWS1).is_none(), "fws1 is restarting");
    sim.advance(200_000_000).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(sim.holders(GROUP0), [FWS2], "{}", sim.trace());
    settle(&mut sim);
    settle(&mut sim);
    let trace = sim.trace();
    assert!(!trace.contains("fws1 adopts group0"), "{trace}");
    assert_eq!(sim.holders(GROUP0), [FWS2], "{trace}");
}

/// A saved schedule (seed 9764 of the load-share shape) that found a rule, no restart
/// involved: a holder that took a lease alone (its peer paused) and then hears the peer again
/// cuts the lease back to what the peer's echo allows. The peer had stopped hearing it (both
/// links cut one way) and takes over a timeout after it last did; before the rule the lease
/// taken alone ran 20 ms past that takeover.
#[test]
fn a_lease_taken_alone_is_cut_back_when_the_peer_is_heard_again_with_an_old_echo() {
    let faults = vec![
        (
            Fault::OneWay {
                from: 0,
                to: 1,
                link: 1,
            },
            67_526_726,
        ),
        (Fault::Freeze { node: 0 }, 47_820_798),
        (Fault::Thaw { node: 0 }, 250_000_000),
        (
            Fault::OneWay {
                from: 0,
                to: 1,
                link: 0,
            },
            250_000_000,
        ),
        (Fault::Heal { a: 0, b: 1 }, 250_000_000),
        (
            Fault::IpwLost {
                node: 1,
                group: 1,
                entry: 0,
            },
            55_828_648,
        ),
        (
            Fault::Pause {
                node: None,
                duration: 41_917_697,
            },
            250_000_000,
        ),
        (
            Fault::OneWay {
                from: 1,
                to: 0,
                link: 1,
            },
            18_751_717,
        ),
        (
            Fault::Pause {
                node: Some(0),
                duration: 14_182_071,
            },
            2_021_462,
        ),
        (
            Fault::OneWay {
                from: 1,
                to: 0,
                link: 0,
            },
            72_120_794,
        ),
        (
            Fault::Delay {
                from: 0,
                to: 1,
                link: 0,
                by: 120_000_000,
            },
            105_375_817,
        ),
    ];
    let mut sim = Sim::new(Shape::load_share(Failback::Manual), 9764);
    sim.run(faults).unwrap_or_else(|v| panic!("{v}"));
}
