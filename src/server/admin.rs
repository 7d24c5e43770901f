//! The admin endpoints, behind a bearer token of their own (`[server] admin_token_env` or
//! `admin_token_file`); without one configured they do not exist.
//!
//! - `GET /admin/config`: generation, summary, the last reload error;
//! - `POST /admin/reload`: re-read routes.toml (same as SIGHUP or a file change);
//! - `GET /admin/explain?kind=whip&stream=NAME[&host=H][&ip=A][&header=k:v][&query=raw]`:
//!   the route and candidate order the live table gives such a request.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::response::Body;
use super::Gateway;
use crate::error::GatewayError;
use crate::kind::EndpointKind;
use crate::routing::{RequestFacts, StreamName};

impl Gateway {
    pub(super) async fn admin<B>(
        &self,
        what: &str,
        request: Request<B>,
    ) -> Result<Response<Body>, GatewayError> {
        let config = self.config();
        let Some(expected) = &config.server.admin_token else {
            return Err(GatewayError::NotFound(
                "admin endpoints are disabled (no admin token)".into(),
            ));
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .unwrap_or("");
        if !constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
            return Err(GatewayError::Unauthorized(
                "admin token missing or wrong".into(),
            ));
        }
        match (what, request.method()) {
            ("config", &Method::GET) => {
                let status = self.reload_status();
                let body = serde_json::json!({
                    "generation": status.generation,
                    "summary": config.summary(),
                    "last_error": status.last_error,
                    "pending_restart": status.pending_restart,
                    "reloads_ok": status.reloads_ok,
                    "reloads_failed": status.reloads_failed,
                    "live_sessions": self.registry.len(),
                });
                Ok(json(StatusCode::OK, &body))
            }
            ("reload", &Method::POST) => match self.reload() {
                Ok(generation) => Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "generation": generation }),
                )),
                Err(error) => Ok(json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({ "error": error, "generation": self.reload_status().generation }),
                )),
            },
            ("drain", method @ (&Method::POST | &Method::DELETE)) => {
                let backend = request
                    .uri()
                    .query()
                    .and_then(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .find(|(k, _)| k == "backend")
                            .map(|(_, v)| v.into_owned())
                    })
                    .ok_or_else(|| GatewayError::BadRequest("name it: ?backend=ID".into()))?;
                let drained = *method == Method::POST;
                if !self.set_drained(&backend, drained) {
                    return Err(GatewayError::NotFound(format!(
                        "no backend {:?}",
                        backend.chars().take(64).collect::<String>()
                    )));
                }
                if drained {
                    tracing::info!(%backend, "draining: no new sessions, publishers ended, players told to reconnect");
                    self.end_drained_publishers().await;
                } else {
                    tracing::info!(%backend, "drain ended");
                }
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "backend": backend, "draining": drained }),
                ))
            }
            ("sessions", &Method::GET) => {
                let now = self.clock.unix();
                let sessions: Vec<serde_json::Value> = self
                    .registry
                    .snapshot()
                    .into_iter()
                    .map(|s| {
                        serde_json::json!({
                            "backend": s.backend,
                            "route": s.route,
                            "kind": s.kind,
                            "age_seconds": now.saturating_sub(s.created),
                        })
                    })
                    .collect();
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "sessions": sessions }),
                ))
            }
            ("explain", &Method::GET) => {
                let text = explain_from_query(&config, request.uri().query().unwrap_or(""))?;
                let mut response = Response::new(super::response::Body::new(Bytes::from(text)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Ok(response)
            }
            _ => Err(GatewayError::NotFound(
                "admin endpoints: GET config, POST reload, GET explain, GET sessions".into(),
            )),
        }
    }
}

fn explain_from_query(config: &crate::config::Config, query: &str) -> Result<String, GatewayError> {
    let mut kind = EndpointKind::Whip;
    let mut stream = None;
    let mut host = None;
    let mut ip = None;
    let mut raw_query = None;
    let mut headers = http::HeaderMap::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "kind" if value == "whep" => kind = EndpointKind::Whep,
            "kind" => kind = EndpointKind::Whip,
            "stream" => stream = Some(value.into_owned()),
            "host" => host = Some(value.to_ascii_lowercase()),
            "ip" => {
                ip = Some(
                    value
                        .parse()
                        .map_err(|_| GatewayError::BadRequest("ip is not an address".into()))?,
                )
            }
            "query" => raw_query = Some(value.into_owned()),
            "header" => {
                let (name, value) = value
                    .split_once(':')
                    .ok_or_else(|| GatewayError::BadRequest("header must be name:value".into()))?;
                let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| GatewayError::BadRequest("bad header name".into()))?;
                let value = HeaderValue::from_str(value.trim())
                    .map_err(|_| GatewayError::BadRequest("bad header value".into()))?;
                headers.append(name, value);
            }
            _ => {}
        }
    }
    let stream = StreamName::new(
        stream.ok_or_else(|| GatewayError::BadRequest("stream is required".into()))?,
    )
    .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let facts = RequestFacts {
        kind,
        stream: &stream,
        host: host.as_deref(),
        headers: &headers,
        query: raw_query.as_deref(),
        client_ip: ip,
        identities: &[],
    };
    Ok(config.explain(&facts))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(super::response::Body::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Compares without an early exit, so timing says nothing of where a guess went wrong.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
