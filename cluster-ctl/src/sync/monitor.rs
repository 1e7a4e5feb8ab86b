//! What conntrackd does, as the node sees it (R-SYNC-5): its statistics read every half second
//! (`conntrackd -s`), and whether the peer's synchronization messages still arrive.
//!
//! conntrackd in FTFW mode sends at least one message a second (an acknowledgement or an
//! ALIVE) to its peer, so a peer whose messages stop for [`SILENCE`] while its heartbeats still
//! arrive has lost its sync link (or its conntrackd): new connections are no longer copied. That
//! is a warning and a mail, never a failover; [`SyncWatch`] decides it, pure and with time passed
//! in, and the daemon's loop acts on its changes.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

/// How long the peer's sync messages may stop before the sync link counts as lost: three of
/// conntrackd's one-second ALIVE intervals.
pub const SILENCE: Duration = Duration::from_secs(3);

/// How often conntrackd's statistics are read.
const POLL: Duration = Duration::from_millis(500);

/// conntrackd's counters (`conntrackd -s` and `-s queue`), as far as the node reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConntrackdStats {
    /// Entries of this node's table that conntrackd replicates (its internal cache).
    pub replicated: u64,
    /// Entries the peers sent, written into this node's kernel table.
    pub injected_created: u64,
    pub injected_updated: u64,
    pub injected_destroyed: u64,
    /// Peers' entries the kernel refused.
    pub injected_failed: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub send_errors: u64,
    pub receive_errors: u64,
    /// Messages from the peer that were lost and asked for again (FTFW's NACKs).
    pub lost_messages: u64,
    pub malformed_messages: u64,
    /// Messages sent and not yet acknowledged by the peer (the resend queue).
    pub unacknowledged: u64,
    /// Messages that did not fit in the resend queue (a long loss of the sync link): the peer
    /// misses them for good.
    pub resend_queue_overflows: u64,
}

/// A line of `conntrackd -s` that is not what conntrackd 1.4 prints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("conntrackd's statistics: cannot read {line:?}")]
pub struct StatsError {
    line: String,
}

impl ConntrackdStats {
    /// Reads the output of `conntrackd -s` followed by that of `conntrackd -s queue`.
    pub fn parse(text: &str) -> Result<Self, StatsError> {
        let mut stats = Self::default();
        let mut section = "";
        let bad = |line: &str| StatsError {
            line: line.to_owned(),
        };
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            if !line.starts_with([' ', '\t']) && trimmed.ends_with(':') {
                section = trimmed;
                continue;
            }
            // `label:  N  [failed:  M]`
            let labelled = || -> Option<(u64, u64)> {
                let (_, rest) = trimmed.split_once(':')?;
                let mut numbers = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|s| !s.is_empty());
                let first = numbers.next()?.parse().ok()?;
                let second = numbers.next().map_or(Some(0), |n| n.parse().ok())?;
                Some((first, second))
            };
            // `N Word word   M Word word`
            let paired = || -> Option<(u64, u64)> {
                let words: Vec<&str> = trimmed.split_whitespace().collect();
                let [a, _, _, b, _, _] = words.as_slice() else {
                    return None;
                };
                Some((a.parse().ok()?, b.parse().ok()?))
            };
            if section == "cache internal:" && trimmed.starts_with("current active connections:") {
                stats.replicated = labelled().ok_or_else(|| bad(line))?.0;
            } else if section == "external inject:" {
                let (n, failed) = labelled().ok_or_else(|| bad(line))?;
                stats.injected_failed += failed;
                if trimmed.starts_with("connections created:") {
                    stats.injected_created = n;
                } else if trimmed.starts_with("connections updated:") {
                    stats.injected_updated = n;
                } else if trimmed.starts_with("connections destroyed:") {
                    stats.injected_destroyed = n;
                }
            } else if section.starts_with("UDP traffic") || section.starts_with("TCP traffic") {
                let (a, b) = paired().ok_or_else(|| bad(line))?;
                if trimmed.contains("Pckts sent") {
                    (stats.packets_sent, stats.packets_received) = (a, b);
                } else if trimmed.contains("Error send") {
                    (stats.send_errors, stats.receive_errors) = (a, b);
                }
            } else if section == "message tracking:" && trimmed.contains("Lost msgs") {
                (stats.malformed_messages, stats.lost_messages) =
                    paired().ok_or_else(|| bad(line))?;
            } else if section == "queue rsqueue:" && trimmed.starts_with("current elements:") {
                stats.unacknowledged = labelled().ok_or_else(|| bad(line))?.0;
            } else if section == "queue rsqueue:" && trimmed.starts_with("not enough space errors:")
            {
                stats.resend_queue_overflows = labelled().ok_or_else(|| bad(line))?.0;
            }
        }
        Ok(stats)
    }
}

