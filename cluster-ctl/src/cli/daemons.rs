//! `clpcfg restart` and `clpcfg stop`: the fwclusterd daemons running on this machine, found
//! by their processes, restarted in place (an upgrade) or stopped (a removal). The package's
//! maintainer scripts use them, so a daemon started by hand or in a test lab is found as well
//! as systemd's.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser as _;

use crate::{
    cli::fwclusterd,
    config::Config,
    control::{self, Request, Response},
    status::StatusView,
};

/// A running fwclusterd (its supervisor process) and what its command line says.
#[derive(Debug)]
pub struct Running {
    pub pid: u32,
    pub config_path: PathBuf,
    pub node: String,
    pub pin_root: PathBuf,
    pub run_dir: PathBuf,
    pub config: Config,
    /// Its network namespace, held open: where its XDP program and ARP guard are, also once
    /// it has stopped (`None`: this process's own).
    pub netns: Option<fs::File>,
}

impl Running {
    /// Runs `work` in the daemon's network namespace (on a thread of its own, so that this
    /// process stays where it is).
    pub fn in_netns<T: Send>(&self, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let Some(netns) = &self.netns else {
            return work();
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .context("entering the daemon's network namespace")?;
                    work()
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
        })
    }
}

impl Running {
    /// Its control socket.
    pub fn socket(&self) -> PathBuf {
        control::socket_path(&self.run_dir, &self.node)
    }
}

