//! Kind `webhook`: the operator's own provisioning service decides, per session, whether a
//! stream may open and where it goes.
//!
//! whipgate POSTs `{"event":"opening","kind","stream","route","subject","tier","client_ip",
//! "request_id"}`, signed `X-Whipgate-Signature: sha256=<hex HMAC-SHA256(secret, body)>`
//! over the exact bytes sent. `{"allowed":true,"url","bearer"}` makes it continue as a plain
//! WHIP/WHEP client to that URL with that bearer; `{"allowed":false,"reason"}` is a 403 with
//! the reason. After the session's DELETE it POSTs `{"event":"closing", ...}` the same way.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method};
use serde::{Deserialize, Serialize};
use url::Url;

use super::broker::{self, Retry};
use super::exchange::{self, Target};
use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BoxFuture, CreateRequest, Created, KeyError,
    KindKeys, Secret, SessionRequest, SessionTarget, Upstreams,
};
use crate::error::GatewayError;
use crate::kind::EndpointKind;

pub const SIGNATURE_HEADER: &str = "x-whipgate-signature";
/// Longest reason from the webhook that is passed to a client.
const MAX_REASON: usize = 200;

#[derive(Debug)]
pub struct Webhook {
    url: Url,
    secret: Secret,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &["url", "secret_env", "secret_file"];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    let url = keys
        .url("url")?
        .ok_or_else(|| keys.error("kind = \"webhook\" needs url (the provisioning service)"))?;
    let secret = keys.required_secret("secret")?;
    Ok(Arc::new(Webhook { url, secret }))
}

/// The JSON whipgate sends, field order fixed so that what is signed is easy to reproduce.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event<'a> {
    pub event: &'a str,
    pub kind: EndpointKind,
    pub stream: &'a str,
    pub route: &'a str,
    pub subject: Option<&'a str>,
    pub tier: Option<&'a str>,
    pub client_ip: Option<String>,
    pub request_id: &'a str,
}

/// `sha256=<hex>` of HMAC-SHA256 over `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for byte in tag.as_ref() {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Holds the bearer: no `Debug`.
#[derive(Deserialize)]
struct Decision {
    allowed: bool,
    url: Option<String>,
    bearer: Option<String>,
    reason: Option<String>,
}

const BEARER: &str = "bearer";
const SUBJECT: &str = "subject";
const TIER: &str = "tier";

impl Webhook {
    async fn tell(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        event: &Event<'_>,
        operation: &'static str,
        retry: Retry,
    ) -> Result<super::UpstreamResponse, AttemptError> {
        let body = serde_json::to_vec(event)
            .map_err(|_| AttemptError::fatal(GatewayError::Internal("bad event".into())))?;
        let mut headers = broker::json_headers(None);
        if let Ok(mut value) = HeaderValue::from_str(&signature(self.secret.expose(), &body)) {
            value.set_sensitive(true);
            headers.insert(SIGNATURE_HEADER, value);
        }
        broker::call(
            cx,
            backend,
            None,
            operation,
            Method::POST,
            self.url.clone(),
            headers,
            Bytes::from(body),
            retry,
        )
        .await
    }

    async fn create_session(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        request: CreateRequest<'_>,
    ) -> Result<Created, AttemptError> {
        let event = Event {
            event: "opening",
            kind: request.kind,
            stream: request.stream.as_str(),
            route: request.route,
            subject: request.subject,
            tier: request.tier,
            client_ip: request.client_ip.map(|ip| ip.to_string()),
            request_id: request.request_id,
        };
        let response = self
            .tell(cx, backend, &event, "opening", Retry::Never)
            .await?;
        let decision: Decision = broker::json(backend, "opening", &response)?;
        if !decision.allowed {
            return Err(AttemptError::fatal(GatewayError::Forbidden(one_line(
                decision
                    .reason
                    .as_deref()
                    .unwrap_or("refused by the provisioning service"),
            ))));
        }
        let url = decision
            .url
            .as_deref()
            .and_then(|u| Url::parse(u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                AttemptError::fatal(GatewayError::BadGateway(format!(
                    "backend {}: the provisioning service allowed the stream without a usable url",
                    backend.id
                )))
            })?;
        let host = AllowedHost::of(&url);
        let mut target = Target::new(
            url,
            decision.bearer.as_deref().and_then(exchange::bearer),
            request.request_id,
        );
        target.extra_host = host.as_ref();
        let mut created =
            exchange::post_offer(cx, backend, request.kind, &target, request.offer).await?;
        if let Some(bearer) = decision.bearer {
            created.state.insert(BEARER.into(), bearer);
        }
        if let Some(subject) = request.subject {
            created.state.insert(SUBJECT.into(), subject.to_owned());
        }
        if let Some(tier) = request.tier {
            created.state.insert(TIER.into(), tier.to_owned());
        }
        Ok(created)
    }
}

/// A reason fit for a client's one-line error: printable, bounded.
fn one_line(reason: &str) -> String {
    let line: String = reason
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    if line.trim().is_empty() {
        "refused by the provisioning service".into()
    } else {
        line.trim().to_owned()
    }
}

impl Adapter for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn serves(&self, _endpoint: EndpointKind) -> bool {
        true
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        // Media URLs come from the webhook's answers, each trusted for its own session.
        Vec::new()
    }

    fn describe(&self) -> String {
        format!(
            "webhook: asks {} per session (signed), then WHIP/WHEP to the URL it answers",
            self.url.origin().ascii_serialization()
        )
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
        Ok(SessionTarget::sealed_bearer(session, BEARER))
    }

    fn delete<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let deleted = super::remote_delete(self, cx, backend, &session).await;
            let claims = session.claims;
            let event = Event {
                event: "closing",
                kind: claims.kind,
                stream: &claims.stream,
                route: &claims.route,
                subject: claims.state.get(SUBJECT).map(String::as_str),
                tier: claims.state.get(TIER).map(String::as_str),
                client_ip: session.client_ip.map(|ip| ip.to_string()),
                request_id: session.request_id,
            };
            let told = self
                .tell(cx, backend, &event, "closing", Retry::Idempotent)
                .await
                .and_then(|response| broker::expect_success(backend, "closing", &response));
            if let Err(error) = told {
                broker::log_cleanup_failure(backend, "closing", &error.error);
            }
            deleted
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex_of_the_exact_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn events_have_the_documented_fields_in_order() {
        let event = Event {
            event: "opening",
            kind: EndpointKind::Whip,
            stream: "cam",
            route: "r",
            subject: None,
            tier: Some("premium"),
            client_ip: Some("203.0.113.7".into()),
            request_id: "abc",
        };
        assert_eq!(
            serde_json::to_string(&event).expect("json"),
            r#"{"event":"opening","kind":"whip","stream":"cam","route":"r","subject":null,"tier":"premium","client_ip":"203.0.113.7","request_id":"abc"}"#
        );
    }

    #[test]
    fn reasons_reach_clients_as_one_bounded_line() {
        assert_eq!(one_line("not booked\nsecret detail"), "not booked");
        assert_eq!(one_line(""), "refused by the provisioning service");
        assert_eq!(one_line(&"x".repeat(500)).len(), MAX_REASON);
    }
}
