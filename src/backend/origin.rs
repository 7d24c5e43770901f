//! Absolute backend URLs, made without the url crate's parser where it would change nothing.
//!
//! Every session request names a backend resource by its absolute URL, and nearly all of
//! them share the few origins of the configured backends. Parsing scheme and host is most of
//! a whole-URL parse (the url crate runs its IDNA pass even on an IP address), and setting a
//! path on a parsed origin still runs the path parser, which was some 2,000 instructions per
//! URL, three URLs a session. So a thread keeps the origins it has parsed, and a
//! [`BackendUrl`] whose path and query are already in the url crate's normal form (the usual
//! `/resource/<id>`) is that origin's text and its tail put together, nothing parsed. The
//! parsed `Url` is made only where a caller asks for one. Anything unusual (whitespace,
//! backslashes, dot segments, bytes the url crate escapes, another scheme) takes the url
//! crate's way, and property tests hold both ways to the same result.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use url::{ParseError, Position, Url};

/// Origins one thread keeps: backends' hosts are few, and a backend naming ever more hosts
/// only cycles this list.
const KEPT_ORIGINS: usize = 16;

thread_local! {
    static ORIGINS: RefCell<Vec<(Box<str>, Origin)>> = const { RefCell::new(Vec::new()) };
}

/// An absolute URL to a backend, as text in the url crate's normal form.
#[derive(Clone)]
pub struct BackendUrl {
    text: String,
    host_start: usize,
    authority_end: usize,
    path_start: usize,
    query_end: usize,
    /// A URL with this one's scheme and authority (this very URL when `whole`): host and
    /// port are read from it, and [`Self::url`] is made from it.
    base: Arc<Url>,
    whole: bool,
    /// Boxed: this is moved inside every request's future, and is rarely made.
    parsed: OnceLock<Box<Url>>,
}

impl BackendUrl {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed URL, made on first use (the text was put together without it).
    pub fn url(&self) -> &Url {
        if self.whole {
            return &self.base;
        }
        self.parsed.get_or_init(|| {
            let mut url = Url::clone(&self.base);
            set_tail(&mut url, &self.text[self.path_start..]);
            Box::new(url)
        })
    }

    pub fn scheme(&self) -> &str {
        self.base.scheme()
    }

    pub fn host_str(&self) -> Option<&str> {
        self.base.host_str()
    }

    pub fn port_or_known_default(&self) -> Option<u16> {
        self.base.port_or_known_default()
    }

    /// `host[:port]`, as a `Host` header names it (the url crate leaves a default port out).
    pub fn authority(&self) -> &str {
        &self.text[self.host_start..self.authority_end]
    }

    /// Path and query, as an HTTP/1.1 request line names them.
    pub fn path_and_query(&self) -> &str {
        &self.text[self.path_start..self.query_end]
    }
}

impl From<Url> for BackendUrl {
    fn from(url: Url) -> Self {
        Self {
            text: url.as_str().to_owned(),
            host_start: url[..Position::BeforeHost].len(),
            authority_end: url[..Position::AfterPort].len(),
            path_start: url[..Position::BeforePath].len(),
            query_end: url[..Position::AfterQuery].len(),
            base: Arc::new(url),
            whole: true,
            parsed: OnceLock::new(),
        }
    }
}

impl PartialEq for BackendUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for BackendUrl {}

impl fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BackendUrl").field(&self.text).finish()
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A parsed http(s) origin that clean tails are appended to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    base: Arc<Url>,
    /// The length of its text up to the port: where a tail goes.
    end: usize,
    host_start: usize,
}

impl Origin {
    /// The scheme and authority of `url`, which must be http(s).
    pub fn of(url: Url) -> Self {
        Self {
            end: url[..Position::AfterPort].len(),
            host_start: url[..Position::BeforeHost].len(),
            base: Arc::new(url),
        }
    }

    /// This origin with `tail` (`/path?query`) as the url crate would make it.
    pub fn with_tail(&self, tail: &str) -> BackendUrl {
        if !is_normal_tail(tail) {
            let mut url = Url::clone(&self.base);
            set_tail(&mut url, tail);
            return url.into();
        }
        let mut text = String::with_capacity(self.end + tail.len());
        text.push_str(&self.base.as_str()[..self.end]);
        text.push_str(tail);
        BackendUrl {
            host_start: self.host_start,
            authority_end: self.end,
            path_start: self.end,
            query_end: text.len(),
            text,
            base: self.base.clone(),
            whole: false,
            parsed: OnceLock::new(),
        }
    }
}

