//! Upstream HTTPS through rustls: a backend with a certificate from a configured CA works, the
//! same backend without that CA is refused (and failed over like any unreachable backend).

mod support;

use std::sync::Arc;

use support::{corpus, gateway, send, FakeBackend, Reply};

struct Pki {
    ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "whipgate test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
    Pki {
        ca_pem: ca.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

fn config(backend: &FakeBackend, ca_line: &str) -> String {
    format!(
        r#"
[server]
session_keys = [{{ id = "k1", secret_env = "KEY1" }}]
connect_timeout = "1s"
upstream_timeout = "2s"
{ca_line}

[[backend]]
id = "tls"
kind = "whip"
whip_url = "{url}"
auth = {{ bearer_env = "BACKEND_TOKEN" }}

[[route]]
backends = ["tls"]
"#,
        url = backend.https_url("localhost", "/whip/{stream}")
    )
}

#[tokio::test]
async fn https_backend_with_a_configured_ca() {
    let pki = pki();
    let backend = FakeBackend::start_tls(pki.acceptor.clone(), |seen| match seen.method.as_str() {
        "POST" => Reply::new(201)
            .header("location", "/res/1")
            .body(corpus("janus-whip-answer.sdp")),
        _ => Reply::new(200),
    })
    .await;
    let dir = std::env::temp_dir().join(format!("whipgate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).expect("write ca");

    let gw = gateway(&config(
        &backend,
        &format!("upstream_ca_file = {:?}", ca_path.display().to_string()),
    ))
    .await;
    let offer = corpus("chromium-whip-offer-vp8.sdp");
    let created = send(
        gw.local_addr,
        "POST",
        "/whip/s",
        &[("content-type", "application/sdp")],
        offer.clone(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let deleted = send(gw.local_addr, "DELETE", &created.location_path(), &[], "").await;
    assert_eq!(deleted.status, 200);
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer backend-secret-token")
    );
    assert_eq!(seen[0].body, offer.as_bytes());
    assert_eq!(seen[1].path, "/res/1");

    let untrusting = gateway(&config(&backend, "")).await;
    let refused = send(
        untrusting.local_addr,
        "POST",
        "/whip/s",
        &[("content-type", "application/sdp")],
        offer,
    )
    .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(
        backend.count(),
        2,
        "nothing reached the backend without a verified certificate"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
