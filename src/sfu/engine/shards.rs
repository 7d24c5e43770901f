//! The SFU on several threads: one [`Engine`] per thread, each owning its peers. A stream's
//! publisher (with its relay legs) lives on the stream's home engine; its viewers live on
//! any engine, and an engine with viewers of a stream published elsewhere holds a
//! [`Mirror`] of that publisher, fed the publisher's frames. Engines talk only through
//! [`ShardMessage`]s, which the runner carries between threads: no engine state is shared
//! and nothing on the media path takes a lock.
//!
//! Every engine has its own socket on the same UDP port (`SO_REUSEPORT`), and the kernel
//! spreads remote addresses over them by hash, so a datagram may arrive on an engine that
//! does not own its peer. Engines claim the remote addresses their peers use; a datagram
//! from another engine's address goes there, and one from an address nobody claimed yet
//! that may open a path (a STUN or DTLS datagram) goes to every engine, whose owner
//! claims the address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};

use super::{Engine, LayerSeen, Layers, PeerId, KEYFRAME_REQUEST_INTERVAL};

/// Engines (threads) at most: a peer id's low bits name its engine.
pub const MAX_SHARDS: usize = 64;
const SHARD_BITS: u32 = 6;

/// The engine peer `id` lives on.
pub fn shard_of(id: PeerId) -> usize {
    (id & ((1 << SHARD_BITS) - 1)) as usize
}

pub(super) fn with_shard(random: u64, shard: usize) -> PeerId {
    (random << SHARD_BITS) | (shard as u64 & ((1 << SHARD_BITS) - 1))
}

/// The engine a stream's publisher lives on: fixed by its name, so that two publishers of
/// one stream always meet on one engine, which refuses the second.
pub fn home_shard(stream: &str, shards: usize) -> usize {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let hash = stream
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash % shards.max(1) as u64) as usize
}

/// STUN (RFC 7983: first byte 0 to 3) or DTLS (20 to 63): what a new path starts with.
pub(super) fn may_open_a_path(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(0..=3 | 20..=63))
}

/// What one engine tells another.
pub enum ShardMessage {
    /// A datagram that arrived on the sender's socket for a peer that may live here.
    Datagram {
        source: SocketAddr,
        datagram: Vec<u8>,
    },
    /// One frame of the stream's publisher, for this engine's viewers; `seq` counts the
    /// frames sent to subscribers, so that a dropped one is seen.
    Frame {
        stream: Arc<str>,
        publisher: PeerId,
        seq: u64,
        data: Arc<MediaData>,
    },
    /// Engine `from` has viewers of `stream`: send it the frames.
    Subscribe { stream: String, from: usize },
    /// Engine `from` has no viewers of `stream` left.
    Unsubscribe { stream: String, from: usize },
    /// The publisher's m-lines, for a subscriber.
    Source {
        stream: String,
        publisher: PeerId,
        media: Vec<(Mid, MediaKind)>,
    },
    /// The stream's publisher ended (`None`: there was none when the subscription came).
    SourceEnded {
        stream: String,
        publisher: Option<PeerId>,
    },
    /// A viewer on another engine needs a keyframe.
    Keyframe {
        stream: String,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    },
    /// Remote addresses that belong to peers of engine `owner`.
    Claim {
        addresses: Vec<SocketAddr>,
        owner: usize,
    },
    /// Remote addresses engine `owner`'s peers no longer use.
    Release {
        addresses: Vec<SocketAddr>,
        owner: usize,
    },
}

impl ShardMessage {
    /// Media may be dropped when the receiving engine falls behind (a dropped frame is
    /// seen and repaired with a keyframe); the rest must arrive.
    pub fn is_media(&self) -> bool {
        matches!(self, Self::Datagram { .. } | Self::Frame { .. })
    }
}

/// A publisher on another engine, as this engine's viewers of its stream see it.
pub(super) struct Mirror {
    /// The publisher's engine.
    pub(super) origin: usize,
    /// Known once the origin answered the subscription.
    publisher: Option<PeerId>,
    pub(super) media: Vec<(Mid, MediaKind)>,
    pub(super) layers: Layers,
    last_keyframe_request: HashMap<(Mid, Option<Rid>), Instant>,
    /// The `seq` the next frame should have.
    next_seq: Option<u64>,
}

