//! Pure helpers for the headers clients see: ETags that carry the backend's, normalised
//! ice-server `Link`s, content types. Backends differ in all of these; clients must not.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderName;

/// Header names http has no constant for, made once: inserting a header by a `&str` name
/// copies the name into a new allocation each time.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const ACCEPT_PATCH: HeaderName = HeaderName::from_static("accept-patch");
pub const ACCEPT_POST: HeaderName = HeaderName::from_static("accept-post");

/// The gateway's ETag for a backend's (possibly absent, unquoted, weak or `*`) ETag.
///
/// Always a quoted strong ETag; the backend's exact header value rides inside it, so the
/// client's `If-Match` can be turned back into exactly what the backend sent.
pub fn gateway_etag(upstream: Option<&str>) -> String {
    match upstream {
        Some(value) => {
            let mut etag = String::with_capacity(value.len() * 4 / 3 + 5);
            etag.push_str("\"e");
            URL_SAFE_NO_PAD.encode_string(value.as_bytes(), &mut etag);
            etag.push('"');
            etag
        }
        None => "\"n\"".to_owned(),
    }
}

/// What to send upstream for a client's `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamIfMatch {
    /// The client sent none (tolerated; RFC 9725 clients should send one).
    Absent,
    /// `*`: an ICE restart.
    Any,
    /// The backend's own ETag value, as it sent it.
    Value(String),
    /// The backend never sent an ETag, so there is nothing to match upstream.
    NoneUpstream,
}

/// A client's `If-Match` that names no ETag this gateway issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("If-Match does not name this session's ETag")]
pub struct ForeignETag;

/// Translates a client's `If-Match` header.
pub fn upstream_if_match(client: Option<&str>) -> Result<UpstreamIfMatch, ForeignETag> {
    let Some(value) = client.map(str::trim) else {
        return Ok(UpstreamIfMatch::Absent);
    };
    // RFC 9725 §4.4.1 says `"*"`; `*` is what RFC 9110 says; accept both.
    if value == "*" || value == "\"*\"" {
        return Ok(UpstreamIfMatch::Any);
    }
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or(ForeignETag)?;
    if inner == "n" {
        return Ok(UpstreamIfMatch::NoneUpstream);
    }
    let encoded = inner.strip_prefix('e').ok_or(ForeignETag)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| ForeignETag)?;
    let upstream = String::from_utf8(bytes).map_err(|_| ForeignETag)?;
    if upstream.is_empty() || upstream.chars().any(|c| c.is_control()) {
        return Err(ForeignETag);
    }
    Ok(UpstreamIfMatch::Value(upstream))
}

/// Whether a `Content-Type` value names `expected`, parameters (`; charset=...`) tolerated.
pub fn content_type_is(value: Option<&str>, expected: &str) -> bool {
    value
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

/// One STUN/TURN server from a `Link: <uri>; rel="ice-server"` header (RFC 9725 §4.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub uri: String,
    pub username: Option<String>,
    pub credential: Option<String>,
    pub credential_type: Option<String>,
}

impl IceServer {
    /// The canonical single-line header value: the URI kept inside `<...>` and every value
    /// an RFC 9110 quoted-string, whatever a backend or routes.toml put in them.
    pub fn to_header_value(&self) -> String {
        let mut out = String::with_capacity(self.uri.len() + 96);
        out.push('<');
        push_escaped_uri(&mut out, &self.uri);
        out.push_str(">; rel=\"ice-server\"");
        for (name, value) in [
            ("username", &self.username),
            ("credential", &self.credential),
            ("credential-type", &self.credential_type),
        ] {
            if let Some(value) = value {
                out.push_str("; ");
                out.push_str(name);
                out.push('=');
                push_quoted(&mut out, value);
            }
        }
        out
    }
}

/// Appends `value` as an RFC 9110 quoted-string (control characters dropped).
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    // The usual value (a TURN username or credential) needs no escape: copied whole.
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out.push('"');
}

