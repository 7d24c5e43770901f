//! This replica's own live sessions, for metrics and limits only: nothing a request needs to
//! find its backend lives here (that is in the token), so losing it loses no session.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::kind::EndpointKind;

impl Sessions {
    fn forget(&mut self, session: &LiveSession) {
        if let Some(count) = self.per_backend.get_mut(&session.backend) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_backend.remove(&session.backend);
            }
        }
    }
}

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
    live: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    by_sid: HashMap<String, LiveSession>,
    /// Kept alongside so that `max_sessions` checks are O(1).
    per_backend: HashMap<String, usize>,
}

impl SessionRegistry {
    pub fn insert(&self, sid: String, session: LiveSession) {
        self.with(|live| {
            *live.per_backend.entry(session.backend.clone()).or_default() += 1;
            if let Some(old) = live.by_sid.insert(sid, session) {
                live.forget(&old);
            }
        });
    }

    /// Forgets a session; `None` when this replica did not create it.
    pub fn remove(&self, sid: &str) -> Option<LiveSession> {
        self.with(|live| {
            let session = live.by_sid.remove(sid)?;
            live.forget(&session);
            Some(session)
        })
    }

    pub fn len(&self) -> usize {
        self.with(|live| live.by_sid.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn count_for_backend(&self, backend: &str) -> usize {
        self.with(|live| live.per_backend.get(backend).copied().unwrap_or(0))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Sessions) -> T) -> T {
        // A panic while holding this lock cannot leave the map half-updated (single calls),
        // so a poisoned lock is still safe to use.
        let mut guard = self.live.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}
