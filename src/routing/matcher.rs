//! What a route matches on: endpoint kind, stream name (glob, or regex with named captures),
//! request host, header and query values, client address by CIDR.

use std::net::IpAddr;

use globset::GlobMatcher;
use ipnet::IpNet;

use crate::kind::EndpointKind;
use crate::stream::{StreamName, StreamPattern};

/// The facts of one request that routing may look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub kind: EndpointKind,
    pub stream: &'a StreamName,
    /// Host without port, lower case.
    pub host: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The client's address, proxies already accounted for.
    pub client_ip: Option<IpAddr>,
    /// Who the client is, per `[client_auth.NAME]` that accepted its credential.
    pub identities: &'a [(String, crate::auth::Identity)],
}

impl<'a> RequestFacts<'a> {
    pub fn identity(&self, authenticator: &str) -> Option<&'a crate::auth::Identity> {
        self.identities
            .iter()
            .find(|(name, _)| name == authenticator)
            .map(|(_, identity)| identity)
    }
}

/// A claim equals `value`: a string (or number, bool) equal to it, or an array holding it.
fn claim_has(claim: &serde_json::Value, value: &str) -> bool {
    match claim {
        serde_json::Value::String(s) => s == value,
        serde_json::Value::Array(items) => items.iter().any(|item| claim_has(item, value)),
        serde_json::Value::Number(n) => n.to_string() == value,
        serde_json::Value::Bool(b) => b.to_string() == value,
        _ => false,
    }
}

/// The first condition of a route a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss<'a> {
    Kind,
    Host,
    Header(&'a str),
    Query(&'a str),
    Client,
    /// Tier or claims asked for, and no client auth accepted the credential.
    NoIdentity,
    Tier,
    Claim(&'a str),
    Stream,
}

impl std::fmt::Display for Miss<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Kind => f.write_str("the kind differs"),
            Miss::Host => f.write_str("the host differs"),
            Miss::Header(name) => write!(f, "header {name} is missing or differs"),
            Miss::Query(name) => write!(f, "query {name} is missing or differs"),
            Miss::Client => f.write_str("the client address is outside client_cidr"),
            Miss::NoIdentity => f.write_str("no credential was accepted (give --token)"),
            Miss::Tier => f.write_str("the credential's tier differs"),
            Miss::Claim(name) => write!(f, "claim {name} is missing or differs"),
            Miss::Stream => f.write_str("the stream name does not match"),
        }
    }
}

/// One route's `match` table, validated.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub kind: Option<EndpointKind>,
    pub stream: Option<StreamPattern>,
    /// Lower-case host globs.
    pub hosts: Vec<GlobMatcher>,
    /// Lower-case header name and exact value.
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub client_cidrs: Vec<IpNet>,
    /// The authenticator whose identity `tier` and `claims` are read from (the route's; any
    /// that accepted the credential when the route has none).
    pub identity_from: Option<String>,
    pub tier: Option<String>,
    /// Claim name → value: a string claim equal to it, or an array claim containing it.
    pub claims: Vec<(String, String)>,
}

impl Matcher {
    /// The regex captures when the request matches, `None` when it does not.
    pub fn matches(&self, facts: &RequestFacts<'_>) -> Option<Vec<(String, String)>> {
        self.check(facts).ok()
    }

