//! Keeps the peers' copies of live flows from expiring (kernel-table mode, R-SYNC-1).
//!
//! conntrackd replicates an entry when the kernel reports a change of it, with the timeout the
//! entry has at that moment. A packet refreshes the timeout but is no change: a UDP flow or an
//! echo that carries packets without changing state is never reported again, and its copy on
//! the peers expires after the timeout it was sent with (UDP stream 120 s, ICMP 30 s) while the
//! flow goes on. A takeover after that would find no entry, and the flow's NAT binding would be
//! made anew.
//!
//! So every [`Refresher::period`] this node reads its table (ctnetlink dump, with the kernel's
//! per-connection counters), and refreshes each entry whose packet count moved since the
//! previous reading (a flow this node passes) and whose copy on the peers could expire before
//! the reading after next. A refresh is an update that changes nothing: the kernel reports it
//! as a change carrying the entry's current timeout, and conntrackd replicates it like any
//! other. Entries whose counts do not move here (the peers' copies, a flow that moved away)
//! are left alone: a copy sent back would cut its owner's timeout down to the copy's.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    path::Path,
    time::{Duration, Instant},
};

use netlink_packet_core::{DefaultNla, Emitable as _, Nla as _};
use netlink_packet_netfilter::{
    NetfilterMessageInner,
    conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, Tuple},
};

use super::ctnetlink::{Ctnetlink, CtnetlinkError};

const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// One entry of the table as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryReading {
    /// Names the entry across readings (its original tuple, zone and kernel id).
    pub key: u64,
    /// Packets counted both ways; `None` for an entry made while the kernel did not count.
    pub packets: Option<u64>,
    /// Time left before the kernel expires it.
    pub remaining: Duration,
}

/// What is known of one entry from the previous reading.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    packets: Option<u64>,
    /// When this node's last refresh lets the peers' copy expire; `None` if this node never
    /// refreshed it (the copy is as old as the entry's last change).
    copy_expires: Option<Instant>,
}

/// Which entries to refresh, reading after reading: pure, with time passed in.
#[derive(Debug, Default)]
pub struct RefreshPlan {
    tracked: HashMap<u64, Tracked>,
}

impl RefreshPlan {
    /// The indices of the `readings` (taken at `now`, one every `period`) to refresh. Entries
    /// that are not in `readings` are forgotten.
    pub fn decide(
        &mut self,
        now: Instant,
        period: Duration,
        readings: &[EntryReading],
    ) -> Vec<usize> {
        let mut refresh = Vec::new();
        let mut tracked = HashMap::with_capacity(readings.len());
        for (index, reading) in readings.iter().enumerate() {
            let before = self.tracked.get(&reading.key);
            // Seen first now: whether it carries packets shows at the next reading, two
            // periods at most after it was made, and its copy was sent when it was made.
            let passes_here = before.is_some_and(|b| {
                reading.packets.is_some() && b.packets.is_some() && b.packets != reading.packets
            });
            let copy_expires = before.and_then(|b| b.copy_expires);
            // The next reading may find it quiet; the one after that refreshes it in time.
            if passes_here && copy_expires.is_none_or(|at| at <= now + 2 * period) {
                refresh.push(index);
            }
            tracked.insert(
                reading.key,
                Tracked {
                    packets: reading.packets,
                    copy_expires,
                },
            );
        }
        self.tracked = tracked;
        refresh
    }

    /// The entry read under `key` was refreshed at `now` with `remaining` left: its copy on the
    /// peers expires then.
    pub fn refreshed(&mut self, key: u64, now: Instant, remaining: Duration) {
        if let Some(tracked) = self.tracked.get_mut(&key) {
            tracked.copy_expires = Some(now + remaining);
        }
    }
}

/// The timeouts of flows that carry packets without changing state, in this network
/// namespace's netfilter settings (`/proc/sys/net/netfilter`).
const STATELESS_TIMEOUTS: [&str; 5] = [
    "nf_conntrack_icmp_timeout",
    "nf_conntrack_icmpv6_timeout",
    "nf_conntrack_udp_timeout",
    "nf_conntrack_udp_timeout_stream",
    "nf_conntrack_generic_timeout",
];

