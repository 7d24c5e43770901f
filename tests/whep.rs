//! WHEP (draft-ietf-wish-whep-04) at the front door against in-process fake backends:
//! counter-offers both ways, legacy server offers, partial answers.

mod support;

use std::sync::{Arc, Mutex};

use support::{corpus, gateway, path_of, send, EventStream, FakeBackend, Reply, Seen};

const SERVER: &str = r#"
[server]
public_url = "https://gw.example.com"
session_keys = [{ id = "k1", secret_env = "KEY1" }]
upstream_timeout = "500ms"
"#;

fn table(backend: &FakeBackend) -> String {
    format!(
        "{SERVER}[[backend]]\nid = \"origin\"\nkind = \"whip\"\nwhip_url = \"{w}\"\nwhep_url = \"{e}\"\n\
         [[route]]\nbackends = [\"origin\"]\n",
        w = backend.url("/whip/{stream}"),
        e = backend.url("/whep/{stream}")
    )
}

/// POSTs an SDP body (an offer, or nothing for a legacy player) to `path`.
async fn post_sdp(addr: std::net::SocketAddr, path: &str, body: impl Into<String>) -> support::Got {
    send(
        addr,
        "POST",
        path,
        &[("content-type", "application/sdp")],
        body.into(),
    )
    .await
}

/// PATCHes the player's answer onto a session.
async fn send_answer(addr: std::net::SocketAddr, session: &str) -> support::Got {
    send(
        addr,
        "PATCH",
        session,
        &[("content-type", "application/sdp")],
        player_answer(),
    )
    .await
}

/// What a server that sends media offers: a sendonly offer (the WHIP corpus offer is one).
fn server_offer() -> String {
    corpus("chromium-whip-offer-vp8.sdp")
}

/// A player's answer to it: receive-only (the WHIP corpus answer is one).
fn player_answer() -> String {
    corpus("janus-whip-answer.sdp")
}

/// A WHEP-04 server that counter-offers whatever the player sends, and a legacy one that
/// offers to an empty POST; it records the answers it gets.
fn offering_server(answers: Arc<Mutex<Vec<Seen>>>) -> impl Fn(&Seen) -> Reply + Send + Sync {
    move |seen: &Seen| match seen.method.as_str() {
        "POST" if seen.body.is_empty() => Reply::new(201)
            .header("content-type", "application/sdp")
            .header("location", "/resource/legacy")
            .body(server_offer()),
        "POST" => Reply::new(406)
            .header("content-type", "application/sdp")
            .header("location", "/resource/counter")
            .body(server_offer()),
        "PATCH" => {
            answers.lock().expect("lock").push(seen.clone());
            Reply::new(204)
        }
        _ => Reply::new(200),
    }
}

#[tokio::test]
async fn a_counter_offer_reaches_the_player_and_its_answer_reaches_the_backend() {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let backend = FakeBackend::start(offering_server(answers.clone())).await;
    let gw = gateway(&table(&backend)).await;
    let got = post_sdp(
        gw.local_addr,
        "/whep/show",
        corpus("chromium-whep-offer.sdp"),
    )
    .await;
    assert_eq!(got.status, 406, "{}", got.body);
    assert!(got
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/sdp")));
    assert!(
        got.body.contains("a=sendonly"),
        "the backend's offer: {}",
        got.body
    );
    let location = got.header("location").expect("Location").to_owned();
    assert!(
        location.starts_with("https://gw.example.com/session/"),
        "absolute, on whipgate: {location}"
    );
    assert!(got
        .header("accept-patch")
        .is_some_and(|v| v.contains("application/sdp")));
    let patched = send_answer(gw.local_addr, &got.location_path()).await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    let answers = answers.lock().expect("lock").clone();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].path, "/resource/counter");
    assert_eq!(answers[0].header("content-type"), Some("application/sdp"));
    assert!(String::from_utf8_lossy(&answers[0].body).contains("a=recvonly"));
    // The session's preflight lets a browser PATCH the answer.
    let options = send(
        gw.local_addr,
        "OPTIONS",
        &got.location_path(),
        &[
            ("origin", "https://player.example"),
            ("access-control-request-method", "PATCH"),
        ],
        "",
    )
    .await;
    assert!(options
        .header("access-control-allow-methods")
        .is_some_and(|v| v.contains("PATCH")));
}

