//! Resource steps: activation in order, deactivation in reverse, the step answers, and a clean
//! shutdown that stops every group and hands it over.

use crate::{
    ActReason, Action, Cause, DeactReason, Engine, GroupId, GroupState, Handoff, Instant, Notice,
    Then,
};

impl Engine {
    pub(crate) fn activate(&mut self, now: Instant, g: GroupId, epoch: u64, out: &mut Vec<Action>) {
        let cause = self.groups[g].act_cause;
        let me = self.me();
        let failover = matches!(
            cause,
            Cause::PeerDown(_) | Cause::Handoff { failover: true, .. }
        ) || matches!(cause, Cause::HolderStopped(n) if n != me);
        // Normally the peers that acknowledged the claim just echoed a heartbeat; without that
        // the lease starts lapsed and begins when they do.
        let (until, alone) = self.lease_bound(now, g).unwrap_or((now, false));
        let local = &mut self.groups[g];
        local.alone_lease = alone;
        local.claim = None;
        local.ack = None;
        local.handoff = None;
        local.state = GroupState::Activating;
        local.epoch = epoch;
        local.max_epoch = local.max_epoch.max(epoch);
        local.done = 0;
        local.step_errors = 0;
        local.act_reason = if failover {
            ActReason::Failover
        } else {
            ActReason::Normal
        };
        local.act_cause = cause;
        local.lease_until = until;
        local.lapsed = false;
        // An operator who starts or moves a group onto a node whose targets are unreachable
        // means it; a node that takes it by election was healthy.
        let by_operator = cause == Cause::Command;
        for (accepted, ok) in local.ipw_accepted.iter_mut().zip(&local.ipw_ok) {
            *accepted = by_operator && !ok;
        }
        out.push(Action::GrantLease {
            group: g,
            epoch,
            until,
        });
        out.push(Action::SendNow);
        self.next_activation_step(g, out);
    }

    pub(crate) fn next_activation_step(&mut self, g: GroupId, out: &mut Vec<Action>) {
        let local = &mut self.groups[g];
        if local.done < self.cfg.groups[g].steps.len() {
            local.activating = Some(local.done);
            out.push(Action::Activate {
                group: g,
                step: local.done,
                reason: local.act_reason,
            });
        } else {
            local.state = GroupState::Online;
            out.push(Action::Notify(Notice::GroupOnline {
                group: g,
                reason: local.act_reason,
                cause: local.act_cause,
            }));
            out.push(Action::SendNow);
        }
    }

    pub(crate) fn deactivate(
        &mut self,
        g: GroupId,
        reason: DeactReason,
        cause: Cause,
        then: Then,
        out: &mut Vec<Action>,
    ) {
        let local = &mut self.groups[g];
        if !matches!(local.state, GroupState::Activating | GroupState::Online) {
            return;
        }
        local.state = GroupState::Deactivating;
        local.deact_reason = reason;
        local.environment = reason.as_env();
        local.deact_cause = cause;
        local.then = then;
        local.claim = None;
        out.push(Action::RevokeLease {
            group: g,
            epoch: local.epoch,
        });
        local.lease_until = Instant::ZERO;
        local.lapsed = false;
        // With an activation step under way, its answer comes first (see `activating`).
        if local.activating.is_none() {
            self.next_deactivation_step(g, out);
        }
    }

    pub(crate) fn next_deactivation_step(&mut self, g: GroupId, out: &mut Vec<Action>) {
        let local = &mut self.groups[g];
        if local.done > 0 {
            out.push(Action::Deactivate {
                group: g,
                step: local.done - 1,
                reason: local.deact_reason,
            });
            return;
        }
        match local.then {
            Then::Offline(handoff) => {
                local.state = GroupState::Offline;
                local.handoff = handoff.map(|h| (h, self.now));
                out.push(Action::Notify(Notice::GroupOffline {
                    group: g,
                    reason: local.deact_reason,
                    cause: local.deact_cause,
                }));
            }
            Then::Error => {
                local.state = GroupState::Error;
                out.push(Action::Notify(Notice::GroupError {
                    group: g,
                    cause: local.deact_cause,
                }));
            }
        }
        out.push(Action::SendNow);
    }

    pub(crate) fn step_done(
        &mut self,
        now: Instant,
        g: GroupId,
        step: usize,
        ok: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(local) = self.groups.get(g) else {
            return;
        };
        match local.state {
            GroupState::Activating if step == local.done => {
                self.groups[g].activating = None;
                if ok {
                    self.groups[g].done += 1;
                    self.next_activation_step(g, out);
                } else {
                    self.resource_error(now, g, step, false, out);
                }
            }
            GroupState::Deactivating if local.activating == Some(step) => {
                // A step of the activation now counts as done; a restarted step of an online
                // group (a retry) already did.
                let counts = ok && step == local.done;
                self.groups[g].activating = None;
                if counts {
                    self.groups[g].done += 1;
                }
                self.next_deactivation_step(g, out);
            }
            GroupState::Deactivating if local.done > 0 && step == local.done - 1 => {
                if !ok {
                    self.groups[g].step_errors |= 1 << step.min(30);
                    out.push(Action::Notify(Notice::StepFailed {
                        group: g,
                        step,
                        retry: 0,
                        of: 0,
                    }));
                }
                self.groups[g].done -= 1;
                self.next_deactivation_step(g, out);
            }
            GroupState::Online if step < local.done => {
                // A retried monitored step was restarted.
                if local.activating == Some(step) {
                    self.groups[g].activating = None;
                }
                if ok {
                    self.groups[g].step_errors &= !(1 << step.min(30));
                } else {
                    self.resource_error(now, g, step, true, out);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn step_failed(
        &mut self,
        now: Instant,
        g: GroupId,
        step: usize,
        out: &mut Vec<Action>,
    ) {
        let Some(local) = self.groups.get(g) else {
            return;
        };
        if local.state == GroupState::Online && step < local.done {
            self.resource_error(now, g, step, true, out);
        }
    }

    /// SIGTERM: every group held here is stopped in order and handed to the next eligible node;
    /// the engine exits once none is held (see [`Engine::reconcile`]).
    pub(crate) fn on_shutdown(&mut self, out: &mut Vec<Action>) {
        self.shutting_down = true;
        for g in 0..self.groups.len() {
            let handoff = self.next_eligible(g, false).map(|to| Handoff {
                to,
                manual: false,
                failover: false,
            });
            match self.groups[g].state {
                GroupState::Online | GroupState::Activating => {
                    self.deactivate(
                        g,
                        DeactReason::Normal,
                        Cause::Shutdown,
                        Then::Offline(handoff),
                        out,
                    );
                }
                _ => self.groups[g].claim = None,
            }
        }
    }
}
