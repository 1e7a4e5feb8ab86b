//! Phase 1 of every event: who is alive on which interconnect, this node's own stalls, and
//! readiness after the startup wait.

use std::time::Duration;

use crate::{Action, Engine, GroupState, Instant, NodeId, Notice, Peer, Report, Silence};

impl Silence {
    pub(crate) fn allowed(self, heard: Instant) -> Duration {
        if heard < self.settling_until {
            2 * self.timeout
        } else {
            self.timeout
        }
    }
}

impl Peer {
    pub(crate) fn new(links: usize) -> Self {
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
            echo_hold: Duration::ZERO,
            granted: Duration::ZERO,
            hold_until: Instant::ZERO,
        }
    }

    /// Forgets what the peer said: it went offline or left (a peer that comes back starts a
    /// new exchange; its clock may even have started over).
    pub(crate) fn forget(&mut self) {
        self.online = false;
        self.forget_exchange();
    }

    pub(crate) fn forget_exchange(&mut self) {
        self.report = None;
        self.held.clear();
        self.newest_sent_at = None;
        self.echo = None;
        self.echo_hold = Duration::ZERO;
        self.granted = Duration::ZERO;
    }

    pub(crate) fn link_ok(&self, link: usize, now: Instant, silence: Silence) -> bool {
        self.heard
            .get(link)
            .copied()
            .flatten()
            .is_some_and(|t| now.saturating_since(t) < silence.allowed(t))
    }

    pub(crate) fn last_heard(&self) -> Option<Instant> {
        self.heard.iter().flatten().copied().max()
    }
}

impl Engine {
    /// Whether this node is past its start-up wait and past the caution that follows a stall
    /// of its own (by then the peers have heard it again).
    pub fn rejoined(&self, now: Instant) -> bool {
        self.ready && now >= self.cautious_until
    }

    /// Until when a silence that begins must last two timeouts (after a stall of this node's
    /// own, R-HB-4); 0 if it never stalled.
    pub fn settling_until(&self) -> Instant {
        self.settling_until
    }

    pub(crate) fn silence(&self) -> Silence {
        Silence {
            timeout: self.timeout(),
            settling_until: self.settling_until,
        }
    }

    pub fn is_online(&self, peer: NodeId) -> bool {
        peer == self.me() || self.peers.get(peer).is_some_and(|p| p.online)
    }

    /// The life of `peer` last heard (its daemon's incarnation; 0: never heard): a change means
    /// the peer's daemon restarted, perhaps within a timeout, with what it kept in memory lost.
    pub fn incarnation_of(&self, peer: NodeId) -> u64 {
        self.peers.get(peer).map_or(0, |p| p.incarnation)
    }

