//! Standard validation: the grammar (RFC 8866, and RFC 8839 / 8122 / 8285 / 8851 / 8853 for
//! the attributes WebRTC offers carry) of every line whipgate reads or forwards, checked on
//! the line model itself — no second parse, no copy. Unknown attributes are fine (they are
//! forwarded untouched); a known one must be well formed, so a backend never receives a line
//! whipgate's own policies would misread.
//!
//! The checks read bytes, not `str`s: every field separator and digit the grammar names is
//! ASCII, and a `str` slice or `str::parse` pays for UTF-8 boundaries and signs the grammar
//! never has. This is the gateway's hottest pure code: a Chromium offer has some 160 lines.

use super::lines::{Attr, RawLine};
use super::{Line, Lines, SdpError};

/// What the grammar check noticed on its way, so later steps can skip a pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Noticed {
    /// Some `a=candidate` names an mDNS (`.local`) address.
    pub mdns_candidates: bool,
}

pub fn well_formed(lines: &Lines) -> Result<Noticed, SdpError> {
    let mut noticed = Noticed::default();
    let mut seen_o = false;
    let mut seen_s = false;
    let mut seen_t = false;
    let mut in_media = false;
    let mut mids: Vec<&[u8]> = Vec::new();
    let mut bundle: Vec<&[u8]> = Vec::new();
    // The few lines read as text (and a line that fails) are looked up again by index:
    // making a `Line` of every line cost about a third of the check of a typical one.
    let line_at = |index: usize| lines.get(index).unwrap_or_default();
    for (index, line) in lines.raw().enumerate() {
        let fail = |reason: &str| {
            let line = line_at(index);
            let what = match (line.kind(), line.attribute_name()) {
                (Some(b'a'), Some(name)) => format!("a={name}"),
                (Some(kind), _) => format!("{}=", kind as char),
                (None, _) => "blank line".to_owned(),
            };
            SdpError::Malformed(format!("line {} ({what}): {reason}", index + 1))
        };
        let Some(kind) = line.kind() else {
            continue;
        };
        let value = line.value();
        match kind {
            b'a' => {
                attribute(line, || line_at(index)).map_err(fail)?;
                match line.attr() {
                    Attr::Candidate => {
                        noticed.mdns_candidates |= super::is_mdns_candidate(&line_at(index));
                    }
                    Attr::Mid if in_media => mids.push(
                        // Trimmed as the outline trims it, so the two agree on every mid.
                        line_at(index)
                            .attribute_value()
                            .unwrap_or("")
                            .trim()
                            .as_bytes(),
                    ),
                    Attr::Group => {
                        let mut parts = Fields::new(line.attribute_value());
                        if parts.next() == Some(b"BUNDLE") {
                            bundle.extend(parts);
                        }
                    }
                    _ => {}
                }
            }
            b'v' if index == 0 && value == b"0" => {}
            b'v' => return Err(fail("the version line must be the first and say v=0")),
            b'o' if !in_media => {
                if Fields::new(value).count() != 6 {
                    return Err(fail("origin needs six fields"));
                }
                seen_o = true;
            }
            b's' if !in_media => seen_s = true,
            b't' if !in_media => {
                let mut fields = Fields::new(value);
                let start = fields.next().and_then(|f| number(f, u64::MAX));
                let stop = fields.next().and_then(|f| number(f, u64::MAX));
                if start.is_none() || stop.is_none() || fields.has_more() {
                    return Err(fail("timing needs two numbers"));
                }
                seen_t = true;
            }
            b'm' => {
                if !(seen_o && seen_s && seen_t) {
                    return Err(fail("o=, s= and t= must come before the first m= line"));
                }
                in_media = true;
                media_line(value).map_err(fail)?;
            }
            b'c' => connection(line_at(index).value()).map_err(fail)?,
            b'b' => {
                let (_, amount) =
                    cut(value, b':').ok_or_else(|| fail("bandwidth needs type:value"))?;
                number(amount.trim_ascii(), u64::MAX)
                    .ok_or_else(|| fail("bandwidth is not a number"))?;
            }
            b'o' | b's' | b't' => return Err(fail("a session line inside a media section")),
            _ => {}
        }
    }
    if !(seen_o && seen_s && seen_t) {
        return Err(SdpError::Malformed(
            "o=, s= and t= lines are required".into(),
        ));
    }
    if let Some(stray) = bundle.iter().find(|mid| !mids.contains(mid)) {
        return Err(SdpError::Malformed(format!(
            "BUNDLE names mid {}, which no m-section has",
            String::from_utf8_lossy(stray)
        )));
    }
    Ok(noticed)
}

