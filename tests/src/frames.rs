//! Crafted Ethernet frames for BPF_PROG_TEST_RUN tests and traffic generators.

use std::net::Ipv4Addr;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// An IPv4 packet with a TCP/UDP-style port pair.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Packet {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub vlan: Option<u16>,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    /// The IPv4 flags+fragment-offset field (0x2000 = more fragments).
    pub flags_fragment: u16,
}

impl Ipv4Packet {
    pub fn encode(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(64);
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        if let Some(vid) = self.vlan {
            frame.extend_from_slice(&0x8100u16.to_be_bytes());
            frame.extend_from_slice(&vid.to_be_bytes());
        }
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        let payload = [0u8; 8];
        let total_len = 20 + 4 + payload.len() as u16;
        let mut header = [0u8; 20];
        header[0] = 0x45;
        header[2..4].copy_from_slice(&total_len.to_be_bytes());
        header[6..8].copy_from_slice(&self.flags_fragment.to_be_bytes());
        header[8] = 64;
        header[9] = self.protocol;
        header[12..16].copy_from_slice(&self.src.octets());
        header[16..20].copy_from_slice(&self.dst.octets());
        let checksum = internet_checksum(&header);
        header[10..12].copy_from_slice(&checksum.to_be_bytes());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&self.src_port.to_be_bytes());
        frame.extend_from_slice(&self.dst_port.to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.resize(frame.len().max(60), 0);
        frame
    }
}

/// RFC 1071 checksum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A minimal IPv6 frame (UDP, no payload).
pub fn ipv6_frame(eth_dst: [u8; 6], eth_src: [u8; 6]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(64);
    frame.extend_from_slice(&eth_dst);
    frame.extend_from_slice(&eth_src);
    frame.extend_from_slice(&0x86ddu16.to_be_bytes());
    let mut header = [0u8; 40];
    header[0] = 0x60;
    header[6] = IPPROTO_UDP;
    header[7] = 64;
    header[23] = 1;
    header[39] = 2;
    frame.extend_from_slice(&header);
    frame.resize(frame.len().max(60), 0);
    frame
}

/// An IPv6 packet in an Ethernet frame: `next_header` then, for TCP, UDP and SCTP, a header
/// with the ports (no payload, checksums not filled in).
#[derive(Clone, Debug)]
pub struct Ipv6Packet {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub next_header: u8,
    pub src: std::net::Ipv6Addr,
    pub src_port: u16,
    pub dst: std::net::Ipv6Addr,
    pub dst_port: u16,
}

impl Ipv6Packet {
    pub fn encode(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(80);
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        frame.extend_from_slice(&0x86ddu16.to_be_bytes());
        let payload: Vec<u8> = match self.next_header {
            IPPROTO_TCP => {
                let mut tcp = vec![0u8; 20];
                tcp[0..2].copy_from_slice(&self.src_port.to_be_bytes());
                tcp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                tcp[12] = 5 << 4;
                tcp
            }
            IPPROTO_UDP => {
                let mut udp = vec![0u8; 8];
                udp[0..2].copy_from_slice(&self.src_port.to_be_bytes());
                udp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                udp[4..6].copy_from_slice(&8u16.to_be_bytes());
                udp
            }
            IPPROTO_SCTP => {
                // The common header: ports, verification tag, checksum.
                let mut sctp = vec![0u8; 12];
                sctp[0..2].copy_from_slice(&self.src_port.to_be_bytes());
                sctp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                sctp
            }
            _ => vec![0u8; 8],
        };
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[self.next_header, 64]);
        frame.extend_from_slice(&self.src.octets());
        frame.extend_from_slice(&self.dst.octets());
        frame.extend_from_slice(&payload);
        frame
    }
}