impl Mirror {
    pub(super) fn new(origin: usize) -> Self {
        Self {
            origin,
            publisher: None,
            media: Vec::new(),
            layers: HashMap::new(),
            last_keyframe_request: HashMap::new(),
            next_seq: None,
        }
    }

    /// Rate-limits keyframe requests as the publisher's engine does, so that a room of
    /// viewers here sends one request, not one each.
    pub(super) fn may_ask(&mut self, now: Instant, mid: Mid, rid: Option<Rid>) -> bool {
        let last = self
            .last_keyframe_request
            .entry((mid, rid))
            .or_insert(now - KEYFRAME_REQUEST_INTERVAL * 2);
        if now.saturating_duration_since(*last) < KEYFRAME_REQUEST_INTERVAL {
            return false;
        }
        *last = now;
        true
    }
}

impl Engine {
    /// Messages for the other engines, as (engine, message), since the last call.
    pub fn take_shard_messages(&mut self) -> Vec<(usize, ShardMessage)> {
        std::mem::take(&mut self.shard_messages)
    }

    /// Queues one message for every other engine.
    pub(super) fn tell_others(&mut self, message: impl Fn(usize) -> ShardMessage) {
        if self.shards < 2 {
            return;
        }
        for shard in (0..self.shards).filter(|s| *s != self.shard) {
            self.shard_messages.push((shard, message(self.shard)));
        }
    }

    /// Shares a publisher's frame with the engines that have viewers of its stream.
    pub(super) fn share_frame(&mut self, stream_name: &str, publisher: PeerId, data: MediaData) {
        let Some(stream) = self.streams.get_mut(stream_name) else {
            return;
        };
        if stream.subscribers.is_empty() {
            return;
        }
        let seq = stream.frames_shared;
        stream.frames_shared += 1;
        let data = Arc::new(data);
        let name: Arc<str> = Arc::from(stream_name);
        for shard in &stream.subscribers {
            self.shard_messages.push((
                *shard,
                ShardMessage::Frame {
                    stream: name.clone(),
                    publisher,
                    seq,
                    data: data.clone(),
                },
            ));
        }
    }

    /// Tells the stream's subscribers the publisher's m-lines (they changed, or are new).
    pub(super) fn describe_source(&mut self, stream_name: &str, publisher: PeerId) {
        let Some(stream) = self.streams.get(stream_name) else {
            return;
        };
        let Some(peer) = self.peers.get(&publisher) else {
            return;
        };
        for shard in &stream.subscribers {
            self.shard_messages.push((
                *shard,
                ShardMessage::Source {
                    stream: stream_name.to_owned(),
                    publisher,
                    media: peer.media.clone(),
                },
            ));
        }
    }

