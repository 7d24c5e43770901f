//! The built-in SFU: backend kind `builtin`, so one whipgate binary can serve streams alone.
//!
//! WHIP publishers and WHEP viewers are str0m peer connections in ICE-lite mode, all muxed
//! on one UDP socket. Media is forwarded frame by frame without transcoding (str0m
//! depacketizes and repacketizes, and answers NACKs with RTX per leg); viewers' keyframe
//! requests reach the publisher; a simulcast publisher's viewers get one layer, the
//! highest. [`engine`] is the state machine; this module runs one engine per thread
//! (`[builtin] threads`, default one per core), each with its own socket on the shared UDP
//! port, and routes each request to the engine that owns its stream or peer.

mod engine;
pub mod loopback;
mod outbox;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

pub use engine::{home_shard, shard_of, Addresses, Engine, PeerId, ShardMessage, MAX_SHARDS};

/// `[builtin]` of routes.toml, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuSettings {
    /// The one UDP socket every session's media uses.
    pub udp_listen: SocketAddr,
    /// Addresses advertised as ICE host candidates.
    pub host_addresses: Vec<IpAddr>,
    /// Public addresses the host is reachable at (1:1 NAT), advertised as well.
    pub public_addresses: Vec<IpAddr>,
    /// A connected peer from which nothing arrives for this long has ended.
    pub idle_timeout: std::time::Duration,
    /// A relay leg silent this long has failed (and twice this long to connect).
    pub relay_timeout: std::time::Duration,
    /// Datagrams per send syscall (`sendmmsg`); 1 sends each on its own.
    pub send_batch: usize,
    /// Engine threads, each owning its peers (1 to [`MAX_SHARDS`]).
    pub threads: usize,
    /// A frame's packets to one peer leave as one UDP GSO message (Linux), when the kernel
    /// takes it.
    pub gso: bool,
}

/// One engine per core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_SHARDS)
}

impl Default for SfuSettings {
    fn default() -> Self {
        Self {
            udp_listen: SocketAddr::from(([127, 0, 0, 1], 8189)),
            host_addresses: Vec::new(),
            public_addresses: Vec::new(),
            idle_timeout: engine::DEFAULT_IDLE_LIMIT,
            relay_timeout: engine::DEFAULT_RELAY_TIMEOUT,
            send_batch: outbox::BATCH,
            threads: default_threads(),
            gso: true,
        }
    }
}

/// Publisher or viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Publisher,
    Viewer,
    /// This SFU's own session on another backend, carrying a stream there.
    Relay,
}

/// What happened to a relay leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// ICE and DTLS completed: media flows to the target.
    Connected,
    /// It is gone, and why (the target went quiet, ICE failed, the publisher left).
    Ended(String),
}

/// One relay leg, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LegStatus {
    pub id: PeerId,
    pub connected: bool,
    pub frames_out: u64,
    pub bytes_out: u64,
}

/// Why the SFU refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    #[error("no publisher is live on this stream")]
    NoPublisher,
    #[error("the stream already has a live publisher")]
    AlreadyPublished,
    #[error("built-in SFU: {0}")]
    Offer(String),
    #[error("no such session on the built-in SFU")]
    NoSession,
    #[error("built-in SFU: {0}")]
    Layer(String),
    /// A relay target cannot take what the publisher sends.
    #[error("{0}")]
    Codec(String),
    #[error("the built-in SFU is not running")]
    Stopped,
}

/// One live stream, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamStatus {
    pub stream: String,
    pub publishing: bool,
    pub viewers: usize,
    pub packets_in: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Simulcast layers the publisher sends (empty without simulcast).
    pub layers: Vec<String>,
    /// Relay legs carrying the stream to other backends.
    pub legs: Vec<LegStatus>,
}

