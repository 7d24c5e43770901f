//! The pages a person uses: `/` (status), `/publish/{stream}` (camera and microphone over
//! WHIP), `/play/{stream}` (a WHEP player) and `/talk/{stream}` (a two-way WHIP session with
//! whatever voice agent the route selects). Plain HTML and JavaScript compiled into the
//! binary; the scripts use the same public endpoints as any client, and stream names
//! reach the page only through its URL, never through markup whipgate writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;

use super::Gateway;
use crate::config::Config;
use crate::kind::EndpointKind;

use super::response::Body;

const PUBLISH: &str = include_str!("pages/publish.html");
const PLAY: &str = include_str!("pages/play.html");
const TALK: &str = include_str!("pages/talk.html");
const SCRIPT: &str = include_str!("pages/whip.js");
const STYLE: &str = include_str!("pages/style.css");

/// `connect-src` keeps the pages talking to this gateway only: the origin they were loaded
/// from and the configured public origin, which session URLs (DELETE, PATCH) are on. A page
/// opened at `localhost` while `public_url` says `127.0.0.1` must still reach its session.
fn content_security_policy(config: &Config) -> String {
    let public = config
        .server
        .public_url
        .as_ref()
        .map(|url| url.origin().ascii_serialization())
        .filter(|origin| origin != "null")
        .map(|origin| format!(" {origin}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self'; \
         media-src 'self' blob: mediastream:; connect-src 'self'{public}; \
         img-src 'self' data:; frame-ancestors 'none'"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Status,
    StatusJson,
    Publish,
    Play,
    Talk,
    Script,
    Style,
}

impl Page {
    pub fn from_path(path: &str) -> Option<Self> {
        let trimmed = path.strip_prefix('/')?;
        let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        match (first, rest) {
            ("", "") => Some(Page::Status),
            ("api", "status") => Some(Page::StatusJson),
            ("publish", s) if !s.is_empty() && !s.contains('/') => Some(Page::Publish),
            ("play", s) if !s.is_empty() && !s.contains('/') => Some(Page::Play),
            ("talk", s) if !s.is_empty() && !s.contains('/') => Some(Page::Talk),
            ("pages", "whip.js") => Some(Page::Script),
            ("pages", "style.css") => Some(Page::Style),
            _ => None,
        }
    }
}

fn asset(config: &Config, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::new(body.into()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(config)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// One stream as this replica sees it.
#[derive(Debug, Default, serde::Serialize)]
struct StreamRow {
    stream: String,
    backend: String,
    publishers: usize,
    viewers: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    frames_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    packets_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frames_out: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    layers: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct BackendRow {
    id: String,
    kind: &'static str,
    available: bool,
    sessions: usize,
}

#[derive(Debug, serde::Serialize)]
struct RouteRow {
    id: String,
    matches: String,
    backends: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct Status {
    routes: Vec<RouteRow>,
    backends: Vec<BackendRow>,
    streams: Vec<StreamRow>,
    /// Streams the built-in SFU republishes, and their legs.
    relays: Vec<super::relay::RelayStatus>,
}

impl Gateway {
    pub(super) async fn page(&self, config: &Config, page: Page) -> Response<Body> {
        match page {
            Page::Publish => asset(config, "text/html; charset=utf-8", PUBLISH),
            Page::Play => asset(config, "text/html; charset=utf-8", PLAY),
            Page::Talk => asset(config, "text/html; charset=utf-8", TALK),
            Page::Script => asset(config, "text/javascript; charset=utf-8", SCRIPT),
            Page::Style => asset(config, "text/css; charset=utf-8", STYLE),
            Page::StatusJson => {
                let status = self.status(config).await;
                let body = serde_json::to_vec_pretty(&status).unwrap_or_default();
                asset(config, "application/json", body)
            }
            Page::Status => {
                let status = self.status(config).await;
                asset(config, "text/html; charset=utf-8", render(&status))
            }
        }
    }

    async fn status(&self, config: &Config) -> Status {
        let now = self.clock.instant();
        let sessions = self.registry.snapshot();
        let mut backends: Vec<BackendRow> = config
            .backends
            .values()
            .map(|b| BackendRow {
                id: b.id.0.clone(),
                kind: b.kind(),
                available: self.health.is_available(&b.id.0, now),
                sessions: sessions.iter().filter(|s| s.backend == b.id.0).count(),
            })
            .collect();
        backends.sort_by(|a, b| a.id.cmp(&b.id));
        let routes = config
            .routes
            .routes()
            .iter()
            .map(|r| RouteRow {
                id: r.id.clone(),
                matches: r.matcher.describe(),
                backends: r.all_backends().map(|b| b.0.clone()).collect(),
            })
            .collect();
        let mut streams: BTreeMap<(String, String), StreamRow> = BTreeMap::new();
        let builtin_ids: Vec<&str> = backends
            .iter()
            .filter(|b| b.kind == "builtin")
            .map(|b| b.id.as_str())
            .collect();
        for session in sessions
            .iter()
            .filter(|s| !builtin_ids.contains(&s.backend.as_str()))
        {
            let row = streams
                .entry((session.stream.clone(), session.backend.clone()))
                .or_insert_with(|| StreamRow {
                    stream: session.stream.clone(),
                    backend: session.backend.clone(),
                    ..StreamRow::default()
                });
            match session.kind {
                EndpointKind::Whip => row.publishers += 1,
                EndpointKind::Whep => row.viewers += 1,
            }
        }
        if let Some(sfu) = self.upstreams.sfu.get() {
            let backend = builtin_ids.first().copied().unwrap_or("builtin").to_owned();
            for stream in sfu.status().await {
                streams.insert(
                    (stream.stream.clone(), backend.clone()),
                    StreamRow {
                        stream: stream.stream,
                        backend: backend.clone(),
                        publishers: usize::from(stream.publishing),
                        viewers: stream.viewers,
                        frames_in: Some(stream.frames_in),
                        packets_in: Some(stream.packets_in),
                        frames_out: Some(stream.frames_out),
                        layers: stream.layers,
                    },
                );
            }
        }
        Status {
            routes,
            backends,
            streams: streams.into_values().collect(),
            relays: self.relays.snapshot(),
        }
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn render(status: &Status) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>whipgate</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/pages/style.css\"></head>\
         <body><header>whipgate</header><main>",
    );
    html.push_str("<h2>Live streams</h2>");
    if status.streams.is_empty() {
        html.push_str("<p>None yet: open <a href=\"/publish/demo\">/publish/demo</a>.</p>");
    } else {
        html.push_str(
            "<table><tr><th>stream</th><th>backend</th><th>publishing</th><th>viewers</th>\
             <th>simulcast layers</th><th>watch</th></tr>",
        );
        for s in &status.streams {
            let name = escape(&s.stream);
            let href = escape(
                &percent_encoding::utf8_percent_encode(
                    &s.stream,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string(),
            );
            let _ = write!(
                html,
                "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td><a href=\"/play/{href}\">play</a></td></tr>",
                escape(&s.backend),
                if s.publishers > 0 { "yes" } else { "no" },
                s.viewers,
                if s.layers.is_empty() {
                    "none".to_owned()
                } else {
                    escape(&s.layers.join(" "))
                },
            );
        }
        html.push_str("</table>");
    }
    if !status.relays.is_empty() {
        html.push_str(
            "<h2>Relays</h2><table><tr><th>stream</th><th>mode</th><th>legs</th>\
             <th>switches</th><th>last leg end</th></tr>",
        );
        for relay in &status.relays {
            let legs: Vec<String> = relay
                .legs
                .iter()
                .map(|l| format!("{} ({}, {} kB)", l.target, l.state, l.bytes / 1000))
                .collect();
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&relay.stream),
                relay.mode,
                escape(&legs.join(", ")),
                relay.switches,
                escape(relay.last_end.as_deref().unwrap_or("")),
            );
        }
        html.push_str("</table>");
    }
    html.push_str("<h2>Backends</h2><table><tr><th>id</th><th>kind</th><th>state</th><th>sessions here</th></tr>");
    for b in &status.backends {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&b.id),
            b.kind,
            if b.available { "good" } else { "bad" },
            if b.available {
                "available"
            } else {
                "unavailable"
            },
            b.sessions,
        );
    }
    html.push_str(
        "</table><h2>Routes</h2><table><tr><th>id</th><th>matches</th><th>backends</th></tr>",
    );
    for r in &status.routes {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.id),
            escape(&r.matches),
            escape(&r.backends.join(", ")),
        );
    }
    html.push_str(
        "</table><p>Publish: <code>/publish/{stream}</code> · play: <code>/play/{stream}</code> \
         · WHIP: <code>/whip/{stream}</code> · WHEP: <code>/whep/{stream}</code></p>\
         </main></body></html>",
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(Page::from_path("/"), Some(Page::Status));
        assert_eq!(Page::from_path("/publish/x"), Some(Page::Publish));
        assert_eq!(Page::from_path("/play/a%2Fb"), Some(Page::Play));
        assert_eq!(Page::from_path("/play/"), None);
        assert_eq!(Page::from_path("/play/a/b"), None);
        assert_eq!(Page::from_path("/talk/agent-1"), Some(Page::Talk));
        assert_eq!(Page::from_path("/api/status"), Some(Page::StatusJson));
        assert_eq!(Page::from_path("/pages/whip.js"), Some(Page::Script));
        assert_eq!(Page::from_path("/whip/x"), None);
    }

    #[test]
    fn status_escapes_names() {
        let status = Status {
            routes: vec![],
            backends: vec![],
            streams: vec![StreamRow {
                stream: "<script>alert(1)</script>".into(),
                backend: "b".into(),
                publishers: 1,
                ..StreamRow::default()
            }],
            relays: vec![],
        };
        let html = render(&status);
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
