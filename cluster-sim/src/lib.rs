//! Deterministic simulation of a cluster of engines on virtual time.
//!
//! N nodes run the real [`Engine`]; the simulator plays network (per-interconnect cuts, one-way
//! failures, loss, delays of several timeouts with reordering, frames held back and delivered in
//! a burst), processes (crash, restart, freeze, thaw, pauses of one node or of all, clean
//! shutdown), resources (steps that take time and may fail, IPW targets, monitored processes)
//! and operators (commands), all drawn from a seeded schedule. After every event it checks the
//! invariants — first of all that no two nodes hold an unexpired lease of one group unless the
//! network kept them apart in both directions (R-SPLIT-1) — and a failure carries the seed and
//! the trace so it can be replayed with [`run_schedule`].

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    fmt::{self, Write as _},
    time::Duration,
};

use cluster_common::Lease;
use cluster_engine::{
    Action, Command, Engine, EngineConfig, Event, Failback, GroupId, GroupSpec, GroupState,
    Instant, NodeId, Notice, Recover, Refusal, Report, StartMode, StepSpec,
};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

/// Why [`Sim::command`] did nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandRefused {
    /// The node's process is not running.
    NotRunning,
    /// The engine refused it, as `clpgrp` would show.
    Engine(Refusal),
}

impl fmt::Display for CommandRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRunning => f.write_str("not running"),
            Self::Engine(refusal) => refusal.fmt(f),
        }
    }
}

/// The simulator's virtual time and its delays, in nanoseconds: a schedule is plain arithmetic
/// on these. Times become [`Instant`]s where they enter an engine.
pub type Nanos = u64;

const MS: Nanos = 1_000_000;

/// Cluster shape of a simulation.
#[derive(Clone, Debug)]
pub struct Shape {
    pub nodes: usize,
    pub links: usize,
    pub interval: Duration,
    pub timeout: Duration,
    pub wait: Duration,
    pub tiebreakers: bool,
    /// `[sync] wait`, for the rule scenarios of session synchronization.
    pub sync_wait: Option<Duration>,
    /// The cluster has flow-share instances.
    pub flow_share: bool,
    /// `[cluster] restart_hold`.
    pub restart_hold: Duration,
    pub groups: Vec<GroupSpec>,
}

fn steps(group: &str, monitored_exec: bool) -> Vec<StepSpec> {
    vec![
        StepSpec {
            name: format!("{group}-fip0"),
            recover: Recover::Retry,
            retry: 2,
            monitored: false,
        },
        StepSpec {
            name: format!("{group}-parp0"),
            recover: Recover::Retry,
            retry: 2,
            monitored: false,
        },
        StepSpec {
            name: format!("{group}-exec0"),
            recover: Recover::Failover,
            retry: 1,
            monitored: monitored_exec,
        },
    ]
}

impl Shape {
    /// The seed's hot standby: group0 on fws1, fws2 waiting.
    pub fn hot_standby(failback: Failback) -> Self {
        Self {
            nodes: 2,
            links: 2,
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(30),
            wait: Duration::from_millis(60),
            tiebreakers: false,
            sync_wait: None,
            flow_share: false,
            restart_hold: Duration::from_millis(300),
            groups: vec![GroupSpec {
                name: "group0".into(),
                policy: vec![0, 1],
                failback,
                start: StartMode::Auto,
                steps: steps("group0", true),
                ipw: vec![Recover::Failover],
            }],
        }
    }

    /// The seed's load share by groups: group0 on fws1, group1 on fws2.
    pub fn load_share(failback: Failback) -> Self {
        let mut shape = Self::hot_standby(failback);
        shape.groups.push(GroupSpec {
            name: "group1".into(),
            policy: vec![1, 0],
            failback,
            start: StartMode::Auto,
            steps: steps("group1", true),
            ipw: vec![Recover::Failover],
        });
        shape
    }

    /// Three nodes, three groups with rotated policies (the general model).
    pub fn three_nodes() -> Self {
        let mut shape = Self::hot_standby(Failback::Auto);
        shape.nodes = 3;
        shape.groups = (0..3)
            .map(|g| GroupSpec {
                name: format!("group{g}"),
                policy: vec![g, (g + 1) % 3, (g + 2) % 3],
                failback: if g == 1 {
                    Failback::Manual
                } else {
                    Failback::Auto
                },
                start: StartMode::Auto,
                steps: steps(&format!("group{g}"), g != 2),
                ipw: vec![Recover::Failover],
            })
            .collect();
        shape
    }

    fn engine_config(&self, me: NodeId) -> EngineConfig {
        EngineConfig {
            nodes: (0..self.nodes).map(|n| format!("fws{}", n + 1)).collect(),
            me,
            links: self.links,
            interval: self.interval,
            timeout: self.timeout,
            wait: self.wait,
            tiebreakers: self.tiebreakers,
            sync_wait: self.sync_wait,
            flow_share: self.flow_share,
            restart_hold: self.restart_hold,
            groups: self.groups.clone(),
        }
    }
}

/// One fault (or operator action) of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cut interconnect `link` in both directions.
    Cut {
        a: NodeId,
        b: NodeId,
        link: usize,
    },
    /// Cut only `from → to`.
    OneWay {
        from: NodeId,
        to: NodeId,
        link: usize,
    },
    /// Delay every frame `from → to` by `by` plus up to half of it again (so they overtake one
    /// another).
    Delay {
        from: NodeId,
        to: NodeId,
        link: usize,
        by: Nanos,
    },
    /// Hold every frame `from → to` back; a heal delivers them all at once.
    Hold {
        from: NodeId,
        to: NodeId,
        link: usize,
    },
    /// Stop one node's process (or, with `None`, every node's: a stall of the whole machine)
    /// for `duration`, then let it run again.
    Pause {
        node: Option<NodeId>,
        duration: Nanos,
    },
    /// Drop `percent` % of the frames both ways.
    Loss {
        a: NodeId,
        b: NodeId,
        link: usize,
        percent: u8,
    },
    /// Restore every link of the pair.
    Heal {
        a: NodeId,
        b: NodeId,
    },
    /// Cut every link of a node.
    Isolate {
        node: NodeId,
    },
    Crash {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
    /// `clpcfg restart`: the daemon announces a restart hold, exits once the peers granted it,
    /// and its next life starts within the hold (or the announcement is withdrawn).
    PlannedRestart {
        node: NodeId,
    },
    Freeze {
        node: NodeId,
    },
    Thaw {
        node: NodeId,
    },
    /// SIGTERM.
    Shutdown {
        node: NodeId,
    },
    IpwLost {
        node: NodeId,
        group: GroupId,
        entry: usize,
    },
    IpwBack {
        node: NodeId,
        group: GroupId,
        entry: usize,
    },
    /// The monitored process of a step dies (if the group runs there).
    ProcessDies {
        node: NodeId,
        group: GroupId,
        step: usize,
    },
    /// The next activations of a step fail on a node.
    StepBroken {
        node: NodeId,
        group: GroupId,
        step: usize,
    },
    StepFixed {
        node: NodeId,
        group: GroupId,
        step: usize,
    },
    Command {
        node: NodeId,
        command: Command,
    },
    /// Tie-breaker reachability of a node.
    Tiebreaker {
        node: NodeId,
        reachable: bool,
    },
}

