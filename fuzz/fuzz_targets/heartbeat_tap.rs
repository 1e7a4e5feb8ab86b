//! Arbitrary packets as the local-drop tap reads them (IPv4 or IPv6, any length), against an
//! arbitrary peer address and port: judged, never a panic; a heartbeat built from the same
//! address and port is always recognised.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cluster_ctl::heartbeat::local_drop::is_heartbeat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, u128, u16, Vec<u8>)| {
    let (v6, word, port, packet) = input;
    let source = if v6 {
        IpAddr::V6(Ipv6Addr::from(word))
    } else {
        IpAddr::V4(Ipv4Addr::from(word as u32))
    };
    let _ = is_heartbeat(&packet, source, port);
    let mut heartbeat = match source {
        IpAddr::V4(address) => {
            let mut header = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
            header.extend_from_slice(&address.octets());
            header.extend_from_slice(&[0; 4]);
            header
        }
        IpAddr::V6(address) => {
            let mut header = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
            header.extend_from_slice(&address.octets());
            header.extend_from_slice(&[0; 16]);
            header
        }
    };
    heartbeat.extend_from_slice(&[0, 0]);
    heartbeat.extend_from_slice(&port.to_be_bytes());
    heartbeat.extend_from_slice(&packet);
    assert!(is_heartbeat(&heartbeat, source, port));
});