    /// The regex captures when the request matches, else the first condition that failed
    /// (for `explain`; no allocation on the way to a miss).
    pub fn check(&self, facts: &RequestFacts<'_>) -> Result<Vec<(String, String)>, Miss<'_>> {
        if self.kind.is_some_and(|k| k != facts.kind) {
            return Err(Miss::Kind);
        }
        if !self.hosts.is_empty() {
            let host = facts.host.ok_or(Miss::Host)?;
            if !self.hosts.iter().any(|glob| glob.is_match(host)) {
                return Err(Miss::Host);
            }
        }
        for (name, value) in &self.headers {
            let present = facts
                .headers
                .get_all(name.as_str())
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.trim() == value));
            if !present {
                return Err(Miss::Header(name));
            }
        }
        if !self.query.is_empty() {
            let query = facts.query.unwrap_or("");
            for (name, value) in &self.query {
                let present = url::form_urlencoded::parse(query.as_bytes())
                    .any(|(k, v)| k == name.as_str() && v == value.as_str());
                if !present {
                    return Err(Miss::Query(name));
                }
            }
        }
        if !self.client_cidrs.is_empty() {
            let ip = facts.client_ip.ok_or(Miss::Client)?;
            if !self.client_cidrs.iter().any(|net| net.contains(&ip)) {
                return Err(Miss::Client);
            }
        }
        if self.tier.is_some() || !self.claims.is_empty() {
            // The route's own authenticator, or (a route without `auth`) whichever accepted
            // the credential first.
            let identity = match &self.identity_from {
                Some(name) => facts.identity(name),
                None => facts.identities.first().map(|(_, identity)| identity),
            }
            .ok_or(Miss::NoIdentity)?;
            if self.tier.is_some() && identity.tier != self.tier {
                return Err(Miss::Tier);
            }
            for (name, value) in &self.claims {
                let held = identity.claims.get(name).ok_or(Miss::Claim(name))?;
                if !claim_has(held, value) {
                    return Err(Miss::Claim(name));
                }
            }
        }
        match &self.stream {
            Some(pattern) => pattern.captures(facts.stream.as_str()).ok_or(Miss::Stream),
            None => Ok(Vec::new()),
        }
    }

    /// True when this matcher matches every request of `kind` (so later routes of that kind
    /// are unreachable).
    pub fn catches_all(&self, kind: Option<EndpointKind>) -> bool {
        (self.kind.is_none() || self.kind == kind)
            && self
                .stream
                .as_ref()
                .is_none_or(StreamPattern::matches_everything)
            && self.hosts.is_empty()
            && self.headers.is_empty()
            && self.query.is_empty()
            && self.client_cidrs.is_empty()
            && self.tier.is_none()
            && self.claims.is_empty()
    }

    /// The conditions, for `explain`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(kind) = self.kind {
            parts.push(format!("kind {kind}"));
        }
        if let Some(stream) = &self.stream {
            parts.push(stream.describe());
        }
        if !self.hosts.is_empty() {
            let hosts: Vec<&str> = self.hosts.iter().map(|g| g.glob().glob()).collect();
            parts.push(format!("host {}", hosts.join(" or ")));
        }
        for (name, value) in &self.headers {
            parts.push(format!("header {name} = {value:?}"));
        }
        for (name, value) in &self.query {
            parts.push(format!("query {name} = {value:?}"));
        }
        if !self.client_cidrs.is_empty() {
            let nets: Vec<String> = self.client_cidrs.iter().map(ToString::to_string).collect();
            parts.push(format!("client in {}", nets.join(", ")));
        }
        if let Some(tier) = &self.tier {
            parts.push(format!("tier {tier:?}"));
        }
        for (name, value) in &self.claims {
            parts.push(format!("claim {name} = {value:?}"));
        }
        if parts.is_empty() {
            "everything".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Which header the trusted proxies in front append the client's address to. Only that one
/// is read: a proxy that appends to `X-Forwarded-For` passes a client's own `Forwarded`
/// through untouched, so reading both would let a client name its own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

/// The client's address: the connection's peer, unless the peer is a trusted proxy; then the
/// rightmost address of the proxies' header that is not itself a trusted proxy (everything
/// left of it came from the client and proves nothing). An entry that does not parse ends
/// the walk: the hop right of it, which received the request from it, is the answer.
pub fn client_ip(
    peer: IpAddr,
    headers: &http::HeaderMap,
    trusted_proxies: &[IpNet],
    header: ForwardedHeader,
) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let mut chain: Vec<Option<IpAddr>> = Vec::new();
    match header {
        ForwardedHeader::Forwarded => {
            for value in headers.get_all(http::header::FORWARDED).iter() {
                let Ok(value) = value.to_str() else {
                    chain.push(None);
                    continue;
                };
                for element in value.split(',') {
                    let hop = element.split(';').find_map(|pair| {
                        let (key, raw) = pair.split_once('=')?;
                        key.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| parse_forwarded_for(raw.trim()))
                    });
                    chain.push(hop.flatten());
                }
            }
        }
        ForwardedHeader::XForwardedFor => {
            for value in headers.get_all("x-forwarded-for").iter() {
                let Ok(value) = value.to_str() else {
                    chain.push(None);
                    continue;
                };
                chain.extend(
                    value
                        .split(',')
                        .map(|part| part.trim().parse::<IpAddr>().ok()),
                );
            }
        }
    }
    let mut nearest = peer;
    for hop in chain.into_iter().rev() {
        match hop {
            Some(ip) if trusted(&ip) => nearest = ip,
            Some(ip) => return ip,
            None => return nearest,
        }
    }
    nearest
}

