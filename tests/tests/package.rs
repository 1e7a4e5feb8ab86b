//! The Debian package, as an operator uses it (issue 20): built with `cargo xtask package`,
//! installed with dpkg on this machine, two daemons run from the installed binaries in the lab,
//! upgraded to a newer package while they hold the gateway (restarted in place: nothing moves,
//! no ARP request unanswered), removed (daemons stopped with handover, programs, pins and
//! guards gone) and purged (configuration and state gone).

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use fwcluster_lab::{
    cluster::Cluster,
    seed::{self, FWS1, FWS2, GROUP0_INET_FIP, INET_CLIENT, INET_IF},
};

const PACKAGE: &str = "fwcluster";

/// The hot standby with 10 ms heartbeats and a 30 ms timeout: an in-place restart takes
/// several timeouts, so only the restart hold keeps the group where it is.
/// The seed's group0 in hot standby with 10 ms heartbeats and a 30 ms timeout: an in-place
/// restart takes several timeouts, so only the restart hold keeps the group where it is.
const CONFIG: &str = concat!(
    r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"
"#,
    fwcluster_lab::seed_servers!(),
    fwcluster_lab::seed_group0!()
);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// `cargo xtask package --version V`: the package's path.
fn build_package(version: &str) -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["xtask", "package", "--version", version])
        .current_dir(workspace())
        .status()
        .context("running cargo xtask package")?;
    ensure!(status.success(), "cargo xtask package failed");
    let deb = workspace().join(format!("target/debian/{PACKAGE}_{version}_amd64.deb"));
    ensure!(deb.exists(), "{} missing", deb.display());
    Ok(deb)
}

fn run(program: &str, args: &[&str]) -> Result<(bool, String)> {
    let output = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .with_context(|| format!("running {program}"))?;
    Ok((
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    ))
}

fn dpkg(args: &[&str]) -> Result<String> {
    let (ok, out) = run("dpkg", args)?;
    ensure!(ok, "dpkg {args:?} failed:\n{out}");
    Ok(out)
}

/// Removes the package whatever happened, so that a failed run leaves the machine clean.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", PACKAGE]);
    }
}

fn installed_version() -> Option<String> {
    let (ok, out) = run("dpkg-query", &["-W", "-f", "${Status} ${Version}", PACKAGE]).ok()?;
    (ok && out.starts_with("install ok installed"))
        .then(|| out.rsplit(' ').next().unwrap_or_default().trim().to_owned())
}

