//! The built-in SFU on real UDP sockets over loopback: one 2 Mbit/s publisher (30 fps VP8 in
//! ~8.3 KB frames, 50 fps Opus) to N viewers, all str0m peers in this process on sockets of
//! their own. The SFU runs on its own thread as in `whipgate serve`; its CPU time is read
//! from /proc for that thread only, so the simulated peers' work is not counted.
//!
//! Run: `cargo bench --bench sfu_udp` (under `cargo test` it runs one short round).
//! Prints, per N: the SFU thread's CPU share of one core, CPU per viewer per media second,
//! and the share of frames the viewers received (real time holds while it stays near 100%
//! and the CPU share below one core).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use whipgate::sfu::{Sfu, SfuSettings};

const FRAME_BYTES: usize = 2_000_000 / 8 / 30;

struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    video: Mid,
    audio: Mid,
    frames: u64,
    connected: bool,
}

fn peer(
    crypto: &Arc<str0m::config::CryptoProvider>,
    cert: &str0m::config::DtlsCert,
    direction: Direction,
) -> (Peer, String, str0m::change::SdpPendingOffer) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_nonblocking(true).expect("nonblocking");
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
    (
        Peer {
            rtc,
            socket,
            addr,
            video,
            audio,
            frames: 0,
            connected: false,
        },
        offer.to_sdp_string(),
        pending,
    )
}

/// Feeds every peer what arrived on its socket and sends what it wants sent.
fn pump(peers: &mut [Peer], buffer: &mut [u8]) {
    let now = Instant::now();
    for p in peers.iter_mut() {
        while let Ok((n, source)) = p.socket.recv_from(buffer) {
            if let Ok(contents) = buffer[..n].try_into() {
                let _ = p.rtc.handle_input(Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: p.addr,
                        contents,
                    },
                ));
            }
        }
        let _ = p.rtc.handle_input(Input::Timeout(now));
        loop {
            match p.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = p.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Event(Event::Connected)) => p.connected = true,
                Ok(Output::Event(Event::MediaData(d))) if d.mid == p.video => p.frames += 1,
                Ok(Output::Event(_)) => {}
            }
        }
    }
}

/// CPU seconds the SFU's thread has used so far.
fn sfu_thread_cpu() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "whipgate-sfu" {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            return (utime + stime) / ticks;
        }
    }
    0.0
}

struct Result {
    cpu_share: f64,
    frames_ratio: f64,
}

async fn round(viewers: usize, seconds: u64) -> Result {
    round_with(viewers, seconds, SfuSettings::default().send_batch).await
}

