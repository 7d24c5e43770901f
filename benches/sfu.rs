//! The built-in SFU's forwarding cost: one 2 Mbit/s publisher (30 fps VP8 in ~8.3 KB
//! frames, 50 fps Opus) to N viewers, on the in-memory network, so only the SFU engine's
//! own CPU is timed (SRTP, depacketizing, repacketizing, RTCP), not sockets or the
//! simulated viewers.
//!
//! Run: `cargo bench --bench sfu` (under `cargo test` it runs one tiny round as a smoke test).
//! Prints, per N, the engine's CPU per second of media, the CPU per viewer, and how many
//! viewers one core could serve in real time at that cost.

// As `whipgate serve` allocates: the allocator is a large part of the per-packet cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use whipgate::sfu::loopback::Loopback;

const FRAME_BYTES: usize = 2_000_000 / 8 / 30;

/// Engine CPU seconds per media second, for `viewers` viewers.
fn engine_cpu_per_media_second(viewers: usize, seconds: u32) -> f64 {
    engine_cpu(viewers, 0, seconds)
}

/// The same with `legs` relay legs besides the viewers (each leg: the SFU's own send-only
/// session on a target, with full ICE and its own SRTP).
fn engine_cpu(viewers: usize, legs: usize, seconds: u32) -> f64 {
    let mut lb = Loopback::new();
    let publisher = lb.publish("bench", &[]).expect("publish");
    for _ in 0..viewers {
        lb.play("bench").expect("play");
    }
    assert!(lb.connect_all(Duration::from_secs(10)), "peers connect");
    for _ in 0..legs {
        lb.relay("bench").expect("relay leg");
    }
    assert!(
        lb.connect_all(Duration::from_secs(10)),
        "relay legs connect"
    );
    // Warm-up: keyframe, viewer state, buffers.
    run(&mut lb, publisher, 1);
    lb.engine_time = Duration::ZERO;
    run(&mut lb, publisher, seconds);
    let frames: usize = lb.clients[1..]
        .iter()
        .map(|c| c.received.len())
        .sum::<usize>()
        / (viewers + legs).max(1);
    assert!(
        frames > 0 || viewers + legs == 0,
        "viewers and targets received media"
    );
    lb.engine_time.as_secs_f64() / f64::from(seconds)
}

fn run(lb: &mut Loopback, publisher: usize, seconds: u32) {
    let step = Duration::from_millis(5);
    for n in 0..seconds * 200 {
        if n % 4 == 0 {
            lb.send_audio(publisher, 120);
        }
        if n % 7 == 0 {
            let frame = n / 7;
            lb.send_video(
                publisher,
                None,
                frame % 60 == 0,
                FRAME_BYTES,
                (frame % 251) as u8,
            );
        }
        lb.advance(step);
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    if !benching {
        let cpu = engine_cpu_per_media_second(2, 1);
        println!(
            "sfu forwarding smoke: 2 viewers, engine {:.1} ms per media second",
            cpu * 1e3
        );
        let cpu = engine_cpu(0, 2, 1);
        println!(
            "sfu relay smoke: 2 relay legs, engine {:.1} ms per media second",
            cpu * 1e3
        );
        return;
    }
    if std::env::args().any(|a| a == "nack") {
        nack_recovery();
        return;
    }
    if std::env::args().any(|a| a == "relay") {
        relay_legs_against_viewers();
        return;
    }
    let base = engine_cpu_per_media_second(1, 5);
    println!("built-in SFU: one 2 Mbit/s publisher to N viewers, engine CPU only");
    println!(
        "{:>8} {:>22} {:>18} {:>26}",
        "viewers", "CPU per media second", "CPU per viewer", "real-time viewers per core"
    );
    for viewers in [1usize, 10, 25, 50, 100] {
        let cpu = if viewers == 1 {
            base
        } else {
            engine_cpu_per_media_second(viewers, 5)
        };
        let per_viewer = cpu / viewers as f64;
        let marginal = if viewers > 1 {
            (cpu - base) / (viewers - 1) as f64
        } else {
            per_viewer
        };
        let capacity = ((1.0 - base) / marginal + 1.0).floor();
        println!(
            "{viewers:>8} {:>19.1} ms {:>15.3} ms {:>26}",
            cpu * 1e3,
            marginal * 1e3,
            capacity as u64,
        );
    }
}

/// CPU per relay leg beside CPU per viewer, in one run: the same publisher, N outputs of
/// each kind, the publisher-only cost subtracted.
fn relay_legs_against_viewers() {
    let alone = engine_cpu(0, 0, 5);
    println!("built-in SFU: a 2 Mbit/s publisher to N viewers or N relay legs, engine CPU only");
    println!(
        "{:>4} {:>18} {:>18} {:>10}",
        "N", "per viewer", "per relay leg", "leg/viewer"
    );
    for n in [1usize, 5, 10, 25] {
        let viewers = (engine_cpu(n, 0, 5) - alone) / n as f64;
        let legs = (engine_cpu(0, n, 5) - alone) / n as f64;
        println!(
            "{n:>4} {:>15.3} ms {:>15.3} ms {:>10.2}",
            viewers * 1e3,
            legs * 1e3,
            legs / viewers
        );
    }
}

/// NACK recovery in a small room: a viewer losing every n-th packet on its leg, beside the
/// publisher's engine or on the other one of two; the share of the frames sent that it
/// decodes (str0m answers its NACKs with RTX from the leg's own cache, on its engine).
fn nack_recovery() {
    println!(
        "built-in SFU: frames a lossy viewer decodes, 8 s of 2 Mbit/s video (3 packets a frame)"
    );
    println!(
        "{:>10} {:>22} {:>22} {:>22}",
        "loss", "1 engine", "2 engines, same", "2 engines, other"
    );
    for every in [20u32, 10, 5] {
        let mut shares = Vec::new();
        for (engines, other) in [(1usize, false), (2, false), (2, true)] {
            let mut lb = Loopback::sharded(engines);
            let publisher = lb.publish("bench", &[]).expect("publish");
            let home = whipgate::sfu::home_shard("bench", engines);
            lb.next_viewer_shard = Some(if other { 1 - home } else { home });
            let viewer = lb.play("bench").expect("play");
            assert!(lb.connect_all(Duration::from_secs(10)), "peers connect");
            lb.clients[viewer].drop_every = every;
            let step = Duration::from_millis(5);
            let mut sent = 0u32;
            for n in 0..8 * 200 {
                if n % 7 == 0 {
                    lb.send_video(publisher, None, sent % 60 == 0, 3000, (sent % 251) as u8);
                    sent += 1;
                }
                lb.advance(step);
            }
            let got = lb.clients[viewer]
                .received
                .iter()
                .filter(|r| r.kind == str0m::media::MediaKind::Video)
                .count();
            shares.push(got as f64 * 100.0 / f64::from(sent));
        }
        println!(
            "{:>8} % {:>21.1}% {:>21.1}% {:>21.1}%",
            100 / every,
            shares[0],
            shares[1],
            shares[2]
        );
    }
}
