//! Loading routes.toml: raw serde structs → a validated [`Config`] that cannot hold an
//! invalid table (unknown backend ids, empty candidate lists, bad globs or URL templates).
//! Every error names the file, the line and the problem on one line.

mod backend;
mod keys;
mod raw;
mod route;
mod server;
pub mod tls;
mod watch;

pub use keys::keys;
pub use server::{IceCredential, IceServerDef, RateLimitSettings, ServerSettings};
pub use watch::{watch, ConfigWatch};

pub use crate::routing::IcePolicy;
pub use crate::secret::{SecretMode, SecretSource, SystemSecrets};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::backend::BackendDef;
use crate::kind::EndpointKind;
use crate::routing::{BackendId, Route, RouteTable};
use crate::secret::SecretResolver;
use raw::RawConfig;

/// A validated routes.toml.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub backends: HashMap<BackendId, Arc<BackendDef>>,
    pub routes: RouteTable,
    /// The built-in SFU's settings, when a backend uses it.
    pub builtin: Option<crate::sfu::SfuSettings>,
    /// `[client_auth.NAME]`, built.
    pub client_auth: BTreeMap<String, Arc<crate::auth::ClientAuth>>,
    /// `[ice_server.NAME]`.
    pub ice_servers: BTreeMap<String, IceServerDef>,
}

/// A problem in routes.toml, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.located())]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ConfigError {
    /// `file:line:column: message`, or `file: message` when no line is at fault (a file that
    /// cannot be read).
    fn located(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file, self.message)
        } else {
            format!(
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl Config {
    /// Reads and validates a routes.toml file.
    pub fn load(path: &Path, mode: SecretMode) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, &name, &base, mode, &SystemSecrets)
    }

    /// Validates routes.toml text; `base` resolves relative secret file paths.
    pub fn from_toml(
        text: &str,
        file: &str,
        base: &Path,
        mode: SecretMode,
        secrets: &dyn SecretSource,
    ) -> Result<Self, ConfigError> {
        let loader = Loader {
            text,
            file,
            base,
            mode,
            secrets,
        };
        loader.load()
    }

    /// One line for `whipgate check` and the startup log.
    pub fn summary(&self) -> String {
        self.summary_at(self.server.listen)
    }

    /// [`Config::summary`] for a listener other than the file's (`serve --listen`).
    pub fn summary_at(&self, listen: std::net::SocketAddr) -> String {
        let mut ids: Vec<&str> = self.backends.keys().map(|id| id.0.as_str()).collect();
        ids.sort_unstable();
        format!(
            "{} backend{} ({}), {} route{}, listen {}{}",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" },
            ids.join(", "),
            self.routes.routes().len(),
            if self.routes.routes().len() == 1 {
                ""
            } else {
                "s"
            },
            listen,
            if self.server.tls.is_some() {
                " (TLS)"
            } else {
                ""
            }
        )
    }

    /// What every `[client_auth.NAME]` that accepts this `Authorization` says about its
    /// holder (for `explain --token`; requests go through `server::identity`).
    pub fn accepted_identities(
        &self,
        authorization: Option<&http::HeaderValue>,
        now: u64,
    ) -> Vec<(String, crate::auth::Identity)> {
        self.client_auth
            .iter()
            .filter_map(|(name, auth)| {
                auth.authenticate(authorization, now)
                    .ok()
                    .map(|identity| (name.clone(), identity))
            })
            .collect()
    }

    /// `explain` of the route table, each candidate backend described by its kind.
    pub fn explain(&self, facts: &crate::routing::RequestFacts<'_>) -> String {
        let kind = facts.kind;
        self.routes.explain_with(facts, |id| {
            self.backends.get(id).map_or_else(String::new, |backend| {
                let skipped = if backend.serves(kind) {
                    String::new()
                } else {
                    format!(" (skipped: it does not serve {kind})")
                };
                format!("{}{skipped}", backend.adapter.describe())
            })
        })
    }

    /// What is valid but probably not meant, one line each, for `whipgate check` and the
    /// startup log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for route in self.routes.routes() {
            if route.matcher.kind == Some(EndpointKind::Whip) {
                continue;
            }
            let serves_whep = route
                .all_backends()
                .filter_map(|id| self.backends.get(id))
                .any(|b| b.serves(EndpointKind::Whep));
            if !serves_whep {
                let kinds: Vec<&str> = route
                    .all_backends()
                    .filter_map(|id| self.backends.get(id))
                    .map(|b| b.kind())
                    .collect();
                warnings.push(format!(
                    "route `{}` matches WHEP requests, but its backends ({}) serve WHIP only: players get an error; add a backend that serves WHEP, or match = {{ kind = \"whip\" }}",
                    route.id,
                    kinds.join(", ")
                ));
            }
        }
        warnings
    }
}

