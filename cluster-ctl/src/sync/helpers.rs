//! What connection-tracking helpers (FTP, SIP) leave in a node's table, replicated by
//! fwclusterd itself, complete (R-SYNC-1): expectations with their NAT, and the sequence
//! adjustments of connections whose packets a NAT helper rewrote.
//!
//! conntrackd 1.4.7 does not bring either into the peer's kernel, though it sends both: the
//! copy of an expectation arrives without its NAT (`CTA_EXPECT_NAT`) and follow-up function
//! (`CTA_EXPECT_FN`, "nat-follow-master"), which libnetfilter_conntrack 1.0.9, through which it
//! writes copies, does not build; and the copy of a control connection arrives without its
//! sequence adjustment (`CTA_SEQ_ADJ_*`). Found in the lab: after a takeover the data
//! connection of a NAT'd FTP session was not translated back to the client, and the client's
//! next command on the control connection (its sequence numbers 3 bytes beyond what the server
//! expects, after the helper shortened its `PORT` command) never arrived. So conntrackd's
//! expectation sync is off, and fwclusterd reads the kernel's expectation events and the
//! connection updates that carry a sequence adjustment, sends them to the peers over the peer
//! API (authenticated with the cluster key), and a peer writes each with every attribute the
//! kernel reported. Copies from the network are checked attribute by attribute
//! ([`HelperCopy::request`]) before anything reaches the kernel.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender},
    },
    time::Duration,
};

use netlink_packet_core::{
    DefaultNla, NLA_F_NESTED, NLM_F_CREATE, NLM_F_EXCL, Nla as _, NlasIterator,
};
use netlink_packet_netfilter::{
    NetfilterMessage, NetfilterMessageInner, NetfilterSubsystem,
    conntrack::{ConntrackAttribute, ConntrackMessage},
};
use serde::{Deserialize, Serialize};

use super::{
    ctnetlink::{Ctnetlink, CtnetlinkError},
    monitor::{self, Shared},
};

/// ctnetlink's subsystems, message types and event groups.
const SUBSYS_CONNTRACK: u8 = 1;
const SUBSYS_EXPECT: u8 = 2;
/// `IPCTNL_MSG_CT_NEW` and `IPCTNL_MSG_EXP_NEW`: made, or (without `NLM_F_CREATE`) updated.
const MSG_NEW: u8 = 0;
/// `IPCTNL_MSG_CT_GET` and `IPCTNL_MSG_EXP_GET`.
const MSG_GET: u8 = 1;
const MSG_EXP_DELETE: u8 = 2;
const GROUP_EXP_NEW: u32 = 4;
const GROUP_EXP_DESTROY: u32 = 6;

/// Connection attributes (`CTA_*`) a sequence adjustment is written with.
const CT_TUPLE_ORIG: u16 = 1;
const CT_TUPLE_REPLY: u16 = 2;
const CT_ID: u16 = 12;
const CT_SEQ_ADJ_ORIG: u16 = 15;
const CT_SEQ_ADJ_REPLY: u16 = 16;
const CT_ZONE: u16 = 18;
const SEQ_ADJUST_ATTRIBUTES: [u16; 5] = [
    CT_TUPLE_ORIG,
    CT_TUPLE_REPLY,
    CT_SEQ_ADJ_ORIG,
    CT_SEQ_ADJ_REPLY,
    CT_ZONE,
];
/// Tuple attributes: the addresses' nest, and in it the addresses.
const TUPLE_IP: u16 = 1;
const IP_V4_SRC: u16 = 1;
const IP_V4_DST: u16 = 2;
const IP_V6_SRC: u16 = 3;
const IP_V6_DST: u16 = 4;

/// Expectation attributes (`CTA_EXPECT_*`).
const MASTER: u16 = 1;
const TUPLE: u16 = 2;
const MASK: u16 = 3;
const TIMEOUT: u16 = 4;
const HELP_NAME: u16 = 6;
const ZONE: u16 = 7;
const FLAGS: u16 = 8;
const CLASS: u16 = 9;
const NAT: u16 = 10;
const FN: u16 = 11;
/// What a copy to create may carry: all but the kernel's own id, which differs per node.
const CREATE_ATTRIBUTES: [u16; 10] = [
    MASTER, TUPLE, MASK, TIMEOUT, HELP_NAME, ZONE, FLAGS, CLASS, NAT, FN,
];
/// What names an expectation to remove.
const REMOVE_ATTRIBUTES: [u16; 2] = [TUPLE, ZONE];
/// The attribute type without its nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Larger than any expectation attribute the kernel makes (a nested IPv6 tuple is 52 bytes).
const MAX_VALUE: usize = 256;
/// The size of the copies in one request to a peer, as JSON: well below the peer API's
/// limit on a request (`control::MAX_REQUEST`).
const BATCH_BYTES: usize = 32 * 1024;
/// Sequence adjustments kept for a takeover: one per NAT'd control connection (FTP, SIP).
const MAX_SEQ_ADJUSTMENTS: usize = 65536;
/// Copies waiting to be sent; more (the peer unreachable for long, a burst) are dropped, and
/// the peer gets everything once it answers.
const MAX_PENDING: usize = 65536;
/// How long a takeover writes kept sequence adjustments before it answers for the addresses;
/// the rest follow in the background.
const TAKEOVER_BUDGET: Duration = Duration::from_millis(100);

