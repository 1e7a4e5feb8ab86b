//! Per group, after the event's own concern: absorb the peers' reports, acknowledge the strongest
//! claim or make one, and activate once every online peer acknowledged it. The holder's own
//! duties are in [`crate::holder`].

use crate::{
    Action, Cause, Claim, DenyCause, Engine, GroupId, GroupReport, GroupState, Instant, NodeId,
    Notice,
};

/// One group's reports from the online peers with the same configuration, by node.
type PeerReports = Vec<(NodeId, GroupReport)>;

impl Engine {
    /// Whether `node` may take `group` by election, in this node's view.
    pub(crate) fn eligible(&self, node: NodeId, group: GroupId) -> bool {
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

    pub(crate) fn tiebreaker_allows(&self) -> bool {
        !(self.cfg.tiebreakers && self.isolated() && self.tiebreaker_ok != Some(true))
    }

    /// The first eligible node of the policy (optionally not this one).
    pub(crate) fn next_eligible(&self, group: GroupId, include_me: bool) -> Option<NodeId> {
        self.cfg.groups[group]
            .policy
            .iter()
            .copied()
            .filter(|n| include_me || *n != self.me())
            .find(|n| self.eligible(*n, group))
    }

    pub(crate) fn priority(&self, group: GroupId, node: NodeId) -> usize {
        self.cfg.groups[group]
            .policy
            .iter()
            .position(|n| *n == node)
            .unwrap_or(usize::MAX)
    }

    /// Whether claim `a` of node `na` beats claim `b` of node `nb`.
    pub(crate) fn beats(
        &self,
        group: GroupId,
        (na, a): (NodeId, Claim),
        (nb, b): (NodeId, Claim),
    ) -> bool {
        (a.forced, std::cmp::Reverse(self.priority(group, na)))
            > (b.forced, std::cmp::Reverse(self.priority(group, nb)))
    }

    pub(crate) fn reconcile(&mut self, now: Instant, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            self.reconcile_group(now, g, out);
        }
        if self.shutting_down && !self.exited && self.groups.iter().all(|g| !g.state.holds()) {
            self.exited = true;
            out.push(Action::Exit);
        }
    }

    /// One group, in named phases: what the peers say, what this node holds, then (for a group
    /// that runs nowhere here) acknowledgements, an outstanding claim, and the election.
    pub(crate) fn reconcile_group(&mut self, now: Instant, g: GroupId, out: &mut Vec<Action>) {
        let (peers, holders) = self.absorb_reports(g);
        self.clear_ipw_deny(g, out);
        let state = self.groups[g].state;
        if state.holds() {
            let local = &mut self.groups[g];
            local.claim = None;
            local.ack = None;
            local.last_holder = Some(self.cfg.me);
            if state == GroupState::Online {
                self.holder_duties(now, g, &holders, out);
            }
            return;
        }
        self.lapse_handoff(now, g, &holders);
        self.acknowledge(g, &peers, out);
        if !holders.is_empty() {
            self.groups[g].claim = None;
            return;
        }
        if self.settle_claim(now, g, out) {
            return;
        }
        self.elect(now, g, &peers, out);
    }

    /// Phase 1: operator intent and epochs travel with the reports. Returns the peers' reports
    /// of the group and those of the peers that hold it.
    fn absorb_reports(&mut self, g: GroupId) -> (PeerReports, PeerReports) {
        let me = self.me();
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
        (peers, holders)
    }

    /// Phase 2: a deny for an IPW cause clears when the targets are reachable again.
    fn clear_ipw_deny(&mut self, g: GroupId, out: &mut Vec<Action>) {
        let local = &mut self.groups[g];
        if local.deny == Some(DenyCause::Ipw) && local.ipw_ok.iter().all(|ok| *ok) {
            local.deny = None;
            out.push(Action::Notify(Notice::DenyCleared { group: g }));
            out.push(Action::SendNow);
        }
    }

    /// Phase 3: a handoff this node published lapses once the target holds it (or after two
    /// timeouts).
    fn lapse_handoff(&mut self, now: Instant, g: GroupId, holders: &[(NodeId, GroupReport)]) {
        if let Some((handoff, since)) = self.groups[g].handoff {
            let taken = holders.iter().any(|(n, _)| *n == handoff.to);
            if taken || now.saturating_since(since) > 2 * self.timeout() {
                self.groups[g].handoff = None;
            }
        }
    }

    /// Phase 4: acknowledge the strongest claim of a peer, unless this node has a stronger one.
    fn acknowledge(&mut self, g: GroupId, peers: &[(NodeId, GroupReport)], out: &mut Vec<Action>) {
        let me = self.me();
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
    }

    /// Phase 5: a claim outstanding activates once every online peer acknowledged it, if this
    /// node still may (the isolation that excused STARTING=DENY may have ended meanwhile), or
    /// is dropped after two timeouts or when a peer with another configuration appears. Returns
    /// whether a claim was outstanding (then there is no election).
    fn settle_claim(&mut self, now: Instant, g: GroupId, out: &mut Vec<Action>) -> bool {
        let me = self.me();
        if let Some((claim, _)) = self.groups[g].claim
            && !claim.forced
            && !self.eligible(me, g)
        {
            self.groups[g].claim = None;
            out.push(Action::SendNow);
        }
        let Some((claim, since)) = self.groups[g].claim else {
            return false;
        };
        let all_acked = (0..self.peers.len())
            .filter(|n| *n != me && self.peers[*n].online)
            .all(|n| {
                self.fresh_report(n)
                    .is_some_and(|r| r.groups[g].ack == Some((me, claim.epoch)))
            });
        if all_acked && !(self.someone_unheard() && now < self.cautious_until) {
            self.activate(now, g, claim.epoch, out);
        } else if now.saturating_since(since) > 2 * self.timeout() || self.mismatched_peer() {
            self.groups[g].claim = None;
        }
        true
    }

    /// Some online peer runs another configuration.
    fn mismatched_peer(&self) -> bool {
        self.peers
            .iter()
            .enumerate()
            .any(|(n, p)| n != self.me() && p.online && p.mismatch)
    }

    /// Phase 6, the election: only when the group is wanted, runs nowhere and this node
    /// acknowledges no one else's claim. The designated node (a handoff's target, else the
    /// first eligible node of the policy) claims it.
    fn elect(
        &mut self,
        now: Instant,
        g: GroupId,
        peers: &[(NodeId, GroupReport)],
        out: &mut Vec<Action>,
    ) {
        let me = self.me();
        if !self.groups[g].wanted
            || self.groups[g].ack.is_some()
            // Handed over and not yet taken: leave it to the target.
            || self.groups[g].handoff.is_some()
            || self.shutting_down
            // About to restart: the next life adopts what runs here and takes the rest. And
            // not while a restart hold's promise runs: a peer's lease may rest on it.
            || self.restarting.is_some()
            || now < self.promise_until
            || !self.ready
            || self.mismatched_peer()
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
                                    .is_some_and(|t| now.saturating_since(t) < self.cfg.wait)
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

    pub(crate) fn claim(&mut self, now: Instant, g: GroupId, forced: bool, out: &mut Vec<Action>) {
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
}
