use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::json;

use super::*;

const NOW: u64 = 1_800_000_000;
const HS_SECRET: &str = "an-hs256-shared-secret-of-32-bytes-or-more";
const RS_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/rs256-public.pem");
const RS_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/rs256-private.pem");
const ES_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/es256-public.pem");
const ES_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/es256-private.pem");
const ES_OTHER_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/es256-other-public.pem");
const ES_OTHER_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/es256-other-private.pem");
const ED_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/eddsa-public.pem");
const ED_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/eddsa-private.pem");

#[derive(Default)]
struct FakeSecrets {
    env: HashMap<String, String>,
    files: HashMap<PathBuf, String>,
}

impl FakeSecrets {
    fn with_file(mut self, name: &str, text: &str) -> Self {
        self.files
            .insert(Path::new("/cfg").join(name), text.to_owned());
        self
    }

    fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }
}

impl SecretSource for FakeSecrets {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    fn file(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

fn raw_jwt(algorithms: &[&str]) -> RawJwt {
    RawJwt {
        key_file: Some("key".into()),
        jwks_file: None,
        algorithms: algorithms.iter().map(|a| (*a).to_owned()).collect(),
        issuer: None,
        audience: None,
        leeway: Duration::from_secs(30),
        tier_claim: "tier".into(),
        publish_claim: "publish".into(),
        play_claim: "play".into(),
    }
}

fn jwt_auth(raw: RawJwt, key_text: &str) -> ClientAuth {
    let secrets = FakeSecrets::default().with_file("key", key_text);
    ClientAuth::build(&RawClientAuth::Jwt(raw), Path::new("/cfg"), &secrets).expect("build")
}

fn sign(alg: Algorithm, key: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(key.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(key.as_bytes()).expect("rsa"),
        Algorithm::ES256 => EncodingKey::from_ec_pem(key.as_bytes()).expect("ec"),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(key.as_bytes()).expect("ed"),
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
}

fn claims() -> serde_json::Value {
    json!({
        "sub": "cam-7",
        "exp": NOW + 300,
        "tier": "gold",
        "publish": "live/*",
        "play": ["live/*", "replay-?"],
    })
}

#[test]
fn every_algorithm_verifies_with_its_key() {
    for (alg, public, private) in [
        (Algorithm::HS256, HS_SECRET, HS_SECRET),
        (Algorithm::RS256, RS_PUBLIC, RS_PRIVATE),
        (Algorithm::ES256, ES_PUBLIC, ES_PRIVATE),
        (Algorithm::EdDSA, ED_PUBLIC, ED_PRIVATE),
    ] {
        let name = format!("{alg:?}");
        let auth = jwt_auth(raw_jwt(&[&name]), public);
        let token = sign(alg, private, None, &claims());
        let identity = auth
            .authenticate(Some(&bearer(&token)), NOW)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(identity.subject.as_deref(), Some("cam-7"), "{name}");
        assert_eq!(identity.tier.as_deref(), Some("gold"));
        assert_eq!(identity.claims.get("sub"), Some(&json!("cam-7")));
        assert!(identity.may(EndpointKind::Whip, "live/cam-7"));
        assert!(!identity.may(EndpointKind::Whip, "replay-1"));
        assert!(identity.may(EndpointKind::Whep, "replay-1"));
        assert!(!identity.may(EndpointKind::Whep, "replay-10"));
    }
}

#[test]
fn hs256_key_file_loses_only_its_trailing_newline() {
    let auth = jwt_auth(raw_jwt(&["HS256"]), &format!("{HS_SECRET}\n"));
    let token = sign(Algorithm::HS256, HS_SECRET, None, &claims());
    assert!(auth.authenticate(Some(&bearer(&token)), NOW).is_ok());
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let auth = jwt_auth(raw_jwt(&["ES256"]), ES_PUBLIC);
    let token = sign(Algorithm::ES256, ES_OTHER_PRIVATE, None, &claims());
    assert_eq!(
        auth.authenticate(Some(&bearer(&token)), NOW),
        Err(AuthError::Invalid("bad signature"))
    );
    let auth = jwt_auth(raw_jwt(&["ES256"]), ES_OTHER_PUBLIC);
    let token = sign(Algorithm::ES256, ES_PRIVATE, None, &claims());
    assert_eq!(
        auth.authenticate(Some(&bearer(&token)), NOW),
        Err(AuthError::Invalid("bad signature"))
    );
    let auth = jwt_auth(raw_jwt(&["HS256"]), HS_SECRET);
    let token = sign(
        Algorithm::HS256,
        "another-secret-that-is-long-enough-too",
        None,
        &claims(),
    );
    assert_eq!(
        auth.authenticate(Some(&bearer(&token)), NOW),
        Err(AuthError::Invalid("bad signature"))
    );
}

#[test]
fn alg_none_and_unlisted_algorithms_are_refused() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let auth = jwt_auth(raw_jwt(&["RS256"]), RS_PUBLIC);
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert!(matches!(
        auth.authenticate(Some(&bearer(&unsigned)), NOW),
        Err(AuthError::Invalid(_))
    ));
    // The classic confusion: HMAC keyed with the RSA public key's own bytes.
    let confused = sign(Algorithm::HS256, RS_PUBLIC, None, &claims());
    assert_eq!(
        auth.authenticate(Some(&bearer(&confused)), NOW),
        Err(AuthError::Invalid("algorithm not allowed"))
    );
}

#[test]
fn configuration_refuses_none_mixed_families_and_weak_keys() {
    let secrets = FakeSecrets::default()
        .with_file("key", RS_PUBLIC)
        .with_file("short", "too-short")
        .with_file("private", ES_PRIVATE);
    let build = |raw: RawJwt| {
        ClientAuth::build(&RawClientAuth::Jwt(raw), Path::new("/cfg"), &secrets)
            .map(drop)
            .expect_err("refused")
    };
    assert!(build(raw_jwt(&["none"])).contains("never accepted"));
    assert!(build(raw_jwt(&["RS256", "HS256"])).contains("one family"));
    assert!(build(raw_jwt(&["XS999"])).contains("unknown algorithm"));
    assert!(build(raw_jwt(&[])).contains("may not be empty"));
    let mut short = raw_jwt(&["HS256"]);
    short.key_file = Some("short".into());
    assert!(build(short).contains("at least 32 bytes"));
    let mut private = raw_jwt(&["ES256"]);
    private.key_file = Some("private".into());
    assert!(build(private).contains("private key"));
    let mut both = raw_jwt(&["ES256"]);
    both.jwks_file = Some("jwks".into());
    assert!(build(both).contains("exactly one"));
    let mut missing = raw_jwt(&["ES256"]);
    missing.key_file = Some("absent.pem".into());
    assert!(build(missing).contains("/cfg/absent.pem"));
    assert!(build(raw_jwt(&["ES256"])).contains("not a PEM EC public key"));
}

#[test]
fn exp_and_nbf_allow_the_leeway_and_no_more() {
    let auth = jwt_auth(raw_jwt(&["ES256"]), ES_PUBLIC);
    let check = |extra: serde_json::Value| {
        let mut claims = claims();
        for (k, v) in extra.as_object().expect("object") {
            claims[k] = v.clone();
        }
        let token = sign(Algorithm::ES256, ES_PRIVATE, None, &claims);
        auth.authenticate(Some(&bearer(&token)), NOW).map(drop)
    };
    assert_eq!(check(json!({ "exp": NOW - 29 })), Ok(()));
    assert_eq!(
        check(json!({ "exp": NOW - 30 })),
        Err(AuthError::Invalid("token expired"))
    );
    assert_eq!(
        check(json!({ "exp": NOW - 3600 })),
        Err(AuthError::Invalid("token expired"))
    );
    assert_eq!(check(json!({ "exp": (NOW + 10) as f64 + 0.5 })), Ok(()));
    assert_eq!(check(json!({ "nbf": NOW + 30 })), Ok(()));
    assert_eq!(
        check(json!({ "nbf": NOW + 31 })),
        Err(AuthError::Invalid("token not yet valid"))
    );
    assert_eq!(
        check(json!({ "exp": "tomorrow" })),
        Err(AuthError::Invalid("exp claim is not a date"))
    );
    let token = sign(Algorithm::ES256, ES_PRIVATE, None, &json!({ "sub": "x" }));
    assert_eq!(
        auth.authenticate(Some(&bearer(&token)), NOW),
        Err(AuthError::Invalid("missing exp claim"))
    );
}

#[test]
fn issuer_and_audience_are_enforced_when_configured() {
    let mut raw = raw_jwt(&["ES256"]);
    raw.issuer = Some("https://id.example.com".into());
    raw.audience = Some("whipgate".into());
    let auth = jwt_auth(raw, ES_PUBLIC);
    let check = |iss: Option<&str>, aud: Option<serde_json::Value>| {
        let mut claims = claims();
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            claims["aud"] = aud;
        }
        let token = sign(Algorithm::ES256, ES_PRIVATE, None, &claims);
        auth.authenticate(Some(&bearer(&token)), NOW).map(drop)
    };
    let good_iss = Some("https://id.example.com");
    assert_eq!(check(good_iss, Some(json!("whipgate"))), Ok(()));
    assert_eq!(check(good_iss, Some(json!(["other", "whipgate"]))), Ok(()));
    assert_eq!(
        check(Some("https://evil.example"), Some(json!("whipgate"))),
        Err(AuthError::Invalid("wrong issuer"))
    );
    assert_eq!(
        check(good_iss, Some(json!("other"))),
        Err(AuthError::Invalid("wrong audience"))
    );
    assert_eq!(
        check(None, Some(json!("whipgate"))),
        Err(AuthError::Invalid("missing iss claim"))
    );
    assert_eq!(
        check(good_iss, None),
        Err(AuthError::Invalid("missing aud claim"))
    );

    let open = jwt_auth(raw_jwt(&["ES256"]), ES_PUBLIC);
    let mut claims = claims();
    claims["aud"] = json!("somebody-else");
    let token = sign(Algorithm::ES256, ES_PRIVATE, None, &claims);
    assert!(
        open.authenticate(Some(&bearer(&token)), NOW).is_ok(),
        "no audience configured: any aud is accepted"
    );
}

fn jwks(entries: &[(Option<&str>, &str)]) -> String {
    let keys = entries
        .iter()
        .map(|(kid, private)| {
            let key = EncodingKey::from_ec_pem(private.as_bytes()).expect("ec");
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk");
            jwk.common.key_id = kid.map(str::to_owned);
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).expect("json")
}

fn jwks_auth(set: &str) -> ClientAuth {
    let mut raw = raw_jwt(&["ES256", "RS256"]);
    raw.key_file = None;
    raw.jwks_file = Some("keys.json".into());
    let secrets = FakeSecrets::default().with_file("keys.json", set);
    ClientAuth::build(&RawClientAuth::Jwt(raw), Path::new("/cfg"), &secrets).expect("build")
}

#[test]
fn jwks_picks_the_key_by_kid() {
    let auth = jwks_auth(&jwks(&[
        (Some("a"), ES_PRIVATE),
        (Some("b"), ES_OTHER_PRIVATE),
    ]));
    let try_token = |private: &str, kid: Option<&str>| {
        let token = sign(Algorithm::ES256, private, kid, &claims());
        auth.authenticate(Some(&bearer(&token)), NOW).map(drop)
    };
    assert_eq!(try_token(ES_PRIVATE, Some("a")), Ok(()));
    assert_eq!(try_token(ES_OTHER_PRIVATE, Some("b")), Ok(()));
    assert_eq!(
        try_token(ES_PRIVATE, Some("b")),
        Err(AuthError::Invalid("bad signature"))
    );
    assert_eq!(
        try_token(ES_PRIVATE, Some("zzz")),
        Err(AuthError::Invalid("unknown kid"))
    );
    assert_eq!(
        try_token(ES_PRIVATE, None),
        Err(AuthError::Invalid("token has no kid"))
    );
    // An RS256 token naming an EC key must not be checked with it.
    let token = sign(Algorithm::RS256, RS_PRIVATE, Some("a"), &claims());
    assert_eq!(
        auth.authenticate(Some(&bearer(&token)), NOW),
        Err(AuthError::Invalid("key is not for this algorithm"))
    );

    let single = jwks_auth(&jwks(&[(None, ES_PRIVATE)]));
    let token = sign(Algorithm::ES256, ES_PRIVATE, None, &claims());
    assert!(single.authenticate(Some(&bearer(&token)), NOW).is_ok());
}

#[test]
fn jwks_without_usable_keys_or_with_twin_kids_is_refused() {
    let build = |set: &str| {
        let mut raw = raw_jwt(&["EdDSA"]);
        raw.key_file = None;
        raw.jwks_file = Some("keys.json".into());
        let secrets = FakeSecrets::default().with_file("keys.json", set);
        ClientAuth::build(&RawClientAuth::Jwt(raw), Path::new("/cfg"), &secrets).map(drop)
    };
    let es_only = jwks(&[(Some("a"), ES_PRIVATE)]);
    assert!(build(&es_only)
        .expect_err("no EdDSA key")
        .contains("no signing key"));
    assert!(build("{\"keys\": 3}")
        .expect_err("not a set")
        .contains("not a JSON Web Key Set"));
    let twins = jwks(&[(Some("a"), ES_PRIVATE), (Some("a"), ES_OTHER_PRIVATE)]);
    let mut raw = raw_jwt(&["ES256"]);
    raw.key_file = None;
    raw.jwks_file = Some("keys.json".into());
    let secrets = FakeSecrets::default().with_file("keys.json", &twins);
    let err = ClientAuth::build(&RawClientAuth::Jwt(raw), Path::new("/cfg"), &secrets)
        .map(drop)
        .expect_err("twins");
    assert!(err.contains("appears twice"), "{err}");
}

#[test]
fn grant_claims_must_be_globs() {
    let auth = jwt_auth(raw_jwt(&["ES256"]), ES_PUBLIC);
    for bad in [json!(7), json!(["ok", 3]), json!({ "a": 1 }), json!("[")] {
        let mut claims = claims();
        claims["publish"] = bad;
        let token = sign(Algorithm::ES256, ES_PRIVATE, None, &claims);
        assert!(matches!(
            auth.authenticate(Some(&bearer(&token)), NOW),
            Err(AuthError::Invalid(_))
        ));
    }
    let token = sign(
        Algorithm::ES256,
        ES_PRIVATE,
        None,
        &json!({ "exp": NOW + 60 }),
    );
    let identity = auth
        .authenticate(Some(&bearer(&token)), NOW)
        .expect("valid");
    assert!(
        !identity.may(EndpointKind::Whip, "a") && !identity.may(EndpointKind::Whep, "a"),
        "no grant claims, no grants"
    );
}

fn bearer_auth() -> ClientAuth {
    let raw: RawClientAuth = toml::from_str(
        r#"
        mode = "bearer"
        [[tokens]]
        token_env = "CAM_TOKEN"
        subject = "cam"
        tier = "gold"
        publish = ["live/cam-*"]
        play = []
        [[tokens]]
        token_file = "viewer.token"
        subject = "viewer"
        "#,
    )
    .expect("toml");
    let secrets = FakeSecrets::default()
        .with_env("CAM_TOKEN", "cam-secret-token")
        .with_file("viewer.token", "viewer-secret-token\n");
    ClientAuth::build(&raw, Path::new("/cfg"), &secrets).expect("build")
}

#[test]
fn bearer_tokens_with_and_without_the_scheme() {
    let auth = bearer_auth();
    for header in [
        "Bearer cam-secret-token",
        "bearer cam-secret-token",
        "BEARER   cam-secret-token ",
        "cam-secret-token",
    ] {
        let identity = auth
            .authenticate(Some(&HeaderValue::from_static(header)), NOW)
            .unwrap_or_else(|e| panic!("{header:?}: {e}"));
        assert_eq!(identity.subject.as_deref(), Some("cam"));
        assert_eq!(identity.tier.as_deref(), Some("gold"));
        assert!(identity.claims.is_empty());
        assert!(identity.may(EndpointKind::Whip, "live/cam-1"));
        assert!(!identity.may(EndpointKind::Whip, "live/other"));
        assert!(!identity.may(EndpointKind::Whep, "live/cam-1"));
    }
    let viewer = auth
        .authenticate(Some(&bearer("viewer-secret-token")), NOW)
        .expect("viewer");
    assert_eq!(viewer.subject.as_deref(), Some("viewer"));
    assert!(viewer.may(EndpointKind::Whip, "anything") && viewer.may(EndpointKind::Whep, "x"));
}

#[test]
fn wrong_or_missing_bearer_tokens() {
    let auth = bearer_auth();
    assert_eq!(auth.authenticate(None, NOW), Err(AuthError::Missing));
    assert_eq!(
        auth.authenticate(Some(&HeaderValue::from_static("")), NOW),
        Err(AuthError::Missing)
    );
    for wrong in [
        "Bearer cam-secret-toke",
        "Bearer cam-secret-token2",
        "Basic Y2FtOnNlY3JldA==",
    ] {
        assert_eq!(
            auth.authenticate(Some(&HeaderValue::from_static(wrong)), NOW),
            Err(AuthError::Invalid("unknown token"))
        );
    }
    let binary = HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("opaque bytes");
    assert_eq!(
        auth.authenticate(Some(&binary), NOW),
        Err(AuthError::Invalid("malformed Authorization header"))
    );
    let long = bearer(&"a".repeat(MAX_TOKEN_LEN + 1));
    assert_eq!(
        auth.authenticate(Some(&long), NOW),
        Err(AuthError::Invalid("token too long"))
    );
}

#[test]
fn bearer_configuration_errors_name_no_secret() {
    let build = |toml_text: &str, secrets: &FakeSecrets| {
        let raw: RawClientAuth = toml::from_str(toml_text).expect("toml");
        ClientAuth::build(&raw, Path::new("/cfg"), secrets)
            .map(drop)
            .expect_err("refused")
    };
    let secrets = FakeSecrets::default()
        .with_env("A", "same-secret-value")
        .with_env("B", "same-secret-value");
    let twins = build(
        r#"
        mode = "bearer"
        tokens = [{ token_env = "A", subject = "a" }, { token_env = "B", subject = "b" }]
        "#,
        &secrets,
    );
    assert!(twins.contains("same as the token of `a`"), "{twins}");
    assert!(!twins.contains("same-secret-value"));
    let unset = build(
        r#"
        mode = "bearer"
        tokens = [{ token_env = "NOPE", subject = "a" }]
        "#,
        &secrets,
    );
    assert!(unset.contains("NOPE is not set"), "{unset}");
    let both = build(
        r#"
        mode = "bearer"
        tokens = [{ token_env = "A", token_file = "f", subject = "a" }]
        "#,
        &secrets,
    );
    assert!(both.contains("exactly one"), "{both}");
    assert!(build("mode = \"bearer\"\ntokens = []", &secrets).contains("at least one"));
    let bad_glob = build(
        r#"
        mode = "bearer"
        tokens = [{ token_env = "A", subject = "a", play = ["["] }]
        "#,
        &secrets,
    );
    assert!(bad_glob.contains("play"), "{bad_glob}");
}

#[test]
fn debug_output_holds_no_secret() {
    let bearer = bearer_auth();
    let shown = format!("{bearer:?}");
    assert!(shown.contains("cam") && shown.contains("viewer"), "{shown}");
    assert!(!shown.contains("secret-token"), "{shown}");
    let hs = jwt_auth(raw_jwt(&["HS256"]), HS_SECRET);
    let shown = format!("{hs:?}");
    assert!(shown.contains("HS256"), "{shown}");
    assert!(!shown.contains(HS_SECRET), "{shown}");
    assert!(!format!("{:?}", ClientAuth::none()).is_empty());
}

#[test]
fn none_lets_everyone_do_everything() {
    let auth = ClientAuth::build(
        &RawClientAuth::None {},
        Path::new("/cfg"),
        &FakeSecrets::default(),
    )
    .expect("build");
    let identity = auth
        .authenticate(Some(&bearer("whatever")), NOW)
        .expect("anonymous");
    assert_eq!(identity, Identity::anonymous());
    assert!(identity.may(EndpointKind::Whip, "any/stream/at/all"));
    assert!(identity.may(EndpointKind::Whep, ""));
}

#[test]
fn errors_map_to_status_and_challenge() {
    assert_eq!(AuthError::Missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(AuthError::Invalid("x").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(AuthError::Forbidden.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        AuthError::Missing.www_authenticate(),
        Some(HeaderValue::from_static("Bearer realm=\"whipgate\""))
    );
    assert_eq!(
        AuthError::Invalid("token expired").www_authenticate(),
        Some(HeaderValue::from_static(
            "Bearer realm=\"whipgate\", error=\"invalid_token\", \
             error_description=\"token expired\""
        ))
    );
    assert_eq!(AuthError::Forbidden.www_authenticate(), None);
}

#[test]
fn raw_tables_refuse_unknown_keys_and_fill_defaults() {
    let raw: RawClientAuth = toml::from_str(
        r#"
        mode = "jwt"
        jwks_file = "keys.json"
        algorithms = ["RS256"]
        leeway = "45s"
        "#,
    )
    .expect("toml");
    let RawClientAuth::Jwt(jwt) = &raw else {
        panic!("{raw:?}")
    };
    assert_eq!(jwt.leeway, Duration::from_secs(45));
    assert_eq!(
        (
            jwt.tier_claim.as_str(),
            jwt.publish_claim.as_str(),
            jwt.play_claim.as_str()
        ),
        ("tier", "publish", "play")
    );
    assert_eq!(raw.check_shape(), Ok(()));
    for typo in [
        "mode = \"jwt\"\nkey_file = \"k\"\nalgorithms = [\"RS256\"]\nisuer = \"x\"",
        "mode = \"bearer\"\ntokens = [{ token_env = \"A\", subject = \"a\", pubish = [] }]",
        "mode = \"none\"\ntokens = []",
        "mode = \"bearer\"\ntokens = []\nextra = 1",
        "mode = \"basic\"",
    ] {
        assert!(
            toml::from_str::<RawClientAuth>(typo).is_err(),
            "accepted {typo:?}"
        );
    }
    let none: RawClientAuth = toml::from_str("mode = \"none\"").expect("toml");
    assert_eq!(none, RawClientAuth::None {});
    let default_grants: RawClientAuth =
        toml::from_str("mode = \"bearer\"\ntokens = [{ token_env = \"A\", subject = \"a\" }]")
            .expect("toml");
    let RawClientAuth::Bearer { tokens } = default_grants else {
        panic!("bearer")
    };
    assert_eq!(tokens[0].publish, vec!["*".to_owned()]);
    assert_eq!(tokens[0].play, vec!["*".to_owned()]);
}

proptest! {
    #[test]
    fn any_header_value_is_handled_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let bearer = bearer_auth();
            let jwt = jwt_auth(raw_jwt(&["ES256"]), ES_PUBLIC);
            let _ = bearer.authenticate(Some(&value), NOW);
            let _ = jwt.authenticate(Some(&value), NOW);
        }
    }

    #[test]
    fn the_scheme_prefix_never_changes_the_outcome(token in "[!-~]{1,64}") {
        let auth = bearer_auth();
        let bare = HeaderValue::from_str(&token).expect("visible ASCII");
        prop_assert_eq!(
            auth.authenticate(Some(&bare), NOW),
            auth.authenticate(Some(&bearer(&token)), NOW)
        );
    }

    #[test]
    fn star_grants_every_stream(stream in "\\PC{0,80}") {
        let grants = Grants::parse(&["*"]).expect("glob");
        prop_assert!(grants.allows(&stream));
        prop_assert!(Grants::all().allows(&stream));
        prop_assert!(!Grants::none().allows(&stream));
    }
}
