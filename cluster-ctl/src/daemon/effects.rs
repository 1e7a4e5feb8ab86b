//! Carrying out the engine's actions: lease writes in the data path, resource steps,
//! heartbeats, tie-breaker probes, notices.

use anyhow::Result;

use super::{Daemon, Input, wiring};
use crate::{catalog, dataplane::DataplaneError, heartbeat::wire::Kind};
use cluster_engine::{Action, GroupId};

impl Daemon {
    /// Carries out the engine's actions; returns true when the daemon must exit.
    pub(super) fn execute(&mut self, actions: Vec<Action>) -> Result<bool> {
        let mut send_now = false;
        for action in actions {
            match action {
                Action::GrantLease {
                    group,
                    epoch,
                    until,
                } => {
                    // The peers' sequence adjustments before the addresses are answered.
                    if let Some(helpers) = self.conntrackd.as_ref().and_then(|c| c.helpers()) {
                        helpers.take_over(Some(&self.group_addresses(group)));
                    }
                    let result =
                        self.dataplane
                            .acquire_until(group as u32, epoch, until.as_nanos());
                    let granted = result.is_ok();
                    if granted {
                        self.answering.set(group, until.as_nanos());
                    }
                    self.lease_op(group, result);
                    // The first gratuitous ARP right after the map flip (R-XDP-6).
                    if granted {
                        self.resources.announce_now(group);
                        if let Some(conntrackd) = &self.conntrackd {
                            if let Some(helpers) = conntrackd.helpers() {
                                helpers.set_passing(true);
                            }
                            conntrackd.took_over();
                        }
                    }
                }
                Action::RenewLease {
                    group,
                    epoch,
                    until,
                } => {
                    let result = self
                        .dataplane
                        .extend_to(group as u32, epoch, until.as_nanos());
                    if result.is_ok() {
                        self.answering.set(group, until.as_nanos());
                    }
                    self.lease_op(group, result);
                }
                Action::RevokeLease { group, epoch } => {
                    self.answering.set(group, 0);
                    if let Err(e) = self.dataplane.release(group as u32, epoch) {
                        tracing::error!(id = catalog::LEASE_REFUSED.id, error = %e, "lease release");
                    }
                    if let Some(helpers) = self.conntrackd.as_ref().and_then(|c| c.helpers()) {
                        helpers.set_passing(self.passes_traffic());
                    }
                }
                Action::Activate {
                    group,
                    step,
                    reason,
                } => self.resources.activate(group, step, reason),
                Action::Deactivate {
                    group,
                    step,
                    reason,
                } => self.resources.deactivate(group, step, reason),
                Action::Reannounce { group } => self.resources.reannounce(group),
                Action::SendNow => send_now = true,
                Action::ProbeTiebreaker => wiring::probe_tiebreakers(
                    self.config.cluster.tiebreakers.clone(),
                    self.inputs.clone(),
                ),
                Action::Exit => {
                    self.flowshares.stop(&mut self.dataplane);
                    self.send(Kind::Leaving);
                    tracing::warn!(id = catalog::DAEMON_STOPPED.id, "left the cluster");
                    return Ok(true);
                }
                Action::Notify(notice) => self.on_notice(&notice),
            }
        }
        if send_now {
            self.send(Kind::Heartbeat);
        }
        Ok(false)
    }

    /// A refused grant or extension is a resource error of the group: the engine hears of it
    /// (through the loop's own channel, after the actions at hand) and applies the recovery.
    fn lease_op(&self, group: GroupId, result: Result<(), DataplaneError>) {
        if let Err(e) = result {
            tracing::error!(
                id = catalog::LEASE_REFUSED.id,
                group = self.config.group.get(group).map_or("?", |g| g.name.as_str()),
                error = %e,
                "lease operation refused: the data path does not answer for the group here"
            );
            let _ = self.inputs.send(Input::LeaseRefused { group });
        }
    }

    /// Sends `kind` to every peer on every interconnect, with this node's report.
    pub(super) fn send(&self, kind: Kind) {
        let now = self.now();
        let engine = &self.engine;
        self.transport
            .send(kind, |peer| engine.report_for(peer, now));
    }

    /// Deals the flow-share buckets over the nodes that share flows now. Buckets taken from a
    /// peer are a takeover of its connections: conntrackd claims their entries, as for a group.
    pub(super) fn rebalance(&mut self) {
        let live: Vec<u32> = (0..self.config.server.len())
            .filter(|n| self.engine.shares_flows(*n))
            .map(|n| n as u32)
            .collect();
        let me = self.engine.config().me as u32;
        let owned = |flowshares: &crate::flowshare::FlowShares| -> usize {
            flowshares.owned_by(me).values().sum()
        };
        let before = owned(&self.flowshares);
        if let Err(e) = self.flowshares.rebalance(&mut self.dataplane, &live) {
            tracing::error!(id = catalog::LEASE_REFUSED.id, error = %e, "flow share");
        }
        let after = owned(&self.flowshares);
        if let Some(conntrackd) = &self.conntrackd {
            if let Some(helpers) = conntrackd.helpers() {
                helpers.set_passing(self.passes_traffic());
                // Buckets taken (also back, at a return): the peers' sequence adjustments,
                // just after the buckets moved (flows are not told apart by group).
                if after > before {
                    helpers.take_over(None);
                }
            }
            // Not at this node's own start (it owned nothing): it has taken no one's
            // connections.
            if before > 0 && after > before {
                conntrackd.took_over();
            }
        }
    }

    /// The addresses of `group` (floating and proxy-ARP): the connections a takeover of it
    /// takes over are NAT'd to, or addressed to, one of them.
    fn group_addresses(&self, group: usize) -> Vec<std::net::IpAddr> {
        self.config.group.get(group).map_or_else(Vec::new, |g| {
            g.fip
                .iter()
                .map(|f| f.address.addr())
                .chain(g.parp.iter().map(|p| p.address))
                .collect()
        })
    }

    /// Whether this node passes traffic now: it answers for a group, or deals flow-share
    /// buckets.
    pub(super) fn passes_traffic(&self) -> bool {
        let me = self.engine.config().me as u32;
        (0..self.config.group.len()).any(|group| self.answering.now(group))
            || self.flowshares.owned_by(me).values().any(|&n| n > 0)
    }
}
