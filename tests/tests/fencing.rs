//! A node whose daemon died, or whose XDP program is gone, falls silent for every cluster
//! address (R-XDP-4, R-XDP-7): real daemons, started every way the README describes, killed
//! with SIGKILL (supervisor and worker), while a watcher on the data segment records every ARP
//! answer and announcement for the cluster's addresses.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use fwcluster_lab::{
    Lab,
    arp::{Sighting, double_claims, format_mac},
    cluster::{Cluster, Launch},
    seed::{self, FWS1, FWS2, GROUP0_INET_FIP, GROUP0_PARP, INET_CLIENT, INET_IF},
};

/// Heartbeats every 20 ms, declared dead after 100 ms: the lease of a killed daemon ends at
/// most 100 ms after its last acknowledged heartbeat, which it sent before it was killed.
const TIMEOUT: Duration = Duration::from_millis(100);

const CONFIG: &str = concat!(
    r#"heartbeat_interval = "20ms"
heartbeat_timeout = "100ms"
wait_timeout = "3s"

"#,
    fwcluster_lab::seed_servers!(),
    fwcluster_lab::seed_group0!()
);

const ADDRESSES: [std::net::Ipv4Addr; 2] = [GROUP0_INET_FIP, GROUP0_PARP];

/// A bind mount of the machine's bpffs outside /sys, visible in the mount namespaces that
/// `ip netns exec` creates later: the README's way to give such a daemon persistent pins.
struct PinRootOutsideSys {
    path: PathBuf,
}

impl PinRootOutsideSys {
    fn new(lab: &Lab) -> Result<Self> {
        let path = PathBuf::from(format!("/run/{}-bpf", lab.prefix()));
        std::fs::create_dir_all(&path)?;
        let status = std::process::Command::new("mount")
            .args(["--bind", "/sys/fs/bpf"])
            .arg(&path)
            .status()?;
        ensure!(status.success(), "bind-mounting /sys/fs/bpf on {path:?}");
        Ok(Self { path })
    }
}

