//! End to end on the seed network: real daemons, real XDP, real addresses.

use std::time::Duration;

use fwcluster_lab::{
    Lab,
    cluster::Cluster,
    seed::{self, FWS1, FWS2, GROUP0_INET_FIP, GROUP0_PARP, INET_CLIENT, INET_IF},
};

const HOT_STANDBY: &str = concat!(
    r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"

"#,
    fwcluster_lab::seed_servers!(),
    r#"
[[group]]
name = "group0"
policy = ["fws1", "fws2"]
failback = "manual"

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"

  [[group.fip]]
  address = "203.0.113.10/24"

  [[group.parp]]
  address = "192.0.2.20"
  interface = "eth0"

  [[group.ipw]]
  targets = ["192.0.2.254"]
  interval = "100ms"
  timeout = "200ms"
  retry = 1
"#
);

/// Who answers ARP for `address` from the internet client.
fn answerers(lab: &Lab, address: std::net::Ipv4Addr) -> Vec<[u8; 6]> {
    lab.arp_request(INET_CLIENT, "eth0", address, Duration::from_millis(100))
        .unwrap()
        .into_iter()
        .map(|a| a.mac)
        .collect()
}

fn wait_answer(lab: &Lab, address: std::net::Ipv4Addr, mac: [u8; 6], timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if answerers(lab, address) == vec![mac] {
            return true;
        }
    }
    false
}

#[test]
fn hot_standby_node_failure_moves_every_address_to_the_standby() -> anyhow::Result<()> {
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, HOT_STANDBY)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_for(
        FWS1,
        "FWC201",
        "group0 is active on fws1",
        Duration::from_secs(5),
    )?;
    let fws1 = lab.mac(FWS1, INET_IF)?;
    let fws2 = lab.mac(FWS2, INET_IF)?;
    assert_eq!(
        answerers(&lab, GROUP0_INET_FIP),
        vec![fws1],
        "{}",
        cluster.log(FWS1)
    );
    assert!(wait_answer(&lab, GROUP0_PARP, fws1, Duration::from_secs(1)));
    // The FIP is on fws1's interface with its label, not on fws2's.
    let addresses = String::from_utf8(
        lab.run(FWS1, "ip", &["-o", "addr", "show", "dev", "eth0"])?
            .stdout,
    )?;
    assert!(
        addresses.contains("192.0.2.10/24") && addresses.contains("eth0:1"),
        "{addresses}"
    );
    let addresses = String::from_utf8(
        lab.run(FWS2, "ip", &["-o", "addr", "show", "dev", "eth0"])?
            .stdout,
    )?;
    assert!(!addresses.contains("192.0.2.10/"), "{addresses}");
    // The internet client reaches the DMZ through the floating gateway.
    assert!(lab.ping(INET_CLIENT, "203.0.113.101".parse()?, 2)? >= 1);

    lab.cut_host(FWS1)?;
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(2),
    )?;
    assert!(
        wait_answer(&lab, GROUP0_INET_FIP, fws2, Duration::from_secs(1)),
        "{}",
        cluster.log(FWS2)
    );
    assert!(wait_answer(&lab, GROUP0_PARP, fws2, Duration::from_secs(1)));
    let line = cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(1),
    )?;
    assert!(
        line.contains("ACT_FAILOVER") && line.contains("fws1 went down"),
        "{line}"
    );
    Ok(())
}

const SERVERS: &str = concat!(
    r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"
{extra}

"#,
    fwcluster_lab::seed_servers!()
);

fn group(name: &str, policy: &str, failback: &str, fip: &str, extra: &str) -> String {
    format!(
        r#"
[[group]]
name = "{name}"
policy = [{policy}]
failback = "{failback}"

  [[group.fip]]
  address = "{fip}"
  interface = "eth0"
{extra}
"#
    )
}

const IPW: &str = r#"
  [[group.ipw]]
  targets = ["192.0.2.254"]
  interval = "50ms"
  timeout = "100ms"
  retry = 1
"#;

/// A monitored EXEC resource whose death fails the group over.
const MONITORED_EXEC: &str = r#"
  [[group.exec]]
  name = "fwalive"
  start = "exec sleep 1000"
  stop = "true"
  monitor = true
  retry = 0
  recover = "failover"
"#;

