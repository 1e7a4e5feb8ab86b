//! The sync link as the daemon acts on it (R-SYNC-5): its loss is logged and mailed, never a
//! failover; its return is logged and mailed, and the peer gets what it missed.

use super::Daemon;
use crate::{catalog, sync::monitor::SyncLink};

impl Daemon {
    /// Judges the sync link at the tick; acts on a change.
    pub(super) fn watch_sync(&mut self) {
        let Some(conntrackd) = &self.conntrackd else {
            return;
        };
        let cfg = self.engine.config();
        let (me, peer) = (cfg.me, 1 - cfg.me);
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
        let address = self.config.server[me]
            .interconnect
            .first()
            .map(|n| n.addr().to_string())
            .unwrap_or_default();
        let link = self.config.sync.as_ref().map_or(0, |s| s.interconnect);
        let overflows = snapshot
            .stats
            .as_ref()
            .map_or(0, |s| s.resend_queue_overflows);
        let alert = if now.lost() {
            self.sync_overflows_at_loss = Some(overflows);
            let why = match now {
                SyncLink::NotRunning => "conntrackd on this firewall does not answer".to_owned(),
                _ => format!(
                    "no synchronization message from {peer_name} on interconnect {link} for {} s, \
                     while its heartbeats arrive",
                    crate::sync::monitor::SILENCE.as_secs()
                ),
            };
            tracing::warn!(
                id = catalog::SYNC_LINK_LOST.id,
                peer = peer_name,
                link,
                state = now.as_str(),
                "sync link lost: {why}; new connections are not replicated (no failover)"
            );
            Some(crate::mail::sync_lost(host, &address, peer_name, &why))
        } else if before.lost() {
            // FTFW resends what it queued for the peer; only what did not fit is lost, and then
            // the whole table goes (a bulk send has a cost: see `Conntrackd::took_over`).
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
            Some(crate::mail::sync_restored(host, &address, peer_name))
        } else {
            None
        };
        if let (Some(mail), Some(alert)) = (&self.mail, alert)
            && let Err(e) = mail.send(alert)
        {
            tracing::error!(id = catalog::MAIL_RETRY.id, error = %e, "alert not queued");
        }
    }
}