impl Drop for PinRootOutsideSys {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn started(lab: &Lab, launch: &Launch) -> Result<Cluster> {
    let mut cluster = Cluster::new(lab, CONFIG)?;
    cluster.start_with(lab, FWS1, launch)?;
    cluster.start_with(lab, FWS2, launch)?;
    cluster.wait_holder(FWS1, "group0", FWS1, Duration::from_secs(10))?;
    Ok(cluster)
}

/// The sightings of one MAC, with their time after `since`.
fn claims_by(sightings: &[Sighting], mac: [u8; 6], since: Instant) -> Vec<(Duration, bool)> {
    sightings
        .iter()
        .filter(|s| s.mac == mac && s.at >= since)
        .map(|s| (s.at - since, s.gratuitous))
        .collect()
}

#[test]
fn a_killed_daemon_falls_silent_by_the_end_of_its_lease_however_it_was_started() -> Result<()> {
    let lab = seed::build()?;
    let outside_sys = PinRootOutsideSys::new(&lab)?;
    let launches = [
        Launch::Setns,
        Launch::IpNetnsExec {
            pin_root: Some(outside_sys.path.clone()),
        },
    ];
    let fws1 = lab.mac(FWS1, INET_IF)?;
    let fws2 = lab.mac(FWS2, INET_IF)?;
    for launch in &launches {
        let mut cluster = started(&lab, launch)?;
        // As the report had it: the group moved to fws2 by an operator, then fws2 killed.
        let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
        ensure!(ok, "clpgrp -m: {out}");
        cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(5))?;
        let watch = lab.arp_watch(
            INET_CLIENT,
            INET_IF,
            ADDRESSES.to_vec(),
            Duration::from_millis(1),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let killed = Instant::now();
        cluster.kill_all(FWS2)?;
        cluster.wait_holder(FWS1, "group0", FWS1, Duration::from_secs(5))?;
        std::thread::sleep(Duration::from_millis(300));
        let (sightings, requests) = watch.stop()?;
        let context = || format!("{launch:?}\n{}", cluster.all_logs_tail(40));

        // The killed node's program is still attached and its maps pinned (the lease, not
        // the death of the process, silences it).
        let links = String::from_utf8(lab.run(FWS2, "ip", &["link", "show", INET_IF])?.stdout)?;
        ensure!(
            links.contains("xdp"),
            "XDP gone with the daemon: {links}\n{}",
            context()
        );

        let problems = double_claims(&sightings);
        ensure!(problems.is_empty(), "{problems:#?}\n{}", context());
        // Before the kill fws2 answered; after its lease it never did again.
        let before = sightings
            .iter()
            .filter(|s| s.mac == fws2 && s.at < killed)
            .count();
        ensure!(
            before > 100,
            "fws2 answered {before} of {requests} requests before the kill"
        );
        let late: Vec<_> = claims_by(&sightings, fws2, killed)
            .into_iter()
            .filter(|(after, _)| *after > TIMEOUT)
            .collect();
        ensure!(
            late.is_empty(),
            "fws2 still claimed an address after its lease ended: {late:?}\n{}",
            context()
        );
        // And fws1 answers for every address.
        for address in ADDRESSES {
            ensure!(
                sightings
                    .iter()
                    .any(|s| s.mac == fws1 && s.address == address && s.at > killed),
                "nobody took {address} over ({}, fws2 {})\n{}",
                format_mac(&fws1),
                format_mac(&fws2),
                context()
            );
        }
        cluster.kill_all(FWS1)?;
        // The next launch starts from nothing: no pins, no addresses.
        for host in [FWS1, FWS2] {
            let _ = std::fs::remove_dir_all(lab.pin_root().join(host));
            let _ = lab.run(
                host,
                "ip",
                &["addr", "del", "192.0.2.10/24", "dev", INET_IF],
            );
        }
    }
    Ok(())
}

#[test]
fn ip_netns_exec_without_a_persistent_pin_root_is_refused_in_one_line() -> Result<()> {
    let lab = seed::build()?;
    let cluster = Cluster::new(&lab, CONFIG)?;
    let started = Instant::now();
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", lab.ns(FWS1)])
        .arg(fwcluster_lab::cluster::fwclusterd()?)
        .arg("--config")
        .arg(cluster.config_path())
        .args(["--node", FWS1])
        .output()?;
    ensure!(
        !output.status.success(),
        "fwclusterd ran with pins that die with it"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("is not a bpffs mount"))
        .with_context(|| format!("no refusal line in {stderr}"))?;
    ensure!(
        line.contains("nsenter --net") && line.contains("--pin-root"),
        "the refusal does not name the remedy: {line}"
    );
    // Nothing was attached or pinned.
    let links = String::from_utf8(lab.run(FWS1, "ip", &["link", "show", INET_IF])?.stdout)?;
    ensure!(!links.contains("xdp"), "{links}");
    Ok(())
}

#[test]
fn a_node_whose_xdp_program_was_detached_by_hand_never_answers_from_its_kernel() -> Result<()> {
    let lab = seed::build()?;
    let mut cluster = started(&lab, &Launch::Setns)?;
    let fws1 = lab.mac(FWS1, INET_IF)?;
    // fws1 holds the group: its FIP is configured on eth0, where the kernel would answer.
    let addresses = String::from_utf8(
        lab.run(FWS1, "ip", &["-o", "addr", "show", INET_IF])?
            .stdout,
    )?;
    ensure!(addresses.contains("192.0.2.10/24"), "{addresses}");
    // The daemon dies and its program is detached by hand: pins removed, link detached.
    cluster.kill_all(FWS1)?;
    let detached = detach_by_hand(&lab, FWS1)?;
    ensure!(detached > 0, "no XDP link of fws1 was pinned");
    let shown = String::from_utf8(lab.run(FWS1, "ip", &["link", "show", INET_IF])?.stdout)?;
    ensure!(!shown.contains("xdp"), "still attached: {shown}");
    let watch = lab.arp_watch(
        INET_CLIENT,
        INET_IF,
        ADDRESSES.to_vec(),
        Duration::from_millis(1),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let (sightings, requests) = watch.stop()?;
    let from_fws1: Vec<_> = sightings.iter().filter(|s| s.mac == fws1).collect();
    ensure!(
        from_fws1.is_empty(),
        "fws1's kernel answered {} of {requests} requests for cluster addresses: {:?}",
        from_fws1.len(),
        from_fws1.first()
    );
    // The kernel still answers for the node's own address: the guard is about cluster
    // addresses only.
    let own = lab.arp_request(
        INET_CLIENT,
        INET_IF,
        "192.0.2.1".parse()?,
        Duration::from_millis(200),
    )?;
    ensure!(
        own.iter().any(|a| a.mac == fws1),
        "fws1 no longer answers for its own address"
    );
    Ok(())
}

/// Detaches the XDP links pinned for `host` and removes its pins, as an operator could by
/// hand; returns how many links were detached.
fn detach_by_hand(lab: &Lab, host: &str) -> Result<usize> {
    let dir = lab.pin_root().join(host);
    let mut detached = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("link_"))
        {
            continue;
        }
        let shown = std::process::Command::new("bpftool")
            .args(["-j", "link", "show", "pinned"])
            .arg(&path)
            .output()?;
        let link: serde_json::Value = serde_json::from_slice(&shown.stdout)
            .with_context(|| format!("bpftool link show pinned {path:?}"))?;
        let id = link["id"].as_u64().context("link id")?.to_string();
        let status = std::process::Command::new("bpftool")
            .args(["link", "detach", "id", &id])
            .status()?;
        ensure!(status.success(), "bpftool link detach id {id}");
        detached += 1;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(detached)
}

#[test]
fn gratuitous_arp_repeats_and_refreshes_stop_when_the_group_moves_away() -> Result<()> {
    let lab = seed::build()?;
    // Three announcements a second apart, and a refresh every 200 ms.
    let config = CONFIG.replace(
        "  interface = \"eth0\"\n\n  [[group.parp]]",
        "  interface = \"eth0\"\n  arp_count = 3\n  arp_refresh = \"200ms\"\n\n  [[group.parp]]",
    );
    ensure!(config.contains("arp_count = 3"), "{config}");
    let mut cluster = Cluster::new(&lab, &config)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS1, "group0", FWS1, Duration::from_secs(10))?;
    let fws1 = lab.mac(FWS1, INET_IF)?;
    let fws2 = lab.mac(FWS2, INET_IF)?;
    // Moved at once after a (re)start of the announcements on fws1: its repeats would be due
    // while fws2 holds the group.
    let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
    ensure!(ok, "clpgrp -m: {out}");
    cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(5))?;
    let (ok, out) = cluster.tool(&lab, FWS2, "clpgrp", &["-m", "-g", "group0"])?;
    ensure!(ok, "clpgrp -m: {out}");
    cluster.wait_holder(FWS1, "group0", FWS1, Duration::from_secs(5))?;
    let watch = lab.arp_watch(
        INET_CLIENT,
        INET_IF,
        ADDRESSES.to_vec(),
        Duration::from_millis(5),
    )?;
    let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
    ensure!(ok, "clpgrp -m: {out}");
    cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(5))?;
    let moved = Instant::now();
    // Long enough for every repeat and several refreshes.
    std::thread::sleep(Duration::from_millis(2500));
    let (sightings, _) = watch.stop()?;
    let problems = double_claims(&sightings);
    ensure!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        cluster.all_logs_tail(30)
    );
    let late: Vec<_> = claims_by(&sightings, fws1, moved);
    ensure!(
        late.is_empty(),
        "fws1 announced or answered after the group moved away: {late:?}"
    );
    ensure!(
        sightings
            .iter()
            .any(|s| s.mac == fws2 && s.gratuitous && s.at > moved),
        "fws2 never announced"
    );
    Ok(())
}

