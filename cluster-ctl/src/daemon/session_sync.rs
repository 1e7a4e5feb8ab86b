//! The sync link as the daemon acts on it (R-SYNC-5): its loss is logged and mailed, never a
//! failover; its return is logged and mailed, and the peer gets what it missed.

use super::Daemon;
use crate::{catalog, mail, sync::monitor::SyncLink};

/// What a change of the judged sync link calls for.
#[derive(Debug, PartialEq, Eq)]
enum SyncAlarm {
    /// Lost (from working, or from an offline peer).
    Lost,
    /// Lost still, for another reason (silent ↔ not running): logged, not mailed again.
    StillLost,
    /// Works again after a loss.
    Restored,
    /// Nothing to say (the peer went offline or came back: a membership matter).
    None,
}

/// The alarm for a change from `before` to `now`.
fn alarm(before: SyncLink, now: SyncLink) -> SyncAlarm {
    match (before.lost(), now) {
        (false, now) if now.lost() => SyncAlarm::Lost,
        (true, now) if now.lost() => SyncAlarm::StillLost,
        (true, SyncLink::Up) => SyncAlarm::Restored,
        _ => SyncAlarm::None,
    }
}

impl Daemon {
    /// Judges the sync link at the tick; acts on a change.
    pub(super) fn watch_sync(&mut self) {
        let Some(conntrackd) = &self.conntrackd else {
            return;
        };
        let cfg = self.engine.config();
        let (me, peer) = (cfg.me, 1 - cfg.me);
        if let Some(helpers) = conntrackd.helpers() {
            helpers.set_peer(
                self.engine.is_online(peer),
                self.engine.incarnation_of(peer),
            );
            helpers.set_passing(self.passes_traffic());
        }
        let snapshot = conntrackd.snapshot();
        let Some(before) = self.sync_watch.observe(
            std::time::Instant::now(),
            self.engine.is_online(peer),
            &snapshot,
        ) else {
            return;
        };
        let now = self.sync_watch.state();
        let (host, peer_name) = (&self.config.server[me].name, &self.config.server[peer].name);
        let link = self.config.sync.as_ref().map_or(0, |s| s.interconnect);
        let address = self.config.server[me]
            .interconnect
            .get(link)
            .map(|n| n.addr().to_string())
            .unwrap_or_default();
        let overflows = snapshot
            .stats
            .as_ref()
            .map_or(0, |s| s.resend_queue_overflows);
        let alert = match alarm(before, now) {
            SyncAlarm::Lost | SyncAlarm::StillLost => {
                let first = alarm(before, now) == SyncAlarm::Lost;
                if first {
                    self.sync_overflows_at_loss = Some(overflows);
                }
                // This node judges what reaches it: a silent peer's connections are not copied
                // here; a conntrackd that does not answer here copies nothing either way.
                let (from, to, why) = match now {
                    SyncLink::NotRunning => (
                        host.as_str(),
                        peer_name.as_str(),
                        "conntrackd on this firewall does not answer".to_owned(),
                    ),
                    _ => (
                        peer_name.as_str(),
                        host.as_str(),
                        format!(
                            "no synchronization message from {peer_name} on interconnect {link} \
                             for {} s, while its heartbeats arrive",
                            crate::sync::monitor::SILENCE.as_secs()
                        ),
                    ),
                };
                tracing::warn!(
                    id = catalog::SYNC_LINK_LOST.id,
                    peer = peer_name,
                    link,
                    state = now.as_str(),
                    "sync link lost: {why}; connections opened through {from} from now on are \
                     not copied to {to} (no failover)"
                );
                first.then(|| mail::sync_lost(host, &address, from, to, &why))
            }
            SyncAlarm::Restored => {
                // FTFW resends what it queued for the peer; only what did not fit is lost, and
                // then the whole table goes (a bulk send has a cost: see
                // `Conntrackd::took_over`).
                let overflowed = self
                    .sync_overflows_at_loss
                    .take()
                    .is_some_and(|at_loss| overflows > at_loss);
                tracing::info!(
                    id = catalog::SYNC_LINK_RESTORED.id,
                    peer = peer_name,
                    overflowed,
                    "sync link works again; {}",
                    if overflowed {
                        "the resend queue overflowed meanwhile: sending the whole table"
                    } else {
                        "what was queued meanwhile is resent"
                    }
                );
                if overflowed {
                    conntrackd.send_table();
                }
                Some(mail::sync_restored(host, &address, peer_name))
            }
            SyncAlarm::None => {
                if now == SyncLink::PeerAway {
                    self.sync_overflows_at_loss = None;
                }
                None
            }
        };
        if let (Some(mail), Some(alert)) = (&self.mail, alert)
            && let Err(e) = mail.send(alert)
        {
            tracing::error!(id = catalog::MAIL_RETRY.id, error = %e, "alert not queued");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_is_mailed_once_and_only_a_return_to_working_is_a_restoration() {
        use SyncLink::*;
        assert_eq!(alarm(Up, Silent), SyncAlarm::Lost);
        assert_eq!(alarm(PeerAway, NotRunning), SyncAlarm::Lost);
        assert_eq!(alarm(Silent, NotRunning), SyncAlarm::StillLost);
        assert_eq!(alarm(NotRunning, Silent), SyncAlarm::StillLost);
        assert_eq!(alarm(Silent, Up), SyncAlarm::Restored);
        assert_eq!(alarm(NotRunning, Up), SyncAlarm::Restored);
        // The peer went away while the link was lost: not a restoration.
        assert_eq!(alarm(Silent, PeerAway), SyncAlarm::None);
        assert_eq!(alarm(Up, PeerAway), SyncAlarm::None);
        assert_eq!(alarm(PeerAway, Up), SyncAlarm::None);
    }
}
