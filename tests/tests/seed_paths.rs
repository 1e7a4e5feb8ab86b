//! Paths of the seed manual that a line-by-line audit found untested: a restart clearing
//! STARTING=DENY, `start = "manual"`, an IP watch set `a | b` failing only when all fail,
//! `ping_count`, the gratuitous ARPs of a takeover counted on the wire, the load-share `clpstat`
//! screen, and the EXEC environment as a script sees it. Real daemons on the seed network.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use fwcluster_lab::{
    Lab,
    cluster::Cluster,
    seed::{self, FWS1, FWS2, GROUP0_INET_FIP, INET_CLIENT, INET_CLIENT_ADDRESS, INET_IF},
};

const TIMING: &str = r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"
"#;

fn body(group0_extra: &str, fip_extra: &str) -> String {
    format!(
        r#"{TIMING}{}
[[group]]
name = "group0"
policy = ["fws1", "fws2"]
failback = "manual"
{group0_extra}
  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"
{fip_extra}
"#,
        fwcluster_lab::seed_servers!()
    )
}

fn started(body: &str) -> anyhow::Result<(Lab, Cluster)> {
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, body)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(5))?;
    Ok((lab, cluster))
}

const MONITORED: &str = r#"
  [[group.exec]]
  name = "fwalive"
  start = "exec sleep 1000"
  stop = "true"
  monitor = true
  recover = "failover"
"#;

#[test]
fn a_restart_of_the_daemon_clears_starting_deny() -> anyhow::Result<()> {
    let (lab, mut cluster) = started(&body(MONITORED, ""))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    let pid = cluster.status(FWS1)?.exec_pids["group0-exec0"];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(3))?;
    assert_eq!(cluster.status(FWS1)?.groups[0].starting[0], "DENY");
    // The seed: a restart clears the flag.
    cluster.stop(FWS1, Duration::from_secs(10))?;
    cluster.start(&lab, FWS1)?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(5))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(view) = cluster.status(FWS1)
            && view.groups[0].starting[0] == "ALLOW"
        {
            break;
        }
        assert!(Instant::now() < deadline, "DENY survived a restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the group stays where it runs (failback manual).
    assert_eq!(cluster.holder(FWS1, "group0")?.as_deref(), Some(FWS2));
    Ok(())
}

#[test]
fn a_group_with_manual_start_waits_for_clpgrp_s() -> anyhow::Result<()> {
    let (lab, cluster) = started(&body("start = \"manual\"", ""))?;
    // Well past the startup wait: nobody starts it.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(cluster.holder(FWS1, "group0")?, None);
    assert!(cluster.lines_with(FWS1, "FWC201").is_empty());
    // clpstat -i shows it from the configuration.
    let (_, screen) = cluster.tool(&lab, FWS1, "clpstat", &["-i"])?;
    let rows: Vec<String> = screen
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for expected in ["STARTUP : MANUAL", "START : MANUAL"] {
        assert!(
            rows.iter().any(|r| r == expected),
            "{expected:?} in:\n{screen}"
        );
    }
    let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-s", "-g", "group0"])?;
    assert!(ok, "{out}");
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    Ok(())
}

/// Makes `host` unable to reach `target` (or able again).
fn unreachable(lab: &Lab, host: &str, target: Ipv4Addr, cut: bool) -> anyhow::Result<()> {
    let table = format!("ipw_{}", target.octets()[3]);
    if cut {
        lab.nft(
            host,
            &format!(
                "table inet {table} {{\n\tchain out {{ type filter hook output priority 0; policy accept; ip daddr {target} drop; }}\n}}\n"
            ),
        )
    } else {
        lab.nft(host, &format!("delete table inet {table}\n"))
    }
}

#[test]
fn an_ip_watch_set_fails_only_when_every_target_is_unreachable() -> anyhow::Result<()> {
    let ipw = r#"
  [[group.ipw]]
  targets = ["192.0.2.254", "192.0.2.100"]
  interval = "100ms"
  timeout = "200ms"
  retry = 1
  recover = "failover"
"#;
    let (lab, cluster) = started(&body(ipw, ""))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    // One of the two lost: the set still answers.
    unreachable(&lab, FWS1, seed::UPSTREAM_ADDRESS, true)?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.holder(FWS2, "group0")?.as_deref(), Some(FWS1));
    assert!(
        cluster.lines_with(FWS1, "FWC303").is_empty(),
        "{}",
        cluster.log(FWS1)
    );
    // Both lost: the entry fails and the group moves.
    unreachable(&lab, FWS1, INET_CLIENT_ADDRESS, true)?;
    cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(5))?;
    assert_eq!(cluster.status(FWS1)?.groups[0].starting[0], "DENY");
    Ok(())
}

