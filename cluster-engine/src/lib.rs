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

//!
//! # Phases
//! [`Engine::handle`] takes one event through the same phases every time, one module each:
//! - [`membership`]: who is alive on which interconnect, stalls of this node, readiness;
//! - the event's own concern: [`lifecycle`] (resource steps), [`recovery`] (failures, IPW),
//!   or an operator [`Command`];
//! - [`election`]: per group, absorb the peers' reports, acknowledge or make a claim, activate
//!   on acknowledgement; [`holder`] for the duties of the node that runs the group;
//! - [`lease`]: move each held group's data-path lease as far as acknowledgements allow.
//!
//! [`Engine::check_invariants`] asserts what must hold after every event (in debug builds,
//! which the simulator and the test suite run).

pub mod arbitrary;
mod command;
mod election;
mod events;
mod holder;
mod lease;
mod lifecycle;
mod membership;
mod recovery;
mod report;
mod restart;
mod spec;
mod status;
mod time;

pub use command::{Command, Refusal};
pub use events::{Action, Cause, Event, Notice};
pub use report::{
    ActReason, Claim, DeactReason, DenyCause, GroupReport, GroupState, Handoff, HeldGroup, Report,
    group_id,
};
pub use spec::{EngineConfig, Failback, GroupSpec, Recover, StartMode, StepSpec};
pub use status::{GroupStatus, Status};
pub use time::Instant;

use std::time::Duration;

/// Index of a server in the configuration.
pub type NodeId = usize;

/// Index of a group (or flow-share instance, which follows the groups) in the configuration.
pub type GroupId = usize;

/// How long a peer may stay silent before it (or one of its links) is declared lost: the
/// timeout, or twice the timeout for a silence that began while this node was settling after a
/// stall of its own (R-HB-4). Right after a stall the whole machine is settling: deferred kernel
/// work, peers stopped by the same cause still catching up. A later declaration is always safe
/// (a holder bounds its own lease by acknowledgements); a false one moves groups for nothing.
#[derive(Clone, Copy, Debug)]
struct Silence {
    timeout: Duration,
    settling_until: Instant,
}

#[derive(Clone, Debug)]
struct Peer {
    /// Last heartbeat per link.
    heard: Vec<Option<Instant>>,
    /// Per link: reported up (heard within the timeout at the last check).
    up: Vec<bool>,
    report: Option<Report>,
    online: bool,
    mismatch: bool,
    left: bool,
    /// When the peer came online and not yet ready (startup wait bound).
    unready_since: Option<Instant>,
    /// The peer's incarnation as last heard.
    incarnation: u64,
    /// What a peer with another configuration holds (its report is not used otherwise).
    held: Vec<HeldGroup>,
    /// `sent_at` of the newest heartbeat from the peer (its clock): echoed back to it.
    newest_sent_at: Option<Instant>,
    /// The echo in that heartbeat: the send time (this node's clock) of the newest heartbeat of
    /// this node the peer had received. Kept together with `report`, from the same packet.
    echo: Option<Instant>,
    /// The restart hold the peer granted with that echo (see [`Report::granted`]).
    echo_hold: Duration,
    /// The restart hold this node grants the peer's newest heartbeat (echoed back with it).
    granted: Duration,
    /// The peer announced a restart: it counts as alive until a timeout after this, whatever
    /// its silence. Kept across the peer's new life (the lease its last one extended on the
    /// strength of it may still run).
    hold_until: Instant,
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
    claim: Option<(Claim, Instant)>,
    ack: Option<(NodeId, u64)>,
    handoff: Option<(Handoff, Instant)>,
    admin_epoch: u64,
    wanted: bool,
    /// Highest ownership epoch seen anywhere.
    max_epoch: u64,
    lease_until: Instant,
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
    started: Instant,
    ready: bool,
    peers: Vec<Peer>,
    groups: Vec<LocalGroup>,
    tiebreaker_ok: Option<bool>,
    shutting_down: bool,
    exited: bool,
    /// Time of the event being handled.
    now: Instant,
    /// Time of the last event handled, to notice that this process did not run for a while.
    last_run: Instant,
    /// Time of the last tick: a heartbeat to every peer follows every tick.
    last_tick: Instant,
    /// After a stall, no group is taken without a peer's acknowledgement before this time:
    /// the silence may be unread heartbeats.
    cautious_until: Instant,
    /// After a stall of its own, a silence that begins before this time must last twice the
    /// timeout (see [`Silence`]).
    settling_until: Instant,
    /// When this node began to wait for its peers' connection entries (see `awaits_sync`).
    sync_since: Option<Instant>,
    /// Since when this node announces a restart of its daemon (see [`Report::hold`]).
    restarting: Option<Instant>,
    /// No peer is declared dead and no group taken alone before this time: the promise of a
    /// restart hold, made by this node's previous life or by an announcement it withdrew.
    promise_until: Instant,
}