/// A violated invariant.
#[derive(Clone, Debug)]
pub struct Violation {
    pub seed: u64,
    pub at: Nanos,
    pub message: String,
    pub trace: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} at {:.3} ms: {}\n--- trace (last events) ---\n{}",
            self.seed,
            self.at as f64 / MS as f64,
            self.message,
            self.trace
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scheduled {
    Tick(NodeId),
    /// A peer deadline of the node's engine (the daemon wakes up then, between ticks).
    Timer(NodeId),
    Deliver {
        to: NodeId,
        from: NodeId,
        link: usize,
        report: ReportKey,
    },
    Leaving {
        to: NodeId,
        from: NodeId,
    },
    StepDone {
        node: NodeId,
        incarnation: u32,
        group: GroupId,
        step: usize,
        activate: bool,
        ok: bool,
    },
    Tiebreaker {
        node: NodeId,
        incarnation: u32,
    },
    /// The next life of a node that exited for a planned restart.
    Relaunch(NodeId),
    /// A planned restart not yet done by then is withdrawn.
    WithdrawRestart {
        node: NodeId,
        incarnation: u32,
    },
    Fault(usize),
}

/// Reports are stored aside (they are not `Ord`); the queue holds their index.
type ReportKey = usize;

#[derive(Clone, Copy, Debug, Default)]
struct LinkState {
    /// Direction a→b / b→a cut.
    cut: [bool; 2],
    loss: u8,
    /// Extra delay per direction.
    delay: [Nanos; 2],
    /// Direction held back (frames kept until a heal).
    hold: [bool; 2],
    /// Last time the link was anything but perfect.
    impaired_at: Option<Nanos>,
}

impl LinkState {
    fn perfect(&self) -> bool {
        self.cut == [false, false]
            && self.loss == 0
            && self.delay == [0, 0]
            && self.hold == [false, false]
    }
}

struct SimNode {
    engine: Option<Engine>,
    incarnation: u32,
    frozen: bool,
    /// Events that arrived while frozen, handled at thaw.
    backlog: Vec<Scheduled>,
    /// Local events (monitor verdicts, signals) that happened while frozen.
    pending: Vec<Event>,
    /// Per group: the pinned lease map's element (survives restarts), changed only through
    /// the data path's lease model ([`Lease`]); `None` until first granted.
    lease: Vec<Option<Lease>>,
    ipw_ok: Vec<Vec<bool>>,
    broken: Vec<Vec<bool>>,
    /// Per group and step: whether the resource is in effect on this node (its activation
    /// answered ok and no deactivation since), as the real resource would be.
    active: Vec<Vec<bool>>,
    tiebreaker: bool,
    /// Since when the process has been running unfrozen.
    running_since: Option<Nanos>,
    /// Since when its engine has reported its startup wait finished.
    ready_since: Option<Nanos>,
    /// The deadline a timer is scheduled for.
    timer_at: Option<Nanos>,
    /// The promise of a life that exited for a planned restart, for the next one.
    promise: Option<Instant>,
}

/// The simulation.
pub struct Sim {
    seed: u64,
    shape: Shape,
    now: Nanos,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<(Nanos, u64, Scheduled)>>,
    seq: u64,
    reports: Vec<Report>,
    nodes: Vec<SimNode>,
    /// (a, b, link) with a < b.
    links: BTreeMap<(NodeId, NodeId, usize), LinkState>,
    faults: Vec<Fault>,
    trace: Vec<String>,
    pending_violation: Option<String>,
    /// When a holder of a group died or froze while a healthy peer could take over: (group,
    /// time), to bound the takeover time.
    outage: BTreeMap<GroupId, (Nanos, NodeId)>,
    /// Per node: when the last of its frames already sent arrives (delayed frames keep a
    /// stopped node alive for its peers until then).
    in_flight_until: Vec<Nanos>,
    /// Frames held back per (from, to, link), delivered in a burst when the link heals.
    held: BTreeMap<(NodeId, NodeId, usize), Vec<ReportKey>>,
    /// Per (from, to): the last time some link of that direction was cut, lossy, held or
    /// delayed.
    impaired_dir: BTreeMap<(NodeId, NodeId), Nanos>,
    /// Per (observer, peer): the last time the observer believed the peer gone (declared it
    /// dead from silence, saw it leave, or had not heard it since it started).
    declared_dead: BTreeMap<(NodeId, NodeId), Nanos>,
    /// (observer, peer) pairs where the observer believes so now.
    believes_dead: std::collections::BTreeSet<(NodeId, NodeId)>,
    /// The longest delay any fault has put on a link.
    max_delay: Nanos,
    /// Until when a restart hold lets a lost holder go untaken: its peers count the restarting
    /// node alive (a timeout and the hold after the arrival of a heartbeat that asked for it),
    /// and its next life, or itself after a withdrawal, keeps the promise to take nothing by
    /// silence.
    hold_until: Nanos,
    /// How long a planned restart takes (exit to next life); random within half the hold
    /// unless a scenario sets it.
    restart_takes: Option<Nanos>,
    /// (node, group) where an operator ran `clpgrp -s` since the last STARTING=DENY was set:
    /// that clears DENY, also while the group is still being taken down there.
    deny_cleared_by_operator: std::collections::BTreeSet<(NodeId, GroupId)>,
    pub stats: Stats,
}

/// What a run did, for the summary.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub events: u64,
    /// Lease grants (every activation of a group anywhere).
    pub takeovers: u64,
    pub faults: u64,
    pub refusals: u64,
    /// Peers declared dead from silence (not counting clean leaves).
    pub declared_offline: u64,
    /// Lease lapses of held groups (acknowledgements missing, or a stall).
    pub lapses: u64,
}

impl Sim {
    pub fn new(shape: Shape, seed: u64) -> Self {
        let groups = shape.groups.len();
        let groups_nodes = shape.nodes;
        let nodes = (0..shape.nodes)
            .map(|_| SimNode {
                engine: None,
                incarnation: 0,
                frozen: false,
                backlog: Vec::new(),
                pending: Vec::new(),
                lease: vec![None; groups],
                ipw_ok: shape
                    .groups
                    .iter()
                    .map(|g| vec![true; g.ipw.len()])
                    .collect(),
                broken: shape
                    .groups
                    .iter()
                    .map(|g| vec![false; g.steps.len()])
                    .collect(),
                active: shape
                    .groups
                    .iter()
                    .map(|g| vec![false; g.steps.len()])
                    .collect(),
                tiebreaker: true,
                running_since: None,
                ready_since: None,
                timer_at: None,
                promise: None,
            })
            .collect();
        let mut links = BTreeMap::new();
        for a in 0..shape.nodes {
            for b in a + 1..shape.nodes {
                for link in 0..shape.links {
                    links.insert((a, b, link), LinkState::default());
                }
            }
        }
        Self {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            shape,
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            reports: Vec::new(),
            nodes,
            links,
            faults: Vec::new(),
            trace: Vec::new(),
            pending_violation: None,
            outage: BTreeMap::new(),
            hold_until: 0,
            restart_takes: None,
            in_flight_until: vec![0; groups_nodes],
            held: BTreeMap::new(),
            impaired_dir: BTreeMap::new(),
            declared_dead: BTreeMap::new(),
            believes_dead: Default::default(),
            max_delay: 0,
            deny_cleared_by_operator: Default::default(),
            stats: Stats::default(),
        }
    }

