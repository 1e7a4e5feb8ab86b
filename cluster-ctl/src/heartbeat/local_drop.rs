//! Heartbeats that reach this server's interface but never its socket: the local firewall drops
//! them (R-FW-1). A careful operator with `policy drop` on input and no rule for the cluster
//! would otherwise see only "interconnect lost", and with every link dropped, both nodes active.
//!
//! Nothing runs while heartbeats arrive. For a (peer, link) that has been silent for the
//! timeout, a packet socket on the interface of this server's address on that link listens for
//! a short window: packet taps see frames before netfilter does. Heartbeats from the peer's
//! address seen there while none reached the heartbeat socket (accepted or refused alike) are
//! dropped locally; that is logged once (FWC108) and shown by `clpstat -n` until it changes.

use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nix::sys::{
    socket::{MsgFlags, recv, setsockopt, sockopt},
    time::TimeVal,
};

use super::LinkCounters;
use crate::config::Config;

/// Per (peer, link): the interface on which the local firewall drops that peer's heartbeats.
#[derive(Debug, Default)]
pub struct LocalDrops(Mutex<BTreeMap<(usize, usize), String>>);

impl LocalDrops {
    pub fn snapshot(&self) -> BTreeMap<(usize, usize), String> {
        self.0.lock().expect("local drops lock").clone()
    }

    /// Records the verdict for (peer, link); true when it changed.
    fn set(&self, key: (usize, usize), dropped_on: Option<String>) -> bool {
        let mut map = self.0.lock().expect("local drops lock");
        match dropped_on {
            Some(interface) => map.insert(key, interface).is_none(),
            None => map.remove(&key).is_some(),
        }
    }
}