#[test]
fn the_package_installs_upgrades_running_daemons_in_place_and_removes_everything() -> Result<()> {
    let base = env!("CARGO_PKG_VERSION");
    let newer = format!("{base}+upgrade1");
    let first = build_package(base)?;
    let second = build_package(&newer)?;
    let _purge = Purge;
    if installed_version().is_some() {
        dpkg(&["--purge", PACKAGE])?;
    }

    // Install: files, modes, dependencies, the unit.
    let out = dpkg(&["-i", first.to_str().unwrap()])?;
    ensure!(
        out.contains(
            "installed, not started until /etc/fwcluster/cluster.toml and cluster.key exist"
        ),
        "{out}"
    );
    assert_eq!(installed_version().as_deref(), Some(base));
    let files = dpkg(&["-L", PACKAGE])?;
    for file in [
        "/usr/sbin/fwclusterd",
        "/usr/sbin/clpstat",
        "/usr/sbin/clpgrp",
        "/usr/sbin/clpcfg",
        "/lib/systemd/system/fwclusterd.service",
        "/usr/share/man/man8/fwclusterd.8.gz",
        "/usr/share/man/man8/clpstat.8.gz",
        "/usr/share/man/man8/clpgrp.8.gz",
        "/usr/share/man/man8/clpcfg.8.gz",
        "/usr/share/bash-completion/completions/clpstat",
        "/usr/share/zsh/vendor-completions/_clpgrp",
        "/usr/share/fish/vendor_completions.d/clpcfg.fish",
        "/usr/share/doc/fwcluster/examples/hot-standby.toml",
        "/usr/share/doc/fwcluster/examples/load-share.toml",
        "/usr/share/doc/fwcluster/examples/flow-share.toml",
        "/usr/share/doc/fwcluster/examples/firewall.nft",
        "/usr/share/doc/fwcluster/examples/scripts/ckcstat",
        "/usr/share/doc/fwcluster/examples/scripts/ckfwalive",
        "/etc/fwcluster/cluster.toml",
    ] {
        assert!(
            files.lines().any(|l| l == file),
            "{file} not in the package:\n{files}"
        );
        assert!(Path::new(file).exists(), "{file} not installed");
    }
    let mode = |path: &str| std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777);
    assert_eq!(mode("/etc/fwcluster")?, 0o700);
    assert_eq!(mode("/etc/fwcluster/cluster.toml")?, 0o600);
    assert_eq!(mode("/var/lib/fwcluster")?, 0o700);
    assert_eq!(mode("/usr/sbin/fwclusterd")?, 0o755);
    let status = dpkg(&["-s", PACKAGE])?;
    let depends = status
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .context("no Depends")?;
    for needed in ["libc6", "nftables", "iproute2", "conntrack", "conntrackd"] {
        assert!(
            depends.contains(needed),
            "Depends lacks {needed}: {depends}"
        );
    }
    for unwanted in ["llvm", "rustc", "cargo", "clang", "bpf-linker"] {
        assert!(
            !depends.contains(unwanted),
            "Depends has {unwanted}: {depends}"
        );
    }
    assert!(
        dpkg(&["-s", PACKAGE])?.contains("Conffiles:\n /etc/fwcluster/cluster.toml"),
        "the configuration is a conffile"
    );
    let (ok, out) = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/fwclusterd.service"],
    )?;
    assert!(ok, "systemd-analyze verify: {out}");
    let (ok, out) = run("/usr/sbin/fwclusterd", &["--version"])?;
    assert!(ok && out.trim() == format!("fwclusterd {base}"), "{out}");

    // Two daemons from the installed binary, fws1 holding the gateway.
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, CONFIG)?;
    cluster.use_binary(PathBuf::from("/usr/sbin/fwclusterd"));
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    let before = [cluster.status(FWS1)?, cluster.status(FWS2)?];
    let supervisors = [cluster.pid(FWS1).unwrap(), cluster.pid(FWS2).unwrap()];

    // Upgrade while they run: the postinst restarts both in place.
    // A request for the gateway every 5 ms, each answered by fws1 alone.
    let watch = lab.arp_watch(
        INET_CLIENT,
        "eth0",
        vec![GROUP0_INET_FIP],
        Duration::from_millis(5),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let upgrade = std::time::Instant::now();
    let out = dpkg(&["-i", second.to_str().unwrap()])?;
    let upgrade = upgrade.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (sightings, sent) = watch.stop()?;
    // A silence as long as a restart (60-110 ms here) would show as a gap between replies.
    let wrong = fwcluster_lab::arp::not_answered_by(
        &sightings,
        sent,
        lab.mac(FWS1, INET_IF)?,
        Duration::from_millis(30),
    );
    let gap = fwcluster_lab::arp::longest_unanswered(&sightings)
        .get(&GROUP0_INET_FIP)
        .map(|(gap, _)| *gap);
    println!("upgrade ({} ms in dpkg):\n{out}", upgrade.as_millis());
    println!(
        "ARP requests for the gateway during the upgrade: {sent} (every 5 ms); problems: \
         {wrong:?}; longest gap between replies: {gap:?}"
    );
    assert!(out.contains("fws1: restarted in place"), "{out}");
    assert!(out.contains("fws2: restarted in place"), "{out}");
    assert!(out.contains("holding group0 (before: group0)"), "{out}");
    assert_eq!(installed_version().as_deref(), Some(newer.as_str()));
    assert!(sent > 200, "{sent} requests");
    assert!(wrong.is_empty(), "{wrong:?}");
    let installed = std::fs::metadata("/usr/sbin/fwclusterd")?.ino();
    for (n, host) in [FWS1, FWS2].into_iter().enumerate() {
        let after = cluster.status(host)?;
        assert_ne!(
            after.incarnation, before[n].incarnation,
            "{host}: a new daemon"
        );
        // The same process (systemd's main PID stays), now running the new file.
        assert_eq!(cluster.pid(host), Some(supervisors[n]));
        let running = std::fs::metadata(format!("/proc/{}/exe", supervisors[n]))?.ino();
        assert_eq!(running, installed, "{host} runs the upgraded binary");
        assert!(
            !cluster.lines_with(host, "FWC016").is_empty(),
            "{}",
            cluster.log(host)
        );
    }
    assert!(
        !cluster.lines_with(FWS1, "FWC006").is_empty(),
        "adopted: {}",
        cluster.log(FWS1)
    );
    cluster.ensure_never_logged(&[
        (FWS2, "FWC201", "fws2 took the group"),
        (FWS2, "FWC102", "fws2 declared fws1 dead"),
        (FWS1, "FWC102", "fws1 declared fws2 dead"),
        (FWS1, "FWC202", "fws1 deactivated the group"),
        (FWS1, "FWC010", "fws1's lease lapsed"),
    ])?;
    assert_eq!(cluster.holder(FWS2, "group0")?.as_deref(), Some(FWS1));

    // Remove while they run: stopped with handover, then programs, pins and guards removed.
    let pin_dirs: Vec<PathBuf> = [FWS1, FWS2]
        .iter()
        .map(|host| Path::new("/sys/fs/bpf").join(lab.prefix()).join(host))
        .collect();
    assert!(pin_dirs.iter().all(|d| d.exists()));
    let xdp_attached = |host: &str| -> Result<bool> {
        let links = lab.run(host, "ip", &["-d", "link", "show"])?;
        Ok(String::from_utf8_lossy(&links.stdout).contains("xdp"))
    };
    assert!(
        xdp_attached(FWS1)? && xdp_attached(FWS2)?,
        "XDP programs attached while running"
    );
    let out = dpkg(&["-r", PACKAGE])?;
    println!("removal:\n{out}");
    assert!(out.contains("fws1: stopped (groups handed over)"), "{out}");
    assert!(out.contains("fws2: stopped (groups handed over)"), "{out}");
    assert!(
        cluster_ctl::cli::daemons::fwclusterd_pids().is_empty(),
        "{:?}",
        cluster_ctl::cli::daemons::fwclusterd_pids()
    );
    let stopped = cluster.lines_with(FWS1, "FWC202");
    assert!(
        stopped.iter().any(|l| l.contains("DEACT_NORMAL")),
        "fws1 stopped its group normally: {}",
        cluster.log(FWS1)
    );
    for dir in &pin_dirs {
        assert!(!dir.exists(), "{} left", dir.display());
    }
    for host in [FWS1, FWS2] {
        assert!(!xdp_attached(host)?, "{host}: an XDP program is left");
        let tables = lab.run(host, "nft", &["list", "tables"])?;
        let tables = String::from_utf8_lossy(&tables.stdout);
        assert!(!tables.contains("fwcluster_guard"), "{host}: {tables}");
    }
    let (_, programs) = run("bpftool", &["prog", "show"])?;
    assert!(!programs.contains("fwcluster_xdp"), "{programs}");
    for binary in ["fwclusterd", "clpstat", "clpgrp", "clpcfg"] {
        assert!(
            !Path::new("/usr/sbin").join(binary).exists(),
            "{binary} left"
        );
    }
    assert!(
        Path::new("/etc/fwcluster/cluster.toml").exists(),
        "remove keeps the configuration"
    );

    // Purge: configuration and state gone, nothing of the package left.
    dpkg(&["--purge", PACKAGE])?;
    for path in [
        "/etc/fwcluster",
        "/var/lib/fwcluster",
        "/lib/systemd/system/fwclusterd.service",
    ] {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
    assert_eq!(installed_version(), None);
    if Path::new("/sys/fs/bpf").join(lab.prefix()).exists() {
        bail!("the cluster's pin directory is left");
    }
    Ok(())
}
