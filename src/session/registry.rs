//! This replica's own live sessions, for metrics and limits only: nothing a request needs to
//! find its backend lives here (that is in the token), so losing it loses no session.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::kind::EndpointKind;

/// foldhash, randomly seeded: SipHash was most of a lookup here, on every session created
/// and ended, and the keys are session ids the gateway made and backend ids and subjects
/// that came authenticated.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

impl Sessions {
    /// The live counts and the reservations `held` is counted in, and its key.
    fn places<'h>(
        &mut self,
        held: &'h Held,
    ) -> (&Map<String, usize>, &mut Map<String, usize>, &'h str) {
        match held {
            Held::Backend(key) => (&self.per_backend, &mut self.reserved, key),
            Held::Subject(key) => (&self.per_subject, &mut self.reserved_subjects, key),
            // Never asked: `hold` counts these apart.
            Held::Any => (&self.per_backend, &mut self.reserved, ""),
        }
    }

    fn forget(&mut self, session: &LiveSession) {
        if let Some(count) = self.per_backend.get_mut(&session.backend) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_backend.remove(&session.backend);
            }
        }
        if let Some(subject) = &session.subject {
            if let Some(count) = self.per_subject.get_mut(subject) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_subject.remove(subject);
                }
            }
        }
    }
}

/// A place on a backend (or of a subject) held while a session is being created.
#[derive(Debug)]
pub struct Reservation<'a> {
    registry: &'a SessionRegistry,
    held: Held,
}

#[derive(Debug)]
enum Held {
    Backend(String),
    Subject(String),
    /// A place among all of this replica's sessions (`[server] max_live_sessions`).
    Any,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.registry.with(|live| {
            if let Held::Any = self.held {
                live.reserved_any = live.reserved_any.saturating_sub(1);
                return;
            }
            let (_, reserved, key) = live.places(&self.held);
            if let Some(count) = reserved.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    reserved.remove(key);
                }
            }
        });
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub backend: String,
    pub stream: String,
    /// The authenticated client, for per-subject limits.
    pub subject: Option<String>,
    pub route: String,
    pub kind: EndpointKind,
    /// Unix seconds.
    pub created: u64,
    /// The backend's resource (as sealed in the token), to ask the backend whether the
    /// session still exists when its client never sends DELETE.
    pub resource: String,
    /// The adapter's sealed state, for ending the session from here (a drain).
    pub state: super::SessionState,
}

impl LiveSession {
    /// The claims a request for this session would carry, for ending it from this replica
    /// (its backend said it ended, or a drain ends it); `expires` is unknown here.
    pub fn into_claims(self, sid: String) -> super::SessionClaims {
        super::SessionClaims {
            sid,
            backend: self.backend,
            resource: self.resource,
            kind: self.kind,
            stream: self.stream,
            route: self.route,
            created: self.created,
            expires: 0,
            subject: None,
            state: self.state,
        }
    }
}

/// `Debug` without the resource URL, which may hold a vendor secret.
impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("backend", &self.backend)
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("route", &self.route)
            .field("kind", &self.kind)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Session time not yet counted, per backend (for session-seconds and cost metrics).
pub type Unaccounted = Vec<(String, u64)>;

#[derive(Debug, Default)]
pub struct SessionRegistry {
    live: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    /// Each session with the Unix second up to which its time has been counted.
    by_sid: Map<String, (LiveSession, u64)>,
    /// Kept alongside so that `max_sessions` checks are O(1).
    per_backend: Map<String, usize>,
    /// Likewise for `max_sessions_per_subject`.
    per_subject: Map<String, usize>,
    /// Places taken by sessions being created: counted against `max_sessions` with the live
    /// ones, so that concurrent requests cannot all pass the check before any is inserted.
    reserved: Map<String, usize>,
    /// Likewise against `max_sessions_per_subject`.
    reserved_subjects: Map<String, usize>,
    /// Likewise against `[server] max_live_sessions`.
    reserved_any: usize,
}

