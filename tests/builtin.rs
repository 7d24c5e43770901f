//! The built-in SFU through the front door: the same endpoints, statuses and session
//! machinery as a remote backend, plus the pages. Media itself is tested with str0m peers in
//! `src/sfu/tests.rs` and with real peers in `tests/e2e/`.

mod support;

use support::{corpus, gateway, path_of, send, EventStream};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://gw.test"
pages = true

[builtin]
udp_listen = "127.0.0.1:0"

[[backend]]
id = "sfu"
kind = "builtin"

[[route]]
id = "all"
match = { stream = "*" }
backends = ["sfu"]
"#;

const SDP: (&str, &str) = ("content-type", "application/sdp");
const FRAG: (&str, &str) = ("content-type", "application/trickle-ice-sdpfrag");

#[tokio::test]
async fn whep_before_any_publisher_is_409_with_retry_after() {
    let gw = gateway(CONFIG).await;
    let got = send(
        gw.local_addr,
        "POST",
        "/whep/cam",
        &[SDP],
        corpus("chromium-whep-offer.sdp"),
    )
    .await;
    assert_eq!(got.status, 409, "{}", got.body);
    assert!(got.header("retry-after").is_some());
    assert!(got.body.contains("no publisher"), "{}", got.body);
}

#[tokio::test]
async fn publish_answer_trickle_play_and_delete() {
    let gw = gateway(CONFIG).await;
    let published = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[SDP],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.body);
    assert!(published.body.contains("a=ice-lite"), "{}", published.body);
    assert!(
        published.body.contains("typ host"),
        "the answer has the SFU's candidate"
    );
    assert!(published
        .header("location")
        .is_some_and(|l| l.starts_with("http://gw.test/session/")));
    assert!(!published
        .header("location")
        .unwrap_or_default()
        .contains("builtin"));
    let session = published.location_path();
    // A second publisher on a live stream is refused; another stream is not.
    let again = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[SDP],
        corpus("aiortc116-whip-offer.sdp"),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);
    // Trickle is taken; the SFU is ICE-lite and needs no candidates, but a client may send them.
    let trickled = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[FRAG],
        corpus("gstreamer-trickle-1.sdpfrag"),
    )
    .await;
    assert_eq!(trickled.status, 204, "{}", trickled.body);
    // A viewer may join now (the publisher has not connected its media yet, but exists).
    let viewer = send(
        gw.local_addr,
        "POST",
        "/whep/cam",
        &[SDP],
        corpus("chromium-whep-offer.sdp"),
    )
    .await;
    assert_eq!(viewer.status, 201, "{}", viewer.body);
    assert!(viewer.body.contains("a=sendonly"), "{}", viewer.body);
    let status = send(gw.local_addr, "GET", "/api/status", &[], "").await;
    assert_eq!(status.status, 200);
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("json");
    assert_eq!(json["streams"][0]["stream"], "cam");
    assert_eq!(json["backends"][0]["kind"], "builtin");
    // WHEP events: the built-in SFU tells whether the stream is live and how many watch.
    let (link, events_url) = viewer.link("server-sent-events");
    assert!(
        link.contains("events=\"active,inactive,layers,viewercount,reconnect\""),
        "{link}"
    );
    // The layer extension: the player picks a simulcast layer of its video m-line (before it
    // connects, the choice waits for its m-lines; engine tests check the m-line rules).
    let (_, layer_url) = viewer.link("urn:ietf:params:whep:ext:core:layer");
    let json = ("content-type", "application/json");
    for (choice, status) in [
        (r#"{"mediaId":"1","rid":"h"}"#, 200),
        (r#"{"mediaId":"1"}"#, 200),
        ("not json", 400),
        (r#"{"rid":"h"}"#, 400),
    ] {
        let got = send(gw.local_addr, "POST", &path_of(&layer_url), &[json], choice).await;
        assert_eq!(got.status, status, "{choice}: {}", got.body);
    }
    let subscribed = send(gw.local_addr, "POST", &path_of(&events_url), &[], "").await;
    assert_eq!(subscribed.status, 201, "{}", subscribed.body);
    let mut events = EventStream::open(
        gw.local_addr,
        &path_of(subscribed.header("location").expect("Location")),
    )
    .await;
    // Its publisher has not connected media and the viewer neither (no peer here does):
    // not live, and nobody counted as watching.
    assert!(
        events.next("event: inactive\ndata: {}").await,
        "{}",
        events.text
    );
    assert!(
        events
            .next("event: viewercount\ndata: {\"viewercount\":0}")
            .await,
        "{}",
        events.text
    );
    // The publisher's DELETE ends it and releases the viewer, whose own DELETE still
    // succeeds once.
    assert_eq!(
        send(gw.local_addr, "DELETE", &session, &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        send(gw.local_addr, "DELETE", &session, &[], "")
            .await
            .status,
        404
    );
    let viewer_session = viewer.location_path();
    assert_eq!(
        send(gw.local_addr, "DELETE", &viewer_session, &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        send(gw.local_addr, "DELETE", &viewer_session, &[], "")
            .await
            .status,
        404
    );
    let status = send(gw.local_addr, "GET", "/api/status", &[], "").await;
    assert!(status.body.contains("\"streams\": []"), "{}", status.body);
    assert!(events.ended().await, "the stream ends with its session");
}

/// A legacy player's empty POST asks the server to offer; the built-in SFU cannot yet, and
/// says so with a 400 (not a 503 a player would retry forever).
#[tokio::test]
async fn an_empty_whep_post_is_refused_with_a_reason() {
    let gw = gateway(CONFIG).await;
    let got = send(gw.local_addr, "POST", "/whep/cam", &[SDP], "").await;
    assert_eq!(got.status, 400, "{}", got.body);
    assert!(got.body.contains("POST an SDP offer"), "{}", got.body);
}

#[tokio::test]
async fn an_ice_restart_is_refused_with_422() {
    let gw = gateway(CONFIG).await;
    let published = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[SDP],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(published.status, 201);
    let restart = "a=ice-ufrag:newfrag\r\na=ice-pwd:newpasswordnewpasswordnew\r\n";
    let got = send(
        gw.local_addr,
        "PATCH",
        &published.location_path(),
        &[FRAG, ("if-match", "*")],
        restart,
    )
    .await;
    assert_eq!(got.status, 422, "{}", got.body);
}

#[tokio::test]
async fn pages_are_served_only_when_enabled() {
    let gw = gateway(CONFIG).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/publish/cam", "text/html"),
        ("/play/cam", "text/html"),
        ("/pages/whip.js", "text/javascript"),
        ("/api/status", "application/json"),
    ] {
        let got = send(gw.local_addr, "GET", path, &[], "").await;
        assert_eq!(got.status, 200, "{path}");
        assert!(
            got.header("content-type")
                .is_some_and(|c| c.starts_with(kind)),
            "{path}"
        );
        // Pages opened at another name of this host (localhost) still reach session URLs,
        // which are on the public origin.
        assert!(
            got.header("content-security-policy")
                .is_some_and(|csp| csp.contains("connect-src 'self' http://gw.test;")),
            "{path}: {:?}",
            got.header("content-security-policy")
        );
    }
    let off = gateway(&CONFIG.replace("pages = true", "pages = false")).await;
    for path in ["/", "/publish/cam", "/play/cam", "/api/status"] {
        assert_eq!(
            send(off.local_addr, "GET", path, &[], "").await.status,
            404,
            "{path}"
        );
    }
}

#[test]
fn a_builtin_backend_takes_no_remote_settings() {
    for extra in [
        "whip_url = \"http://x/{stream}\"",
        "auth = { passthrough = true }",
        "health_check = { url = \"http://x/\" }",
    ] {
        let text = CONFIG.replace(
            "kind = \"builtin\"",
            &format!("kind = \"builtin\"\n{extra}"),
        );
        let error = whipgate::config::Config::from_toml(
            &text,
            "t.toml",
            std::path::Path::new("."),
            whipgate::config::SecretMode::Skip,
            &support::TestSecrets,
        )
        .expect_err(extra);
        assert!(
            error.to_string().contains("for kind = \"builtin\""),
            "{error}"
        );
    }
    let wildcard = CONFIG.replace(
        "udp_listen = \"127.0.0.1:0\"",
        "udp_listen = \"0.0.0.0:8189\"",
    );
    let error = whipgate::config::Config::from_toml(
        &wildcard,
        "t.toml",
        std::path::Path::new("."),
        whipgate::config::SecretMode::Skip,
        &support::TestSecrets,
    )
    .expect_err("wildcard without host_addresses");
    assert!(error.to_string().contains("host_addresses"), "{error}");
}

/// A viewer released with its publisher never sends DELETE: it stops counting on this
/// replica (live gauge, limits) once the SFU says it ended, and its late DELETE still
/// answers 200 without counting it twice.
#[tokio::test]
async fn sessions_that_ended_on_their_own_stop_counting() {
    let gw = gateway(CONFIG).await;
    let published = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[SDP],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.body);
    let viewer = send(
        gw.local_addr,
        "POST",
        "/whep/cam",
        &[SDP],
        corpus("chromium-whep-offer.sdp"),
    )
    .await;
    assert_eq!(viewer.status, 201, "{}", viewer.body);
    assert_eq!(gw.gateway.registry().len(), 2);
    let deleted = send(gw.local_addr, "DELETE", &published.location_path(), &[], "").await;
    assert_eq!(deleted.status, 200);
    assert_eq!(gw.gateway.registry().len(), 1, "the viewer still counts");
    gw.gateway.reap_ended_sessions().await;
    assert_eq!(
        gw.gateway.registry().len(),
        0,
        "the released viewer stopped counting"
    );
    let metrics = send(gw.local_addr, "GET", "/metrics", &[], "").await.body;
    let ended = "whipgate_sessions_ended_total{backend=\"sfu\",kind=\"whep\",route=\"all\"} 1";
    assert!(metrics.contains(ended), "missing {ended}");
    let late = send(gw.local_addr, "DELETE", &viewer.location_path(), &[], "").await;
    assert_eq!(late.status, 200, "{}", late.body);
    let metrics = send(gw.local_addr, "GET", "/metrics", &[], "").await.body;
    assert!(
        metrics.contains(ended),
        "the late DELETE counted the viewer twice"
    );
}

/// Two replicas with the same session keys, each naming itself in `internal_url`.
async fn replica() -> (whipgate::server::RunningServer, std::net::SocketAddr) {
    // A free port, known before the replica starts: its internal_url names it.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let text = format!(
        r#"
[server]
listen = "{address}"
internal_url = "http://{address}"
public_url = "http://gw.test"
session_keys = [{{ id = "k1", secret_env = "KEY1" }}]
pages = true

[builtin]
udp_listen = "127.0.0.1:0"

[[backend]]
id = "sfu"
kind = "builtin"

[[route]]
match = {{ stream = "*" }}
backends = ["sfu"]
"#
    );
    let gateway = whipgate::server::Gateway::new(support::config(&text)).expect("gateway");
    let running = whipgate::server::start(gateway, Some(address))
        .await
        .expect("start replica");
    (running, address)
}

/// A built-in session's PATCH and DELETE that reach another replica are carried to the
/// one whose SFU holds it (its internal_url is sealed in the token); without internal_url
/// the other replica cannot serve them.
#[tokio::test]
async fn any_replica_carries_a_builtin_sessions_requests_to_its_owner() {
    let (a, a_addr) = replica().await;
    let (b, b_addr) = replica().await;
    let published = send(
        a_addr,
        "POST",
        "/whip/cam",
        &[SDP],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.body);
    let session = published.location_path();
    let trickled = send(
        b_addr,
        "PATCH",
        &session,
        &[FRAG, ("if-match", "*")],
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n",
    )
    .await;
    assert_eq!(trickled.status, 204, "{}", trickled.body);
    let unknown = send(b_addr, "DELETE", "/session/not-a-token", &[], "").await;
    assert_eq!(unknown.status, 404, "a bad token is not carried anywhere");
    let deleted = send(b_addr, "DELETE", &session, &[], "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let status = send(a_addr, "GET", "/api/status", &[], "").await;
    assert_eq!(status.status, 200);
    assert!(
        !status.body.contains("\"cam\""),
        "the owner ended it: {}",
        status.body
    );
    assert_eq!(a.gateway.registry().len(), 0, "the owner counts it ended");
    let again = send(b_addr, "DELETE", &session, &[], "").await;
    assert_eq!(again.status, 404, "{}", again.body);
    drop(b);
}

/// A backend with WHEP events of its own (here another whipgate, whose built-in SFU tells
/// `inactive` and `viewercount`): a player of the front gateway subscribes there and gets the
/// backend's events through it, which the front gateway alone could not know.
#[tokio::test]
async fn a_backends_own_event_stream_reaches_the_player() {
    let backend_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let backend_text = format!(
        r#"
[server]
listen = "{backend_addr}"
public_url = "http://{backend_addr}"

[builtin]
udp_listen = "127.0.0.1:0"

[[backend]]
id = "sfu"
kind = "builtin"

[[route]]
backends = ["sfu"]
"#
    );
    let backend = whipgate::server::Gateway::new(support::config(&backend_text)).expect("gateway");
    let _backend = whipgate::server::start(backend, Some(backend_addr))
        .await
        .expect("start the backend whipgate");
    let front = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://gw.test"

[[backend]]
id = "other-whipgate"
kind = "whip"
whip_url = "http://{backend_addr}/whip/{{stream}}"
whep_url = "http://{backend_addr}/whep/{{stream}}"

[[route]]
backends = ["other-whipgate"]
"#
    ))
    .await;
    let published = send(
        front.local_addr,
        "POST",
        "/whip/cam",
        &[SDP],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.body);
    let played = send(
        front.local_addr,
        "POST",
        "/whep/cam",
        &[SDP],
        corpus("chromium-whep-offer.sdp"),
    )
    .await;
    assert_eq!(played.status, 201, "{}", played.body);
    let (link, events_url) = played.link("server-sent-events");
    assert!(
        link.contains("events=\"active,inactive,layers,viewercount,reconnect\""),
        "the backend's events are offered: {link}"
    );
    let subscribed = send(
        front.local_addr,
        "POST",
        &path_of(&events_url),
        &[("content-type", "application/json")],
        r#"["inactive","viewercount","reconnect"]"#,
    )
    .await;
    assert_eq!(subscribed.status, 201, "{}", subscribed.body);
    let stream = subscribed.location_path();
    let mut events = EventStream::open(front.local_addr, &stream).await;
    assert_eq!(events.status, 200);
    assert!(events.next("event: inactive").await, "{}", events.text);
    assert!(events.next("event: viewercount").await, "{}", events.text);
    assert!(!events.text.contains("event: active\n"), "{}", events.text);
    // Refused as for any session: an event neither side offers.
    let refused = send(
        front.local_addr,
        "POST",
        &path_of(&events_url),
        &[("content-type", "application/json")],
        r#"["bogus"]"#,
    )
    .await;
    assert_eq!(refused.status, 400);
}
