//! The main listener's certificate files: read and checked when routes.toml loads (so a bad
//! pair is refused with the file's line) and again whenever the files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The files of the main listener's certificate, resolved against routes.toml's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the leaf certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a pair was not loaded; names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
    #[error("the key in {} does not match the certificate in {}", files.key.display(), files.cert.display())]
    Mismatch { files: TlsFiles },
}

impl CertError {
    /// The file to fix (the key file for a mismatch).
    pub fn path(&self) -> &Path {
        match self {
            CertError::Read { path, .. } | CertError::Invalid { path, .. } => path,
            CertError::Mismatch { files } => &files.key,
        }
    }
}

/// The pair in `files`, read from disk and checked.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read {
            path: path.to_owned(),
            source,
        })
    };
    parse(files, &read(&files.cert)?, &read(&files.key)?)
}

/// The pair from PEM: a certificate chain and a private key that belong together.
pub fn parse(files: &TlsFiles, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let invalid = |path: &Path, problem: String| CertError::Invalid {
        path: path.to_owned(),
        problem,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(&files.cert, "holds no PEM CERTIFICATE".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid(&files.key, format!("no PEM private key: {e}")))?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(&files.key, format!("unusable private key: {e}")))?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CertError::Mismatch {
                files: files.clone(),
            })
        }
        // Mostly a leaf that is not valid DER inside its PEM armour.
        Err(e) => Err(invalid(&files.cert, format!("unusable certificate: {e}"))),
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
