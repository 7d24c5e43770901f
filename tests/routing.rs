//! Vendor routing through the gateway: matching, weighted placement, overflow, circuit
//! breaking, health checks, WHEP following publishers.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{gateway, metric, post_offer, send, wait_until, whip_server, FakeBackend, Reply};

const SERVER: &str = r#"
[server]
public_url = "https://gw.example.com"
session_keys = [{ id = "k1", secret_env = "KEY1" }]
upstream_timeout = "500ms"
connect_timeout = "500ms"
trusted_proxies = ["127.0.0.1/32"]
"#;

fn backend(id: &str, fake: &FakeBackend, extra: &str) -> String {
    format!(
        "[[backend]]\nid = \"{id}\"\nkind = \"whip\"\nwhip_url = \"{}\"\nwhep_url = \"{}\"\n{extra}\n",
        fake.url("/whip/{stream}"),
        fake.url("/whep/{stream}")
    )
}

#[tokio::test]
async fn weighted_split_places_streams_by_weight_and_viewers_follow() {
    let a = FakeBackend::start(whip_server()).await;
    let b = FakeBackend::start(whip_server()).await;
    let config = format!(
        "{SERVER}{}{}[[route]]\nsplit = [{{ backend = \"a\", weight = 70 }}, {{ backend = \"b\", weight = 30 }}]\n",
        backend("a", &a, ""),
        backend("b", &b, "")
    );
    let gw = gateway(&config).await;
    for n in 0..100 {
        let got = post_offer(gw.local_addr, &format!("/whip/cam-{n}"), &[]).await;
        assert_eq!(got.status, 201, "{}", got.body);
    }
    let (on_a, on_b) = (a.count(), b.count());
    assert_eq!(on_a + on_b, 100);
    assert!(
        (55..=85).contains(&on_a),
        "a got {on_a} of 100 at weight 70"
    );
    // Every viewer reaches the backend its publisher is on.
    for n in 0..100 {
        let stream = format!("cam-{n}");
        let publisher_on_a = a.seen().iter().any(|s| s.path == format!("/whip/{stream}"));
        post_offer(gw.local_addr, &format!("/whep/{stream}"), &[]).await;
        let viewer_on_a = a.seen().iter().any(|s| s.path == format!("/whep/{stream}"));
        assert_eq!(publisher_on_a, viewer_on_a, "{stream}");
    }
    // A second replica built from the same file places every stream the same way.
    let other = gateway(&config).await;
    for n in 0..20 {
        let before = a.count();
        post_offer(other.local_addr, &format!("/whip/cam-{n}"), &[]).await;
        let again_on_a = a.count() > before;
        let first_on_a = a
            .seen()
            .iter()
            .filter(|s| s.path == format!("/whip/cam-{n}"))
            .count()
            == 2;
        assert_eq!(again_on_a, first_on_a, "cam-{n}");
    }
}

#[tokio::test]
async fn regex_captures_fill_the_url_template() {
    let vendor = FakeBackend::start(whip_server()).await;
    let config = format!(
        "{SERVER}[[backend]]\nid = \"v\"\nkind = \"whip\"\nwhip_url = \"{}\"\n\
         [[route]]\nmatch = {{ stream_regex = \"(?P<tenant>[a-z]+)-(?P<cam>[0-9]+)\" }}\nbackends = [\"v\"]\n",
        vendor.url("/live/{tenant}/cams/{cam}")
    );
    let gw = gateway(&config).await;
    assert_eq!(
        post_offer(gw.local_addr, "/whip/acme-42", &[]).await.status,
        201
    );
    assert_eq!(vendor.seen()[0].path, "/live/acme/cams/42");
    assert_eq!(
        post_offer(gw.local_addr, "/whip/acme-x", &[]).await.status,
        404
    );
}

