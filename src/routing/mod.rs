//! The route table: which backends, in which order, serve a stream.
//!
//! Pure: built from validated config, queried with values. First matching route wins; its
//! backends are tried in order (primary, then fallbacks).

use std::fmt;

mod matcher;
mod placement;
pub mod relay;

use std::collections::HashMap;

pub use crate::stream::{StreamName, StreamNameError, StreamPattern, MAX_STREAM_NAME_LEN};
pub use matcher::{client_ip, ForwardedHeader, Matcher, Miss, RequestFacts};
pub use placement::{rendezvous_score, Placement, Reason};

/// What a route does with ICE servers: the backend's `Link`s, whipgate's own, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcePolicy {
    Backend,
    Replace,
    Merge,
}

/// A backend's id as written in routes.toml.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub String);

/// The derived `Hash` hashes the string alone, so maps keyed by ids are looked up by `&str`.
impl std::borrow::Borrow<str> for BackendId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl BackendId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    pub matcher: Matcher,
    pub placement: Placement,
    /// Tried after the placement's backends (e.g. when they are full or down).
    pub overflow: Vec<BackendId>,
    /// Overrides the chosen backend's default policy, field by field.
    pub sdp: crate::sdp::Policy,
    /// The `[client_auth.NAME]` a client must pass; `None` lets anyone in.
    pub auth: Option<String>,
    /// PATCH and DELETE of this route's sessions need the credential of the subject that
    /// created them, besides the session URL.
    pub bind_sessions: bool,
    /// `[ice_server.NAME]`s for this route's clients, and what to do with the backend's.
    pub ice_servers: Vec<String>,
    pub ice_policy: IcePolicy,
    /// Publishers that land on a `builtin` backend are republished to other backends.
    pub relay: Option<relay::RelayPlan>,
}

impl Route {
    /// Every backend this route may use.
    pub fn all_backends(&self) -> impl Iterator<Item = &BackendId> {
        self.placement
            .backends()
            .into_iter()
            .chain(self.overflow.iter())
    }
}

/// The route chosen for a request, its backends in the order to try, and the regex captures
/// the backends' URL templates may use.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    pub route: &'a Route,
    pub candidates: Vec<(BackendId, Reason)>,
    pub captures: Vec<(String, String)>,
}

