//! IPv6 gateways end to end on the dual-stack seed network (R-V6-1, R-V6-2): real daemons, real
//! XDP answering Neighbor Solicitations, real addresses and multicast memberships.

use std::{net::Ipv6Addr, time::Duration};

use fwcluster_lab::{
    Lab,
    cluster::Cluster,
    ndp::{self, OVERRIDE, ROUTER, SOLICITED, Solicitation},
    seed::{
        self, FWS1, FWS2, GROUP0_INET_FIP6, GROUP0_PARP6, INET_CLIENT, INET_CLIENT_ADDRESS6,
        INET_IF, INTRA_CLIENT1_ADDRESS6, UPSTREAM,
    },
};

const DUAL_STACK: &str = concat!(
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
  address = "2001:db8::10/64"
  interface = "eth0"
  arp_count = 3

  [[group.fip]]
  address = "2001:db8:2::10/64"

  [[group.parp]]
  address = "2001:db8::20"
  interface = "eth0"
"#
);

/// The advertisements the internet client gets for one multicast solicitation of `target`.
fn answers(lab: &Lab, target: Ipv6Addr) -> Vec<ndp::Advertisement> {
    let mac = lab.mac(INET_CLIENT, "eth0").unwrap();
    let solicitation = Solicitation::multicast(mac, INET_CLIENT_ADDRESS6, target);
    solicit(lab, solicitation)
}

fn solicit(lab: &Lab, solicitation: Solicitation) -> Vec<ndp::Advertisement> {
    fwcluster_lab::netns::in_netns(lab.ns(INET_CLIENT), move || {
        ndp::solicit("eth0", &solicitation, Duration::from_millis(150))
    })
    .unwrap()
    .unwrap()
}

fn wait_answered_by(lab: &Lab, target: Ipv6Addr, mac: [u8; 6], timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if answers(lab, target)
            .iter()
            .map(|a| a.src_mac)
            .collect::<Vec<_>>()
            == vec![mac]
        {
            return true;
        }
    }
    false
}

/// The line of `ip -6 addr` for `address` on a host's interface, if it holds it.
fn address_line(lab: &Lab, host: &str, interface: &str, address: Ipv6Addr) -> Option<String> {
    let output = lab
        .run(host, "ip", &["-6", "-o", "addr", "show", "dev", interface])
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.contains(&format!(" {address}/")))
        .map(str::to_owned)
}

/// Whether a host's interface is a member of `address`'s solicited-node group
/// (`/proc/net/igmp6` of its namespace).
fn member(lab: &Lab, host: &str, interface: &str, address: Ipv6Addr) -> bool {
    let group: String = ndp::solicited_node(address)
        .octets()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let output = lab.run(host, "cat", &["/proc/net/igmp6"]).unwrap();
    String::from_utf8_lossy(&output.stdout).lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.get(1) == Some(&interface) && fields.get(2) == Some(&group.as_str())
    })
}

fn ping6(lab: &Lab, from: &str, to: Ipv6Addr) -> bool {
    lab.run(from, "ping", &["-6", "-c", "1", "-W", "1", &to.to_string()])
        .is_ok()
}

