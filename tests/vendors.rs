//! Vendor kinds against in-process contract fakes: each fake checks what its vendor checks
//! (the JWT's signature and claims, the SigV4 header, the bearer, the webhook signature) and
//! answers in the vendor's shapes. tests/e2e/vendors.sh runs fuller fakes with real peers.

mod support;

use std::sync::{Arc, Mutex};

use support::{
    corpus, gateway, post_offer, send, talk_answer, talk_offer, FakeBackend, Reply, Seen,
};

const LIVEKIT_SECRET: &str = "livekit-secret-0123456789abcdef0123";

#[derive(Debug, serde::Deserialize)]
struct Grant {
    #[serde(rename = "roomJoin")]
    room_join: Option<bool>,
    room: Option<String>,
    #[serde(rename = "canPublish")]
    can_publish: Option<bool>,
    #[serde(rename = "canSubscribe")]
    can_subscribe: Option<bool>,
}

#[derive(Debug, serde::Deserialize)]
struct LivekitClaims {
    iss: String,
    sub: Option<String>,
    exp: u64,
    video: Grant,
}

/// What LiveKit's auth middleware does: `Bearer ` exactly, HS256 with the key's secret,
/// `exp` required.
fn livekit_claims(seen: &Seen) -> Option<LivekitClaims> {
    let token = seen.header("authorization")?.strip_prefix("Bearer ")?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<LivekitClaims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(LIVEKIT_SECRET.as_bytes()),
        &validation,
    )
    .ok()
    .map(|data| data.claims)
}

