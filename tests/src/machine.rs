//! What the whole machine was doing, from `/proc/stat`: tests and benchmarks about timing say
//! when their numbers were taken on a busy machine (another test's namespaces still being torn
//! down by the kernel, time stolen by the hypervisor) and wait for a quiet one before they start.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// The machine's CPU time so far, in ms, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// user, nice, system, irq and softirq.
    pub busy_ms: u64,
    /// idle and iowait.
    pub idle_ms: u64,
    /// Taken by the hypervisor.
    pub steal_ms: u64,
}

impl CpuTimes {
    pub fn now() -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .filter(|l| l.starts_with("cpu "))
            .context("no cpu line in /proc/stat")?
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().context("a field of the cpu line of /proc/stat"))
            .collect::<Result<_>>()?;
        if fields.len() < 8 {
            bail!("the cpu line of /proc/stat has {} fields", fields.len());
        }
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ms = |ticks: u64| ticks * 1000 / hz;
        Ok(Self {
            busy_ms: ms(fields[0] + fields[1] + fields[2] + fields[5] + fields[6]),
            idle_ms: ms(fields[3] + fields[4]),
            steal_ms: ms(fields[7]),
        })
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            busy_ms: self.busy_ms.saturating_sub(earlier.busy_ms),
            idle_ms: self.idle_ms.saturating_sub(earlier.idle_ms),
            steal_ms: self.steal_ms.saturating_sub(earlier.steal_ms),
        }
    }

    /// The share of the CPU time that was busy or stolen.
    pub fn busy_share(&self) -> f64 {
        let total = self.busy_ms + self.idle_ms + self.steal_ms;
        if total == 0 {
            return 0.0;
        }
        (self.busy_ms + self.steal_ms) as f64 / total as f64
    }
}

/// Waits until the machine was at most `share` busy (or stolen) over a whole `window`, for at
/// most `patience`; returns how busy the last window was. The kernel tears namespaces down in
/// the background after `ip netns del` returns, and on a two-CPU machine that work competes
/// with the daemons a timing test is about.
pub fn wait_until_quiet(share: f64, window: Duration, patience: Duration) -> Result<f64> {
    let give_up = Instant::now() + patience;
    loop {
        let before = CpuTimes::now()?;
        std::thread::sleep(window);
        let busy = CpuTimes::now()?.since(&before).busy_share();
        if busy <= share || Instant::now() >= give_up {
            return Ok(busy);
        }
    }
}
