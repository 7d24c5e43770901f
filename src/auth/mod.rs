//! Client authentication: who may publish (WHIP) or play (WHEP) which streams.
//!
//! A route's `auth` table names a mode — `none`, `bearer` (static tokens) or `jwt` (signed
//! tokens checked against a key or a JSON Web Key Set) — and is built once into a
//! [`ClientAuth`]. Each request then turns its `Authorization` header into an [`Identity`]
//! whose grants say which streams it may publish and play. Pure: keys and secrets are read
//! through [`SecretSource`] at build time and the caller passes `now` in.
//!
//! Secrets (bearer tokens, HMAC keys) never appear in `Debug` output or error messages, and
//! neither does a presented token.

mod bearer;
mod jwt;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use crate::kind::EndpointKind;
use crate::secret::SecretSource;
use crate::stream::StreamPattern;
use bearer::BearerTokens;
use jwt::JwtVerifier;

/// An `auth` table as written in routes.toml.
///
/// ```toml
/// [route.auth]
/// mode = "jwt"
/// key_file = "keys/issuer.pem"
/// algorithms = ["ES256"]
/// issuer = "https://id.example.com"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawClientAuth {
    /// Anyone may publish and play anything. (A struct variant so that stray keys beside
    /// `mode = "none"` are refused like everywhere else.)
    None {},
    /// Static tokens, each with its own subject and grants.
    Bearer {
        /// The accepted tokens (at least one).
        tokens: Vec<RawBearerToken>,
    },
    /// Signed JSON Web Tokens.
    Jwt(RawJwt),
}

/// One static bearer token of `mode = "bearer"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBearerToken {
    /// Environment variable holding the token.
    pub token_env: Option<String>,
    /// File holding the token (relative to routes.toml); give exactly one of the two.
    pub token_file: Option<PathBuf>,
    /// Who holds the token, for logs and TURN usernames.
    pub subject: String,
    /// Rate or quality tier the holder belongs to, if any.
    pub tier: Option<String>,
    /// Stream globs the holder may publish to (default `["*"]`; `[]` for none).
    #[serde(default = "everything")]
    pub publish: Vec<String>,
    /// Stream globs the holder may play (default `["*"]`; `[]` for none).
    #[serde(default = "everything")]
    pub play: Vec<String>,
}

/// `mode = "jwt"`: where the verification keys are and what the tokens must say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// One key: the raw shared secret for HS*, a PEM public key for RS*/PS*/ES*/EdDSA.
    pub key_file: Option<PathBuf>,
    /// A JSON Web Key Set; a token's `kid` picks the key. Give exactly one of the two.
    pub jwks_file: Option<PathBuf>,
    /// Accepted `alg` values, e.g. `["ES256"]`; `none` is never accepted.
    pub algorithms: Vec<String>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required member of `aud`, if set. Unset: tokens are accepted whatever their `aud`.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (default 30 s).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Claim naming the holder's tier (default `tier`).
    #[serde(default = "default_tier_claim")]
    pub tier_claim: String,
    /// Claim with the stream globs the holder may publish to (default `publish`); a string
    /// or an array of strings. A token without it may publish nothing.
    #[serde(default = "default_publish_claim")]
    pub publish_claim: String,
    /// Claim with the stream globs the holder may play (default `play`).
    #[serde(default = "default_play_claim")]
    pub play_claim: String,
}

/// A validated `auth` table, ready to check requests.
#[derive(Clone)]
pub struct ClientAuth {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    None,
    Bearer(BearerTokens),
    Jwt(Box<JwtVerifier>),
}

/// Who made a request and what they may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Bearer subject or JWT `sub`; `None` for anonymous clients.
    pub subject: Option<String>,
    /// The configured tier of a bearer token, or the JWT's tier claim.
    pub tier: Option<String>,
    /// The JWT's claims (empty for bearer tokens and anonymous clients).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Streams it may publish to (WHIP).
    pub publish: Grants,
    /// Streams it may play (WHEP).
    pub play: Grants,
}

/// Stream globs an identity may use for one endpoint kind.
#[derive(Debug, Clone)]
pub struct Grants {
    patterns: Vec<StreamPattern>,
}

/// Why a request was refused. The reason is safe to show: it never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials where some are required.
    #[error("credentials required")]
    Missing,
    /// Credentials were presented and refused.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// Valid credentials without the grant for this stream.
    #[error("not allowed for this stream")]
    Forbidden,
}

// === impl RawClientAuth ===

impl RawClientAuth {
    /// Checks everything that needs no file or environment variable: for `whipgate check`
    /// when secrets are not resolved. [`ClientAuth::build`] does this too.
    pub fn check_shape(&self) -> Result<(), String> {
        match self {
            RawClientAuth::None {} => Ok(()),
            RawClientAuth::Bearer { tokens } => bearer::check_shape(tokens),
            RawClientAuth::Jwt(raw) => jwt::check_shape(raw).map(drop),
        }
    }
}

// === impl ClientAuth ===

