//! `cargo xtask demo`: fwcluster on the seed network, end to end.
//!
//! Both firewalls run the example firewall (`config/firewall.nft`: stateful, default drop, the
//! cluster's chains from `clpcfg nft`, hide NAT for the intranet and static NAT for a DMZ host)
//! and start `fwclusterd` (hot standby, 10 ms heartbeats, 30 ms timeout); `clpstat` shows the
//! cluster; an intranet client probes the internet through the hidden gateway and the internet
//! client probes the published DMZ host, every millisecond, while the primary loses all its
//! links; the standby takes over and the client-visible outage is printed; the primary returns
//! (manual failback: the group stays), `clpgrp -m` moves it back, and everything is torn down.
//! The network is dual-stack: group0 is the IPv6 gateway too (answered in Neighbor Discovery by
//! the XDP program), and an IPv6 probe runs beside the IPv4 ones through every event.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use fwcluster_lab::{
    Lab,
    arp::format_mac,
    cluster::{self, Cluster},
    firewall,
    ndp::{self, Solicitation},
    seed::{
        self, FWS1, FWS2, GROUP0_INET_FIP, GROUP0_INET_FIP6, GROUP0_PARP, INET_CLIENT,
        INET_CLIENT_ADDRESS, INET_CLIENT_ADDRESS6, INET_IF, INTRA_CLIENT1,
    },
    traffic::{Probe, ProbeResult},
};

const CONFIG: &str = concat!(
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
  hide = ["203.0.113.0/24"]

  [[group.fip]]
  address = "198.51.100.10/24"
  interface = "eth1"

  [[group.fip]]
  address = "203.0.113.10/24"
  interface = "eth2"

  [[group.fip]]
  address = "2001:db8::10/64"
  interface = "eth0"

  [[group.fip]]
  address = "2001:db8:2::10/64"
  interface = "eth2"

  [[group.parp]]
  address = "192.0.2.20"
  interface = "eth0"
  static_nat = "198.51.100.100"

  [[group.ipw]]
  targets = ["192.0.2.254"]
  interval = "200ms"
  timeout = "300ms"
"#
);

fn tool(lab: &Lab, cluster: &Cluster, host: &str, name: &str, args: &[&str]) -> Result<String> {
    let binary = cluster::binary(name)?;
    let output = lab
        .command(host, binary.to_str().context("path")?)
        .args(args)
        .args(["--node", host, "--run-dir"])
        .arg(cluster.dir.path().join(format!("run-{host}")))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        let tail = |h: &str| {
            let log = cluster.log(h);
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("FWC107")).collect();
            lines[lines.len().saturating_sub(120)..].join("\n")
        };
        anyhow::bail!(
            "{name} {args:?} on {host} failed: {text}\n--- fws1 log ---\n{}\n--- fws2 log ---\n{}",
            tail(FWS1),
            tail(FWS2)
        );
    }
    Ok(text)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn report(what: &str, [outbound, published, outbound6]: &[ProbeResult; 3]) {
    let line = |probe: &ProbeResult| {
        format!(
            "{} of {} probes lost, outage {:.0} ms",
            probe.lost(),
            probe.sent(),
            probe.outage().as_secs_f64() * 1e3
        )
    };
    println!("  {what}:");
    println!(
        "    IPv4 intranet → {INET_CLIENT_ADDRESS} (hidden behind {GROUP0_INET_FIP}): {}",
        line(outbound)
    );
    println!(
        "    IPv4 internet → {GROUP0_PARP} (static NAT to the DMZ host): {}",
        line(published)
    );
    println!(
        "    IPv6 intranet → {INET_CLIENT_ADDRESS6} (routed through the gateway {GROUP0_INET_FIP6}): {}",
        line(outbound6)
    );
}

/// Through the firewall both ways: the intranet client out to the internet (hide NAT), the
/// internet client in to the published DMZ host (static NAT), and the intranet client out
/// over IPv6 (routed through group0's IPv6 gateways).
fn probes(lab: &Lab) -> Result<[Probe; 3]> {
    let period = Duration::from_millis(1);
    Ok([
        Probe::start(lab.ns(INTRA_CLIENT1), INET_CLIENT_ADDRESS, period)?,
        Probe::start(lab.ns(INET_CLIENT), GROUP0_PARP, period)?,
        Probe::start(lab.ns(INTRA_CLIENT1), INET_CLIENT_ADDRESS6, period)?,
    ])
}

fn finish([a, b, c]: [Probe; 3]) -> Result<[ProbeResult; 3]> {
    Ok([a.finish()?, b.finish()?, c.finish()?])
}

/// Who answers a Neighbor Solicitation for the IPv6 gateway, from the internet client.
fn ipv6_gateway_answers(lab: &Lab) -> Result<Vec<[u8; 6]>> {
    let mac = lab.mac(INET_CLIENT, "eth0")?;
    let solicitation = Solicitation::multicast(mac, INET_CLIENT_ADDRESS6, GROUP0_INET_FIP6);
    let answers = fwcluster_lab::netns::in_netns(lab.ns(INET_CLIENT), move || {
        ndp::solicit("eth0", &solicitation, Duration::from_millis(200))
    })??;
    Ok(answers.iter().map(|a| a.src_mac).collect())
}