/// What a copy does on the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyOp {
    /// Makes an expectation (replacing one of the same tuple).
    CreateExpectation,
    /// Removes an expectation (used, expired or deleted on the sender).
    RemoveExpectation,
    /// Sets a connection's sequence adjustment (its packets were rewritten by a NAT helper).
    SeqAdjust,
}

impl CopyOp {
    /// The attributes a copy may carry, and those it must.
    fn attributes(self) -> (&'static [u16], &'static [u16]) {
        match self {
            CopyOp::CreateExpectation => (&CREATE_ATTRIBUTES, &[TUPLE, MASK, MASTER]),
            CopyOp::RemoveExpectation => (&REMOVE_ATTRIBUTES, &[TUPLE]),
            CopyOp::SeqAdjust => (&SEQ_ADJUST_ATTRIBUTES, &[CT_TUPLE_ORIG]),
        }
    }
}

/// One ctnetlink attribute as sent to a peer: its type (with its flags) and its value in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyAttribute {
    pub kind: u16,
    pub value: String,
}

/// An expectation made or removed, or a sequence adjustment set, on one node, for its peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperCopy {
    pub op: CopyOp,
    pub family: u8,
    pub attributes: Vec<CopyAttribute>,
}

/// Why a copy from a peer is not written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyError {
    #[error("address family {0} is neither IPv4 nor IPv6")]
    Family(u8),
    #[error("attribute {kind} is not one a copy to {op:?} carries")]
    Attribute { kind: u16, op: CopyOp },
    #[error("attribute {0} appears twice")]
    Twice(u16),
    #[error("attribute {kind}: {why}")]
    Value { kind: u16, why: String },
    #[error("attribute {0} is missing")]
    Missing(u16),
}

/// A ctnetlink request that writes a copy.
#[derive(Debug, PartialEq, Eq)]
pub struct CopyRequest {
    pub subsystem: u8,
    pub message_type: u8,
    pub family: u8,
    pub attributes: Vec<DefaultNla>,
}

impl HelperCopy {
    /// The copy of a kernel event: an expectation made or removed, or a connection update
    /// that carries a sequence adjustment; `None` for other messages.
    fn from_event(
        subsystem: u8,
        message_type: u8,
        family: u8,
        attributes: &[DefaultNla],
    ) -> Option<Self> {
        let kind = |a: &DefaultNla| a.kind() & NLA_TYPE_MASK;
        let op = match (subsystem, message_type) {
            (SUBSYS_EXPECT, MSG_NEW) => CopyOp::CreateExpectation,
            (SUBSYS_EXPECT, MSG_EXP_DELETE) => CopyOp::RemoveExpectation,
            (SUBSYS_CONNTRACK, MSG_NEW)
                if attributes
                    .iter()
                    .any(|a| matches!(kind(a), CT_SEQ_ADJ_ORIG | CT_SEQ_ADJ_REPLY)) =>
            {
                CopyOp::SeqAdjust
            }
            _ => return None,
        };
        let (kept, _) = op.attributes();
        Some(Self {
            op,
            family,
            attributes: attributes
                .iter()
                .filter(|a| kept.contains(&kind(a)))
                .map(|a| {
                    let mut value = vec![0; a.value_len()];
                    a.emit_value(&mut value);
                    CopyAttribute {
                        kind: a.kind(),
                        value: hex::encode(value),
                    }
                })
                .collect(),
        })
    }

    /// The ctnetlink request that writes this copy, each attribute checked.
    pub fn request(&self) -> Result<CopyRequest, CopyError> {
        let family = match self.family {
            f if f == libc::AF_INET as u8 || f == libc::AF_INET6 as u8 => f,
            f => return Err(CopyError::Family(f)),
        };
        let (allowed, required) = self.op.attributes();
        let mut seen = Vec::new();
        let mut attributes = Vec::new();
        for attribute in &self.attributes {
            let kind = attribute.kind & NLA_TYPE_MASK;
            if !allowed.contains(&kind) {
                return Err(CopyError::Attribute { kind, op: self.op });
            }
            if seen.contains(&kind) {
                return Err(CopyError::Twice(kind));
            }
            seen.push(kind);
            let value = hex::decode(&attribute.value).map_err(|e| CopyError::Value {
                kind,
                why: e.to_string(),
            })?;
            if value.len() > MAX_VALUE {
                return Err(CopyError::Value {
                    kind,
                    why: format!("{} bytes", value.len()),
                });
            }
            attributes.push(DefaultNla::new(attribute.kind, value));
        }
        if let Some(&missing) = required.iter().find(|k| !seen.contains(k)) {
            return Err(CopyError::Missing(missing));
        }
        let (subsystem, message_type) = match self.op {
            CopyOp::CreateExpectation => (SUBSYS_EXPECT, MSG_NEW),
            CopyOp::RemoveExpectation => (SUBSYS_EXPECT, MSG_EXP_DELETE),
            CopyOp::SeqAdjust => (SUBSYS_CONNTRACK, MSG_NEW),
        };
        Ok(CopyRequest {
            subsystem,
            message_type,
            family,
            attributes,
        })
    }
}

/// Helpers' state replicated so far, for `clpstat` and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelperCounts {
    /// Copies sent to the peers.
    pub sent: u64,
    /// Copies from the peers written into this node's kernel.
    pub written: u64,
    /// Copies from the peers the kernel refused.
    pub refused: u64,
}

