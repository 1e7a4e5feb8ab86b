//! The seed manual's example network (SPEC §8) with documentation-range addresses.
//!
//! ```text
//!   inet-client ─┐                         ┌─ dmz-host
//!                ├── br-inet ── fws1 ── br-dmz ┤
//!   upstream-rtr ┘      └────── fws2 ──────┘
//!   intra-client1/2 ── br-intra ─ fws1/fws2 ;  br-ic (interconnect) ─ fws1/fws2
//! ```
//! Each firewall has eth0 (internet), eth1 (DMZ), eth2 (intranet), eth3 (interconnect). The
//! intranet doubles as the second interconnect, as in the seed.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{HostSpec, Lab, Topology};

pub const FWS1: &str = "fws1";
pub const FWS2: &str = "fws2";
pub const INET_CLIENT: &str = "inet-client";
pub const UPSTREAM: &str = "upstream-rtr";
pub const DMZ_HOST: &str = "dmz-host";
pub const INTRA_CLIENT1: &str = "intra-client1";
pub const INTRA_CLIENT2: &str = "intra-client2";

/// Interfaces of a firewall.
pub const INET_IF: &str = "eth0";
pub const DMZ_IF: &str = "eth1";
pub const INTRA_IF: &str = "eth2";
pub const IC_IF: &str = "eth3";

/// group0's floating addresses (gateway of the internet side, the DMZ and intranet half 1).
pub const GROUP0_INET_FIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const GROUP0_DMZ_FIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const GROUP0_INTRA_FIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// group1's floating addresses (load share by groups: gateway of intranet half 2).
pub const GROUP1_INET_FIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
pub const GROUP1_INTRA_FIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
/// Proxy-ARP (static NAT) addresses of group0 and group1 on the internet side.
pub const GROUP0_PARP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
pub const GROUP1_PARP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 21);
/// The flow-share address (R-MODE-3).
pub const SHARED_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);

pub const INET_CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const UPSTREAM_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
pub const DMZ_HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
pub const INTRA_CLIENT1_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 101);
/// In the intranet's upper half (203.0.113.128/25), which load share hides behind group1.
pub const INTRA_CLIENT2_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 130);

/// Interconnect addresses (dedicated link, then the intranet) of fws1 and fws2.
pub const FWS1_INTERCONNECT: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 12, 1),
    Ipv4Addr::new(203, 0, 113, 1),
];
pub const FWS2_INTERCONNECT: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 12, 2),
    Ipv4Addr::new(203, 0, 113, 2),
];

/// The configuration's `[[server]]` blocks of the seed network: fws1 and fws2 with their
/// interconnects ([`FWS1_INTERCONNECT`], [`FWS2_INTERCONNECT`]), as a literal for `concat!`.
#[macro_export]
macro_rules! seed_servers {
    () => {
        r#"
[[server]]
name = "fws1"
interconnect = ["169.254.12.1/24", "203.0.113.1/24"]

[[server]]
name = "fws2"
interconnect = ["169.254.12.2/24", "203.0.113.2/24"]
"#
    };
}

/// group0 in hot standby on fws1 with its internet FIP and its proxy-ARP address on eth0
/// (failback manual), as a literal for `concat!`.
#[macro_export]
macro_rules! seed_group0 {
    () => {
        r#"
[[group]]
name = "group0"
policy = ["fws1", "fws2"]
failback = "manual"

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"

  [[group.parp]]
  address = "192.0.2.20"
  interface = "eth0"
"#
    };
}

fn firewall(name: &str, n: u8) -> HostSpec {
    HostSpec::new(name)
        .interface(INET_IF, "inet", &[&format!("192.0.2.{n}/24")])
        .interface(DMZ_IF, "dmz", &[&format!("198.51.100.{n}/24")])
        .interface(INTRA_IF, "intra", &[&format!("203.0.113.{n}/24")])
        .interface(IC_IF, "ic", &[&format!("169.254.12.{n}/24")])
        .route("default", "192.0.2.254")
        .forwarding()
}

/// The seed network as a topology.
pub fn topology() -> Topology {
    Topology::default()
        .host(firewall(FWS1, 1))
        .host(firewall(FWS2, 2))
        .host(
            HostSpec::new(INET_CLIENT)
                .interface("eth0", "inet", &["192.0.2.100/24"])
                .route("198.51.100.0/24", "192.0.2.10")
                .route("203.0.113.0/24", "192.0.2.10"),
        )
        .host(
            HostSpec::new(UPSTREAM)
                .interface("eth0", "inet", &["192.0.2.254/24"])
                .route("198.51.100.0/24", "192.0.2.10")
                .route("203.0.113.0/24", "192.0.2.10")
                .forwarding(),
        )
        .host(
            HostSpec::new(DMZ_HOST)
                .interface("eth0", "dmz", &["198.51.100.100/24"])
                .route("default", "198.51.100.10"),
        )
        .host(
            HostSpec::new(INTRA_CLIENT1)
                .interface("eth0", "intra", &["203.0.113.101/24"])
                .route("default", "203.0.113.10"),
        )
        .host(
            HostSpec::new(INTRA_CLIENT2)
                .interface("eth0", "intra", &["203.0.113.130/24"])
                .route("default", "203.0.113.11"),
        )
}

