//! The SFU's state machine: every peer connection of the built-in backend, the streams they
//! publish and play, and the forwarding between them. No sockets and no clock reads: the
//! caller feeds datagrams and `now`, and receives datagrams to send (str0m's sans-IO style,
//! one level up), so tests can run publishers and viewers in memory.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::{CodecConfig, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use super::{LegEvent, LegStatus, PeerRole, SfuError, StreamStatus};

mod shards;

use shards::Mirror;
pub use shards::{home_shard, shard_of, ShardMessage, MAX_SHARDS};

/// How often every peer is checked for an end (silence, a missed deadline): often enough
/// for the seconds those limits are, rarely enough that a big audience costs nothing.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// A peer that has not completed ICE and DTLS by then is dropped.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// A connected peer from which nothing at all arrived for this long is gone (RFC 7675's
/// consent lifetime); `[builtin] idle_timeout` overrides it.
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(30);
/// At most one keyframe request per publisher track (and layer) this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// How often a viewer re-chooses its simulcast layer.
const LAYER_REVIEW_INTERVAL: Duration = Duration::from_secs(2);
/// How long a session that ended on its own (the peer closed, ICE failed, its publisher
/// left) still answers its DELETE with success: a client that closes its peer connection
/// and then sends DELETE, as browsers' pages do, should not get a 404.
const ENDED_MEMORY: Duration = Duration::from_secs(300);
/// A simulcast layer not seen for this long is taken as stopped.
const LAYER_STALE: Duration = Duration::from_secs(1);
/// Layer choices a viewer may make before its m-lines are known.
const MAX_LAYER_WISHES: usize = 8;
/// How long a closed peer's goodbye (BYE, close_notify) may take to send.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);
/// A relay leg from which nothing arrived for this long has failed (its target answers our
/// ICE checks every 3 s and sends RTCP reports more often); `[builtin] relay_timeout`
/// overrides it. A leg gets twice as long to connect.
pub const DEFAULT_RELAY_TIMEOUT: Duration = Duration::from_secs(5);
/// A pull that no viewer joined within this long ends (its viewer gave up or was refused),
/// so that nobody can keep an origin's session open without watching it.
const PULL_UNWATCHED: Duration = Duration::from_secs(20);

/// Opaque id of one peer connection; random so that a restarted process never reuses the
/// id a still-valid session token names.
pub type PeerId = u64;

/// Where the SFU is reachable: the socket's address as str0m sees it (every datagram is
/// reported as arriving there) and the addresses advertised as ICE candidates.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub local: SocketAddr,
    pub candidates: Vec<SocketAddr>,
}

/// The DTLS stacks the SFU chooses from, per peer, by the role the peer's offer gives it.
///
/// str0m-openssl 0.6's DTLS never resends a handshake flight (its timeout handling only
/// reschedules itself), which is fatal when the SFU is the DTLS client of a peer that misses
/// the first flight: FFmpeg's WHIP muxer (`a=setup:passive`) reads the SFU's ClientHello as
/// part of its ICE exchange and drops it. dimpl resends flights, but refuses the RSA client
/// certificates GStreamer's webrtcbin presents when the SFU is the DTLS server. So the SFU is
/// a server on OpenSSL's stack and a client on dimpl's. Both use one ECDSA P-256 certificate.
#[derive(Clone)]
pub struct Crypto {
    /// The SFU answers `a=setup:passive` (the usual case: offers are `actpass` or `active`).
    pub server: Arc<CryptoProvider>,
    /// The SFU answers `a=setup:active`: the peer's offer said `passive`.
    pub client: Arc<CryptoProvider>,
}

impl Crypto {
    /// OpenSSL's DTLS as the server, dimpl's as the client.
    pub fn standard() -> Self {
        Self {
            server: Arc::new(str0m_openssl::default_provider()),
            client: Arc::new(str0m_rust_crypto::default_provider()),
        }
    }

    fn for_offer(&self, offer: &str) -> &Arc<CryptoProvider> {
        if offer_is_dtls_server(offer) {
            &self.client
        } else {
            &self.server
        }
    }
}

/// Whether the offerer will be the DTLS server (`a=setup:passive`), making the SFU its client.
pub(super) fn offer_is_dtls_server(offer: &str) -> bool {
    offer
        .lines()
        .any(|line| line.trim_end().eq_ignore_ascii_case("a=setup:passive"))
}

pub struct Engine {
    addresses: Addresses,
    crypto: Crypto,
    cert: DtlsCert,
    peers: HashMap<PeerId, Peer>,
    streams: HashMap<String, Stream>,
    /// Which peer a remote address belongs to, learnt from str0m's `accepts`.
    by_source: HashMap<SocketAddr, PeerId>,
    /// Sessions that ended without a DELETE, and when.
    ended: HashMap<PeerId, Instant>,
    next_id: Box<dyn FnMut() -> PeerId + Send>,
    idle_limit: Duration,
    /// Peers that were told goodbye (RTCP BYE, DTLS close_notify) and are sending it: the
    /// client learns at once that its session ended, instead of after its consent checks
    /// fail (30 s in aiortc), so a drained publisher reconnects at once.
    closing: Vec<(Rtc, Instant)>,
    relay_timeout: Duration,
    /// Relay legs that connected, and peers that ended, since the runner last asked.
    leg_events: Vec<(PeerId, LegEvent)>,
    /// This engine's place among the SFU's engines (one per thread), and how many there are.
    shard: usize,
    shards: usize,
    /// Messages for the other engines, until the runner takes them.
    shard_messages: Vec<(usize, ShardMessage)>,
    /// Remote addresses whose peers live on another engine, as those engines claimed them.
    foreign: HashMap<SocketAddr, usize>,
    /// Peers' timers, earliest first. An entry whose time is not its peer's `scheduled` is
    /// stale and skipped: a turn of the engine touches only the peers that are due, not
    /// all of them (thousands, with a big audience).
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    /// When every peer is next checked for an end (silence, a missed connect deadline).
    next_sweep: Option<Instant>,
}

#[derive(Default)]
struct Stream {
    publisher: Option<PeerId>,
    viewers: HashSet<PeerId>,
    /// Relay legs: this SFU's own sessions on other backends, fed like viewers.
    legs: HashSet<PeerId>,
    /// Publisher's engine: the other engines whose viewers get its frames.
    subscribers: HashSet<usize>,
    /// Frames sent to subscribers so far, so that a subscriber sees one that was dropped.
    frames_shared: u64,
    /// Viewer's engine: the publisher on another engine, as its frames show it.
    mirror: Option<Mirror>,
}

impl Stream {
    /// Nothing left to keep it for.
    fn is_empty(&self) -> bool {
        self.publisher.is_none()
            && self.viewers.is_empty()
            && self.legs.is_empty()
            && self.subscribers.is_empty()
            && self.mirror.is_none()
    }

