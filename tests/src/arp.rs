//! ARP on the wire: build requests, send them from a raw packet socket and collect the answers.
//! The functions act in the calling thread's network namespace (use [`crate::in_netns`]).

use std::{
    mem::size_of,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// One ARP reply received for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpAnswer {
    /// Sender hardware address of the reply (who claims the address).
    pub mac: [u8; 6],
    /// Ethernet source of the reply frame.
    pub frame_source: [u8; 6],
    /// Time from sending the request to receiving this reply.
    pub elapsed: Duration,
}

/// Fields of an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub vlan: Option<u16>,
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: Ipv4Addr,
    pub tha: [u8; 6],
    pub tpa: Ipv4Addr,
}

impl ArpFrame {
    /// A broadcast request for `target` from `(mac, ip)`.
    pub fn request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Self {
        Self {
            eth_dst: BROADCAST,
            eth_src: mac,
            vlan: None,
            op: 1,
            sha: mac,
            spa: ip,
            tha: [0; 6],
            tpa: target,
        }
    }

    /// The frame on the wire (without FCS, padded to the Ethernet minimum unless `exact`).
    pub fn encode(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(64);
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        if let Some(vid) = self.vlan {
            frame.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            frame.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        frame.extend_from_slice(&1u16.to_be_bytes());
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&[6, 4]);
        frame.extend_from_slice(&self.op.to_be_bytes());
        frame.extend_from_slice(&self.sha);
        frame.extend_from_slice(&self.spa.octets());
        frame.extend_from_slice(&self.tha);
        frame.extend_from_slice(&self.tpa.octets());
        frame.resize(frame.len().max(60), 0);
        frame
    }

    /// Parses an Ethernet/IPv4 ARP frame (with at most one VLAN tag).
    pub fn decode(frame: &[u8]) -> Option<Self> {
        let mut offset = 12;
        let mut ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
        let mut vlan = None;
        if ethertype == ETH_P_8021Q {
            vlan = Some(u16::from_be_bytes(frame.get(14..16)?.try_into().ok()?) & 0x0fff);
            ethertype = u16::from_be_bytes(frame.get(16..18)?.try_into().ok()?);
            offset = 16;
        }
        if ethertype != ETH_P_ARP {
            return None;
        }
        let arp = frame.get(offset + 2..offset + 2 + 28)?;
        if arp[0..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let mac = |r: std::ops::Range<usize>| -> [u8; 6] { arp[r].try_into().unwrap() };
        let ip = |r: std::ops::Range<usize>| -> Ipv4Addr {
            Ipv4Addr::from(<[u8; 4]>::try_from(&arp[r]).unwrap())
        };
        Some(Self {
            eth_dst: frame[0..6].try_into().ok()?,
            eth_src: frame[6..12].try_into().ok()?,
            vlan,
            op: u16::from_be_bytes([arp[6], arp[7]]),
            sha: mac(8..14),
            spa: ip(14..18),
            tha: mac(18..24),
            tpa: ip(24..28),
        })
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC address of an interface.
pub fn interface_mac(ifname: &str) -> Result<[u8; 6]> {
    for ifaddr in nix::ifaddrs::getifaddrs().context("getifaddrs")? {
        if ifaddr.interface_name != ifname {
            continue;
        }
        if let Some(link) = ifaddr.address.as_ref().and_then(|a| a.as_link_addr())
            && let Some(mac) = link.addr()
        {
            return Ok(mac);
        }
    }
    bail!("interface {ifname} has no MAC address")
}

/// The first IPv4 address of an interface.
pub fn interface_ipv4(ifname: &str) -> Result<Ipv4Addr> {
    for ifaddr in nix::ifaddrs::getifaddrs().context("getifaddrs")? {
        if ifaddr.interface_name != ifname {
            continue;
        }
        if let Some(sin) = ifaddr.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            return Ok(sin.ip());
        }
    }
    bail!("interface {ifname} has no IPv4 address")
}

/// A raw packet socket bound to one interface, receiving one EtherType (ARP by default).
pub struct ArpSocket {
    fd: OwnedFd,
}

impl ArpSocket {
    pub fn open(ifname: &str) -> Result<Self> {
        Self::open_ethertype(ifname, ETH_P_ARP)
    }

    /// A packet socket receiving frames of one EtherType (IPv6 for Neighbor Discovery).
    pub fn open_ethertype(ifname: &str, ethertype: u16) -> Result<Self> {
        let ifindex =
            nix::net::if_::if_nametoindex(ifname).with_context(|| format!("interface {ifname}"))?;
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ethertype.to_be()),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: `raw` is a new, valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zero is valid for sockaddr_ll.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = ethertype.to_be();
        address.sll_ifindex = ifindex as i32;
        // SAFETY: valid sockaddr_ll of the right length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
        }
        Ok(Self { fd })
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: the buffer is valid for its length.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if sent < 0 {
            return Err(std::io::Error::last_os_error()).context("send(AF_PACKET)");
        }
        Ok(())
    }