/// Builds the seed network.
pub fn build() -> anyhow::Result<Lab> {
    Lab::build(topology())
}

/// The IPv6 prefixes (/64) of the dual-stack seed network's segments.
pub const INET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0);
pub const DMZ6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0);
pub const INTRA6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0);
pub const IC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x12, 0, 0, 0, 0, 0);

/// The address `host` (the last group of the address) in a /64 `prefix`.
pub const fn in6(prefix: Ipv6Addr, host: u16) -> Ipv6Addr {
    let s = prefix.segments();
    Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, host)
}

/// group0's IPv6 gateway on the internet side and its proxied IPv6 address.
pub const GROUP0_INET_FIP6: Ipv6Addr = in6(INET6, 0x10);
pub const GROUP0_PARP6: Ipv6Addr = in6(INET6, 0x20);
/// group0's IPv6 gateway of the intranet.
pub const GROUP0_INTRA_FIP6: Ipv6Addr = in6(INTRA6, 0x10);
pub const INET_CLIENT_ADDRESS6: Ipv6Addr = in6(INET6, 0x100);
pub const UPSTREAM_ADDRESS6: Ipv6Addr = in6(INET6, 0xfe);
pub const INTRA_CLIENT1_ADDRESS6: Ipv6Addr = in6(INTRA6, 0x101);

/// The seed network with IPv6 beside IPv4 on every segment (the interconnect too): the
/// firewalls at `::1` and `::2`, the hosts at the IPv4 address's last number in hex (`::100`,
/// `::101`, `::130`, the upstream router `::fe`); the internet client and upstream router
/// reach the inner networks, and the inner hosts the world, through group0's IPv6 gateways
/// (`::10`).
pub fn dual_stack_topology() -> Topology {
    let mut topology = topology();
    for host in &mut topology.hosts {
        let suffix = match host.name.as_str() {
            FWS1 => 1,
            FWS2 => 2,
            INET_CLIENT => 0x100,
            UPSTREAM => 0xfe,
            DMZ_HOST => 0x100,
            INTRA_CLIENT1 => 0x101,
            INTRA_CLIENT2 => 0x130,
            other => unreachable!("no IPv6 address planned for {other}"),
        };
        for interface in &mut host.interfaces {
            let prefix = match interface.segment.as_str() {
                "inet" => INET6,
                "dmz" => DMZ6,
                "intra" => INTRA6,
                "ic" => IC6,
                other => unreachable!("no IPv6 prefix planned for {other}"),
            };
            interface
                .addresses
                .push(format!("{}/64", in6(prefix, suffix)));
        }
        let routes: Vec<(Ipv6Addr, Ipv6Addr)> = match host.name.as_str() {
            FWS1 | FWS2 => vec![(Ipv6Addr::UNSPECIFIED, UPSTREAM_ADDRESS6)],
            INET_CLIENT | UPSTREAM => vec![(DMZ6, GROUP0_INET_FIP6), (INTRA6, GROUP0_INET_FIP6)],
            DMZ_HOST => vec![(Ipv6Addr::UNSPECIFIED, in6(DMZ6, 0x10))],
            _ => vec![(Ipv6Addr::UNSPECIFIED, GROUP0_INTRA_FIP6)],
        };
        for (destination, gateway) in routes {
            let destination = if destination.is_unspecified() {
                "default".to_owned()
            } else {
                format!("{destination}/64")
            };
            host.routes.push((destination, gateway.to_string()));
        }
    }
    topology
}

/// Builds the dual-stack seed network and returns once the link-local addresses of every host
/// are usable: the kernel checks each for duplicates first (about a second), and until then a
/// host cannot send from it (VRRPv3 adverts for IPv6 come from it, MLD reports too).
pub fn build_dual_stack() -> anyhow::Result<Lab> {
    let lab = Lab::build(dual_stack_topology())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for host in dual_stack_topology().hosts.iter().map(|h| h.name.clone()) {
        loop {
            let output = lab.run(&host, "ip", &["-6", "-o", "addr", "show", "tentative"])?;
            if output.stdout.is_empty() {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{host} still has tentative IPv6 addresses: {}",
                String::from_utf8_lossy(&output.stdout)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(lab)
}
