//! The adapter for backend kind `builtin`: the same create / patch / delete as a remote
//! WHIP server, answered by the SFU inside this process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use url::Url;

use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BoxFuture, CreateRequest, Created, KeyError,
    KindKeys, Patched, SessionRequest, Upstreams,
};
use crate::error::GatewayError;
use crate::frontdoor::UpstreamIfMatch;
use crate::kind::EndpointKind;
use crate::session::SessionState;
use crate::sfu::{PeerId, Sfu, SfuError};

/// Resources of built-in sessions are `builtin://<backend>/session/<id>`; they exist only
/// inside sealed session tokens and are never sent to a client.
const SCHEME: &str = "builtin";

/// The SFU of this process; its settings are `[builtin]`, shared by every builtin backend.
#[derive(Debug)]
pub struct Builtin {
    /// `pull`: the backend a viewer's stream is pulled from when nobody publishes it here.
    pull: Option<String>,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &["pull"];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    Ok(Arc::new(Builtin {
        pull: keys.string("pull")?,
    }))
}

impl Adapter for Builtin {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    fn serves(&self, _endpoint: EndpointKind) -> bool {
        true
    }

    fn is_remote(&self) -> bool {
        false
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        Vec::new()
    }

    fn describe(&self) -> String {
        match &self.pull {
            Some(origin) => format!("builtin: the SFU in this process, pulling from {origin}"),
            None => "builtin: the SFU in this process".into(),
        }
    }

    fn pulls_from(&self) -> Option<&str> {
        self.pull.as_deref()
    }

    fn reports_ended(&self) -> bool {
        true
    }

    /// A peer the SFU no longer holds (gone quiet, closed, its publisher left) has ended.
    fn ended<'a>(
        &'a self,
        cx: &'a Upstreams,
        _backend: &'a BackendDef,
        resources: &'a [Url],
    ) -> BoxFuture<'a, Option<Vec<bool>>> {
        Box::pin(async move {
            let live = cx.sfu.get()?.live_peers().await.ok()?;
            Some(
                resources
                    .iter()
                    .map(|r| peer_id(r).map_or(true, |id| !live.contains(&id)))
                    .collect(),
            )
        })
    }

    fn chooses_layers(&self) -> bool {
        true
    }

    fn select_layer<'a>(
        &'a self,
        cx: &'a Upstreams,
        session: SessionRequest<'a>,
        media_id: &'a str,
        rid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let sfu = cx.sfu.get().ok_or_else(stopped)?;
            let id = peer_id(session.resource.url())?;
            sfu.select_layer(id, media_id, rid)
                .await
                .map_err(gateway_error)
        })
    }

    fn layers<'a>(
        &'a self,
        cx: &'a Upstreams,
        resource: &'a Url,
    ) -> BoxFuture<'a, Vec<(String, Vec<String>)>> {
        Box::pin(async move {
            match (cx.sfu.get(), peer_id(resource)) {
                (Some(sfu), Ok(id)) => sfu.viewer_layers(id).await,
                _ => Vec::new(),
            }
        })
    }

    fn create<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        request: CreateRequest<'a>,
    ) -> BoxFuture<'a, Result<Created, AttemptError>> {
        Box::pin(create(cx, self.pull.as_deref(), backend, request))
    }

    fn patch<'a>(
        &'a self,
        cx: &'a Upstreams,
        _backend: &'a BackendDef,
        session: SessionRequest<'a>,
        body: Bytes,
        _if_match: &'a UpstreamIfMatch,
    ) -> BoxFuture<'a, Result<Patched, GatewayError>> {
        Box::pin(patch(cx.sfu.get(), session.resource.url(), body))
    }

    fn delete<'a>(
        &'a self,
        cx: &'a Upstreams,
        _backend: &'a BackendDef,
        session: SessionRequest<'a>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(delete(cx.sfu.get(), session.resource.url()))
    }
}

