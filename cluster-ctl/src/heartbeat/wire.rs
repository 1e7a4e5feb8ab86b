//! The heartbeat wire format (R-HB-1, R-HB-3), version 3.
//!
//! ```text
//! offset size  field
//!  0      4    magic "FWHB"
//!  4      1    version (1)
//!  5      1    kind: 1 heartbeat, 2 leaving
//!  6      2    body length N (big endian)
//!  8      4    sender: index of the server in the configuration
//! 12      8    incarnation: the sender's boot id (wall-clock ns at start)
//! 20      8    sequence number, per incarnation, over all links
//! 28     16    configuration digest (first 16 bytes of SHA-256 of the normalized config)
//! 44      1    interconnect index the packet was sent on
//! 45      3    reserved, zero
//! 48      N    body: the sender's report (see `encode_report`)
//! 48+N   16    tag: HMAC-SHA256(cluster key, bytes 0..48+N), first 16 bytes
//! ```
//! The tag sits at the end and covers everything before it, so [`decode`] authenticates a
//! packet before it parses a single field: unauthenticated bytes are never interpreted.
//!
//! Releases change the report, not its beginning: the header and the body's first bytes
//! (send time and echo since version 2, the restart hold asked for and granted since version
//! 3) keep their layout in every later version. A packet of another version (2 or later)
//! is read that far ([`Packet::version`] says which): its sender is alive, its echo and hold
//! bound the leases as usual, and the receiver treats it as a node with another
//! configuration (nothing is taken over while both are heard) until both run one release —
//! a rolling upgrade never looks like a dead peer. Versions before 2 are refused.

use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use cluster_engine::{Claim, GroupReport, GroupState, Handoff, HeldGroup, Instant, Report};

pub const MAGIC: &[u8; 4] = b"FWHB";
/// Version 2 added the send time and the echo that bound the holder's lease (R-SPLIT-1);
/// version 3 the restart hold asked for and granted (`clpcfg restart`).
pub const VERSION: u8 = 3;
pub const HEADER_LEN: usize = 48;
pub const TAG_LEN: usize = 16;
/// The largest UDP payload.
pub const MAX_PACKET: usize = 65_507;
const GROUP_LEN: usize = 43;
const HELD_LEN: usize = 12;

/// What a packet says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Heartbeat = 1,
    Leaving = 2,
}

/// A decoded, authenticated packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The wire version it was written in; only the lasting beginning of a report of another
    /// version is read (its groups and the rest are left empty).
    pub version: u8,
    pub kind: Kind,
    pub sender: u32,
    pub incarnation: u64,
    pub sequence: u64,
    pub digest: [u8; 16],
    pub link: u8,
    pub report: Report,
}

/// Why a packet was refused; each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reject {
    TooShort,
    TooLong,
    BadTag,
    BadMagic,
    UnsupportedVersion(u8),
    BadKind,
    BadLength,
    BadBody,
    UnknownSender,
    Replay,
    OldIncarnation,
}

impl Reject {
    /// Stable label for counters and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::TooLong => "too_long",
            Self::BadTag => "bad_tag",
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::BadKind => "bad_kind",
            Self::BadLength => "bad_length",
            Self::BadBody => "bad_body",
            Self::UnknownSender => "unknown_sender",
            Self::Replay => "replay",
            Self::OldIncarnation => "old_incarnation",
        }
    }

    /// Every label, for exporting zero counters.
    pub const LABELS: [&'static str; 11] = [
        "too_short",
        "too_long",
        "bad_tag",
        "bad_magic",
        "unsupported_version",
        "bad_kind",
        "bad_length",
        "bad_body",
        "unknown_sender",
        "replay",
        "old_incarnation",
    ];
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "wire version {v} (a release from before the lease echo; this node speaks {VERSION})"
                )
            }
            other => f.write_str(other.label()),
        }
    }
}

/// The shared cluster key.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Minimum key length: 128 bits.
pub const MIN_KEY_LEN: usize = 16;

/// A cluster key shorter than [`MIN_KEY_LEN`] (its length in bytes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the cluster key has {0} bytes; at least {MIN_KEY_LEN} are required")]
pub struct ShortKey(pub usize);

impl Key {
    pub fn new(bytes: Vec<u8>) -> Result<Self, ShortKey> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(ShortKey(bytes.len()));
        }
        Ok(Self(bytes))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// The tag of `data`.
    pub fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(data);
        let full = mac.finalize().into_bytes();
        full[..TAG_LEN].try_into().expect("32 >= 16")
    }

    /// Checks `tag` against `data` in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(data);
        mac.verify_truncated_left(tag).is_ok()
    }
}

