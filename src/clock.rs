//! The gateway's time: real time, or real time that tests push forward instead of sleeping
//! (token expiry, circuit cool-downs, `Retry-After` rests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Nanoseconds added to real time; `None` for the real clock.
    ahead: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn real() -> Self {
        Self::default()
    }

    /// Real time that [`Clock::advance`] moves forward; clones share it.
    pub fn adjustable() -> Self {
        Self {
            ahead: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves an adjustable clock forward (a real one does not move).
    pub fn advance(&self, by: Duration) {
        if let Some(ahead) = &self.ahead {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            ahead.fetch_add(nanos, Ordering::SeqCst);
        }
    }

    fn ahead(&self) -> Duration {
        self.ahead.as_ref().map_or(Duration::ZERO, |a| {
            Duration::from_nanos(a.load(Ordering::SeqCst))
        })
    }

    /// Unix seconds.
    pub fn unix(&self) -> u64 {
        (SystemTime::now() + self.ahead())
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Monotonic time, for health and rests.
    pub fn instant(&self) -> Instant {
        Instant::now() + self.ahead()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_both_times_and_its_clones() {
        let clock = Clock::adjustable();
        let copy = clock.clone();
        let (unix, instant) = (clock.unix(), clock.instant());
        copy.advance(Duration::from_secs(3600));
        assert!(clock.unix() >= unix + 3600);
        assert!(clock.instant() >= instant + Duration::from_secs(3600));
        let real = Clock::real();
        real.advance(Duration::from_secs(3600));
        assert!(real.unix() < unix + 3600);
    }
}
