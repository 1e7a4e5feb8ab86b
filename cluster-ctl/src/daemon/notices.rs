//! What the daemon does with the engine's notices: log them (the catalog), mail the seed's
//! alerts, keep operator placements, and count takeovers for `clpstat` and the metrics.

use super::Daemon;
use crate::{catalog, config::Config, mail::Alert};
use cluster_engine::{ActReason, DeactReason, EngineConfig, Notice};

impl Daemon {
    pub(super) fn on_notice(&mut self, notice: &Notice) {
        catalog::log_notice(self.engine.config(), notice);
        if let Some(mail) = &self.mail
            && let Some(alert) = alert_for(self.engine.config(), &self.config, notice)
            && let Err(e) = mail.send(alert)
        {
            tracing::error!(id = catalog::MAIL_RETRY.id, error = %e, "alert not queued");
        }
        let config = &self.config;
        self.placements
            .record(notice, |g| config.group[g].name.clone());
        if let Notice::GroupOnline {
            group,
            reason: ActReason::Failover,
            cause,
        } = *notice
        {
            *self
                .takeovers
                .entry(self.config.group[group].name.clone())
                .or_default()
                .entry(catalog::cause_label(cause).to_owned())
                .or_default() += 1;
        }
    }
}

/// The seed's alert mail for a notice, if it calls for one: the group went down here, or was
/// taken over here after a failure. The mail names this host and its first interconnect
/// address.
fn alert_for(cfg: &EngineConfig, config: &Config, notice: &Notice) -> Option<Alert> {
    let host = &cfg.nodes[cfg.me];
    let address = config.server[cfg.me]
        .interconnect
        .first()
        .map(|n| n.addr().to_string())
        .unwrap_or_default();
    let group = |g: usize| cfg.groups[g].name.clone();
    match *notice {
        Notice::GroupOffline {
            group: g,
            reason: DeactReason::Illegal,
            cause,
        }
        | Notice::GroupError { group: g, cause } => Some(crate::mail::group_down(
            &group(g),
            host,
            &address,
            &catalog::cause_text(cfg, cause),
        )),
        Notice::GroupOnline {
            group: g,
            reason: ActReason::Failover,
            cause,
        } => Some(crate::mail::takeover(
            &group(g),
            host,
            &address,
            &catalog::cause_text(cfg, cause),
        )),
        _ => None,
    }
}
