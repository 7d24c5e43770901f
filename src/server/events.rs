//! WHEP server-sent events (the core events extension of draft-ietf-wish-whep-04): a player
//! POSTs the events it wants to the URL a session's `Link` names, and reads them from the
//! stream that answer's `Location` names.
//!
//! Stateless like sessions: both URLs carry the session token, so any replica serves them.
//! `reconnect` is whipgate's own: sent when the session's backend is drained or leaves the
//! table, once the stream is live again on another backend (10 s at most), so that players
//! re-join through the same WHEP URL and land where the stream is now.
//! The built-in SFU also tells `active`, `inactive`, `viewercount` and `layers`, and takes
//! the player's layer choice (the layer extension, `/session/{token}/layer`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::handlers::{public_base, read_body};
use super::response::{self, Body};
use super::Gateway;
use crate::backend::{BACKEND_EVENTS, BACKEND_EVENT_NAMES};
use crate::config::Config;
use crate::error::GatewayError;
use crate::session::{SessionClaims, SessionState};

pub(super) const REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";

/// Every event whipgate can send, in the order the `Link` lists them.
const ALL: [&str; 5] = ["active", "inactive", "layers", "viewercount", "reconnect"];

pub(super) const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// Event streams one session may hold open (a player needs one).
const PER_SESSION: usize = 4;

/// How often a stream's state is looked at.
const TICK: Duration = Duration::from_millis(500);
/// A comment line this often keeps proxies (and whipgate's own idle timeout) from closing
/// a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a player of a drained backend waits for its stream to be seen live elsewhere
/// before it is told to reconnect anyway.
const RECONNECT_WAIT: Duration = Duration::from_secs(10);

/// The events a session of this backend can get: the built-in SFU knows its streams; a
/// remote backend's own event stream, when it has one, gives the events it offers; and
/// whipgate itself knows when to send players elsewhere (`reconnect`).
pub(super) fn supported(remote: bool, state: &SessionState) -> Vec<&'static str> {
    if !remote {
        return ALL.to_vec();
    }
    let relayed: Vec<&str> = state
        .get(BACKEND_EVENT_NAMES)
        .map(|names| names.split(',').collect())
        .unwrap_or_default();
    ALL.iter()
        .copied()
        .filter(|name| *name == "reconnect" || relayed.contains(name))
        .collect()
}

/// The `Link` a WHEP session advertises its events with.
pub(super) fn link(
    base: &str,
    token: &str,
    remote: bool,
    state: &SessionState,
) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "<{base}/session/{token}/events>; rel=\"{REL}\"; events=\"{}\"",
        supported(remote, state).join(",")
    ))
    .ok()
}

/// The `Link` of the layer choice (the WHEP layer extension).
pub(super) fn layer_link(base: &str, token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "<{base}/session/{token}/layer>; rel=\"{LAYER_REL}\""
    ))
    .ok()
}

/// A player's layer choice: `{"mediaId": "1", "rid": "q"}`; `{"mediaId": "1"}` alone goes
/// back to the default (the highest layer).
#[derive(Debug, serde::Deserialize)]
struct LayerChoice {
    #[serde(rename = "mediaId")]
    media_id: String,
    /// `encodingId` is the name the extension's first draft gave it.
    #[serde(alias = "encodingId")]
    rid: Option<String>,
}

/// The `layers` event's data: per video m-line of the player, the layers it may choose.
fn layers_data(layers: &[(String, Vec<String>)]) -> String {
    let mut object = serde_json::Map::new();
    for (mid, rids) in layers {
        let entries: Vec<serde_json::Value> = rids
            .iter()
            .map(|rid| serde_json::json!({ "rid": rid }))
            .collect();
        object.insert(mid.clone(), serde_json::Value::Array(entries));
    }
    serde_json::Value::Object(object).to_string()
}