#[tokio::test]
async fn host_header_query_and_client_address_pick_routes() {
    let premium = FakeBackend::start(whip_server()).await;
    let internal = FakeBackend::start(whip_server()).await;
    let eu = FakeBackend::start(whip_server()).await;
    let rest = FakeBackend::start(whip_server()).await;
    let config = format!(
        "{SERVER}{}{}{}{}\
         [[route]]\nid = \"premium\"\nmatch = {{ headers = {{ \"x-tier\" = \"premium\" }} }}\nbackends = [\"premium\"]\n\
         [[route]]\nid = \"internal\"\nmatch = {{ client_cidr = [\"10.0.0.0/8\"] }}\nbackends = [\"internal\"]\n\
         [[route]]\nid = \"eu\"\nmatch = {{ host = \"eu.*\", query = {{ region = \"eu\" }} }}\nbackends = [\"eu\"]\n\
         [[route]]\nid = \"rest\"\nbackends = [\"rest\"]\n",
        backend("premium", &premium, ""),
        backend("internal", &internal, ""),
        backend("eu", &eu, ""),
        backend("rest", &rest, ""),
    );
    let gw = gateway(&config).await;
    post_offer(gw.local_addr, "/whip/a", &[("x-tier", "premium")]).await;
    // The test client is 127.0.0.1, a trusted proxy: its X-Forwarded-For names the client.
    post_offer(gw.local_addr, "/whip/b", &[("x-forwarded-for", "10.2.3.4")]).await;
    post_offer(
        gw.local_addr,
        "/whip/c?region=eu",
        &[("host", "eu.gw.example.com")],
    )
    .await;
    post_offer(
        gw.local_addr,
        "/whip/d?region=us",
        &[("host", "eu.gw.example.com")],
    )
    .await;
    post_offer(
        gw.local_addr,
        "/whip/e",
        &[("x-forwarded-for", "192.0.2.1")],
    )
    .await;
    assert_eq!(
        (premium.count(), internal.count(), eu.count(), rest.count()),
        (1, 1, 1, 2)
    );
}

#[tokio::test]
async fn full_backends_overflow_to_the_next() {
    let small = FakeBackend::start(whip_server()).await;
    let big = FakeBackend::start(whip_server()).await;
    let config = format!(
        "{SERVER}{}{}[[route]]\nbackends = [\"small\"]\noverflow = [\"big\"]\n",
        backend("small", &small, "max_sessions = 2"),
        backend("big", &big, "")
    );
    let gw = gateway(&config).await;
    let first = post_offer(gw.local_addr, "/whip/s1", &[]).await;
    post_offer(gw.local_addr, "/whip/s2", &[]).await;
    post_offer(gw.local_addr, "/whip/s3", &[]).await;
    assert_eq!(
        (small.count(), big.count()),
        (2, 1),
        "the third session overflows"
    );
    send(gw.local_addr, "DELETE", &first.location_path(), &[], "").await;
    post_offer(gw.local_addr, "/whip/s4", &[]).await;
    assert_eq!(
        small.count(),
        4,
        "a freed place is used again (2 POSTs, 1 DELETE, 1 POST)"
    );
}

#[tokio::test]
async fn failing_backends_open_their_circuit_and_come_back() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flaky = {
        let healthy = healthy.clone();
        let normal = whip_server();
        FakeBackend::start(move |seen| {
            if healthy.load(Ordering::SeqCst) {
                normal(seen)
            } else {
                Reply::new(500)
            }
        })
        .await
    };
    let spare = FakeBackend::start(whip_server()).await;
    let config = format!(
        "{SERVER}{}{}[[route]]\nbackends = [\"flaky\", \"spare\"]\n",
        backend(
            "flaky",
            &flaky,
            "circuit = { failures = 2, cooldown = \"2s\" }"
        ),
        backend("spare", &spare, "")
    );
    let gw = gateway(&config).await;
    for n in 0..5 {
        assert_eq!(
            post_offer(gw.local_addr, &format!("/whip/s{n}"), &[])
                .await
                .status,
            201
        );
    }
    assert_eq!(
        flaky.count(),
        2,
        "after two failures the circuit is open: no more requests"
    );
    assert_eq!(spare.count(), 5);
    healthy.store(true, Ordering::SeqCst);
    gw.gateway.clock().advance(Duration::from_millis(2100));
    assert_eq!(
        post_offer(gw.local_addr, "/whip/back", &[]).await.status,
        201
    );
    assert_eq!(
        flaky.count(),
        3,
        "the trial after the cooldown went to the recovered backend"
    );
    post_offer(gw.local_addr, "/whip/again", &[]).await;
    assert_eq!(flaky.count(), 4, "closed again");
}

#[tokio::test]
async fn retry_after_from_a_backend_is_honoured() {
    let resting = FakeBackend::start(|_| Reply::new(503).header("retry-after", "2")).await;
    let spare = FakeBackend::start(whip_server()).await;
    let config = format!(
        "{SERVER}{}{}[[route]]\nbackends = [\"resting\", \"spare\"]\n",
        backend("resting", &resting, ""),
        backend("spare", &spare, "")
    );
    let gw = gateway(&config).await;
    post_offer(gw.local_addr, "/whip/a", &[]).await;
    post_offer(gw.local_addr, "/whip/b", &[]).await;
    assert_eq!(
        resting.count(),
        1,
        "the second request left the resting backend alone"
    );
    gw.gateway.clock().advance(Duration::from_millis(2100));
    post_offer(gw.local_addr, "/whip/c", &[]).await;
    assert_eq!(resting.count(), 2);
}