    /// One message from another engine.
    pub fn on_shard_message(
        &mut self,
        now: Instant,
        message: ShardMessage,
        send: &mut dyn FnMut(SocketAddr, Vec<u8>),
    ) {
        match message {
            ShardMessage::Datagram { source, datagram } => {
                self.receive_from(now, source, &datagram, true, send);
            }
            ShardMessage::Frame {
                stream,
                publisher,
                seq,
                data,
            } => self.mirror_frame(now, &stream, publisher, seq, &data, send),
            ShardMessage::Subscribe { stream, from } => match self.live_publisher(&stream) {
                Some(publisher) => {
                    if let Some(entry) = self.streams.get_mut(&stream) {
                        entry.subscribers.insert(from);
                    }
                    let media = self
                        .peers
                        .get(&publisher)
                        .map(|p| p.media.clone())
                        .unwrap_or_default();
                    self.shard_messages.push((
                        from,
                        ShardMessage::Source {
                            stream,
                            publisher,
                            media,
                        },
                    ));
                }
                None => self.shard_messages.push((
                    from,
                    ShardMessage::SourceEnded {
                        stream,
                        publisher: None,
                    },
                )),
            },
            ShardMessage::Unsubscribe { stream, from } => {
                let Some(entry) = self.streams.get_mut(&stream) else {
                    return;
                };
                entry.subscribers.remove(&from);
                let unwatched = entry.viewers.is_empty()
                    && entry.legs.is_empty()
                    && entry.subscribers.is_empty();
                let pull = entry
                    .publisher
                    .filter(|id| self.peers.get(id).is_some_and(|p| p.pulled));
                if let (true, Some(pull)) = (unwatched, pull) {
                    // A pull lives as long as someone watches it, on any engine.
                    self.remove_because(pull, now, true, "its last viewer left");
                }
            }
            ShardMessage::Source {
                stream,
                publisher,
                media,
            } => {
                if let Some(mirror) = self
                    .streams
                    .get_mut(&stream)
                    .and_then(|s| s.mirror.as_mut())
                {
                    if mirror.publisher != Some(publisher) {
                        mirror.next_seq = None;
                    }
                    mirror.publisher = Some(publisher);
                    mirror.media = media;
                }
            }
            ShardMessage::SourceEnded { stream, publisher } => {
                self.source_ended(now, &stream, publisher);
            }
            ShardMessage::Keyframe {
                stream,
                mid,
                rid,
                kind,
            } => {
                let publisher = self.streams.get(&stream).and_then(|s| s.publisher);
                if let Some(publisher) = publisher {
                    if self.request_keyframe(now, publisher, mid, rid, kind) {
                        self.drive(now, publisher, send);
                    }
                }
            }
            ShardMessage::Claim { addresses, owner } => {
                for address in addresses {
                    if !self.by_source.contains_key(&address) {
                        self.foreign.insert(address, owner);
                    }
                }
            }
            ShardMessage::Release { addresses, owner } => {
                for address in addresses {
                    if self.foreign.get(&address) == Some(&owner) {
                        self.foreign.remove(&address);
                    }
                }
            }
        }
    }

    /// A frame of a publisher on another engine, for this engine's viewers.
    fn mirror_frame(
        &mut self,
        now: Instant,
        stream_name: &str,
        publisher: PeerId,
        seq: u64,
        data: &MediaData,
        send: &mut dyn FnMut(SocketAddr, Vec<u8>),
    ) {
        let Some(stream) = self.streams.get_mut(stream_name) else {
            return;
        };
        let Some(mirror) = stream.mirror.as_mut() else {
            return;
        };
        if mirror.publisher != Some(publisher) {
            return;
        }
        LayerSeen::record(&mut mirror.layers, data, now);
        let dropped = mirror.next_seq.is_some_and(|next| next != seq);
        mirror.next_seq = Some(seq + 1);
        if dropped {
            // A frame was lost between engines (this one fell behind): the viewers' video
            // resumes at the next keyframe, which is asked for, rather than corrupted.
            let video: Vec<PeerId> = stream.viewers.iter().copied().collect();
            for id in video {
                if let Some(viewer) = self.peers.get_mut(&id) {
                    let kinds = viewer.media.clone();
                    for (mid, output) in &mut viewer.outputs {
                        if kinds.contains(&(*mid, MediaKind::Video)) {
                            output.awaiting_keyframe = true;
                        }
                    }
                }
            }
        }
        let touched = self.forward(now, stream_name, data);
        for id in touched {
            self.drive(now, id, send);
        }
    }

    /// The publisher a mirror shows ended: so do this engine's viewers of it.
    fn source_ended(&mut self, now: Instant, stream_name: &str, publisher: Option<PeerId>) {
        let Some(stream) = self.streams.get_mut(stream_name) else {
            return;
        };
        let ours = stream.mirror.as_ref().is_some_and(|m| {
            publisher.is_none() || m.publisher.is_none() || m.publisher == publisher
        });
        if !ours {
            return;
        }
        stream.mirror = None;
        let viewers: Vec<PeerId> = stream.viewers.iter().copied().collect();
        for id in viewers {
            self.remove_because(id, now, true, "the publisher left");
        }
        if self.streams.get(stream_name).is_some_and(|s| s.is_empty()) {
            self.streams.remove(stream_name);
        }
    }
}
