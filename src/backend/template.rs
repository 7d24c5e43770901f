//! Backend URL templates: `{stream}` (and a route's regex captures, `{name}`) are
//! percent-encoded into the path or query, so no client input can change the scheme, host or
//! port, or add path segments.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use crate::routing::StreamName;

const PLACEHOLDER: &str = "{stream}";
/// The backend's own credential (`url_key_env` / `url_key_file`), for vendors that put a
/// stream key in the URL rather than a header.
pub const KEY_PLACEHOLDER: &str = "key";

/// Everything but RFC 3986 unreserved characters is encoded; `/`, `?`, `#`, `%`, `@` and
/// `\` all become escapes, so the name stays inside one segment or query value.
const STREAM_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    raw: String,
    /// `host:port` of the template, to check expansions against.
    host: String,
    allowed: super::AllowedHost,
    segments: usize,
    /// Placeholder names other than `stream`, filled from a route's regex captures.
    captures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("is not an absolute http(s) URL: {0}")]
    NotAbsolute(String),
    #[error("may hold {{stream}} only in its path or query, not in its scheme or host")]
    PlaceholderInAuthority,
    #[error("may not have a fragment")]
    Fragment,
    #[error("expanding {{stream}} gave a URL on another host or path shape")]
    Escaped,
    #[error("placeholder {{{0}}} is not filled by the route")]
    MissingCapture(String),
    #[error("has an unclosed or empty {{placeholder}}")]
    BadPlaceholder,
}

impl UrlTemplate {
    pub fn parse(raw: &str) -> Result<Self, TemplateError> {
        let authority_end = raw
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| {
                raw[start..]
                    .find(['/', '?', '#'])
                    .map(|i| i + start)
                    .or(Some(raw.len()))
            })
            .ok_or_else(|| TemplateError::NotAbsolute("no scheme".into()))?;
        if raw[..authority_end].contains('{') {
            return Err(TemplateError::PlaceholderInAuthority);
        }
        let names = placeholders(raw)?;
        let mut sample_text = raw.to_owned();
        for name in &names {
            sample_text = sample_text.replace(&format!("{{{name}}}"), "x");
        }
        let sample =
            Url::parse(&sample_text).map_err(|e| TemplateError::NotAbsolute(e.to_string()))?;
        if !matches!(sample.scheme(), "http" | "https") {
            return Err(TemplateError::NotAbsolute(format!(
                "scheme {} is not http or https",
                sample.scheme()
            )));
        }
        if sample.fragment().is_some() {
            return Err(TemplateError::Fragment);
        }
        let host = host_key(&sample).ok_or_else(|| TemplateError::NotAbsolute("no host".into()))?;
        let segments = segment_count(&sample);
        let allowed = super::AllowedHost {
            host: sample.host_str().unwrap_or_default().to_owned(),
            port: sample.port_or_known_default(),
            subdomains: false,
        };
        let captures = names.into_iter().filter(|n| n != "stream").collect();
        Ok(Self {
            raw: raw.to_owned(),
            host,
            segments,
            allowed,
            captures,
        })
    }

    /// The backend URL for `stream`.
    pub fn expand(&self, stream: &StreamName) -> Result<Url, TemplateError> {
        self.expand_with(stream, &[])
    }

    /// The backend URL for `stream` with a route's regex captures.
    pub fn expand_with(
        &self,
        stream: &StreamName,
        captures: &[(String, String)],
    ) -> Result<Url, TemplateError> {
        let encode = |value: &str| utf8_percent_encode(value, STREAM_ENCODE).to_string();
        let mut text = self.raw.replace(PLACEHOLDER, &encode(stream.as_str()));
        for name in &self.captures {
            let value = captures
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| TemplateError::MissingCapture(name.clone()))?;
            text = text.replace(&format!("{{{name}}}"), &encode(value));
        }
        let url = Url::parse(&text).map_err(|e| TemplateError::NotAbsolute(e.to_string()))?;
        // Defence in depth: the encoding above already makes this impossible.
        if host_key(&url).as_deref() != Some(self.host.as_str())
            || segment_count(&url) != self.segments
        {
            return Err(TemplateError::Escaped);
        }
        Ok(url)
    }

    /// Placeholder names besides `stream` and `key`, which a route's regex must capture.
    pub fn capture_names(&self) -> impl Iterator<Item = &String> {
        self.captures.iter().filter(|n| *n != KEY_PLACEHOLDER)
    }

    /// Whether the template holds the backend's `{key}`.
    pub fn needs_key(&self) -> bool {
        self.captures.iter().any(|n| n == KEY_PLACEHOLDER)
    }

    /// The template's own host and port, which its backend may always use.
    pub fn allowed_host(&self) -> super::AllowedHost {
        self.allowed.clone()
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

/// The `{name}` placeholders of a template, in order.
fn placeholders(raw: &str) -> Result<Vec<String>, TemplateError> {
    let mut names = Vec::new();
    let mut rest = raw;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(TemplateError::BadPlaceholder)?;
        let name = &after[..close];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(TemplateError::BadPlaceholder);
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        rest = &after[close + 1..];
    }
    Ok(names)
}

