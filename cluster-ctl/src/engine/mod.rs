//! The cluster state machine: who is alive, who holds which group, and every transition of the
//! seed manual, in one place.
//!
//! It is pure: no I/O and no clock reads. The daemon (and the simulator in the test suite) feed it
//! [`Event`]s with the current time and carry out the [`Action`]s it returns. Every node runs one
//! engine; engines talk only through the [`Report`] each node puts into its heartbeats.
//!
//! # Ownership protocol
//! - A group that runs nowhere is taken by the first *eligible* node of its failover policy
//!   (ready after the startup wait, not STARTING=DENY, its IPW monitors healthy), or by the node
//!   a holder handed it to.
//! - That node *claims* it under the next epoch and activates only when every peer it can hear
//!   has acknowledged the claim; peers acknowledge only while they hold nothing of the group and
//!   have no stronger claim. With no peer online (dead, or every interconnect lost) nobody has to
//!   acknowledge. So while any interconnect works, at most one node holds a group.
//! - A node gives a group up by revoking its data-path lease first, deactivating its resources in
//!   reverse order, and only then reporting it offline (with the node it hands it to): the next
//!   holder activates after that (deactivate before activate).
//! - Ownership in the data path is a lease bounded by acknowledgement (R-SPLIT-1). Every
//!   heartbeat carries its send time on the sender's clock and echoes the send time of the latest
//!   heartbeat received from the node it goes to. A holder may answer until (the send time its
//!   peers echoed, the oldest of them) + [`EngineConfig::lease`]; a peer declares the holder dead
//!   only after a full timeout of silence from its last receipt, which came after that send. So
//!   the lease has run out before any peer can take over by silence, whatever is lost, in which
//!   direction, or how late it arrives. A holder whose peers stopped acknowledging falls silent in
//!   the data path and resumes when acknowledgements come back (or when it is alone); it never
//!   answers on the strength of what it sent. The margin is documented on [`EngineConfig::lease`].
//! - When two holders meet (a partition healed), the one with the newer epoch keeps the group
//!   and re-announces it; the other deactivates.

pub mod arbitrary;
mod command;

use std::time::Duration;

pub use command::{Command, Refusal};

use crate::config::{Config, Failback, Recover, StartMode};

/// Index of a server in the configuration.
pub type NodeId = usize;
/// Index of a group (or flow-share instance, which follows the groups) in the configuration.
pub type GroupId = usize;

/// Time in nanoseconds on the caller's monotonic clock.
pub type Nanos = u64;

fn ns(d: Duration) -> Nanos {
    d.as_nanos() as Nanos
}

/// State of a group on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Offline,
    Activating,
    Online,
    Deactivating,
    /// Stopped after a failure that needs an operator.
    Error,
}

impl GroupState {
    /// Whether the node holds (or may be answering for) the group.
    pub fn holds(self) -> bool {
        matches!(self, Self::Activating | Self::Online | Self::Deactivating)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "OFFLINE",
            Self::Activating => "STARTING",
            Self::Online => "ONLINE",
            Self::Deactivating => "STOPPING",
            Self::Error => "ERROR",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::Offline => 0,
            Self::Activating => 1,
            Self::Online => 2,
            Self::Deactivating => 3,
            Self::Error => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Offline,
            1 => Self::Activating,
            2 => Self::Online,
            3 => Self::Deactivating,
            4 => Self::Error,
            _ => return None,
        })
    }
}

/// Why a node may not start a group (R-FO-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyCause {
    /// IPW target lost: cleared when the target is reachable again.
    Ipw,
    /// Monitored process died: cleared by `clpgrp -s` or a restart.
    Process,
    /// The group could not be activated here.
    Activation,
}

impl DenyCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipw => "IP watch target lost",
            Self::Process => "monitored process died",
            Self::Activation => "activation failed",
        }
    }
}

/// Environment of an EXEC start script (seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActReason {
    Normal,
    Failover,
}

impl ActReason {
    pub fn as_env(self) -> &'static str {
        match self {
            Self::Normal => "ACT_NORMAL",
            Self::Failover => "ACT_FAILOVER",
        }
    }
}

/// Environment of an EXEC stop script (seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeactReason {
    Normal,
    Illegal,
}

impl DeactReason {
    pub fn as_env(self) -> &'static str {
        match self {
            Self::Normal => "DEACT_NORMAL",
            Self::Illegal => "DEACT_ILLEGAL",
        }
    }
}

/// A claim to own a group under an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub epoch: u64,
    /// Made by an operator command: beats claims from the normal election.
    pub forced: bool,
}

/// A handover of a group to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub to: NodeId,
    /// Asked for by an operator: the target takes it even if it is unhealthy or denied.
    pub manual: bool,
    /// Given up because of a failure here: the target activates with ACT_FAILOVER.
    pub failover: bool,
}

/// One group as a node reports it to its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupReport {
    pub state: GroupState,
    /// Epoch of this node's (last) ownership.
    pub epoch: u64,
    pub deny: bool,
    /// Every IPW entry of the group is reachable from this node.
    pub healthy: bool,
    pub claim: Option<Claim>,
    /// Acknowledges the claim of `(node, epoch)`.
    pub ack: Option<(NodeId, u64)>,
    pub handoff: Option<Handoff>,
    /// Operator intent: `wanted` as of `admin_epoch` (the highest epoch wins cluster-wide).
    pub admin_epoch: u64,
    pub wanted: bool,
    /// Bit i set: resource step i is in error on this node (bit 31: any IPW entry).
    pub errors: u32,
}

/// A group a node holds, named so that a node with another configuration (whose group indices
/// mean something else) still knows it: [`group_id`] of the name, and the ownership epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldGroup {
    pub id: u32,
    pub epoch: u64,
}

/// A group's name as a number (FNV-1a, 32 bits) for [`HeldGroup`].
pub fn group_id(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// What a node tells its peers in every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Report {
    /// The sender's incarnation (its boot id, from the packet's header): a higher one is a new
    /// life of the sender, whose clock may have started over.
    pub incarnation: u64,
    /// When the sender sent it, on the sender's monotonic clock.
    pub sent_at: Nanos,
    /// The `sent_at` of the newest heartbeat the sender had received from the receiver (on the
    /// receiver's clock): what the receiver's lease may be bounded by.
    pub echo: Option<Nanos>,
    /// Finished the startup wait.
    pub ready: bool,
    /// Interconnects on which this node hears the receiver (bit i: link i).
    pub links_heard: u32,
    pub groups: Vec<GroupReport>,
    /// The groups the sender holds, by name: all a peer with another configuration can use.
    pub held: Vec<HeldGroup>,
}

/// One resource step of a group, in activation order (FIP, then PARP, then EXEC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    pub recover: Recover,
    pub retry: u32,
    /// A monitored EXEC: its death is a resource error while the group is online.
    pub monitored: bool,
}

/// The part of the configuration the engine needs for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub policy: Vec<NodeId>,
    pub failback: Failback,
    pub start: StartMode,
    pub steps: Vec<StepSpec>,
    /// Recovery action of each IPW entry.
    pub ipw: Vec<Recover>,
}

/// The engine's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub nodes: Vec<String>,
    pub me: NodeId,
    pub links: usize,
    pub interval: Duration,
    pub timeout: Duration,
    pub wait: Duration,
    pub tiebreakers: bool,
    pub groups: Vec<GroupSpec>,
}

impl EngineConfig {
    /// Builds the engine's view of a configuration for node `me`. Flow-share instances follow
    /// the groups as groups with no steps that every node may hold at once; they are not part
    /// of the election and so are not listed here.
    pub fn from_config(config: &Config, me: NodeId) -> Self {
        let groups = config
            .group
            .iter()
            .map(|g| {
                let mut steps = Vec::new();
                for (k, fip) in g.fip.iter().enumerate() {
                    steps.push(StepSpec {
                        name: format!("{}-fip{k}", g.name),
                        recover: fip.recover,
                        retry: fip.retry,
                        monitored: false,
                    });
                }
                for (k, parp) in g.parp.iter().enumerate() {
                    steps.push(StepSpec {
                        name: format!("{}-parp{k}", g.name),
                        recover: parp.recover,
                        retry: parp.retry,
                        monitored: false,
                    });
                }
                for (k, exec) in g.exec.iter().enumerate() {
                    steps.push(StepSpec {
                        name: format!("{}-exec{k}", g.name),
                        recover: exec.recover,
                        retry: exec.retry,
                        monitored: exec.monitor,
                    });
                }
                GroupSpec {
                    name: g.name.clone(),
                    policy: g
                        .policy
                        .iter()
                        .filter_map(|n| config.server_index(n))
                        .collect(),
                    failback: g.failback,
                    start: g.start,
                    steps,
                    ipw: g.ipw.iter().map(|i| i.recover).collect(),
                }
            })
            .collect();
        Self {
            nodes: config.server.iter().map(|s| s.name.clone()).collect(),
            me,
            links: config.server.get(me).map_or(0, |s| s.interconnect.len()),
            interval: config.cluster.heartbeat_interval,
            timeout: config.cluster.heartbeat_timeout,
            wait: config.cluster.wait_timeout,
            tiebreakers: !config.cluster.tiebreakers.is_empty(),
            groups,
        }
    }

