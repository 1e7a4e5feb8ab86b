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
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    time::Duration,
};

use netlink_packet_core::{DefaultNla, NLA_F_NESTED, NLM_F_CREATE, NLM_F_EXCL, Nla as _};
use netlink_packet_netfilter::{
    NetfilterMessage, NetfilterMessageInner, NetfilterSubsystem, conntrack::ConntrackMessage,
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
const GROUP_CONNTRACK_UPDATE: u32 = 2;
const GROUP_EXP_NEW: u32 = 4;
const GROUP_EXP_DESTROY: u32 = 6;

/// Connection attributes (`CTA_*`) a sequence adjustment is written with.
const CT_TUPLE_ORIG: u16 = 1;
const CT_SEQ_ADJ_ORIG: u16 = 15;
const CT_SEQ_ADJ_REPLY: u16 = 16;
const CT_ZONE: u16 = 18;
const SEQ_ADJUST_ATTRIBUTES: [u16; 4] = [CT_TUPLE_ORIG, CT_SEQ_ADJ_ORIG, CT_SEQ_ADJ_REPLY, CT_ZONE];

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
/// Copies per request to a peer.
const BATCH: usize = 64;
/// Sequence adjustments kept for a takeover: one per NAT'd control connection (FTP, SIP).
const MAX_SEQ_ADJUSTMENTS: usize = 65536;

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
#[error("the peer did not take the expectations: {why}")]
pub struct NotDelivered {
    pub why: String,
}

/// Sends a batch of copies to the peers (the peer API).
pub type SendCopies = Box<dyn Fn(Vec<HelperCopy>) -> Result<(), NotDelivered> + Send>;

/// The replication of this node's helpers' state, and the writing of its peers'.
pub struct HelperSync {
    to_write: Sender<Vec<HelperCopy>>,
    peer_online: Arc<AtomicBool>,
    passing: Arc<AtomicBool>,
    send_all: Arc<AtomicBool>,
    /// The peers' sequence adjustments, by connection, written when this node takes over
    /// (see [`HelperSync::take_over`]).
    seq_adjustments: Mutex<HashMap<String, HelperCopy>>,
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
    /// Starts reading this node's expectation events and connection updates (sent with
    /// `send`), and writing the peers' copies; until `stopping`.
    pub fn start(
        send: SendCopies,
        snapshot: Shared,
        stopping: Arc<AtomicBool>,
    ) -> Result<Self, CtnetlinkError> {
        let events = Ctnetlink::subscribe(
            &[GROUP_CONNTRACK_UPDATE, GROUP_EXP_NEW, GROUP_EXP_DESTROY],
            Duration::from_millis(500),
        )?;
        let writer = Ctnetlink::open()?;
        let dumper = Ctnetlink::open()?;
        // Events caused by writing the peers' copies are not sent back.
        let writer_port = Arc::new(AtomicU32::new(writer.port()));
        let counters = Arc::new(Counters::default());
        let peer_online = Arc::new(AtomicBool::new(false));
        let passing = Arc::new(AtomicBool::new(false));
        let send_all = Arc::new(AtomicBool::new(true));
        let (to_send, outgoing) = mpsc::channel();
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
            let writer_port = writer_port.clone();
            spawn(
                "ct-expect-events",
                Box::new(move || read_events(events, &writer_port, &to_send, &send_all, &stopping)),
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
                "ct-expect-send",
                Box::new(move || {
                    send_to_peers(dumper, &outgoing, &send, &flags, &counters, &snapshot)
                }),
            )?;
        }
        {
            let (counters, snapshot) = (counters.clone(), snapshot.clone());
            spawn(
                "ct-expect-write",
                Box::new(move || write_copies(writer, &incoming, &counters, &snapshot, &stopping)),
            )?;
        }
        Ok(Self {
            to_write,
            peer_online,
            passing,
            send_all,
            seq_adjustments: Mutex::new(HashMap::new()),
            counters,
            snapshot,
        })
    }

    /// Copies from a peer: all checked first (one bad copy refuses the request, nothing is
    /// written), then written in the background. The number accepted.
    pub fn receive(&self, copies: Vec<HelperCopy>) -> Result<usize, CopyError> {
        for copy in &copies {
            copy.request()?;
        }
        let count = copies.len();
        let (seq_adjustments, expectations): (Vec<HelperCopy>, Vec<HelperCopy>) = copies
            .into_iter()
            .partition(|copy| copy.op == CopyOp::SeqAdjust);
        if !seq_adjustments.is_empty() {
            let mut kept = self
                .seq_adjustments
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for copy in seq_adjustments {
                let connection = copy
                    .attributes
                    .iter()
                    .find(|a| a.kind & NLA_TYPE_MASK == CT_TUPLE_ORIG)
                    .map(|a| a.value.clone())
                    .unwrap_or_default();
                if kept.len() >= MAX_SEQ_ADJUSTMENTS && !kept.contains_key(&connection) {
                    // Closed connections are never told apart from live ones here: the
                    // oldest knowledge is dropped.
                    if let Some(any) = kept.keys().next().cloned() {
                        kept.remove(&any);
                    }
                }
                kept.insert(connection, copy);
            }
        }
        // The writer ends only with the daemon.
        let _ = self.to_write.send(expectations);
        Ok(count)
    }

    /// This node takes a group or flows over: the peers' sequence adjustments go into its
    /// kernel now, before it answers for the addresses. Written at the takeover, not as they
    /// arrive: writing one is a change of the connection that conntrackd would send back to
    /// the node the adjustment came from, and its copy written there makes the kernel drop
    /// that connection's expectations.
    pub fn take_over(&self) {
        let kept: Vec<HelperCopy> = self
            .seq_adjustments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, copy)| copy)
            .collect();
        if kept.is_empty() {
            return;
        }
        let mut writer = match Ctnetlink::open() {
            Ok(writer) => writer,
            Err(e) => {
                tracing::warn!(error = %e, "the peers' sequence adjustments not written");
                return;
            }
        };
        for copy in &kept {
            match write(&mut writer, copy) {
                // A connection that closed meanwhile.
                Ok(()) | Err(CtnetlinkError::Refused(libc::ENOENT)) => {
                    self.counters.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "a peer's sequence adjustment not written");
                }
            }
        }
        self.counters.publish(&self.snapshot);
    }

    /// Whether this node passes traffic (answers for a group, or shares flows): only then are
    /// its helpers' events sent. A node that passes nothing has no helper at work; its events
    /// are echoes of what it was sent, and sending them back would undo the peer's state.
    pub fn set_passing(&self, passing: bool) {
        self.passing.store(passing, Ordering::SeqCst);
    }

    /// Whether the peer runs (from the heartbeats): while it does not, nothing is sent; when
    /// it comes back it gets all of this node's helpers' state.
    pub fn set_peer_online(&self, online: bool) {
        if online && !self.peer_online.swap(true, Ordering::SeqCst) {
            self.send_all.store(true, Ordering::SeqCst);
        } else if !online {
            self.peer_online.store(false, Ordering::SeqCst);
        }
    }
}

