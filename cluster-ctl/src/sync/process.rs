//! conntrackd as part of the node: configured from the cluster configuration, started before
//! the node takes anything, watched, and restarted when it dies (its death costs the peer its
//! copy of new connections, not a failover: R-SYNC-5). Stopped with the daemon.

use std::{
    io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use super::{
    PeerState, SyncConfigError, conntrackd_conf,
    helpers::{HelperSync, SendCopies},
    monitor::{self, Shared},
    refresh,
};
use crate::config::Config;

/// Why conntrackd could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SyncProcessError {
    #[error(transparent)]
    Config(#[from] SyncConfigError),
    #[error("no interface holds this server's sync address {0}")]
    NoInterface(std::net::IpAddr),
    #[error("reading this host's interfaces: {0}")]
    Interfaces(#[from] crate::netif::NetifError),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("starting conntrackd (install conntrack-tools: cargo xtask setup, or conntrackd): {0}")]
    Spawn(io::Error),
}

/// The running conntrackd of this node; stopped when dropped.
pub struct Conntrackd {
    conf: PathBuf,
    pid: Arc<AtomicU32>,
    stopping: Arc<AtomicBool>,
    snapshot: Shared,
    helpers: Option<HelperSync>,
}

impl Conntrackd {
    /// Writes the configuration of server `me` into `run_dir` and starts conntrackd, unless the
    /// cluster has no `[sync]` (then `None`). With `fresh_table` (the node runs no group: nothing
    /// was adopted) the kernel's table is emptied first: what it holds is from before this
    /// node went away, its TCP windows since moved on through a peer, and an entry that exists
    /// is not replaced by the peers' resync, which follows at once (`StartupResync`).
    /// What helpers leave goes to the peers with `send_helper_copies` ([`HelperSync`]).
    pub fn start(
        config: &Config,
        me: usize,
        run_dir: &Path,
        fresh_table: bool,
        send_helper_copies: SendCopies,
    ) -> Result<Option<Self>, SyncProcessError> {
        let Some(sync) = &config.sync else {
            return Ok(None);
        };
        let own = config.server[me]
            .interconnect
            .get(sync.interconnect)
            .map(|n| n.addr())
            .ok_or(SyncConfigError::NoAddress {
                node: config.server[me].name.clone(),
                link: sync.interconnect,
            })?;
        let interface = crate::netif::interface_addresses()?
            .into_iter()
            .find(|(_, nets)| nets.iter().any(|n| n.addr() == own))
            .map(|(name, _)| name)
            .ok_or(SyncProcessError::NoInterface(own))?;
        let node = &config.server[me].name;
        let text = conntrackd_conf(config, me, &interface, run_dir, PeerState::Kernel)?;
        let conf = run_dir.join(format!("conntrackd-{node}.conf"));
        std::fs::write(&conf, text).map_err(|source| SyncProcessError::Write {
            path: conf.clone(),
            source,
        })?;
        let spawn = {
            let conf = conf.clone();
            let leftovers =
                ["lock", "ctl"].map(|file| run_dir.join(format!("conntrackd-{node}.{file}")));
            move || {
                // A conntrackd that was killed (alone, or with this node's previous daemon)
                // left its lock and socket, and a new one refuses to start beside the lock.
                // No other conntrackd of the node runs by now: this daemon holds the node's
                // lock, the previous daemon's one has exited (see below), and the watcher
                // waited for its own.
                for leftover in &leftovers {
                    let _ = std::fs::remove_file(leftover);
                }
                let mut command = Command::new("conntrackd");
                command
                    .arg("-C")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                // SAFETY: prctl(2) only, which is async-signal-safe, between fork and exec.
                // conntrackd dies with the thread that started it (this daemon's main thread or
                // its watcher, both as long-lived as the process), also when the daemon is
                // killed: a next daemon must not find the old one holding the sync port.
                unsafe {
                    command.pre_exec(|| {
                        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                            .map_err(io::Error::from)
                    });
                }
                command.spawn()
            }
        };
        if fresh_table {
            let flushed = Command::new("conntrack")
                .arg("-F")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(SyncProcessError::Spawn)?;
            if !flushed.success() {
                tracing::warn!(status = %flushed, "conntrack -F failed: stale entries may stay");
            }
        }
        // The previous daemon's conntrackd gets SIGTERM when that daemon dies, and may still
        // be exiting: on exit it removes its socket and lock, which would be the new one's.
        let socket = run_dir.join(format!("conntrackd-{node}.ctl"));
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::os::unix::net::UnixStream::connect(&socket).is_ok()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let first = spawn().map_err(SyncProcessError::Spawn)?;
        let pid = Arc::new(AtomicU32::new(first.id()));
        let stopping = Arc::new(AtomicBool::new(false));
        let snapshot = monitor::shared();
        monitor::spawn_poller(conf.clone(), snapshot.clone(), stopping.clone())
            .map_err(SyncProcessError::Spawn)?;
        spawn_refresher(snapshot.clone(), stopping.clone()).map_err(SyncProcessError::Spawn)?;
        let helpers =
            match HelperSync::start(send_helper_copies, snapshot.clone(), stopping.clone()) {
                Ok(helpers) => Some(helpers),
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "expectations and sequence adjustments of FTP/SIP sessions are not \
                         replicated: such sessions may not survive a takeover"
                    );
                    None
                }
            };
        // Announced once it answers, so that "started" means replicating. A node that adopted
        // groups (this daemon restarted) has entries the new conntrackd never saw created,
        // some of them perhaps made while none ran: it takes them in and sends them all.
        {
            let (conf, snapshot, socket) = (conf.clone(), snapshot.clone(), socket.clone());
            let link = sync.interconnect;
            std::thread::Builder::new()
                .name("conntrackd-ready".into())
                .spawn(move || {
                    if !wait_for_socket(&socket, Duration::from_secs(5)) {
                        // The watcher reports its death and restarts it.
                        return;
                    }
                    if !fresh_table {
                        resync_and_send(&conf, &snapshot);
                    }
                    tracing::info!(
                        id = crate::catalog::SYNC_STARTED.id,
                        interface,
                        address = %own,
                        "conntrackd started: connection tracking is replicated over \
                         interconnect {link} ({own}), peers' entries kept in the kernel table"
                    );
                })
                .map_err(SyncProcessError::Spawn)?;
        }
        {
            let (pid, stopping, snapshot) = (pid.clone(), stopping.clone(), snapshot.clone());
            let conf = conf.clone();
            std::thread::Builder::new()
                .name("conntrackd".into())
                .spawn(move || {
                    let mut child = first;
                    loop {
                        let status = child.wait();
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        tracing::error!(
                            id = crate::catalog::SYNC_DIED.id,
                            status = ?status,
                            "conntrackd exited: new connections are not replicated until it \
                             runs again; restarting it"
                        );
                        // Not in a tight loop when it cannot start at all.
                        std::thread::sleep(Duration::from_secs(1));
                        match spawn() {
                            Ok(next) => {
                                pid.store(next.id(), Ordering::SeqCst);
                                child = next;
                                // A new conntrackd knows nothing of the kernel's entries: it
                                // takes them in and sends them all, or their updates would not
                                // reach the peers any more.
                                if wait_for_socket(&socket, Duration::from_secs(5)) {
                                    resync_and_send(&conf, &snapshot);
                                    tracing::info!(
                                        id = crate::catalog::SYNC_STARTED.id,
                                        "conntrackd started again and sent its table to the peers"
                                    );
                                }
                            }
                            Err(e) => {
                                tracing::error!(
                                    id = crate::catalog::SYNC_DIED.id,
                                    error = %e,
                                    "conntrackd cannot be started again"
                                );
                                return;
                            }
                        }
                    }
                })
                .map_err(SyncProcessError::Spawn)?;
        }
        Ok(Some(Self {
            conf,
            pid,
            stopping,
            snapshot,
            helpers,
        }))
    }

    /// This node took a group over: the entries its peers injected into its kernel table
    /// become its own in conntrackd's internal cache (`-R`), so that their updates from now on
    /// are replicated back, and the peers get everything at once (`-B`), as conntrack-tools'
    /// own primary-backup script does. In the background: the entries are in the kernel
    /// already, and the takeover does not wait for this.
    ///
    /// The bulk matters for a peer that stays up (a planned move): it re-creates its entries
    /// from it, so their TCP windows are learnt anew from the next packets. Its own entries
    /// stopped seeing the connections at the move, and an acknowledgement of data they never
    /// saw is invalid to them: without the bulk, moving a group back reset its connections
    /// (found by the planned-move test). Expectations are not part of it: fwclusterd replicates
    /// them itself (`sync::helpers`).
    pub fn took_over(&self) {
        let (conf, snapshot) = (self.conf.clone(), self.snapshot.clone());
        let spawned = std::thread::Builder::new()
            .name("conntrackd-claim".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                resync_and_send(&conf, &snapshot);
                monitor::update(&snapshot, |s| s.last_claim = Some(started.elapsed()));
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "conntrackd requests after a takeover not sent");
        }
    }

    /// The sync link works again after a loss and conntrackd's resend queue overflowed
    /// meanwhile: the peers get the whole table (`-B`). In the background.
    pub fn send_table(&self) {
        let (conf, snapshot) = (self.conf.clone(), self.snapshot.clone());
        let spawned = std::thread::Builder::new()
            .name("conntrackd-bulk".into())
            .spawn(move || request(&conf, "-B", &snapshot));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "conntrackd bulk send not started");
        }
    }

    /// The process id of the running conntrackd.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// The replication of what connection-tracking helpers leave (expectations, sequence
    /// adjustments), which fwclusterd does itself.
    pub fn helpers(&self) -> Option<&HelperSync> {
        self.helpers.as_ref()
    }

    /// What conntrackd reported last.
    pub fn snapshot(&self) -> monitor::SyncSnapshot {
        monitor::read(&self.snapshot)
    }
}