/// The latest view of conntrackd, shared by its poller, its watcher and the daemon.
#[derive(Clone, Debug)]
pub struct SyncSnapshot {
    /// conntrackd answers on its control socket.
    pub answers: bool,
    /// `None` while conntrackd does not answer (or its statistics are not understood).
    pub stats: Option<ConntrackdStats>,
    /// Entries in this node's kernel table (all of them, the peers' included).
    pub kernel_entries: Option<u64>,
    /// When the peer's messages were last seen arriving (the received count changed).
    pub heard_at: Option<Instant>,
    pub started_at: Instant,
    /// When this node last sent its whole table to the peers (`conntrackd -B`).
    pub last_bulk: Option<SystemTime>,
    /// How long the last takeover's claim of the peers' entries took (`-R`, `-B`; in the
    /// background: the entries were in the kernel already, the takeover did not wait for it).
    pub last_claim: Option<Duration>,
    /// How often this node reads its table to keep the peers' copies of its flows from
    /// expiring, and what the last reading did (`None` until the first).
    pub refresh_period: Option<Duration>,
    pub refresh: Option<super::refresh::RefreshStats>,
    /// Helpers' state (expectations, sequence adjustments) replicated by fwclusterd.
    pub helper_copies: super::helpers::HelperCounts,
}

pub type Shared = Arc<Mutex<SyncSnapshot>>;

pub fn shared() -> Shared {
    Arc::new(Mutex::new(SyncSnapshot {
        answers: false,
        stats: None,
        kernel_entries: None,
        heard_at: None,
        started_at: Instant::now(),
        last_bulk: None,
        last_claim: None,
        refresh_period: None,
        refresh: None,
        helper_copies: Default::default(),
    }))
}

/// A copy of the snapshot (a poisoned lock only means a poller panicked mid-update: the data
/// stays usable).
pub fn read(shared: &Shared) -> SyncSnapshot {
    shared.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn update(shared: &Shared, change: impl FnOnce(&mut SyncSnapshot)) {
    change(&mut shared.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Reads conntrackd's statistics every [`POLL`] until `stopping`.
pub fn spawn_poller(
    conf: PathBuf,
    shared: Shared,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("conntrackd-stats".into())
        .spawn(move || {
            let mut warned = false;
            // The received count of the last reading that had one: a failed reading in
            // between does not make the next one look like news from the peer.
            let mut last_received: Option<u64> = None;
            while !stopping.load(Ordering::SeqCst) {
                let answer = poll(&conf);
                let answers = answer.is_some();
                let stats = match answer {
                    Some(Ok(stats)) => Some(stats),
                    Some(Err(e)) => {
                        if !std::mem::replace(&mut warned, true) {
                            tracing::warn!(error = %e, "conntrackd's statistics not understood");
                        }
                        None
                    }
                    None => None,
                };
                let kernel_entries =
                    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                let received = stats.as_ref().map(|s| s.packets_received);
                let news = received.is_some_and(|now| {
                    now > 0 && last_received.is_some_and(|before| before != now)
                });
                if received.is_some() {
                    last_received = received;
                }
                update(&shared, |snapshot| {
                    if news {
                        snapshot.heard_at = Some(Instant::now());
                    }
                    snapshot.answers = answers;
                    snapshot.stats = stats;
                    snapshot.kernel_entries = kernel_entries;
                });
                std::thread::sleep(POLL);
            }
        })
        .map(drop)
}

/// How long a statistics request may take: a conntrackd that does not answer in that time
/// (stopped, hung) counts as not answering, not as a silent peer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// conntrackd's statistics; `None` when it does not answer.
fn poll(conf: &Path) -> Option<Result<ConntrackdStats, StatsError>> {
    let mut text = String::new();
    for request in [&["-s"][..], &["-s", "queue"][..]] {
        let mut child = Command::new("conntrackd")
            .arg("-C")
            .arg(conf)
            .args(request)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        };
        let mut output = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take()?, &mut output).ok()?;
        if !status.success() {
            return None;
        }
        text.push_str(&output);
    }
    Some(ConntrackdStats::parse(&text))
}

/// The sync link to the peer as the node judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncLink {
    /// The peer's messages arrive.
    Up,
    /// The peer is offline: nothing to synchronize with (its loss is a failover matter).
    PeerAway,
    /// The peer is online but its sync messages stopped for [`SILENCE`].
    Silent,
    /// This node's conntrackd does not answer.
    NotRunning,
}