    fn at(&mut self, time: Nanos, event: Scheduled) {
        self.seq += 1;
        self.queue.push(Reverse((time, self.seq, event)));
    }

    fn log(&mut self, line: String) {
        if self.trace.len() >= 400 {
            self.trace.drain(..200);
        }
        self.trace
            .push(format!("{:9.3} {line}", self.now as f64 / MS as f64));
    }

    fn violation(&self, message: String) -> Violation {
        Violation {
            seed: self.seed,
            at: self.now,
            message,
            trace: self.trace.join("\n"),
        }
    }

    fn interval(&self) -> Nanos {
        self.shape.interval.as_nanos() as Nanos
    }

    fn timeout(&self) -> Nanos {
        self.shape.timeout.as_nanos() as Nanos
    }

    /// Starts a node's process.
    fn start(&mut self, node: NodeId) {
        let mut engine = Engine::new(
            self.shape.engine_config(node),
            Instant::from_nanos(self.now),
        );
        if let Some(promise) = self.nodes[node].promise.take() {
            engine.keep_promise(promise);
        }
        // As the daemon does: continue the pinned epochs, adopt leases still valid.
        for group in 0..self.shape.groups.len() {
            let pinned = self.nodes[node].lease[group];
            engine.seed_epoch(group, pinned.map_or(0, |l| l.epoch));
            if let Some(lease) = pinned
                && lease.answers(self.now)
            {
                engine.adopt(
                    group,
                    lease.epoch,
                    Instant::from_nanos(lease.expires_ns),
                    false,
                );
                self.log(format!(
                    "fws{} adopts group{group} epoch {}",
                    node + 1,
                    lease.epoch
                ));
            }
        }
        let n = &mut self.nodes[node];
        // A new process knows its resources through what it adopted: the groups it holds are
        // in effect; the rest counts as undone (the sim does not model leftovers of a crash).
        for (group, steps) in n.active.iter_mut().enumerate() {
            let held = engine.group_state(group) == GroupState::Online;
            steps.iter_mut().for_each(|a| *a = held);
        }
        n.engine = Some(engine);
        n.incarnation += 1;
        // A new process has heard no one yet.
        for peer in (0..self.shape.nodes).filter(|p| *p != node) {
            self.believes_dead.insert((node, peer));
        }
        n.frozen = false;
        n.backlog.clear();
        n.pending.clear();
        n.running_since = Some(self.now);
        let ipw = n.ipw_ok.clone();
        let jitter = self.rng.random_range(0..self.interval());
        self.at(self.now + jitter, Scheduled::Tick(node));
        // The monitors report what they see at start.
        for (group, entries) in ipw.iter().enumerate() {
            for (entry, ok) in entries.iter().enumerate() {
                if !ok {
                    self.feed(
                        node,
                        Event::Ipw {
                            group,
                            entry,
                            ok: false,
                        },
                    );
                }
            }
        }
        self.log(format!("fws{} starts", node + 1));
    }

    fn alive(&self, node: NodeId) -> bool {
        self.nodes[node].engine.is_some()
    }

    fn link(&self, a: NodeId, b: NodeId, link: usize) -> &LinkState {
        &self.links[&(a.min(b), a.max(b), link)]
    }

    fn link_mut(&mut self, a: NodeId, b: NodeId, link: usize) -> &mut LinkState {
        self.links
            .get_mut(&(a.min(b), a.max(b), link))
            .expect("link")
    }

    /// Sends `from`'s report to every peer over every link.
    fn broadcast(&mut self, from: NodeId) {
        for to in 0..self.shape.nodes {
            if to == from {
                continue;
            }
            let Some(mut report) = self.nodes[from]
                .engine
                .as_ref()
                .map(|e| e.report_for(to, Instant::from_nanos(self.now)))
            else {
                return;
            };
            // What the transport puts into the header.
            report.incarnation = u64::from(self.nodes[from].incarnation);
            self.reports.push(report);
            let key = self.reports.len() - 1;
            for link in 0..self.shape.links {
                let state = *self.link(from, to, link);
                let direction = usize::from(from > to);
                if state.cut[direction]
                    || (state.loss > 0 && self.rng.random_range(0..100) < state.loss)
                {
                    continue;
                }
                if state.hold[direction] {
                    self.held.entry((from, to, link)).or_default().push(key);
                    continue;
                }
                let delay = state.delay[direction];
                let latency = self.rng.random_range(50_000..500_000)
                    + delay
                    + self.rng.random_range(0..delay / 2 + 1);
                self.in_flight_until[from] = self.in_flight_until[from].max(self.now + latency);
                self.at(
                    self.now + latency,
                    Scheduled::Deliver {
                        to,
                        from,
                        link,
                        report: key,
                    },
                );
            }
        }
    }

    /// Hands an event to a node's engine and carries out the actions.
    fn feed(&mut self, node: NodeId, event: Event) {
        if self.nodes[node].frozen {
            self.nodes[node].pending.push(event);
            return;
        }
        let Some(engine) = self.nodes[node].engine.as_mut() else {
            return;
        };
        let actions = engine.handle(Instant::from_nanos(self.now), event);
        let deadline = engine.next_deadline().map(Instant::as_nanos);
        let restart = engine
            .restart_ready(Instant::from_nanos(self.now))
            .then(|| engine.restart_promise());
        // An announcing node takes nothing, and keeps its promise after (see `hold_until`).
        if engine.restarting() {
            self.hold_until = self.hold_until.max(engine.restart_promise().as_nanos());
        }
        self.carry_out(node, actions);
        if let Some(promise) = restart
            && self.alive(node)
        {
            self.exit_for_restart(node, promise);
            return;
        }
        if let Some(at) = deadline
            && self.nodes[node].timer_at != Some(at)
            && at > self.now
        {
            self.nodes[node].timer_at = Some(at);
            self.at(at, Scheduled::Timer(node));
        }
    }

