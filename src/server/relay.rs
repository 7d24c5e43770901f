//! Relay supervisors: one task per stream published on the built-in SFU through a route with
//! `relay`, keeping the stream's relay legs as the planner (`routing::relay`) decides. A leg
//! is the SFU's own WHIP session on the target, opened through the target's adapter with
//! its credentials, exactly as a client's session would be; a failing leg is replaced
//! without the publisher's connection ever being touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::Gateway;
use crate::backend::{AttemptError, BackendDef, CreateRequest, SessionRequest};
use crate::error::GatewayError;
use crate::kind::EndpointKind;
use crate::routing::relay::{decide, Failures, LegView, RelayAction, RelayMode, RelayPlan};
use crate::routing::{BackendId, StreamName};
use crate::session::SessionClaims;
use crate::sfu::{LegEvent, PeerId, Sfu, SfuError};

/// How often legs' byte counts reach the metrics and the status page.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// A publisher the front door placed on the built-in SFU through a route with `relay`.
#[derive(Debug)]
pub(super) struct RelayStart {
    pub stream: StreamName,
    pub route: String,
    pub publisher: PeerId,
    pub captures: Vec<(String, String)>,
}

/// Every relayed stream of this replica, for `/api/status` and the status page. Keyed by
/// publisher: a stream re-published at once has a new supervisor before the old one has
/// finished, and the old one's last words must not erase the new one's status.
#[derive(Debug, Default)]
pub(super) struct Relays {
    streams: Mutex<HashMap<PeerId, RelayStatus>>,
}

impl Relays {
    pub(super) fn snapshot(&self) -> Vec<RelayStatus> {
        let mut all: Vec<RelayStatus> = self
            .streams
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.stream.cmp(&b.stream));
        all
    }

    fn set(&self, publisher: PeerId, status: RelayStatus) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(publisher, status);
        }
    }

    fn remove(&self, publisher: PeerId) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.remove(&publisher);
        }
    }

    /// Every status but `publisher`'s.
    fn others(&self, publisher: PeerId) -> Vec<RelayStatus> {
        self.streams
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(id, _)| **id != publisher)
                    .map(|(_, status)| status.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One relayed stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayStatus {
    pub stream: String,
    pub route: String,
    pub mode: &'static str,
    pub legs: Vec<LegReport>,
    /// Times a failover relay's copy moved to another target.
    pub switches: u64,
    /// Why the last leg ended, if one did.
    pub last_end: Option<String>,
}

/// One relay leg.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LegReport {
    pub target: String,
    /// `opening` (asking the target), `connecting` (ICE and DTLS), `connected`.
    pub state: &'static str,
    /// Unix seconds since it is in this state.
    pub since: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    Opening,
    Connecting,
    Connected,
}

impl LegState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
        }
    }
}

/// The request id of the SFU's own requests for session `sid`: a relay leg's (WHIP) or a
/// pull's (WHEP), so that its log lines name what made them.
pub(super) fn own_request_id(kind: EndpointKind, sid: &str) -> String {
    match kind {
        EndpointKind::Whip => format!("relay-{sid}"),
        EndpointKind::Whep => format!("pull-{sid}"),
    }
}

/// A session the SFU itself holds on another backend (a relay leg's, a pull's): what its
/// later requests and its DELETE need, as a client's token would carry it.
pub(super) struct OwnSession {
    pub backend: Arc<BackendDef>,
    pub resource: crate::backend::BackendUrl,
    pub claims: SessionClaims,
    /// The request id its creation was logged with, for its later requests too.
    pub request_id: String,
}

impl OwnSession {
    pub(super) fn new(
        gateway: &Gateway,
        backend: &Arc<BackendDef>,
        created: &crate::backend::Created,
        kind: EndpointKind,
        stream: &StreamName,
        route: &str,
        sid: &str,
    ) -> Self {
        let now = gateway.clock.unix();
        Self {
            request_id: own_request_id(kind, sid),
            backend: backend.clone(),
            resource: created.resource.clone(),
            claims: SessionClaims {
                sid: sid.to_owned(),
                backend: backend.id.as_str().to_owned(),
                resource: created.resource.to_string(),
                kind,
                stream: stream.as_str().to_owned(),
                route: route.to_owned(),
                created: now,
                expires: now.saturating_add(gateway.config().server.session_ttl.as_secs()),
                subject: None,
                state: created.state.clone(),
            },
        }
    }

