//! TLS on the main listener: ALPN picks HTTP/2 or HTTP/1.1, TLS 1.2 clients work, the
//! certificate is swapped under load (file rename, as Kubernetes does) without a failed
//! request or a dropped connection, a corrupt replacement keeps the last good one serving,
//! and a missing or half-given pair is a one-line error.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use support::{corpus, gateway_from, whip_server, ConfigDir, FakeBackend};
use tokio::net::TcpStream;

/// A CA and leaves it signed for 127.0.0.1 and localhost.
struct Pki {
    ca: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A leaf's PEM files and its DER, to recognise it in a handshake.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "whipgate test CA");
        let ca = params.self_signed(&key).expect("ca cert");
        Self {
            ca: ca.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(&self) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("leaf params")
            .signed_by(&key, &self.issuer)
            .expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Writes `name` by rename, so a reader sees the old file or the new one, never half of one.
fn replace(dir: &ConfigDir, name: &str, text: &str) {
    let temp = dir.dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, text).expect("write");
    std::fs::rename(&temp, dir.dir.join(name)).expect("rename");
}

fn install(dir: &ConfigDir, leaf: &Leaf) {
    replace(dir, "tls.key", &leaf.key_pem);
    replace(dir, "tls.crt", &leaf.cert_pem);
}

fn routes(backend: &FakeBackend) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
         tls_cert_file = \"tls.crt\"\ntls_key_file = \"tls.key\"\n\
         session_keys = [{{ id = \"k1\", secret_file = \"k1.key\" }}]\n\
         [[backend]]\nid = \"b\"\nkind = \"whip\"\nwhip_url = \"{}\"\n\
         [[route]]\nbackends = [\"b\"]\n",
        backend.url("/whip/{stream}")
    )
}

/// Client side: which protocol versions and ALPN ids to offer, trusting only the test CA.
#[derive(Clone)]
struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Client {
    fn new(ca: &CertificateDer<'static>, alpn: &[&str], tls12_only: bool) -> Self {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).expect("root");
        let versions: &[&'static SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        // A resumed session presents no certificate: every connection does a full handshake
        // so that it shows which certificate serves now.
        config.resumption = rustls::client::Resumption::disabled();
        Self {
            config: Arc::new(config),
            name: ServerName::try_from("127.0.0.1").expect("name"),
        }
    }

    async fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))
    }

    /// One GET on a new connection.
    async fn get(&self, addr: SocketAddr, path: &str) -> Result<Handshake, String> {
        let stream = self.connect(addr).await?;
        let (_, session) = stream.get_ref();
        let seen = Handshake {
            leaf: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .cloned()
                .ok_or("no peer certificate")?,
            alpn: session.alpn_protocol().map(|p| p.to_vec()),
            version: session.protocol_version(),
            status: 0,
        };
        let request = http::Request::get(path)
            .header("host", "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let status = if seen.alpn.as_deref() == Some(b"h2") {
            let (mut sender, connection) =
                http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let request = with_uri(request, addr);
            sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?
                .status()
        } else {
            let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?
                .status()
        };
        Ok(Handshake {
            status: status.as_u16(),
            ..seen
        })
    }

    /// An HTTP/2 connection kept open.
    async fn h2(&self, addr: SocketAddr) -> http2::SendRequest<Full<Bytes>> {
        let stream = self.connect(addr).await.expect("connect");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
        tokio::spawn(connection);
        sender
    }
}

/// HTTP/2 requests carry the scheme and authority in the URI.
fn with_uri<B>(request: http::Request<B>, addr: SocketAddr) -> http::Request<B> {
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("https://127.0.0.1:{}{}", addr.port(), parts.uri.path())
        .parse()
        .expect("uri");
    parts.headers.remove("host");
    http::Request::from_parts(parts, body)
}

