//! A route's relay plan, and the pure decision of which relay legs a published stream
//! should have: given the plan, the legs it has and when targets last failed, which legs to
//! open and which to close. The SFU's supervisor (`server::relay`) carries them out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::BackendId;

impl RelayPlan {
    /// One line for `explain`.
    pub fn describe(&self) -> String {
        let targets: Vec<&str> = self.to.iter().map(BackendId::as_str).collect();
        let how = match self.mode {
            RelayMode::All => format!("a copy on each of {}", targets.join(", ")),
            RelayMode::Failover => format!(
                "one copy, on the first that works of {}",
                targets.join(", ")
            ),
        };
        let failback = match (self.mode, self.failback) {
            (RelayMode::Failover, Some(after)) => format!(
                "; back to an earlier target once it has rested {} s",
                after.as_secs()
            ),
            (RelayMode::Failover, None) => "; no failback".to_owned(),
            (RelayMode::All, _) => String::new(),
        };
        format!("relay (publishers on the built-in SFU): {how}{failback}")
    }
}

/// `relay = { to = [...], mode = "...", failback = "30s" }` of a `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPlan {
    /// Backends the stream is republished to, in order of preference.
    pub to: Vec<BackendId>,
    pub mode: RelayMode,
    /// `failover`: once a preferred target has rested this long after failing, a leg to it
    /// is opened beside the current one and, once connected, replaces it. `None`: stay on
    /// the target that works.
    pub failback: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    /// A copy on every target.
    All,
    /// One copy, on the first target that works.
    Failover,
}

impl RelayMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Failover => "failover",
        }
    }
}

/// A leg as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegView {
    pub target: BackendId,
    pub connected: bool,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAction {
    Open(BackendId),
    /// Close the leg to this target; `replaced` when a better leg took over.
    Close {
        target: BackendId,
        replaced: bool,
    },
}

/// How long a target that failed rests before it is tried again: doubling from 1 s with
/// each failure in a row, up to 30 s; `failback` when the target is a preferred one.
pub fn rest_after(failures_in_a_row: u32) -> Duration {
    let exponent = failures_in_a_row.saturating_sub(1).min(5);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(30))
}

/// When each target last failed and how many times in a row.
#[derive(Debug, Clone, Default)]
pub struct Failures {
    by_target: HashMap<BackendId, (Instant, u32)>,
}

impl Failures {
    pub fn record(&mut self, target: &BackendId, now: Instant) {
        let entry = self.by_target.entry(target.clone()).or_insert((now, 0));
        *entry = (now, entry.1.saturating_add(1));
    }

    /// A leg to it connected: its next failure rests it briefly again.
    pub fn clear(&mut self, target: &BackendId) {
        self.by_target.remove(target);
    }

    /// Whether `target` may be tried at `now`; `preferred_rest` (failback) replaces the
    /// usual rest for targets better than the current one.
    fn resting(&self, target: &BackendId, now: Instant, rest: Option<Duration>) -> bool {
        self.by_target.get(target).is_some_and(|(at, count)| {
            now.saturating_duration_since(*at) < rest.unwrap_or_else(|| rest_after(*count))
        })
    }

    /// When a resting target may next be tried (after its rest or its failback time,
    /// whichever applies then), for the supervisor's timer.
    pub fn next_retry(&self, plan: &RelayPlan, now: Instant) -> Option<Instant> {
        plan.to
            .iter()
            .filter_map(|target| self.by_target.get(target))
            .flat_map(|(at, count)| {
                [
                    Some(*at + rest_after(*count)),
                    plan.failback.map(|f| *at + f),
                ]
            })
            .flatten()
            .filter(|at| *at > now)
            .min()
    }

    /// Forgets targets no longer in the plan (a reload removed them).
    pub fn retain(&mut self, plan: &RelayPlan) {
        self.by_target.retain(|target, _| plan.to.contains(target));
    }
}