    /// Everything the publisher's media goes to.
    fn outputs(&self) -> impl Iterator<Item = &PeerId> {
        self.viewers.iter().chain(self.legs.iter())
    }
}

struct Peer {
    stream: String,
    role: PeerRole,
    rtc: Rtc,
    created: Instant,
    connected: bool,
    /// When anything last arrived from the peer: media, RTCP, DTLS, STUN requests or
    /// indications. This, not str0m's ICE-lite state, decides whether a peer is still there.
    last_heard: Instant,
    next_timeout: Instant,
    /// When its entry in the engine's timers is due (`None`: it has none).
    scheduled: Option<Instant>,
    /// m-lines in SDP order, as str0m reported them.
    media: Vec<(Mid, MediaKind)>,
    /// Publisher: per incoming track, the simulcast layers seen and their byte counts.
    layers: Layers,
    last_keyframe_request: HashMap<(Mid, Option<Rid>), Instant>,
    /// Viewer: per outgoing m-line, what it forwards.
    outputs: HashMap<Mid, Forwarding>,
    /// Viewer: layer choices made before its m-lines were known (str0m reports them once
    /// connected), by mid; applied then.
    layer_wishes: HashMap<String, Option<Rid>>,
    /// Relay leg or pull: its offer, until the other side's answer arrives.
    pending_offer: Option<SdpPendingOffer>,
    /// A publisher that is this SFU's own WHEP session on an origin (a pull): it ends when
    /// its last viewer leaves.
    pulled: bool,
    /// Publisher: the codec last seen per track (what a relay leg must offer first).
    sent_params: HashMap<Mid, PayloadParams>,
    bytes_out: u64,
    packets_in: u64,
    packets_out: u64,
    frames_in: u64,
    frames_out: u64,
}

impl Peer {
    fn new(
        stream: &str,
        role: PeerRole,
        rtc: Rtc,
        now: Instant,
        pending_offer: Option<SdpPendingOffer>,
    ) -> Self {
        Self {
            stream: stream.to_owned(),
            role,
            rtc,
            created: now,
            connected: false,
            last_heard: now,
            next_timeout: now,
            scheduled: None,
            media: Vec::new(),
            layers: HashMap::new(),
            last_keyframe_request: HashMap::new(),
            outputs: HashMap::new(),
            layer_wishes: HashMap::new(),
            pending_offer,
            pulled: false,
            sent_params: HashMap::new(),
            bytes_out: 0,
            packets_in: 0,
            packets_out: 0,
            frames_in: 0,
            frames_out: 0,
        }
    }

    /// Viewers and relay legs get the stream's media.
    fn receives_stream(&self) -> bool {
        matches!(self.role, PeerRole::Viewer | PeerRole::Relay)
    }
}

/// What a publisher sent on one simulcast layer: bytes in all, and when it was last seen
/// (a layer the publisher stopped sending is not chosen, or kept, for anyone).
#[derive(Debug, Clone, Copy)]
struct LayerSeen {
    bytes: u64,
    last: Instant,
}

/// Per publisher track, the simulcast layers seen on it.
type Layers = HashMap<Mid, HashMap<Option<Rid>, LayerSeen>>;

impl LayerSeen {
    /// Counts one frame of a publisher in its track's and layer's entry.
    fn record(layers: &mut Layers, data: &MediaData, now: Instant) {
        let seen = layers
            .entry(data.mid)
            .or_default()
            .entry(data.rid)
            .or_insert(LayerSeen {
                bytes: 0,
                last: now,
            });
        seen.bytes += data.data.len() as u64;
        seen.last = now;
    }
}

/// One viewer m-line's forwarding state.
#[derive(Default)]
struct Forwarding {
    /// The simulcast layer forwarded now (`None` also means "not simulcast").
    rid: Option<Rid>,
    /// A better layer to switch to at its next keyframe.
    pending_rid: Option<Option<Rid>>,
    /// Video waits for a keyframe before anything is forwarded, so a decoder never starts
    /// mid-GOP.
    awaiting_keyframe: bool,
    chosen: bool,
    last_review: Option<Instant>,
    /// The layer the player asked for (the WHEP layer extension); `None`: the highest.
    preferred: Option<Rid>,
}

impl Engine {
    pub fn new(
        addresses: Addresses,
        crypto: Crypto,
        cert: DtlsCert,
        next_id: Box<dyn FnMut() -> PeerId + Send>,
    ) -> Self {
        Self {
            addresses,
            crypto,
            cert,
            peers: HashMap::new(),
            streams: HashMap::new(),
            by_source: HashMap::new(),
            ended: HashMap::new(),
            next_id,
            idle_limit: DEFAULT_IDLE_LIMIT,
            closing: Vec::new(),
            relay_timeout: DEFAULT_RELAY_TIMEOUT,
            leg_events: Vec::new(),
            shard: 0,
            shards: 1,
            shard_messages: Vec::new(),
            foreign: HashMap::new(),
            timers: BinaryHeap::new(),
            next_sweep: None,
        }
    }

    /// Engine `shard` of `shards`, each on its own thread: a stream's publisher lives on
    /// its [`home_shard`], its viewers on any.
    pub fn with_shard(mut self, shard: usize, shards: usize) -> Self {
        self.shards = shards.clamp(1, MAX_SHARDS);
        self.shard = shard.min(self.shards - 1);
        self
    }

    /// How long a relay leg may stay silent (and half as long as it may take to connect).
    pub fn with_relay_timeout(mut self, timeout: Duration) -> Self {
        self.relay_timeout = timeout;
        self
    }

    /// How long a connected peer may stay silent before it is taken as gone.
    pub fn with_idle_limit(mut self, limit: Duration) -> Self {
        self.idle_limit = limit;
        self
    }

    fn new_rtc(&self, now: Instant, offer: &str) -> Rtc {
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_crypto_provider(self.crypto.for_offer(offer).clone())
            .set_dtls_cert(self.cert.clone())
            .build(now);
        for address in &self.addresses.candidates {
            if let Ok(candidate) = Candidate::host(*address, "udp") {
                rtc.add_local_candidate(candidate);
            }
        }
        rtc
    }

    /// A WHIP publisher's offer; the stream must have no live publisher.
    pub fn publish(
        &mut self,
        now: Instant,
        stream: &str,
        offer: &str,
    ) -> Result<(PeerId, String), SfuError> {
        self.vacate(now, stream)?;
        let (id, answer) = self.accept(now, stream, PeerRole::Publisher, offer)?;
        self.streams.entry(stream.to_owned()).or_default().publisher = Some(id);
        Ok((id, answer))
    }

