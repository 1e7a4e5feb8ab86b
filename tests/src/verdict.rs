//! Telling a false failure detection from one that a daemon's own reported pause explains.
//!
//! R-HB-4 promises no false OFFLINE while the peers keep running. A daemon that was not
//! scheduled for longer than the timeout really was silent, and it says so itself (FWC013, with
//! how long it paused). A test that must see no OFFLINE and no failover (a stall of both
//! daemons, a lossy interconnect) classifies each one: explained when the silent peer reported a
//! pause of its own that covers the silence (outside any pause the test injected on purpose),
//! false otherwise. A failover counts as explained when it follows an explained OFFLINE on the
//! same node within 100 ms.

use std::time::{Duration, SystemTime};

use crate::{
    cluster::{Cluster, line_field, line_time},
    seed::{FWS1, FWS2},
};

/// The OFFLINE declarations (FWC102) and takeovers after a failure (FWC201 ACT_FAILOVER) since
/// a moment, told apart.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The log lines (prefixed with the node) that nothing explains.
    pub false_offline: Vec<String>,
    pub false_failovers: Vec<String>,
    /// How many a reported pause of the silent peer explains.
    pub machine_offline: usize,
    pub machine_failovers: usize,
}

impl Verdict {
    /// The verdict on the logs of both seed nodes since `since`; `injected` are the intervals in
    /// which the test itself stopped the daemons (their pauses explain nothing).
    pub fn of(cluster: &Cluster, since: SystemTime, injected: &[(SystemTime, SystemTime)]) -> Self {
        let after = |host: &str, id: &str| -> Vec<(SystemTime, String)> {
            cluster
                .lines_with(host, id)
                .into_iter()
                .filter_map(|l| line_time(&l).map(|t| (t, l)))
                .filter(|(t, _)| *t >= since)
                .collect()
        };
        // A daemon's last event before an injected pause can precede it by up to a tick.
        let injected_at = |at: SystemTime| {
            injected
                .iter()
                .any(|(from, to)| at + Duration::from_millis(2) >= *from && at <= *to)
        };
        let own_pauses = |host: &str| -> Vec<(SystemTime, SystemTime)> {
            reported_pauses(cluster, host, since)
                .into_iter()
                .filter(|(start, _)| !injected_at(*start))
                .collect()
        };
        let mut verdict = Self::default();
        for (host, peer) in [(FWS1, FWS2), (FWS2, FWS1)] {
            let pauses = own_pauses(peer);
            let mut explained = Vec::new();
            for (at, line) in after(host, "FWC102") {
                let silent_from = at - ms_field(&line, "silent_ms").unwrap_or_default();
                if pauses
                    .iter()
                    .any(|(start, end)| *start <= at && *end >= silent_from)
                {
                    verdict.machine_offline += 1;
                    explained.push(at);
                } else {
                    verdict.false_offline.push(format!("{host} {line}"));
                }
            }
            for (at, line) in after(host, "FWC201") {
                if !line.contains("ACT_FAILOVER") {
                    continue;
                }
                if explained
                    .iter()
                    .any(|o| *o <= at && at <= *o + Duration::from_millis(100))
                {
                    verdict.machine_failovers += 1;
                } else {
                    verdict.false_failovers.push(format!("{host} {line}"));
                }
            }
        }
        verdict
    }

    /// Nothing unexplained.
    pub fn is_clean(&self) -> bool {
        self.false_offline.is_empty() && self.false_failovers.is_empty()
    }
}

/// The pauses `host`'s daemon reported since `since` (FWC013: its loop did not run), as
/// (start, end) on the wall clock of the logs.
pub fn reported_pauses(
    cluster: &Cluster,
    host: &str,
    since: SystemTime,
) -> Vec<(SystemTime, SystemTime)> {
    cluster
        .lines_with(host, "FWC013")
        .into_iter()
        .filter_map(|line| {
            let end = line_time(&line)?;
            let paused = ms_field(&line, "paused_ms")?;
            (end >= since).then(|| (end - paused, end))
        })
        .collect()
}

/// A log field in milliseconds (`silent_ms="5.0"`) as a duration.
fn ms_field(line: &str, key: &str) -> Option<Duration> {
    let ms = line_field(line, key)?.parse::<f64>().ok()?;
    Some(Duration::from_secs_f64(ms / 1e3))
}

/// The log lines of both seed nodes, merged by time, within 30 ms of every line with `id` (for
/// failure messages).
pub fn around(cluster: &Cluster, id: &str) -> String {
    let mut lines: Vec<(SystemTime, String)> = Vec::new();
    for host in [FWS1, FWS2] {
        for line in cluster.log(host).lines() {
            if let Some(at) = line_time(line) {
                lines.push((at, format!("{host} {line}")));
            }
        }
    }
    lines.sort();
    let marks: Vec<SystemTime> = lines
        .iter()
        .filter(|(_, l)| l.contains(id))
        .map(|(at, _)| *at)
        .collect();
    let near = |at: &SystemTime| {
        marks.iter().any(|m| {
            let gap = if at > m {
                at.duration_since(*m)
            } else {
                m.duration_since(*at)
            };
            gap.is_ok_and(|g| g < Duration::from_millis(30))
        })
    };
    lines
        .iter()
        .filter(|(at, _)| near(at))
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}
