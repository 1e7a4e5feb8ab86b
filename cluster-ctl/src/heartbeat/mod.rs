//! Heartbeats over every interconnect (R-HB-1…3): UDP, authenticated, replay-protected.
//!
//! One socket per local interconnect address; a receiving thread per socket authenticates and
//! decodes packets and hands them to the daemon's loop through a channel. Before the loop judges
//! a silence it reads what is still queued in the sockets itself (`read_queued`), so a receiving
//! thread that has not been scheduled yet cannot make a peer look dead. Rejected packets are
//! counted by reason.

pub mod local_drop;
pub mod wire;

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::config::Config;
use cluster_engine::Report;
use wire::{Key, Kind, Packet, Reject, ReplayWindow};

/// What the receiving threads deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// An authenticated, fresh packet from `from` on interconnect `link`.
    Packet {
        from: usize,
        link: usize,
        kind: Kind,
        report: Report,
    },
    /// An authenticated packet from a node whose configuration differs (its report's groups
    /// mean something else; its send time and echo are still good).
    Mismatch {
        from: usize,
        link: usize,
        report: Report,
    },
    /// A refused packet.
    Rejected {
        link: usize,
        source: SocketAddr,
        reason: Reject,
    },
}

/// Counters of refused packets by reason.
#[derive(Debug, Default)]
pub struct RejectCounters(Mutex<BTreeMap<&'static str, u64>>);

impl RejectCounters {
    fn count(&self, reason: Reject) {
        *self
            .0
            .lock()
            .expect("counter lock")
            .entry(reason.label())
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().expect("counter lock").clone()
    }
}

/// Per peer and interconnect: heartbeats received and the longest gap between two of them
/// (loss and delay show up as gaps longer than the interval).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub received: u64,
    pub max_gap: Duration,
    last: Option<Instant>,
}

/// Link statistics of every (peer, link), and every datagram that reached a heartbeat socket by
/// (link, source address), accepted or refused (what the local firewall let through).
#[derive(Debug, Default)]
pub struct LinkCounters {
    stats: Mutex<BTreeMap<(usize, usize), LinkStats>>,
    arrivals: Mutex<BTreeMap<(usize, IpAddr), u64>>,
}

impl LinkCounters {
    fn arrived(&self, link: usize, source: IpAddr) {
        *self
            .arrivals
            .lock()
            .expect("arrival counters lock")
            .entry((link, source))
            .or_default() += 1;
    }

    /// Datagrams from `source` that reached the socket of `link`.
    pub fn arrivals(&self, link: usize, source: IpAddr) -> u64 {
        self.arrivals
            .lock()
            .expect("arrival counters lock")
            .get(&(link, source))
            .copied()
            .unwrap_or(0)
    }

    fn record(&self, peer: usize, link: usize) {
        let mut map = self.stats.lock().expect("link counters lock");
        let stats = map.entry((peer, link)).or_default();
        let now = Instant::now();
        if let Some(last) = stats.last {
            stats.max_gap = stats.max_gap.max(now - last);
        }
        stats.last = Some(now);
        stats.received += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<(usize, usize), LinkStats> {
        self.stats.lock().expect("link counters lock").clone()
    }
}

/// Per-sender freshness state shared by the receiving threads, and where the incarnations
/// accepted from each sender are recorded.
struct Freshness {
    windows: Vec<ReplayWindow>,
    store: crate::incarnation::Store,
    /// Per peer: the other wire version it was last heard speaking (said once per change).
    foreign: Vec<Option<u8>>,
}

/// The heartbeat transport of one node.
pub struct Transport {
    me: usize,
    key: Key,
    digest: [u8; 16],
    incarnation: u64,
    sequence: AtomicU64,
    sockets: Vec<Arc<UdpSocket>>,
    /// Per link: the checks its packets go through (shared with that link's receiving thread).
    receivers: Vec<Arc<Receiver>>,
    /// Where [`Transport::read_queued`] reads into (allocated once: it runs at every tick).
    scratch: Mutex<Vec<u8>>,
    /// peer → per link: its interconnect address.
    peers: Vec<Vec<SocketAddr>>,
    pub rejected: Arc<RejectCounters>,
    pub links: Arc<LinkCounters>,
    /// Peers' heartbeats that the local firewall drops, by (peer, link).
    pub local_drops: Arc<local_drop::LocalDrops>,
}

impl Transport {
    /// Binds one socket per interconnect address of node `me` and starts the receiving threads,
    /// which hand what they get to `deliver` (straight into the daemon's loop: every thread
    /// between a heartbeat and the loop is one more chance for it to wait).
    pub fn start(
        config: &Config,
        me: usize,
        key: Key,
        incarnation: u64,
        store: crate::incarnation::Store,
        deliver: Deliver,
    ) -> io::Result<Self> {
        let port = config.cluster.heartbeat_port;
        let digest: [u8; 16] = config.digest()[..16].try_into().expect("32 >= 16");
        let peers: Vec<Vec<SocketAddr>> = config
            .server
            .iter()
            .map(|s| {
                s.interconnect
                    .iter()
                    .map(|net| SocketAddr::new(net.addr(), port))
                    .collect()
            })
            .collect();
        let mut windows = vec![ReplayWindow::default(); config.server.len()];
        let remembered = store
            .peers()
            .map_err(|e| io::Error::other(format!("{e:#}")))?;
        for (peer, incarnation) in remembered {
            if let Some(window) = windows.get_mut(peer) {
                *window = ReplayWindow::remembering(incarnation);
            }
        }
        let foreign = vec![None; windows.len()];
        let freshness = Arc::new(Mutex::new(Freshness {
            windows,
            store,
            foreign,
        }));
        let rejected = Arc::new(RejectCounters::default());
        let links = Arc::new(LinkCounters::default());
        let local_drops = Arc::new(local_drop::LocalDrops::default());
        {
            let (config, links, drops) = (config.clone(), links.clone(), local_drops.clone());
            std::thread::Builder::new()
                .name("hb-local-drop".into())
                .spawn(move || local_drop::watch(&config, me, links, drops))?;
        }
        let mut sockets = Vec::new();
        let mut receivers = Vec::new();
        for (link, local) in peers[me].iter().enumerate() {
            let socket = Arc::new(bind(*local).map_err(|e| {
                io::Error::new(e.kind(), format!("binding heartbeat socket {local}: {e}"))
            })?);
            sockets.push(socket.clone());
            let receiver = Arc::new(Receiver {
                me,
                link,
                key: key.clone(),
                digest,
                peers: peers.clone(),
                freshness: freshness.clone(),
                rejected: rejected.clone(),
                links: links.clone(),
            });
            receivers.push(receiver.clone());
            let deliver = deliver.clone();
            std::thread::Builder::new()
                .name(format!("hb-rx{link}"))
                .spawn(move || receiver.run(&socket, &deliver))?;
        }
        Ok(Self {
            me,
            key,
            digest,
            incarnation,
            sequence: AtomicU64::new(0),
            sockets,
            receivers,
            scratch: Mutex::new(vec![0; wire::MAX_PACKET + 1]),
            peers,
            rejected,
            links,
            local_drops,
        })
    }

