//! Logs: one line per request, JSON on request, and never a secret — client Authorization
//! (valid or not), backend token, TURN shared secret, session key, session token or ICE
//! password — whatever the level; nor in any response or metric.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::{
    corpus, send, talk_answer, talk_offer, whip_server, ConfigDir, FakeBackend, Reply, Seen,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lines_carry_ids_but_no_secrets() {
    let backend = FakeBackend::start(whip_server()).await;
    let dir = std::env::temp_dir().join(format!("whipgate-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nsession_keys = [{{ id = \"k1\", secret_env = \"WG_TEST_KEY\" }}]\n\
             [client_auth.cameras]\nmode = \"bearer\"\ntokens = [{{ token_env = \"WG_TEST_CLIENT\", subject = \"owner\" }}]\n\
             [ice_server.turn]\nurls = [\"turn:127.0.0.1:3478\"]\nturn_secret_env = \"WG_TEST_TURN\"\n\
             [[backend]]\nid = \"janus\"\nkind = \"whip\"\nwhip_url = \"{}\"\nauth = {{ bearer_env = \"WG_TEST_BACKEND\" }}\n\
             [[route]]\nid = \"main\"\nbackends = [\"janus\"]\nauth = \"cameras\"\nice_servers = [\"turn\"]\n",
            backend.url("/whip/{stream}")
        ),
    )
    .expect("write");
    let served = support::spawn_serve(
        &path,
        &["--log-format", "json"],
        &[
            ("RUST_LOG", "trace"),
            ("WG_TEST_KEY", "session-key-session-key-session-key-0001"),
            ("WG_TEST_BACKEND", "backend-secret-BEEF-0002"),
            ("WG_TEST_CLIENT", "client-secret-CAFE-0003"),
            ("WG_TEST_TURN", "turn-secret-FEED-0004"),
        ],
    );
    let address = served.address;
    let offer = corpus("chromium-whip-offer-vp8.sdp");
    let ice_pwd = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-pwd:"))
        .expect("ice-pwd")
        .to_owned();
    let created = send(
        address,
        "POST",
        "/whip/cam",
        &[
            ("content-type", "application/sdp"),
            ("authorization", "Bearer client-secret-CAFE-0003"),
            ("x-request-id", "req-from-client-42"),
        ],
        offer,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("x-request-id"), Some("req-from-client-42"));
    assert_eq!(
        backend.seen()[0].header("x-request-id"),
        Some("req-from-client-42"),
        "the request id reaches the backend"
    );
    let session = created.location_path();
    let token = session.trim_start_matches("/session/").to_owned();
    let refused = send(
        address,
        "POST",
        "/whip/cam",
        &[
            ("content-type", "application/sdp"),
            ("authorization", "Bearer wrong-client-token-DEAD-0005"),
        ],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(refused.status, 401);
    let deleted = send(address, "DELETE", &session, &[], "").await;
    let bad = send(address, "DELETE", &format!("/session/{token}x"), &[], "").await;
    let metrics = send(address, "GET", "/metrics", &[], "").await;
    let mut shown = String::new();
    for got in [&created, &refused, &deleted, &bad, &metrics] {
        shown.push_str(&format!("{:?}\n{}\n", got.headers, got.body));
    }
    for secret in [
        "backend-secret-BEEF-0002",
        "turn-secret-FEED-0004",
        "wrong-client-token-DEAD-0005",
        "session-key-session-key",
    ] {
        assert!(
            !shown.contains(secret),
            "{secret:?} shown to a client or in /metrics:\n{shown}"
        );
    }
    assert!(
        !metrics.body.contains("client-secret-CAFE-0003") && !metrics.body.contains(&token),
        "no token in /metrics"
    );

    let (_, lines) = served.finish();
    let logs = lines.join("\n");
    let _ = std::fs::remove_dir_all(&dir);

    let request_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"message\":\"request\""))
        .collect();
    assert_eq!(request_lines.len(), 5, "one line per request:\n{logs}");
    let first: serde_json::Value = serde_json::from_str(request_lines[0]).expect("json line");
    let fields = &first["fields"];
    assert_eq!(fields["request_id"], "req-from-client-42");
    assert_eq!(fields["route"], "main");
    assert_eq!(fields["backend"], "janus");
    assert_eq!(fields["status"], 201);
    assert!(fields["latency_ms"].as_f64().is_some());
    for secret in [
        "client-secret-CAFE-0003",
        "wrong-client-token-DEAD-0005",
        "turn-secret-FEED-0004",
        "backend-secret-BEEF-0002",
        "session-key-session-key",
        token.as_str(),
        &token[3..20],
        ice_pwd.as_str(),
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} leaked into the logs:\n{logs}"
        );
    }
}

