//! Built-in sessions live in the replica whose SFU holds them. Their token names that
//! replica (`[server] internal_url`, sealed as [`OWNER`]), so a PATCH, DELETE or layer choice
//! that a load balancer sends to another replica is carried there and its answer returned.
//! The owner's address comes only from the sealed token, never from the client.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::Body as HttpBody;
use url::Url;

use super::response::Body;
use super::Gateway;
use crate::config::Config;
use crate::error::GatewayError;

/// The session state key holding the owner replica's `internal_url`.
pub(super) const OWNER: &str = "whipgate.owner";
/// Marks a carried request: it is served where it arrives, never carried again.
const CARRIED: &str = "x-whipgate-carried";

/// Request headers that belong to one hop, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

impl Gateway {
    /// Where a session request must be carried: its owner's URL for `path`, when the
    /// session is a built-in one owned by another replica.
    pub(super) fn owner_elsewhere(
        &self,
        config: &Config,
        token: &str,
        headers: &HeaderMap,
        path_and_query: &str,
    ) -> Option<Url> {
        let own = config.server.internal_url.as_ref()?;
        if headers.contains_key(CARRIED) {
            return None;
        }
        let claims = self.keys().open(token, self.clock.unix()).ok()?;
        let owner = Url::parse(claims.state.get(OWNER)?).ok()?;
        if owner.origin() == own.origin() {
            return None;
        }
        owner.join(path_and_query).ok()
    }

    /// Sends the request to its session's owner and returns the owner's answer.
    pub(super) async fn carry<B>(
        &self,
        config: &Config,
        token: &str,
        to: Url,
        request: Request<B>,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let not_found = || GatewayError::NotFound("session not found".into());
        let claims = self
            .keys()
            .open(token, self.clock.unix())
            .map_err(|_| not_found())?;
        let backend = self
            .backend_for_session(config, &claims.backend)
            .ok_or_else(not_found)?;
        let (parts, body) = request.into_parts();
        let body = super::handlers::read_body(&parts.headers, body, config).await?;
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(CARRIED, HeaderValue::from_static("1"));
        let answer = self
            .upstreams
            .client
            .send(&backend, None, parts.method, to, || headers.clone(), body)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "the replica that owns a built-in session is unreachable");
                GatewayError::Unavailable {
                    reason: "the replica that holds this session is unreachable".into(),
                    retry_after: std::time::Duration::from_secs(1),
                }
            })?;
        let mut response = Response::new(Body::new(answer.body));
        *response.status_mut() = answer.status;
        for (name, value) in &answer.headers {
            // This replica's own CORS layer speaks for the response.
            if hop_by_hop(name) || name.as_str().starts_with("access-control-") {
                continue;
            }
            response.headers_mut().append(name.clone(), value.clone());
        }
        Ok(response)
    }
}