    /// Reads, without waiting, the datagrams still queued in the heartbeat sockets (at most
    /// `limit` per socket, so that a flood cannot hold the caller) and checks them as the
    /// receiving threads would. After a stall of the machine the daemon's loop often runs
    /// before the receiving threads: the silence it is about to judge may be its own.
    pub fn read_queued(&self, limit: usize) -> Vec<Inbound> {
        use nix::sys::socket::{MsgFlags, SockaddrStorage, recvmsg};
        use std::os::fd::AsRawFd as _;
        let mut buffer = self.scratch.lock().expect("scratch buffer lock");
        let mut read = Vec::new();
        for (socket, receiver) in self.sockets.iter().zip(&self.receivers) {
            for _ in 0..limit {
                let mut iov = [io::IoSliceMut::new(&mut buffer[..])];
                let Ok(message) = recvmsg::<SockaddrStorage>(
                    socket.as_raw_fd(),
                    &mut iov,
                    None,
                    MsgFlags::MSG_DONTWAIT,
                ) else {
                    break;
                };
                let (len, Some(source)) = (message.bytes, message.address) else {
                    continue;
                };
                let source = match (source.as_sockaddr_in(), source.as_sockaddr_in6()) {
                    (Some(v4), _) => SocketAddr::from((v4.ip(), v4.port())),
                    (None, Some(v6)) => SocketAddr::from((v6.ip(), v6.port())),
                    (None, None) => continue,
                };
                read.push(receiver.take(&buffer[..len], source));
            }
        }
        read
    }

