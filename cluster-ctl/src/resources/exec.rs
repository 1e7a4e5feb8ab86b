//! EXEC resources: start and stop scripts with the seed's environment, timeouts for hung
//! scripts, and monitored processes whose death is a resource error.
//!
//! A monitored process outlives a daemon that is killed or restarted (the group keeps running
//! on the pinned lease), so each one is recorded (pid and start time) in a private state
//! directory; the next daemon adopts the processes of the groups it adopts and watches them
//! through a pidfd, and kills the ones whose group it did not adopt.

use std::{
    collections::BTreeMap,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

use cluster_engine::{ActReason, DeactReason, GroupId};

use super::{Deliver, Reported, StepOutcome};

#[derive(Clone, Debug)]
pub struct Exec {
    pub name: String,
    pub start: String,
    pub stop: String,
    pub monitor: bool,
    pub timeout: Duration,
}

/// What scripts learn from their environment.
#[derive(Clone, Debug)]
pub struct Env {
    pub cluster: String,
    pub node: String,
    pub groups: Vec<String>,
}

/// Monitored processes that run now: (group, step) → (pid, generation).
pub struct Running {
    children: BTreeMap<(GroupId, usize), (i32, u64)>,
    generation: u64,
    records: Records,
}

/// The on-disk record of the monitored processes: one file per (group, step) holding the pid
/// and the process's start time (so a reused pid is never mistaken for it).
#[derive(Clone, Debug)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Opens (creating) the private state directory `dir`.
    pub fn open(dir: PathBuf) -> Result<Self> {
        crate::private::private_dir(&dir, "state directory")?;
        Ok(Self { dir })
    }

    fn path(&self, group: GroupId, step: usize) -> PathBuf {
        self.dir.join(format!("group{group}-step{step}.pid"))
    }

    fn write(&self, group: GroupId, step: usize, pid: i32) {
        let Some(started) = start_time(pid) else {
            return;
        };
        let path = self.path(group, step);
        let temporary = path.with_extension("tmp");
        let written = std::fs::write(&temporary, format!("{pid} {started}\n"))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(e) = written {
            tracing::error!(file = %path.display(), error = %e, "cannot record a monitored process");
        }
    }

    fn remove(&self, group: GroupId, step: usize) {
        let _ = std::fs::remove_file(self.path(group, step));
    }

    /// The recorded process of (group, step), if it still runs.
    fn alive(&self, group: GroupId, step: usize) -> Option<i32> {
        let text = std::fs::read_to_string(self.path(group, step)).ok()?;
        let (pid, started) = text.trim().split_once(' ')?;
        let pid: i32 = pid.parse().ok()?;
        (start_time(pid)? == started.parse::<u64>().ok()?).then_some(pid)
    }

    /// Every recorded (group, step).
    fn all(&self) -> Vec<(GroupId, usize)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (group, step) = name
                    .strip_suffix(".pid")?
                    .strip_prefix("group")?
                    .split_once("-step")?;
                Some((group.parse().ok()?, step.parse().ok()?))
            })
            .collect()
    }
}

/// Start time of a process (clock ticks after boot, field 22 of /proc/PID/stat).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Running {
    pub fn new(records: Records) -> Self {
        Self {
            children: BTreeMap::new(),
            generation: 0,
            records,
        }
    }

    /// Kills the recorded processes of groups this daemon did not adopt (their lease ran out
    /// while no daemon ran, so the group runs elsewhere now), and forgets them.
    pub fn kill_unadopted(&self, adopted: &[bool]) {
        for (group, step) in self.records.all() {
            if adopted.get(group).copied().unwrap_or(false) {
                continue;
            }
            if let Some(pid) = self.records.alive(group, step) {
                tracing::warn!(
                    group,
                    step,
                    pid,
                    "killing a monitored process of a group not held any more"
                );
                kill_group(pid);
            }
            self.records.remove(group, step);
        }
    }

    /// (group, step) → pid of every running monitored process.
    pub fn pids(&self) -> Vec<((GroupId, usize), u32)> {
        self.children
            .iter()
            .map(|(k, (pid, _))| (*k, *pid as u32))
            .collect()
    }
}

/// How long a monitored process must stay up to count as started.
const START_GRACE: Duration = Duration::from_millis(200);