fn main() -> Result<()> {
    println!("== fwcluster demo: hot standby on the seed network, through the example firewall ==");
    // The tools the demo runs are built before the clock starts.
    for name in ["fwclusterd", "clpstat", "clpgrp", "clpcfg"] {
        cluster::binary(name)?;
    }
    let lab = seed::build_dual_stack().context("building the seed network")?;
    println!(
        "network up: {} namespaces (prefix {})",
        lab.namespaces().len(),
        lab.prefix()
    );
    let mut cluster = Cluster::new(&lab, CONFIG)?;
    for host in [FWS1, FWS2] {
        firewall::load_example(&lab, &cluster, host)?;
    }
    println!(
        "example firewall loaded on fws1 and fws2 (config/firewall.nft with `clpcfg nft`: \
         default drop, hide NAT for the intranet, static NAT {GROUP0_PARP} → the DMZ host)"
    );
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_for(
        FWS1,
        "FWC201",
        "group0 is active on fws1",
        Duration::from_secs(10),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    println!("\n$ clpstat -s    (on fws1)");
    print!(
        "{}",
        indent(&tool(&lab, &cluster, FWS1, "clpstat", &["-s"])?)
    );
    println!("$ clpstat -n    (on fws2)");
    print!(
        "{}",
        indent(&tool(&lab, &cluster, FWS2, "clpstat", &["-n"])?)
    );
    let fws1 = lab.mac(FWS1, INET_IF)?;
    let fws2 = lab.mac(FWS2, INET_IF)?;
    println!(
        "fws1 eth0 is {}, fws2 eth0 is {}",
        format_mac(&fws1),
        format_mac(&fws2)
    );

    println!("\n-- the primary fws1 loses every link --");
    let running = probes(&lab)?;
    std::thread::sleep(Duration::from_millis(300));
    lab.cut_host(FWS1)?;
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(5),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    report("failover", &finish(running)?);
    let answers = lab.arp_request(
        INET_CLIENT,
        "eth0",
        GROUP0_INET_FIP,
        Duration::from_millis(200),
    )?;
    println!(
        "  who-has {GROUP0_INET_FIP}: {:?}",
        answers
            .iter()
            .map(|a| format_mac(&a.mac))
            .collect::<Vec<_>>()
    );
    ensure!(
        answers.len() == 1 && answers[0].mac == fws2,
        "fws2 must answer alone"
    );
    let answers6 = ipv6_gateway_answers(&lab)?;
    println!(
        "  neighbor solicitation for {GROUP0_INET_FIP6}: {:?}",
        answers6.iter().map(format_mac).collect::<Vec<_>>()
    );
    ensure!(
        answers6 == vec![fws2],
        "fws2 must answer alone for the IPv6 gateway"
    );
    println!("\n$ clpstat -s    (on fws2)");
    print!(
        "{}",
        indent(&tool(&lab, &cluster, FWS2, "clpstat", &["-s"])?)
    );

    println!("-- fws1 returns: the interconnects heal, failback is manual --");
    lab.restore_host(FWS1)?;
    cluster.wait_for(
        FWS1,
        "FWC202",
        "group0 is not active on fws1",
        Duration::from_secs(5),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let answers = lab.arp_request(
        INET_CLIENT,
        "eth0",
        GROUP0_INET_FIP,
        Duration::from_millis(200),
    )?;
    ensure!(
        answers.len() == 1 && answers[0].mac == fws2,
        "group0 stays on fws2"
    );
    println!("  group0 stays on fws2 (roles inverted)");

    println!("\n$ clpgrp -m -g group0    (on fws2, where it runs)");
    let running = probes(&lab)?;
    std::thread::sleep(Duration::from_millis(200));
    print!(
        "{}",
        indent(&tool(
            &lab,
            &cluster,
            FWS2,
            "clpgrp",
            &["-m", "-g", "group0"]
        )?)
    );
    std::thread::sleep(Duration::from_millis(300));
    report("planned move", &finish(running)?);
    ensure!(
        ipv6_gateway_answers(&lab)? == vec![fws1],
        "fws1 must answer alone for the IPv6 gateway after the move"
    );
    println!("\n$ clpstat -s    (on fws1)");
    print!(
        "{}",
        indent(&tool(&lab, &cluster, FWS1, "clpstat", &["-s"])?)
    );

    for host in [FWS1, FWS2] {
        cluster.stop(host, Duration::from_secs(10))?;
    }
    drop(cluster);
    drop(lab);
    let leftovers = Command::new("ip").args(["netns", "list"]).output()?;
    ensure!(
        !String::from_utf8_lossy(&leftovers.stdout).contains("fwl"),
        "namespaces left behind"
    );
    println!("\nteardown: daemons stopped, XDP detached, pins and namespaces removed");
    Ok(())
}
