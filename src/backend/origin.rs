//! Absolute URLs parsed without parsing their origin again. Every session request names a
//! backend resource by its absolute URL, and nearly all of them share the few origins of the
//! configured backends; parsing scheme and host is most of a whole-URL parse (the url crate
//! runs its IDNA pass even on an IP address). Here a thread keeps the origins it has parsed
//! and sets only path, query and fragment on a copy. Anything unusual (whitespace,
//! backslashes, another scheme) takes the whole parse, and property tests hold both ways to
//! the same result.

use std::cell::RefCell;

use url::{ParseError, Url};

/// Origins one thread keeps: backends' hosts are few, and a backend naming ever more hosts
/// only cycles this list.
const KEPT_ORIGINS: usize = 16;

thread_local! {
    static ORIGINS: RefCell<Vec<(Box<str>, Url)>> = const { RefCell::new(Vec::new()) };
}

/// `Url::parse(text)`, the same result, cheaper for a clean http(s) URL of a known origin.
pub fn parse(text: &str) -> Result<Url, ParseError> {
    let Some(origin_end) = clean_origin_end(text) else {
        return Url::parse(text);
    };
    let (origin, rest) = text.split_at(origin_end);
    let known = ORIGINS.with_borrow(|origins| {
        origins
            .iter()
            .find(|(text, _)| **text == *origin)
            .map(|(_, url)| url.clone())
    });
    match known {
        Some(mut url) => {
            set_tail(&mut url, rest);
            Ok(url)
        }
        None => {
            let url = Url::parse(text)?;
            if let Ok(parsed) = Url::parse(origin) {
                ORIGINS.with_borrow_mut(|origins| {
                    if origins.len() >= KEPT_ORIGINS {
                        origins.remove(0);
                    }
                    origins.push((origin.into(), parsed));
                });
            }
            Ok(url)
        }
    }
}

/// `base.join(reference)`, the same result, cheaper for the usual Location of a WHIP
/// resource: a clean absolute path (`/resource/123`) against an http(s) base.
pub fn join(base: &Url, reference: &str) -> Result<Url, ParseError> {
    let absolute_path = reference.starts_with('/') && !reference.starts_with("//");
    if !absolute_path || !matches!(base.scheme(), "http" | "https") || !is_clean(reference) {
        return base.join(reference);
    }
    let mut url = base.clone();
    set_tail(&mut url, reference);
    Ok(url)
}

/// Replaces path, query and fragment with those of `tail` (`/path?query#fragment`, each
/// part optional).
pub(super) fn set_tail(url: &mut Url, tail: &str) {
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
                assert_eq!(parse(text), Url::parse(text), "{text}");
            }
        }
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
            assert_eq!(
                join(&base, reference),
                base.join(reference),
                "{reference:?}"
            );
        }
    }

    fn tail() -> impl Strategy<Value = String> {
        "[/a-z0-9.%?#@:;=&+ \\\\\\t~-]{0,24}"
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
            prop_assert_eq!(parse(&text), Url::parse(&text));
            prop_assert_eq!(parse(&text), Url::parse(&text));
        }

        #[test]
        fn join_is_the_url_crates_join(
            base in prop::sample::select(vec![
                "http://127.0.0.1:18081/whip/x", "https://vendor.example/a/b?c=d#e", "http://[::1]/",
            ]),
            reference in tail(),
        ) {
            let base = Url::parse(base).expect("base");
            prop_assert_eq!(join(&base, &reference), base.join(&reference));
        }

        #[test]
        fn many_origins_keep_the_list_bounded(port in 1u16..u16::MAX) {
            let text = format!("http://127.0.0.1:{port}/r");
            prop_assert_eq!(parse(&text), Url::parse(&text));
            prop_assert!(ORIGINS.with_borrow(Vec::len) <= KEPT_ORIGINS);
        }
    }
}