    /// A request on it, as the adapter takes one.
    pub(super) fn request(&self, now: u64) -> SessionRequest<'_> {
        SessionRequest {
            resource: &self.resource,
            claims: &self.claims,
            client_authorization: None,
            request_id: &self.request_id,
            client_ip: None,
            now,
        }
    }

    /// DELETE on its backend, with whatever cleanup the kind does; a failure is logged.
    pub(super) async fn delete(self, gateway: &Gateway) {
        let result = self
            .backend
            .adapter
            .delete(
                &gateway.upstreams,
                self.backend.as_ref(),
                self.request(gateway.clock.unix()),
            )
            .await;
        match result {
            Ok(()) | Err(GatewayError::NotFound(_)) => {}
            Err(error) => tracing::warn!(
                backend = %self.backend.id, %error,
                "a session the built-in SFU held on another backend could not be deleted"
            ),
        }
    }
}

struct Leg {
    target: BackendId,
    state: LegState,
    since: u64,
    peer: Option<PeerId>,
    session: Option<OwnSession>,
    bytes: u64,
}

/// What opening a leg gave.
struct Opened {
    peer: PeerId,
    session: OwnSession,
}

/// Why opening a leg failed, as a metric reason and a log line.
#[derive(Debug)]
struct OpenFailure {
    reason: &'static str,
    detail: String,
}

/// Spawns a supervisor for every relayed publisher until the server stops.
pub(super) async fn run(
    gateway: Arc<Gateway>,
    mut starts: mpsc::UnboundedReceiver<RelayStart>,
    stopped: watch::Receiver<bool>,
) {
    while let Some(start) = starts.recv().await {
        let Some(sfu) = gateway.upstreams.sfu.get().cloned() else {
            continue;
        };
        tokio::spawn(supervise(gateway.clone(), sfu, start, stopped.clone()));
    }
}

struct Supervisor {
    gateway: Arc<Gateway>,
    sfu: Sfu,
    start: RelayStart,
    legs: Vec<Leg>,
    failures: Failures,
    /// Targets that refused this publisher for good (none of its codecs, or a refusal no
    /// retry changes): skipped for as long as it publishes.
    skipped: std::collections::HashSet<BackendId>,
    /// Legs whose connection was reported before their opening task's result arrived.
    early_connected: std::collections::HashSet<PeerId>,
    /// The target that served last (failover), kept after its leg ends: the next leg to
    /// connect elsewhere is a switch from it.
    serving: Option<BackendId>,
    switches: u64,
    last_end: Option<String>,
    events: mpsc::UnboundedSender<(PeerId, LegEvent)>,
    opened: mpsc::UnboundedSender<(BackendId, Result<Opened, OpenFailure>)>,
}

async fn supervise(
    gateway: Arc<Gateway>,
    sfu: Sfu,
    start: RelayStart,
    mut stopped: watch::Receiver<bool>,
) {
    let (events, mut event_inbox) = mpsc::unbounded_channel();
    let (opened, mut opened_inbox) = mpsc::unbounded_channel();
    if sfu.watch(start.publisher, events.clone()).await.is_err() {
        return;
    }
    let mut supervisor = Supervisor {
        gateway: gateway.clone(),
        sfu,
        start,
        legs: Vec::new(),
        failures: Failures::default(),
        skipped: std::collections::HashSet::new(),
        early_connected: std::collections::HashSet::new(),
        serving: None,
        switches: 0,
        last_end: None,
        events,
        opened,
    };
    let stream = supervisor.start.stream.as_str().to_owned();
    let mut publisher_ready = false;
    let mut stats = tokio::time::interval(STATS_INTERVAL);
    loop {
        let plan = supervisor.plan();
        if publisher_ready {
            supervisor.follow(&plan);
        }
        supervisor.publish_status(&plan);
        let wake = supervisor
            .failures
            .next_retry(&plan, supervisor.gateway.clock.instant());
        let retry = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((id, event)) = event_inbox.recv() => {
                if id == supervisor.start.publisher {
                    match event {
                        LegEvent::Connected => publisher_ready = true,
                        LegEvent::Ended(why) => {
                            tracing::info!(stream = %stream, why, "relay stopped: its publisher ended");
                            break;
                        }
                    }
                } else {
                    supervisor.leg_event(id, event);
                }
            }
            Some((target, result)) = opened_inbox.recv() => supervisor.opened(target, result),
            () = retry => {}
            () = gateway.moved.notified() => {}
            _ = stats.tick() => supervisor.count_bytes().await,
            _ = stopped.changed() => {
                tracing::info!(stream = %stream, "relay stopped: the server stops");
                break;
            }
        }
    }
    supervisor.close_all("publisher_left");
    gateway.relays.remove(supervisor.start.publisher);
}