/// The reading period for the shortest of `timeouts` (seconds): a third of it, so that a
/// flow's copy is refreshed at least once before it could expire, between 1 s and 60 s.
pub fn period_for(timeouts: impl IntoIterator<Item = u64>) -> Duration {
    let shortest = timeouts.into_iter().filter(|&t| t > 0).min().unwrap_or(30);
    Duration::from_secs((shortest / 3).clamp(1, 60))
}

/// What the last reading found and did, for `clpstat -i` and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Entries refreshed since the daemon started.
    pub refreshed: u64,
    /// Entries read in the last reading.
    pub read: u64,
    /// How long the last reading and its refreshes took.
    pub took: Duration,
    /// Refreshes the kernel refused in the last reading (other than for entries gone).
    pub failed: u64,
}

/// The node's reader of its own table.
pub struct Refresher {
    ctnetlink: Ctnetlink,
    plan: RefreshPlan,
    period: Duration,
    stats: RefreshStats,
}

/// `nf_conntrack_acct`: the kernel counts packets of connections made from then on.
const ACCOUNTING: &str = "/proc/sys/net/netfilter/nf_conntrack_acct";

impl Refresher {
    /// Opens ctnetlink in this network namespace, turns the kernel's per-connection packet
    /// counting on (logged when it was off) and derives the period from the namespace's
    /// timeouts.
    pub fn new() -> Result<Self, CtnetlinkError> {
        let ctnetlink = Ctnetlink::open()?;
        if std::fs::read_to_string(ACCOUNTING).is_ok_and(|v| v.trim() == "0") {
            match std::fs::write(ACCOUNTING, "1") {
                Ok(()) => tracing::info!(
                    "per-connection packet counting turned on (net.netfilter.nf_conntrack_acct \
                     = 1): the peers' copies of flows this node passes are kept from expiring"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "net.netfilter.nf_conntrack_acct cannot be set: the peers' copies of idle-\
                     looking UDP and echo flows may expire before a takeover"
                ),
            }
        }
        let timeouts = STATELESS_TIMEOUTS.map(|name| {
            std::fs::read_to_string(Path::new("/proc/sys/net/netfilter").join(name))
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        });
        Ok(Self {
            ctnetlink,
            plan: RefreshPlan::default(),
            period: period_for(timeouts),
            stats: RefreshStats::default(),
        })
    }

