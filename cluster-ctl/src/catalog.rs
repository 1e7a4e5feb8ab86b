//! The log message catalog (R-LOG-1): every state change, cause, resource result and rejected
//! packet is logged with a stable id in the `id` field, so an operator can grep for it and
//! answer "why did it fail over?" from the log alone. `docs/log-catalog.md` lists them.

use cluster_engine::{Cause, EngineConfig, Notice};

/// One catalog entry.
pub struct Message {
    pub id: &'static str,
    pub summary: &'static str,
}

macro_rules! catalog {
    ($($name:ident = $id:literal, $summary:literal;)*) => {
        $(pub const $name: Message = Message { id: $id, summary: $summary };)*
        /// Every message of the catalog.
        pub const ALL: &[Message] = &[$($name),*];
    };
}

catalog! {
    DAEMON_STARTED = "FWC001", "fwclusterd started (node, cluster, incarnation)";
    DAEMON_STOPPING = "FWC002", "SIGTERM received: stopping groups in order and handing them over";
    DAEMON_STOPPED = "FWC003", "fwclusterd stopped after leaving the cluster";
    XDP_ATTACHED = "FWC004", "XDP program attached (interface, native or generic mode, adopted or new)";
    LEASE_REFUSED = "FWC005", "the data path refused a lease operation (stale epoch, not owned)";
    ARP_GUARD = "FWC012", "the nftables ARP guard is in place: the kernel answers no ARP for a cluster address, only the XDP program does (table, addresses, interfaces)";
    LEASE_LAPSED = "FWC010", "a group's lease ran out: the peers stopped acknowledging this server's heartbeats (or it stalled), so its data path does not answer for the group";
    LEASE_RESUMED = "FWC011", "acknowledgements came back (or every peer is gone): the data path answers for the group again (silent time follows)";
    PAUSED = "FWC013", "this daemon ran nothing for half the heartbeat timeout or longer (process stopped, machine stalled or CPU starved): its peers may have declared it dead";
    PROXY_ARP_ON = "FWC014", "kernel proxy ARP is on for an interface with cluster addresses: the kernel may answer ARP beside the XDP program (set net.ipv4.conf.IF.proxy_arp=0)";
    RESTART_ANNOUNCED = "FWC015", "clpcfg restart: an in-place restart is announced to the peers (restart hold); nothing more is taken here until the daemon exits for it";
    RESTART_EXITING = "FWC016", "the peers granted the restart hold: the daemon exits for its in-place restart; the data path answers on until the held leases end (hold_ms)";
    RESTART_WITHDRAWN = "FWC017", "an in-place restart was withdrawn (the peers did not grant the hold in time, or a node of a group's policy is offline): the daemon runs on (reason)";
    RESTART_PROMISE = "FWC018", "started after an in-place restart: no peer is declared dead and nothing is taken alone before the previous life's promise ends (promise_ms)";
    ADOPTED = "FWC006", "a group held by the previous process was adopted from the pinned lease";
    DAEMON_FAILED = "FWC007", "an internal failure of the daemon; cluster recovery action follows";
    CONFIG_RELOADED = "FWC008", "SIGHUP: the configuration file was read again ([mail] changes applied, or unchanged)";
    RELOAD_REFUSED = "FWC009", "SIGHUP: the configuration was not reloaded (invalid file, or changes beyond [mail] that need a restart)";
    PEER_ONLINE = "FWC101", "a peer server is ONLINE (heartbeats arrive)";
    PEER_OFFLINE = "FWC102", "a peer server is OFFLINE (no heartbeat on any interconnect for the timeout, or it left)";
    LINK_UP = "FWC103", "an interconnect to a peer works again";
    LINK_DOWN = "FWC104", "an interconnect to a peer lost its heartbeats (a warning while others work)";
    CONFIG_MISMATCH = "FWC106", "a peer runs a different configuration, or a fwcluster release with another flow hash: its state is ignored, nothing new is started";
    PACKET_REJECTED = "FWC107", "a heartbeat packet was refused (reason: bad_tag, replay, old_incarnation, …)";
    DROPPED_LOCALLY = "FWC108", "a peer's heartbeats reach this server's interface but the local firewall drops them before fwclusterd (accept them: clpcfg nft), or no longer does";
    GROUP_ONLINE = "FWC201", "a group is active on this server (reason ACT_NORMAL/ACT_FAILOVER and cause)";
    GROUP_OFFLINE = "FWC202", "a group was deactivated on this server (reason DEACT_NORMAL/DEACT_ILLEGAL and cause)";
    GROUP_ERROR = "FWC203", "a group stopped in ERROR on this server; an operator must start it";
    FAILOVER_IMPOSSIBLE = "FWC204", "a resource failed but no other server can take the group: it stays here";
    DENY_SET = "FWC205", "STARTING=DENY set for a group on this server (cause)";
    DENY_CLEARED = "FWC206", "STARTING=DENY cleared (target reachable again, clpgrp -s, restart)";
    STEP_DONE = "FWC301", "a resource was activated or deactivated";
    STEP_FAILED = "FWC302", "a resource failed (retry used/max follows)";
    MONITOR = "FWC303", "an IP watch entry changed state (all its targets unreachable, or one reachable again)";
    SYNC_STARTED = "FWC601", "conntrackd started with the configuration generated from [sync]: connection tracking is replicated to the peers (interface, address)";
    SYNC_DIED = "FWC602", "conntrackd exited: new connections are not replicated until it runs again; it is restarted (a warning, not a failover)";
    SYNC_LINK_LOST = "FWC603", "the sync link to a peer is lost (its conntrackd messages stopped while its heartbeats arrive, or this node's conntrackd does not answer): new connections are not replicated; a warning and a mail, not a failover";
    SYNC_LINK_RESTORED = "FWC604", "the sync link to a peer works again: connections are replicated again (what was queued is resent; the whole table when the resend queue overflowed)";
    MAIL_QUEUED = "FWC401", "an alert mail was written to the outbox";
    MAIL_SENT = "FWC402", "an alert mail was accepted by the SMTP server";
    MAIL_RETRY = "FWC403", "an alert mail could not be delivered; it stays queued and is retried";
    COMMAND = "FWC501", "an operator command was executed or refused";
}