impl Supervisor {
    /// The route's relay plan in the table in force: a reload that removed it closes legs.
    fn plan(&self) -> RelayPlan {
        let config = self.gateway.config();
        config
            .routes
            .routes()
            .iter()
            .find(|route| route.id == self.start.route)
            .and_then(|route| route.relay.clone())
            .unwrap_or(RelayPlan {
                to: Vec::new(),
                mode: RelayMode::Failover,
                failback: None,
            })
    }

    fn follow(&mut self, plan: &RelayPlan) {
        let mut plan = plan.clone();
        plan.to.retain(|target| !self.skipped.contains(target));
        let plan = &plan;
        self.failures.retain(plan);
        let views: Vec<LegView> = self
            .legs
            .iter()
            .map(|leg| LegView {
                target: leg.target.clone(),
                connected: leg.state == LegState::Connected,
            })
            .collect();
        let now = self.gateway.clock.instant();
        for action in decide(plan, &views, &self.failures, now) {
            match action {
                RelayAction::Open(target) => self.open(target),
                RelayAction::Close { target, replaced } => {
                    let reason = if replaced { "replaced" } else { "removed" };
                    if let Some(index) = self.legs.iter().position(|l| l.target == target) {
                        let leg = self.legs.remove(index);
                        tracing::info!(
                            stream = %self.start.stream, target = %target, reason,
                            "relay leg closed"
                        );
                        self.count_end(&target, reason);
                        self.close(leg);
                    }
                }
            }
        }
    }

    fn open(&mut self, target: BackendId) {
        let config = self.gateway.config();
        let Some(backend) = config.backends.get(&target).cloned() else {
            return;
        };
        self.legs.push(Leg {
            target: target.clone(),
            state: LegState::Opening,
            since: self.gateway.clock.unix(),
            peer: None,
            session: None,
            bytes: 0,
        });
        let gateway = self.gateway.clone();
        let sfu = self.sfu.clone();
        let events = self.events.clone();
        let opened = self.opened.clone();
        let stream = self.start.stream.clone();
        let route = self.start.route.clone();
        let captures = self.start.captures.clone();
        tokio::spawn(async move {
            let result =
                open_leg(&gateway, &sfu, events, backend, &stream, &route, &captures).await;
            if let Err(mpsc::error::SendError((_, Ok(orphan)))) = opened.send((target, result)) {
                // The supervisor is gone (its publisher ended, the server stops): nobody
                // else would end this leg or delete its session on the target.
                let _ = sfu.end(orphan.peer).await;
                orphan.session.delete(&gateway).await;
            }
        });
    }