fn config(cluster_extra: &str, groups: &[String]) -> String {
    format!(
        "{}{}",
        SERVERS.replace("{extra}", cluster_extra),
        groups.concat()
    )
}

fn hot_standby(failback: &str, extra: &str) -> String {
    config(
        "",
        &[group(
            "group0",
            "\"fws1\", \"fws2\"",
            failback,
            "192.0.2.10/24",
            extra,
        )],
    )
}

fn started(config: &str) -> anyhow::Result<(Lab, Cluster)> {
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, config)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(5))?;
    Ok((lab, cluster))
}

/// Makes `host` lose (or regain) its IP watch target, the upstream router.
fn ipw_target(lab: &Lab, host: &str, reachable: bool) -> anyhow::Result<()> {
    if reachable {
        lab.run(host, "nft", &["delete", "table", "inet", "ipwcut"])?;
        Ok(())
    } else {
        lab.nft(
            host,
            "table inet ipwcut {\n chain in { type filter hook input priority 0; ip saddr 192.0.2.254 drop\n }\n}\n",
        )
    }
}

#[test]
fn auto_failback_returns_the_group_and_manual_failback_waits_for_clpgrp() -> anyhow::Result<()> {
    for failback in ["auto", "manual"] {
        // A 100 ms heartbeat timeout: this test is about where the group goes back, and at
        // 30 ms the suite's own load can starve a holder past its lease, which (rightly) hands
        // the group on by itself.
        let config = hot_standby(failback, "").replace(
            "heartbeat_timeout = \"30ms\"",
            "heartbeat_timeout = \"100ms\"",
        );
        let (lab, mut cluster) = started(&config)?;
        cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
        cluster.kill(FWS1)?;
        cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(2))?;
        cluster.start(&lab, FWS1)?;
        cluster.wait_for(FWS1, "FWC101", "fws2 is ONLINE", Duration::from_secs(5))?;
        if failback == "auto" {
            cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(3))?;
            assert!(wait_answer(
                &lab,
                GROUP0_INET_FIP,
                lab.mac(FWS1, INET_IF)?,
                Duration::from_secs(1)
            ));
        } else {
            std::thread::sleep(Duration::from_millis(600));
            assert_eq!(
                cluster.holder(FWS1, "group0")?.as_deref(),
                Some(FWS2),
                "roles inverted"
            );
            let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
            assert!(!ok, "a move from where the group does not run is refused");
            assert!(
                out.contains("group0 is not running on fws1 but on fws2"),
                "{out}"
            );
            let (ok, out) = cluster.tool(&lab, FWS2, "clpgrp", &["-m", "-g", "group0"])?;
            assert!(ok, "{out}");
            assert!(out.contains("group0 moved from fws2 to fws1"), "{out}");
            cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(1))?;
        }
    }
    Ok(())
}

#[test]
fn ipw_loss_fails_over_and_denies_start_until_the_target_returns() -> anyhow::Result<()> {
    let (lab, cluster) = started(&hot_standby("manual", IPW))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    ipw_target(&lab, FWS1, false)?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(3))?;
    let view = cluster.status(FWS1)?;
    assert_eq!(
        view.groups[0].starting,
        ["DENY", "ALLOW"],
        "{:?}",
        view.groups[0]
    );
    cluster.wait_for(
        FWS1,
        "FWC205",
        "STARTING=DENY for group0 on fws1",
        Duration::from_secs(1),
    )?;
    ipw_target(&lab, FWS1, true)?;
    cluster.wait_for(
        FWS1,
        "FWC206",
        "STARTING=ALLOW for group0 on fws1",
        Duration::from_secs(3),
    )?;
    assert_eq!(cluster.status(FWS2)?.groups[0].starting, ["ALLOW", "ALLOW"]);
    // Manual failback: it stays on fws2.
    assert_eq!(cluster.holder(FWS1, "group0")?.as_deref(), Some(FWS2));
    Ok(())
}

#[test]
fn a_standby_with_its_own_ipw_error_does_not_receive_the_group() -> anyhow::Result<()> {
    let (lab, cluster) = started(&hot_standby("manual", IPW))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    ipw_target(&lab, FWS2, false)?;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        cluster.status(FWS1)?.groups[0].resources[0].states,
        ["ONLINE", "ERROR"]
    );
    ipw_target(&lab, FWS1, false)?;
    cluster.wait_for(
        FWS1,
        "FWC204",
        "no other server can take group0",
        Duration::from_secs(3),
    )?;
    assert_eq!(cluster.holder(FWS2, "group0")?.as_deref(), Some(FWS1));
    // By hand it still moves (R-FO-3).
    let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
    assert!(ok, "{out}\n{}", cluster.log(FWS1));
    cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(2))?;
    Ok(())
}

