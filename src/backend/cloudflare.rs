//! Kind `cloudflare`: Cloudflare Stream live inputs, which take WHIP and play WHEP natively.
//!
//! One live input per stream, named `whipgate:{stream}`: found by listing (any replica finds
//! the one another made; with several, the oldest wins, so replicas agree), created on a
//! publisher's first use, remembered, never one per session. Its WHIP and WHEP URLs carry
//! a secret in their path and are the only credential: they stay in this process and in
//! sealed session tokens, never in a log, a metric or an answer. API calls are budgeted
//! (Cloudflare allows 1200 per 5 minutes and locks a client out for 5 minutes beyond).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use url::Url;

use super::broker::{self, Budget, Retry};
use super::exchange::{self, Target};
use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BoxFuture, CreateRequest, Created, KeyError,
    KindKeys, Secret, Upstreams,
};
use crate::error::GatewayError;
use crate::kind::EndpointKind;

const DEFAULT_API_URL: &str = "https://api.cloudflare.com/client/v4";
/// Streams whose live input this process remembers; beyond it the memory starts over (an
/// input found again costs two API calls).
const REMEMBERED_STREAMS: usize = 10_000;
/// How long "this stream has no input" answers players before the API is asked again.
const ABSENT_MEMORY: Duration = Duration::from_secs(5);

pub struct Cloudflare {
    account_id: String,
    api_token: Secret,
    api_url: Url,
    budget: Option<Budget>,
    inputs: Mutex<HashMap<String, LiveInput>>,
    /// Streams found to have no input (for players), and when: players polling a stream not
    /// live yet are answered from here rather than by listing again.
    absent: Mutex<HashMap<String, Instant>>,
    /// Misses are resolved one at a time, so that concurrent first publishers of a stream
    /// make one input between them.
    resolving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare")
            .field("account_id", &self.account_id)
            .field("api_url", &self.api_url.as_str())
            .finish_non_exhaustive()
    }
}

/// A live input's media URLs (secret) and id.
#[derive(Clone)]
struct LiveInput {
    uid: String,
    publish: Url,
    play: Url,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &[
    "account_id",
    "api_token_env",
    "api_token_file",
    "api_url",
    "api_rate_limit",
];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    let account_id = keys.required_string("account_id")?;
    if !account_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(keys.error("account_id must be letters and digits"));
    }
    let api_token = keys.required_secret("api_token")?;
    let api_url = match keys.url("api_url")? {
        Some(url) => url,
        None => Url::parse(DEFAULT_API_URL).map_err(|_| keys.error("bad api_url"))?,
    };
    // 1200 calls per 5 minutes on average; a burst for many streams starting at once.
    let budget = Budget::from_keys(keys, Some((4.0, 60)))?;
    Ok(Arc::new(Cloudflare {
        account_id,
        api_token,
        api_url,
        budget,
        inputs: Mutex::new(HashMap::new()),
        absent: Mutex::new(HashMap::new()),
        resolving: tokio::sync::Mutex::new(()),
    }))
}

/// Cloudflare's API envelope.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    success: bool,
    result: Option<T>,
}

#[derive(Debug, Deserialize)]
struct ListResult {
    #[serde(rename = "liveInputs", default)]
    live_inputs: Vec<ListedInput>,
}

#[derive(Debug, Deserialize)]
struct ListedInput {
    uid: String,
    #[serde(default)]
    meta: serde_json::Value,
    #[serde(default)]
    created: String,
}

/// Holds the secret media URLs: no `Debug`, so they cannot be logged by accident.
#[derive(Deserialize)]
struct FullInput {
    uid: String,
    #[serde(rename = "webRTC")]
    web_rtc: UrlField,
    #[serde(rename = "webRTCPlayback")]
    web_rtc_playback: UrlField,
}

#[derive(Deserialize)]
struct UrlField {
    url: String,
}

/// A live input's uid and media URLs from its full record.
fn usable(backend: &BackendDef, full: Envelope<FullInput>) -> Result<LiveInput, AttemptError> {
    let unusable = || {
        AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {}: a live input without usable WebRTC URLs",
            backend.id
        )))
    };
    let full = full.result.filter(|_| full.success).ok_or_else(unusable)?;
    let parse = |raw: &str| {
        Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
    };
    Ok(LiveInput {
        uid: full.uid,
        publish: parse(&full.web_rtc.url).ok_or_else(unusable)?,
        play: parse(&full.web_rtc_playback.url).ok_or_else(unusable)?,
    })
}

/// The live input name whipgate gives a stream.
fn input_name(stream: &str) -> String {
    format!("whipgate:{stream}")
}