/// The events a player asks for: a JSON array of names (none or an empty body: all).
/// Anything not supported is refused, as the extension requires, and no stream is made.
pub(super) fn requested(
    body: &[u8],
    supported: &[&'static str],
) -> Result<Vec<&'static str>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(supported.to_vec());
    }
    let names: Vec<String> = serde_json::from_slice(body).map_err(|_| {
        GatewayError::BadRequest("the events request must be a JSON array of event names".into())
    })?;
    let mut wanted = Vec::new();
    for name in &names {
        let Some(known) = supported.iter().find(|s| **s == name.as_str()) else {
            return Err(GatewayError::BadRequest(format!(
                "event {:?} is not supported here (supported: {})",
                name.chars().take(40).collect::<String>(),
                supported.join(", ")
            )));
        };
        if !wanted.contains(known) {
            wanted.push(*known);
        }
    }
    Ok(wanted)
}

/// The names in an event stream's path, checked again (the path is the client's).
fn parse_list(list: &str, supported: &[&'static str]) -> Result<Vec<&'static str>, GatewayError> {
    list.split(',')
        .filter(|name| !name.is_empty())
        .map(|name| {
            supported
                .iter()
                .find(|s| **s == name)
                .copied()
                .ok_or_else(|| GatewayError::NotFound("no such event stream".into()))
        })
        .collect()
}

/// The largest event from a backend's stream that is passed on.
const MAX_RELAYED_EVENT: usize = 64 * 1024;

/// Stops a relayed backend event stream when the player's own stream ends.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// One server-sent event block: its `event:` name and its `data:` lines joined. Blocks
/// without a name or with a multi-line name are skipped.
fn parse_sse_block(block: &str) -> Option<(String, String)> {
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    Some((name?, data.join("\n")))
}

fn event(name: &str, data: &str) -> Bytes {
    // Every line of the data is a `data:` field of its own, so that no line of a relayed
    // backend's data can become a field (an `event:`) of its own.
    let mut out = format!("event: {name}\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

impl Gateway {
    /// `/session/{token}/events` (POST: subscribe) and `/session/{token}/events/{list}`
    /// (GET: the stream; DELETE: done with it).
    pub(super) async fn events<B>(
        self: &Arc<Self>,
        config: &Arc<Config>,
        token: &str,
        list: Option<&str>,
        request: Request<B>,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut outcome = super::handlers::Outcome::default();
        let (claims, backend, resource) =
            self.open(config, token, request.headers(), &mut outcome)?;
        if claims.kind != crate::kind::EndpointKind::Whep {
            return Err(GatewayError::NotFound(
                "events are offered on WHEP sessions".into(),
            ));
        }
        let remote = backend.adapter.is_remote();
        let offered = supported(remote, &claims.state);
        match (list, request.method().clone()) {
            (None, Method::POST) => {
                let (parts, body) = request.into_parts();
                let body = read_body(&parts.headers, body, config).await?;
                let wanted = requested(&body, &offered)?;
                let base = public_base(config, &parts);
                let location = HeaderValue::from_str(&format!(
                    "{base}/session/{token}/events/{}",
                    wanted.join(",")
                ))
                .map_err(|_| GatewayError::Internal("could not build the events URL".into()))?;
                let mut response = response::empty(StatusCode::CREATED);
                response.headers_mut().insert(header::LOCATION, location);
                Ok(response)
            }
            (Some(list), Method::GET) => {
                let wanted = parse_list(list, &offered)?;
                let (parts, _) = request.into_parts();
                let reconnect_url =
                    format!("{}/whep/{}", public_base(config, &parts), claims.stream);
                // A backend's own event stream wants the credential its session's other
                // requests carry.
                let backend_authorization = claims
                    .state
                    .get(BACKEND_EVENTS)
                    .and_then(|_| {
                        let request = self.session_request(
                            config,
                            &claims,
                            &resource,
                            &parts.headers,
                            &parts.extensions,
                            "",
                        );
                        backend.adapter.session_target(&request).ok()
                    })
                    .and_then(|target| target.authorization)
                    .map(|mut value| {
                        value.set_sensitive(true);
                        value
                    });
                self.event_stream(config, claims, wanted, reconnect_url, backend_authorization)
            }
            // The stream ends when its reader goes; a DELETE only says so explicitly.
            (Some(list), Method::DELETE) => {
                parse_list(list, &offered)?;
                Ok(response::empty(StatusCode::OK))
            }
            (None, _) => Err(GatewayError::MethodNotAllowed {
                reason: "POST the events you want to this URL".into(),
                allow: "POST, OPTIONS",
            }),
            (Some(_), _) => Err(GatewayError::MethodNotAllowed {
                reason: "GET reads this event stream, DELETE ends it".into(),
                allow: "GET, DELETE, OPTIONS",
            }),
        }
    }

    /// `POST /session/{token}/layer`: the player's layer choice → 200.
    pub(super) async fn layer<B>(
        &self,
        config: &Arc<Config>,
        token: &str,
        request: Request<B>,
        request_id: &str,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed {
                reason: "POST a layer choice to this URL".into(),
                allow: "POST, OPTIONS",
            });
        }
        let mut outcome = super::handlers::Outcome::default();
        let (claims, backend, resource) =
            self.open(config, token, request.headers(), &mut outcome)?;
        if claims.kind != crate::kind::EndpointKind::Whep || !backend.adapter.chooses_layers() {
            return Err(GatewayError::NotFound(
                "this session offers no layer choice".into(),
            ));
        }
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, config).await?;
        let choice: LayerChoice = serde_json::from_slice(&body).map_err(|_| {
            GatewayError::BadRequest(
                "a layer choice is JSON: {\"mediaId\": \"<mid>\", \"rid\": \"<rid>\"}".into(),
            )
        })?;
        backend
            .adapter
            .select_layer(
                &self.upstreams,
                self.session_request(
                    config,
                    &claims,
                    &resource,
                    &parts.headers,
                    &parts.extensions,
                    request_id,
                ),
                &choice.media_id,
                choice.rid.as_deref(),
            )
            .await?;
        Ok(response::empty(StatusCode::OK))
    }

    fn event_stream(
        self: &Arc<Self>,
        config: &Config,
        claims: SessionClaims,
        wanted: Vec<&'static str>,
        reconnect_url: String,
        backend_authorization: Option<HeaderValue>,
    ) -> Result<Response<Body>, GatewayError> {
        let limit = config.server.max_event_streams;
        if self.event_streams.fetch_add(1, Ordering::SeqCst) >= limit {
            self.event_streams.fetch_sub(1, Ordering::SeqCst);
            return Err(GatewayError::Unavailable {
                reason: format!("this gateway serves its limit of {limit} event streams"),
                retry_after: config.server.retry_after,
            });
        }
        {
            let mut per_session = self
                .event_streams_per_session
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let count = per_session.entry(claims.sid.clone()).or_default();
            if *count >= PER_SESSION {
                drop(per_session);
                self.event_streams.fetch_sub(1, Ordering::SeqCst);
                return Err(GatewayError::TooManyRequests {
                    reason: format!("this session already has {PER_SESSION} event streams"),
                    retry_after: config.server.retry_after,
                });
            }
            *count += 1;
        }
        // Well inside the connection's idle limit, so that a quiet stream is never cut.
        let keepalive = KEEPALIVE.min(config.server.connection_idle_timeout / 2);
        let (sender, receiver) = mpsc::channel(8);
        let gateway = self.clone();
        tokio::spawn(async move {
            gateway
                .feed_events(
                    &claims,
                    &wanted,
                    &reconnect_url,
                    keepalive,
                    sender,
                    backend_authorization,
                )
                .await;
            gateway.event_streams.fetch_sub(1, Ordering::SeqCst);
            let mut per_session = gateway
                .event_streams_per_session
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_session.get_mut(&claims.sid) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_session.remove(&claims.sid);
                }
            }
        });
        let mut response = Response::new(Body::Events(receiver));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Ok(response)
    }

    /// Subscribes to the backend's own event stream for the events the player wants and
    /// the backend offers, and passes them on as they come; the backend's `reconnect`
    /// becomes whipgate's own (the player re-joins through whipgate). Ends with the
    /// backend's stream.
    async fn relay_backend_events(
        &self,
        claims: &SessionClaims,
        url: &str,
        wanted: &[&'static str],
        reconnect_url: &str,
        sender: mpsc::Sender<Bytes>,
        authorization: Option<HeaderValue>,
    ) -> Result<(), String> {
        let config = self.config();
        let backend = self
            .backend_for_session(&config, &claims.backend)
            .ok_or("the session's backend is gone")?;
        // WHEP-04: a subscription naming an event the server does not offer is refused
        // whole, so the player's `reconnect` (whipgate's own) must not reach a backend
        // that never offered one.
        let offered: Vec<&str> = claims
            .state
            .get(BACKEND_EVENT_NAMES)
            .map(|names| names.split(',').collect())
            .unwrap_or_default();
        let names: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|name| offered.contains(name))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let url = url::Url::parse(url).map_err(|e| e.to_string())?;
        // Its credential goes only to its own hosts (a reload may have re-pointed the id).
        let authorization = authorization.filter(|_| backend.allows_host(&url));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(value) = &authorization {
            headers.insert(header::AUTHORIZATION, value.clone());
        }
        let body = serde_json::to_vec(&names).map_err(|e| e.to_string())?;
        let subscribed = self
            .upstreams
            .client
            .send(
                &backend,
                None,
                Method::POST,
                url.clone(),
                || headers.clone(),
                Bytes::from(body),
            )
            .await
            .map_err(|e| e.to_string())?;
        if subscribed.status != StatusCode::CREATED {
            return Err(format!("subscribing answered {}", subscribed.status));
        }
        let stream_url = subscribed
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|location| subscribed.url.url().join(location).ok())
            .filter(|u| backend.allows_host(u))
            .ok_or("the backend's event stream is not on its hosts")?;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, value);
        }
        let response = self
            .upstreams
            .client
            .open_stream(&stream_url, headers)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the event stream answered {}", response.status()));
        }
        let mut body = response.into_body();
        let mut pending = String::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(&data).replace("\r\n", "\n"));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let Some((name, data)) = parse_sse_block(&block) else {
                    continue;
                };
                let out = if name == "reconnect" {
                    serde_json::json!({ "url": reconnect_url }).to_string()
                } else {
                    data
                };
                let Some(known) = wanted.iter().find(|w| **w == name) else {
                    continue;
                };
                if sender.send(event(known, &out)).await.is_err() {
                    return Ok(());
                }
            }
            if pending.len() > MAX_RELAYED_EVENT {
                return Err("an event larger than whipgate relays".into());
            }
        }
        Ok(())
    }

    /// Whether the session's stream has a publisher on a backend other than the session's
    /// (and not drained): on this replica's SFU, or created through this replica.
    fn live_elsewhere(&self, config: &crate::config::Config, claims: &SessionClaims) -> bool {
        let usable = |id: &str| {
            id != claims.backend
                && config
                    .backends
                    .get(&crate::routing::BackendId(id.to_owned()))
                    .is_some_and(|b| !self.is_draining(b))
        };
        self.registry.any(|session| {
            session.kind == crate::kind::EndpointKind::Whip
                && session.stream == claims.stream
                && usable(&session.backend)
        })
    }

    /// Sends what changes until the player goes, the session ends or a reconnect is sent.
    async fn feed_events(
        self: &Arc<Self>,
        claims: &SessionClaims,
        wanted: &[&'static str],
        reconnect_url: &str,
        keepalive: Duration,
        sender: mpsc::Sender<Bytes>,
        backend_authorization: Option<HeaderValue>,
    ) {
        let wants = |name: &str| wanted.contains(&name);
        // The stream opens with a comment so that a player sees it is up at once.
        if sender
            .send(Bytes::from_static(b": whipgate\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut ticker = tokio::time::interval(TICK);
        let mut last_sent = tokio::time::Instant::now();
        let mut active: Option<bool> = None;
        let mut viewers: Option<usize> = None;
        let mut layers: Option<Vec<(String, Vec<String>)>> = None;
        let mut moved_since: Option<tokio::time::Instant> = None;
        // A backend with an event stream of its own: its events reach the player as well.
        let relay = claims.state.get(BACKEND_EVENTS).map(|url| {
            let gateway = self.clone();
            let (url, wanted, claims) = (url.clone(), wanted.to_vec(), claims.clone());
            let (sender, reconnect_url) = (sender.clone(), reconnect_url.to_owned());
            tokio::spawn(async move {
                if let Err(error) = gateway
                    .relay_backend_events(
                        &claims,
                        &url,
                        &wanted,
                        &reconnect_url,
                        sender,
                        backend_authorization,
                    )
                    .await
                {
                    tracing::warn!(backend = %claims.backend, %error, "the backend's event stream is not relayed");
                }
            })
        });
        let _stop_relay = AbortOnDrop(relay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                // A drain or a reload: look now, so that players move before the publisher
                // is ended (and their media stops).
                _ = self.moved.notified() => {}
                _ = sender.closed() => return,
            }
            if self.clock.unix() >= claims.expires {
                return;
            }
            let config = self.config();
            let backend = config
                .backends
                .get(&crate::routing::BackendId(claims.backend.clone()));
            // This replica shutting down moves its players too (to another replica), at once:
            // an open stream would otherwise hold the shutdown for all of `shutdown_grace`.
            let shutting_down = self.draining.load(Ordering::Relaxed);
            let moved = backend.is_none_or(|b| self.is_draining(b));
            if !moved {
                // A drain that was lifted: the next one waits afresh.
                moved_since = None;
            }
            if moved && !shutting_down {
                // The player is told once the stream is live again elsewhere, so that its
                // re-join finds it; when that cannot be seen from here (the publisher came
                // back through another replica), after RECONNECT_WAIT at most.
                let since = *moved_since.get_or_insert_with(tokio::time::Instant::now);
                if !self.live_elsewhere(&config, claims) && since.elapsed() < RECONNECT_WAIT {
                    if last_sent.elapsed() >= keepalive {
                        if sender
                            .send(Bytes::from_static(b": keepalive\n\n"))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        last_sent = tokio::time::Instant::now();
                    }
                    continue;
                }
            }
            if moved || shutting_down {
                if wants("reconnect") {
                    let data = serde_json::json!({ "url": reconnect_url }).to_string();
                    let _ = sender.send(event("reconnect", &data)).await;
                }
                return;
            }
            let mut out = Vec::new();
            let mut session_gone = false;
            if let Some(backend) = backend.filter(|b| !b.adapter.is_remote()) {
                let status = match self.upstreams.sfu.get() {
                    Some(sfu) => sfu
                        .status()
                        .await
                        .into_iter()
                        .find(|s| s.stream == claims.stream),
                    None => None,
                };
                let now_active = status.as_ref().is_some_and(|s| s.publishing);
                let now_viewers = status.as_ref().map_or(0, |s| s.viewers);
                if active != Some(now_active) {
                    active = Some(now_active);
                    let name = if now_active { "active" } else { "inactive" };
                    if wants(name) {
                        out.push(event(name, "{}"));
                    }
                }
                if viewers != Some(now_viewers) {
                    viewers = Some(now_viewers);
                    if wants("viewercount") {
                        let data = serde_json::json!({ "viewercount": now_viewers }).to_string();
                        out.push(event("viewercount", &data));
                    }
                }
                if wants("layers") {
                    if let Ok(resource) = crate::backend::origin::parse(&claims.resource) {
                        let now_layers = backend
                            .adapter
                            .layers(&self.upstreams, resource.url())
                            .await;
                        if layers.as_ref() != Some(&now_layers) {
                            out.push(event("layers", &layers_data(&now_layers)));
                            layers = Some(now_layers);
                        }
                    }
                }
                // Told after the events above, so that a player learns why it ended.
                if let Ok(resource) = crate::backend::origin::parse(&claims.resource) {
                    let ended = backend
                        .adapter
                        .ended(
                            &self.upstreams,
                            backend,
                            std::slice::from_ref(resource.url()),
                        )
                        .await;
                    session_gone = ended.is_some_and(|gone| gone.first() == Some(&true));
                }
            }
            if out.is_empty() && last_sent.elapsed() >= keepalive {
                out.push(Bytes::from_static(b": keepalive\n\n"));
            }
            for bytes in out {
                if sender.send(bytes).await.is_err() {
                    return;
                }
                last_sent = tokio::time::Instant::now();
            }
            if session_gone {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn players_get_what_they_ask_for_and_nothing_unsupported() {
        assert_eq!(
            requested(b"", &supported(false, &SessionState::new())).expect("all"),
            ALL.to_vec()
        );
        assert_eq!(
            requested(
                br#"["viewercount","active","active"]"#,
                &supported(false, &SessionState::new())
            )
            .expect("two"),
            vec!["viewercount", "active"]
        );
        assert_eq!(
            requested(b"[]", &supported(true, &SessionState::new())).expect("none"),
            Vec::<&str>::new()
        );
        for refused in [
            &br#"["active"]"#[..],
            br#"["scte35"]"#,
            br#"{"events":1}"#,
            b"not json",
        ] {
            assert!(
                requested(refused, &supported(true, &SessionState::new())).is_err(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        assert!(
            requested(br#"["layers"]"#, &supported(true, &SessionState::new())).is_err(),
            "only where layers are chosen"
        );
        assert!(requested(br#"["layers"]"#, &supported(false, &SessionState::new())).is_ok());
    }

    #[test]
    fn layers_are_listed_per_media_id() {
        assert_eq!(
            layers_data(&[("1".into(), vec!["f".into(), "q".into()])]),
            r#"{"1":[{"rid":"f"},{"rid":"q"}]}"#
        );
        assert_eq!(layers_data(&[]), "{}");
    }

    #[test]
    fn a_stream_path_names_only_supported_events() {
        assert_eq!(
            parse_list(
                "active,viewercount",
                &supported(false, &SessionState::new())
            )
            .expect("ok"),
            vec!["active", "viewercount"]
        );
        assert!(parse_list("active", &supported(true, &SessionState::new())).is_err());
        assert!(parse_list("../admin", &supported(false, &SessionState::new())).is_err());
    }

    #[test]
    fn server_sent_event_blocks_are_read_by_name_and_data() {
        assert_eq!(
            parse_sse_block("event: viewercount\ndata: {\"viewercount\": 3}\n\n"),
            Some(("viewercount".into(), "{\"viewercount\": 3}".into()))
        );
        assert_eq!(
            parse_sse_block("event:layers\ndata: a\ndata: b\n\n"),
            Some(("layers".into(), "a\nb".into()))
        );
        assert_eq!(parse_sse_block(": keepalive\n\n"), None);
    }

    /// A relayed backend's multi-line data stays data: no line of it can become a field.
    #[test]
    fn every_data_line_is_framed_as_data() {
        assert_eq!(
            event("layers", "{\"0\": []}\nevent: reconnect"),
            Bytes::from("event: layers\ndata: {\"0\": []}\ndata: event: reconnect\n\n")
        );
    }
}