    /// How long after sending an acknowledged heartbeat a holder may answer.
    ///
    /// A peer that received that heartbeat takes over by silence no earlier than one timeout
    /// after receiving it, on its own clock, so the lease is the timeout less a margin: 2 % of
    /// the timeout, at least 1 ms (but at most a quarter of the timeout). It covers monotonic
    /// clocks whose rates differ by up to 1 % (NTP slews at most 0.05 %); the XDP program
    /// compares the lease's end with its clock on every frame. Timer slack and scheduling in the
    /// daemons only make a takeover later and need no margin.
    pub fn lease(&self) -> Duration {
        self.timeout.saturating_sub(self.lease_margin())
    }

    /// See [`EngineConfig::lease`].
    pub fn lease_margin(&self) -> Duration {
        (self.timeout / 50)
            .max(Duration::from_millis(1))
            .min(self.timeout / 4)
    }

    /// How long a node that has heard no peer waits before it takes groups alone: the startup
    /// wait, but at least two timeouts. A running holder that hears this node only from its
    /// first heartbeat on keeps a lease from before for at most one more lease, so a starting
    /// node that cannot hear the holder must not take over sooner.
    pub fn alone_wait(&self) -> Duration {
        self.wait.max(2 * self.timeout)
    }
}

/// Inputs of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Time passed (the daemon ticks every interval, just before sending heartbeats).
    Tick,
    /// A peer deadline ([`Engine::next_deadline`]) passed: check liveness now, between ticks.
    Timer,
    /// An authenticated heartbeat from a peer on one interconnect.
    Heartbeat {
        from: NodeId,
        link: usize,
        report: Report,
    },
    /// A peer with a different configuration: alive, but its report cannot be trusted (only
    /// its `sent_at` and `echo` are used).
    Mismatch {
        from: NodeId,
        link: usize,
        report: Report,
    },
    /// A peer stopped cleanly after giving up its groups.
    Leaving { from: NodeId },
    /// The verdict of one IPW entry (after the monitor's own retries).
    Ipw {
        group: GroupId,
        entry: usize,
        ok: bool,
    },
    /// An activation or deactivation step finished.
    StepDone {
        group: GroupId,
        step: usize,
        ok: bool,
    },
    /// A monitored resource of an online group failed.
    StepFailed { group: GroupId, step: usize },
    /// Result of the tie-breaker probe (only asked for while isolated).
    Tiebreaker { reachable: bool },
    /// The data path refused to grant or extend the lease of a group held here: it does not
    /// answer for the group, whatever the engine thinks.
    LeaseRefused { group: GroupId },
    /// SIGTERM: stop every group in order, hand over, then leave.
    Shutdown,
}

/// Outputs of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Take ownership in the data path, answering until `until` (same clock as the events).
    GrantLease {
        group: GroupId,
        epoch: u64,
        until: Nanos,
    },
    /// Move the end of the lease to `until` (later than before; also after it had lapsed: the
    /// engine resumes only on fresh acknowledgements).
    RenewLease {
        group: GroupId,
        epoch: u64,
        until: Nanos,
    },
    /// Stop answering at once.
    RevokeLease { group: GroupId, epoch: u64 },
    /// Activate one resource step; answer with [`Event::StepDone`].
    Activate {
        group: GroupId,
        step: usize,
        reason: ActReason,
    },
    /// Deactivate one resource step; answer with [`Event::StepDone`].
    Deactivate {
        group: GroupId,
        step: usize,
        reason: DeactReason,
    },
    /// Announce the group again (gratuitous ARP), e.g. after a partition healed.
    Reannounce { group: GroupId },
    /// Send a heartbeat now instead of at the next tick.
    SendNow,
    /// Probe the tie-breakers and answer with [`Event::Tiebreaker`].
    ProbeTiebreaker,
    /// Every group is stopped: send "leaving" and exit.
    Exit,
    /// Something an operator should hear about (log, mail).
    Notify(Notice),
}

/// Why a group moved, for logs and mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The node holding it went offline (or left).
    PeerDown(NodeId),
    /// A resource failed (step index, or IPW entry with `ipw`).
    Resource { step: usize, ipw: bool },
    /// Normal start at startup.
    Startup,
    /// Handed over by another node (after a failure there when `failover`).
    Handoff { from: NodeId, failover: bool },
    /// Operator command.
    Command,
    /// Automatic failback to the primary.
    Failback,
    /// The node shuts down.
    Shutdown,
    /// A partition healed and the other holder had the newer epoch.
    SplitBrain,
    /// The data-path lease had run out (no acknowledgements, or the process was frozen) and
    /// another node took the group meanwhile.
    LeaseLost,
    /// The node that ran it stopped running it without handing it over, yet stayed online:
    /// its lease ran out while it was starved, or it gave the group up after a failure.
    HolderStopped(NodeId),
    /// All interconnects lost and no tie-breaker reachable.
    Isolated,
    /// The data path refused this node's lease (see [`Event::LeaseRefused`]).
    LeaseRefused,
}

/// Events for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    GroupOnline {
        group: GroupId,
        reason: ActReason,
        cause: Cause,
    },
    GroupOffline {
        group: GroupId,
        reason: DeactReason,
        cause: Cause,
    },
    GroupError {
        group: GroupId,
        cause: Cause,
    },
    StepFailed {
        group: GroupId,
        step: usize,
        retry: u32,
        of: u32,
    },
    DenySet {
        group: GroupId,
        cause: DenyCause,
    },
    DenyCleared {
        group: GroupId,
    },
    FailoverImpossible {
        group: GroupId,
    },
    PeerOnline {
        peer: NodeId,
    },
    PeerOffline {
        peer: NodeId,
        /// How long nothing was heard from it on any interconnect; `None` when it said it left.
        silent_for: Option<Nanos>,
    },
    LinkDown {
        peer: NodeId,
        link: usize,
    },
    LinkUp {
        peer: NodeId,
        link: usize,
    },
    ConfigMismatch {
        peer: NodeId,
    },
    /// The lease of a group held here ran out because the peers stopped acknowledging this
    /// node's heartbeats (or this process stalled): the data path does not answer for it.
    LeaseLapsed {
        group: GroupId,
    },
    /// This node's own loop ran nothing for `gap` (at least half the timeout): the process or
    /// the machine was stopped or starved, and its heartbeats with it.
    Paused {
        gap: Nanos,
    },
    /// Acknowledgements came back (or every peer is gone): the data path answers again.
    LeaseResumed {
        group: GroupId,
        /// How long the data path did not answer.
        after: Nanos,
    },
}

/// How long a peer may stay silent before it (or one of its links) is declared lost: the
/// timeout, or twice the timeout for a silence that began while this node was settling after a
/// stall of its own (R-HB-4). Right after a stall the whole machine is settling: deferred kernel
/// work, peers stopped by the same cause still catching up. A later declaration is always safe
/// (a holder bounds its own lease by acknowledgements); a false one moves groups for nothing.
#[derive(Clone, Copy, Debug)]
struct Silence {
    timeout: Nanos,
    settling_until: Nanos,
}

impl Silence {
    fn allowed(self, heard: Nanos) -> Nanos {
        if heard < self.settling_until {
            2 * self.timeout
        } else {
            self.timeout
        }
    }
}

#[derive(Clone, Debug)]
struct Peer {
    /// Last heartbeat per link.
    heard: Vec<Option<Nanos>>,
    /// Per link: reported up (heard within the timeout at the last check).
    up: Vec<bool>,
    report: Option<Report>,
    online: bool,
    mismatch: bool,
    left: bool,
    /// When the peer came online and not yet ready (startup wait bound).
    unready_since: Option<Nanos>,
    /// The peer's incarnation as last heard.
    incarnation: u64,
    /// What a peer with another configuration holds (its report is not used otherwise).
    held: Vec<HeldGroup>,
    /// `sent_at` of the newest heartbeat from the peer (its clock): echoed back to it.
    newest_sent_at: Option<Nanos>,
    /// The echo in that heartbeat: the send time (this node's clock) of the newest heartbeat of
    /// this node the peer had received. Kept together with `report`, from the same packet.
    echo: Option<Nanos>,
}

