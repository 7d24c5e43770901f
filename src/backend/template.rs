//! Backend URL templates: `{stream}` (and a route's regex captures, `{name}`) are
//! percent-encoded into the path or query, so no client input can change the scheme, host or
//! port, or add path segments.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use super::origin::{BackendUrl, Origin};
use crate::routing::StreamName;

const STREAM_PLACEHOLDER: &str = "stream";
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
    /// The template's scheme and authority, parsed once: an expansion appends only the path
    /// and query. Parsing the whole URL again was most of an expansion's cost (the url crate
    /// runs its IDNA pass even on an IP address).
    origin: Origin,
    /// The rest of the template, path and query as written, cut at its placeholders.
    tail: Vec<Piece>,
    allowed: super::AllowedHost,
    segments: usize,
    /// Placeholder names other than `stream`, filled from a route's regex captures.
    captures: Vec<String>,
}

/// A part of a template's path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Stream,
    Capture(String),
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
        if sample.host_str().is_none() || sample.port_or_known_default().is_none() {
            return Err(TemplateError::NotAbsolute("no host".into()));
        }
        let segments = segment_count(&sample);
        let allowed = super::AllowedHost {
            host: sample.host_str().unwrap_or_default().to_owned(),
            port: sample.port_or_known_default(),
            subdomains: false,
        };
        let captures = names
            .into_iter()
            .filter(|n| n != STREAM_PLACEHOLDER)
            .collect();
        let origin = Origin::of(
            Url::parse(&raw[..authority_end])
                .map_err(|e| TemplateError::NotAbsolute(e.to_string()))?,
        );
        Ok(Self {
            raw: raw.to_owned(),
            origin,
            // As a whole-URL parse reads it: trailing spaces and controls cut, tabs and
            // newlines dropped (WHATWG URL), which setting a path and query does not do.
            tail: pieces(
                &raw[authority_end..]
                    .trim_end_matches(|c: char| c <= ' ')
                    .replace(['\t', '\n', '\r'], ""),
            ),
            segments,
            allowed,
            captures,
        })
    }

    /// The backend URL for `stream`.
    pub fn expand(&self, stream: &StreamName) -> Result<BackendUrl, TemplateError> {
        self.expand_with(stream, &[])
    }

    /// The backend URL for `stream` with a route's regex captures.
    pub fn expand_with(
        &self,
        stream: &StreamName,
        captures: &[(String, String)],
    ) -> Result<BackendUrl, TemplateError> {
        let mut tail = String::with_capacity(64);
        for piece in &self.tail {
            match piece {
                Piece::Text(text) => tail.push_str(text),
                Piece::Stream => tail.extend(utf8_percent_encode(stream.as_str(), STREAM_ENCODE)),
                Piece::Capture(name) => {
                    let value = captures
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                        .ok_or_else(|| TemplateError::MissingCapture(name.clone()))?;
                    tail.extend(utf8_percent_encode(value, STREAM_ENCODE));
                }
            }
        }
        // Encoded values hold no `?` or `#`, and parse refused a fragment: the first `?` is
        // the template's own.
        let url = self.origin.with_tail(&tail);
        // Defence in depth: the encoding above already makes this impossible, and the
        // scheme and host are the template's own by construction.
        let path = url.path_and_query().split('?').next().unwrap_or_default();
        if path.bytes().filter(|&b| b == b'/').count() != self.segments {
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

/// `tail` cut at its placeholders, which [`placeholders`] has checked.
fn pieces(tail: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = tail;
    while let Some((text, after)) = rest.split_once('{') {
        let Some((name, after)) = after.split_once('}') else {
            break;
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_owned()));
        }
        pieces.push(if name == STREAM_PLACEHOLDER {
            Piece::Stream
        } else {
            Piece::Capture(name.to_owned())
        });
        rest = after;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    pieces
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

fn segment_count(url: &Url) -> usize {
    url.path_segments().map_or(0, |s| s.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PLACEHOLDER: &str = "{stream}";

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

    /// How expansions were made before the base was parsed once: the whole URL text
    /// parsed again. The faster way must give the very same URL.
    fn expand_by_reparsing(template: &str, name: &str) -> Option<Url> {
        let encoded = utf8_percent_encode(name, STREAM_ENCODE).to_string();
        Url::parse(&template.replace(PLACEHOLDER, &encoded)).ok()
    }

    #[test]
    fn expansions_with_an_empty_path_or_a_bare_query_match_a_full_parse() {
        for template in [
            "http://10.0.0.5:7080?stream={stream}",
            "https://vendor.example?",
            "https://vendor.example",
            "http://[::1]:8080/a/./b/../{stream}?x=1&y={stream}",
            "https://user:pw@vendor.example:443/{stream}/",
            "http://v.example/%7e/{stream}?q=a b",
        ] {
            let t = UrlTemplate::parse(template).expect(template);
            let url = t.expand(&stream("cam 1")).expect("expands");
            let expected = expand_by_reparsing(template, "cam 1").expect(template);
            assert_eq!(url.as_str(), expected.as_str(), "{template}");
            assert_eq!(url.url(), &expected, "{template}");
        }
    }

    proptest! {
        #[test]
        fn expanding_gives_what_parsing_the_expanded_text_gives(
            path in "(/[a-zA-Z0-9._~%!$&'()*+,;=:@ \t-]{0,8}(\\{stream\\})?){0,4}",
            query in proptest::option::of("[a-zA-Z0-9._~%!$&'()*+,;=:@/? \n-]{0,8}(\\{stream\\})?"),
            name in "\\PC{1,30}",
        ) {
            prop_assume!(name != "." && name != "..");
            let template = match query {
                Some(query) => format!("http://10.0.0.5:7080{path}?{query}"),
                None => format!("http://10.0.0.5:7080{path}"),
            };
            let t = UrlTemplate::parse(&template).expect("template");
            let expected = expand_by_reparsing(&template, &name).expect("parses");
            match t.expand(&stream(&name)) {
                Ok(url) => {
                    prop_assert_eq!(url.as_str(), expected.as_str());
                    prop_assert_eq!(url.url(), &expected);
                    prop_assert_eq!(url.authority(), &expected[url::Position::BeforeHost..url::Position::AfterPort]);
                    prop_assert_eq!(url.path_and_query(), &expected[url::Position::BeforePath..url::Position::AfterQuery]);
                }
                // A name that makes `.` or `..` of a segment (`.{stream}` with `.`) is
                // refused; nothing else may be.
                Err(e) => {
                    prop_assert_eq!(e, TemplateError::Escaped);
                    prop_assert_ne!(segment_count(&expected), t.segments);
                }
            }
        }

        #[test]
        fn no_stream_name_leaves_its_segment(name in "\\PC{1,60}") {
            prop_assume!(name != "." && name != "..");
            let t = UrlTemplate::parse("https://vendor.example:8443/a/{stream}/b").expect("ok");
            let expanded = t.expand(&stream(&name)).expect("expands");
            let url = expanded.url();
            prop_assert_eq!(url.as_str(), expanded.as_str());
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