#[test]
fn an_ipv6_gateway_is_answered_by_its_owner_only_and_moves_with_clpgrp_and_node_loss()
-> anyhow::Result<()> {
    let lab = seed::build_dual_stack()?;
    let mut cluster = Cluster::new(&lab, DUAL_STACK)?;
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
    let client = lab.mac(INET_CLIENT, "eth0")?;

    // Address resolution: the owner answers, solicited, with its MAC; the gateway with the
    // Router flag, the proxied address without.
    let gateway = answers(&lab, GROUP0_INET_FIP6);
    assert_eq!(
        gateway.len(),
        1,
        "{gateway:?}\n{}",
        cluster.all_logs_tail(40)
    );
    assert_eq!(gateway[0].src_mac, fws1);
    assert_eq!(gateway[0].target_mac, Some(fws1));
    assert_eq!(gateway[0].flags, SOLICITED | OVERRIDE | ROUTER);
    assert_eq!(gateway[0].dst, INET_CLIENT_ADDRESS6);
    let proxied = answers(&lab, GROUP0_PARP6);
    assert_eq!(proxied.len(), 1, "{proxied:?}");
    assert_eq!(proxied[0].flags, SOLICITED | OVERRIDE);
    assert_eq!(proxied[0].target_mac, Some(fws1));
    // Reachability confirmation (unicast): answered at the owner's MAC; at the standby's
    // MAC (a stale cache) nobody answers.
    let nud = |mac| {
        solicit(
            &lab,
            Solicitation::unicast(client, INET_CLIENT_ADDRESS6, GROUP0_INET_FIP6, mac),
        )
    };
    assert_eq!(
        nud(fws1).iter().map(|a| a.src_mac).collect::<Vec<_>>(),
        vec![fws1]
    );
    assert!(nud(fws2).is_empty(), "the standby answered");
    // Duplicate-address detection of the address by someone else: the owner defends it,
    // to all-nodes, not solicited.
    // (The gateway's own announcements, a second apart from its activation, are over first.)
    std::thread::sleep(Duration::from_millis(2500));
    for (target, flags) in [
        (GROUP0_PARP6, OVERRIDE),
        (GROUP0_INET_FIP6, OVERRIDE | ROUTER),
    ] {
        let probe = Solicitation::duplicate_address_detection(client, target);
        let defended = fwcluster_lab::netns::in_netns(lab.ns(INET_CLIENT), move || {
            ndp::unsolicited_advertisements_after("eth0", &probe, Duration::from_millis(150))
        })??;
        assert_eq!(
            defended
                .iter()
                .map(|a| (a.src_mac, a.dst, a.flags))
                .collect::<Vec<_>>(),
            vec![(fws1, "ff02::1".parse()?, flags)],
            "DAD probe for {target}"
        );
    }

    // The owner holds its floating addresses without duplicate-address detection, deprecated
    // (never a source of its own traffic), and listens to their solicited-node groups; the
    // standby holds neither.
    let held = address_line(&lab, FWS1, INET_IF, GROUP0_INET_FIP6).expect("fws1 holds the FIP");
    assert!(
        held.contains("nodad") && held.contains("deprecated"),
        "{held}"
    );
    assert!(
        !held.contains("tentative") && !held.contains("dadfailed"),
        "{held}"
    );
    assert!(address_line(&lab, FWS2, INET_IF, GROUP0_INET_FIP6).is_none());
    for address in [GROUP0_INET_FIP6, GROUP0_PARP6] {
        assert!(
            member(&lab, FWS1, INET_IF, address),
            "fws1 not in the group of {address}"
        );
        assert!(
            !member(&lab, FWS2, INET_IF, address),
            "fws2 in the group of {address}"
        );
    }
    // IPv6 passes the gateway both ways.
    assert!(ping6(&lab, INET_CLIENT, INTRA_CLIENT1_ADDRESS6));

    // A planned move: the new owner announces the gateway to all-nodes arp_count (3) times,
    // the first at the map flip (R-XDP-6), a second apart; the old owner never again.
    let listener = listen_for_announcements(&lab);
    let watch = SolicitationWatch::start(&lab, GROUP0_INET_FIP6);
    let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
    assert!(ok, "{out}");
    assert_announced_by(listener, fws2, 3);
    watch.assert_one_owner_at_a_time(fws1, fws2);
    assert!(wait_answered_by(
        &lab,
        GROUP0_INET_FIP6,
        fws2,
        Duration::from_secs(1)
    ));
    assert_eq!(
        answers(&lab, GROUP0_PARP6)
            .iter()
            .map(|a| a.src_mac)
            .collect::<Vec<_>>(),
        vec![fws2]
    );
    let held = address_line(&lab, FWS2, INET_IF, GROUP0_INET_FIP6).expect("fws2 holds the FIP");
    assert!(
        held.contains("nodad") && !held.contains("tentative"),
        "{held}"
    );
    assert!(address_line(&lab, FWS1, INET_IF, GROUP0_INET_FIP6).is_none());
    for address in [GROUP0_INET_FIP6, GROUP0_PARP6] {
        assert!(
            member(&lab, FWS2, INET_IF, address),
            "fws2 not in the group of {address}"
        );
        assert!(
            !member(&lab, FWS1, INET_IF, address),
            "fws1 still in the group of {address}"
        );
    }
    assert!(ping6(&lab, INET_CLIENT, INTRA_CLIENT1_ADDRESS6));

    // Node loss: fws1 takes the gateway back without a word from fws2, and announces it.
    let listener = listen_for_announcements(&lab);
    let watch = SolicitationWatch::start(&lab, GROUP0_INET_FIP6);
    cluster.kill_all(FWS2)?;
    assert!(
        wait_answered_by(&lab, GROUP0_INET_FIP6, fws1, Duration::from_secs(3)),
        "{}",
        cluster.all_logs_tail(40)
    );
    let held = address_line(&lab, FWS1, INET_IF, GROUP0_INET_FIP6).expect("fws1 holds the FIP");
    assert!(
        !held.contains("tentative") && !held.contains("dadfailed"),
        "{held}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !ping6(&lab, INET_CLIENT, INTRA_CLIENT1_ADDRESS6) {
        assert!(std::time::Instant::now() < deadline, "no IPv6 through fws1");
    }
    assert_announced_by(listener, fws1, 3);
    watch.assert_one_owner_at_a_time(fws2, fws1);
    Ok(())
}