    /// Receives one incoming frame (frames this host sent are skipped) or `None` at the deadline.
    pub fn receive(&self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        let mut buffer = [0u8; 2048];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let left = deadline - now;
            let timeout = libc::timeval {
                tv_sec: left.as_secs() as libc::time_t,
                tv_usec: left.subsec_micros().max(1) as libc::suseconds_t,
            };
            // SAFETY: setting SO_RCVTIMEO with a valid timeval.
            unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as u32,
                );
            }
            // SAFETY: zero is valid for sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buffers valid for their lengths.
            let received = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if received < 0 {
                let error = std::io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                    _ => return Err(error).context("recvfrom(AF_PACKET)"),
                }
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(buffer[..received as usize].to_vec()));
        }
    }
}

/// Sends one broadcast ARP request for `target` from `ifname` and collects every reply for it
/// that arrives within `wait`.
pub fn request(ifname: &str, target: Ipv4Addr, wait: Duration) -> Result<Vec<ArpAnswer>> {
    let mac = interface_mac(ifname)?;
    let ip = interface_ipv4(ifname)?;
    let socket = ArpSocket::open(ifname)?;
    let start = Instant::now();
    socket.send(&ArpFrame::request(mac, ip, target).encode())?;
    let deadline = start + wait;
    let mut answers = Vec::new();
    while let Some(frame) = socket.receive(deadline)? {
        let Some(reply) = ArpFrame::decode(&frame) else {
            continue;
        };
        if reply.op == 2 && reply.spa == target && reply.tpa == ip && reply.tha == mac {
            answers.push(ArpAnswer {
                mac: reply.sha,
                frame_source: reply.eth_src,
                elapsed: start.elapsed(),
            });
        }
    }
    Ok(answers)
}

/// One claim of an address seen on the wire: a reply to the watch's requests or a gratuitous
/// ARP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub at: Instant,
    pub address: Ipv4Addr,
    /// Sender hardware address: who claims the address.
    pub mac: [u8; 6],
    /// Unsolicited rather than a reply to the watch: a gratuitous ARP, or any request that names
    /// the address as its sender (receivers learn the sender's MAC for it from that too).
    pub gratuitous: bool,
    /// Index of the request this reply followed (the last one sent before it).
    pub slot: u64,
}

/// Asks for a set of addresses in turn, one request every interval, and records every reply
/// and every gratuitous ARP for them, until stopped: the record of who answered for what, and
/// when, for the whole of a fault.
pub struct ArpWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<WatchRecord>>>,
}

/// What a watch saw, and how many requests it sent.
pub type WatchRecord = (Vec<Sighting>, u64);