#[test]
fn a_second_daemon_for_the_same_node_is_refused_and_the_first_keeps_its_pins() -> Result<()> {
    let lab = seed::build()?;
    let cluster = started(&lab, &Launch::Setns)?;
    let run_dir = tempfile::tempdir()?;
    let output = lab
        .command(
            FWS1,
            fwcluster_lab::cluster::fwclusterd()?
                .to_str()
                .context("path")?,
        )
        .arg("--config")
        .arg(cluster.config_path())
        .args(["--node", FWS1, "--run-dir"])
        .arg(run_dir.path())
        .arg("--state-dir")
        .arg(run_dir.path())
        .output()?;
    ensure!(!output.status.success(), "a second daemon ran for fws1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains("another fwclusterd already runs node fws1"),
        "{stderr}"
    );
    // The first one still holds and answers.
    let fws1 = lab.mac(FWS1, INET_IF)?;
    let answers = lab.arp_request(
        INET_CLIENT,
        INET_IF,
        GROUP0_INET_FIP,
        Duration::from_millis(200),
    )?;
    ensure!(
        answers.iter().map(|a| a.mac).collect::<Vec<_>>() == vec![fws1],
        "{answers:?}"
    );
    ensure!(cluster.holder(FWS1, "group0")?.as_deref() == Some(FWS1));
    Ok(())
}

