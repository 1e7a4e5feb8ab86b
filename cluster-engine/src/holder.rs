//! Duties of the node that runs an online group: give way to a newer holder, stop when no longer
//! wanted or isolated without a tie-breaker, move away on an IPW failure, fail back.

use crate::{
    Action, Cause, DeactReason, Engine, Failback, GroupId, GroupReport, Handoff, Instant, NodeId,
    Then, group_id,
};

impl Engine {
    /// Whether the group runs here because an operator moved or started it here.
    pub fn placed_by_operator(&self, group: GroupId) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| g.act_cause == Cause::Command)
    }

    /// Duties of the node holding an online group: conflicts, failback, isolation, stop.
    pub(crate) fn holder_duties(
        &mut self,
        _now: Instant,
        g: GroupId,
        holders: &[(NodeId, GroupReport)],
        out: &mut Vec<Action>,
    ) {
        let me = self.me();
        // Two holders (a partition healed, or a one-way failure): the newer epoch keeps it. A
        // holder with another configuration is known by the group's name; its priorities are
        // not comparable, so the lower node index breaks a tie of epochs.
        let mine = self.groups[g].epoch;
        let id = group_id(&self.cfg.groups[g].name);
        let foreign: Vec<(NodeId, u64)> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(n, p)| *n != me && p.online && p.mismatch)
            .flat_map(|(n, p)| {
                p.held
                    .iter()
                    .filter(|h| h.id == id)
                    .map(move |h| (n, h.epoch))
            })
            .collect();
        let loses = holders.iter().any(|(n, r)| {
            (r.epoch, std::cmp::Reverse(self.priority(g, *n)))
                > (mine, std::cmp::Reverse(self.priority(g, me)))
        }) || foreign
            .iter()
            .any(|(n, epoch)| (*epoch, std::cmp::Reverse(*n)) > (mine, std::cmp::Reverse(me)));
        if loses {
            // With its lease run out here, the other node took the group meanwhile.
            let cause = if self.groups[g].lapsed {
                Cause::LeaseLost
            } else {
                Cause::SplitBrain
            };
            self.deactivate(g, DeactReason::Illegal, cause, Then::Offline(None), out);
            return;
        }
        // Another holder (a partition healed): it will give up; announce again once it did,
        // so clients that followed it come back.
        if !holders.is_empty() || !foreign.is_empty() {
            self.groups[g].contested = true;
            return;
        }
        if std::mem::take(&mut self.groups[g].contested) {
            out.push(Action::Reannounce { group: g });
        }
        if !self.groups[g].wanted {
            self.deactivate(
                g,
                DeactReason::Normal,
                Cause::Command,
                Then::Offline(None),
                out,
            );
            return;
        }
        if self.cfg.tiebreakers && self.isolated() && self.tiebreaker_ok == Some(false) {
            self.deactivate(
                g,
                DeactReason::Illegal,
                Cause::Isolated,
                Then::Offline(None),
                out,
            );
            return;
        }
        if self.ipw_duties(g, out) {
            return;
        }
        // Auto failback returns a group that a failure moved (the seed: "when the primary
        // comes back after it went down"); one an operator moved here stays where it was put.
        if self.cfg.groups[g].failback == Failback::Auto
            && !self.placed_by_operator(g)
            && let Some(best) = self.next_eligible(g, true)
            && best != me
            && self.priority(g, best) < self.priority(g, me)
        {
            self.deactivate(
                g,
                DeactReason::Normal,
                Cause::Failback,
                Then::Offline(Some(Handoff {
                    to: best,
                    manual: false,
                    failover: false,
                })),
                out,
            );
        }
    }
}