#[test]
fn a_killed_monitored_process_fails_the_group_over() -> anyhow::Result<()> {
    let exec = MONITORED_EXEC;
    let (_lab, cluster) = started(&hot_standby("manual", exec))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    let view = cluster.status(FWS1)?;
    let pid = *view
        .exec_pids
        .get("group0-exec0")
        .expect("the monitored process runs");
    // It does not inherit the daemon's blocked signals: SIGTERM stops it.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .map(str::trim);
    assert_eq!(blocked, Some("0000000000000000"), "{status}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(3))?;
    assert_eq!(cluster.status(FWS1)?.groups[0].starting[0], "DENY");
    cluster.wait_for(
        FWS1,
        "FWC302",
        "monitored process died",
        Duration::from_secs(1),
    )?;
    Ok(())
}

#[test]
fn losing_all_interconnects_runs_the_group_on_both_unless_a_tiebreaker_decides()
-> anyhow::Result<()> {
    // Without tie-breakers both run it (the seed's behaviour).
    let (lab, cluster) = started(&hot_standby("manual", ""))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    lab.cut(FWS1, "eth3")?;
    lab.cut(FWS1, "eth2")?;
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(2),
    )?;
    assert_eq!(cluster.holder(FWS1, "group0")?.as_deref(), Some(FWS1));
    drop(cluster);
    drop(lab);

    // With the upstream router as tie-breaker, only the side that reaches it runs.
    let config = config(
        "tiebreakers = [\"192.0.2.254\"]",
        &[group(
            "group0",
            "\"fws1\", \"fws2\"",
            "manual",
            "192.0.2.10/24",
            "",
        )],
    );
    let (lab, cluster) = started(&config)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    ipw_target(&lab, FWS2, false)?;
    lab.cut(FWS2, "eth3")?;
    lab.cut(FWS2, "eth2")?;
    cluster.wait_for(FWS2, "FWC102", "fws1 is OFFLINE", Duration::from_secs(2))?;
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        cluster.lines_with(FWS2, "FWC201").is_empty(),
        "{}",
        cluster.log(FWS2)
    );
    assert_eq!(cluster.holder(FWS1, "group0")?.as_deref(), Some(FWS1));
    Ok(())
}

#[test]
fn losing_one_of_two_interconnects_is_no_failover() -> anyhow::Result<()> {
    let (lab, cluster) = started(&hot_standby("manual", ""))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    lab.cut(FWS1, "eth3")?;
    cluster.wait_for(
        FWS2,
        "FWC104",
        "interconnect 0 to fws1 lost",
        Duration::from_secs(2),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        cluster.lines_with(FWS2, "FWC201").is_empty(),
        "{}",
        cluster.log(FWS2)
    );
    assert_eq!(cluster.holder(FWS2, "group0")?.as_deref(), Some(FWS1));
    let (ok, screen) = cluster.tool(&lab, FWS2, "clpstat", &["-n"])?;
    assert!(ok);
    assert!(
        screen.contains("169.254.12.2          NG       OK"),
        "{screen}"
    );
    Ok(())
}

