//! A restart of the daemon in place (an upgrade) that moves nothing: the restart hold.
//!
//! The restarting node announces a hold in its heartbeats ([`Report::hold`]). A peer that
//! hears it grants it ([`Report::granted`], at most its own `restart_hold`): it counts the
//! node alive for the hold beyond the timeout, so it takes none of its groups during the
//! restart; and since the node promises to take nothing by silence for as long, the peer's own
//! leases may run that much longer on the node's echoes. Once every online peer acknowledged a
//! held heartbeat, the node's leases (bounded by those acknowledgements, see
//! [`Engine::lease_bound`]) cover the restart, and the daemon may exit: its data path keeps
//! answering from the pins, and the next life adopts it. Should the next life not come, the
//! peers take over when the hold and a timeout have passed, after the leases ran out: the hold
//! lengthens the same lease and promise (R-SPLIT-1), it never lets them overlap.
//!
//! [`Report::hold`]: crate::Report::hold
//! [`Report::granted`]: crate::Report::granted

use std::time::Duration;

use crate::{Action, Engine, GroupState, Instant, NodeId, Report};

impl Engine {
    pub(crate) fn prepare_restart(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.shutting_down || self.restarting.is_some() {
            return;
        }
        self.restarting = Some(now);
        // The peers should hear the hold at once.
        out.push(Action::SendNow);
    }

    /// The announcement is withdrawn; what it promised still holds.
    pub(crate) fn cancel_restart(&mut self) {
        if self.restarting.take().is_some() {
            self.promise_until = self.promise_until.max(self.restart_promise());
        }
    }

    /// A peer's heartbeat, the newest from it: the hold it asks for is granted (up to this
    /// node's own), and the one it granted this node is kept with its echo.
    pub(crate) fn take_hold(&mut self, now: Instant, from: NodeId, report: &Report) {
        let granted = report.hold.min(self.cfg.restart_hold);
        let peer = &mut self.peers[from];
        peer.granted = granted;
        peer.echo_hold = report.granted;
        if granted > Duration::ZERO {
            peer.hold_until = peer.hold_until.max(now + granted);
        }
    }

    /// Whether this node announced a restart.
    pub fn restarting(&self) -> bool {
        self.restarting.is_some()
    }

    /// Whether the daemon may exit for its restart now: every online peer acknowledged a
    /// heartbeat that announced the hold and granted it, every group held here has a lease
    /// that the hold lengthened (beyond what a timeout could give: it outlasts the restart),
    /// and no group is between states (the next life adopts only what runs). Never while a
    /// node that could take a group held here is offline: it would not have promised.
    pub fn restart_ready(&self, now: Instant) -> bool {
        let Some(since) = self.restarting else {
            return false;
        };
        let settled = self.groups.iter().all(|g| {
            g.claim.is_none()
                && match g.state {
                    GroupState::Offline => true,
                    GroupState::Online => g.lease_until > now + self.timeout(),
                    _ => false,
                }
        });
        let acknowledged = self.peers.iter().enumerate().all(|(n, p)| {
            n == self.me()
                || !p.online
                || (p.echo.is_some_and(|echo| echo >= since) && p.echo_hold > Duration::ZERO)
        });
        settled && acknowledged
    }

    /// How long what this node passes for every node at once (flow-share buckets) may go on
    /// answering over the restart: while every peer is online and granted the hold, none of
    /// them deals this node's buckets away before the hold's end, so they stay this node's
    /// until the oldest such echo plus the held lease. `None` otherwise (nothing held).
    pub fn restart_shared_until(&self) -> Option<Instant> {
        self.restarting?;
        let mut until: Option<Instant> = None;
        for (n, peer) in self.peers.iter().enumerate() {
            if n == self.me() {
                continue;
            }
            if !peer.online || peer.echo_hold == Duration::ZERO {
                return None;
            }
            let end = peer.echo? + self.cfg.lease_with_hold(peer.echo_hold);
            until = Some(until.map_or(end, |u| u.min(end)));
        }
        until
    }

    /// Until when the next life must keep this life's promise (no peer declared dead, nothing
    /// taken alone): a peer may have extended its leases by the hold on an echo of its newest
    /// heartbeat heard here, by a timeout and the hold from then. A node that has heard no peer
    /// for that long promised nothing anyone relies on (so a node alone restarts as it starts),
    /// beyond what its previous life promised.
    pub fn restart_promise(&self) -> Instant {
        self.peers
            .iter()
            .enumerate()
            .filter(|(n, _)| *n != self.me())
            .filter_map(|(_, p)| p.last_heard())
            .max()
            .map_or(Instant::ZERO, |heard| {
                heard + self.timeout() + self.cfg.restart_hold
            })
            // A promise inherited from the previous life is passed on.
            .max(self.promise_until)
    }

    /// Keeps the promise of the previous life (see [`Engine::restart_promise`]).
    pub fn keep_promise(&mut self, until: Instant) {
        self.promise_until = self.promise_until.max(until);
    }
}
