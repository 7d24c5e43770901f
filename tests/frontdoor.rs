//! The front door against in-process fake backends: every rule of design.md's "front door",
//! every error status, and the backend quirks whipgate must smooth over.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{corpus, gateway, send, FakeBackend, Reply, Seen};

const SERVER: &str = r#"
[server]
public_url = "https://gw.example.com"
session_keys = [{ id = "k1", secret_env = "KEY1" }]
upstream_timeout = "500ms"
connect_timeout = "500ms"
"#;

fn answer() -> String {
    corpus("janus-whip-answer.sdp")
}

fn offer() -> String {
    corpus("chromium-whip-offer-vp8.sdp")
}

/// A well-behaved WHIP server: 201 with a relative Location, quoted ETag and a TURN Link;
/// PATCH 204; DELETE 200 once, then 404.
fn janus_like() -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let deleted = Arc::new(AtomicUsize::new(0));
    move |seen: &Seen| {
        match seen.method.as_str() {
        "POST" => Reply::new(201)
            .header("content-type", "application/sdp")
            .header("location", "/whip/resource/abc")
            .header("etag", "\"etag-1\"")
            .header(
                "link",
                "<turn:127.0.0.2:3478?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\"",
            )
            .body(answer()),
        "PATCH" => Reply::new(204),
        "DELETE" if deleted.fetch_add(1, Ordering::SeqCst) == 0 => Reply::new(200),
        _ => Reply::new(404),
    }
    }
}

fn one_backend(backend: &FakeBackend, extra: &str) -> String {
    format!(
        r#"{SERVER}
[[backend]]
id = "b1"
kind = "whip"
whip_url = "{whip}"
whep_url = "{whep}"
auth = {{ bearer_env = "BACKEND_TOKEN" }}
{extra}

[[route]]
backends = ["b1"]
"#,
        whip = backend.url("/whip/endpoint/{stream}"),
        whep = backend.url("/whep/endpoint/{stream}"),
    )
}

async fn publish(addr: std::net::SocketAddr, stream: &str) -> support::Got {
    send(
        addr,
        "POST",
        &format!("/whip/{stream}"),
        &[
            ("content-type", "application/sdp"),
            ("authorization", "Bearer client-token"),
        ],
        offer(),
    )
    .await
}