fn command(line: &str, exec: &Exec, env: &Env, group: GroupId, event: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(line)
        .env("FWCLUSTER_EVENT", event)
        .env("FWCLUSTER_CLUSTER", &env.cluster)
        .env("FWCLUSTER_NODE", &env.node)
        .env(
            "FWCLUSTER_GROUP",
            env.groups.get(group).cloned().unwrap_or_default(),
        )
        .env("FWCLUSTER_RESOURCE", &exec.name)
        .stdin(Stdio::null())
        // Its own process group, so a timeout or a stop reaches everything it started.
        .process_group(0);
    // SAFETY: sched_setscheduler, sigemptyset and sigprocmask are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // Scripts run with normal scheduling, not the daemon's real-time priority.
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
            // The daemon blocks SIGTERM/SIGINT/SIGHUP in every thread (one thread waits for
            // them); a script must not inherit that, or a monitored process ignores the
            // SIGTERM that stops it.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    command
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill_group(pid: i32) {
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Runs a script to completion within the resource's timeout.
fn run_script(line: &str, exec: &Exec, env: &Env, group: GroupId, event: &str) -> Result<()> {
    let mut child = command(line, exec, env, group, event)
        .spawn()
        .with_context(|| format!("starting {line:?}"))?;
    match wait_with_timeout(&mut child, exec.timeout)? {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("{line:?} failed ({status})"),
        None => {
            kill_group(child.id() as i32);
            let _ = child.wait();
            bail!(
                "{line:?} hung: killed after {}",
                humantime::format_duration(exec.timeout)
            )
        }
    }
}

/// Starts the resource: runs the start script, or for a monitored resource starts the process
/// and watches it.
pub fn start(
    exec: &Exec,
    env: &Env,
    group: GroupId,
    reason: ActReason,
    running: &Arc<Mutex<Running>>,
    step: usize,
    deliver: Deliver,
) -> Result<()> {
    if !exec.monitor {
        return run_script(&exec.start, exec, env, group, reason.as_env());
    }
    let mut child = command(&exec.start, exec, env, group, reason.as_env())
        .spawn()
        .with_context(|| format!("starting {:?}", exec.start))?;
    std::thread::sleep(START_GRACE);
    if let Some(status) = child.try_wait()? {
        bail!("{:?} exited at once ({status})", exec.start);
    }
    let pid = child.id() as i32;
    watch(running, &exec.name, group, step, pid, deliver, move || {
        format!("{:?}", child.wait())
    });
    Ok(())
}

/// Takes over the monitored process a previous daemon recorded for (group, step); false when
/// it does not run any more (it died while no daemon watched it).
pub fn adopt(
    exec: &Exec,
    running: &Arc<Mutex<Running>>,
    group: GroupId,
    step: usize,
    deliver: Deliver,
) -> bool {
    let Some(pid) = running
        .lock()
        .expect("running lock")
        .records
        .alive(group, step)
    else {
        return false;
    };
    let Some(pidfd) = pidfd(pid) else {
        return false;
    };
    tracing::warn!(
        resource = exec.name,
        pid,
        "adopted a monitored process of the previous daemon"
    );
    watch(running, &exec.name, group, step, pid, deliver, move || {
        // A pidfd becomes readable when the process exits (it is not our child to wait for).
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&pidfd),
            nix::poll::PollFlags::POLLIN,
        )];
        while let Err(nix::errno::Errno::EINTR) =
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE)
        {}
        "exited (adopted process)".to_owned()
    });
    true
}

/// A descriptor that becomes readable when process `pid` exits.
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no memory arguments; a non-negative result is a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: the descriptor was just opened and is owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Registers a monitored process and watches it on a thread: `wait` returns when it exits.
fn watch(
    running: &Arc<Mutex<Running>>,
    name: &str,
    group: GroupId,
    step: usize,
    pid: i32,
    deliver: Deliver,
    wait: impl FnOnce() -> String + Send + 'static,
) {
    let generation = {
        let mut r = running.lock().expect("running lock");
        r.generation += 1;
        let generation = r.generation;
        r.children.insert((group, step), (pid, generation));
        generation
    };
    // The file is written outside the lock: status requests on the daemon's loop read it.
    let records = running.lock().expect("running lock").records.clone();
    records.write(group, step, pid);
    let running = running.clone();
    let name = name.to_owned();
    std::thread::spawn(move || {
        let status = wait();
        let mut r = running.lock().expect("running lock");
        // A stop removed the entry first: that death was asked for.
        if r.children.get(&(group, step)).map(|(_, g)| *g) == Some(generation) {
            r.children.remove(&(group, step));
            r.records.remove(group, step);
            drop(r);
            tracing::error!(
                id = crate::catalog::STEP_FAILED.id,
                resource = name,
                status,
                "monitored process died"
            );
            deliver(Reported::Step(StepOutcome {
                group,
                step,
                ok: false,
                died: true,
            }));
        }
    });
}

/// Stops the resource: runs the stop script; a monitored process still running afterwards is
/// terminated (SIGTERM, then SIGKILL).
pub fn stop(
    exec: &Exec,
    env: &Env,
    group: GroupId,
    reason: DeactReason,
    running: &Arc<Mutex<Running>>,
    step: usize,
) -> Result<()> {
    let (child, records) = {
        let mut r = running.lock().expect("running lock");
        (r.children.remove(&(group, step)), r.records.clone())
    };
    records.remove(group, step);
    let result = run_script(&exec.stop, exec, env, group, reason.as_env());
    if let Some((pid, _)) = child {
        // A pidfd becomes readable when the process has exited, whoever its parent is (an
        // adopted process is not our child) and even while nobody has reaped it yet.
        let exited = pidfd(pid);
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        if let Some(fd) = &exited {
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(fd),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2000u16));
        }
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        tracing::debug!(resource = exec.name, pid, "monitored process stopped");
    }
    result
}
