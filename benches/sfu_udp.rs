//! The built-in SFU on real UDP sockets over loopback, as `whipgate serve` runs it: one
//! publisher (30 fps VP8 and 50 fps Opus) to N viewers, every peer a str0m peer connection
//! on a socket of its own in this process, with DTLS-SRTP. The SFU's CPU is read from /proc
//! for its engine threads only (`whipgate-sfu-*`), so the simulated peers' work is not
//! counted.
//!
//! The viewers are light: once connected they count the SRTP packets that arrive (the RTP
//! header is not encrypted: a video packet with the marker bit ends a frame) instead of
//! decrypting them, and hand everything else (STUN, DTLS, RTCP) to their peer connection.
//! So the one thread that simulates hundreds of viewers keeps up with what the SFU sends.
//!
//! Run: `cargo bench --bench sfu_udp` (under `cargo test` it runs one short round). Modes:
//! - (default) viewers × threads × bitrate: egress, CPU, frames delivered;
//! - `batch`: one datagram per send call against sendmmsg batches, in one run;
//! - `join`: time from a viewer's POST to its first frame, and keyframe latency, 1 and 2
//!   threads.

// As `whipgate serve` allocates: the allocator is a large part of the per-packet cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use whipgate::sfu::{Sfu, SfuSettings};

/// What the viewers saw, all together.
#[derive(Default)]
struct Seen {
    connected: AtomicUsize,
    frames: AtomicU64,
    bytes: AtomicU64,
    /// Viewers that have their first video frame.
    first_frames: AtomicUsize,
}

struct Round {
    viewers: usize,
    seconds: u64,
    bits_per_second: usize,
    threads: usize,
    send_batch: usize,
    gso: bool,
}

struct Outcome {
    /// SFU engine threads' CPU, in cores.
    cpu: f64,
    /// What reached the viewers, bits per second.
    egress: f64,
    frames_ratio: f64,
}

impl Outcome {
    fn cpu_per_viewer_ms(&self, viewers: usize) -> f64 {
        self.cpu * 1000.0 / viewers as f64
    }

    /// Egress per core of SFU CPU, Gbit/s.
    fn gbps_per_core(&self) -> f64 {
        self.egress / self.cpu.max(1e-9) / 1e9
    }
}

/// CPU seconds the SFU's engine threads have used so far.
fn sfu_threads_cpu() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0.0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with("whipgate-sfu") {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            total += (utime + stime) / ticks;
        }
    }
    total
}

/// A simulated peer before the SFU's answer: its socket, its connection, and its offer of
/// video then audio in one direction.
struct NewPeer {
    socket: UdpSocket,
    addr: SocketAddr,
    rtc: Rtc,
    offer: String,
    pending: Option<str0m::change::SdpPendingOffer>,
    video: Mid,
    audio: Mid,
}

impl NewPeer {
    async fn new(
        crypto: &Arc<str0m::config::CryptoProvider>,
        cert: &str0m::config::DtlsCert,
        direction: Direction,
    ) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(crypto.clone())
            .set_dtls_cert(cert.clone())
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut change = rtc.sdp_api();
        let video = change.add_media(MediaKind::Video, direction, None, None, None);
        let audio = change.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending) = change.apply().expect("offer");
        Self {
            socket,
            addr,
            rtc,
            offer: offer.to_sdp_string(),
            pending: Some(pending),
            video,
            audio,
        }
    }

    /// Takes the SFU's answer.
    fn answered(mut self, answer: &str) -> Self {
        let pending = self.pending.take().expect("one answer");
        self.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(answer).expect("answer"))
            .expect("accept");
        self
    }
}

/// Hands a datagram that arrived at `addr` to the peer.
fn feed(rtc: &mut Rtc, source: SocketAddr, addr: SocketAddr, datagram: &[u8]) {
    if let Ok(contents) = datagram.try_into() {
        let _ = rtc.handle_input(Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: addr,
                contents,
            },
        ));
    }
}

