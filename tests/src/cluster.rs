//! Real `fwclusterd` processes in a lab: configuration and key files, start, stop, kill, and
//! reading their logs.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::Lab;

/// The `fwclusterd` binary of this build (built on demand).
pub fn fwclusterd() -> Result<PathBuf> {
    binary("fwclusterd")
}

/// A binary of the cluster-ctl package, built with the profile of the running test.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().context("exe dir")?.to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    let release = dir.ends_with("release");
    let mut build = std::process::Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "cluster-ctl", "--bin", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        build.arg("--release");
    }
    let status = build.status().context("building cluster-ctl binaries")?;
    if !status.success() {
        bail!("cargo build -p cluster-ctl --bin {name} failed");
    }
    Ok(path)
}

/// A cluster of daemons in a lab.
/// The ways of starting a daemon that the README describes.
#[derive(Clone, Debug)]
pub enum Launch {
    /// In the host's mount namespace, entering only the network namespace (`nsenter --net`,
    /// systemd's `NetworkNamespacePath=`): the lab's way.
    Setns,
    /// `ip netns exec NS fwclusterd …`, which also gives the daemon a mount namespace of its
    /// own with a fresh /sys; optionally with `--pin-root`.
    IpNetnsExec { pin_root: Option<PathBuf> },
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    daemons: BTreeMap<String, Child>,
    logs: BTreeMap<String, PathBuf>,
    binary: PathBuf,
}