/// Solicits an address from the internet client every few milliseconds while a fault runs,
/// keeping who answered each solicitation: the safety property is checked throughout, not
/// only once things settled.
struct SolicitationWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<Vec<[u8; 6]>>>>,
}

impl SolicitationWatch {
    fn start(lab: &Lab, target: Ipv6Addr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let ns = lab.ns(INET_CLIENT).to_owned();
        let mac = lab.mac(INET_CLIENT, "eth0").expect("client MAC");
        let thread = std::thread::spawn(move || {
            fwcluster_lab::netns::in_netns(&ns, move || -> anyhow::Result<Vec<Vec<[u8; 6]>>> {
                // A source of its own: the answers to the test's other solicitations meanwhile
                // go elsewhere.
                let source: Ipv6Addr = "2001:db8::1:100".parse().expect("address");
                let solicitation = Solicitation::multicast(mac, source, target);
                let mut rounds = Vec::new();
                while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    let answers = ndp::solicit("eth0", &solicitation, Duration::from_millis(5))?;
                    rounds.push(answers.iter().map(|a| a.src_mac).collect());
                }
                Ok(rounds)
            })?
        });
        Self { stop, thread }
    }

    /// No solicitation got two answers, and once the new owner answered the old one never
    /// did again.
    fn assert_one_owner_at_a_time(self, old: [u8; 6], new: [u8; 6]) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rounds = self.thread.join().expect("watch").expect("watch");
        assert!(rounds.len() > 50, "only {} solicitations", rounds.len());
        for (k, answers) in rounds.iter().enumerate() {
            assert!(
                answers.len() <= 1,
                "solicitation {k} answered by {answers:?}"
            );
        }
        let first_new = rounds
            .iter()
            .position(|a| a.contains(&new))
            .expect("the new owner answered");
        assert!(
            rounds[first_new..].iter().all(|a| !a.contains(&old)),
            "the old owner answered after the new one"
        );
    }
}

type Announcements = std::thread::JoinHandle<
    anyhow::Result<anyhow::Result<Vec<(std::time::Instant, ndp::Advertisement)>>>,
>;

/// Listens on the internet client for 4 s for unsolicited advertisements of the IPv6 gateway.
fn listen_for_announcements(lab: &Lab) -> Announcements {
    let ns = lab.ns(INET_CLIENT).to_owned();
    let listener = std::thread::spawn(move || {
        fwcluster_lab::netns::in_netns(&ns, || {
            ndp::unsolicited_advertisements("eth0", GROUP0_INET_FIP6, Duration::from_secs(4))
        })
    });
    // The socket is open before the event.
    std::thread::sleep(Duration::from_millis(100));
    listener
}

