//! IPv6 takeover announcements (R-V6-2): unsolicited Neighbor Advertisements to all-nodes from
//! a raw packet socket, and membership of the solicited-node multicast groups of the addresses
//! this node owns, so that switches with MLD snooping deliver their solicitations here.

use std::{
    collections::BTreeMap,
    mem::size_of,
    net::Ipv6Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::Mutex,
};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};

const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMPV6: u8 = 58;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const ROUTER: u8 = 0x80;
const OVERRIDE: u8 = 0x20;
const TARGET_LINK_LAYER_ADDRESS: u8 = 2;
/// All-nodes (`ff02::1`) and its Ethernet address.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// The solicited-node multicast address of `address` (`ff02::1:ffXX:XXXX`, RFC 4291 2.7.1).
pub fn solicited_node(address: Ipv6Addr) -> Ipv6Addr {
    let o = address.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

fn checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An unsolicited Neighbor Advertisement of `address` at `mac` to all-nodes (RFC 4861 7.2.6):
/// Override set, Solicited clear, Router as configured, the target link-layer address option,
/// hop limit 255 (receivers drop anything else), from the address itself.
pub fn advertisement(address: Ipv6Addr, mac: [u8; 6], router: bool) -> Vec<u8> {
    let mut message = Vec::with_capacity(32);
    message.extend_from_slice(&[NEIGHBOR_ADVERTISEMENT, 0, 0, 0]);
    message.push(if router { ROUTER | OVERRIDE } else { OVERRIDE });
    message.extend_from_slice(&[0, 0, 0]);
    message.extend_from_slice(&address.octets());
    message.extend_from_slice(&[TARGET_LINK_LAYER_ADDRESS, 1]);
    message.extend_from_slice(&mac);
    let sum = checksum(address, ALL_NODES, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut frame = Vec::with_capacity(14 + 40 + message.len());
    frame.extend_from_slice(&ALL_NODES_MAC);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[IPPROTO_ICMPV6, 255]);
    frame.extend_from_slice(&address.octets());
    frame.extend_from_slice(&ALL_NODES.octets());
    frame.extend_from_slice(&message);
    frame
}

/// An open packet socket per interface (closing one costs an RCU grace period, see `arp`).
struct Sender {
    fd: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
}

static SENDERS: Mutex<BTreeMap<String, Sender>> = Mutex::new(BTreeMap::new());

fn open_sender(interface: &str) -> Result<Sender> {
    let mac = crate::netif::interface_mac(interface)?;
    let ifindex = nix::net::if_::if_nametoindex(interface)
        .with_context(|| format!("interface {interface}"))?;
    // SAFETY: plain socket(2); owned at once. Protocol 0: this socket only sends.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: new valid descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(Sender { fd, ifindex, mac })
}

/// Announces `address` on `interface` as being at `mac` (default: the interface's MAC).
pub fn announce(
    interface: &str,
    address: Ipv6Addr,
    mac: Option<[u8; 6]>,
    router: bool,
) -> Result<()> {
    let mut senders = SENDERS.lock().expect("senders lock");
    if !senders.contains_key(interface) {
        senders.insert(interface.to_owned(), open_sender(interface)?);
    }
    let sender = &senders[interface];
    let frame = advertisement(address, mac.unwrap_or(sender.mac), router);
    // SAFETY: zero is valid for sockaddr_ll.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_IPV6.to_be();
    to.sll_ifindex = sender.ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&ALL_NODES_MAC);
    // SAFETY: valid buffer and address.
    let sent = unsafe {
        libc::sendto(
            sender.fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent < 0 {
        let error = std::io::Error::last_os_error();
        senders.remove(interface);
        return Err(error).with_context(|| {
            format!("sending an unsolicited neighbor advertisement on {interface}")
        });
    }
    Ok(())
}

/// The solicited-node groups joined for owned addresses: one socket per interface holds them
/// (the kernel counts members per group and interface, and sends the MLD report for the first
/// and the done message for the last). Kept for the daemon's life; a daemon that ended takes
/// its memberships with it, and a restarted one joins again for the groups it adopts.
struct Memberships {
    socket: Socket,
    /// group → addresses it was joined for (several addresses may share one group).
    joined: BTreeMap<Ipv6Addr, Vec<Ipv6Addr>>,
}

static MEMBERSHIPS: Mutex<BTreeMap<u32, Memberships>> = Mutex::new(BTreeMap::new());

/// Joins the solicited-node group of `address` on `interface`.
pub fn join(interface: &str, address: Ipv6Addr) -> Result<()> {
    let ifindex = nix::net::if_::if_nametoindex(interface)
        .with_context(|| format!("interface {interface}"))?;
    let mut all = MEMBERSHIPS.lock().expect("memberships lock");
    let memberships = match all.entry(ifindex) {
        std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
        std::collections::btree_map::Entry::Vacant(entry) => entry.insert(Memberships {
            socket: Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
                .context("a socket for multicast memberships")?,
            joined: BTreeMap::new(),
        }),
    };
    let group = solicited_node(address);
    let holders = memberships.joined.entry(group).or_default();
    if holders.contains(&address) {
        return Ok(());
    }
    if holders.is_empty() {
        memberships
            .socket
            .join_multicast_v6(&group, ifindex)
            .with_context(|| format!("joining {group} on {interface} (for {address})"))?;
    }
    holders.push(address);
    Ok(())
}

/// Leaves the solicited-node group of `address` on `interface` (when no other owned address
/// of that interface shares it).
pub fn leave(interface: &str, address: Ipv6Addr) -> Result<()> {
    let ifindex = nix::net::if_::if_nametoindex(interface)
        .with_context(|| format!("interface {interface}"))?;
    let mut all = MEMBERSHIPS.lock().expect("memberships lock");
    let Some(memberships) = all.get_mut(&ifindex) else {
        return Ok(());
    };
    let group = solicited_node(address);
    let Some(holders) = memberships.joined.get(&group) else {
        return Ok(());
    };
    if holders.iter().all(|a| *a == address) {
        // The last holder: leave, and forget the group only once left.
        memberships
            .socket
            .leave_multicast_v6(&group, ifindex)
            .with_context(|| format!("leaving {group} on {interface} (for {address})"))?;
        memberships.joined.remove(&group);
    } else if let Some(holders) = memberships.joined.get_mut(&group) {
        holders.retain(|a| *a != address);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsolicited_advertisement_is_well_formed() {
        let address: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let mac = [2, 0, 0, 0, 0, 7];
        let frame = advertisement(address, mac, true);
        assert_eq!(frame.len(), 14 + 40 + 32);
        assert_eq!(&frame[0..6], &ALL_NODES_MAC);
        assert_eq!(&frame[6..12], &mac);
        assert_eq!(frame[14 + 7], 255, "hop limit");
        let message = &frame[54..];
        assert_eq!(message[0], NEIGHBOR_ADVERTISEMENT);
        assert_eq!(message[4], ROUTER | OVERRIDE, "not solicited");
        assert_eq!(&message[8..24], &address.octets());
        assert_eq!(&message[24..32], &[2, 1, 2, 0, 0, 0, 0, 7]);
        // The sum over a message with its checksum in place is 0 (stored as its complement).
        assert_eq!(checksum(address, ALL_NODES, message), 0);
        assert_eq!(advertisement(address, mac, false)[54 + 4], OVERRIDE);
    }

    #[test]
    fn the_solicited_node_group_keeps_the_last_three_bytes() {
        let address: Ipv6Addr = "2001:db8::aa:bbcc:ddee".parse().unwrap();
        assert_eq!(
            solicited_node(address),
            "ff02::1:ffcc:ddee".parse::<Ipv6Addr>().unwrap()
        );
    }
}