/// `Url::parse(text)`, the same URL, cheaper for a clean http(s) URL of a known origin.
pub fn parse(text: &str) -> Result<BackendUrl, ParseError> {
    let Some(origin_end) = clean_origin_end(text) else {
        return Url::parse(text).map(BackendUrl::from);
    };
    let (origin, rest) = text.split_at(origin_end);
    let known = ORIGINS.with_borrow(|origins| {
        origins
            .iter()
            .find(|(text, _)| **text == *origin)
            .map(|(_, known)| known.clone())
    });
    match known {
        Some(known) => Ok(known.with_tail(rest)),
        None => {
            let url = Url::parse(text)?;
            if let Ok(parsed) = Url::parse(origin) {
                ORIGINS.with_borrow_mut(|origins| {
                    if origins.len() >= KEPT_ORIGINS {
                        origins.remove(0);
                    }
                    origins.push((origin.into(), Origin::of(parsed)));
                });
            }
            Ok(url.into())
        }
    }
}

/// `base.join(reference)`, the same URL, cheaper for the usual Location of a WHIP
/// resource: a clean absolute path (`/resource/123`) against an http(s) base.
pub fn join(base: &BackendUrl, reference: &str) -> Result<BackendUrl, ParseError> {
    let absolute_path = reference.starts_with('/') && !reference.starts_with("//");
    if !absolute_path || !matches!(base.scheme(), "http" | "https") || !is_clean(reference) {
        return base.url().join(reference).map(BackendUrl::from);
    }
    Ok(Origin {
        base: base.base.clone(),
        end: base.authority_end,
        host_start: base.host_start,
    }
    .with_tail(reference))
}

/// Replaces path, query and fragment with those of `tail` (`/path?query#fragment`, each
/// part optional).
fn set_tail(url: &mut Url, tail: &str) {
    let (rest, fragment) = match tail.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (tail, None),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    url.set_path(path);
    url.set_query(query);
    url.set_fragment(fragment);
}

/// Whether the url crate keeps `tail` (`/path[?query]`, after an http(s) origin) byte for
/// byte: no byte it escapes, no dot segment it resolves, no fragment. Conservative: a `false`
/// only costs the parse.
fn is_normal_tail(tail: &str) -> bool {
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    if !path.starts_with('/') {
        return false;
    }
    let mut dot_or_escape = false;
    for b in path.bytes() {
        if !PATH_KEPT[usize::from(b)] {
            return false;
        }
        dot_or_escape |= b == b'.' || b == b'%';
    }
    if dot_or_escape && path.split('/').any(is_dot_segment) {
        return false;
    }
    query.is_none_or(|query| query.bytes().all(|b| QUERY_KEPT[usize::from(b)]))
}

/// Path bytes the url crate keeps as they are: RFC 3986's unreserved and sub-delims, `:`,
/// `@`, `/` and `%` (fewer than it keeps; the rest only cost a parse).
const fn path_kept(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'%'
        )
}

/// Query bytes the url crate keeps after an http(s) origin (its special-query set escapes
/// the others).
const fn query_kept(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'"' | b'#' | b'<' | b'>' | b'\'')
}

/// `kept` of every byte, looked up instead of matched.
macro_rules! byte_table {
    ($kept:ident) => {{
        let mut table = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            table[byte] = $kept(byte as u8);
            byte += 1;
        }
        table
    }};
}

static PATH_KEPT: [bool; 256] = byte_table!(path_kept);
static QUERY_KEPT: [bool; 256] = byte_table!(query_kept);

/// `.` or `..`, a dot also spelt `%2e` (the url crate resolves those too).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', after @ ..] => after,
            [b'%', b'2', b'e' | b'E', after @ ..] => after,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Where the origin (`http[s]://authority`) of a clean absolute http(s) URL ends.
fn clean_origin_end(text: &str) -> Option<usize> {
    let after_scheme = if text.starts_with("http://") {
        7
    } else if text.starts_with("https://") {
        8
    } else {
        return None;
    };
    if !is_clean(text) {
        return None;
    }
    let authority = text.get(after_scheme..)?;
    let end = authority.find(['/', '?', '#']).unwrap_or(authority.len());
    (end > 0).then_some(after_scheme + end)
}