impl SyncLink {
    /// New connections are not being replicated although the peer runs.
    pub fn lost(self) -> bool {
        matches!(self, Self::Silent | Self::NotRunning)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::PeerAway => "peer offline",
            Self::Silent => "silent",
            Self::NotRunning => "conntrackd not running",
        }
    }
}

/// Judges the sync link from the snapshots; pure, time passed in.
#[derive(Debug)]
pub struct SyncWatch {
    state: SyncLink,
    /// Since when the peer has been online: a peer that just came back gets [`SILENCE`] to
    /// start its conntrackd before its silence counts.
    peer_online_since: Option<Instant>,
}

impl Default for SyncWatch {
    fn default() -> Self {
        Self {
            state: SyncLink::Up,
            peer_online_since: None,
        }
    }
}

impl SyncWatch {
    pub fn state(&self) -> SyncLink {
        self.state
    }

    /// Takes in a snapshot at `now`; returns the previous state when the judgement changed.
    pub fn observe(
        &mut self,
        now: Instant,
        peer_online: bool,
        snapshot: &SyncSnapshot,
    ) -> Option<SyncLink> {
        let running =
            snapshot.answers || now.saturating_duration_since(snapshot.started_at) < SILENCE;
        let next = if !running {
            SyncLink::NotRunning
        } else if !peer_online {
            SyncLink::PeerAway
        } else if snapshot.stats.is_none() && snapshot.answers {
            // conntrackd answers but its statistics were not understood (logged once): the
            // peer's traffic cannot be judged, and is not blamed.
            SyncLink::Up
        } else {
            let since = *self.peer_online_since.get_or_insert(now);
            let last_sign = [Some(since), Some(snapshot.started_at), snapshot.heard_at]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(now);
            if now.saturating_duration_since(last_sign) >= SILENCE {
                SyncLink::Silent
            } else {
                SyncLink::Up
            }
        };
        if !peer_online {
            self.peer_online_since = None;
        }
        (next != self.state).then(|| std::mem::replace(&mut self.state, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `conntrackd -s` and `-s queue` of conntrack-tools 1.4.7, as captured on this machine kind.
    const STATS: &str = "cache internal:
current active connections:\t           2
connections created:\t\t           2\tfailed:\t           0
connections updated:\t\t           2\tfailed:\t           0
connections destroyed:\t\t           0\tfailed:\t           0

external inject:
connections created:\t\t           1\tfailed:\t           0
connections updated:\t\t           3\tfailed:\t           1
connections destroyed:\t\t           0\tfailed:\t           0

traffic processed:
                   0 Bytes                         0 Pckts

UDP traffic (active device=eth3):
                 232 Bytes sent                  336 Bytes recv
                   8 Pckts sent                    4 Pckts recv
                   0 Error send                    2 Error recv

message tracking:
                   0 Malformed msgs                    5 Lost msgs

allocated queue nodes:\t\t           1

queue txqueue:
current elements:\t\t           0
maximum elements:\t\t  2147483647
not enough space errors:\t           0

queue errorq:
current elements:\t\t           0
maximum elements:\t\t         128
not enough space errors:\t           0

queue rsqueue:
current elements:\t\t           7
maximum elements:\t\t      131072
not enough space errors:\t           3
";

    #[test]
    fn conntrackd_statistics_are_read() {
        assert_eq!(
            ConntrackdStats::parse(STATS),
            Ok(ConntrackdStats {
                replicated: 2,
                injected_created: 1,
                injected_updated: 3,
                injected_destroyed: 0,
                injected_failed: 1,
                packets_sent: 8,
                packets_received: 4,
                send_errors: 0,
                receive_errors: 2,
                lost_messages: 5,
                malformed_messages: 0,
                unacknowledged: 7,
                resend_queue_overflows: 3,
            })
        );
    }

    #[test]
    fn a_changed_format_is_an_error_naming_the_line() {
        let changed = STATS.replace("8 Pckts sent", "eight Pckts sent");
        let error = ConntrackdStats::parse(&changed).unwrap_err();
        assert!(error.to_string().contains("eight Pckts sent"), "{error}");
    }

    fn snapshot(started_at: Instant, heard_at: Option<Instant>, running: bool) -> SyncSnapshot {
        SyncSnapshot {
            answers: running,
            stats: running.then(ConntrackdStats::default),
            kernel_entries: None,
            heard_at,
            started_at,
            last_bulk: None,
            last_claim: None,
            refresh_period: None,
            refresh: None,
            helper_copies: Default::default(),
        }
    }

    #[test]
    fn a_silent_peer_is_a_lost_link_only_while_it_is_online_and_after_its_grace() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut watch = SyncWatch::default();
        // Heard at 1 s; silent from then on.
        let heard = snapshot(t0, Some(at(1)), true);
        assert_eq!(watch.observe(at(0), true, &heard), None);
        assert_eq!(watch.observe(at(2), true, &heard), None);
        assert_eq!(watch.observe(at(4), true, &heard), Some(SyncLink::Up));
        assert_eq!(watch.state(), SyncLink::Silent);
        // The peer goes offline: not a sync matter any more.
        assert_eq!(watch.observe(at(5), false, &heard), Some(SyncLink::Silent));
        assert_eq!(watch.state(), SyncLink::PeerAway);
        // It comes back: three seconds to start its conntrackd before its silence counts.
        assert_eq!(
            watch.observe(at(10), true, &heard),
            Some(SyncLink::PeerAway)
        );
        assert_eq!(watch.state(), SyncLink::Up);
        assert_eq!(watch.observe(at(12), true, &heard), None);
        let heard_again = snapshot(t0, Some(at(12)), true);
        assert_eq!(watch.observe(at(14), true, &heard_again), None);
        assert_eq!(
            watch.observe(at(15), true, &heard_again),
            Some(SyncLink::Up)
        );
    }

    #[test]
    fn a_conntrackd_that_does_not_answer_is_a_lost_link_after_its_start() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut watch = SyncWatch::default();
        let starting = snapshot(t0, None, false);
        assert_eq!(
            watch.observe(at(1), true, &starting),
            None,
            "still starting"
        );
        assert_eq!(watch.observe(at(4), true, &starting), Some(SyncLink::Up));
        assert_eq!(watch.state(), SyncLink::NotRunning);
        assert!(watch.state().lost());
        let back = snapshot(t0, Some(at(5)), true);
        assert_eq!(
            watch.observe(at(5), true, &back),
            Some(SyncLink::NotRunning)
        );
        assert_eq!(watch.state(), SyncLink::Up);
    }
}
