//! The daemon's loop: one thread owns the engine and the data path; everything else reaches it
//! through the input channel. When to wake is decided in [`super::wake`].

use std::{
    collections::VecDeque,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::Instant,
};

use anyhow::{Result, bail};

use super::{
    Daemon, Exit, Input,
    wake::{self, WakeKey},
};
use crate::{
    catalog,
    heartbeat::{
        Inbound,
        wire::{Kind, Reject},
    },
};
use cluster_engine::{Event, Instant as EngineInstant};

/// How many queued datagrams per heartbeat socket the loop reads itself before it judges a
/// silence (a few intervals' worth from every peer; more is a flood, left to the receivers).
const QUEUED_READ_LIMIT: usize = 64;

impl Daemon {
    /// Runs until the daemon has left the cluster or exits for an in-place restart.
    pub(super) fn main_loop(&mut self, receiver: &Receiver<Input>) -> Result<Exit> {
        let interval = self.config.cluster.heartbeat_interval;
        // Heartbeats the loop read from the sockets itself, to be handled before anything else.
        let mut queued: VecDeque<Input> = VecDeque::new();
        // The wake-up the sockets were last read for.
        let mut read_for: Option<WakeKey> = None;
        let mut next_tick = Instant::now();
        loop {
            let engine_deadline = self.engine.next_deadline();
            let deadline_in = engine_deadline.map(|at| at.saturating_since(self.now()));
            let woken = wake::wake(Instant::now(), next_tick, deadline_in);
            let mut input = if let Some(input) = queued.pop_front() {
                Some(input)
            } else if woken.tick_due {
                None
            } else if woken.wait.is_zero() {
                // A peer's deadline is due: what already arrived counts first (a heartbeat
                // queued while this thread woke up late must not be judged as silence).
                receiver.try_recv().ok()
            } else {
                match receiver.recv_timeout(woken.wait) {
                    Ok(input) => Some(input),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => bail!("all input channels closed"),
                }
            };
            // Heartbeats still in the kernel count first too: after a stall of the machine this
            // thread often runs before the receiving threads, and the silence it would judge is
            // its own. It reads them itself rather than wait for those threads to be scheduled.
            let key = (next_tick, engine_deadline);
            if wake::read_sockets(input.is_some(), &woken, read_for, key) {
                read_for = Some(key);
                queued.extend(
                    self.transport
                        .read_queued(QUEUED_READ_LIMIT)
                        .into_iter()
                        .map(Input::Heartbeat),
                );
                input = queued.pop_front();
            }
            let now = self.now();
            let event = match input {
                None if Instant::now() < next_tick => Event::Timer,
                None => {
                    next_tick = wake::following_tick(next_tick, interval, Instant::now());
                    if self.on_tick(now)? {
                        return Ok(Exit::Left);
                    }
                    if self.restart_due(now)? {
                        return Ok(Exit::Restart);
                    }
                    continue;
                }
                Some(Input::Heartbeat(Inbound::Packet {
                    from,
                    link,
                    kind,
                    report,
                })) => match kind {
                    Kind::Heartbeat => Event::Heartbeat { from, link, report },
                    Kind::Leaving => Event::Leaving { from },
                },
                Some(Input::Heartbeat(Inbound::Mismatch { from, link, report })) => {
                    Event::Mismatch { from, link, report }
                }
                Some(Input::Heartbeat(Inbound::Rejected {
                    link,
                    source,
                    reason,
                })) => {
                    log_rejected(link, source, reason);
                    continue;
                }
                Some(Input::Step(outcome)) => outcome.into_event(),
                Some(Input::Ipw { group, entry, ok }) => Event::Ipw { group, entry, ok },
                Some(Input::Tiebreaker { reachable }) => Event::Tiebreaker { reachable },
                Some(Input::LeaseRefused { group }) => Event::LeaseRefused { group },
                Some(Input::Control(pending)) => {
                    let response = self.control(now, pending.request)?;
                    let _ = pending.reply.send(response);
                    if self.restart_due(now)? {
                        return Ok(Exit::Restart);
                    }
                    continue;
                }
                Some(Input::Terminate) => {
                    tracing::warn!(id = catalog::DAEMON_STOPPING.id, "stopping");
                    Event::Shutdown
                }
                Some(Input::Reload) => {
                    self.reload();
                    continue;
                }
            };
            let actions = self.engine.handle(now, event);
            if self.execute(actions)? {
                return Ok(Exit::Left);
            }
            if self.restart_due(now)? {
                return Ok(Exit::Restart);
            }
            // Membership may have changed: flow-share buckets move at once, not at the tick.
            self.rebalance();
        }
    }

    /// The tick: the engine's periodic duties, flow-share leases, heartbeats, the watchdog.
    /// Returns true when the daemon must exit.
    fn on_tick(&mut self, now: EngineInstant) -> Result<bool> {
        let actions = self.engine.handle(now, Event::Tick);
        if self.execute(actions)? {
            return Ok(true);
        }
        let rejoined = self.engine.rejoined(now);
        if let Err(e) = self.flowshares.renew(&mut self.dataplane, rejoined) {
            tracing::error!(id = catalog::LEASE_REFUSED.id, error = %e, "flow share");
        }
        self.rebalance();
        self.watch_sync();
        self.send(Kind::Heartbeat);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        Ok(false)
    }
}

/// Every refusal is counted (clpstat, metrics). Stale packets of a known peer (a restored link
/// delivers what it queued; a restarted peer's old packets) are routine: logged at debug level,
/// not as warnings.
fn log_rejected(link: usize, source: std::net::SocketAddr, reason: Reject) {
    if matches!(reason, Reject::Replay | Reject::OldIncarnation) {
        tracing::debug!(
            id = catalog::PACKET_REJECTED.id,
            link,
            %source,
            reason = %reason,
            "stale heartbeat packet refused"
        );
    } else {
        tracing::warn!(
            id = catalog::PACKET_REJECTED.id,
            link,
            %source,
            reason = %reason,
            "heartbeat packet refused"
        );
    }
}
