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
