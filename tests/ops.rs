//! What ops watch: metrics, health and readiness, the session listing, several replicas.

mod support;

use support::{gateway, post_offer, send, whip_server, FakeBackend, Reply};

fn config(good: &FakeBackend, bad: &FakeBackend) -> String {
    format!(
        r#"
[server]
public_url = "https://gw.example.com"
session_keys = [{{ id = "k1", secret_env = "KEY1" }}]
admin_token_env = "KEY2"
upstream_timeout = "500ms"

[[backend]]
id = "flaky"
kind = "whip"
whip_url = "{bad}"
circuit = {{ failures = 1, cooldown = "60s" }}

[[backend]]
id = "janus"
kind = "whip"
whip_url = "{good}"
whep_url = "{good}"
cost_per_minute = 0.5

[[route]]
id = "main"
backends = ["flaky", "janus"]
sdp = {{ video_codecs = ["VP8", "H264"] }}
"#,
        bad = bad.url("/whip/{stream}"),
        good = good.url("/whip/{stream}"),
    )
}

/// The value of `series`; a series that is not there fails the test (it is not a zero).
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

#[tokio::test]
async fn invented_methods_and_paths_add_no_series_and_backends_show_from_the_start() {
    let good = FakeBackend::start(whip_server()).await;
    let bad = FakeBackend::start(|_| Reply::new(500)).await;
    let gw = gateway(&config(&good, &bad)).await;
    let metrics = send(gw.local_addr, "GET", "/metrics", &[], "").await.body;
    for series in [
        "whipgate_sessions_live{backend=\"janus\",kind=\"whip\",route=\"main\"} 0",
        "whipgate_sessions_live{backend=\"janus\",kind=\"whep\",route=\"main\"} 0",
        "whipgate_session_seconds_total{backend=\"janus\"} 0",
        "whipgate_cost_estimate_total{backend=\"flaky\"} 0",
    ] {
        assert!(
            metrics.contains(series),
            "missing {series} before any session"
        );
    }
    let series = |text: &str| text.lines().filter(|l| l.starts_with("whipgate_")).count();
    // One invented method and path first, so their shared label set exists.
    send(gw.local_addr, "BREW", "/coffee", &[], "").await;
    let before = series(&send(gw.local_addr, "GET", "/metrics", &[], "").await.body);
    for i in 0..2000 {
        let method = format!("M{i:04}X");
        send(gw.local_addr, &method, &format!("/p{i}/q{i}"), &[], "").await;
    }
    let after = send(gw.local_addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        series(&after),
        before,
        "2000 invented methods and paths added series"
    );
    assert!(
        value(
            &after,
            "whipgate_requests_total{endpoint=\"other\",method=\"other\",status=\"404\"}"
        ) >= 2001.0
    );
}

