//! What this replica knows of each backend's health: passive circuit breaking (consecutive
//! failures open a circuit for a cool-down), a backend's own `Retry-After`, and the verdict
//! of active probes. Time is passed in, so the state machine is tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `[[backend]] circuit = { failures = 3, cooldown = "10s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// How long an open circuit keeps the backend out before one trial request.
    pub cooldown: Duration,
    /// The longest a backend is benched, whatever its `Retry-After` or `cooldown` says.
    pub max_rest: Duration,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self {
            failures: 3,
            cooldown: Duration::from_secs(10),
            max_rest: DEFAULT_MAX_REST,
        }
    }
}

/// Why a backend is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    CircuitOpen { remaining: Duration },
    RetryAfter { remaining: Duration },
    ProbeFailing,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::CircuitOpen { remaining } => {
                write!(f, "circuit open for {} s more", remaining.as_secs().max(1))
            }
            Unavailable::RetryAfter { remaining } => {
                write!(
                    f,
                    "asked for {} s of rest (Retry-After)",
                    remaining.as_secs().max(1)
                )
            }
            Unavailable::ProbeFailing => f.write_str("failing its health check"),
        }
    }
}

/// A backend asking for an hour's rest (or a year's) is benched this long at most.
pub const DEFAULT_MAX_REST: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Clone)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    rest_until: Option<Instant>,
    probe_healthy: Option<bool>,
}

/// Per-backend health of this replica, keyed by backend id.
#[derive(Debug, Default)]
pub struct HealthBoard {
    /// foldhash: keys are routes.toml's backend ids, looked up on every session.
    states: Mutex<HashMap<String, State, foldhash::fast::RandomState>>,
}

impl HealthBoard {
    /// `Ok` when new sessions may go to `backend` now.
    pub fn check(&self, backend: &str, now: Instant) -> Result<(), Unavailable> {
        self.with(backend, |state| {
            if state.probe_healthy == Some(false) {
                return Err(Unavailable::ProbeFailing);
            }
            if let Some(until) = state.rest_until.filter(|until| *until > now) {
                return Err(Unavailable::RetryAfter {
                    remaining: until - now,
                });
            }
            if let Some(until) = state.open_until.filter(|until| *until > now) {
                return Err(Unavailable::CircuitOpen {
                    remaining: until - now,
                });
            }
            Ok(())
        })
    }

    pub fn record_success(&self, backend: &str) {
        self.with(backend, |state| {
            state.consecutive_failures = 0;
            state.open_until = None;
            state.rest_until = None;
        });
    }

    /// A refused connection, timeout or 5xx; `retry_after` when the backend asked for rest.
    pub fn record_failure(
        &self,
        backend: &str,
        now: Instant,
        retry_after: Option<Duration>,
        policy: CircuitPolicy,
    ) {
        self.with(backend, |state| {
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            // Past the threshold every failure (the half-open trial included) re-opens it.
            if state.consecutive_failures >= policy.failures {
                state.open_until = now.checked_add(policy.cooldown.min(policy.max_rest));
            }
            if let Some(rest) = retry_after.filter(|d| !d.is_zero()) {
                state.rest_until = now.checked_add(rest.min(policy.max_rest));
            }
        });
    }

    /// The verdict of an active health check (`None`: no checks configured). A passing
    /// check ends a rest the backend asked for: it says it is back.
    pub fn set_probe(&self, backend: &str, healthy: Option<bool>) {
        self.with(backend, |state| {
            state.probe_healthy = healthy;
            if healthy == Some(true) {
                state.rest_until = None;
            }
        });
    }

    /// Backends not skipped now, for readiness.
    pub fn is_available(&self, backend: &str, now: Instant) -> bool {
        self.check(backend, now).is_ok()
    }

    fn with<T>(&self, backend: &str, f: impl FnOnce(&mut State) -> T) -> T {
        // One call never leaves a state half-updated, so a poisoned lock is still sound.
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before inserting: an `entry` would copy the id on every request.
        if let Some(state) = states.get_mut(backend) {
            return f(state);
        }
        f(states.entry(backend.to_owned()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_open_the_circuit_for_a_cooldown() {
        let board = HealthBoard::default();
        let policy = CircuitPolicy {
            failures: 3,
            cooldown: Duration::from_secs(10),
            max_rest: DEFAULT_MAX_REST,
        };
        let t0 = Instant::now();
        for _ in 0..2 {
            board.record_failure("a", t0, None, policy);
        }
        assert!(board.check("a", t0).is_ok(), "two failures are not three");
        board.record_failure("a", t0, None, policy);
        assert!(matches!(
            board.check("a", t0),
            Err(Unavailable::CircuitOpen { .. })
        ));
        let later = t0 + Duration::from_secs(11);
        assert!(
            board.check("a", later).is_ok(),
            "half-open after the cooldown"
        );
        board.record_failure("a", later, None, policy);
        assert!(
            board.check("a", later).is_err(),
            "a failed trial re-opens at once"
        );
        board.record_success("a");
        assert!(board.check("a", later).is_ok());
        assert!(board.check("b", t0).is_ok(), "backends are independent");
    }

    #[test]
    fn rests_are_clamped_and_a_passing_probe_ends_them() {
        let board = HealthBoard::default();
        let t0 = Instant::now();
        let policy = CircuitPolicy {
            failures: 1,
            cooldown: Duration::from_secs(u64::MAX),
            max_rest: Duration::from_secs(60),
        };
        board.record_failure("a", t0, Some(Duration::from_secs(u64::MAX)), policy);
        assert!(board.check("a", t0 + Duration::from_secs(59)).is_err());
        assert!(
            board.check("a", t0 + Duration::from_secs(61)).is_ok(),
            "no rest or cooldown beyond max_rest"
        );
        board.record_failure(
            "b",
            t0,
            Some(Duration::from_secs(30)),
            CircuitPolicy::default(),
        );
        assert!(board.check("b", t0 + Duration::from_secs(1)).is_err());
        board.set_probe("b", Some(true));
        assert!(
            board.check("b", t0 + Duration::from_secs(1)).is_ok(),
            "the probe passed"
        );
    }

    #[test]
    fn retry_after_rests_a_backend() {
        let board = HealthBoard::default();
        let t0 = Instant::now();
        board.record_failure(
            "a",
            t0,
            Some(Duration::from_secs(30)),
            CircuitPolicy::default(),
        );
        assert!(matches!(
            board.check("a", t0 + Duration::from_secs(29)),
            Err(Unavailable::RetryAfter { .. })
        ));
        assert!(board.check("a", t0 + Duration::from_secs(31)).is_ok());
    }

    #[test]
    fn failing_probes_take_a_backend_out_until_they_pass() {
        let board = HealthBoard::default();
        let t0 = Instant::now();
        board.set_probe("a", Some(false));
        assert_eq!(board.check("a", t0), Err(Unavailable::ProbeFailing));
        board.set_probe("a", Some(true));
        assert!(board.check("a", t0).is_ok());
    }
}
