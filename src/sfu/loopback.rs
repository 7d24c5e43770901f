//! An in-memory network around the SFU [`Engine`]: str0m peers publish and play through it
//! with simulated time and optional loss. The SFU's tests (forwarding, keyframe requests,
//! NACK repair, simulcast) and its forwarding benchmark run on it; no socket is involved.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use super::engine::{Addresses, Engine, PeerId};
use super::SfuError;

/// A frame a client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub kind: MediaKind,
    pub len: usize,
    pub keyframe: bool,
    /// The first byte after the VP8 header: which publisher frame this was.
    pub tag: u8,
}

pub struct Client {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub session: PeerId,
    pub video: Option<Mid>,
    pub audio: Option<Mid>,
    pub connected: bool,
    /// The SFU closed the connection (DTLS close_notify arrived).
    pub closed: bool,
    pub received: Vec<Received>,
    pub keyframe_requests: usize,
    /// Drop every n-th RTP packet sent to this client (none when 0).
    pub drop_every: u32,
    pub dropped: u64,
    /// Drop this many of the first DTLS datagrams sent to this client (a peer that misses
    /// the SFU's first flight, as FFmpeg's WHIP muxer does).
    pub drop_first_dtls: u32,
    /// Send no STUN from this client (a peer that keeps its pair alive with media and
    /// binding indications only, as libnice does).
    pub mute_stun: bool,
    /// Send nothing at all from this client (a peer that vanished).
    pub silent: bool,
    rtp_seen: u64,
    next_timeout: Instant,
}

pub struct Loopback {
    /// The first engine; with [`Loopback::sharded`], `others` hold the rest, as the SFU's
    /// threads do.
    pub engine: Engine,
    pub others: Vec<Engine>,
    /// The engine the next viewer joins (default: its stream's home engine).
    pub next_viewer_shard: Option<usize>,
    /// Drop this many of the next frames engines share (one engine fell behind).
    pub drop_shared_frames: u32,
    /// Shifts which engine's socket each client's datagrams reach (see `socket_of`).
    pub socket_offset: usize,
    pub now: Instant,
    sfu: SocketAddr,
    crypto: Arc<CryptoProvider>,
    pub clients: Vec<Client>,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Time spent inside the engine (for the benchmark's CPU per viewer).
    pub engine_time: Duration,
    /// Media timestamps count from here.
    origin: Instant,
    /// The next client offers `a=setup:passive` (as FFmpeg does), making the SFU its DTLS
    /// client.
    pub next_passive: bool,
    /// The next client's crypto (DTLS stack) instead of the default.
    pub next_crypto: Option<Arc<CryptoProvider>>,
}

const VP8_KEY: u8 = 0x00;
const VP8_DELTA: u8 = 0x01;

impl Default for Loopback {
    fn default() -> Self {
        Self::new()
    }
}

impl Loopback {
    pub fn new() -> Self {
        Self::sharded(1)
    }

    /// An SFU of `shards` engines behind one address, datagrams spread over them by the
    /// sender's address as `SO_REUSEPORT` does.
    pub fn sharded(shards: usize) -> Self {
        let sfu = SocketAddr::from(([10, 0, 0, 1], 5000));
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let sfu_crypto = super::engine::Crypto::standard();
        let cert = sfu_crypto
            .server
            .dtls_provider
            .generate_certificate()
            .expect("the crypto provider makes certificates");
        let mut engines: Vec<Engine> = (0..shards.max(1))
            .map(|shard| {
                let mut counter = 0u64;
                Engine::new(
                    Addresses {
                        local: sfu,
                        candidates: vec![sfu],
                    },
                    sfu_crypto.clone(),
                    cert.clone(),
                    Box::new(move || {
                        counter += 1;
                        counter
                    }),
                )
                .with_shard(shard, shards)
            })
            .collect();
        let engine = engines.remove(0);
        let now = Instant::now();
        Self {
            engine,
            others: engines,
            next_viewer_shard: None,
            drop_shared_frames: 0,
            socket_offset: 0,
            now,
            origin: now,
            sfu,
            crypto,
            clients: Vec::new(),
            wire: VecDeque::new(),
            engine_time: Duration::ZERO,
            next_passive: false,
            next_crypto: None,
        }
    }

    fn client_rtc(&mut self) -> Rtc {
        let crypto = self
            .next_crypto
            .take()
            .unwrap_or_else(|| self.crypto.clone());
        RtcConfig::new().set_crypto_provider(crypto).build(self.now)
    }

    fn next_addr(&self) -> SocketAddr {
        let n = u8::try_from(self.clients.len() % 250).unwrap_or(0);
        SocketAddr::from(([10, 0, 1, n + 1], 6000))
    }

