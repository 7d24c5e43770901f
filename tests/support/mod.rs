//! Test support: in-process fake backends and a running gateway on loopback.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use whipgate::config::{Config, SecretMode, SecretSource};
use whipgate::server::{self, Gateway, RunningServer};

/// One request a fake backend received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a fake backend answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A WHIP/WHEP backend on 127.0.0.1 that records what it receives.
pub struct FakeBackend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeBackend {
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(None, handler).await
    }

    /// The same over HTTPS, with `acceptor`'s certificate.
    pub async fn start_tls(
        acceptor: tokio_rustls::TlsAcceptor,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(Some(acceptor), handler).await
    }

    async fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake backend");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let seen = seen.clone();
                    let handler = handler.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |request: Request<Incoming>| {
                                let seen = seen.clone();
                                let handler = handler.clone();
                                async move {
                                    let (parts, body) = request.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let record = Seen {
                                        method: parts.method,
                                        path: parts.uri.path().to_owned(),
                                        query: parts.uri.query().map(str::to_owned),
                                        headers: parts.headers,
                                        body,
                                    };
                                    seen.lock().expect("lock").push(record.clone());
                                    let reply = handler(&record);
                                    if !reply.delay.is_zero() {
                                        tokio::time::sleep(reply.delay).await;
                                    }
                                    let mut response = Response::new(Full::new(reply.body));
                                    *response.status_mut() =
                                        StatusCode::from_u16(reply.status).expect("status");
                                    for (name, value) in reply.headers {
                                        response.headers_mut().append(
                                            http::HeaderName::from_bytes(name.as_bytes())
                                                .expect("name"),
                                            HeaderValue::from_str(&value).expect("value"),
                                        );
                                    }
                                    Ok::<_, Infallible>(response)
                                }
                            });
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let _ =
                                        http.serve_connection(TokioIo::new(stream), service).await;
                                }
                            }
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    });
                }
            })
        };
        Self { addr, seen, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{}", self.addr.port(), path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The HS256 key of `key_file = "jwt-hs256.key"` in test configs.
pub const JWT_SECRET: &str = "jwt-test-secret-jwt-test-secret-0123456789";

/// Secrets for tests, from a fixed table.
pub struct TestSecrets;

impl SecretSource for TestSecrets {
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "KEY1" => Some("k1-secret-k1-secret-k1-secret-k1-secret".into()),
            "KEY2" => Some("k2-secret-k2-secret-k2-secret-k2-secret".into()),
            "BACKEND_TOKEN" => Some("backend-secret-token".into()),
            "STUDIO_TOKEN" => Some("studio-client-token-123".into()),
            "GUEST_TOKEN" => Some("guest-client-token-456".into()),
            // Vendor credentials of tests/vendors.rs.
            "LIVEKIT_API_SECRET" => Some("livekit-secret-0123456789abcdef0123".into()),
            "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("aws-secret-key-example".into()),
            "CLOUDFLARE_API_TOKEN" => Some("cf-api-token-example".into()),
            "MILLICAST_PUBLISH_TOKEN" => Some("mc-publish-token".into()),
            "MILLICAST_SUBSCRIBE_TOKEN" => Some("mc-subscribe-token".into()),
            "WEBHOOK_SECRET" => Some("webhook-secret-example".into()),
            "OPENAI_API_KEY" => Some("sk-server-key".into()),
            "OPENAI_WRONG_KEY" => Some("sk-revoked-key".into()),
            _ => None,
        }
    }

    fn file(&self, path: &Path) -> std::io::Result<String> {
        match path.file_name().and_then(|n| n.to_str()) {
            Some("jwt-hs256.key") => Ok(JWT_SECRET.into()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no files in tests",
            )),
        }
    }
}

pub fn config(text: &str) -> Config {
    Config::from_toml(
        text,
        "test.toml",
        Path::new("."),
        SecretMode::Resolve,
        &TestSecrets,
    )
    .unwrap_or_else(|e| panic!("test config invalid: {e}"))
}

