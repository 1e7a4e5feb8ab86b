//! The XDP ARP responder on real interfaces in the seed network.

use std::time::Duration;

use cluster_common::{AddressEntry, AddressKey, AddressKind};
use fwcluster_lab::{
    arp::format_mac,
    seed::{self, FWS1, FWS2, GROUP0_INET_FIP, INET_CLIENT, INET_IF},
    xdp,
};

const GROUP0: u32 = 0;
const WAIT: Duration = Duration::from_millis(300);
const LEASE: Duration = Duration::from_secs(60);

#[test]
fn only_the_owner_answers_and_a_flip_moves_the_answers() -> anyhow::Result<()> {
    let lab = seed::build()?;
    let mut nodes = Vec::new();
    for (node_id, host) in [FWS1, FWS2].into_iter().enumerate() {
        let (mut dataplane, attachments) = xdp::open_node(&lab, host, node_id as u32, &[INET_IF])?;
        assert_eq!(attachments.len(), 1);
        let key = AddressKey {
            ifindex: xdp::ifindex(&lab, host, INET_IF)?,
            addr: u32::from_ne_bytes(GROUP0_INET_FIP.octets()),
        };
        let mac = lab.mac(host, INET_IF)?;
        let entry = AddressEntry::new(GROUP0, 0, AddressKind::Fip, mac, mac);
        dataplane.set_addresses([(&key, &entry)])?;
        // The FIP is configured on both nodes' interfaces: without XDP both kernels would
        // answer. The fenced node's program must keep its kernel silent (R-XDP-7).
        lab.run(
            host,
            "ip",
            &["addr", "add", "192.0.2.10/24", "dev", INET_IF],
        )?;
        nodes.push(dataplane);
    }
    let fws1_mac = lab.mac(FWS1, INET_IF)?;
    let fws2_mac = lab.mac(FWS2, INET_IF)?;

    nodes[0].acquire(GROUP0, 1, LEASE)?;
    nodes[1].release(GROUP0, 1)?;
    let answers = lab.arp_request(INET_CLIENT, "eth0", GROUP0_INET_FIP, WAIT)?;
    let macs: Vec<String> = answers.iter().map(|a| format_mac(&a.mac)).collect();
    assert_eq!(macs, vec![format_mac(&fws1_mac)], "answers: {answers:?}");
    assert_eq!(answers[0].frame_source, fws1_mac);
    assert!(nodes[0].counters()?.arp_replies >= 1);
    assert!(nodes[1].counters()?.arp_not_owned >= 1);
    assert_eq!(nodes[0].address_replies(0)?, 1);

    // Takeover: release on fws1 first, then acquire on fws2 under the next epoch.
    nodes[0].release(GROUP0, 2)?;
    nodes[1].acquire(GROUP0, 2, LEASE)?;
    let answers = lab.arp_request(INET_CLIENT, "eth0", GROUP0_INET_FIP, WAIT)?;
    let macs: Vec<String> = answers.iter().map(|a| format_mac(&a.mac)).collect();
    assert_eq!(macs, vec![format_mac(&fws2_mac)], "answers: {answers:?}");
    Ok(())
}
