//! The SFU engine with real str0m peers on the in-memory network: what reaches viewers,
//! what reaches publishers, and what survives loss.

use std::time::Duration;

use super::loopback::{Loopback, Received};
use super::SfuError;
use str0m::media::MediaKind;

const STEP: Duration = Duration::from_millis(5);

/// Sends `seconds` of 30 fps video (a keyframe every `gop` frames, the first one a
/// keyframe when `key_first`) and 50 fps audio from `publisher`; returns the video frames sent.
fn media(
    lb: &mut Loopback,
    publisher: usize,
    seconds: u32,
    gop: u32,
    size: usize,
    key_first: bool,
) -> u32 {
    media_layers(lb, publisher, seconds, gop, &[(None, size)], key_first)
}

fn media_layers(
    lb: &mut Loopback,
    publisher: usize,
    seconds: u32,
    gop: u32,
    layers: &[(Option<&str>, usize)],
    key_first: bool,
) -> u32 {
    let steps = seconds * 200;
    let mut frames = 0;
    for step in 0..steps {
        if step % 4 == 0 {
            lb.send_audio(publisher, 80);
        }
        if step % 7 == 0 {
            let keyframe = if key_first {
                frames % gop == 0
            } else {
                frames % gop == gop - 1
            };
            for (rid, size) in layers {
                lb.send_video(publisher, *rid, keyframe, *size, (frames % 251) as u8);
            }
            frames += 1;
        }
        lb.advance(STEP);
    }
    frames
}

fn video(received: &[Received]) -> Vec<&Received> {
    received
        .iter()
        .filter(|r| r.kind == MediaKind::Video)
        .collect()
}

fn audio_count(received: &[Received]) -> usize {
    received
        .iter()
        .filter(|r| r.kind == MediaKind::Audio)
        .count()
}

#[test]
fn forwards_audio_and_video_to_every_viewer() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    let viewers: Vec<usize> = (0..3).map(|_| lb.play("s").expect("play")).collect();
    assert!(lb.connect_all(Duration::from_secs(5)), "peers connect");
    let sent = media(&mut lb, publisher, 3, 30, 1000, true);
    for viewer in viewers {
        let got = video(&lb.clients[viewer].received);
        assert!(
            got.len() as u32 >= sent - 5,
            "viewer got {} of {sent} frames",
            got.len()
        );
        assert!(got[0].keyframe, "a viewer starts on a keyframe");
        assert!(audio_count(&lb.clients[viewer].received) >= 140);
    }
    let status = lb.engine.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].viewers, 3);
    assert!(status[0].publishing);
}

#[test]
fn a_late_viewer_waits_for_a_keyframe_and_asks_the_publisher_for_one() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    assert!(lb.connect_all(Duration::from_secs(5)));
    media(&mut lb, publisher, 1, 1000, 500, true);
    let before = lb.clients[publisher].keyframe_requests;
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    // Only delta frames: the viewer must get nothing, and the publisher a request.
    media(&mut lb, publisher, 1, 1000, 500, false);
    assert!(
        video(&lb.clients[viewer].received).is_empty(),
        "no frame before a keyframe"
    );
    assert!(
        lb.clients[publisher].keyframe_requests > before,
        "PLI relayed on join"
    );
    // The publisher answers with a keyframe; from then on the viewer decodes.
    media(&mut lb, publisher, 1, 30, 500, true);
    let got = video(&lb.clients[viewer].received);
    assert!(got.len() >= 25 && got[0].keyframe, "got {}", got.len());
    // A viewer's own PLI (its decoder lost a reference) reaches the publisher.
    let before = lb.clients[publisher].keyframe_requests;
    lb.request_keyframe(viewer);
    media(&mut lb, publisher, 1, 1000, 500, false);
    assert!(lb.clients[publisher].keyframe_requests > before);
}

#[test]
fn nack_and_retransmission_repair_a_lossy_viewer() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    let lossy = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    lb.clients[lossy].drop_every = 10;
    // 3000-byte frames take three packets: without repair a tenth of the packets lost
    // would cost about a quarter of the frames.
    let sent = media(&mut lb, publisher, 4, 60, 3000, true);
    let got = video(&lb.clients[lossy].received).len() as u32;
    assert!(
        lb.clients[lossy].dropped > 50,
        "dropped {}",
        lb.clients[lossy].dropped
    );
    assert!(
        got * 100 >= sent * 97,
        "got {got} of {sent} frames despite loss"
    );
}

#[test]
fn a_simulcast_publisher_serves_viewers_its_highest_layer() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &["l", "h"]).expect("publish");
    assert!(lb.connect_all(Duration::from_secs(5)));
    let layers = [(Some("l"), 300), (Some("h"), 1100)];
    media_layers(&mut lb, publisher, 1, 30, &layers, true);
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    media_layers(&mut lb, publisher, 2, 30, &layers, true);
    let got = video(&lb.clients[viewer].received);
    assert!(got.len() >= 40, "got {}", got.len());
    assert!(got.iter().all(|r| r.len == 1100), "only the high layer");
    assert_eq!(
        lb.engine.status()[0].layers,
        vec!["h".to_owned(), "l".to_owned()]
    );
}

#[test]
fn viewers_go_with_their_publisher() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    let (p, v) = (lb.clients[publisher].session, lb.clients[viewer].session);
    lb.engine.end(lb.now, p).expect("publisher ends");
    assert!(lb.engine.status().is_empty());
    assert_eq!(lb.engine.peer_count(), 0);
    // The viewer's DELETE succeeds once (it may not know yet), then the session is gone.
    assert_eq!(lb.engine.end(lb.now, v), Ok(()));
    assert_eq!(lb.engine.end(lb.now, v), Err(SfuError::NoSession));
    assert_eq!(lb.engine.end(lb.now, p), Err(SfuError::NoSession));
}

#[test]
fn no_publisher_no_viewer_and_one_publisher_per_stream() {
    let mut lb = Loopback::new();
    assert!(matches!(lb.play("s"), Err(SfuError::NoPublisher)));
    lb.publish("s", &[]).expect("publish");
    assert!(matches!(
        lb.publish("s", &[]),
        Err(SfuError::AlreadyPublished)
    ));
    assert!(
        lb.publish("t", &[]).is_ok(),
        "another stream is independent"
    );
}

#[test]
fn garbage_offers_and_datagrams_are_refused_quietly() {
    let mut lb = Loopback::new();
    assert!(matches!(
        lb.engine.publish(lb.now, "s", "v=0\r\nnot sdp"),
        Err(SfuError::Offer(_))
    ));
    let mut sent = 0;
    for datagram in [
        &[][..],
        &[0u8; 1][..],
        &[0xffu8; 1500][..],
        &[0x80u8, 0x60, 0, 1][..],
    ] {
        lb.engine.receive(
            lb.now,
            "10.9.9.9:9".parse().expect("addr"),
            datagram,
            &mut |_, _| sent += 1,
        );
    }
    assert_eq!(sent, 0);
}