#[tokio::test]
async fn publish_patch_delete_through_the_gateway() {
    let backend = FakeBackend::start(janus_like()).await;
    let gw = gateway(&one_backend(&backend, "")).await;

    let created = publish(gw.local_addr, "cam-1").await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("content-type"), Some("application/sdp"));
    assert_eq!(created.body, answer());
    let location = created.header("location").expect("Location");
    assert!(
        location.starts_with("https://gw.example.com/session/"),
        "{location}"
    );
    assert!(!location.contains('?'));
    let etag = created.header("etag").expect("ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));
    assert_eq!(
        created.all("link"),
        vec!["<turn:127.0.0.2:3478?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\""]
    );
    assert_eq!(
        created.header("accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );

    let post = &backend.seen()[0];
    assert_eq!(post.path, "/whip/endpoint/cam-1");
    assert_eq!(post.header("content-type"), Some("application/sdp"));
    assert_eq!(
        post.header("authorization"),
        Some("Bearer backend-secret-token")
    );
    assert_eq!(
        post.body,
        offer().as_bytes(),
        "offer forwarded byte for byte"
    );
    assert!(post.header("x-request-id").is_some());

    let session = created.location_path();
    let fragment = corpus("gstreamer-trickle-1.sdpfrag");
    let patched = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[
            ("content-type", "application/trickle-ice-sdpfrag"),
            ("if-match", &etag),
        ],
        fragment.clone(),
    )
    .await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    assert!(patched.header("etag").is_none());
    let patch = &backend.seen()[1];
    assert_eq!(
        patch.path, "/whip/resource/abc",
        "relative Location resolved"
    );
    assert_eq!(patch.header("if-match"), Some("\"etag-1\""));
    assert_eq!(
        patch.header("authorization"),
        Some("Bearer backend-secret-token")
    );
    assert_eq!(patch.body, fragment.as_bytes());

    let deleted = send(gw.local_addr, "DELETE", &session, &[], "").await;
    assert_eq!(deleted.status, 200);
    assert_eq!(backend.seen()[2].method, "DELETE");
    assert_eq!(backend.seen()[2].path, "/whip/resource/abc");
    let again = send(gw.local_addr, "DELETE", &session, &[], "").await;
    assert_eq!(again.status, 404);
    assert_eq!(again.body.lines().count(), 1);
}

#[tokio::test]
async fn mdns_candidates_never_reach_the_backend() {
    let backend = FakeBackend::start(janus_like()).await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let mdns = "a=candidate:9 1 udp 2122260223 5e4f2a1b-9c8d.local 51000 typ host generation 0\r\n";
    let with_mdns = offer().replacen("a=ice-ufrag", &format!("{mdns}a=ice-ufrag"), 1);
    let created = send(
        gw.local_addr,
        "POST",
        "/whip/s",
        &[("content-type", "application/sdp; charset=utf-8")],
        with_mdns,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(backend.seen()[0].body, offer().as_bytes());

    let session = created.location_path();
    let fragment = corpus("gstreamer-trickle-1.sdpfrag");
    let with_mdns = fragment.replacen(
        "a=end-of-candidates",
        &format!("{}a=end-of-candidates", mdns),
        1,
    );
    let patched = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[("content-type", "application/trickle-ice-sdpfrag")],
        with_mdns,
    )
    .await;
    assert_eq!(patched.status, 204);
    assert_eq!(backend.seen()[1].body, fragment.as_bytes());
}

#[tokio::test]
async fn client_credentials_are_replaced_unless_passthrough() {
    let backend = FakeBackend::start(janus_like()).await;
    let config = one_backend(&backend, "").replace(
        "auth = { bearer_env = \"BACKEND_TOKEN\" }",
        "auth = { passthrough = true }",
    );
    let gw = gateway(&config).await;
    assert_eq!(publish(gw.local_addr, "s").await.status, 201);
    assert_eq!(
        backend.seen()[0].header("authorization"),
        Some("Bearer client-token")
    );

    let backend = FakeBackend::start(janus_like()).await;
    let config = one_backend(&backend, "").replace("auth = { bearer_env = \"BACKEND_TOKEN\" }", "");
    let gw = gateway(&config).await;
    assert_eq!(publish(gw.local_addr, "s").await.status, 201);
    assert_eq!(backend.seen()[0].header("authorization"), None);
}

#[tokio::test]
async fn backend_etags_of_every_shape_round_trip() {
    for upstream in ["abc", "*", "W/\"weak\"", "\"quoted\""] {
        let backend = FakeBackend::start(move |seen| match seen.method.as_str() {
            "POST" => Reply::new(201)
                .header("location", "/r/1")
                .header("etag", upstream)
                .body(answer()),
            _ => Reply::new(204),
        })
        .await;
        let gw = gateway(&one_backend(&backend, "")).await;
        let created = publish(gw.local_addr, "s").await;
        let etag = created.header("etag").expect("etag").to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        let patched = send(
            gw.local_addr,
            "PATCH",
            &created.location_path(),
            &[
                ("content-type", "application/trickle-ice-sdpfrag"),
                ("if-match", &etag),
            ],
            corpus("gstreamer-trickle-1.sdpfrag"),
        )
        .await;
        assert_eq!(patched.status, 204);
        assert_eq!(backend.seen()[1].header("if-match"), Some(upstream));
    }
}

#[tokio::test]
async fn if_match_rules() {
    let backend =
        FakeBackend::start(
            |seen| match (seen.method.as_str(), seen.header("if-match")) {
                ("POST", _) => Reply::new(201)
                    .header("location", "/r/1")
                    .header("etag", "\"v1\"")
                    .body(answer()),
                ("PATCH", Some("*")) => Reply::new(200)
                    .header("content-type", "application/trickle-ice-sdpfrag")
                    .header("etag", "\"v2\"")
                    .body("a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword12\r\n"),
                ("PATCH", Some("\"v1\"")) | ("PATCH", None) => Reply::new(204),
                ("PATCH", _) => Reply::new(412),
                _ => Reply::new(200),
            },
        )
        .await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let created = publish(gw.local_addr, "s").await;
    let session = created.location_path();
    let frag = corpus("gstreamer-trickle-1.sdpfrag");
    let patch = |if_match: Option<&'static str>| {
        let session = session.clone();
        let frag = frag.clone();
        let addr = gw.local_addr;
        async move {
            let mut headers = vec![("content-type", "application/trickle-ice-sdpfrag")];
            if let Some(value) = if_match {
                headers.push(("if-match", value));
            }
            send(addr, "PATCH", &session, &headers, frag).await
        }
    };

    // Not an ETag this gateway issued: 412 without asking the backend.
    let before = backend.count();
    assert_eq!(patch(Some("\"made-up\"")).await.status, 412);
    assert_eq!(backend.count(), before);
    // Missing If-Match is tolerated.
    assert_eq!(patch(None).await.status, 204);
    // ICE restart: 200, a fragment and a new ETag.
    let restarted = patch(Some("\"*\"")).await;
    assert_eq!(restarted.status, 200, "{}", restarted.body);
    assert_eq!(
        restarted.header("content-type"),
        Some("application/trickle-ice-sdpfrag")
    );
    assert!(restarted.body.starts_with("a=ice-ufrag:new1"));
    let new_etag = restarted.header("etag").expect("new etag").to_owned();
    assert_ne!(Some(new_etag.as_str()), created.header("etag"));
    assert_eq!(
        backend
            .seen()
            .last()
            .map(|s| s.header("if-match").map(str::to_owned)),
        Some(Some("*".into()))
    );
    // A stale ETag is the backend's call: its 412 comes through.
    let stale = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[
            ("content-type", "application/trickle-ice-sdpfrag"),
            ("if-match", &new_etag),
        ],
        frag.clone(),
    )
    .await;
    assert_eq!(stale.status, 412);
}

