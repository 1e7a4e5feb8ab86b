//! End to end on the seed network: real daemons, real XDP, real addresses.

use std::time::Duration;

use fwcluster_lab::{
    Lab,
    cluster::Cluster,
    seed::{self, FWS1, FWS2, GROUP0_INET_FIP, GROUP0_PARP, INET_CLIENT, INET_IF},
};

const HOT_STANDBY: &str = r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "200ms"

[[server]]
name = "fws1"
interconnect = ["169.254.12.1/24", "203.0.113.1/24"]

[[server]]
name = "fws2"
interconnect = ["169.254.12.2/24", "203.0.113.2/24"]

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
"#;

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
    assert_eq!(answerers(&lab, GROUP0_PARP), vec![fws1]);
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
    assert_eq!(answerers(&lab, GROUP0_PARP), vec![fws2]);
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