enum Command {
    Create {
        role: PeerRole,
        stream: String,
        offer: String,
        reply: oneshot::Sender<Result<(PeerId, String), SfuError>>,
    },
    Trickle {
        id: PeerId,
        fragment: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    End {
        id: PeerId,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Status {
        reply: oneshot::Sender<Vec<StreamStatus>>,
    },
    LivePeers {
        reply: oneshot::Sender<std::collections::HashSet<PeerId>>,
    },
    IsLive {
        stream: String,
        reply: oneshot::Sender<bool>,
    },
    SelectLayer {
        id: PeerId,
        media_id: String,
        rid: Option<String>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    ViewerLayers {
        id: PeerId,
        reply: oneshot::Sender<Vec<(String, Vec<String>)>>,
    },
    RelayOffer {
        stream: String,
        events: PeerEvents,
        reply: oneshot::Sender<Result<(PeerId, String), SfuError>>,
    },
    RelayAnswer {
        id: PeerId,
        answer: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Watch {
        id: PeerId,
        events: PeerEvents,
    },
    PullOffer {
        stream: String,
        events: PeerEvents,
        reply: oneshot::Sender<Result<(PeerId, String), SfuError>>,
    },
    PullAccept {
        stream: String,
        offer: String,
        events: PeerEvents,
        reply: oneshot::Sender<Result<(PeerId, String), SfuError>>,
    },
}

/// Where a relay supervisor hears of its legs and its publisher.
pub type PeerEvents = mpsc::UnboundedSender<(PeerId, LegEvent)>;

/// A handle on the running SFU; cheap to clone. The SFU stops when the last handle goes.
#[derive(Clone)]
pub struct Sfu {
    engines: Arc<[EngineHandle]>,
    udp: SocketAddr,
}

/// How requests reach one engine thread, and how busy it is.
struct EngineHandle {
    commands: mpsc::Sender<Command>,
    /// Its peer count, as it last reported it: viewers join the least busy engine.
    peers: Arc<AtomicUsize>,
}

/// Where one engine's messages from the others arrive: media may be dropped when the
/// engine falls behind (the queue is bounded), the rest may not.
#[derive(Clone)]
struct Mailbox {
    media: mpsc::Sender<ShardMessage>,
    control: mpsc::UnboundedSender<ShardMessage>,
}

/// Frames and forwarded datagrams queued for one engine at most; more are dropped (and a
/// dropped frame is repaired with a keyframe).
const MAILBOX_MEDIA: usize = 4096;

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("udp", &self.udp)
            .field("engines", &self.engines.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind the built-in SFU's UDP socket {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("built-in SFU: {0}")]
    Setup(String),
}

impl Sfu {
    /// Binds one UDP socket per engine on the same port and starts each engine on a thread
    /// of its own, so media never waits behind HTTP work.
    pub fn start(settings: &SfuSettings) -> Result<Self, StartError> {
        let threads = settings.threads.clamp(1, MAX_SHARDS);
        let sockets = bind_shared(settings.udp_listen, threads)
            .map_err(|e| StartError::Bind(settings.udp_listen, e))?;
        let bound = sockets[0]
            .local_addr()
            .map_err(|e| StartError::Bind(settings.udp_listen, e))?;
        let addresses = advertised(settings, bound)?;
        let crypto = engine::Crypto::standard();
        let cert = crypto
            .server
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| StartError::Setup("cannot create a DTLS certificate".into()))?;
        let send_batch = settings.send_batch.clamp(1, outbox::BATCH);
        let mut mailboxes = Vec::with_capacity(threads);
        let mut inboxes = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (media, media_inbox) = mpsc::channel(MAILBOX_MEDIA);
            let (control, control_inbox) = mpsc::unbounded_channel();
            mailboxes.push(Mailbox { media, control });
            inboxes.push((media_inbox, control_inbox));
        }
        let mailboxes: Arc<[Mailbox]> = mailboxes.into();
        let mut engines = Vec::with_capacity(threads);
        for (shard, (socket, (media_inbox, control_inbox))) in
            sockets.into_iter().zip(inboxes).enumerate()
        {
            let random = ring::rand::SystemRandom::new();
            let next_id = Box::new(move || {
                let mut bytes = [0u8; 8];
                // A failing system RNG leaves zeros; ids only need to differ, and Engine
                // retries on a collision.
                let _ = ring::rand::SecureRandom::fill(&random, &mut bytes);
                u64::from_le_bytes(bytes)
            });
            let engine = Engine::new(addresses.clone(), crypto.clone(), cert.clone(), next_id)
                .with_idle_limit(settings.idle_timeout)
                .with_relay_timeout(settings.relay_timeout)
                .with_shard(shard, threads);
            let (commands, receiver) = mpsc::channel(256);
            let peers = Arc::new(AtomicUsize::new(0));
            let runner = Runner {
                engine,
                commands: receiver,
                media_inbox,
                control_inbox,
                mailboxes: mailboxes.clone(),
                peers: peers.clone(),
                send_batch,
                gso: settings.gso,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StartError::Setup(e.to_string()))?;
            std::thread::Builder::new()
                .name(format!("whipgate-sfu-{shard}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match tokio::net::UdpSocket::from_std(socket) {
                            Ok(socket) => runner.run(socket).await,
                            Err(error) => {
                                tracing::error!(%error, "built-in SFU cannot use its socket")
                            }
                        }
                    });
                })
                .map_err(|e| StartError::Setup(e.to_string()))?;
            engines.push(EngineHandle { commands, peers });
        }
        tracing::info!(udp = %bound, threads, "built-in SFU listening");
        Ok(Self {
            engines: engines.into(),
            udp: bound,
        })
    }

    fn home(&self, stream: &str) -> &EngineHandle {
        &self.engines[home_shard(stream, self.engines.len())]
    }

    /// The engine peer `id` lives on; ids of another process's layout name none.
    fn owner(&self, id: PeerId) -> Result<&EngineHandle, SfuError> {
        self.engines.get(shard_of(id)).ok_or(SfuError::NoSession)
    }

    pub async fn publish(&self, stream: &str, offer: String) -> Result<(PeerId, String), SfuError> {
        self.create(self.home(stream), PeerRole::Publisher, stream, offer)
            .await
    }

    /// A viewer joins the least busy engine (the publisher's own on a tie, where its
    /// frames need no hop), once the publisher's engine says the stream is live.
    pub async fn play(&self, stream: &str, offer: String) -> Result<(PeerId, String), SfuError> {
        let home = home_shard(stream, self.engines.len());
        let chosen = (0..self.engines.len())
            .min_by_key(|shard| {
                (
                    self.engines[*shard].peers.load(Ordering::Relaxed),
                    *shard != home,
                )
            })
            .unwrap_or(home);
        if chosen != home {
            let (reply, live) = oneshot::channel();
            send(
                &self.engines[home],
                Command::IsLive {
                    stream: stream.to_owned(),
                    reply,
                },
            )
            .await?;
            if !live.await.map_err(|_| SfuError::Stopped)? {
                return Err(SfuError::NoPublisher);
            }
        }
        self.create(&self.engines[chosen], PeerRole::Viewer, stream, offer)
            .await
    }

    async fn create(
        &self,
        engine: &EngineHandle,
        role: PeerRole,
        stream: &str,
        offer: String,
    ) -> Result<(PeerId, String), SfuError> {
        let (reply, answer) = oneshot::channel();
        send(
            engine,
            Command::Create {
                role,
                stream: stream.to_owned(),
                offer,
                reply,
            },
        )
        .await?;
        answer.await.map_err(|_| SfuError::Stopped)?
    }

    pub async fn trickle(&self, id: PeerId, fragment: String) -> Result<(), SfuError> {
        let (reply, done) = oneshot::channel();
        send(
            self.owner(id)?,
            Command::Trickle {
                id,
                fragment,
                reply,
            },
        )
        .await?;
        done.await.map_err(|_| SfuError::Stopped)?
    }

    pub async fn end(&self, id: PeerId) -> Result<(), SfuError> {
        let (reply, done) = oneshot::channel();
        send(self.owner(id)?, Command::End { id, reply }).await?;
        done.await.map_err(|_| SfuError::Stopped)?
    }

    /// Live streams across the engines: a stream's publisher is on one, its viewers on any.
    pub async fn status(&self) -> Vec<StreamStatus> {
        let mut merged: std::collections::BTreeMap<String, StreamStatus> =
            std::collections::BTreeMap::new();
        for engine in self.engines.iter() {
            let (reply, status) = oneshot::channel();
            if send(engine, Command::Status { reply }).await.is_err() {
                continue;
            }
            for part in status.await.unwrap_or_default() {
                match merged.get_mut(&part.stream) {
                    Some(whole) => whole.absorb(part),
                    None => {
                        merged.insert(part.stream.clone(), part);
                    }
                }
            }
        }
        merged.into_values().collect()
    }

    /// A viewer's simulcast layer choice (see `Engine::select_layer`).
    pub async fn select_layer(
        &self,
        id: PeerId,
        media_id: &str,
        rid: Option<&str>,
    ) -> Result<(), SfuError> {
        let (reply, done) = oneshot::channel();
        send(
            self.owner(id)?,
            Command::SelectLayer {
                id,
                media_id: media_id.to_owned(),
                rid: rid.map(str::to_owned),
                reply,
            },
        )
        .await?;
        done.await.map_err(|_| SfuError::Stopped)?
    }

    /// The layers a viewer can choose from, per its video m-line.
    pub async fn viewer_layers(&self, id: PeerId) -> Vec<(String, Vec<String>)> {
        let Ok(engine) = self.owner(id) else {
            return Vec::new();
        };
        let (reply, layers) = oneshot::channel();
        if send(engine, Command::ViewerLayers { id, reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        layers.await.unwrap_or_default()
    }

    /// Opens a relay leg of `stream`: the offer to send to the target. The leg's connection
    /// and end are reported on `events`; the leg ends with its publisher or by [`Sfu::end`].
    pub async fn relay_offer(
        &self,
        stream: &str,
        events: PeerEvents,
    ) -> Result<(PeerId, String), SfuError> {
        let (reply, offer) = oneshot::channel();
        send(
            self.home(stream),
            Command::RelayOffer {
                stream: stream.to_owned(),
                events,
                reply,
            },
        )
        .await?;
        offer.await.map_err(|_| SfuError::Stopped)?
    }

    /// The target's answer to a relay leg's offer.
    pub async fn relay_answer(&self, id: PeerId, answer: String) -> Result<(), SfuError> {
        let (reply, done) = oneshot::channel();
        send(self.owner(id)?, Command::RelayAnswer { id, answer, reply }).await?;
        done.await.map_err(|_| SfuError::Stopped)?
    }

    /// Starts a pull of `stream`: the receive-only offer to send to the origin, whose answer
    /// goes to [`Sfu::relay_answer`]. The pull's connection and end are reported on `events`.
    pub async fn pull_offer(
        &self,
        stream: &str,
        events: PeerEvents,
    ) -> Result<(PeerId, String), SfuError> {
        let (reply, offer) = oneshot::channel();
        send(
            self.home(stream),
            Command::PullOffer {
                stream: stream.to_owned(),
                events,
                reply,
            },
        )
        .await?;
        offer.await.map_err(|_| SfuError::Stopped)?
    }

    /// A pull whose origin offered (a WHEP counter-offer): the SFU's answer.
    pub async fn pull_accept(
        &self,
        stream: &str,
        offer: String,
        events: PeerEvents,
    ) -> Result<(PeerId, String), SfuError> {
        let (reply, answer) = oneshot::channel();
        send(
            self.home(stream),
            Command::PullAccept {
                stream: stream.to_owned(),
                offer,
                events,
                reply,
            },
        )
        .await?;
        answer.await.map_err(|_| SfuError::Stopped)?
    }

    /// Reports when peer `id` (a publisher) has connected and when it ends on `events`, at
    /// once for what already happened.
    pub async fn watch(&self, id: PeerId, events: PeerEvents) -> Result<(), SfuError> {
        send(self.owner(id)?, Command::Watch { id, events }).await
    }

    /// The peers it holds now (sessions that ended on their own are not among them).
    pub async fn live_peers(&self) -> Result<std::collections::HashSet<PeerId>, SfuError> {
        let mut all = std::collections::HashSet::new();
        for engine in self.engines.iter() {
            let (reply, peers) = oneshot::channel();
            send(engine, Command::LivePeers { reply }).await?;
            all.extend(peers.await.map_err(|_| SfuError::Stopped)?);
        }
        Ok(all)
    }
}

async fn send(engine: &EngineHandle, command: Command) -> Result<(), SfuError> {
    engine
        .commands
        .send(command)
        .await
        .map_err(|_| SfuError::Stopped)
}

impl StreamStatus {
    /// Adds another engine's view of the same stream (its viewers there).
    fn absorb(&mut self, other: StreamStatus) {
        self.publishing |= other.publishing;
        self.viewers += other.viewers;
        self.packets_in += other.packets_in;
        self.frames_in += other.frames_in;
        self.frames_out += other.frames_out;
        self.layers.extend(other.layers);
        self.layers.sort();
        self.layers.dedup();
        self.legs.extend(other.legs);
    }
}

/// One socket per engine on the same address (`SO_REUSEPORT`: the kernel spreads remote
/// addresses over them). A port another socket holds is refused first, since a second
/// whipgate with reuse on would otherwise share it silently. Each socket's kernel buffers
/// must absorb bursts (a hundred viewers joining at once send a hundred DTLS flights): ask
/// for 4 MiB each way (the kernel caps it at net.core.rmem_max / wmem_max).
fn bind_shared(address: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    if address.port() != 0 {
        drop(std::net::UdpSocket::bind(address)?);
    }
    let mut sockets: Vec<std::net::UdpSocket> = Vec::with_capacity(count);
    for _ in 0..count {
        // An ephemeral port is chosen by the first bind; the others join it.
        let at = sockets
            .first()
            .map_or(Ok(address), std::net::UdpSocket::local_addr)?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&at.into())?;
        socket.set_nonblocking(true)?;
        sockets.push(socket.into());
    }
    Ok(sockets)
}