fn media_line(value: &[u8]) -> Result<(), &'static str> {
    let mut fields = Fields::new(value);
    let (Some(media), Some(port), Some(_proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err("m= needs media, port, protocol and formats");
    };
    if media.is_empty() {
        return Err("m= has no media type");
    }
    let (port, count) = cut(port, b'/').unwrap_or((port, b"1"));
    let max = u64::from(u16::MAX);
    if number(port, max).is_none() || number(count, max).is_none() {
        return Err("m= port is not a number");
    }
    if !fields.has_more() {
        return Err("m= lists no formats");
    }
    Ok(())
}

fn connection(value: &str) -> Result<(), &'static str> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(network), Some(family), Some(address), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("connection needs network, address type and address");
    };
    let address = address.split('/').next().unwrap_or("");
    match (network, family) {
        ("IN", "IP4") if address.parse::<std::net::Ipv4Addr>().is_ok() || is_hostname(address) => {
            Ok(())
        }
        ("IN", "IP6") if address.parse::<std::net::Ipv6Addr>().is_ok() || is_hostname(address) => {
            Ok(())
        }
        ("IN", "IP4" | "IP6") => Err("connection address is not an address of its type"),
        _ => Err("connection must be IN IP4 or IN IP6"),
    }
}

fn is_hostname(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && text.bytes().any(|b| b.is_ascii_alphabetic())
}

/// ASCII-whitespace-separated fields, like `split_ascii_whitespace` but with a cheap
/// `has_more`: the last field of most attributes (fmtp parameters, extmap URIs) only needs
/// to exist, not to be scanned to its end.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(text: &'a [u8]) -> Self {
        Self { rest: text }
    }

    fn skip_space(&mut self) {
        let start = self
            .rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.rest.len());
        self.rest = self.rest.get(start..).unwrap_or_default();
    }

    fn has_more(&mut self) -> bool {
        self.skip_space();
        !self.rest.is_empty()
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.skip_space();
        if self.rest.is_empty() {
            return None;
        }
        let end = self
            .rest
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(self.rest.len());
        let (field, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(field)
    }
}

/// A decimal number of at most `max`: digits only (RFC 8866's integers have no sign).
fn number(digits: &[u8], max: u64) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    // Nineteen digits always fit a u64: only longer numbers (none in a real offer) pay for
    // overflow checks on every digit (the branch is the same for the whole loop).
    let checked = digits.len() > 19;
    let mut value: u64 = 0;
    for &digit in digits {
        let digit = u64::from(digit.wrapping_sub(b'0'));
        if digit > 9 {
            return None;
        }
        value = if checked {
            value.checked_mul(10)?.checked_add(digit)?
        } else {
            value * 10 + digit
        };
    }
    (value <= max).then_some(value)
}