#[tokio::test]
async fn livekit_signs_a_participant_token_per_session_and_whep_falls_to_the_next_backend() {
    let identities: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen_identities = identities.clone();
    let livekit = FakeBackend::start(move |seen: &Seen| {
        let Some(claims) = livekit_claims(seen) else {
            return Reply::new(401)
                .header("content-type", "text/plain")
                .body("invalid authorization header. Must start with Bearer ");
        };
        let grant_ok = claims.iss == "APIxxxx"
            && claims.video.room_join == Some(true)
            && claims.video.room.as_deref() == Some("lk-cam")
            && claims.video.can_publish == Some(true)
            && claims.video.can_subscribe == Some(false)
            && claims.exp > 1_700_000_000;
        let Some(identity) = claims.sub.filter(|_| grant_ok) else {
            return Reply::new(401).body("{\"error\":\"bad grant\"}");
        };
        seen_identities.lock().expect("lock").push(identity);
        match (seen.method.as_str(), seen.path.as_str()) {
            ("POST", "/whip/v1") if seen.header("content-type") == Some("application/sdp") => {
                Reply::new(201)
                    .header("location", "/whip/v1/PA_1")
                    .header("etag", "ufrag1")
                    .body(corpus("janus-whip-answer.sdp"))
            }
            ("PATCH", "/whip/v1/PA_1") if seen.header("if-match").is_none() => Reply::new(428),
            ("PATCH", "/whip/v1/PA_1") => Reply::new(204),
            ("DELETE", "/whip/v1/PA_1") => Reply::new(200),
            _ => Reply::new(400),
        }
    })
    .await;
    let origin = FakeBackend::start(support::whip_server()).await;
    let gw = gateway(&format!(
        r#"
[[backend]]
id = "lk"
kind = "livekit"
url = "{}"
api_key = "APIxxxx"
api_secret_env = "LIVEKIT_API_SECRET"

[[backend]]
id = "origin"
kind = "whip"
whep_url = "{}"

[[route]]
backends = ["lk", "origin"]
"#,
        livekit.url(""),
        origin.url("/whep/{stream}")
    ))
    .await;
    let created = post_offer(gw.local_addr, "/whip/lk-cam", &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let session = created.location_path();
    let patched = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[("content-type", "application/trickle-ice-sdpfrag")],
        "a=ice-ufrag:x\r\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyy\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n",
    )
    .await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    let deleted = send(gw.local_addr, "DELETE", &session, &[], "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let identities = identities.lock().expect("lock").clone();
    assert_eq!(identities.len(), 3, "{identities:?}");
    assert!(identities[0].starts_with("whipgate-"), "{identities:?}");
    assert!(
        identities.iter().all(|i| i == &identities[0]),
        "PATCH and DELETE must use the POST's identity: {identities:?}"
    );

    let viewer = post_offer(gw.local_addr, "/whep/lk-cam", &[]).await;
    assert_eq!(viewer.status, 201, "{}", viewer.body);
    assert_eq!(livekit.count(), 3, "no WHEP request may reach LiveKit");
    assert_eq!(origin.count(), 1);
    for seen in livekit.seen().iter().chain(origin.seen().iter()) {
        for value in seen.headers.values() {
            let value = value.to_str().unwrap_or("");
            assert!(!value.contains(LIVEKIT_SECRET), "secret sent as a header");
        }
    }
}

#[tokio::test]
async fn webhook_events_are_signed_and_its_answer_routes_the_session() {
    let events: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let media = FakeBackend::start(|seen: &Seen| {
        if seen.header("authorization") != Some("Bearer per-stream-bearer") {
            return Reply::new(403);
        }
        support::whip_server()(seen)
    })
    .await;
    let media_url = media.url("/whip/booked");
    let log = events.clone();
    let hook = FakeBackend::start(move |seen: &Seen| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"webhook-secret-example");
        let expected: String = ring::hmac::sign(&key, &seen.body)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if seen.header("x-whipgate-signature") != Some(&format!("sha256={expected}")) {
            return Reply::new(401);
        }
        let event: serde_json::Value = serde_json::from_slice(&seen.body).expect("json");
        log.lock().expect("lock").push(event.clone());
        let answer = match (event["event"].as_str(), event["stream"].as_str()) {
            (Some("opening"), Some("booked")) => serde_json::json!({
                "allowed": true, "url": media_url, "bearer": "per-stream-bearer"
            }),
            (Some("opening"), _) => {
                serde_json::json!({ "allowed": false, "reason": "stream is not booked" })
            }
            _ => serde_json::json!({}),
        };
        Reply::new(200)
            .header("content-type", "application/json")
            .body(answer.to_string())
    })
    .await;
    let gw = gateway(&format!(
        r#"
[[backend]]
id = "hook"
kind = "webhook"
url = "{}"
secret_env = "WEBHOOK_SECRET"

[[route]]
id = "booked"
backends = ["hook"]
"#,
        hook.url("/whipgate")
    ))
    .await;
    let refused = post_offer(gw.local_addr, "/whip/other", &[]).await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains("stream is not booked"),
        "{}",
        refused.body
    );
    assert_eq!(media.count(), 0);

    let created = post_offer(gw.local_addr, "/whip/booked", &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let deleted = send(gw.local_addr, "DELETE", &created.location_path(), &[], "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        media.count(),
        2,
        "POST and DELETE with the webhook's bearer"
    );

    let events = events.lock().expect("lock").clone();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["opening", "opening", "closing"], "{events:?}");
    let closing = &events[2];
    assert_eq!(closing["stream"], "booked");
    assert_eq!(closing["route"], "booked");
    assert_eq!(closing["kind"], "whip");
    assert!(closing["request_id"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
}

#[tokio::test]
async fn cloudflare_reuses_one_live_input_and_fails_over_on_its_api_429() {
    let api_calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let media = FakeBackend::start(support::whip_server()).await;
    let publish = media.url("/SECRETPATH/webRTC/publish");
    let play = media.url("/UID1/webRTC/play");
    let calls = api_calls.clone();
    let limited = Arc::new(Mutex::new(false));
    let limited_now = limited.clone();
    let api = FakeBackend::start(move |seen: &Seen| {
        if seen.header("authorization") != Some("Bearer cf-api-token-example") {
            return Reply::new(403).body(
                r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}]}"#,
            );
        }
        if *limited_now.lock().expect("lock") {
            return Reply::new(429).header("retry-after", "300");
        }
        calls
            .lock()
            .expect("lock")
            .push(format!("{} {}", seen.method, seen.path));
        let input = serde_json::json!({
            "uid": "UID1", "meta": { "name": "whipgate:cf-cam" }, "created": "2026-12-01T10:00:00Z",
            "webRTC": { "url": publish }, "webRTCPlayback": { "url": play },
        });
        let result = match seen.method.as_str() {
            "GET" if seen.path.ends_with("/live_inputs") => {
                serde_json::json!({ "liveInputs": [], "range": 0, "total": 0 })
            }
            _ => input,
        };
        Reply::new(200)
            .header("content-type", "application/json")
            .body(
            serde_json::json!({ "success": true, "errors": [], "messages": [], "result": result })
                .to_string(),
        )
    })
    .await;
    let fallback = FakeBackend::start(support::whip_server()).await;
    let gw = gateway(&format!(
        r#"
[[backend]]
id = "cf"
kind = "cloudflare"
account_id = "023e105f4ecef8ad9ca31a8372d0c353"
api_token_env = "CLOUDFLARE_API_TOKEN"
api_url = "{}"

[[backend]]
id = "fallback"
kind = "whip"
whip_url = "{}"

[[route]]
backends = ["cf", "fallback"]
"#,
        api.url("/client/v4"),
        fallback.url("/whip/{stream}")
    ))
    .await;
    for _ in 0..2 {
        let created = post_offer(gw.local_addr, "/whip/cf-cam", &[]).await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert!(
            !created.body.contains("SECRETPATH")
                && !created
                    .header("location")
                    .unwrap_or("")
                    .contains("SECRETPATH")
        );
        let deleted = send(gw.local_addr, "DELETE", &created.location_path(), &[], "").await;
        assert_eq!(deleted.status, 200);
    }
    let calls = api_calls.lock().expect("lock").clone();
    assert_eq!(
        calls,
        [
            "GET /client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/stream/live_inputs",
            "POST /client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/stream/live_inputs",
            // Settling: is another replica's input older than the one just made?
            "GET /client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/stream/live_inputs",
        ],
        "one lookup, one create and one settling lookup for two publishes of the stream"
    );
    assert_eq!(media.count(), 4);

    *limited.lock().expect("lock") = true;
    let failed_over = post_offer(gw.local_addr, "/whip/cf-other", &[]).await;
    assert_eq!(failed_over.status, 201, "{}", failed_over.body);
    assert_eq!(
        fallback.count(),
        1,
        "the API's 429 fails over to the next backend"
    );
    let metrics = send(gw.local_addr, "GET", "/metrics", &[], "").await.body;
    let line = "whipgate_vendor_api_calls_total{backend=\"cf\",operation=\"list_live_inputs\",result=\"429\"}";
    assert!(metrics.contains(line), "missing {line}");
}

