//! `[[backend]]`: the keys every kind shares are read here; the kind's own keys by its
//! adapter's builder (`backend::build_adapter`), through the same located key reader.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::raw::{RawCircuit, RawHealthCheck};
use super::{ConfigError, Loader};
use crate::backend::{
    build_adapter, AllowedHost, BackendDef, CircuitPolicy, HealthCheck, KeyError, KindKeys,
};
use crate::routing::BackendId;

/// One `[[backend]]` table as written: each value with its place in the file.
pub(super) type RawBackend = Spanned<BTreeMap<String, Spanned<toml::Value>>>;

impl Loader<'_> {
    pub(super) fn backend(&self, raw: RawBackend) -> Result<BackendDef, ConfigError> {
        let table_at = raw.span().start;
        let located = |e: KeyError| self.error_at(e.at, e.message);
        let mut keys = raw.into_inner();
        let id_value = keys
            .remove("id")
            .ok_or_else(|| self.error_at(table_at, "[[backend]] needs an id".into()))?;
        let id_at = id_value.span().start;
        let id = match id_value.into_inner() {
            toml::Value::String(id) => id,
            _ => return Err(self.error_at(id_at, "backend id must be a string".into())),
        };
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.error_at(
                id_at,
                format!("backend id `{id}` must be A-Z a-z 0-9 - _ ."),
            ));
        }
        let kind = match keys
            .remove("kind")
            .map(|v| (v.span().start, v.into_inner()))
        {
            Some((_, toml::Value::String(kind))) => kind,
            Some((at, _)) => {
                return Err(self.error_at(at, format!("backend `{id}`: kind must be a string")))
            }
            None => {
                let kinds: Vec<&str> = crate::backend::kind_names().collect();
                return Err(self.error_at(
                    id_at,
                    format!("backend `{id}` needs a kind ({})", kinds.join(", ")),
                ));
            }
        };
        let mut keys = KindKeys::new(&id, &kind, id_at, keys, self.secrets());
        let common = Common::take(&mut keys).map_err(located)?;
        let adapter = build_adapter(&kind, &mut keys).map_err(located)?;
        keys.finish().map_err(located)?;

        if !adapter.is_remote() {
            let remote_only = [
                ("allowed_hosts", !common.allowed_hosts.is_empty()),
                ("health_check", common.health_check.is_some()),
            ];
            if let Some((key, _)) = remote_only.iter().find(|(_, set)| *set) {
                return Err(self.error_at(
                    id_at,
                    format!("backend `{id}`: {key} has no meaning for kind = \"{kind}\""),
                ));
            }
        }
        let mut allowed_hosts = adapter.hosts();
        for host in &common.allowed_hosts {
            allowed_hosts.push(AllowedHost::parse(host.get_ref()).ok_or_else(|| {
                self.error_at(
                    host.span().start,
                    format!(
                        "backend `{id}`: allowed_hosts entry `{}` is not host, host:port or *.domain",
                        host.get_ref()
                    ),
                )
            })?);
        }
        let sdp = self.policy(&format!("backend `{id}`"), common.sdp)?;
        let circuit = common
            .circuit
            .as_ref()
            .map_or_else(CircuitPolicy::default, |c| CircuitPolicy {
                failures: c.failures.unwrap_or(3).max(1),
                cooldown: c.cooldown.unwrap_or(Duration::from_secs(10)),
                max_rest: c
                    .max_rest
                    .unwrap_or(crate::backend::DEFAULT_MAX_REST)
                    .max(Duration::from_secs(1)),
            });
        let health_check = match &common.health_check {
            None => None,
            Some(check) => Some(self.health_check(&id, check, adapter.health_url())?),
        };
        let cost_per_minute = match common.cost_per_minute {
            Some(cost) if !(cost.is_finite() && cost >= 0.0) => {
                return Err(self.error_at(
                    id_at,
                    format!("backend `{id}`: cost_per_minute must be 0 or more"),
                ))
            }
            cost => cost.unwrap_or(0.0),
        };
        if common.max_sessions == Some(0) {
            return Err(self.error_at(
                id_at,
                format!("backend `{id}`: max_sessions = 0 would refuse everything"),
            ));
        }
        Ok(BackendDef {
            id: BackendId(id),
            trickle: common.trickle.unwrap_or_else(|| adapter.trickle()),
            adapter,
            allowed_hosts,
            sdp,
            max_sessions: common.max_sessions,
            cost_per_minute,
            circuit,
            health_check,
            drain: common.drain.unwrap_or(false),
        })
    }

    fn health_check(
        &self,
        id: &str,
        check: &Spanned<RawHealthCheck>,
        kind_default: Option<Url>,
    ) -> Result<HealthCheck, ConfigError> {
        let at = check.span().start;
        let raw = check.get_ref();
        let url = match &raw.url {
            Some(url) => Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    self.error_at(
                        at,
                        format!("backend `{id}`: health_check url is not an http(s) URL"),
                    )
                })?,
            None => kind_default.ok_or_else(|| {
                self.error_at(
                    at,
                    format!("backend `{id}`: health_check needs a url for this kind"),
                )
            })?,
        };
        Ok(HealthCheck {
            url,
            interval: raw
                .interval
                .unwrap_or(Duration::from_secs(5))
                .max(Duration::from_millis(100)),
            timeout: raw.timeout.unwrap_or(Duration::from_secs(2)),
            rise: raw.rise.unwrap_or(2).max(1),
            fall: raw.fall.unwrap_or(3).max(1),
        })
    }
}

/// The keys of `[[backend]]` that mean the same for every kind.
struct Common {
    /// Extra `host[:port]` or `*.domain` the backend may redirect to or put in a Location.
    allowed_hosts: Vec<Spanned<String>>,
    /// Whether PATCH (trickle, ICE restart) is forwarded (default: the kind's).
    trickle: Option<bool>,
    /// Default SDP policy of routes to this backend (a route's own `sdp` overrides it).
    sdp: Option<Spanned<crate::sdp::Policy>>,
    /// Most sessions this replica sends here; then the route's next candidates (overflow).
    max_sessions: Option<usize>,
    /// Price of one session-minute (any currency), for `whipgate_cost_estimate_total`.
    cost_per_minute: Option<f64>,
    /// Passive circuit breaking.
    circuit: Option<RawCircuit>,
    /// Active health probe.
    health_check: Option<Spanned<RawHealthCheck>>,
    /// Takes no new sessions; its publishers are ended and its players told to reconnect.
    drain: Option<bool>,
}

impl Common {
    fn take(keys: &mut KindKeys<'_>) -> Result<Self, KeyError> {
        let allowed_hosts = match keys.take::<Vec<String>>("allowed_hosts")? {
            None => Vec::new(),
            Some(list) => {
                let span = list.span();
                list.into_inner()
                    .into_iter()
                    .map(|h| Spanned::new(span.clone(), h))
                    .collect()
            }
        };
        Ok(Self {
            allowed_hosts,
            trickle: keys.value("trickle")?,
            sdp: keys.take("sdp")?,
            max_sessions: keys.value("max_sessions")?,
            cost_per_minute: keys.value("cost_per_minute")?,
            circuit: keys.value("circuit")?,
            health_check: keys.take("health_check")?,
            drain: keys.value("drain")?,
        })
    }
}