/// A vendor's keys stay out of the logs too: OpenAI's server key and the client secret
/// minted with it, through a session's whole life and a refused mint, at trace level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_keys_and_minted_secrets_never_reach_the_logs() {
    let mints = Arc::new(AtomicUsize::new(0));
    let counted = mints.clone();
    let openai = FakeBackend::start(move |req: &Seen| match req.path.as_str() {
        "/v1/realtime/client_secrets" => {
            // The second mint is refused, echoing the key as the API does (masked there,
            // whole here: whipgate must not repeat it either way).
            if counted.fetch_add(1, Ordering::SeqCst) == 1 {
                return Reply::new(401).body(format!(
                    r#"{{"error":{{"message":"Incorrect API key provided: {}","type":"invalid_request_error","code":"invalid_api_key"}}}}"#,
                    req.header("authorization").unwrap_or("")
                ));
            }
            Reply::new(200)
                .header("content-type", "application/json")
                .body(r#"{"value":"ek_minted-SECRET-0007","expires_at":1756310470}"#)
        }
        "/v1/realtime/calls" => Reply::new(201)
            .header("content-type", "application/sdp")
            .header("location", "/v1/realtime/calls/rtc_call0008")
            .body(talk_answer(&String::from_utf8_lossy(&req.body))),
        _ => Reply::new(200),
    })
    .await;
    let dir = ConfigDir::new("logs-vendor");
    dir.write(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[backend]]\nid = \"agent\"\nkind = \"openai-realtime\"\nurl = \"{}\"\napi_key_env = \"WG_TEST_OPENAI\"\n\
         [[route]]\nbackends = [\"agent\"]\n",
        openai.url("")
    ));
    let served = support::spawn_serve(
        &dir.path(),
        &["--log-format", "json"],
        &[
            ("RUST_LOG", "trace"),
            ("WG_TEST_OPENAI", "sk-server-SECRET-0006"),
        ],
    );
    let address = served.address;
    let post = || async move {
        send(
            address,
            "POST",
            "/whip/talk",
            &[("content-type", "application/sdp")],
            talk_offer(),
        )
        .await
    };
    let created = post().await;
    assert_eq!(created.status, 201, "{}", created.body);
    let refused = post().await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    let deleted = send(address, "DELETE", &created.location_path(), &[], "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert!(
        openai.seen().iter().any(|r| r.path.ends_with("/hangup")),
        "the session was hung up"
    );
    let metrics = send(address, "GET", "/metrics", &[], "").await;
    let (_, lines) = served.finish();
    let logs = lines.join("\n");
    assert!(
        logs.contains("vendor API refused"),
        "the refusal is logged:\n{logs}"
    );
    let mut shown = logs.clone();
    for got in [&created, &refused, &deleted, &metrics] {
        shown.push_str(&format!("{:?}\n{}\n", got.headers, got.body));
    }
    for secret in ["SECRET-0006", "SECRET-0007", "rtc_call0008"] {
        assert!(
            !shown.contains(secret),
            "{secret:?} leaked into logs, responses or metrics:\n{shown}"
        );
    }
}
