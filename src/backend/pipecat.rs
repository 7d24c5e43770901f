//! Kind `pipecat`: a Pipecat bot behind its SmallWebRTC runner, which speaks JSON rather
//! than WHIP: the offer goes as `{"sdp", "type": "offer", "pc_id": null, ...}` to its offer
//! path and the answer comes back as JSON with the connection's `pc_id`; trickle is a PATCH
//! of the same path with `{"pc_id", "candidates": [...]}`. There is no DELETE: the bot ends
//! when the client's peer connection closes, so a DELETE ends the session on whipgate's side
//! only. Paths and the extra `request_data` are configurable, since the runner is not a
//! standard.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use url::Url;

use super::broker::{self, Retry};
use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BoxFuture, CreateRequest, Created, KeyError,
    KindKeys, Patched, SessionRequest, Upstreams,
};
use crate::error::GatewayError;
use crate::frontdoor::UpstreamIfMatch;
use crate::kind::EndpointKind;
use crate::session::SessionState;

const DEFAULT_OFFER_PATH: &str = "/api/offer";
/// Session state: the runner's peer connection id, and the offer's mids in m-line order
/// (its candidates PATCH wants each candidate's m-line index).
const PC_ID: &str = "pipecat.pc_id";
const MIDS: &str = "pipecat.mids";

#[derive(Debug)]
pub struct Pipecat {
    url: Url,
    offer: Url,
    request_data: Option<serde_json::Value>,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &["url", "offer_path", "request_data"];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    let url = keys.url("url")?.ok_or_else(|| {
        keys.error("kind pipecat needs url (the bot runner, e.g. http://bot:7860)")
    })?;
    let path = keys
        .string("offer_path")?
        .unwrap_or_else(|| DEFAULT_OFFER_PATH.to_owned());
    if !path.starts_with('/') {
        return Err(keys.error("offer_path must start with /"));
    }
    let offer = url
        .join(&path)
        .map_err(|_| keys.error("offer_path is not a path"))?;
    let request_data = keys.value::<serde_json::Value>("request_data")?;
    if request_data.as_ref().is_some_and(|v| !v.is_object()) {
        return Err(keys.error("request_data must be a table"));
    }
    Ok(Arc::new(Pipecat {
        url,
        offer,
        request_data,
    }))
}

#[derive(serde::Deserialize)]
struct Answer {
    sdp: String,
    pc_id: String,
}

impl Adapter for Pipecat {
    fn kind(&self) -> &'static str {
        "pipecat"
    }

    fn serves(&self, endpoint: EndpointKind) -> bool {
        endpoint == EndpointKind::Whip
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        AllowedHost::of(&self.url).into_iter().collect()
    }

    fn health_url(&self) -> Option<Url> {
        self.url.join("/status").ok()
    }

    fn describe(&self) -> String {
        format!("pipecat: the bot runner at {}", self.offer)
    }

    fn create<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        request: CreateRequest<'a>,
    ) -> BoxFuture<'a, Result<Created, AttemptError>> {
        Box::pin(async move {
            let offer = std::str::from_utf8(&request.offer).map_err(|_| {
                AttemptError::fatal(GatewayError::BadRequest("the offer is not UTF-8".into()))
            })?;
            // The runner answers an offer without m-lines with an empty answer: never sent.
            let mids = mids(offer);
            if !offer.lines().any(|l| l.starts_with("m=")) {
                return Err(AttemptError::fatal(GatewayError::BadRequest(
                    "the offer has no m-line".into(),
                )));
            }
            let mut body = serde_json::json!({
                "sdp": offer,
                "type": "offer",
                "pc_id": null,
                "restart_pc": false,
            });
            if let Some(data) = &self.request_data {
                body["request_data"] = data.clone();
            }
            let response = broker::call(
                cx,
                backend,
                None,
                "offer",
                Method::POST,
                self.offer.clone(),
                broker::json_headers(None),
                Bytes::from(body.to_string()),
                Retry::Never,
            )
            .await?;
            let answer: Answer = broker::json(backend, "offer", &response)?;
            if !answer.sdp.lines().any(|l| l.starts_with("m=")) {
                return Err(AttemptError::fatal(GatewayError::BadGateway(format!(
                    "backend {}: the bot answered without media",
                    backend.id
                ))));
            }
            let mut state = SessionState::new();
            state.insert(PC_ID.into(), answer.pc_id);
            state.insert(MIDS.into(), mids.join(" "));
            Ok(Created {
                answer: Bytes::from(answer.sdp),
                counter_offer: false,
                resource: self.offer.clone().into(),
                etag: None,
                ice_servers: Vec::new(),
                state,
            })
        })
    }

    fn patch<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
        body: Bytes,
        _if_match: &'a UpstreamIfMatch,
    ) -> BoxFuture<'a, Result<Patched, GatewayError>> {
        Box::pin(async move {
            let pc_id = session
                .claims
                .state
                .get(PC_ID)
                .ok_or_else(|| GatewayError::NotFound("session not found".into()))?;
            let mids: Vec<&str> = session
                .claims
                .state
                .get(MIDS)
                .map(|m| m.split(' ').collect())
                .unwrap_or_default();
            let fragment = String::from_utf8_lossy(&body);
            let candidates = candidates(&fragment, &mids).ok_or_else(|| {
                GatewayError::Unprocessable(
                    "a Pipecat bot takes trickled candidates only, not an ICE restart; start a \
                     new session"
                        .into(),
                )
            })?;
            let body = serde_json::json!({ "pc_id": pc_id, "candidates": candidates });
            let response = broker::call(
                cx,
                backend,
                None,
                "candidates",
                Method::PATCH,
                self.offer.clone(),
                broker::json_headers(None),
                Bytes::from(body.to_string()),
                Retry::Idempotent,
            )
            .await
            .map_err(|failure| failure.error)?;
            if response.status == http::StatusCode::NOT_FOUND {
                // The bot's connection is gone: the session has ended.
                return Err(GatewayError::NotFound("session not found".into()));
            }
            broker::expect_success(backend, "candidates", &response)
                .map_err(|failure| failure.error)?;
            Ok(Patched::trickled())
        })
    }

    /// The runner has no DELETE (it answers 405): the bot ends when the client's peer
    /// connection closes, which the client does with its DELETE.
    fn delete<'a>(
        &'a self,
        _cx: &'a Upstreams,
        _backend: &'a BackendDef,
        _session: SessionRequest<'a>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The offer's mids, in m-line order.
