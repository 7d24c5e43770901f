//! Kind `janus`: Janus through its own HTTP API, no WHIP server in between.
//!
//! A WHIP session is a Janus session with one VideoRoom handle that joins the stream's room
//! as its publisher (the room is created on demand, destroyed when its last publisher
//! leaves); a WHEP session joins it as a subscriber, and Janus's offer becomes the player's
//! 406 counter-offer. The session and handle ids are the session's resource
//! (`{url}/{session}/{handle}`), so any replica serves PATCH and DELETE.
//!
//! Janus ends a session that hears nothing for 60 s. Every replica keeps alive the Janus
//! sessions it created (the reaper's `ended` call, every 5 s), and, every 20 s, those of
//! every publisher in whipgate's rooms: a publisher joins with `display = "whipgate:{session}"`,
//! so a replica finds them with VideoRoom `list` and `listparticipants`. Losing the replica
//! that created a publisher therefore loses no stream while another replica runs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};
use url::Url;

use super::broker::{self, Retry};
use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BoxFuture, CreateRequest, Created, KeyError,
    KindKeys, Patched, Secret, SessionRequest, Upstreams,
};
use crate::error::GatewayError;
use crate::frontdoor::UpstreamIfMatch;
use crate::kind::EndpointKind;
use crate::session::SessionState;

const PLUGIN: &str = "janus.plugin.videoroom";
/// Room descriptions and publisher display names whipgate gives, to find its own.
const TAG: &str = "whipgate:";
const ROOM: &str = "room";
/// Marks a publisher's resource, so that `ended` can ask whether it still publishes.
const PUBLISHER: &str = "publisher";
/// Sweeps in a row a publisher may be missing from its room before it counts as ended.
const ABSENT_SWEEPS: u8 = 2;
/// How long an asynchronous answer (the event carrying the SDP) may take.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How often one replica keeps alive the publishers other replicas created.
const SWEEP_EVERY: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Janus {
    url: Url,
    api_secret: Option<Secret>,
    token: Option<Secret>,
    /// The VideoRoom plugin's `admin_key`, when its config makes room creation need one.
    room_admin_key: Option<Secret>,
    last_sweep: Mutex<Option<Instant>>,
    /// This replica's publishers missing from their room at the last sweep, and how often.
    absent: Mutex<HashMap<u64, u8>>,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &[
    "url",
    "api_secret_env",
    "api_secret_file",
    "token_env",
    "token_file",
    "room_admin_key_env",
    "room_admin_key_file",
];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    let url = keys.url("url")?.ok_or_else(|| {
        keys.error("kind = \"janus\" needs url (its HTTP API, e.g. http://janus:8088/janus)")
    })?;
    Ok(Arc::new(Janus {
        url,
        api_secret: keys.secret("api_secret")?,
        token: keys.secret("token")?,
        room_admin_key: keys.secret("room_admin_key")?,
        last_sweep: Mutex::new(None),
        absent: Mutex::new(HashMap::new()),
    }))
}

/// The VideoRoom room of a stream: a stable number any replica computes alike (FNV-1a of
/// the name, within JavaScript's safe integers, as Janus's own tools expect).
pub fn room_for(stream: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stream.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash & ((1 << 53) - 1)).max(1)
}

/// Janus's trickle candidates of an sdpfrag (RFC 8840): each `a=candidate` with the mid and
/// m-line index of the section it follows; `a=end-of-candidates` as `{"completed": true}`.
pub fn trickle_candidates(fragment: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut mid: Option<String> = None;
    let mut index: i64 = -1;
    for line in fragment.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            index += 1;
            mid = None;
        } else if let Some(value) = line.strip_prefix("a=mid:") {
            mid = Some(value.trim().to_owned());
        } else if let Some(candidate) = line.strip_prefix("a=") {
            if candidate.starts_with("candidate:") {
                out.push(json!({
                    "sdpMid": mid.clone().unwrap_or_else(|| "0".into()),
                    "sdpMLineIndex": index.max(0),
                    "candidate": candidate,
                }));
            } else if candidate == "end-of-candidates" {
                out.push(json!({ "completed": true }));
            }
        }
    }
    out
}

