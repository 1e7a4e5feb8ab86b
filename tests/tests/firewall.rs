//! The firewall in the cluster (SPEC §9): the cluster's chains inside a default-drop ruleset,
//! heartbeats dropped by the local firewall named as such, hide and static NAT per group
//! through the example firewall before and after a failover, and the firewall's own health as
//! a monitored resource. Real daemons, real XDP, real nftables.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use fwcluster_lab::{
    Lab,
    cluster::Cluster,
    firewall::{self, SourceEcho, source_seen_within},
    in_netns,
    seed::{
        self, DMZ_HOST, DMZ_HOST_ADDRESS, FWS1, FWS2, GROUP0_INET_FIP, GROUP0_PARP,
        GROUP1_INET_FIP, INET_CLIENT, INET_CLIENT_ADDRESS, INET_IF, INTRA_CLIENT1, INTRA_CLIENT2,
    },
};

const TIMING: &str = r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"
"#;

/// The service on the internet side that tells who it saw.
const INET_SERVER: SocketAddrV4 = SocketAddrV4::new(INET_CLIENT_ADDRESS, 8080);
/// The DMZ host's service, published as group0's proxy-ARP address (static NAT).
const DMZ_SERVER: SocketAddrV4 = SocketAddrV4::new(DMZ_HOST_ADDRESS, 8080);
const PUBLISHED: SocketAddrV4 = SocketAddrV4::new(GROUP0_PARP, 8080);

fn started(body: &str, firewall: impl Fn(&Lab, &Cluster, &str)) -> anyhow::Result<(Lab, Cluster)> {
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, body)?;
    for host in [FWS1, FWS2] {
        firewall(&lab, &cluster, host);
    }
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_for(
        FWS1,
        "FWC201",
        "group0 is active on fws1",
        Duration::from_secs(6),
    )?;
    Ok((lab, cluster))
}

fn example_firewall(lab: &Lab, cluster: &Cluster, host: &str) {
    firewall::load_example(lab, cluster, host).unwrap();
}

/// Who answers ARP for `address` from the internet client.
fn answerers(lab: &Lab, address: Ipv4Addr) -> Vec<[u8; 6]> {
    lab.arp_request(INET_CLIENT, "eth0", address, Duration::from_millis(100))
        .unwrap()
        .into_iter()
        .map(|a| a.mac)
        .collect()
}