    fn carry_out(&mut self, node: NodeId, actions: Vec<Action>) {
        let mut send = false;
        for action in actions {
            match action {
                Action::GrantLease {
                    group,
                    epoch,
                    until,
                } => {
                    // A STARTING=DENY node takes a group only when cut off from every peer
                    // (R-FO-2) or when an operator started it there (which clears DENY).
                    if let Some(engine) = &self.nodes[node].engine
                        && let Some(cause) = engine.deny(group)
                        && (0..self.shape.nodes).any(|p| p != node && engine.is_online(p))
                    {
                        self.pending_violation.get_or_insert(format!(
                            "fws{} took group{group} while STARTING=DENY ({cause:?}) with a peer online",
                            node + 1
                        ));
                    }
                    match Lease::granted(self.nodes[node].lease[group], epoch, until.as_nanos()) {
                        Ok(lease) => {
                            self.nodes[node].lease[group] = Some(lease);
                            self.stats.takeovers += 1;
                            self.log(format!("fws{} grants group{group} epoch {epoch}", node + 1));
                        }
                        // The daemon would hear of it as a resource error; the engine must
                        // never ask for it.
                        Err(refusal) => {
                            self.pending_violation.get_or_insert(format!(
                                "fws{} granted group{group} epoch {epoch}, which the data path refuses: {refusal:?}",
                                node + 1
                            ));
                        }
                    }
                }
                Action::RenewLease {
                    group,
                    epoch,
                    until,
                } => {
                    let slot = &mut self.nodes[node].lease[group];
                    match Lease::extended(*slot, epoch, until.as_nanos()) {
                        Ok(lease) => *slot = Some(lease),
                        Err(refusal) => {
                            // A released or foreign lease stays dead.
                            self.log(format!(
                                "fws{} renewal of group{group} epoch {epoch} refused ({refusal:?})",
                                node + 1
                            ));
                        }
                    }
                }
                Action::RevokeLease { group, epoch } => {
                    let slot = &mut self.nodes[node].lease[group];
                    *slot = Some(Lease::released(*slot, epoch));
                    self.log(format!("fws{} revokes group{group}", node + 1));
                }
                Action::Activate { group, step, .. } | Action::Deactivate { group, step, .. } => {
                    let activate = matches!(action, Action::Activate { .. });
                    let ok = !(activate && self.nodes[node].broken[group][step]);
                    let delay = self.rng.random_range(100_000..2_000_000);
                    let incarnation = self.nodes[node].incarnation;
                    self.at(
                        self.now + delay,
                        Scheduled::StepDone {
                            node,
                            incarnation,
                            group,
                            step,
                            activate,
                            ok,
                        },
                    );
                }
                Action::Reannounce { .. } => {}
                Action::SendNow => send = true,
                Action::ProbeTiebreaker => {
                    let incarnation = self.nodes[node].incarnation;
                    self.at(self.now + MS, Scheduled::Tiebreaker { node, incarnation });
                }
                Action::Exit => {
                    self.log(format!("fws{} leaves", node + 1));
                    for to in 0..self.shape.nodes {
                        if to != node
                            && (0..self.shape.links)
                                .any(|l| !self.link(node, to, l).cut[usize::from(node > to)])
                        {
                            self.at(self.now + 100_000, Scheduled::Leaving { to, from: node });
                        }
                    }
                    self.nodes[node].engine = None;
                    self.nodes[node].running_since = None;
                    return;
                }
                Action::Notify(notice) => {
                    if let Notice::PeerOffline { peer, silent_for } = notice {
                        self.believes_dead.insert((node, peer));
                        if silent_for.is_some() {
                            self.stats.declared_offline += 1;
                        }
                    }
                    if let Notice::LeaseLapsed { .. } = notice {
                        self.stats.lapses += 1;
                    }
                    if let Notice::DenySet { group, .. } = notice {
                        self.deny_cleared_by_operator.remove(&(node, group));
                    }
                    if let Notice::PeerOnline { peer } = notice {
                        self.believes_dead.remove(&(node, peer));
                        self.declared_dead.insert((node, peer), self.now);
                    }
                    self.check_notice(node, &notice);
                    self.log(format!("fws{} {notice:?}", node + 1));
                }
            }
        }
        if send {
            self.broadcast(node);
        }
    }

    /// Start deny and failback as the spec says, and notices only for configured groups.
    fn check_notice(&mut self, node: NodeId, notice: &Notice) {
        use cluster_engine::{Cause, DeactReason};
        let groups = self.shape.groups.len();
        let group = match notice {
            Notice::GroupOnline { group, .. }
            | Notice::GroupOffline { group, .. }
            | Notice::GroupError { group, .. }
            | Notice::StepFailed { group, .. }
            | Notice::DenySet { group, .. }
            | Notice::DenyCleared { group }
            | Notice::FailoverImpossible { group } => Some(*group),
            _ => None,
        };
        if let Some(group) = group
            && group >= groups
        {
            self.pending_violation
                .get_or_insert(format!("notice for unconfigured group{group}: {notice:?}"));
            return;
        }
        match *notice {
            Notice::GroupOffline {
                group,
                cause: Cause::Failback,
                ..
            } if self.shape.groups[group].failback == Failback::Manual => {
                self.pending_violation.get_or_insert(format!(
                    "fws{} gave group{group} back to its primary although failback is manual",
                    node + 1
                ));
            }
            Notice::GroupOffline {
                group,
                reason: DeactReason::Illegal,
                cause: Cause::Resource { ipw: true, .. },
            } => {
                let deny = self.nodes[node].engine.as_ref().and_then(|e| e.deny(group));
                // The DENY clears as soon as every target answers again, which may happen while
                // the group is still being taken down.
                let recovered = self.nodes[node].ipw_ok[group].iter().all(|ok| *ok);
                // A deny that needs an operator (process, activation) may already be set and
                // stays: it is the stronger one.
                let cleared = self.deny_cleared_by_operator.contains(&(node, group));
                if deny.is_none() && !recovered && !cleared {
                    self.pending_violation.get_or_insert(format!(
                        "fws{} failed group{group} over for an IPW loss but is not STARTING=DENY",
                        node + 1
                    ));
                }
            }
            _ => {}
        }
    }
}

impl Sim {
    /// Runs `faults`, each followed by a quiet period, and checks the invariants after every
    /// event and the expectations at the end of every quiet period.
    pub fn run(&mut self, faults: Vec<(Fault, Nanos)>) -> Result<(), Violation> {
        self.start_all();
        let settle = self.settle_time();
        self.advance(settle)?;
        self.check_settled()?;
        for (fault, quiet) in faults {
            self.inject(fault);
            self.advance(quiet)?;
            // Expectations hold at the end of every full quiet period, counted from the end
            // of a restart hold's promise (until then a lost holder may go untaken).
            if quiet >= settle && self.now >= self.hold_until + settle {
                self.check_settled()?;
            }
        }
        self.advance(settle)?;
        while self.now < self.hold_until + settle {
            self.advance(self.hold_until + settle - self.now)?;
        }
        self.check_settled()
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for node in 0..self.shape.nodes {
            self.start(node);
        }
    }

    /// Applies a fault now.
    /// Makes every planned restart take `duration` from the exit to the next life.
    pub fn set_restart_duration(&mut self, duration: Nanos) {
        self.restart_takes = Some(duration);
    }

    pub fn inject(&mut self, fault: Fault) {
        self.faults.push(fault);
        let index = self.faults.len() - 1;
        self.dispatch(Scheduled::Fault(index));
    }

    /// Lets `duration` of virtual time pass, checking the invariants after every event.
    pub fn advance(&mut self, duration: Nanos) -> Result<(), Violation> {
        let end = self.now + duration;
        while let Some(Reverse((time, _, _))) = self.queue.peek()
            && *time <= end
        {
            let Some(Reverse((time, _, event))) = self.queue.pop() else {
                break;
            };
            self.now = time;
            self.stats.events += 1;
            self.dispatch(event);
            if let Some(message) = self.pending_violation.take() {
                return Err(self.violation(message));
            }
            self.check_always()?;
        }
        self.now = end;
        Ok(())
    }

    /// The nodes holding a valid lease of `group` now.
    pub fn holders(&self, group: GroupId) -> Vec<NodeId> {
        self.holder_of(group)
    }

    /// The recent trace (for failure messages).
    pub fn trace(&self) -> String {
        self.trace.join("\n")
    }

    /// A node's engine, if its process runs.
    pub fn engine(&self, node: NodeId) -> Option<&Engine> {
        self.nodes[node].engine.as_ref()
    }

