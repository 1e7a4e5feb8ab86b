//! The engine's inputs ([`Event`]) and outputs ([`Action`], with [`Notice`]s for operators).

use std::time::Duration;

use crate::{ActReason, DeactReason, DenyCause, GroupId, Instant, NodeId, Report};

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
    /// SIGUSR2: the daemon is about to restart in place (an upgrade). Heartbeats announce a
    /// restart hold from now on, and nothing more is taken here; once
    /// [`Engine::restart_ready`] the daemon may exit, leaving its data path to the next life.
    PrepareRestart,
    /// The restart did not happen (the peers never acknowledged the hold): back to normal,
    /// keeping the promise made meanwhile.
    CancelRestart,
}

/// Outputs of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Take ownership in the data path, answering until `until` (same clock as the events).
    GrantLease {
        group: GroupId,
        epoch: u64,
        until: Instant,
    },
    /// Move the end of the lease to `until` (later than before; also after it had lapsed: the
    /// engine resumes only on fresh acknowledgements).
    RenewLease {
        group: GroupId,
        epoch: u64,
        until: Instant,
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
        silent_for: Option<Duration>,
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
        gap: Duration,
    },
    /// Acknowledgements came back (or every peer is gone): the data path answers again.
    LeaseResumed {
        group: GroupId,
        /// How long the data path did not answer.
        after: Duration,
    },
}