impl Peer {
    fn new(links: usize) -> Self {
        Self {
            heard: vec![None; links],
            up: vec![false; links],
            report: None,
            online: false,
            mismatch: false,
            left: false,
            unready_since: None,
            incarnation: 0,
            held: Vec::new(),
            newest_sent_at: None,
            echo: None,
        }
    }

    /// Forgets what the peer said: it went offline or left (a peer that comes back starts a
    /// new exchange; its clock may even have started over).
    fn forget(&mut self) {
        self.online = false;
        self.forget_exchange();
    }

    fn forget_exchange(&mut self) {
        self.report = None;
        self.held.clear();
        self.newest_sent_at = None;
        self.echo = None;
    }

    fn link_ok(&self, link: usize, now: Nanos, silence: Silence) -> bool {
        self.heard
            .get(link)
            .copied()
            .flatten()
            .is_some_and(|t| now.saturating_sub(t) < silence.allowed(t))
    }

    fn last_heard(&self) -> Option<Nanos> {
        self.heard.iter().flatten().copied().max()
    }
}

/// What happens when a deactivation completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// Offline; hand to this node if any.
    Offline(Option<Handoff>),
    /// Error state.
    Error,
}

#[derive(Clone, Debug)]
struct LocalGroup {
    state: GroupState,
    epoch: u64,
    /// Steps activated so far (activation) or still active (deactivation).
    done: usize,
    /// The activation step whose answer is awaited. A deactivation that starts meanwhile waits
    /// for it and undoes it too if it took effect: nothing may be left half-active (an address
    /// added after the group was already reported down).
    activating: Option<usize>,
    act_reason: ActReason,
    act_cause: Cause,
    deact_reason: DeactReason,
    deact_cause: Cause,
    then: Then,
    deny: Option<DenyCause>,
    ipw_ok: Vec<bool>,
    retries: Vec<u32>,
    step_errors: u32,
    claim: Option<(Claim, Nanos)>,
    ack: Option<(NodeId, u64)>,
    handoff: Option<(Handoff, Nanos)>,
    admin_epoch: u64,
    wanted: bool,
    /// Highest ownership epoch seen anywhere.
    max_epoch: u64,
    lease_until: Nanos,
    /// The lease ran out while the group is held (reported once; see [`Notice::LeaseLapsed`]).
    lapsed: bool,
    /// The lease was last set on the strength of this node being alone (no peer heard).
    alone_lease: bool,
    /// Last node known to hold the group (for the failover cause).
    last_holder: Option<NodeId>,
    /// Environment of the last start or stop here.
    environment: &'static str,
    /// Another node held the group too (while online here): re-announce when it gives up.
    contested: bool,
    /// An IPW entry failed here and no other node could take the group: said once.
    failover_impossible: bool,
    /// IPW entries that had already failed when an operator started or moved the group here:
    /// the operator's call, not a reason to move it away again, until they recover.
    ipw_accepted: Vec<bool>,
}

/// The state machine of one node.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    started: Nanos,
    ready: bool,
    peers: Vec<Peer>,
    groups: Vec<LocalGroup>,
    tiebreaker_ok: Option<bool>,
    shutting_down: bool,
    exited: bool,
    /// Time of the event being handled.
    now: Nanos,
    /// Time of the last event handled, to notice that this process did not run for a while.
    last_run: Nanos,
    /// Time of the last tick: a heartbeat to every peer follows every tick.
    last_tick: Nanos,
    /// After a stall, no group is taken without a peer's acknowledgement before this time:
    /// the silence may be unread heartbeats.
    cautious_until: Nanos,
    /// After a stall of its own, a silence that begins before this time must last twice the
    /// timeout (see [`Silence`]).
    settling_until: Nanos,
}

/// A snapshot for status screens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub me: NodeId,
    pub ready: bool,
    /// Per node: online (always true for this node).
    pub online: Vec<bool>,
    /// Per node, per link: this node hears it (for this node: whether peers hear us, from
    /// their reports).
    pub links: Vec<Vec<bool>>,
    /// `links_heard` as each online peer reports it.
    pub peer_links: Vec<Option<u32>>,
    pub mismatch: Vec<bool>,
    pub groups: Vec<GroupStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// Per node: its report (this node's own for `me`), `None` when unknown (offline).
    pub nodes: Vec<Option<GroupReport>>,
    /// Retries used per step on this node.
    pub retries: Vec<u32>,
    /// The environment of the last start or stop here (ACT_NORMAL, …, DEACT_ILLEGAL).
    pub environment: &'static str,
}

impl Engine {
    /// A new engine started at `now` (a restart is a new engine: deny flags are cleared, as the
    /// seed says).
    pub fn new(cfg: EngineConfig, now: Nanos) -> Self {
        let groups = cfg
            .groups
            .iter()
            .map(|g| LocalGroup {
                state: GroupState::Offline,
                epoch: 0,
                done: 0,
                act_reason: ActReason::Normal,
                act_cause: Cause::Startup,
                deact_reason: DeactReason::Normal,
                deact_cause: Cause::Command,
                then: Then::Offline(None),
                deny: None,
                ipw_ok: vec![true; g.ipw.len()],
                retries: vec![0; g.steps.len()],
                step_errors: 0,
                activating: None,
                claim: None,
                ack: None,
                handoff: None,
                admin_epoch: 0,
                wanted: g.start == StartMode::Auto,
                max_epoch: 0,
                lease_until: 0,
                lapsed: false,
                alone_lease: false,
                last_holder: None,
                environment: ActReason::Normal.as_env(),
                contested: false,
                failover_impossible: false,
                ipw_accepted: vec![false; g.ipw.len()],
            })
            .collect();
        let peers = (0..cfg.nodes.len()).map(|_| Peer::new(cfg.links)).collect();
        // A new process is a stall of the node: what it held (adopted from the pins) is not
        // extended alone, nor is anything taken, while a peer is unheard for two timeouts.
        let caution = now + 2 * ns(cfg.timeout);
        Self {
            ready: cfg.nodes.len() <= 1,
            cfg,
            started: now,
            peers,
            groups,
            tiebreaker_ok: None,
            shutting_down: false,
            exited: false,
            now,
            last_run: now,
            last_tick: now,
            cautious_until: caution,
            settling_until: 0,
        }
    }

    /// Adopts a group that a previous process of this node held and whose pinned lease is still
    /// valid until `lease_until` (a controller restart within the lease: no flap).
    pub fn adopt(
        &mut self,
        group: GroupId,
        epoch: u64,
        lease_until: Nanos,
        placed_by_operator: bool,
    ) {
        let steps = self.cfg.groups[group].steps.len();
        let local = &mut self.groups[group];
        // An operator's placement outlives a restart of the controller (no failback then).
        local.act_cause = if placed_by_operator {
            Cause::Command
        } else {
            Cause::Startup
        };
        local.state = GroupState::Online;
        local.done = steps;
        local.epoch = epoch;
        local.max_epoch = local.max_epoch.max(epoch);
        local.lease_until = lease_until;
        local.wanted = true;
    }

    /// Makes the next claim of `group` use an epoch above `epoch` (the last epoch pinned in the
    /// data path), so epochs keep increasing across restarts.
    pub fn seed_epoch(&mut self, group: GroupId, epoch: u64) {
        let local = &mut self.groups[group];
        local.max_epoch = local.max_epoch.max(epoch);
    }

    /// Whether this node is past its start-up wait and past the caution that follows a stall
    /// of its own (by then the peers have heard it again).
    pub fn rejoined(&self, now: Nanos) -> bool {
        self.ready && now >= self.cautious_until
    }

