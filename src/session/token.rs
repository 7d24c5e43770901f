//! Sealing and opening session tokens with ChaCha20-Poly1305 under rotating, named keys.
//!
//! Token text: `{key id}.{base64url(nonce ‖ ciphertext ‖ tag)}`. The key id travels in clear so
//! that the right key is found without trial decryption; it is also bound as associated data,
//! so a token cannot be moved to another key's id.
//!
//! The plaintext is a version byte and the claims in postcard's compact binary form. Tokens
//! sealed before the version byte hold the claims as JSON (they start with `{`) and still
//! open, so a rolling upgrade keeps every live session: a broadcast's token may be days old.
//! JSON cost a third of the token work and made tokens a third longer. The first key of the ring seals; every key
//! opens, which is how keys rotate: add the new key first, keep the old until its tokens are
//! no longer wanted, then remove it to revoke them all.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use serde::{Deserialize, Serialize};

use crate::kind::EndpointKind;

/// What a token carries. Never shown to anyone: only whipgate reads it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Random id of this session, for the per-replica registry and logs.
    pub sid: String,
    pub backend: String,
    /// Absolute URL of the backend's resource (may hold a vendor secret).
    pub resource: String,
    pub kind: EndpointKind,
    pub stream: String,
    pub route: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which the token opens no more.
    pub expires: u64,
    /// The client subject that created the session, when its route binds sessions to it.
    // `default`: JSON tokens from before a field existed left it out. No
    // `skip_serializing_if`: postcard's fields are positional, so none may be skipped.
    #[serde(default)]
    pub subject: Option<String>,
    /// What the backend's adapter must remember for PATCH and DELETE besides `resource`
    /// (a participant identity or id, an ingress id, a per-session credential), so that any
    /// replica can serve them. Encrypted with the rest; never shown.
    #[serde(default)]
    pub state: SessionState,
}

/// The resource URL and the adapter's state may hold vendor secrets (a stream key in a
/// path, a token): `Debug` shows neither.
impl std::fmt::Debug for SessionClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionClaims")
            .field("sid", &self.sid)
            .field("backend", &self.backend)
            .field("resource", &"<redacted>")
            .field("kind", &self.kind)
            .field("stream", &self.stream)
            .field("route", &self.route)
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("subject", &self.subject)
            .field("state", &self.state.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// An adapter's own session memory: names it chooses, string values.
pub type SessionState = std::collections::BTreeMap<String, String>;

/// Why a token did not open. Every variant is a 404 to the client, deliberately alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("session token is malformed")]
    Malformed,
    #[error("session token names an unknown key")]
    UnknownKey,
    #[error("session token does not authenticate")]
    Forged,
    #[error("session token has expired")]
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("session key id {0:?} must be 1-32 characters of A-Z a-z 0-9 _ -")]
    BadId(String),
    #[error("session key {0:?} must be at least {MIN_SECRET_LEN} bytes long")]
    ShortSecret(String),
    #[error("session key id {0:?} appears twice")]
    DuplicateId(String),
    #[error("at least one session key is needed")]
    Empty,
}

pub const MIN_SECRET_LEN: usize = 32;

const AAD_PREFIX: &[u8] = b"whipgate-session-v1.";
/// First plaintext byte of a postcard-encoded token; a JSON one starts with `{`. postcard
/// writes fields by position and enum variants by index: a new field goes at the end of
/// [`SessionClaims`] and a new `EndpointKind` after the others, each with a new version byte.
const POSTCARD_V2: u8 = 2;
const HKDF_SALT: &[u8] = b"whipgate session token key v1";

struct NamedKey {
    id: String,
    key: LessSafeKey,
    /// The additional data every token of this key is sealed with, built once.
    aad: Box<[u8]>,
}