#[tokio::test]
async fn active_health_checks_take_a_backend_out_and_bring_it_back() {
    let probes = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(AtomicBool::new(false));
    let checked = {
        let (probes, up) = (probes.clone(), up.clone());
        let normal = whip_server();
        FakeBackend::start(move |seen| {
            if seen.path == "/health" {
                probes.fetch_add(1, Ordering::SeqCst);
                return Reply::new(if up.load(Ordering::SeqCst) { 200 } else { 503 });
            }
            normal(seen)
        })
        .await
    };
    let spare = FakeBackend::start(whip_server()).await;
    let check = format!(
        "health_check = {{ url = \"{}\", interval = \"100ms\", timeout = \"200ms\", rise = 1, fall = 1 }}",
        checked.url("/health")
    );
    let config = format!(
        "{SERVER}{}{}[[route]]\nbackends = [\"checked\", \"spare\"]\n",
        backend("checked", &checked, &check),
        backend("spare", &spare, "")
    );
    let gw = gateway(&config).await;
    let healthy = |expected: f64| {
        let addr = gw.local_addr;
        move || async move {
            metric(addr, "whipgate_backend_healthy{backend=\"checked\"}").await == Some(expected)
        }
    };
    wait_until("the failing probe to take the backend out", healthy(0.0)).await;
    post_offer(gw.local_addr, "/whip/a", &[]).await;
    let posts_to_checked = || checked.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(
        posts_to_checked(),
        0,
        "failing its health check, the backend got no session"
    );
    up.store(true, Ordering::SeqCst);
    wait_until("a passing probe to bring the backend back", healthy(1.0)).await;
    post_offer(gw.local_addr, "/whip/b", &[]).await;
    assert_eq!(posts_to_checked(), 1, "back after a passing probe");
}

#[tokio::test]
async fn whep_falls_through_to_the_backend_that_has_the_publisher() {
    let empty = FakeBackend::start(|_| Reply::new(404).body("no such stream")).await;
    let live = FakeBackend::start(whip_server()).await;
    let config = format!(
        "{SERVER}{}{}[[route]]\nbackends = [\"empty\", \"live\"]\n",
        backend("empty", &empty, ""),
        backend("live", &live, "")
    );
    let gw = gateway(&config).await;
    let got = post_offer(gw.local_addr, "/whep/show", &[]).await;
    assert_eq!(got.status, 201, "{}", got.body);
    assert_eq!((empty.count(), live.count()), (1, 1));
    let config = format!(
        "{SERVER}{}[[route]]\nbackends = [\"empty\"]\n",
        backend("empty", &empty, "")
    );
    let gw = gateway(&config).await;
    let got = post_offer(gw.local_addr, "/whep/show", &[]).await;
    assert_eq!(got.status, 409);
    assert!(got.header("retry-after").is_some());
}

/// A backend that dies with the request in flight (it read the request, then closed) is
/// failed over like one that timed out.
#[tokio::test]
async fn a_backend_dying_mid_exchange_is_failed_over() {
    let dying = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dying_addr = dying.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        while let Ok((mut socket, _)) = dying.accept().await {
            let mut buffer = vec![0u8; 65536];
            let _ = socket.read(&mut buffer).await;
            drop(socket);
        }
    });
    let next = FakeBackend::start(whip_server()).await;
    let gw = gateway(&format!(
        "[[backend]]\nid = \"dying\"\nkind = \"whip\"\nwhip_url = \"http://{dying_addr}/whip/{{stream}}\"\n\
         [[backend]]\nid = \"next\"\nkind = \"whip\"\nwhip_url = \"{}\"\n\
         [[route]]\nbackends = [\"dying\", \"next\"]\n",
        next.url("/whip/{stream}")
    ))
    .await;
    let created = post_offer(gw.local_addr, "/whip/cam", &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(next.count(), 1);
}

/// max_sessions holds under concurrency: ten POSTs at once to a backend that takes a while
/// to answer, with room for two, give two sessions.
#[tokio::test]
async fn max_sessions_holds_for_concurrent_requests() {
    let slow =
        FakeBackend::start(move |seen| whip_server()(seen).delay(Duration::from_millis(300))).await;
    let gw = gateway(&format!(
        "[[backend]]\nid = \"slow\"\nkind = \"whip\"\nwhip_url = \"{}\"\nmax_sessions = 2\n\
         [[route]]\nbackends = [\"slow\"]\n",
        slow.url("/whip/{stream}")
    ))
    .await;
    let attempts = (0..10).map(|i| {
        let addr = gw.local_addr;
        async move {
            post_offer(addr, &format!("/whip/cam-{i}"), &[])
                .await
                .status
        }
    });
    let statuses = futures_join(attempts).await;
    let created = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(created, 2, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 503),
        "{statuses:?}"
    );
}

async fn futures_join<F: std::future::Future<Output = u16> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}
