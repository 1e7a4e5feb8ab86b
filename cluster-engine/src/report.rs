//! What a node tells its peers in every heartbeat: per group its state, epoch, claim,
//! acknowledgement and handoff. Reports come off the wire and are checked before use.

use std::time::Duration;

use crate::{Engine, Instant, NodeId};

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
    pub sent_at: Instant,
    /// The `sent_at` of the newest heartbeat the sender had received from the receiver (on the
    /// receiver's clock): what the receiver's lease may be bounded by.
    pub echo: Option<Instant>,
    /// The sender's daemon is about to restart (an upgrade): it asks the receiver to count it
    /// alive for this much longer than the timeout, and promises to take nothing by silence
    /// for as long (its next life keeps the promise). Zero: no restart.
    pub hold: Duration,
    /// The hold the sender grants the heartbeat it echoes (zero if that one asked for none):
    /// the sender declares the receiver dead no earlier than a timeout plus this after it
    /// received that heartbeat.
    pub granted: Duration,
    /// Finished the startup wait.
    pub ready: bool,
    /// Interconnects on which this node hears the receiver (bit i: link i).
    pub links_heard: u32,
    pub groups: Vec<GroupReport>,
    /// The groups the sender holds, by name: all a peer with another configuration can use.
    pub held: Vec<HeldGroup>,
}

impl Engine {
    /// This node's report, sent in every heartbeat.
    pub fn report(&self) -> Report {
        Report {
            // The transport puts its own into the header.
            incarnation: 0,
            sent_at: self.now,
            echo: None,
            hold: if self.restarting.is_some() {
                self.cfg.restart_hold
            } else {
                Duration::ZERO
            },
            granted: Duration::ZERO,
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
    pub fn report_for(&self, peer: NodeId, now: Instant) -> Report {
        let mut report = self.report();
        report.sent_at = now;
        if let Some(p) = self.peers.get(peer) {
            report.echo = p.newest_sent_at;
            report.granted = p.granted;
            for link in 0..self.cfg.links.min(32) {
                if p.link_ok(link, now, self.silence()) {
                    report.links_heard |= 1 << link;
                }
            }
        }
        report
    }

    /// Whether every index in a peer's report names something that exists: reports come off
    /// the wire, and an authenticated peer is not thereby a correct one.
    pub(crate) fn valid_report(&self, report: &Report) -> bool {
        let nodes = self.cfg.nodes.len();
        report.groups.len() == self.groups.len()
            && report.groups.iter().all(|g| {
                g.handoff.is_none_or(|h| h.to < nodes) && g.ack.is_none_or(|(n, _)| n < nodes)
            })
    }
}