/// Checks one `a=` line; `text` gives it as a `Line` for the checks that read Unicode.
fn attribute<'a>(line: RawLine<'a>, text: impl Fn() -> Line<'a>) -> Result<(), &'static str> {
    let value = line.attribute_value();
    let mut fields = Fields::new(value);
    match line.attr() {
        Attr::RtcpFb | Attr::Fmtp => {
            let pt = fields.next().ok_or("names no payload type")?;
            if pt != b"*" && number(pt, 127).is_none() {
                return Err("payload type is not 0-127");
            }
            fields.has_more().then_some(()).ok_or("has no parameters")
        }
        Attr::Rtpmap => {
            fields
                .next()
                .and_then(|pt| number(pt, 127))
                .ok_or("rtpmap payload type is not 0-127")?;
            let encoding = fields.next().ok_or("rtpmap has no encoding")?;
            let (name, rest) = cut(encoding, b'/').unwrap_or((encoding, b""));
            let clock = cut(rest, b'/').map_or(rest, |(clock, _)| clock);
            if name.is_empty() || number(clock, u64::from(u32::MAX)).is_none() {
                return Err("rtpmap needs name/clock-rate");
            }
            Ok(())
        }
        Attr::Extmap => {
            let id = fields.next().ok_or("extmap has no id")?;
            let (id, direction) = cut(id, b'/').unwrap_or((id, b"sendrecv"));
            if number(id, 255).is_none_or(|id| id == 0) {
                return Err("extmap id is not 1-255");
            }
            if !matches!(
                direction,
                b"sendrecv" | b"sendonly" | b"recvonly" | b"inactive"
            ) {
                return Err("extmap direction is not a direction");
            }
            fields.has_more().then_some(()).ok_or("extmap has no URI")
        }
        Attr::Candidate => {
            let _foundation = fields.next();
            let component = fields.next().and_then(|f| number(f, u64::from(u16::MAX)));
            let _transport = fields.next();
            let priority = fields.next().and_then(|f| number(f, u64::from(u32::MAX)));
            let _address = fields.next();
            let port = fields.next().and_then(|f| number(f, u64::from(u16::MAX)));
            let typ = fields.next();
            let kind = fields.next();
            if component.is_none()
                || priority.is_none()
                || port.is_none()
                || typ != Some(b"typ")
                || kind.is_none()
            {
                return Err("candidate is not foundation component transport priority address port typ type");
            }
            Ok(())
        }
        Attr::Fingerprint => {
            let (Some(_hash), Some(print)) = (fields.next(), fields.next()) else {
                return Err("fingerprint needs a hash function and a value");
            };
            if is_hex_pairs(print) {
                Ok(())
            } else {
                Err("fingerprint is not colon-separated hex pairs")
            }
        }
        Attr::Setup => match value.trim_ascii() {
            b"actpass" | b"active" | b"passive" | b"holdconn" => Ok(()),
            _ => Err("setup is not actpass, active, passive or holdconn"),
        },
        Attr::Mid | Attr::IceUfrag | Attr::IcePwd => {
            let trimmed = text().attribute_value().unwrap_or("").trim();
            if trimmed.is_empty() || trimmed.len() > 256 || has_whitespace(trimmed) {
                Err("needs a value of 1-256 characters without spaces")
            } else {
                Ok(())
            }
        }
        Attr::Rid => {
            let (Some(_id), Some(direction)) = (fields.next(), fields.next()) else {
                return Err("rid needs an id and a direction");
            };
            matches!(direction, b"send" | b"recv")
                .then_some(())
                .ok_or("rid direction is not send or recv")
        }
        Attr::Simulcast => {
            let direction = fields.next().ok_or("simulcast is empty")?;
            matches!(direction, b"send" | b"recv")
                .then_some(())
                .ok_or("simulcast must start with send or recv")
        }
        Attr::Ssrc => {
            fields
                .next()
                .and_then(|f| number(f, u64::from(u32::MAX)))
                .ok_or("ssrc is not a 32-bit number")?;
            Ok(())
        }
        Attr::SendRecv
        | Attr::SendOnly
        | Attr::RecvOnly
        | Attr::Inactive
        | Attr::RtcpMux
        | Attr::RtcpMuxOnly
        | Attr::RtcpRsize
        | Attr::BundleOnly
        | Attr::EndOfCandidates
        | Attr::ExtmapAllowMixed
            if !value.is_empty() =>
        {
            Err("this flag takes no value")
        }
        Attr::Other if line.has_no_name() => Err("attribute has no name"),
        _ => Ok(()),
    }
}