#[test]
fn a_controller_killed_and_restarted_within_the_lease_adopts_without_a_flap() -> anyhow::Result<()>
{
    // 1 s heartbeats, 5 s timeout: the lease lasts 4 s, time enough to restart.
    let config = hot_standby("manual", "").replace(
        "heartbeat_interval = \"10ms\"\nheartbeat_timeout = \"30ms\"\nwait_timeout = \"3s\"",
        "heartbeat_interval = \"1s\"\nheartbeat_timeout = \"5s\"\nwait_timeout = \"6s\"",
    );
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, &config)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    let fws1 = lab.mac(FWS1, INET_IF)?;
    let ns = lab.ns(INET_CLIENT).to_owned();
    let prober = std::thread::spawn(move || {
        let mut unanswered = 0;
        let mut sent = 0;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(2500) {
            let answers = fwcluster_lab::in_netns(&ns, || {
                fwcluster_lab::arp::request("eth0", GROUP0_INET_FIP, Duration::from_millis(50))
            })
            .unwrap()
            .unwrap();
            sent += 1;
            if answers.iter().map(|a| a.mac).collect::<Vec<_>>() != vec![fws1] {
                unanswered += 1;
            }
        }
        (sent, unanswered)
    });
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill(FWS1)?;
    cluster.start(&lab, FWS1)?;
    cluster.wait_for(FWS1, "FWC006", "adopted", Duration::from_secs(3))?;
    let (sent, unanswered) = prober.join().unwrap();
    assert!(sent > 10);
    assert_eq!(
        unanswered, 0,
        "{unanswered} of {sent} ARP requests unanswered or answered by another MAC"
    );
    assert!(
        cluster.lines_with(FWS2, "FWC201").is_empty(),
        "fws2 never took over"
    );
    assert!(
        cluster.lines_with(FWS1, "FWC202").is_empty(),
        "fws1 never deactivated"
    );
    Ok(())
}