/// The candidates to advertise: the configured ones, else the bound address when it is a
/// specific one.
fn advertised(settings: &SfuSettings, bound: SocketAddr) -> Result<Addresses, StartError> {
    let port = bound.port();
    let mut candidates: Vec<SocketAddr> = settings
        .host_addresses
        .iter()
        .chain(settings.public_addresses.iter())
        .map(|ip| SocketAddr::new(*ip, port))
        .collect();
    if candidates.is_empty() {
        if bound.ip().is_unspecified() {
            return Err(StartError::Setup(format!(
                "udp_listen {bound} is a wildcard: list the addresses clients reach in \
                 [builtin] host_addresses"
            )));
        }
        candidates.push(bound);
    }
    // str0m pairs a datagram with the candidate it arrived on; a wildcard socket cannot
    // tell which address that was, so everything is reported as arriving on the first.
    let local = if bound.ip().is_unspecified() {
        candidates[0]
    } else {
        bound
    };
    if !candidates.contains(&local) {
        candidates.insert(0, local);
    }
    Ok(Addresses { local, candidates })
}

/// Carries an engine's messages to the others' mailboxes.
fn deliver(engine: &mut Engine, mailboxes: &[Mailbox]) {
    for (shard, message) in engine.take_shard_messages() {
        let Some(mailbox) = mailboxes.get(shard) else {
            continue;
        };
        if message.is_media() {
            if mailbox.media.try_send(message).is_err() {
                tracing::debug!(shard, "built-in SFU engine behind: media dropped");
            }
        } else {
            let _ = mailbox.control.send(message);
        }
    }
}

