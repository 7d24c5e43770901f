//! Kind `ivs`: Amazon IVS real-time stages. WHIP only (IVS has no WHEP).
//!
//! Per session: a SigV4-signed `CreateParticipantToken` (PUBLISH only, a short duration,
//! `userId` = whipgate's session id), then the offer POSTed to the global WHIP host with that
//! token, following its 307s to a regional host with `Authorization` kept. DELETE deletes
//! the resolved resource (best effort: IVS does not document it) and calls
//! `DisconnectParticipant`, which is what really ends the publish.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use url::Url;

use super::broker::{self, Budget, Retry};
use super::exchange::{self, Target};
use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BoxFuture, CreateRequest, Created, KeyError,
    KindKeys, Secret, SessionRequest, SessionTarget, Upstreams,
};
use crate::error::GatewayError;
use crate::kind::EndpointKind;

const DEFAULT_WHIP_URL: &str = "https://global.whip.live-video.net";
/// SigV4 signing name of the IVS real-time API (its endpoint prefix is `ivsrealtime`).
const SIGNING_NAME: &str = "ivs";

#[derive(Debug)]
pub struct Ivs {
    region: String,
    stage_arn: String,
    credentials: AwsCredentials,
    api_url: Url,
    whip_url: Url,
    token_minutes: u64,
    budget: Option<Budget>,
}

/// Static AWS credentials (an access key, or STS ones with a session token).
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &[
    "region",
    "stage_arn",
    "access_key_id_env",
    "access_key_id_file",
    "secret_access_key_env",
    "secret_access_key_file",
    "session_token_env",
    "session_token_file",
    "api_url",
    "whip_url",
    "token_duration",
    "api_rate_limit",
];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    let region = keys.required_string("region")?;
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(keys.error(format!("region `{region}` is not an AWS region name")));
    }
    let stage_arn = keys.required_string("stage_arn")?;
    if !is_stage_arn(&stage_arn) {
        return Err(keys.error("stage_arn is not arn:aws:ivs:<region>:<account>:stage/<id>"));
    }
    let credentials = AwsCredentials {
        access_key_id: keys.required_secret("access_key_id")?,
        secret_access_key: keys.required_secret("secret_access_key")?,
        session_token: keys.secret("session_token")?,
    };
    let default_api = format!("https://ivsrealtime.{region}.amazonaws.com");
    let api_url = match keys.url("api_url")? {
        Some(url) => url,
        None => Url::parse(&default_api).map_err(|_| keys.error("bad region"))?,
    };
    let whip_url = match keys.url("whip_url")? {
        Some(url) => url,
        None => Url::parse(DEFAULT_WHIP_URL).map_err(|_| keys.error("bad whip_url"))?,
    };
    let token_minutes = keys
        .value::<humantime_serde::Serde<Duration>>("token_duration")?
        .map_or(Duration::from_secs(10 * 60), |d| *d)
        .as_secs()
        .div_ceil(60)
        .clamp(1, 20_160);
    // CreateParticipantToken's documented rate is not adjustable (5 TPS for most stage
    // operations; which one has 50 is unverified): stay under the lower one by default.
    let budget = Budget::from_keys(keys, Some((5.0, 10)))?;
    Ok(Arc::new(Ivs {
        region,
        stage_arn,
        credentials,
        api_url,
        whip_url,
        token_minutes,
        budget,
    }))
}

/// `arn:aws:ivs:[a-z0-9-]+:[0-9]+:stage/[a-zA-Z0-9-]+`, as the API model says.
fn is_stage_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:aws:ivs:") else {
        return false;
    };
    let mut parts = rest.splitn(3, ':');
    let (Some(region), Some(account), Some(resource)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(id) = resource.strip_prefix("stage/") else {
        return false;
    };
    arn.len() <= 128
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !account.is_empty()
        && account.bytes().all(|b| b.is_ascii_digit())
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Who signs, for which region and service.
pub struct SigningScope<'a> {
    pub credentials: &'a AwsCredentials,
    pub region: &'a str,
    pub service: &'a str,
}