/// Sends what the peer wants sent; returns its next timeout.
fn flush(rtc: &mut Rtc, socket: &UdpSocket, seen: &Seen, connected: &mut bool) -> Instant {
    loop {
        match rtc.poll_output() {
            Ok(Output::Transmit(t)) => {
                let _ = socket.try_send_to(&t.contents, t.destination);
            }
            Ok(Output::Timeout(at)) => return at,
            Ok(Output::Event(Event::Connected)) => {
                if !*connected {
                    *connected = true;
                    seen.connected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Output::Event(_)) => {}
            Err(_) => return Instant::now() + Duration::from_secs(1),
        }
    }
}

/// A light viewer: counts SRTP video packets and bytes, gives the rest to its peer.
async fn view(peer: NewPeer, video_pt: u8, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let NewPeer {
        mut rtc,
        socket,
        addr,
        ..
    } = peer;
    let mut buffer = vec![0u8; 2048];
    let mut connected = false;
    let mut first = true;
    let mut next = flush(&mut rtc, &socket, &seen, &mut connected);
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let Ok((n, source)) = received else { continue };
                let datagram = &buffer[..n];
                // RTP, not RTCP (RFC 5761: RTCP's packet types 64 to 95 with the marker bit).
                let rtp = n > 12 && (128..=191).contains(&datagram[0])
                    && !(64..=95).contains(&(datagram[1] & 0x7f));
                if rtp && connected {
                    seen.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if datagram[1] & 0x7f == video_pt && datagram[1] & 0x80 != 0 {
                        seen.frames.fetch_add(1, Ordering::Relaxed);
                        if first {
                            first = false;
                            seen.first_frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                feed(&mut rtc, source, addr, datagram);
            }
            () = tokio::time::sleep_until(next.into()) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
        next = flush(&mut rtc, &socket, &seen, &mut connected);
    }
}

/// The publisher: `frame_bytes` VP8 frames at 30 fps (a keyframe every 2 s, and one at
/// once when asked) and Opus at 50 fps, until `stop`.
async fn publish(peer: NewPeer, frame_bytes: usize, sent: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let NewPeer {
        mut rtc,
        socket,
        addr,
        video,
        audio,
        ..
    } = peer;
    let mut buffer = vec![0u8; 2048];
    let start = Instant::now();
    let (mut next_video, mut next_audio) = (start, start);
    let mut frame = 0u64;
    let mut keyframe_asked = false;
    let seen = Seen::default();
    let mut connected = false;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if connected && now >= next_video {
            let mut data = vec![0x01u8; frame_bytes];
            if frame % 60 == 0 || std::mem::take(&mut keyframe_asked) {
                data[0] = 0x00;
            }
            if let Some(writer) = rtc.writer(video) {
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Vp8)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    let ticks = now.duration_since(start).as_micros() as u64 * 9 / 100;
                    if writer
                        .write(pt, now, MediaTime::from_90khz(ticks), data)
                        .is_ok()
                    {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            frame += 1;
            next_video += Duration::from_micros(33_333);
        }
        if connected && now >= next_audio {
            if let Some(writer) = rtc.writer(audio) {
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    let t = MediaTime::new(
                        now.duration_since(start).as_micros() as u64 * 48 / 1000,
                        str0m::media::Frequency::FORTY_EIGHT_KHZ,
                    );
                    let _ = writer.write(pt, now, t, vec![0xfc; 120]);
                }
            }
            next_audio += Duration::from_millis(20);
        }
        // Output first: a keyframe request must be seen before the next frame.
        loop {
            match rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Event(Event::Connected)) => {
                    connected = true;
                    seen.connected.fetch_add(1, Ordering::Relaxed);
                    next_video = Instant::now();
                    next_audio = next_video;
                }
                Ok(Output::Event(Event::KeyframeRequest(_))) => keyframe_asked = true,
                Ok(Output::Event(_)) => {}
            }
        }
        let wake = next_video
            .min(next_audio)
            .max(Instant::now() + Duration::from_micros(200));
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                if let Ok((n, source)) = received {
                    feed(&mut rtc, source, addr, &buffer[..n]);
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        let _ = rtc.handle_input(Input::Timeout(Instant::now()));
    }
}

