//! Stopping several processes at the same instant, as a stall of the whole machine would: the
//! cgroup v2 freezer. One write freezes every thread of every process in the cgroup and one write
//! wakes them all, inside the kernel. Signals (SIGSTOP/SIGCONT per process) cannot do that: the
//! processes continue one after another, and a sender fast enough to make that gap small has to
//! run at a real-time priority above the daemons, where anything it does holds a CPU from them.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::LAB_PREFIX;

static FREEZER_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A cgroup of the lab holding processes that are frozen and thawed together. The processes go
/// back to the cgroup they came from on drop.
pub struct Freezer {
    dir: PathBuf,
    /// pid → the cgroup directory it was in.
    homes: Vec<(u32, PathBuf)>,
}

impl Freezer {
    /// Moves `pids` (whole processes, every thread) into a new cgroup of their own.
    pub fn new(pids: &[u32]) -> Result<Self> {
        let root = cgroup2_root()?;
        let dir = root.join(format!(
            "{LAB_PREFIX}{}x-freezer{}",
            std::process::id(),
            FREEZER_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir).with_context(|| format!("creating the cgroup {}", dir.display()))?;
        let mut freezer = Self {
            dir,
            homes: Vec::new(),
        };
        for pid in pids {
            let home = home_of(&root, *pid)?;
            fs::write(freezer.dir.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("moving {pid} into {}", freezer.dir.display()))?;
            freezer.homes.push((*pid, home));
        }
        Ok(freezer)
    }

    /// Freezes every process and returns once the kernel reports all of them frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set(true)?;
        let give_up = Instant::now() + Duration::from_secs(1);
        while !self.frozen()? {
            if Instant::now() >= give_up {
                bail!("{} did not freeze within 1 s", self.dir.display());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    /// Wakes every process at once.
    pub fn thaw(&self) -> Result<()> {
        self.set(false)
    }

    fn set(&self, frozen: bool) -> Result<()> {
        fs::write(
            self.dir.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
        .with_context(|| format!("writing {}/cgroup.freeze", self.dir.display()))
    }

    fn frozen(&self) -> Result<bool> {
        let events = fs::read_to_string(self.dir.join("cgroup.events"))?;
        Ok(events.lines().any(|l| l == "frozen 1"))
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = self.set(false);
        for (pid, home) in &self.homes {
            let _ = fs::write(home.join("cgroup.procs"), pid.to_string());
        }
        let _ = remove_cgroup(&self.dir);
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid system).
fn cgroup2_root() -> Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (mount, fs_type) = line.split_once(" - ")?;
            (fs_type.split_whitespace().next() == Some("cgroup2"))
                .then(|| mount.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .context("no cgroup v2 hierarchy is mounted (the freezer needs one)")
}

/// The cgroup v2 directory of a process.
fn home_of(root: &Path, pid: u32) -> Result<PathBuf> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading the cgroups of {pid}"))?;
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .with_context(|| format!("{pid} is in no cgroup v2"))?;
    Ok(root.join(path.trim_start_matches('/')))
}

/// Removes the lab's freezer cgroups of test processes that are gone, putting anything still
/// in them back at the root of the hierarchy.
pub fn remove_stale() -> Result<()> {
    let Ok(root) = cgroup2_root() else {
        return Ok(());
    };
    let Ok(entries) = fs::read_dir(&root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(LAB_PREFIX)
            .and_then(|r| r.split_once("x-freezer"))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let dir = entry.path();
        let _ = fs::write(dir.join("cgroup.freeze"), "0");
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = fs::write(root.join("cgroup.procs"), pid);
            }
        }
        remove_cgroup(&dir)?;
    }
    Ok(())
}

/// Removes an emptied cgroup; the kernel needs a moment after its last process left or died.
fn remove_cgroup(dir: &Path) -> Result<()> {
    let give_up = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= give_up => {
                return Err(e).with_context(|| format!("removing the cgroup {}", dir.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
