//! The last phase of every event: each held group's data-path lease moved as far as the
//! peers' acknowledgements allow (R-SPLIT-1), lapses and resumptions told to operators.

use std::time::Duration;

use crate::{Action, Engine, GroupId, GroupState, Instant, Notice, group_id};

impl Engine {
    /// Until when this node may answer for `g` now (R-SPLIT-1): the oldest send time that the
    /// online peers echoed, plus the lease (longer by a restart hold that came with the echo). `None` while an online peer has echoed nothing yet or
    /// reports holding the group itself (in the same packet as its echo: it may have taken the
    /// group before it heard the heartbeat it echoes). Alone, a node bounds its lease by its own
    /// last heartbeat (sent at every tick): a peer that hears it waits a timeout from then
    /// before it takes over, one that does not hear it either is partitioned from it. Not right
    /// after a stall of its own, though (see [`Engine::notice_stall`]).
    ///
    /// The flag says whether the bound rests on this node being alone.
    pub(crate) fn lease_bound(&self, now: Instant, g: GroupId) -> Option<(Instant, bool)> {
        let lease = self.cfg.lease();
        // Right after a stall of its own, a peer this node does not hear may have taken the
        // group while this node was not sending (see [`Engine::notice_stall`]).
        if now < self.cautious_until && self.someone_unheard() {
            return None;
        }
        let mut oldest: Option<Instant> = None;
        // A restart hold lengthens the lease only while every node that could take the group
        // is online and has promised: one that is offline now may come back, hear this node,
        // and take the group a timeout after this node falls silent.
        let held = self.cfg.groups[g]
            .policy
            .iter()
            .all(|n| *n == self.me() || self.peers.get(*n).is_some_and(|p| p.online));
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
            // A restart hold, granted to this node or asked for by the peer, postpones the
            // peer's takeover by silence by that much: either promise carries the lease.
            let hold = if held {
                peer.echo_hold.max(peer.granted)
            } else {
                Duration::ZERO
            };
            let until = echo + self.cfg.lease_with_hold(hold);
            oldest = Some(oldest.map_or(until, |o| o.min(until)));
        }
        match oldest {
            Some(until) => Some((until, false)),
            None if now >= self.cautious_until => Some((self.last_tick + lease, true)),
            None => None,
        }
    }

    /// Moves the lease of every group held here as far as the acknowledgements allow, and tells
    /// operators when it lapsed or resumed.
    pub(crate) fn keep_leases(&mut self, now: Instant, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            if !matches!(
                self.groups[g].state,
                GroupState::Activating | GroupState::Online
            ) {
                continue;
            }
            let bound = self.lease_bound(now, g);
            let local = &mut self.groups[g];
            // A lease that rested on this node being alone is cut back when that changes: to
            // now without an acknowledgement, to what the acknowledgements allow with one. A
            // peer that appeared may not have heard this node since before it was alone (a
            // one-way failure) and be taking the group over by silence right now; only its
            // echo says what it heard.
            let cut = match bound {
                None => Some(now),
                Some((until, false)) if until < local.lease_until => Some(until.max(now)),
                Some(_) => None,
            };
            if let Some(until) = cut
                && local.alone_lease
                && local.lease_until > now
            {
                local.lease_until = until;
                local.alone_lease = false;
                out.push(Action::RenewLease {
                    group: g,
                    epoch: local.epoch,
                    until,
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
                        after: now.saturating_since(local.lease_until),
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
}
