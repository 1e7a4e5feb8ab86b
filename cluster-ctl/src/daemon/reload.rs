//! SIGHUP: the configuration file read again. Only `[mail]` applies to a running daemon.

use super::Daemon;
use crate::{catalog, config::Config};

impl Daemon {
    /// SIGHUP: reads the configuration file again. Mail settings apply at once; any other
    /// change would alter what the cluster does (and the digest the nodes compare), so it is
    /// refused as a whole and takes effect when the daemon restarts. A file that does not
    /// validate changes nothing.
    pub(super) fn reload(&mut self) {
        let file = self.config_path.display().to_string();
        let new = match Config::load(&self.config_path) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(
                    id = catalog::RELOAD_REFUSED.id,
                    file,
                    error = %e,
                    "configuration not reloaded: the file is not valid; the running configuration stays"
                );
                return;
            }
        };
        let changed = self.config.changed_sections(&new);
        if changed.iter().any(|section| *section != "mail") {
            tracing::error!(
                id = catalog::RELOAD_REFUSED.id,
                file,
                sections = changed.join(", "),
                "configuration not reloaded: only [mail] changes apply to a running daemon; \
                 restart it (one node after the other) to apply the others"
            );
            return;
        }
        if changed.is_empty() {
            tracing::info!(
                id = catalog::CONFIG_RELOADED.id,
                file,
                "configuration unchanged"
            );
            return;
        }
        let applied = match (&self.mail, &new.mail) {
            (Some(sender), Some(settings)) => sender.reconfigure(settings.clone()),
            (None, Some(settings)) => crate::mail::start_sender(settings.clone(), &self.node)
                .map(|sender| self.mail = Some(sender)),
            // Dropping the sender ends the thread; queued mail stays in the outbox.
            (_, None) => {
                self.mail = None;
                Ok(())
            }
        };
        match applied {
            Ok(()) => {
                self.config.mail = new.mail;
                tracing::info!(
                    id = catalog::CONFIG_RELOADED.id,
                    file,
                    sections = "mail",
                    "configuration reloaded"
                );
            }
            Err(e) => tracing::error!(
                id = catalog::RELOAD_REFUSED.id,
                file,
                error = format!("{e:#}"),
                "mail settings not applied; the running ones stay"
            ),
        }
    }
}