/// Why a batch of copies did not reach the peer.
#[derive(Debug, thiserror::Error)]
pub enum NotDelivered {
    /// No answer (the peer is down, or its daemon restarts): it gets everything when it
    /// answers again.
    #[error("the peer did not answer: {0}")]
    Unreachable(String),
    /// The peer answered and refused (a version without this, no `[sync]`, a copy it found
    /// malformed): sending it again would be refused again.
    #[error("the peer refused: {0}")]
    Refused(String),
}

/// Sends a batch of copies to the peers (the peer API).
pub type SendCopies = Box<dyn Fn(Vec<HelperCopy>) -> Result<(), NotDelivered> + Send>;

/// A peer's sequence adjustment, kept until this node takes its connection over.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeptAdjustment {
    /// When it arrived, among the kept ones: the oldest goes first when the store is full.
    order: u64,
    /// The kernel's id of this node's copy of the connection when it arrived: a connection
    /// made later under the same tuple has another, and is not given the old adjustment.
    id: Vec<u8>,
    /// The connection's addresses (both directions): a takeover of a group writes the
    /// adjustments of the connections with one of its addresses.
    addresses: Vec<IpAddr>,
    copy: HelperCopy,
}

/// The peers' sequence adjustments by connection (its original tuple's wire form).
#[derive(Debug, Default)]
struct KeptAdjustments {
    next: u64,
    by_connection: HashMap<Vec<u8>, KeptAdjustment>,
}

impl KeptAdjustments {
    /// Keeps (or replaces) the adjustment of `connection`; the oldest is dropped when full.
    fn keep(&mut self, connection: Vec<u8>, id: Vec<u8>, addresses: Vec<IpAddr>, copy: HelperCopy) {
        if self.by_connection.len() >= MAX_SEQ_ADJUSTMENTS
            && !self.by_connection.contains_key(&connection)
            && let Some(oldest) = self
                .by_connection
                .iter()
                .min_by_key(|(_, kept)| kept.order)
                .map(|(key, _)| key.clone())
        {
            self.by_connection.remove(&oldest);
        }
        self.next += 1;
        self.by_connection.insert(
            connection,
            KeptAdjustment {
                order: self.next,
                id,
                addresses,
                copy,
            },
        );
    }

    /// Takes out the adjustments of the connections with one of `addresses` (all with `None`).
    fn take(&mut self, addresses: Option<&[IpAddr]>) -> Vec<KeptAdjustment> {
        let chosen: Vec<Vec<u8>> = self
            .by_connection
            .iter()
            .filter(|(_, kept)| {
                addresses.is_none_or(|wanted| kept.addresses.iter().any(|a| wanted.contains(a)))
            })
            .map(|(key, _)| key.clone())
            .collect();
        chosen
            .into_iter()
            .filter_map(|key| self.by_connection.remove(&key))
            .collect()
    }
}

/// The addresses in a tuple nest (`CTA_TUPLE_*`'s value).
fn tuple_addresses(tuple: &[u8]) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    for part in NlasIterator::new(tuple).filter_map(Result::ok) {
        if part.kind() & NLA_TYPE_MASK != TUPLE_IP {
            continue;
        }
        for address in NlasIterator::new(part.value()).filter_map(Result::ok) {
            let value = address.value();
            match address.kind() & NLA_TYPE_MASK {
                IP_V4_SRC | IP_V4_DST => {
                    if let Ok(octets) = <[u8; 4]>::try_from(value) {
                        addresses.push(IpAddr::from(octets));
                    }
                }
                IP_V6_SRC | IP_V6_DST => {
                    if let Ok(octets) = <[u8; 16]>::try_from(value) {
                        addresses.push(IpAddr::from(octets));
                    }
                }
                _ => {}
            }
        }
    }
    addresses
}

/// The value of the attribute of `kind` (flags aside).
fn value_of(attributes: &[DefaultNla], kind: u16) -> Option<Vec<u8>> {
    attributes
        .iter()
        .find(|a| a.kind() & NLA_TYPE_MASK == kind)
        .map(|a| {
            let mut value = vec![0; a.value_len()];
            a.emit_value(&mut value);
            value
        })
}

/// The replication of this node's helpers' state, and the writing of its peers'.
pub struct HelperSync {
    to_write: Sender<Vec<HelperCopy>>,
    peer_online: Arc<AtomicBool>,
    peer_life: AtomicU64,
    passing: Arc<AtomicBool>,
    send_all: Arc<AtomicBool>,
    kept: Arc<Mutex<KeptAdjustments>>,
    taker: Arc<Mutex<Ctnetlink>>,
    counters: Arc<Counters>,
    snapshot: Shared,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    written: AtomicU64,
    refused: AtomicU64,
}

impl Counters {
    fn publish(&self, snapshot: &Shared) {
        let counts = HelperCounts {
            sent: self.sent.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        };
        monitor::update(snapshot, |s| s.helper_copies = counts);
    }
}

