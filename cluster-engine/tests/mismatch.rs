//! Two nodes with different configurations (a rolling change) that both hold a group — after a
//! heartbeat loss in one direction, or a partition, healed while they still differed — know it
//! by the group's name: neither extends its lease while the other holds it, and the one with the
//! older epoch gives it up.

use std::time::Duration;

use cluster_engine::{
    Action, Engine, EngineConfig, Event, Failback, GroupSpec, GroupState, Instant, Recover,
    StartMode, StepSpec,
};

const MS: Duration = Duration::from_millis(1);

fn group(name: &str) -> GroupSpec {
    GroupSpec {
        name: name.into(),
        policy: vec![0, 1],
        failback: Failback::Manual,
        start: StartMode::Auto,
        steps: vec![StepSpec {
            name: format!("{name}-fip0"),
            recover: Recover::Retry,
            retry: 0,
            monitored: false,
        }],
        ipw: vec![],
    }
}

fn config(me: usize, groups: &[&str]) -> EngineConfig {
    EngineConfig {
        nodes: vec!["fws1".into(), "fws2".into()],
        me,
        links: 1,
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(30),
        wait: Duration::from_millis(60),
        tiebreakers: false,
        sync_wait: None,
        flow_share: false,
        restart_hold: Duration::from_millis(500),
        groups: groups.iter().map(|g| group(g)).collect(),
    }
}

#[test]
fn holders_with_different_configurations_meet_and_the_older_epoch_gives_up() {
    let start = Instant::from_nanos(1_000_000_000);
    // fws2's file lists the groups in another order: a different configuration.
    let mut a = Engine::new(config(0, &["web", "mail"]), start);
    let mut b = Engine::new(config(1, &["mail", "web"]), start);
    // Both hold "web": fws1 under epoch 3, fws2 (which took it while it did not hear fws1)
    // under epoch 4.
    a.adopt(0, 3, start + 500 * MS, false);
    b.adopt(1, 4, start + 500 * MS, false);
    let mut a_revoked = false;
    let mut b_revoked = false;
    let mut now = start;
    for round in 0..40 {
        now += 5 * MS;
        for (from, to) in [(0usize, 1usize), (1, 0)] {
            let (sender, receiver) = if from == 0 {
                (&a, &mut b)
            } else {
                (&b, &mut a)
            };
            let mut report = sender.report_for(to, now);
            report.incarnation = 1;
            let actions = receiver.handle(
                now,
                Event::Mismatch {
                    from,
                    link: 0,
                    report,
                },
            );
            let web = if to == 0 { 0 } else { 1 };
            for action in actions {
                match action {
                    Action::RenewLease { group, until, .. } if group == web => {
                        // While the other one still holds "web", no extension.
                        let other = if to == 0 { &b } else { &a };
                        let other_web = if to == 0 { 1 } else { 0 };
                        assert!(
                            !other.group_state(other_web).holds(),
                            "round {round}: fws{} extended web to {until:?} while fws{} holds it",
                            to + 1,
                            from + 1
                        );
                    }
                    Action::RevokeLease { group, .. } if group == web => {
                        if to == 0 {
                            a_revoked = true;
                        } else {
                            b_revoked = true;
                        }
                    }
                    _ => {}
                }
            }
        }
        let _ = a.handle(now, Event::Tick);
        let _ = b.handle(now, Event::Tick);
    }
    assert!(a_revoked, "fws1 (older epoch) kept web");
    assert!(!b_revoked, "fws2 (newer epoch) gave web up");
    assert_ne!(a.group_state(0), GroupState::Online);
    assert_eq!(b.group_state(1), GroupState::Online);
}