/// Every fwclusterd supervisor running on this machine (workers are left out: each belongs to
/// one). A process whose command line or configuration cannot be read is reported, not fatal.
pub fn running() -> Vec<Running> {
    let mut found = Vec::new();
    for pid in fwclusterd_pids() {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let Ok(cmdline) = fs::read(dir.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        match describe(pid, &dir, &args) {
            Ok(Some(daemon)) => found.push(daemon),
            Ok(None) => {}
            Err(e) => eprintln!("clpcfg: fwclusterd process {pid}: {e:#}"),
        }
    }
    found
}

/// The fwclusterd processes (supervisors and workers) that have not exited, by pid.
pub fn fwclusterd_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "fwclusterd")
                && !exited(*pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether process `pid` has ended: gone, or a zombie its parent has not reaped yet.
pub fn exited(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold anything.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn describe(pid: u32, dir: &Path, args: &[String]) -> Result<Option<Running>> {
    let parsed = fwclusterd::Args::try_parse_from(args).context("reading its command line")?;
    if parsed.worker {
        return Ok(None);
    }
    // A relative configuration path is the daemon's, from its working directory.
    let config_path = if parsed.config.is_absolute() {
        parsed.config.clone()
    } else {
        fs::read_link(dir.join("cwd"))?.join(&parsed.config)
    };
    let config = Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let node = match parsed.node {
        Some(node) => node,
        None => {
            environment_node(dir).map_or_else(|| config.resolve_node(None).map(|(_, n)| n), Ok)?
        }
    };
    // Another namespace than this process's only: entering one's own is pointless.
    let own = fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    let theirs = fs::metadata(dir.join("ns/net")).map(|m| m.ino()).ok();
    let netns = if theirs.is_some() && theirs != own {
        Some(fs::File::open(dir.join("ns/net")).context("opening its network namespace")?)
    } else {
        None
    };
    Ok(Some(Running {
        pid,
        config_path,
        node,
        pin_root: parsed.pin_root,
        run_dir: parsed.run_dir,
        config,
        netns,
    }))
}

/// `FWCLUSTER_NODE` in a process's environment.
fn environment_node(dir: &Path) -> Option<String> {
    let environ = fs::read(dir.join("environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .find_map(|v| v.strip_prefix("FWCLUSTER_NODE=").map(str::to_owned))
}

fn status(socket: &Path) -> Result<StatusView> {
    match control::request(socket, &Request::Status)? {
        Response::Status { view } => Ok(*view),
        other => bail!("unexpected answer {other:?}"),
    }
}

fn held_here(view: &StatusView) -> Vec<String> {
    view.groups
        .iter()
        .filter(|g| g.states.get(view.local).is_some_and(|s| s == "ONLINE"))
        .map(|g| g.name.clone())
        .collect()
}

/// Restarts one daemon in place and waits for its next life; returns what to tell the
/// operator.
pub fn restart(daemon: &Running) -> Result<String> {
    let socket = daemon.socket();
    let before = status(&socket).with_context(|| {
        format!(
            "asking fwclusterd of {} ({})",
            daemon.node,
            socket.display()
        )
    })?;
    if let Some(note) = compatible(&before.version, before.wire_version, before.abi_version)? {
        println!("note: {note}");
    }
    let started = Instant::now();
    match control::request(&socket, &Request::Restart)? {
        Response::Accepted { .. } => {}
        Response::Refused { message } | Response::Error { message } => {
            bail!("{}: restart refused: {message}", daemon.node)
        }
        Response::Status { .. } => bail!("{}: unexpected answer", daemon.node),
    }
    let cluster = &daemon.config.cluster;
    let deadline = started
        + (20 * cluster.heartbeat_interval).max(Duration::from_secs(2))
        + cluster.restart_hold
        + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(10));
        // While the daemon is between lives its socket does not answer.
        if let Ok(view) = status(&socket) {
            if view.incarnation != before.incarnation {
                return Ok(format!(
                    "{}: restarted in place in {} ms, version {} -> {}, holding {} (before: {})",
                    daemon.node,
                    started.elapsed().as_millis(),
                    before.version,
                    view.version,
                    list(&held_here(&view)),
                    list(&held_here(&before)),
                ));
            }
            if let Some(note) = view
                .restart
                .as_deref()
                .filter(|n| n.starts_with("withdrawn"))
            {
                bail!("{}: restart {note}", daemon.node);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{}: no new fwclusterd answered within {} s of the restart (see its log: FWC016, FWC007)",
                daemon.node,
                started.elapsed().as_secs()
            );
        }
    }
}

/// Whether this release (the one on disk, that the restart runs) can take over from the
/// running daemon in place: it must adopt its pinned maps, and the running one must know the
/// restart hold. A new heartbeat wire version is fine: the nodes hear each other as nodes of
/// another configuration until both run it (said here, so the operator does the other next).
/// Returns what the operator should know when it can.
fn compatible(version: &str, wire_version: u8, abi_version: u32) -> Result<Option<String>> {
    use crate::heartbeat::wire;
    if wire_version < 3 {
        bail!(
            "the running fwclusterd ({version}) predates in-place restarts: move its groups to another \
             server (clpgrp -m), then `systemctl restart fwclusterd` (or stop and start it)"
        );
    }
    if abi_version != cluster_common::ABI_VERSION {
        bail!(
            "this release changes the data path's maps (version {} -> {}): the new daemon \
             cannot adopt the running one's. Move the groups to another server (clpgrp -m), \
             then `systemctl stop fwclusterd`, `clpcfg uninstall`, `systemctl start fwclusterd`, \
             and move them back",
            abi_version,
            cluster_common::ABI_VERSION
        );
    }
    Ok((wire_version != wire::VERSION).then(|| {
        format!(
            "this release speaks heartbeat wire version {} (the running one {wire_version}): \
             until every server runs it, they treat each other as servers with another \
             configuration (groups stay where they run, nothing is taken over); upgrade the \
             others next",
            wire::VERSION
        )
    }))
}

fn list(groups: &[String]) -> String {
    if groups.is_empty() {
        "no group".into()
    } else {
        groups.join(", ")
    }
}

/// Stops one daemon as `systemctl stop` does (SIGTERM: its groups handed over) and waits for
/// its process to end.
pub fn stop(daemon: &Running, timeout: Duration) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(daemon.pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("signalling fwclusterd {}", daemon.pid))?;
    let deadline = Instant::now() + timeout;
    while !exited(daemon.pid) {
        if Instant::now() >= deadline {
            bail!(
                "{}: fwclusterd {} still runs {} s after SIGTERM",
                daemon.node,
                daemon.pid,
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::compatible;
    use crate::heartbeat::wire::VERSION;
    use cluster_common::ABI_VERSION;

    #[test]
    fn an_in_place_restart_needs_adoptable_maps_and_a_daemon_that_knows_the_hold() {
        assert_eq!(compatible("0.1.0", VERSION, ABI_VERSION).unwrap(), None);
        let maps = compatible("0.1.0", VERSION, ABI_VERSION - 1).unwrap_err();
        assert!(
            maps.to_string().contains("changes the data path's maps"),
            "{maps}"
        );
        let old = compatible("0.0.9", 2, ABI_VERSION).unwrap_err();
        assert!(
            old.to_string().contains("predates in-place restarts"),
            "{old}"
        );
        let wire = compatible("0.2.0", VERSION + 1, ABI_VERSION)
            .unwrap()
            .unwrap();
        assert!(wire.contains("another configuration"), "{wire}");
    }
}
