//! Hostile input at the front door: session tokens replayed after expiry, stream names built
//! to escape the backend's path, and secrets that must not leak into anything a client, a
//! log or a metric shows. (Tampered, truncated and foreign-key tokens: tests/frontdoor.rs;
//! JWT `alg: none`, wrong keys and expiry: tests/auth.rs.)

mod support;

use std::time::Duration;

use support::{corpus, gateway, post_offer, send, whip_server, FakeBackend};

fn config(backend: &FakeBackend, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n\
         [[backend]]\nid = \"b\"\nkind = \"whip\"\nwhip_url = \"{}\"\n\
         [[route]]\nid = \"r\"\nbackends = [\"b\"]\n",
        backend.url("/whip/endpoint/{stream}")
    )
}

#[tokio::test]
async fn a_token_replayed_after_expiry_never_reaches_the_backend() {
    let backend = FakeBackend::start(whip_server()).await;
    let gw = gateway(&config(&backend, "session_ttl = \"1s\"")).await;
    let created = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[("content-type", "application/sdp")],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(created.status, 201);
    let session = created.location_path();
    gw.gateway.clock().advance(Duration::from_millis(2100));
    let before = backend.count();
    for method in ["PATCH", "DELETE"] {
        let got = send(
            gw.local_addr,
            method,
            &session,
            &[("content-type", "application/trickle-ice-sdpfrag")],
            corpus("gstreamer-trickle-1.sdpfrag"),
        )
        .await;
        assert_eq!(got.status, 404, "{method}");
    }
    assert_eq!(backend.count(), before, "an expired token goes nowhere");
}

#[tokio::test]
async fn hostile_stream_names_are_refused_or_stay_one_path_segment() {
    let backend = FakeBackend::start(whip_server()).await;
    let gw = gateway(&config(&backend, "")).await;
    let post = |name: String| {
        let addr = gw.local_addr;
        async move {
            send(
                addr,
                "POST",
                &format!("/whip/{name}"),
                &[("content-type", "application/sdp")],
                corpus("chromium-whip-offer-vp8.sdp"),
            )
            .await
        }
    };
    // Refused before any backend is asked: control characters, dot segments, too long.
    let kilobyte = "a".repeat(1024);
    for name in [
        "a%0D%0AHost:%20evil",
        "%0A",
        "..",
        "%2E%2E",
        ".",
        kilobyte.as_str(),
    ] {
        let got = post(name.to_owned()).await;
        assert_eq!(got.status, 400, "{name}: {}", got.body);
        assert_eq!(got.body.lines().count(), 1, "one line: {}", got.body);
    }
    assert_eq!(backend.count(), 0);
    // Accepted: they reach the backend as one percent-encoded segment of the template path,
    // on the template's host, without a query or fragment.
    for name in [
        "..%2F..%2Fadmin",
        "%2e%2e%2fx",
        "a%2Fb",
        "user%40evil.example",
        "a%3Fx%3D1",
        "a%23frag",
        "%5C..%5Cx",
    ] {
        let got = post(name.to_owned()).await;
        assert_eq!(got.status, 201, "{name}: {}", got.body);
    }
    for seen in backend.seen() {
        let rest = seen
            .path
            .strip_prefix("/whip/endpoint/")
            .expect("the template's path prefix is kept");
        assert!(
            !rest.contains('/') && !rest.contains('?') && !rest.contains('#'),
            "{}",
            seen.path
        );
        assert!(rest != ".." && rest != ".", "no dot segment: {}", seen.path);
        assert!(seen.query.is_none());
    }
}

#[tokio::test]
async fn a_vendor_key_in_the_url_template_reaches_only_the_backend() {
    let backend = FakeBackend::start(whip_server()).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[backend]]\nid = \"vendor\"\nkind = \"whip\"\n\
         whip_url = \"{}\"\nurl_key_env = \"BACKEND_TOKEN\"\n\
         [[route]]\nid = \"r\"\nbackends = [\"vendor\"]\n",
        backend.url("/ingest/{key}/{stream}")
    );
    let gw = gateway(&text).await;
    let created = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[
            ("content-type", "application/sdp"),
            ("authorization", "Bearer client-token"),
        ],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let seen = &backend.seen()[0];
    assert_eq!(seen.path, "/ingest/backend-secret-token/cam");
    assert!(
        seen.header("authorization").is_none(),
        "the client's token is not forwarded"
    );
    let shown = format!("{:?}{}", created.headers, created.body);
    assert!(!shown.contains("backend-secret-token"));
    // A template with {key} needs the key, and the other way round.
    for (template, key) in [
        ("/ingest/{key}/{stream}", ""),
        ("/ingest/{stream}", "url_key_env = \"BACKEND_TOKEN\"\n"),
    ] {
        let text = format!(
            "[[backend]]\nid = \"v\"\nkind = \"whip\"\nwhip_url = \"http://v.test{template}\"\n{key}\
             [[route]]\nbackends = [\"v\"]\n"
        );
        let error = whipgate::config::Config::from_toml(
            &text,
            "t.toml",
            std::path::Path::new("."),
            whipgate::config::SecretMode::Resolve,
            &support::TestSecrets,
        )
        .expect_err(template);
        assert!(error.to_string().contains("go together"), "{error}");
        assert!(!error.to_string().contains("backend-secret-token"));
    }
}