/// Stable label of a cause (metrics).
pub fn cause_label(cause: Cause) -> &'static str {
    match cause {
        Cause::PeerDown(_) => "peer_down",
        Cause::Resource { ipw: true, .. } => "ipw",
        Cause::Resource { ipw: false, .. } => "resource",
        Cause::Startup => "startup",
        Cause::Handoff { failover: true, .. } => "handoff_after_failure",
        Cause::Handoff {
            failover: false, ..
        } => "handoff",
        Cause::Command => "command",
        Cause::Failback => "failback",
        Cause::Shutdown => "shutdown",
        Cause::SplitBrain => "split_brain",
        Cause::LeaseLost => "lease_lost",
        Cause::HolderStopped(_) => "holder_stopped",
        Cause::Isolated => "isolated",
        Cause::LeaseRefused => "lease_refused",
    }
}

/// Human text of a cause.
pub fn cause_text(cfg: &EngineConfig, cause: Cause) -> String {
    let node = |n: usize| cfg.nodes.get(n).cloned().unwrap_or_else(|| format!("#{n}"));
    match cause {
        Cause::PeerDown(n) => format!("server {} went down", node(n)),
        Cause::Resource { step, ipw: true } => {
            format!("IP watch entry {step} lost all its targets")
        }
        Cause::Resource { step, ipw: false } => format!("resource step {step} failed"),
        Cause::Startup => "cluster start".into(),
        Cause::Handoff {
            from,
            failover: true,
        } => format!("handed over by {} after a failure there", node(from)),
        Cause::Handoff {
            from,
            failover: false,
        } => format!("handed over by {}", node(from)),
        Cause::Command => "operator command".into(),
        Cause::Failback => "automatic failback to the primary".into(),
        Cause::Shutdown => "server shutdown".into(),
        Cause::SplitBrain => "partition healed; the other server holds a newer epoch".into(),
        Cause::LeaseLost => {
            "the data-path lease had run out (heartbeats not acknowledged, or the daemon was stopped or starved) and another server took the group".into()
        }
        Cause::HolderStopped(n) => format!(
            "it stopped on server {} without being handed over (lease ran out or failure)",
            node(n)
        ),
        Cause::Isolated => "all interconnects lost and no tie-breaker reachable".into(),
        Cause::LeaseRefused => {
            "the data path refused this server's lease, so it could not answer for the group"
                .into()
        }
    }
}