#[tokio::test]
async fn foreign_host_locations_need_an_allowed_host() {
    let resource_host = FakeBackend::start(|_| Reply::new(200)).await;
    let resource = format!("http://localhost:{}/res/7", resource_host.addr.port());
    let backend = {
        let resource = resource.clone();
        FakeBackend::start(move |_| Reply::new(201).header("location", &resource).body(answer()))
            .await
    };
    let gw = gateway(&one_backend(&backend, "")).await;
    let refused = publish(gw.local_addr, "s").await;
    assert_eq!(refused.status, 502);
    assert!(refused.body.contains("not allowed"), "{}", refused.body);
    assert!(
        !refused.body.contains("localhost"),
        "no backend internals: {}",
        refused.body
    );

    let allowed = format!(
        "allowed_hosts = [\"localhost:{}\"]",
        resource_host.addr.port()
    );
    let gw = gateway(&one_backend(&backend, &allowed)).await;
    let created = publish(gw.local_addr, "s").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let deleted = send(gw.local_addr, "DELETE", &created.location_path(), &[], "").await;
    assert_eq!(deleted.status, 200);
    let seen = resource_host.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/res/7");
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer backend-secret-token")
    );
}

#[tokio::test]
async fn redirects_are_followed_with_method_body_and_credential() {
    let backend = FakeBackend::start(|seen| match seen.path.as_str() {
        "/whip/endpoint/s" => Reply::new(307).header("location", "/v2/ingest/s"),
        "/v2/ingest/s" => Reply::new(201).header("location", "res/1").body(answer()),
        _ => Reply::new(200),
    })
    .await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let created = publish(gw.local_addr, "s").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].body, offer().as_bytes());
    assert_eq!(
        seen[1].header("authorization"),
        Some("Bearer backend-secret-token")
    );
    send(gw.local_addr, "DELETE", &created.location_path(), &[], "").await;
    assert_eq!(
        backend.seen()[2].path,
        "/v2/ingest/res/1",
        "Location resolved against the final URL"
    );
}