fn state_code(state: GroupState) -> u8 {
    state.code()
}

/// Appends a report body: send time and echo (0: none) on the clocks they belong to, the
/// restart hold asked for and the one granted (µs), then the report.
pub fn encode_report(report: &Report, out: &mut BytesMut) {
    out.put_u64(report.sent_at.as_nanos());
    out.put_u64(report.echo.map_or(0, Instant::as_nanos));
    out.put_u32(micros(report.hold));
    out.put_u32(micros(report.granted));
    out.put_u8(u8::from(report.ready));
    out.put_u32(report.links_heard);
    out.put_u16(report.groups.len() as u16);
    for g in &report.groups {
        out.put_u8(state_code(g.state));
        let mut flags = 0u8;
        flags |= u8::from(g.deny);
        flags |= u8::from(g.healthy) << 1;
        if let Some(c) = g.claim {
            flags |= 1 << 2;
            flags |= u8::from(c.forced) << 3;
        }
        if g.ack.is_some() {
            flags |= 1 << 4;
        }
        if let Some(h) = g.handoff {
            flags |= 1 << 5;
            flags |= u8::from(h.manual) << 6;
            flags |= u8::from(h.failover) << 7;
        }
        out.put_u8(flags);
        out.put_u64(g.epoch);
        out.put_u64(g.claim.map_or(0, |c| c.epoch));
        let (ack_node, ack_epoch) = g.ack.unwrap_or((0, 0));
        out.put_u16(ack_node as u16);
        out.put_u64(ack_epoch);
        out.put_u16(g.handoff.map_or(0, |h| h.to as u16));
        out.put_u64(g.admin_epoch);
        out.put_u8(u8::from(g.wanted));
        out.put_u32(g.errors);
    }
    // The groups held, by name (understood by a node with another configuration too).
    out.put_u16(report.held.len() as u16);
    for h in &report.held {
        out.put_u32(h.id);
        out.put_u64(h.epoch);
    }
}

/// The beginning of a report of another version that every version since 2 keeps (see the
/// module's documentation); the rest of the body is not read.
fn decode_lasting(mut body: &[u8], version: u8) -> Option<Report> {
    let holds = version >= 3;
    if body.remaining() < if holds { 24 } else { 16 } {
        return None;
    }
    let sent_at = Instant::from_nanos(body.get_u64());
    let echo = Some(body.get_u64())
        .filter(|e| *e != 0)
        .map(Instant::from_nanos);
    let (hold, granted) = if holds {
        (
            Duration::from_micros(body.get_u32().into()),
            Duration::from_micros(body.get_u32().into()),
        )
    } else {
        (Duration::ZERO, Duration::ZERO)
    };
    Some(Report {
        sent_at,
        echo,
        hold,
        granted,
        ..Report::default()
    })
}

/// A hold in whole microseconds, saturated (holds are at most minutes).
fn micros(hold: Duration) -> u32 {
    u32::try_from(hold.as_micros()).unwrap_or(u32::MAX)
}

/// Parses a report body; `None` if it is malformed.
pub fn decode_report(mut body: &[u8]) -> Option<Report> {
    if body.remaining() < 31 {
        return None;
    }
    let sent_at = Instant::from_nanos(body.get_u64());
    let echo = Some(body.get_u64())
        .filter(|e| *e != 0)
        .map(Instant::from_nanos);
    let hold = Duration::from_micros(body.get_u32().into());
    let granted = Duration::from_micros(body.get_u32().into());
    let ready = match body.get_u8() {
        0 => false,
        1 => true,
        _ => return None,
    };
    let links_heard = body.get_u32();
    let count = body.get_u16() as usize;
    if body.remaining() < count * GROUP_LEN + 2 {
        return None;
    }
    let mut groups = Vec::with_capacity(count);
    for _ in 0..count {
        let state = GroupState::from_code(body.get_u8())?;
        let flags = body.get_u8();
        let epoch = body.get_u64();
        let claim_epoch = body.get_u64();
        let ack_node = body.get_u16() as usize;
        let ack_epoch = body.get_u64();
        let handoff_to = body.get_u16() as usize;
        let admin_epoch = body.get_u64();
        let wanted = match body.get_u8() {
            0 => false,
            1 => true,
            _ => return None,
        };
        let errors = body.get_u32();
        groups.push(GroupReport {
            state,
            epoch,
            deny: flags & 1 != 0,
            healthy: flags & 2 != 0,
            claim: (flags & 4 != 0).then_some(Claim {
                epoch: claim_epoch,
                forced: flags & 8 != 0,
            }),
            ack: (flags & 16 != 0).then_some((ack_node, ack_epoch)),
            handoff: (flags & 32 != 0).then_some(Handoff {
                to: handoff_to,
                manual: flags & 64 != 0,
                failover: flags & 128 != 0,
            }),
            admin_epoch,
            wanted,
            errors,
        });
    }
    let held_count = body.get_u16() as usize;
    if body.remaining() != held_count * HELD_LEN {
        return None;
    }
    let held = (0..held_count)
        .map(|_| HeldGroup {
            id: body.get_u32(),
            epoch: body.get_u64(),
        })
        .collect();
    Some(Report {
        // Filled in from the header by `decode`.
        incarnation: 0,
        sent_at,
        echo,
        hold,
        granted,
        ready,
        links_heard,
        groups,
        held,
    })
}