/// One engine's thread: its socket, its requests and the other engines' messages.
struct Runner {
    engine: Engine,
    commands: mpsc::Receiver<Command>,
    media_inbox: mpsc::Receiver<ShardMessage>,
    control_inbox: mpsc::UnboundedReceiver<ShardMessage>,
    mailboxes: Arc<[Mailbox]>,
    peers: Arc<AtomicUsize>,
    send_batch: usize,
    gso: bool,
}

impl Runner {
    async fn run(mut self, socket: tokio::net::UdpSocket) {
        let mut buffer = vec![0u8; 2048];
        let mut watchers: std::collections::HashMap<PeerId, PeerEvents> =
            std::collections::HashMap::new();
        let socket = &socket;
        let mut outbox = outbox::Outbox::new(self.send_batch, self.gso);
        let engine = &mut self.engine;
        loop {
            let deadline = engine.next_timeout(Instant::now());
            let mut send =
                |destination: SocketAddr, datagram: Vec<u8>| outbox.push(destination, datagram);
            // Other engines' control messages come first: what they say happened before
            // (a publisher's end, an address claimed) must be known here before a request or
            // a datagram that follows it is looked at.
            tokio::select! {
                biased;
                Some(message) = self.control_inbox.recv() => {
                    engine.on_shard_message(Instant::now(), message, &mut send);
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    handle(engine, command, &mut send, &mut watchers, &self.mailboxes);
                }
                Some(message) = self.media_inbox.recv() => {
                    engine.on_shard_message(Instant::now(), message, &mut send);
                    for _ in 0..64 {
                        match self.media_inbox.try_recv() {
                            Ok(message) => engine.on_shard_message(Instant::now(), message, &mut send),
                            Err(_) => break,
                        }
                    }
                }
                received = socket.recv_from(&mut buffer) => {
                    if let Ok((length, source)) = received {
                        let now = Instant::now();
                        engine.receive(now, source, &buffer[..length], &mut send);
                        // Drain what else is queued before the timers, under load most of it.
                        for _ in 0..64 {
                            match socket.try_recv_from(&mut buffer) {
                                Ok((length, source)) => {
                                    engine.receive(Instant::now(), source, &buffer[..length], &mut send);
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            engine.tick(Instant::now(), &mut send);
            // Before the socket's batch: a claim must reach the other engines before the
            // answer to the check that made it reaches the peer.
            deliver(engine, &self.mailboxes);
            outbox.flush(socket);
            for (id, event) in engine.take_leg_events() {
                let ended = matches!(event, LegEvent::Ended(_));
                if let Some(events) = watchers.get(&id) {
                    let _ = events.send((id, event));
                }
                if ended {
                    watchers.remove(&id);
                }
            }
            // A supervisor that stopped listening releases its entries.
            watchers.retain(|_, events| !events.is_closed());
            self.peers.store(engine.peer_count(), Ordering::Relaxed);
        }
        tracing::debug!("built-in SFU engine stopped");
    }
}

fn handle(
    engine: &mut Engine,
    command: Command,
    send: &mut dyn FnMut(SocketAddr, Vec<u8>),
    watchers: &mut std::collections::HashMap<PeerId, PeerEvents>,
    mailboxes: &[Mailbox],
) {
    let now = Instant::now();
    match command {
        Command::Create {
            role,
            stream,
            offer,
            reply,
        } => {
            let result = match role {
                PeerRole::Publisher => engine.publish(now, &stream, &offer),
                PeerRole::Viewer => engine.play(now, &stream, &offer),
                PeerRole::Relay => Err(SfuError::Offer("relay legs are made by the SFU".into())),
            };
            let _ = reply.send(result);
        }
        Command::Trickle {
            id,
            fragment,
            reply,
        } => {
            let _ = reply.send(engine.trickle(id, &fragment));
        }
        Command::End { id, reply } => {
            let result = engine.end(now, id);
            engine.tick(now, send);
            // Before the reply: whoever asks any engine next (its live peers, say) must find
            // a publisher's viewers there ended too.
            deliver(engine, mailboxes);
            let _ = reply.send(result);
        }
        Command::Status { reply } => {
            let _ = reply.send(engine.status());
        }
        Command::LivePeers { reply } => {
            let _ = reply.send(engine.live_peers());
        }
        Command::IsLive { stream, reply } => {
            let _ = reply.send(engine.is_live(&stream));
        }
        Command::SelectLayer {
            id,
            media_id,
            rid,
            reply,
        } => {
            let _ = reply.send(engine.select_layer(id, &media_id, rid.as_deref()));
        }
        Command::ViewerLayers { id, reply } => {
            let _ = reply.send(engine.viewer_layers(now, id));
        }
        Command::RelayOffer {
            stream,
            events,
            reply,
        } => {
            let result = engine.relay_offer(now, &stream);
            if let Ok((id, _)) = &result {
                watchers.insert(*id, events);
            }
            let _ = reply.send(result);
        }
        Command::RelayAnswer { id, answer, reply } => {
            let _ = reply.send(engine.relay_answer(now, id, &answer, send));
        }
        Command::PullOffer {
            stream,
            events,
            reply,
        } => {
            let result = engine.pull_offer(now, &stream);
            if let Ok((id, _)) = &result {
                watchers.insert(*id, events);
            }
            let _ = reply.send(result);
        }
        Command::PullAccept {
            stream,
            offer,
            events,
            reply,
        } => {
            let result = engine.pull_accept(now, &stream, &offer);
            if let Ok((id, _)) = &result {
                watchers.insert(*id, events);
            }
            let _ = reply.send(result);
        }
        Command::Watch { id, events } => match engine.is_connected(id) {
            Some(connected) => {
                if connected {
                    let _ = events.send((id, LegEvent::Connected));
                }
                watchers.insert(id, events);
            }
            None => {
                let _ = events.send((id, LegEvent::Ended("already gone".into())));
            }
        },
    }
}

#[cfg(test)]
mod shard_tests;
#[cfg(test)]
mod tests;
