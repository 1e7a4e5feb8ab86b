//! Operator commands (`clpgrp -s|-t|-m`) with the seed's refusal rules (R-CLI-2).

use std::fmt;

use super::{
    Action, Cause, DeactReason, Engine, GroupId, GroupState, Handoff, Instant, NodeId, Notice, Then,
};

/// A command for one group, executed on the node that receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start the group here (`clpgrp -s`); also clears STARTING=DENY here.
    Start { group: GroupId },
    /// Stop the group here (`clpgrp -t`).
    Stop { group: GroupId },
    /// Move the group from here to `to`, or to the next server of its policy (`clpgrp -m`).
    Move { group: GroupId, to: Option<NodeId> },
}

/// Why a command was refused; the text is what `clpgrp` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownGroup(GroupId),
    AlreadyStarted {
        group: String,
        on: String,
        deny_cleared: bool,
    },
    NotStarted {
        group: String,
        here: String,
    },
    RunningElsewhere {
        group: String,
        here: String,
        on: String,
    },
    Busy {
        group: String,
        here: String,
        state: &'static str,
    },
    NoTarget {
        group: String,
    },
    TargetUnavailable {
        group: String,
        target: String,
    },
    ShuttingDown,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownGroup(g) => write!(f, "no group with index {g}"),
            Self::AlreadyStarted {
                group,
                on,
                deny_cleared,
            } => {
                write!(f, "{group} is already started on {on}")?;
                if *deny_cleared {
                    write!(f, " (STARTING=DENY cleared here)")?;
                }
                Ok(())
            }
            Self::NotStarted { group, here } => write!(f, "{group} is not started on {here}"),
            Self::RunningElsewhere { group, here, on } => write!(
                f,
                "{group} is not running on {here} but on {on}; run the command there or use -h {on}"
            ),
            Self::Busy { group, here, state } => {
                write!(f, "{group} is {state} on {here}; try again when it settles")
            }
            Self::NoTarget { group } => write!(f, "no other server can take over {group}"),
            Self::TargetUnavailable { group, target } => {
                write!(f, "{target} cannot take over {group}: it is not online")
            }
            Self::ShuttingDown => write!(f, "the daemon is shutting down"),
        }
    }
}

impl std::error::Error for Refusal {}

impl Engine {
    /// Where a group runs (or is being started), as far as this node knows.
    pub fn running_on(&self, group: GroupId) -> Option<NodeId> {
        let me = self.me();
        let local = &self.groups[group];
        if local.state.holds() || local.claim.is_some() {
            return Some(me);
        }
        (0..self.peers.len()).filter(|n| *n != me).find(|n| {
            self.fresh_report(*n).is_some_and(|r| {
                let g = r.groups[group];
                g.state.holds() || g.claim.is_some()
            })
        })
    }

    /// Executes an operator command at `now`.
    pub fn command(&mut self, now: Instant, command: Command) -> Result<Vec<Action>, Refusal> {
        self.now = self.now.max(now);
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        let group = match command {
            Command::Start { group } | Command::Stop { group } | Command::Move { group, .. } => {
                group
            }
        };
        if group >= self.groups.len() {
            return Err(Refusal::UnknownGroup(group));
        }
        let me = self.me();
        let name = self.cfg.groups[group].name.clone();
        let here = self.cfg.nodes[me].clone();
        let mut out = Vec::new();
        match command {
            Command::Start { group } => {
                // Starting clears STARTING=DENY here, also when the group runs elsewhere.
                let deny_cleared = self.groups[group].deny.take().is_some();
                if deny_cleared {
                    out.push(Action::Notify(Notice::DenyCleared { group }));
                    out.push(Action::SendNow);
                }
                if let Some(on) = self.running_on(group) {
                    self.reconcile(now, &mut out);
                    return Err(Refusal::AlreadyStarted {
                        group: name,
                        on: self.cfg.nodes[on].clone(),
                        deny_cleared,
                    });
                }
                let local = &mut self.groups[group];
                local.retries.iter_mut().for_each(|r| *r = 0);
                local.step_errors = 0;
                if local.state == GroupState::Error {
                    local.state = GroupState::Offline;
                }
                local.admin_epoch += 1;
                local.wanted = true;
                local.handoff = None;
                local.act_cause = Cause::Command;
                self.claim(now, group, true, &mut out);
            }
            Command::Stop { group } => {
                self.require_online_here(group, &name, &here)?;
                let local = &mut self.groups[group];
                local.admin_epoch += 1;
                local.wanted = false;
                self.deactivate(
                    group,
                    DeactReason::Normal,
                    Cause::Command,
                    Then::Offline(None),
                    &mut out,
                );
            }
            Command::Move { group, to } => {
                self.require_online_here(group, &name, &here)?;
                let target = match to {
                    Some(t) if t == me || t >= self.cfg.nodes.len() => {
                        return Err(Refusal::NoTarget { group: name });
                    }
                    Some(t) => t,
                    // The next server of the policy that is online and ready; health and
                    // STARTING=DENY do not stop an operator (R-FO-3).
                    None => self.cfg.groups[group]
                        .policy
                        .iter()
                        .copied()
                        .filter(|n| *n != me)
                        .find(|n| self.fresh_report(*n).is_some_and(|r| r.ready))
                        .ok_or(Refusal::NoTarget {
                            group: name.clone(),
                        })?,
                };
                if !self.fresh_report(target).is_some_and(|r| r.ready) {
                    return Err(Refusal::TargetUnavailable {
                        group: name,
                        target: self.cfg.nodes[target].clone(),
                    });
                }
                self.deactivate(
                    group,
                    DeactReason::Normal,
                    Cause::Command,
                    Then::Offline(Some(Handoff {
                        to: target,
                        manual: true,
                        failover: false,
                    })),
                    &mut out,
                );
            }
        }
        self.reconcile(now, &mut out);
        Ok(out)
    }

    fn require_online_here(&self, group: GroupId, name: &str, here: &str) -> Result<(), Refusal> {
        match self.groups[group].state {
            GroupState::Online => Ok(()),
            GroupState::Activating | GroupState::Deactivating => Err(Refusal::Busy {
                group: name.to_owned(),
                here: here.to_owned(),
                state: self.groups[group].state.as_str(),
            }),
            GroupState::Offline | GroupState::Error => match self.running_on(group) {
                Some(on) => Err(Refusal::RunningElsewhere {
                    group: name.to_owned(),
                    here: here.to_owned(),
                    on: self.cfg.nodes[on].clone(),
                }),
                None => Err(Refusal::NotStarted {
                    group: name.to_owned(),
                    here: here.to_owned(),
                }),
            },
        }
    }
}
