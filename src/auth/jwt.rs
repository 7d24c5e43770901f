//! `mode = "jwt"`: signed JSON Web Tokens (RFC 7519).
//!
//! jsonwebtoken checks the signature, the algorithm, `iss` and `aud`; `exp` and `nbf` are
//! checked here against the `now` the caller passes in, because the crate would read the
//! system clock.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{read_file, AuthError, Grants, Identity, RawJwt};
use crate::secret::SecretSource;

#[derive(Clone)]
pub(super) struct JwtVerifier {
    algorithms: Vec<Algorithm>,
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    tier_claim: String,
    publish_claim: String,
    play_claim: String,
}

#[derive(Clone)]
enum Keys {
    /// One key from `key_file`, used whatever the token's `kid`.
    Single { key: DecodingKey, source: PathBuf },
    /// Keys of a JWKS, looked up by `kid`.
    Set { keys: Vec<SetKey>, source: PathBuf },
}

#[derive(Clone)]
struct SetKey {
    kid: Option<String>,
    /// The JWK's own `alg`, when it names one; a token must then use exactly that.
    alg: Option<String>,
    key: DecodingKey,
}

impl JwtVerifier {
    pub(super) fn build(
        raw: &RawJwt,
        base_dir: &Path,
        secrets: &dyn SecretSource,
    ) -> Result<Self, String> {
        let algorithms = check_shape(raw)?;
        let keys = match (&raw.key_file, &raw.jwks_file) {
            (Some(path), None) => Keys::Single {
                key: single_key(&algorithms, base_dir, path, secrets)?,
                source: path.clone(),
            },
            (None, Some(path)) => Keys::Set {
                keys: key_set(&algorithms, base_dir, path, secrets)?,
                source: path.clone(),
            },
            // check_shape refused every other combination.
            _ => return Err("jwt auth: give exactly one of key_file or jwks_file".to_owned()),
        };
        Ok(Self {
            algorithms,
            keys,
            issuer: raw.issuer.clone(),
            audience: raw.audience.clone(),
            leeway_secs: raw.leeway.as_secs(),
            tier_claim: raw.tier_claim.clone(),
            publish_claim: raw.publish_claim.clone(),
            play_claim: raw.play_claim.clone(),
        })
    }

