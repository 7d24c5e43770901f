//! The keys of one `[[backend]]` table as a kind's builder reads them: each key taken once,
//! typed, located (its byte offset in routes.toml, for `file:line:col` errors), and whatever
//! is left over at the end is an unknown key of that kind.
//!
//! Kinds read their own keys through this, so adding a vendor never touches the config
//! loader: the loader takes the keys every kind shares, the kind's builder takes the rest.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use toml::Spanned;
use url::Url;

use super::template::UrlTemplate;
use crate::secret::{Secret, SecretResolver};

/// A problem with one key, at a byte offset of routes.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub at: usize,
    pub message: String,
}

/// The not-yet-read keys of a `[[backend]]` table.
pub struct KindKeys<'a> {
    backend: String,
    kind: String,
    /// Where the table starts: errors about missing keys point here.
    at: usize,
    keys: BTreeMap<String, Spanned<toml::Value>>,
    secrets: SecretResolver<'a>,
}

impl<'a> KindKeys<'a> {
    pub fn new(
        backend: &str,
        kind: &str,
        at: usize,
        keys: BTreeMap<String, Spanned<toml::Value>>,
        secrets: SecretResolver<'a>,
    ) -> Self {
        Self {
            backend: backend.to_owned(),
            kind: kind.to_owned(),
            at,
            keys,
            secrets,
        }
    }

    /// The backend's id, for error messages and names derived from it.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// An error about the backend as a whole (a missing or conflicting key).
    pub fn error(&self, message: impl Into<String>) -> KeyError {
        KeyError {
            at: self.at,
            message: format!("backend `{}`: {}", self.backend, message.into()),
        }
    }

    fn error_at(&self, at: usize, message: impl Into<String>) -> KeyError {
        KeyError {
            at,
            message: format!("backend `{}`: {}", self.backend, message.into()),
        }
    }

    /// Takes `key` as a `T`, with its position.
    pub fn take<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<Spanned<T>>, KeyError> {
        let Some(value) = self.keys.remove(key) else {
            return Ok(None);
        };
        let span = value.span();
        let typed = T::deserialize(value.into_inner())
            .map_err(|e| self.error_at(span.start, format!("{key}: {}", one_line(&e))))?;
        Ok(Some(Spanned::new(span, typed)))
    }

    /// Takes `key` as a `T`, without its position.
    pub fn value<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, KeyError> {
        Ok(self.take(key)?.map(Spanned::into_inner))
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>, KeyError> {
        self.value(key)
    }

    pub fn required_string(&mut self, key: &str) -> Result<String, KeyError> {
        match self.string(key)? {
            Some(value) if !value.trim().is_empty() => Ok(value),
            _ => Err(self.error(format!("kind = \"{}\" needs {key}", self.kind))),
        }
    }

    /// An absolute http(s) URL (a vendor origin or API base) without query or fragment.
    pub fn url(&mut self, key: &str) -> Result<Option<Url>, KeyError> {
        let Some(raw) = self.take::<String>(key)? else {
            return Ok(None);
        };
        let at = raw.span().start;
        let url = Url::parse(raw.get_ref())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .filter(|u| u.query().is_none() && u.fragment().is_none())
            .ok_or_else(|| {
                self.error_at(
                    at,
                    format!("{key} is not an absolute http(s) URL without query"),
                )
            })?;
        Ok(Some(url))
    }

    /// A URL template with `{stream}` and route captures (see [`UrlTemplate`]).
    pub fn template(&mut self, key: &str) -> Result<Option<UrlTemplate>, KeyError> {
        let Some(raw) = self.take::<String>(key)? else {
            return Ok(None);
        };
        UrlTemplate::parse(raw.get_ref())
            .map(Some)
            .map_err(|e| self.error_at(raw.span().start, format!("{key} {e}")))
    }

    /// `{name}_env` or `{name}_file` (exactly one), resolved unless secrets are skipped.
    pub fn secret(&mut self, name: &str) -> Result<Option<Secret>, KeyError> {
        let env_key = format!("{name}_env");
        let file_key = format!("{name}_file");
        let env = self.take::<String>(&env_key)?;
        let file = self.take::<String>(&file_key)?;
        if env.is_none() && file.is_none() {
            return Ok(None);
        }
        let at = env
            .as_ref()
            .or(file.as_ref())
            .map_or(self.at, |v| v.span().start);
        let what = format!("backend `{}` {name}", self.backend);
        self.secrets
            .resolve(
                &what,
                env.as_ref().map(|v| v.get_ref().as_str()),
                file.as_ref().map(|v| v.get_ref().as_str()),
            )
            .map(Some)
            .map_err(|message| KeyError { at, message })
    }

    /// A secret named by keys nested in a value (`auth = { bearer_env = ... }`).
    pub fn resolve_secret(
        &self,
        at: usize,
        what: &str,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Result<Secret, KeyError> {
        let what = format!("backend `{}` {what}", self.backend);
        self.secrets
            .resolve(&what, env, file)
            .map_err(|message| KeyError { at, message })
    }

    pub fn required_secret(&mut self, name: &str) -> Result<Secret, KeyError> {
        self.secret(name)?.ok_or_else(|| {
            self.error(format!(
                "kind = \"{}\" needs {name}_env or {name}_file",
                self.kind
            ))
        })
    }

    /// Fails on the first key that is neither common nor one of `known`.
    pub fn refuse_unknown(&self, known: &[&str]) -> Result<(), KeyError> {
        let unknown = self.keys.iter().find(|(key, _)| {
            !known.contains(&key.as_str()) && !super::COMMON_KEYS.contains(&key.as_str())
        });
        match unknown {
            None => Ok(()),
            Some((key, value)) => Err(self.error_at(
                value.span().start,
                format!("unknown key `{key}` for kind = \"{}\"", self.kind),
            )),
        }
    }

    /// Fails on any key no one took, naming it and its place.
    pub fn finish(self) -> Result<(), KeyError> {
        match self.keys.iter().next() {
            None => Ok(()),
            Some((key, value)) => Err(self.error_at(
                value.span().start,
                format!("unknown key `{key}` for kind = \"{}\"", self.kind),
            )),
        }
    }
}

fn one_line(error: &impl std::fmt::Display) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}
