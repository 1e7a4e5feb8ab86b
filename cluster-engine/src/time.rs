//! Time as the engine sees it: instants on the caller's monotonic clock, kept apart from
//! [`Duration`]s so that a remaining time cannot be passed where a point in time is meant.

use std::{
    ops::{Add, AddAssign},
    time::Duration,
};

/// A point on the caller's monotonic clock: CLOCK_MONOTONIC in the daemon (the clock the XDP
/// program compares leases with), virtual time in the simulator. Nanoseconds since the clock's
/// origin; on the wire as such.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin, before every event: a lease that ends here has ended.
    pub const ZERO: Self = Self(0);

    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`; zero when `earlier` is not earlier (a peer's echo or
    /// a restarted clock may be ahead).
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the end of the clock instead of wrapping (a wire value near `u64::MAX` is
    /// a lie, not a reason to panic).
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_durations_meet_only_by_addition_and_difference() {
        let t = Instant::from_nanos(5_000);
        assert_eq!(t + Duration::from_nanos(2_000), Instant::from_nanos(7_000));
        assert_eq!(
            Instant::from_nanos(7_000).saturating_since(t),
            Duration::from_nanos(2_000)
        );
        assert_eq!(
            t.saturating_since(Instant::from_nanos(9_000)),
            Duration::ZERO
        );
        assert_eq!(
            Instant::from_nanos(u64::MAX - 1) + Duration::from_secs(1),
            Instant::from_nanos(u64::MAX)
        );
    }
}
