//! Who may publish and play: client auth per route (static bearer tokens, JWT), routing on
//! tier and claims, sessions bound to their subject, per-subject and per-address limits.
//! Every refusal is decided before anything reaches a backend.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use support::{corpus, gateway, send, whip_server, FakeBackend, JWT_SECRET};

const SDP: (&str, &str) = ("content-type", "application/sdp");
const STUDIO: &str = "studio-client-token-123";
const GUEST: &str = "guest-client-token-456";

fn config(premium: &FakeBackend, free: &FakeBackend, server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://gw.test"
{server_extra}

[client_auth.studio]
mode = "bearer"
tokens = [
  {{ token_env = "STUDIO_TOKEN", subject = "studio", tier = "premium", publish = ["*"], play = ["*"] }},
  {{ token_env = "GUEST_TOKEN", subject = "guest", publish = ["guest-*"], play = [] }},
]

[client_auth.viewers]
mode = "jwt"
key_file = "jwt-hs256.key"
algorithms = ["HS256"]

[[backend]]
id = "cpaas"
kind = "whip"
whip_url = "{premium}"
whep_url = "{premium}"

[[backend]]
id = "selfhosted"
kind = "whip"
whip_url = "{free}"
whep_url = "{free}"

[[route]]
id = "premium-publish"
match = {{ kind = "whip", tier = "premium" }}
auth = "studio"
bind_sessions = true
backends = ["cpaas"]

[[route]]
id = "publish"
match = {{ kind = "whip" }}
auth = "studio"
backends = ["selfhosted"]

[[route]]
id = "premium-play"
match = {{ kind = "whep", tier = "premium" }}
auth = "viewers"
backends = ["cpaas"]

[[route]]
id = "play"
match = {{ kind = "whep" }}
auth = "viewers"
backends = ["selfhosted"]
"#,
        premium = premium.url("/whip/{stream}"),
        free = free.url("/whip/{stream}"),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn jwt(claims: serde_json::Value, key: &str) -> String {
    encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("encode")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn bearer_tokens_decide_who_publishes_what_and_where() {
    let (premium, free) = (
        FakeBackend::start(whip_server()).await,
        FakeBackend::start(whip_server()).await,
    );
    let gw = gateway(&config(&premium, &free, "")).await;
    let offer = || corpus("chromium-whip-offer-vp8.sdp");
    // No credential: 401 with a challenge, nothing upstream.
    let got = send(gw.local_addr, "POST", "/whip/cam", &[SDP], offer()).await;
    assert_eq!(got.status, 401, "{}", got.body);
    assert!(got
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer realm=")));
    // A wrong token: 401 invalid_token, and the token is not echoed.
    let got = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[SDP, ("authorization", "Bearer nope-nope")],
        offer(),
    )
    .await;
    assert_eq!(got.status, 401);
    assert!(got
        .header("www-authenticate")
        .is_some_and(|v| v.contains("invalid_token")));
    assert!(!got.body.contains("nope-nope"));
    // The guest may publish guest-* only (403 otherwise); it has no tier: self-hosted.
    let got = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[SDP, ("authorization", &bearer(GUEST))],
        offer(),
    )
    .await;
    assert_eq!(got.status, 403, "{}", got.body);
    assert_eq!(
        premium.count() + free.count(),
        0,
        "no refusal reached a backend"
    );
    let got = send(
        gw.local_addr,
        "POST",
        "/whip/guest-1",
        &[SDP, ("authorization", GUEST)],
        offer(),
    )
    .await;
    assert_eq!(got.status, 201, "a bare token works too: {}", got.body);
    assert_eq!((premium.count(), free.count()), (0, 1));
    // The studio is premium: the CPaaS. The client's token is never forwarded.
    let got = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[SDP, ("authorization", &bearer(STUDIO))],
        offer(),
    )
    .await;
    assert_eq!(got.status, 201, "{}", got.body);
    assert_eq!((premium.count(), free.count()), (1, 1));
    assert!(premium
        .seen()
        .iter()
        .all(|s| s.header("authorization").is_none()));
}

