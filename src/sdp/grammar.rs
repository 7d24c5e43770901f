//! Standard validation: the grammar (RFC 8866, and RFC 8839 / 8122 / 8285 / 8851 / 8853 for
//! the attributes WebRTC offers carry) of every line whipgate reads or forwards, checked on
//! the line model itself — no second parse, no copy. Unknown attributes are fine (they are
//! forwarded untouched); a known one must be well formed, so a backend never receives a line
//! whipgate's own policies would misread.

use super::lines::Attr;
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
    let mut mids: Vec<&str> = Vec::new();
    let mut bundle: Vec<&str> = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let fail = |reason: &str| {
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
            b'v' if index == 0 && value == "0" => {}
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
                let start = number::<u64>(fields.next());
                let stop = number::<u64>(fields.next());
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
            b'c' => connection(value).map_err(fail)?,
            b'b' => {
                let (_, amount) =
                    cut(value, b':').ok_or_else(|| fail("bandwidth needs type:value"))?;
                amount
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| fail("bandwidth is not a number"))?;
            }
            b'a' => {
                attribute(&line).map_err(fail)?;
                match line.attr() {
                    Attr::Candidate => {
                        noticed.mdns_candidates |= super::is_mdns_candidate(&line);
                    }
                    Attr::Mid if in_media => mids.push(line.attribute_value().unwrap_or("").trim()),
                    Attr::Group => {
                        let mut parts = Fields::new(line.attribute_value().unwrap_or(""));
                        if parts.next() == Some("BUNDLE") {
                            bundle.extend(parts);
                        }
                    }
                    _ => {}
                }
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
            "BUNDLE names mid {stray}, which no m-section has"
        )));
    }
    Ok(noticed)
}

fn media_line(value: &str) -> Result<(), &'static str> {
    let mut fields = Fields::new(value);
    let (Some(media), Some(port), Some(_proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err("m= needs media, port, protocol and formats");
    };
    if media.is_empty() {
        return Err("m= has no media type");
    }
    let (port, count) = cut(port, b'/').unwrap_or((port, "1"));
    if port.parse::<u16>().is_err() || count.parse::<u16>().is_err() {
        return Err("m= port is not a number");
    }
    if !fields.has_more() {
        return Err("m= lists no formats");
    }
    Ok(())
}

fn connection(value: &str) -> Result<(), &'static str> {
    let mut fields = Fields::new(value);
    let (Some(network), Some(family), Some(address), false) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.has_more(),
    ) else {
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
/// to exist, not to be scanned to its end (about 8% of the grammar check's instructions).
struct Fields<'a> {
    rest: &'a str,
}

impl<'a> Fields<'a> {
    fn new(text: &'a str) -> Self {
        Self { rest: text }
    }

    fn skip_space(&mut self) {
        let start = self
            .rest
            .bytes()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.rest.len());
        self.rest = self.rest.get(start..).unwrap_or("");
    }

    fn has_more(&mut self) -> bool {
        self.skip_space();
        !self.rest.is_empty()
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.skip_space();
        if self.rest.is_empty() {
            return None;
        }
        let end = self
            .rest
            .bytes()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(self.rest.len());
        let (field, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(field)
    }
}

fn number<T: std::str::FromStr>(text: Option<&str>) -> Option<T> {
    text?.parse().ok()
}

