//! Kind `millicast`: Dolby OptiView Real-time Streaming (Millicast), native WHIP and WHEP.
//!
//! WHIP at `{url}/api/whip/{stream}` with the publish token, WHEP at
//! `{url}/api/whep/{account_id}/{stream}` with the subscribe token when one is set. Its
//! Locations are absolute on media hosts of its own; its errors are `text/plain` (logged,
//! then turned into whipgate's one-line errors); its WHEP 409 "Stream not found" is the
//! standard 409 + Retry-After.

use std::sync::Arc;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use url::Url;

use super::exchange::{self, Target};
use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BoxFuture, CreateRequest, Created, KeyError,
    KindKeys, Secret, SessionRequest, SessionTarget, Upstreams,
};
use crate::error::GatewayError;
use crate::kind::EndpointKind;

const DEFAULT_URL: &str = "https://director.millicast.com";
const ACCEPT: &str = "application/sdp, text/plain";

#[derive(Debug)]
pub struct Millicast {
    url: Url,
    account_id: Option<String>,
    publish_token: Secret,
    subscribe_token: Option<Secret>,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &[
    "url",
    "account_id",
    "publish_token_env",
    "publish_token_file",
    "subscribe_token_env",
    "subscribe_token_file",
];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    let url = match keys.url("url")? {
        Some(url) => url,
        None => Url::parse(DEFAULT_URL).map_err(|_| keys.error("bad url"))?,
    };
    let account_id = keys.string("account_id")?;
    if account_id
        .as_deref()
        .is_some_and(|a| a.is_empty() || !a.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(keys.error("account_id must be letters and digits"));
    }
    let publish_token = keys.required_secret("publish_token")?;
    let subscribe_token = keys.secret("subscribe_token")?;
    Ok(Arc::new(Millicast {
        url,
        account_id,
        publish_token,
        subscribe_token,
    }))
}

impl Millicast {
    fn endpoint(&self, kind: EndpointKind, stream: &str) -> Result<Url, AttemptError> {
        let stream = utf8_percent_encode(stream, NON_ALPHANUMERIC).to_string();
        let path = match (kind, &self.account_id) {
            (EndpointKind::Whip, _) => format!("/api/whip/{stream}"),
            (EndpointKind::Whep, Some(account)) => format!("/api/whep/{account}/{stream}"),
            (EndpointKind::Whep, None) => {
                return Err(AttemptError::retryable(GatewayError::Unavailable {
                    reason: "this backend has no account_id for WHEP".into(),
                    retry_after: std::time::Duration::ZERO,
                }))
            }
        };
        self.url
            .join(&path)
            .map_err(|_| AttemptError::fatal(GatewayError::BadRequest("bad stream name".into())))
    }

    fn token(&self, kind: EndpointKind) -> Option<&Secret> {
        match kind {
            EndpointKind::Whip => Some(&self.publish_token),
            EndpointKind::Whep => self.subscribe_token.as_ref(),
        }
    }

    fn target<'a>(&self, kind: EndpointKind, url: Url, request_id: &'a str) -> Target<'a> {
        let authorization = self.token(kind).and_then(|t| exchange::bearer(t.expose()));
        let mut target = Target::new(url, authorization, request_id);
        target.accept = ACCEPT;
        target
    }
}

impl Adapter for Millicast {
    fn kind(&self) -> &'static str {
        "millicast"
    }

    fn serves(&self, endpoint: EndpointKind) -> bool {
        endpoint == EndpointKind::Whip || self.account_id.is_some()
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        let mut hosts: Vec<AllowedHost> = AllowedHost::of(&self.url).into_iter().collect();
        // Its Locations point at media servers of its own domain.
        if self
            .url
            .host_str()
            .is_some_and(|h| h == "millicast.com" || h.ends_with(".millicast.com"))
        {
            hosts.extend(AllowedHost::parse("*.millicast.com"));
        }
        hosts
    }

    fn describe(&self) -> String {
        format!(
            "millicast: Dolby Millicast at {}, WHIP with the publish token{}",
            self.url.origin().ascii_serialization(),
            match (&self.account_id, &self.subscribe_token) {
                (Some(account), Some(_)) =>
                    format!(", WHEP for account {account} with the subscribe token"),
                (Some(account), None) => format!(", WHEP for account {account}"),
                (None, _) => ", no WHEP (no account_id)".into(),
            }
        )
    }

    fn create<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        request: CreateRequest<'a>,
    ) -> BoxFuture<'a, Result<Created, AttemptError>> {
        Box::pin(async move {
            let url = self.endpoint(request.kind, request.stream.as_str())?;
            let target = self.target(request.kind, url, request.request_id);
            exchange::post_offer(cx, backend, request.kind, &target, request.offer).await
        })
    }

    fn session_target(&self, session: &SessionRequest<'_>) -> Result<SessionTarget, GatewayError> {
        Ok(SessionTarget {
            url: session.resource.clone(),
            authorization: self
                .token(session.claims.kind)
                .and_then(|t| exchange::bearer(t.expose())),
            passthrough: false,
            configured: true,
        })
    }
}
