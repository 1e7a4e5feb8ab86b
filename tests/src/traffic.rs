//! Traffic generators for benchmarks: raw frames blasted from a packet socket.

use std::{
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// A send-only packet socket (protocol 0: it receives nothing) bound to one interface.
pub struct Blaster {
    fd: OwnedFd,
}

impl Blaster {
    /// Opens the socket on `ifname` in the calling thread's namespace.
    pub fn open(ifname: &str) -> Result<Self> {
        let ifindex =
            nix::net::if_::if_nametoindex(ifname).with_context(|| format!("interface {ifname}"))?;
        // SAFETY: plain socket(2); the fd is owned at once.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: new valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zero is valid for sockaddr_ll.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = ifindex as i32;
        // SAFETY: valid sockaddr_ll.
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

    /// Sends `frames` round-robin in batches (sendmmsg) for `duration`; returns frames sent.
    pub fn blast(&self, frames: &[Vec<u8>], duration: Duration) -> Result<u64> {
        const BATCH: usize = 64;
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let mut sent = 0u64;
        let mut next = 0usize;
        let deadline = Instant::now() + duration;
        // SAFETY: zero is valid for mmsghdr.
        let mut messages: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        while Instant::now() < deadline {
            for message in messages.iter_mut() {
                message.msg_hdr.msg_iov = &mut iovecs[next];
                message.msg_hdr.msg_iovlen = 1;
                next = (next + 1) % iovecs.len();
            }
            // SAFETY: every message points at a live iovec of a live frame.
            let rc = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), messages.as_mut_ptr(), BATCH as u32, 0)
            };
            if rc < 0 {
                let error = std::io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::ENOBUFS) {
                    continue;
                }
                return Err(error).context("sendmmsg");
            }
            sent += rc as u64;
        }
        Ok(sent)
    }
}

/// A client-side probe: ICMP echo requests to `target` on a fixed 1 ms schedule, never waiting
/// for replies; the outage is the longest run of unanswered probes.
pub struct Probe {
    period: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<Vec<bool>>>>,
}

/// Probe results.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    pub answered: Vec<bool>,
    pub period: Duration,
}

impl ProbeResult {
    pub fn sent(&self) -> usize {
        self.answered.len()
    }

    pub fn lost(&self) -> usize {
        self.answered.iter().filter(|a| !**a).count()
    }

    /// The longest run of unanswered probes, as time.
    pub fn outage(&self) -> Duration {
        let mut longest = 0u32;
        let mut run = 0u32;
        for answered in &self.answered {
            run = if *answered { 0 } else { run + 1 };
            longest = longest.max(run);
        }
        self.period * longest
    }

    /// Index of the first probe of the longest unanswered run.
    pub fn outage_start(&self) -> Option<usize> {
        let mut best = (0usize, None);
        let mut run = 0usize;
        for (i, answered) in self.answered.iter().enumerate() {
            run = if *answered { 0 } else { run + 1 };
            if run > best.0 {
                best = (run, Some(i + 1 - run));
            }
        }
        best.1
    }
}

impl Probe {
    /// Starts probing `target` from namespace `ns` every `period`.
    pub fn start(ns: &str, target: std::net::Ipv4Addr, period: Duration) -> Result<Self> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let ns = ns.to_owned();
        let handle = std::thread::spawn(move || -> Result<Vec<bool>> {
            crate::in_netns(&ns, move || probe_loop(target, period, &stopping))?
        });
        Ok(Self {
            period,
            stop,
            handle: Some(handle),
        })
    }

    /// Stops and returns which probes were answered (replies still in flight get 50 ms).
    pub fn finish(mut self) -> Result<ProbeResult> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answered = self
            .handle
            .take()
            .expect("started")
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        Ok(ProbeResult {
            answered,
            period: self.period,
        })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn probe_loop(
    target: std::net::Ipv4Addr,
    period: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Vec<bool>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket =
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).context("raw ICMP socket")?;
    let receiver = socket.try_clone()?;
    receiver.set_read_timeout(Some(Duration::from_millis(20)))?;
    let identifier = (std::process::id() as u16) ^ 0x5a5a;
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<bool>::new()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = {
        let answered = answered.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((len, _)) = receiver.recv_from(&mut buffer) else {
                    continue;
                };
                // SAFETY: recv_from initialized `len` bytes.
                let data: Vec<u8> = buffer[..len]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                let header = usize::from(data[0] & 0x0f) * 4;
                let Some(icmp) = data.get(header..header + 8) else {
                    continue;
                };
                if icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == identifier {
                    let sequence = u16::from_be_bytes([icmp[6], icmp[7]]) as usize;
                    let mut a = answered.lock().expect("answered");
                    // Sequence numbers wrap at 65536; probes of one run stay below that.
                    if sequence < a.len() {
                        a[sequence] = true;
                    }
                }
            }
        })
    };
    let address: socket2::SockAddr =
        std::net::SocketAddr::V4(std::net::SocketAddrV4::new(target, 0)).into();
    let start = Instant::now();
    let mut sequence = 0u16;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && sequence < u16::MAX {
        let due = start + period * u32::from(sequence);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        answered.lock().expect("answered").push(false);
        let mut packet = vec![8, 0, 0, 0];
        packet.extend_from_slice(&identifier.to_be_bytes());
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&[0u8; 8]);
        let sum = crate::frames::internet_checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        let _ = socket.send_to(&packet, &address);
        sequence += 1;
    }
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = listener.join();
    let result = answered.lock().expect("answered").clone();
    Ok(result)
}