#[test]
fn a_lease_the_data_path_refuses_is_a_resource_error_and_the_group_moves() -> Result<()> {
    let lab = seed::build()?;
    let cluster = started(&lab, &Launch::Setns)?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(5))?;
    // Something behind the daemon's back gives fws1's lease of group0 a far higher epoch (and a
    // long life): every extension fws1 asks for is now refused as stale.
    let leases = lab.pin_root().join(FWS1).join("FWC_LEASES");
    let mut value = Vec::new();
    value.extend_from_slice(&1_000_000u64.to_le_bytes());
    value.extend_from_slice(&u64::MAX.to_le_bytes());
    value.extend_from_slice(&1u32.to_le_bytes());
    value.extend_from_slice(&0u32.to_le_bytes());
    let mut args: Vec<String> = ["map", "update", "pinned"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(leases.display().to_string());
    args.extend(
        ["key", "0", "0", "0", "0", "value"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend(value.iter().map(|b| b.to_string()));
    let status = std::process::Command::new("bpftool").args(&args).status()?;
    ensure!(status.success(), "bpftool {args:?}");
    // The refusal is the group's resource error: it moves to fws2, and fws1 neither shows it
    // ONLINE nor answers for it.
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(3))?;
    let line = cluster.wait_for(FWS1, "FWC202", "group0", Duration::from_secs(2))?;
    ensure!(line.contains("refused"), "{line}");
    let fws2 = lab.mac(FWS2, INET_IF)?;
    let watch = lab.arp_watch(
        INET_CLIENT,
        INET_IF,
        ADDRESSES.to_vec(),
        Duration::from_millis(2),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let (sightings, _) = watch.stop()?;
    ensure!(
        !sightings.is_empty() && sightings.iter().all(|s| s.mac == fws2),
        "answers after the move: {:?}\n{}",
        sightings
            .iter()
            .map(|s| format_mac(&s.mac))
            .collect::<std::collections::BTreeSet<_>>(),
        cluster.all_logs_tail(30)
    );
    Ok(())
}

fn two_groups(first: (&str, &str, &str), second: (&str, &str, &str)) -> String {
    let group = |(name, policy, fip): (&str, &str, &str)| {
        format!(
            "\n[[group]]\nname = \"{name}\"\npolicy = [{policy}]\nfailback = \"manual\"\n\n  [[group.fip]]\n  address = \"{fip}\"\n  interface = \"eth0\"\n"
        )
    };
    format!(
        "heartbeat_interval = \"100ms\"\nheartbeat_timeout = \"2s\"\nwait_timeout = \"3s\"\n{}{}{}",
        fwcluster_lab::seed_servers!(),
        group(first),
        group(second)
    )
}

#[test]
fn a_restarted_daemon_adopts_pinned_groups_by_name_after_the_groups_were_reordered() -> Result<()> {
    let lab = seed::build()?;
    let a = ("groupA", "\"fws1\", \"fws2\"", "192.0.2.10/24");
    let b = ("groupB", "\"fws2\", \"fws1\"", "192.0.2.11/24");
    let mut cluster = Cluster::new(&lab, &two_groups(a, b))?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS1, "groupA", FWS1, Duration::from_secs(10))?;
    cluster.wait_holder(FWS1, "groupB", FWS2, Duration::from_secs(10))?;
    // The operator reorders the groups in fws1's file and restarts fws1 (crash and start,
    // within the 2 s lease: its groups are adopted, not restarted).
    let reordered = std::fs::read_to_string(cluster.config_path())?;
    let (head, groups) = reordered.split_at(reordered.find("\n[[group]]").context("groups")?);
    let second = groups[1..].find("\n[[group]]").context("second group")? + 1;
    let swapped = format!("{head}{}{}", &groups[second..], &groups[..second]);
    ensure!(swapped.find("groupB") < swapped.find("groupA"), "{swapped}");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, &swapped)?;
    cluster.kill_all(FWS1)?;
    let log = std::fs::File::create(dir.path().join("fws1.log"))?;
    let mut fws1 = lab
        .command(
            FWS1,
            fwcluster_lab::cluster::fwclusterd()?
                .to_str()
                .context("path")?,
        )
        .arg("--config")
        .arg(&path)
        .args(["--node", FWS1, "--run-dir"])
        .arg(dir.path())
        .arg("--state-dir")
        .arg(cluster.state_dir(FWS1))
        .stderr(log)
        .spawn()?;
    let result = (|| -> Result<()> {
        let socket = cluster_ctl::control::socket_path(dir.path(), FWS1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while cluster_ctl::control::request(&socket, &cluster_ctl::control::Request::Status)
            .is_err()
        {
            ensure!(Instant::now() < deadline, "fws1 did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
        let watch = lab.arp_watch(
            INET_CLIENT,
            INET_IF,
            vec![GROUP0_INET_FIP, "192.0.2.11".parse()?],
            Duration::from_millis(2),
        )?;
        std::thread::sleep(Duration::from_millis(1_000));
        let (sightings, _) = watch.stop()?;
        let log = std::fs::read_to_string(dir.path().join("fws1.log"))?;
        let problems = double_claims(&sightings);
        ensure!(problems.is_empty(), "{problems:#?}\n{log}");
        let fws1 = lab.mac(FWS1, INET_IF)?;
        let fws2 = lab.mac(FWS2, INET_IF)?;
        let by = |address: &str, mac: [u8; 6]| {
            let address: std::net::Ipv4Addr = address.parse().expect("address");
            sightings
                .iter()
                .filter(|s| s.address == address && s.mac == mac)
                .count()
        };
        ensure!(
            by("192.0.2.10", fws1) > 100 && by("192.0.2.10", fws2) == 0,
            "groupA's address: fws1 {} fws2 {}\n{log}",
            by("192.0.2.10", fws1),
            by("192.0.2.10", fws2)
        );
        ensure!(
            by("192.0.2.11", fws2) > 100 && by("192.0.2.11", fws1) == 0,
            "groupB's address: fws1 {} fws2 {}\n{log}",
            by("192.0.2.11", fws1),
            by("192.0.2.11", fws2)
        );
        ensure!(log.contains("moved to its new slot"), "{log}");
        Ok(())
    })();
    let _ = fws1.kill();
    let _ = fws1.wait();
    result
}

#[test]
fn a_node_whose_group_moved_away_never_sends_arp_from_the_floating_address() -> Result<()> {
    let lab = seed::build()?;
    let mut cluster = started(&lab, &Launch::Setns)?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(5))?;
    let fws1 = lab.mac(FWS1, INET_IF)?;
    // fws1's daemon dies: fws2 takes over, fws1 is fenced with the floating address still
    // configured on its interface.
    cluster.kill_all(FWS1)?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(5))?;
    let addresses = String::from_utf8(
        lab.run(FWS1, "ip", &["-o", "addr", "show", INET_IF])?
            .stdout,
    )?;
    ensure!(addresses.contains("192.0.2.10/24"), "{addresses}");
    let watch = lab.arp_watch(
        INET_CLIENT,
        INET_IF,
        ADDRESSES.to_vec(),
        Duration::from_millis(5),
    )?;
    std::thread::sleep(Duration::from_millis(100));
    // Traffic from the floating address makes fws1's kernel resolve a neighbour: its ARP must
    // not name the floating address as its sender (clients would follow it back to fws1).
    let _ = lab.run(FWS1, "ip", &["neigh", "flush", "dev", INET_IF]);
    let _ = lab
        .command(FWS1, "ping")
        .args([
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "192.0.2.10",
            "192.0.2.254",
        ])
        .output()?;
    std::thread::sleep(Duration::from_millis(300));
    let (sightings, _) = watch.stop()?;
    let from_fws1: Vec<_> = sightings.iter().filter(|s| s.mac == fws1).collect();
    ensure!(
        from_fws1.is_empty(),
        "fws1 claimed a cluster address after it was fenced: {from_fws1:?}"
    );
    Ok(())
}