    /// A publisher of VP8 video (with the given simulcast layers) and Opus audio.
    pub fn publish(&mut self, stream: &str, layers: &[&str]) -> Result<usize, SfuError> {
        let simulcast = (!layers.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for rid in layers {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        self.connect(stream, Direction::SendOnly, simulcast)
    }

    /// A viewer of audio and video.
    pub fn play(&mut self, stream: &str) -> Result<usize, SfuError> {
        self.connect(stream, Direction::RecvOnly, None)
    }

    fn connect(
        &mut self,
        stream: &str,
        direction: Direction,
        simulcast: Option<Simulcast>,
    ) -> Result<usize, SfuError> {
        let mut rtc = self.client_rtc();
        let addr = self.next_addr();
        if let Ok(candidate) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(candidate);
        }
        let mut change = rtc.sdp_api();
        let video = change.add_media(MediaKind::Video, direction, None, None, simulcast);
        let audio = change.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending): (_, SdpPendingOffer) = change
            .apply()
            .ok_or_else(|| SfuError::Offer("no changes".into()))?;
        let mut offer = offer.to_sdp_string();
        if std::mem::take(&mut self.next_passive) {
            // The client keeps its actpass offer; the SFU's `active` answer then makes it
            // the DTLS server, as if it had offered passive.
            offer = offer.replace("a=setup:actpass", "a=setup:passive");
        }
        let home = super::engine::home_shard(stream, self.shards());
        let (session, answer) = if direction == Direction::SendOnly {
            let now = self.now;
            self.engine_at(home).publish(now, stream, &offer)?
        } else {
            let shard = self.next_viewer_shard.take().unwrap_or(home);
            if shard != home && !self.engine_at(home).is_live(stream) {
                return Err(SfuError::NoPublisher);
            }
            let now = self.now;
            let played = self.engine_at(shard).play(now, stream, &offer);
            self.route_shard_messages();
            played?
        };
        let answer = SdpAnswer::from_sdp_string(&answer)
            .map_err(|e| SfuError::Offer(format!("answer: {e}")))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| SfuError::Offer(format!("answer: {e}")))?;
        self.clients.push(Client {
            rtc,
            addr,
            session,
            video: Some(video),
            audio: Some(audio),
            connected: false,
            closed: false,
            received: Vec::new(),
            keyframe_requests: 0,
            drop_every: 0,
            dropped: 0,
            drop_first_dtls: 0,
            mute_stun: false,
            silent: false,
            rtp_seen: 0,
            next_timeout: self.now,
        });
        Ok(self.clients.len() - 1)
    }

    /// A relay target (another backend) with default codecs, answering a relay leg of
    /// `stream`; returns the client and the leg's id.
    pub fn relay(&mut self, stream: &str) -> Result<(usize, PeerId), SfuError> {
        let config = RtcConfig::new().set_crypto_provider(self.crypto.clone());
        self.relay_with(stream, config)
    }

    /// An origin the SFU pulls `stream` from: a client that answers the SFU's receive-only
    /// offer and then sends media like a publisher; returns the client and the pull's id.
    pub fn origin(&mut self, stream: &str) -> Result<(usize, PeerId), SfuError> {
        let (now, home) = (self.now, super::engine::home_shard(stream, self.shards()));
        let (pull, offer) = self.engine_at(home).pull_offer(now, stream)?;
        let config = RtcConfig::new().set_crypto_provider(self.crypto.clone());
        self.answer_with(pull, &offer, config)
    }

    /// A relay target built from `config` (its codecs, say).
    pub fn relay_with(
        &mut self,
        stream: &str,
        config: RtcConfig,
    ) -> Result<(usize, PeerId), SfuError> {
        let (now, home) = (self.now, super::engine::home_shard(stream, self.shards()));
        let (leg, offer) = self.engine_at(home).relay_offer(now, stream)?;
        self.answer_with(leg, &offer, config)
    }

