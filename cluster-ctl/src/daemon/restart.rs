//! `clpcfg restart`: the daemon restarts in place (after an upgrade) and nothing moves.
//!
//! The request announces a restart hold to the peers (see `cluster_engine::restart`). Once
//! the engine says they granted it and the leases here outlast the restart, the worker writes
//! the promise its next life must keep and exits with [`RESTART_EXIT_CODE`], leaving its data
//! path pinned and answering; the supervisor then runs the binary on disk again (the new
//! version) in its own process, whose worker adopts the groups. Not granted in time (a peer
//! offline, one that does not know the hold): the announcement is withdrawn and the daemon
//! runs on, saying why.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::Daemon;
use crate::{catalog, control::Response, dataplane};
use cluster_engine::{Event, Instant as EngineInstant};

/// The worker's exit status for "restart me in place" (EX_TEMPFAIL).
pub const RESTART_EXIT_CODE: i32 = 75;

/// How long the peers have to grant the hold: several round trips at the heartbeat interval,
/// at least two seconds.
fn grant_wait(interval: Duration) -> Duration {
    (20 * interval).max(Duration::from_secs(2))
}

/// An announced restart.
pub(super) struct Announced {
    deadline: std::time::Instant,
}

impl Daemon {
    /// `clpcfg restart` arrived.
    pub(super) fn announce_restart(&mut self, now: EngineInstant) -> Result<Response> {
        if self.restart.is_some() {
            return Ok(Response::Accepted {
                message: "a restart is already announced".into(),
            });
        }
        let wait = grant_wait(self.config.cluster.heartbeat_interval);
        let actions = self.engine.handle(now, Event::PrepareRestart);
        if !self.engine.restarting() {
            return Ok(Response::Refused {
                message: "the daemon is stopping".into(),
            });
        }
        self.restart = Some(Announced {
            deadline: std::time::Instant::now() + wait,
        });
        self.restart_note = Some("announced".into());
        tracing::warn!(
            id = catalog::RESTART_ANNOUNCED.id,
            deadline_ms = wait.as_millis() as u64,
            "in-place restart announced to the peers"
        );
        self.execute(actions)?;
        Ok(Response::Accepted {
            message: format!(
                "restart announced: the daemon exits once the peers granted the hold (within {})",
                humantime::format_duration(wait)
            ),
        })
    }

    /// After every event while a restart is announced: true when the worker must exit for it
    /// now (its promise written); withdrawn when the peers did not grant the hold in time.
    pub(super) fn restart_due(&mut self, now: EngineInstant) -> Result<bool> {
        let Some(announced) = &self.restart else {
            return Ok(false);
        };
        if self.engine.restart_ready(now) {
            let promise = self.engine.restart_promise();
            save_promise(&self.promise_path, promise)?;
            // Flow-share buckets too answer on over the restart, as far as the hold goes.
            if let Some(until) = self.engine.restart_shared_until() {
                let lease = until.saturating_since(self.now());
                if let Err(e) = self.flowshares.hold(&mut self.dataplane, lease) {
                    tracing::error!(
                        id = catalog::LEASE_REFUSED.id,
                        error = %e,
                        "flow-share leases not held over the restart"
                    );
                }
            }
            tracing::warn!(
                id = catalog::RESTART_EXITING.id,
                hold_ms = self.config.cluster.restart_hold.as_millis() as u64,
                "exiting for an in-place restart; the data path keeps answering"
            );
            return Ok(true);
        }
        if std::time::Instant::now() >= announced.deadline {
            let reason = self.restart_obstacle();
            let actions = self.engine.handle(now, Event::CancelRestart);
            self.restart = None;
            tracing::error!(
                id = catalog::RESTART_WITHDRAWN.id,
                reason,
                "in-place restart withdrawn; the daemon runs on"
            );
            self.restart_note = Some(format!("withdrawn: {reason}"));
            self.execute(actions)?;
        }
        Ok(false)
    }

    /// Why the hold was not granted, as far as this node can tell.
    fn restart_obstacle(&self) -> String {
        let status = self.engine.status(self.now());
        let offline: Vec<&str> = self
            .config
            .server
            .iter()
            .enumerate()
            .filter(|(n, _)| !status.online[*n])
            .map(|(_, s)| s.name.as_str())
            .collect();
        if !offline.is_empty() {
            format!(
                "{} offline: a lease cannot be held over the restart without its promise \
                 (stop with `systemctl stop`, which hands the groups over, instead)",
                offline.join(", ")
            )
        } else {
            "the peers did not grant the restart hold, or a group was starting or stopping here \
             (a release without the hold, heartbeats lost: see clpstat -n)"
                .into()
        }
    }
}

/// Where the promise for the next life is kept: the state directory (it must survive the
/// process, and tell a reboot apart by the boot id).
pub(super) fn promise_path(state_dir: &Path, cluster: &str, node: &str) -> PathBuf {
    state_dir.join(format!("{cluster}-{node}.restart-promise"))
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn wall_clock_ns() -> u64 {
    crate::incarnation::wall_clock_ns()
}

fn save_promise(path: &Path, until: EngineInstant) -> Result<()> {
    let text = format!(
        "{} {} {} {}\n",
        boot_id(),
        until.as_nanos(),
        dataplane::monotonic_ns(),
        wall_clock_ns()
    );
    crate::incarnation::write_atomically(path, &text)
        .with_context(|| format!("writing {}", path.display()))
}

/// The promise of the previous life, on this node's clock: as written when the machine did not
/// reboot since; after a reboot (another monotonic clock) what is left of it by the wall
/// clock, counted from now. `None` when there is none left (or it is unreadable: logged).
pub(super) fn load_promise(path: &Path, now: EngineInstant) -> Option<EngineInstant> {
    let text = fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    let parsed = match fields.as_slice() {
        [boot, until, written, wall] => until
            .parse::<u64>()
            .ok()
            .zip(written.parse::<u64>().ok())
            .zip(wall.parse::<u64>().ok())
            .map(|((until, written), wall)| (*boot, until, written, wall)),
        _ => None,
    };
    let Some((boot, until, written, wall)) = parsed else {
        tracing::warn!(path = %path.display(), "unreadable restart promise ignored");
        return None;
    };
    let until = if boot == boot_id() {
        EngineInstant::from_nanos(until)
    } else {
        let promised = until.saturating_sub(written);
        let passed = wall_clock_ns().saturating_sub(wall);
        now + Duration::from_nanos(promised.saturating_sub(passed))
    };
    (until > now).then_some(until)
}