/// Logs an engine notice with its catalog id.
pub fn log_notice(cfg: &EngineConfig, notice: &Notice) {
    let node = |n: usize| cfg.nodes.get(n).cloned().unwrap_or_default();
    let group = |g: usize| {
        cfg.groups
            .get(g)
            .map(|g| g.name.clone())
            .unwrap_or_default()
    };
    match *notice {
        Notice::GroupOnline {
            group: g,
            reason,
            cause,
        } => tracing::warn!(
            id = GROUP_ONLINE.id,
            group = group(g),
            reason = reason.as_env(),
            cause = cause_text(cfg, cause),
            "{} is active on {}",
            group(g),
            node(cfg.me)
        ),
        Notice::GroupOffline {
            group: g,
            reason,
            cause,
        } => tracing::warn!(
            id = GROUP_OFFLINE.id,
            group = group(g),
            reason = reason.as_env(),
            cause = cause_text(cfg, cause),
            "{} is not active on {}",
            group(g),
            node(cfg.me)
        ),
        Notice::GroupError { group: g, cause } => tracing::error!(
            id = GROUP_ERROR.id,
            group = group(g),
            cause = cause_text(cfg, cause),
            "{} stopped in ERROR on {}",
            group(g),
            node(cfg.me)
        ),
        Notice::StepFailed {
            group: g,
            step,
            retry,
            of,
        } => tracing::error!(
            id = STEP_FAILED.id,
            group = group(g),
            resource = cfg
                .groups
                .get(g)
                .and_then(|s| s.steps.get(step))
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            retry = format!("{retry}/{of}"),
            "resource failed"
        ),
        Notice::DenySet { group: g, cause } => tracing::warn!(
            id = DENY_SET.id,
            group = group(g),
            cause = cause.as_str(),
            "STARTING=DENY for {} on {}",
            group(g),
            node(cfg.me)
        ),
        Notice::DenyCleared { group: g } => tracing::info!(
            id = DENY_CLEARED.id,
            group = group(g),
            "STARTING=ALLOW for {} on {}",
            group(g),
            node(cfg.me)
        ),
        Notice::FailoverImpossible { group: g } => tracing::error!(
            id = FAILOVER_IMPOSSIBLE.id,
            group = group(g),
            "no other server can take {}: it stays on {}",
            group(g),
            node(cfg.me)
        ),
        Notice::PeerOnline { peer } => {
            tracing::info!(
                id = PEER_ONLINE.id,
                peer = node(peer),
                "server {} is ONLINE",
                node(peer)
            )
        }
        Notice::PeerOffline { peer, silent_for } => match silent_for {
            Some(silence) => tracing::warn!(
                id = PEER_OFFLINE.id,
                peer = node(peer),
                silent_ms = format!("{:.1}", silence.as_secs_f64() * 1e3),
                "server {} is OFFLINE: nothing heard on any interconnect",
                node(peer)
            ),
            None => tracing::warn!(
                id = PEER_OFFLINE.id,
                peer = node(peer),
                "server {} is OFFLINE: it left the cluster",
                node(peer)
            ),
        },
        Notice::LinkUp { peer, link } => tracing::info!(
            id = LINK_UP.id,
            peer = node(peer),
            link,
            "interconnect {link} to {} works",
            node(peer)
        ),
        Notice::LinkDown { peer, link } => tracing::warn!(
            id = LINK_DOWN.id,
            peer = node(peer),
            link,
            "interconnect {link} to {} lost",
            node(peer)
        ),
        Notice::ConfigMismatch { peer } => tracing::error!(
            id = CONFIG_MISMATCH.id,
            peer = node(peer),
            "server {} runs a different configuration or a fwcluster release with another flow \
             hash; make both files identical and run one release on every node",
            node(peer)
        ),
        Notice::LeaseLapsed { group: g } => tracing::warn!(
            id = LEASE_LAPSED.id,
            group = group(g),
            "{}: lease ran out on {}: no peer acknowledged its recent heartbeats, so it does not \
             answer for the group until they do (check the interconnects in both directions)",
            group(g),
            node(cfg.me)
        ),
        Notice::Paused { gap } => tracing::warn!(
            id = PAUSED.id,
            paused_ms = format!("{:.1}", gap.as_secs_f64() * 1e3),
            "fwclusterd on {} did not get to run its loop for {:.1} ms (heartbeat timeout {:.1} \
             ms): its heartbeats stopped meanwhile; give it a CPU (realtime_priority, a quieter \
             machine) or a longer heartbeat_timeout",
            node(cfg.me),
            gap.as_secs_f64() * 1e3,
            cfg.timeout.as_secs_f64() * 1e3
        ),
        Notice::LeaseResumed { group: g, after } => tracing::warn!(
            id = LEASE_RESUMED.id,
            group = group(g),
            silent_ms = format!("{:.1}", after.as_secs_f64() * 1e3),
            "{}: lease resumed on {} after {:.1} ms without answering",
            group(g),
            node(cfg.me),
            after.as_secs_f64() * 1e3
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_documented_catalog_lists_every_message() {
        let doc = include_str!("../../docs/log-catalog.md");
        let mut ids = std::collections::BTreeSet::new();
        for message in super::ALL {
            assert!(ids.insert(message.id), "{} used twice", message.id);
            assert!(
                doc.contains(&format!("| {} | {} |", message.id, message.summary)),
                "docs/log-catalog.md lacks {}",
                message.id
            );
        }
    }
}