impl ArpWatch {
    /// Starts watching from `ifname` inside namespace file `netns` (a `/var/run/netns` path).
    pub fn start(
        netns: &str,
        ifname: &str,
        targets: Vec<Ipv4Addr>,
        every: Duration,
    ) -> Result<Self> {
        let file = std::fs::File::open(netns).with_context(|| format!("opening {netns}"))?;
        let ifname = ifname.to_owned();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<WatchRecord> {
            let opened = (|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                let mac = interface_mac(&ifname)?;
                let ip = interface_ipv4(&ifname)?;
                Ok::<_, anyhow::Error>((ArpSocket::open(&ifname)?, mac, ip))
            })();
            let (socket, mac, ip) = match opened {
                Ok(o) => {
                    let _ = ready_tx.send(Ok(()));
                    o
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            let mut sightings = Vec::new();
            let mut slot = 0u64;
            let mut next = Instant::now();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if Instant::now() >= next {
                    let target = targets[(slot % targets.len() as u64) as usize];
                    slot += 1;
                    socket.send(&ArpFrame::request(mac, ip, target).encode())?;
                    next += every;
                }
                let Some(frame) = socket.receive(next)? else {
                    continue;
                };
                let Some(arp) = ArpFrame::decode(&frame) else {
                    continue;
                };
                if !targets.contains(&arp.spa) {
                    continue;
                }
                let reply_to_us = arp.op == 2 && arp.tpa == ip;
                let gratuitous = !reply_to_us;
                if gratuitous || reply_to_us {
                    sightings.push(Sighting {
                        at: Instant::now(),
                        address: arp.spa,
                        mac: arp.sha,
                        gratuitous,
                        slot,
                    });
                }
            }
            Ok((sightings, slot))
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("ARP watch: {e}"),
            Err(_) => bail!("ARP watch thread ended"),
        }
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns what was seen, and how many requests were sent.
    pub fn stop(mut self) -> Result<WatchRecord> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| anyhow::anyhow!("ARP watch thread panicked"))?
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Moments where two MACs claimed one address: two answers to one request, or an answer or
/// announcement from a MAC after another MAC had taken over and before it handed back (a MAC
/// that reappears). Empty when one node at a time answered for every address.
pub fn double_claims(sightings: &[Sighting]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_address: std::collections::BTreeMap<Ipv4Addr, Vec<&Sighting>> = Default::default();
    for s in sightings {
        by_address.entry(s.address).or_default().push(s);
    }
    for (address, list) in by_address {
        let mut replies_per_slot: std::collections::BTreeMap<u64, Vec<[u8; 6]>> =
            Default::default();
        for s in list.iter().filter(|s| !s.gratuitous) {
            let macs = replies_per_slot.entry(s.slot).or_default();
            if !macs.contains(&s.mac) {
                macs.push(s.mac);
            }
        }
        for (slot, macs) in replies_per_slot {
            if macs.len() > 1 {
                problems.push(format!(
                    "{address}: request {slot} answered by {}",
                    macs.iter()
                        .map(format_mac)
                        .collect::<Vec<_>>()
                        .join(" and ")
                ));
            }
        }
        // The order in which MACs claimed the address: each may claim it in one run only.
        let mut runs: Vec<[u8; 6]> = Vec::new();
        let start = list.first().map(|s| s.at);
        for s in &list {
            if runs.last() != Some(&s.mac) {
                if runs.contains(&s.mac) {
                    problems.push(format!(
                        "{address}: {} claimed it again at +{:?} after {} had",
                        format_mac(&s.mac),
                        s.at - start.expect("non-empty"),
                        format_mac(runs.last().expect("non-empty"))
                    ));
                }
                runs.push(s.mac);
            }
        }
    }
    problems
}

/// What is wrong with the replies a watch of one address got, if `owner` alone was to answer
/// every request without a silence of `max_gap`: replies from another MAC, fewer replies than
/// requests (the last request may still be on its way), and a longer gap between replies.
/// Replies are counted, not matched to requests: a frame sent back with XDP_TX in generic mode
/// on a veth often leaves only with the next one.
pub fn not_answered_by(
    sightings: &[Sighting],
    sent: u64,
    owner: [u8; 6],
    max_gap: Duration,
) -> Vec<String> {
    let replies: Vec<&Sighting> = sightings.iter().filter(|s| !s.gratuitous).collect();
    let mut problems: Vec<String> = replies
        .iter()
        .filter(|s| s.mac != owner)
        .map(|s| format!("{} answered by {}", s.address, format_mac(&s.mac)))
        .collect();
    let answered = replies.iter().filter(|s| s.mac == owner).count() as u64;
    if answered + 1 < sent {
        problems.push(format!("{answered} replies to {sent} requests"));
    }
    for (address, (gap, _)) in longest_unanswered(sightings) {
        if gap >= max_gap {
            problems.push(format!("{address} silent for {gap:?}"));
        }
    }
    problems
}

/// Per address: the longest time between two consecutive replies to the watch's requests (the
/// watch asks for its addresses in turn, so this includes up to one round of its requests), and
/// when that gap ended. Gratuitous ARPs do not count: they announce, they do not answer.
pub fn longest_unanswered(
    sightings: &[Sighting],
) -> std::collections::BTreeMap<Ipv4Addr, (Duration, Instant)> {
    let mut last: std::collections::BTreeMap<Ipv4Addr, Instant> = Default::default();
    let mut longest: std::collections::BTreeMap<Ipv4Addr, (Duration, Instant)> = Default::default();
    for s in sightings.iter().filter(|s| !s.gratuitous) {
        if let Some(previous) = last.insert(s.address, s.at) {
            let gap = s.at.saturating_duration_since(previous);
            let longest = longest.entry(s.address).or_insert((gap, s.at));
            if gap > longest.0 {
                *longest = (gap, s.at);
            }
        }
    }
    longest
}

/// Moments where two MACs claimed one address at once, as a watch running through a fault
/// sees them: two answers to one request, or a MAC that claims the address for less than
/// `window` between claims of another MAC (the two alternate: both were answering). Unlike
/// [`double_claims`], a group that moves and later moves back is no violation.
pub fn overlapping_claims(sightings: &[Sighting], window: Duration) -> Vec<String> {
    let mut problems: Vec<String> = double_claims(sightings)
        .into_iter()
        .filter(|p| p.contains(" answered by "))
        .collect();
    let mut by_address: std::collections::BTreeMap<Ipv4Addr, Vec<&Sighting>> = Default::default();
    for s in sightings {
        by_address.entry(s.address).or_default().push(s);
    }
    for (address, list) in by_address {
        // Runs of one MAC: (mac, first, last).
        let mut runs: Vec<([u8; 6], Instant, Instant)> = Vec::new();
        for s in list {
            match runs.last_mut() {
                Some((mac, _, last)) if *mac == s.mac => *last = s.at,
                _ => runs.push((s.mac, s.at, s.at)),
            }
        }
        for w in runs.windows(3) {
            let (before, middle, after) = (w[0], w[1], w[2]);
            if before.0 == after.0 && after.1.duration_since(before.2) < window {
                problems.push(format!(
                    "{address}: {} and {} alternated within {:?}",
                    format_mac(&before.0),
                    format_mac(&middle.0),
                    after.1.duration_since(before.2)
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_and_without_vlan() {
        let mut frame = ArpFrame::request(
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(192, 0, 2, 100),
            Ipv4Addr::new(192, 0, 2, 10),
        );
        assert_eq!(ArpFrame::decode(&frame.encode()), Some(frame));
        frame.vlan = Some(42);
        let bytes = frame.encode();
        assert_eq!(&bytes[12..14], &[0x81, 0x00]);
        assert_eq!(ArpFrame::decode(&bytes), Some(frame));
    }

    #[test]
    fn overlapping_claims_are_alternations_or_double_answers_not_moves() {
        let t0 = Instant::now();
        let ip = Ipv4Addr::new(192, 0, 2, 10);
        let at = |ms: u64, mac: u8, slot: u64| Sighting {
            at: t0 + Duration::from_millis(ms),
            address: ip,
            mac: [mac; 6],
            gratuitous: false,
            slot,
        };
        let window = Duration::from_millis(10);
        // A move, and a move back a second later: fine.
        let moves = [at(0, 1, 0), at(1, 1, 1), at(5, 2, 5), at(1005, 1, 1005)];
        assert!(overlapping_claims(&moves, window).is_empty());
        // A and B alternating: both answered.
        let alternating = [at(0, 1, 0), at(2, 2, 2), at(4, 1, 4)];
        assert_eq!(overlapping_claims(&alternating, window).len(), 1);
        // Two answers to one request.
        let twice = [at(0, 1, 7), at(0, 2, 7)];
        assert_eq!(overlapping_claims(&twice, window).len(), 1);
    }

    #[test]
    fn truncated_frames_do_not_decode() {
        let bytes = ArpFrame::request([2; 6], Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).encode();
        for len in 0..42 {
            assert_eq!(ArpFrame::decode(&bytes[..len]), None, "length {len}");
        }
    }
}
