//! The two kinds of endpoint whipgate fronts.

use std::fmt;

use serde::{Deserialize, Serialize};

/// WHIP (RFC 9725) ingests a publisher; WHEP plays to a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    Whip,
    Whep,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Whip => "whip",
            EndpointKind::Whep => "whep",
        }
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
