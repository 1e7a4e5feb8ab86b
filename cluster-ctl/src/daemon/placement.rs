//! The groups an operator placed on this node, kept in `<run_dir>/<node>.placed` (one name per
//! line) so that a restarted daemon that adopts them does not fail them back.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use cluster_engine::{Cause, GroupId, Notice};

pub(super) struct Placements {
    file: PathBuf,
    placed: BTreeSet<String>,
}

impl Placements {
    /// The placements the last run of this node recorded (none when the file is missing).
    pub(super) fn load(run_dir: &Path, node: &str) -> Self {
        let file = run_dir.join(format!("{node}.placed"));
        let placed = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        Self { file, placed }
    }

    pub(super) fn contains(&self, group: &str) -> bool {
        self.placed.contains(group)
    }

    /// Applies what `notice` says about placement (`name_of` names a group); writes the file
    /// when the set changed.
    pub(super) fn record(&mut self, notice: &Notice, name_of: impl Fn(GroupId) -> String) {
        let Some((group, placed)) = placement_change(notice) else {
            return;
        };
        let name = name_of(group);
        let changed = if placed {
            self.placed.insert(name)
        } else {
            self.placed.remove(&name)
        };
        if !changed {
            return;
        }
        let body: String = self.placed.iter().map(|n| format!("{n}\n")).collect();
        if let Err(e) = std::fs::write(&self.file, body) {
            tracing::error!(file = %self.file.display(), error = %e, "cannot record operator placement");
        }
    }
}

/// The group a notice places here by an operator's command (`true`) or takes off this node
/// (`false`); `None` when it says nothing about placement.
fn placement_change(notice: &Notice) -> Option<(GroupId, bool)> {
    match *notice {
        Notice::GroupOnline { group, cause, .. } => Some((group, cause == Cause::Command)),
        Notice::GroupOffline { group, .. } | Notice::GroupError { group, .. } => {
            Some((group, false))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_engine::{ActReason, DeactReason};

    #[test]
    fn only_a_start_by_command_places_a_group_and_any_stop_unplaces_it() {
        let online = |cause| Notice::GroupOnline {
            group: 1,
            reason: ActReason::Normal,
            cause,
        };
        assert_eq!(placement_change(&online(Cause::Command)), Some((1, true)));
        assert_eq!(placement_change(&online(Cause::Startup)), Some((1, false)));
        let offline = Notice::GroupOffline {
            group: 2,
            reason: DeactReason::Normal,
            cause: Cause::Command,
        };
        assert_eq!(placement_change(&offline), Some((2, false)));
        assert_eq!(
            placement_change(&Notice::GroupError {
                group: 0,
                cause: Cause::Startup
            }),
            Some((0, false))
        );
        assert_eq!(placement_change(&Notice::PeerOnline { peer: 1 }), None);
    }

    #[test]
    fn placements_survive_a_restart_in_their_file() {
        let dir = std::env::temp_dir().join(format!("fwcluster-placement-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let name_of = |g: GroupId| format!("group{g}");
        let mut placements = Placements::load(&dir, "fws1");
        assert!(!placements.contains("group1"));
        placements.record(
            &Notice::GroupOnline {
                group: 1,
                reason: ActReason::Normal,
                cause: Cause::Command,
            },
            name_of,
        );
        let reloaded = Placements::load(&dir, "fws1");
        assert!(reloaded.contains("group1") && !reloaded.contains("group0"));
        placements.record(
            &Notice::GroupOffline {
                group: 1,
                reason: DeactReason::Normal,
                cause: Cause::Command,
            },
            name_of,
        );
        assert!(!Placements::load(&dir, "fws1").contains("group1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