/// No byte a URL parser trims, drops or reads as another (spaces and controls, which are
/// trimmed or removed; `\`, which special schemes read as `/`).
fn is_clean(text: &str) -> bool {
    text.bytes().all(|b| b > b' ' && b != b'\\' && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether a fast result is the url crate's, in text, parsed form and every slice the
    /// client reads.
    fn same(fast: &Result<BackendUrl, ParseError>, slow: &Result<Url, ParseError>) -> bool {
        match (fast, slow) {
            (Ok(fast), Ok(slow)) => {
                fast.as_str() == slow.as_str()
                    && fast.url() == slow
                    && fast.authority() == &slow[Position::BeforeHost..Position::AfterPort]
                    && fast.path_and_query() == &slow[Position::BeforePath..Position::AfterQuery]
                    && fast.host_str() == slow.host_str()
                    && fast.port_or_known_default() == slow.port_or_known_default()
            }
            (Err(fast), Err(slow)) => fast == slow,
            _ => false,
        }
    }

    #[test]
    fn a_known_origin_is_reused_and_the_result_is_the_whole_parse() {
        for text in [
            "http://127.0.0.1:8081/resource/1",
            "http://127.0.0.1:8081/resource/2?x=1#f",
            "HTTP://Example.COM:80/a/../b",
            "https://vendor.example/x y",
            "https://user:pw@vendor.example:443//two//slashes/",
            "http://[::1]:7080?only=query",
            "http://h.example",
            "ftp://h.example/x",
            "not a url",
        ] {
            for _ in 0..2 {
                assert!(same(&parse(text), &Url::parse(text)), "{text}");
            }
        }
    }

    #[test]
    fn a_clean_resource_of_a_known_origin_is_put_together_not_parsed() {
        parse("http://127.0.0.1:9/r").expect("learns the origin");
        let url = parse("http://127.0.0.1:9/resource/ab12?x=1").expect("url");
        assert!(!url.whole && url.parsed.get().is_none());
        let joined = join(&url, "/resource/cd34").expect("joined");
        assert!(!joined.whole && joined.parsed.get().is_none());
        assert_eq!(joined.as_str(), "http://127.0.0.1:9/resource/cd34");
        assert_eq!(joined.authority(), "127.0.0.1:9");
        // A dot segment is the url crate's to resolve.
        assert!(parse("http://127.0.0.1:9/a/%2E/b").expect("url").whole);
    }

    #[test]
    fn joins_like_the_url_crate() {
        let base = Url::parse("http://10.0.0.5:7080/whip/cam?token=1#x").expect("base");
        for reference in [
            "/resource/abc",
            "/resource/abc?q=1",
            "/r#frag",
            "//other.example/x",
            "relative/x",
            "/a/./b/../c",
            "/with space",
            "/back\\slash",
            "",
            "?only",
            "https://elsewhere.example/r",
        ] {
            let expected = base.join(reference);
            assert!(
                same(&join(&BackendUrl::from(base.clone()), reference), &expected),
                "{reference:?}"
            );
            let made = parse(base.as_str()).expect("base");
            assert!(same(&join(&made, reference), &expected), "{reference:?}");
        }
    }

    fn tail() -> impl Strategy<Value = String> {
        "([/a-z0-9.%?#@:;=&+ \\\\\\t~'\"<>`{}^|!$()*,é-]|%2[eE]|/[.]{1,2}){0,24}"
    }

    proptest! {
        #[test]
        fn parse_is_the_whole_parse(
            origin in prop::sample::select(vec![
                "http://127.0.0.1:18081", "https://vendor.example", "http://[::1]", "https://a.example:8443",
            ]),
            tail in tail(),
        ) {
            let text = format!("{origin}{tail}");
            // Twice: the first may learn the origin, the second reuses it.
            prop_assert!(same(&parse(&text), &Url::parse(&text)));
            prop_assert!(same(&parse(&text), &Url::parse(&text)));
        }

        #[test]
        fn join_is_the_url_crates_join(
            base in prop::sample::select(vec![
                "http://127.0.0.1:18081/whip/x", "https://vendor.example/a/b?c=d#e", "http://[::1]/",
            ]),
            reference in tail(),
        ) {
            let expected = Url::parse(base).expect("base").join(&reference);
            let whole = BackendUrl::from(Url::parse(base).expect("base"));
            prop_assert!(same(&join(&whole, &reference), &expected));
            // A base put together from a known origin, as a session's resource is.
            parse(base).expect("base");
            let made = parse(base).expect("base");
            prop_assert!(same(&join(&made, &reference), &expected));
        }

        #[test]
        fn many_origins_keep_the_list_bounded(port in 1u16..u16::MAX) {
            let text = format!("http://127.0.0.1:{port}/r");
            prop_assert!(same(&parse(&text), &Url::parse(&text)));
            prop_assert!(ORIGINS.with_borrow(Vec::len) <= KEPT_ORIGINS);
        }
    }
}
