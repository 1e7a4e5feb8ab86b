//! Cluster-level recovery (R-RECOVER-1): `fwclusterd` runs its worker as a child process and,
//! when the worker dies of anything but a clean leave, applies `cluster.recover`: RESTART (up
//! to `cluster.retry` times in a row; the new worker adopts the pinned data path, so a restart
//! within the lease is invisible to clients), STOP, or the opt-in HALT and REBOOT. A worker
//! that exits for an in-place restart (`clpcfg restart`) has the supervisor run the binary on
//! disk again in this same process (an upgraded one: the new version), keeping its PID for
//! systemd.

use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::Path,
    process::{Command, ExitStatus},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use nix::sys::signal::{SigSet, Signal};

use crate::{
    catalog,
    config::{ClusterRecover, Config},
};

/// What the supervisor does after a worker exit.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The worker left cleanly: exit with success.
    Done,
    /// The worker exited for an in-place restart: run the binary again, in this process.
    Reexec,
    Restart,
    Stop,
    Halt,
    Reboot,
}

/// The recovery decision for a worker exit (pure, for tests).
pub fn decide(status: ExitStatus, recover: ClusterRecover, restarts: u32, retry: u32) -> Decision {
    if status.success() {
        return Decision::Done;
    }
    if status.code() == Some(crate::daemon::RESTART_EXIT_CODE) {
        return Decision::Reexec;
    }
    match recover {
        ClusterRecover::Restart if restarts < retry => Decision::Restart,
        ClusterRecover::Restart | ClusterRecover::Stop => Decision::Stop,
        ClusterRecover::Halt => Decision::Halt,
        ClusterRecover::Reboot => Decision::Reboot,
    }
}

/// A worker that ran this long before it died had recovered: the retry count starts over (as
/// systemd's start-limit interval does). Without this, `cluster.retry` failures spread over
/// months would stop the node for good.
pub const STABLE_RUN: Duration = Duration::from_secs(600);

/// The restarts that count against `cluster.retry` when a worker that ran for `uptime` dies.
pub fn restarts_in_a_row(previous: u32, uptime: Duration) -> u32 {
    if uptime >= STABLE_RUN { 0 } else { previous }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "unknown status".into(),
    }
}

/// Runs `worker_args` (this binary with `--worker`) under supervision; returns the exit code.
pub fn run(config_path: &Path, worker_args: &[String]) -> Result<i32> {
    let config = Config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let exe = std::env::current_exe().context("locating fwclusterd")?;
    // Termination signals are forwarded to the worker, which leaves the cluster cleanly; SIGHUP
    // too, which makes it read the configuration again.
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]);
    signals.thread_block().context("blocking signals")?;
    let child_pid = Arc::new(Mutex::new(None::<i32>));
    {
        let child_pid = child_pid.clone();
        std::thread::spawn(move || {
            while let Ok(signal) = signals.wait() {
                if let Some(pid) = *child_pid.lock().expect("pid lock") {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
                }
            }
        });
    }
    let mut restarts = 0;
    loop {
        let mut command = Command::new(&exe);
        command.args(worker_args);
        // SAFETY: prctl and sigprocmask are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                // The worker dies with the supervisor (its pins keep the data path).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The worker handles the signals itself.
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = command.spawn().context("starting the fwclusterd worker")?;
        *child_pid.lock().expect("pid lock") = Some(child.id() as i32);
        let status = child.wait()?;
        *child_pid.lock().expect("pid lock") = None;
        restarts = restarts_in_a_row(restarts, started.elapsed());
        let decision = decide(
            status,
            config.cluster.recover,
            restarts,
            config.cluster.retry,
        );
        if !matches!(decision, Decision::Done | Decision::Reexec) {
            tracing::error!(
                id = catalog::DAEMON_FAILED.id,
                status = describe(status),
                recover = ?config.cluster.recover,
                restarts,
                retry = config.cluster.retry,
                action = ?decision,
                "the fwclusterd worker died"
            );
        }
        match decision {
            Decision::Done => return Ok(0),
            Decision::Reexec => {
                tracing::warn!(
                    id = catalog::RESTART_EXITING.id,
                    exe = %exe.display(),
                    "running fwclusterd again in place"
                );
                // Returns only on failure; the worker's data path stays pinned meanwhile, and
                // a worker of this version adopts it.
                let error = Command::new(&exe).args(std::env::args_os().skip(1)).exec();
                tracing::error!(
                    id = catalog::DAEMON_FAILED.id,
                    error = %error,
                    "running fwclusterd again failed; starting a worker of this version"
                );
            }
            Decision::Restart => restarts += 1,
            Decision::Stop => return Ok(1),
            Decision::Halt | Decision::Reboot => {
                let verb = if decision == Decision::Halt {
                    "poweroff"
                } else {
                    "reboot"
                };
                let result = Command::new("systemctl").arg(verb).status();
                tracing::error!(
                    id = catalog::DAEMON_FAILED.id,
                    verb,
                    ?result,
                    "cluster recovery"
                );
                return Ok(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn recovery_follows_the_configured_action_and_retry_count() {
        let killed = ExitStatus::from_raw(9);
        assert_eq!(
            decide(exited(0), ClusterRecover::Restart, 0, 5),
            Decision::Done
        );
        assert_eq!(
            decide(killed, ClusterRecover::Restart, 4, 5),
            Decision::Restart
        );
        assert_eq!(
            decide(killed, ClusterRecover::Restart, 5, 5),
            Decision::Stop
        );
        assert_eq!(
            decide(exited(1), ClusterRecover::Stop, 0, 5),
            Decision::Stop
        );
        assert_eq!(decide(killed, ClusterRecover::Halt, 0, 5), Decision::Halt);
        // An exit for an in-place restart is no failure, whatever the recovery action.
        assert_eq!(
            decide(exited(75), ClusterRecover::Stop, 5, 5),
            Decision::Reexec
        );
        assert_eq!(
            decide(killed, ClusterRecover::Reboot, 0, 5),
            Decision::Reboot
        );
    }

    #[test]
    fn the_retry_count_starts_over_after_a_stable_run() {
        let killed = ExitStatus::from_raw(9);
        // Two quick deaths with retry = 2: restarted twice, then stopped.
        let mut restarts = 0;
        let mut decisions = Vec::new();
        for uptime in [
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(3),
        ] {
            restarts = restarts_in_a_row(restarts, uptime);
            let decision = decide(killed, ClusterRecover::Restart, restarts, 2);
            if decision == Decision::Restart {
                restarts += 1;
            }
            decisions.push(decision);
        }
        assert_eq!(
            decisions,
            [Decision::Restart, Decision::Restart, Decision::Stop]
        );
        // The same two deaths, then one after a stable run: restarted again.
        assert_eq!(restarts_in_a_row(2, STABLE_RUN - Duration::from_secs(1)), 2);
        assert_eq!(restarts_in_a_row(2, STABLE_RUN), 0);
        assert_eq!(
            decide(
                killed,
                ClusterRecover::Restart,
                restarts_in_a_row(2, STABLE_RUN),
                2
            ),
            Decision::Restart
        );
    }
}
