//! IPv6 Neighbor Discovery frames (RFC 4861): solicitations to send, advertisements to read
//! back with their checksum verified.

use std::net::Ipv6Addr;

const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_ICMPV6: u8 = 58;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;
/// Advertisement flags.
pub const ROUTER: u8 = 0x80;
pub const SOLICITED: u8 = 0x40;
pub const OVERRIDE: u8 = 0x20;

/// The solicited-node multicast address of `target` (`ff02::1:ffXX:XXXX`).
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let o = target.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet multicast address of an IPv6 multicast address (`33:33` and its last 4 bytes).
pub fn multicast_mac(address: Ipv6Addr) -> [u8; 6] {
    let o = address.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The ICMPv6 checksum of `message` (its checksum field included as it is) from `source` to
/// `destination`: 0 when the field is right.
pub fn icmpv6_sum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(40 + message.len());
    data.extend_from_slice(&source.octets());
    data.extend_from_slice(&destination.octets());
    data.extend_from_slice(&(message.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
    data.extend_from_slice(message);
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A Neighbor Solicitation in an Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Solicitation {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub code: u8,
    pub target: Ipv6Addr,
    /// With the source link-layer address option (never in duplicate-address detection).
    pub source_link_layer: bool,
    /// Bytes after the message (Ethernet padding, other options).
    pub trailer: Vec<u8>,
}

impl Solicitation {
    /// Address resolution: to `target`'s solicited-node address.
    pub fn multicast(src_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Self {
        let dst = solicited_node(target);
        Self {
            src_mac,
            dst_mac: multicast_mac(dst),
            vlan: None,
            src,
            dst,
            hop_limit: 255,
            code: 0,
            target,
            source_link_layer: true,
            trailer: Vec::new(),
        }
    }

    /// Reachability confirmation: to `target` itself, at the MAC cached for it.
    pub fn unicast(src_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr, mac: [u8; 6]) -> Self {
        Self {
            dst_mac: mac,
            dst: target,
            ..Self::multicast(src_mac, src, target)
        }
    }

    /// Duplicate-address detection: from `::`, without a source link-layer option.
    pub fn duplicate_address_detection(src_mac: [u8; 6], target: Ipv6Addr) -> Self {
        Self {
            src: Ipv6Addr::UNSPECIFIED,
            source_link_layer: false,
            ..Self::multicast(src_mac, Ipv6Addr::UNSPECIFIED, target)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut message = vec![NEIGHBOR_SOLICIT, self.code, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(&self.target.octets());
        if self.source_link_layer {
            message.extend_from_slice(&[1, 1]);
            message.extend_from_slice(&self.src_mac);
        }
        let sum = icmpv6_sum(self.src, self.dst, &message);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut frame = Vec::new();
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        if let Some(vid) = self.vlan {
            frame.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            frame.extend_from_slice(&vid.to_be_bytes());
        }
        frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[IPPROTO_ICMPV6, self.hop_limit]);
        frame.extend_from_slice(&self.src.octets());
        frame.extend_from_slice(&self.dst.octets());
        frame.extend_from_slice(&message);
        frame.extend_from_slice(&self.trailer);
        frame
    }
}

/// A Neighbor Advertisement read from an Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub flags: u8,
    pub target: Ipv6Addr,
    /// The target link-layer address option.
    pub target_mac: Option<[u8; 6]>,
    /// The frame's length: header, message and options exactly, nothing after.
    pub exact_length: bool,
}

impl Advertisement {
    /// `None` unless `frame` is a Neighbor Advertisement with a right checksum.
    pub fn decode(frame: &[u8]) -> Option<Self> {
        let (vlan, l3) = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
            ETH_P_8021Q => (
                Some(u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]) & 0x0fff),
                18,
            ),
            _ => (None, 14),
        };
        if u16::from_be_bytes(frame.get(l3 - 2..l3)?.try_into().ok()?) != ETH_P_IPV6 {
            return None;
        }
        let ip = frame.get(l3..l3 + 40)?;
        let length = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        if ip[6] != IPPROTO_ICMPV6 {
            return None;
        }
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
        let message = frame.get(l3 + 40..l3 + 40 + length)?;
        if message.len() < 24 || message[0] != NEIGHBOR_ADVERT || icmpv6_sum(src, dst, message) != 0
        {
            return None;
        }
        let mut target_mac = None;
        let mut options = &message[24..];
        while options.len() >= 8 {
            let size = usize::from(options[1]) * 8;
            if size == 0 || size > options.len() {
                return None;
            }
            if options[0] == 2 && size == 8 {
                target_mac = Some(options[2..8].try_into().ok()?);
            }
            options = &options[size..];
        }
        Some(Self {
            dst_mac: frame[0..6].try_into().ok()?,
            src_mac: frame[6..12].try_into().ok()?,
            vlan,
            src,
            dst,
            hop_limit: ip[7],
            flags: message[4],
            target: Ipv6Addr::from(<[u8; 16]>::try_from(&message[8..24]).ok()?),
            target_mac,
            exact_length: frame.len() == l3 + 40 + length,
        })
    }
}

/// Sends `solicitation` from `ifname` and collects every advertisement for its target that
/// answers it (to its source) within `wait` (two answering nodes show up as two answers).
pub fn solicit(
    ifname: &str,
    solicitation: &Solicitation,
    wait: std::time::Duration,
) -> anyhow::Result<Vec<Advertisement>> {
    let heard = listen(ifname, Some(solicitation), wait, |a| {
        a.target == solicitation.target && a.dst == solicitation.src && a.flags & SOLICITED != 0
    })?;
    Ok(heard.into_iter().map(|(_, a)| a).collect())
}

/// Sends `solicitation` (a duplicate-address probe, say) and collects the unsolicited
/// advertisements for its target that follow within `wait`.
pub fn unsolicited_advertisements_after(
    ifname: &str,
    solicitation: &Solicitation,
    wait: std::time::Duration,
) -> anyhow::Result<Vec<Advertisement>> {
    let heard = listen(ifname, Some(solicitation), wait, |a| {
        a.target == solicitation.target && a.flags & SOLICITED == 0
    })?;
    Ok(heard.into_iter().map(|(_, a)| a).collect())
}

/// Every unsolicited advertisement (Solicited flag clear) for `target` heard on `ifname`
/// within `wait`, with when it came.
pub fn unsolicited_advertisements(
    ifname: &str,
    target: Ipv6Addr,
    wait: std::time::Duration,
) -> anyhow::Result<Vec<(std::time::Instant, Advertisement)>> {
    listen(ifname, None, wait, |a| {
        a.target == target && a.flags & SOLICITED == 0
    })
}

/// Sends `solicitation` if any, then keeps every advertisement heard on `ifname` within `wait`
/// that `keep` accepts, with when it came.
fn listen(
    ifname: &str,
    solicitation: Option<&Solicitation>,
    wait: std::time::Duration,
    keep: impl Fn(&Advertisement) -> bool,
) -> anyhow::Result<Vec<(std::time::Instant, Advertisement)>> {
    let socket = crate::arp::ArpSocket::open_ethertype(ifname, ETH_P_IPV6)?;
    let deadline = std::time::Instant::now() + wait;
    if let Some(solicitation) = solicitation {
        socket.send(&solicitation.encode())?;
    }
    let mut heard = Vec::new();
    while let Some(frame) = socket.receive(deadline)? {
        if let Some(advertisement) = Advertisement::decode(&frame)
            && keep(&advertisement)
        {
            heard.push((std::time::Instant::now(), advertisement));
        }
    }
    Ok(heard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_solicited_node_address_and_its_mac() {
        let target: Ipv6Addr = "2001:db8::1:2:3:4".parse().unwrap();
        assert_eq!(
            solicited_node(target),
            "ff02::1:ff03:4".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(target)),
            [0x33, 0x33, 0xff, 0x03, 0, 4]
        );
    }

    #[test]
    fn an_encoded_solicitation_has_a_right_checksum() {
        let ns = Solicitation::multicast(
            [2, 0, 0, 0, 0, 1],
            "2001:db8::100".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        );
        let frame = ns.encode();
        assert_eq!(frame.len(), 14 + 40 + 32);
        assert_eq!(icmpv6_sum(ns.src, ns.dst, &frame[54..]), 0);
    }
}
