//! Snapshots for `clpstat` and the questions the daemon asks between events.

use crate::{DenyCause, Engine, GroupId, GroupReport, GroupState, Instant, NodeId};

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
    /// Per node, with session synchronization: starting, and not ready yet (for this node: in
    /// its sync wait; for a peer: it reports itself not ready).
    pub syncing: Vec<bool>,
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
    pub fn status(&self, now: Instant) -> Status {
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
            syncing: (0..nodes)
                .map(|n| {
                    self.cfg.sync_wait.is_some()
                        && if n == me {
                            !self.ready && self.sync_since.is_some()
                        } else {
                            self.fresh_report(n).is_some_and(|r| !r.ready)
                        }
                })
                .collect(),
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
}
