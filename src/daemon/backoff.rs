//! [`Backoff`]: how long the supervisor waits before it replaces a worker that keeps failing.

use std::time::Duration;

/// The crash-loop policy, per worker (a replacement inherits the count of the worker it
/// replaces): a worker that ran `stable_after` or longer is replaced at once and clears the
/// count; the first quick exit in a row is replaced at once too (one kill is not a crash
/// loop); the second after `initial`, then twice as long each time, up to `max`. circus
/// replaces a crash-looping worker four times a second forever; this spaces the attempts out
/// and says so in the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay after a quick exit.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// An uptime after which an exit does not count as a crash.
    pub stable_after: Duration,
}

impl Default for Backoff {
    /// 100 ms, doubling up to 30 s; a worker up for 10 s is stable.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before the next start, after `failures` quick exits in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let doublings = (failures - 2).min(31);
        self.initial
            .checked_mul(1 << doublings)
            .map_or(self.max, |delay| delay.min(self.max))
    }

    /// The count of quick exits in a row after a worker that ran for `uptime` exited.
    pub fn after_exit(&self, failures: u32, uptime: Duration) -> u32 {
        if uptime >= self.stable_after {
            0
        } else {
            failures.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_exits_double_the_delay_up_to_the_cap_and_a_stable_run_resets_it() {
        let policy = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            stable_after: Duration::from_secs(5),
        };
        assert_eq!(policy.delay(0), Duration::ZERO);
        assert_eq!(policy.delay(1), Duration::ZERO);
        assert_eq!(policy.delay(2), Duration::from_millis(100));
        assert_eq!(policy.delay(3), Duration::from_millis(200));
        assert_eq!(policy.delay(5), Duration::from_millis(800));
        assert_eq!(policy.delay(6), Duration::from_secs(1));
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(1));
        let quick = Duration::from_millis(10);
        assert_eq!(policy.after_exit(0, quick), 1);
        assert_eq!(policy.after_exit(3, quick), 4);
        assert_eq!(policy.after_exit(3, Duration::from_secs(6)), 0);
        assert_eq!(policy.after_exit(u32::MAX, quick), u32::MAX);
    }
}