/// The headers SigV4 adds to a request (`x-amz-date`, `authorization`, and
/// `x-amz-security-token` with STS credentials), for `time`.
pub fn sigv4_headers(
    scope: &SigningScope<'_>,
    time: SystemTime,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let SigningScope {
        credentials,
        region,
        service,
    } = *scope;
    let identity = Credentials::new(
        credentials.access_key_id.expose(),
        credentials.secret_access_key.expose(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        None,
        "whipgate",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// Holds the participant token: no `Debug`.
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(rename = "participantToken")]
    participant_token: ParticipantToken,
}

#[derive(Deserialize)]
struct ParticipantToken {
    #[serde(rename = "participantId")]
    participant_id: String,
    token: String,
}

const PARTICIPANT: &str = "participant";
const TOKEN: &str = "token";

impl Ivs {
    /// A signed call of the stage API.
    async fn api(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        operation: &'static str,
        body: serde_json::Value,
        now: u64,
        retry: Retry,
    ) -> Result<super::UpstreamResponse, AttemptError> {
        let url = self
            .api_url
            .join(&format!("/{operation}"))
            .map_err(|_| AttemptError::fatal(GatewayError::Internal("bad api_url".into())))?;
        let body = Bytes::from(body.to_string());
        let time = UNIX_EPOCH + Duration::from_secs(now);
        let scope = SigningScope {
            credentials: &self.credentials,
            region: &self.region,
            service: SIGNING_NAME,
        };
        let signed = sigv4_headers(
            &scope,
            time,
            "POST",
            url.as_str(),
            &[("content-type", "application/json")],
            &body,
        )
        .map_err(|e| {
            AttemptError::fatal(GatewayError::Internal(format!("SigV4 signing failed: {e}")))
        })?;
        let mut headers: HeaderMap = broker::json_headers(None);
        for (name, value) in signed {
            let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) else {
                continue;
            };
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        // Cleanup is not budgeted: a spent budget must not leave a participant connected.
        let (label, budget) = match operation {
            "CreateParticipantToken" => ("create_participant_token", self.budget.as_ref()),
            _ => ("disconnect_participant", None),
        };
        broker::call(
            cx,
            backend,
            budget,
            label,
            Method::POST,
            url,
            headers,
            body,
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
        let offer = std::str::from_utf8(&request.offer).unwrap_or("");
        if !crate::sdp::offers_codec(offer, "video", "H264") {
            return Err(AttemptError::fatal(GatewayError::Unprocessable(format!(
                "backend {} (Amazon IVS) needs H.264 video, and the offer has none",
                backend.id
            ))));
        }
        let body = serde_json::json!({
            "stageArn": self.stage_arn,
            "capabilities": ["PUBLISH"],
            "duration": self.token_minutes,
            "userId": format!("whipgate-{}", request.sid),
            "attributes": { "via": "whipgate" },
        });
        let response = self
            .api(
                cx,
                backend,
                "CreateParticipantToken",
                body,
                request.now,
                Retry::Never,
            )
            .await?;
        let answer: TokenAnswer = broker::json(backend, "create_participant_token", &response)?;
        let token = answer.participant_token;
        let target = Target::new(
            self.whip_url.clone(),
            exchange::bearer(&token.token),
            request.request_id,
        );
        let mut created =
            exchange::post_offer(cx, backend, request.kind, &target, request.offer).await?;
        created
            .state
            .insert(PARTICIPANT.into(), token.participant_id);
        created.state.insert(TOKEN.into(), token.token);
        Ok(created)
    }

    async fn delete_session(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        session: SessionRequest<'_>,
    ) -> Result<(), GatewayError> {
        let state = &session.claims.state;
        // IVS documents no DELETE on its WHIP resources; the disconnect below is what ends
        // the publish. A resource that is already gone still tells the client so (404).
        let resource_gone = match super::remote_delete(self, cx, backend, &session).await {
            Err(GatewayError::NotFound(_)) => true,
            Err(error) => {
                tracing::debug!(backend = %backend.id, %error, "IVS resource DELETE refused");
                false
            }
            Ok(()) => false,
        };
        let participant = state
            .get(PARTICIPANT)
            .ok_or_else(|| GatewayError::NotFound("session not found".into()))?;
        let body = serde_json::json!({
            "stageArn": self.stage_arn,
            "participantId": participant,
            "reason": "whipgate: the publisher's session was deleted",
        });
        let response = self
            .api(
                cx,
                backend,
                "DisconnectParticipant",
                body,
                session.now,
                Retry::Idempotent,
            )
            .await
            .map_err(|e| e.error)?;
        if response.status == http::StatusCode::NOT_FOUND || resource_gone {
            return Err(GatewayError::NotFound("session not found".into()));
        }
        broker::expect_success(backend, "disconnect_participant", &response).map_err(|e| e.error)
    }
}

impl Adapter for Ivs {
    fn kind(&self) -> &'static str {
        "ivs"
    }

    fn serves(&self, endpoint: EndpointKind) -> bool {
        endpoint == EndpointKind::Whip
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        let mut hosts: Vec<AllowedHost> = AllowedHost::of(&self.whip_url).into_iter().collect();
        // The global host redirects to regional hosts under the same domain.
        if self
            .whip_url
            .host_str()
            .is_some_and(|h| h.ends_with(".live-video.net"))
        {
            hosts.extend(AllowedHost::parse("*.live-video.net"));
        }
        hosts
    }

    fn describe(&self) -> String {
        format!(
            "ivs: Amazon IVS stage {}, a participant token (PUBLISH, {} min) per session, WHIP only",
            self.stage_arn, self.token_minutes
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
        Ok(SessionTarget::sealed_bearer(session, TOKEN))
    }

    fn delete<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(self.delete_session(cx, backend, session))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The worked example of ../shared/vendor-contracts.md (3.4), reproduced exactly.
    #[test]
    fn signature_matches_the_documented_fixture() {
        let credentials = AwsCredentials {
            access_key_id: Secret::new("AKIDEXAMPLE".into()),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        };
        let body = br#"{"stageArn":"arn:aws:ivs:us-east-1:123456789012:stage/abcdABCDefgh","capabilities":["PUBLISH"],"duration":60,"userId":"whipgate-sess-1","attributes":{"via":"whipgate"}}"#;
        assert_eq!(body.len(), 168);
        let scope = SigningScope {
            credentials: &credentials,
            region: "us-east-1",
            service: "ivs",
        };
        let headers = sigv4_headers(
            &scope,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            "POST",
            "https://ivsrealtime.us-east-1.amazonaws.com/CreateParticipantToken",
            &[("content-type", "application/json")],
            body,
        )
        .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20231114T221320Z"));
        assert_eq!(
            get("authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/ivs/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=efe926a0f27e81d2d4e23dfa4c102524dc75ec82b86ff37f147e0b23b3154e2c")
        );
    }

    #[test]
    fn session_tokens_are_signed_too() {
        let credentials = AwsCredentials {
            access_key_id: Secret::new("AKIDEXAMPLE".into()),
            secret_access_key: Secret::new("secret".into()),
            session_token: Some(Secret::new("sts-token".into())),
        };
        let scope = SigningScope {
            credentials: &credentials,
            region: "us-east-1",
            service: "ivs",
        };
        let headers = sigv4_headers(
            &scope,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            "POST",
            "https://ivsrealtime.us-east-1.amazonaws.com/CreateParticipantToken",
            &[("content-type", "application/json")],
            b"{}",
        )
        .unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"x-amz-security-token"), "{names:?}");
    }

    #[test]
    fn stage_arns() {
        assert!(is_stage_arn(
            "arn:aws:ivs:us-east-1:123456789012:stage/abcdABCDefgh"
        ));
        for bad in [
            "arn:aws:ivs:us-east-1:123456789012:channel/abc",
            "arn:aws:ivs:US:123:stage/abc",
            "arn:aws:ivs:us-east-1:12a:stage/abc",
            "arn:aws:ivs:us-east-1:123:stage/",
            "stage/abc",
        ] {
            assert!(!is_stage_arn(bad), "{bad}");
        }
    }
}