/// `clpcfg restart` (what the package runs on an upgrade) with 10 ms heartbeats and a 30 ms
/// timeout, far shorter than a restart: the restart hold keeps the group where it is. Who
/// answers the gateway is watched throughout: always fws1's MAC, never silence, never fws2.
#[test]
fn clpcfg_restart_restarts_the_holder_in_place_and_nothing_moves_even_with_a_30ms_timeout()
-> anyhow::Result<()> {
    let (lab, cluster) = started(&hot_standby("manual", MONITORED_EXEC))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    let before = cluster.status(FWS1)?;
    let exec_pid = before.exec_pids.get("group0-exec0").copied();
    // A request for the gateway every 5 ms, each answered by fws1 alone.
    let watch = lab.arp_watch(
        INET_CLIENT,
        "eth0",
        vec![GROUP0_INET_FIP],
        Duration::from_millis(5),
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let config = cluster.config_path().to_str().unwrap().to_owned();
    let (ok, out) = cluster.tool(&lab, FWS1, "clpcfg", &["restart", "--config", &config])?;
    assert!(ok, "{out}\n{}", cluster.log(FWS1));
    // The restart's length, for the record (--nocapture).
    println!("{}", out.trim());
    assert!(out.contains("fws1: restarted in place"), "{out}");
    assert!(out.contains("holding group0 (before: group0)"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    let (sightings, sent) = watch.stop()?;
    // A silence as long as the restart (60-110 ms here) would show as a gap between replies.
    let wrong = fwcluster_lab::arp::not_answered_by(
        &sightings,
        sent,
        lab.mac(FWS1, INET_IF)?,
        Duration::from_millis(30),
    );
    assert!(sent > 100, "{sent}");
    assert!(wrong.is_empty(), "{wrong:?}");
    let after = cluster.status(FWS1)?;
    assert_ne!(
        after.incarnation, before.incarnation,
        "a new daemon answers"
    );
    assert_eq!(cluster.holder(FWS2, "group0")?.as_deref(), Some(FWS1));
    assert_eq!(
        after.exec_pids.get("group0-exec0").copied(),
        exec_pid,
        "the monitored process was adopted"
    );
    assert!(
        !cluster.lines_with(FWS1, "FWC016").is_empty(),
        "{}",
        cluster.log(FWS1)
    );
    assert!(
        !cluster.lines_with(FWS1, "FWC006").is_empty(),
        "adopted: {}",
        cluster.log(FWS1)
    );
    cluster.ensure_never_logged(&[
        (FWS2, "FWC201", "fws2 took the group"),
        (FWS2, "FWC102", "fws2 declared fws1 dead"),
        (FWS1, "FWC202", "fws1 deactivated the group"),
        (FWS1, "FWC010", "fws1's lease lapsed"),
        (FWS2, "FWC106", "the peers saw another configuration"),
    ])?;
    // The standby restarts too (an upgrade does both): the holder's lease never lapses.
    let (ok, out) = cluster.tool(&lab, FWS2, "clpcfg", &["restart", "--config", &config])?;
    assert!(ok, "{out}\n{}", cluster.log(FWS2));
    std::thread::sleep(Duration::from_millis(200));
    cluster.ensure_never_logged(&[
        (FWS1, "FWC010", "fws1's lease lapsed while fws2 restarted"),
        (FWS1, "FWC102", "fws1 declared fws2 dead"),
    ])?;
    assert_eq!(cluster.holder(FWS2, "group0")?.as_deref(), Some(FWS1));
    Ok(())
}

/// `clpcfg restart` of a node of a flow-share instance: its buckets stay its own over the
/// restart (the peers hold), so its flow-share lease, read from the pinned map every
/// millisecond or so, never runs out, and flows keep being passed by exactly one node.
#[test]
fn clpcfg_restart_keeps_a_nodes_flow_share_lease_live_over_the_restart() -> anyhow::Result<()> {
    let config = config("", &[FLOW_SHARE.to_owned()]);
    let (lab, cluster) = started(&config)?;
    let socket = cluster_ctl::control::socket_path(&cluster.run_dir(FWS2), FWS2);
    wait_buckets(&socket, 512, Duration::from_secs(5))?;
    // No group: the instance's lease is slot 0.
    let pin = lab.pin_root().join(FWS2).join("FWC_LEASES");
    let leases: aya::maps::Array<_, cluster_common::Lease> =
        aya::maps::Map::Array(aya::maps::MapData::from_pin(&pin)?).try_into()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || -> anyhow::Result<(u64, i64)> {
            let (mut reads, mut least_left) = (0u64, i64::MAX);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let lease = leases.get(&0, 0)?;
                let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
                let now = now.tv_sec() as i64 * 1_000_000_000 + now.tv_nsec();
                least_left = least_left.min(lease.expires_ns as i64 - now);
                reads += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok((reads, least_left))
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let config_path = cluster.config_path().to_str().unwrap().to_owned();
    let (ok, out) = cluster.tool(&lab, FWS2, "clpcfg", &["restart", "--config", &config_path])?;
    assert!(ok, "{out}\n{}", cluster.log(FWS2));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, least_left) = watcher.join().unwrap()?;
    assert!(reads > 100, "{reads} reads");
    assert!(
        least_left > 0,
        "fws2's flow-share lease ran out {} ms before the new daemon renewed it:\n{out}",
        -least_left / 1_000_000
    );
    wait_buckets(&socket, 512, Duration::from_secs(2))?;
    assert!(
        cluster.lines_with(FWS1, "FWC102").is_empty(),
        "{}",
        cluster.log(FWS1)
    );
    Ok(())
}

#[test]
fn a_restarted_controller_adopts_the_monitored_process_and_one_too_late_kills_it()
-> anyhow::Result<()> {
    // Found by the chaos run: a restarted daemon saw the label (eth2:1) of a FIP configured
    // without interface as an interface of its own and refused to start.
    let exec = &format!("{MONITORED_EXEC}\n  [[group.fip]]\n  address = \"203.0.113.10/24\"\n");
    // 200 ms heartbeats, 1 s timeout: a restart fits in the lease.
    let config = hot_standby("manual", exec).replace(
        "heartbeat_interval = \"10ms\"\nheartbeat_timeout = \"30ms\"\nwait_timeout = \"3s\"",
        "heartbeat_interval = \"200ms\"\nheartbeat_timeout = \"1s\"\nwait_timeout = \"3s\"",
    );
    let (lab, mut cluster) = started(&config)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    let monitored = |cluster: &Cluster| -> Option<u32> {
        cluster
            .status(FWS1)
            .ok()?
            .exec_pids
            .get("group0-exec0")
            .copied()
    };
    let pid = monitored(&cluster).expect("the monitored process runs");

    // Restarted within the lease: the same process is watched by the new daemon...
    cluster.kill(FWS1)?;
    cluster.start(&lab, FWS1)?;
    cluster.wait_for(FWS1, "FWC006", "adopted", Duration::from_secs(3))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while monitored(&cluster) != Some(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(monitored(&cluster), Some(pid), "{}", cluster.log(FWS1));
    assert!(cluster.lines_with(FWS2, "FWC201").is_empty(), "no flap");
    // ...so its death is still a resource error that moves the group (once the new daemon
    // hears fws2 again: until then nobody could take it).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while cluster.lines_with(FWS1, "FWC101").len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    fwcluster_lab::kill(pid)?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(5))?;
    cluster.wait_for(
        FWS1,
        "FWC302",
        "monitored process died",
        Duration::from_secs(1),
    )?;

    // Back on fws1, then fws1's daemon dies for longer than the lease: fws2 takes over, and
    // the process the dead daemon left behind is killed by the next one, not left running.
    // (It runs on fws2, so the start is refused, but STARTING=DENY is cleared on fws1.)
    let (_, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-s", "-g", "group0"])?;
    assert!(out.contains("STARTING=DENY cleared"), "{out}");
    let (ok, out) = cluster.tool(&lab, FWS2, "clpgrp", &["-m", "-g", "group0"])?;
    assert!(ok, "{out}");
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while monitored(&cluster).is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let orphan = monitored(&cluster).expect("the monitored process runs again");
    cluster.kill(FWS1)?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(5))?;
    assert!(
        std::path::Path::new(&format!("/proc/{orphan}")).exists(),
        "the process outlived its daemon"
    );
    cluster.start(&lab, FWS1)?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(5))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::path::Path::new(&format!("/proc/{orphan}")).exists()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{orphan}")).exists(),
        "the left-over monitored process was not killed: {}",
        cluster.log(FWS1)
    );
    Ok(())
}

#[test]
fn a_frozen_controller_gives_up_an_adopted_group_with_its_monitored_process() -> anyhow::Result<()>
{
    let exec = MONITORED_EXEC;
    let config = hot_standby("auto", exec).replace(
        "heartbeat_interval = \"10ms\"\nheartbeat_timeout = \"30ms\"\nwait_timeout = \"3s\"",
        "heartbeat_interval = \"50ms\"\nheartbeat_timeout = \"300ms\"\nwait_timeout = \"3s\"",
    );
    let (lab, mut cluster) = started(&config)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    cluster.kill(FWS1)?;
    cluster.start(&lab, FWS1)?;
    cluster.wait_for(FWS1, "FWC006", "adopted", Duration::from_secs(3))?;
    cluster.wait_for(FWS1, "FWC101", "fws2 is ONLINE", Duration::from_secs(3))?;
    // Frozen beyond its lease: fws2 takes over; thawed, fws1 must give the group up (and stop
    // the monitored process it adopted), then get it back by failback.
    let worker = cluster.worker_pid(FWS1).expect("worker");
    fwcluster_lab::freeze(worker)?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(3))?;
    fwcluster_lab::thaw(worker)?;
    cluster.wait_for(
        FWS1,
        "FWC202",
        "group0 is not active on fws1",
        Duration::from_secs(5),
    )?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn load_share_runs_each_group_on_its_primary_and_the_survivor_takes_both() -> anyhow::Result<()> {
    let config = config(
        "",
        &[
            group(
                "group0",
                "\"fws1\", \"fws2\"",
                "manual",
                "192.0.2.10/24",
                "",
            ),
            group(
                "group1",
                "\"fws2\", \"fws1\"",
                "manual",
                "192.0.2.11/24",
                "",
            ),
        ],
    );
    let (lab, mut cluster) = started(&config)?;
    cluster.wait_holder(FWS1, "group0", FWS1, Duration::from_secs(5))?;
    cluster.wait_holder(FWS1, "group1", FWS2, Duration::from_secs(5))?;
    let fws1 = lab.mac(FWS1, INET_IF)?;
    let fws2 = lab.mac(FWS2, INET_IF)?;
    assert!(wait_answer(
        &lab,
        GROUP0_INET_FIP,
        fws1,
        Duration::from_secs(1)
    ));
    assert!(wait_answer(
        &lab,
        "192.0.2.11".parse()?,
        fws2,
        Duration::from_secs(1)
    ));
    cluster.kill(FWS2)?;
    cluster.wait_holder(FWS1, "group1", FWS1, Duration::from_secs(2))?;
    assert!(wait_answer(
        &lab,
        "192.0.2.11".parse()?,
        fws1,
        Duration::from_secs(1)
    ));
    assert!(wait_answer(
        &lab,
        GROUP0_INET_FIP,
        fws1,
        Duration::from_secs(1)
    ));
    Ok(())
}

#[test]
fn flow_share_splits_buckets_and_the_survivor_takes_them_all_without_an_arp_change()
-> anyhow::Result<()> {
    let config = config("", &[FLOW_SHARE.to_owned()]);
    let (lab, mut cluster) = started(&config)?;
    std::thread::sleep(Duration::from_millis(300));
    let shared = [0x01, 0x00, 0x5e, 0x00, 0x02, 0x1e];
    let answers: Vec<[u8; 6]> = lab
        .arp_request(
            INET_CLIENT,
            "eth0",
            "192.0.2.30".parse()?,
            Duration::from_millis(200),
        )?
        .into_iter()
        .map(|a| a.mac)
        .collect();
    assert_eq!(
        answers,
        vec![shared, shared],
        "both nodes answer with the shared MAC"
    );
    let owned = |cluster: &Cluster, host: &str| -> anyhow::Result<usize> {
        Ok(*cluster
            .status(host)?
            .flow_buckets
            .get("ls0")
            .expect("instance"))
    };
    assert_eq!((owned(&cluster, FWS1)?, owned(&cluster, FWS2)?), (512, 512));
    // UDP flows from many source ports: each passed by exactly one node.
    // UDP from `count` source ports (one flow each), from the client's namespace.
    let send = |first: u16, count: u16| -> anyhow::Result<()> {
        fwcluster_lab::in_netns(lab.ns(INET_CLIENT), move || -> anyhow::Result<()> {
            for port in first..first + count {
                let socket = std::net::UdpSocket::bind(("192.0.2.100", port))?;
                socket.send_to(b"flow", "192.0.2.30:9")?;
            }
            Ok(())
        })??;
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    };
    let passed = |cluster: &Cluster, host: &str| -> anyhow::Result<(u64, u64)> {
        let c = cluster.status(host)?.xdp_counters;
        Ok((c["flow_passed"], c["flow_dropped"]))
    };
    // The client resolves the shared address once (the kernel queues only a few packets while
    // resolving); its neighbour entry must not change afterwards.
    send(19999, 1)?;
    let (p1, d1) = passed(&cluster, FWS1)?;
    let (p2, d2) = passed(&cluster, FWS2)?;
    send(20000, 60)?;
    let (p1, d1) = (
        passed(&cluster, FWS1)?.0 - p1,
        passed(&cluster, FWS1)?.1 - d1,
    );
    let (p2, d2) = (
        passed(&cluster, FWS2)?.0 - p2,
        passed(&cluster, FWS2)?.1 - d2,
    );
    assert!(
        p1 > 0 && p2 > 0,
        "both nodes pass flows: passed {p1} {p2}, dropped {d1} {d2}, counters {:?}, neighbour {}",
        cluster.status(FWS1)?.xdp_counters,
        String::from_utf8_lossy(&lab.run(INET_CLIENT, "ip", &["neigh"])?.stdout)
    );
    assert_eq!(p1 + p2, 60, "each frame passed by exactly one node");
    assert_eq!(d1 + d2, 60, "and dropped by the other");
    let neighbour = |lab: &Lab| -> anyhow::Result<String> {
        Ok(String::from_utf8(
            lab.run(INET_CLIENT, "ip", &["neigh", "show", "192.0.2.30"])?
                .stdout,
        )?)
    };
    let before = neighbour(&lab)?;
    cluster.kill(FWS2)?;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(owned(&cluster, FWS1)?, 1024);
    let (p1_before, _) = passed(&cluster, FWS1)?;
    send(30000, 40)?;
    let (p1_after, _) = passed(&cluster, FWS1)?;
    assert_eq!(p1_after - p1_before, 40, "the survivor passes every flow");
    assert!(before.contains("01:00:5e:00:02:1e"), "{before}");
    assert_eq!(
        neighbour(&lab)?.split_whitespace().nth(4),
        before.split_whitespace().nth(4)
    );
    Ok(())
}

fn worker_of(supervisor: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))
            .expect("children of the supervisor");
    children
        .split_whitespace()
        .next()
        .expect("a worker")
        .parse()
        .expect("pid")
}

