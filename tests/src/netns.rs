//! Running code and commands inside a network namespace.
//!
//! Only the network namespace is switched (no mount namespace as `ip netns exec` makes), so the
//! processes keep seeing the machine's bpffs and their pins outlive them.

use std::{ffi::CString, fs::File, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result};
use nix::sched::{CloneFlags, setns};

fn netns_path(ns: &str) -> String {
    format!("/var/run/netns/{ns}")
}

/// A command that will run in network namespace `ns`.
pub fn netns_command(ns: &str, program: &str) -> Command {
    let path = CString::new(netns_path(ns)).expect("namespace names have no NUL");
    let mut command = Command::new(program);
    // SAFETY: only async-signal-safe calls (open, setns, close) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let rc = libc::setns(fd, libc::CLONE_NEWNET);
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if rc != 0 {
                return Err(error);
            }
            Ok(())
        });
    }
    command
}

/// Runs `f` on a new thread that has entered network namespace `ns`, and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = netns_path(ns);
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::spawn(move || -> Result<T> {
        // The thread's namespace changes, not the process's: other threads are unaffected.
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The processes inside network namespace `ns`.
pub fn processes(ns: &str) -> Result<Vec<u32>> {
    let output = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .context("spawning ip netns pids")?;
    anyhow::ensure!(
        output.status.success(),
        "ip netns pids {ns}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// A process's command line, for messages (empty once it is gone).
pub fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