struct Flags {
    peer_online: Arc<AtomicBool>,
    passing: Arc<AtomicBool>,
    send_all: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

/// This node's expectation events and sequence adjustments, as copies for the peers.
fn read_events(
    mut events: Ctnetlink,
    writer_port: &AtomicU32,
    to_send: &Sender<HelperCopy>,
    send_all: &AtomicBool,
    stopping: &AtomicBool,
) {
    while !stopping.load(Ordering::SeqCst) {
        let read = events.events(|message| {
            if message.header.port_number == writer_port.load(Ordering::Relaxed) {
                return true;
            }
            if let netlink_packet_core::NetlinkPayload::InnerMessage(inner) = message.payload
                && let Some(copy) = copy_of(inner)
            {
                let _ = to_send.send(copy);
            }
            true
        });
        if let Err(e) = read {
            // Events were lost (the socket's buffer overflowed): the peers get everything.
            tracing::warn!(error = %e, "helper events lost; all is sent to the peers again");
            send_all.store(true, Ordering::SeqCst);
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
    let mut failing = false;
    while !flags.stopping.load(Ordering::SeqCst) {
        let mut batch = match outgoing.recv_timeout(Duration::from_millis(200)) {
            Ok(copy) => vec![copy],
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        while batch.len() < BATCH
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
        let masters: Vec<(u8, DefaultNla)> = batch
            .iter()
            .filter(|copy| copy.op == CopyOp::CreateExpectation)
            .filter_map(|copy| {
                let request = copy.request().ok()?;
                let master = request
                    .attributes
                    .into_iter()
                    .find(|a| a.kind() & NLA_TYPE_MASK == MASTER)?;
                Some((request.family, master))
            })
            .collect();
        if !masters.is_empty() {
            std::thread::sleep(SEQ_ADJUST_SETTLE);
            for (family, master) in masters {
                if let Some(copy) = seq_adjust_of(&mut dumper, family, master) {
                    batch.push(copy);
                }
            }
        }
        if flags.send_all.swap(false, Ordering::SeqCst) {
            match all_helper_state(&mut dumper) {
                // Sent before what happened since (in the batch), which is newer.
                Ok(all) => batch.splice(0..0, all).for_each(drop),
                Err(e) => {
                    tracing::warn!(error = %e, "this node's helpers' state cannot be read");
                    flags.send_all.store(true, Ordering::SeqCst);
                }
            }
        }
        for chunk in batch.chunks(BATCH) {
            match send(chunk.to_vec()) {
                Ok(()) => {
                    failing = false;
                    counters
                        .sent
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    counters.publish(snapshot);
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            error = %e,
                            "helpers' state not sent to the peer; all is sent when it answers"
                        );
                    }
                    flags.send_all.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
            }
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

/// How long after an expectation event its master connection's sequence adjustment is read:
/// the helper sets it right after making the expectation, in the same packet.
const SEQ_ADJUST_SETTLE: Duration = Duration::from_millis(10);

/// The sequence adjustment of the connection whose original tuple is `master` (an
/// expectation's `CTA_EXPECT_MASTER`), if it has one.
fn seq_adjust_of(dumper: &mut Ctnetlink, family: u8, master: DefaultNla) -> Option<HelperCopy> {
    let mut value = vec![0; master.value_len()];
    master.emit_value(&mut value);
    let tuple = DefaultNla::new(CT_TUPLE_ORIG | NLA_F_NESTED, value);
    match dumper.get(
        family,
        NetfilterMessageInner::Other {
            subsys: NetfilterSubsystem::Other(SUBSYS_CONNTRACK),
            message_type: MSG_GET,
            attributes: vec![tuple],
        },
    ) {
        Ok(connection) => connection.and_then(copy_of),
        Err(e) => {
            tracing::debug!(error = %e, "an expectation's master connection not read");
            None
        }
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

/// Writes the peers' copies into this node's kernel.
fn write_copies(
    mut writer: Ctnetlink,
    incoming: &Receiver<Vec<HelperCopy>>,
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
            match write(&mut writer, &copy) {
                Ok(()) => {
                    counters.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(error = %e, ?copy.op, "a peer's expectation not written");
                    }
                }
            }
        }
        counters.publish(snapshot);
    }
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
        // A sequence adjustment names a connection, not an expectation.
        assert_eq!(
            with(&|c| c.op = CopyOp::SeqAdjust),
            Err(CopyError::Attribute {
                kind: TUPLE,
                op: CopyOp::SeqAdjust
            })
        );
    }
}