#[test]
fn a_dead_worker_is_restarted_and_adopts_its_groups_then_retries_run_out() -> anyhow::Result<()> {
    // 1 s / 5 s: the lease (4 s) outlasts the restart; two restarts allowed.
    let config = hot_standby("manual", "").replace(
        "heartbeat_interval = \"10ms\"\nheartbeat_timeout = \"30ms\"\nwait_timeout = \"3s\"",
        "heartbeat_interval = \"1s\"\nheartbeat_timeout = \"5s\"\nwait_timeout = \"6s\"\nretry = 2",
    );
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, &config)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    let supervisor = cluster.pid(FWS1).expect("running");
    for restart in 1..=2 {
        let worker = worker_of(supervisor);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while cluster.lines_with(FWS1, "FWC006").len() < restart {
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                cluster.log(FWS1)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_ne!(worker_of(supervisor), worker, "a new worker");
        assert_eq!(cluster.holder(FWS2, "group0")?.as_deref(), Some(FWS1));
    }
    assert_eq!(cluster.lines_with(FWS1, "FWC007").len(), 2);
    // The third death exceeds retry = 2: the supervisor stops (STOP).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker_of(supervisor) as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while cluster.running(FWS1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the supervisor must stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        cluster
            .lines_with(FWS1, "FWC007")
            .last()
            .unwrap()
            .contains("Stop")
    );
    assert!(
        cluster.lines_with(FWS2, "FWC201").is_empty(),
        "no takeover while it recovered"
    );
    Ok(())
}