/// `send_batch`: datagrams per send syscall (1: one sendto-like call each).
async fn round_with(viewers: usize, seconds: u64, send_batch: usize) -> Result {
    let sfu = Sfu::start(&SfuSettings {
        udp_listen: "127.0.0.1:0".parse().expect("addr"),
        send_batch,
        ..SfuSettings::default()
    })
    .expect("sfu");
    let crypto = Arc::new(str0m::crypto::from_feature_flags());
    // One certificate for all simulated peers: generating one each would dominate set-up.
    let cert = crypto
        .dtls_provider
        .generate_certificate()
        .expect("certificate");
    let mut peers = Vec::new();
    let (publisher, offer, pending) = peer(&crypto, &cert, Direction::SendOnly);
    let (_, answer) = sfu.publish("bench", offer).await.expect("publish");
    let mut publisher = publisher;
    publisher
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).expect("answer"),
        )
        .expect("accept");
    peers.push(publisher);
    let mut buffer = vec![0u8; 2048];
    // Viewers join in waves of 20, as an audience does, rather than all in one instant.
    for wave in 0..viewers.div_ceil(20) {
        for _ in 0..20.min(viewers - wave * 20) {
            let (mut viewer, offer, pending) = peer(&crypto, &cert, Direction::RecvOnly);
            let (_, answer) = sfu.play("bench", offer).await.expect("play");
            viewer
                .rtc
                .sdp_api()
                .accept_answer(
                    pending,
                    SdpAnswer::from_sdp_string(&answer).expect("answer"),
                )
                .expect("accept");
            peers.push(viewer);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !peers.iter().all(|p| p.connected) && Instant::now() < deadline {
            pump(&mut peers, &mut buffer);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let connected = peers.iter().filter(|p| p.connected).count();
        assert!(
            connected == peers.len(),
            "{connected} of {} peers connected",
            peers.len()
        );
    }
    let start = Instant::now();
    let mut cpu_start = None;
    let mut sent = 0u64;
    let mut frames_at_measure = 0u64;
    let (mut next_video, mut next_audio) = (start, start);
    let warmup = Duration::from_secs(1);
    let end = start + warmup + Duration::from_secs(seconds);
    while Instant::now() < end {
        let now = Instant::now();
        if cpu_start.is_none() && now >= start + warmup {
            cpu_start = Some((sfu_thread_cpu(), now));
            frames_at_measure = peers[1..].iter().map(|p| p.frames).sum();
            sent = 0;
        }
        let elapsed = now.duration_since(start);
        if now >= next_video {
            let frame = (elapsed.as_millis() / 33) as u64;
            let mut data = vec![0x01u8; FRAME_BYTES];
            if frame % 60 == 0 {
                data[0] = 0x00;
            }
            let publisher = &mut peers[0];
            if let Some(writer) = publisher.rtc.writer(publisher.video) {
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Vp8)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    let ticks = elapsed.as_micros() as u64 * 9 / 100;
                    let _ = writer.write(pt, now, MediaTime::from_90khz(ticks), data);
                    sent += 1;
                }
            }
            next_video += Duration::from_micros(33_333);
        }
        if now >= next_audio {
            let publisher = &mut peers[0];
            if let Some(writer) = publisher.rtc.writer(publisher.audio) {
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    let t = MediaTime::new(
                        elapsed.as_micros() as u64 * 48 / 1000,
                        str0m::media::Frequency::FORTY_EIGHT_KHZ,
                    );
                    let _ = writer.write(pt, now, t, vec![0xfc; 120]);
                }
            }
            next_audio += Duration::from_millis(20);
        }
        pump(&mut peers, &mut buffer);
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let (cpu0, t0) = cpu_start.expect("measured");
    let cpu = sfu_thread_cpu() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let received: u64 = peers[1..].iter().map(|p| p.frames).sum::<u64>() - frames_at_measure;
    Result {
        cpu_share: cpu / wall,
        frames_ratio: received as f64 / (sent.max(1) * viewers as u64) as f64,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    if !benching {
        let r = round(2, 1).await;
        println!(
            "sfu udp smoke: 2 viewers, SFU thread {:.1}% of a core, {:.0}% of frames received",
            r.cpu_share * 100.0,
            r.frames_ratio * 100.0
        );
        return;
    }
    if std::env::args().any(|a| a == "batch") {
        batched_against_single_sends().await;
        return;
    }
    println!("built-in SFU on UDP loopback: one 2 Mbit/s publisher to N viewers (10 s each)");
    println!(
        "{:>8} {:>20} {:>26} {:>18}",
        "viewers", "SFU thread CPU", "CPU per viewer per media s", "frames received"
    );
    for viewers in [1usize, 10, 50, 100, 200, 300] {
        let r = round(viewers, 10).await;
        println!(
            "{viewers:>8} {:>17.1} % {:>23.2} ms {:>17.1} %",
            r.cpu_share * 100.0,
            r.cpu_share * 1000.0 / viewers as f64,
            r.frames_ratio * 100.0
        );
    }
}

/// Sends batched with sendmmsg (64 per call) against one datagram per call, side by side:
/// the SFU thread's CPU per viewer for the same workload.
async fn batched_against_single_sends() {
    println!("built-in SFU on UDP loopback, 2 Mbit/s to N viewers (10 s each): one datagram per");
    println!("send call against sendmmsg batches of 64, in one run");
    println!(
        "{:>8} {:>16} {:>16} {:>8} {:>18}",
        "viewers", "1 per call", "64 per call", "ratio", "frames received"
    );
    for viewers in [50usize, 100, 200] {
        let single = round_with(viewers, 10, 1).await;
        let batched = round_with(viewers, 10, 64).await;
        println!(
            "{viewers:>8} {:>13.2} ms {:>13.2} ms {:>8.2} {:>8.1} % {:>7.1} %",
            single.cpu_share * 1000.0 / viewers as f64,
            batched.cpu_share * 1000.0 / viewers as f64,
            batched.cpu_share / single.cpu_share,
            single.frames_ratio * 100.0,
            batched.frames_ratio * 100.0,
        );
    }
}