/// The gateway was announced `count` times by `mac` (Override and Router set, to all-nodes,
/// hop limit 255, a second apart), and after its first announcement by nobody else. (The old
/// owner's own repeats from its activation may still be under way before the event.)
fn assert_announced_by(listener: Announcements, mac: [u8; 6], count: usize) {
    let heard = listener.join().expect("listener").unwrap().unwrap();
    let first = heard
        .iter()
        .position(|(_, a)| a.src_mac == mac)
        .unwrap_or_else(|| panic!("no announcement from the new owner: {heard:?}"));
    let announced = &heard[first..];
    assert!(
        announced.iter().all(|(_, a)| a.src_mac == mac),
        "another node announced after the takeover: {heard:?}"
    );
    assert_eq!(announced.len(), count, "{heard:?}");
    for (_, advertisement) in announced {
        assert_eq!(advertisement.target_mac, Some(mac));
        assert_eq!(advertisement.flags, OVERRIDE | ROUTER);
        assert_eq!(advertisement.src, GROUP0_INET_FIP6);
        assert_eq!(advertisement.dst, "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(advertisement.hop_limit, 255);
    }
    let gaps: Vec<Duration> = announced.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        gaps.iter()
            .all(|g| *g > Duration::from_millis(700) && *g < Duration::from_millis(1300)),
        "{gaps:?}"
    );
}

/// Heartbeats, the peer API and the status screens over IPv6 interconnects only.
const IPV6_INTERCONNECTS: &str = r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"

[[server]]
name = "fws1"
interconnect = ["2001:db8:12::1/64", "2001:db8:2::1/64"]

[[server]]
name = "fws2"
interconnect = ["2001:db8:12::2/64", "2001:db8:2::2/64"]

[[group]]
name = "group0"
policy = ["fws1", "fws2"]
failback = "manual"

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"

  [[group.fip]]
  address = "2001:db8::10/64"
  interface = "eth0"
"#;

#[test]
fn a_cluster_on_ipv6_interconnects_only_sees_its_peer_moves_groups_and_fails_over()
-> anyhow::Result<()> {
    let lab = seed::build_dual_stack()?;
    // Nothing of the cluster may travel over IPv4 between the servers: their IPv4
    // interconnect and intranet addresses are gone.
    for host in [FWS1, FWS2] {
        for interface in ["eth2", "eth3"] {
            lab.run(host, "ip", &["-4", "addr", "flush", "dev", interface])?;
        }
    }
    let mut cluster = Cluster::new(&lab, IPV6_INTERCONNECTS)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_for(
        FWS1,
        "FWC201",
        "group0 is active on fws1",
        Duration::from_secs(5),
    )?;
    cluster.wait_for(
        FWS2,
        "FWC101",
        "server fws1 is ONLINE",
        Duration::from_secs(5),
    )?;
    let fws1 = lab.mac(FWS1, INET_IF)?;
    let fws2 = lab.mac(FWS2, INET_IF)?;

    // Both links up as both servers see them, named by their IPv6 addresses.
    let (ok, screen) = cluster.tool(&lab, FWS2, "clpstat", &["-n"])?;
    assert!(ok, "{screen}");
    for address in [
        "2001:db8:12::1",
        "2001:db8:2::1",
        "2001:db8:12::2",
        "2001:db8:2::2",
    ] {
        let row = screen
            .lines()
            .find(|l| l.split_whitespace().next() == Some(address))
            .unwrap_or_else(|| panic!("{address} missing:\n{screen}"));
        assert_eq!(
            row.split_whitespace().skip(1).collect::<Vec<_>>(),
            ["OK", "OK"],
            "{screen}"
        );
    }
    let status = cluster.status(FWS2)?;
    assert!(
        status.servers.iter().all(|s| s.status == "ONLINE"),
        "{status:?}"
    );

    // A planned move goes through the peer API over IPv6.
    let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
    assert!(ok, "{out}");
    assert!(wait_answered_by(
        &lab,
        GROUP0_INET_FIP6,
        fws2,
        Duration::from_secs(2)
    ));

    // Node loss, seen by IPv6 heartbeats only.
    cluster.kill_all(FWS2)?;
    assert!(
        wait_answered_by(&lab, GROUP0_INET_FIP6, fws1, Duration::from_secs(3)),
        "{}",
        cluster.all_logs_tail(40)
    );
    cluster.wait_for(
        FWS1,
        "FWC201",
        "cause=\"server fws2 went down\"",
        Duration::from_secs(3),
    )?;
    Ok(())
}