#[tokio::test]
async fn redirect_loops_and_foreign_redirects_are_bounded() {
    let backend = FakeBackend::start(|_| Reply::new(308).header("location", "/again")).await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let got = publish(gw.local_addr, "s").await;
    assert_eq!(got.status, 502);
    assert_eq!(backend.count(), 4, "one request and three redirects");

    let backend =
        FakeBackend::start(|_| Reply::new(307).header("location", "http://169.254.169.254/latest"))
            .await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let got = publish(gw.local_addr, "s").await;
    assert_eq!(got.status, 502);
    assert!(got.body.contains("does not allow"), "{}", got.body);
}

#[tokio::test]
async fn unauthorized_backends() {
    let backend = FakeBackend::start(|_| Reply::new(403).body("Unauthorized")).await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let got = publish(gw.local_addr, "s").await;
    assert_eq!(got.status, 502, "whipgate's own credential was refused");

    let config = one_backend(&backend, "").replace(
        "auth = { bearer_env = \"BACKEND_TOKEN\" }",
        "auth = { passthrough = true }",
    );
    let gw = gateway(&config).await;
    let got = publish(gw.local_addr, "s").await;
    assert_eq!(got.status, 401, "403 and 401 are one thing to the client");
    assert_eq!(got.header("www-authenticate"), Some("Bearer"));
}

fn failover_config(first: &str, second: &FakeBackend) -> String {
    format!(
        r#"{SERVER}
[[backend]]
id = "first"
kind = "whip"
whip_url = "{first}"

[[backend]]
id = "second"
kind = "whip"
whip_url = "{second}"

[[route]]
match = {{ kind = "whip", stream = "*" }}
backends = ["first", "second"]
"#,
        second = second.url("/whip/{stream}"),
    )
}