/// `AB:CD:...`: two hex digits, then pairs each after a colon.
fn is_hex_pairs(print: &[u8]) -> bool {
    print.len() % 3 == 2
        && print.chunks(3).all(|chunk| match chunk {
            [high, low] => high.is_ascii_hexdigit() && low.is_ascii_hexdigit(),
            [high, low, colon] => {
                high.is_ascii_hexdigit() && low.is_ascii_hexdigit() && *colon == b':'
            }
            _ => false,
        })
}

/// `text` split around the first `separator`.
fn cut(text: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = text.iter().position(|&b| b == separator)?;
    Some((text.get(..at)?, text.get(at + 1..)?))
}

/// Any whitespace, Unicode's included; ASCII text (every real offer) is checked bytewise.
fn has_whitespace(text: &str) -> bool {
    if text.is_ascii() {
        // char::is_whitespace's ASCII members: space and tab to carriage return (with VT).
        text.bytes().any(|b| matches!(b, b' ' | b'\t'..=b'\r'))
    } else {
        text.contains(char::is_whitespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), SdpError> {
        well_formed(&Lines::parse(text).expect("lines")).map(|_| ())
    }

    const GOOD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
        a=rtpmap:111 opus/48000/2\r\na=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\n\
        a=extmap:4/recvonly urn:x\r\na=x-anything goes here\r\n";

    #[test]
    fn accepts_a_good_offer_with_unknown_attributes() {
        assert_eq!(check(GOOD), Ok(()));
    }

    #[test]
    fn names_the_bad_line_without_its_value() {
        let cases = [
            (
                GOOD.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:300 opus/48000"),
                "line 10 (a=rtpmap)",
            ),
            (
                GOOD.replace("a=setup:actpass", "a=setup:sideways"),
                "line 12 (a=setup)",
            ),
            (GOOD.replace("AB:CD", "ABCD"), "line 11 (a=fingerprint)"),
            (
                GOOD.replace("c=IN IP4 0.0.0.0", "c=IN IP4 ::1"),
                "line 7 (c=)",
            ),
            (
                GOOD.replace(
                    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                    "m=audio 9 UDP/TLS/RTP/SAVPF",
                ),
                "line 6 (m=)",
            ),
            (
                GOOD.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 7"),
                "BUNDLE names mid 7",
            ),
            (GOOD.replace("t=0 0\r\n", ""), "must come before"),
            (
                GOOD.replace("a=extmap:4/recvonly", "a=extmap:0"),
                "line 13 (a=extmap)",
            ),
            (
                GOOD.replace("a=sendonly", "a=sendonly:yes"),
                "line 9 (a=sendonly)",
            ),
        ];
        for (text, expected) in cases {
            let message = check(&text).expect_err(expected).to_string();
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_bytewise_helpers_agree_with_the_str_methods(text in "\\PC{0,24}|[0-9a-fA-F:/ \t\x0b]{0,24}") {
            proptest::prop_assert_eq!(
                cut(text.as_bytes(), b'/'),
                text.split_once('/').map(|(a, b)| (a.as_bytes(), b.as_bytes()))
            );
            proptest::prop_assert_eq!(has_whitespace(&text), text.contains(char::is_whitespace));
            let pairs = text.len() % 3 == 2
                && text.char_indices().all(|(i, c)| if i % 3 == 2 { c == ':' } else { c.is_ascii_hexdigit() });
            proptest::prop_assert_eq!(is_hex_pairs(text.as_bytes()), pairs);
            let fields: Vec<&[u8]> = Fields::new(text.as_bytes()).collect();
            let split: Vec<&[u8]> = text.split_ascii_whitespace().map(str::as_bytes).collect();
            proptest::prop_assert_eq!(fields, split);
        }

        #[test]
        fn numbers_are_unsigned_decimal_within_their_bound(text in "[0-9]{0,22}|[+-]?[0-9]{1,4}|[0-9a ]{1,5}", max in proptest::prelude::any::<u64>()) {
            let expected = text.parse::<u64>().ok().filter(|n| *n <= max && !text.starts_with('+'));
            proptest::prop_assert_eq!(number(text.as_bytes(), max), expected);
        }
    }
}