#[tokio::test]
async fn jwt_claims_route_viewers_and_bad_tokens_are_refused() {
    let (premium, free) = (
        FakeBackend::start(whip_server()).await,
        FakeBackend::start(whip_server()).await,
    );
    let gw = gateway(&config(&premium, &free, "")).await;
    let offer = || corpus("chromium-whep-offer.sdp");
    let play = |token: String| {
        let addr = gw.local_addr;
        async move {
            send(
                addr,
                "POST",
                "/whep/cam",
                &[SDP, ("authorization", &bearer(&token))],
                offer(),
            )
            .await
        }
    };
    let exp = now() + 600;
    let premium_viewer = jwt(
        serde_json::json!({"sub": "v1", "tier": "premium", "play": ["cam"], "exp": exp}),
        JWT_SECRET,
    );
    assert_eq!(play(premium_viewer).await.status, 201);
    assert_eq!((premium.count(), free.count()), (1, 0));
    let free_viewer = jwt(
        serde_json::json!({"sub": "v2", "play": "*", "exp": exp}),
        JWT_SECRET,
    );
    assert_eq!(play(free_viewer).await.status, 201);
    assert_eq!((premium.count(), free.count()), (1, 1));
    // Valid, but not for this stream: 403.
    let other_stream = jwt(
        serde_json::json!({"sub": "v3", "play": ["other"], "exp": exp}),
        JWT_SECRET,
    );
    assert_eq!(play(other_stream).await.status, 403);
    // Expired beyond the leeway, signed with another key, or unsigned (alg none): 401.
    let expired = jwt(
        serde_json::json!({"sub": "v4", "play": "*", "exp": now() - 3600}),
        JWT_SECRET,
    );
    let wrong_key = jwt(
        serde_json::json!({"sub": "v5", "play": "*", "exp": exp}),
        "another-secret-another-secret-another-1234",
    );
    let header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64_url(&format!(r#"{{"sub":"v6","play":"*","exp":{exp}}}"#));
    let unsigned = format!("{header}.{payload}.");
    for (what, token) in [
        ("expired", expired),
        ("wrong key", wrong_key),
        ("alg none", unsigned),
    ] {
        let got = play(token).await;
        assert_eq!(got.status, 401, "{what}: {}", got.body);
    }
    assert_eq!(
        (premium.count(), free.count()),
        (1, 1),
        "refused tokens reach no backend"
    );
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn sessions_bound_to_their_subject_answer_only_to_it() {
    let (premium, free) = (
        FakeBackend::start(whip_server()).await,
        FakeBackend::start(whip_server()).await,
    );
    let gw = gateway(&config(&premium, &free, "")).await;
    let created = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[SDP, ("authorization", &bearer(STUDIO))],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(created.status, 201);
    let session = created.location_path();
    let frag = ("content-type", "application/trickle-ice-sdpfrag");
    let trickle = corpus("gstreamer-trickle-1.sdpfrag");
    assert_eq!(
        send(gw.local_addr, "PATCH", &session, &[frag], trickle.clone())
            .await
            .status,
        401
    );
    assert_eq!(
        send(gw.local_addr, "DELETE", &session, &[], "")
            .await
            .status,
        401
    );
    assert_eq!(
        send(
            gw.local_addr,
            "DELETE",
            &session,
            &[("authorization", &bearer(GUEST))],
            ""
        )
        .await
        .status,
        403
    );
    assert_eq!(
        premium.seen().iter().filter(|s| s.method != "POST").count(),
        0
    );
    assert_eq!(
        send(
            gw.local_addr,
            "PATCH",
            &session,
            &[frag, ("authorization", &bearer(STUDIO))],
            trickle
        )
        .await
        .status,
        204
    );
    assert_eq!(
        send(
            gw.local_addr,
            "DELETE",
            &session,
            &[("authorization", &bearer(STUDIO))],
            ""
        )
        .await
        .status,
        200
    );
    // An unbound route's sessions need only their URL.
    let guest = send(
        gw.local_addr,
        "POST",
        "/whip/guest-2",
        &[SDP, ("authorization", &bearer(GUEST))],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(
        send(gw.local_addr, "DELETE", &guest.location_path(), &[], "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_subject_holds_at_most_its_session_limit() {
    let (premium, free) = (
        FakeBackend::start(whip_server()).await,
        FakeBackend::start(whip_server()).await,
    );
    let gw = gateway(&config(&premium, &free, "max_sessions_per_subject = 2")).await;
    let post = |stream: &'static str| {
        let addr = gw.local_addr;
        async move {
            send(
                addr,
                "POST",
                &format!("/whip/{stream}"),
                &[SDP, ("authorization", &bearer(GUEST))],
                corpus("chromium-whip-offer-vp8.sdp"),
            )
            .await
        }
    };
    // Three at once still give two: the check is not made before any of them counts.
    let (a, b, c) = tokio::join!(post("guest-1"), post("guest-2"), post("guest-3"));
    let mut statuses = [a.status, b.status, c.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 429]);
    let first = [a, b, c]
        .into_iter()
        .find(|g| g.status == 201)
        .expect("a session");
    let third = post("guest-3").await;
    assert_eq!(third.status, 429, "{}", third.body);
    assert!(third.header("retry-after").is_some());
    // Ending one frees a place.
    assert_eq!(
        send(gw.local_addr, "DELETE", &first.location_path(), &[], "")
            .await
            .status,
        200
    );
    assert_eq!(post("guest-3").await.status, 201);
    // Another subject has its own count.
    let studio = send(
        gw.local_addr,
        "POST",
        "/whip/cam",
        &[SDP, ("authorization", &bearer(STUDIO))],
        corpus("chromium-whip-offer-vp8.sdp"),
    )
    .await;
    assert_eq!(studio.status, 201);
}

#[tokio::test]
async fn one_address_is_limited_with_429_and_retry_after() {
    let (premium, free) = (
        FakeBackend::start(whip_server()).await,
        FakeBackend::start(whip_server()).await,
    );
    let gw = gateway(&config(
        &premium,
        &free,
        "rate_limit = { per_second = 1, burst = 3 }",
    ))
    .await;
    let mut statuses = Vec::new();
    for n in 0..5 {
        let got = send(
            gw.local_addr,
            "POST",
            &format!("/whip/guest-{n}"),
            &[SDP, ("authorization", &bearer(GUEST))],
            corpus("chromium-whip-offer-vp8.sdp"),
        )
        .await;
        if got.status == 429 {
            assert!(got
                .header("retry-after")
                .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)));
        }
        statuses.push(got.status);
    }
    assert_eq!(statuses, vec![201, 201, 201, 429, 429]);
    // Reads, probes and CORS preflights are not limited; an OPTIONS that may mint TURN
    // credentials is.
    assert_eq!(
        send(gw.local_addr, "GET", "/healthz", &[], "").await.status,
        200
    );
    let preflight = send(
        gw.local_addr,
        "OPTIONS",
        "/whip/guest-9",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(preflight.status, 204);
    let ice = send(gw.local_addr, "OPTIONS", "/whip/guest-9", &[], "").await;
    assert_eq!(
        ice.status, 429,
        "an OPTIONS that mints TURN credentials is limited"
    );
    assert_eq!(free.count(), 3);
}

#[tokio::test]
async fn a_route_without_auth_may_still_match_on_tier() {
    // design.md's example: `match = { stream = "premium-*", tier = "premium" }` with no auth.
    let (premium, free) = (
        FakeBackend::start(whip_server()).await,
        FakeBackend::start(whip_server()).await,
    );
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[client_auth.studio]
mode = "bearer"
tokens = [{{ token_env = "STUDIO_TOKEN", subject = "studio", tier = "premium" }}]

[[backend]]
id = "cpaas"
kind = "whip"
whip_url = "{premium}"

[[backend]]
id = "selfhosted"
kind = "whip"
whip_url = "{free}"

[[route]]
match = {{ stream = "premium-*", tier = "premium" }}
backends = ["cpaas"]

[[route]]
match = {{ stream = "*" }}
backends = ["selfhosted"]
"#,
        premium = premium.url("/whip/{stream}"),
        free = free.url("/whip/{stream}"),
    );
    let gw = gateway(&text).await;
    let offer = || corpus("chromium-whip-offer-vp8.sdp");
    let anonymous = send(gw.local_addr, "POST", "/whip/premium-1", &[SDP], offer()).await;
    assert_eq!(anonymous.status, 201);
    let studio = send(
        gw.local_addr,
        "POST",
        "/whip/premium-1",
        &[SDP, ("authorization", &bearer(STUDIO))],
        offer(),
    )
    .await;
    assert_eq!(studio.status, 201);
    assert_eq!(
        (premium.count(), free.count()),
        (1, 1),
        "the tier chose the backend"
    );
}