/// Opens a packet socket that receives the IPv4 or IPv6 packets of interface `ifindex` (both
/// directions), before netfilter sees them.
fn tap(ifindex: u32, v6: bool) -> io::Result<OwnedFd> {
    let ethertype = if v6 { libc::ETH_P_IPV6 } else { libc::ETH_P_IP };
    let protocol = (ethertype as u16).to_be();
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol;
    address.sll_ifindex = ifindex as i32;
    // SAFETY: `address` is a sockaddr_ll of the length passed, alive for the call.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&address).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Whether `packet` (from its IP header on) is UDP from `source` to `port`. Heartbeats carry
/// no IPv6 extension headers: UDP follows the fixed header. Public for the fuzz target
/// `heartbeat_tap`: it reads whatever reaches the interface.
pub fn is_heartbeat(packet: &[u8], source: IpAddr, port: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let (header, protocol, sender) = match source {
        IpAddr::V4(source) => {
            let header = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || header < 20 {
                return false;
            }
            (
                header,
                packet.get(9),
                packet.get(12..16) == Some(&source.octets()[..]),
            )
        }
        IpAddr::V6(source) => {
            if first >> 4 != 6 {
                return false;
            }
            (
                40,
                packet.get(6),
                packet.get(8..24) == Some(&source.octets()[..]),
            )
        }
    };
    sender
        && protocol == Some(&(libc::IPPROTO_UDP as u8))
        && packet
            .get(header + 2..header + 4)
            .is_some_and(|p| u16::from_be_bytes([p[0], p[1]]) == port)
}

/// Counts heartbeats from `source` to `port` seen on interface `ifindex` during `window`.
fn count_on_wire(ifindex: u32, source: IpAddr, port: u16, window: Duration) -> io::Result<u64> {
    let fd = tap(ifindex, source.is_ipv6())?;
    let slice = TimeVal::new(0, 50_000);
    setsockopt(&fd, sockopt::ReceiveTimeout, &slice).map_err(io::Error::from)?;
    let end = Instant::now() + window;
    let mut buffer = [0u8; 128];
    let mut seen = 0;
    while Instant::now() < end {
        match recv(fd.as_raw_fd(), &mut buffer, MsgFlags::MSG_TRUNC) {
            Ok(len) => {
                let len = len.min(buffer.len());
                if is_heartbeat(&buffer[..len], source, port) {
                    seen += 1;
                }
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(seen)
}

/// The interface that holds `address` on this host.
fn interface_of(address: IpAddr) -> Option<String> {
    crate::netif::interface_addresses()
        .ok()?
        .into_iter()
        .find(|(_, nets)| nets.iter().any(|n| n.addr() == address))
        .map(|(name, _)| name)
}

/// Watches node `me`'s silent links for heartbeats its firewall drops, until the process ends.
pub fn watch(config: &Config, me: usize, links: Arc<LinkCounters>, drops: Arc<LocalDrops>) {
    let interval = config.cluster.heartbeat_interval;
    let timeout = config.cluster.heartbeat_timeout;
    let port = config.cluster.heartbeat_port;
    // Long enough to see a few heartbeats, short enough to stay out of the way.
    let window = (3 * interval).clamp(Duration::from_millis(100), Duration::from_secs(3));
    let period = timeout.max(Duration::from_secs(1));
    let names: Vec<String> = config.server.iter().map(|s| s.name.clone()).collect();
    let Some(local) = config.server.get(me).map(|s| s.interconnect.clone()) else {
        return;
    };
    loop {
        std::thread::sleep(period);
        let stats = links.snapshot();
        for (link, own) in local.iter().enumerate() {
            for (peer, server) in config.server.iter().enumerate() {
                if peer == me {
                    continue;
                }
                let Some(peer_address) = server.interconnect.get(link).map(|n| n.addr()) else {
                    continue;
                };
                let silent = stats
                    .get(&(peer, link))
                    .and_then(|s| s.last)
                    .is_none_or(|last| last.elapsed() >= timeout);
                let verdict = if silent {
                    let Some(interface) = interface_of(own.addr()) else {
                        continue;
                    };
                    let Ok(ifindex) = nix::net::if_::if_nametoindex(interface.as_str()) else {
                        continue;
                    };
                    let before = links.arrivals(link, peer_address);
                    let seen = match count_on_wire(ifindex, peer_address, port, window) {
                        Ok(seen) => seen,
                        Err(e) => {
                            tracing::debug!(error = %e, interface, "heartbeat tap");
                            continue;
                        }
                    };
                    let reached_socket = links.arrivals(link, peer_address) > before;
                    (seen > 0 && !reached_socket).then_some((interface, seen))
                } else {
                    None
                };
                let peer_name = &names[peer];
                match verdict {
                    Some((interface, seen)) => {
                        if drops.set((peer, link), Some(interface.clone())) {
                            tracing::error!(
                                id = crate::catalog::DROPPED_LOCALLY.id,
                                peer = %peer_name,
                                link,
                                interface = %interface,
                                seen,
                                "heartbeats from {peer_name} ({peer_address}) reach {interface} \
                                 but the local firewall drops them before fwclusterd: accept UDP \
                                 {port} from the peers' interconnect addresses (clpcfg nft)"
                            );
                        }
                    }
                    None => {
                        if drops.set((peer, link), None) {
                            tracing::info!(
                                id = crate::catalog::DROPPED_LOCALLY.id,
                                peer = %peer_name,
                                link,
                                "heartbeats from {peer_name} on interconnect {link} are no \
                                 longer dropped by the local firewall"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(source: [u8; 4], port: u16) -> Vec<u8> {
        let mut packet = vec![0u8; 28];
        packet[0] = 0x45;
        packet[9] = 17;
        packet[12..16].copy_from_slice(&source);
        packet[22..24].copy_from_slice(&port.to_be_bytes());
        packet
    }

    fn udp6(source: std::net::Ipv6Addr, port: u16) -> Vec<u8> {
        let mut packet = vec![0u8; 48];
        packet[0] = 0x60;
        packet[6] = 17;
        packet[8..24].copy_from_slice(&source.octets());
        packet[42..44].copy_from_slice(&port.to_be_bytes());
        packet
    }

    #[test]
    fn only_udp_from_the_peer_to_the_heartbeat_port_counts() {
        let peer = std::net::Ipv4Addr::new(169, 254, 12, 2);
        let address = IpAddr::V4(peer);
        assert!(is_heartbeat(&udp(peer.octets(), 28002), address, 28002));
        assert!(!is_heartbeat(
            &udp([169, 254, 12, 1], 28002),
            address,
            28002
        ));
        assert!(!is_heartbeat(&udp(peer.octets(), 28001), address, 28002));
        let mut tcp = udp(peer.octets(), 28002);
        tcp[9] = 6;
        assert!(!is_heartbeat(&tcp, address, 28002));
        assert!(!is_heartbeat(
            &udp(peer.octets(), 28002)[..21],
            address,
            28002
        ));
        assert!(!is_heartbeat(&[], address, 28002));
    }

    #[test]
    fn ipv6_heartbeats_are_recognised_after_the_fixed_header() {
        let peer: std::net::Ipv6Addr = "2001:db8:12::2".parse().unwrap();
        let address = IpAddr::V6(peer);
        assert!(is_heartbeat(&udp6(peer, 28002), address, 28002));
        assert!(!is_heartbeat(
            &udp6("2001:db8:12::1".parse().unwrap(), 28002),
            address,
            28002
        ));
        assert!(!is_heartbeat(&udp6(peer, 28001), address, 28002));
        let mut tcp = udp6(peer, 28002);
        tcp[6] = 6;
        assert!(!is_heartbeat(&tcp, address, 28002));
        assert!(!is_heartbeat(&udp6(peer, 28002)[..43], address, 28002));
        // An IPv4 packet is not a heartbeat from an IPv6 peer, nor the other way round.
        assert!(!is_heartbeat(
            &udp([169, 254, 12, 2], 28002),
            address,
            28002
        ));
        assert!(!is_heartbeat(
            &udp6(peer, 28002),
            IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 12, 2)),
            28002
        ));
    }

    proptest::proptest! {
        /// Whatever a tap reads (any bytes, any length) is judged without a panic, and a
        /// heartbeat of either family is recognised only from its own source and port.
        #[test]
        fn any_bytes_are_judged_and_only_the_peers_heartbeats_count(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..96),
            v6 in proptest::bool::ANY,
            word in proptest::num::u128::ANY,
            port in proptest::num::u16::ANY,
        ) {
            let source = if v6 {
                IpAddr::V6(std::net::Ipv6Addr::from(word))
            } else {
                IpAddr::V4(std::net::Ipv4Addr::from(word as u32))
            };
            let _ = is_heartbeat(&bytes, source, port);
            let packet = match source {
                IpAddr::V4(a) => udp(a.octets(), port),
                IpAddr::V6(a) => udp6(a, port),
            };
            proptest::prop_assert!(is_heartbeat(&packet, source, port));
            proptest::prop_assert!(!is_heartbeat(&packet, source, port.wrapping_add(1)));
        }
    }
}