fn attribute(line: &Line<'_>) -> Result<(), &'static str> {
    let value = line.attribute_value().unwrap_or("");
    let mut fields = Fields::new(value);
    match line.attr() {
        Attr::Rtpmap => {
            number::<u8>(fields.next())
                .filter(|pt| *pt < 128)
                .ok_or("rtpmap payload type is not 0-127")?;
            let encoding = fields.next().ok_or("rtpmap has no encoding")?;
            let (name, rest) = cut(encoding, b'/').unwrap_or((encoding, ""));
            let clock = cut(rest, b'/').map_or(rest, |(clock, _)| clock);
            if name.is_empty() || number::<u32>(Some(clock)).is_none() {
                return Err("rtpmap needs name/clock-rate");
            }
            Ok(())
        }
        Attr::Fmtp | Attr::RtcpFb => {
            let pt = fields.next().ok_or("names no payload type")?;
            if pt != "*" && number::<u8>(Some(pt)).is_none_or(|pt| pt >= 128) {
                return Err("payload type is not 0-127");
            }
            fields.has_more().then_some(()).ok_or("has no parameters")
        }
        Attr::Candidate => {
            let _foundation = fields.next();
            let component = number::<u16>(fields.next());
            let _transport = fields.next();
            let priority = number::<u32>(fields.next());
            let _address = fields.next();
            let port = number::<u16>(fields.next());
            let typ = fields.next();
            let kind = fields.next();
            if component.is_none()
                || priority.is_none()
                || port.is_none()
                || typ != Some("typ")
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
        Attr::Setup => match value.trim() {
            "actpass" | "active" | "passive" | "holdconn" => Ok(()),
            _ => Err("setup is not actpass, active, passive or holdconn"),
        },
        Attr::Mid | Attr::IceUfrag | Attr::IcePwd => {
            let trimmed = value.trim();
            if trimmed.is_empty() || trimmed.len() > 256 || has_whitespace(trimmed) {
                Err("needs a value of 1-256 characters without spaces")
            } else {
                Ok(())
            }
        }
        Attr::Extmap => {
            let id = fields.next().ok_or("extmap has no id")?;
            let (id, direction) = cut(id, b'/').unwrap_or((id, "sendrecv"));
            if number::<u16>(Some(id)).is_none_or(|id| id == 0 || id > 255) {
                return Err("extmap id is not 1-255");
            }
            if !matches!(direction, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                return Err("extmap direction is not a direction");
            }
            fields.has_more().then_some(()).ok_or("extmap has no URI")
        }
        Attr::Rid => {
            let (Some(_id), Some(direction)) = (fields.next(), fields.next()) else {
                return Err("rid needs an id and a direction");
            };
            matches!(direction, "send" | "recv")
                .then_some(())
                .ok_or("rid direction is not send or recv")
        }
        Attr::Simulcast => {
            let direction = fields.next().ok_or("simulcast is empty")?;
            matches!(direction, "send" | "recv")
                .then_some(())
                .ok_or("simulcast must start with send or recv")
        }
        Attr::Ssrc => {
            number::<u32>(fields.next()).ok_or("ssrc is not a 32-bit number")?;
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
        Attr::Other if line.attribute_name().is_none_or(str::is_empty) => {
            Err("attribute has no name")
        }
        _ => Ok(()),
    }
}

/// `AB:CD:...`: two hex digits, then pairs each after a colon.
fn is_hex_pairs(print: &str) -> bool {
    print.len() % 3 == 2
        && print.as_bytes().chunks(3).all(|chunk| match chunk {
            [high, low] => high.is_ascii_hexdigit() && low.is_ascii_hexdigit(),
            [high, low, colon] => {
                high.is_ascii_hexdigit() && low.is_ascii_hexdigit() && *colon == b':'
            }
            _ => false,
        })
}

/// `text` split around the first `separator`, an ASCII byte, so both halves are whole
/// characters. `str::split_once(char)` goes through the generic char searcher, about a
/// hundred instructions even on a three-byte field, and the grammar splits some sixty
/// fields per offer.
fn cut(text: &str, separator: u8) -> Option<(&str, &str)> {
    let at = text.bytes().position(|b| b == separator)?;
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
            proptest::prop_assert_eq!(cut(&text, b'/'), text.split_once('/'));
            proptest::prop_assert_eq!(has_whitespace(&text), text.contains(char::is_whitespace));
            let pairs = text.len() % 3 == 2
                && text.char_indices().all(|(i, c)| if i % 3 == 2 { c == ':' } else { c.is_ascii_hexdigit() });
            proptest::prop_assert_eq!(is_hex_pairs(&text), pairs);
        }
    }
}