/// A raw TCP client: writes `first`, then waits; returns what the server sent and how long
/// until it answered or closed.
async fn stall(addr: std::net::SocketAddr, first: &[u8], limit: Duration) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(first).await.expect("write");
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn slow_clients_cannot_hold_a_connection() {
    let backend = FakeBackend::start(whip_server()).await;
    let gw = gateway(&config(
        &backend,
        "header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\nrequest_timeout = \"30s\"",
    ))
    .await;
    // Not a byte: closed after header_read_timeout too (hyper alone would wait forever).
    let (_, waited) = stall(gw.local_addr, b"", Duration::from_secs(6)).await;
    assert!(
        waited < Duration::from_secs(4),
        "silent connection: closed after {waited:?}"
    );
    // Half a request head, then nothing: the connection is closed after header_read_timeout.
    let (_, waited) = stall(
        gw.local_addr,
        b"POST /whip/cam HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(6),
    )
    .await;
    assert!(
        waited < Duration::from_secs(4),
        "head: closed after {waited:?}"
    );
    // A head promising 4000 bytes of body, then 10: 408 after body_read_timeout.
    let head = b"POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 4000\r\n\r\nv=0\r\no=- 1";
    let (answer, waited) = stall(gw.local_addr, head, Duration::from_secs(6)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        waited < Duration::from_secs(4),
        "body: answered after {waited:?}"
    );
    assert_eq!(backend.count(), 0);
}

/// A reload that re-points a backend id at another vendor must not send the new vendor's
/// credential to the sessions the old one holds.
#[tokio::test]
async fn a_re_pointed_backend_sends_its_credential_only_to_its_own_hosts() {
    let old_vendor = FakeBackend::start(whip_server()).await;
    let new_vendor = FakeBackend::start(whip_server()).await;
    let table = |url: String| {
        format!(
            "[server]\nsession_keys = [{{ id = \"k1\", secret_env = \"KEY1\" }}]\n\
             [[backend]]\nid = \"vendor\"\nkind = \"whip\"\nwhip_url = \"{url}\"\n\
             auth = {{ bearer_env = \"BACKEND_TOKEN\" }}\n[[route]]\nbackends = [\"vendor\"]\n"
        )
    };
    let gw = gateway(&table(old_vendor.url("/whip/{stream}"))).await;
    let created = post_offer(gw.local_addr, "/whip/cam", &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        old_vendor.seen()[0].header("authorization"),
        Some("Bearer backend-secret-token")
    );
    gw.gateway
        .apply(support::config(&table(new_vendor.url("/whip/{stream}"))))
        .expect("reload");
    let deleted = send(gw.local_addr, "DELETE", &created.location_path(), &[], "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let delete = old_vendor
        .seen()
        .into_iter()
        .find(|s| s.method == "DELETE")
        .expect("the DELETE still reaches the session's own host");
    assert_eq!(
        delete.header("authorization"),
        None,
        "the re-pointed backend's credential went to a host it does not use"
    );
    assert_eq!(new_vendor.count(), 0);
}

/// A request head larger than `max_header_bytes` is refused, and the gateway keeps serving.
#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let backend = FakeBackend::start(whip_server()).await;
    let gw = gateway(&config(&backend, "max_header_bytes = 16384")).await;
    let big = "x".repeat(64 * 1024);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let (answer, _) = stall(gw.local_addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
        "a 64 KiB head was answered: {}",
        answer.lines().next().unwrap_or("")
    );
    let ok = send(gw.local_addr, "GET", "/healthz", &[], "").await;
    assert_eq!(ok.status, 200);
}

/// Keep-alive and HTTP/2 connections with nothing in flight are closed once idle, so that
/// idle clients cannot hold file descriptors; traffic or a running request keeps them.
#[tokio::test]
async fn idle_keep_alive_and_http2_connections_are_closed() {
    use tokio::io::AsyncReadExt;
    let backend = FakeBackend::start(whip_server()).await;
    let gw = gateway(&config(&backend, "connection_idle_timeout = \"1s\"")).await;
    // HTTP/1.1: one request answered, then the connection idles.
    let (answer, waited) = stall(
        gw.local_addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(6),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "keep-alive connection closed after {waited:?}"
    );
    // HTTP/2 with prior knowledge: a request, then nothing.
    let stream = tokio::net::TcpStream::connect(gw.local_addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    let closed = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let _ = connection.await;
        started.elapsed()
    });
    let request = http::Request::get("http://x/healthz")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 request");
    assert_eq!(response.status(), 200);
    let waited = tokio::time::timeout(Duration::from_secs(6), closed)
        .await
        .expect("the idle HTTP/2 connection is closed")
        .expect("join");
    assert!(
        waited < Duration::from_secs(4),
        "h2 closed after {waited:?}"
    );
    // A connection that keeps talking stays open past the limit.
    let mut stream = tokio::net::TcpStream::connect(gw.local_addr)
        .await
        .expect("connect");
    for _ in 0..4 {
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("still open");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0 && buf.starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