/// Of the inputs named for `stream`, the oldest: every replica picks the same one.
fn pick<'a>(inputs: &'a [ListedInput], stream: &str) -> Option<&'a ListedInput> {
    let name = input_name(stream);
    inputs
        .iter()
        .filter(|i| i.meta.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))
        .min_by(|a, b| a.created.cmp(&b.created).then(a.uid.cmp(&b.uid)))
}

impl Cloudflare {
    fn inputs_url(&self, uid: Option<&str>) -> Result<Url, AttemptError> {
        let mut url = self.api_url.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| AttemptError::fatal(GatewayError::Internal("bad api_url".into())))?;
            segments.pop_if_empty().extend([
                "accounts",
                self.account_id.as_str(),
                "stream",
                "live_inputs",
            ]);
            if let Some(uid) = uid {
                segments.push(uid);
            }
        }
        Ok(url)
    }

    async fn api(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
    ) -> Result<super::UpstreamResponse, AttemptError> {
        // Reads may be repeated; a repeated create could make a second input.
        let retry = if method == Method::GET {
            Retry::Idempotent
        } else {
            Retry::Never
        };
        let headers = broker::json_headers(exchange::bearer(self.api_token.expose()));
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        broker::call(
            cx,
            backend,
            self.budget.as_ref(),
            operation,
            method,
            url,
            headers,
            body,
            retry,
        )
        .await
    }

    fn remembered(&self, stream: &str) -> Option<LiveInput> {
        self.inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned()
    }

    fn remember(&self, stream: &str, input: LiveInput) {
        self.absent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(stream);
        let mut inputs = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
        if inputs.len() >= REMEMBERED_STREAMS {
            inputs.clear();
        }
        inputs.insert(stream.to_owned(), input);
    }

    fn recently_absent(&self, stream: &str, now: Instant) -> bool {
        self.absent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .is_some_and(|at| now.saturating_duration_since(*at) < ABSENT_MEMORY)
    }

    fn remember_absent(&self, stream: &str, now: Instant) {
        let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        if absent.len() >= REMEMBERED_STREAMS {
            absent.retain(|_, at| now.saturating_duration_since(*at) < ABSENT_MEMORY);
            if absent.len() >= REMEMBERED_STREAMS {
                absent.clear();
            }
        }
        absent.insert(stream.to_owned(), now);
    }

    fn forget(&self, stream: &str) {
        self.inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(stream);
    }

    /// The uid of the oldest input named for `stream`, if any.
    async fn find(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        stream: &str,
    ) -> Result<Option<String>, AttemptError> {
        let listed = self
            .api(
                cx,
                backend,
                "list_live_inputs",
                Method::GET,
                self.inputs_url(None)?,
                None,
            )
            .await?;
        let listed: Envelope<ListResult> = broker::json(backend, "list_live_inputs", &listed)?;
        Ok(listed
            .result
            .filter(|_| listed.success)
            .and_then(|list| pick(&list.live_inputs, stream).map(|i| i.uid.clone())))
    }

    async fn get(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        uid: &str,
    ) -> Result<LiveInput, AttemptError> {
        let response = self
            .api(
                cx,
                backend,
                "get_live_input",
                Method::GET,
                self.inputs_url(Some(uid))?,
                None,
            )
            .await?;
        let full = broker::json::<Envelope<FullInput>>(backend, "get_live_input", &response)?;
        usable(backend, full)
    }

    /// The stream's live input: remembered, found, or (for a publisher) created.
    async fn live_input(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        stream: &str,
        create: bool,
        now: Instant,
    ) -> Result<Option<LiveInput>, AttemptError> {
        if let Some(input) = self.remembered(stream) {
            return Ok(Some(input));
        }
        if !create && self.recently_absent(stream, now) {
            return Ok(None);
        }
        let _one_at_a_time = self.resolving.lock().await;
        if let Some(input) = self.remembered(stream) {
            return Ok(Some(input));
        }
        let input = match self.find(cx, backend, stream).await? {
            Some(uid) => self.get(cx, backend, &uid).await?,
            None if !create => {
                self.remember_absent(stream, now);
                return Ok(None);
            }
            None => {
                let body = serde_json::json!({
                    "meta": { "name": input_name(stream) },
                    "recording": { "mode": "off" },
                });
                let response = self
                    .api(
                        cx,
                        backend,
                        "create_live_input",
                        Method::POST,
                        self.inputs_url(None)?,
                        Some(body),
                    )
                    .await?;
                let made = usable(
                    backend,
                    broker::json::<Envelope<FullInput>>(backend, "create_live_input", &response)?,
                )?;
                self.settle(cx, backend, stream, made).await?
            }
        };
        tracing::info!(backend = %backend.id, uid = %input.uid, "live input ready for a stream");
        self.remember(stream, input.clone());
        Ok(Some(input))
    }

    /// Two replicas may both find no input and both create one. After creating, the oldest
    /// input of the stream is looked up again; if another replica's is older, it is the one
    /// used (by every replica) and ours is deleted.
    async fn settle(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        stream: &str,
        made: LiveInput,
    ) -> Result<LiveInput, AttemptError> {
        let oldest = match self.find(cx, backend, stream).await {
            Ok(Some(uid)) if uid != made.uid => uid,
            _ => return Ok(made),
        };
        let winner = self.get(cx, backend, &oldest).await?;
        let deleted = self
            .api(
                cx,
                backend,
                "delete_live_input",
                Method::DELETE,
                self.inputs_url(Some(&made.uid))?,
                None,
            )
            .await;
        if let Err(error) =
            deleted.and_then(|r| broker::expect_success(backend, "delete_live_input", &r))
        {
            broker::log_cleanup_failure(backend, "delete_live_input", &error.error);
        }
        Ok(winner)
    }

    async fn create_session(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        request: CreateRequest<'_>,
    ) -> Result<Created, AttemptError> {
        let stream = request.stream.as_str();
        let publisher = request.kind == EndpointKind::Whip;
        // A remembered input may have been deleted in Cloudflare's console meanwhile: its
        // URL then answers 404, and the input is looked up once more.
        for attempt in 0..2 {
            let Some(input) = self
                .live_input(cx, backend, stream, publisher, Instant::now())
                .await?
            else {
                return Err(AttemptError::fatal(GatewayError::NotLive {
                    reason: "no publisher is live on this stream".into(),
                    retry_after: Duration::ZERO,
                }));
            };
            let url = if publisher { input.publish } else { input.play };
            let host = AllowedHost::of(&url);
            let mut target = Target::new(url, None, request.request_id);
            target.extra_host = host.as_ref();
            let result =
                exchange::post_offer(cx, backend, request.kind, &target, request.offer.clone())
                    .await;
            match result {
                Err(AttemptError {
                    error: GatewayError::NotFound(_),
                    ..
                }) if attempt == 0 && publisher => self.forget(stream),
                other => return other,
            }
        }
        Err(AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {}: the stream's live input keeps answering 404",
            backend.id
        ))))
    }
}

