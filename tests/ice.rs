//! ICE servers clients are given: the backend's Links, whipgate's own, or both (per route),
//! with TURN credentials minted per session the way coturn's `use-auth-secret` checks them.

mod support;

use base64::Engine as _;
use ring::hmac;
use support::{corpus, gateway, send, FakeBackend, Reply, Seen};

const SDP: (&str, &str) = ("content-type", "application/sdp");

fn backend_with_link() -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    |seen: &Seen| match seen.method.as_str() {
        "POST" => Reply::new(201)
            .header("location", "/resource/1")
            .header("link", "<stun:stun.backend.test:3478>; rel=\"ice-server\"")
            .body(corpus("janus-whip-answer.sdp")),
        _ => Reply::new(200),
    }
}

fn config(backend: &FakeBackend) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[ice_server.coturn]
urls = ["turn:127.0.0.2:3478?transport=udp"]
turn_secret_env = "KEY1"
lifetime = "10m"

[[backend]]
id = "b"
kind = "whip"
whip_url = "{url}"

[[route]]
id = "merge"
match = {{ stream = "merge-*" }}
backends = ["b"]
ice_servers = ["coturn"]

[[route]]
id = "replace"
match = {{ stream = "replace-*" }}
backends = ["b"]
ice_servers = ["coturn"]
ice_policy = "replace"

[[route]]
id = "backend"
match = {{ stream = "*" }}
backends = ["b"]
"#,
        url = backend.url("/whip/{stream}")
    )
}

/// (uri, username, credential) of each ice-server Link.
fn links(values: Vec<String>) -> Vec<(String, Option<String>, Option<String>)> {
    whipgate::frontdoor::ice_servers(values.iter().map(String::as_str))
        .into_iter()
        .map(|s| (s.uri, s.username, s.credential))
        .collect()
}

#[tokio::test]
async fn routes_pass_replace_or_merge_ice_servers_with_minted_turn_credentials() {
    let backend = FakeBackend::start(backend_with_link()).await;
    let gw = gateway(&config(&backend)).await;
    let post = |stream: &'static str| {
        let addr = gw.local_addr;
        async move {
            send(
                addr,
                "POST",
                &format!("/whip/{stream}"),
                &[SDP],
                corpus("chromium-whip-offer-vp8.sdp"),
            )
            .await
        }
    };
    let passed = links(post("plain").await.all("link"));
    assert_eq!(
        passed,
        vec![("stun:stun.backend.test:3478".into(), None, None)]
    );
    let replaced = links(post("replace-1").await.all("link"));
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0].0, "turn:127.0.0.2:3478?transport=udp");
    let merged = links(post("merge-1").await.all("link"));
    assert_eq!(merged.len(), 2);
    // coturn's check: password = base64(HMAC-SHA1(secret, username)), username = expiry:who.
    let (_, username, password) = &merged[1];
    let username = username.clone().expect("username");
    let (expiry, who) = username.split_once(':').expect("expiry:subject");
    let expiry: u64 = expiry.parse().expect("unix time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!((now + 590..=now + 610).contains(&expiry), "lifetime 10 min");
    assert!(!who.is_empty());
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        b"k1-secret-k1-secret-k1-secret-k1-secret",
    );
    let expected = base64::engine::general_purpose::STANDARD
        .encode(hmac::sign(&key, username.as_bytes()).as_ref());
    assert_eq!(password.as_deref(), Some(expected.as_str()));
    // Two sessions get different credentials.
    let again = links(post("merge-2").await.all("link"));
    assert_ne!(again[1].1, merged[1].1);
}

#[tokio::test]
async fn a_client_can_ask_for_ice_servers_before_it_offers() {
    let backend = FakeBackend::start(backend_with_link()).await;
    let gw = gateway(&config(&backend)).await;
    let got = send(gw.local_addr, "OPTIONS", "/whip/replace-1", &[], "").await;
    assert_eq!(got.status, 204);
    let offered = links(got.all("link"));
    assert_eq!(offered.len(), 1);
    assert!(offered[0].1.is_some() && offered[0].2.is_some());
    // A CORS preflight carries no credentials and gets none; nothing reached the backend.
    let preflight = send(
        gw.local_addr,
        "OPTIONS",
        "/whip/replace-1",
        &[
            ("origin", "https://app.test"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert!(preflight.all("link").is_empty());
    assert_eq!(backend.count(), 0);
}