#[tokio::test]
async fn millicast_errors_are_mapped_and_ivs_needs_h264_before_any_call() {
    let millicast = FakeBackend::start(|seen: &Seen| match seen.path.as_str() {
        p if p.starts_with("/api/whep/k9Mwad/") => {
            if seen.header("authorization") != Some("Bearer mc-subscribe-token") {
                return Reply::new(401)
                    .header("content-type", "text/plain")
                    .body("Unauthorized: bad token");
            }
            Reply::new(409)
                .header("content-type", "text/plain")
                .body("Stream not found")
        }
        _ => Reply::new(401)
            .header("content-type", "text/plain")
            .body("Unauthorized: token expired"),
    })
    .await;
    let ivs_api = FakeBackend::start(|_: &Seen| Reply::new(500)).await;
    let gw = gateway(&format!(
        r#"
[[backend]]
id = "dolby"
kind = "millicast"
account_id = "k9Mwad"
publish_token_env = "MILLICAST_PUBLISH_TOKEN"
subscribe_token_env = "MILLICAST_SUBSCRIBE_TOKEN"
url = "{}"

[[backend]]
id = "ivs"
kind = "ivs"
region = "us-east-1"
stage_arn = "arn:aws:ivs:us-east-1:123456789012:stage/abcdABCDefgh"
access_key_id_env = "AWS_ACCESS_KEY_ID"
secret_access_key_env = "AWS_SECRET_ACCESS_KEY"
api_url = "{}"
whip_url = "{}"

[[route]]
match = {{ stream = "ivs-*" }}
backends = ["ivs"]

[[route]]
backends = ["dolby"]
"#,
        millicast.url(""),
        ivs_api.url(""),
        ivs_api.url("/")
    ))
    .await;
    let viewer = post_offer(gw.local_addr, "/whep/show", &[]).await;
    assert_eq!(viewer.status, 409, "{}", viewer.body);
    assert!(viewer.header("retry-after").is_some());
    let publisher = post_offer(gw.local_addr, "/whip/show", &[]).await;
    assert_eq!(publisher.status, 502, "{}", publisher.body);
    assert!(!publisher.body.contains("mc-publish-token"));

    // GStreamer's VP8-only offer: IVS would refuse it, so whipgate does first.
    let refused = send(
        gw.local_addr,
        "POST",
        "/whip/ivs-cam",
        &[("content-type", "application/sdp")],
        corpus("gstreamer-whip-offer.sdp"),
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("H.264"), "{}", refused.body);
    assert_eq!(
        ivs_api.count(),
        0,
        "no AWS call for an offer IVS cannot take"
    );
}