/// The legs to open and close so that the stream's legs follow `plan`.
pub fn decide(
    plan: &RelayPlan,
    legs: &[LegView],
    failures: &Failures,
    now: Instant,
) -> Vec<RelayAction> {
    let mut actions: Vec<RelayAction> = legs
        .iter()
        .filter(|leg| !plan.to.contains(&leg.target))
        .map(|leg| RelayAction::Close {
            target: leg.target.clone(),
            replaced: false,
        })
        .collect();
    let has = |target: &BackendId| legs.iter().find(|leg| &leg.target == target);
    match plan.mode {
        RelayMode::All => {
            for target in &plan.to {
                if has(target).is_none() && !failures.resting(target, now, None) {
                    actions.push(RelayAction::Open(target.clone()));
                }
            }
        }
        RelayMode::Failover => {
            // The best connected leg serves; a better one is tried beside it only with
            // failback, and a worse or redundant one is closed.
            let serving = plan
                .to
                .iter()
                .position(|target| has(target).is_some_and(|leg| leg.connected));
            let wanted_before = serving.unwrap_or(plan.to.len());
            let rest = |index: usize| {
                if serving.is_some() {
                    // Only failback brings a leg back above the serving one.
                    plan.failback
                } else {
                    None
                }
                .filter(|_| index < wanted_before)
            };
            let connecting = plan.to[..wanted_before]
                .iter()
                .any(|target| has(target).is_some_and(|leg| !leg.connected));
            let may_try_better = serving.is_none() || plan.failback.is_some();
            if !connecting && may_try_better {
                let candidate = plan.to[..wanted_before]
                    .iter()
                    .enumerate()
                    .find(|(index, target)| !failures.resting(target, now, rest(*index)));
                if let Some((_, target)) = candidate {
                    actions.push(RelayAction::Open(target.clone()));
                }
            }
            if let Some(serving) = serving {
                for (index, target) in plan.to.iter().enumerate() {
                    if index > serving && has(target).is_some() {
                        actions.push(RelayAction::Close {
                            target: target.clone(),
                            replaced: true,
                        });
                    }
                }
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> BackendId {
        BackendId(name.into())
    }

    fn plan(mode: RelayMode, failback: Option<u64>) -> RelayPlan {
        RelayPlan {
            to: vec![id("a"), id("b"), id("c")],
            mode,
            failback: failback.map(Duration::from_secs),
        }
    }

    fn leg(target: &str, connected: bool) -> LegView {
        LegView {
            target: id(target),
            connected,
        }
    }

    #[test]
    fn all_opens_every_target_and_retries_after_a_rest() {
        let now = Instant::now();
        let plan = plan(RelayMode::All, None);
        let mut failures = Failures::default();
        assert_eq!(
            decide(&plan, &[], &failures, now),
            vec![
                RelayAction::Open(id("a")),
                RelayAction::Open(id("b")),
                RelayAction::Open(id("c"))
            ]
        );
        failures.record(&id("b"), now);
        let legs = [leg("a", true), leg("c", false)];
        assert!(decide(&plan, &legs, &failures, now).is_empty());
        assert_eq!(
            decide(&plan, &legs, &failures, now + Duration::from_secs(1)),
            vec![RelayAction::Open(id("b"))]
        );
    }

    #[test]
    fn rests_double_up_to_thirty_seconds() {
        let rests: Vec<u64> = (1..=8).map(|n| rest_after(n).as_secs()).collect();
        assert_eq!(rests, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn failover_keeps_one_leg_and_moves_down_the_list() {
        let now = Instant::now();
        let plan = plan(RelayMode::Failover, None);
        let mut failures = Failures::default();
        assert_eq!(
            decide(&plan, &[], &failures, now),
            vec![RelayAction::Open(id("a"))]
        );
        // Connecting: wait for it.
        assert!(decide(&plan, &[leg("a", false)], &failures, now).is_empty());
        assert!(decide(&plan, &[leg("a", true)], &failures, now).is_empty());
        // a failed: b at once, not a again.
        failures.record(&id("a"), now);
        assert_eq!(
            decide(&plan, &[], &failures, now),
            vec![RelayAction::Open(id("b"))]
        );
        // b failed too: c.
        failures.record(&id("b"), now);
        assert_eq!(
            decide(&plan, &[], &failures, now),
            vec![RelayAction::Open(id("c"))]
        );
        // Without failback, a working c stays even when a could be tried again.
        let later = now + Duration::from_secs(60);
        assert!(decide(&plan, &[leg("c", true)], &failures, later).is_empty());
        // With nothing serving, the first target that rested enough is tried.
        assert_eq!(
            decide(&plan, &[], &failures, later),
            vec![RelayAction::Open(id("a"))]
        );
    }

    #[test]
    fn failback_tries_the_preferred_target_beside_the_serving_one_then_replaces_it() {
        let now = Instant::now();
        let plan = plan(RelayMode::Failover, Some(30));
        let mut failures = Failures::default();
        failures.record(&id("a"), now);
        let serving_b = [leg("b", true)];
        assert!(
            decide(&plan, &serving_b, &failures, now + Duration::from_secs(10)).is_empty(),
            "a rests for the failback time, not the short rest"
        );
        let later = now + Duration::from_secs(31);
        assert_eq!(
            decide(&plan, &serving_b, &failures, later),
            vec![RelayAction::Open(id("a"))]
        );
        // Make before break: b serves until a connects.
        assert!(decide(&plan, &[leg("a", false), leg("b", true)], &failures, later).is_empty());
        assert_eq!(
            decide(&plan, &[leg("a", true), leg("b", true)], &failures, later),
            vec![RelayAction::Close {
                target: id("b"),
                replaced: true
            }]
        );
        assert_eq!(
            failures.next_retry(&plan, now),
            Some(now + Duration::from_secs(1))
        );
        assert_eq!(
            failures.next_retry(&plan, now + Duration::from_secs(2)),
            Some(now + Duration::from_secs(30))
        );
    }

    #[test]
    fn targets_a_reload_removed_are_closed() {
        let now = Instant::now();
        let mut plan = plan(RelayMode::All, None);
        plan.to = vec![id("a")];
        assert_eq!(
            decide(
                &plan,
                &[leg("a", true), leg("z", true)],
                &Failures::default(),
                now
            ),
            vec![RelayAction::Close {
                target: id("z"),
                replaced: false
            }]
        );
    }
}