/// Adds one to `key`'s count; the key is copied only the first time (this runs under the
/// registry's lock on every session created).
fn count_up(counts: &mut Map<String, usize>, key: &str) {
    match counts.get_mut(key) {
        Some(count) => *count += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

impl SessionRegistry {
    pub fn insert(&self, sid: String, session: LiveSession) {
        self.with(|live| {
            count_up(&mut live.per_backend, &session.backend);
            if let Some(subject) = &session.subject {
                count_up(&mut live.per_subject, subject);
            }
            let since = session.created;
            if let Some((old, _)) = live.by_sid.insert(sid, (session, since)) {
                live.forget(&old);
            }
        });
    }

    /// Forgets a session; `None` when this replica did not create it. Also returns the
    /// seconds of it not yet counted.
    pub fn remove(&self, sid: &str, now: u64) -> Option<(LiveSession, u64)> {
        self.with(|live| {
            let (session, accounted) = live.by_sid.remove(sid)?;
            live.forget(&session);
            Some((session, now.saturating_sub(accounted)))
        })
    }

    /// Forgets sessions older than `ttl` at `now`: their tokens have expired, so no request
    /// can end them any more. Returns each with its uncounted seconds up to its expiry.
    pub fn expire(&self, now: u64, ttl: u64) -> Vec<(LiveSession, u64)> {
        let created_by = now.saturating_sub(ttl);
        self.with(|live| {
            let expired: Vec<String> = live
                .by_sid
                .iter()
                .filter(|(_, (session, _))| session.created <= created_by)
                .map(|(sid, _)| sid.clone())
                .collect();
            expired
                .into_iter()
                .filter_map(|sid| {
                    let (session, accounted) = live.by_sid.remove(&sid)?;
                    live.forget(&session);
                    let until = now.min(session.created.saturating_add(ttl));
                    Some((session, until.saturating_sub(accounted)))
                })
                .collect()
        })
    }

    /// Session time since the last call, per backend; live sessions count as they run.
    pub fn account(&self, now: u64) -> Unaccounted {
        self.with(|live| {
            let mut per_backend: HashMap<String, u64> = HashMap::new();
            for (session, accounted) in live.by_sid.values_mut() {
                let delta = now.saturating_sub(*accounted);
                if delta > 0 {
                    *per_backend.entry(session.backend.clone()).or_default() += delta;
                    *accounted = now;
                }
            }
            per_backend.into_iter().collect()
        })
    }

    /// The sessions of `backend`, with their ids.
    pub fn on_backend(&self, backend: &str) -> Vec<(String, LiveSession)> {
        self.with(|live| {
            live.by_sid
                .iter()
                .filter(|(_, (session, _))| session.backend == backend)
                .map(|(sid, (session, _))| (sid.clone(), session.clone()))
                .collect()
        })
    }

    /// Whether any live session satisfies `test` (a scan: for rare questions only).
    pub fn any(&self, test: impl Fn(&LiveSession) -> bool) -> bool {
        self.with(|live| live.by_sid.values().any(|(session, _)| test(session)))
    }

    /// A copy of every live session, for the admin listing.
    pub fn snapshot(&self) -> Vec<LiveSession> {
        self.with(|live| live.by_sid.values().map(|(s, _)| s.clone()).collect())
    }

    pub fn len(&self) -> usize {
        self.with(|live| live.by_sid.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a place on `backend` if fewer than `max` sessions are live or being created
    /// there; the place is given back when the returned guard drops (after the session is
    /// inserted, or when creating it failed).
    pub fn reserve<'a>(&'a self, backend: &str, max: usize) -> Option<Reservation<'a>> {
        self.hold(Held::Backend(backend.to_owned()), max)
    }

    /// The same for one client subject's `max_sessions_per_subject`.
    pub fn reserve_for_subject<'a>(&'a self, subject: &str, max: usize) -> Option<Reservation<'a>> {
        self.hold(Held::Subject(subject.to_owned()), max)
    }

    /// The same for all of this replica's sessions together, so that no client (an anonymous
    /// flood included) grows the registry past `max`.
    pub fn reserve_any(&self, max: usize) -> Option<Reservation<'_>> {
        self.hold(Held::Any, max)
    }

    fn hold(&self, held: Held, max: usize) -> Option<Reservation<'_>> {
        self.with(|live| {
            if let Held::Any = held {
                if live.by_sid.len() + live.reserved_any >= max {
                    return None;
                }
                live.reserved_any += 1;
                return Some(());
            }
            let (counts, reserved, key) = live.places(&held);
            let taken =
                counts.get(key).copied().unwrap_or(0) + reserved.get(key).copied().unwrap_or(0);
            if taken >= max {
                return None;
            }
            count_up(reserved, key);
            Some(())
        })?;
        Some(Reservation {
            registry: self,
            held,
        })
    }

    pub fn count_for_backend(&self, backend: &str) -> usize {
        self.with(|live| live.per_backend.get(backend).copied().unwrap_or(0))
    }

    pub fn count_for_subject(&self, subject: &str) -> usize {
        self.with(|live| live.per_subject.get(subject).copied().unwrap_or(0))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Sessions) -> T) -> T {
        // A panic while holding this lock cannot leave the map half-updated (single calls),
        // so a poisoned lock is still safe to use.
        let mut guard = self.live.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_against_the_limit_until_dropped() {
        let registry = SessionRegistry::default();
        let first = registry.reserve("b", 2).expect("first place");
        let second = registry.reserve("b", 2).expect("second place");
        assert!(
            registry.reserve("b", 2).is_none(),
            "two in flight fill a limit of 2"
        );
        drop(first);
        registry.insert("s1".into(), session("b", 0));
        drop(second);
        assert!(registry.reserve("b", 2).is_some(), "one live, one free");
        registry.insert("s2".into(), session("b", 0));
        assert!(registry.reserve("b", 2).is_none(), "two live");
    }

    #[test]
    fn the_whole_registry_is_bounded_across_backends() {
        let registry = SessionRegistry::default();
        registry.insert("s1".into(), session("a", 0));
        let pending = registry.reserve_any(3).expect("one live, none pending");
        registry.insert("s2".into(), session("b", 0));
        assert!(
            registry.reserve_any(3).is_none(),
            "two live and one pending fill 3"
        );
        drop(pending);
        let last = registry.reserve_any(3).expect("two live");
        registry.insert("s3".into(), session("c", 0));
        drop(last);
        assert!(registry.reserve_any(3).is_none(), "three live");
        registry.remove("s1", 0);
        assert!(registry.reserve_any(3).is_some());
    }

    fn session(backend: &str, created: u64) -> LiveSession {
        LiveSession {
            resource: String::new(),
            state: Default::default(),
            backend: backend.into(),
            stream: "s".into(),
            subject: None,
            route: "r".into(),
            kind: EndpointKind::Whip,
            created,
        }
    }

    #[test]
    fn counts_accounts_and_expires() {
        let registry = SessionRegistry::default();
        registry.insert("a".into(), session("janus", 100));
        registry.insert("b".into(), session("janus", 200));
        registry.insert("c".into(), session("vendor", 300));
        assert_eq!(registry.count_for_backend("janus"), 2);
        let mut accounted = registry.account(400);
        accounted.sort();
        assert_eq!(
            accounted,
            vec![("janus".to_string(), 500), ("vendor".to_string(), 100)]
        );
        let expired = registry.expire(450, 250);
        assert_eq!(expired.len(), 2);
        let mut seconds: Vec<u64> = expired.iter().map(|(_, s)| *s).collect();
        seconds.sort();
        assert_eq!(
            seconds,
            vec![0, 50],
            "counted up to each token's expiry (350, 450)"
        );
        assert_eq!(registry.count_for_backend("janus"), 0);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.remove("c", 460).map(|(_, s)| s), Some(60));
        assert!(registry.is_empty());
    }
}
