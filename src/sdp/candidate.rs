//! ICE candidates (RFC 8839 §5.1) as policy sees them: what kind of address and transport a
//! candidate has, and address mapping done in place so the rest of the line is untouched.

use std::net::IpAddr;

use serde::Deserialize;

use super::Line;

/// A class of candidate a policy may drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateClass {
    /// `.local` names (always dropped from client input, RFC 9725 §4.3.2).
    Mdns,
    /// RFC 1918, CGNAT 100.64/10, link-local, IPv6 ULA and link-local.
    Private,
    /// 127/8 and ::1.
    Loopback,
    Ipv6,
    Tcp,
    /// `typ relay`.
    Relay,
}

/// The parts of an `a=candidate:` line policy looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub transport: &'a str,
    pub address: &'a str,
    pub kind: &'a str,
}

impl<'a> Candidate<'a> {
    pub fn parse(line: &Line<'a>) -> Option<Self> {
        if line.attribute_name() != Some("candidate") {
            return None;
        }
        let mut fields = line.attribute_value()?.split_ascii_whitespace();
        let _foundation = fields.next()?;
        let _component = fields.next()?;
        let transport = fields.next()?;
        let _priority = fields.next()?;
        let address = fields.next()?;
        let _port = fields.next()?;
        let _typ = fields.next()?;
        let kind = fields.next()?;
        Some(Self {
            transport,
            address,
            kind,
        })
    }

    pub fn is(&self, class: CandidateClass) -> bool {
        let ip = self.address.parse::<IpAddr>().ok();
        match class {
            CandidateClass::Mdns => super::lines::is_mdns_name(self.address),
            CandidateClass::Private => ip.is_some_and(is_private),
            CandidateClass::Loopback => ip.is_some_and(|ip| ip.is_loopback()),
            CandidateClass::Ipv6 => matches!(ip, Some(IpAddr::V6(_))),
            CandidateClass::Tcp => {
                self.transport.eq_ignore_ascii_case("tcp")
                    || self.transport.eq_ignore_ascii_case("ssltcp")
            }
            CandidateClass::Relay => self.kind.eq_ignore_ascii_case("relay"),
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Replaces the `n`th (0-based) whitespace-separated field of `text`, keeping all spacing.
pub fn replace_field(text: &str, n: usize, value: &str) -> Option<String> {
    let mut index = 0;
    let mut in_field = false;
    let mut start = None;
    for (offset, c) in text.char_indices() {
        let space = c.is_ascii_whitespace();
        if !space && !in_field {
            if index == n {
                start = Some(offset);
            }
            in_field = true;
        } else if space && in_field {
            if let Some(begin) = start {
                return Some(format!("{}{}{}", &text[..begin], value, &text[offset..]));
            }
            in_field = false;
            index += 1;
        }
    }
    start.map(|begin| format!("{}{}", &text[..begin], value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Lines;

    fn classes(text: &str) -> Vec<CandidateClass> {
        let lines = Lines::parse(text).expect("line");
        let line = lines.get(0).expect("one line");
        let candidate = Candidate::parse(&line).expect("candidate");
        [
            CandidateClass::Mdns,
            CandidateClass::Private,
            CandidateClass::Loopback,
            CandidateClass::Ipv6,
            CandidateClass::Tcp,
            CandidateClass::Relay,
        ]
        .into_iter()
        .filter(|c| candidate.is(*c))
        .collect()
    }

    #[test]
    fn classifies_candidates() {
        use CandidateClass::*;
        assert_eq!(
            classes("a=candidate:1 1 udp 1 abc.local 9 typ host"),
            vec![Mdns]
        );
        assert_eq!(
            classes("a=candidate:1 1 udp 1 192.168.1.4 9 typ host"),
            vec![Private]
        );
        assert_eq!(
            classes("a=candidate:1 1 udp 1 100.80.1.4 9 typ srflx raddr 0.0.0.0 rport 0"),
            vec![Private]
        );
        assert_eq!(
            classes("a=candidate:1 1 UDP 1 127.0.0.2 9 typ host"),
            vec![Loopback]
        );
        assert_eq!(
            classes("a=candidate:1 1 TCP 1 203.0.113.9 9 typ host tcptype active"),
            vec![Tcp]
        );
        assert_eq!(
            classes("a=candidate:1 1 udp 1 fe80::1 9 typ host"),
            vec![Private, Ipv6]
        );
        assert_eq!(
            classes("a=candidate:1 1 udp 1 2001:db8::1 9 typ relay"),
            vec![Ipv6, Relay]
        );
        assert_eq!(
            classes("a=candidate:1 1 udp 1 198.51.100.1 9 typ host"),
            Vec::<CandidateClass>::new()
        );
    }

    #[test]
    fn replaces_a_field_in_place() {
        assert_eq!(
            replace_field(
                "candidate:1 1 udp 5 10.0.0.5 40000 typ host",
                4,
                "203.0.113.7"
            )
            .as_deref(),
            Some("candidate:1 1 udp 5 203.0.113.7 40000 typ host")
        );
        assert_eq!(
            replace_field("IN IP4 10.0.0.5", 2, "1.2.3.4").as_deref(),
            Some("IN IP4 1.2.3.4")
        );
        assert_eq!(replace_field("a b", 5, "x"), None);
    }
}
