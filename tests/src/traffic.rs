//! Client-side traffic for benchmarks and demos.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};

/// A client-side probe: ICMP echo requests to `target` on a fixed 1 ms schedule, never waiting
/// for replies; the outage is the longest run of unanswered probes.
pub struct Probe {
    period: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<Answers>>>,
}

/// When the first probe was sent, and which probes were answered.
type Answers = (SystemTime, Vec<bool>);

/// Probe results.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    pub answered: Vec<bool>,
    pub period: Duration,
    /// Wall-clock time of the first probe (probe `i` was sent at `started + i × period`), to
    /// compare with the daemons' log lines.
    pub started: SystemTime,
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

    /// When the first probe after the longest unanswered run was sent (it was answered), on the
    /// wall clock.
    pub fn recovered_at(&self) -> Option<SystemTime> {
        let start = self.outage_start()?;
        let lost = (self.outage().as_nanos() / self.period.as_nanos().max(1)) as u32;
        Some(self.started + self.period * (start as u32 + lost))
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
    /// Starts probing `target` (ICMP or ICMPv6 echo) from namespace `ns` every `period`.
    pub fn start(ns: &str, target: impl Into<std::net::IpAddr>, period: Duration) -> Result<Self> {
        let target = target.into();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let ns = ns.to_owned();
        let handle = std::thread::spawn(move || -> Result<Answers> {
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
        let (started, answered) = self
            .handle
            .take()
            .expect("started")
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        Ok(ProbeResult {
            answered,
            period: self.period,
            started,
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
    target: std::net::IpAddr,
    period: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Answers> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v6 = target.is_ipv6();
    let socket = if v6 {
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).context("raw ICMPv6 socket")?
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).context("raw ICMP socket")?
    };
    // Echo request and reply types of the family.
    let (request, reply) = if v6 { (128u8, 129u8) } else { (8, 0) };
    let receiver = socket.try_clone()?;
    receiver.set_read_timeout(Some(Duration::from_millis(20)))?;
    // Every stream its own identifier (a raw ICMP socket sees every echo reply of the
    // namespace), and a reply counts only from the address this stream asks: with a shared
    // identifier a sequence number would count as answered if either target answered.
    static NEXT_IDENTIFIER: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let identifier = ((std::process::id() as u16) ^ 0x5a5a)
        .wrapping_add(NEXT_IDENTIFIER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<bool>::new()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = {
        let answered = answered.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((len, from)) = receiver.recv_from(&mut buffer) else {
                    continue;
                };
                if from.as_socket().map(|a| a.ip()) != Some(target) {
                    continue;
                }
                // SAFETY: recv_from initialized `len` bytes.
                let data: Vec<u8> = buffer[..len]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                // Raw IPv4 sockets deliver the IP header, raw ICMPv6 ones never do.
                let header = if v6 {
                    0
                } else {
                    usize::from(data[0] & 0x0f) * 4
                };
                let Some(icmp) = data.get(header..header + 8) else {
                    continue;
                };
                if icmp[0] == reply && u16::from_be_bytes([icmp[4], icmp[5]]) == identifier {
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
    let address: socket2::SockAddr = std::net::SocketAddr::new(target, 0).into();
    let start = Instant::now();
    let started = SystemTime::now();
    let mut sequence = 0u16;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && sequence < u16::MAX {
        let due = start + period * u32::from(sequence);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        answered.lock().expect("answered").push(false);
        let mut packet = vec![request, 0, 0, 0];
        packet.extend_from_slice(&identifier.to_be_bytes());
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&[0u8; 8]);
        // The kernel fills in the ICMPv6 checksum (it covers the pseudo-header).
        if !v6 {
            let sum = crate::frames::internet_checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        let _ = socket.send_to(&packet, &address);
        sequence += 1;
    }
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = listener.join();
    let result = answered.lock().expect("answered").clone();
    Ok((started, result))
}