/// The session and handle of a resource `{url}/{session}/{handle}`.
fn ids(resource: &Url) -> Result<(u64, u64), GatewayError> {
    let mut segments = resource
        .path_segments()
        .ok_or_else(|| GatewayError::NotFound("session not found".into()))?
        .rev();
    let handle = segments.next().and_then(|s| s.parse().ok());
    let session = segments.next().and_then(|s| s.parse().ok());
    match (session, handle) {
        (Some(session), Some(handle)) => Ok((session, handle)),
        _ => Err(GatewayError::NotFound("session not found".into())),
    }
}

/// What a VideoRoom request answered, or its error (`error_code`, `error`).
fn plugin_data(reply: &Value) -> &Value {
    &reply["plugindata"]["data"]
}

fn plugin_error(data: &Value) -> Option<(i64, String)> {
    let code = data["error_code"].as_i64()?;
    let reason: String = data["error"]
        .as_str()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(160)
        .collect();
    Some((code, reason))
}

impl Janus {
    fn endpoint(&self, path: &[u64]) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            for id in path {
                segments.push(&id.to_string());
            }
        }
        url
    }

    fn envelope(&self, verb: &str, transaction: &str, mut extra: Value) -> Value {
        let map = extra.as_object_mut();
        let mut body = json!({ "janus": verb, "transaction": transaction });
        if let (Some(object), Some(extra)) = (body.as_object_mut(), map) {
            object.append(extra);
            if let Some(secret) = &self.api_secret {
                object.insert("apisecret".into(), secret.expose().into());
            }
            if let Some(token) = &self.token {
                object.insert("token".into(), token.expose().into());
            }
        }
        body
    }

    /// One Janus API request; a Janus error reply becomes the matching gateway error.
    async fn request(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        operation: &'static str,
        path: &[u64],
        verb: &str,
        extra: Value,
    ) -> Result<(Value, String), AttemptError> {
        let transaction = transaction();
        let body = self.envelope(verb, &transaction, extra);
        let bytes = serde_json::to_vec(&body)
            .map_err(|_| AttemptError::fatal(GatewayError::Internal("bad Janus request".into())))?;
        let response = broker::call(
            cx,
            backend,
            None,
            operation,
            Method::POST,
            self.endpoint(path),
            broker::json_headers(None),
            Bytes::from(bytes),
            Retry::Never,
        )
        .await?;
        let reply: Value = broker::json(backend, operation, &response)?;
        check_reply(backend, operation, &reply)?;
        Ok((reply, transaction))
    }

    /// Long-polls `session` until the event answering `transaction` arrives.
    async fn event(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        operation: &'static str,
        session: u64,
        transaction: &str,
    ) -> Result<Value, AttemptError> {
        let deadline = Instant::now() + EVENT_WAIT;
        while Instant::now() < deadline {
            let mut url = self.endpoint(&[session]);
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("maxev", "1");
                query.append_pair("rid", &transaction_number().to_string());
                if let Some(secret) = &self.api_secret {
                    query.append_pair("apisecret", secret.expose());
                }
                if let Some(token) = &self.token {
                    query.append_pair("token", token.expose());
                }
            }
            let poll = broker::call(
                cx,
                backend,
                None,
                operation,
                Method::GET,
                url,
                broker::json_headers(None),
                Bytes::new(),
                Retry::Never,
            );
            // Janus holds a poll up to 30 s: the wait is bounded here, whatever the client's.
            let Ok(response) = tokio::time::timeout_at(deadline.into(), poll).await else {
                break;
            };
            let response = response?;
            let reply: Value = broker::json(backend, operation, &response)?;
            check_reply(backend, operation, &reply)?;
            if reply["transaction"].as_str() == Some(transaction) {
                return Ok(reply);
            }
        }
        Err(AttemptError::retryable(GatewayError::GatewayTimeout(
            format!(
                "backend {}: Janus did not answer {operation} in time",
                backend.id
            ),
        )))
    }

    /// A Janus session with a VideoRoom handle.
    async fn open(&self, cx: &Upstreams, backend: &BackendDef) -> Result<(u64, u64), AttemptError> {
        let (created, _) = self
            .request(cx, backend, "create", &[], "create", json!({}))
            .await?;
        let session = id_of(backend, &created, "create")?;
        let attached = self
            .request(
                cx,
                backend,
                "attach",
                &[session],
                "attach",
                json!({ "plugin": PLUGIN, "opaque_id": format!("{TAG}{session}") }),
            )
            .await;
        match attached.and_then(|(reply, _)| id_of(backend, &reply, "attach")) {
            Ok(handle) => Ok((session, handle)),
            Err(error) => {
                self.destroy(cx, backend, session).await;
                Err(error)
            }
        }
    }

    async fn destroy(&self, cx: &Upstreams, backend: &BackendDef, session: u64) {
        if let Err(error) = self
            .request(cx, backend, "destroy", &[session], "destroy", json!({}))
            .await
        {
            if !matches!(error.error, GatewayError::NotFound(_)) {
                broker::log_cleanup_failure(backend, "destroy", &error.error);
            }
        }
    }

    /// A VideoRoom request answered at once (create, list, listparticipants, destroy).
    async fn room_request(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        operation: &'static str,
        (session, handle): (u64, u64),
        body: Value,
    ) -> Result<Value, AttemptError> {
        let (reply, _) = self
            .request(
                cx,
                backend,
                operation,
                &[session, handle],
                "message",
                json!({ "body": body }),
            )
            .await?;
        Ok(plugin_data(&reply).clone())
    }

    /// VideoRoom `listparticipants` of `room` (its data, or its error inside it).
    async fn participants(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        ids: (u64, u64),
        room: u64,
    ) -> Result<Value, AttemptError> {
        self.room_request(
            cx,
            backend,
            "listparticipants",
            ids,
            json!({ "request": "listparticipants", "room": room }),
        )
        .await
    }

    /// A VideoRoom request with SDP, answered by an event: the event's data and JSEP.
    async fn room_exchange(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        operation: &'static str,
        (session, handle): (u64, u64),
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Value), AttemptError> {
        let mut extra = json!({ "body": body });
        if let (Some(jsep), Some(object)) = (jsep, extra.as_object_mut()) {
            object.insert("jsep".into(), jsep);
        }
        let (_, transaction) = self
            .request(cx, backend, operation, &[session, handle], "message", extra)
            .await?;
        let event = self
            .event(cx, backend, operation, session, &transaction)
            .await?;
        let data = plugin_data(&event).clone();
        if let Some((code, reason)) = plugin_error(&data) {
            return Err(videoroom_error(backend, code, &reason));
        }
        Ok((data, event["jsep"].clone()))
    }

    async fn publish(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        ids: (u64, u64),
        stream: &str,
        offer: &str,
    ) -> Result<(String, u64), AttemptError> {
        let room = room_for(stream);
        match self
            .try_publish(cx, backend, ids, stream, room, offer)
            .await
        {
            // The room's last publisher left (and destroyed it) between create and join.
            Err(AttemptError {
                error: GatewayError::NotLive { .. },
                ..
            }) => {
                self.try_publish(cx, backend, ids, stream, room, offer)
                    .await
            }
            other => other,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_publish(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        ids: (u64, u64),
        stream: &str,
        room: u64,
        offer: &str,
    ) -> Result<(String, u64), AttemptError> {
        let mut create = json!({
            "request": "create", "room": room, "description": format!("{TAG}{stream}"),
            "publishers": 1, "audiocodec": "opus", "videocodec": "vp8,h264,vp9,av1",
            "permanent": false,
        });
        if let (Some(key), Some(object)) = (&self.room_admin_key, create.as_object_mut()) {
            object.insert("admin_key".into(), key.expose().into());
        }
        let created = self
            .room_request(cx, backend, "create room", ids, create)
            .await?;
        // 427: the room exists (another publisher's, or one left over).
        if let Some((code, reason)) = plugin_error(&created).filter(|(code, _)| *code != 427) {
            return Err(videoroom_error(backend, code, &reason));
        }
        let (_, jsep) = self
            .room_exchange(
                cx,
                backend,
                "publish",
                ids,
                json!({
                    "request": "joinandconfigure", "ptype": "publisher", "room": room,
                    "display": format!("{TAG}{}", ids.0),
                }),
                Some(json!({ "type": "offer", "sdp": offer })),
            )
            .await?;
        let answer = jsep["sdp"].as_str().ok_or_else(|| {
            AttemptError::fatal(GatewayError::BadGateway(format!(
                "backend {}: Janus joined the publisher without an answer",
                backend.id
            )))
        })?;
        Ok((answer.to_owned(), room))
    }

    async fn subscribe(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        ids: (u64, u64),
        stream: &str,
    ) -> Result<(String, u64), AttemptError> {
        let room = room_for(stream);
        let not_live = || {
            AttemptError::fatal(GatewayError::NotLive {
                reason: "no publisher is live on this stream".into(),
                retry_after: Duration::ZERO,
            })
        };
        let participants = self.participants(cx, backend, ids, room).await?;
        match plugin_error(&participants) {
            Some((426, _)) => return Err(not_live()),
            Some((code, reason)) => return Err(videoroom_error(backend, code, &reason)),
            None => {}
        }
        let feed = participants["participants"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["publisher"].as_bool() == Some(true)))
            .and_then(|p| p["id"].as_u64())
            .ok_or_else(not_live)?;
        let (_, jsep) = self
            .room_exchange(
                cx,
                backend,
                "subscribe",
                ids,
                json!({
                    "request": "join", "ptype": "subscriber", "room": room,
                    "streams": [{ "feed": feed }],
                }),
                None,
            )
            .await?;
        let offer = jsep["sdp"].as_str().filter(|_| jsep["type"] == "offer");
        let offer = offer.ok_or_else(|| {
            AttemptError::fatal(GatewayError::BadGateway(format!(
                "backend {}: Janus made no offer for the subscriber",
                backend.id
            )))
        })?;
        Ok((offer.to_owned(), room))
    }

    async fn create_session(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        request: CreateRequest<'_>,
    ) -> Result<Created, AttemptError> {
        let ids = self.open(cx, backend).await?;
        let stream = request.stream.as_str();
        // Bounded well inside the client's request timeout: a create dropped half-way would
        // leave its Janus session behind.
        let work = async {
            match request.kind {
                EndpointKind::Whip => {
                    let offer = std::str::from_utf8(&request.offer).map_err(|_| {
                        AttemptError::fatal(GatewayError::BadRequest(
                            "the offer is not UTF-8".into(),
                        ))
                    });
                    match offer {
                        Ok(offer) => self.publish(cx, backend, ids, stream, offer).await,
                        Err(error) => Err(error),
                    }
                }
                EndpointKind::Whep => self.subscribe(cx, backend, ids, stream).await,
            }
        };
        let result = match tokio::time::timeout(EVENT_WAIT, work).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::retryable(GatewayError::GatewayTimeout(
                format!(
                    "backend {}: Janus did not set up the session in time",
                    backend.id
                ),
            ))),
        };
        let (sdp, room) = match result {
            Ok(done) => done,
            Err(error) => {
                self.destroy(cx, backend, ids.0).await;
                return Err(error);
            }
        };
        let mut state = SessionState::new();
        state.insert(ROOM.into(), room.to_string());
        Ok(Created {
            answer: Bytes::from(sdp),
            // Janus's subscribers only take its offer (its maintainer said they will stay so).
            counter_offer: request.kind == EndpointKind::Whep,
            resource: {
                let mut resource = self.endpoint(&[ids.0, ids.1]);
                if request.kind == EndpointKind::Whip {
                    resource.set_fragment(Some(PUBLISHER));
                }
                resource.into()
            },
            etag: None,
            ice_servers: Vec::new(),
            state,
        })
    }

    async fn end(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        session: &SessionRequest<'_>,
    ) -> Result<(), GatewayError> {
        let ids = ids(session.resource.url())?;
        if session.claims.kind == EndpointKind::Whip {
            // `leave` is answered by an event: wait for it, so that the room no longer lists
            // this publisher when it is checked for emptiness.
            let left = self
                .room_exchange(
                    cx,
                    backend,
                    "leave",
                    ids,
                    json!({ "request": "leave" }),
                    None,
                )
                .await;
            if let Err(AttemptError {
                error: error @ GatewayError::NotFound(_),
                ..
            }) = left
            {
                return Err(error);
            }
            if let Some(room) = session
                .claims
                .state
                .get(ROOM)
                .and_then(|r| r.parse::<u64>().ok())
            {
                self.destroy_room_if_empty(cx, backend, ids, room).await;
            }
        }
        self.request(cx, backend, "destroy", &[ids.0], "destroy", json!({}))
            .await
            .map(|_| ())
            .map_err(|e| e.error)
    }

    async fn destroy_room_if_empty(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        ids: (u64, u64),
        room: u64,
    ) {
        let left = self.participants(cx, backend, ids, room).await;
        let empty = left.as_ref().is_ok_and(|data| {
            data["participants"]
                .as_array()
                .is_some_and(|all| all.iter().all(|p| p["publisher"] != true))
        });
        if empty {
            let _ = self
                .room_request(
                    cx,
                    backend,
                    "destroy room",
                    ids,
                    json!({ "request": "destroy", "room": room }),
                )
                .await;
        }
    }

    /// Keeps alive the publishers of whipgate's rooms, whichever replica created them.
    /// Returns the Janus sessions seen publishing, when it ran (at most every 20 s).
    async fn sweep(&self, cx: &Upstreams, backend: &BackendDef) -> Option<HashSet<u64>> {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let ids = self.open(cx, backend).await.ok()?;
        let mut publishing = HashSet::new();
        let rooms = self
            .room_request(cx, backend, "list", ids, json!({ "request": "list" }))
            .await;
        let Some(rooms) = rooms.ok().and_then(|data| data["list"].as_array().cloned()) else {
            self.destroy(cx, backend, ids.0).await;
            return None;
        };
        let rooms: Vec<u64> = rooms
            .iter()
            .filter(|room| {
                room["description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(TAG))
            })
            .filter_map(|room| room["room"].as_u64())
            .collect();
        for room in rooms {
            let Ok(data) = self.participants(cx, backend, ids, room).await else {
                self.destroy(cx, backend, ids.0).await;
                return None;
            };
            // Only those still publishing: a publisher whose client vanished stays a
            // participant after Janus hung up its connection, and must be let go.
            let sessions: Vec<u64> = data["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["publisher"] == true)
                .filter_map(|p| p["display"].as_str()?.strip_prefix(TAG)?.parse().ok())
                .collect();
            publishing.extend(sessions.iter().copied());
            for session in sessions {
                let _ = self
                    .request(cx, backend, "keepalive", &[session], "keepalive", json!({}))
                    .await;
            }
        }
        self.destroy(cx, backend, ids.0).await;
        Some(publishing)
    }
}

fn transaction_number() -> u64 {
    rand::random::<u64>() >> 11
}

fn transaction() -> String {
    format!("wg-{:x}", rand::random::<u64>())
}

fn id_of(backend: &BackendDef, reply: &Value, operation: &str) -> Result<u64, AttemptError> {
    reply["data"]["id"].as_u64().ok_or_else(|| {
        AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {}: Janus answered {operation} without an id",
            backend.id
        )))
    })
}

