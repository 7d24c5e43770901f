//! Pulls: a `builtin` backend with `pull = "origin"` serves viewers of a stream nobody
//! publishes on it by pulling the stream once over WHEP from the origin backend (another
//! whipgate, a vendor, Janus through its counter-offer), through the origin's adapter like
//! any player's session. The pull is the stream's publisher on this SFU; the SFU ends it with
//! its last viewer, and then the origin's session is deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::relay::OwnSession;
use super::Gateway;
use crate::backend::{AttemptError, BoxFuture, CreateRequest, Puller};
use crate::error::GatewayError;
use crate::kind::EndpointKind;
use crate::routing::{BackendId, StreamName};
use crate::sfu::{LegEvent, SfuError};

/// How long a viewer waits for a pull to connect before it gets an error.
const PULL_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq)]
enum PullState {
    Starting,
    Live,
    /// Failed or ended, and why: a viewer waiting gets this error.
    Gone(GatewayError),
}

/// The pulls running on this replica, one per stream.
pub(super) struct PullService {
    gateway: Weak<Gateway>,
    pulls: Arc<Pulls>,
}

/// Running pulls by stream; a pull leaves it when it ends, so stream names clients make up
/// never pile up here.
type Pulls = Mutex<HashMap<String, watch::Receiver<PullState>>>;

impl PullService {
    pub(super) fn new(gateway: Weak<Gateway>) -> Self {
        Self {
            gateway,
            pulls: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The running pull of `stream`, or a new one.
    fn join_or_start(&self, origin: &str, stream: &StreamName) -> watch::Receiver<PullState> {
        let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = pulls.get(stream.as_str()) {
            if !matches!(*state.borrow(), PullState::Gone(_)) {
                return state.clone();
            }
        }
        let (report, state) = watch::channel(PullState::Starting);
        pulls.insert(stream.as_str().to_owned(), state.clone());
        if let Some(gateway) = self.gateway.upgrade() {
            let pulls = self.pulls.clone();
            let origin = BackendId(origin.to_owned());
            let stream = stream.clone();
            let mine = report.subscribe();
            tokio::spawn(async move {
                run(gateway, origin, stream.clone(), report).await;
                let mut pulls = pulls.lock().unwrap_or_else(|e| e.into_inner());
                if pulls
                    .get(stream.as_str())
                    .is_some_and(|state| state.same_channel(&mine))
                {
                    pulls.remove(stream.as_str());
                }
            });
        }
        state
    }

    fn forget(&self, stream: &str) {
        let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        if pulls
            .get(stream)
            .is_some_and(|state| matches!(*state.borrow(), PullState::Gone(_)))
        {
            pulls.remove(stream);
        }
    }
}

impl Puller for PullService {
    fn pull<'a>(
        &'a self,
        origin: &'a str,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let mut state = self.join_or_start(origin, stream);
            let waited = tokio::time::timeout(
                PULL_WAIT,
                state.wait_for(|s| !matches!(s, PullState::Starting)),
            )
            .await;
            let outcome = match waited {
                Err(_) => Err(GatewayError::GatewayTimeout(format!(
                    "the pull from {origin} did not connect within {} s",
                    PULL_WAIT.as_secs()
                ))),
                Ok(Err(_)) => Err(GatewayError::Internal("the pull stopped".into())),
                Ok(Ok(now)) => match &*now {
                    PullState::Gone(error) => Err(error.clone()),
                    _ => Ok(()),
                },
            };
            if outcome.is_err() {
                self.forget(stream.as_str());
            }
            outcome
        })
    }
}

/// One pull, from its offer to the origin's DELETE.
async fn run(
    gateway: Arc<Gateway>,
    origin: BackendId,
    stream: StreamName,
    report: watch::Sender<PullState>,
) {
    let ended = pull(&gateway, &origin, &stream, &report).await;
    if let Err(error) = &ended {
        tracing::warn!(stream = %stream, origin = %origin, %error, "pull failed");
    }
    let _ = report.send(PullState::Gone(ended.err().unwrap_or_else(|| {
        GatewayError::NotLive {
            reason: "the pulled stream ended".into(),
            retry_after: Duration::ZERO,
        }
    })));
}

async fn pull(
    gateway: &Gateway,
    origin_id: &BackendId,
    stream: &StreamName,
    report: &watch::Sender<PullState>,
) -> Result<(), GatewayError> {
    let sfu = gateway
        .upstreams
        .sfu
        .get()
        .cloned()
        .ok_or_else(|| GatewayError::Internal("the built-in SFU is not running".into()))?;
    let config = gateway.config();
    let origin = config
        .backends
        .get(origin_id)
        .cloned()
        .ok_or_else(|| GatewayError::Internal(format!("pull origin {origin_id} is gone")))?;
    let (events, mut inbox) = mpsc::unbounded_channel();
    let sfu_error = |error: SfuError| match error {
        SfuError::AlreadyPublished => GatewayError::Conflict(error.to_string()),
        other => GatewayError::BadGateway(other.to_string()),
    };
    let (mut peer, offer) = sfu
        .pull_offer(stream.as_str(), events.clone())
        .await
        .map_err(sfu_error)?;
    let sid = super::hex(&gateway.random_bytes::<12>());
    let request_id = super::relay::own_request_id(EndpointKind::Whep, &sid);
    let created = origin
        .adapter
        .create(
            &gateway.upstreams,
            origin.as_ref(),
            CreateRequest {
                kind: EndpointKind::Whep,
                stream,
                captures: &[],
                offer: Bytes::from(offer),
                client_authorization: None,
                request_id: &request_id,
                sid: &sid,
                route: "pull",
                subject: None,
                tier: None,
                client_ip: None,
                now: gateway.clock.unix(),
            },
        )
        .await;
    let created = match created {
        Ok(created) => created,
        Err(AttemptError { error, .. }) => {
            let _ = sfu.end(peer).await;
            return Err(error);
        }
    };
    let own = OwnSession::new(
        gateway,
        &origin,
        &created,
        EndpointKind::Whep,
        stream,
        "pull",
        &sid,
    );
    let answered = if created.counter_offer {
        // The origin offers (Janus's subscribers do): the SFU answers its offer instead.
        let _ = sfu.end(peer).await;
        let their_offer = String::from_utf8_lossy(&created.answer).into_owned();
        match sfu
            .pull_accept(stream.as_str(), their_offer, events.clone())
            .await
        {
            Ok((id, answer)) => {
                peer = id;
                origin
                    .adapter
                    .answer(
                        &gateway.upstreams,
                        origin.as_ref(),
                        own.request(gateway.clock.unix()),
                        Bytes::from(answer),
                    )
                    .await
            }
            Err(error) => Err(sfu_error(error)),
        }
    } else {
        let answer = String::from_utf8_lossy(&created.answer).into_owned();
        sfu.relay_answer(peer, answer).await.map_err(sfu_error)
    };
    let result = match answered {
        Ok(()) => {
            tracing::info!(stream = %stream, origin = %origin.id, "pulling");
            loop {
                match inbox.recv().await {
                    Some((id, LegEvent::Connected)) if id == peer => {
                        let _ = report.send(PullState::Live);
                    }
                    Some((id, LegEvent::Ended(why))) if id == peer => {
                        tracing::info!(stream = %stream, origin = %origin.id, why, "pull ended");
                        break Ok(());
                    }
                    Some(_) => {}
                    None => break Ok(()),
                }
            }
        }
        Err(error) => {
            let _ = sfu.end(peer).await;
            Err(error)
        }
    };
    own.delete(gateway).await;
    result
}