    /// How often the table is read.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// One reading, and the refreshes it calls for.
    pub fn run_once(&mut self) -> Result<RefreshStats, CtnetlinkError> {
        let started = Instant::now();
        let entries: Vec<Entry> = self
            .ctnetlink
            .dump(NetfilterMessageInner::Conntrack(ConntrackMessage::Get(
                Vec::new(),
            )))?
            .into_iter()
            .filter_map(|message| match message.inner {
                NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) => {
                    Entry::read(u8::from(message.header.family), attributes)
                }
                _ => None,
            })
            .collect();
        let readings: Vec<EntryReading> = entries.iter().map(|e| e.reading.clone()).collect();
        // The readings are `period` apart plus the time one takes.
        let interval = self.period + self.stats.took;
        let refresh = self.plan.decide(started, interval, &readings);
        self.stats.failed = 0;
        for &index in &refresh {
            let entry = &entries[index];
            match self.touch(entry) {
                Ok(true) => {
                    self.stats.refreshed += 1;
                    self.plan
                        .refreshed(entry.reading.key, started, entry.reading.remaining);
                }
                Ok(false) => {}
                // One refused refresh does not stop the others; it is tried at the next
                // reading.
                Err(_) => self.stats.failed += 1,
            }
        }
        self.stats.read = readings.len() as u64;
        self.stats.took = started.elapsed();
        Ok(self.stats)
    }

    /// Asks for an update of `entry` that changes nothing (its original tuple and zone only),
    /// which the kernel reports to conntrackd as a change. `false` when the entry is gone
    /// (expired or removed since the dump).
    fn touch(&mut self, entry: &Entry) -> Result<bool, CtnetlinkError> {
        match self.ctnetlink.request(
            entry.family,
            0,
            NetfilterMessageInner::Conntrack(ConntrackMessage::New(entry.identity.clone())),
        ) {
            Ok(()) => Ok(true),
            Err(CtnetlinkError::Refused(libc::ENOENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// An entry as the refresher needs it: what names it to the kernel, and its reading.
struct Entry {
    family: u8,
    /// The original tuple and the zone.
    identity: Vec<ConntrackAttribute>,
    reading: EntryReading,
}

/// ctnetlink attributes the conntrack crate does not name.
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
/// The attribute type without its nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

impl Entry {
    /// `None` for a message without an original tuple or timeout (not an entry).
    fn read(family: u8, attributes: Vec<ConntrackAttribute>) -> Option<Self> {
        let mut identity = Vec::new();
        let mut remaining = None;
        let mut packets: Option<u64> = None;
        let mut hasher = DefaultHasher::new();
        for attribute in attributes {
            match attribute {
                ConntrackAttribute::CtaTupleOrig(tuple) => {
                    hash_tuple(&tuple, &mut hasher);
                    identity.push(ConntrackAttribute::CtaTupleOrig(tuple));
                }
                ConntrackAttribute::CtaTimeout(seconds) => {
                    remaining = Some(Duration::from_secs(seconds.into()));
                }
                ConntrackAttribute::Other(nla) => {
                    let value = nla_value(&nla);
                    match nla.kind() & NLA_TYPE_MASK {
                        CTA_COUNTERS_ORIG | CTA_COUNTERS_REPLY => {
                            if let Some(n) = counter_packets(&value) {
                                packets = Some(packets.unwrap_or(0).wrapping_add(n));
                            }
                        }
                        CTA_ID => value.hash(&mut hasher),
                        CTA_ZONE => {
                            value.hash(&mut hasher);
                            identity.push(ConntrackAttribute::Other(nla));
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !identity
            .iter()
            .any(|a| matches!(a, ConntrackAttribute::CtaTupleOrig(_)))
        {
            return None;
        }
        let family = if family == AF_UNSPEC {
            tuple_family(&identity)
        } else {
            family
        };
        Some(Self {
            family,
            identity,
            reading: EntryReading {
                key: hasher.finish(),
                packets,
                remaining: remaining?,
            },
        })
    }
}

fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut value = vec![0; nla.value_len()];
    nla.emit_value(&mut value);
    value
}

/// The packet count in a `CTA_COUNTERS_*` nest.
fn counter_packets(nest: &[u8]) -> Option<u64> {
    netlink_packet_core::NlasIterator::new(nest)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() & NLA_TYPE_MASK == CTA_COUNTERS_PACKETS)
        .and_then(|nla| Some(u64::from_be_bytes(nla.value().try_into().ok()?)))
}

fn hash_tuple(tuple: &[Tuple], hasher: &mut DefaultHasher) {
    // Its wire form: addresses, protocol, ports or echo id.
    let mut bytes = [0u8; 128];
    let mut at = 0;
    for part in tuple {
        let length = part.buffer_len();
        let Some(slot) = bytes.get_mut(at..at + length) else {
            // Longer than any tuple the kernel makes: hashed by its form instead.
            format!("{tuple:?}").hash(hasher);
            return;
        };
        part.emit(slot);
        at += length;
    }
    bytes[..at].hash(hasher);
}

fn tuple_family(identity: &[ConntrackAttribute]) -> u8 {
    let v6 = identity.iter().any(|a| match a {
        ConntrackAttribute::CtaTupleOrig(tuple) => tuple.iter().any(|t| match t {
            Tuple::Ip(ips) => ips.iter().any(|ip| {
                matches!(ip, IPTuple::SourceAddress(a) | IPTuple::DestinationAddress(a) if a.is_ipv6())
            }),
            _ => false,
        }),
        _ => false,
    });
    if v6 { AF_INET6 } else { AF_INET }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(key: u64, packets: u64, remaining: u64) -> EntryReading {
        EntryReading {
            key,
            packets: Some(packets),
            remaining: Duration::from_secs(remaining),
        }
    }

    #[test]
    fn a_flow_carrying_packets_here_is_refreshed_before_its_copy_could_expire() {
        let period = Duration::from_secs(10);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut plan = RefreshPlan::default();
        // Every chosen refresh succeeds.
        let mut step = |s: u64, readings: &[EntryReading]| {
            let chosen = plan.decide(at(s), period, readings);
            for &i in &chosen {
                plan.refreshed(readings[i].key, at(s), readings[i].remaining);
            }
            chosen
        };
        // An echo flow (30 s) and a UDP stream (120 s), both carrying packets.
        assert!(step(0, &[reading(1, 5, 30), reading(2, 5, 120)]).is_empty());
        assert_eq!(
            step(10, &[reading(1, 15, 30), reading(2, 15, 120)]),
            vec![0, 1],
            "first moving count: refreshed, the copies' age is unknown"
        );
        // The echo's copy (expires at 40) could expire before the reading at 30 refreshes it.
        assert_eq!(
            step(20, &[reading(1, 25, 30), reading(2, 25, 120)]),
            vec![0]
        );
        // The stream's copy expires at 130: refreshed from the reading at 110 on.
        let mut refreshed_stream_at = None;
        for s in (30..=120).step_by(10) {
            let chosen = step(s, &[reading(1, s, 30), reading(2, s, 120)]);
            assert!(chosen.contains(&0), "echo refreshed at every reading ({s})");
            if chosen.contains(&1) && refreshed_stream_at.is_none() {
                refreshed_stream_at = Some(s);
            }
        }
        assert_eq!(refreshed_stream_at, Some(110));
    }

    #[test]
    fn a_refresh_the_kernel_refused_is_chosen_again_at_the_next_reading() {
        let period = Duration::from_secs(10);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut plan = RefreshPlan::default();
        plan.decide(at(0), period, &[reading(2, 1, 120)]);
        // Chosen, not refreshed (refused).
        assert_eq!(plan.decide(at(10), period, &[reading(2, 2, 120)]), vec![0]);
        assert_eq!(plan.decide(at(20), period, &[reading(2, 3, 120)]), vec![0]);
        plan.refreshed(2, at(20), Duration::from_secs(120));
        assert!(
            plan.decide(at(30), period, &[reading(2, 4, 120)])
                .is_empty()
        );
    }

    #[test]
    fn copies_held_here_and_entries_without_counts_are_never_sent_back() {
        let period = Duration::from_secs(10);
        let start = Instant::now();
        let mut plan = RefreshPlan::default();
        let uncounted = EntryReading {
            key: 2,
            packets: None,
            remaining: Duration::from_secs(5),
        };
        for s in 0..10u64 {
            // Entry 1 is a peer's copy: its count never moves here.
            let chosen = plan.decide(
                start + Duration::from_secs(s * 10),
                period,
                &[reading(1, 0, 100 - s), uncounted.clone()],
            );
            assert!(chosen.is_empty(), "{chosen:?} at reading {s}");
        }
    }

    #[test]
    fn an_entry_gone_and_made_again_under_the_same_key_starts_afresh() {
        let period = Duration::from_secs(10);
        let start = Instant::now();
        let mut plan = RefreshPlan::default();
        plan.decide(start, period, &[reading(1, 1, 30)]);
        plan.decide(start + period, period, &[]);
        // Seen again: its count is not compared with the old one.
        assert!(
            plan.decide(start + 2 * period, period, &[reading(1, 9, 30)])
                .is_empty()
        );
    }

    #[test]
    fn the_period_is_a_third_of_the_shortest_stateless_timeout() {
        assert_eq!(period_for([30, 30, 30, 120, 600]), Duration::from_secs(10));
        assert_eq!(period_for([6, 30]), Duration::from_secs(2));
        assert_eq!(period_for([1]), Duration::from_secs(1));
        assert_eq!(period_for([0, 600]), Duration::from_secs(60));
        assert_eq!(period_for([]), Duration::from_secs(10));
    }
}
