//! Secrets and where they come from: the environment or files, never routes.toml literals.
//!
//! A leaf module: config, auth and the backend adapters all resolve their credentials
//! through [`SecretSource`], and tests substitute their own source.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value (bearer token, API key, signing secret). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where secrets come from; tests substitute their own.
pub trait SecretSource {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &Path) -> std::io::Result<String>;
}

/// The process environment and the file system.
pub struct SystemSecrets;

impl SecretSource for SystemSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Whether to resolve secrets while loading (`serve`) or only check the file's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMode {
    Resolve,
    Skip,
}

/// Resolves secrets named in routes.toml: `*_env` from the environment, `*_file` relative to
/// the file's directory; in [`SecretMode::Skip`] nothing is read.
#[derive(Clone, Copy)]
pub struct SecretResolver<'a> {
    pub source: &'a dyn SecretSource,
    pub base: &'a Path,
    pub mode: SecretMode,
}

impl SecretResolver<'_> {
    /// Exactly one of env / file; the error is one line naming `what`, never the value.
    pub fn resolve(
        &self,
        what: &str,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Result<Secret, String> {
        // Long enough for every consumer's minimum length (session keys need 32 bytes).
        let placeholder = || Secret::new("x".repeat(32));
        match (env, file) {
            (Some(name), None) => match self.mode {
                SecretMode::Skip => Ok(placeholder()),
                SecretMode::Resolve => self
                    .source
                    .env(name)
                    .map(|v| Secret::new(v.trim().to_owned()))
                    .filter(|s| !s.expose().is_empty())
                    .ok_or_else(|| format!("{what}: environment variable {name} is not set")),
            },
            (None, Some(path)) => match self.mode {
                SecretMode::Skip => Ok(placeholder()),
                SecretMode::Resolve => {
                    let full: PathBuf = self.base.join(path);
                    let value = self
                        .source
                        .file(&full)
                        .map_err(|e| format!("{what}: cannot read {}: {e}", full.display()))?;
                    let value = value.trim().to_owned();
                    if value.is_empty() {
                        return Err(format!("{what}: {} is empty", full.display()));
                    }
                    Ok(Secret::new(value))
                }
            },
            _ => Err(format!("{what}: give exactly one of *_env or *_file")),
        }
    }
}
