//! `[[route]]`: matchers, placements and per-route policies, checked against the backends
//! they name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use toml::Spanned;

use super::raw::{self, RawRoute};
use super::{ConfigError, IceServerDef, Loader};
use crate::backend::BackendDef;
use crate::kind::EndpointKind;
use crate::routing::relay::{RelayMode, RelayPlan};
use crate::routing::{BackendId, IcePolicy, Matcher, Placement, Route, StreamPattern};

impl Loader<'_> {
    pub(super) fn route(
        &self,
        index: usize,
        raw: RawRoute,
        backends: &HashMap<BackendId, Arc<BackendDef>>,
        client_auth: &BTreeMap<String, Arc<crate::auth::ClientAuth>>,
        ice_servers: &BTreeMap<String, IceServerDef>,
    ) -> Result<Route, ConfigError> {
        let id = raw.id.unwrap_or_else(|| format!("route-{}", index + 1));
        let auth = match &raw.auth {
            Some(name) if !client_auth.contains_key(name.get_ref()) => {
                return Err(self.error_at(
                    name.span().start,
                    format!(
                        "route `{id}` names unknown client_auth `{}`",
                        name.get_ref()
                    ),
                ))
            }
            Some(name) => Some(name.get_ref().clone()),
            None => None,
        };
        let bind_sessions = raw.bind_sessions.unwrap_or(false);
        let mut ice = Vec::new();
        for name in &raw.ice_servers {
            if !ice_servers.contains_key(name.get_ref()) {
                return Err(self.error_at(
                    name.span().start,
                    format!("route `{id}` names unknown ice_server `{}`", name.get_ref()),
                ));
            }
            ice.push(name.get_ref().clone());
        }
        let ice_policy = raw.ice_policy.unwrap_or(if ice.is_empty() {
            IcePolicy::Backend
        } else {
            IcePolicy::Merge
        });
        let list_at = raw.backends.as_ref().map(|b| b.span().start);
        let split_at = raw.split.as_ref().map(|b| b.span().start);
        let match_at = raw
            .matcher
            .as_ref()
            .map(|m| m.span().start)
            .or(list_at)
            .or(split_at)
            .unwrap_or(0);
        let raw_match = raw.matcher.map(Spanned::into_inner).unwrap_or_default();
        let mut matcher = self.matcher(&id, match_at, raw_match)?;
        if bind_sessions && auth.is_none() {
            // Without the route's own auth, a session may be made anonymously: there would
            // be no subject to bind it to, and anyone with its URL could end it anyway.
            return Err(self.error_at(
                match_at,
                format!("route `{id}`: bind_sessions needs the route's auth"),
            ));
        }
        if (matcher.tier.is_some() || !matcher.claims.is_empty()) && client_auth.is_empty() {
            return Err(self.error_at(
                match_at,
                format!("route `{id}`: tier and claims need a [client_auth.NAME]"),
            ));
        }
        matcher.identity_from = auth.clone();
        let known = |name: &Spanned<String>| -> Result<BackendId, ConfigError> {
            let backend_id = BackendId(name.get_ref().clone());
            if backends.contains_key(&backend_id) {
                Ok(backend_id)
            } else {
                Err(self.error_at(
                    name.span().start,
                    format!("route `{id}` names unknown backend `{backend_id}`"),
                ))
            }
        };
        let placement = match (raw.backends, raw.split) {
            (Some(list), None) => {
                let at = list.span().start;
                let ids = list
                    .into_inner()
                    .iter()
                    .map(known)
                    .collect::<Result<Vec<_>, _>>()?;
                if ids.is_empty() {
                    return Err(self.error_at(at, format!("route `{id}` lists no backends")));
                }
                Placement::Ordered(ids)
            }
            (None, Some(split)) => {
                let at = split.span().start;
                let mut weighted = Vec::new();
                for entry in split.into_inner() {
                    let name = Spanned::new(entry.span(), entry.get_ref().backend.clone());
                    weighted.push((known(&name)?, entry.get_ref().weight));
                }
                if weighted.iter().all(|(_, weight)| *weight == 0) {
                    return Err(
                        self.error_at(at, format!("route `{id}` split has no weight above 0"))
                    );
                }
                Placement::Weighted(weighted)
            }
            _ => {
                return Err(self.error_at(
                    match_at,
                    format!(
                        "route `{id}` needs exactly one of backends (ordered) or split (weighted)"
                    ),
                ))
            }
        };
        let overflow = raw
            .overflow
            .iter()
            .map(known)
            .collect::<Result<Vec<_>, _>>()?;
        let sdp = self.policy(&format!("route `{id}`"), raw.sdp)?;
        let relay = match raw.relay {
            Some(relay) => Some(self.relay_plan(&id, relay, &placement, &overflow, backends)?),
            None => None,
        };
        let route = Route {
            id,
            matcher,
            placement,
            overflow,
            sdp,
            auth,
            bind_sessions,
            ice_servers: ice,
            ice_policy,
            relay,
        };
        self.check_route_backends(&route, match_at, backends)?;
        Ok(route)
    }

    /// A relay plan needs a `builtin` backend among the route's (publishers on it are
    /// relayed) and targets that take WHIP sessions from elsewhere.
    fn relay_plan(
        &self,
        id: &str,
        raw: Spanned<raw::RawRelay>,
        placement: &Placement,
        overflow: &[BackendId],
        backends: &HashMap<BackendId, Arc<BackendDef>>,
    ) -> Result<RelayPlan, ConfigError> {
        let at = raw.span().start;
        let raw = raw.into_inner();
        let has_builtin = placement
            .backends()
            .into_iter()
            .chain(overflow.iter())
            .filter_map(|b| backends.get(b))
            .any(|b| !b.adapter.is_remote());
        if !has_builtin {
            return Err(self.error_at(
                at,
                format!("route `{id}`: relay needs a builtin backend among its backends"),
            ));
        }
        let mut to: Vec<BackendId> = Vec::new();
        for name in &raw.to {
            let target = BackendId(name.get_ref().clone());
            let def = backends.get(&target).ok_or_else(|| {
                self.error_at(
                    name.span().start,
                    format!("route `{id}`: relay names unknown backend `{target}`"),
                )
            })?;
            if !def.adapter.is_remote() {
                return Err(self.error_at(
                    name.span().start,
                    format!("route `{id}`: relay target `{target}` is this process's own SFU"),
                ));
            }
            if !def.serves(EndpointKind::Whip) {
                return Err(self.error_at(
                    name.span().start,
                    format!("route `{id}`: relay target `{target}` takes no WHIP sessions"),
                ));
            }
            if to.contains(&target) {
                return Err(self.error_at(
                    name.span().start,
                    format!("route `{id}`: relay lists `{target}` twice"),
                ));
            }
            to.push(target);
        }
        if to.is_empty() {
            return Err(self.error_at(at, format!("route `{id}`: relay lists no targets")));
        }
        let mode = raw.mode.unwrap_or(RelayMode::Failover);
        if raw.failback.is_some() && mode == RelayMode::All {
            return Err(self.error_at(
                at,
                format!("route `{id}`: failback applies to mode = \"failover\" only"),
            ));
        }
        Ok(RelayPlan {
            to,
            mode,
            failback: raw
                .failback
                .map(|f| f.max(std::time::Duration::from_secs(1))),
        })
    }

    fn matcher(&self, id: &str, at: usize, raw: raw::RawMatch) -> Result<Matcher, ConfigError> {
        let stream = match (&raw.stream, &raw.stream_regex) {
            (Some(_), Some(_)) => {
                return Err(self.error_at(
                    at,
                    format!("route `{id}`: give stream or stream_regex, not both"),
                ))
            }
            (Some(glob), None) => Some(StreamPattern::glob(glob.get_ref()).map_err(|e| {
                self.error_at(
                    glob.span().start,
                    format!("route `{id}`: bad stream glob: {e}"),
                )
            })?),
            (None, Some(regex)) => Some(StreamPattern::regex(regex.get_ref()).map_err(|e| {
                self.error_at(
                    regex.span().start,
                    format!("route `{id}`: bad stream_regex: {e}"),
                )
            })?),
            (None, None) => None,
        };
        let hosts = raw
            .host
            .map(raw::OneOrMany::into_vec)
            .unwrap_or_default()
            .iter()
            .map(|host| {
                globset::Glob::new(&host.to_ascii_lowercase())
                    .map(|g| g.compile_matcher())
                    .map_err(|e| {
                        self.error_at(at, format!("route `{id}`: bad host glob: {}", e.kind()))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headers = raw
            .headers
            .into_iter()
            .map(|(name, value)| {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map(|n| (n.as_str().to_owned(), value))
                    .map_err(|_| {
                        self.error_at(at, format!("route `{id}`: bad header name {name:?}"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_cidrs = raw
            .client_cidr
            .iter()
            .map(|net| {
                parse_cidr(net)
                    .map_err(|e| self.error_at(at, format!("route `{id}`: client_cidr {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Matcher {
            kind: raw.kind,
            stream,
            hosts,
            headers,
            query: raw.query.into_iter().collect(),
            client_cidrs,
            identity_from: None,
            tier: raw.tier,
            claims: raw.claims.into_iter().collect(),
        })
    }

    /// Every kind the route can match must have a backend serving it, and every template
    /// placeholder must be a capture of the route's regex.
    fn check_route_backends(
        &self,
        route: &Route,
        at: usize,
        backends: &HashMap<BackendId, Arc<BackendDef>>,
    ) -> Result<(), ConfigError> {
        let id = &route.id;
        let kinds: &[EndpointKind] = match route.matcher.kind {
            Some(EndpointKind::Whip) => &[EndpointKind::Whip],
            Some(EndpointKind::Whep) => &[EndpointKind::Whep],
            None => &[EndpointKind::Whip, EndpointKind::Whep],
        };
        let defs: Vec<&Arc<BackendDef>> = route
            .all_backends()
            .filter_map(|b| backends.get(b))
            .collect();
        if let Some(kind) = route.matcher.kind {
            if !defs.iter().any(|b| b.serves(kind)) {
                return Err(self.error_at(
                    at,
                    format!(
                        "route `{id}` matches {kind} but none of its backends has a {kind}_url or is of a kind that serves {kind}"
                    ),
                ));
            }
        }
        let captures = route
            .matcher
            .stream
            .as_ref()
            .map(StreamPattern::capture_names)
            .unwrap_or_default();
        for backend in defs {
            for kind in kinds {
                if !backend.serves(*kind) {
                    continue;
                }
                let needed = backend.adapter.placeholders(*kind);
                if let Some(missing) = needed.iter().find(|n| !captures.contains(n)) {
                    return Err(self.error_at(
                        at,
                        format!(
                            "route `{id}` uses backend `{}` whose {kind} URL or name template needs {{{missing}}}, which the route's stream_regex does not capture",
                            backend.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) fn policy(
        &self,
        owner: &str,
        raw: Option<Spanned<crate::sdp::Policy>>,
    ) -> Result<crate::sdp::Policy, ConfigError> {
        let Some(raw) = raw else {
            return Ok(crate::sdp::Policy::default());
        };
        let at = raw.span().start;
        let policy = raw.into_inner();
        policy
            .validate()
            .map_err(|e| self.error_at(at, format!("{owner} sdp: {e}")))?;
        Ok(policy)
    }
}

pub(super) fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or CIDR"))
}
