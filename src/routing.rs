//! The route table: which backends, in which order, serve a stream.
//!
//! Pure: built from validated config, queried with values. First matching route wins; its
//! backends are tried in order (primary, then fallbacks).

use std::fmt;

use globset::{Glob, GlobMatcher};

use crate::kind::EndpointKind;

/// A stream name as the client sent it in the path, percent-decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamName(String);

/// Longest stream name accepted, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamNameError {
    #[error("stream name is empty")]
    Empty,
    #[error("stream name is longer than {MAX_STREAM_NAME_LEN} bytes")]
    TooLong,
    #[error("stream name is not valid percent-encoded UTF-8")]
    NotUtf8,
    #[error("stream name contains a control character")]
    Control,
    #[error("stream name may not be a dot segment")]
    DotSegment,
}

impl StreamName {
    /// Decodes one path segment as sent by a client.
    pub fn from_path_segment(segment: &str) -> Result<Self, StreamNameError> {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| StreamNameError::NotUtf8)?;
        Self::new(decoded.into_owned())
    }

    pub fn new(name: String) -> Result<Self, StreamNameError> {
        if name.is_empty() {
            return Err(StreamNameError::Empty);
        }
        if name.len() > MAX_STREAM_NAME_LEN {
            return Err(StreamNameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(StreamNameError::Control);
        }
        if name == "." || name == ".." {
            return Err(StreamNameError::DotSegment);
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A backend's id as written in routes.toml.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub String);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    pub kind: Option<EndpointKind>,
    pub stream: Option<StreamGlob>,
    /// Tried in order; never empty.
    pub backends: Vec<BackendId>,
    /// Overrides the chosen backend's default policy, field by field.
    pub sdp: crate::sdp::Policy,
}

impl Route {
    pub fn matches(&self, kind: EndpointKind, stream: &StreamName) -> bool {
        self.kind.is_none_or(|k| k == kind)
            && self.stream.as_ref().is_none_or(|g| g.is_match(stream))
    }
}

/// A compiled stream-name glob (`*`, `?`, `[a-z]`, `{a,b}`).
#[derive(Debug, Clone)]
pub struct StreamGlob {
    pattern: String,
    matcher: GlobMatcher,
}

impl StreamGlob {
    pub fn new(pattern: &str) -> Result<Self, String> {
        let glob = Glob::new(pattern).map_err(|e| e.kind().to_string())?;
        Ok(Self {
            pattern: pattern.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn is_match(&self, stream: &StreamName) -> bool {
        self.matcher.is_match(stream.as_str())
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// Routes in file order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The first route that matches, if any.
    pub fn select(&self, kind: EndpointKind, stream: &StreamName) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(kind, stream))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn by_id(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, kind: Option<EndpointKind>, glob: Option<&str>, backends: &[&str]) -> Route {
        Route {
            id: id.into(),
            kind,
            stream: glob.map(|g| StreamGlob::new(g).expect("glob")),
            backends: backends.iter().map(|b| BackendId(b.to_string())).collect(),
            sdp: Default::default(),
        }
    }

    fn name(s: &str) -> StreamName {
        StreamName::new(s.into()).expect("name")
    }

    #[test]
    fn first_matching_route_wins() {
        let table = RouteTable::new(vec![
            route(
                "premium",
                Some(EndpointKind::Whip),
                Some("premium-*"),
                &["cf"],
            ),
            route("viewers", Some(EndpointKind::Whep), None, &["sfu"]),
            route("rest", None, Some("*"), &["janus", "cf"]),
        ]);
        let pick = |kind, s: &str| table.select(kind, &name(s)).map(|r| r.id.as_str());
        assert_eq!(pick(EndpointKind::Whip, "premium-1"), Some("premium"));
        assert_eq!(pick(EndpointKind::Whep, "premium-1"), Some("viewers"));
        assert_eq!(pick(EndpointKind::Whip, "cam"), Some("rest"));
    }

    #[test]
    fn no_route_when_nothing_matches() {
        let table = RouteTable::new(vec![route("a", None, Some("cam-?"), &["x"])]);
        assert!(table.select(EndpointKind::Whip, &name("cam-12")).is_none());
        assert!(table.select(EndpointKind::Whip, &name("cam-1")).is_some());
    }

    #[test]
    fn stream_names_are_decoded_and_checked() {
        assert_eq!(
            StreamName::from_path_segment("a%2Fb%20c").map(|s| s.0),
            Ok("a/b c".to_string())
        );
        assert_eq!(
            StreamName::from_path_segment("%2e%2E"),
            Err(StreamNameError::DotSegment)
        );
        assert_eq!(
            StreamName::from_path_segment(""),
            Err(StreamNameError::Empty)
        );
        assert_eq!(
            StreamName::from_path_segment("a%0d%0ab"),
            Err(StreamNameError::Control)
        );
        assert_eq!(
            StreamName::from_path_segment("%ff"),
            Err(StreamNameError::NotUtf8)
        );
        assert_eq!(
            StreamName::from_path_segment(&"x".repeat(201)),
            Err(StreamNameError::TooLong)
        );
    }
}
