//! Short-lived TURN credentials for coturn's `use-auth-secret` (the "TURN REST API"
//! draft-uberti-behave-turn-rest): the username is `expiry:subject`, the password the
//! base64 HMAC-SHA1 of the username under a secret shared with the TURN server, so the TURN
//! server checks them without asking the gateway. Handed to clients in a `Link` header
//! (RFC 9725 §4.4). Pure: the caller passes `now`.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::hmac;

/// Longest subject kept in a username; coturn and browsers handle far more, but a Link
/// header stays small.
pub const MAX_SUBJECT_LEN: usize = 64;

/// A username and password a TURN server with the same secret accepts until `expires`.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `expiry:subject` (just `expiry` for an empty subject).
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// Unix seconds after which the TURN server refuses the credential.
    pub expires_unix_secs: u64,
}

/// Mints a credential for `subject` valid for `lifetime` from `now_unix_secs`.
pub fn mint(
    secret: &[u8],
    subject: &str,
    now_unix_secs: u64,
    lifetime: Duration,
) -> TurnCredential {
    let expires_unix_secs = now_unix_secs.saturating_add(lifetime.as_secs());
    let subject = sanitize_subject(subject);
    let username = if subject.is_empty() {
        expires_unix_secs.to_string()
    } else {
        format!("{expires_unix_secs}:{subject}")
    };
    // SHA-1 is what coturn's use-auth-secret speaks; HMAC-SHA1 is still a sound MAC.
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let password = STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref());
    TurnCredential {
        username,
        password,
        expires_unix_secs,
    }
}

/// Keeps `[A-Za-z0-9._-]`, replaces every other character with `_`, and cuts at
/// [`MAX_SUBJECT_LEN`]: a subject can then end neither the username's `expiry:` prefix nor
/// the quoted string it travels in.
pub fn sanitize_subject(subject: &str) -> String {
    subject
        .chars()
        .take(MAX_SUBJECT_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_unix_secs", &self.expires_unix_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_coturn_and_openssl() {
        // printf %s "1800000600:cam-7" | openssl dgst -sha1 -hmac "coturn-shared-secret" -binary | base64
        let cred = mint(
            b"coturn-shared-secret",
            "cam-7",
            1_800_000_000,
            Duration::from_secs(600),
        );
        assert_eq!(cred.username, "1800000600:cam-7");
        assert_eq!(cred.password, "xR0YK5OHgNkx3hQyZOh25SPpJko=");
        assert_eq!(cred.expires_unix_secs, 1_800_000_600);
        // printf %s "1800003600:user_name.x" | openssl dgst -sha1 -hmac "s3cr3t" -binary | base64
        let cred = mint(
            b"s3cr3t",
            "user:name.x",
            1_800_000_000,
            Duration::from_secs(3600),
        );
        assert_eq!(cred.username, "1800003600:user_name.x");
        assert_eq!(cred.password, "U/ZeDr6UBpN9peyLlXJMmeUb6e8=");
    }

    #[test]
    fn subjects_are_made_safe() {
        assert_eq!(sanitize_subject("a:b\"c d,é;<>"), "a_b_c_d_____");
        assert_eq!(sanitize_subject(&"x".repeat(100)).len(), MAX_SUBJECT_LEN);
        let cred = mint(b"k", "", 10, Duration::from_secs(5));
        assert_eq!(cred.username, "15");
    }

    fn link(url: &str, cred: &TurnCredential) -> String {
        crate::frontdoor::IceServer {
            uri: url.to_owned(),
            username: Some(cred.username.clone()),
            credential: Some(cred.password.clone()),
            credential_type: Some("password".to_owned()),
        }
        .to_header_value()
    }

    #[test]
    fn link_header_in_rfc_9725_form() {
        let cred = mint(b"k", "viewer", 100, Duration::from_secs(60));
        assert_eq!(
            link("turn:turn.example.net:3478?transport=udp", &cred),
            format!(
                "<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; \
                 username=\"160:viewer\"; credential=\"{}\"; credential-type=\"password\"",
                cred.password
            )
        );
    }

    #[test]
    fn the_frontdoor_link_parser_reads_it_back() {
        let cred = mint(b"secret", "cam-1", 1000, Duration::from_secs(60));
        let value = link("turns:turn.example.net:443?transport=tcp", &cred);
        let servers = crate::frontdoor::ice_servers([value.as_str()]);
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].uri, "turns:turn.example.net:443?transport=tcp");
        assert_eq!(servers[0].username.as_deref(), Some(cred.username.as_str()));
        assert_eq!(
            servers[0].credential.as_deref(),
            Some(cred.password.as_str())
        );
        assert_eq!(servers[0].credential_type.as_deref(), Some("password"));
    }

    #[test]
    fn debug_hides_the_password() {
        let cred = mint(b"secret", "cam-1", 1000, Duration::from_secs(60));
        let shown = format!("{cred:?}");
        assert!(shown.contains("1060:cam-1"));
        assert!(!shown.contains(&cred.password));
    }

    proptest! {
        #[test]
        fn usernames_keep_their_shape(subject in "\\PC{0,100}", now in 0u64..4_000_000_000, secs in 0u64..1_000_000) {
            let cred = mint(b"secret", &subject, now, Duration::from_secs(secs));
            let (expiry, rest) = cred.username.split_once(':').unwrap_or((&cred.username, ""));
            prop_assert_eq!(expiry.parse::<u64>().ok(), Some(now + secs));
            prop_assert!(!rest.contains(':'));
            prop_assert!(rest.len() <= MAX_SUBJECT_LEN);
            prop_assert!(rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            let servers = crate::frontdoor::ice_servers([link("turn:t.example:3478", &cred).as_str()]);
            prop_assert_eq!(servers.len(), 1);
            prop_assert_eq!(servers[0].username.as_deref(), Some(cred.username.as_str()));
        }

    }
}