#[test]
fn ping_count_refuses_an_address_another_host_answers_for() -> anyhow::Result<()> {
    // Free: the probes go unanswered and the address is taken.
    let (lab, cluster) = started(&body("", "  ping_count = 2\n"))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(8))?;
    drop(cluster);
    drop(lab);
    // Held by another host on the segment: refused, and nobody runs the group with it.
    let lab = seed::build()?;
    lab.run(
        INET_CLIENT,
        "ip",
        &["address", "add", "192.0.2.10/24", "dev", "eth0"],
    )?;
    let mut cluster = Cluster::new(&lab, &body("", "  ping_count = 2\n  retry = 0\n"))?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    let line = cluster.wait_for(
        FWS1,
        "FWC302",
        "answers pings: another host holds it",
        Duration::from_secs(8),
    )?;
    assert!(line.contains("192.0.2.10"), "{line}");
    std::thread::sleep(Duration::from_secs(2));
    for host in [FWS1, FWS2] {
        assert!(
            cluster
                .lines_with(host, "FWC201")
                .iter()
                .all(|l| !l.contains("group0 is active")),
            "{host} ran group0 with an address someone else holds:\n{}",
            cluster.log(host)
        );
    }
    Ok(())
}

#[test]
fn a_takeover_sends_the_configured_gratuitous_arps() -> anyhow::Result<()> {
    let (lab, cluster) = started(&body("", "  arp_count = 3\n"))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    let fws2 = lab.mac(FWS2, INET_IF)?;
    // One request at the start, then only what the firewalls send on their own.
    let watch = lab.arp_watch(
        INET_CLIENT,
        INET_IF,
        vec![GROUP0_INET_FIP],
        Duration::from_secs(30),
    )?;
    let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
    assert!(ok, "{out}");
    cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(5))?;
    // The repeats are a second apart: all of them are out after two seconds.
    std::thread::sleep(Duration::from_millis(3000));
    let (sightings, _) = watch.stop()?;
    let announced: Vec<Duration> = sightings
        .iter()
        .filter(|s| s.gratuitous && s.mac == fws2 && s.address == GROUP0_INET_FIP)
        .map(|s| s.at.elapsed())
        .collect();
    // arp_count announcements: the first at the map flip (R-XDP-6), the others a second
    // apart from the address's activation; each is a gratuitous request and a gratuitous
    // reply (receivers differ in which one they learn from).
    assert_eq!(announced.len(), 2 * 3, "{announced:?}");
    Ok(())
}

#[test]
fn the_load_share_status_screen_shows_both_groups_on_their_primaries() -> anyhow::Result<()> {
    let load_share = format!(
        r#"{TIMING}{}
[[group]]
name = "group0"
policy = ["fws1", "fws2"]

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"

[[group]]
name = "group1"
policy = ["fws2", "fws1"]

  [[group.fip]]
  address = "192.0.2.11/24"
  interface = "eth0"
"#,
        fwcluster_lab::seed_servers!()
    );
    let (lab, cluster) = started(&load_share)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    cluster.wait_holder(FWS1, "group1", FWS2, Duration::from_secs(5))?;
    let (ok, screen) = cluster.tool(&lab, FWS2, "clpstat", &["-s"])?;
    assert!(ok, "{screen}");
    let rows: Vec<String> = screen
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for expected in [
        "* server1 : fws2",
        "GROUP0 STATUS ONLINE OFFLINE",
        "GROUP1 STATUS OFFLINE ONLINE",
        "<U> group0-fip0 ONLINE OFFLINE",
        "<U> group1-fip0 OFFLINE ONLINE",
    ] {
        assert!(
            rows.iter().any(|r| r == expected),
            "{expected:?} in:\n{screen}"
        );
    }
    // The policies: group1's primary is fws2.
    let policies: Vec<&String> = rows.iter().filter(|r| r.starts_with("POLICY")).collect();
    assert_eq!(policies, ["POLICY 1st 2nd", "POLICY 2nd 1st"], "{screen}");
    Ok(())
}

#[test]
fn an_exec_script_sees_the_seeds_environment() -> anyhow::Result<()> {
    let exec = r#"
  [[group.exec]]
  name = "recorder"
  start = "env | grep ^FWCLUSTER_ | sort > {dir}/env-start-$FWCLUSTER_NODE"
  stop = "env | grep ^FWCLUSTER_ | sort > {dir}/env-stop-$FWCLUSTER_NODE"
"#;
    let (lab, cluster) = started(&body(exec, ""))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    let dir = cluster.dir.path().to_owned();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let started = read("env-start-fws1");
    for expected in [
        "FWCLUSTER_EVENT=ACT_NORMAL",
        "FWCLUSTER_GROUP=group0",
        "FWCLUSTER_RESOURCE=group0-exec0",
        "FWCLUSTER_NODE=fws1",
        &format!("FWCLUSTER_CLUSTER={}", lab.prefix()),
    ] {
        assert!(
            started.lines().any(|l| l == expected),
            "{expected:?} in:\n{started}"
        );
    }
    // A planned move: stopped normally on fws1, started normally on fws2.
    let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
    assert!(ok, "{out}");
    cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(5))?;
    assert!(
        read("env-stop-fws1")
            .lines()
            .any(|l| l == "FWCLUSTER_EVENT=DEACT_NORMAL"),
        "{}",
        read("env-stop-fws1")
    );
    assert!(
        read("env-start-fws2")
            .lines()
            .any(|l| l == "FWCLUSTER_EVENT=ACT_NORMAL"),
        "{}",
        read("env-start-fws2")
    );
    Ok(())
}