/// Janus answers errors with HTTP 200 and `{"janus":"error","error":{code,reason}}`.
fn check_reply(backend: &BackendDef, operation: &str, reply: &Value) -> Result<(), AttemptError> {
    if reply["janus"] != "error" {
        return Ok(());
    }
    let code = reply["error"]["code"].as_i64().unwrap_or(0);
    let id = &backend.id;
    Err(match code {
        458 | 459 => AttemptError::fatal(GatewayError::NotFound("session not found".into())),
        403 => AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {id}: Janus refused whipgate's api_secret or token ({operation})"
        ))),
        465 => AttemptError::fatal(GatewayError::Unprocessable(format!(
            "backend {id}: Janus cannot use this SDP"
        ))),
        472 => AttemptError::retryable(GatewayError::Unavailable {
            reason: format!("backend {id}: Janus takes no new sessions"),
            retry_after: Duration::ZERO,
        }),
        _ => AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {id}: Janus error {code} on {operation}"
        ))),
    })
}

fn videoroom_error(backend: &BackendDef, code: i64, reason: &str) -> AttemptError {
    let id = &backend.id;
    match code {
        // Publishers full, already published: this stream has its publisher.
        432 | 434 | 436 => AttemptError::fatal(GatewayError::Conflict(format!(
            "backend {id}: the stream already has a publisher ({reason})"
        ))),
        426 | 428 => AttemptError::fatal(GatewayError::NotLive {
            reason: "no publisher is live on this stream".into(),
            retry_after: Duration::ZERO,
        }),
        431 | 437 => AttemptError::fatal(GatewayError::Unprocessable(format!(
            "backend {id}: Janus refused the SDP ({reason})"
        ))),
        _ => AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {id}: VideoRoom error {code} ({reason})"
        ))),
    }
}