    /// Whether the group runs here because an operator moved or started it here.
    pub fn placed_by_operator(&self, group: GroupId) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| g.act_cause == Cause::Command)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn me(&self) -> NodeId {
        self.cfg.me
    }

    fn timeout(&self) -> Nanos {
        ns(self.cfg.timeout)
    }

    /// Until when a silence that begins must last two timeouts (after a stall of this node's
    /// own, R-HB-4); 0 if it never stalled.
    pub fn settling_until(&self) -> Nanos {
        self.settling_until
    }

    fn silence(&self) -> Silence {
        Silence {
            timeout: self.timeout(),
            settling_until: self.settling_until,
        }
    }

    /// This node's report, sent in every heartbeat.
    pub fn report(&self) -> Report {
        Report {
            // The transport puts its own into the header.
            incarnation: 0,
            sent_at: self.now,
            echo: None,
            ready: self.ready,
            links_heard: 0,
            groups: self
                .groups
                .iter()
                .map(|g| GroupReport {
                    state: g.state,
                    epoch: g.epoch,
                    deny: g.deny.is_some(),
                    healthy: g.ipw_ok.iter().all(|ok| *ok),
                    claim: g.claim.map(|(c, _)| c),
                    ack: g.ack,
                    handoff: g.handoff.map(|(h, _)| h),
                    admin_epoch: g.admin_epoch,
                    wanted: g.wanted,
                    errors: g.step_errors
                        | if g.ipw_ok.iter().all(|ok| *ok) {
                            0
                        } else {
                            1 << 31
                        },
                })
                .collect(),
            held: self
                .groups
                .iter()
                .zip(&self.cfg.groups)
                .filter(|(g, _)| g.state.holds())
                .map(|(g, spec)| HeldGroup {
                    id: group_id(&spec.name),
                    epoch: g.epoch,
                })
                .collect(),
        }
    }

    /// The report for one peer, sent at `now`: with the links on which this node hears that
    /// peer and the echo of its newest heartbeat.
    pub fn report_for(&self, peer: NodeId, now: Nanos) -> Report {
        let mut report = self.report();
        report.sent_at = now;
        if let Some(p) = self.peers.get(peer) {
            report.echo = p.newest_sent_at;
            for link in 0..self.cfg.links.min(32) {
                if p.link_ok(link, now, self.silence()) {
                    report.links_heard |= 1 << link;
                }
            }
        }
        report
    }

    /// Groups whose lease this node must keep renewing, with their epochs.
    pub fn held(&self) -> Vec<(GroupId, u64)> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| matches!(g.state, GroupState::Activating | GroupState::Online))
            .map(|(i, g)| (i, g.epoch))
            .collect()
    }

    /// The state of a group on this node.
    pub fn group_state(&self, group: GroupId) -> GroupState {
        self.groups[group].state
    }

    pub fn deny(&self, group: GroupId) -> Option<DenyCause> {
        self.groups[group].deny
    }

    pub fn is_online(&self, peer: NodeId) -> bool {
        peer == self.me() || self.peers.get(peer).is_some_and(|p| p.online)
    }

    /// Whether `node` gets flow-share buckets in this node's view: this node once its startup
    /// wait is done (it has heard every peer, or waited for them), a peer while it is online,
    /// runs the same configuration (a different one may hash differently) and reports its
    /// startup wait done — the same moment, seen from both sides, so that no bucket is dealt to
    /// a node that does not pass it yet. (After a stall of this node its flow-share lease has
    /// run out and is taken anew only once it has rejoined, see `FlowShares::renew`.)
    ///
    /// While a peer runs another configuration the two cannot agree on the hash: the node with
    /// the lower index passes all flow-shared traffic and the other none (no flow twice).
    pub fn shares_flows(&self, node: NodeId) -> bool {
        if node == self.me() {
            let defers = self.peers[..self.me()]
                .iter()
                .any(|p| p.online && p.mismatch);
            return self.ready && !defers;
        }
        self.peers
            .get(node)
            .is_some_and(|p| p.online && !p.mismatch && p.report.as_ref().is_some_and(|r| r.ready))
    }

    pub fn exited(&self) -> bool {
        self.exited
    }

    /// A snapshot for `clpstat`.
    pub fn status(&self, now: Nanos) -> Status {
        let me = self.me();
        let nodes = self.cfg.nodes.len();
        let own = self.report();
        Status {
            me,
            ready: self.ready,
            online: (0..nodes).map(|n| self.is_online(n)).collect(),
            links: (0..nodes)
                .map(|n| {
                    (0..self.cfg.links)
                        .map(|l| n == me || self.peers[n].link_ok(l, now, self.silence()))
                        .collect()
                })
                .collect(),
            peer_links: (0..nodes)
                .map(|n| {
                    (n != me && self.peers[n].online)
                        .then(|| self.peers[n].report.as_ref().map(|r| r.links_heard))
                        .flatten()
                })
                .collect(),
            mismatch: self.peers.iter().map(|p| p.mismatch).collect(),
            groups: (0..self.groups.len())
                .map(|g| GroupStatus {
                    nodes: (0..nodes)
                        .map(|n| {
                            if n == me {
                                Some(own.groups[g])
                            } else {
                                self.fresh_report(n).map(|r| r.groups[g])
                            }
                        })
                        .collect(),
                    retries: self.groups[g].retries.clone(),
                    environment: self.groups[g].environment,
                })
                .collect(),
        }
    }

    /// Whether every index in a peer's report names something that exists: reports come off
    /// the wire, and an authenticated peer is not thereby a correct one.
    fn valid_report(&self, report: &Report) -> bool {
        let nodes = self.cfg.nodes.len();
        report.groups.len() == self.groups.len()
            && report.groups.iter().all(|g| {
                g.handoff.is_none_or(|h| h.to < nodes) && g.ack.is_none_or(|(n, _)| n < nodes)
            })
    }

    /// Whether a local event names an existing group, step or IPW entry.
    fn valid_local(&self, event: &Event) -> bool {
        let spec = |g: usize| self.cfg.groups.get(g);
        match *event {
            Event::Ipw { group, entry, .. } => spec(group).is_some_and(|g| entry < g.ipw.len()),
            Event::StepDone { group, step, .. } | Event::StepFailed { group, step } => {
                spec(group).is_some_and(|g| step < g.steps.len())
            }
            Event::LeaseRefused { group } => spec(group).is_some(),
            _ => true,
        }
    }

    /// Feeds one event at time `now`; returns what to do.
    pub fn handle(&mut self, now: Nanos, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.exited || !self.valid_local(&event) {
            return out;
        }
        self.now = self.now.max(now);
        self.notice_stall(now, &mut out);
        match event {
            Event::Tick => {
                self.last_tick = now;
                self.tick(now, &mut out);
            }
            Event::Timer => self.expire_peers(now, &mut out),
            Event::Heartbeat { from, link, report } => {
                self.heard(now, from, link, &mut out);
                if self.is_newest(from, &report) && self.valid_report(&report) {
                    let peer = &mut self.peers[from];
                    peer.mismatch = false;
                    if report.ready {
                        peer.unready_since = None;
                    } else if peer.unready_since.is_none() {
                        peer.unready_since = Some(now);
                    }
                    peer.newest_sent_at = Some(report.sent_at);
                    peer.echo = report.echo.filter(|echo| *echo <= now);
                    peer.report = Some(report);
                }
            }
            Event::Mismatch { from, link, report } => {
                self.heard(now, from, link, &mut out);
                if self.is_newest(from, &report) {
                    let peer = &mut self.peers[from];
                    peer.newest_sent_at = Some(report.sent_at);
                    peer.echo = report.echo.filter(|echo| *echo <= now);
                    peer.held = report.held;
                    if !peer.mismatch {
                        peer.mismatch = true;
                        peer.report = None;
                        out.push(Action::Notify(Notice::ConfigMismatch { peer: from }));
                    }
                }
            }
            Event::Leaving { from } => {
                if from != self.me() && from < self.peers.len() {
                    let peer = &mut self.peers[from];
                    peer.left = true;
                    peer.heard.iter_mut().for_each(|h| *h = None);
                    peer.up.iter_mut().for_each(|u| *u = false);
                    let was_online = peer.online;
                    peer.forget();
                    if was_online {
                        out.push(Action::Notify(Notice::PeerOffline {
                            peer: from,
                            silent_for: None,
                        }));
                    }
                }
            }
            Event::Ipw { group, entry, ok } => self.ipw(group, entry, ok, &mut out),
            Event::StepDone { group, step, ok } => self.step_done(now, group, step, ok, &mut out),
            Event::StepFailed { group, step } => self.step_failed(now, group, step, &mut out),
            Event::Tiebreaker { reachable } => self.tiebreaker_ok = Some(reachable),
            Event::LeaseRefused { group } => self.lease_refused(group, &mut out),
            Event::Shutdown => {
                self.shutting_down = true;
                for g in 0..self.groups.len() {
                    let handoff = self.next_eligible(g, false).map(|to| Handoff {
                        to,
                        manual: false,
                        failover: false,
                    });
                    match self.groups[g].state {
                        GroupState::Online | GroupState::Activating => {
                            self.deactivate(
                                g,
                                DeactReason::Normal,
                                Cause::Shutdown,
                                Then::Offline(handoff),
                                &mut out,
                            );
                        }
                        _ => self.groups[g].claim = None,
                    }
                }
            }
        }
        self.reconcile(now, &mut out);
        self.keep_leases(now, &mut out);
        out
    }

    /// Whether `report` from `from` is the newest heard from that peer: a heartbeat overtaken
    /// by a newer one (another link, a delay) still proves the peer alive, but its report and
    /// echo are older than what is known and are not used.
    fn is_newest(&mut self, from: NodeId, report: &Report) -> bool {
        if from == self.me() {
            return false;
        }
        let Some(peer) = self.peers.get_mut(from) else {
            return false;
        };
        // A new life of the peer (restarted, perhaps rebooted within a timeout: its clock
        // started over) begins a new exchange; an older life's heartbeat says nothing.
        if report.incarnation > peer.incarnation {
            peer.incarnation = report.incarnation;
            peer.forget_exchange();
        } else if report.incarnation < peer.incarnation {
            return false;
        }
        peer.online
            && peer
                .newest_sent_at
                .is_none_or(|newest| report.sent_at >= newest)
    }

    /// After a stall of this process (frozen, starved) the peers' heartbeats are still unread:
    /// what looks like silence is its own (R-HB-4). Whatever event comes first after it, each
    /// online peer gets a full timeout from now to be heard before it is declared dead (more
    /// than the one interval R-HB-4 asks: after a stall of the whole machine the peer's daemon
    /// resumes at the same time and needs a few intervals to be scheduled, read its sockets and
    /// send; a dead peer is declared one timeout later than it could have been). And for two
    /// timeouts no group is taken or resumed alone, as at start (see
    /// [`EngineConfig::alone_wait`]): a peer that stopped hearing this node during the stall may
    /// hold a group now, with a lease of its own that ends one lease after it hears this node.
    fn notice_stall(&mut self, now: Nanos, out: &mut Vec<Action>) {
        let timeout = self.timeout();
        let interval = ns(self.cfg.interval);
        let gap = now.saturating_sub(self.last_run);
        if gap > 2 * interval {
            self.cautious_until = self.cautious_until.max(now + 2 * timeout);
            self.settling_until = self.settling_until.max(now + 2 * timeout);
            for peer in self.peers.iter_mut().filter(|p| p.online) {
                for heard in peer.heard.iter_mut().flatten() {
                    *heard = (*heard).max(now);
                }
            }
            // Long enough for the peers to have missed this node's heartbeats: the operator
            // is told (as corosync does), since the peers may have declared it dead.
            if gap >= timeout / 2 {
                out.push(Action::Notify(Notice::Paused { gap }));
            }
        }
        self.last_run = self.last_run.max(now);
    }

    /// Until when this node may answer for `g` now (R-SPLIT-1): the oldest send time that the
    /// online peers echoed, plus the lease. `None` while an online peer has echoed nothing yet or
    /// reports holding the group itself (in the same packet as its echo: it may have taken the
    /// group before it heard the heartbeat it echoes). Alone, a node bounds its lease by its own
    /// last heartbeat (sent at every tick): a peer that hears it waits a timeout from then
    /// before it takes over, one that does not hear it either is partitioned from it. Not right
    /// after a stall of its own, though (see [`Engine::notice_stall`]).
    ///
    /// The flag says whether the bound rests on this node being alone.
    fn lease_bound(&self, now: Nanos, g: GroupId) -> Option<(Nanos, bool)> {
        let lease = ns(self.cfg.lease());
        // Right after a stall of its own, a peer this node does not hear may have taken the
        // group while this node was not sending (see [`Engine::notice_stall`]).
        if now < self.cautious_until && self.someone_unheard() {
            return None;
        }
        let mut oldest: Option<Nanos> = None;
        for (n, peer) in self.peers.iter().enumerate() {
            // A node outside the group's policy never takes it by silence (only by a handoff,
            // which waits for this node to give it up): its acknowledgements do not matter.
            if n == self.me() || !peer.online || !self.cfg.groups[g].policy.contains(&n) {
                continue;
            }
            let echo = peer.echo?;
            // A peer that holds the group itself (known by name when its configuration differs)
            // must give it up first.
            let holds = if peer.mismatch {
                let id = group_id(&self.cfg.groups[g].name);
                peer.held.iter().any(|h| h.id == id)
            } else {
                peer.report
                    .as_ref()
                    .and_then(|r| r.groups.get(g))
                    .is_some_and(|r| r.state.holds())
            };
            if holds {
                return None;
            }
            oldest = Some(oldest.map_or(echo, |o| o.min(echo)));
        }
        match oldest {
            Some(echo) => Some((echo + lease, false)),
            None if now >= self.cautious_until => Some((self.last_tick + lease, true)),
            None => None,
        }
    }

    /// Moves the lease of every group held here as far as the acknowledgements allow, and tells
    /// operators when it lapsed or resumed.
    fn keep_leases(&mut self, now: Nanos, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            if !matches!(
                self.groups[g].state,
                GroupState::Activating | GroupState::Online
            ) {
                continue;
            }
            let bound = self.lease_bound(now, g);
            let local = &mut self.groups[g];
            // A lease that rested on this node being alone ends at once when that changes
            // without an acknowledgement: a peer that appeared and has not heard this node may
            // be taking the group over by silence right now.
            if bound.is_none() && local.alone_lease && local.lease_until > now {
                local.lease_until = now;
                local.alone_lease = false;
                out.push(Action::RenewLease {
                    group: g,
                    epoch: local.epoch,
                    until: now,
                });
            }
            if let Some((until, alone)) = bound
                && until > local.lease_until
                && until > now
            {
                local.alone_lease = alone;
                if local.lapsed {
                    local.lapsed = false;
                    out.push(Action::Notify(Notice::LeaseResumed {
                        group: g,
                        after: now.saturating_sub(local.lease_until),
                    }));
                }
                local.lease_until = until;
                out.push(Action::RenewLease {
                    group: g,
                    epoch: local.epoch,
                    until,
                });
            }
            if now >= local.lease_until && !local.lapsed {
                local.lapsed = true;
                out.push(Action::Notify(Notice::LeaseLapsed { group: g }));
            }
        }
    }

    fn heard(&mut self, now: Nanos, from: NodeId, link: usize, out: &mut Vec<Action>) {
        if from == self.me() || from >= self.peers.len() {
            return;
        }
        let peer = &mut self.peers[from];
        peer.left = false;
        if link < peer.heard.len() {
            if !peer.up[link] {
                peer.up[link] = true;
                if peer.heard[link].is_some() {
                    out.push(Action::Notify(Notice::LinkUp { peer: from, link }));
                }
            }
            peer.heard[link] = Some(now);
        }
        if !peer.online {
            peer.online = true;
            peer.unready_since = None;
            out.push(Action::Notify(Notice::PeerOnline { peer: from }));
            out.push(Action::SendNow);
            // The peer may have followed another holder while apart: announce what runs here.
            for (g, group) in self.groups.iter().enumerate() {
                if group.state == GroupState::Online {
                    out.push(Action::Reannounce { group: g });
                }
            }
        }
    }

    fn tick(&mut self, now: Nanos, out: &mut Vec<Action>) {
        self.expire_peers(now, out);
        if !self.ready {
            let all_seen = self
                .peers
                .iter()
                .enumerate()
                .all(|(n, p)| n == self.cfg.me || p.online);
            if all_seen || now.saturating_sub(self.started) >= ns(self.cfg.alone_wait()) {
                self.ready = true;
                out.push(Action::SendNow);
            }
        }
        if self.isolated() && self.cfg.tiebreakers {
            out.push(Action::ProbeTiebreaker);
        } else {
            self.tiebreaker_ok = None;
        }
    }

    /// Declares links and peers whose heartbeats stopped for the timeout.
    fn expire_peers(&mut self, now: Nanos, out: &mut Vec<Action>) {
        let silence = self.silence();
        for (n, peer) in self.peers.iter_mut().enumerate() {
            if n == self.cfg.me || !peer.online {
                continue;
            }
            for link in 0..peer.heard.len() {
                if peer.up[link] && !peer.link_ok(link, now, silence) {
                    peer.up[link] = false;
                    out.push(Action::Notify(Notice::LinkDown { peer: n, link }));
                }
            }
            let last_heard = peer.last_heard();
            let silent_for = last_heard.map(|t| now.saturating_sub(t));
            if last_heard.is_none_or(|t| now.saturating_sub(t) >= silence.allowed(t)) {
                peer.forget();
                out.push(Action::Notify(Notice::PeerOffline {
                    peer: n,
                    silent_for,
                }));
            }
        }
    }

    /// When the next peer would time out, so the caller can wake up exactly then.
    pub fn next_deadline(&self) -> Option<Nanos> {
        let silence = self.silence();
        self.peers
            .iter()
            .enumerate()
            .filter(|(n, p)| *n != self.cfg.me && p.online)
            .flat_map(|(_, p)| {
                p.heard
                    .iter()
                    .zip(&p.up)
                    .filter(|(_, up)| **up)
                    .filter_map(|(h, _)| h.map(|t| t + silence.allowed(t)))
            })
            .min()
    }

    /// Some peer is not heard (dead, or cut off in one direction or both).
    fn someone_unheard(&self) -> bool {
        self.peers
            .iter()
            .enumerate()
            .any(|(n, p)| n != self.cfg.me && !p.online)
    }

    /// No peer can be heard (all dead, or every interconnect lost).
    fn isolated(&self) -> bool {
        self.cfg.nodes.len() > 1
            && self
                .peers
                .iter()
                .enumerate()
                .all(|(n, p)| n == self.cfg.me || !p.online)
    }

    /// A report of a peer that is online now.
    fn fresh_report(&self, peer: NodeId) -> Option<&Report> {
        let p = self.peers.get(peer)?;
        if p.online && !p.mismatch {
            p.report.as_ref()
        } else {
            None
        }
    }

    /// Whether `node` may take `group` by election, in this node's view.
    fn eligible(&self, node: NodeId, group: GroupId) -> bool {
        if node == self.me() {
            let g = &self.groups[group];
            // Cut off from every peer, a node runs the group despite STARTING=DENY (it must
            // assume the peer is dead); a failed activation here still rules it out.
            let deny_ok = match g.deny {
                None => true,
                Some(DenyCause::Activation) => false,
                Some(_) => self.isolated(),
            };
            self.ready
                && g.state != GroupState::Error
                && !self.shutting_down
                && deny_ok
                && g.ipw_ok.iter().all(|ok| *ok)
                && self.tiebreaker_allows()
        } else {
            self.fresh_report(node).is_some_and(|r| {
                let g = r.groups[group];
                r.ready && !g.deny && g.healthy && g.state != GroupState::Error
            })
        }
    }

    fn tiebreaker_allows(&self) -> bool {
        !(self.cfg.tiebreakers && self.isolated() && self.tiebreaker_ok != Some(true))
    }

    /// The first eligible node of the policy (optionally not this one).
    fn next_eligible(&self, group: GroupId, include_me: bool) -> Option<NodeId> {
        self.cfg.groups[group]
            .policy
            .iter()
            .copied()
            .filter(|n| include_me || *n != self.me())
            .find(|n| self.eligible(*n, group))
    }

    fn priority(&self, group: GroupId, node: NodeId) -> usize {
        self.cfg.groups[group]
            .policy
            .iter()
            .position(|n| *n == node)
            .unwrap_or(usize::MAX)
    }

    /// Whether claim `a` of node `na` beats claim `b` of node `nb`.
    fn beats(&self, group: GroupId, (na, a): (NodeId, Claim), (nb, b): (NodeId, Claim)) -> bool {
        (a.forced, std::cmp::Reverse(self.priority(group, na)))
            > (b.forced, std::cmp::Reverse(self.priority(group, nb)))
    }

    fn reconcile(&mut self, now: Nanos, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            self.reconcile_group(now, g, out);
        }
        if self.shutting_down && !self.exited && self.groups.iter().all(|g| !g.state.holds()) {
            self.exited = true;
            out.push(Action::Exit);
        }
    }

    fn reconcile_group(&mut self, now: Nanos, g: GroupId, out: &mut Vec<Action>) {
        let me = self.me();
        let timeout = self.timeout();
        // Operator intent and epochs travel with the reports.
        let peers: Vec<(NodeId, GroupReport)> = (0..self.peers.len())
            .filter(|n| *n != me)
            .filter_map(|n| self.fresh_report(n).map(|r| (n, r.groups[g])))
            .collect();
        for (_, r) in &peers {
            let local = &mut self.groups[g];
            if r.admin_epoch > local.admin_epoch {
                local.admin_epoch = r.admin_epoch;
                local.wanted = r.wanted;
            }
            local.max_epoch = local
                .max_epoch
                .max(r.epoch)
                .max(r.claim.map_or(0, |c| c.epoch));
        }
        let holders: Vec<(NodeId, GroupReport)> = peers
            .iter()
            .copied()
            .filter(|(_, r)| r.state.holds())
            .collect();
        if let Some((n, _)) = holders.first() {
            self.groups[g].last_holder = Some(*n);
        }

        // Deny for an IPW cause clears when the targets are reachable again.
        if self.groups[g].deny == Some(DenyCause::Ipw) && self.groups[g].ipw_ok.iter().all(|ok| *ok)
        {
            self.groups[g].deny = None;
            out.push(Action::Notify(Notice::DenyCleared { group: g }));
            out.push(Action::SendNow);
        }

        let state = self.groups[g].state;
        if state.holds() {
            self.groups[g].claim = None;
            self.groups[g].ack = None;
            self.groups[g].last_holder = Some(me);
            if state == GroupState::Online {
                self.holder_duties(now, g, &holders, out);
            }
            return;
        }

        // A handoff this node published lapses once the target holds it (or after a timeout).
        if let Some((handoff, since)) = self.groups[g].handoff {
            let taken = holders.iter().any(|(n, _)| *n == handoff.to);
            if taken || now.saturating_sub(since) > 2 * timeout {
                self.groups[g].handoff = None;
            }
        }

        // Acknowledge the strongest claim of a peer, unless this node has a stronger one.
        let best_peer_claim = peers
            .iter()
            .filter_map(|(n, r)| r.claim.map(|c| (*n, c)))
            .reduce(|a, b| if self.beats(g, a, b) { a } else { b });
        let mine = self.groups[g].claim.map(|(c, _)| (me, c));
        match (mine, best_peer_claim) {
            (Some(m), Some(p)) if self.beats(g, p, m) => {
                self.groups[g].claim = None;
                self.groups[g].ack = Some((p.0, p.1.epoch));
                out.push(Action::SendNow);
            }
            (None, Some(p)) if self.groups[g].ack != Some((p.0, p.1.epoch)) => {
                self.groups[g].ack = Some((p.0, p.1.epoch));
                out.push(Action::SendNow);
            }
            (_, None) => self.groups[g].ack = None,
            _ => {}
        }

        if !holders.is_empty() {
            self.groups[g].claim = None;
            return;
        }

        // A claim outstanding: activate once every online peer acknowledged it, if this node
        // still may (the isolation that excused STARTING=DENY may have ended meanwhile).
        if let Some((claim, _)) = self.groups[g].claim
            && !claim.forced
            && !self.eligible(me, g)
        {
            self.groups[g].claim = None;
            out.push(Action::SendNow);
        }
        if let Some((claim, since)) = self.groups[g].claim {
            let all_acked = (0..self.peers.len())
                .filter(|n| *n != me && self.peers[*n].online)
                .all(|n| {
                    self.fresh_report(n)
                        .is_some_and(|r| r.groups[g].ack == Some((me, claim.epoch)))
                });
            if all_acked && !(self.someone_unheard() && now < self.cautious_until) {
                self.activate(now, g, claim.epoch, out);
            } else if now.saturating_sub(since) > 2 * timeout
                || self
                    .peers
                    .iter()
                    .enumerate()
                    .any(|(n, p)| n != me && p.online && p.mismatch)
            {
                self.groups[g].claim = None;
            }
            return;
        }

        // Election: only when the group is wanted, runs nowhere and this node acknowledges no
        // one else's claim.
        if !self.groups[g].wanted
            || self.groups[g].ack.is_some()
            // Handed over and not yet taken: leave it to the target.
            || self.groups[g].handoff.is_some()
            || self.shutting_down
            || !self.ready
            || self
                .peers
                .iter()
                .enumerate()
                .any(|(n, p)| n != me && p.online && p.mismatch)
        {
            return;
        }
        // A handoff is good for the ownership it ended: once anyone claimed a newer epoch it
        // is spent.
        let max_epoch = self.groups[g].max_epoch;
        let handoff = peers
            .iter()
            .filter(|(_, r)| r.state == GroupState::Offline && r.epoch >= max_epoch)
            .filter_map(|(_, r)| r.handoff)
            .next();
        let designated = match handoff {
            Some(h) if h.to == me && (h.manual || self.eligible(me, g)) => Some(me),
            Some(h) if h.to != me && self.is_online(h.to) => Some(h.to),
            _ => {
                // When the cluster starts (the group never ran), wait for a better node of the
                // policy that is online but still in its startup wait (bounded by the wait
                // timeout). A group that ran before is taken over at once.
                let first_start = self.groups[g].max_epoch == 0;
                let waiting = first_start
                    && self.cfg.groups[g]
                        .policy
                        .iter()
                        .copied()
                        .take_while(|n| *n != me)
                        .any(|n| {
                            n != me
                                && self.peers[n].online
                                && self.peers[n]
                                    .unready_since
                                    .is_some_and(|t| now.saturating_sub(t) < ns(self.cfg.wait))
                        });
                if waiting {
                    None
                } else {
                    self.next_eligible(g, true)
                }
            }
        };
        if designated == Some(me) {
            let forced = handoff.is_some_and(|h| h.manual);
            // An operator moved the group here: that starts it here, which clears DENY.
            if forced && self.groups[g].deny.take().is_some() {
                out.push(Action::Notify(Notice::DenyCleared { group: g }));
            }
            let from = peers
                .iter()
                .find(|(_, r)| r.handoff.is_some() && r.epoch >= max_epoch)
                .map(|(n, _)| *n);
            self.groups[g].act_cause = match (handoff, from) {
                (Some(h), _) if h.manual => Cause::Command,
                (Some(h), Some(from)) if h.failover => Cause::Handoff {
                    from,
                    failover: true,
                },
                (Some(_), Some(from)) => Cause::Handoff {
                    from,
                    failover: false,
                },
                _ => match self.groups[g].last_holder {
                    Some(n) if n != me && !self.is_online(n) => Cause::PeerDown(n),
                    Some(n) => Cause::HolderStopped(n),
                    None => Cause::Startup,
                },
            };
            self.claim(now, g, forced, out);
        }
    }

    fn claim(&mut self, now: Nanos, g: GroupId, forced: bool, out: &mut Vec<Action>) {
        let local = &mut self.groups[g];
        let epoch = local.max_epoch.max(local.epoch) + 1;
        local.claim = Some((Claim { epoch, forced }, now));
        local.ack = None;
        out.push(Action::SendNow);
        // With nobody to ask, the claim is granted at once (unless just back from a stall).
        let me = self.me();
        let anyone = (0..self.peers.len()).any(|n| n != me && self.peers[n].online);
        if !anyone && now >= self.cautious_until {
            self.activate(now, g, epoch, out);
        }
    }

    fn activate(&mut self, now: Nanos, g: GroupId, epoch: u64, out: &mut Vec<Action>) {
        let cause = self.groups[g].act_cause;
        let me = self.me();
        let failover = matches!(
            cause,
            Cause::PeerDown(_) | Cause::Handoff { failover: true, .. }
        ) || matches!(cause, Cause::HolderStopped(n) if n != me);
        // Normally the peers that acknowledged the claim just echoed a heartbeat; without that
        // the lease starts lapsed and begins when they do.
        let (until, alone) = self.lease_bound(now, g).unwrap_or((now, false));
        let local = &mut self.groups[g];
        local.alone_lease = alone;
        local.claim = None;
        local.ack = None;
        local.handoff = None;
        local.state = GroupState::Activating;
        local.epoch = epoch;
        local.max_epoch = local.max_epoch.max(epoch);
        local.done = 0;
        local.step_errors = 0;
        local.act_reason = if failover {
            ActReason::Failover
        } else {
            ActReason::Normal
        };
        local.act_cause = cause;
        local.lease_until = until;
        local.lapsed = false;
        // An operator who starts or moves a group onto a node whose targets are unreachable
        // means it; a node that takes it by election was healthy.
        let by_operator = cause == Cause::Command;
        for (accepted, ok) in local.ipw_accepted.iter_mut().zip(&local.ipw_ok) {
            *accepted = by_operator && !ok;
        }
        out.push(Action::GrantLease {
            group: g,
            epoch,
            until,
        });
        out.push(Action::SendNow);
        self.next_activation_step(g, out);
    }

    fn next_activation_step(&mut self, g: GroupId, out: &mut Vec<Action>) {
        let local = &mut self.groups[g];
        if local.done < self.cfg.groups[g].steps.len() {
            local.activating = Some(local.done);
            out.push(Action::Activate {
                group: g,
                step: local.done,
                reason: local.act_reason,
            });
        } else {
            local.state = GroupState::Online;
            out.push(Action::Notify(Notice::GroupOnline {
                group: g,
                reason: local.act_reason,
                cause: local.act_cause,
            }));
            out.push(Action::SendNow);
        }
    }

    fn deactivate(
        &mut self,
        g: GroupId,
        reason: DeactReason,
        cause: Cause,
        then: Then,
        out: &mut Vec<Action>,
    ) {
        let local = &mut self.groups[g];
        if !matches!(local.state, GroupState::Activating | GroupState::Online) {
            return;
        }
        local.state = GroupState::Deactivating;
        local.deact_reason = reason;
        local.environment = reason.as_env();
        local.deact_cause = cause;
        local.then = then;
        local.claim = None;
        out.push(Action::RevokeLease {
            group: g,
            epoch: local.epoch,
        });
        local.lease_until = 0;
        local.lapsed = false;
        // With an activation step under way, its answer comes first (see `activating`).
        if local.activating.is_none() {
            self.next_deactivation_step(g, out);
        }
    }

    fn next_deactivation_step(&mut self, g: GroupId, out: &mut Vec<Action>) {
        let local = &mut self.groups[g];
        if local.done > 0 {
            out.push(Action::Deactivate {
                group: g,
                step: local.done - 1,
                reason: local.deact_reason,
            });
            return;
        }
        match local.then {
            Then::Offline(handoff) => {
                local.state = GroupState::Offline;
                local.handoff = handoff.map(|h| (h, self.now));
                out.push(Action::Notify(Notice::GroupOffline {
                    group: g,
                    reason: local.deact_reason,
                    cause: local.deact_cause,
                }));
            }
            Then::Error => {
                local.state = GroupState::Error;
                out.push(Action::Notify(Notice::GroupError {
                    group: g,
                    cause: local.deact_cause,
                }));
            }
        }
        out.push(Action::SendNow);
    }

    fn step_done(&mut self, now: Nanos, g: GroupId, step: usize, ok: bool, out: &mut Vec<Action>) {
        let Some(local) = self.groups.get(g) else {
            return;
        };
        match local.state {
            GroupState::Activating if step == local.done => {
                self.groups[g].activating = None;
                if ok {
                    self.groups[g].done += 1;
                    self.next_activation_step(g, out);
                } else {
                    self.resource_error(now, g, step, false, out);
                }
            }
            GroupState::Deactivating if local.activating == Some(step) => {
                // A step of the activation now counts as done; a restarted step of an online
                // group (a retry) already did.
                let counts = ok && step == local.done;
                self.groups[g].activating = None;
                if counts {
                    self.groups[g].done += 1;
                }
                self.next_deactivation_step(g, out);
            }
            GroupState::Deactivating if local.done > 0 && step == local.done - 1 => {
                if !ok {
                    self.groups[g].step_errors |= 1 << step.min(30);
                    out.push(Action::Notify(Notice::StepFailed {
                        group: g,
                        step,
                        retry: 0,
                        of: 0,
                    }));
                }
                self.groups[g].done -= 1;
                self.next_deactivation_step(g, out);
            }
            GroupState::Online if step < local.done => {
                // A retried monitored step was restarted.
                if local.activating == Some(step) {
                    self.groups[g].activating = None;
                }
                if ok {
                    self.groups[g].step_errors &= !(1 << step.min(30));
                } else {
                    self.resource_error(now, g, step, true, out);
                }
            }
            _ => {}
        }
    }

    fn step_failed(&mut self, now: Nanos, g: GroupId, step: usize, out: &mut Vec<Action>) {
        let Some(local) = self.groups.get(g) else {
            return;
        };
        if local.state == GroupState::Online && step < local.done {
            self.resource_error(now, g, step, true, out);
        }
    }

    /// A resource step failed: retry it, or apply its recovery action (R-RES-2).
    fn resource_error(
        &mut self,
        _now: Nanos,
        g: GroupId,
        step: usize,
        online: bool,
        out: &mut Vec<Action>,
    ) {
        let spec = self.cfg.groups[g].steps[step].clone();
        let local = &mut self.groups[g];
        local.step_errors |= 1 << step.min(30);
        let used = local.retries[step];
        out.push(Action::Notify(Notice::StepFailed {
            group: g,
            step,
            retry: used,
            of: spec.retry,
        }));
        if spec.recover != Recover::Ignore && used < spec.retry {
            local.retries[step] += 1;
            // Also for a restart of an online group's step: a deactivation that starts meanwhile
            // waits for its answer (and undoes it).
            local.activating = Some(step);
            out.push(Action::Activate {
                group: g,
                step,
                reason: local.act_reason,
            });
            return;
        }
        let cause = Cause::Resource { step, ipw: false };
        match spec.recover {
            Recover::Ignore => {
                if !online {
                    self.groups[g].done += 1;
                    self.next_activation_step(g, out);
                }
            }
            Recover::Stop => self.stop_for_error(g, cause, out),
            Recover::Retry | Recover::Failover => {
                let deny = if online && spec.monitored {
                    DenyCause::Process
                } else {
                    DenyCause::Activation
                };
                self.fail_over(g, cause, Some(deny), online, out);
            }
        }
    }

    /// The data path does not answer for a group held here: a resource error with its
    /// recovery. Handed to an eligible node (STARTING=DENY here until an operator clears it),
    /// or, with none, stopped in ERROR: a group shown ONLINE must be answered for.
    fn lease_refused(&mut self, g: GroupId, out: &mut Vec<Action>) {
        if !matches!(
            self.groups[g].state,
            GroupState::Activating | GroupState::Online
        ) {
            return;
        }
        if self.next_eligible(g, false).is_some() {
            self.fail_over(
                g,
                Cause::LeaseRefused,
                Some(DenyCause::Activation),
                false,
                out,
            );
        } else {
            self.stop_for_error(g, Cause::LeaseRefused, out);
        }
    }

    /// Stops the group here for good (until an operator starts it): STOP recovery.
    fn stop_for_error(&mut self, g: GroupId, cause: Cause, out: &mut Vec<Action>) {
        let local = &mut self.groups[g];
        local.admin_epoch += 1;
        local.wanted = false;
        if local.state.holds() {
            self.deactivate(g, DeactReason::Illegal, cause, Then::Error, out);
        } else {
            local.state = GroupState::Error;
        }
    }

    /// FAILOVER recovery: hand the group to the next eligible node. With none (R-FO-3) the group
    /// stays where it is if it is online; a failed activation ends in ERROR.
    fn fail_over(
        &mut self,
        g: GroupId,
        cause: Cause,
        deny: Option<DenyCause>,
        online: bool,
        out: &mut Vec<Action>,
    ) {
        let target = self.next_eligible(g, false);
        if target.is_none() && online {
            out.push(Action::Notify(Notice::FailoverImpossible { group: g }));
            return;
        }
        if let Some(deny) = deny
            && self.groups[g].deny.is_none()
        {
            self.groups[g].deny = Some(deny);
            out.push(Action::Notify(Notice::DenySet {
                group: g,
                cause: deny,
            }));
        }
        let then = match target {
            Some(to) => Then::Offline(Some(Handoff {
                to,
                manual: false,
                failover: true,
            })),
            None => Then::Error,
        };
        self.deactivate(g, DeactReason::Illegal, cause, then, out);
    }

    /// An IPW verdict. What it means for a group held here is decided in [`Engine::holder_duties`]
    /// after every event, not only when the verdict changes: a loss reported while the group
    /// was still activating, or while no other node could take it, acts as soon as the group is
    /// online and a standby is eligible (R-FO-1).
    fn ipw(&mut self, g: GroupId, entry: usize, ok: bool, out: &mut Vec<Action>) {
        let Some(local) = self.groups.get_mut(g) else {
            return;
        };
        let Some(slot) = local.ipw_ok.get_mut(entry) else {
            return;
        };
        if *slot == ok {
            return;
        }
        *slot = ok;
        local.failover_impossible = false;
        if let Some(accepted) = local.ipw_accepted.get_mut(entry) {
            *accepted = false;
        }
        out.push(Action::SendNow);
    }

    /// The first failed IPW entry of a group held here whose recovery applies, if any: moves
    /// the group to an eligible standby (or stops it), and says once when none can take it.
    fn ipw_duties(&mut self, g: GroupId, out: &mut Vec<Action>) -> bool {
        let failed = self.groups[g]
            .ipw_ok
            .iter()
            .enumerate()
            .find(|(entry, ok)| {
                !**ok
                    && !self.groups[g].ipw_accepted[*entry]
                    && self.cfg.groups[g].ipw[*entry] != Recover::Ignore
            })
            .map(|(entry, _)| entry);
        let Some(entry) = failed else {
            return false;
        };
        let cause = Cause::Resource {
            step: entry,
            ipw: true,
        };
        match self.cfg.groups[g].ipw[entry] {
            Recover::Ignore => false,
            Recover::Stop => {
                self.stop_for_error(g, cause, out);
                true
            }
            Recover::Retry | Recover::Failover => {
                if self.next_eligible(g, false).is_some() {
                    self.fail_over(g, cause, Some(DenyCause::Ipw), true, out);
                    true
                } else {
                    if !std::mem::replace(&mut self.groups[g].failover_impossible, true) {
                        out.push(Action::Notify(Notice::FailoverImpossible { group: g }));
                    }
                    false
                }
            }
        }
    }

    /// Duties of the node holding an online group: conflicts, failback, isolation, stop.
    fn holder_duties(
        &mut self,
        _now: Nanos,
        g: GroupId,
        holders: &[(NodeId, GroupReport)],
        out: &mut Vec<Action>,
    ) {
        let me = self.me();
        // Two holders (a partition healed, or a one-way failure): the newer epoch keeps it. A
        // holder with another configuration is known by the group's name; its priorities are
        // not comparable, so the lower node index breaks a tie of epochs.
        let mine = self.groups[g].epoch;
        let id = group_id(&self.cfg.groups[g].name);
        let foreign: Vec<(NodeId, u64)> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(n, p)| *n != me && p.online && p.mismatch)
            .flat_map(|(n, p)| {
                p.held
                    .iter()
                    .filter(|h| h.id == id)
                    .map(move |h| (n, h.epoch))
            })
            .collect();
        let loses = holders.iter().any(|(n, r)| {
            (r.epoch, std::cmp::Reverse(self.priority(g, *n)))
                > (mine, std::cmp::Reverse(self.priority(g, me)))
        }) || foreign
            .iter()
            .any(|(n, epoch)| (*epoch, std::cmp::Reverse(*n)) > (mine, std::cmp::Reverse(me)));
        if loses {
            // With its lease run out here, the other node took the group meanwhile.
            let cause = if self.groups[g].lapsed {
                Cause::LeaseLost
            } else {
                Cause::SplitBrain
            };
            self.deactivate(g, DeactReason::Illegal, cause, Then::Offline(None), out);
            return;
        }
        // Another holder (a partition healed): it will give up; announce again once it did,
        // so clients that followed it come back.
        if !holders.is_empty() || !foreign.is_empty() {
            self.groups[g].contested = true;
            return;
        }
        if std::mem::take(&mut self.groups[g].contested) {
            out.push(Action::Reannounce { group: g });
        }
        if !self.groups[g].wanted {
            self.deactivate(
                g,
                DeactReason::Normal,
                Cause::Command,
                Then::Offline(None),
                out,
            );
            return;
        }
        if self.cfg.tiebreakers && self.isolated() && self.tiebreaker_ok == Some(false) {
            self.deactivate(
                g,
                DeactReason::Illegal,
                Cause::Isolated,
                Then::Offline(None),
                out,
            );
            return;
        }
        if self.ipw_duties(g, out) {
            return;
        }
        // Auto failback returns a group that a failure moved (the seed: "when the primary
        // comes back after it went down"); one an operator moved here stays where it was put.
        if self.cfg.groups[g].failback == Failback::Auto
            && !self.placed_by_operator(g)
            && let Some(best) = self.next_eligible(g, true)
            && best != me
            && self.priority(g, best) < self.priority(g, me)
        {
            self.deactivate(
                g,
                DeactReason::Normal,
                Cause::Failback,
                Then::Offline(Some(Handoff {
                    to: best,
                    manual: false,
                    failover: false,
                })),
                out,
            );
        }
    }
}