#[tokio::test]
async fn metrics_count_requests_sessions_failovers_and_rejections_with_bounded_labels() {
    let good = FakeBackend::start(whip_server()).await;
    let bad = FakeBackend::start(|_| Reply::new(500)).await;
    let gw = gateway(&config(&good, &bad)).await;
    let created = post_offer(gw.local_addr, "/whip/secret-stream-name", &[]).await;
    assert_eq!(created.status, 201);
    let refused = send(
        gw.local_addr,
        "POST",
        "/whip/other",
        &[("content-type", "application/sdp")],
        support::corpus("chromium-whip-offer-vp8.sdp").replace("a=sendonly", "a=inactive"),
    )
    .await;
    assert_eq!(refused.status, 422);

    let metrics = send(gw.local_addr, "GET", "/metrics", &[], "").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    for (series, expected) in [
        (
            "whipgate_requests_total{endpoint=\"whip\",method=\"POST\",status=\"201\"}",
            1.0,
        ),
        (
            "whipgate_requests_total{endpoint=\"whip\",method=\"POST\",status=\"422\"}",
            1.0,
        ),
        (
            "whipgate_sessions_started_total{backend=\"janus\",kind=\"whip\",route=\"main\"}",
            1.0,
        ),
        (
            "whipgate_sessions_live{backend=\"janus\",kind=\"whip\",route=\"main\"}",
            1.0,
        ),
        (
            "whipgate_failovers_total{from=\"flaky\",reason=\"unavailable\",to=\"janus\"}",
            1.0,
        ),
        (
            "whipgate_upstream_requests_total{backend=\"flaky\",method=\"POST\",status=\"500\"}",
            1.0,
        ),
        (
            "whipgate_upstream_requests_total{backend=\"janus\",method=\"POST\",status=\"201\"}",
            1.0,
        ),
        (
            "whipgate_sdp_rejections_total{reason=\"no_sending_media\"}",
            1.0,
        ),
        ("whipgate_backend_healthy{backend=\"flaky\"}", 0.0),
        ("whipgate_backend_healthy{backend=\"janus\"}", 1.0),
        ("whipgate_config_generation", 1.0),
    ] {
        assert_eq!(value(&text, series), expected, "{series}\n{text}");
    }
    assert!(text.contains("whipgate_request_duration_seconds_bucket"));
    assert!(
        !text.contains("secret-stream-name"),
        "stream names never become labels"
    );
    assert!(
        !text.contains("/session/") && !text.contains("k1."),
        "no tokens in metrics"
    );

    let deleted = send(gw.local_addr, "DELETE", &created.location_path(), &[], "").await;
    assert_eq!(deleted.status, 200);
    let text = send(gw.local_addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        value(
            &text,
            "whipgate_sessions_live{backend=\"janus\",kind=\"whip\",route=\"main\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "whipgate_sessions_ended_total{backend=\"janus\",kind=\"whip\",route=\"main\"}"
        ),
        1.0
    );
    assert!(
        text.contains("whipgate_session_duration_seconds_count{backend=\"janus\",kind=\"whip\"} 1")
    );
}

#[tokio::test]
async fn health_readiness_and_the_session_listing() {
    let good = FakeBackend::start(whip_server()).await;
    let bad = FakeBackend::start(|_| Reply::new(500)).await;
    let gw = gateway(&config(&good, &bad)).await;
    assert_eq!(
        send(gw.local_addr, "GET", "/healthz", &[], "").await.status,
        200
    );
    assert_eq!(
        send(gw.local_addr, "GET", "/readyz", &[], "").await.status,
        200
    );
    let created = post_offer(gw.local_addr, "/whip/s", &[]).await;
    let token = "Bearer k2-secret-k2-secret-k2-secret-k2-secret";
    assert_eq!(
        send(gw.local_addr, "GET", "/admin/sessions", &[], "")
            .await
            .status,
        401
    );
    let listing = send(
        gw.local_addr,
        "GET",
        "/admin/sessions",
        &[("authorization", token)],
        "",
    )
    .await;
    assert_eq!(listing.status, 200);
    let json: serde_json::Value = serde_json::from_str(&listing.body).expect("json");
    assert_eq!(json["sessions"][0]["backend"], "janus");
    assert_eq!(json["sessions"][0]["route"], "main");
    assert_eq!(json["sessions"][0]["kind"], "whip");
    let token_part = created
        .location_path()
        .trim_start_matches("/session/")
        .to_owned();
    assert!(
        !listing.body.contains(&token_part[..12]),
        "no tokens in the listing"
    );

    // Every backend down: not ready.
    let down = FakeBackend::start(|_| Reply::new(500)).await;
    let gw = gateway(&config(&down, &bad).replace(
        "whep_url",
        "circuit = { failures = 1, cooldown = \"60s\" }\nwhep_url",
    ))
    .await;
    assert_eq!(post_offer(gw.local_addr, "/whip/s", &[]).await.status, 503);
    assert_eq!(
        send(gw.local_addr, "GET", "/readyz", &[], "").await.status,
        503
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_whipgate_processes_share_sessions_and_count_their_own() {
    let good = FakeBackend::start(whip_server()).await;
    let dir = std::env::temp_dir().join(format!("whipgate-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nsession_keys = [{{ id = \"k1\", secret_env = \"WG_REPLICA_KEY\" }}]\n\
             [[backend]]\nid = \"janus\"\nkind = \"whip\"\nwhip_url = \"{}\"\n[[route]]\nid = \"main\"\nbackends = [\"janus\"]\n",
            good.url("/whip/{stream}")
        ),
    )
    .expect("write");
    let env = [("WG_REPLICA_KEY", "replica-key-replica-key-replica-key-0001")];
    let replicas: Vec<support::Served> = (0..3)
        .map(|_| support::spawn_serve(&path, &[], &env))
        .collect();
    let mut sessions = Vec::new();
    for n in 0..4 {
        let created = post_offer(replicas[0].address, &format!("/whip/s{n}"), &[]).await;
        assert_eq!(created.status, 201, "{}", created.body);
        sessions.push(created.location_path());
    }
    assert_eq!(
        post_offer(replicas[1].address, "/whip/t", &[]).await.status,
        201
    );
    for (n, session) in sessions.iter().enumerate() {
        let through = replicas[1 + n % 2].address;
        let patched = send(
            through,
            "PATCH",
            session,
            &[("content-type", "application/trickle-ice-sdpfrag")],
            support::corpus("gstreamer-trickle-1.sdpfrag"),
        )
        .await;
        assert_eq!(patched.status, 204, "a replica serves another's session");
        assert_eq!(send(through, "DELETE", session, &[], "").await.status, 200);
    }
    let labels = "{backend=\"janus\",kind=\"whip\",route=\"main\"}";
    let mut started = Vec::new();
    let mut ended = Vec::new();
    for replica in &replicas {
        let text = send(replica.address, "GET", "/metrics", &[], "").await.body;
        started.push(value(
            &text,
            &format!("whipgate_sessions_started_total{labels}"),
        ));
        ended.push(value(
            &text,
            &format!("whipgate_sessions_ended_total{labels}"),
        ));
    }
    assert_eq!(
        started,
        vec![4.0, 1.0, 0.0],
        "each replica counts the sessions it created"
    );
    assert_eq!(ended, vec![0.0, 2.0, 2.0], "and the DELETEs it served");
    assert_eq!(
        started.iter().sum::<f64>() - ended.iter().sum::<f64>(),
        1.0,
        "one session still live in all"
    );
    let second = send(replicas[1].address, "GET", "/metrics", &[], "")
        .await
        .body;
    assert_eq!(
        value(&second, &format!("whipgate_sessions_live{labels}")),
        1.0
    );
    drop(replicas);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_separate_metrics_listener_serves_only_metrics_and_health() {
    let good = FakeBackend::start(whip_server()).await;
    let bad = FakeBackend::start(|_| Reply::new(500)).await;
    let text =
        config(&good, &bad).replace("[server]\n", "[server]\nmetrics_listen = \"127.0.0.1:0\"\n");
    let gw = gateway(&text).await;
    let ops = gw.metrics_addr.expect("metrics listener");
    assert_ne!(ops, gw.local_addr);
    assert_eq!(send(ops, "GET", "/metrics", &[], "").await.status, 200);
    assert_eq!(send(ops, "GET", "/healthz", &[], "").await.status, 200);
    assert_eq!(send(ops, "GET", "/readyz", &[], "").await.status, 200);
    assert_eq!(
        post_offer(ops, "/whip/s", &[]).await.status,
        404,
        "no WHIP on the metrics port"
    );
    assert_eq!(
        send(ops, "GET", "/admin/sessions", &[], "").await.status,
        404
    );
    assert_eq!(
        send(gw.local_addr, "GET", "/metrics", &[], "").await.status,
        404,
        "metrics moved off the main port"
    );
    assert_eq!(post_offer(gw.local_addr, "/whip/s", &[]).await.status, 201);
}

#[tokio::test]
async fn sessions_leave_the_live_count_when_their_token_expires() {
    let good = FakeBackend::start(whip_server()).await;
    let bad = FakeBackend::start(|_| Reply::new(500)).await;
    let text = config(&good, &bad).replace("[server]\n", "[server]\nsession_ttl = \"1h\"\n");
    let clock = whipgate::clock::Clock::adjustable();
    let gateway = whipgate::server::Gateway::new(support::config(&text))
        .expect("gateway")
        .with_clock(clock.clone());
    let gw = whipgate::server::start(gateway, Some("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("start");
    let created = post_offer(gw.local_addr, "/whip/s", &[]).await;
    assert_eq!(created.status, 201);
    let labels = "{backend=\"janus\",kind=\"whip\",route=\"main\"}";
    clock.advance(std::time::Duration::from_secs(1800));
    let text = send(gw.local_addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        value(&text, &format!("whipgate_sessions_live{labels}")),
        1.0
    );
    assert_eq!(
        value(&text, "whipgate_session_seconds_total{backend=\"janus\"}"),
        1800.0
    );
    assert_eq!(
        value(&text, "whipgate_cost_estimate_total{backend=\"janus\"}"),
        15.0,
        "30 min at 0.5"
    );
    clock.advance(std::time::Duration::from_secs(1801));
    let text = send(gw.local_addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        value(&text, &format!("whipgate_sessions_live{labels}")),
        0.0,
        "expired"
    );
    assert_eq!(
        value(&text, "whipgate_session_seconds_total{backend=\"janus\"}"),
        3600.0
    );
    assert!(gw.gateway.registry().is_empty());
    assert_eq!(
        send(gw.local_addr, "DELETE", &created.location_path(), &[], "")
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_beyond_the_concurrency_limit_is_shed_with_503() {
    let slow = FakeBackend::start(|seen| match seen.method.as_str() {
        "POST" => Reply::new(201)
            .header("location", "/r/1")
            .body(support::corpus("janus-whip-answer.sdp"))
            .delay(std::time::Duration::from_millis(500)),
        _ => Reply::new(200),
    })
    .await;
    let text = format!(
        "[server]\nmax_concurrent_requests = 2\n[[backend]]\nid = \"slow\"\nkind = \"whip\"\nwhip_url = \"{}\"\n\
         [[route]]\nbackends = [\"slow\"]\n",
        slow.url("/whip/{stream}")
    );
    let gw = gateway(&text).await;
    let addr = gw.local_addr;
    let requests: Vec<_> = (0..5)
        .map(|n| tokio::spawn(async move { post_offer(addr, &format!("/whip/s{n}"), &[]).await }))
        .collect();
    let in_flight = || async { slow.count() >= 2 };
    support::wait_until("two requests at the slow backend", in_flight).await;
    assert_eq!(
        send(addr, "GET", "/healthz", &[], "").await.status,
        200,
        "probes are exempt"
    );
    let mut statuses = Vec::new();
    for request in requests {
        let got = request.await.expect("task");
        if got.status == 503 {
            assert!(got.header("retry-after").is_some());
        }
        statuses.push(got.status);
    }
    statuses.sort();
    assert_eq!(statuses, vec![201, 201, 503, 503, 503]);
    assert_eq!(
        post_offer(addr, "/whip/after", &[]).await.status,
        201,
        "places are freed"
    );
}

/// Settings read only at start say so when a reload changes them, and adding
/// `metrics_listen` by reload does not hide /metrics on the listener that serves it.
#[tokio::test]
async fn a_reload_names_what_waits_for_a_restart() {
    let good = FakeBackend::start(whip_server()).await;
    let bad = FakeBackend::start(|_| Reply::new(500)).await;
    let text = config(&good, &bad);
    let gw = gateway(&text).await;
    let changed = text.replace(
        "upstream_timeout = \"500ms\"",
        "upstream_timeout = \"500ms\"\nmetrics_listen = \"127.0.0.1:1\"\nworkers = 7",
    );
    gw.gateway.apply(support::config(&changed)).expect("reload");
    let status = gw.gateway.reload_status();
    assert_eq!(
        status.pending_restart,
        ["[server] metrics_listen", "[server] workers"],
        "{status:?}"
    );
    let metrics = send(gw.local_addr, "GET", "/metrics", &[], "").await;
    assert_eq!(metrics.status, 200, "/metrics is still served where it was");
}

/// One replica's registry is bounded whatever clients do, and a session the backend says is
/// gone (404 to a PATCH) stops counting without a DELETE.
#[tokio::test]
async fn the_registry_is_bounded_and_believes_a_backend_that_lost_a_session() {
    let forgetful = FakeBackend::start(|seen| match seen.method.as_str() {
        "PATCH" => Reply::new(404).body("no such session"),
        _ => whip_server()(seen),
    })
    .await;
    let bad = FakeBackend::start(|_| Reply::new(500)).await;
    let text = config(&forgetful, &bad).replace("[server]\n", "[server]\nmax_live_sessions = 2\n");
    let gw = gateway(&text).await;
    let first = post_offer(gw.local_addr, "/whip/a", &[]).await;
    assert_eq!(first.status, 201);
    assert_eq!(post_offer(gw.local_addr, "/whip/b", &[]).await.status, 201);
    let full = post_offer(gw.local_addr, "/whip/c", &[]).await;
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.header("retry-after").is_some());
    let patched = send(
        gw.local_addr,
        "PATCH",
        &first.location_path(),
        &[
            ("content-type", "application/trickle-ice-sdpfrag"),
            ("if-match", "*"),
        ],
        "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\n",
    )
    .await;
    assert_eq!(patched.status, 404);
    assert_eq!(gw.gateway.registry().len(), 1, "the lost session left");
    assert_eq!(post_offer(gw.local_addr, "/whip/c", &[]).await.status, 201);
}

/// A burst of connections, all accepted by whichever worker was awake, is shared out between
/// the workers: measured before, every one of a load generator's 32 landed on one of two.
#[tokio::test]
async fn a_burst_of_connections_is_shared_between_the_workers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let good = FakeBackend::start(whip_server()).await;
    let bad = FakeBackend::start(|_| Reply::new(500)).await;
    let text = config(&good, &bad).replace("[server]\n", "[server]\nworkers = 2\n");
    let gw = gateway(&text).await;
    const OPEN: usize = 12;
    let mut held = Vec::new();
    for _ in 0..OPEN {
        held.push(
            tokio::net::TcpStream::connect(gw.local_addr)
                .await
                .expect("connect"),
        );
    }
    // One answered request on each: every connection has been accepted and placed.
    for stream in &mut held {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    }
    let worker = |index: usize| format!("whipgate_worker_connections{{worker=\"{index}\"}}");
    // The scrape's own connection counts too, on one worker or the other.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let (first, second) = loop {
        let first = support::metric(gw.local_addr, &worker(0)).await;
        let second = support::metric(gw.local_addr, &worker(1)).await;
        if let (Some(first), Some(second)) = (first, second) {
            if first + second >= OPEN as f64 {
                break (first, second);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections not counted on the workers: {first:?} / {second:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(
        (first - second).abs() <= 2.0,
        "{OPEN} connections shared {first} / {second} between two workers"
    );
    drop(held);
    support::wait_until("closed connections uncounted", || async {
        let open = support::metric(gw.local_addr, &worker(0))
            .await
            .unwrap_or(-1.0)
            + support::metric(gw.local_addr, &worker(1))
                .await
                .unwrap_or(-1.0);
        (0.0..=2.0).contains(&open)
    })
    .await;
}
