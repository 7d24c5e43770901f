//! This replica's own live sessions, for metrics and limits only: nothing a request needs to
//! find its backend lives here (that is in the token), so losing it loses no session.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::kind::EndpointKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub backend: String,
    pub route: String,
    pub kind: EndpointKind,
    /// Unix seconds.
    pub created: u64,
}

#[derive(Debug, Default)]
pub struct SessionRegistry {
    live: Mutex<HashMap<String, LiveSession>>,
}

impl SessionRegistry {
    pub fn insert(&self, sid: String, session: LiveSession) {
        self.with(|live| {
            live.insert(sid, session);
        });
    }

    /// Forgets a session; `None` when this replica did not create it.
    pub fn remove(&self, sid: &str) -> Option<LiveSession> {
        self.with(|live| live.remove(sid))
    }

    pub fn len(&self) -> usize {
        self.with(|live| live.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn count_for_backend(&self, backend: &str) -> usize {
        self.with(|live| live.values().filter(|s| s.backend == backend).count())
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, LiveSession>) -> T) -> T {
        // A panic while holding this lock cannot leave the map half-updated (single calls),
        // so a poisoned lock is still safe to use.
        let mut guard = self.live.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}