struct Loader<'a> {
    text: &'a str,
    file: &'a str,
    base: &'a Path,
    mode: SecretMode,
    secrets: &'a dyn SecretSource,
}

impl Loader<'_> {
    fn secrets(&self) -> SecretResolver<'_> {
        SecretResolver {
            source: self.secrets,
            base: self.base,
            mode: self.mode,
        }
    }

    fn load(&self) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(self.text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            self.error_at(offset, e.message().trim().to_owned())
        })?;
        let server = self.server(raw.server)?;
        let builtin_settings = self.builtin(raw.builtin.as_ref())?;
        let mut client_auth = BTreeMap::new();
        for (name, auth) in &raw.client_auth {
            client_auth.insert(name.clone(), Arc::new(self.client_auth(name, auth)?));
        }
        let mut ice_servers = BTreeMap::new();
        for (name, server) in &raw.ice_server {
            ice_servers.insert(name.clone(), self.ice_server(name, server)?);
        }
        let mut backends = HashMap::new();
        let mut backend_at = HashMap::new();
        for backend in raw.backend {
            let at = backend
                .get_ref()
                .get("id")
                .map_or(backend.span().start, |id| id.span().start);
            let def = self.backend(backend)?;
            if backends.contains_key(&def.id) {
                return Err(self.error_at(at, format!("backend id `{}` appears twice", def.id)));
            }
            backend_at.insert(def.id.clone(), at);
            backends.insert(def.id.clone(), Arc::new(def));
        }
        for def in backends.values() {
            let Some(origin) = def.adapter.pulls_from() else {
                continue;
            };
            let problem = match backends.get(&BackendId(origin.to_owned())) {
                None => format!("pulls from unknown backend `{origin}`"),
                Some(o) if !o.adapter.is_remote() => {
                    format!("pulls from `{origin}`, a builtin backend of this process")
                }
                Some(o) if !o.serves(crate::kind::EndpointKind::Whep) => {
                    format!("pulls from `{origin}`, which takes no WHEP sessions")
                }
                Some(_) => continue,
            };
            let at = backend_at.get(&def.id).copied().unwrap_or(0);
            return Err(self.error_at(at, format!("backend `{}` {problem}", def.id)));
        }
        let mut routes: Vec<Route> = Vec::new();
        for (index, route) in raw.route.into_iter().enumerate() {
            let at = route
                .backends
                .as_ref()
                .map(|b| b.span().start)
                .or_else(|| route.split.as_ref().map(|s| s.span().start))
                .unwrap_or(0);
            let route = self.route(index, route, &backends, &client_auth, &ice_servers)?;
            if routes.iter().any(|r| r.id == route.id) {
                return Err(self.error_at(at, format!("route id `{}` appears twice", route.id)));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            return Err(self.error_at(
                self.text.len(),
                "no [[route]]: nothing would be served".into(),
            ));
        }
        let builtin = backends
            .values()
            .any(|b| !b.adapter.is_remote())
            .then_some(builtin_settings);
        Ok(Config {
            server,
            backends,
            routes: RouteTable::new(routes),
            builtin,
            client_auth,
            ice_servers,
        })
    }

    fn error_at(&self, offset: usize, message: String) -> ConfigError {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.lines().next().unwrap_or("").to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