    pub(super) fn authenticate(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        // `alg: none` and unknown algorithms fail here: jsonwebtoken has no variant for them.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token or unsupported algorithm"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid("algorithm not allowed"));
        }
        let key = self.key_for(header.alg, header.kid.as_deref())?;
        let claims =
            jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation(header.alg))
                .map_err(|e| AuthError::Invalid(reason(e.kind())))?
                .claims;
        check_times(&claims, now, self.leeway_secs)?;
        Ok(Identity {
            subject: optional_string(&claims, "sub")
                .map_err(|()| AuthError::Invalid("sub claim is not a string"))?,
            tier: optional_string(&claims, &self.tier_claim)
                .map_err(|()| AuthError::Invalid("tier claim is not a string"))?,
            publish: grants(&claims, &self.publish_claim)?,
            play: grants(&claims, &self.play_claim)?,
            claims,
        })
    }

    fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<&DecodingKey, AuthError> {
        let key = match &self.keys {
            Keys::Single { key, .. } => key,
            Keys::Set { keys, .. } => {
                let found = match kid {
                    Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
                    None if keys.len() == 1 => keys.first(),
                    None => return Err(AuthError::Invalid("token has no kid")),
                };
                let found = found.ok_or(AuthError::Invalid("unknown kid"))?;
                if found
                    .alg
                    .as_deref()
                    .is_some_and(|own| own != algorithm_name(alg))
                {
                    return Err(AuthError::Invalid("key is not for this algorithm"));
                }
                &found.key
            }
        };
        if key.family() != alg.family() {
            return Err(AuthError::Invalid("key is not for this algorithm"));
        }
        Ok(key)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        // jsonwebtoken refuses keys whose family differs from any listed algorithm, so only
        // the token's own (already allowed) algorithm is listed.
        validation.algorithms = vec![alg];
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        // `exp` is required too, but check_times says so with a clearer reason.
        let mut required: HashSet<String> = HashSet::new();
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.insert("iss".to_owned());
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        validation.required_spec_claims = required;
        validation
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            Keys::Single { source, .. } => format!("key_file {}", source.display()),
            Keys::Set { keys, source } => {
                format!("jwks_file {} ({} keys)", source.display(), keys.len())
            }
        };
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.algorithms)
            .field("keys", &keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

/// Everything that needs no file; returns the parsed algorithms.
pub(super) fn check_shape(raw: &RawJwt) -> Result<Vec<Algorithm>, String> {
    if raw.key_file.is_some() == raw.jwks_file.is_some() {
        return Err("jwt auth: give exactly one of key_file or jwks_file".to_owned());
    }
    if raw.algorithms.is_empty() {
        return Err("jwt auth: algorithms may not be empty".to_owned());
    }
    let mut algorithms = Vec::with_capacity(raw.algorithms.len());
    for name in &raw.algorithms {
        if name.eq_ignore_ascii_case("none") {
            return Err("jwt auth: algorithm `none` is never accepted".to_owned());
        }
        let alg = Algorithm::from_str(name).map_err(|_| {
            format!(
                "jwt auth: unknown algorithm `{name}` (HS256/384/512, RS256/384/512, \
                 PS256/384/512, ES256/384, EdDSA)"
            )
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    let first = algorithms.first().map(|a| a.family());
    if raw.key_file.is_some() && algorithms.iter().any(|a| Some(a.family()) != first) {
        // One file cannot be both a shared secret and a public key; allowing both would let
        // a token signed with HMAC over the public key's bytes pass.
        return Err(
            "jwt auth: key_file holds one key, so all algorithms must be of one family \
             (HS*, RS*/PS*, ES* or EdDSA); use jwks_file for several"
                .to_owned(),
        );
    }
    for (what, claim) in [
        ("tier_claim", &raw.tier_claim),
        ("publish_claim", &raw.publish_claim),
        ("play_claim", &raw.play_claim),
    ] {
        if claim.is_empty() {
            return Err(format!("jwt auth: {what} may not be empty"));
        }
    }
    Ok(algorithms)
}

fn single_key(
    algorithms: &[Algorithm],
    base_dir: &Path,
    path: &Path,
    secrets: &dyn SecretSource,
) -> Result<DecodingKey, String> {
    let text = read_file(secrets, base_dir, path, "jwt auth: key_file")?;
    let shown = base_dir.join(path);
    let shown = shown.display();
    if text.contains("PRIVATE KEY-----") {
        // jsonwebtoken would take it, but a signing key has no business on the gateway.
        return Err(format!(
            "jwt auth: key_file {shown} holds a private key; give the public key"
        ));
    }
    // check_shape guarantees a non-empty list of one family.
    let family = algorithms
        .first()
        .map(|a| a.family())
        .ok_or("jwt auth: algorithms may not be empty")?;
    let key = match family {
        AlgorithmFamily::Hmac => {
            let secret = text.trim_end_matches(['\r', '\n']);
            // RFC 7518 §3.2: an HMAC key at least as long as the hash output.
            let needed = algorithms
                .iter()
                .map(|a| match a {
                    Algorithm::HS384 => 48,
                    Algorithm::HS512 => 64,
                    _ => 32,
                })
                .max()
                .unwrap_or(32);
            if secret.len() < needed {
                return Err(format!(
                    "jwt auth: key_file {shown}: a shared secret for {} must be at least \
                     {needed} bytes",
                    names(algorithms)
                ));
            }
            DecodingKey::from_secret(secret.as_bytes())
        }
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(text.as_bytes())
            .map_err(|_| format!("jwt auth: key_file {shown}: not a PEM RSA public key"))?,
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(text.as_bytes())
            .map_err(|_| format!("jwt auth: key_file {shown}: not a PEM EC public key"))?,
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(text.as_bytes())
            .map_err(|_| format!("jwt auth: key_file {shown}: not a PEM Ed25519 public key"))?,
    };
    Ok(key)
}

/// The signing keys of a JWKS usable with one of `algorithms`; encryption keys and keys of
/// other families are skipped, as identity providers publish those side by side.
fn key_set(
    algorithms: &[Algorithm],
    base_dir: &Path,
    path: &Path,
    secrets: &dyn SecretSource,
) -> Result<Vec<SetKey>, String> {
    let text = read_file(secrets, base_dir, path, "jwt auth: jwks_file")?;
    let shown = base_dir.join(path);
    let shown = shown.display();
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("jwt auth: jwks_file {shown}: not a JSON Web Key Set: {e}"))?;
    let families: Vec<AlgorithmFamily> = algorithms.iter().map(|a| a.family()).collect();
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        if !families.contains(&key.family()) {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        if kid.is_some() && keys.iter().any(|k: &SetKey| k.kid == kid) {
            return Err(format!(
                "jwt auth: jwks_file {shown}: kid {:?} appears twice",
                kid.unwrap_or_default()
            ));
        }
        keys.push(SetKey {
            kid,
            alg: jwk.common.key_algorithm.map(|a| a.to_string()),
            key,
        });
    }
    if keys.is_empty() {
        return Err(format!(
            "jwt auth: jwks_file {shown} holds no signing key for {}",
            names(algorithms)
        ));
    }
    Ok(keys)
}

/// RFC 7519 §4.1.4 and §4.1.5, with `leeway` of skew either way.
fn check_times(claims: &Map<String, Value>, now: u64, leeway: u64) -> Result<(), AuthError> {
    let exp = numeric_date(claims, "exp")?.ok_or(AuthError::Invalid("missing exp claim"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(AuthError::Invalid("token expired"));
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if now.saturating_add(leeway) < nbf {
            return Err(AuthError::Invalid("token not yet valid"));
        }
    }
    Ok(())
}

/// A NumericDate claim: seconds, possibly fractional (RFC 7519 §2).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let seconds = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.floor() as u64)
    });
    match (seconds, name) {
        (Some(seconds), _) => Ok(Some(seconds)),
        (None, "exp") => Err(AuthError::Invalid("exp claim is not a date")),
        (None, _) => Err(AuthError::Invalid("nbf claim is not a date")),
    }
}

fn optional_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, ()> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

/// A grant claim: one glob or an array of them; absent grants nothing.
fn grants(claims: &Map<String, Value>, name: &str) -> Result<Grants, AuthError> {
    const BAD: AuthError = AuthError::Invalid("grant claim is not a stream glob or a list of them");
    match claims.get(name) {
        None | Some(Value::Null) => Ok(Grants::none()),
        Some(Value::String(glob)) => Grants::parse(&[glob]).map_err(|_| BAD),
        Some(Value::Array(items)) => {
            let globs = items
                .iter()
                .map(|item| item.as_str().ok_or(BAD))
                .collect::<Result<Vec<&str>, _>>()?;
            Grants::parse(&globs).map_err(|_| BAD)
        }
        Some(_) => Err(BAD),
    }
}

/// A reason safe to show the client for each way jsonwebtoken refuses a token.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not allowed",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "missing exp claim",
            "iss" => "missing iss claim",
            "aud" => "missing aud claim",
            _ => "missing claim",
        },
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => "key is not for this algorithm",
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidClaimFormat(_) => "malformed token",
        _ => "invalid token",
    }
}

/// The JOSE name of an algorithm (`ES256`), as a JWK's `alg` spells it.
fn algorithm_name(alg: Algorithm) -> String {
    format!("{alg:?}")
}

fn names(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|a| algorithm_name(*a))
        .collect::<Vec<_>>()
        .join("/")
}