/// A gateway on a loopback port, on a clock tests move with `gw.gateway.clock().advance`.
pub async fn gateway(text: &str) -> RunningServer {
    let gateway = Gateway::new(config(text))
        .expect("gateway")
        .with_clock(whipgate::clock::Clock::adjustable());
    server::start(gateway, Some("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("start gateway")
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The `Link` whose rel contains `rel` (e.g. "server-sent-events"), whole, and its URI.
    pub fn link(&self, rel: &str) -> (String, String) {
        let link = self
            .all("link")
            .into_iter()
            .find(|l| l.contains(rel))
            .unwrap_or_else(|| panic!("no Link with rel {rel}: {:?}", self.all("link")));
        let uri = link
            .split('<')
            .nth(1)
            .and_then(|rest| rest.split('>').next())
            .expect("URI in the Link")
            .to_owned();
        (link, uri)
    }

    /// The path of the Location (which is on the public origin, not the test's address).
    pub fn location_path(&self) -> String {
        let location = self.header("location").expect("Location");
        let url = url::Url::parse(location).expect("absolute Location");
        url.path().to_owned()
    }
}

pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Got {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).expect("request");
    let response = client.request(request).await.expect("gateway answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Offers of the corpus with the answers their backends gave them.
pub const OFFER_ANSWER_PAIRS: &[(&str, &str, whipgate::kind::EndpointKind)] = &[
    (
        "chromium-whip-offer-vp8.sdp",
        "janus-whip-answer.sdp",
        whipgate::kind::EndpointKind::Whip,
    ),
    (
        "chromium-whip-offer-simulcast.sdp",
        "janus-whip-answer-simulcast.sdp",
        whipgate::kind::EndpointKind::Whip,
    ),
    (
        "chromium-whep-offer.sdp",
        "pion-whep-answer.sdp",
        whipgate::kind::EndpointKind::Whep,
    ),
    (
        "aiortc116-whip-offer.sdp",
        "pion-whip-answer.sdp",
        whipgate::kind::EndpointKind::Whip,
    ),
];

pub fn corpus(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/sdp-corpus")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A two-way talk offer as voice agents want it: aiortc's sendrecv audio, plus the data
/// channel an agent's control events travel on.
pub fn talk_offer() -> String {
    let offer = corpus("aiortc116-whip-offer.sdp").replace("\r\n", "\n");
    let video = offer.find("m=video").expect("video section");
    let audio = offer.find("m=audio").expect("audio section");
    let ice: String = offer[video..audio]
        .lines()
        .filter(|l| {
            l.starts_with("a=ice-")
                || l.starts_with("a=fingerprint:sha-256")
                || l.starts_with("a=setup")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let mut talk = format!("{}{}", &offer[..video], &offer[audio..]);
    talk = talk.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1 2");
    talk.push_str("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\nc=IN IP4 0.0.0.0\na=mid:2\na=sctp-port:5000\n");
    talk.push_str(&ice);
    talk.replace('\n', "\r\n")
}

/// The answer a talk offer gets: the same sections, whipgate checks their shape only.
pub fn talk_answer(offer: &str) -> String {
    offer.replace("a=setup:actpass", "a=setup:active")
}

/// A directory with a routes.toml (and a session key file) that tests rewrite.
pub struct ConfigDir {
    pub dir: std::path::PathBuf,
}

impl ConfigDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "whipgate-{name}-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("k1.key"),
            "k1-secret-k1-secret-k1-secret-k1-secret",
        )
        .expect("key");
        Self { dir }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.join("routes.toml")
    }

    /// Writes the file atomically (rename), as editors and config management do.
    pub fn write(&self, text: &str) {
        let temp = self.dir.join(".routes.toml.tmp");
        std::fs::write(&temp, text).expect("write");
        std::fs::rename(&temp, self.path()).expect("rename");
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A gateway that loads (and reloads) its table from `dir`.
pub async fn gateway_from(dir: &ConfigDir) -> RunningServer {
    let config = Config::load(&dir.path(), SecretMode::Resolve)
        .unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let gateway = Gateway::new(config)
        .expect("gateway")
        .with_config_path(dir.path());
    server::start(gateway, Some("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("start gateway")
}

/// A backend answering like a WHIP/WHEP server: 201 with an answer that fits the Chromium
/// offers of the corpus, PATCH 204, DELETE 200.
pub fn whip_server() -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    move |seen: &Seen| match seen.method.as_str() {
        "POST" if seen.path.starts_with("/whep") => Reply::new(201)
            .header("location", "/resource/whep")
            .body(corpus("pion-whep-answer.sdp")),
        "POST" => Reply::new(201)
            .header("location", "/resource/whip")
            .header("etag", "\"1\"")
            .body(corpus("janus-whip-answer.sdp")),
        "PATCH" => Reply::new(204),
        "DELETE" => Reply::new(200),
        _ => Reply::new(405),
    }
}

pub async fn post_offer(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let (offer, kind) = if path.starts_with("/whep/") {
        (corpus("chromium-whep-offer.sdp"), "whep")
    } else {
        (corpus("chromium-whip-offer-vp8.sdp"), "whip")
    };
    let _ = kind;
    let mut all = vec![("content-type", "application/sdp")];
    all.extend_from_slice(headers);
    send(addr, "POST", path, &all, offer).await
}

/// A `whipgate serve` process, its bound address and its log lines.
pub struct Served {
    child: std::process::Child,
    pub address: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Starts `whipgate serve --config CONFIG ARGS...` with `env` and waits for its startup line.
/// The log is read on a thread, so a missing line fails the test instead of hanging it, and
/// the pipe is drained so the child never blocks on it.
pub fn spawn_serve(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Served {
    use std::io::BufRead;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_whipgate"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("whipgate spawns");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = sender.send(line);
        }
    });
    let mut served = Served {
        child,
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        lines,
    };
    let started = served
        .wait_for("whipgate serving", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no startup line"));
    // Text logs say `address=A`, JSON logs `"address":"A"`.
    served.address = started
        .split("address")
        .nth(1)
        .map(|rest| rest.trim_start_matches(['=', '"', ':']))
        .and_then(|rest| rest.split(['"', ' ']).next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no address in {started:?}"));
    served
}

impl Served {
    /// The next log line containing `needle`, within `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// SIGTERM, then the exit status and every log line not read yet.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        self.signal("TERM");
        let status = self.child.wait().expect("whipgate exits");
        let rest = self.lines.try_iter().collect();
        (status, rest)
    }
}

impl Served {
    /// Waits for an exit already asked for (by a signal sent earlier).
    pub fn finish_exited(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().expect("whipgate exits");
        let rest = self.lines.try_iter().collect();
        (status, rest)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `condition` (polled every 10 ms), failing the test after 10 s with `what`.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one series on the gateway's `/metrics` (`None` when it is absent).
pub async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let text = send(addr, "GET", "/metrics", &[], "").await.body;
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Reads an event stream as it arrives: `next(needle)` waits (10 s at most) until the text
/// read so far contains `needle`.
pub struct EventStream {
    pub text: String,
    body: hyper::body::Incoming,
    pub status: u16,
    pub content_type: String,
}

impl EventStream {
    pub async fn open(addr: std::net::SocketAddr, path: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", "gw.example.com")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Self {
            text: String::new(),
            body: response.into_body(),
            status,
            content_type,
        }
    }

    /// Waits for `needle`; `false` when the stream ended (or 10 s passed) without it.
    pub async fn next(&mut self, needle: &str) -> bool {
        use http_body_util::BodyExt;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.text.contains(needle) {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        self.text.push_str(&String::from_utf8_lossy(data));
                    }
                }
                _ => return false,
            }
        }
        true
    }

    /// Reads what the server has sent so far: frames until none comes for 600 ms (the
    /// gateway looks at a stream twice a second, so what it would send is in by then).
    pub async fn read_sent(&mut self) {
        use http_body_util::BodyExt;
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(std::time::Duration::from_millis(600), self.body.frame()).await
        {
            if let Some(data) = frame.data_ref() {
                self.text.push_str(&String::from_utf8_lossy(data));
            }
        }
    }

    /// Whether the server ended the stream (within 10 s).
    pub async fn ended(&mut self) -> bool {
        use http_body_util::BodyExt;
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), self.body.frame()).await
            {
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
                Err(_) => return false,
            }
        }
    }
}

/// The path of a URL whipgate gave out (tests talk to its socket directly).
pub fn path_of(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.path().to_owned())
}