const FLOW_SHARE: &str = r#"
[[flowshare]]
name = "ls0"
address = "192.0.2.30/24"
interface = "eth0"
mac = "01:00:5e:00:02:1e"
hash = "5tuple"
buckets = 1024
"#;

fn buckets_at(socket: &std::path::Path) -> anyhow::Result<usize> {
    match cluster_ctl::control::request(socket, &cluster_ctl::control::Request::Status)? {
        cluster_ctl::control::Response::Status { view } => {
            Ok(view.flow_buckets.get("ls0").copied().unwrap_or(0))
        }
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

fn wait_buckets(socket: &std::path::Path, want: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let have = buckets_at(socket).unwrap_or(usize::MAX);
        if have == want {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{have} buckets, not {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn flow_share_buckets_go_only_to_nodes_that_are_ready_and_run_the_same_configuration()
-> anyhow::Result<()> {
    let lab = seed::build()?;
    let config = config("", &[FLOW_SHARE.to_owned()]);
    let mut cluster = Cluster::new(&lab, &config)?;
    // Alone and in its startup wait (3 s), fws2 takes no bucket: a running peer it has not
    // heard yet may be passing them all.
    let started = std::time::Instant::now();
    cluster.start(&lab, FWS2)?;
    let socket = cluster.socket(FWS2);
    while buckets_at(&socket).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    while started.elapsed() < Duration::from_millis(2_500) {
        assert_eq!(
            buckets_at(&socket)?,
            0,
            "buckets before the startup wait ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Then, alone, all of them.
    wait_buckets(&socket, 1024, Duration::from_secs(3))?;
    // fws1 comes with another configuration (same key): the two cannot agree on the hash. The
    // lower-numbered node passes everything, the other nothing, and neither deals to the other.
    let other = std::fs::read_to_string(cluster.config_path())?
        .replace("wait_timeout = \"3s\"", "wait_timeout = \"4s\"");
    let dir = tempfile::tempdir()?;
    let other_path = dir.path().join("cluster.toml");
    std::fs::write(&other_path, other)?;
    let mut fws1 = lab
        .command(
            FWS1,
            fwcluster_lab::cluster::fwclusterd()?
                .to_str()
                .expect("path"),
        )
        .arg("--config")
        .arg(&other_path)
        .args(["--node", FWS1, "--run-dir"])
        .arg(dir.path())
        .arg("--state-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let fws1_socket = cluster_ctl::control::socket_path(dir.path(), FWS1);
    let result = (|| -> anyhow::Result<()> {
        cluster.wait_for(FWS2, "FWC106", "fws1", Duration::from_secs(5))?;
        // clpstat -s says so too, not only the log.
        let (_, screen) = cluster.tool(&lab, FWS2, "clpstat", &["-s"])?;
        assert!(
            screen.contains("! server0 (fws1) runs a different configuration"),
            "{screen}"
        );
        wait_buckets(&fws1_socket, 1024, Duration::from_secs(6))?;
        wait_buckets(&socket, 0, Duration::from_secs(1))?;
        // And it stays that way.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(buckets_at(&fws1_socket)?, 1024);
        assert_eq!(buckets_at(&socket)?, 0);
        Ok(())
    })();
    let _ = fws1.kill();
    let _ = fws1.wait();
    result
}