#[tokio::test]
async fn a_legacy_empty_post_gets_the_backends_offer_with_a_201() {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let backend = FakeBackend::start(offering_server(answers.clone())).await;
    let gw = gateway(&table(&backend)).await;
    let got = post_sdp(gw.local_addr, "/whep/show", "").await;
    assert_eq!(got.status, 201, "{}", got.body);
    assert!(got.body.contains("a=sendonly"));
    let patched = send_answer(gw.local_addr, &got.location_path()).await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    assert_eq!(answers.lock().expect("lock")[0].path, "/resource/legacy");
    // An empty WHIP POST is still an error: a publisher must offer.
    let whip = post_sdp(gw.local_addr, "/whip/show", "").await;
    assert_eq!(whip.status, 400, "{}", whip.body);
}

#[tokio::test]
async fn a_406_without_a_usable_offer_is_an_ordinary_error() {
    for (content_type, body) in [
        ("text/plain", "codec not supported".to_owned()),
        ("application/sdp", "this is not SDP".to_owned()),
        // An offer that receives: no player could answer it to watch.
        ("application/sdp", corpus("chromium-whep-offer.sdp")),
    ] {
        let backend = FakeBackend::start(move |seen: &Seen| match seen.method.as_str() {
            "POST" => Reply::new(406)
                .header("content-type", content_type)
                .header("location", "/resource/x")
                .body(body.clone()),
            _ => Reply::new(200),
        })
        .await;
        let gw = gateway(&table(&backend)).await;
        let got = post_sdp(
            gw.local_addr,
            "/whep/show",
            corpus("chromium-whep-offer.sdp"),
        )
        .await;
        assert_ne!(got.status, 406, "{content_type}: {}", got.body);
        assert!(got.status >= 400, "{}", got.status);
        assert!(!got
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/sdp")));
    }
}

#[tokio::test]
async fn an_answer_where_none_is_expected_is_422() {
    let backend = FakeBackend::start(support::whip_server()).await;
    let gw = gateway(&table(&backend)).await;
    let got = post_sdp(
        gw.local_addr,
        "/whep/show",
        corpus("chromium-whep-offer.sdp"),
    )
    .await;
    assert_eq!(got.status, 201);
    let patched = send_answer(gw.local_addr, &got.location_path()).await;
    assert_eq!(patched.status, 422, "{}", patched.body);
    let wrong = send(
        gw.local_addr,
        "PATCH",
        &got.location_path(),
        &[("content-type", "text/plain")],
        "x",
    )
    .await;
    assert_eq!(wrong.status, 415, "{}", wrong.body);
    assert!(backend.seen().iter().all(|s| s.method != "PATCH"));
}

/// WHEP-04: a rejected data channel (port 0) is a partial answer, and still a session.
#[tokio::test]
async fn a_partial_answer_rejecting_the_data_channel_is_accepted() {
    let with_data = format!(
        "{}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=sctp-port:5000\r\n",
        corpus("chromium-whep-offer.sdp").replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
    );
    let partial = format!(
        "{}m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n",
        corpus("pion-whep-answer.sdp")
    );
    let backend = FakeBackend::start(move |seen: &Seen| match seen.method.as_str() {
        "POST" => Reply::new(201)
            .header("location", "/resource/p")
            .body(partial.clone()),
        _ => Reply::new(200),
    })
    .await;
    let gw = gateway(&table(&backend)).await;
    let got = post_sdp(gw.local_addr, "/whep/show", with_data).await;
    assert_eq!(got.status, 201, "{}", got.body);
    assert!(got.body.contains("m=application 0 "));
}

/// Sessions advertise events; unsupported ones are refused; draining the backend ends its
/// publishers and takes no new sessions, and sends `reconnect` to the same WHEP URL once the
/// returning publisher is live on the route's next backend.
#[tokio::test]
async fn a_drain_ends_publishers_and_tells_players_to_reconnect() {
    let backend = FakeBackend::start(support::whip_server()).await;
    let spare = FakeBackend::start(support::whip_server()).await;
    let config = format!(
        "{SERVER}admin_token_env = \"KEY2\"\n\
         [[backend]]\nid = \"origin\"\nkind = \"whip\"\nwhip_url = \"{w}\"\nwhep_url = \"{e}\"\n\
         [[backend]]\nid = \"spare\"\nkind = \"whip\"\nwhip_url = \"{sw}\"\nwhep_url = \"{se}\"\n\
         [[route]]\nbackends = [\"origin\", \"spare\"]\n",
        w = backend.url("/whip/{stream}"),
        e = backend.url("/whep/{stream}"),
        sw = spare.url("/whip/{stream}"),
        se = spare.url("/whep/{stream}"),
    );
    let gw = gateway(&config).await;
    let publisher = post_sdp(
        gw.local_addr,
        "/whip/show",
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(publisher.status, 201);
    let player = post_sdp(
        gw.local_addr,
        "/whep/show",
        corpus("chromium-whep-offer.sdp"),
    )
    .await;
    assert_eq!(player.status, 201);
    let (link, events_url) = player.link("urn:ietf:params:whep:ext:core:server-sent-events");
    assert!(link.contains("events=\"reconnect\""), "{link}");
    for refused in [r#"["active"]"#, r#"["bogus"]"#, "nonsense"] {
        let got = send(
            gw.local_addr,
            "POST",
            &path_of(&events_url),
            &[("content-type", "application/json")],
            refused,
        )
        .await;
        assert_eq!(got.status, 400, "{refused}: {}", got.body);
    }
    let subscribed = send(
        gw.local_addr,
        "POST",
        &path_of(&events_url),
        &[("content-type", "application/json")],
        r#"["reconnect"]"#,
    )
    .await;
    assert_eq!(subscribed.status, 201, "{}", subscribed.body);
    let stream_url = subscribed.header("location").expect("Location").to_owned();
    let mut events = EventStream::open(gw.local_addr, &path_of(&stream_url)).await;
    assert_eq!(events.status, 200);
    assert_eq!(events.content_type, "text/event-stream");
    assert!(events.next(": whipgate").await, "the stream opens at once");

    let drained = send(
        gw.local_addr,
        "POST",
        "/admin/drain?backend=origin",
        &[(
            "authorization",
            "Bearer k2-secret-k2-secret-k2-secret-k2-secret",
        )],
        "",
    )
    .await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    support::wait_until("the drained publisher's session is ended", || async {
        backend
            .seen()
            .iter()
            .any(|s| s.method == "DELETE" && s.path == "/resource/whip")
    })
    .await;
    events.read_sent().await;
    assert!(
        !events.text.contains("event: reconnect"),
        "no reconnect while the stream is live nowhere: {}",
        events.text
    );
    // The publisher comes back (as OBS does) and lands on the spare: now players are told,
    // at once (not when the fallback wait runs out).
    let republished = std::time::Instant::now();
    let moved = post_sdp(
        gw.local_addr,
        "/whip/show",
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(moved.status, 201);
    assert_eq!(
        spare.count(),
        1,
        "the reconnecting publisher lands on the spare"
    );
    assert!(
        events
            .next("event: reconnect\ndata: {\"url\":\"https://gw.example.com/whep/show\"}")
            .await,
        "reconnect sent once the stream is live again: {}",
        events.text
    );
    assert!(
        republished.elapsed() < std::time::Duration::from_secs(3),
        "reconnect {:?} after the publisher came back: the stream going live sent it, not the {}-s fallback",
        republished.elapsed(),
        10
    );
    assert!(events.ended().await, "the stream ends after a reconnect");
    let unknown = send(
        gw.local_addr,
        "POST",
        "/admin/drain?backend=nope",
        &[(
            "authorization",
            "Bearer k2-secret-k2-secret-k2-secret-k2-secret",
        )],
        "",
    )
    .await;
    assert_eq!(unknown.status, 404);
}

/// A backend with WHEP events of its own: whipgate subscribes with the session's backend
/// credential to the events the player wants that the backend offers (never whipgate's own
/// `reconnect` to a backend without it), relays them, and turns the backend's `reconnect`
/// into one back to whipgate.
#[tokio::test]
async fn a_backends_own_events_are_relayed_with_its_credential() {
    let subscriptions: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = subscriptions.clone();
    let backend = FakeBackend::start(move |req: &Seen| {
        if req.header("authorization") != Some("Bearer backend-secret-token") {
            return Reply::new(401);
        }
        let offered = offered_for(&req.path);
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", path) if path.starts_with("/whep/") => Reply::new(201)
                .header("location", "/resource/p1")
                .header(
                    "link",
                    &format!(
                        "</events/{}>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; events=\"{offered}\"",
                        if path.contains("quiet") { "quiet" } else { "loud" }
                    ),
                )
                .body(corpus("pion-whep-answer.sdp")),
            ("POST", path) if path.starts_with("/events/") => {
                let names: Vec<String> = serde_json::from_slice(&req.body).unwrap_or_default();
                seen.lock().expect("lock").push(format!("{path} {}", names.join(",")));
                // WHEP-04: a subscription naming an event not offered is refused whole.
                if names.is_empty() || names.iter().any(|n| !offered.split(',').any(|o| o == n)) {
                    return Reply::new(400);
                }
                Reply::new(201).header("location", &format!("{path}/stream"))
            }
            ("GET", "/events/quiet/stream") => Reply::new(200)
                .header("content-type", "text/event-stream")
                .body("event: active\ndata: {}\n\n"),
            ("GET", "/events/loud/stream") => Reply::new(200)
                .header("content-type", "text/event-stream")
                .body("event: active\ndata: {}\n\nevent: reconnect\ndata: {\"url\":\"http://backend.internal/whep/other\"}\n\n"),
            _ => Reply::new(200),
        }
    })
    .await;
    fn offered_for(path: &str) -> &'static str {
        if path.contains("quiet") {
            "active"
        } else {
            "active,reconnect"
        }
    }
    let config = format!(
        "{SERVER}[[backend]]\nid = \"origin\"\nkind = \"whip\"\nwhep_url = \"{e}\"\n\
         auth = {{ bearer_env = \"BACKEND_TOKEN\" }}\n\
         [[route]]\nbackends = [\"origin\"]\n",
        e = backend.url("/whep/{stream}"),
    );
    let gw = gateway(&config).await;
    for (stream, relayed) in [
        ("quiet", "event: active\ndata: {}"),
        (
            "loud",
            "event: reconnect\ndata: {\"url\":\"https://gw.example.com/whep/loud\"}",
        ),
    ] {
        let player = post_sdp(
            gw.local_addr,
            &format!("/whep/{stream}"),
            corpus("chromium-whep-offer.sdp"),
        )
        .await;
        assert_eq!(player.status, 201, "{}", player.body);
        let (_, events_url) = player.link("server-sent-events");
        let subscribed = send(
            gw.local_addr,
            "POST",
            &path_of(&events_url),
            &[("content-type", "application/json")],
            r#"["active","reconnect"]"#,
        )
        .await;
        assert_eq!(subscribed.status, 201, "{}", subscribed.body);
        let mut events = EventStream::open(
            gw.local_addr,
            &path_of(subscribed.header("location").expect("Location")),
        )
        .await;
        assert!(
            events.next(relayed).await,
            "{stream}: the backend's events reach the player: {}",
            events.text
        );
        assert!(
            !events.text.contains("backend.internal"),
            "the backend's own URL never reaches the player: {}",
            events.text
        );
    }
    assert_eq!(
        *subscriptions.lock().expect("lock"),
        vec![
            "/events/quiet active".to_owned(),
            "/events/loud active,reconnect".to_owned()
        ],
        "each backend is asked for what it offers, with its credential"
    );
}