#[test]
fn an_ipv6_ip_watch_target_lost_moves_the_group_and_its_return_allows_it_again()
-> anyhow::Result<()> {
    let lab = seed::build_dual_stack()?;
    let config = DUAL_STACK.replace(
        "  [[group.parp]]",
        "  [[group.ipw]]\n  targets = [\"2001:db8::fe\"]\n  interval = \"100ms\"\n  timeout = \"200ms\"\n  retry = 1\n\n  [[group.parp]]",
    );
    let mut cluster = Cluster::new(&lab, &config)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    let fws2 = lab.mac(FWS2, INET_IF)?;
    // Both watches see the upstream router over ICMPv6.
    std::thread::sleep(Duration::from_millis(500));
    let view = cluster.status(FWS1)?;
    let ipw = view.groups[0]
        .resources
        .iter()
        .find(|r| r.kind == "ipw")
        .expect("the IP watch resource");
    assert_eq!(ipw.states, ["ONLINE", "ONLINE"], "{ipw:?}");
    // fws1's echo requests to the router (and only those) are lost.
    let cut = "table inet ipw6cut {\n chain in { type filter hook input priority 0; ip6 saddr 2001:db8::1 icmpv6 type echo-request drop\n }\n}\n";
    lab.nft(UPSTREAM, cut)?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(3))?;
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(1),
    )?;
    assert!(wait_answered_by(
        &lab,
        GROUP0_INET_FIP6,
        fws2,
        Duration::from_secs(1)
    ));
    assert_eq!(cluster.status(FWS1)?.groups[0].starting, ["DENY", "ALLOW"]);
    lab.run(UPSTREAM, "nft", &["delete", "table", "inet", "ipw6cut"])?;
    cluster.wait_for(
        FWS1,
        "FWC206",
        "STARTING=ALLOW for group0 on fws1",
        Duration::from_secs(3),
    )?;
    Ok(())
}

/// The solicited-node group of `address` as `bridge mdb` prints it.
fn group_text(address: Ipv6Addr) -> String {
    ndp::solicited_node(address).to_string()
}