/// `192.0.2.1`, `"192.0.2.1:4711"`, `"[2001:db8::1]:4711"`.
fn parse_forwarded_for(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim_matches('"');
    if let Ok(ip) = raw.parse() {
        return Some(ip);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    raw.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use globset::Glob;

    fn facts<'a>(stream: &'a StreamName, headers: &'a http::HeaderMap) -> RequestFacts<'a> {
        RequestFacts {
            kind: EndpointKind::Whip,
            stream,
            host: Some("eu.gw.example.com"),
            headers,
            query: Some("region=eu&x=1"),
            client_ip: Some("10.1.2.3".parse().expect("ip")),
            identities: &[],
        }
    }

    #[test]
    fn every_condition_must_hold() {
        let stream = StreamName::new("acme-cam1".into()).expect("name");
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tier", "premium".parse().expect("value"));
        let matcher = Matcher {
            kind: Some(EndpointKind::Whip),
            stream: Some(StreamPattern::regex("(?P<tenant>[a-z]+)-(?P<cam>.+)").expect("regex")),
            hosts: vec![Glob::new("*.gw.example.com")
                .expect("glob")
                .compile_matcher()],
            headers: vec![("x-tier".into(), "premium".into())],
            query: vec![("region".into(), "eu".into())],
            client_cidrs: vec!["10.0.0.0/8".parse().expect("net")],
            ..Matcher::default()
        };
        let captures = matcher.matches(&facts(&stream, &headers)).expect("matches");
        assert_eq!(
            captures,
            vec![
                ("tenant".to_string(), "acme".to_string()),
                ("cam".to_string(), "cam1".to_string())
            ]
        );
        let mut other = facts(&stream, &headers);
        other.client_ip = Some("192.0.2.1".parse().expect("ip"));
        assert!(matcher.matches(&other).is_none());
        let mut other = facts(&stream, &headers);
        other.query = Some("region=us");
        assert!(matcher.matches(&other).is_none());
        let mut other = facts(&stream, &headers);
        other.host = Some("us.example.org");
        assert!(matcher.matches(&other).is_none());
        let empty = http::HeaderMap::new();
        assert!(matcher.matches(&facts(&stream, &empty)).is_none());
        let no_dash = StreamName::new("acme".into()).expect("name");
        assert!(
            matcher.matches(&facts(&no_dash, &headers)).is_none(),
            "regex is anchored"
        );
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.4, 10.0.0.7".parse().expect("v"),
        );
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let stranger: IpAddr = "192.0.2.50".parse().expect("ip");
        let xff = ForwardedHeader::XForwardedFor;
        assert_eq!(
            client_ip(proxy, &headers, &trusted, xff).to_string(),
            "198.51.100.4"
        );
        assert_eq!(
            client_ip(stranger, &headers, &trusted, xff),
            stranger,
            "spoofed XFF ignored"
        );
        let mut forwarded = http::HeaderMap::new();
        forwarded.insert(
            http::header::FORWARDED,
            "for=192.0.2.60;proto=https, for=\"[2001:db8::7]:4711\""
                .parse()
                .expect("v"),
        );
        assert_eq!(
            client_ip(proxy, &forwarded, &trusted, ForwardedHeader::Forwarded).to_string(),
            "2001:db8::7"
        );
        assert_eq!(
            client_ip(proxy, &http::HeaderMap::new(), &trusted, xff),
            proxy
        );
    }

    #[test]
    fn a_client_cannot_name_its_own_address_through_the_other_header() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let mut headers = http::HeaderMap::new();
        // The client sent Forwarded itself; the proxy appended its peer to X-Forwarded-For.
        headers.insert(
            http::header::FORWARDED,
            "for=198.18.0.1".parse().expect("v"),
        );
        headers.insert("x-forwarded-for", "203.0.113.9".parse().expect("v"));
        assert_eq!(
            client_ip(proxy, &headers, &trusted, ForwardedHeader::XForwardedFor).to_string(),
            "203.0.113.9"
        );
        // A client-made prefix and garbage: only what the proxies appended counts.
        headers.insert(
            "x-forwarded-for",
            "198.18.0.1, not-an-ip, 203.0.113.9, 10.0.0.5"
                .parse()
                .expect("v"),
        );
        assert_eq!(
            client_ip(proxy, &headers, &trusted, ForwardedHeader::XForwardedFor).to_string(),
            "203.0.113.9"
        );
        headers.insert(
            "x-forwarded-for",
            "198.18.0.1, junk, 10.0.0.5".parse().expect("v"),
        );
        assert_eq!(
            client_ip(proxy, &headers, &trusted, ForwardedHeader::XForwardedFor).to_string(),
            "10.0.0.5",
            "the chain ends at what cannot be read: the proxy that received it answers"
        );
    }
}
