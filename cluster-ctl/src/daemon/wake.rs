//! When the loop wakes and what it does first, as pure functions of the clock readings.
//!
//! The tick (lease renewal, heartbeats) comes first when it is due, however busy the inputs
//! are: a flood of packets must not delay it. Between ticks the loop also wakes exactly when a
//! peer would time out, so that detection does not wait for a tick. Before it judges a silence
//! (a tick or a deadline is due and nothing is queued) it reads what is still in the heartbeat
//! sockets itself, once per wake-up.

use std::time::{Duration, Instant};

/// What the loop does next, decided at one clock reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Wake {
    /// The tick is due: no waiting for inputs.
    pub tick_due: bool,
    /// How long to wait for an input: until the next tick, or until the engine's deadline if
    /// that comes first. Zero when either is due.
    pub wait: Duration,
}

/// The tick and engine deadline a wake-up is for (the sockets are read once per key).
pub(super) type WakeKey = (Instant, Option<cluster_engine::Instant>);

/// The decision at `now`, with the next tick at `next_tick` and the engine's next deadline
/// `deadline_in` from now (a deadline at or after the tick is the tick's business).
pub(super) fn wake(now: Instant, next_tick: Instant, deadline_in: Option<Duration>) -> Wake {
    let until_tick = next_tick.saturating_duration_since(now);
    let wait = match deadline_in {
        Some(deadline) if deadline < until_tick => deadline,
        _ => until_tick,
    };
    Wake {
        tick_due: now >= next_tick,
        wait,
    }
}

/// Whether to read the heartbeat sockets now: nothing came in, a tick or a deadline is due, and
/// the sockets were not read for this wake-up yet (a flood cannot hold the tick off).
pub(super) fn read_sockets(
    got_input: bool,
    wake: &Wake,
    last: Option<WakeKey>,
    key: WakeKey,
) -> bool {
    !got_input && (wake.tick_due || wake.wait.is_zero()) && last != Some(key)
}

/// The tick after the one that fired at `next_tick`: one interval on, or, after a stall that
/// overran it, one interval from `now` (no burst of ticks to catch up).
pub(super) fn following_tick(next_tick: Instant, interval: Duration, now: Instant) -> Instant {
    let following = next_tick + interval;
    if following < now {
        now + interval
    } else {
        following
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_due_tick_comes_first_and_waits_for_nothing() {
        let now = Instant::now();
        let w = wake(now, now, Some(5 * MS));
        assert!(w.tick_due);
        assert_eq!(w.wait, Duration::ZERO);
        let late = wake(now + 3 * MS, now, None);
        assert!(late.tick_due && late.wait.is_zero());
    }

    #[test]
    fn a_deadline_before_the_tick_sets_the_wait_and_one_after_it_is_ignored() {
        let now = Instant::now();
        let next_tick = now + 10 * MS;
        assert_eq!(wake(now, next_tick, Some(4 * MS)).wait, 4 * MS);
        assert_eq!(wake(now, next_tick, Some(10 * MS)).wait, 10 * MS);
        assert_eq!(wake(now, next_tick, Some(25 * MS)).wait, 10 * MS);
        assert_eq!(wake(now, next_tick, None).wait, 10 * MS);
        let due = wake(now, next_tick, Some(Duration::ZERO));
        assert!(!due.tick_due && due.wait.is_zero());
    }

    #[test]
    fn the_sockets_are_read_once_per_wake_up_and_only_when_something_is_due() {
        let now = Instant::now();
        let next_tick = now + 10 * MS;
        let key = (next_tick, Some(cluster_engine::Instant::from_nanos(42)));
        let due = wake(now, next_tick, Some(Duration::ZERO));
        assert!(read_sockets(false, &due, None, key));
        assert!(!read_sockets(false, &due, Some(key), key));
        assert!(read_sockets(
            false,
            &due,
            Some((next_tick, Some(cluster_engine::Instant::from_nanos(41)))),
            key
        ));
        assert!(!read_sockets(true, &due, None, key));
        let waiting = wake(now, next_tick, Some(3 * MS));
        assert!(!read_sockets(false, &waiting, None, key));
        let tick = wake(next_tick, next_tick, None);
        assert!(read_sockets(false, &tick, None, (next_tick, None)));
    }

    #[test]
    fn ticks_keep_their_schedule_but_do_not_burst_after_a_stall() {
        let start = Instant::now();
        let interval = 10 * MS;
        assert_eq!(
            following_tick(start, interval, start + MS),
            start + interval
        );
        // Woken 35 ms late: the next tick is an interval from now, not three at once.
        let now = start + 35 * MS;
        assert_eq!(following_tick(start, interval, now), now + interval);
    }
}