/// Routes in file order, indexed by the literal prefix of their stream pattern so that a
/// table of thousands of per-tenant routes is decided in microseconds; first match still wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Literal prefix → indices (ascending) of routes whose stream pattern starts with it.
    by_prefix: HashMap<String, Vec<usize>>,
    /// The distinct prefix lengths in `by_prefix`, ascending.
    prefix_lengths: Vec<usize>,
    /// Routes with no usable prefix: checked for every request.
    unindexed: Vec<usize>,
    /// Route id → index, for PATCH and DELETE, which name their route.
    by_id: HashMap<String, usize>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut by_prefix: HashMap<String, Vec<usize>> = HashMap::new();
        let mut unindexed = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            match route
                .matcher
                .stream
                .as_ref()
                .and_then(StreamPattern::literal_prefix)
            {
                Some(prefix) => by_prefix.entry(prefix.to_owned()).or_default().push(index),
                None => unindexed.push(index),
            }
        }
        let mut prefix_lengths: Vec<usize> = by_prefix.keys().map(String::len).collect();
        prefix_lengths.sort_unstable();
        prefix_lengths.dedup();
        let by_id = routes
            .iter()
            .enumerate()
            .map(|(index, route)| (route.id.clone(), index))
            .collect();
        Self {
            routes,
            by_prefix,
            prefix_lengths,
            unindexed,
            by_id,
        }
    }

    /// Indices of the routes that may match `stream`, ascending.
    fn candidates(&self, stream: &str) -> Vec<usize> {
        let mut indices = self.unindexed.clone();
        for &length in &self.prefix_lengths {
            if length > stream.len() {
                break;
            }
            if let Some(routes) = stream.get(..length).and_then(|p| self.by_prefix.get(p)) {
                indices.extend_from_slice(routes);
            }
        }
        indices.sort_unstable();
        indices
    }

    /// The first route that matches, and its candidate order for this stream.
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Option<Decision<'_>> {
        self.candidates(facts.stream.as_str())
            .into_iter()
            .find_map(|index| {
                let route = self.routes.get(index)?;
                let captures = route.matcher.matches(facts)?;
                let mut candidates = route.placement.order(facts.stream.as_str());
                for id in &route.overflow {
                    if !candidates.iter().any(|(c, _)| c == id) {
                        candidates.push((id.clone(), Reason::Overflow));
                    }
                }
                Some(Decision {
                    route,
                    candidates,
                    captures,
                })
            })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn by_id(&self, id: &str) -> Option<&Route> {
        self.by_id.get(id).and_then(|&index| self.routes.get(index))
    }

    /// Routes no request can reach because an earlier route catches all of their kind.
    pub fn unreachable(&self) -> Vec<(&Route, &Route)> {
        let mut shadowed = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            if let Some(earlier) = self.routes[..index]
                .iter()
                .find(|earlier| earlier.matcher.catches_all(route.matcher.kind))
            {
                shadowed.push((route, earlier));
            }
        }
        shadowed
    }

    /// A human-readable account of the decision for `facts`, for `whipgate explain`.
    pub fn explain(&self, facts: &RequestFacts<'_>) -> String {
        self.explain_with(facts, |_| String::new())
    }

    /// [`Self::explain`], with `note` saying what each candidate backend is (its kind, and
    /// whether it serves the request's kind at all).
    pub fn explain_with(
        &self,
        facts: &RequestFacts<'_>,
        note: impl Fn(&BackendId) -> String,
    ) -> String {
        let mut out = String::new();
        for route in &self.routes {
            if let Err(miss) = route.matcher.check(facts) {
                out.push_str(&format!(
                    "route {}: no match: {miss} ({})\n",
                    route.id,
                    route.matcher.describe()
                ));
                continue;
            }
            let Some(decision) = self.decide(facts) else {
                break;
            };
            out.push_str(&format!(
                "route {}: MATCH ({})\n",
                route.id,
                route.matcher.describe()
            ));
            if !decision.captures.is_empty() {
                let captures: Vec<String> = decision
                    .captures
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect();
                out.push_str(&format!("  captures: {}\n", captures.join(", ")));
            }
            out.push_str("  candidates, in the order they are tried:\n");
            for (position, (id, reason)) in decision.candidates.iter().enumerate() {
                let note = note(id);
                let sep = if note.is_empty() { "" } else { " — " };
                out.push_str(&format!(
                    "    {}. {id} ({reason}){sep}{note}\n",
                    position + 1
                ));
            }
            if let (Some(plan), crate::kind::EndpointKind::Whip) = (&route.relay, facts.kind) {
                out.push_str(&format!("  {}\n", plan.describe()));
            }
            return out;
        }
        out.push_str("no route matches: the request would get 404\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::EndpointKind;

    fn route(id: &str, kind: Option<EndpointKind>, glob: Option<&str>, backends: &[&str]) -> Route {
        Route {
            id: id.into(),
            matcher: Matcher {
                kind,
                stream: glob.map(|g| StreamPattern::glob(g).expect("glob")),
                ..Matcher::default()
            },
            placement: Placement::Ordered(
                backends.iter().map(|b| BackendId(b.to_string())).collect(),
            ),
            overflow: Vec::new(),
            sdp: Default::default(),
            auth: None,
            bind_sessions: false,
            ice_servers: Vec::new(),
            ice_policy: IcePolicy::Backend,
            relay: None,
        }
    }

    fn name(s: &str) -> StreamName {
        StreamName::new(s.into()).expect("name")
    }

    fn pick(table: &RouteTable, kind: EndpointKind, stream: &str) -> Option<String> {
        let stream = name(stream);
        let headers = http::HeaderMap::new();
        let facts = RequestFacts {
            kind,
            stream: &stream,
            host: None,
            headers: &headers,
            query: None,
            client_ip: None,
            identities: &[],
        };
        table.decide(&facts).map(|d| d.route.id.clone())
    }

    #[test]
    fn first_matching_route_wins() {
        let table = RouteTable::new(vec![
            route(
                "premium",
                Some(EndpointKind::Whip),
                Some("premium-*"),
                &["cf"],
            ),
            route("viewers", Some(EndpointKind::Whep), None, &["sfu"]),
            route("rest", None, Some("*"), &["janus", "cf"]),
        ]);
        assert_eq!(
            pick(&table, EndpointKind::Whip, "premium-1").as_deref(),
            Some("premium")
        );
        assert_eq!(
            pick(&table, EndpointKind::Whep, "premium-1").as_deref(),
            Some("viewers")
        );
        assert_eq!(
            pick(&table, EndpointKind::Whip, "cam").as_deref(),
            Some("rest")
        );
    }

    #[test]
    fn no_route_when_nothing_matches() {
        let table = RouteTable::new(vec![route("a", None, Some("cam-?"), &["x"])]);
        assert!(pick(&table, EndpointKind::Whip, "cam-12").is_none());
        assert!(pick(&table, EndpointKind::Whip, "cam-1").is_some());
    }

    #[test]
    fn overflow_follows_placement_without_duplicates() {
        let mut r = route("a", None, None, &["one", "two"]);
        r.overflow = vec![BackendId("two".into()), BackendId("three".into())];
        let table = RouteTable::new(vec![r]);
        let stream = name("s");
        let headers = http::HeaderMap::new();
        let facts = RequestFacts {
            kind: EndpointKind::Whip,
            stream: &stream,
            host: None,
            headers: &headers,
            query: None,
            client_ip: None,
            identities: &[],
        };
        let decision = table.decide(&facts).expect("match");
        let ids: Vec<&str> = decision
            .candidates
            .iter()
            .map(|(id, _)| id.0.as_str())
            .collect();
        assert_eq!(ids, vec!["one", "two", "three"]);
        assert_eq!(decision.candidates[2].1, Reason::Overflow);
    }

    #[test]
    fn catch_all_routes_shadow_later_ones() {
        let table = RouteTable::new(vec![
            route("whip-all", Some(EndpointKind::Whip), Some("*"), &["a"]),
            route("never", Some(EndpointKind::Whip), Some("cam-*"), &["b"]),
            route("viewers", Some(EndpointKind::Whep), Some("cam-*"), &["b"]),
        ]);
        let shadowed: Vec<(&str, &str)> = table
            .unreachable()
            .into_iter()
            .map(|(r, by)| (r.id.as_str(), by.id.as_str()))
            .collect();
        assert_eq!(shadowed, vec![("never", "whip-all")]);
    }

    #[test]
    fn stream_names_are_decoded_and_checked() {
        assert_eq!(
            StreamName::from_path_segment("a%2Fb%20c").map(|s| s.as_str().to_owned()),
            Ok("a/b c".to_string())
        );
        assert_eq!(
            StreamName::from_path_segment("%2e%2E"),
            Err(StreamNameError::DotSegment)
        );
        assert_eq!(
            StreamName::from_path_segment(""),
            Err(StreamNameError::Empty)
        );
        assert_eq!(
            StreamName::from_path_segment("a%0d%0ab"),
            Err(StreamNameError::Control)
        );
        assert_eq!(
            StreamName::from_path_segment("%ff"),
            Err(StreamNameError::NotUtf8)
        );
        assert_eq!(
            StreamName::from_path_segment(&"x".repeat(201)),
            Err(StreamNameError::TooLong)
        );
    }
}