/// Two replicas that both found no input both create one: the one that finds an older input
/// of the stream after creating its own uses that one, and deletes its own.
#[tokio::test]
async fn cloudflare_replicas_settle_on_the_oldest_input() {
    let media = FakeBackend::start(support::whip_server()).await;
    let (old_publish, new_publish) = (
        media.url("/OLD/webRTC/publish"),
        media.url("/NEW/webRTC/publish"),
    );
    let play = media.url("/X/webRTC/play");
    let created = Arc::new(Mutex::new(false));
    let deleted: Arc<Mutex<Vec<String>>> = Arc::default();
    let (created_now, deleted_log) = (created.clone(), deleted.clone());
    let api = FakeBackend::start(move |seen: &Seen| {
        let input = |uid: &str, publish: &str, at: &str| {
            serde_json::json!({
                "uid": uid, "meta": { "name": "whipgate:cam" }, "created": at,
                "webRTC": { "url": publish }, "webRTCPlayback": { "url": play },
            })
        };
        let result = match (
            seen.method.as_str(),
            seen.path.rsplit('/').next().unwrap_or(""),
        ) {
            ("GET", "live_inputs") if *created_now.lock().expect("lock") => serde_json::json!({
                "liveInputs": [
                    input("NEW", &new_publish, "2026-12-03T10:00:02Z"),
                    input("OLD", &old_publish, "2026-12-03T10:00:01Z"),
                ]
            }),
            ("GET", "live_inputs") => serde_json::json!({ "liveInputs": [] }),
            ("POST", _) => {
                *created_now.lock().expect("lock") = true;
                input("NEW", &new_publish, "2026-12-03T10:00:02Z")
            }
            ("GET", "OLD") => input("OLD", &old_publish, "2026-12-03T10:00:01Z"),
            ("DELETE", uid) => {
                deleted_log.lock().expect("lock").push(uid.to_owned());
                serde_json::json!(null)
            }
            _ => return Reply::new(404),
        };
        Reply::new(200).body(
            serde_json::json!({ "success": true, "errors": [], "messages": [], "result": result })
                .to_string(),
        )
    })
    .await;
    let gw = gateway(&format!(
        "[[backend]]\nid = \"cf\"\nkind = \"cloudflare\"\naccount_id = \"acct\"\n\
         api_token_env = \"CLOUDFLARE_API_TOKEN\"\napi_url = \"{}\"\n[[route]]\nbackends = [\"cf\"]\n",
        api.url("/client/v4")
    ))
    .await;
    let published = post_offer(gw.local_addr, "/whip/cam", &[]).await;
    assert_eq!(published.status, 201, "{}", published.body);
    let posts: Vec<String> = media
        .seen()
        .iter()
        .filter(|s| s.method == "POST")
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        posts,
        ["/OLD/webRTC/publish"],
        "the oldest input serves the stream"
    );
    assert_eq!(
        *deleted.lock().expect("lock"),
        ["NEW"],
        "our own input is deleted"
    );
}