    /// Sends a packet with `report` (as produced for each peer) to every peer on every link.
    /// Errors on one link (a cut cable) do not stop the others.
    pub fn send(&self, kind: Kind, report_for: impl Fn(usize) -> Report) {
        for (peer, addresses) in self.peers.iter().enumerate() {
            if peer == self.me {
                continue;
            }
            let report = report_for(peer);
            for (link, address) in addresses.iter().enumerate() {
                let Some(socket) = self.sockets.get(link) else {
                    continue;
                };
                let packet = Packet {
                    version: wire::VERSION,
                    kind,
                    sender: self.me as u32,
                    incarnation: self.incarnation,
                    sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
                    digest: self.digest,
                    link: link as u8,
                    report: report.clone(),
                };
                let bytes = wire::encode(&packet, &self.key);
                if let Err(e) = socket.send_to(&bytes, address) {
                    tracing::trace!(link, %address, error = %e, "heartbeat send failed");
                }
            }
        }
    }
}

/// Binds a heartbeat socket. A daemon restarted at once (SIGKILL, then start) can find the
/// address still held by the previous worker, which the kernel is still tearing down; and an
/// IPv6 address just configured is tentative (not bindable) while the kernel's duplicate-address
/// detection runs, about a second. Both are waited out for a moment instead of failing the
/// start.
fn bind(local: SocketAddr) -> io::Result<UdpSocket> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match UdpSocket::bind(local) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

struct Receiver {
    me: usize,
    link: usize,
    key: Key,
    digest: [u8; 16],
    peers: Vec<Vec<SocketAddr>>,
    freshness: Arc<Mutex<Freshness>>,
    rejected: Arc<RejectCounters>,
    links: Arc<LinkCounters>,
}

/// Where receivers hand what they got; false when nobody listens any more.
pub type Deliver = Arc<dyn Fn(Inbound) -> bool + Send + Sync>;

impl Receiver {
    /// A peer speaks another wire version (a rolling upgrade under way): said once, with
    /// what it means.
    fn note_foreign_version(&self, from: usize, version: u8) {
        let mut fresh = self.freshness.lock().expect("freshness lock");
        if fresh.foreign.get(from).copied().flatten() == Some(version) {
            return;
        }
        if let Some(slot) = fresh.foreign.get_mut(from) {
            *slot = Some(version);
        }
        tracing::error!(
            id = crate::catalog::CONFIG_MISMATCH.id,
            peer = from,
            version,
            own = wire::VERSION,
            "a peer speaks heartbeat wire version {version}, this node {}: another fwcluster \
             release. It is heard as alive and treated as a node with another configuration \
             (groups stay where they run, nothing is taken over) until both run one release: \
             upgrade the other node too",
            wire::VERSION
        );
    }

    fn run(&self, socket: &UdpSocket, deliver: &Deliver) {
        let mut buffer = vec![0u8; 65_536];
        loop {
            let (len, source) = match socket.recv_from(&mut buffer) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(link = self.link, error = %e, "heartbeat socket failed");
                    return;
                }
            };
            if !deliver(self.take(&buffer[..len], source)) {
                return;
            }
        }
    }

    /// Checks one datagram and counts it (refusals by reason, heartbeats per peer and link).
    fn take(&self, bytes: &[u8], source: SocketAddr) -> Inbound {
        self.links.arrived(self.link, source.ip());
        let event = self.check(bytes, source);
        match &event {
            Inbound::Rejected { reason, .. } => self.rejected.count(*reason),
            Inbound::Packet { from, link, .. } | Inbound::Mismatch { from, link, .. } => {
                self.links.record(*from, *link)
            }
        }
        event
    }

    fn check(&self, bytes: &[u8], source: SocketAddr) -> Inbound {
        let reject = |reason| Inbound::Rejected {
            link: self.link,
            source,
            reason,
        };
        let packet = match wire::decode(bytes, &self.key) {
            Ok(p) => p,
            Err(reason) => return reject(reason),
        };
        let from = packet.sender as usize;
        // The sender must be another server, sending from its address on this interconnect.
        let expected = self.peers.get(from).and_then(|a| a.get(self.link));
        if from == self.me || expected.map(|a| a.ip()) != Some(source.ip()) {
            return reject(Reject::UnknownSender);
        }
        {
            let mut fresh = self.freshness.lock().expect("freshness lock");
            let known = fresh.windows[from].incarnation();
            if let Err(reason) = fresh.windows[from].accept(packet.incarnation, packet.sequence) {
                return reject(reason);
            }
            // A new life of the peer: remembered, so that a recording of this one is refused
            // after this node restarts too. Rare (once per restart of a peer).
            if packet.incarnation != known {
                let accepted: BTreeMap<usize, u64> = fresh
                    .windows
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.incarnation() != 0)
                    .map(|(peer, w)| (peer, w.incarnation()))
                    .collect();
                if let Err(e) = fresh.store.record_peers(&accepted) {
                    tracing::error!(error = format!("{e:#}"), "recording peer incarnations");
                }
            }
        }
        if packet.version != wire::VERSION {
            self.note_foreign_version(from, packet.version);
            return Inbound::Mismatch {
                from,
                link: self.link,
                report: packet.report,
            };
        }
        if packet.digest != self.digest {
            return Inbound::Mismatch {
                from,
                link: self.link,
                report: packet.report,
            };
        }
        Inbound::Packet {
            from,
            link: self.link,
            kind: packet.kind,
            report: packet.report,
        }
    }
}

/// Reads the cluster key: hex text (as `clpcfg keygen` writes it) of at least 128 bits, in a
/// file that only its owner can read.
pub fn load_key(path: &std::path::Path) -> Result<Key, KeyError> {
    crate::private::check_secret_file(path, "key file")?;
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bytes = hex::decode(text.trim()).map_err(|source| KeyError::NotHex {
        path: path.to_owned(),
        source,
    })?;
    Key::new(bytes).map_err(|source| KeyError::Short {
        path: path.to_owned(),
        source,
    })
}

/// Why the cluster key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    NotPrivate(#[from] crate::private::PrivateError),
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the key file {path} is not hex text: {source}")]
    NotHex {
        path: std::path::PathBuf,
        source: hex::FromHexError,
    },
    #[error("{path}: {source}")]
    Short {
        path: std::path::PathBuf,
        source: wire::ShortKey,
    },
}