fn udp_in(lab: &Lab, host: &str, address: SocketAddrV4) -> UdpSocket {
    let socket = in_netns(lab.ns(host), move || UdpSocket::bind(address))
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

fn arrives(receiver: &UdpSocket, sender: &UdpSocket, to: SocketAddrV4) -> bool {
    sender.send_to(b"probe", to).unwrap();
    let mut buffer = [0u8; 16];
    receiver.recv_from(&mut buffer).is_ok()
}

#[test]
fn the_cluster_chains_in_a_default_drop_ruleset_pass_cluster_traffic_and_nothing_else()
-> anyhow::Result<()> {
    let body = format!(
        "{TIMING}{}{}\n[sync]\ninterconnect = 0\n",
        fwcluster_lab::seed_servers!(),
        fwcluster_lab::seed_group0!()
    );
    // A careful operator's ruleset: drop on input, established traffic, the cluster's chains,
    // nothing else; fws1 drops on output too (fws2 does not, so that it can try what fws1's
    // input must drop).
    let strict = |lab: &Lab, cluster: &Cluster, host: &str| {
        let fragment = firewall::fragment(cluster).unwrap();
        let output = if host == FWS1 { "drop" } else { "accept" };
        let ruleset = firewall::with_fragment(
            &format!(
                "table inet filter\n\
                 delete table inet filter\n\
                 table inet filter {{\n\
                 \tinclude \"/etc/fwcluster/cluster.nft\"\n\
                 \tchain input {{ type filter hook input priority filter; policy drop;\n\
                 \t\tct state established,related accept\n\
                 \t\tjump fwcluster_input; }}\n\
                 \tchain output {{ type filter hook output priority filter; policy {output};\n\
                 \t\tct state established,related accept\n\
                 \t\tjump fwcluster_output; }}\n\
                 }}\n"
            ),
            &fragment,
        );
        lab.nft(host, &ruleset).unwrap();
    };
    let (lab, cluster) = started(&body, strict)?;
    // Heartbeats on both interconnects, in both directions.
    for (host, peer) in [(FWS1, 1), (FWS2, 0)] {
        let view = cluster.status(host)?;
        assert_eq!(
            view.servers[peer].links,
            vec![true, true],
            "{host} hears its peer on every interconnect: {}",
            cluster.log(host)
        );
    }
    // The peer API.
    let (ok, screen) = cluster.tool(&lab, FWS1, "clpstat", &["-s", "-h", FWS2])?;
    assert!(ok, "clpstat -h fws2 through the peer API: {screen}");
    // Session sync between the sync interconnect's addresses: the daemons' own conntrackd
    // replicate an entry created on fws1 into fws2's kernel table through both rulesets.
    for host in [FWS1, FWS2] {
        cluster.wait_for(host, "FWC601", "conntrackd started", Duration::from_secs(3))?;
    }
    lab.run(
        FWS1,
        "conntrack",
        &[
            "-I",
            "-p",
            "udp",
            "-s",
            "203.0.113.101",
            "-d",
            "192.0.2.100",
            "--sport",
            "5000",
            "--dport",
            "53",
            "-t",
            "120",
        ],
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let table = lab.run(FWS2, "conntrack", &["-L", "-p", "udp"])?;
        if String::from_utf8_lossy(&table.stdout).contains("sport=5000") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sync traffic did not pass: fws2 lacks the entry"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let fws2_sender = udp_in(&lab, FWS2, SocketAddrV4::new(seed::FWS2_INTERCONNECT[0], 0));
    // Nothing else from the other server's interconnect address: another UDP port, TCP, ping.
    let other = SocketAddrV4::new(seed::FWS1_INTERCONNECT[0], 4000);
    let other_receiver = udp_in(&lab, FWS1, other);
    assert!(
        !arrives(&other_receiver, &fws2_sender, other),
        "other UDP from the peer is dropped"
    );
    let listener = in_netns(lab.ns(FWS1), move || {
        std::net::TcpListener::bind(SocketAddrV4::new(seed::FWS1_INTERCONNECT[0], 4001))
    })??;
    let connected = in_netns(lab.ns(FWS2), move || {
        std::net::TcpStream::connect_timeout(
            &SocketAddrV4::new(seed::FWS1_INTERCONNECT[0], 4001).into(),
            Duration::from_millis(500),
        )
    })?;
    assert!(
        connected.is_err(),
        "TCP from the peer to another port is dropped"
    );
    drop(listener);
    assert_eq!(
        lab.ping(FWS2, seed::FWS1_INTERCONNECT[0], 3)?,
        0,
        "ping from the peer is dropped"
    );
    // Heartbeats from anyone else never reach the daemon (they would count as refused).
    let intruder = udp_in(
        &lab,
        INTRA_CLIENT1,
        SocketAddrV4::new(seed::INTRA_CLIENT1_ADDRESS, 0),
    );
    for _ in 0..20 {
        intruder.send_to(
            &[0u8; 64],
            SocketAddrV4::new(seed::FWS1_INTERCONNECT[1], 28002),
        )?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let refused: u64 = cluster.status(FWS1)?.rejected_packets.values().sum();
    assert_eq!(refused, 0, "a stranger's heartbeats reached the daemon");
    Ok(())
}

#[test]
fn heartbeats_dropped_by_the_local_firewall_are_named_in_the_log_and_by_clpstat()
-> anyhow::Result<()> {
    let body = format!(
        "{TIMING}{}{}",
        fwcluster_lab::seed_servers!(),
        fwcluster_lab::seed_group0!()
    );
    // fws1's own firewall drops fws2's heartbeats on the dedicated interconnect (eth3); the
    // intranet link still carries them, so the cluster stays whole.
    let careless = |lab: &Lab, _: &Cluster, host: &str| {
        if host == FWS1 {
            lab.nft(
                host,
                "table inet careless {\n\
                 \tchain input { type filter hook input priority filter; policy accept;\n\
                 \t\tip saddr 169.254.12.2 udp dport 28002 drop; }\n\
                 }\n",
            )
            .unwrap();
        }
    };
    let (lab, cluster) = started(&body, careless)?;
    let line = cluster.wait_for(FWS1, "FWC108", "reach eth3", Duration::from_secs(5))?;
    assert!(line.contains("local firewall drops them"), "{line}");
    let (ok, screen) = cluster.tool(&lab, FWS1, "clpstat", &["-n"])?;
    assert!(ok, "{screen}");
    assert!(screen.contains("DROPPED"), "{screen}");
    assert!(
        screen.contains("heartbeats from fws2 reach eth3 but the local firewall drops them"),
        "{screen}"
    );
    // fws2 is not told anything of the kind: its firewall lets everything through.
    assert!(cluster.lines_with(FWS2, "FWC108").is_empty());
    // The operator fixes the ruleset: said once, and clpstat no longer shows it.
    lab.nft(FWS1, "delete table inet careless\n")?;
    cluster.wait_for(FWS1, "FWC108", "no longer dropped", Duration::from_secs(5))?;
    let (_, screen) = cluster.tool(&lab, FWS1, "clpstat", &["-n"])?;
    assert!(!screen.contains("DROPPED"), "{screen}");
    Ok(())
}

const HOT_STANDBY_NAT: &str = r#"
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

  [[group.parp]]
  address = "192.0.2.20"
  interface = "eth0"
  static_nat = "198.51.100.100"
"#;

/// Hide NAT out, static NAT in and out, and who answers ARP for the published address.
fn check_nat(lab: &Lab, cluster: &Cluster, holder: &str) -> anyhow::Result<()> {
    let within = Duration::from_secs(3);
    assert_eq!(
        source_seen_within(lab, INTRA_CLIENT1, INET_SERVER, within)?,
        GROUP0_INET_FIP,
        "the intranet leaves as group0's address through {holder}"
    );
    assert_eq!(
        source_seen_within(lab, INET_CLIENT, PUBLISHED, within)?,
        INET_CLIENT_ADDRESS,
        "the published DMZ host is reached through {holder}, the client's address kept"
    );
    assert_eq!(
        source_seen_within(lab, DMZ_HOST, INET_SERVER, within)?,
        GROUP0_PARP,
        "the DMZ host leaves as its public address through {holder}"
    );
    assert_eq!(
        answerers(lab, GROUP0_PARP),
        vec![lab.mac(holder, INET_IF)?],
        "only {holder} answers ARP for the published address: {}",
        cluster.all_logs_tail(20)
    );
    Ok(())
}

#[test]
fn hot_standby_hides_the_intranet_and_publishes_the_dmz_host_before_and_after_a_failover()
-> anyhow::Result<()> {
    let body = format!(
        "{TIMING}{}{HOT_STANDBY_NAT}",
        fwcluster_lab::seed_servers!()
    );
    let (lab, mut cluster) = started(&body, example_firewall)?;
    let _inet = SourceEcho::start(&lab, INET_CLIENT, INET_SERVER)?;
    let _dmz = SourceEcho::start(&lab, DMZ_HOST, DMZ_SERVER)?;
    check_nat(&lab, &cluster, FWS1)?;
    // The stealth rule: the internet gets no answer from the cluster's addresses; the intranet
    // may ping its gateway (the example's exception).
    assert_eq!(lab.ping(INET_CLIENT, GROUP0_INET_FIP, 3)?, 0, "stealth");
    assert!(
        lab.ping(INTRA_CLIENT1, seed::GROUP0_INTRA_FIP, 3)? > 0,
        "the intranet's exception"
    );
    cluster.kill(FWS1)?;
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(3),
    )?;
    check_nat(&lab, &cluster, FWS2)?;
    Ok(())
}

const LOAD_SHARE_NAT: &str = r#"
[[group]]
name = "group0"
policy = ["fws1", "fws2"]
failback = "manual"

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"
  hide = ["203.0.113.0/25"]

  [[group.fip]]
  address = "203.0.113.10/24"
  interface = "eth2"

[[group]]
name = "group1"
policy = ["fws2", "fws1"]
failback = "manual"

  [[group.fip]]
  address = "192.0.2.11/24"
  interface = "eth0"
  hide = ["203.0.113.128/25"]

  [[group.fip]]
  address = "203.0.113.11/24"
  interface = "eth2"
"#;

#[test]
fn load_share_hides_each_intranet_half_behind_its_group_also_on_the_survivor() -> anyhow::Result<()>
{
    let body = format!("{TIMING}{}{LOAD_SHARE_NAT}", fwcluster_lab::seed_servers!());
    let (lab, mut cluster) = started(&body, example_firewall)?;
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group1 is active on fws2",
        Duration::from_secs(3),
    )?;
    let _inet = SourceEcho::start(&lab, INET_CLIENT, INET_SERVER)?;
    let within = Duration::from_secs(3);
    assert_eq!(
        source_seen_within(&lab, INTRA_CLIENT1, INET_SERVER, within)?,
        GROUP0_INET_FIP
    );
    assert_eq!(
        source_seen_within(&lab, INTRA_CLIENT2, INET_SERVER, within)?,
        GROUP1_INET_FIP
    );
    cluster.kill(FWS2)?;
    cluster.wait_for(
        FWS1,
        "FWC201",
        "group1 is active on fws1",
        Duration::from_secs(3),
    )?;
    assert_eq!(
        source_seen_within(&lab, INTRA_CLIENT2, INET_SERVER, within)?,
        GROUP1_INET_FIP,
        "the upper half still leaves as group1's address, now through fws1"
    );
    assert_eq!(
        source_seen_within(&lab, INTRA_CLIENT1, INET_SERVER, within)?,
        GROUP0_INET_FIP
    );
    Ok(())
}

#[test]
fn a_firewall_that_stops_filtering_hands_its_group_over_and_is_denied_it_until_clpgrp_s()
-> anyhow::Result<()> {
    let script = firewall::config_dir().join("scripts/ckfwalive");
    let script = script.display();
    let body = format!(
        "{TIMING}{}{}
  [[group.exec]]
  name = \"ckfwalive\"
  start = \"{script}\"
  stop = \"{script} -k\"
  monitor = true
  retry = 2
  recover = \"failover\"
",
        fwcluster_lab::seed_servers!(),
        fwcluster_lab::seed_group0!()
    );
    let (lab, cluster) = started(&body, example_firewall)?;
    assert!(
        cluster.status(FWS1)?.exec_pids.contains_key("group0-exec0"),
        "ckfwalive runs on the active node"
    );
    // The ruleset disappears on the active node (flushed by mistake, a failed reload).
    lab.nft(FWS1, "delete table inet filter\n")?;
    cluster.wait_holder(FWS1, "group0", FWS2, Duration::from_secs(10))?;
    assert_eq!(cluster.status(FWS1)?.groups[0].starting[0], "DENY");
    cluster.wait_for(FWS1, "FWC302", "group0", Duration::from_secs(1))?;
    // The operator restores the ruleset and clears the deny with clpgrp -s (the group keeps
    // running on fws2, as the seed does).
    firewall::load_example(&lab, &cluster, FWS1)?;
    let (_, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-s", "-g", "group0"])?;
    assert!(out.contains("STARTING=DENY cleared"), "{out}");
    assert_eq!(cluster.status(FWS1)?.groups[0].starting[0], "ALLOW");
    Ok(())
}

#[test]
fn kernel_proxy_arp_on_a_cluster_interface_is_warned_about() -> anyhow::Result<()> {
    let lab = seed::build()?;
    lab.run(
        FWS1,
        "sysctl",
        &["-qw", &format!("net.ipv4.conf.{INET_IF}.proxy_arp=1")],
    )?;
    let body = format!(
        "{TIMING}{}{}",
        fwcluster_lab::seed_servers!(),
        fwcluster_lab::seed_group0!()
    );
    let mut cluster = Cluster::new(&lab, &body)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    let line = cluster.wait_for(FWS1, "FWC014", "proxy ARP is on", Duration::from_secs(5))?;
    assert!(line.contains(INET_IF), "{line}");
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(5))?;
    assert!(
        cluster.lines_with(FWS2, "FWC014").is_empty(),
        "fws2 has it off"
    );
    Ok(())
}