/// What the OpenAI fake does besides its happy path: a refusal of the next mint, calls
/// arriving late (to see an expired secret refused), a call already gone.
#[derive(Default)]
struct OpenAiFake {
    log: Vec<String>,
    /// Minted secrets and when each expires (epoch seconds on the fake's clock).
    secrets: Vec<(String, u64)>,
    refuse_mint: Option<(u16, &'static str)>,
    /// How late calls arrive after their mint, on the fake's clock: past a secret's life,
    /// the call is refused.
    clock_ahead: u64,
    calls_gone: bool,
}

fn openai_error(status: u16, kind: &str, code: &str) -> Reply {
    Reply::new(status)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"error":{{"message":"refused: {code}","type":"{kind}","param":null,"code":"{code}"}}}}"#
        ))
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// OpenAI Realtime as its reference documents it: a client secret minted with the server
/// key (model and session settings in it, 10-7200 s, `ek_` value and `expires_at`), the call
/// made with an unexpired secret only, `{"error":{..}}` refusals, the hangup with the server
/// key and no body.
fn openai_fake(state: Arc<Mutex<OpenAiFake>>) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    move |req: &Seen| {
        let auth = req.header("authorization").unwrap_or("");
        let mut fake = state.lock().expect("lock");
        let now = epoch_now();
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v1/realtime/client_secrets") => {
                if auth != "Bearer sk-server-key" {
                    return openai_error(401, "invalid_request_error", "invalid_api_key");
                }
                if let Some((status, code)) = fake.refuse_mint.take() {
                    let reply = openai_error(status, "requests", code);
                    return if status == 429 {
                        reply.header("retry-after", "7")
                    } else {
                        reply
                    };
                }
                let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let seconds = body["expires_after"]["seconds"].as_u64().unwrap_or(0);
                let ok = req.header("content-type") == Some("application/json")
                    && body["expires_after"]["anchor"] == "created_at"
                    && body["session"]["type"] == "realtime"
                    && body["session"]["model"] == "gpt-realtime-mini"
                    && body["session"]["audio"]["output"]["voice"] == "marin"
                    && (10..=7200).contains(&seconds);
                if !ok {
                    return openai_error(400, "invalid_request_error", "invalid_value");
                }
                let value = format!("ek_test_{}", fake.secrets.len() + 1);
                fake.secrets.push((value.clone(), now + seconds));
                fake.log.push(format!("secret {value}"));
                Reply::new(200)
                    .header("content-type", "application/json")
                    .body(format!(
                        r#"{{"value":"{value}","expires_at":{},"session":{{"type":"realtime","model":"gpt-realtime-mini"}}}}"#,
                        now + seconds
                    ))
            }
            ("POST", "/v1/realtime/calls") => {
                let secret = auth.strip_prefix("Bearer ").unwrap_or("");
                let valid = fake
                    .secrets
                    .iter()
                    .any(|(value, expires)| value == secret && now + fake.clock_ahead < *expires);
                if !valid {
                    return openai_error(401, "invalid_request_error", "invalid_api_key");
                }
                let sdp = String::from_utf8_lossy(&req.body).into_owned();
                if req.header("content-type") != Some("application/sdp")
                    || !sdp.contains("m=application")
                {
                    return openai_error(400, "invalid_request_error", "invalid_offer");
                }
                let n = fake.log.len();
                fake.log.push(format!("call {secret}"));
                Reply::new(201)
                    .header("content-type", "application/sdp")
                    .header("location", &format!("/v1/realtime/calls/rtc_u{n}_abc"))
                    .body(talk_answer(&sdp))
            }
            ("POST", path) if path.ends_with("/hangup") => {
                if auth != "Bearer sk-server-key" {
                    return openai_error(401, "invalid_request_error", "invalid_api_key");
                }
                if !req.body.is_empty() || req.header("content-type").is_some() {
                    return openai_error(400, "invalid_request_error", "unexpected_body");
                }
                if fake.calls_gone {
                    return openai_error(404, "invalid_request_error", "call_not_found");
                }
                fake.log.push(format!("hangup {path}"));
                Reply::new(200)
            }
            _ => openai_error(404, "invalid_request_error", "not_found"),
        }
    }
}

