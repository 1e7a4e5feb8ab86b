//! EXEC resources: start and stop scripts with the seed's environment, timeouts for hung
//! scripts, and monitored processes whose death is a resource error.

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt as _,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc::Sender},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

use crate::{
    daemon::Input,
    engine::{ActReason, DeactReason, GroupId},
};

use super::StepOutcome;

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
#[derive(Default)]
pub struct Running {
    children: BTreeMap<(GroupId, usize), (i32, u64)>,
    generation: u64,
}

impl Running {
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
    // SAFETY: sched_setscheduler is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // Scripts run with normal scheduling, not the daemon's real-time priority.
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
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
    inputs: Sender<Input>,
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
    let generation = {
        let mut r = running.lock().expect("running lock");
        r.generation += 1;
        let generation = r.generation;
        r.children.insert((group, step), (pid, generation));
        generation
    };
    let running = running.clone();
    let name = exec.name.clone();
    std::thread::spawn(move || {
        let status = child.wait();
        let mut r = running.lock().expect("running lock");
        // A stop removed the entry first: that death was asked for.
        if r.children.get(&(group, step)).map(|(_, g)| *g) == Some(generation) {
            r.children.remove(&(group, step));
            drop(r);
            tracing::error!(
                id = crate::catalog::STEP_FAILED.id,
                resource = name,
                status = ?status,
                "monitored process died"
            );
            let _ = inputs.send(Input::Step(StepOutcome {
                group,
                step,
                ok: false,
                died: true,
            }));
        }
    });
    Ok(())
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
    let child = running
        .lock()
        .expect("running lock")
        .children
        .remove(&(group, step));
    let result = run_script(&exec.stop, exec, env, group, reason.as_env());
    if let Some((pid, _)) = child {
        let pid = Pid::from_raw(pid);
        let _ = killpg(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(pid, Signal::SIGKILL);
    }
    result
}