/// `-R` (take the kernel's entries into the internal cache) and `-B` (send them all to the
/// peers): after a takeover (see [`Conntrackd::took_over`]), and after a restart of conntrackd
/// (entries created or changed while none ran were never sent).
fn resync_and_send(conf: &Path, snapshot: &Shared) {
    request(conf, "-R", snapshot);
    request(conf, "-B", snapshot);
}

/// One request to the running conntrackd; a bulk send is recorded in the snapshot.
fn request(conf: &Path, request: &str, snapshot: &Shared) {
    let status = Command::new("conntrackd")
        .arg("-C")
        .arg(conf)
        .arg(request)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        tracing::warn!(request, status = ?status, "conntrackd request failed");
    } else if request == "-B" {
        monitor::update(snapshot, |s| {
            s.last_bulk = Some(std::time::SystemTime::now())
        });
    }
}

/// Keeps the peers' copies of the flows this node passes from expiring (see [`refresh`]),
/// until `stopping`.
fn spawn_refresher(snapshot: Shared, stopping: Arc<AtomicBool>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("conntrack-refresh".into())
        .spawn(move || {
            let mut refresher = match refresh::Refresher::new() {
                Ok(refresher) => refresher,
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "the peers' copies of idle-looking UDP and echo flows cannot be kept \
                         from expiring"
                    );
                    return;
                }
            };
            let period = refresher.period();
            monitor::update(&snapshot, |s| s.refresh_period = Some(period));
            let mut failing = false;
            let mut next = std::time::Instant::now() + period;
            while !stopping.load(Ordering::SeqCst) {
                // On a fixed cadence: a reading's own time does not delay the next.
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
                next += period;
                match refresher.run_once() {
                    Ok(stats) => {
                        failing = false;
                        if stats.failed > 0 {
                            tracing::warn!(
                                refused = stats.failed,
                                "the kernel refused refreshes of the peers' copies; they are \
                                 tried again at the next reading"
                            );
                        }
                        monitor::update(&snapshot, |s| s.refresh = Some(stats));
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(
                                error = %e,
                                "the table could not be read to keep the peers' copies of \
                                 flows from expiring; trying again"
                            );
                        }
                    }
                }
            }
        })
        .map(drop)
}

/// Whether conntrackd's control socket appeared within `timeout`.
fn wait_for_socket(socket: &Path, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if socket.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Conntrackd {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
}