    /// Runs an operator command on a node now.
    pub fn command(&mut self, node: NodeId, command: Command) -> Result<(), CommandRefused> {
        let now = self.now;
        let engine = self.nodes[node]
            .engine
            .as_mut()
            .ok_or(CommandRefused::NotRunning)?;
        let actions = engine
            .command(Instant::from_nanos(now), command)
            .map_err(CommandRefused::Engine)?;
        self.carry_out(node, actions);
        self.broadcast(node);
        Ok(())
    }

    /// Long enough for the cluster to settle after a fault: startup wait, detection, claim and
    /// three steps of up to 2 ms each, twice (deactivate, then activate), with retries.
    pub fn settle_time(&self) -> Nanos {
        self.shape.wait.as_nanos() as Nanos + 3 * self.timeout() + 6 * self.interval() + 40 * MS
    }

    fn dispatch(&mut self, event: Scheduled) {
        if let Some(node) = match &event {
            Scheduled::Tick(n)
            | Scheduled::Timer(n)
            | Scheduled::Deliver { to: n, .. }
            | Scheduled::Leaving { to: n, .. } => Some(*n),
            Scheduled::StepDone { node, .. }
            | Scheduled::Tiebreaker { node, .. }
            | Scheduled::WithdrawRestart { node, .. } => Some(*node),
            Scheduled::Fault(_) | Scheduled::Relaunch(_) => None,
        } && self.nodes[node].frozen
        {
            // A frozen process handles nothing; the kernel keeps what arrives for later.
            if !matches!(event, Scheduled::Tick(_) | Scheduled::Timer(_)) {
                self.nodes[node].backlog.push(event);
            }
            return;
        }
        match event {
            Scheduled::Tick(node) => {
                if !self.alive(node) {
                    return;
                }
                let jitter = self.rng.random_range(0..self.interval() / 20 + 1);
                self.at(self.now + self.interval() + jitter, Scheduled::Tick(node));
                self.feed(node, Event::Tick);
                self.broadcast(node);
            }
            Scheduled::Timer(node) => {
                if self.nodes[node].timer_at == Some(self.now) {
                    self.nodes[node].timer_at = None;
                }
                self.feed(node, Event::Timer);
            }
            Scheduled::Deliver {
                to,
                from,
                link,
                report,
            } => {
                let report = self.reports[report].clone();
                // A live receiver counts the sender alive for the hold it asks for.
                if report.hold > Duration::ZERO && self.alive(to) {
                    let hold = report.hold.as_nanos() as Nanos;
                    self.hold_until = self.hold_until.max(self.now + hold + self.timeout());
                }
                self.feed(to, Event::Heartbeat { from, link, report });
            }
            Scheduled::Leaving { to, from } => self.feed(to, Event::Leaving { from }),
            Scheduled::StepDone {
                node,
                incarnation,
                group,
                step,
                activate,
                ok,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.nodes[node].active[group][step] = activate && ok;
                    self.feed(node, Event::StepDone { group, step, ok });
                    // Nothing half-active: a group down on a node has none of its resources in
                    // effect there (an activation answered late must be undone, not kept).
                    let state = self.nodes[node]
                        .engine
                        .as_ref()
                        .map(|e| e.group_state(group));
                    if matches!(state, Some(GroupState::Offline | GroupState::Error))
                        && self.nodes[node].active[group].iter().any(|a| *a)
                    {
                        self.pending_violation.get_or_insert(format!(
                            "group{group} is {state:?} on fws{} with resources still in effect: {:?}",
                            node + 1,
                            self.nodes[node].active[group]
                        ));
                    }
                }
            }
            Scheduled::Tiebreaker { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation {
                    let reachable = self.nodes[node].tiebreaker;
                    self.feed(node, Event::Tiebreaker { reachable });
                }
            }
            Scheduled::Relaunch(node) => {
                if !self.alive(node) {
                    self.start(node);
                }
            }
            Scheduled::WithdrawRestart { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation
                    && let Some(engine) = &self.nodes[node].engine
                    && engine.restarting()
                {
                    // The withdrawn announcement's promise holds (see `hold_until`).
                    self.hold_until = self.hold_until.max(engine.restart_promise().as_nanos());
                    self.feed(node, Event::CancelRestart);
                }
            }
            Scheduled::Fault(index) => {
                let fault = self.faults[index].clone();
                self.stats.faults += 1;
                self.log(format!("FAULT {fault:?}"));
                self.apply(fault);
            }
        }
    }

    fn impair(&mut self, a: NodeId, b: NodeId, link: usize) {
        let now = self.now;
        self.link_mut(a, b, link).impaired_at = Some(now);
    }

    fn holder_of(&self, group: GroupId) -> Vec<NodeId> {
        (0..self.shape.nodes)
            .filter(|n| self.nodes[*n].lease[group].is_some_and(|lease| lease.answers(self.now)))
            .collect()
    }

    fn apply(&mut self, fault: Fault) {
        match fault {
            Fault::Cut { a, b, link } => {
                self.impair(a, b, link);
                self.link_mut(a, b, link).cut = [true, true];
            }
            Fault::OneWay { from, to, link } => {
                self.impair(from, to, link);
                let direction = usize::from(from > to);
                self.link_mut(from, to, link).cut[direction] = true;
            }
            Fault::Delay { from, to, link, by } => {
                self.impair(from, to, link);
                self.max_delay = self.max_delay.max(by);
                let direction = usize::from(from > to);
                self.link_mut(from, to, link).delay[direction] = by;
            }
            Fault::Hold { from, to, link } => {
                self.impair(from, to, link);
                let direction = usize::from(from > to);
                self.link_mut(from, to, link).hold[direction] = true;
            }
            Fault::Pause { node, duration } => {
                let nodes: Vec<NodeId> = match node {
                    Some(n) => vec![n],
                    None => (0..self.shape.nodes).collect(),
                };
                for node in nodes {
                    self.apply(Fault::Freeze { node });
                    self.faults.push(Fault::Thaw { node });
                    let thaw = self.faults.len() - 1;
                    self.at(self.now + duration, Scheduled::Fault(thaw));
                }
            }
            Fault::Loss {
                a,
                b,
                link,
                percent,
            } => {
                self.impair(a, b, link);
                self.link_mut(a, b, link).loss = percent;
            }
            Fault::Heal { a, b } => {
                for link in 0..self.shape.links {
                    let now = self.now;
                    let state = self.link_mut(a, b, link);
                    if !state.perfect() {
                        *state = LinkState {
                            impaired_at: Some(now),
                            ..LinkState::default()
                        };
                    }
                    self.impaired_dir.insert((a, b), now);
                    self.impaired_dir.insert((b, a), now);
                    // What was held back arrives in one burst.
                    for (from, to) in [(a, b), (b, a)] {
                        for key in self.held.remove(&(from, to, link)).unwrap_or_default() {
                            let latency = self.rng.random_range(10_000..100_000);
                            self.in_flight_until[from] =
                                self.in_flight_until[from].max(self.now + latency);
                            self.at(
                                self.now + latency,
                                Scheduled::Deliver {
                                    to,
                                    from,
                                    link,
                                    report: key,
                                },
                            );
                        }
                    }
                }
            }
            Fault::Isolate { node } => {
                for other in 0..self.shape.nodes {
                    if other != node {
                        for link in 0..self.shape.links {
                            self.impair(node, other, link);
                            self.link_mut(node, other, link).cut = [true, true];
                        }
                    }
                }
            }
            Fault::Crash { node } => {
                if self.alive(node) {
                    self.note_outage(node);
                    self.nodes[node].engine = None;
                    self.nodes[node].running_since = None;
                    self.nodes[node].frozen = false;
                    self.nodes[node].backlog.clear();
                    self.nodes[node].pending.clear();
                }
            }
            Fault::Restart { node } => {
                if !self.alive(node) {
                    self.start(node);
                }
            }
            Fault::PlannedRestart { node } => {
                if self.alive(node) && !self.nodes[node].frozen {
                    self.feed(node, Event::PrepareRestart);
                    let incarnation = self.nodes[node].incarnation;
                    self.at(
                        self.now + 10 * self.interval(),
                        Scheduled::WithdrawRestart { node, incarnation },
                    );
                }
            }
            Fault::Freeze { node } => {
                if self.alive(node) && !self.nodes[node].frozen {
                    self.note_outage(node);
                    self.nodes[node].frozen = true;
                    self.nodes[node].running_since = None;
                }
            }
            Fault::Thaw { node } => {
                if self.nodes[node].frozen {
                    // A thawed node listens for a while before it judges silence, and takes
                    // nothing while a peer it does not hear may hold it, for two timeouts
                    // (R-HB-4); if it is the best node for a pending takeover, the takeover
                    // waits for that.
                    let resumed = self.now + 2 * self.timeout();
                    self.outage
                        .values_mut()
                        .for_each(|(since, _)| *since = resumed);
                    self.nodes[node].frozen = false;
                    self.nodes[node].running_since = Some(self.now);
                    // The daemon's timer fires at once after a stop, then it reads its sockets.
                    self.feed(node, Event::Tick);
                    for event in std::mem::take(&mut self.nodes[node].pending) {
                        self.feed(node, event);
                    }
                    let backlog = std::mem::take(&mut self.nodes[node].backlog);
                    for event in backlog {
                        self.dispatch(event);
                    }
                    let jitter = self.rng.random_range(0..self.interval());
                    self.at(self.now + jitter, Scheduled::Tick(node));
                }
            }
            Fault::Shutdown { node } => self.feed(node, Event::Shutdown),
            Fault::IpwLost { node, group, entry } => {
                self.nodes[node].ipw_ok[group][entry] = false;
                self.feed(
                    node,
                    Event::Ipw {
                        group,
                        entry,
                        ok: false,
                    },
                );
            }
            Fault::IpwBack { node, group, entry } => {
                self.nodes[node].ipw_ok[group][entry] = true;
                self.feed(
                    node,
                    Event::Ipw {
                        group,
                        entry,
                        ok: true,
                    },
                );
            }
            Fault::ProcessDies { node, group, step } => {
                let online = self.nodes[node]
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.group_state(group) == GroupState::Online);
                if online && self.shape.groups[group].steps[step].monitored {
                    self.feed(node, Event::StepFailed { group, step });
                }
            }
            Fault::StepBroken { node, group, step } => self.nodes[node].broken[group][step] = true,
            Fault::StepFixed { node, group, step } => self.nodes[node].broken[group][step] = false,
            Fault::Command { node, command } => {
                if self.nodes[node].frozen {
                    // clpgrp gets no answer from a stopped daemon.
                    return;
                }
                if let Command::Start { group } = command {
                    self.deny_cleared_by_operator.insert((node, group));
                }
                if let Err(refusal) = self.command(node, command) {
                    self.stats.refusals += 1;
                    self.log(format!("fws{} refuses {command:?}: {refusal}", node + 1));
                }
            }
            Fault::Tiebreaker { node, reachable } => self.nodes[node].tiebreaker = reachable,
        }
    }

    /// A node that held a group stopped running: if a healthy peer that could hear it can take
    /// over, the group must be taken over within timeout + one interval (plus the claim round
    /// trip and the resource steps).
    /// The daemon exits for its restart: the data path stays (pinned leases), the next life
    /// starts within the hold.
    fn exit_for_restart(&mut self, node: NodeId, promise: Instant) {
        self.log(format!("fws{} exits for a restart", node + 1));
        let n = &mut self.nodes[node];
        n.engine = None;
        n.running_since = None;
        n.backlog.clear();
        n.pending.clear();
        n.promise = Some(promise);
        let hold = self.shape.restart_hold.as_nanos() as Nanos;
        self.hold_until = self.hold_until.max(promise.as_nanos());
        let delay = match self.restart_takes {
            Some(delay) => delay,
            None => self.rng.random_range(MS..hold / 2),
        };
        self.at(self.now + delay, Scheduled::Relaunch(node));
    }

    fn note_outage(&mut self, node: NodeId) {
        // Another failure restarts the clock of pending takeovers: the node that was going to
        // take over may be the one that failed now (the bound is for one failure).
        let now = self.now;
        self.outage.values_mut().for_each(|(since, _)| *since = now);
        for group in 0..self.shape.groups.len() {
            if self.holder_of(group) == vec![node] {
                self.outage.entry(group).or_insert((self.now, node));
            }
        }
    }

    /// R-SPLIT-1, at every step: no two nodes hold an unexpired lease of one group, unless the
    /// two were partitioned: each had declared the other dead from silence, and the network had
    /// impaired both directions between them (cut, loss, held back or delayed), recently. One-way
    /// failures, delays in one direction, and pauses of one node or of all excuse nothing.
    fn check_single_owner(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let nodes = self.shape.nodes;
        for &(observer, peer) in &self.believes_dead {
            // A node down for a planned restart still answers on its (held) lease, with what it
            // believed when it exited.
            if self.alive(observer) || self.nodes[observer].promise.is_some() {
                self.declared_dead.insert((observer, peer), now);
            }
        }
        for from in 0..nodes {
            for to in 0..nodes {
                let direction = usize::from(from > to);
                let imperfect = from != to
                    && (0..self.shape.links).any(|l| {
                        let s = self.link(from, to, l);
                        s.cut[direction]
                            || s.hold[direction]
                            || s.delay[direction] > 0
                            || s.loss > 0
                    });
                if imperfect {
                    self.impaired_dir.insert((from, to), now);
                }
            }
        }
        // After a partition heals, the two hear each other within a (delayed) round trip, and
        // the older holder's lease runs out within one more lease.
        let window = 2 * self.timeout() + 2 * self.interval() + 2 * self.max_delay;
        let recent = |map: &BTreeMap<(NodeId, NodeId), Nanos>, key| {
            map.get(&key)
                .is_some_and(|t| now.saturating_sub(*t) <= window)
        };
        for group in 0..self.shape.groups.len() {
            let holders = self.holder_of(group);
            for (i, &a) in holders.iter().enumerate() {
                for &b in &holders[i + 1..] {
                    let partitioned = recent(&self.declared_dead, (a, b))
                        && recent(&self.declared_dead, (b, a))
                        && recent(&self.impaired_dir, (a, b))
                        && recent(&self.impaired_dir, (b, a));
                    if !partitioned {
                        let lease = |n: NodeId| self.nodes[n].lease[group].expect("holder");
                        return Err(self.violation(format!(
                            "fws{} and fws{} both hold an unexpired lease of group{group} ({:?} and {:?}) and were not partitioned",
                            a + 1,
                            b + 1,
                            lease(a),
                            lease(b)
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Invariants checked after every event.
    fn check_always(&mut self) -> Result<(), Violation> {
        self.check_single_owner()?;
        let now = self.now;
        for node in &mut self.nodes {
            let ready = node.engine.as_ref().is_some_and(|e| e.report().ready);
            node.ready_since = ready.then(|| node.ready_since.unwrap_or(now));
        }
        // Timeout + one interval (R-HB-1), plus the resource steps (3 × up to 2 ms) and a round
        // trip, counted from the arrival of the lost holder's last frame (a delayed frame
        // keeps it alive until then).
        let bound = self.timeout() + self.interval() + 8 * MS;
        let groups = self.shape.groups.len();
        for group in 0..groups {
            if let Some(&(since, lost)) = self.outage.get(&group) {
                let holders = self.holder_of(group);
                if holders
                    .iter()
                    .any(|h| self.nodes[*h].running_since.is_some())
                {
                    self.outage.remove(&group);
                } else {
                    // Delayed frames of any stopped node (the lost holder, or a node that
                    // failed meanwhile and would come before the survivors) keep it alive.
                    let stale = (0..self.shape.nodes)
                        .filter(|n| *n == lost || self.nodes[*n].running_since.is_none())
                        .map(|n| self.in_flight_until[n])
                        .max()
                        .unwrap_or(0);
                    match self
                        .takeover_start(group, since)
                        .map(|(start, settling_until)| {
                            // A silence that began while the taker settled after a pause of
                            // its own must last two timeouts (R-HB-4).
                            let bound = if since.min(stale) < settling_until {
                                bound + self.timeout()
                            } else {
                                bound
                            };
                            (start.max(stale).max(self.hold_until), bound)
                        }) {
                        None => {
                            self.outage.remove(&group);
                        }
                        Some((start, bound)) if self.now.saturating_sub(start) > bound => {
                            return Err(self.violation(format!(
                                "group{group} lost its holder {:.1} ms ago and nobody took over (bound {:.1} ms from {:.1} ms ago)",
                                (self.now - since) as f64 / MS as f64,
                                bound as f64 / MS as f64,
                                (self.now - start) as f64 / MS as f64
                            )));
                        }
                        Some(_) => {}
                    }
                }
            }
            // STARTING=DENY for an IPW cause only while an IPW entry fails there.
            for node in 0..self.shape.nodes {
                if let Some(engine) = &self.nodes[node].engine
                    && engine.deny(group) == Some(cluster_engine::DenyCause::Ipw)
                    && self.nodes[node].ipw_ok[group].iter().all(|ok| *ok)
                    && !self.nodes[node].frozen
                {
                    return Err(self.violation(format!(
                        "fws{} is STARTING=DENY for group{group} (IPW cause) although its targets are reachable",
                        node + 1
                    )));
                }
            }
        }
        Ok(())
    }

    /// When some node that was running and healthy, and that heard the lost holder over a
    /// perfect link, could take the group over: `since`, or later for a node that was still in
    /// its startup wait then (a starting node waits for its peers by design) or had just
    /// resumed from a pause, `Nanos::MAX` while it still waits; `None` when no node could. With
    /// it, until when that node settles after a pause (0 if it never paused).
    fn takeover_start(&self, group: GroupId, since: Nanos) -> Option<(Nanos, Nanos)> {
        // In the order of the group's policy: the first candidate that is ready is the one
        // that takes it (the others defer to it), however long it has to wait.
        let candidates: Vec<NodeId> = self.shape.groups[group]
            .policy
            .iter()
            .copied()
            .filter(|&n| {
                let node = &self.nodes[n];
                let Some(engine) = &node.engine else {
                    return false;
                };
                node.running_since.is_some_and(|t| t <= since)
                    && !node.frozen
                    && (!self.shape.tiebreakers || node.tiebreaker)
                    && node.ipw_ok[group].iter().all(|ok| *ok)
                    && engine.deny(group).is_none()
                    && engine.group_state(group) != GroupState::Error
                    && self.shape.groups[group]
                        .steps
                        .iter()
                        .enumerate()
                        .all(|(s, _)| !node.broken[group][s])
                    && self.group_wanted(group)
                    && (0..self.shape.nodes).filter(|o| *o != n).all(|o| {
                        (0..self.shape.links).any(|l| {
                            let s = self.link(n, o, l);
                            s.impaired_at.is_none_or(|t| t < since) && s.perfect()
                        })
                    })
            })
            .collect();
        let taker = candidates
            .iter()
            .find(|n| self.nodes[**n].ready_since.is_some())
            .or(candidates.first())?;
        // A node that just resumed from a pause takes nothing while a peer it does not hear
        // may hold it, for two timeouts (R-HB-4), as at start.
        let resumed = self.nodes[*taker]
            .running_since
            .map_or(0, |t| t + 2 * self.timeout());
        let start = self.nodes[*taker]
            .ready_since
            .map_or(Nanos::MAX, |t| t.max(since).max(resumed));
        let settling_until = self.nodes[*taker]
            .engine
            .as_ref()
            .map_or(0, |e| e.settling_until().as_nanos());
        Some((start, settling_until))
    }

    fn group_wanted(&self, group: GroupId) -> bool {
        // The most recent operator intent as the live engines report it.
        self.nodes
            .iter()
            .filter_map(|n| n.engine.as_ref())
            .map(|e| {
                let r = e.report().groups[group];
                (r.admin_epoch, r.wanted)
            })
            .max()
            .is_none_or(|(_, wanted)| wanted)
    }

    /// Expectations after a quiet period: the network is whole again only when no fault is
    /// active, so these check what must hold in the current conditions.
    pub fn check_settled(&mut self) -> Result<(), Violation> {
        let perfect = self.links.values().all(LinkState::perfect);
        for group in 0..self.shape.groups.len() {
            let holders = self.holder_of(group);
            let running: Vec<NodeId> = (0..self.shape.nodes)
                .filter(|n| self.nodes[*n].engine.is_some() && !self.nodes[*n].frozen)
                .collect();
            if perfect && holders.len() > 1 {
                return Err(self.violation(format!(
                    "group{group} held by {holders:?} after a quiet period with every link working"
                )));
            }
            if !perfect || !self.group_wanted(group) {
                continue;
            }
            let eligible: Vec<NodeId> = running
                .iter()
                .copied()
                .filter(|n| {
                    let node = &self.nodes[*n];
                    let engine = node.engine.as_ref().expect("running");
                    node.ipw_ok[group].iter().all(|ok| *ok)
                        && engine.deny(group).is_none()
                        && engine.group_state(group) != GroupState::Error
                        && node.broken[group].iter().all(|b| !b)
                        // Alone, a node takes over only if it reaches a tie-breaker.
                        && (!self.shape.tiebreakers || running.len() > 1 || node.tiebreaker)
                })
                .collect();
            if eligible.is_empty() {
                continue;
            }
            let Some(&holder) = holders.first() else {
                return Err(self.violation(format!(
                    "group{group} is wanted, {} can run it, but nobody holds it after a quiet period",
                    eligible.iter().map(|n| format!("fws{}", n + 1)).collect::<Vec<_>>().join(", ")
                )));
            };
            let state = self.nodes[holder]
                .engine
                .as_ref()
                .map(|e| e.group_state(group));
            if state != Some(GroupState::Online) {
                return Err(self.violation(format!(
                    "group{group}: holder fws{} is {state:?} after a quiet period",
                    holder + 1
                )));
            }
            // Auto failback: the best eligible node of the policy holds it, unless an operator
            // put it where it is.
            let placed_by_operator = self.nodes[holder]
                .engine
                .as_ref()
                .is_some_and(|e| e.placed_by_operator(group));
            if self.shape.groups[group].failback == Failback::Auto && !placed_by_operator {
                let best = self.shape.groups[group]
                    .policy
                    .iter()
                    .copied()
                    .find(|n| eligible.contains(n));
                if let Some(best) = best
                    && best != holder
                    && eligible.contains(&holder)
                {
                    return Err(self.violation(format!(
                        "group{group} (failback auto) runs on fws{} but fws{} is its best eligible server",
                        holder + 1,
                        best + 1
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A random schedule of `count` faults for `shape` from `seed`, each with its quiet period.
pub fn schedule(shape: &Shape, seed: u64, count: usize) -> Vec<(Fault, Nanos)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed);
    let settle = Sim::new(shape.clone(), seed).settle_time();
    let nodes = shape.nodes;
    let mut out = Vec::new();
    let pick_node = |rng: &mut ChaCha8Rng| rng.random_range(0..nodes);
    let pick_pair = |rng: &mut ChaCha8Rng| {
        let a = rng.random_range(0..nodes);
        let b = (a + rng.random_range(1..nodes)) % nodes;
        (a, b)
    };
    for _ in 0..count {
        let group = rng.random_range(0..shape.groups.len());
        let link = rng.random_range(0..shape.links);
        let timeout = shape.timeout.as_nanos() as Nanos;
        let fault = match rng.random_range(0..26) {
            0 => {
                let (a, b) = pick_pair(&mut rng);
                Fault::Cut { a, b, link }
            }
            1 => {
                let (from, to) = pick_pair(&mut rng);
                Fault::OneWay { from, to, link }
            }
            2 => {
                let (a, b) = pick_pair(&mut rng);
                let percent = [1, 10, 30][rng.random_range(0..3)];
                Fault::Loss {
                    a,
                    b,
                    link,
                    percent,
                }
            }
            3 | 4 => {
                let (a, b) = pick_pair(&mut rng);
                Fault::Heal { a, b }
            }
            5 => Fault::Isolate {
                node: pick_node(&mut rng),
            },
            6 => Fault::Crash {
                node: pick_node(&mut rng),
            },
            7 | 8 => Fault::Restart {
                node: pick_node(&mut rng),
            },
            9 => Fault::Freeze {
                node: pick_node(&mut rng),
            },
            10 => Fault::Thaw {
                node: pick_node(&mut rng),
            },
            11 => Fault::Shutdown {
                node: pick_node(&mut rng),
            },
            12 => Fault::IpwLost {
                node: pick_node(&mut rng),
                group,
                entry: 0,
            },
            13 => Fault::IpwBack {
                node: pick_node(&mut rng),
                group,
                entry: 0,
            },
            14 => Fault::ProcessDies {
                node: pick_node(&mut rng),
                group,
                step: shape.groups[group].steps.len() - 1,
            },
            15 => Fault::StepBroken {
                node: pick_node(&mut rng),
                group,
                step: rng.random_range(0..shape.groups[group].steps.len()),
            },
            16 => Fault::StepFixed {
                node: pick_node(&mut rng),
                group,
                step: rng.random_range(0..shape.groups[group].steps.len()),
            },
            17 => {
                let node = pick_node(&mut rng);
                let command = match rng.random_range(0..3) {
                    0 => Command::Start { group },
                    1 => Command::Stop { group },
                    _ => Command::Move { group, to: None },
                };
                Fault::Command { node, command }
            }
            19 | 20 => {
                let (from, to) = pick_pair(&mut rng);
                let by = [timeout / 3, timeout, 2 * timeout, 4 * timeout][rng.random_range(0..4)];
                Fault::Delay { from, to, link, by }
            }
            21 => {
                let (from, to) = pick_pair(&mut rng);
                Fault::Hold { from, to, link }
            }
            22 => Fault::Pause {
                node: Some(pick_node(&mut rng)),
                duration: rng.random_range(timeout / 4..4 * timeout),
            },
            23 => Fault::Pause {
                node: None,
                duration: rng.random_range(timeout / 4..4 * timeout),
            },
            24 => Fault::PlannedRestart {
                node: pick_node(&mut rng),
            },
            18 if shape.tiebreakers => Fault::Tiebreaker {
                node: pick_node(&mut rng),
                reachable: rng.random_bool(0.5),
            },
            _ => {
                let (a, b) = pick_pair(&mut rng);
                Fault::Heal { a, b }
            }
        };
        // Mostly short gaps (faults overlap), sometimes a full quiet period.
        let quiet = if rng.random_bool(0.35) {
            settle
        } else {
            rng.random_range(MS..settle / 2)
        };
        out.push((fault, quiet));
    }
    // End whole: heal everything, thaw, restart, so the final expectations apply.
    for node in 0..nodes {
        out.push((Fault::Thaw { node }, MS));
        out.push((Fault::Restart { node }, MS));
        for group in 0..shape.groups.len() {
            for entry in 0..shape.groups[group].ipw.len() {
                out.push((Fault::IpwBack { node, group, entry }, MS));
            }
            for step in 0..shape.groups[group].steps.len() {
                out.push((Fault::StepFixed { node, group, step }, MS));
            }
        }
        out.push((
            Fault::Tiebreaker {
                node,
                reachable: true,
            },
            MS,
        ));
    }
    for a in 0..nodes {
        for b in a + 1..nodes {
            out.push((Fault::Heal { a, b }, MS));
        }
    }
    out
}

/// Runs one seeded schedule of `faults` faults on `shape`.
pub fn run_schedule(shape: &Shape, seed: u64, faults: usize) -> Result<Stats, Violation> {
    let mut sim = Sim::new(shape.clone(), seed);
    sim.run(schedule(shape, seed, faults))?;
    Ok(sim.stats)
}

/// Formats a fault list (for a failure report).
pub fn describe(schedule: &[(Fault, Nanos)]) -> String {
    let mut out = String::new();
    let mut t = 0;
    for (fault, quiet) in schedule {
        let _ = writeln!(out, "+{:.1}ms {fault:?}", t as f64 / MS as f64);
        t += quiet;
    }
    out
}

/// The shapes the simulator cycles through, by name.
pub fn shapes() -> Vec<(&'static str, Shape)> {
    let mut tiebreaker = Shape::hot_standby(Failback::Manual);
    tiebreaker.tiebreakers = true;
    vec![
        (
            "hot standby, manual failback",
            Shape::hot_standby(Failback::Manual),
        ),
        (
            "hot standby, auto failback",
            Shape::hot_standby(Failback::Auto),
        ),
        (
            "load share, manual failback",
            Shape::load_share(Failback::Manual),
        ),
        (
            "load share, auto failback",
            Shape::load_share(Failback::Auto),
        ),
        ("three nodes, three groups", Shape::three_nodes()),
        ("hot standby with tie-breakers", tiebreaker),
    ]
}