    fn opened(&mut self, target: BackendId, result: Result<Opened, OpenFailure>) {
        let index = self
            .legs
            .iter()
            .position(|l| l.target == target && l.state == LegState::Opening);
        match (index, result) {
            (Some(index), Ok(opened)) => {
                let leg = &mut self.legs[index];
                leg.peer = Some(opened.peer);
                leg.session = Some(opened.session);
                leg.state = LegState::Connecting;
                leg.since = self.gateway.clock.unix();
                // Its connection may have been reported before this result arrived.
                if self.early_connected.remove(&opened.peer) {
                    self.leg_event(opened.peer, LegEvent::Connected);
                }
            }
            (None, Ok(opened)) => {
                // Closed (a reload, the publisher leaving) while it was being opened.
                tracing::info!(stream = %self.start.stream, target = %target, "relay leg no longer wanted once opened");
                self.close(Leg {
                    target,
                    state: LegState::Connecting,
                    since: 0,
                    peer: Some(opened.peer),
                    session: Some(opened.session),
                    bytes: 0,
                });
            }
            (index, Err(failure)) => {
                if let Some(index) = index {
                    self.legs.remove(index);
                }
                tracing::warn!(
                    stream = %self.start.stream, target = %target, reason = failure.reason,
                    "relay leg not opened: {}", failure.detail
                );
                self.last_end = Some(format!("{target}: {}", failure.detail));
                self.count_end(&target, failure.reason);
                if matches!(failure.reason, "codec" | "refused") {
                    self.skipped.insert(target);
                } else {
                    self.failures.record(&target, self.gateway.clock.instant());
                }
            }
        }
    }

    fn leg_event(&mut self, id: PeerId, event: LegEvent) {
        let Some(index) = self.legs.iter().position(|l| l.peer == Some(id)) else {
            // A leg still opening: the SFU reports on one channel, the opening task on
            // another. Kept for `opened` (a few at most: one per leg being opened).
            if event == LegEvent::Connected && self.early_connected.len() < 64 {
                self.early_connected.insert(id);
            }
            return;
        };
        match event {
            LegEvent::Connected => {
                let leg = &mut self.legs[index];
                leg.state = LegState::Connected;
                leg.since = self.gateway.clock.unix();
                let target = leg.target.clone();
                self.failures.clear(&target);
                tracing::info!(stream = %self.start.stream, target = %target, "relay leg connected");
                // A failover relay's copy moved when a leg to another target than the
                // last one that served connects.
                if self.plan().mode == RelayMode::Failover && self.serving.as_ref() != Some(&target)
                {
                    if let Some(from) = self.serving.replace(target.clone()) {
                        self.switches += 1;
                        self.gateway
                            .metrics
                            .relay_switches
                            .with_label_values(&[from.as_str(), target.as_str()])
                            .inc();
                    }
                }
            }
            LegEvent::Ended(why) => {
                let leg = self.legs.remove(index);
                let reason = match why.as_str() {
                    "nothing arrived from the peer" => "silent",
                    "ICE and DTLS did not complete" => "ice_dtls",
                    "the publisher left" => "publisher_left",
                    _ => "closed",
                };
                tracing::warn!(
                    stream = %self.start.stream, target = %leg.target, reason,
                    "relay leg failed: {why}"
                );
                self.last_end = Some(format!("{}: {why}", leg.target));
                self.count_end(&leg.target, reason);
                self.failures
                    .record(&leg.target, self.gateway.clock.instant());
                // The SFU already dropped the peer; the target's session is deleted.
                self.close(Leg { peer: None, ..leg });
            }
        }
    }

    fn count_end(&self, target: &BackendId, reason: &str) {
        self.gateway
            .metrics
            .relay_leg_ends
            .with_label_values(&[target.as_str(), reason])
            .inc();
    }

    /// Ends a leg's peer and deletes the target's session, on a task of its own.
    fn close(&self, leg: Leg) {
        let gateway = self.gateway.clone();
        let sfu = self.sfu.clone();
        tokio::spawn(async move {
            if let Some(peer) = leg.peer {
                let _ = sfu.end(peer).await;
            }
            if let Some(session) = leg.session {
                session.delete(&gateway).await;
            }
        });
    }

    fn close_all(&mut self, reason: &str) {
        for leg in std::mem::take(&mut self.legs) {
            self.count_end(&leg.target, reason);
            self.close(leg);
        }
        self.publish_gauges();
    }

    async fn count_bytes(&mut self) {
        let stream = self.start.stream.as_str();
        let Some(status) = self
            .sfu
            .status()
            .await
            .into_iter()
            .find(|s| s.stream == stream)
        else {
            return;
        };
        for leg in &mut self.legs {
            let Some(now) = status
                .legs
                .iter()
                .find(|l| Some(l.id) == leg.peer)
                .map(|l| l.bytes_out)
            else {
                continue;
            };
            let delta = now.saturating_sub(leg.bytes);
            leg.bytes = now;
            self.gateway
                .metrics
                .relay_bytes
                .with_label_values(&[leg.target.as_str()])
                .inc_by(delta);
        }
    }

