//! Stream names and the patterns routes match them with: the one vocabulary routing and
//! client auth share (a leaf module, so neither imports the other for it).

use std::fmt;

use globset::{Glob, GlobMatcher};
use regex::Regex;

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

/// A stream-name pattern: a glob (`*`, `?`, `[a-z]`, `{a,b}`) or a regex whose named
/// captures can be used in backend URL templates.
#[derive(Debug, Clone)]
pub enum StreamPattern {
    /// The common glob shapes, matched without a regex: tables of thousands of routes
    /// compile and match fast.
    Exact(String),
    Prefix(String),
    Suffix(String),
    Glob {
        pattern: String,
        matcher: GlobMatcher,
    },
    Regex(Regex),
}

const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

impl StreamPattern {
    pub fn glob(pattern: &str) -> Result<Self, String> {
        let plain = |s: &str| !s.contains(GLOB_META);
        if plain(pattern) {
            return Ok(StreamPattern::Exact(pattern.to_owned()));
        }
        if let Some(prefix) = pattern.strip_suffix('*').filter(|p| plain(p)) {
            return Ok(StreamPattern::Prefix(prefix.to_owned()));
        }
        if let Some(suffix) = pattern.strip_prefix('*').filter(|p| plain(p)) {
            return Ok(StreamPattern::Suffix(suffix.to_owned()));
        }
        let glob = Glob::new(pattern).map_err(|e| e.kind().to_string())?;
        Ok(StreamPattern::Glob {
            pattern: pattern.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    /// The literal text every matching name starts with, when there is one (for indexing).
    pub fn literal_prefix(&self) -> Option<&str> {
        match self {
            StreamPattern::Exact(text) | StreamPattern::Prefix(text) => Some(text.as_str()),
            StreamPattern::Glob { pattern, .. } => {
                let end = pattern.find(GLOB_META).unwrap_or(pattern.len());
                Some(&pattern[..end])
            }
            StreamPattern::Suffix(_) | StreamPattern::Regex(_) => None,
        }
        .filter(|prefix| !prefix.is_empty())
    }

    /// Anchored: the regex must match the whole stream name.
    pub fn regex(pattern: &str) -> Result<Self, String> {
        Regex::new(&format!("^(?:{pattern})$"))
            .map(StreamPattern::Regex)
            .map_err(|e| {
                e.to_string()
                    .lines()
                    .last()
                    .unwrap_or("invalid regex")
                    .trim()
                    .to_owned()
            })
    }

    /// Named capture groups (for template checks).
    pub fn capture_names(&self) -> Vec<String> {
        match self {
            StreamPattern::Regex(regex) => {
                regex.capture_names().flatten().map(str::to_owned).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether this pattern matches every name.
    pub fn matches_everything(&self) -> bool {
        match self {
            StreamPattern::Prefix(prefix) | StreamPattern::Suffix(prefix) => prefix.is_empty(),
            StreamPattern::Glob { pattern, .. } => pattern == "**",
            StreamPattern::Regex(regex) => matches!(regex.as_str(), "^(?:.*)$" | "^(?:.+)$"),
            StreamPattern::Exact(_) => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            StreamPattern::Exact(name) => format!("stream {name:?}"),
            StreamPattern::Prefix(prefix) => format!("stream glob \"{prefix}*\""),
            StreamPattern::Suffix(suffix) => format!("stream glob \"*{suffix}\""),
            StreamPattern::Glob { pattern, .. } => format!("stream glob {pattern:?}"),
            StreamPattern::Regex(regex) => format!("stream regex {:?}", regex.as_str()),
        }
    }

    /// Whether `stream` matches (grants of client credentials use the same patterns).
    pub fn is_match(&self, stream: &str) -> bool {
        match self {
            StreamPattern::Regex(regex) => regex.is_match(stream),
            other => other.captures(stream).is_some(),
        }
    }

    pub fn captures(&self, stream: &str) -> Option<Vec<(String, String)>> {
        match self {
            StreamPattern::Exact(name) => (stream == name).then(Vec::new),
            StreamPattern::Prefix(prefix) => stream.starts_with(prefix.as_str()).then(Vec::new),
            StreamPattern::Suffix(suffix) => stream.ends_with(suffix.as_str()).then(Vec::new),
            StreamPattern::Glob { matcher, .. } => matcher.is_match(stream).then(Vec::new),
            StreamPattern::Regex(regex) => {
                let found = regex.captures(stream)?;
                Some(
                    regex
                        .capture_names()
                        .flatten()
                        .filter_map(|name| {
                            Some((name.to_owned(), found.name(name)?.as_str().to_owned()))
                        })
                        .collect(),
                )
            }
        }
    }
}
