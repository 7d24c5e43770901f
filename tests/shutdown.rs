//! SIGTERM during a request loop: the listener closes, every request already accepted is
//! answered, the process exits 0.

mod support;

use std::time::Duration;

use support::{corpus, FakeBackend, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_accepted_requests_and_exits_zero() {
    // A slow backend keeps requests in flight when the signal arrives.
    let backend = FakeBackend::start(|seen| match seen.method.as_str() {
        "POST" => Reply::new(201)
            .header("location", "/r/1")
            .body(corpus("janus-whip-answer.sdp"))
            .delay(Duration::from_millis(300)),
        _ => Reply::new(200),
    })
    .await;
    let dir = std::env::temp_dir().join(format!("whipgate-shutdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
             [[backend]]\nid = \"slow\"\nkind = \"whip\"\nwhip_url = \"{}\"\n[[route]]\nbackends = [\"slow\"]\n",
            backend.url("/whip/{stream}")
        ),
    )
    .expect("write");
    let served = support::spawn_serve(&path, &[], &[]);
    let address = served.address;

    // 20 requests on their own connections, then SIGTERM while they wait on the backend.
    let mut requests = Vec::new();
    for n in 0..20 {
        requests.push(tokio::spawn(async move {
            let offer = corpus("chromium-whip-offer-vp8.sdp");
            let stream = tokio::net::TcpStream::connect(address).await.ok()?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .ok()?;
            tokio::spawn(connection);
            let request = http::Request::post(format!("/whip/s{n}"))
                .header("host", "gw")
                .header("content-type", "application/sdp")
                .body(http_body_util::Full::new(bytes::Bytes::from(offer)))
                .ok()?;
            // The request is accepted once it is on the wire; from here it must not fail.
            Some(
                sender
                    .send_request(request)
                    .await
                    .map(|r| r.status().as_u16()),
            )
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let finished = tokio::task::spawn_blocking(move || served.finish());
    let mut answered = 0;
    for request in requests {
        match request.await.expect("task") {
            Some(Ok(status)) => {
                assert_eq!(status, 201);
                answered += 1;
            }
            Some(Err(error)) => panic!("an accepted request failed: {error}"),
            None => {}
        }
    }
    assert_eq!(
        answered, 20,
        "all 20 were accepted before the signal and all were answered"
    );
    let (exit, _) = finished.await.expect("join");
    assert!(exit.success(), "{exit:?}");
    // After shutdown nothing listens any more.
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends one POST on an already open connection; its status, or why it got none.
async fn post_on(stream: tokio::net::TcpStream, n: usize) -> Result<u16, String> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::post(format!("/whip/late{n}"))
        .header("host", "gw")
        .header("content-type", "application/sdp")
        .body(http_body_util::Full::new(bytes::Bytes::from(corpus(
            "chromium-whip-offer-vp8.sdp",
        ))))
        .map_err(|e| e.to_string())?;
    sender
        .send_request(request)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Balancers keep sending for a moment after SIGTERM, and a connection can be open before
/// its request arrives: both are served during `shutdown_drain`, while readiness fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_serves_connections_opened_before_and_just_after_it() {
    let backend = FakeBackend::start(support::whip_server()).await;
    let dir = std::env::temp_dir().join(format!("whipgate-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_drain = \"2s\"\n\
             [[backend]]\nid = \"b\"\nkind = \"whip\"\nwhip_url = \"{}\"\n[[route]]\nbackends = [\"b\"]\n",
            backend.url("/whip/{stream}")
        ),
    )
    .expect("write");
    let served = support::spawn_serve(&path, &[], &[]);
    let address = served.address;
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(
            tokio::net::TcpStream::connect(address)
                .await
                .expect("connect"),
        );
    }
    let ready_before = support::send(address, "GET", "/readyz", &[], "")
        .await
        .status;
    assert_eq!(ready_before, 200);
    served.signal("TERM");
    support::wait_until("readiness to fail after SIGTERM", || async {
        support::send(address, "GET", "/readyz", &[], "")
            .await
            .status
            == 503
    })
    .await;
    let mut requests = Vec::new();
    for (n, stream) in silent.into_iter().enumerate() {
        requests.push(tokio::spawn(post_on(stream, n)));
    }
    for n in 10..50 {
        requests.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .map_err(|e| e.to_string())?;
            post_on(stream, n).await
        }));
    }
    let mut failures = Vec::new();
    for request in requests {
        match request.await.expect("task") {
            Ok(201) => {}
            other => failures.push(format!("{other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "10 connections opened before SIGTERM and 40 after it must all be served: {failures:?}"
    );
    let (exit, _) = tokio::task::spawn_blocking(move || served.finish_exited())
        .await
        .expect("join");
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
