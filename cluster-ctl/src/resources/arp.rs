//! Gratuitous ARP from a raw packet socket (in the daemon's network namespace).

use std::{
    mem::size_of,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result};

const ETH_P_ARP: u16 = 0x0806;

fn frame(op: u16, source_mac: [u8; 6], sender_mac: [u8; 6], address: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&source_mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&address.octets());
    // Request form: target MAC unknown (zero); reply form: broadcast.
    f.extend_from_slice(if op == 1 { &[0; 6] } else { &[0xff; 6] });
    f.extend_from_slice(&address.octets());
    f.resize(60, 0);
    f
}

/// An open packet socket per interface, with the interface's MAC: closing a packet socket waits
/// for an RCU grace period (`synchronize_net`, ~10 ms), far too slow for the takeover path.
struct Sender {
    fd: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
}

static SENDERS: std::sync::Mutex<std::collections::BTreeMap<String, Sender>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn open_sender(interface: &str) -> Result<Sender> {
    let mac = crate::netif::interface_mac(interface)?;
    let ifindex = nix::net::if_::if_nametoindex(interface)
        .with_context(|| format!("interface {interface}"))?;
    // SAFETY: plain socket(2); owned at once.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: new valid descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(Sender { fd, ifindex, mac })
}

/// Announces `address` on `interface` as being at `mac` (default: the interface's MAC), in both
/// the request and the reply form, so that hosts which only honour one of them update too.
pub fn announce(interface: &str, address: Ipv4Addr, mac: Option<[u8; 6]>) -> Result<()> {
    let mut senders = SENDERS.lock().expect("senders lock");
    if !senders.contains_key(interface) {
        senders.insert(interface.to_owned(), open_sender(interface)?);
    }
    let sender = &senders[interface];
    let announced = mac.unwrap_or(sender.mac);
    // SAFETY: zero is valid for sockaddr_ll.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = sender.ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for op in [1u16, 2] {
        let bytes = frame(op, announced, announced, address);
        // SAFETY: valid buffer and address.
        let sent = unsafe {
            libc::sendto(
                sender.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            let error = std::io::Error::last_os_error();
            // The interface may have been replaced: reopen next time.
            senders.remove(interface);
            return Err(error).with_context(|| format!("sending gratuitous ARP on {interface}"));
        }
    }
    Ok(())
}