impl HelperSync {
    /// Starts reading this node's expectation events (sent with `send`), and writing the
    /// peers' copies; until `stopping`.
    pub fn start(
        send: SendCopies,
        snapshot: Shared,
        stopping: Arc<AtomicBool>,
    ) -> Result<Self, CtnetlinkError> {
        let events = Ctnetlink::subscribe(
            &[GROUP_EXP_NEW, GROUP_EXP_DESTROY],
            Duration::from_millis(500),
        )?;
        let writer = Ctnetlink::open()?;
        let dumper = Ctnetlink::open()?;
        let taker = Arc::new(Mutex::new(Ctnetlink::open()?));
        let counters = Arc::new(Counters::default());
        let kept = Arc::new(Mutex::new(KeptAdjustments::default()));
        let peer_online = Arc::new(AtomicBool::new(false));
        let passing = Arc::new(AtomicBool::new(false));
        let send_all = Arc::new(AtomicBool::new(true));
        let (to_send, outgoing) = mpsc::sync_channel(MAX_PENDING);
        let (to_write, incoming) = mpsc::channel();
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map(drop)
                .map_err(CtnetlinkError::Socket)
        };
        {
            let (stopping, send_all) = (stopping.clone(), send_all.clone());
            spawn(
                "ct-helper-events",
                Box::new(move || read_events(events, &to_send, &send_all, &stopping)),
            )?;
        }
        {
            let flags = Flags {
                peer_online: peer_online.clone(),
                passing: passing.clone(),
                send_all: send_all.clone(),
                stopping: stopping.clone(),
            };
            let (counters, snapshot) = (counters.clone(), snapshot.clone());
            spawn(
                "ct-helper-send",
                Box::new(move || {
                    send_to_peers(dumper, &outgoing, &send, &flags, &counters, &snapshot)
                }),
            )?;
        }
        {
            let (counters, snapshot, kept) = (counters.clone(), snapshot.clone(), kept.clone());
            spawn(
                "ct-helper-write",
                Box::new(move || {
                    write_copies(writer, &incoming, &kept, &counters, &snapshot, &stopping)
                }),
            )?;
        }
        Ok(Self {
            to_write,
            peer_online,
            peer_life: AtomicU64::new(0),
            passing,
            send_all,
            kept,
            taker,
            counters,
            snapshot,
        })
    }

    /// Copies from a peer: all checked first (one bad copy refuses the request, nothing is
    /// written), then handled in the background. The number accepted.
    pub fn receive(&self, copies: Vec<HelperCopy>) -> Result<usize, CopyError> {
        for copy in &copies {
            copy.request()?;
        }
        let count = copies.len();
        // The writer ends only with the daemon.
        let _ = self.to_write.send(copies);
        Ok(count)
    }

    /// This node takes over a group with `addresses` (`None`: flows of every kind, a flow
    /// share's buckets): the peers' sequence adjustments of those connections go into its
    /// kernel now, before it answers for the addresses (for at most [`TAKEOVER_BUDGET`]; the
    /// rest follow at once in the background). Not as they arrive: writing one is a change of
    /// the connection that conntrackd sends back to the node it came from, where it must not
    /// disturb the connection while that node passes it.
    pub fn take_over(&self, addresses: Option<&[IpAddr]>) {
        let chosen = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(addresses);
        if chosen.is_empty() {
            return;
        }
        let deadline = std::time::Instant::now() + TAKEOVER_BUDGET;
        let mut rest = chosen.into_iter();
        {
            let mut taker = self.taker.lock().unwrap_or_else(|e| e.into_inner());
            for kept in rest.by_ref() {
                write_kept(&mut taker, &kept, &self.counters);
                if std::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
        let rest: Vec<KeptAdjustment> = rest.collect();
        if !rest.is_empty() {
            let (taker, counters, snapshot) = (
                self.taker.clone(),
                self.counters.clone(),
                self.snapshot.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("ct-helper-takeover".into())
                .spawn(move || {
                    let mut taker = taker.lock().unwrap_or_else(|e| e.into_inner());
                    for kept in &rest {
                        write_kept(&mut taker, kept, &counters);
                    }
                    counters.publish(&snapshot);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "the rest of the peers' sequence adjustments not written");
            }
        }
        self.counters.publish(&self.snapshot);
    }

    /// Whether the peer runs, and its daemon's life (incarnation), from the heartbeats: while
    /// it does not run nothing is sent; when it comes back, or its daemon restarted (what it
    /// kept in memory is gone), it gets all of this node's helpers' state.
    pub fn set_peer(&self, online: bool, incarnation: u64) {
        let came_back = online && !self.peer_online.swap(online, Ordering::SeqCst);
        let new_life = self.peer_life.swap(incarnation, Ordering::SeqCst) != incarnation;
        if online && (came_back || new_life) {
            self.send_all.store(true, Ordering::SeqCst);
        }
    }

    /// Whether this node passes traffic (answers for a group, or shares flows): only then are
    /// its helpers' events sent.
    pub fn set_passing(&self, passing: bool) {
        self.passing.store(passing, Ordering::SeqCst);
    }
}

/// Writes one kept adjustment if this node's copy of its connection is still the one it was
/// sent for.
fn write_kept(taker: &mut Ctnetlink, kept: &KeptAdjustment, counters: &Counters) {
    match local_id(taker, &kept.copy) {
        Ok(Some(id)) if id == kept.id => match write(taker, &kept.copy) {
            // A connection that closed meanwhile.
            Ok(()) | Err(CtnetlinkError::Refused(libc::ENOENT)) => {
                counters.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "a peer's sequence adjustment not written");
            }
        },
        // Closed, or another connection under the same tuple since.
        Ok(_) => {}
        Err(e) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "a connection of a peer's sequence adjustment not read");
        }
    }
}