    /// A WHEP viewer's offer; the stream must have a publisher.
    pub fn play(
        &mut self,
        now: Instant,
        stream: &str,
        offer: &str,
    ) -> Result<(PeerId, String), SfuError> {
        let live = self.is_live(stream);
        let home = home_shard(stream, self.shards);
        // On another engine than the publisher's, the runner asked that one first: the
        // viewer joins here and the frames come from there.
        if !live && home == self.shard {
            return Err(SfuError::NoPublisher);
        }
        let (id, answer) = self.accept(now, stream, PeerRole::Viewer, offer)?;
        let entry = self.streams.entry(stream.to_owned()).or_default();
        entry.viewers.insert(id);
        if !live && entry.mirror.is_none() {
            entry.mirror = Some(Mirror::new(home));
            self.shard_messages.push((
                home,
                ShardMessage::Subscribe {
                    stream: stream.to_owned(),
                    from: self.shard,
                },
            ));
        }
        Ok((id, answer))
    }

    fn accept(
        &mut self,
        now: Instant,
        stream: &str,
        role: PeerRole,
        offer: &str,
    ) -> Result<(PeerId, String), SfuError> {
        let mut rtc = self.new_rtc(now, offer);
        let offer = SdpOffer::from_sdp_string(offer)
            .map_err(|e| SfuError::Offer(format!("the offer cannot be parsed: {e}")))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Offer(format!("the offer cannot be accepted: {e}")))?;
        let id = self.new_id();
        self.add_peer(id, Peer::new(stream, role, rtc, now, None));
        // Drain the events negotiation produced (MediaAdded) before any packet arrives.
        self.drive(now, id, &mut |_, _| {});
        Ok((id, answer.to_sdp_string()))
    }

    /// Holds a new peer, its timer due at once.
    fn add_peer(&mut self, id: PeerId, mut peer: Peer) {
        peer.scheduled = Some(peer.next_timeout);
        self.timers.push(Reverse((peer.next_timeout, id)));
        self.peers.insert(id, peer);
    }

    /// A fresh id that names this engine (see [`shard_of`]).
    fn new_id(&mut self) -> PeerId {
        loop {
            let id = shards::with_shard((self.next_id)(), self.shard);
            if !self.peers.contains_key(&id) && !self.ended.contains_key(&id) {
                return id;
            }
        }
    }

    /// A relay leg of `stream`: this SFU's own WHIP offer, send-only, one m-line per
    /// publisher track, offering only the publisher's codecs (the one it sends first) so
    /// that media is forwarded as it is. The offer says `a=setup:passive`: the target is
    /// the DTLS client, and this side runs the DTLS stack that takes any client
    /// certificate. The leg is a full ICE agent, since the target may be ICE-lite.
    pub fn relay_offer(
        &mut self,
        now: Instant,
        stream: &str,
    ) -> Result<(PeerId, String), SfuError> {
        let publisher = self
            .streams
            .get(stream)
            .and_then(|s| s.publisher)
            .and_then(|id| self.peers.get(&id))
            .filter(|p| p.rtc.is_alive() && !p.media.is_empty())
            .ok_or(SfuError::NoPublisher)?;
        let codecs = CodecConfig::new_from_payload_params(Self::publisher_params(publisher));
        let kinds: Vec<MediaKind> = publisher.media.iter().map(|(_, kind)| *kind).collect();
        let (rtc, media, offer, pending) =
            self.own_offer(now, codecs, &kinds, Direction::SendOnly, Some(stream))?;
        let id = self.new_id();
        let mut leg = Peer::new(stream, PeerRole::Relay, rtc, now, Some(pending));
        // str0m reports no MediaAdded for an offerer's own m-lines.
        for (mid, kind) in &media {
            leg.outputs.insert(
                *mid,
                Forwarding {
                    awaiting_keyframe: *kind == MediaKind::Video,
                    ..Forwarding::default()
                },
            );
        }
        leg.media = media;
        self.add_peer(id, leg);
        self.streams
            .entry(stream.to_owned())
            .or_default()
            .legs
            .insert(id);
        Ok((id, offer))
    }

    /// A pull of `stream` from an origin: this SFU's own receive-only WHEP offer (audio and
    /// video), whose peer becomes the stream's publisher once the origin answers. Offered as
    /// a full ICE agent and `a=setup:passive`, like a relay leg, since origins may be ICE-lite.
    pub fn pull_offer(&mut self, now: Instant, stream: &str) -> Result<(PeerId, String), SfuError> {
        self.vacate(now, stream)?;
        let (rtc, media, offer, pending) = self.own_offer(
            now,
            CodecConfig::new_with_defaults(),
            &[MediaKind::Audio, MediaKind::Video],
            Direction::RecvOnly,
            None,
        )?;
        let id = self.new_id();
        let mut peer = Peer::new(stream, PeerRole::Publisher, rtc, now, Some(pending));
        peer.media = media;
        peer.pulled = true;
        self.add_peer(id, peer);
        self.streams.entry(stream.to_owned()).or_default().publisher = Some(id);
        Ok((id, offer))
    }

    /// An offer of this SFU's own (a relay leg's, a pull's): one m-line per kind, in order,
    /// from a full ICE agent (the other side may be ICE-lite), saying `a=setup:passive` so
    /// that this side runs the DTLS server stack, which takes any client certificate. The
    /// m-lines are returned at once: str0m reports no MediaAdded for an offerer's own.
    #[allow(clippy::type_complexity)]
    fn own_offer(
        &self,
        now: Instant,
        codecs: CodecConfig,
        kinds: &[MediaKind],
        direction: Direction,
        stream_id: Option<&str>,
    ) -> Result<(Rtc, Vec<(Mid, MediaKind)>, String, SdpPendingOffer), SfuError> {
        let mut config = RtcConfig::new()
            .set_ice_lite(false)
            .set_crypto_provider(self.crypto.server.clone())
            .set_dtls_cert(self.cert.clone());
        *config.codec_config() = codecs;
        let mut rtc = config.build(now);
        if let Ok(candidate) = Candidate::host(self.addresses.local, "udp") {
            rtc.add_local_candidate(candidate);
        }
        let mut change = rtc.sdp_api();
        let media: Vec<(Mid, MediaKind)> = kinds
            .iter()
            .map(|kind| {
                let mid =
                    change.add_media(*kind, direction, stream_id.map(str::to_owned), None, None);
                (mid, *kind)
            })
            .collect();
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| SfuError::Offer("nothing to offer".into()))?;
        let offer = offer
            .to_sdp_string()
            .replace("a=setup:actpass", "a=setup:passive");
        Ok((rtc, media, offer, pending))
    }

    /// A pull whose origin made the offer (a WHEP counter-offer, as Janus's subscribers do):
    /// the SFU answers it, and the peer becomes the stream's publisher.
    pub fn pull_accept(
        &mut self,
        now: Instant,
        stream: &str,
        offer: &str,
    ) -> Result<(PeerId, String), SfuError> {
        self.vacate(now, stream)?;
        let (id, answer) = self.accept(now, stream, PeerRole::Publisher, offer)?;
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.pulled = true;
        }
        self.streams.entry(stream.to_owned()).or_default().publisher = Some(id);
        Ok((id, answer))
    }

    /// Clears a stream's dead publisher; a live one is a conflict.
    fn vacate(&mut self, now: Instant, stream: &str) -> Result<(), SfuError> {
        if let Some(existing) = self.streams.get(stream).and_then(|s| s.publisher) {
            if self.peers.get(&existing).is_some_and(|p| p.rtc.is_alive()) {
                return Err(SfuError::AlreadyPublished);
            }
            self.remove(existing, now, true);
        }
        Ok(())
    }

    /// The codecs a publisher negotiated, the ones it sends first, without repeats.
    fn publisher_params(publisher: &Peer) -> Vec<PayloadParams> {
        let configured = publisher.rtc.codec_config().params();
        let mut params: Vec<PayloadParams> = Vec::new();
        let mut add = |p: &PayloadParams| {
            if !params.iter().any(|have| have.pt() == p.pt()) {
                params.push(*p);
            }
        };
        for (mid, _) in &publisher.media {
            if let Some(sent) = publisher.sent_params.get(mid) {
                add(sent);
            }
        }
        for (mid, _) in &publisher.media {
            let Some(media) = publisher.rtc.media(*mid) else {
                continue;
            };
            for pt in media.remote_pts() {
                if let Some(p) = configured.iter().find(|p| p.pt() == *pt) {
                    add(p);
                }
            }
        }
        params
    }

    /// The other side's answer to a relay leg's or a pull's offer. A relay target that
    /// takes none of the codecs the publisher sends on a track is refused, and the leg ends.
    pub fn relay_answer(
        &mut self,
        now: Instant,
        id: PeerId,
        answer: &str,
        send: &mut dyn FnMut(SocketAddr, Vec<u8>),
    ) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::NoSession)?;
        let pending = peer
            .pending_offer
            .take()
            .ok_or_else(|| SfuError::Offer("the session has its answer already".into()))?;
        let is_leg = peer.role == PeerRole::Relay;
        let accepted = SdpAnswer::from_sdp_string(answer)
            .map_err(|e| SfuError::Offer(format!("the answer cannot be parsed: {e}")))
            .and_then(|answer| {
                peer.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| SfuError::Offer(format!("the answer is refused: {e}")))
            });
        if let Err(error) = accepted {
            self.remove(id, now, false);
            return Err(error);
        }
        self.drive(now, id, send);
        let codecs = if is_leg {
            self.check_leg_codecs(id)
        } else {
            Ok(())
        };
        if let Err(error) = codecs {
            self.remove(id, now, false);
            return Err(error);
        }
        Ok(())
    }

    /// Every publisher track must pair with a leg m-line that takes the codec it sends.
    fn check_leg_codecs(&self, id: PeerId) -> Result<(), SfuError> {
        let leg = self.peers.get(&id).ok_or(SfuError::NoSession)?;
        let publisher = self
            .streams
            .get(&leg.stream)
            .and_then(|s| s.publisher)
            .and_then(|p| self.peers.get(&p))
            .ok_or(SfuError::NoPublisher)?;
        let configured = publisher.rtc.codec_config().params();
        for (mid, kind) in &publisher.media {
            let wanted: Vec<PayloadParams> = match publisher.sent_params.get(mid) {
                Some(sent) => vec![*sent],
                None => publisher
                    .rtc
                    .media(*mid)
                    .map(|m| {
                        m.remote_pts()
                            .iter()
                            .filter_map(|pt| configured.iter().find(|p| p.pt() == *pt).cloned())
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            let takes = Self::paired_mid(&publisher.media, &leg.media, *mid)
                .and_then(|leg_mid| leg.rtc.media(leg_mid))
                .is_some_and(|media| {
                    wanted.iter().any(|p| {
                        leg.rtc
                            .codec_config()
                            .match_params(*p)
                            .is_some_and(|ours| media.remote_pts().contains(&ours.pt()))
                    })
                });
            if !takes {
                let names: Vec<String> =
                    wanted.iter().map(|p| p.spec().codec.to_string()).collect();
                return Err(SfuError::Codec(format!(
                    "the target takes none of the publisher's {kind} codecs ({})",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Relay legs that connected, and peers that ended, since the last call.
    pub fn take_leg_events(&mut self) -> Vec<(PeerId, LegEvent)> {
        std::mem::take(&mut self.leg_events)
    }

    /// A trickled sdpfrag's candidates. ICE-lite needs none of them (the client's checks
    /// find us), but they are taken so a client that sends only relay candidates works.
    pub fn trickle(&mut self, id: PeerId, fragment: &str) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::NoSession)?;
        for line in fragment.lines() {
            if let Some(value) = line.trim_end().strip_prefix("a=candidate:") {
                if let Ok(candidate) = Candidate::from_sdp_string(&format!("candidate:{value}")) {
                    peer.rtc.add_remote_candidate(candidate);
                }
            }
        }
        Ok(())
    }

    /// Ends a session; a publisher takes its viewers and relay legs with it.
    pub fn end(&mut self, now: Instant, id: PeerId) -> Result<(), SfuError> {
        if self.ended.remove(&id).is_some() {
            return Ok(());
        }
        if !self.peers.contains_key(&id) {
            return Err(SfuError::NoSession);
        }
        self.remove_because(id, now, false, "ended by whipgate");
        Ok(())
    }

    fn remove(&mut self, id: PeerId, now: Instant, on_its_own: bool) {
        self.remove_because(id, now, on_its_own, "ended");
    }

    /// Drops a peer (and a publisher's viewers and legs); those that ended on their own
    /// rather than by their DELETE are remembered for it. A relay leg's end is reported
    /// with `why`.
    fn remove_because(&mut self, id: PeerId, now: Instant, on_its_own: bool, why: &str) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        if on_its_own {
            self.ended.insert(id, now);
        }
        // Every end is reported: relay supervisors watch their publisher as well as legs.
        self.leg_events.push((id, LegEvent::Ended(why.to_owned())));
        let mut addresses = Vec::new();
        self.by_source.retain(|address, owner| {
            let theirs = *owner == id;
            if theirs {
                addresses.push(*address);
            }
            !theirs
        });
        if !addresses.is_empty() {
            self.tell_others(|owner| ShardMessage::Release {
                addresses: addresses.clone(),
                owner,
            });
        }
        let mut released = Vec::new();
        if let Some(stream) = self.streams.get_mut(&peer.stream) {
            match peer.role {
                PeerRole::Publisher if stream.publisher == Some(id) => {
                    stream.publisher = None;
                    released.extend(stream.viewers.drain());
                    released.extend(stream.legs.drain());
                    for shard in stream.subscribers.drain() {
                        self.shard_messages.push((
                            shard,
                            ShardMessage::SourceEnded {
                                stream: peer.stream.clone(),
                                publisher: Some(id),
                            },
                        ));
                    }
                }
                PeerRole::Publisher => {}
                PeerRole::Viewer => {
                    stream.viewers.remove(&id);
                    if stream.viewers.is_empty() {
                        if let Some(mirror) = stream.mirror.take() {
                            self.shard_messages.push((
                                mirror.origin,
                                ShardMessage::Unsubscribe {
                                    stream: peer.stream.clone(),
                                    from: self.shard,
                                },
                            ));
                        }
                    }
                    let publisher = stream.publisher;
                    if stream.viewers.is_empty()
                        && stream.legs.is_empty()
                        && stream.subscribers.is_empty()
                        && publisher
                            .and_then(|p| self.peers.get(&p))
                            .is_some_and(|p| p.pulled)
                    {
                        // The pull served only viewers: with the last one gone, so is it.
                        released.extend(publisher);
                    }
                }
                PeerRole::Relay => {
                    stream.legs.remove(&id);
                }
            }
            if stream.is_empty() {
                self.streams.remove(&peer.stream);
            }
        }
        if peer.connected && peer.rtc.is_alive() && peer.rtc.close().is_ok() {
            self.closing.push((peer.rtc, now + CLOSE_DRAIN));
        } else {
            peer.rtc.disconnect();
        }
        for other in released {
            let why = if peer.role == PeerRole::Viewer {
                "its last viewer left"
            } else {
                "the publisher left"
            };
            self.remove_because(other, now, true, why);
        }
    }

    /// Sends what closing peers still have to say, and forgets those done.
    fn drain_closing(&mut self, now: Instant, send: &mut dyn FnMut(SocketAddr, Vec<u8>)) {
        self.closing.retain_mut(|(rtc, until)| {
            if rtc.handle_input(Input::Timeout(now)).is_err() {
                return false;
            }
            while rtc.is_alive() {
                match rtc.poll_output() {
                    Ok(Output::Transmit(transmit)) => {
                        send(transmit.destination, transmit.contents.into())
                    }
                    Ok(Output::Timeout(_)) => break,
                    Ok(Output::Event(_)) => {}
                    Err(_) => return false,
                }
            }
            rtc.is_alive() && now < *until
        });
    }

    /// One datagram from the network.
    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
        send: &mut dyn FnMut(SocketAddr, Vec<u8>),
    ) {
        self.receive_from(now, source, datagram, false, send);
    }

    /// A datagram that arrived on this engine's socket, or (`forwarded`) on another's.
    fn receive_from(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
        forwarded: bool,
        send: &mut dyn FnMut(SocketAddr, Vec<u8>),
    ) {
        let Ok(contents) = datagram.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.addresses.local,
                contents,
            },
        );
        let owner = match self.by_source.get(&source) {
            Some(id) if self.peers.get(id).is_some_and(|p| p.rtc.accepts(&input)) => Some(*id),
            _ => {
                if let Some(shard) = self.foreign.get(&source).filter(|_| !forwarded) {
                    // The kernel spreads remote addresses over the engines' sockets by
                    // hash, not by who owns them: this one goes on, with no scan here.
                    self.shard_messages.push((
                        *shard,
                        ShardMessage::Datagram {
                            source,
                            datagram: datagram.to_vec(),
                        },
                    ));
                    return;
                }
                let found = self
                    .peers
                    .iter()
                    .find(|(_, peer)| peer.rtc.accepts(&input))
                    .map(|(id, _)| *id);
                if let Some(id) = found {
                    if self.by_source.insert(source, id).is_none() {
                        self.foreign.remove(&source);
                        self.tell_others(|owner| ShardMessage::Claim {
                            addresses: vec![source],
                            owner,
                        });
                    }
                }
                found
            }
        };
        let Some(id) = owner else {
            if !forwarded && self.shards > 1 && shards::may_open_a_path(datagram) {
                // A first ICE check, or a relay target's answer to one, from an address no
                // engine has claimed yet: its peer may live on any engine.
                let copy = datagram.to_vec();
                self.tell_others(|_| ShardMessage::Datagram {
                    source,
                    datagram: copy.clone(),
                });
                return;
            }
            // RFC 8445 keepalives (libnice's) are unauthenticated binding indications,
            // which str0m does not take; from a known peer's address they still show it
            // is there.
            if is_binding_indication(datagram) {
                if let Some(peer) = self
                    .by_source
                    .get(&source)
                    .and_then(|id| self.peers.get_mut(id))
                {
                    peer.last_heard = now;
                }
            }
            return;
        };
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.last_heard = now;
            if let Err(error) = peer.rtc.handle_input(input) {
                tracing::debug!(peer = id, %error, "built-in SFU peer refused a datagram");
                peer.rtc.disconnect();
            }
        }
        self.drive(now, id, send);
    }

    /// The earliest moment [`Engine::tick`] has work.
    pub fn next_timeout(&self, now: Instant) -> Instant {
        let mut next = now + Duration::from_secs(1);
        if let Some(Reverse((at, _))) = self.timers.peek() {
            next = next.min(*at);
        }
        if let Some(sweep) = self.next_sweep {
            next = next.min(sweep);
        }
        if !self.closing.is_empty() {
            next = next.min(now + Duration::from_millis(20));
        }
        next
    }

    /// Advances every peer whose timer is due, and (every [`SWEEP_INTERVAL`]) drops dead
    /// or never-connected ones.
    pub fn tick(&mut self, now: Instant, send: &mut dyn FnMut(SocketAddr, Vec<u8>)) {
        self.drain_closing(now, send);
        // Those due now, taken first: a peer whose timer says "now" again waits for the next
        // turn rather than keeping this one going.
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            due.push((at, id));
        }
        for (at, id) in due {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.scheduled != Some(at) {
                continue;
            }
            if peer.next_timeout > now && peer.rtc.is_alive() {
                // Its timer moved later since this entry was made: wait for it.
                peer.scheduled = Some(peer.next_timeout);
                self.timers.push(Reverse((peer.next_timeout, id)));
                continue;
            }
            peer.scheduled = None;
            if peer.rtc.handle_input(Input::Timeout(now)).is_err() {
                peer.rtc.disconnect();
            }
            self.drive(now, id, send);
        }
        if self.next_sweep.is_some_and(|at| at > now) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_INTERVAL);
        let dead: Vec<(PeerId, &'static str)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| self.why_gone(p, now).map(|why| (*id, why)))
            .collect();
        for (id, why) in dead {
            tracing::debug!(peer = id, why, "built-in SFU peer gone");
            self.remove_because(id, now, true, why);
        }
        self.drain_closing(now, send);
        self.ended
            .retain(|_, at| now.saturating_duration_since(*at) < ENDED_MEMORY);
    }

    /// Why a peer is gone now, if it is: relay legs are held to `relay_timeout`, so that a
    /// dead target is replaced within seconds.
    fn why_gone(&self, peer: &Peer, now: Instant) -> Option<&'static str> {
        let (connect_limit, idle_limit) = if peer.role == PeerRole::Relay || peer.pulled {
            (self.relay_timeout * 2, self.relay_timeout)
        } else {
            (CONNECT_DEADLINE, self.idle_limit)
        };
        let unwatched = peer.pulled
            && now.saturating_duration_since(peer.created) > PULL_UNWATCHED
            && self.streams.get(&peer.stream).is_none_or(|s| {
                s.viewers.is_empty() && s.legs.is_empty() && s.subscribers.is_empty()
            });
        if !peer.rtc.is_alive() {
            Some("the connection closed")
        } else if unwatched {
            // A pull whose viewer never came (it gave up waiting, or its offer was refused).
            Some("no viewer joined the pull")
        } else if !peer.connected && now.saturating_duration_since(peer.created) > connect_limit {
            Some("ICE and DTLS did not complete")
        } else if peer.connected && now.saturating_duration_since(peer.last_heard) > idle_limit {
            Some("nothing arrived from the peer")
        } else {
            None
        }
    }

    /// Polls one peer until it has nothing more to say, then every peer its media or
    /// feedback touched, until all are quiet.
    fn drive(&mut self, now: Instant, first: PeerId, send: &mut dyn FnMut(SocketAddr, Vec<u8>)) {
        let mut queue = VecDeque::from([first]);
        let mut queued = HashSet::from([first]);
        while let Some(id) = queue.pop_front() {
            queued.remove(&id);
            let mut events = Vec::new();
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            loop {
                if !peer.rtc.is_alive() {
                    // The next sweep removes it.
                    peer.next_timeout = now;
                    break;
                }
                match peer.rtc.poll_output() {
                    Ok(Output::Transmit(transmit)) => {
                        peer.packets_out += 1;
                        // Owned: the datagram goes to the socket's batch as it is, no copy.
                        send(transmit.destination, transmit.contents.into());
                    }
                    Ok(Output::Timeout(at)) => {
                        peer.next_timeout = at;
                        if peer.scheduled.is_none_or(|scheduled| at < scheduled) {
                            peer.scheduled = Some(at);
                            self.timers.push(Reverse((at, id)));
                        }
                        break;
                    }
                    Ok(Output::Event(event)) => events.push(event),
                    Err(error) => {
                        tracing::debug!(peer = id, %error, "built-in SFU peer failed");
                        peer.rtc.disconnect();
                    }
                }
            }
            for event in events {
                for touched in self.handle_event(now, id, event) {
                    if queued.insert(touched) {
                        queue.push_back(touched);
                    }
                }
            }
        }
    }

    /// Reacts to one event of peer `id`; returns the peers that now have output.
    fn handle_event(&mut self, now: Instant, id: PeerId, event: Event) -> Vec<PeerId> {
        let Some(peer) = self.peers.get_mut(&id) else {
            return Vec::new();
        };
        match event {
            Event::Connected => {
                peer.connected = true;
                if peer.role != PeerRole::Viewer {
                    // Relay supervisors wait for their publisher's tracks, then their legs.
                    self.leg_events.push((id, LegEvent::Connected));
                }
                if peer.receives_stream() {
                    return self.request_keyframes_for(now, id);
                }
                Vec::new()
            }
            Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected)
                if peer.role == PeerRole::Relay =>
            {
                // The leg is the full ICE agent: its checks went unanswered.
                tracing::debug!(peer = id, "relay leg's ICE disconnected");
                peer.rtc.disconnect();
                Vec::new()
            }
            Event::IceConnectionStateChange(state) => {
                // An ICE-lite agent calls a pair disconnected 15 s after the last binding
                // request, but full agents may keep a pair alive with binding indications
                // and media alone (RFC 8445 §11, libnice does): the peer ends when nothing
                // has arrived for `idle_limit` (see `tick`), not on this state.
                tracing::debug!(peer = id, ?state, "built-in SFU peer ICE state");
                Vec::new()
            }
            Event::MediaAdded(added) => {
                if !peer.media.contains(&(added.mid, added.kind)) {
                    peer.media.push((added.mid, added.kind));
                    if peer.role == PeerRole::Publisher {
                        let stream = peer.stream.clone();
                        self.describe_source(&stream, id);
                        return Vec::new();
                    }
                }
                if peer.receives_stream() {
                    let preferred = if added.kind == MediaKind::Video {
                        peer.layer_wishes
                            .get(&added.mid.to_string())
                            .copied()
                            .flatten()
                    } else {
                        None
                    };
                    peer.outputs.insert(
                        added.mid,
                        Forwarding {
                            awaiting_keyframe: added.kind == MediaKind::Video,
                            preferred,
                            ..Forwarding::default()
                        },
                    );
                }
                Vec::new()
            }
            Event::MediaData(data) if peer.role == PeerRole::Publisher => {
                peer.frames_in += 1;
                let (first, last) = (**data.seq_range.start(), **data.seq_range.end());
                peer.packets_in += last.saturating_sub(first) + 1;
                LayerSeen::record(&mut peer.layers, &data, now);
                if peer.sent_params.get(&data.mid) != Some(&data.params) {
                    peer.sent_params.insert(data.mid, data.params);
                }
                let stream = peer.stream.clone();
                let mut touched = self.forward(now, &stream, &data);
                if !data.contiguous {
                    touched.extend(self.ask_keyframe(
                        now,
                        &stream,
                        data.mid,
                        data.rid,
                        KeyframeRequestKind::Pli,
                    ));
                }
                self.share_frame(&stream, id, data);
                touched
            }
            Event::KeyframeRequest(request) if peer.receives_stream() => {
                self.relay_keyframe_request(now, id, request.mid, request.kind)
            }
            _ => Vec::new(),
        }
    }

    /// The m-line of `to` that pairs with `from`'s m-line `mid`: the n-th m-line of a kind
    /// on one side goes with the n-th of that kind on the other (publisher tracks to viewer
    /// m-lines, and viewers' feedback back).
    fn paired_mid(from: &[(Mid, MediaKind)], to: &[(Mid, MediaKind)], mid: Mid) -> Option<Mid> {
        let kind = from.iter().find(|(m, _)| *m == mid)?.1;
        let index = from
            .iter()
            .filter(|(_, k)| *k == kind)
            .position(|(m, _)| *m == mid)?;
        to.iter()
            .filter(|(_, k)| *k == kind)
            .nth(index)
            .map(|(m, _)| *m)
    }

    /// The layer a viewer should get: of those sent lately, the one with the most bytes so
    /// far (the highest); of all, when none was sent lately.
    fn best_layer(layers: Option<&HashMap<Option<Rid>, LayerSeen>>, now: Instant) -> Option<Rid> {
        let layers = layers?;
        layers
            .iter()
            .filter(|(_, seen)| Self::fresh(seen, now))
            .max_by_key(|(_, seen)| seen.bytes)
            .or_else(|| layers.iter().max_by_key(|(_, seen)| seen.bytes))
            .and_then(|(rid, _)| *rid)
    }

    fn fresh(seen: &LayerSeen, now: Instant) -> bool {
        now.saturating_duration_since(seen.last) < LAYER_STALE
    }

    /// What a stream's viewers see of its publisher: its m-lines and the layers it sends,
    /// from the publisher itself or, on another engine, from its frames.
    fn source(&self, stream: &str) -> Option<(&[(Mid, MediaKind)], &Layers)> {
        let stream = self.streams.get(stream)?;
        match stream.publisher.and_then(|id| self.peers.get(&id)) {
            Some(publisher) => Some((&publisher.media, &publisher.layers)),
            None => stream.mirror.as_ref().map(|m| (&m.media[..], &m.layers)),
        }
    }

    /// Writes one publisher frame to the stream's viewers and relay legs on this engine;
    /// returns those written to.
    fn forward(&mut self, now: Instant, stream_name: &str, data: &MediaData) -> Vec<PeerId> {
        let Some((source_media, layers)) = self.source(stream_name) else {
            return Vec::new();
        };
        let Some(stream) = self.streams.get(stream_name) else {
            return Vec::new();
        };
        let best = Self::best_layer(layers.get(&data.mid), now);
        let sent_layers: Vec<Option<Rid>> = layers
            .get(&data.mid)
            .map(|layers| {
                layers
                    .iter()
                    .filter(|(_, seen)| Self::fresh(seen, now))
                    .map(|(rid, _)| *rid)
                    .collect()
            })
            .unwrap_or_default();
        let mut plans = Vec::new();
        for viewer_id in stream.outputs() {
            if let Some(viewer) = self.peers.get(viewer_id) {
                if viewer.connected {
                    if let Some(mid) = Self::paired_mid(source_media, &viewer.media, data.mid) {
                        plans.push((*viewer_id, mid));
                    }
                }
            }
        }
        let mut touched = Vec::new();
        let mut wants_keyframe = Vec::new();
        for (viewer_id, mid) in plans {
            let Some(viewer) = self.peers.get_mut(&viewer_id) else {
                continue;
            };
            let Some(output) = viewer.outputs.get_mut(&mid) else {
                continue;
            };
            // The player's choice while the publisher sends that layer, else the highest.
            let target = output
                .preferred
                .filter(|rid| sent_layers.contains(&Some(*rid)))
                .or(best);
            if !output.chosen {
                output.rid = target;
                output.chosen = true;
                output.last_review = Some(now);
            } else if output
                .last_review
                .is_none_or(|at| now - at >= LAYER_REVIEW_INTERVAL)
            {
                output.last_review = Some(now);
                if target == output.rid {
                    output.pending_rid = None;
                } else {
                    // Asked again at every review: a lost request must not leave the switch
                    // waiting for a keyframe that never comes (request_keyframe rate-limits).
                    output.pending_rid = Some(target);
                    wants_keyframe.push(target);
                }
            }
            let keyframe = data.is_keyframe();
            if output.pending_rid == Some(data.rid) && keyframe {
                output.rid = data.rid;
                output.pending_rid = None;
            }
            if data.rid != output.rid {
                continue;
            }
            if output.awaiting_keyframe {
                if !keyframe {
                    wants_keyframe.push(data.rid);
                    continue;
                }
                output.awaiting_keyframe = false;
            }
            let Some(writer) = viewer.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            if writer
                .write(pt, data.network_time, data.time, data.data.clone())
                .is_ok()
            {
                viewer.frames_out += 1;
                viewer.bytes_out += data.data.len() as u64;
                touched.push(viewer_id);
            }
        }
        wants_keyframe.dedup();
        for rid in wants_keyframe {
            touched.extend(self.ask_keyframe(
                now,
                stream_name,
                data.mid,
                rid,
                KeyframeRequestKind::Pli,
            ));
        }
        touched
    }

    /// Asks the stream's publisher for a keyframe on its track `mid` (layer `rid`): at
    /// once when it lives here (its id is returned, it has output), else through its engine.
    fn ask_keyframe(
        &mut self,
        now: Instant,
        stream_name: &str,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) -> Option<PeerId> {
        if let Some(publisher_id) = self.streams.get(stream_name)?.publisher {
            return self
                .request_keyframe(now, publisher_id, mid, rid, kind)
                .then_some(publisher_id);
        }
        let mirror = self.streams.get_mut(stream_name)?.mirror.as_mut()?;
        if mirror.may_ask(now, mid, rid) {
            let origin = mirror.origin;
            self.shard_messages.push((
                origin,
                ShardMessage::Keyframe {
                    stream: stream_name.to_owned(),
                    mid,
                    rid,
                    kind,
                },
            ));
        }
        None
    }

    fn request_keyframe(
        &mut self,
        now: Instant,
        publisher_id: PeerId,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) -> bool {
        let Some(publisher) = self.peers.get_mut(&publisher_id) else {
            return false;
        };
        if publisher
            .media
            .iter()
            .any(|(m, k)| *m == mid && *k != MediaKind::Video)
        {
            return false;
        }
        let last = publisher
            .last_keyframe_request
            .entry((mid, rid))
            .or_insert(now - KEYFRAME_REQUEST_INTERVAL * 2);
        if now.saturating_duration_since(*last) < KEYFRAME_REQUEST_INTERVAL {
            return false;
        }
        *last = now;
        if publisher.pulled && kind == KeyframeRequestKind::Pli {
            // Janus before 1.3 files a feedback packet under the m-line of its sender SSRC
            // (or of an RR's), never of a PLI's media SSRC. A receive-only peer's sender SSRC
            // is in no SDP, so its PLI lands on the audio m-line and is dropped: a pull from
            // Janus waited for the publisher's next keyframe of its own (10 s and more).
            // Signed with the video stream's own SSRC, Janus finds the video m-line.
            let mut direct = publisher.rtc.direct_api();
            if let Some(ssrc) = direct.stream_rx_by_mid(mid, rid).map(|s| s.ssrc()) {
                direct.send_pli_feedback(ssrc, ssrc);
                return true;
            }
        }
        let Some(mut writer) = publisher.rtc.writer(mid) else {
            return false;
        };
        writer.request_keyframe(rid, kind).is_ok()
    }

    fn request_keyframes_for(&mut self, now: Instant, viewer_id: PeerId) -> Vec<PeerId> {
        let Some(stream) = self.peers.get(&viewer_id).map(|v| v.stream.clone()) else {
            return Vec::new();
        };
        let Some((source_media, layers)) = self.source(&stream) else {
            return Vec::new();
        };
        let wanted: Vec<(Mid, Option<Rid>)> = source_media
            .iter()
            .filter(|(_, kind)| *kind == MediaKind::Video)
            .map(|(mid, _)| (*mid, Self::best_layer(layers.get(mid), now)))
            .collect();
        let mut touched = Vec::new();
        for (mid, rid) in wanted {
            touched.extend(self.ask_keyframe(now, &stream, mid, rid, KeyframeRequestKind::Pli));
        }
        touched.dedup();
        touched
    }

    fn relay_keyframe_request(
        &mut self,
        now: Instant,
        viewer_id: PeerId,
        mid: Mid,
        kind: KeyframeRequestKind,
    ) -> Vec<PeerId> {
        let Some(viewer) = self.peers.get(&viewer_id) else {
            return Vec::new();
        };
        let Some((source_media, _)) = self.source(&viewer.stream) else {
            return Vec::new();
        };
        let Some(publisher_mid) = Self::paired_mid(&viewer.media, source_media, mid) else {
            return Vec::new();
        };
        let rid = viewer.outputs.get(&mid).and_then(|o| o.rid);
        let stream = viewer.stream.clone();
        self.ask_keyframe(now, &stream, publisher_mid, rid, kind)
            .into_iter()
            .collect()
    }

    /// A viewer's choice of simulcast layer on its m-line `media_id` (the WHEP layer
    /// extension): `Some(rid)` to get that layer while it is sent, `None` for the highest.
    /// The switch happens at the layer's next keyframe, which is asked for now.
    pub fn select_layer(
        &mut self,
        id: PeerId,
        media_id: &str,
        rid: Option<&str>,
    ) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&id).ok_or(SfuError::NoSession)?;
        if peer.role != PeerRole::Viewer {
            return Err(SfuError::Layer("only a viewer chooses a layer".into()));
        }
        if peer.media.is_empty() {
            // Its m-lines are not known yet (str0m may report them only once connected):
            // remembered for then, a few at most.
            if peer.layer_wishes.len() >= MAX_LAYER_WISHES
                && !peer.layer_wishes.contains_key(media_id)
            {
                return Err(SfuError::Layer("too many layer choices".into()));
            }
            peer.layer_wishes
                .insert(media_id.to_owned(), rid.map(Rid::from));
            return Ok(());
        }
        let is_video = |mid: &Mid| {
            peer.media
                .iter()
                .any(|(m, kind)| m == mid && *kind == MediaKind::Video)
        };
        let mid = peer
            .outputs
            .keys()
            .find(|mid| mid.to_string() == media_id && is_video(mid))
            .copied();
        let output = mid
            .and_then(|mid| peer.outputs.get_mut(&mid))
            .ok_or_else(|| SfuError::Layer(format!("no video m-line with mid {media_id:?}")))?;
        output.preferred = rid.map(Rid::from);
        // Reviewed at the next packet, not after the usual interval.
        output.last_review = None;
        // Kept too, in case the m-line is reported again (renegotiation, reconnection).
        peer.layer_wishes
            .insert(media_id.to_owned(), rid.map(Rid::from));
        Ok(())
    }

    /// The simulcast layers a viewer can choose from, per its video m-line (mid, rids).
    pub fn viewer_layers(&self, now: Instant, id: PeerId) -> Vec<(String, Vec<String>)> {
        let Some(viewer) = self.peers.get(&id) else {
            return Vec::new();
        };
        let Some((source_media, layers)) = self.source(&viewer.stream) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (mid, kind) in source_media {
            if *kind != MediaKind::Video {
                continue;
            }
            let Some(viewer_mid) = Self::paired_mid(source_media, &viewer.media, *mid) else {
                continue;
            };
            let mut rids: Vec<String> = layers
                .get(mid)
                .into_iter()
                .flatten()
                .filter(|(_, seen)| Self::fresh(seen, now))
                .filter_map(|(rid, _)| rid.map(|r| r.to_string()))
                .collect();
            rids.sort();
            out.push((viewer_mid.to_string(), rids));
        }
        out
    }

    /// Whether peer `id` is held and has connected (its tracks are known).
    pub fn is_connected(&self, id: PeerId) -> Option<bool> {
        self.peers.get(&id).map(|p| p.connected)
    }

    /// Whether `stream` has a live publisher on this engine.
    pub fn is_live(&self, stream: &str) -> bool {
        self.live_publisher(stream).is_some()
    }

    /// The stream's publisher on this engine, while its connection lives.
    fn live_publisher(&self, stream: &str) -> Option<PeerId> {
        self.streams
            .get(stream)
            .and_then(|s| s.publisher)
            .filter(|id| self.peers.get(id).is_some_and(|p| p.rtc.is_alive()))
    }

    /// The peers held now.
    pub fn live_peers(&self) -> HashSet<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// Live streams, for the status page and the admin API.
    pub fn status(&self) -> Vec<StreamStatus> {
        let mut streams: Vec<StreamStatus> = self
            .streams
            .iter()
            .map(|(name, stream)| {
                let publisher = stream.publisher.and_then(|id| self.peers.get(&id));
                StreamStatus {
                    stream: name.clone(),
                    publishing: publisher.is_some_and(|p| p.connected),
                    viewers: stream
                        .viewers
                        .iter()
                        .filter(|id| self.peers.get(id).is_some_and(|p| p.connected))
                        .count(),
                    frames_in: publisher.map_or(0, |p| p.frames_in),
                    packets_in: publisher.map_or(0, |p| p.packets_in),
                    frames_out: stream
                        .viewers
                        .iter()
                        .filter_map(|id| self.peers.get(id))
                        .map(|p| p.frames_out)
                        .sum(),
                    legs: stream
                        .legs
                        .iter()
                        .filter_map(|id| self.peers.get(id).map(|p| (*id, p)))
                        .map(|(id, p)| LegStatus {
                            id,
                            connected: p.connected,
                            frames_out: p.frames_out,
                            bytes_out: p.bytes_out,
                        })
                        .collect(),
                    layers: publisher
                        .map(|p| {
                            let mut rids: Vec<String> = p
                                .layers
                                .values()
                                .flat_map(|l| l.keys())
                                .filter_map(|rid| rid.map(|r| r.to_string()))
                                .collect();
                            rids.sort();
                            rids.dedup();
                            rids
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        streams.sort_by(|a, b| a.stream.cmp(&b.stream));
        streams
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

/// A STUN Binding Indication (RFC 5389: class indication, method binding, magic cookie).
fn is_binding_indication(datagram: &[u8]) -> bool {
    datagram.len() >= 20
        && datagram[0..2] == [0x00, 0x11]
        && datagram[4..8] == [0x21, 0x12, 0xa4, 0x42]
}