/// Encodes and authenticates a packet.
pub fn encode(packet: &Packet, key: &Key) -> Bytes {
    let mut body = BytesMut::new();
    encode_report(&packet.report, &mut body);
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    out.put_slice(MAGIC);
    out.put_u8(packet.version);
    out.put_u8(packet.kind as u8);
    out.put_u16(body.len() as u16);
    out.put_u32(packet.sender);
    out.put_u64(packet.incarnation);
    out.put_u64(packet.sequence);
    out.put_slice(&packet.digest);
    out.put_u8(packet.link);
    out.put_slice(&[0; 3]);
    out.put_slice(&body);
    let tag = key.tag(&out);
    out.put_slice(&tag);
    out.freeze()
}

/// Authenticates, then parses a packet. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8], key: &Key) -> Result<Packet, Reject> {
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(Reject::TooShort);
    }
    if bytes.len() > MAX_PACKET {
        return Err(Reject::TooLong);
    }
    let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    if !key.verify(signed, tag) {
        return Err(Reject::BadTag);
    }
    let mut header = &signed[..HEADER_LEN];
    let mut magic = [0u8; 4];
    header.copy_to_slice(&mut magic);
    if &magic != MAGIC {
        return Err(Reject::BadMagic);
    }
    let version = header.get_u8();
    if version < 2 {
        return Err(Reject::UnsupportedVersion(version));
    }
    let kind = match header.get_u8() {
        1 => Kind::Heartbeat,
        2 => Kind::Leaving,
        _ => return Err(Reject::BadKind),
    };
    let body_len = header.get_u16() as usize;
    if HEADER_LEN + body_len != signed.len() {
        return Err(Reject::BadLength);
    }
    let sender = header.get_u32();
    let incarnation = header.get_u64();
    let sequence = header.get_u64();
    let mut digest = [0u8; 16];
    header.copy_to_slice(&mut digest);
    let link = header.get_u8();
    let body = &signed[HEADER_LEN..];
    let mut report = if version == VERSION {
        decode_report(body)
    } else {
        decode_lasting(body, version)
    }
    .ok_or(Reject::BadBody)?;
    report.incarnation = incarnation;
    Ok(Packet {
        version,
        kind,
        sender,
        incarnation,
        sequence,
        digest,
        link,
        report,
    })
}

/// Anti-replay state of one sender: its incarnation and a 64-packet sliding window.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    incarnation: u64,
    highest: u64,
    /// Bit i: sequence `highest - i` was seen.
    seen: u64,
    /// Whether anything was accepted yet.
    started: bool,
}

/// How far behind the highest sequence a packet may arrive (reordering between links).
pub const WINDOW: u64 = 64;

impl ReplayWindow {
    /// A window that remembers `incarnation` (recorded before a restart of this node): older
    /// ones stay refused.
    pub fn remembering(incarnation: u64) -> Self {
        Self {
            incarnation,
            highest: 0,
            seen: 0,
            started: true,
        }
    }

    /// Accepts a fresh `(incarnation, sequence)` and records it, or says why it is refused. An
    /// older incarnation is never accepted, however long the current one has been silent: the
    /// sender's incarnations only increase (see [`crate::incarnation`]), so an older one is a
    /// recording of an earlier life.
    pub fn accept(&mut self, incarnation: u64, sequence: u64) -> Result<(), Reject> {
        if self.started && incarnation < self.incarnation {
            return Err(Reject::OldIncarnation);
        }
        if !self.started || incarnation != self.incarnation {
            *self = Self {
                incarnation,
                highest: sequence,
                seen: 1,
                started: true,
            };
            return Ok(());
        }
        if sequence > self.highest {
            let shift = sequence - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = sequence;
            return Ok(());
        }
        let behind = self.highest - sequence;
        if behind >= WINDOW {
            return Err(Reject::Replay);
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            return Err(Reject::Replay);
        }
        self.seen |= bit;
        Ok(())
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
}