/// Appends `url`, percent-encoding what would end the `<...>` or the header line.
fn push_escaped_uri(out: &mut String, url: &str) {
    let plain = |b: u8| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"');
    if url.bytes().all(plain) {
        out.push_str(url);
        return;
    }
    for c in url.chars() {
        if c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"') {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
}

/// Every well-formed ice-server link in a backend's `Link` header lines; other relations
/// (which point at the backend's own URLs) and malformed entries are dropped.
pub fn ice_servers<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<IceServer> {
    values
        .into_iter()
        .flat_map(split_top_level)
        .filter_map(parse_link_value)
        .collect()
}

const EVENTS_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";

/// Built once: `str::contains` would set up a searcher for the 48-byte relation per call.
static EVENTS_REL_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(EVENTS_REL));

/// A backend's WHEP events link (`rel="urn:ietf:params:whep:ext:core:server-sent-events"`)
/// among its `Link` header lines: its URI reference and the events it offers.
pub fn events_link<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<(String, Vec<String>)> {
    values
        .into_iter()
        // The relation is matched exactly below, once unquoted: a line naming it neither
        // plainly nor with backslash escapes (the ice-server link of every WHIP answer) is
        // not worth splitting.
        .filter(|line| {
            line.as_bytes().contains(&b'\\') || EVENTS_REL_FINDER.find(line.as_bytes()).is_some()
        })
        .flat_map(split_top_level)
        .find_map(|value| {
            let rest = value.trim().strip_prefix('<')?;
            let (uri, params) = rest.split_once('>')?;
            let mut is_events = false;
            let mut events = Vec::new();
            for param in split_params(params) {
                let (name, raw) = param.split_once('=').unwrap_or((param, ""));
                let value = unquote(raw.trim())?;
                match name.trim().to_ascii_lowercase().as_str() {
                    "rel" => {
                        is_events = value.split_ascii_whitespace().any(|r| r == EVENTS_REL);
                    }
                    "events" => {
                        events = value
                            .split(',')
                            .map(|e| e.trim().to_owned())
                            .filter(|e| !e.is_empty())
                            .collect();
                    }
                    _ => {}
                }
            }
            (is_events && is_clean(uri.trim())).then(|| (uri.trim().to_owned(), events))
        })
}

/// Splits one header value at commas that are outside `<...>` and quoted strings. Bytewise:
/// every delimiter is ASCII, and no byte of a multi-byte character is one.
fn split_top_level(value: &str) -> Vec<&str> {
    // Most backends send one link per header line: no comma, nothing to split (one
    // vectorised search instead of the byte-by-byte walk below).
    if memchr::memchr(b',', value.as_bytes()).is_none() {
        return vec![value];
    }
    let mut parts = Vec::new();
    let (mut in_uri, mut in_quotes, mut escaped, mut start) = (false, false, false, 0);
    for (i, b) in value.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' if !in_uri => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_uri = true,
            b'>' if !in_quotes => in_uri = false,
            b',' if !in_uri && !in_quotes => {
                parts.push(value.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value.get(start..).unwrap_or(""));
    parts
}

fn parse_link_value(value: &str) -> Option<IceServer> {
    let value = value.trim();
    let rest = value.strip_prefix('<')?;
    let (uri, params) = rest.split_once('>')?;
    let uri = uri.trim();
    let scheme = uri.split_once(':')?.0;
    let is_ice_scheme = ["stun", "stuns", "turn", "turns"]
        .iter()
        .any(|known| scheme.eq_ignore_ascii_case(known));
    if !is_ice_scheme || !is_clean(uri) {
        return None;
    }
    let mut server = IceServer {
        uri: uri.to_owned(),
        username: None,
        credential: None,
        credential_type: None,
    };
    let mut is_ice_server = false;
    for param in split_params(params) {
        let (name, raw) = param.split_once('=').unwrap_or((param, ""));
        let name = name.trim();
        let value = unquote(raw.trim())?;
        if name.eq_ignore_ascii_case("rel") {
            is_ice_server = value.split_ascii_whitespace().any(|r| r == "ice-server");
        } else if name.eq_ignore_ascii_case("username") {
            server.username = Some(value.into_owned());
        } else if name.eq_ignore_ascii_case("credential") {
            server.credential = Some(value.into_owned());
        } else if name.eq_ignore_ascii_case("credential-type") {
            server.credential_type = Some(value.into_owned());
        }
    }
    is_ice_server.then_some(server)
}

fn split_params(params: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut in_quotes, mut escaped, mut start) = (false, false, 0);
    for (i, b) in params.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b';' if !in_quotes => {
                parts.push(params.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(params.get(start..).unwrap_or(""));
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

/// A token or quoted-string parameter value; `None` when it could not be re-emitted safely.
/// Borrowed unless it had escapes to undo.
fn unquote(raw: &str) -> Option<Cow<'_, str>> {
    let value = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next()? } else { c });
            }
            Cow::Owned(out)
        }
        None => Cow::Borrowed(raw),
    };
    is_clean(&value).then_some(value)
}