/// Writes a random cluster key readable only by its owner.
pub fn write_key(path: &Path) -> Result<()> {
    let mut key = [0u8; 32];
    getrandom(&mut key)?;
    let mut file = fs::File::create(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{}", hex_encode(&key))?;
    Ok(())
}

fn getrandom(buffer: &mut [u8]) -> Result<()> {
    let mut file = fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut file, buffer)?;
    Ok(())
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// Prepares a cluster whose configuration is `config_body` (everything after `[cluster]`'s
    /// name and key, which this fills in: the cluster is named after the lab so its pins are
    /// the lab's).
    pub fn new(lab: &Lab, config_body: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fwcluster-test")
            .tempdir()?;
        let key = dir.path().join("cluster.key");
        write_key(&key)?;
        let config = dir.path().join("cluster.toml");
        // `{dir}` in the body stands for this cluster's private directory (outboxes etc.).
        let text = format!(
            "[cluster]\nname = \"{}\"\nkey_file = \"{}\"\n{}",
            lab.prefix(),
            key.display(),
            config_body.replace("{dir}", &dir.path().display().to_string())
        );
        fs::write(&config, text)?;
        // The tools a test runs against the daemons are built now, not on their first use:
        // a build beside daemons at 30 ms timeouts starves them into false failovers.
        for tool in ["clpstat", "clpgrp", "clpcfg"] {
            binary(tool)?;
        }
        Ok(Self {
            dir,
            config,
            daemons: BTreeMap::new(),
            logs: BTreeMap::new(),
            binary: fwclusterd()?,
        })
    }

    /// Runs `binary` as fwclusterd from now on instead of this build's (an installed
    /// package's).
    pub fn use_binary(&mut self, binary: PathBuf) {
        self.binary = binary;
    }

    /// Starts the daemon of `host` inside its namespace; its log goes to a file.
    pub fn start(&mut self, lab: &Lab, host: &str) -> Result<()> {
        self.start_with(lab, host, &Launch::Setns)
    }

    /// Starts the daemon of `host` the way `launch` says.
    pub fn start_with(&mut self, lab: &Lab, host: &str, launch: &Launch) -> Result<()> {
        let log_path = self.dir.path().join(format!("{host}.log"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let run_dir = self.run_dir(host);
        fs::create_dir_all(&run_dir)?;
        let binary = self.binary.to_str().context("path")?;
        let mut command = match launch {
            Launch::Setns => lab.command(host, binary),
            Launch::IpNetnsExec { pin_root } => {
                let mut command = std::process::Command::new("ip");
                command.args(["netns", "exec", lab.ns(host), binary]);
                if let Some(root) = pin_root {
                    command.arg("--pin-root").arg(root);
                }
                command
            }
        };
        let child = command
            .arg("--config")
            .arg(&self.config)
            .args(["--node", host])
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--state-dir")
            .arg(self.state_dir(host))
            .env(
                "RUST_LOG",
                std::env::var("FWCLUSTER_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting fwclusterd on {host}"))?;
        self.daemons.insert(host.to_owned(), child);
        self.logs.insert(host.to_owned(), log_path);
        Ok(())
    }

    pub fn pid(&self, host: &str) -> Option<u32> {
        self.daemons.get(host).map(Child::id)
    }

    /// The worker process the daemon (a supervisor) runs.
    pub fn worker_pid(&self, host: &str) -> Option<u32> {
        let pid = self.pid(host)?;
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Sends `signal` to the daemon of `host`.
    pub fn signal(&self, host: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self
            .pid(host)
            .with_context(|| format!("no daemon on {host}"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// SIGKILL of the supervisor and its worker at once (a crash of the whole daemon).
    pub fn kill_all(&mut self, host: &str) -> Result<()> {
        let worker = self.worker_pid(host);
        if let Some(mut child) = self.daemons.remove(host) {
            // The supervisor first, so that it cannot start a new worker.
            child.kill()?;
            if let Some(worker) = worker {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(worker as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            child.wait()?;
        }
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(&mut self, host: &str) -> Result<()> {
        if let Some(mut child) = self.daemons.remove(host) {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, and wait for the daemon to exit (at most `timeout`).
    pub fn stop(&mut self, host: &str, timeout: Duration) -> Result<()> {
        let Some(mut child) = self.daemons.remove(host) else {
            return Ok(());
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("fwclusterd on {host} exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("fwclusterd on {host} did not stop within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The run directory of a host's daemon (its control socket, conntrackd's files).
    pub fn run_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("run-{host}"))
    }

    /// The state directory of a host's daemon (its incarnations).
    pub fn state_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("state-{host}"))
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The control socket of a host's daemon (a file: reachable from any namespace).
    pub fn socket(&self, host: &str) -> PathBuf {
        cluster_ctl::control::socket_path(&self.run_dir(host), host)
    }

    /// The status view of a host's daemon.
    pub fn status(&self, host: &str) -> Result<cluster_ctl::status::StatusView> {
        match cluster_ctl::control::request(
            &self.socket(host),
            &cluster_ctl::control::Request::Status,
        )? {
            cluster_ctl::control::Response::Status { view } => Ok(*view),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Runs an operator tool (`clpstat`, `clpgrp`) inside a host's namespace against its
    /// daemon; returns its exit success and output (stdout then stderr).
    pub fn tool(&self, lab: &Lab, host: &str, name: &str, args: &[&str]) -> Result<(bool, String)> {
        let binary = binary(name)?;
        let output = lab
            .command(host, binary.to_str().context("path")?)
            .args(args)
            .args(["--node", host, "--run-dir"])
            .arg(self.run_dir(host))
            .output()?;
        Ok((
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ))
    }

    /// Where group `group` is ONLINE according to `host`'s daemon.
    pub fn holder(&self, host: &str, group: &str) -> Result<Option<String>> {
        let view = self.status(host)?;
        let g = view
            .groups
            .iter()
            .find(|g| g.name == group)
            .context("no such group")?;
        Ok(g.states
            .iter()
            .position(|s| s == "ONLINE")
            .map(|n| view.servers[n].name.clone()))
    }

    /// Waits until `host` reports `group` ONLINE on `on`.
    pub fn wait_holder(&self, host: &str, group: &str, on: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.holder(host, group).ok().flatten().as_deref() == Some(on) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{group} not ONLINE on {on} (as {host} sees it) within {timeout:?}; logs:\n{}",
                    self.all_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the daemon process still runs.
    pub fn running(&mut self, host: &str) -> bool {
        self.daemons
            .get_mut(host)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The log of a host.
    pub fn log(&self, host: &str) -> String {
        self.logs
            .get(host)
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Every daemon's log, headed by its host.
    pub fn all_logs(&self) -> String {
        self.logs
            .keys()
            .map(|h| format!("--- {h} ---\n{}", self.log(h)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last `lines` lines of every daemon's log, headed by its host.
    pub fn all_logs_tail(&self, lines: usize) -> String {
        self.logs
            .keys()
            .map(|h| {
                let log = self.log(h);
                let all: Vec<&str> = log.lines().collect();
                format!(
                    "--- {h} (last {lines} lines) ---\n{}",
                    all[all.len().saturating_sub(lines)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Log lines of a host with message id `id`.
    pub fn lines_with(&self, host: &str, id: &str) -> Vec<String> {
        let needle = format!("id=\"{id}\"");
        self.log(host)
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// Fails when a host logged any of `never`: (host, message id, what that would mean).
    pub fn ensure_never_logged(&self, never: &[(&str, &str, &str)]) -> Result<()> {
        for (host, id, what) in never {
            ensure!(
                self.lines_with(host, id).is_empty(),
                "{what} ({host} logged {id}):\n{}",
                self.log(host)
            );
        }
        Ok(())
    }

    /// Waits until `host` logged a line with `id` containing `text`; returns the line.
    pub fn wait_for(&self, host: &str, id: &str, text: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .lines_with(host, id)
                .into_iter()
                .find(|l| l.contains(text))
            {
                return Ok(line);
            }
            if Instant::now() > deadline {
                bail!(
                    "{host} did not log {id} {text:?} within {timeout:?}; log:\n{}",
                    self.log(host)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.daemons) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The wall-clock time at the start of a log line (RFC 3339, as tracing's fmt writes it).
/// The value of a `key="value"` (or `key=value`) field of a log line.
pub fn line_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split_whitespace().next(),
    }
}

pub fn line_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?;
    let parsed = humantime::parse_rfc3339_weak(stamp.trim_end_matches('Z')).ok()?;
    Some(parsed)
}