/// `host:port` with the scheme's default port filled in.
fn host_key(url: &Url) -> Option<String> {
    Some(format!(
        "{}:{}",
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

fn segment_count(url: &Url) -> usize {
    url.path_segments().map_or(0, |s| s.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(s: &str) -> StreamName {
        StreamName::new(s.into()).expect("name")
    }

    #[test]
    fn encodes_into_one_segment() {
        let t = UrlTemplate::parse("http://10.0.0.5:7080/whip/endpoint/{stream}").expect("ok");
        let expand = |s: &str| t.expand(&stream(s)).expect("expands").to_string();
        assert_eq!(expand("cam-1"), "http://10.0.0.5:7080/whip/endpoint/cam-1");
        assert_eq!(
            expand("../admin"),
            "http://10.0.0.5:7080/whip/endpoint/..%2Fadmin"
        );
        assert_eq!(
            expand("a?b#c"),
            "http://10.0.0.5:7080/whip/endpoint/a%3Fb%23c"
        );
        assert_eq!(
            expand("u@evil.com"),
            "http://10.0.0.5:7080/whip/endpoint/u%40evil.com"
        );
        assert_eq!(
            expand("%2e%2e"),
            "http://10.0.0.5:7080/whip/endpoint/%252e%252e"
        );
    }

    #[test]
    fn refuses_placeholder_in_host_and_bad_urls() {
        assert_eq!(
            UrlTemplate::parse("http://{stream}.example.com/x"),
            Err(TemplateError::PlaceholderInAuthority)
        );
        assert_eq!(
            UrlTemplate::parse("http://user{stream}@example.com/x"),
            Err(TemplateError::PlaceholderInAuthority)
        );
        assert!(UrlTemplate::parse("ftp://example.com/{stream}").is_err());
        assert!(UrlTemplate::parse("/relative/{stream}").is_err());
        assert!(UrlTemplate::parse("http://example.com/{stream}#x").is_err());
        assert!(UrlTemplate::parse("https://example.com/fixed").is_ok());
        assert!(UrlTemplate::parse("https://example.com/w?stream={stream}").is_ok());
        assert_eq!(
            UrlTemplate::parse("https://example.com/{stream"),
            Err(TemplateError::BadPlaceholder)
        );
    }

    #[test]
    fn captures_are_encoded_like_the_stream() {
        let t = UrlTemplate::parse("https://vendor.example/{tenant}/live/{stream}").expect("ok");
        assert_eq!(t.capture_names().collect::<Vec<_>>(), ["tenant"]);
        let url = t
            .expand_with(&stream("acme-cam"), &[("tenant".into(), "ac/me".into())])
            .expect("expands");
        assert_eq!(url.as_str(), "https://vendor.example/ac%2Fme/live/acme-cam");
        assert_eq!(
            t.expand(&stream("x")),
            Err(TemplateError::MissingCapture("tenant".into()))
        );
    }

    proptest! {
        #[test]
        fn no_stream_name_leaves_its_segment(name in "\\PC{1,60}") {
            prop_assume!(name != "." && name != "..");
            let t = UrlTemplate::parse("https://vendor.example:8443/a/{stream}/b").expect("ok");
            let url = t.expand(&stream(&name)).expect("expands");
            prop_assert_eq!(url.host_str(), Some("vendor.example"));
            prop_assert_eq!(url.port(), Some(8443));
            let segments: Vec<&str> = url.path_segments().expect("path").collect();
            prop_assert_eq!(segments.len(), 3);
            prop_assert_eq!(segments[0], "a");
            prop_assert_eq!(segments[2], "b");
            prop_assert!(url.query().is_none());
            prop_assert!(url.fragment().is_none());
        }
    }
}