fn is_clean(value: &str) -> bool {
    if value.is_ascii() {
        // char::is_control's ASCII members are C0 and DEL; no decoding needed.
        return !value
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || matches!(b, b'"' | b'\\' | b'<' | b'>'));
    }
    !value
        .chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\\' | '<' | '>'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn etags_round_trip_whatever_the_backend_sent() {
        for upstream in ["\"abc\"", "abc", "*", "W/\"weak\"", "\"with space\""] {
            let ours = gateway_etag(Some(upstream));
            assert!(ours.starts_with('"') && ours.ends_with('"') && ours.len() > 2);
            assert!(!ours[1..ours.len() - 1].contains('"'));
            assert_eq!(
                upstream_if_match(Some(&ours)),
                Ok(UpstreamIfMatch::Value(upstream.to_owned()))
            );
        }
        assert_eq!(
            upstream_if_match(Some(&gateway_etag(None))),
            Ok(UpstreamIfMatch::NoneUpstream)
        );
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(upstream_if_match(None), Ok(UpstreamIfMatch::Absent));
        assert_eq!(upstream_if_match(Some("*")), Ok(UpstreamIfMatch::Any));
        assert_eq!(upstream_if_match(Some("\"*\"")), Ok(UpstreamIfMatch::Any));
        assert!(upstream_if_match(Some("\"foreign\"")).is_err());
        assert!(upstream_if_match(Some("W/\"eYWJj\"")).is_err());
        assert!(upstream_if_match(Some("eYWJj")).is_err());
    }

    #[test]
    fn content_type_tolerates_parameters() {
        assert!(content_type_is(Some("application/sdp"), "application/sdp"));
        assert!(content_type_is(
            Some("Application/SDP; charset=utf-8"),
            "application/sdp"
        ));
        assert!(!content_type_is(Some("text/plain"), "application/sdp"));
        assert!(!content_type_is(None, "application/sdp"));
    }

    #[test]
    fn links_are_normalised() {
        let servers = ice_servers([
            "<turn:127.0.0.2:3478?transport=udp>; rel=\"ice-server\"; username=\"u:1\"; \
             credential=\"p,w\"; credential-type=\"password\", <stun:stun.example.net>;rel=ice-server",
            "<https://backend.internal/sse>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"",
            "garbage, <turn:x>; rel=\"ice-server\"; username=\"a\"b\"",
        ]);
        assert_eq!(servers.len(), 2);
        assert_eq!(
            servers[0].to_header_value(),
            "<turn:127.0.0.2:3478?transport=udp>; rel=\"ice-server\"; username=\"u:1\"; \
             credential=\"p,w\"; credential-type=\"password\""
        );
        assert_eq!(
            servers[1].to_header_value(),
            "<stun:stun.example.net>; rel=\"ice-server\""
        );
    }

    #[test]
    fn link_values_are_quoted_and_uris_kept_in_brackets() {
        let server = IceServer {
            uri: "turn:h>x y".into(),
            username: Some("a\"b\\c".into()),
            credential: None,
            credential_type: None,
        };
        assert_eq!(
            server.to_header_value(),
            "<turn:h%3Ex%20y>; rel=\"ice-server\"; username=\"a\\\"b\\\\c\""
        );
    }

    proptest! {
        /// Copying a value that needs no escape whole gives what escaping it char by char
        /// gives.
        #[test]
        fn whole_copies_are_the_escaped_text(value in "[ -~]{0,30}|\\PC{0,30}") {
            let mut quoted = String::new();
            push_quoted(&mut quoted, &value);
            let mut expected = String::from('"');
            for c in value.chars().filter(|c| !c.is_control()) {
                if c == '"' || c == '\\' {
                    expected.push('\\');
                }
                expected.push(c);
            }
            expected.push('"');
            prop_assert_eq!(quoted, expected);
            let mut uri = String::new();
            push_escaped_uri(&mut uri, &value);
            let expected: String = value
                .chars()
                .map(|c| match c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"') {
                    true => c.to_string(),
                    false => c.to_string().bytes().map(|b| format!("%{b:02X}")).collect(),
                })
                .collect();
            prop_assert_eq!(uri, expected);
        }

        /// Whatever a backend or routes.toml put in a username or credential, the Link
        /// whipgate writes parses back to it when it is clean, and never into anything else
        /// (no injected parameter or second server).
        #[test]
        fn written_links_parse_back(value in "\\PC{0,60}") {
            let server = IceServer {
                uri: "turn:t.example:3478".into(),
                username: Some(value.clone()),
                credential: Some(value.clone()),
                credential_type: Some("password".into()),
            };
            let parsed = ice_servers([server.to_header_value().as_str()]);
            if is_clean(&value) {
                prop_assert_eq!(parsed.len(), 1);
                prop_assert_eq!(parsed[0].username.as_deref(), Some(value.as_str()));
            } else {
                prop_assert!(parsed.iter().all(|s| s.username.as_deref() == Some(value.as_str())));
                prop_assert!(parsed.len() <= 1);
            }
        }

        #[test]
        fn the_bytewise_cleanliness_check_agrees_with_the_char_one(text in "[\\x00-\\x7f]{0,20}|\\PC{0,20}|[\\x00-\\x1f\\x7f-\\u{a0}a<>\"\\\\]{0,20}") {
            let by_chars = !text
                .chars()
                .any(|c| c.is_control() || matches!(c, '"' | '\\' | '<' | '>'));
            prop_assert_eq!(is_clean(&text), by_chars);
        }

        #[test]
        fn link_parser_never_panics(text in ".{0,300}") {
            let _ = ice_servers([text.as_str()]);
        }

        #[test]
        fn any_upstream_etag_round_trips(value in "[ -~]{1,80}") {
            prop_assert_eq!(
                upstream_if_match(Some(&gateway_etag(Some(&value)))),
                Ok(UpstreamIfMatch::Value(value.clone()))
            );
        }
    }

    #[test]
    fn a_backends_events_link_is_found_among_its_links() {
        let links = [
            "<stun:stun.example.net>; rel=\"ice-server\"",
            "</session/abc/events>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; events=\"active,inactive\", </session/abc/layer>; rel=\"urn:ietf:params:whep:ext:core:layer\"",
        ];
        assert_eq!(
            events_link(links),
            Some((
                "/session/abc/events".into(),
                vec!["active".into(), "inactive".into()]
            ))
        );
        assert_eq!(events_link(["<stun:a>; rel=\"ice-server\""]), None);
        // A quoted relation may escape any character; unquoted, it is the same relation.
        let escaped = "</e>; rel=\"urn:ietf:params:whep:ext:core:server-sent-\\events\"";
        assert_eq!(events_link([escaped]), Some(("/e".into(), vec![])));
    }
}
