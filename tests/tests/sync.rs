//! Session synchronization (SPEC §10), the replication underneath: conntrackd on both firewalls,
//! with the configuration fwcluster generates, copies connection-tracking entries from one
//! node's kernel table to the other's external cache over the sync interconnect, and a commit
//! puts them into that node's kernel table.

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use cluster_ctl::{config::Config, sync::conntrackd_conf};
use fwcluster_lab::{
    Lab,
    seed::{self, FWS1, FWS2, IC_IF},
};

/// conntrackd of one firewall, stopped when dropped.
struct Conntrackd {
    child: Child,
}

impl Drop for Conntrackd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(lab: &Lab, host: &str, conf: &Path) -> Result<Conntrackd> {
    let child = lab
        .command(host, "conntrackd")
        .arg("-C")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting conntrackd (cargo xtask setup installs it)")?;
    Ok(Conntrackd { child })
}

fn run(lab: &Lab, host: &str, program: &str, args: &[&str]) -> Result<String> {
    let output = lab.run(host, program, args)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done()? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(false)
}

#[test]
fn conntrackd_with_the_generated_configuration_replicates_entries_and_commits_them() -> Result<()> {
    let lab = seed::build()?;
    let dir = tempfile::tempdir()?;
    let config = Config::parse(
        Path::new("cluster.toml"),
        &format!(
            "[cluster]\nname = \"{}\"\n{}\n[sync]\ninterconnect = 0\n",
            lab.prefix(),
            fwcluster_lab::seed_servers!()
        ),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut daemons = Vec::new();
    let mut confs = Vec::new();
    for (node, host) in [FWS1, FWS2].into_iter().enumerate() {
        let conf = dir.path().join(format!("conntrackd-{host}.conf"));
        std::fs::write(&conf, conntrackd_conf(&config, node, IC_IF, dir.path())?)?;
        daemons.push(start(&lab, host, &conf)?);
        confs.push(conf);
    }
    for host in [FWS1, FWS2] {
        let socket = dir.path().join(format!("conntrackd-{host}.ctl"));
        ensure!(
            wait_until(Duration::from_secs(5), || Ok(socket.exists()))?,
            "conntrackd on {host} did not start: {}",
            std::fs::read_to_string(dir.path().join(format!("conntrackd-{host}.log")))
                .unwrap_or_default()
        );
    }
    // A connection through fws1, NAT'd as hide NAT would: in its kernel table.
    run(
        &lab,
        FWS1,
        "conntrack",
        &[
            "-I",
            "-p",
            "tcp",
            "-s",
            "203.0.113.101",
            "-d",
            "192.0.2.100",
            "--sport",
            "40000",
            "--dport",
            "8080",
            "--state",
            "ESTABLISHED",
            "-t",
            "300",
            "-u",
            "SEEN_REPLY,ASSURED",
            "--reply-src",
            "192.0.2.100",
            "--reply-dst",
            "192.0.2.10",
            "--reply-port-src",
            "8080",
            "--reply-port-dst",
            "40000",
        ],
    )?;
    let fws2_conf = confs[1].to_str().context("path")?;
    let replicated = wait_until(Duration::from_secs(5), || {
        Ok(run(&lab, FWS2, "conntrackd", &["-C", fws2_conf, "-e"])?.contains("203.0.113.101"))
    })?;
    ensure!(
        replicated,
        "fws2's external cache lacks the entry: {}",
        run(&lab, FWS2, "conntrackd", &["-C", fws2_conf, "-e"])?
    );
    // Not in fws2's kernel table until committed; then there, NAT binding included.
    let listed = |host| run(&lab, host, "conntrack", &["-L", "-p", "tcp"]);
    ensure!(
        !listed(FWS2)?.contains("203.0.113.101"),
        "{}",
        listed(FWS2)?
    );
    run(&lab, FWS2, "conntrackd", &["-C", fws2_conf, "-c"])?;
    let committed = listed(FWS2)?;
    ensure!(
        committed.contains("src=203.0.113.101")
            && committed.contains("dst=192.0.2.10")
            && committed.contains("ESTABLISHED"),
        "{committed}"
    );
    drop(daemons);
    Ok(())
}