async fn create(
    cx: &Upstreams,
    pull: Option<&str>,
    backend: &BackendDef,
    request: CreateRequest<'_>,
) -> Result<Created, AttemptError> {
    let sfu = cx
        .sfu
        .get()
        .ok_or_else(|| AttemptError::retryable(stopped()))?;
    let offer = String::from_utf8_lossy(&request.offer).into_owned();
    let stream = request.stream.as_str();
    let result = match request.kind {
        EndpointKind::Whip => sfu.publish(stream, offer).await,
        EndpointKind::Whep => match (sfu.play(stream, offer.clone()).await, pull) {
            (Err(SfuError::NoPublisher), Some(origin)) => {
                // Nobody publishes it here: pull it from the origin (once, however many
                // viewers ask), then serve this viewer from the pull.
                let puller = cx
                    .puller
                    .get()
                    .ok_or_else(|| AttemptError::retryable(stopped()))?;
                puller
                    .pull(origin, request.stream)
                    .await
                    .map_err(AttemptError::fatal)?;
                sfu.play(stream, offer).await
            }
            (result, _) => result,
        },
    };
    let (id, answer) = result.map_err(|error| match error {
        SfuError::Stopped => AttemptError::retryable(stopped()),
        other => AttemptError::fatal(gateway_error(other)),
    })?;
    let resource = Url::parse(&format!("{SCHEME}://{}/session/{id:016x}", backend.id))
        .map_err(|_| AttemptError::fatal(GatewayError::Internal("bad resource".into())))?;
    Ok(Created {
        answer: Bytes::from(answer),
        counter_offer: false,
        resource: resource.into(),
        etag: None,
        ice_servers: Vec::new(),
        state: SessionState::new(),
    })
}

async fn patch(sfu: Option<&Sfu>, resource: &Url, body: Bytes) -> Result<Patched, GatewayError> {
    let sfu = sfu.ok_or_else(stopped)?;
    let id = peer_id(resource)?;
    let fragment = String::from_utf8_lossy(&body);
    if fragment.lines().any(|l| l.starts_with("a=ice-ufrag:")) && !trickle_only(&fragment) {
        return Err(GatewayError::Unprocessable(
            "the built-in SFU does not support ICE restarts; start a new session".into(),
        ));
    }
    sfu.trickle(id, fragment.into_owned())
        .await
        .map_err(gateway_error)?;
    Ok(Patched::trickled())
}

async fn delete(sfu: Option<&Sfu>, resource: &Url) -> Result<(), GatewayError> {
    let sfu = sfu.ok_or_else(stopped)?;
    sfu.end(peer_id(resource)?).await.map_err(gateway_error)
}

/// A trickle fragment repeats the session's ICE credentials (RFC 8840); an ICE restart
/// brings new ones, which the SFU cannot tell apart without state, so a fragment with
/// candidates is taken as trickle.
fn trickle_only(fragment: &str) -> bool {
    fragment.lines().any(|l| l.starts_with("a=candidate:"))
        || fragment
            .lines()
            .any(|l| l.starts_with("a=end-of-candidates"))
}

pub(super) fn peer_id(resource: &Url) -> Result<PeerId, GatewayError> {
    let missing = || GatewayError::NotFound("session not found".into());
    if resource.scheme() != SCHEME {
        return Err(missing());
    }
    let hex = resource
        .path()
        .strip_prefix("/session/")
        .ok_or_else(missing)?;
    PeerId::from_str_radix(hex, 16).map_err(|_| missing())
}

fn stopped() -> GatewayError {
    GatewayError::Unavailable {
        reason: SfuError::Stopped.to_string(),
        retry_after: Duration::ZERO,
    }
}

fn gateway_error(error: SfuError) -> GatewayError {
    match error {
        SfuError::NoPublisher => GatewayError::NotLive {
            reason: error.to_string(),
            retry_after: Duration::ZERO,
        },
        SfuError::AlreadyPublished => GatewayError::Conflict(error.to_string()),
        SfuError::Offer(_) | SfuError::Codec(_) => GatewayError::Unprocessable(error.to_string()),
        SfuError::NoSession => GatewayError::NotFound("session not found".into()),
        SfuError::Layer(_) => GatewayError::BadRequest(error.to_string()),
        SfuError::Stopped => stopped(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_round_trip() {
        let url = Url::parse("builtin://sfu/session/00000000000000ff").expect("url");
        assert_eq!(peer_id(&url), Ok(255));
        for bad in [
            "builtin://sfu/session/zz",
            "builtin://sfu/other/ff",
            "http://sfu/session/ff",
        ] {
            let url = Url::parse(bad).expect("url");
            assert!(peer_id(&url).is_err(), "{bad}");
        }
    }
}