    fn publish_status(&self, plan: &RelayPlan) {
        self.publish_gauges();
        self.gateway.relays.set(
            self.start.publisher,
            RelayStatus {
                stream: self.start.stream.as_str().to_owned(),
                route: self.start.route.clone(),
                mode: plan.mode.as_str(),
                legs: self
                    .legs
                    .iter()
                    .map(|leg| LegReport {
                        target: leg.target.as_str().to_owned(),
                        state: leg.state.as_str(),
                        since: leg.since,
                        bytes: leg.bytes,
                    })
                    .collect(),
                switches: self.switches,
                last_end: self.last_end.clone(),
            },
        );
    }

    /// The legs gauge, recomputed from every relayed stream of this replica.
    fn publish_gauges(&self) {
        let gateway = &self.gateway;
        // Every other stream's last published view, plus this one's as it is now.
        let mut counts: HashMap<(String, &'static str), i64> = HashMap::new();
        for status in gateway.relays.others(self.start.publisher) {
            for leg in status.legs {
                *counts.entry((leg.target, leg.state)).or_default() += 1;
            }
        }
        for leg in &self.legs {
            *counts
                .entry((leg.target.as_str().to_owned(), leg.state.as_str()))
                .or_default() += 1;
        }
        let config = gateway.config();
        for backend in config.backends.values() {
            for state in ["opening", "connecting", "connected"] {
                let count = counts
                    .get(&(backend.id.as_str().to_owned(), state))
                    .copied()
                    .unwrap_or(0);
                if count > 0 || backend.adapter.is_remote() {
                    gateway
                        .metrics
                        .relay_legs
                        .with_label_values(&[backend.id.as_str(), state])
                        .set(count);
                }
            }
        }
    }
}

/// Offers the SFU's leg to `backend` through its adapter, and gives the SFU its answer.
async fn open_leg(
    gateway: &Gateway,
    sfu: &Sfu,
    events: mpsc::UnboundedSender<(PeerId, LegEvent)>,
    backend: Arc<BackendDef>,
    stream: &StreamName,
    route: &str,
    captures: &[(String, String)],
) -> Result<Opened, OpenFailure> {
    let (peer, offer) = sfu
        .relay_offer(stream.as_str(), events)
        .await
        .map_err(|error| OpenFailure {
            reason: "closed",
            detail: error.to_string(),
        })?;
    // The target's own SDP policy shapes the leg as it would a client's session (an
    // H264-only vendor gets only H264). Not the route's: that one already shaped what the
    // publisher sends to the SFU.
    let (offer, checked) = match shape_for_target(&offer, &backend.sdp) {
        Ok(shaped) => shaped,
        Err(failure) => {
            let _ = sfu.end(peer).await;
            return Err(failure);
        }
    };
    let sid = super::hex(&gateway.random_bytes::<12>());
    let request_id = own_request_id(EndpointKind::Whip, &sid);
    let created = backend
        .adapter
        .create(
            &gateway.upstreams,
            backend.as_ref(),
            CreateRequest {
                kind: EndpointKind::Whip,
                stream,
                captures,
                offer: Bytes::from(offer),
                client_authorization: None,
                request_id: &request_id,
                sid: &sid,
                route,
                subject: None,
                tier: None,
                client_ip: None,
                now: gateway.clock.unix(),
            },
        )
        .await;
    let created = match created {
        Ok(created) => created,
        Err(AttemptError { error, retryable }) => {
            let _ = sfu.end(peer).await;
            if retryable {
                gateway.health.record_failure(
                    backend.id.as_str(),
                    gateway.clock.instant(),
                    error.retry_after(),
                    backend.circuit,
                );
            }
            return Err(OpenFailure {
                reason: if retryable { "vendor_error" } else { "refused" },
                detail: error.to_string(),
            });
        }
    };
    gateway.health.record_success(backend.id.as_str());
    let session = OwnSession::new(
        gateway,
        &backend,
        &created,
        EndpointKind::Whip,
        stream,
        route,
        &sid,
    );
    let refused = if created.counter_offer {
        Some(OpenFailure {
            reason: "refused",
            detail: "the target answered with an offer of its own".into(),
        })
    } else {
        let answer = String::from_utf8_lossy(&created.answer);
        let answer = match &checked {
            Some(offer) => offer
                .accept_answer(&answer, &backend.sdp)
                .map(|a| a.into_owned())
                .map_err(|error| OpenFailure {
                    reason: "refused",
                    detail: format!("the target's answer: {error}"),
                }),
            None => Ok(answer.into_owned()),
        };
        match answer {
            Err(failure) => Some(failure),
            Ok(answer) => match sfu.relay_answer(peer, answer).await {
                Ok(()) => None,
                Err(error @ SfuError::Codec(_)) => Some(OpenFailure {
                    reason: "codec",
                    detail: error.to_string(),
                }),
                Err(error) => Some(OpenFailure {
                    reason: "refused",
                    detail: error.to_string(),
                }),
            },
        }
    };
    match refused {
        None => Ok(Opened { peer, session }),
        Some(failure) => {
            let _ = sfu.end(peer).await;
            session.delete(gateway).await;
            Err(failure)
        }
    }
}

/// Opens the session's relay supervisor when its route relays and it landed on the SFU.
pub(super) fn start_if_relayed(
    gateway: &Gateway,
    backend: &BackendDef,
    route: &crate::routing::Route,
    stream: &StreamName,
    resource: &crate::backend::BackendUrl,
    captures: &[(String, String)],
) {
    if route.relay.is_none() || backend.adapter.is_remote() {
        return;
    }
    let Some(publisher) = crate::backend::builtin_peer(resource.url()) else {
        return;
    };
    let _ = gateway.relay_starts.send(RelayStart {
        stream: stream.clone(),
        route: route.id.clone(),
        publisher,
        captures: captures.to_vec(),
    });
}

/// The SFU's offer for a leg as the target's SDP `policy` wants it, and the checked offer
/// its answer is held against (none without a policy: the SFU checks its answers itself).
fn shape_for_target(
    offer: &str,
    policy: &crate::sdp::Policy,
) -> Result<(String, Option<crate::sdp::Offer>), OpenFailure> {
    if policy.is_empty() {
        return Ok((offer.to_owned(), None));
    }
    let refused = |error: crate::sdp::SdpError| OpenFailure {
        reason: if error.reason() == "no_acceptable_codec" {
            "codec"
        } else {
            "refused"
        },
        detail: format!("the target's SDP policy: {error}"),
    };
    let prepared = crate::sdp::prepare_offer(EndpointKind::Whip, offer).map_err(refused)?;
    let shaped = prepared.rewrite(policy).map_err(refused)?.into_owned();
    Ok((shaped.text(), Some(shaped)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the SFU offers a leg for a VP8 + Opus publisher that also negotiated H264.
    const LEG_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n\
        a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r\n\
        a=setup:passive\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n\
        a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r\n\
        a=setup:passive\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    fn policy(text: &str) -> crate::sdp::Policy {
        toml::from_str(text).expect("policy")
    }

    #[test]
    fn a_leg_is_shaped_by_the_targets_policy_or_skipped_for_its_codecs() {
        let (same, checked) = shape_for_target(LEG_OFFER, &policy("")).expect("no policy");
        assert_eq!(same, LEG_OFFER);
        assert!(checked.is_none(), "the SFU checks the answer itself");

        let (h264, checked) =
            shape_for_target(LEG_OFFER, &policy("video_codecs = [\"H264\"]")).expect("H264 kept");
        assert!(
            h264.contains("H264/90000") && !h264.contains("VP8/90000"),
            "{h264}"
        );
        assert!(checked.is_some());

        let Err(failure) = shape_for_target(LEG_OFFER, &policy("video_codecs = [\"AV1\"]")) else {
            panic!("an AV1-only target takes none of the publisher's codecs");
        };
        assert_eq!(failure.reason, "codec");
        assert!(failure.detail.contains("SDP policy"), "{}", failure.detail);

        let Err(garbage) = shape_for_target("not sdp", &policy("video_codecs = [\"VP8\"]")) else {
            panic!("not an offer");
        };
        assert_eq!(garbage.reason, "refused");
    }
}