struct Setup {
    sfu: Sfu,
    crypto: Arc<str0m::config::CryptoProvider>,
    cert: str0m::config::DtlsCert,
    seen: Arc<Seen>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Setup {
    async fn start(threads: usize, send_batch: usize, gso: bool, frame_bytes: usize) -> Self {
        let sfu = Sfu::start(&SfuSettings {
            udp_listen: "127.0.0.1:0".parse().expect("addr"),
            send_batch,
            threads,
            gso,
            ..SfuSettings::default()
        })
        .expect("sfu");
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        // One certificate for all simulated peers: generating one each would dominate set-up.
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .expect("certificate");
        let setup = Self {
            sfu,
            crypto,
            cert,
            seen: Arc::new(Seen::default()),
            sent: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let publisher = NewPeer::new(&setup.crypto, &setup.cert, Direction::SendOnly).await;
        let (_, answer) = (setup.sfu)
            .publish("bench", publisher.offer.clone())
            .await
            .expect("publish");
        tokio::spawn(publish(
            publisher.answered(&answer),
            frame_bytes,
            setup.sent.clone(),
            setup.stop.clone(),
        ));
        setup
    }

    /// Adds one viewer; returns when its answer is in (its first frame comes later).
    async fn viewer(&self) {
        let viewer = NewPeer::new(&self.crypto, &self.cert, Direction::RecvOnly).await;
        let video_pt = viewer
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| *p.pt())
            .expect("VP8 offered");
        let (_, answer) = (self.sfu)
            .play("bench", viewer.offer.clone())
            .await
            .expect("play");
        tokio::spawn(view(
            viewer.answered(&answer),
            video_pt,
            self.seen.clone(),
            self.stop.clone(),
        ));
    }

    async fn wait(&self, what: &str, done: impl Fn() -> bool, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "{what} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn round(r: Round) -> Outcome {
    let frame_bytes = r.bits_per_second / 8 / 30;
    let setup = Setup::start(r.threads, r.send_batch, r.gso, frame_bytes).await;
    setup
        .wait(
            "the publisher connects",
            || setup.sent.load(Ordering::Relaxed) > 0,
            Duration::from_secs(10),
        )
        .await;
    // Viewers join in waves of 50, as an audience does, rather than all in one instant.
    for wave in 0..r.viewers.div_ceil(50) {
        for _ in 0..50.min(r.viewers - wave * 50) {
            setup.viewer().await;
        }
        let want = (wave * 50 + 50).min(r.viewers);
        setup
            .wait(
                "viewers connect",
                || setup.seen.connected.load(Ordering::Relaxed) >= want,
                Duration::from_secs(30),
            )
            .await;
    }
    setup
        .wait(
            "every viewer's first frame",
            || setup.seen.first_frames.load(Ordering::Relaxed) >= r.viewers,
            Duration::from_secs(10),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, t0) = (sfu_threads_cpu(), Instant::now());
    let (frames0, bytes0, sent0) = (
        setup.seen.frames.load(Ordering::Relaxed),
        setup.seen.bytes.load(Ordering::Relaxed),
        setup.sent.load(Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_secs(r.seconds)).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = sfu_threads_cpu() - cpu0;
    let frames = setup.seen.frames.load(Ordering::Relaxed) - frames0;
    let bytes = setup.seen.bytes.load(Ordering::Relaxed) - bytes0;
    let sent = setup.sent.load(Ordering::Relaxed) - sent0;
    Outcome {
        cpu: cpu / wall,
        egress: bytes as f64 * 8.0 / wall,
        frames_ratio: frames as f64 / (sent.max(1) * r.viewers as u64) as f64,
    }
}

fn main() {
    // The simulated peers run on one thread, as a separate machine's would not share the
    // SFU's: the SFU's threads get the rest.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let args: Vec<String> = std::env::args().collect();
        if !args.iter().any(|a| a == "--bench") {
            let r = round(Round { viewers: 2, seconds: 1, bits_per_second: 2_000_000, threads: 2, send_batch: 64, gso: true }).await;
            println!(
                "sfu udp smoke: 2 viewers on 2 engine threads, {:.1}% of a core, {:.0}% of frames received",
                r.cpu * 100.0,
                r.frames_ratio * 100.0
            );
            assert!(r.frames_ratio > 0.5, "viewers received frames");
            return;
        }
        if args.iter().any(|a| a == "batch") {
            batched_against_single_sends().await;
        } else if args.iter().any(|a| a == "gso") {
            segmented_against_plain().await;
        } else if args.iter().any(|a| a == "join") {
            join_and_keyframe().await;
        } else {
            scaling(&args).await;
        }
    });
}

/// Viewers × engine threads × bitrate, side by side in one run.
async fn scaling(args: &[String]) {
    let viewer_counts: Vec<usize> = args
        .iter()
        .find_map(|a| a.strip_prefix("viewers="))
        .map(|list| list.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 300, 600, 1000]);
    println!("built-in SFU on UDP loopback: one publisher to N viewers, 10 s each, 1 and 2 engine threads");
    println!(
        "{:>9} {:>8} {:>7} {:>10} {:>14} {:>16} {:>15} {:>9}",
        "bitrate",
        "viewers",
        "threads",
        "SFU CPU",
        "egress",
        "CPU/viewer/s",
        "egress/core",
        "frames"
    );
    for bits in [600_000usize, 2_000_000] {
        for &viewers in &viewer_counts {
            for threads in [1usize, 2] {
                let r = round(Round {
                    viewers,
                    seconds: 10,
                    bits_per_second: bits,
                    threads,
                    send_batch: 64,
                    gso: true,
                })
                .await;
                println!(
                    "{:>6} k {:>8} {:>7} {:>7.2} c {:>9.0} Mb/s {:>13.3} ms {:>9.2} Gb/s {:>8.1}%",
                    bits / 1000,
                    viewers,
                    threads,
                    r.cpu,
                    r.egress / 1e6,
                    r.cpu_per_viewer_ms(viewers),
                    r.gbps_per_core(),
                    r.frames_ratio * 100.0
                );
            }
        }
    }
}