impl Adapter for Cloudflare {
    fn kind(&self) -> &'static str {
        "cloudflare"
    }

    fn serves(&self, _endpoint: EndpointKind) -> bool {
        true
    }

    /// Cloudflare claims trickle but was reported never to answer a PATCH (each would wait
    /// out upstream_timeout): off unless the backend sets `trickle = true`.
    fn trickle(&self) -> bool {
        false
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        // Media hosts come from the API with each input; only those are trusted for it.
        Vec::new()
    }

    fn describe(&self) -> String {
        format!(
            "cloudflare: Stream live inputs of account {}, one per stream (whipgate:{{stream}}), WHIP and WHEP",
            self.account_id
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(uid: &str, name: &str, created: &str) -> ListedInput {
        ListedInput {
            uid: uid.into(),
            meta: serde_json::json!({ "name": name }),
            created: created.into(),
        }
    }

    #[test]
    fn every_replica_picks_the_oldest_input_of_a_stream() {
        let inputs = [
            listed("b", "whipgate:cam", "2026-12-01T10:00:02Z"),
            listed("x", "whipgate:other", "2026-12-01T09:00:00Z"),
            listed("a", "whipgate:cam", "2026-12-01T10:00:01Z"),
            listed("c", "cam", "2026-12-01T08:00:00Z"),
        ];
        assert_eq!(pick(&inputs, "cam").map(|i| i.uid.as_str()), Some("a"));
        assert!(pick(&inputs, "missing").is_none());
    }

    #[test]
    fn the_list_answer_is_read_in_its_documented_shape() {
        let body = r#"{"success":true,"errors":[],"messages":[],"result":{"liveInputs":[{"uid":"1a55","meta":{"name":"whipgate:cam"},"created":"2026-12-01T10:00:00Z","modified":"2026-12-01T10:00:00Z","deleteRecordingAfterDays":null}],"range":1,"total":1}}"#;
        let parsed: Envelope<ListResult> = serde_json::from_str(body).expect("list");
        let list = parsed.result.expect("result");
        assert_eq!(
            pick(&list.live_inputs, "cam").map(|i| i.uid.as_str()),
            Some("1a55")
        );
    }
}