#[test]
fn a_switch_with_mld_snooping_learns_the_solicited_node_groups_of_whichever_node_owns_the_addresses()
-> anyhow::Result<()> {
    let lab = seed::build_dual_stack()?;
    let mut cluster = Cluster::new(&lab, DUAL_STACK)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    let fws1 = lab.mac(FWS1, INET_IF)?;
    let fws2 = lab.mac(FWS2, INET_IF)?;
    // The internet segment's switch snoops MLD, with a querier: what it learns per port is
    // what the firewalls reported on the wire. (The lab's Linux bridge still floods groups
    // nobody reported, so delivery alone would prove nothing; its records do.)
    lab.mld_snooping("inet")?;
    let proxied = group_text(GROUP0_PARP6);
    assert!(lab.mdb_groups("inet", FWS1, INET_IF)?.contains(&proxied));
    assert!(!lab.mdb_groups("inet", FWS2, INET_IF)?.contains(&proxied));
    for target in [GROUP0_INET_FIP6, GROUP0_PARP6] {
        assert!(
            wait_answered_by(&lab, target, fws1, Duration::from_secs(1)),
            "{target}"
        );
    }

    // The proxied address is on no interface: only fwclusterd's own membership makes the
    // switch deliver its solicitations to the node that took it over.
    let (ok, out) = cluster.tool(&lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
    assert!(ok, "{out}");
    for target in [GROUP0_INET_FIP6, GROUP0_PARP6] {
        assert!(
            wait_answered_by(&lab, target, fws2, Duration::from_secs(1)),
            "{target} not answered by fws2 behind the snooping switch; fws2's groups: {:?}",
            lab.mdb_groups("inet", FWS2, INET_IF)?
        );
    }
    assert!(lab.mdb_groups("inet", FWS2, INET_IF)?.contains(&proxied));
    // fws1 said it left the group (MLD done), and the switch asked and forgot it.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while lab.mdb_groups("inet", FWS1, INET_IF)?.contains(&proxied) {
        assert!(
            std::time::Instant::now() < deadline,
            "the switch still sends {proxied} to fws1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // And back after node loss.
    cluster.kill_all(FWS2)?;
    for target in [GROUP0_INET_FIP6, GROUP0_PARP6] {
        assert!(
            wait_answered_by(&lab, target, fws1, Duration::from_secs(3)),
            "{target} not answered by fws1 after fws2's loss"
        );
    }
    Ok(())
}

const IPV6_FLOW_SHARE: &str = concat!(
    r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"

"#,
    fwcluster_lab::seed_servers!(),
    r#"
[[flowshare]]
name = "ls6"
address = "2001:db8::30/64"
interface = "eth0"
mac = "01:00:5e:00:02:1e"
hash = "5tuple"
buckets = 1024
"#
);

#[test]
fn ipv6_flows_to_a_shared_address_are_each_passed_by_exactly_one_node_and_all_by_a_survivor()
-> anyhow::Result<()> {
    let shared_mac = [0x01, 0x00, 0x5e, 0x00, 0x02, 0x1e];
    let shared: Ipv6Addr = "2001:db8::30".parse()?;
    let lab = seed::build_dual_stack()?;
    let mut cluster = Cluster::new(&lab, IPV6_FLOW_SHARE)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // 0 while the daemon is not answering yet.
    let owned = |cluster: &Cluster, host: &str| -> anyhow::Result<usize> {
        Ok(cluster
            .status(host)
            .ok()
            .and_then(|view| view.flow_buckets.get("ls6").copied())
            .unwrap_or(0))
    };
    while (owned(&cluster, FWS1)?, owned(&cluster, FWS2)?) != (512, 512) {
        assert!(std::time::Instant::now() < deadline, "buckets not dealt");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both nodes answer for the shared address, with the shared MAC.
    let heard = answers(&lab, shared);
    assert_eq!(
        heard.iter().map(|a| a.target_mac).collect::<Vec<_>>(),
        vec![Some(shared_mac), Some(shared_mac)],
        "{heard:?}"
    );
    let send = |first: u16, count: u16| -> anyhow::Result<()> {
        fwcluster_lab::in_netns(lab.ns(INET_CLIENT), move || -> anyhow::Result<()> {
            for port in first..first + count {
                let socket = std::net::UdpSocket::bind(("2001:db8::100", port))?;
                socket.send_to(b"flow", "[2001:db8::30]:9")?;
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
    // The client resolves the shared address first (its kernel queues a few packets only).
    send(19999, 1)?;
    let before = [passed(&cluster, FWS1)?, passed(&cluster, FWS2)?];
    send(20000, 60)?;
    let after = [passed(&cluster, FWS1)?, passed(&cluster, FWS2)?];
    let (p1, p2) = (after[0].0 - before[0].0, after[1].0 - before[1].0);
    let (d1, d2) = (after[0].1 - before[0].1, after[1].1 - before[1].1);
    assert!(
        p1 > 0 && p2 > 0,
        "both nodes pass flows: {p1} {p2}; {:?}; neighbours {}",
        cluster.status(FWS1)?.xdp_counters,
        String::from_utf8_lossy(&lab.run(INET_CLIENT, "ip", &["-6", "neigh"])?.stdout)
    );
    assert_eq!(p1 + p2, 60, "each frame passed by exactly one node");
    assert_eq!(d1 + d2, 60, "and dropped by the other");
    // The nodes' answers (port unreachable, from the shared address) needed the client's MAC:
    // their solicitations did not bind the shared address to one node's MAC in the client.
    let neighbour = String::from_utf8(
        lab.run(INET_CLIENT, "ip", &["-6", "neigh", "show", "2001:db8::30"])?
            .stdout,
    )?;
    assert!(neighbour.contains("01:00:5e:00:02:1e"), "{neighbour}");

    cluster.kill(FWS2)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while owned(&cluster, FWS1)? != 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "fws1 did not take every bucket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (p1_before, _) = passed(&cluster, FWS1)?;
    send(30000, 40)?;
    assert_eq!(
        passed(&cluster, FWS1)?.0 - p1_before,
        40,
        "the survivor passes every flow"
    );
    Ok(())
}