fn mids(offer: &str) -> Vec<String> {
    let mut mids = Vec::new();
    let mut in_media = false;
    for line in offer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            in_media = true;
            mids.push(String::new());
        } else if let (true, Some(mid)) = (in_media, line.strip_prefix("a=mid:")) {
            if let Some(last) = mids.last_mut() {
                *last = mid.trim().to_owned();
            }
        }
    }
    mids
}

/// An RFC 8840 trickle fragment as the runner's candidates: each `a=candidate` with the mid
/// of the section it follows and that section's index in the offer; `a=end-of-candidates` as
/// an empty candidate. `None` for a fragment with neither (an ICE restart).
fn candidates(fragment: &str, mids: &[&str]) -> Option<Vec<serde_json::Value>> {
    let mut mid: Option<&str> = mids.first().copied();
    let mut out = Vec::new();
    let entry = |candidate: &str, mid: Option<&str>| {
        let index = mid.and_then(|m| mids.iter().position(|known| *known == m));
        serde_json::json!({
            "candidate": candidate,
            "sdp_mid": mid,
            "sdp_mline_index": index.unwrap_or(0),
        })
    };
    for line in fragment.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(value) = line.strip_prefix("a=mid:") {
            mid = Some(value.trim());
        } else if let Some(value) = line.strip_prefix("a=candidate:") {
            out.push(entry(&format!("candidate:{value}"), mid));
        } else if line == "a=end-of-candidates" {
            out.push(entry("", mid));
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickled_candidates_become_the_runners_candidates() {
        let mids = ["0", "1"];
        let fragment = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=mid:1\r\n\
                        a=candidate:1 1 udp 2130706431 10.0.0.2 50000 typ host\r\n\
                        a=end-of-candidates\r\n";
        assert_eq!(
            candidates(fragment, &mids),
            Some(vec![
                serde_json::json!({"candidate": "candidate:1 1 udp 2130706431 10.0.0.2 50000 typ host", "sdp_mid": "1", "sdp_mline_index": 1}),
                serde_json::json!({"candidate": "", "sdp_mid": "1", "sdp_mline_index": 1}),
            ])
        );
        assert_eq!(
            candidates(
                "a=ice-ufrag:new\r\na=ice-pwd:newpasswordnewpassword\r\n",
                &mids
            ),
            None,
            "an ICE restart"
        );
    }

    #[test]
    fn an_offers_mids_are_read_in_order() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:d\r\n";
        assert_eq!(mids(offer), vec!["a".to_owned(), "d".to_owned()]);
    }
}
