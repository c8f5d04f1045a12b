//! The clocks, read in one place. Policy decisions take `now` as a parameter; this is where the
//! gateway gets it.
//!
//! The kernel keeps a coarse copy of each clock, updated once per scheduler tick (a few
//! milliseconds); reading it costs a fraction of a precise read (which on a virtual machine can
//! take as long as the rest of a small function). What counts in seconds — a credential's
//! expiry, a cache entry's freshness, an idle connection's age, a timeout — reads the coarse
//! copy; what measures a duration reads `Instant::now()`.

use std::time::Instant;

/// Unix seconds now (the coarse wall clock).
#[cfg(target_os = "linux")]
pub fn now() -> u64 {
    use rustix::time::{clock_gettime, ClockId};
    u64::try_from(clock_gettime(ClockId::RealtimeCoarse).tv_sec).unwrap_or(0)
}

/// An `Instant` from the coarse monotonic clock: within a tick of `Instant::now()`, either way.
#[cfg(target_os = "linux")]
pub fn coarse() -> Instant {
    use rustix::time::{clock_gettime, ClockId};
    use std::sync::OnceLock;
    use std::time::Duration;
    fn monotonic_coarse() -> Duration {
        let t = clock_gettime(ClockId::MonotonicCoarse);
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        Duration::new(secs, u32::try_from(t.tv_nsec).unwrap_or(0))
    }
    // The precise and the coarse readings of the same clock, taken together once.
    static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
    let (at, from) = *BASE.get_or_init(|| (Instant::now(), monotonic_coarse()));
    at + monotonic_coarse().saturating_sub(from)
}

/// [`coarse`] as tokio's `Instant` (tokio's timers take it; it is the same clock).
pub fn coarse_tokio() -> tokio::time::Instant {
    tokio::time::Instant::from_std(coarse())
}

/// Unix seconds now (elsewhere than Linux, the precise clock).
#[cfg(not(target_os = "linux"))]
pub fn now() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `Instant::now()` (elsewhere than Linux, the precise clock).
#[cfg(not(target_os = "linux"))]
pub fn coarse() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// The tick of the coarse clocks is a few milliseconds; a second of slack covers a busy
    /// machine descheduling the test between two readings.
    const SLACK: Duration = Duration::from_secs(1);

    #[test]
    fn the_coarse_clocks_keep_to_the_precise_ones() {
        for _ in 0..1000 {
            let before = Instant::now();
            let coarse = coarse();
            let after = Instant::now();
            assert!(coarse + SLACK >= before && coarse <= after + SLACK);
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_secs();
            assert!(now().abs_diff(wall) <= 1, "{} against {wall}", now());
        }
        // It moves on.
        let start = coarse();
        let deadline = Instant::now() + Duration::from_secs(10);
        while coarse() <= start {
            assert!(Instant::now() < deadline, "the coarse clock stood still");
            std::thread::yield_now();
        }
    }
}