async fn h2_get(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
) -> Result<u16, String> {
    let request = with_uri(
        http::Request::get("/healthz")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?,
        addr,
    );
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[derive(Debug)]
struct Handshake {
    leaf: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
    status: u16,
}

#[tokio::test]
async fn alpn_tls12_and_a_certificate_swapped_under_load() {
    let pki = Pki::new();
    let (first, second) = (pki.leaf(), pki.leaf());
    let backend = FakeBackend::start(whip_server()).await;
    let dir = ConfigDir::new("tls");
    install(&dir, &first);
    dir.write(&routes(&backend));
    let gw = gateway_from(&dir).await;
    let addr = gw.local_addr;

    let both = Client::new(&pki.ca, &["h2", "http/1.1"], false);
    let seen = both.get(addr, "/healthz").await.expect("h2 GET");
    assert_eq!(seen.status, 200);
    assert_eq!(seen.leaf, first.der);
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(seen.version, Some(rustls::ProtocolVersion::TLSv1_3));

    let http1_only = Client::new(&pki.ca, &["http/1.1"], false);
    let seen = http1_only
        .get(addr, "/healthz")
        .await
        .expect("http/1.1 GET");
    assert_eq!(
        (seen.status, seen.alpn.as_deref()),
        (200, Some(&b"http/1.1"[..]))
    );

    let no_alpn = Client::new(&pki.ca, &[], false);
    assert_eq!(
        no_alpn.get(addr, "/healthz").await.expect("GET").status,
        200
    );

    let tls12 = Client::new(&pki.ca, &["h2", "http/1.1"], true);
    let seen = tls12.get(addr, "/healthz").await.expect("TLS 1.2 GET");
    assert_eq!(seen.status, 200);
    assert_eq!(seen.version, Some(rustls::ProtocolVersion::TLSv1_2));

    // Plain HTTP on the main listener is refused; the metrics listener stays plain.
    let plain = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}/healthz").parse().expect("uri");
    assert!(plain.get(uri).await.is_err(), "plain HTTP on the TLS port");
    let metrics = gw.metrics_addr.expect("metrics listener");
    assert_eq!(
        support::send(metrics, "GET", "/healthz", &[], "")
            .await
            .status,
        200
    );

    // An SDP offer over HTTP/2, end to end; the session URL is https.
    let mut long_lived = both.h2(addr).await;
    let offer = http::Request::post("/whip/cam")
        .header("content-type", "application/sdp")
        .body(Full::new(Bytes::from(corpus(
            "chromium-whip-offer-vp8.sdp",
        ))))
        .expect("request");
    let created = long_lived
        .send_request(with_uri(offer, addr))
        .await
        .expect("POST over h2");
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.starts_with("https://127.0.0.1:"), "{location}");
    assert_eq!(backend.count(), 1);

    // Load on new connections and on the long-lived one while the certificate changes.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let (fresh_ok, kept_ok) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let fresh_loop = {
        let (stop, failures, ok, client) = (
            stop.clone(),
            failures.clone(),
            fresh_ok.clone(),
            both.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(addr, "/healthz").await {
                    Ok(seen) if seen.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(seen) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("status {}", seen.status)),
                    Err(error) => failures.lock().expect("lock").push(error),
                }
            }
        })
    };
    let kept_loop = {
        let (stop, failures, ok) = (stop.clone(), failures.clone(), kept_ok.clone());
        let mut sender = long_lived.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match h2_get(&mut sender, addr).await {
                    Ok(200) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(status) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("kept: status {status}")),
                    Err(error) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("kept: {error}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    install(&dir, &second);
    let swapped = Instant::now();
    loop {
        let seen = both.get(addr, "/healthz").await.expect("GET during swap");
        if seen.leaf == second.der {
            break;
        }
        assert_eq!(seen.leaf, first.der);
        assert!(
            swapped.elapsed() < Duration::from_secs(2),
            "new connections still get the old certificate after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    fresh_loop.await.expect("fresh loop");
    kept_loop.await.expect("kept loop");
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(
        fresh_ok.load(Ordering::Relaxed) > 5,
        "the new-connection loop ran"
    );
    assert!(
        kept_ok.load(Ordering::Relaxed) > 5,
        "the long-lived loop ran"
    );
    assert_eq!(
        h2_get(&mut long_lived, addr).await,
        Ok(200),
        "the connection opened before the swap still serves"
    );

    // A corrupt replacement is refused: the second certificate keeps serving, and a
    // routes.toml reload is refused with it rather than dropping TLS.
    replace(
        &dir,
        "tls.crt",
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let seen = both
        .get(addr, "/healthz")
        .await
        .expect("GET after a corrupt cert");
    assert_eq!((seen.status, &seen.leaf), (200, &second.der));
    let refused = gw
        .gateway
        .reload()
        .expect_err("a table with a corrupt certificate");
    assert!(refused.contains("tls_cert_file"), "{refused}");
    assert_eq!(
        both.get(addr, "/healthz").await.expect("GET").leaf,
        second.der
    );

    // A good pair again, through a routes.toml reload (as SIGHUP does).
    install(&dir, &first);
    gw.gateway.reload().expect("reload");
    assert_eq!(
        both.get(addr, "/healthz").await.expect("GET").leaf,
        first.der
    );
    gw.shutdown().await;
}

#[test]
fn missing_or_half_given_files_are_one_line_errors() {
    let pki = Pki::new();
    let dir = ConfigDir::new("tls-check");
    let leaf = pki.leaf();
    install(&dir, &leaf);
    let tail =
        "[[backend]]\nid = \"b\"\nkind = \"whip\"\nwhip_url = \"http://127.0.0.1:1/{stream}\"\n\
                [[route]]\nbackends = [\"b\"]\n";
    let check = |text: &str, skip_secrets: bool| {
        dir.write(text);
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_whipgate"));
        command.arg("check").arg(dir.path());
        if skip_secrets {
            command.arg("--skip-secrets");
        }
        let output = command.output().expect("whipgate check runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };

    let good = format!("[server]\ntls_cert_file = \"tls.crt\"\ntls_key_file = \"tls.key\"\n{tail}");
    let (ok, out) = check(&good, false);
    assert!(ok, "{out}");
    assert!(out.contains("(TLS)"), "{out}");

    let missing =
        format!("[server]\ntls_cert_file = \"nope.crt\"\ntls_key_file = \"tls.key\"\n{tail}");
    let (ok, out) = check(&missing, false);
    assert!(!ok);
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    assert!(
        out.contains("routes.toml:2:") && out.contains("tls_cert_file: cannot read"),
        "{out}"
    );
    let (ok, out) = check(&missing, true);
    assert!(ok, "--skip-secrets does not read the files: {out}");

    let other = pki.leaf();
    replace(&dir, "other.key", &other.key_pem);
    let (ok, out) = check(
        &format!("[server]\ntls_cert_file = \"tls.crt\"\ntls_key_file = \"other.key\"\n{tail}"),
        false,
    );
    assert!(!ok);
    assert!(
        out.contains("routes.toml:3:") && out.contains("does not match"),
        "{out}"
    );

    let (ok, out) = check(
        &format!("[server]\ntls_key_file = \"tls.key\"\n{tail}"),
        true,
    );
    assert!(!ok);
    assert!(
        out.contains("routes.toml:2:") && out.contains("give both"),
        "{out}"
    );
}