/// OpenAI Realtime's contract: a secret minted per call, the call made with it alone, the
/// call id from the Location and the hangup with the server key; neither key reaches the
/// client nor the session URL. Its refusals become whipgate's: a spent rate or a 5xx lets
/// the route's next backend try, a refused key or an expired secret is a 502, a call
/// already gone a 404.
#[tokio::test]
async fn openai_realtime_mints_a_secret_per_call_and_hangs_up_on_delete() {
    let state: Arc<Mutex<OpenAiFake>> = Arc::default();
    let openai = FakeBackend::start(openai_fake(state.clone())).await;
    let spare = FakeBackend::start(|req: &Seen| match req.method.as_str() {
        "POST" => Reply::new(201)
            .header("location", "/resource/spare")
            .body(talk_answer(&String::from_utf8_lossy(&req.body))),
        _ => Reply::new(200),
    })
    .await;
    let gw = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://gw.test"

[[backend]]
id = "agent"
kind = "openai-realtime"
url = "http://{}"
api_key_env = "OPENAI_API_KEY"
model = "gpt-realtime-mini"
session = {{ instructions = "Be brief.", audio = {{ output = {{ voice = "marin" }} }} }}

[[backend]]
id = "spare"
kind = "whip"
whip_url = "{}"

[[route]]
match = {{ stream = "talk-or-spare" }}
backends = ["agent", "spare"]

[[route]]
backends = ["agent"]
"#,
        openai.addr,
        spare.url("/whip/{stream}")
    ))
    .await;
    let post = |stream: &'static str, offer: String| async move {
        send(
            gw.local_addr,
            "POST",
            &format!("/whip/{stream}"),
            &[("content-type", "application/sdp")],
            offer,
        )
        .await
    };
    let created = post("talk", talk_offer()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.body.contains("m=application"), "{}", created.body);
    assert!(
        created.body.contains("a=sendrecv"),
        "the agent's audio comes back"
    );
    let location = created.header("location").expect("Location").to_owned();
    for secret in ["sk-server-key", "ek_test", "rtc_u"] {
        assert!(!location.contains(secret), "{location}");
        assert!(!format!("{:?}", created.headers).contains(secret));
        assert!(!created.body.contains(secret));
    }
    assert!(
        created.header("accept-patch").is_none(),
        "no trickle: the API has no PATCH"
    );
    let second = post("talk", talk_offer()).await;
    assert_eq!(second.status, 201, "{}", second.body);
    let deleted = send(gw.local_addr, "DELETE", &created.location_path(), &[], "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        state.lock().expect("lock").log,
        vec![
            "secret ek_test_1".to_owned(),
            "call ek_test_1".into(),
            "secret ek_test_2".into(),
            "call ek_test_2".into(),
            "hangup /v1/realtime/calls/rtc_u1_abc/hangup".into(),
        ],
        "a secret of its own per call; the hangup names the first call"
    );

    state.lock().expect("lock").calls_gone = true;
    let gone = send(gw.local_addr, "DELETE", &second.location_path(), &[], "").await;
    assert_eq!(gone.status, 404, "{}", gone.body);

    state.lock().expect("lock").clock_ahead = 120;
    let expired = post("talk", talk_offer()).await;
    assert_eq!(expired.status, 502, "{}", expired.body);
    assert!(expired.body.contains("credential"), "{}", expired.body);
    state.lock().expect("lock").clock_ahead = 0;

    let audio_only = talk_offer()
        .split("m=application")
        .next()
        .expect("audio part")
        .to_owned();
    let before = state.lock().expect("lock").log.len();
    let refused = post(
        "talk",
        audio_only.replace("a=group:BUNDLE 1 2", "a=group:BUNDLE 1"),
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("data channel"), "{}", refused.body);
    assert_eq!(
        state.lock().expect("lock").log.len(),
        before,
        "refused before any API call"
    );

    // Last: a backend that refused for want of capacity rests a while.
    state.lock().expect("lock").refuse_mint = Some((429, "rate_limit_exceeded"));
    let limited = post("talk", talk_offer()).await;
    assert_eq!(limited.status, 503, "{}", limited.body);
    assert_eq!(limited.header("retry-after"), Some("7"));
    state.lock().expect("lock").refuse_mint = Some((429, "rate_limit_exceeded"));
    let moved = post("talk-or-spare", talk_offer()).await;
    assert_eq!(moved.status, 201, "{}", moved.body);
    assert_eq!(spare.count(), 1, "a spent rate lets the next backend try");
    state.lock().expect("lock").refuse_mint = Some((500, "server_error"));
    let broken = post("talk", talk_offer()).await;
    assert_eq!(broken.status, 503, "{}", broken.body);
}

