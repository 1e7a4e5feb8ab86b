//! Engine events from arbitrary bytes, for the fuzz target and the property tests: every event
//! an authenticated peer, a local monitor or an operator could produce, with indices and
//! values the wire format can carry but a correct peer never sends.

use std::time::Duration;

use crate::{
    Claim, Command, Engine, EngineConfig, Event, Failback, GroupReport, GroupSpec, GroupState,
    Handoff, HeldGroup, Instant, Recover, Report, StartMode, StepSpec,
};

/// A small cluster to run the events against: three nodes, two groups with steps and IPW.
pub fn cluster(me: usize) -> EngineConfig {
    let steps = |g: usize| {
        (0..3)
            .map(|s| StepSpec {
                name: format!("group{g}-step{s}"),
                recover: [Recover::Retry, Recover::Failover, Recover::Stop][s],
                retry: 1,
                monitored: s == 2,
            })
            .collect()
    };
    EngineConfig {
        nodes: (1..=3).map(|n| format!("fws{n}")).collect(),
        me,
        links: 2,
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(30),
        wait: Duration::from_millis(60),
        tiebreakers: me == 2,
        sync_wait: (me == 1).then_some(Duration::from_millis(90)),
        flow_share: false,
        restart_hold: Duration::from_millis(500),
        groups: (0..2)
            .map(|g| GroupSpec {
                name: format!("group{g}"),
                policy: vec![g, (g + 1) % 3, (g + 2) % 3],
                failback: if g == 0 {
                    Failback::Auto
                } else {
                    Failback::Manual
                },
                start: StartMode::Auto,
                steps: steps(g),
                ipw: vec![Recover::Failover, Recover::Stop],
            })
            .collect(),
    }
}

/// What one step of a schedule does.
#[derive(Clone, Debug)]
pub enum Input {
    Event(Event),
    Command(Command),
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn u64(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for _ in 0..8 {
            value = value << 8 | u64::from(self.byte()?);
        }
        Some(value)
    }

    fn small(&mut self) -> Option<usize> {
        self.byte().map(usize::from)
    }
}

fn group_report(b: &mut Bytes<'_>) -> Option<GroupReport> {
    let flags = b.byte()?;
    Some(GroupReport {
        state: GroupState::from_code(b.byte()? % 5)?,
        epoch: b.u64()? % 8,
        deny: flags & 1 != 0,
        healthy: flags & 2 != 0,
        claim: (flags & 4 != 0).then(|| Claim {
            epoch: u64::from(flags >> 4),
            forced: flags & 8 != 0,
        }),
        ack: (flags & 16 != 0).then_some((usize::from(flags), u64::from(flags >> 5))),
        handoff: (flags & 32 != 0).then_some(Handoff {
            to: usize::from(flags.rotate_left(3)),
            manual: flags & 64 != 0,
            failover: flags & 128 != 0,
        }),
        admin_epoch: u64::from(flags & 3),
        wanted: flags & 64 == 0,
        errors: u32::from(flags),
    })
}

fn report(b: &mut Bytes<'_>, now: Instant) -> Option<Report> {
    let count = b.small()? % 4;
    let echo = b.u64()?;
    Some(Report {
        incarnation: u64::from(count as u8 & 2),
        sent_at: Instant::from_nanos(b.u64()?),
        // Mostly plausible echoes (of this node's recent past), sometimes anything.
        echo: match echo % 4 {
            0 => None,
            1 => Some(Instant::from_nanos(echo)),
            _ => Some(Instant::from_nanos(
                now.as_nanos().saturating_sub(echo % 40_000_000),
            )),
        },
        // A restart hold now and then, asked for or granted.
        hold: Duration::from_millis(u64::from(count as u8 & 1) * 400),
        granted: Duration::from_millis(u64::from((echo as u8).is_multiple_of(3)) * 300),
        ready: count & 1 == 0,
        links_heard: b.byte()?.into(),
        groups: (0..count).map(|_| group_report(b)).collect::<Option<_>>()?,
        held: (0..b.small()? % 3)
            .map(|_| {
                Some(HeldGroup {
                    id: [crate::group_id("group0"), crate::group_id("group1"), 7][b.small()? % 3],
                    epoch: b.u64()? % 8,
                })
            })
            .collect::<Option<_>>()?,
    })
}

/// Decodes a schedule: (time, input) pairs, times increasing.
pub fn schedule(data: &[u8]) -> Vec<(Instant, Input)> {
    let mut b = Bytes(data);
    let mut now = Instant::from_nanos(1_000_000_000);
    let mut out = Vec::new();
    while let Some(kind) = b.byte() {
        let Some(step) = b.byte() else { break };
        now += Duration::from_nanos(u64::from(step) * 250_000);
        let index = |b: &mut Bytes<'_>| b.small().map(|i| i % 6);
        let input = match kind % 12 {
            0 | 1 => Some(Input::Event(Event::Tick)),
            2 => Some(Input::Event(Event::Timer)),
            3..=5 => (|| {
                Some(Input::Event(Event::Heartbeat {
                    from: index(&mut b)?,
                    link: index(&mut b)?,
                    report: report(&mut b, now)?,
                }))
            })(),
            6 => (|| {
                Some(Input::Event(Event::Mismatch {
                    from: index(&mut b)?,
                    link: index(&mut b)?,
                    report: report(&mut b, now)?,
                }))
            })(),
            7 => index(&mut b).map(|from| Input::Event(Event::Leaving { from })),
            8 => (|| {
                Some(Input::Event(Event::Ipw {
                    group: index(&mut b)?,
                    entry: index(&mut b)?,
                    ok: b.byte()? & 1 == 0,
                }))
            })(),
            9 => (|| {
                let group = index(&mut b)?;
                let step = index(&mut b)?;
                Some(Input::Event(if b.byte()? & 1 == 0 {
                    Event::StepDone {
                        group,
                        step,
                        ok: b.byte()? & 1 == 0,
                    }
                } else {
                    Event::StepFailed { group, step }
                }))
            })(),
            10 => (|| {
                let group = index(&mut b)?;
                Some(Input::Command(match b.byte()? % 4 {
                    0 => Command::Start { group },
                    1 => Command::Stop { group },
                    2 => Command::Move { group, to: None },
                    _ => Command::Move {
                        group,
                        to: Some(index(&mut b)?),
                    },
                }))
            })(),
            _ => b.byte().map(|r| {
                Input::Event(if r == 0 {
                    Event::Shutdown
                } else if r == 2 {
                    Event::PrepareRestart
                } else if r == 4 {
                    Event::CancelRestart
                } else if r % 7 == 1 {
                    Event::LeaseRefused {
                        group: usize::from(r % 4),
                    }
                } else {
                    Event::Tiebreaker {
                        reachable: r & 1 == 0,
                    }
                })
            }),
        };
        match input {
            Some(input) => out.push((now, input)),
            None => break,
        }
    }
    out
}

/// Runs a schedule against a fresh engine of [`cluster`] as node `me` (it must not panic).
pub fn run(me: usize, data: &[u8]) -> Engine {
    let mut engine = Engine::new(cluster(me), Instant::from_nanos(1_000_000_000));
    for (now, input) in schedule(data) {
        match input {
            Input::Event(event) => {
                engine.handle(now, event);
            }
            Input::Command(command) => {
                let _ = engine.command(now, command);
            }
        }
        let _ = engine.status(now);
        let _ = engine.report_for(1, now);
        let _ = engine.next_deadline();
        let _ = engine.restart_ready(now);
    }
    engine
}
