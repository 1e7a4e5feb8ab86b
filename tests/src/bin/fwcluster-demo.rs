//! `cargo xtask demo`: fwcluster on the seed network.
//!
//! Brings the seed network up in namespaces, attaches the XDP data path on both firewalls'
//! internet interfaces with group0's floating address configured on both, gives group0 to fws1,
//! and shows from the internet client that only fws1 answers ARP for it (fws2's program keeps
//! its kernel silent). Then it moves group0 to fws2 and shows the answer move, and tears down.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use cluster_common::{AddressEntry, AddressKey, AddressKind};
use cluster_ctl::dataplane::Dataplane;
use fwcluster_lab::{
    Lab,
    arp::format_mac,
    seed::{self, FWS1, FWS2, GROUP0_INET_FIP, INET_CLIENT, INET_IF},
    xdp,
};

const GROUP0: u32 = 0;
const LEASE: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    println!("== fwcluster demo: the seed network ==");
    let lab = seed::build().context("building the seed network")?;
    println!(
        "namespaces up: {} (prefix {})",
        lab.namespaces().len(),
        lab.prefix()
    );
    let mut nodes = Vec::new();
    for (node_id, host) in [FWS1, FWS2].into_iter().enumerate() {
        let (mut dataplane, attachments) = xdp::open_node(&lab, host, node_id as u32, &[INET_IF])?;
        for a in &attachments {
            println!(
                "{host}: XDP attached on {} in {} mode, pins in {}",
                a.ifname,
                a.mode.as_str(),
                dataplane.pin_dir().display()
            );
        }
        let key = AddressKey {
            ifindex: xdp::ifindex(&lab, host, INET_IF)?,
            addr: u32::from_ne_bytes(GROUP0_INET_FIP.octets()),
        };
        let entry = AddressEntry {
            lease: GROUP0,
            hit_slot: 0,
            mac: lab.mac(host, INET_IF)?,
            kind: AddressKind::Fip as u8,
            _pad: 0,
        };
        dataplane.set_addresses([(&key, &entry)])?;
        lab.run(
            host,
            "ip",
            &["addr", "add", "192.0.2.10/24", "dev", INET_IF],
        )?;
        nodes.push(dataplane);
    }
    println!(
        "group0 FIP {GROUP0_INET_FIP} configured on both firewalls' {INET_IF} (the kernel of each would answer)"
    );

    nodes[0].acquire(GROUP0, 1, LEASE)?;
    nodes[1].release(GROUP0, 1)?;
    println!("\ngroup0 owned by fws1 (epoch 1)");
    expect_only(&lab, FWS1, &nodes)?;

    nodes[0].release(GROUP0, 2)?;
    nodes[1].acquire(GROUP0, 2, LEASE)?;
    println!("\ngroup0 moved to fws2 (epoch 2): one lease update per node");
    expect_only(&lab, FWS2, &nodes)?;

    for dataplane in nodes {
        dataplane.uninstall()?;
    }
    drop(lab);
    println!("\nteardown: XDP detached, pins and namespaces removed");
    Ok(())
}

fn expect_only(lab: &Lab, owner: &str, nodes: &[Dataplane]) -> Result<()> {
    let answers = lab.arp_request(
        INET_CLIENT,
        "eth0",
        GROUP0_INET_FIP,
        Duration::from_millis(300),
    )?;
    println!("inet-client: who-has {GROUP0_INET_FIP}?");
    for a in &answers {
        println!(
            "  reply: {GROUP0_INET_FIP} is-at {} after {:.0} µs",
            format_mac(&a.mac),
            a.elapsed.as_secs_f64() * 1e6
        );
    }
    for (host, node) in [FWS1, FWS2].iter().zip(nodes) {
        let c = node.counters()?;
        println!(
            "  {host}: {} requests, {} replies, {} dropped as not owned",
            c.arp_requests, c.arp_replies, c.arp_not_owned
        );
    }
    let owner_mac = lab.mac(owner, INET_IF)?;
    ensure!(
        answers.len() == 1 && answers[0].mac == owner_mac,
        "expected exactly one answer from {owner} ({}), got {answers:?}",
        format_mac(&owner_mac)
    );
    println!("  => answered by {owner} only");
    Ok(())
}
