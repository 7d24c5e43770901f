//! TLS on the main listener: the pair from `[server] tls_cert_file` and `tls_key_file`, handed
//! to every handshake by a resolver whose pair can be swapped while connections are open.
//!
//! A pair is swapped in only whole and consistent (the key matches the certificate); anything
//! else is refused and the last good pair keeps serving. New handshakes get the new pair;
//! established connections keep what they negotiated.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::sync::watch;

pub use crate::config::tls::{load, parse, CertError, TlsFiles};

/// The main listener's TLS: 1.3 and 1.2 on ring (never the process default provider), ALPN
/// `h2` then `http/1.1`, the pair `resolver` holds at each handshake.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(crate::config::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Hands every handshake the current pair; [`CertResolver::reload`] and
/// [`CertResolver::install`] swap it.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    /// Where `reload` reads from: the files of the table in force.
    files: Mutex<TlsFiles>,
}

impl CertResolver {
    /// Loads `files`; a startup without a usable pair is an error.
    pub fn load(files: TlsFiles) -> Result<Self, CertError> {
        let pair = load(&files)?;
        Ok(Self {
            current: ArcSwap::from_pointee(pair),
            files: Mutex::new(files),
        })
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    pub fn files(&self) -> TlsFiles {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the files again. `Ok(true)`: a new pair serves; `Ok(false)`: the files hold the
    /// pair already serving. On error the current pair keeps serving.
    pub fn reload(&self) -> Result<bool, CertError> {
        let files = self.files();
        let pair = load(&files)?;
        Ok(self.install(files, pair))
    }

    /// Serves `pair` (loaded from `files`) from the next handshake on; later reloads read
    /// `files`. False when `pair` is the one already serving.
    pub fn install(&self, files: TlsFiles, pair: CertifiedKey) -> bool {
        *self.files.lock().unwrap_or_else(|e| e.into_inner()) = files;
        // The same chain means the same key: the key must match the leaf.
        if self.current.load().cert == pair.cert {
            return false;
        }
        self.current.store(Arc::new(pair));
        true
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("files", &self.files())
            .finish_non_exhaustive()
    }
}

/// Reloads `resolver` whenever its certificate or key file changes, until `stopped`. Watches
/// the files' directories (a Kubernetes Secret update swaps a `..data` symlink), so the files
/// named at start are followed; a reload of routes.toml reads whatever files it names.
pub fn follow(
    resolver: Arc<CertResolver>,
    debounce: Duration,
    mut stopped: watch::Receiver<bool>,
) -> notify::Result<()> {
    let files = resolver.files();
    let (cert_watch, mut cert_changed) = crate::config::watch(&files.cert, debounce)?;
    let (key_watch, mut key_changed) = crate::config::watch(&files.key, debounce)?;
    tokio::spawn(async move {
        let _watches = (cert_watch, key_watch);
        loop {
            tokio::select! {
                Some(()) = cert_changed.recv() => {}
                Some(()) = key_changed.recv() => {}
                _ = stopped.changed() => return,
                else => return,
            }
            match resolver.reload() {
                Ok(true) => tracing::info!(
                    cert = %resolver.files().cert.display(),
                    "TLS certificate reloaded"
                ),
                Ok(false) => {}
                Err(error) => tracing::error!(
                    %error,
                    "TLS certificate refused; the previous one keeps serving"
                ),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::{Path, PathBuf};

    use super::*;

    struct Leaf {
        cert_pem: String,
        key_pem: String,
    }

    fn leaf(name: &str) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("whipgate-tls-unit-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(files: &TlsFiles, leaf: &Leaf) {
        std::fs::write(&files.cert, &leaf.cert_pem).unwrap();
        std::fs::write(&files.key, &leaf.key_pem).unwrap();
    }

    fn parse_leaf(leaf: &Leaf) -> Result<CertifiedKey, CertError> {
        parse(
            &files(Path::new("/tls")),
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
        )
    }

    #[test]
    fn a_matching_pair_parses() {
        let pair = parse_leaf(&leaf("a.example")).unwrap();
        assert_eq!(pair.cert.len(), 1);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (a, b) = (leaf("a.example"), leaf("b.example"));
        let mixed = Leaf {
            cert_pem: a.cert_pem,
            key_pem: b.key_pem,
        };
        let error = parse_leaf(&mixed).err().unwrap();
        assert!(matches!(error, CertError::Mismatch { .. }), "{error}");
        assert_eq!(error.path(), Path::new("/tls/tls.key"));
        assert!(error.to_string().contains("does not match"), "{error}");
    }

    #[test]
    fn broken_files_are_refused_naming_the_file() {
        let good = leaf("a.example");
        let no_cert = Leaf {
            cert_pem: "not a certificate\n".into(),
            key_pem: good.key_pem.clone(),
        };
        let corrupt_der = Leaf {
            cert_pem: "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n".into(),
            key_pem: good.key_pem.clone(),
        };
        let no_key = Leaf {
            cert_pem: good.cert_pem.clone(),
            key_pem: good.cert_pem.clone(),
        };
        for (broken, file) in [
            (no_cert, "/tls/tls.crt"),
            (corrupt_der, "/tls/tls.crt"),
            (no_key, "/tls/tls.key"),
        ] {
            let error = parse_leaf(&broken).err().unwrap();
            assert_eq!(error.path(), Path::new(file), "{error}");
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }

    #[test]
    fn reload_swaps_a_good_pair_and_keeps_the_last_good_one_otherwise() {
        let dir = temp_dir("reload");
        let files = files(&dir);
        let (first, second) = (leaf("a.example"), leaf("b.example"));
        write(&files, &first);
        let resolver = CertResolver::load(files.clone()).unwrap();
        let serving = resolver.current().cert.clone();
        assert!(
            !resolver.reload().unwrap(),
            "unchanged files change nothing"
        );

        std::fs::write(&files.cert, &second.cert_pem).unwrap();
        assert!(matches!(resolver.reload(), Err(CertError::Mismatch { .. })));
        assert_eq!(resolver.current().cert, serving, "half a swap is refused");

        std::fs::write(&files.key, &second.key_pem).unwrap();
        assert!(resolver.reload().unwrap());
        let swapped = resolver.current().cert.clone();
        assert_ne!(swapped, serving);

        std::fs::write(&files.cert, "garbage").unwrap();
        assert!(resolver.reload().is_err());
        std::fs::remove_file(&files.key).unwrap();
        assert!(matches!(resolver.reload(), Err(CertError::Read { .. })));
        assert_eq!(resolver.current().cert, swapped);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_listener_offers_h2_then_http1() {
        let dir = temp_dir("config");
        let files = files(&dir);
        write(&files, &leaf("a.example"));
        let resolver = Arc::new(CertResolver::load(files).unwrap());
        let config = server_config(resolver).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