/// A wrong server key: the mint's 401 is whipgate's 502, and says whose credential failed.
#[tokio::test]
async fn openai_realtime_refusing_the_server_key_is_a_bad_gateway() {
    let openai = FakeBackend::start(openai_fake(Arc::default())).await;
    let gw = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[backend]]
id = "agent"
kind = "openai-realtime"
url = "http://{}"
api_key_env = "OPENAI_WRONG_KEY"

[[route]]
backends = ["agent"]
"#,
        openai.addr
    ))
    .await;
    let refused = send(
        gw.local_addr,
        "POST",
        "/whip/talk",
        &[("content-type", "application/sdp")],
        talk_offer(),
    )
    .await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert!(
        refused.body.contains("refused whipgate's credential"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("sk-"), "{}", refused.body);
}

/// Pipecat's runner: the offer wrapped in its JSON, the JSON answer unwrapped into a 201,
/// trickle turned into its candidates PATCH (with each candidate's m-line), DELETE answered
/// here (the runner has none), and its 404 for a gone connection ending the session.
#[tokio::test]
async fn pipecat_speaks_the_runners_json_and_trickles_its_candidates() {
    let patches: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let seen_patches = patches.clone();
    let bot =
        FakeBackend::start(
            move |req: &Seen| match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/bot/offer") => {
                    let body: serde_json::Value =
                        serde_json::from_slice(&req.body).unwrap_or_default();
                    let sdp = body["sdp"].as_str().unwrap_or("").to_owned();
                    if body["type"] != "offer"
                        || !body["pc_id"].is_null()
                        || body["request_data"]["persona"] != "echo"
                        || !sdp.contains("m=audio")
                    {
                        return Reply::new(422).body(r#"{"detail":"bad offer"}"#);
                    }
                    let answer = serde_json::json!({
                        "sdp": talk_answer(&sdp),
                        "type": "answer",
                        "pc_id": "SmallWebRTCConnection#0-abc",
                    });
                    Reply::new(200)
                        .header("content-type", "application/json")
                        .body(answer.to_string())
                }
                ("PATCH", "/bot/offer") => {
                    let body: serde_json::Value =
                        serde_json::from_slice(&req.body).unwrap_or_default();
                    if body["pc_id"] != "SmallWebRTCConnection#0-abc" {
                        return Reply::new(404).body(r#"{"detail":"Peer connection not found"}"#);
                    }
                    let first = seen_patches.lock().expect("lock").is_empty();
                    seen_patches.lock().expect("lock").push(body);
                    if first {
                        Reply::new(200).body(r#"{"status":"success"}"#)
                    } else {
                        Reply::new(404).body(r#"{"detail":"Peer connection not found"}"#)
                    }
                }
                ("DELETE", _) => Reply::new(405),
                _ => Reply::new(404),
            },
        )
        .await;
    let gw = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://gw.test"

[[backend]]
id = "bot"
kind = "pipecat"
url = "http://{}"
offer_path = "/bot/offer"
request_data = {{ persona = "echo" }}

[[route]]
backends = ["bot"]
"#,
        bot.addr
    ))
    .await;
    let created = send(
        gw.local_addr,
        "POST",
        "/whip/talk",
        &[("content-type", "application/sdp")],
        talk_offer(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("content-type"), Some("application/sdp"));
    assert!(created.body.starts_with("v=0"), "{}", created.body);
    let session = created.location_path();
    let trickled = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[("content-type", "application/trickle-ice-sdpfrag"), ("if-match", "*")],
        "a=ice-ufrag:wJDM\r\na=ice-pwd:em6NV0xnXzAwq0kmrpWlS2\r\na=mid:2\r\na=candidate:1 1 udp 2130706431 10.0.0.2 50000 typ host\r\na=end-of-candidates\r\n",
    )
    .await;
    assert_eq!(trickled.status, 204, "{}", trickled.body);
    assert_eq!(
        patches.lock().expect("lock")[0]["candidates"],
        serde_json::json!([
            {"candidate": "candidate:1 1 udp 2130706431 10.0.0.2 50000 typ host", "sdp_mid": "2", "sdp_mline_index": 1},
            {"candidate": "", "sdp_mid": "2", "sdp_mline_index": 1},
        ])
    );
    // The bot's connection went away: its 404 ends the session here.
    let gone = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[("content-type", "application/trickle-ice-sdpfrag"), ("if-match", "*")],
        "a=ice-ufrag:wJDM\r\na=ice-pwd:em6NV0xnXzAwq0kmrpWlS2\r\na=mid:1\r\na=end-of-candidates\r\n",
    )
    .await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    let fresh = send(
        gw.local_addr,
        "POST",
        "/whip/talk",
        &[("content-type", "application/sdp")],
        talk_offer(),
    )
    .await;
    assert_eq!(fresh.status, 201);
    let deleted = send(gw.local_addr, "DELETE", &fresh.location_path(), &[], "").await;
    assert_eq!(
        deleted.status, 200,
        "DELETE is answered here: {}",
        deleted.body
    );
    assert!(
        bot.seen().iter().all(|s| s.method != "DELETE"),
        "the runner never gets a DELETE"
    );
    // The runner would answer an offer without m-lines with an empty answer: it never
    // gets one.
    let posts_before = bot.seen().iter().filter(|s| s.method == "POST").count();
    let session_part = talk_offer()
        .split("m=audio")
        .next()
        .expect("session part")
        .replace("a=group:BUNDLE 1 2\r\n", "");
    let empty = send(
        gw.local_addr,
        "POST",
        "/whip/talk",
        &[("content-type", "application/sdp")],
        session_part,
    )
    .await;
    assert_eq!(empty.status, 422, "{}", empty.body);
    assert_eq!(
        bot.seen().iter().filter(|s| s.method == "POST").count(),
        posts_before,
        "an offer without m-lines never reaches the bot"
    );
}
