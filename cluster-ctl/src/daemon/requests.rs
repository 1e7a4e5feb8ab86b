//! Requests from the control socket, the peer API and the metrics endpoint: status views and
//! operator commands (`clpgrp`), mapped onto the engine's commands.

use std::collections::BTreeMap;

use anyhow::Result;

use super::Daemon;
use crate::{
    catalog,
    config::Config,
    control::{GroupOp, Request, Response},
    status::{Extras, HeartbeatView, StatusView, SyncView, XdpView},
};
use cluster_engine::{Command, Instant as EngineInstant};

impl Daemon {
    pub(super) fn control(&mut self, now: EngineInstant, request: Request) -> Result<Response> {
        Ok(match request {
            Request::Status => Response::Status {
                view: Box::new(self.status_view(now)?),
            },
            Request::Restart => self.announce_restart(now)?,
            // Answered by the control thread (peer API); never reaches the loop.
            Request::Remote { host, .. } => Response::Error {
                message: format!("{host}: not forwarded"),
            },
            Request::HelperCopies { copies } => {
                match self.conntrackd.as_ref().and_then(|c| c.helpers()) {
                    None => Response::Refused {
                        message: "this server does not replicate helpers' state (no [sync])".into(),
                    },
                    Some(helpers) => match helpers.receive(copies) {
                        Ok(count) => Response::Accepted {
                            message: format!("{count} copies"),
                        },
                        Err(e) => {
                            tracing::warn!(
                                id = catalog::PACKET_REJECTED.id,
                                error = %e,
                                "helpers' state from a peer refused"
                            );
                            Response::Refused {
                                message: e.to_string(),
                            }
                        }
                    },
                }
            }
            Request::Group { op, group, to } => {
                let command = match command_for(&self.config, op, &group, to.as_deref()) {
                    Ok(command) => command,
                    Err(refused) => return Ok(refused),
                };
                match self.engine.command(now, command) {
                    Ok(actions) => {
                        tracing::warn!(id = catalog::COMMAND.id, ?op, group, "command accepted");
                        self.execute(actions)?;
                        Response::Accepted {
                            message: format!("{op:?} of {group} accepted").to_lowercase(),
                        }
                    }
                    Err(refusal) => {
                        tracing::warn!(id = catalog::COMMAND.id, ?op, group, refusal = %refusal, "command refused");
                        Response::Refused {
                            message: refusal.to_string(),
                        }
                    }
                }
            }
        })
    }

    fn status_view(&self, now: EngineInstant) -> Result<StatusView> {
        let xdp_counters = self
            .dataplane
            .counters()?
            .named()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let status = self.engine.status(now);
        let sync = self.conntrackd.as_ref().map(|conntrackd| {
            SyncView::build(
                &status,
                self.sync_watch.state(),
                &conntrackd.snapshot(),
                conntrackd.pid(),
                std::time::Instant::now(),
            )
        });
        let extras = Extras {
            xdp: self
                .dataplane
                .attachments()?
                .into_iter()
                .map(|a| XdpView {
                    interface: a.ifname,
                    mode: a.mode.as_str().to_uppercase(),
                })
                .collect(),
            xdp_counters,
            rejected_packets: self
                .transport
                .rejected
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            exec_pids: self.resources.exec_pids(),
            flow_buckets: self.flowshares.owned_by(self.engine.config().me as u32),
            takeovers: self.takeovers.clone(),
            heartbeats: self.heartbeat_views(),
            proxy_arp_macs: self.proxy_arp_macs(),
            sync,
            incarnation: self.incarnation,
            restart: self.restart_note.clone(),
        };
        Ok(StatusView::build(&self.config, &status, extras))
    }
}

impl Daemon {
    /// The MAC each proxy-ARP address is answered with: the configured one, else its
    /// interface's (as the data path was given it).
    fn proxy_arp_macs(&self) -> BTreeMap<String, String> {
        let mut macs = BTreeMap::new();
        for group in &self.config.group {
            for (k, parp) in group.parp.iter().enumerate() {
                let mac = match parp.mac {
                    Some(mac) => mac.0,
                    None => match crate::netif::interface_mac(&parp.interface) {
                        Ok(mac) => mac,
                        Err(_) => continue,
                    },
                };
                macs.insert(
                    format!("{}-parp{k}", group.name),
                    crate::config::Mac(mac).to_string().to_uppercase(),
                );
            }
        }
        macs
    }

    /// Heartbeats per peer and link, every link of every peer (also one that never delivered:
    /// its heartbeats may be dropped by the local firewall).
    fn heartbeat_views(&self) -> Vec<HeartbeatView> {
        let stats = self.transport.links.snapshot();
        let drops = self.transport.local_drops.snapshot();
        let me = self.engine.config().me;
        let links = self
            .config
            .server
            .get(me)
            .map_or(0, |s| s.interconnect.len());
        let mut views = Vec::new();
        for (peer, server) in self.config.server.iter().enumerate() {
            if peer == me {
                continue;
            }
            for link in 0..links {
                let s = stats.get(&(peer, link)).copied().unwrap_or_default();
                views.push(HeartbeatView {
                    peer: server.name.clone(),
                    link,
                    received: s.received,
                    max_gap_us: s.max_gap.as_micros() as u64,
                    dropped_locally_on: drops.get(&(peer, link)).cloned(),
                });
            }
        }
        views
    }
}

/// The engine command for a `clpgrp` request, or the refusal when it names a group or server
/// the configuration does not have.
fn command_for(
    config: &Config,
    op: GroupOp,
    group: &str,
    to: Option<&str>,
) -> Result<Command, Response> {
    let Some(g) = config.group.iter().position(|c| c.name == group) else {
        return Err(Response::Refused {
            message: format!("no group named {group}"),
        });
    };
    let to = match to {
        None => None,
        Some(name) => match config.server_index(name) {
            Some(n) => Some(n),
            None => {
                return Err(Response::Refused {
                    message: format!("no server named {name}"),
                });
            }
        },
    };
    Ok(match op {
        GroupOp::Start => Command::Start { group: g },
        GroupOp::Stop => Command::Stop { group: g },
        GroupOp::Move => Command::Move { group: g, to },
    })
}
