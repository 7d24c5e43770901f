//! Kind `whip`: a standard WHIP/WHEP server (RFC 9725, WHEP) at URL templates, with one
//! static credential (or the client's own, passed through).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::exchange::{self, Target};
use super::template::{UrlTemplate, KEY_PLACEHOLDER};
use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BackendUrl, BoxFuture, CreateRequest, Created,
    KeyError, KindKeys, Secret, SessionRequest, SessionTarget, Upstreams,
};
use crate::error::GatewayError;
use crate::kind::EndpointKind;

/// How whipgate authenticates to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAuth {
    None,
    /// `Authorization: Bearer <secret>`; the client's own credential is never forwarded.
    Bearer(Secret),
    /// Forward the client's `Authorization` header as it came.
    Passthrough,
}

#[derive(Debug)]
pub struct Whip {
    whip_url: Option<UrlTemplate>,
    whep_url: Option<UrlTemplate>,
    auth: BackendAuth,
    /// Fills `{key}` in the URL templates (a vendor's stream key).
    url_key: Option<Secret>,
}

/// `auth = { bearer_env | bearer_file | passthrough }`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    bearer_env: Option<String>,
    bearer_file: Option<String>,
    passthrough: Option<bool>,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &[
    "whip_url",
    "whep_url",
    "auth",
    "url_key_env",
    "url_key_file",
];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    let whip_url = keys.template("whip_url")?;
    let whep_url = keys.template("whep_url")?;
    if whip_url.is_none() && whep_url.is_none() {
        return Err(keys.error("needs whip_url, whep_url or both"));
    }
    let auth = match keys.take::<RawAuth>("auth")? {
        None => BackendAuth::None,
        Some(raw) => {
            let at = raw.span().start;
            let raw = raw.into_inner();
            match (raw.passthrough, &raw.bearer_env, &raw.bearer_file) {
                (Some(true), None, None) => BackendAuth::Passthrough,
                (None | Some(false), env, file) if env.is_some() || file.is_some() => {
                    BackendAuth::Bearer(keys.resolve_secret(
                        at,
                        "auth",
                        env.as_deref(),
                        file.as_deref(),
                    )?)
                }
                (Some(false), None, None) => BackendAuth::None,
                _ => {
                    return Err(KeyError {
                        at,
                        message: format!(
                            "backend `{}` auth: give one of bearer_env, bearer_file or passthrough = true",
                            keys.backend()
                        ),
                    })
                }
            }
        }
    };
    let url_key = keys.secret("url_key")?;
    let needs_key = whip_url
        .iter()
        .chain(whep_url.iter())
        .any(UrlTemplate::needs_key);
    if needs_key != url_key.is_some() {
        return Err(
            keys.error("{key} in a URL template and url_key_env / url_key_file go together")
        );
    }
    Ok(Arc::new(Whip {
        whip_url,
        whep_url,
        auth,
        url_key,
    }))
}

impl Whip {
    fn endpoint(&self, kind: EndpointKind) -> Option<&UrlTemplate> {
        match kind {
            EndpointKind::Whip => self.whip_url.as_ref(),
            EndpointKind::Whep => self.whep_url.as_ref(),
        }
    }

    fn authorization(&self, client: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.auth {
            BackendAuth::None => None,
            BackendAuth::Bearer(secret) => exchange::bearer(secret.expose()),
            BackendAuth::Passthrough => client.cloned(),
        }
    }

    fn target<'a>(
        &self,
        url: BackendUrl,
        client: Option<&HeaderValue>,
        request_id: &'a str,
    ) -> Target<'a> {
        let mut target = Target::new(url, self.authorization(client), request_id);
        target.passthrough = self.auth == BackendAuth::Passthrough;
        target
    }

    async fn create_session(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        request: CreateRequest<'_>,
    ) -> Result<Created, AttemptError> {
        let template = self.endpoint(request.kind).ok_or_else(|| {
            AttemptError::retryable(GatewayError::Unavailable {
                reason: format!("backend {} has no {} endpoint", backend.id, request.kind),
                retry_after: Duration::ZERO,
            })
        })?;
        let mut captures = request.captures.to_vec();
        if let Some(key) = &self.url_key {
            captures.retain(|(name, _)| name != KEY_PLACEHOLDER);
            captures.push((KEY_PLACEHOLDER.to_owned(), key.expose().to_owned()));
        }
        let url = template
            .expand_with(request.stream, &captures)
            .map_err(|e| {
                AttemptError::fatal(GatewayError::BadRequest(format!("stream name {e}")))
            })?;
        let target = self.target(url, request.client_authorization, request.request_id);
        exchange::post_offer(cx, backend, request.kind, &target, request.offer).await
    }
}

impl Adapter for Whip {
    fn kind(&self) -> &'static str {
        "whip"
    }

    /// A remote WHEP server may still speak the legacy protocol (it offers to an empty POST).
    fn makes_offers(&self) -> bool {
        true
    }

    fn serves(&self, endpoint: EndpointKind) -> bool {
        self.endpoint(endpoint).is_some()
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        self.whip_url
            .iter()
            .chain(self.whep_url.iter())
            .map(UrlTemplate::allowed_host)
            .collect()
    }

    fn placeholders(&self, endpoint: EndpointKind) -> Vec<String> {
        self.endpoint(endpoint)
            .map(|t| t.capture_names().cloned().collect())
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        let auth = match self.auth {
            BackendAuth::None => "no credential",
            BackendAuth::Bearer(_) => "bearer",
            BackendAuth::Passthrough => "client's credential passed through",
        };
        let endpoints: Vec<&str> = [
            self.whip_url.as_ref().map(|_| "WHIP"),
            self.whep_url.as_ref().map(|_| "WHEP"),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("whip: standard {} server, {auth}", endpoints.join(" and "))
    }

    fn create<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        request: CreateRequest<'a>,
    ) -> BoxFuture<'a, Result<Created, AttemptError>> {
        Box::pin(self.create_session(cx, backend, request))
    }

    fn session_target(&self, session: &SessionRequest<'_>) -> Result<SessionTarget, GatewayError> {
        Ok(SessionTarget {
            url: session.resource.clone(),
            authorization: self.authorization(session.client_authorization),
            passthrough: self.auth == BackendAuth::Passthrough,
            configured: self.auth != BackendAuth::Passthrough,
        })
    }
}