impl ClientAuth {
    /// Resolves secrets and keys (relative paths against `base_dir`) and validates the table.
    /// The error is one line and never contains a secret.
    pub fn build(
        raw: &RawClientAuth,
        base_dir: &Path,
        secrets: &dyn SecretSource,
    ) -> Result<Self, String> {
        let mode = match raw {
            RawClientAuth::None {} => Mode::None,
            RawClientAuth::Bearer { tokens } => {
                Mode::Bearer(BearerTokens::build(tokens, base_dir, secrets)?)
            }
            RawClientAuth::Jwt(raw) => {
                Mode::Jwt(Box::new(JwtVerifier::build(raw, base_dir, secrets)?))
            }
        };
        Ok(Self { mode })
    }

    /// Anyone may do anything (the same as `mode = "none"`).
    pub fn none() -> Self {
        Self { mode: Mode::None }
    }

    /// Turns a request's `Authorization` header (`Bearer <token>`, scheme case-insensitive,
    /// or the bare token) into an identity. `mode = "none"` ignores the header.
    pub fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        now_unix_secs: u64,
    ) -> Result<Identity, AuthError> {
        match &self.mode {
            Mode::None => Ok(Identity::anonymous()),
            Mode::Bearer(tokens) => tokens.authenticate(presented_token(authorization)?),
            Mode::Jwt(verifier) => {
                verifier.authenticate(presented_token(authorization)?, now_unix_secs)
            }
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mode {
            Mode::None => f.write_str("ClientAuth::None"),
            Mode::Bearer(tokens) => f.debug_tuple("ClientAuth::Bearer").field(tokens).finish(),
            Mode::Jwt(verifier) => f.debug_tuple("ClientAuth::Jwt").field(verifier).finish(),
        }
    }
}

// === impl Identity ===

impl Identity {
    /// A client of a route without authentication: may publish and play everything.
    pub fn anonymous() -> Self {
        Self {
            subject: None,
            tier: None,
            claims: serde_json::Map::new(),
            publish: Grants::all(),
            play: Grants::all(),
        }
    }

    /// Whether this identity may publish (WHIP) or play (WHEP) `stream`.
    pub fn may(&self, kind: EndpointKind, stream: &str) -> bool {
        match kind {
            EndpointKind::Whip => self.publish.allows(stream),
            EndpointKind::Whep => self.play.allows(stream),
        }
    }
}

// === impl Grants ===

impl Grants {
    /// Every stream.
    pub fn all() -> Self {
        Self {
            patterns: vec![StreamPattern::Prefix(String::new())],
        }
    }

    /// No stream.
    pub fn none() -> Self {
        Self {
            patterns: Vec::new(),
        }
    }

    /// Stream globs as in routes (`*`, `live/*`, `{a,b}`, `cam-?`).
    pub fn parse<S: AsRef<str>>(globs: &[S]) -> Result<Self, String> {
        let patterns = globs
            .iter()
            .map(|glob| {
                let glob = glob.as_ref();
                StreamPattern::glob(glob).map_err(|e| format!("stream glob {glob:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether any glob matches `stream`.
    pub fn allows(&self, stream: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(stream))
    }

    /// The globs as written, for logs and `explain`.
    pub fn describe(&self) -> String {
        let globs: Vec<String> = self.patterns.iter().map(StreamPattern::describe).collect();
        if globs.is_empty() {
            "nothing".to_owned()
        } else {
            globs.join(", ")
        }
    }
}

/// Grants are equal when they were written the same way; enough for tests and reload diffs.
impl PartialEq for Grants {
    fn eq(&self, other: &Self) -> bool {
        self.describe() == other.describe()
    }
}

// === impl AuthError ===

impl AuthError {
    /// 401 for missing or refused credentials, 403 for a valid identity without the grant.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The `WWW-Authenticate` challenge for a 401 (RFC 6750 §3); `None` for 403.
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        match self {
            AuthError::Missing => Some(HeaderValue::from_static(r#"Bearer realm="whipgate""#)),
            AuthError::Invalid(reason) => {
                let value = format!(
                    r#"Bearer realm="whipgate", error="invalid_token", error_description="{reason}""#
                );
                // The reasons are string literals of this module, all plain ASCII; the
                // fallback only guards against a future reason that is not.
                Some(HeaderValue::from_str(&value).unwrap_or_else(|_| {
                    HeaderValue::from_static(r#"Bearer realm="whipgate", error="invalid_token""#)
                }))
            }
            AuthError::Forbidden => None,
        }
    }
}

// === helpers ===

/// Largest token looked at; longer ones are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The token of an `Authorization` header: after `Bearer ` when that scheme is given,
/// otherwise the whole value.
fn presented_token(authorization: Option<&HeaderValue>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("malformed Authorization header"))?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Invalid("token too long"));
    }
    Ok(token)
}

/// Reads a secret or key file through `secrets`, resolving it against `base_dir`.
fn read_file(
    secrets: &dyn SecretSource,
    base_dir: &Path,
    path: &Path,
    what: &str,
) -> Result<String, String> {
    let full = base_dir.join(path);
    secrets
        .file(&full)
        .map_err(|e| format!("{what}: cannot read {}: {e}", full.display()))
}

fn everything() -> Vec<String> {
    vec!["*".to_owned()]
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_tier_claim() -> String {
    "tier".to_owned()
}

fn default_publish_claim() -> String {
    "publish".to_owned()
}

fn default_play_claim() -> String {
    "play".to_owned()
}

#[cfg(test)]
mod tests;