#[tokio::test]
async fn failover_on_refused_connection_5xx_and_timeout() {
    let good = FakeBackend::start(janus_like()).await;
    let failing = FakeBackend::start(|_| Reply::new(500).body("boom")).await;
    let hanging = FakeBackend::start(|_| Reply::new(201).delay(Duration::from_secs(30))).await;
    for first in [
        "http://127.0.0.1:1/whip/{stream}".to_owned(),
        failing.url("/whip/{stream}"),
        hanging.url("/whip/{stream}"),
    ] {
        let gw = gateway(&failover_config(&first, &good)).await;
        let started = std::time::Instant::now();
        let got = publish(gw.local_addr, "s").await;
        assert_eq!(got.status, 201, "first = {first}: {}", got.body);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert_eq!(good.count(), 3);
    assert_eq!(failing.count(), 1);
}

#[tokio::test]
async fn no_backend_able_to_serve_is_503_with_retry_after() {
    let failing = FakeBackend::start(|_| Reply::new(503).header("retry-after", "30")).await;
    let gw = gateway(&failover_config("http://127.0.0.1:1/{stream}", &failing)).await;
    let got = publish(gw.local_addr, "s").await;
    assert_eq!(got.status, 503);
    assert!(got.header("retry-after").is_some());
    assert_eq!(got.body.lines().count(), 1);
}

#[tokio::test]
async fn whep_without_a_publisher_is_409_with_retry_after() {
    for reply in [
        Reply::new(404),
        Reply::new(409).body("stream not live"),
        Reply::new(404).body("<html>not found</html>"),
    ] {
        let backend = FakeBackend::start(move |_| reply.clone()).await;
        let gw = gateway(&one_backend(&backend, "")).await;
        let got = send(
            gw.local_addr,
            "POST",
            "/whep/s",
            &[("content-type", "application/sdp")],
            corpus("chromium-whep-offer.sdp"),
        )
        .await;
        assert_eq!(got.status, 409);
        assert_eq!(got.header("retry-after"), Some("2"));
        assert_eq!(got.body, "no publisher is live on this stream\n");
    }
}

#[tokio::test]
async fn whep_happy_path_forwards_to_the_whep_url() {
    let backend = FakeBackend::start(|_| {
        Reply::new(201)
            .header("location", "/whep/resource/1")
            .body(corpus("pion-whep-answer.sdp"))
    })
    .await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let got = send(
        gw.local_addr,
        "POST",
        "/whep/live",
        &[("content-type", "application/sdp")],
        corpus("chromium-whep-offer.sdp"),
    )
    .await;
    assert_eq!(got.status, 201, "{}", got.body);
    assert_eq!(backend.seen()[0].path, "/whep/endpoint/live");
}

#[tokio::test]
async fn bad_tokens_are_404_and_never_reach_a_backend() {
    let backend = FakeBackend::start(janus_like()).await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let created = publish(gw.local_addr, "s").await;
    let session = created.location_path();
    let token = session.trim_start_matches("/session/").to_owned();
    let before = backend.count();
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let foreign = {
        // A token sealed under another key with the same id.
        let keys = whipgate::session::Keyring::new([(
            "k1".to_string(),
            "k2-secret-k2-secret-k2-secret-k2-secret",
        )])
        .expect("keys");
        keys.seal(
            &whipgate::session::SessionClaims {
                sid: "x".into(),
                backend: "b1".into(),
                resource: "http://127.0.0.1:1/evil".into(),
                kind: whipgate::kind::EndpointKind::Whip,
                stream: "s".into(),
                route: "r".into(),
                created: 0,
                expires: u64::MAX,
                subject: None,
                state: Default::default(),
            },
            [0; 12],
        )
    };
    for bad in [
        String::from_utf8(flipped).expect("ascii"),
        token[..token.len() - 5].to_owned(),
        foreign,
        "k1.".to_owned(),
        "nope".to_owned(),
        "k9.AAAA".to_owned(),
    ] {
        for method in ["PATCH", "DELETE"] {
            let got = send(
                gw.local_addr,
                method,
                &format!("/session/{bad}"),
                &[("content-type", "application/trickle-ice-sdpfrag")],
                corpus("gstreamer-trickle-1.sdpfrag"),
            )
            .await;
            assert_eq!(got.status, 404, "{method} {bad}");
            assert_eq!(got.body, "session not found\n");
        }
    }
    assert_eq!(
        backend.count(),
        before,
        "no upstream request for a bad token"
    );
}

#[tokio::test]
async fn a_second_replica_with_the_same_keys_serves_the_session() {
    let backend = FakeBackend::start(janus_like()).await;
    let config = one_backend(&backend, "");
    let first = gateway(&config).await;
    let second = gateway(&config).await;
    let created = publish(first.local_addr, "s").await;
    let session = created.location_path();
    let patched = send(
        second.local_addr,
        "PATCH",
        &session,
        &[("content-type", "application/trickle-ice-sdpfrag")],
        corpus("gstreamer-trickle-1.sdpfrag"),
    )
    .await;
    assert_eq!(patched.status, 204);
    let stranger = gateway(&config.replace("KEY1", "KEY2")).await;
    assert_eq!(
        send(stranger.local_addr, "DELETE", &session, &[], "")
            .await
            .status,
        404
    );
    assert_eq!(
        send(second.local_addr, "DELETE", &session, &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        first.gateway.registry().len(),
        1,
        "the registry is per replica"
    );
}

#[tokio::test]
async fn rotated_keys_still_open_old_sessions() {
    let backend = FakeBackend::start(janus_like()).await;
    let config = one_backend(&backend, "");
    let old = gateway(&config).await;
    let session = publish(old.local_addr, "s").await.location_path();
    let rotated = config.replace(
        "session_keys = [{ id = \"k1\", secret_env = \"KEY1\" }]",
        "session_keys = [{ id = \"k2\", secret_env = \"KEY2\" }, { id = \"k1\", secret_env = \"KEY1\" }]",
    );
    let new = gateway(&rotated).await;
    assert_eq!(
        send(new.local_addr, "DELETE", &session, &[], "")
            .await
            .status,
        200
    );
    let fresh = publish(new.local_addr, "s2").await.location_path();
    assert!(fresh.starts_with("/session/k2."));
}

#[tokio::test]
async fn offers_are_checked_before_any_backend_sees_them() {
    let backend = FakeBackend::start(janus_like()).await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let post = |path: &'static str, content_type: &'static str, body: String| {
        let addr = gw.local_addr;
        async move { send(addr, "POST", path, &[("content-type", content_type)], body).await }
    };
    let cases = [
        (
            post("/whip/s", "application/sdp", "hello world".into()).await,
            400,
        ),
        (
            post(
                "/whip/s",
                "application/sdp",
                offer().replace("m=video 9", "m=video x"),
            )
            .await,
            400,
        ),
        (post("/whip/s", "text/plain", offer()).await, 415),
        (
            post(
                "/whip/s",
                "application/sdp",
                offer().replace("a=sendonly", "a=recvonly"),
            )
            .await,
            422,
        ),
        (post("/whep/s", "application/sdp", offer()).await, 422),
        (
            post("/whip/s", "application/sdp", "v=0\r\n".repeat(20_000)).await,
            413,
        ),
        (post("/whip/..", "application/sdp", offer()).await, 400),
        (post("/whip/a%ff", "application/sdp", offer()).await, 400),
        (post("/nope/s", "application/sdp", offer()).await, 404),
    ];
    for (index, (got, status)) in cases.iter().enumerate() {
        assert_eq!(got.status, *status, "case {index}: {}", got.body);
        assert_eq!(
            got.body.lines().count(),
            1,
            "case {index}: one-line reason: {:?}",
            got.body
        );
    }
    assert_eq!(backend.count(), 0);
    let malformed = &cases[1].0.body;
    assert!(malformed.starts_with("malformed SDP: line"), "{malformed}");
}

#[tokio::test]
async fn stream_names_never_change_the_upstream_host_or_path() {
    let backend = FakeBackend::start(janus_like()).await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let names = [
        "..%2Fadmin",
        "%2e%2e%2f",
        "a%2Fb",
        "u%40evil.com",
        "a%3Fx%3D1",
        "a%23frag",
        "%20sp",
        "x".repeat(190).leak(),
    ];
    for name in names {
        let got = publish(gw.local_addr, name).await;
        assert_eq!(got.status, 201, "{name}: {}", got.body);
    }
    for seen in backend.seen() {
        let rest = seen
            .path
            .strip_prefix("/whip/endpoint/")
            .expect("prefix kept");
        assert!(!rest.contains('/'), "one segment: {}", seen.path);
        assert!(seen.query.is_none());
    }
}

#[tokio::test]
async fn options_are_answered_locally() {
    let backend = FakeBackend::start(janus_like()).await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let preflight = send(
        gw.local_addr,
        "OPTIONS",
        "/whip/s",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
        "",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    let allow_headers = preflight
        .header("access-control-allow-headers")
        .expect("allow headers");
    assert!(allow_headers.contains("Authorization") && !allow_headers.contains('*'));
    assert!(preflight
        .header("access-control-allow-methods")
        .expect("methods")
        .contains("POST"));
    assert_eq!(preflight.header("accept-post"), Some("application/sdp"));
    assert!(
        preflight.header("link").is_none(),
        "no TURN credentials on a preflight"
    );
    assert_eq!(backend.count(), 0);

    let created = send(
        gw.local_addr,
        "POST",
        "/whip/s",
        &[
            ("content-type", "application/sdp"),
            ("origin", "https://app.example"),
        ],
        offer(),
    )
    .await;
    let exposed = created
        .header("access-control-expose-headers")
        .expect("expose");
    for name in ["Location", "ETag", "Link"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let session_preflight = send(
        gw.local_addr,
        "OPTIONS",
        &created.location_path(),
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PATCH"),
        ],
        "",
    )
    .await;
    assert_eq!(session_preflight.status, 204);
    assert_eq!(
        session_preflight.header("access-control-allow-methods"),
        Some("PATCH, DELETE, OPTIONS")
    );
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn backends_without_trickle_do_not_advertise_or_take_patch() {
    let backend = FakeBackend::start(janus_like()).await;
    let gw = gateway(&one_backend(&backend, "trickle = false")).await;
    let created = publish(gw.local_addr, "s").await;
    assert!(created.header("accept-patch").is_none());
    let session = created.location_path();
    let options = send(
        gw.local_addr,
        "OPTIONS",
        &session,
        &[("origin", "x"), ("access-control-request-method", "DELETE")],
        "",
    )
    .await;
    assert_eq!(
        options.header("access-control-allow-methods"),
        Some("DELETE, OPTIONS")
    );
    let patched = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[("content-type", "application/trickle-ice-sdpfrag")],
        corpus("gstreamer-trickle-1.sdpfrag"),
    )
    .await;
    assert_eq!(patched.status, 405);
    assert_eq!(patched.header("allow"), Some("DELETE, OPTIONS"));
    assert_eq!(backend.count(), 1);

    let refusing = FakeBackend::start(|seen| match seen.method.as_str() {
        "POST" => Reply::new(201).header("location", "/r").body(answer()),
        _ => Reply::new(405),
    })
    .await;
    let gw = gateway(&one_backend(&refusing, "")).await;
    let session = publish(gw.local_addr, "s").await.location_path();
    let patched = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[("content-type", "application/trickle-ice-sdpfrag")],
        corpus("gstreamer-trickle-1.sdpfrag"),
    )
    .await;
    assert_eq!(patched.status, 405);
}

#[tokio::test]
async fn get_head_and_unknown_methods() {
    let backend = FakeBackend::start(janus_like()).await;
    let gw = gateway(&one_backend(&backend, "")).await;
    assert_eq!(
        send(gw.local_addr, "GET", "/whip/s", &[], "").await.status,
        204
    );
    let head = send(gw.local_addr, "HEAD", "/whep/s", &[], "").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/sdp"));
    let put = send(gw.local_addr, "PUT", "/whip/s", &[], "").await;
    assert_eq!(put.status, 405);
    assert!(put.header("allow").expect("allow").contains("POST"));
    assert_eq!(
        send(gw.local_addr, "GET", "/session/abc", &[], "")
            .await
            .status,
        405
    );
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn unusable_answers_are_502_and_the_backend_session_is_released() {
    let backend = FakeBackend::start(|seen| match seen.method.as_str() {
        "POST" => Reply::new(201)
            .header("location", "/r/9")
            .body("this is not sdp"),
        _ => Reply::new(200),
    })
    .await;
    let gw = gateway(&one_backend(&backend, "")).await;
    let got = publish(gw.local_addr, "s").await;
    assert_eq!(got.status, 502);
    wait_for_requests(&backend, 2).await;
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("DELETE", "/r/9")
    );
}

#[tokio::test]
async fn no_route_is_404() {
    let backend = FakeBackend::start(janus_like()).await;
    let config = one_backend(&backend, "").replace(
        "[[route]]\nbackends",
        "[[route]]\nmatch = { stream = \"cam-*\" }\nbackends",
    );
    let gw = gateway(&config).await;
    let got = publish(gw.local_addr, "other").await;
    assert_eq!(got.status, 404);
    assert_eq!(publish(gw.local_addr, "cam-1").await.status, 201);
}

#[tokio::test]
async fn route_policy_rewrites_the_offer_and_refuses_what_no_backend_takes() {
    let backend = FakeBackend::start(janus_like()).await;
    let config = one_backend(&backend, "").replace(
        "[[route]]\nbackends = [\"b1\"]",
        "[[route]]\nbackends = [\"b1\"]\nsdp = { video_codecs = [\"H264\"], drop_candidates = [\"tcp\"] }",
    );
    let gw = gateway(&config).await;
    let created = publish(gw.local_addr, "s").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let sent = String::from_utf8_lossy(&backend.seen()[0].body).into_owned();
    assert!(!sent.contains("VP8/90000"));
    assert!(sent.contains("H264/90000"));
    assert!(!sent.contains(" tcp "));

    let patched = send(
        gw.local_addr,
        "PATCH",
        &created.location_path(),
        &[("content-type", "application/trickle-ice-sdpfrag")],
        corpus("gstreamer-trickle-1.sdpfrag"),
    )
    .await;
    assert_eq!(patched.status, 204);
    let fragment = String::from_utf8_lossy(&backend.seen()[1].body).into_owned();
    assert!(!fragment.contains("TCP"), "{fragment}");
    assert!(fragment.contains("UDP"));

    let refused = send(
        gw.local_addr,
        "POST",
        "/whip/s",
        &[("content-type", "application/sdp")],
        corpus("gstreamer-whip-offer.sdp"),
    )
    .await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.body,
        "backend accepts only H264 for video, offer has VP8\n"
    );
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn a_backend_whose_policy_refuses_is_skipped_for_one_that_accepts() {
    let h264_only = FakeBackend::start(janus_like()).await;
    let anything = FakeBackend::start(janus_like()).await;
    let config = format!(
        r#"{SERVER}
[[backend]]
id = "h264"
kind = "whip"
whip_url = "{first}"
sdp = {{ video_codecs = ["H264"] }}

[[backend]]
id = "any"
kind = "whip"
whip_url = "{second}"

[[route]]
backends = ["h264", "any"]
"#,
        first = h264_only.url("/whip/{stream}"),
        second = anything.url("/whip/{stream}"),
    );
    let gw = gateway(&config).await;
    let got = send(
        gw.local_addr,
        "POST",
        "/whip/s",
        &[("content-type", "application/sdp")],
        corpus("gstreamer-whip-offer.sdp"),
    )
    .await;
    assert_eq!(
        got.status, 502,
        "Janus's answer does not answer GStreamer's offer: {}",
        got.body
    );
    assert_eq!(h264_only.count(), 0);
    wait_for_requests(&anything, 2).await;
    assert_eq!(
        anything.count(),
        2,
        "POST, then the release of the unusable session"
    );
}

/// The gateway releases unusable backend sessions in the background.
async fn wait_for_requests(backend: &FakeBackend, count: usize) {
    for _ in 0..100 {
        if backend.count() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The answer policy applies to every SDP whipgate returns: an ICE restart's fragment too.
#[tokio::test]
async fn an_ice_restart_fragment_gets_the_answer_policy() {
    let backend = FakeBackend::start(|seen| match seen.method.as_str() {
        "POST" => Reply::new(201)
            .header("location", "/r/1")
            .header("etag", "\"v1\"")
            .body(answer()),
        "PATCH" => Reply::new(200)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .header("etag", "\"v2\"")
            .body(
                "a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword12\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                 a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n\
                 a=candidate:2 1 udp 2130706431 192.168.1.9 40001 typ host\r\n",
            ),
        _ => Reply::new(200),
    })
    .await;
    let gw = gateway(&one_backend(
        &backend,
        "sdp = { answer = { address_map = { \"10.0.0.5\" = \"203.0.113.7\" }, drop_candidates = [\"private\"] } }",
    ))
    .await;
    let created = publish(gw.local_addr, "s").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let restarted = send(
        gw.local_addr,
        "PATCH",
        &created.location_path(),
        &[
            ("content-type", "application/trickle-ice-sdpfrag"),
            ("if-match", "*"),
        ],
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdabcdabcdabcdabcdabcd\r\n",
    )
    .await;
    assert_eq!(restarted.status, 200, "{}", restarted.body);
    assert!(
        restarted.body.contains("203.0.113.7 40000"),
        "address not mapped: {}",
        restarted.body
    );
    assert!(
        !restarted.body.contains("192.168.1.9"),
        "private candidate not dropped: {}",
        restarted.body
    );
}
