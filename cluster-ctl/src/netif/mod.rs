//! This host's network interfaces: their addresses and MACs, the interface a floating address
//! belongs on, and adding and removing addresses (rtnetlink). Used by the daemon, the resources
//! and flow share alike, so that none of them needs another for it.

mod netlink;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::config::Config;

pub use netlink::{add_address, remove_address};

/// Why an interface could not be read or changed; each names the interface or address.
#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error("listing the interfaces (getifaddrs): {0}")]
    List(nix::Error),
    #[error("interface {0} has no MAC address")]
    NoMac(String),
    #[error("no interface holds the subnet of {0}")]
    NoSubnet(IpNet),
    #[error("no interface {0}")]
    NoInterface(String),
    #[error("tokio runtime for rtnetlink: {0}")]
    Runtime(std::io::Error),
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("writing {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
    #[error("{doing}: {source}")]
    Netlink {
        doing: String,
        source: rtnetlink::Error,
    },
}

type Result<T> = std::result::Result<T, NetifError>;

/// The IPv4 and IPv6 addresses of every interface of this host (its network namespace).
pub fn interface_addresses() -> Result<BTreeMap<String, Vec<IpNet>>> {
    let mut out: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for ifaddr in nix::ifaddrs::getifaddrs().map_err(NetifError::List)? {
        // IPv4 addresses come with their label (`eth2:1` for a FIP held here); the interface
        // is the part before the colon (the kernel allows no colon in interface names).
        let name = match ifaddr.interface_name.split_once(':') {
            Some((interface, _)) => interface.to_owned(),
            None => ifaddr.interface_name.clone(),
        };
        names.insert(name.clone());
        let (Some(address), Some(mask)) = (ifaddr.address.as_ref(), ifaddr.netmask.as_ref()) else {
            continue;
        };
        let net = match (address.as_sockaddr_in(), mask.as_sockaddr_in()) {
            (Some(address), Some(mask)) => IpNet::new(
                IpAddr::V4(address.ip()),
                u32::from(mask.ip()).count_ones() as u8,
            ),
            _ => match (address.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                (Some(address), Some(mask)) => IpNet::new(
                    IpAddr::V6(address.ip()),
                    u128::from(mask.ip()).count_ones() as u8,
                ),
                _ => continue,
            },
        };
        if let Ok(net) = net {
            out.entry(name).or_default().push(net);
        }
    }
    for name in names {
        out.entry(name).or_default();
    }
    Ok(out)
}

/// Has the kernel keep the IPv6 addresses of `interface` when its link goes down (IPv4 ones
/// are kept anyway): by default it deletes them, and a floating IPv6 address deleted under the
/// node that owns it would not come back with the link.
pub fn keep_ipv6_addresses_on_down(interface: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/keep_addr_on_down");
    std::fs::write(&path, "1").map_err(|source| NetifError::Sysctl { path, source })
}

/// The MAC address of an interface.
pub fn interface_mac(ifname: &str) -> Result<[u8; 6]> {
    for ifaddr in nix::ifaddrs::getifaddrs().map_err(NetifError::List)? {
        if ifaddr.interface_name == ifname
            && let Some(link) = ifaddr.address.as_ref().and_then(|a| a.as_link_addr())
            && let Some(mac) = link.addr()
        {
            return Ok(mac);
        }
    }
    Err(NetifError::NoMac(ifname.to_owned()))
}

/// The interface whose subnet holds `address`, if any.
pub fn subnet_interface(local: &BTreeMap<String, Vec<IpNet>>, address: IpAddr) -> Option<&str> {
    local
        .iter()
        .find(|(_, nets)| nets.iter().any(|n| n.contains(&address)))
        .map(|(name, _)| name.as_str())
}

/// The interface a FIP lives on: the one configured, or the one whose subnet holds it.
pub fn fip_interface(config: &Config, group: usize, fip: usize) -> Result<String> {
    let f = &config.group[group].fip[fip];
    if let Some(i) = &f.interface {
        return Ok(i.clone());
    }
    let local = interface_addresses()?;
    subnet_interface(&local, f.address.addr())
        .map(str::to_owned)
        .ok_or(NetifError::NoSubnet(f.address))
}
