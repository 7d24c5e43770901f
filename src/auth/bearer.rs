//! `mode = "bearer"`: static tokens.
//!
//! Only an HMAC of each token, under a key drawn at build time, is kept; a presented token
//! is checked against every entry with `ring::hmac::verify`, whose comparison is constant
//! time, and the loop does not stop at the first match, so timing says neither how much of
//! a token was right nor which entry matched.

use std::fmt;
use std::path::Path;

use ring::hmac;
use ring::rand::SystemRandom;

use super::{read_file, AuthError, Grants, Identity, RawBearerToken};
use crate::secret::SecretSource;

#[derive(Clone)]
pub(super) struct BearerTokens {
    key: hmac::Key,
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    tag: Vec<u8>,
    subject: String,
    tier: Option<String>,
    publish: Grants,
    play: Grants,
}

impl BearerTokens {
    pub(super) fn build(
        raw: &[RawBearerToken],
        base_dir: &Path,
        secrets: &dyn SecretSource,
    ) -> Result<Self, String> {
        check_shape(raw)?;
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| "bearer auth: no randomness for the token key".to_owned())?;
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.len());
        for token in raw {
            let what = format!("bearer token of `{}`", token.subject);
            let value = match (&token.token_env, &token.token_file) {
                (Some(name), None) => secrets
                    .env(name)
                    .ok_or_else(|| format!("{what}: environment variable {name} is not set"))?,
                (None, Some(path)) => read_file(secrets, base_dir, path, &what)?,
                // check_shape refused every other combination.
                _ => {
                    return Err(format!(
                        "{what}: give exactly one of token_env or token_file"
                    ))
                }
            };
            let value = value.trim();
            if value.is_empty() {
                return Err(format!("{what} is empty"));
            }
            if value.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
                return Err(format!(
                    "{what} must be printable ASCII without spaces, as HTTP headers carry it"
                ));
            }
            let tag = hmac::sign(&key, value.as_bytes()).as_ref().to_vec();
            if let Some(twin) = entries.iter().find(|e| e.tag == tag) {
                return Err(format!(
                    "{what} is the same as the token of `{}`",
                    twin.subject
                ));
            }
            entries.push(Entry {
                tag,
                subject: token.subject.clone(),
                tier: token.tier.clone(),
                publish: Grants::parse(&token.publish).map_err(|e| format!("{what}: {e}"))?,
                play: Grants::parse(&token.play).map_err(|e| format!("{what}: {e}"))?,
            });
        }
        Ok(Self { key, entries })
    }

    pub(super) fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            let matched = hmac::verify(&self.key, token.as_bytes(), &entry.tag).is_ok();
            if matched && found.is_none() {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(AuthError::Invalid("unknown token"))?;
        Ok(Identity {
            subject: Some(entry.subject.clone()),
            tier: entry.tier.clone(),
            claims: serde_json::Map::new(),
            publish: entry.publish.clone(),
            play: entry.play.clone(),
        })
    }
}

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subjects: Vec<&str> = self.entries.iter().map(|e| e.subject.as_str()).collect();
        f.debug_struct("BearerTokens")
            .field("subjects", &subjects)
            .finish_non_exhaustive()
    }
}

/// Everything but the secrets themselves.
pub(super) fn check_shape(raw: &[RawBearerToken]) -> Result<(), String> {
    if raw.is_empty() {
        return Err("bearer auth needs at least one entry in tokens".to_owned());
    }
    for token in raw {
        if token.subject.trim().is_empty() {
            return Err("bearer token: subject may not be empty".to_owned());
        }
        let what = format!("bearer token of `{}`", token.subject);
        if token.token_env.is_some() == token.token_file.is_some() {
            return Err(format!(
                "{what}: give exactly one of token_env or token_file"
            ));
        }
        Grants::parse(&token.publish).map_err(|e| format!("{what}: publish: {e}"))?;
        Grants::parse(&token.play).map_err(|e| format!("{what}: play: {e}"))?;
    }
    Ok(())
}
