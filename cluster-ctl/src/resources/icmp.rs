//! ICMP echo: the IP watch monitors (IPW) and the tie-breaker and FIP probes.

use std::{
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
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

/// An echo request: ICMP type 8 with its checksum, or ICMPv6 type 128, whose checksum the
/// kernel fills in (it covers the IPv6 pseudo-header).
fn echo_request(v6: bool, identifier: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    packet.extend_from_slice(&identifier.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(b"fwcluster-ipw...");
    if !v6 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// An echo socket of one family: raw (root) or, failing that, an unprivileged ping socket.
struct EchoSocket {
    socket: Socket,
    raw: bool,
    v6: bool,
}

impl EchoSocket {
    fn open(v6: bool) -> Option<Self> {
        let (domain, protocol) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        match Socket::new(domain, Type::RAW, Some(protocol)) {
            Ok(socket) => Some(Self {
                socket,
                raw: true,
                v6,
            }),
            Err(_) => match Socket::new(domain, Type::DGRAM, Some(protocol)) {
                Ok(socket) => Some(Self {
                    socket,
                    raw: false,
                    v6,
                }),
                Err(e) => {
                    tracing::error!(error = %e, v6, "cannot open an ICMP echo socket");
                    None
                }
            },
        }
    }

    /// Whether `data`, received from a target, is the reply to this round's request. A raw
    /// IPv4 socket delivers the IP header (raw ICMPv6 sockets never do); a ping socket only
    /// the message, with the identifier rewritten, so only the sequence is checked there.
    fn is_reply(&self, data: &[u8], identifier: u16, sequence: u16) -> bool {
        let icmp = if self.raw && !self.v6 {
            let header = usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4;
            data.get(header..).unwrap_or_default()
        } else {
            data
        };
        icmp.len() >= 8
            && icmp[0] == if self.v6 { 129 } else { 0 }
            && u16::from_be_bytes([icmp[6], icmp[7]]) == sequence
            && (!self.raw || u16::from_be_bytes([icmp[4], icmp[5]]) == identifier)
    }
}

/// Sends one echo request to every target and says whether any answered within `timeout`.
/// IPv4 targets get ICMP echo, IPv6 targets ICMPv6 echo.
pub fn any_reachable(targets: &[IpAddr], timeout: Duration) -> bool {
    let identifier = (std::process::id() & 0xffff) as u16;
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut sockets = Vec::new();
    for v6 in [false, true] {
        let family: Vec<IpAddr> = targets
            .iter()
            .copied()
            .filter(|t| t.is_ipv6() == v6)
            .collect();
        if family.is_empty() {
            continue;
        }
        let Some(socket) = EchoSocket::open(v6) else {
            continue;
        };
        let request = echo_request(v6, identifier, sequence);
        for target in &family {
            let _ = socket
                .socket
                .send_to(&request, &SocketAddr::new(*target, 0).into());
        }
        // Polled in turn below: the replies come within one timeout, and neither family's
        // socket blocks the other's for long.
        let _ = socket.socket.set_nonblocking(true);
        sockets.push(socket);
    }
    if sockets.is_empty() {
        return false;
    }
    let deadline = Instant::now() + timeout;
    let mut buffer = [MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let mut polled: Vec<libc::pollfd> = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let wait = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: `polled` is a valid array of pollfd for its length.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, wait) };
        if ready <= 0 {
            continue;
        }
        for (socket, polled) in sockets.iter().zip(&polled) {
            if polled.revents == 0 {
                continue;
            }
            while let Ok((len, from)) = socket.socket.recv_from(&mut buffer) {
                // SAFETY: recv_from initialized the first `len` bytes.
                let data: Vec<u8> = buffer[..len]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                let Some(from) = from.as_socket() else {
                    continue;
                };
                if targets.contains(&from.ip()) && socket.is_reply(&data, identifier, sequence) {
                    return true;
                }
            }
        }
    }
}

/// One echo to one address.
pub fn ping_once(target: IpAddr, timeout: Duration) -> bool {
    any_reachable(&[target], timeout)
}

/// One IPW entry: a set of targets that fails only when all are unreachable, for more than
/// `retry` consecutive rounds.
pub struct Monitor {
    pub targets: Vec<IpAddr>,
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