/// The session keys of this replica; the first one seals.
pub struct Keyring {
    keys: Vec<NamedKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

impl Keyring {
    /// Builds the ring from `(id, secret)` pairs; secrets of any form are stretched with HKDF.
    pub fn new<I, S>(keys: I) -> Result<Self, KeyError>
    where
        I: IntoIterator<Item = (String, S)>,
        S: AsRef<[u8]>,
    {
        let mut named: Vec<NamedKey> = Vec::new();
        for (id, secret) in keys {
            let valid_id = !id.is_empty()
                && id.len() <= 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_id {
                return Err(KeyError::BadId(id));
            }
            if secret.as_ref().len() < MIN_SECRET_LEN {
                return Err(KeyError::ShortSecret(id));
            }
            if named.iter().any(|k| k.id == id) {
                return Err(KeyError::DuplicateId(id));
            }
            let key = derive_key(secret.as_ref(), &id);
            let aad = [AAD_PREFIX, id.as_bytes()].concat().into_boxed_slice();
            named.push(NamedKey { id, key, aad });
        }
        if named.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys: named })
    }

    /// Seals `claims` under the first key with the caller's fresh random `nonce`.
    pub fn seal(&self, claims: &SessionClaims, nonce: [u8; NONCE_LEN]) -> String {
        // The claims are written after the nonce and encrypted where they lie: one buffer
        // from serialization to the token's base64. Serializing plain strings, integers and
        // a map into a Vec cannot fail.
        let mut sealed = Vec::with_capacity(NONCE_LEN + 256);
        sealed.extend_from_slice(&nonce);
        sealed.push(POSTCARD_V2);
        match postcard::to_extend(claims, sealed) {
            Ok(sealed) => self.seal_after_nonce(sealed, nonce),
            Err(_) => String::new(),
        }
    }

    /// Encrypts `plain` under the first key: the token text for any plaintext.
    #[cfg(test)]
    fn seal_plaintext(&self, plain: &[u8], nonce: [u8; NONCE_LEN]) -> String {
        let mut sealed = Vec::with_capacity(NONCE_LEN + plain.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plain);
        self.seal_after_nonce(sealed, nonce)
    }

    /// Encrypts what follows `nonce` at the start of `sealed` under the first key, appends
    /// the tag, and writes the token: `{key id}.{base64 of nonce, ciphertext and tag}`.
    fn seal_after_nonce(&self, mut sealed: Vec<u8>, nonce: [u8; NONCE_LEN]) -> String {
        let Some(named) = self.keys.first() else {
            return String::new();
        };
        let Some(plain) = sealed.get_mut(NONCE_LEN..) else {
            return String::new();
        };
        // ChaCha20-Poly1305 seals any length below 2^38 bytes; claims are far smaller.
        let Ok(tag) = named.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&*named.aad),
            plain,
        ) else {
            return String::new();
        };
        sealed.extend_from_slice(tag.as_ref());
        let mut token = String::with_capacity(named.id.len() + 1 + sealed.len().div_ceil(3) * 4);
        token.push_str(&named.id);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&sealed, &mut token);
        token
    }

    /// Opens a token; `now` is Unix seconds.
    pub fn open(&self, token: &str, now: u64) -> Result<SessionClaims, TokenError> {
        let (id, body) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let named = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(TokenError::UnknownKey)?;
        let mut sealed = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        if sealed.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(TokenError::Malformed);
        }
        let (nonce, ciphertext) = sealed.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TokenError::Malformed)?;
        let plain = named
            .key
            .open_in_place(nonce, Aad::from(&*named.aad), ciphertext)
            .map_err(|_| TokenError::Forged)?;
        let claims: SessionClaims = match plain {
            [POSTCARD_V2, encoded @ ..] => match postcard::take_from_bytes(encoded) {
                Ok((claims, [])) => claims,
                // Authenticated yet undecodable, or with bytes left over: a sealing bug, not
                // an attacker (who cannot make the tag match); still only a 404.
                _ => return Err(TokenError::Forged),
            },
            [b'{', ..] => serde_json::from_slice(plain).map_err(|_| TokenError::Forged)?,
            _ => return Err(TokenError::Forged),
        };
        if now >= claims.expires {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

struct KeyLen;

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        CHACHA20_POLY1305.key_len()
    }
}