impl Adapter for Janus {
    fn kind(&self) -> &'static str {
        "janus"
    }

    fn serves(&self, _endpoint: EndpointKind) -> bool {
        true
    }

    fn makes_offers(&self) -> bool {
        true
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        AllowedHost::of(&self.url).into_iter().collect()
    }

    fn health_url(&self) -> Option<Url> {
        let mut url = self.url.clone();
        url.path_segments_mut().ok()?.pop_if_empty().push("info");
        Some(url)
    }

    fn describe(&self) -> String {
        format!(
            "janus: VideoRoom through its HTTP API at {}{}",
            self.url.origin().ascii_serialization(),
            self.url.path()
        )
    }

    fn reports_ended(&self) -> bool {
        true
    }

    /// Keeps this replica's Janus sessions alive (Janus ends them after 60 s without a
    /// request); those Janus no longer knows have ended.
    fn ended<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        resources: &'a [Url],
    ) -> BoxFuture<'a, Option<Vec<bool>>> {
        Box::pin(async move {
            // This replica's own sessions first: they must not wait behind the sweep.
            let mut gone = Vec::with_capacity(resources.len());
            for resource in resources {
                let ended = match ids(resource) {
                    Ok((session, _)) => matches!(
                        self.request(cx, backend, "keepalive", &[session], "keepalive", json!({}))
                            .await,
                        Err(AttemptError {
                            error: GatewayError::NotFound(_),
                            ..
                        })
                    ),
                    Err(_) => false,
                };
                gone.push(ended);
            }
            if let Some(publishing) = self.sweep(cx, backend).await {
                let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
                let mut seen = HashMap::new();
                for (resource, ended) in resources.iter().zip(gone.iter_mut()) {
                    let Ok((session, _)) = ids(resource) else {
                        continue;
                    };
                    if *ended || resource.fragment() != Some(PUBLISHER) {
                        continue;
                    }
                    if publishing.contains(&session) {
                        continue;
                    }
                    let count = absent.get(&session).copied().unwrap_or(0) + 1;
                    if count >= ABSENT_SWEEPS {
                        *ended = true;
                    } else {
                        seen.insert(session, count);
                    }
                }
                // Only this sweep's absentees are remembered: bounded by the live sessions.
                *absent = seen;
            }
            for (resource, ended) in resources.iter().zip(&gone) {
                if *ended && resource.fragment() == Some(PUBLISHER) {
                    if let Ok((session, _)) = ids(resource) {
                        self.destroy(cx, backend, session).await;
                    }
                }
            }
            Some(gone)
        })
    }

    fn create<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        request: CreateRequest<'a>,
    ) -> BoxFuture<'a, Result<Created, AttemptError>> {
        Box::pin(self.create_session(cx, backend, request))
    }

    fn patch<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
        body: Bytes,
        if_match: &'a UpstreamIfMatch,
    ) -> BoxFuture<'a, Result<Patched, GatewayError>> {
        Box::pin(async move {
            let fragment = String::from_utf8_lossy(&body);
            // RFC 9725: an ICE restart is the PATCH with `If-Match: "*"`; a trickle fragment
            // carries the ICE credentials too (RFC 8840), so they say nothing by themselves.
            if *if_match == UpstreamIfMatch::Any {
                return Err(GatewayError::Unprocessable(
                    "kind janus does not support ICE restarts yet; start a new session".into(),
                ));
            }
            let (janus_session, handle) = ids(session.resource.url())?;
            let candidates = trickle_candidates(&fragment);
            if candidates.is_empty() {
                return Ok(Patched::trickled());
            }
            self.request(
                cx,
                backend,
                "trickle",
                &[janus_session, handle],
                "trickle",
                json!({ "candidates": candidates }),
            )
            .await
            .map_err(|e| e.error)?;
            Ok(Patched::trickled())
        })
    }

    fn answer<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
        answer: Bytes,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let ids = ids(session.resource.url())?;
            let sdp = String::from_utf8_lossy(&answer).into_owned();
            self.room_exchange(
                cx,
                backend,
                "start",
                ids,
                json!({ "request": "start" }),
                Some(json!({ "type": "answer", "sdp": sdp })),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.error)
        })
    }

    fn delete<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move { self.end(cx, backend, &session).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_stable_numbers_a_javascript_client_can_hold() {
        assert_eq!(room_for("cam"), room_for("cam"));
        assert_ne!(room_for("cam"), room_for("cam2"));
        for name in ["", "a", "show-1", &"x".repeat(200)] {
            let room = room_for(name);
            assert!((1..(1 << 53)).contains(&room), "{name}: {room}");
        }
    }

    #[test]
    fn an_sdpfrag_becomes_janus_trickle_candidates() {
        let fragment = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=candidate:1 1 UDP 2130706431 198.51.100.7 3478 typ host\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
            a=candidate:2 1 UDP 2130706431 198.51.100.7 3479 typ host\r\na=end-of-candidates\r\n";
        let got = trickle_candidates(fragment);
        assert_eq!(
            got,
            vec![
                json!({"sdpMid": "0", "sdpMLineIndex": 0, "candidate": "candidate:1 1 UDP 2130706431 198.51.100.7 3478 typ host"}),
                json!({"sdpMid": "1", "sdpMLineIndex": 1, "candidate": "candidate:2 1 UDP 2130706431 198.51.100.7 3479 typ host"}),
                json!({"completed": true}),
            ]
        );
        assert!(trickle_candidates("a=ice-ufrag:x\r\n").is_empty());
    }

    #[test]
    fn resources_carry_session_and_handle() {
        let url = Url::parse("http://janus:8088/janus/123/456").expect("url");
        assert_eq!(ids(&url).expect("ids"), (123, 456));
        assert!(ids(&Url::parse("http://janus:8088/janus/x/1").expect("url")).is_err());
    }
}