    /// A client built from `config` answers the SFU's own offer for its session `leg`.
    fn answer_with(
        &mut self,
        leg: PeerId,
        offer: &str,
        config: RtcConfig,
    ) -> Result<(usize, PeerId), SfuError> {
        let mut rtc = config.build(self.now);
        let addr = self.next_addr();
        if let Ok(candidate) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(candidate);
        }
        let offer = SdpOffer::from_sdp_string(offer)
            .map_err(|e| SfuError::Offer(format!("relay offer: {e}")))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Offer(format!("relay offer: {e}")))?;
        let mut out = Vec::new();
        let now = self.now;
        self.engine_at(super::engine::shard_of(leg)).relay_answer(
            now,
            leg,
            &answer.to_sdp_string(),
            &mut |to, d| out.push((to, d.to_vec())),
        )?;
        let sfu = self.sfu;
        self.wire
            .extend(out.into_iter().map(|(to, data)| (to, sfu, data)));
        self.clients.push(Client {
            rtc,
            addr,
            session: leg,
            video: None,
            audio: None,
            connected: false,
            closed: false,
            received: Vec::new(),
            keyframe_requests: 0,
            drop_every: 0,
            dropped: 0,
            drop_first_dtls: 0,
            mute_stun: false,
            silent: false,
            rtp_seen: 0,
            next_timeout: self.now,
        });
        Ok((self.clients.len() - 1, leg))
    }

    /// Sends one VP8 frame of `len` bytes on `client`'s video (layer `rid`), its first
    /// payload byte after the header being `tag`.
    pub fn send_video(
        &mut self,
        client: usize,
        rid: Option<&str>,
        keyframe: bool,
        len: usize,
        tag: u8,
    ) {
        let now = self.now;
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let Some(mid) = c.video else {
            return;
        };
        let Some(writer) = c.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
        else {
            return;
        };
        let writer = match rid {
            Some(rid) => writer.rid(Rid::from(rid)),
            None => writer,
        };
        let mut data = vec![0u8; len.max(2)];
        data[0] = if keyframe { VP8_KEY } else { VP8_DELTA };
        data[1] = tag;
        let ticks =
            u64::try_from(now.duration_since(self.origin).as_micros()).unwrap_or(0) * 9 / 100;
        let _ = writer.write(pt, now, MediaTime::from_90khz(ticks), data);
    }

    /// Sends one 20 ms Opus frame on `client`'s audio.
    pub fn send_audio(&mut self, client: usize, len: usize) {
        let now = self.now;
        let started = self.origin;
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let Some(mid) = c.audio else {
            return;
        };
        let Some(writer) = c.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
        else {
            return;
        };
        let micros = u64::try_from(now.duration_since(started).as_micros()).unwrap_or(0);
        let _ = writer.write(
            pt,
            now,
            MediaTime::new(micros * 48 / 1000, str0m::media::Frequency::FORTY_EIGHT_KHZ),
            vec![0xfc; len],
        );
    }

    /// A viewer asks for a keyframe, as a decoder that lost its reference does.
    pub fn request_keyframe(&mut self, client: usize) {
        if let Some(c) = self.clients.get_mut(client) {
            if let Some(mut writer) = c.video.and_then(|mid| c.rtc.writer(mid)) {
                let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
            }
        }
    }

    /// Advances simulated time by `step`, delivering everything sent meanwhile.
    pub fn advance(&mut self, step: Duration) {
        self.now += step;
        let now = self.now;
        for client in &mut self.clients {
            if client.next_timeout <= now {
                let _ = client.rtc.handle_input(Input::Timeout(now));
            }
        }
        let started = Instant::now();
        let mut out = Vec::new();
        for shard in 0..self.shards() {
            self.engine_at(shard)
                .tick(now, &mut |to, data| out.push((to, data)));
        }
        self.engine_time += started.elapsed();
        let sfu = self.sfu;
        self.wire
            .extend(out.into_iter().map(|(to, data)| (to, sfu, data)));
        self.route_shard_messages();
        self.pump();
    }

    /// Ends session `id` on its engine, as a DELETE does.
    pub fn end(&mut self, id: PeerId) -> Result<(), SfuError> {
        let now = self.now;
        let ended = self.engine_at(super::engine::shard_of(id)).end(now, id);
        self.route_shard_messages();
        self.advance(Duration::from_millis(1));
        ended
    }

    /// Every engine's view of its streams, side by side.
    pub fn statuses(&self) -> Vec<super::StreamStatus> {
        std::iter::once(&self.engine)
            .chain(&self.others)
            .flat_map(Engine::status)
            .collect()
    }

    pub fn shards(&self) -> usize {
        1 + self.others.len()
    }

    pub fn engine_at(&mut self, shard: usize) -> &mut Engine {
        match shard.checked_sub(1) {
            Some(other) if other < self.others.len() => &mut self.others[other],
            _ => &mut self.engine,
        }
    }

    /// Carries the engines' messages to each other, as the SFU's runners do, until none
    /// is left.
    pub fn route_shard_messages(&mut self) {
        let now = self.now;
        let sfu = self.sfu;
        loop {
            let mut messages = Vec::new();
            for shard in 0..self.shards() {
                messages.extend(self.engine_at(shard).take_shard_messages());
            }
            if messages.is_empty() {
                return;
            }
            for (to, message) in messages {
                if matches!(message, super::engine::ShardMessage::Frame { .. })
                    && self.drop_shared_frames > 0
                {
                    self.drop_shared_frames -= 1;
                    continue;
                }
                let mut out = Vec::new();
                self.engine_at(to)
                    .on_shard_message(now, message, &mut |to, d| out.push((to, d)));
                self.wire
                    .extend(out.into_iter().map(|(to, data)| (to, sfu, data)));
            }
        }
    }

    /// The engine whose socket a datagram from `from` reaches: the kernel hashes the
    /// address; here clients take turns, shifted by `socket_offset`, so a test can make
    /// sure that datagrams reach engines that do not own their peer.
    fn socket_of(&self, from: SocketAddr) -> usize {
        if self.others.is_empty() {
            return 0;
        }
        let index = self
            .clients
            .iter()
            .position(|c| c.addr == from)
            .unwrap_or(self.clients.len());
        (index + self.socket_offset) % self.shards()
    }

    /// Runs until no datagram is in flight and no client has output.
    fn pump(&mut self) {
        loop {
            self.poll_clients();
            if self.wire.is_empty() {
                break;
            }
            while let Some((to, from, data)) = self.wire.pop_front() {
                self.deliver(to, from, data);
            }
        }
    }

    fn poll_clients(&mut self) {
        for client in &mut self.clients {
            loop {
                match client.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => {
                        self.wire
                            .push_back((t.destination, t.source, t.contents.to_vec()));
                    }
                    Ok(Output::Timeout(at)) => {
                        client.next_timeout = at;
                        break;
                    }
                    Ok(Output::Event(event)) => match event {
                        Event::Connected => client.connected = true,
                        Event::MediaAdded(added) => match added.kind {
                            MediaKind::Video if client.video.is_none() => {
                                client.video = Some(added.mid)
                            }
                            MediaKind::Audio if client.audio.is_none() => {
                                client.audio = Some(added.mid)
                            }
                            _ => {}
                        },
                        Event::MediaData(data) => client.received.push(Received {
                            kind: if Some(data.mid) == client.video {
                                MediaKind::Video
                            } else {
                                MediaKind::Audio
                            },
                            len: data.data.len(),
                            keyframe: data.is_keyframe(),
                            tag: data.data.get(1).copied().unwrap_or(0),
                        }),
                        Event::KeyframeRequest(_) => client.keyframe_requests += 1,
                        Event::Closed => client.closed = true,
                        _ => {}
                    },
                    Err(_) => break,
                }
            }
        }
    }

    fn deliver(&mut self, to: SocketAddr, from: SocketAddr, data: Vec<u8>) {
        let now = self.now;
        if to == self.sfu {
            if let Some(sender) = self.clients.iter().find(|c| c.addr == from) {
                if sender.silent || (sender.mute_stun && is_stun(&data)) {
                    return;
                }
            }
            let started = Instant::now();
            let mut out = Vec::new();
            let shard = self.socket_of(from);
            self.engine_at(shard)
                .receive(now, from, &data, &mut |to, d| out.push((to, d)));
            self.engine_time += started.elapsed();
            let sfu = self.sfu;
            self.wire
                .extend(out.into_iter().map(|(to, data)| (to, sfu, data)));
            self.route_shard_messages();
            return;
        }
        let Some(client) = self.clients.iter_mut().find(|c| c.addr == to) else {
            return;
        };
        if is_dtls(&data) && client.drop_first_dtls > 0 {
            client.drop_first_dtls -= 1;
            return;
        }
        if is_rtp(&data) {
            client.rtp_seen += 1;
            if client.drop_every > 0 && client.rtp_seen % u64::from(client.drop_every) == 0 {
                client.dropped += 1;
                return;
            }
        }
        let Ok(contents) = data.as_slice().try_into() else {
            return;
        };
        let _ = client.rtc.handle_input(Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: to,
                contents,
            },
        ));
    }

    /// Steps time until every client is connected (ICE and DTLS done), or `limit` passes.
    pub fn connect_all(&mut self, limit: Duration) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            self.advance(Duration::from_millis(5));
            if self.clients.iter().all(|c| c.connected) {
                return true;
            }
        }
        false
    }
}

/// RFC 7983: DTLS records start with 20..=63, STUN messages with 0..=3.
fn is_dtls(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (20..=63).contains(b))
}

fn is_stun(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| *b <= 3)
}

/// SRTP media, not RTCP: RTCP packet types 200-207 sit where RTP has marker + payload type.
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() > 12 && (128..192).contains(&datagram[0]) && !(192..=223).contains(&datagram[1])
}