fn derive_key(secret: &[u8], id: &str) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret);
    let info = [id.as_bytes()];
    let mut bytes = [0u8; 32];
    // Expanding 32 bytes of SHA-256 HKDF output is always within the 255-block limit.
    if let Ok(okm) = prk.expand(&info, KeyLen) {
        let _ = okm.fill(&mut bytes);
    }
    // A 32-byte key is exactly what ChaCha20-Poly1305 takes.
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
        .unwrap_or_else(|_| unreachable!("32-byte key for ChaCha20-Poly1305"));
    LessSafeKey::new(unbound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring(ids: &[(&str, &str)]) -> Keyring {
        Keyring::new(ids.iter().map(|(id, s)| (id.to_string(), s.as_bytes()))).expect("valid keys")
    }

    fn claims() -> SessionClaims {
        SessionClaims {
            sid: "0123456789abcdef".into(),
            backend: "janus".into(),
            resource: "https://vendor.example/resource/abc?secret=s3cr3t".into(),
            kind: EndpointKind::Whip,
            stream: "cam-1".into(),
            route: "route-1".into(),
            created: 1_000,
            expires: 2_000,
            subject: None,
            state: Default::default(),
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// Sealed by the release before tokens were encrypted in one buffer (4e0ecf0): live
    /// sessions must survive a rolling upgrade, and the same claims, key and nonce must
    /// still give the same bytes.
    const EARLIER_RELEASE_TOKEN: &str = "k1.BwcHBwcHBwcHBwcHQI_to3U_SSiHHbcLm-bHj0yf5RpZzzdDdmtVgi2nimLPg7pH4-K0jEfRzbp80CPk44ZU11vtc8aX5bJMFsEV4MO2iQ87xhvxvVM5IERHHGNoehooKFoRvsct0AnZXvW2NlPtL3K_bNonJXiqRMter5DPTbQuv8zQhNln9yZVC8Wjwg";

    #[test]
    fn tokens_of_the_earlier_release_open_and_seal_alike() {
        let mut expected = claims();
        expected.subject = Some("alice".into());
        expected.state.insert("identity".into(), "p-1".into());
        let keys = ring(&[("k1", A)]);
        assert_eq!(
            keys.open(EARLIER_RELEASE_TOKEN, 1_500),
            Ok(expected.clone())
        );
        assert_eq!(keys.seal(&expected, [7; 12]), EARLIER_RELEASE_TOKEN);
    }

    #[test]
    fn seals_and_opens_with_rotated_keys() {
        let old = ring(&[("k1", A)]);
        let token = old.seal(&claims(), [7; 12]);
        assert!(token.starts_with("k1."));
        assert!(!token.contains("s3cr3t"));
        let rotated = ring(&[("k2", B), ("k1", A)]);
        assert_eq!(rotated.open(&token, 1_500), Ok(claims()));
        assert!(rotated.seal(&claims(), [1; 12]).starts_with("k2."));
        let retired = ring(&[("k2", B)]);
        assert_eq!(retired.open(&token, 1_500), Err(TokenError::UnknownKey));
    }

    /// A token as releases before the version byte sealed it: the claims as JSON, with
    /// `subject` and `state` left out when empty, as they were then.
    fn seal_as_json(keys: &Keyring, json: &str, nonce: [u8; NONCE_LEN]) -> String {
        keys.seal_plaintext(json.as_bytes(), nonce)
    }

    #[test]
    fn json_tokens_of_earlier_releases_still_open() {
        let keys = ring(&[("k1", A)]);
        let json = r#"{"sid":"0123456789abcdef","backend":"janus","resource":"https://vendor.example/resource/abc?secret=s3cr3t","kind":"whip","stream":"cam-1","route":"route-1","created":1000,"expires":2000}"#;
        let token = seal_as_json(&keys, json, [3; 12]);
        assert_eq!(keys.open(&token, 1_500), Ok(claims()));
        assert_eq!(keys.open(&token, 2_000), Err(TokenError::Expired));
        let with_state = r#"{"sid":"s","backend":"b","resource":"http://h/r","kind":"whep","stream":"x","route":"r","created":1,"expires":9,"subject":"alice","state":{"ingress":"IN_1"}}"#;
        let opened = keys
            .open(&seal_as_json(&keys, with_state, [4; 12]), 5)
            .expect("opens");
        assert_eq!(opened.subject.as_deref(), Some("alice"));
        assert_eq!(
            opened.state.get("ingress").map(String::as_str),
            Some("IN_1")
        );
        assert_eq!(opened.kind, EndpointKind::Whep);
    }

    #[test]
    fn binary_tokens_are_shorter_than_json_ones_and_carry_every_field() {
        let keys = ring(&[("k1", A)]);
        let mut full = claims();
        full.subject = Some("alice".into());
        full.state.insert("participant".into(), "PA_xyz".into());
        let token = keys.seal(&full, [5; 12]);
        assert_eq!(keys.open(&token, 1_500), Ok(full.clone()));
        let json = serde_json::to_string(&full).expect("json");
        assert!(
            token.len() < seal_as_json(&keys, &json, [5; 12]).len() * 3 / 4,
            "{token}"
        );
    }

    #[test]
    fn an_authentic_plaintext_of_an_unknown_version_is_refused() {
        let keys = ring(&[("k1", A)]);
        for plain in ["\u{3}rest", "", "[1,2]"] {
            let token = seal_as_json(&keys, plain, [6; 12]);
            assert_eq!(
                keys.open(&token, 1_500),
                Err(TokenError::Forged),
                "{plain:?}"
            );
        }
    }

    #[test]
    fn expired_tokens_do_not_open() {
        let keys = ring(&[("k1", A)]);
        let token = keys.seal(&claims(), [7; 12]);
        assert_eq!(keys.open(&token, 2_000), Err(TokenError::Expired));
    }

    #[test]
    fn same_id_other_secret_is_forged() {
        let token = ring(&[("k1", A)]).seal(&claims(), [7; 12]);
        assert_eq!(
            ring(&[("k1", B)]).open(&token, 1_500),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn key_id_is_bound_to_the_ciphertext() {
        let keys = ring(&[("k1", A), ("k2", A)]);
        let token = keys.seal(&claims(), [7; 12]);
        let moved = token.replacen("k1.", "k2.", 1);
        assert_eq!(keys.open(&moved, 1_500), Err(TokenError::Forged));
    }

    #[test]
    fn refuses_weak_or_odd_keys() {
        assert!(matches!(
            Keyring::new([("k1".to_string(), "short")]),
            Err(KeyError::ShortSecret(_))
        ));
        assert!(matches!(
            Keyring::new([("k/1".to_string(), A)]),
            Err(KeyError::BadId(_))
        ));
        assert!(matches!(
            Keyring::new([("k".to_string(), A), ("k".to_string(), B)]),
            Err(KeyError::DuplicateId(_))
        ));
        assert!(matches!(
            Keyring::new(Vec::<(String, &str)>::new()),
            Err(KeyError::Empty)
        ));
    }

    proptest! {
        #[test]
        fn any_single_byte_change_is_refused(index in 0usize..400, byte in any::<u8>()) {
            let keys = ring(&[("k1", A)]);
            let token = keys.seal(&claims(), [9; 12]);
            let mut bytes = token.clone().into_bytes();
            let index = index % bytes.len();
            prop_assume!(bytes[index] != byte);
            bytes[index] = byte;
            if let Ok(tampered) = String::from_utf8(bytes) {
                prop_assert!(keys.open(&tampered, 1_500).is_err());
            }
        }

        #[test]
        fn truncation_is_refused(cut in 0usize..400) {
            let keys = ring(&[("k1", A)]);
            let token = keys.seal(&claims(), [9; 12]);
            let cut = cut % token.len();
            prop_assert!(keys.open(&token[..cut], 1_500).is_err());
        }

        #[test]
        fn any_claims_round_trip(
            text in proptest::collection::vec(".{0,40}", 7),
            times in (0u64..u64::MAX / 2, 1u64..u64::MAX / 2),
            subject in proptest::option::of(".{0,20}"),
            state in proptest::collection::btree_map(".{0,10}", ".{0,30}", 0..4),
            whep in any::<bool>(),
        ) {
            let keys = ring(&[("k1", A)]);
            let claims = SessionClaims {
                sid: text[0].clone(),
                backend: text[1].clone(),
                resource: text[2].clone(),
                kind: if whep { EndpointKind::Whep } else { EndpointKind::Whip },
                stream: text[3].clone(),
                route: text[4].clone(),
                created: times.0,
                expires: times.0 + times.1,
                subject,
                state,
            };
            let token = keys.seal(&claims, [8; 12]);
            prop_assert_eq!(keys.open(&token, times.0), Ok(claims));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,600}") {
            let keys = ring(&[("k1", A)]);
            let _ = keys.open(&text, 1_500);
        }
    }
}
