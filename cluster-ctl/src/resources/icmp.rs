//! ICMP echo: the IP watch monitors (IPW) and the tie-breaker and FIP probes.

use std::{
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

static SEQUENCE: AtomicU16 = AtomicU16::new(1);

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(identifier: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![8, 0, 0, 0];
    packet.extend_from_slice(&identifier.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(b"fwcluster-ipw...");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// Sends one echo request to every target and says whether any answered within `timeout`.
/// Uses a raw socket (root) or, failing that, an unprivileged ping socket.
pub fn any_reachable(targets: &[Ipv4Addr], timeout: Duration) -> bool {
    if targets.is_empty() {
        return false;
    }
    let (socket, raw) = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
        Ok(s) => (s, true),
        Err(_) => match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
            Ok(s) => (s, false),
            Err(e) => {
                tracing::error!(error = %e, "cannot open an ICMP socket");
                return false;
            }
        },
    };
    let identifier = (std::process::id() & 0xffff) as u16;
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let request = echo_request(identifier, sequence);
    for target in targets {
        let address = SocketAddr::V4(SocketAddrV4::new(*target, 0));
        let _ = socket.send_to(&request, &address.into());
    }
    let deadline = Instant::now() + timeout;
    let mut buffer = [MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if socket.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        let Ok((len, from)) = socket.recv_from(&mut buffer) else {
            if Instant::now() >= deadline {
                return false;
            }
            continue;
        };
        // SAFETY: recv_from initialized the first `len` bytes.
        let data: Vec<u8> = buffer[..len]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        let Some(from) = from.as_socket_ipv4() else {
            continue;
        };
        if !targets.contains(from.ip()) {
            continue;
        }
        // A raw socket delivers the IP header; a ping socket only the ICMP message (and
        // rewrites the identifier, so only the sequence is checked there).
        let icmp = if raw {
            let header = usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4;
            data.get(header..).unwrap_or_default()
        } else {
            &data[..]
        };
        if icmp.len() >= 8
            && icmp[0] == 0
            && u16::from_be_bytes([icmp[6], icmp[7]]) == sequence
            && (!raw || u16::from_be_bytes([icmp[4], icmp[5]]) == identifier)
        {
            return true;
        }
    }
}

/// One echo to one address.
pub fn ping_once(target: Ipv4Addr, timeout: Duration) -> bool {
    any_reachable(&[target], timeout)
}

/// One IPW entry: a set of targets that fails only when all are unreachable, for more than
/// `retry` consecutive rounds.
pub struct Monitor {
    pub targets: Vec<Ipv4Addr>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retry: u32,
}

impl Monitor {
    /// Probes forever; calls `report` with each change of verdict (the first verdict assumed is
    /// "ok"); stops when `report` returns false.
    pub fn run(&self, name: &str, mut report: impl FnMut(bool) -> bool) {
        let mut ok = true;
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let reachable = any_reachable(&self.targets, self.timeout);
            failures = if reachable { 0 } else { failures + 1 };
            let verdict = failures <= self.retry;
            if verdict != ok {
                ok = verdict;
                tracing::warn!(
                    id = crate::catalog::MONITOR.id,
                    monitor = name,
                    targets = ?self.targets,
                    ok,
                    "IP watch {}",
                    if ok { "target reachable again" } else { "all targets unreachable" }
                );
                if !report(ok) {
                    return;
                }
            }
            std::thread::sleep(self.interval.saturating_sub(started.elapsed()));
        }
    }
}