/// Sends batched with sendmmsg (64 per call) against one datagram per call, side by side.
async fn batched_against_single_sends() {
    println!("built-in SFU on UDP loopback, 2 Mbit/s to N viewers (10 s each), one engine thread:");
    println!("one datagram per send call against sendmmsg batches of 64, in one run");
    println!(
        "{:>8} {:>16} {:>16} {:>8} {:>18}",
        "viewers", "1 per call", "64 per call", "ratio", "frames received"
    );
    for viewers in [100usize, 300] {
        let single = round(Round {
            viewers,
            seconds: 10,
            bits_per_second: 2_000_000,
            threads: 1,
            send_batch: 1,
            gso: false,
        })
        .await;
        let batched = round(Round {
            viewers,
            seconds: 10,
            bits_per_second: 2_000_000,
            threads: 1,
            send_batch: 64,
            gso: false,
        })
        .await;
        println!(
            "{viewers:>8} {:>13.3} ms {:>13.3} ms {:>8.2} {:>8.1} % {:>7.1} %",
            single.cpu_per_viewer_ms(viewers),
            batched.cpu_per_viewer_ms(viewers),
            batched.cpu / single.cpu,
            single.frames_ratio * 100.0,
            batched.frames_ratio * 100.0,
        );
    }
}

/// UDP GSO (a frame's packets to one viewer as one message) against one message per
/// datagram, both in sendmmsg batches of 64, side by side on one engine thread.
async fn segmented_against_plain() {
    println!(
        "built-in SFU on UDP loopback, one engine thread, 10 s each: sendmmsg batches without"
    );
    println!("and with UDP GSO, in one run");
    println!(
        "{:>9} {:>8} {:>14} {:>14} {:>8} {:>16} {:>16}",
        "bitrate", "viewers", "without GSO", "with GSO", "ratio", "egress/core", "frames"
    );
    for bits in [600_000usize, 2_000_000] {
        for viewers in [300usize, 600] {
            let round_with = |gso| Round {
                viewers,
                seconds: 10,
                bits_per_second: bits,
                threads: 1,
                send_batch: 64,
                gso,
            };
            let plain = round(round_with(false)).await;
            let segmented = round(round_with(true)).await;
            println!(
                "{:>6} k {viewers:>8} {:>11.3} ms {:>11.3} ms {:>8.2} {:>6.2} / {:.2} Gb/s {:>6.1} / {:.1} %",
                bits / 1000,
                plain.cpu_per_viewer_ms(viewers),
                segmented.cpu_per_viewer_ms(viewers),
                segmented.cpu / plain.cpu,
                plain.gbps_per_core(),
                segmented.gbps_per_core(),
                plain.frames_ratio * 100.0,
                segmented.frames_ratio * 100.0,
            );
        }
    }
}

/// Small rooms: a viewer's time from its POST to its first frame (the SFU asks the
/// publisher for a keyframe at once), with 1 and 2 engine threads. With two, half the
/// viewers land on the engine that does not hold the publisher, so their keyframe request
/// and their frames cross engines.
async fn join_and_keyframe() {
    println!(
        "small rooms: a viewer's POST to its first video frame, 2 Mbit/s, 20 viewers one by one"
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10}",
        "threads", "median", "p90", "worst"
    );
    for threads in [1usize, 2] {
        let setup = Setup::start(threads, 64, true, 2_000_000 / 8 / 30).await;
        setup
            .wait(
                "the publisher connects",
                || setup.sent.load(Ordering::Relaxed) > 0,
                Duration::from_secs(10),
            )
            .await;
        let mut times = Vec::new();
        for n in 1..=20 {
            let started = Instant::now();
            setup.viewer().await;
            setup
                .wait(
                    "the viewer's first frame",
                    || setup.seen.first_frames.load(Ordering::Relaxed) >= n,
                    Duration::from_secs(10),
                )
                .await;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            // Past the publisher's keyframe-request limit, so each join asks anew.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{threads:>8} {:>7.1} ms {:>7.1} ms {:>7.1} ms",
            times[times.len() / 2],
            times[times.len() * 9 / 10],
            times[times.len() - 1]
        );
    }
}