/// The kernel's id of this node's copy of the connection a sequence adjustment is for.
fn local_id(
    ctnetlink: &mut Ctnetlink,
    copy: &HelperCopy,
) -> Result<Option<Vec<u8>>, CtnetlinkError> {
    let request = copy
        .request()
        .map_err(|e| CtnetlinkError::Decode(e.to_string()))?;
    let name: Vec<DefaultNla> = request
        .attributes
        .into_iter()
        .filter(|a| matches!(a.kind() & NLA_TYPE_MASK, CT_TUPLE_ORIG | CT_ZONE))
        .collect();
    let connection = ctnetlink.get(
        request.family,
        NetfilterMessageInner::Other {
            subsys: NetfilterSubsystem::Other(SUBSYS_CONNTRACK),
            message_type: MSG_GET,
            attributes: name,
        },
    )?;
    Ok(connection.and_then(|message| match message.inner {
        NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) => {
            attributes.iter().find_map(|a| match a {
                ConntrackAttribute::Other(nla) if nla.kind() & NLA_TYPE_MASK == CT_ID => {
                    value_of(std::slice::from_ref(nla), CT_ID)
                }
                _ => None,
            })
        }
        _ => None,
    }))
}

struct Flags {
    peer_online: Arc<AtomicBool>,
    passing: Arc<AtomicBool>,
    send_all: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

/// This node's expectation events, as copies for the peers: only those caused by packets and
/// timers (origin port 0). Those caused by a request (conntrackd writing a peer's copy of the
/// master connection, this daemon writing a peer's expectation) are echoes of the peers' own
/// state, and sent back they would undo it.
fn read_events(
    mut events: Ctnetlink,
    to_send: &SyncSender<HelperCopy>,
    send_all: &AtomicBool,
    stopping: &AtomicBool,
) {
    let mut warned = false;
    while !stopping.load(Ordering::SeqCst) {
        let read = events.events(|message| {
            if message.header.port_number != 0 {
                return true;
            }
            if let netlink_packet_core::NetlinkPayload::InnerMessage(inner) = message.payload
                && let Some(copy) = copy_of(inner)
                && to_send.try_send(copy).is_err()
            {
                // Too many waiting: the peer gets everything instead.
                send_all.store(true, Ordering::SeqCst);
            }
            true
        });
        if let Err(e) = read {
            // Events were lost (the socket's buffer overflowed): the peers get everything.
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(error = %e, "helper events lost; all is sent to the peers again");
            }
            send_all.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Sends the events' copies to the peers in batches; all of this node's helpers' state when a
/// peer came back or events were lost.
fn send_to_peers(
    mut dumper: Ctnetlink,
    outgoing: &Receiver<HelperCopy>,
    send: &SendCopies,
    flags: &Flags,
    counters: &Counters,
    snapshot: &Shared,
) {
    let mut warned = false;
    let mut backoff = Duration::from_secs(1);
    while !flags.stopping.load(Ordering::SeqCst) {
        let mut batch = match outgoing.recv_timeout(Duration::from_millis(200)) {
            Ok(copy) => vec![copy],
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        while batch.len() < MAX_PENDING
            && let Ok(copy) = outgoing.try_recv()
        {
            batch.push(copy);
        }
        if !flags.passing.load(Ordering::SeqCst) {
            continue;
        }
        if !flags.peer_online.load(Ordering::SeqCst) {
            // A peer that is away gets everything when it returns.
            continue;
        }
        // A NAT helper that made an expectation has (a moment later, in the same packet)
        // rewritten the packet that asked for it: its connection's sequence adjustment, which
        // the kernel reports in no event, goes with the expectation.
        let masters: Vec<(u8, Vec<DefaultNla>)> = batch
            .iter()
            .filter(|copy| copy.op == CopyOp::CreateExpectation)
            .filter_map(|copy| {
                let request = copy.request().ok()?;
                let mut name = vec![DefaultNla::new(
                    CT_TUPLE_ORIG | NLA_F_NESTED,
                    value_of(&request.attributes, MASTER)?,
                )];
                if let Some(zone) = value_of(&request.attributes, ZONE) {
                    name.push(DefaultNla::new(CT_ZONE, zone));
                }
                Some((request.family, name))
            })
            .collect();
        if !masters.is_empty() {
            std::thread::sleep(SEQ_ADJUST_SETTLE);
            for (family, name) in masters {
                if let Some(copy) = seq_adjust_of(&mut dumper, family, name) {
                    batch.push(copy);
                }
            }
        }
        if flags.send_all.swap(false, Ordering::SeqCst) {
            match all_helper_state(&mut dumper) {
                // The whole state is as new as anything in the batch; the batch's copies
                // follow and change nothing.
                Ok(all) => batch.splice(0..0, all).for_each(drop),
                Err(e) => {
                    tracing::warn!(error = %e, "this node's helpers' state cannot be read");
                    flags.send_all.store(true, Ordering::SeqCst);
                }
            }
        }
        for chunk in chunks(batch) {
            let count = chunk.len() as u64;
            match send(chunk) {
                Ok(()) => {
                    warned = false;
                    backoff = Duration::from_secs(1);
                    counters.sent.fetch_add(count, Ordering::Relaxed);
                    counters.publish(snapshot);
                }
                Err(e @ NotDelivered::Refused(_)) => {
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(error = %e, "helpers' state not taken by the peer");
                    }
                }
                Err(e @ NotDelivered::Unreachable(_)) => {
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(
                            error = %e,
                            "helpers' state not sent to the peer; all is sent when it answers"
                        );
                    }
                    flags.send_all.store(true, Ordering::SeqCst);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    break;
                }
            }
        }
    }
}

/// `copies` in requests of at most [`BATCH_BYTES`] of JSON each.
fn chunks(copies: Vec<HelperCopy>) -> Vec<Vec<HelperCopy>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for copy in copies {
        let size = serde_json::to_vec(&copy).map_or(BATCH_BYTES, |json| json.len());
        if !chunk.is_empty() && bytes + size > BATCH_BYTES {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += size;
        chunk.push(copy);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// How long after an expectation event its master connection's sequence adjustment is read:
/// the helper sets it right after making the expectation, in the same packet.
const SEQ_ADJUST_SETTLE: Duration = Duration::from_millis(10);

/// The sequence adjustment of the connection `name` (an expectation's master tuple and zone),
/// if it has one.
fn seq_adjust_of(dumper: &mut Ctnetlink, family: u8, name: Vec<DefaultNla>) -> Option<HelperCopy> {
    match dumper.get(
        family,
        NetfilterMessageInner::Other {
            subsys: NetfilterSubsystem::Other(SUBSYS_CONNTRACK),
            message_type: MSG_GET,
            attributes: name,
        },
    ) {
        Ok(connection) => connection.and_then(copy_of),
        Err(e) => {
            tracing::debug!(error = %e, "an expectation's master connection not read");
            None
        }
    }
}

/// A copy of a message from the kernel (an event or a dumped object), if it is one to send.
fn copy_of(message: NetfilterMessage) -> Option<HelperCopy> {
    let family = u8::from(message.header.family);
    match message.inner {
        NetfilterMessageInner::Other {
            subsys,
            message_type,
            attributes,
        } => HelperCopy::from_event(u8::from(subsys), message_type, family, &attributes),
        // Connection messages are parsed by the crate; their attributes are taken back to
        // their wire form.
        NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) => {
            let raw: Vec<DefaultNla> = attributes
                .iter()
                .map(|a| {
                    let mut value = vec![0; a.value_len()];
                    a.emit_value(&mut value);
                    let nested = if a.is_nested() { NLA_F_NESTED } else { 0 };
                    DefaultNla::new(a.kind() | nested, value)
                })
                .collect();
            HelperCopy::from_event(SUBSYS_CONNTRACK, MSG_NEW, family, &raw)
        }
        _ => None,
    }
}

/// All of this node's helpers' state: every expectation, and every sequence adjustment.
fn all_helper_state(dumper: &mut Ctnetlink) -> Result<Vec<HelperCopy>, CtnetlinkError> {
    let expectations = dumper.dump(NetfilterMessageInner::Other {
        subsys: NetfilterSubsystem::Other(SUBSYS_EXPECT),
        message_type: MSG_GET,
        attributes: Vec::new(),
    })?;
    let connections = dumper.dump(NetfilterMessageInner::Conntrack(ConntrackMessage::Get(
        Vec::new(),
    )))?;
    Ok(connections
        .into_iter()
        .chain(expectations)
        .filter_map(copy_of)
        .collect())
}

/// Handles the peers' copies: expectations are written into this node's kernel; sequence
/// adjustments are kept for a takeover, with the id of this node's copy of their connection.
fn write_copies(
    mut writer: Ctnetlink,
    incoming: &Receiver<Vec<HelperCopy>>,
    kept: &Mutex<KeptAdjustments>,
    counters: &Counters,
    snapshot: &Shared,
    stopping: &AtomicBool,
) {
    let mut warned = false;
    while !stopping.load(Ordering::SeqCst) {
        let copies = match incoming.recv_timeout(Duration::from_millis(500)) {
            Ok(copies) => copies,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for copy in copies {
            let result = match copy.op {
                CopyOp::SeqAdjust => keep(&mut writer, kept, copy.clone()),
                _ => write(&mut writer, &copy),
            };
            match result {
                Ok(()) => {
                    counters.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(error = %e, ?copy.op, "a peer's helper state not written");
                    }
                }
            }
        }
        counters.publish(snapshot);
    }
}

/// Keeps a peer's sequence adjustment for a takeover, with the id of this node's copy of its
/// connection (conntrackd may write that copy a moment after the adjustment arrives).
fn keep(
    writer: &mut Ctnetlink,
    kept: &Mutex<KeptAdjustments>,
    copy: HelperCopy,
) -> Result<(), CtnetlinkError> {
    let request = copy
        .request()
        .map_err(|e| CtnetlinkError::Decode(e.to_string()))?;
    let mut addresses = Vec::new();
    for kind in [CT_TUPLE_ORIG, CT_TUPLE_REPLY] {
        if let Some(tuple) = value_of(&request.attributes, kind) {
            addresses.extend(tuple_addresses(&tuple));
        }
    }
    let connection = value_of(&request.attributes, CT_TUPLE_ORIG).unwrap_or_default();
    for _ in 0..10 {
        if let Some(id) = local_id(writer, &copy)? {
            kept.lock()
                .unwrap_or_else(|e| e.into_inner())
                .keep(connection, id, addresses, copy);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CtnetlinkError::Refused(libc::ENOENT))
}

/// One copy into the kernel. A copy to create an expectation replaces one of the same tuple;
/// one whose master connection is not here yet (conntrackd replicates it on its own) is tried
/// again for half a second.
fn write(writer: &mut Ctnetlink, copy: &HelperCopy) -> Result<(), CtnetlinkError> {
    let request = copy
        .request()
        .map_err(|e| CtnetlinkError::Decode(e.to_string()))?;
    let message = |message_type, attributes| NetfilterMessageInner::Other {
        subsys: NetfilterSubsystem::Other(request.subsystem),
        message_type,
        attributes,
    };
    let family = request.family;
    match copy.op {
        CopyOp::SeqAdjust => writer.request(
            family,
            0,
            message(request.message_type, request.attributes.clone()),
        ),
        CopyOp::RemoveExpectation => {
            match writer.request(
                family,
                0,
                message(request.message_type, request.attributes.clone()),
            ) {
                Err(CtnetlinkError::Refused(libc::ENOENT)) => Ok(()),
                other => other,
            }
        }
        CopyOp::CreateExpectation => {
            let name: Vec<DefaultNla> = request
                .attributes
                .iter()
                .filter(|a| REMOVE_ATTRIBUTES.contains(&(a.kind() & NLA_TYPE_MASK)))
                .cloned()
                .collect();
            let mut tries = 0;
            loop {
                match writer.request(
                    family,
                    NLM_F_CREATE | NLM_F_EXCL,
                    message(MSG_NEW, request.attributes.clone()),
                ) {
                    Err(CtnetlinkError::Refused(libc::EEXIST)) if tries == 0 => {
                        let _ = writer.request(family, 0, message(MSG_EXP_DELETE, name.clone()));
                    }
                    Err(CtnetlinkError::Refused(libc::ENOENT)) if tries < 10 => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    other => return other,
                }
                tries += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> DefaultNla {
        DefaultNla::new(kind, value.to_vec())
    }

    fn event() -> Vec<DefaultNla> {
        vec![
            nla(TUPLE | 0x8000, &[1, 2]),
            nla(MASK | 0x8000, &[3]),
            nla(MASTER | 0x8000, &[4]),
            nla(TIMEOUT, &[0, 0, 1, 44]),
            nla(5, &[9, 9, 9, 9]),
            nla(NAT | 0x8000, &[5, 6]),
            nla(FN, b"nat-follow-master\0"),
        ]
    }

    #[test]
    fn an_event_becomes_a_copy_with_its_nat_and_without_the_kernels_id() {
        let copy = HelperCopy::from_event(SUBSYS_EXPECT, MSG_NEW, 2, &event()).unwrap();
        assert_eq!(copy.op, CopyOp::CreateExpectation);
        let kinds: Vec<u16> = copy.attributes.iter().map(|a| a.kind & 0x3fff).collect();
        assert_eq!(kinds, vec![TUPLE, MASK, MASTER, TIMEOUT, NAT, FN]);
        let request = copy.request().unwrap();
        assert_eq!(
            (request.subsystem, request.message_type, request.family),
            (SUBSYS_EXPECT, MSG_NEW, 2)
        );
        // The nested flag travels with the attribute.
        assert_eq!(request.attributes[0].kind(), TUPLE | 0x8000);
        let removed = HelperCopy::from_event(SUBSYS_EXPECT, MSG_EXP_DELETE, 2, &event()).unwrap();
        assert_eq!(removed.op, CopyOp::RemoveExpectation);
        assert_eq!(removed.attributes.len(), 1);
        assert!(HelperCopy::from_event(SUBSYS_EXPECT, 7, 2, &event()).is_none());
    }

    #[test]
    fn only_a_connection_update_with_a_sequence_adjustment_is_copied() {
        let update = vec![
            nla(CT_TUPLE_ORIG | 0x8000, &[1]),
            nla(3, &[0, 0, 0x21, 0xde]),
            nla(7, &[0, 0, 1, 0]),
            nla(CT_SEQ_ADJ_ORIG | 0x8000, &[2, 3]),
        ];
        let copy = HelperCopy::from_event(SUBSYS_CONNTRACK, MSG_NEW, 2, &update).unwrap();
        assert_eq!(copy.op, CopyOp::SeqAdjust);
        let kinds: Vec<u16> = copy.attributes.iter().map(|a| a.kind & 0x3fff).collect();
        assert_eq!(kinds, vec![CT_TUPLE_ORIG, CT_SEQ_ADJ_ORIG]);
        let request = copy.request().unwrap();
        assert_eq!(
            (request.subsystem, request.message_type),
            (SUBSYS_CONNTRACK, MSG_NEW)
        );
        assert!(HelperCopy::from_event(SUBSYS_CONNTRACK, MSG_NEW, 2, &update[..3]).is_none());
    }

    #[test]
    fn a_copy_from_the_network_is_checked_attribute_by_attribute() {
        let good = HelperCopy::from_event(SUBSYS_EXPECT, MSG_NEW, 2, &event()).unwrap();
        let with = |change: &dyn Fn(&mut HelperCopy)| {
            let mut copy = good.clone();
            change(&mut copy);
            copy.request().map(drop)
        };
        assert_eq!(with(&|c| c.family = 7), Err(CopyError::Family(7)));
        assert_eq!(
            with(&|c| c.attributes.push(CopyAttribute {
                kind: 5,
                value: "01".into()
            })),
            Err(CopyError::Attribute {
                kind: 5,
                op: CopyOp::CreateExpectation
            })
        );
        assert_eq!(
            with(&|c| c.attributes.push(c.attributes[0].clone())),
            Err(CopyError::Twice(TUPLE))
        );
        assert!(matches!(
            with(&|c| c.attributes[3].value = "zz".into()),
            Err(CopyError::Value { kind: TIMEOUT, .. })
        ));
        assert!(matches!(
            with(&|c| c.attributes[3].value = "00".repeat(MAX_VALUE + 1)),
            Err(CopyError::Value { kind: TIMEOUT, .. })
        ));
        assert_eq!(
            with(&|c| {
                c.attributes.remove(2);
            }),
            Err(CopyError::Missing(MASTER))
        );
        // A copy to remove carries only what names the expectation.
        assert_eq!(
            with(&|c| c.op = CopyOp::RemoveExpectation),
            Err(CopyError::Attribute {
                kind: MASK,
                op: CopyOp::RemoveExpectation
            })
        );
        // A sequence adjustment names a connection, not an expectation (whose TUPLE has the
        // number of a connection's reply tuple).
        assert_eq!(
            with(&|c| c.op = CopyOp::SeqAdjust),
            Err(CopyError::Attribute {
                kind: MASK,
                op: CopyOp::SeqAdjust
            })
        );
    }

    fn ipv4_tuple(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        // CTA_TUPLE_IP { CTA_IP_V4_SRC, CTA_IP_V4_DST }, CTA_TUPLE_PROTO { .. }
        let mut ip = Vec::new();
        for (kind, address) in [(IP_V4_SRC, src), (IP_V4_DST, dst)] {
            ip.extend_from_slice(&8u16.to_ne_bytes());
            ip.extend_from_slice(&kind.to_ne_bytes());
            ip.extend_from_slice(&address);
        }
        let mut tuple = Vec::new();
        tuple.extend_from_slice(&(4 + ip.len() as u16).to_ne_bytes());
        tuple.extend_from_slice(&(TUPLE_IP | NLA_F_NESTED).to_ne_bytes());
        tuple.extend_from_slice(&ip);
        // A protocol nest the address reader skips.
        tuple.extend_from_slice(&[8, 0, 2, 0x80, 5, 0, 1, 0]);
        tuple
    }

    #[test]
    fn a_tuples_addresses_are_read_and_a_bad_nest_reads_as_none() {
        let tuple = ipv4_tuple([203, 0, 113, 101], [192, 0, 2, 100]);
        assert_eq!(
            tuple_addresses(&tuple),
            vec![
                IpAddr::from([203, 0, 113, 101]),
                IpAddr::from([192, 0, 2, 100])
            ]
        );
        assert!(tuple_addresses(&tuple[..3]).is_empty());
        assert!(tuple_addresses(&[0xff; 9]).is_empty());
    }

    fn adjustment(n: u8) -> HelperCopy {
        HelperCopy {
            op: CopyOp::SeqAdjust,
            family: 2,
            attributes: vec![CopyAttribute {
                kind: CT_TUPLE_ORIG,
                value: hex::encode([n]),
            }],
        }
    }

    #[test]
    fn kept_adjustments_are_taken_by_a_groups_addresses_and_the_oldest_dropped_when_full() {
        let mut kept = KeptAdjustments::default();
        let group0 = IpAddr::from([192, 0, 2, 10]);
        let group1 = IpAddr::from([192, 0, 2, 11]);
        kept.keep(vec![1], vec![9], vec![group0], adjustment(1));
        kept.keep(vec![2], vec![9], vec![group1], adjustment(2));
        // A newer adjustment of the same connection replaces the older.
        kept.keep(vec![1], vec![8], vec![group0], adjustment(3));
        let taken = kept.take(Some(&[group0]));
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (taken[0].id.clone(), taken[0].copy.clone()),
            (vec![8], adjustment(3))
        );
        assert_eq!(kept.take(None).len(), 1);
        assert!(kept.take(None).is_empty());

        for n in 0..MAX_SEQ_ADJUSTMENTS as u32 + 1 {
            kept.keep(n.to_be_bytes().to_vec(), vec![], vec![], adjustment(0));
        }
        assert_eq!(kept.by_connection.len(), MAX_SEQ_ADJUSTMENTS);
        assert!(
            !kept
                .by_connection
                .contains_key(0u32.to_be_bytes().as_slice())
        );
        assert!(
            kept.by_connection
                .contains_key(1u32.to_be_bytes().as_slice())
        );
    }

    #[test]
    fn copies_go_in_requests_well_below_the_peer_apis_limit() {
        let big = HelperCopy {
            op: CopyOp::CreateExpectation,
            family: 10,
            attributes: (0..10)
                .map(|kind| CopyAttribute {
                    kind,
                    value: "ab".repeat(MAX_VALUE),
                })
                .collect(),
        };
        let chunks = chunks(vec![big; 40]);
        assert!(chunks.len() > 1);
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 40);
        for chunk in &chunks {
            let json = serde_json::to_vec(chunk).unwrap();
            // The peer API takes requests of up to 64 KiB: room is left for the envelope
            // (node name, tag).
            assert!(json.len() < 60 * 1024, "{}", json.len());
        }
        assert!(super::chunks(Vec::new()).is_empty());
    }
}
