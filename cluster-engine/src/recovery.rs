//! Failures and their recovery actions (R-RES-2): retries, failover with STARTING=DENY, stop;
//! IPW verdicts; a lease the data path refused.

use crate::{
    Action, Cause, DeactReason, DenyCause, Engine, GroupId, GroupState, Handoff, Instant, Notice,
    Recover, Then,
};

impl Engine {
    /// A resource step failed: retry it, or apply its recovery action (R-RES-2).
    pub(crate) fn resource_error(
        &mut self,
        _now: Instant,
        g: GroupId,
        step: usize,
        online: bool,
        out: &mut Vec<Action>,
    ) {
        let spec = self.cfg.groups[g].steps[step].clone();
        let local = &mut self.groups[g];
        local.step_errors |= 1 << step.min(30);
        let used = local.retries[step];
        out.push(Action::Notify(Notice::StepFailed {
            group: g,
            step,
            retry: used,
            of: spec.retry,
        }));
        if spec.recover != Recover::Ignore && used < spec.retry {
            local.retries[step] += 1;
            // Also for a restart of an online group's step: a deactivation that starts meanwhile
            // waits for its answer (and undoes it).
            local.activating = Some(step);
            out.push(Action::Activate {
                group: g,
                step,
                reason: local.act_reason,
            });
            return;
        }
        let cause = Cause::Resource { step, ipw: false };
        match spec.recover {
            Recover::Ignore => {
                if !online {
                    self.groups[g].done += 1;
                    self.next_activation_step(g, out);
                }
            }
            Recover::Stop => self.stop_for_error(g, cause, out),
            Recover::Retry | Recover::Failover => {
                let deny = if online && spec.monitored {
                    DenyCause::Process
                } else {
                    DenyCause::Activation
                };
                self.fail_over(g, cause, Some(deny), online, out);
            }
        }
    }

    /// The data path does not answer for a group held here: a resource error with its
    /// recovery. Handed to an eligible node (STARTING=DENY here until an operator clears it),
    /// or, with none, stopped in ERROR: a group shown ONLINE must be answered for.
    pub(crate) fn lease_refused(&mut self, g: GroupId, out: &mut Vec<Action>) {
        if !matches!(
            self.groups[g].state,
            GroupState::Activating | GroupState::Online
        ) {
            return;
        }
        if self.next_eligible(g, false).is_some() {
            self.fail_over(
                g,
                Cause::LeaseRefused,
                Some(DenyCause::Activation),
                false,
                out,
            );
        } else {
            self.stop_for_error(g, Cause::LeaseRefused, out);
        }
    }

    /// Stops the group here for good (until an operator starts it): STOP recovery.
    pub(crate) fn stop_for_error(&mut self, g: GroupId, cause: Cause, out: &mut Vec<Action>) {
        let local = &mut self.groups[g];
        local.admin_epoch += 1;
        local.wanted = false;
        if local.state.holds() {
            self.deactivate(g, DeactReason::Illegal, cause, Then::Error, out);
        } else {
            local.state = GroupState::Error;
        }
    }

    /// FAILOVER recovery: hand the group to the next eligible node. With none (R-FO-3) the group
    /// stays where it is if it is online; a failed activation ends in ERROR.
    pub(crate) fn fail_over(
        &mut self,
        g: GroupId,
        cause: Cause,
        deny: Option<DenyCause>,
        online: bool,
        out: &mut Vec<Action>,
    ) {
        let target = self.next_eligible(g, false);
        if target.is_none() && online {
            out.push(Action::Notify(Notice::FailoverImpossible { group: g }));
            return;
        }
        if let Some(deny) = deny
            && self.groups[g].deny.is_none()
        {
            self.groups[g].deny = Some(deny);
            out.push(Action::Notify(Notice::DenySet {
                group: g,
                cause: deny,
            }));
        }
        let then = match target {
            Some(to) => Then::Offline(Some(Handoff {
                to,
                manual: false,
                failover: true,
            })),
            None => Then::Error,
        };
        self.deactivate(g, DeactReason::Illegal, cause, then, out);
    }

    /// An IPW verdict. What it means for a group held here is decided in [`Engine::holder_duties`]
    /// after every event, not only when the verdict changes: a loss reported while the group
    /// was still activating, or while no other node could take it, acts as soon as the group is
    /// online and a standby is eligible (R-FO-1).
    pub(crate) fn ipw(&mut self, g: GroupId, entry: usize, ok: bool, out: &mut Vec<Action>) {
        let Some(local) = self.groups.get_mut(g) else {
            return;
        };
        let Some(slot) = local.ipw_ok.get_mut(entry) else {
            return;
        };
        if *slot == ok {
            return;
        }
        *slot = ok;
        local.failover_impossible = false;
        if let Some(accepted) = local.ipw_accepted.get_mut(entry) {
            *accepted = false;
        }
        out.push(Action::SendNow);
    }

    /// The first failed IPW entry of a group held here whose recovery applies, if any: moves
    /// the group to an eligible standby (or stops it), and says once when none can take it.
    pub(crate) fn ipw_duties(&mut self, g: GroupId, out: &mut Vec<Action>) -> bool {
        let failed = self.groups[g]
            .ipw_ok
            .iter()
            .enumerate()
            .find(|(entry, ok)| {
                !**ok
                    && !self.groups[g].ipw_accepted[*entry]
                    && self.cfg.groups[g].ipw[*entry] != Recover::Ignore
            })
            .map(|(entry, _)| entry);
        let Some(entry) = failed else {
            return false;
        };
        let cause = Cause::Resource {
            step: entry,
            ipw: true,
        };
        match self.cfg.groups[g].ipw[entry] {
            Recover::Ignore => false,
            Recover::Stop => {
                self.stop_for_error(g, cause, out);
                true
            }
            Recover::Retry | Recover::Failover => {
                if self.next_eligible(g, false).is_some() {
                    self.fail_over(g, cause, Some(DenyCause::Ipw), true, out);
                    true
                } else {
                    if !std::mem::replace(&mut self.groups[g].failover_impossible, true) {
                        out.push(Action::Notify(Notice::FailoverImpossible { group: g }));
                    }
                    false
                }
            }
        }
    }
}