    /// Whether `report` from `from` is the newest heard from that peer: a heartbeat overtaken
    /// by a newer one (another link, a delay) still proves the peer alive, but its report and
    /// echo are older than what is known and are not used.
    pub(crate) fn is_newest(&mut self, from: NodeId, report: &Report) -> bool {
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
    pub(crate) fn notice_stall(&mut self, now: Instant, out: &mut Vec<Action>) {
        let timeout = self.timeout();
        let interval = self.cfg.interval;
        let gap = now.saturating_since(self.last_run);
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

    pub(crate) fn heard(&mut self, now: Instant, from: NodeId, link: usize, out: &mut Vec<Action>) {
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

    pub(crate) fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.expire_peers(now, out);
        if !self.ready {
            let all_seen = self
                .peers
                .iter()
                .enumerate()
                .all(|(n, p)| n == self.cfg.me || p.online);
            let waited = now.saturating_since(self.started) >= self.cfg.alone_wait()
                && now >= self.promise_until;
            if (all_seen || waited) && !self.awaits_sync(now) {
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

    /// With session synchronization, a starting node that finds a peer running a group (or, with
    /// flow share, passing flows: any ready peer) waits `sync_wait` before it is ready
    /// (R-SYNC-3, R-SYNC-4): until then it claims nothing and, since it reports itself not
    /// ready, no group is failed back to it and no flow-share bucket dealt to it. A peer that
    /// runs nothing has no entries to wait for, and a peer that goes silent meanwhile ends the
    /// wait (its groups and buckets must be taken over at once).
    fn awaits_sync(&mut self, now: Instant) -> bool {
        let Some(wait) = self.cfg.sync_wait else {
            return false;
        };
        let me = self.me();
        let flow_share = self.cfg.flow_share;
        let peer_has_entries = (0..self.peers.len())
            .filter(|n| *n != me)
            .filter_map(|n| self.fresh_report(n))
            .any(|r| r.groups.iter().any(|g| g.state.holds()) || (flow_share && r.ready));
        if !peer_has_entries {
            return false;
        }
        let since = *self.sync_since.get_or_insert(now);
        now.saturating_since(since) < wait
    }

    /// Declares links and peers whose heartbeats stopped for the timeout.
    pub(crate) fn expire_peers(&mut self, now: Instant, out: &mut Vec<Action>) {
        let silence = self.silence();
        let timeout = self.timeout();
        let promised = now < self.promise_until;
        for (n, peer) in self.peers.iter_mut().enumerate() {
            if n == self.cfg.me || !peer.online || promised || now < peer.hold_until + timeout {
                continue;
            }
            for link in 0..peer.heard.len() {
                if peer.up[link] && !peer.link_ok(link, now, silence) {
                    peer.up[link] = false;
                    out.push(Action::Notify(Notice::LinkDown { peer: n, link }));
                }
            }
            let last_heard = peer.last_heard();
            let silent_for = last_heard.map(|t| now.saturating_since(t));
            if last_heard.is_none_or(|t| now.saturating_since(t) >= silence.allowed(t)) {
                peer.forget();
                out.push(Action::Notify(Notice::PeerOffline {
                    peer: n,
                    silent_for,
                }));
            }
        }
    }

    /// When the next peer would time out, so the caller can wake up exactly then.
    /// Not before the end of a restart hold or of a promise: nothing expires until then.
    pub fn next_deadline(&self) -> Option<Instant> {
        let silence = self.silence();
        let timeout = self.timeout();
        self.peers
            .iter()
            .enumerate()
            .filter(|(n, p)| *n != self.cfg.me && p.online)
            .flat_map(|(_, p)| {
                let not_before = (p.hold_until + timeout).max(self.promise_until);
                p.heard
                    .iter()
                    .zip(&p.up)
                    .filter(|(_, up)| **up)
                    .filter_map(move |(h, _)| h.map(|t| (t + silence.allowed(t)).max(not_before)))
            })
            .min()
    }

    /// Some peer is not heard (dead, or cut off in one direction or both).
    pub(crate) fn someone_unheard(&self) -> bool {
        self.peers
            .iter()
            .enumerate()
            .any(|(n, p)| n != self.cfg.me && !p.online)
    }

    /// No peer can be heard (all dead, or every interconnect lost).
    pub(crate) fn isolated(&self) -> bool {
        self.cfg.nodes.len() > 1
            && self
                .peers
                .iter()
                .enumerate()
                .all(|(n, p)| n == self.cfg.me || !p.online)
    }

    /// A report of a peer that is online now.
    pub(crate) fn fresh_report(&self, peer: NodeId) -> Option<&Report> {
        let p = self.peers.get(peer)?;
        if p.online && !p.mismatch {
            p.report.as_ref()
        } else {
            None
        }
    }

    /// An authenticated heartbeat: the peer is alive on that link, and its report is used if it
    /// is the newest and names only what exists.
    pub(crate) fn on_heartbeat(
        &mut self,
        now: Instant,
        from: NodeId,
        link: usize,
        report: Report,
        out: &mut Vec<Action>,
    ) {
        self.heard(now, from, link, out);
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
            self.take_hold(now, from, &report);
            self.peers[from].report = Some(report);
        }
    }

    /// A heartbeat of a peer with another configuration: alive, holding what it lists by name.
    pub(crate) fn on_mismatch(
        &mut self,
        now: Instant,
        from: NodeId,
        link: usize,
        report: Report,
        out: &mut Vec<Action>,
    ) {
        self.heard(now, from, link, out);
        if self.is_newest(from, &report) {
            let peer = &mut self.peers[from];
            peer.newest_sent_at = Some(report.sent_at);
            peer.echo = report.echo.filter(|echo| *echo <= now);
            self.take_hold(now, from, &report);
            let peer = &mut self.peers[from];
            peer.held = report.held;
            if !peer.mismatch {
                peer.mismatch = true;
                peer.report = None;
                out.push(Action::Notify(Notice::ConfigMismatch { peer: from }));
            }
        }
    }

    /// A peer said it left after giving up its groups: offline at once, no timeout.
    pub(crate) fn on_leaving(&mut self, from: NodeId, out: &mut Vec<Action>) {
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
}
