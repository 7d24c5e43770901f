//! Kind `openai-realtime`: OpenAI's Realtime API over WebRTC. Per session whipgate mints a
//! short-lived client secret with the server key (`POST /v1/realtime/client_secrets`, the
//! model and `session` settings fixed in it), then posts the client's offer to
//! `/v1/realtime/calls` with that secret, as the API's WebRTC guide has browsers do: the
//! server key itself never leaves whipgate. The call id (the Location's last segment) is
//! sealed with the session; DELETE becomes `POST /v1/realtime/calls/{id}/hangup` with the
//! server key. The API has no PATCH, so no trickle.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use url::Url;

use super::broker::{self, Retry};
use super::exchange::{self, Target};
use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BoxFuture, CreateRequest, Created, KeyError,
    KindKeys, Secret, SessionRequest, Upstreams,
};
use crate::error::GatewayError;
use crate::kind::EndpointKind;

const DEFAULT_URL: &str = "https://api.openai.com";
const DEFAULT_MODEL: &str = "gpt-realtime";
/// The client secret is used at once, for one call: the shortest life the API allows
/// that still covers a slow exchange.
const SECRET_SECONDS: u64 = 60;
/// Session state: the call's id, for its hangup.
const CALL_ID: &str = "openai.call_id";

#[derive(Debug)]
pub struct OpenAiRealtime {
    url: Url,
    api_key: Secret,
    model: String,
    /// `session` settings (voice, instructions, ...) fixed in each client secret.
    session: serde_json::Map<String, serde_json::Value>,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &["url", "api_key_env", "api_key_file", "model", "session"];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    let url = match keys.url("url")? {
        Some(url) => url,
        None => Url::parse(DEFAULT_URL).map_err(|_| keys.error("bad url"))?,
    };
    let api_key = keys.required_secret("api_key")?;
    let model = keys
        .string("model")?
        .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    let session = match keys.value::<serde_json::Value>("session")? {
        None => serde_json::Map::new(),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => return Err(keys.error("session must be a table (voice, instructions, ...)")),
    };
    if session.contains_key("model") || session.contains_key("type") {
        return Err(keys.error("session takes no model or type: use the model key"));
    }
    Ok(Arc::new(OpenAiRealtime {
        url,
        api_key,
        model,
        session,
    }))
}

#[derive(serde::Deserialize)]
struct ClientSecret {
    value: String,
}

impl OpenAiRealtime {
    fn api(&self, path: &str) -> Result<Url, GatewayError> {
        self.url
            .join(path)
            .map_err(|_| GatewayError::Internal("bad OpenAI URL".into()))
    }

    fn server_key(&self) -> Option<http::HeaderValue> {
        exchange::bearer(self.api_key.expose())
    }
}

impl Adapter for OpenAiRealtime {
    fn kind(&self) -> &'static str {
        "openai-realtime"
    }

    fn serves(&self, endpoint: EndpointKind) -> bool {
        endpoint == EndpointKind::Whip
    }

    fn trickle(&self) -> bool {
        false
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        AllowedHost::of(&self.url).into_iter().collect()
    }

    fn describe(&self) -> String {
        format!("openai-realtime: model {} at {}", self.model, self.url)
    }

    fn create<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        request: CreateRequest<'a>,
    ) -> BoxFuture<'a, Result<Created, AttemptError>> {
        Box::pin(async move {
            // Its control events travel on a data channel the client must open before it
            // offers: without one, the call could not be driven.
            if !crate::sdp::offers_media(&String::from_utf8_lossy(&request.offer), "application") {
                return Err(AttemptError::fatal(GatewayError::Unprocessable(format!(
                    "backend {}: OpenAI Realtime needs a data channel (oai-events) in the offer",
                    backend.id
                ))));
            }
            let mut session = self.session.clone();
            session.insert("type".into(), "realtime".into());
            session.insert("model".into(), self.model.clone().into());
            let body = serde_json::json!({
                "expires_after": { "anchor": "created_at", "seconds": SECRET_SECONDS },
                "session": session,
            });
            let minted = broker::call(
                cx,
                backend,
                None,
                "client_secret",
                Method::POST,
                self.api("/v1/realtime/client_secrets")
                    .map_err(AttemptError::fatal)?,
                broker::json_headers(self.server_key()),
                Bytes::from(body.to_string()),
                Retry::Never,
            )
            .await?;
            let secret: ClientSecret = broker::json(backend, "client_secret", &minted)?;
            let calls = self
                .api("/v1/realtime/calls")
                .map_err(AttemptError::fatal)?;
            let target = Target::new(calls, exchange::bearer(&secret.value), request.request_id);
            let mut created =
                exchange::post_offer(cx, backend, EndpointKind::Whip, &target, request.offer)
                    .await?;
            let call_id = created
                .resource
                .url()
                .path_segments()
                .and_then(|mut segments| segments.next_back())
                // Ids are `rtc_` and letters: anything else would not be a path segment of
                // its own in the hangup URL.
                .filter(|id| {
                    !id.is_empty()
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                })
                // Without an id there is nothing to hang up; the call dies on its own since
                // the client, refused here, never connects to it.
                .ok_or_else(|| {
                    AttemptError::fatal(GatewayError::BadGateway(format!(
                        "backend {}: the call's Location names no call",
                        backend.id
                    )))
                })?
                .to_owned();
            created.state.insert(CALL_ID.into(), call_id);
            Ok(created)
        })
    }

    fn delete<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let call_id = session
                .claims
                .state
                .get(CALL_ID)
                .ok_or_else(|| GatewayError::NotFound("session not found".into()))?;
            let hangup = self.api(&format!("/v1/realtime/calls/{call_id}/hangup"))?;
            let response = broker::call(
                cx,
                backend,
                None,
                "hangup",
                Method::POST,
                hangup,
                // The hangup takes no body, so no Content-Type either.
                broker::bodiless_headers(self.server_key()),
                Bytes::new(),
                Retry::Idempotent,
            )
            .await
            .map_err(|failure| failure.error)?;
            if response.status == http::StatusCode::NOT_FOUND {
                return Err(GatewayError::NotFound("session not found".into()));
            }
            broker::expect_success(backend, "hangup", &response).map_err(|failure| failure.error)
        })
    }
}