impl Engine {
    /// A new engine started at `now` (a restart is a new engine: deny flags are cleared, as the
    /// seed says).
    pub fn new(cfg: EngineConfig, now: Instant) -> Self {
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
                lease_until: Instant::ZERO,
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
        let caution = now + 2 * cfg.timeout;
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
            settling_until: Instant::ZERO,
            sync_since: None,
            restarting: None,
            promise_until: Instant::ZERO,
        }
    }

    /// Adopts a group that a previous process of this node held and whose pinned lease is still
    /// valid until `lease_until` (a controller restart within the lease: no flap).
    pub fn adopt(
        &mut self,
        group: GroupId,
        epoch: u64,
        lease_until: Instant,
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

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn me(&self) -> NodeId {
        self.cfg.me
    }

    fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    /// What must hold after every event, whatever came in (debug builds: the simulator and the
    /// test suite run them over every event of every schedule). Between nodes — one holder per
    /// epoch, no two unexpired leases — is the simulator's to check; these are one node's own.
    fn check_invariants(&self, now: Instant) {
        for (g, (local, spec)) in self.groups.iter().zip(&self.cfg.groups).enumerate() {
            let steps = spec.steps.len();
            debug_assert!(
                local.done <= steps,
                "group {g}: {} of {steps} steps done",
                local.done
            );
            debug_assert!(
                local.activating.is_none_or(|s| s < steps),
                "group {g}: awaits step {:?} of {steps}",
                local.activating
            );
            debug_assert!(
                local
                    .retries
                    .iter()
                    .zip(&spec.steps)
                    .all(|(used, s)| *used <= s.retry),
                "group {g}: retries {:?} beyond the configured ones",
                local.retries
            );
            debug_assert!(
                local.epoch <= local.max_epoch,
                "group {g}: epoch above the highest seen"
            );
            if local.state.holds() {
                debug_assert!(local.epoch > 0, "group {g}: held without an epoch");
                debug_assert!(local.claim.is_none(), "group {g}: held and claimed");
            }
            // A group that runs here is answered for only until its lease ends; past that end
            // the engine knows it lapsed (and has told the operator).
            if matches!(local.state, GroupState::Activating | GroupState::Online) {
                debug_assert!(
                    local.lapsed || local.lease_until > now,
                    "group {g}: lease ended at {:?} (now {now:?}) and not marked lapsed",
                    local.lease_until
                );
            }
        }
        for (n, peer) in self.peers.iter().enumerate() {
            debug_assert!(
                peer.online || (peer.report.is_none() && peer.echo.is_none()),
                "node {n}: offline, yet its report is kept"
            );
        }
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

    /// Feeds one event at time `now`; returns what to do. Every event goes through the same
    /// phases: this node's own stall, the event's concern, the election of every group, the
    /// leases; then the invariants are checked.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
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
                self.on_heartbeat(now, from, link, report, &mut out)
            }
            Event::Mismatch { from, link, report } => {
                self.on_mismatch(now, from, link, report, &mut out)
            }
            Event::Leaving { from } => self.on_leaving(from, &mut out),
            Event::Ipw { group, entry, ok } => self.ipw(group, entry, ok, &mut out),
            Event::StepDone { group, step, ok } => self.step_done(now, group, step, ok, &mut out),
            Event::StepFailed { group, step } => self.step_failed(now, group, step, &mut out),
            Event::Tiebreaker { reachable } => self.tiebreaker_ok = Some(reachable),
            Event::LeaseRefused { group } => self.lease_refused(group, &mut out),
            Event::Shutdown => self.on_shutdown(&mut out),
            Event::PrepareRestart => self.prepare_restart(now, &mut out),
            Event::CancelRestart => self.cancel_restart(),
        }
        self.reconcile(now, &mut out);
        self.keep_leases(now, &mut out);
        self.check_invariants(now);
        out
    }
}
