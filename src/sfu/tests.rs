//! The SFU engine with real str0m peers on the in-memory network: what reaches viewers,
//! what reaches publishers, and what survives loss.

use std::time::Duration;

use super::loopback::{Loopback, Received};
use super::SfuError;
use str0m::media::MediaKind;

const STEP: Duration = Duration::from_millis(5);

/// Sends `seconds` of 30 fps video (a keyframe every `gop` frames, the first one a
/// keyframe when `key_first`) and 50 fps audio from `publisher`; returns the video frames sent.
pub(super) fn media(
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

pub(super) fn video(received: &[Received]) -> Vec<&Received> {
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

/// A publisher that stops sending its top layer (Chromium does as bandwidth drops) does not
/// leave its viewers without video: they move to a layer still sent.
#[test]
fn viewers_leave_a_layer_the_publisher_stopped_sending() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &["l", "h"]).expect("publish");
    assert!(lb.connect_all(Duration::from_secs(5)));
    let both = [(Some("l"), 300), (Some("h"), 1100)];
    media_layers(&mut lb, publisher, 1, 30, &both, true);
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    media_layers(&mut lb, publisher, 2, 30, &both, true);
    let before = video(&lb.clients[viewer].received).len();
    media_layers(&mut lb, publisher, 5, 30, &[(Some("l"), 300)], true);
    let after: Vec<usize> = video(&lb.clients[viewer].received)[before..]
        .iter()
        .map(|r| r.len)
        .collect();
    assert!(
        after.len() >= 40 && after.iter().rev().take(20).all(|len| *len == 300),
        "the low layer once the high one stopped: {after:?}"
    );
}

/// The WHEP layer extension: a viewer that asks for the low layer gets it from the next
/// keyframe on, and asking for nothing brings back the highest.
#[test]
fn a_viewer_chooses_its_simulcast_layer() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &["l", "h"]).expect("publish");
    assert!(lb.connect_all(Duration::from_secs(5)));
    let layers = [(Some("l"), 300), (Some("h"), 1100)];
    media_layers(&mut lb, publisher, 1, 30, &layers, true);
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    let session = lb.clients[viewer].session;
    let video_mid = lb.clients[viewer].video.expect("video mid").to_string();
    assert_eq!(
        lb.engine.viewer_layers(lb.now, session),
        vec![(video_mid.clone(), vec!["h".to_owned(), "l".to_owned()])]
    );
    media_layers(&mut lb, publisher, 2, 30, &layers, true);
    lb.engine
        .select_layer(session, &video_mid, Some("l"))
        .expect("select l");
    let before = video(&lb.clients[viewer].received).len();
    media_layers(&mut lb, publisher, 3, 30, &layers, true);
    let after: Vec<usize> = video(&lb.clients[viewer].received)[before..]
        .iter()
        .map(|r| r.len)
        .collect();
    assert!(after.len() >= 20, "got {}", after.len());
    assert!(
        after.iter().skip(after.len() / 2).all(|len| *len == 300),
        "the low layer after the switch: {after:?}"
    );
    lb.engine
        .select_layer(session, &video_mid, None)
        .expect("automatic again");
    let before = video(&lb.clients[viewer].received).len();
    media_layers(&mut lb, publisher, 4, 30, &layers, true);
    let back: Vec<usize> = video(&lb.clients[viewer].received)[before..]
        .iter()
        .map(|r| r.len)
        .collect();
    assert!(
        back.iter().skip(back.len() / 2).all(|len| *len == 1100),
        "{back:?}"
    );
    assert!(lb.engine.select_layer(session, "9", Some("l")).is_err());
    let audio_mid = lb.clients[viewer].audio.expect("audio mid").to_string();
    assert!(lb
        .engine
        .select_layer(session, &audio_mid, Some("l"))
        .is_err());
    // A choice made right after the 201, before the viewer connects, holds once it does.
    let early = lb.play("s").expect("play");
    let early_session = lb.clients[early].session;
    let early_mid = lb.clients[early].video.expect("video mid").to_string();
    lb.engine
        .select_layer(early_session, &early_mid, Some("l"))
        .expect("remembered until connected");
    assert!(lb.connect_all(Duration::from_secs(5)));
    media_layers(&mut lb, publisher, 2, 30, &layers, true);
    let got: Vec<usize> = video(&lb.clients[early].received)
        .iter()
        .map(|r| r.len)
        .collect();
    assert!(
        got.len() >= 20 && got.iter().all(|len| *len == 300),
        "{got:?}"
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

/// An ended session says goodbye (DTLS close_notify), so that the client knows at once
/// rather than after its consent checks fail; a drained publisher then reconnects at once.
#[test]
fn ended_peers_are_told_at_once() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    let p = lb.clients[publisher].session;
    lb.engine.end(lb.now, p).expect("publisher ends");
    lb.advance(Duration::from_millis(10));
    assert!(
        lb.clients[publisher].closed,
        "the publisher got close_notify"
    );
    assert!(lb.clients[viewer].closed, "its viewer too");
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

/// The SFU answers a passive offer as the DTLS client; a peer that misses its first flight
/// (FFmpeg's WHIP muxer reads it as part of its ICE exchange and drops it) must get it again.
/// Against OpenSSL's DTLS server (FFmpeg's) and dimpl's.
#[test]
fn the_dtls_client_role_retransmits_a_lost_first_flight() {
    let servers: [(&str, std::sync::Arc<str0m::config::CryptoProvider>); 2] = [
        (
            "openssl",
            std::sync::Arc::new(str0m_openssl::default_provider()),
        ),
        (
            "dimpl",
            std::sync::Arc::new(str0m_rust_crypto::default_provider()),
        ),
    ];
    for (server, crypto) in servers {
        let mut lb = Loopback::new();
        lb.next_passive = true;
        lb.next_crypto = Some(crypto);
        let publisher = lb.publish("s", &[]).expect("publish");
        lb.clients[publisher].drop_first_dtls = 1;
        assert!(
            lb.connect_all(Duration::from_secs(5)),
            "{server} server: the handshake completes after the SFU resends its flight"
        );
        assert_eq!(
            lb.clients[publisher].drop_first_dtls, 0,
            "a flight was dropped"
        );
        let viewer = lb.play("s").expect("play");
        assert!(lb.connect_all(Duration::from_secs(5)), "viewer connects");
        let sent = media(&mut lb, publisher, 2, 30, 1000, true);
        let got = video(&lb.clients[viewer].received).len() as u32;
        assert!(
            got >= sent / 2,
            "{server} server: viewer got {got} of {sent} frames"
        );
    }
}

/// An offer's `a=setup` decides the SFU's DTLS role, and so its DTLS stack.
#[test]
fn the_sfu_is_a_dtls_client_only_for_passive_offers() {
    use super::engine::offer_is_dtls_server;
    assert!(offer_is_dtls_server(
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:passive\r\n"
    ));
    assert!(!offer_is_dtls_server("v=0\r\na=setup:actpass\r\n"));
    assert!(!offer_is_dtls_server("v=0\r\na=setup:active\r\n"));
}

/// A publisher that sends media but no binding requests (libnice keeps a nominated pair
/// alive with indications and media) stays published long past the ICE-lite agent's 15 s.
#[test]
fn media_without_binding_requests_keeps_a_publisher_alive() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)), "peers connect");
    lb.clients[publisher].mute_stun = true;
    media(&mut lb, publisher, 40, 30, 600, true);
    let before = video(&lb.clients[viewer].received).len();
    let sent = media(&mut lb, publisher, 2, 30, 600, true);
    let after = video(&lb.clients[viewer].received).len();
    assert!(
        after - before + 5 >= sent as usize,
        "after 40 s without binding requests the viewer got {} of {sent} frames",
        after - before
    );
    let status = lb.engine.status();
    assert!(
        status.iter().any(|s| s.stream == "s"),
        "the stream is still listed"
    );
}

/// A publisher from which nothing arrives any more ends after the idle limit, and its
/// viewers with it.
#[test]
fn a_silent_peer_ends_after_the_idle_limit() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    let _viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)), "peers connect");
    lb.clients[publisher].silent = true;
    for _ in 0..(25 * 20) {
        lb.advance(Duration::from_millis(50));
    }
    assert!(
        lb.engine.status().iter().any(|s| s.stream == "s"),
        "25 s of silence is within the limit"
    );
    for _ in 0..(10 * 20) {
        lb.advance(Duration::from_millis(50));
    }
    assert!(
        lb.engine.status().iter().all(|s| s.stream != "s"),
        "35 s of silence ends the stream"
    );
}

/// A relay leg is the SFU's own send-only session on another backend: it connects as a
/// full ICE agent, and the target receives the publisher's audio and video like a viewer.
#[test]
fn a_relay_leg_carries_the_stream_to_its_target() {
    use super::LegEvent;
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    let viewer = lb.play("s").expect("play");
    assert!(
        matches!(
            lb.engine.relay_offer(lb.now, "s"),
            Err(SfuError::NoPublisher)
        ),
        "no leg before the publisher's tracks are known"
    );
    assert!(lb.connect_all(Duration::from_secs(5)), "peers connect");
    let publisher_id = lb.clients[publisher].session;
    assert_eq!(
        lb.engine.take_leg_events(),
        vec![(publisher_id, LegEvent::Connected)],
        "the publisher's connection is reported (viewers' are not)"
    );
    let (target, leg) = lb.relay("s").expect("relay offer and answer");
    assert!(lb.connect_all(Duration::from_secs(5)), "the leg connects");
    let events = lb.engine.take_leg_events();
    assert!(
        events.contains(&(leg, LegEvent::Connected)),
        "the leg reports its connection: {events:?}"
    );
    let sent = media(&mut lb, publisher, 3, 30, 1000, true);
    for client in [viewer, target] {
        let got = video(&lb.clients[client].received);
        assert!(got.len() as u32 + 5 >= sent, "got {} of {sent}", got.len());
        assert!(got[0].keyframe, "video starts at a keyframe");
        assert!(audio_count(&lb.clients[client].received) > 100, "audio too");
    }
    let status = lb.engine.status();
    assert_eq!(status[0].viewers, 1, "a leg is not a viewer");
    assert_eq!(status[0].legs.len(), 1);
    assert!(status[0].legs[0].connected && status[0].legs[0].bytes_out > 80_000);
}

/// A target that stops answering fails its leg within the relay timeout (5 s), and the
/// publisher and its viewers never notice.
#[test]
fn a_dead_target_ends_its_leg_and_nothing_else() {
    use super::LegEvent;
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)), "peers connect");
    let (target, leg) = lb.relay("s").expect("relay");
    assert!(lb.connect_all(Duration::from_secs(5)), "the leg connects");
    media(&mut lb, publisher, 2, 30, 800, true);
    let _ = lb.engine.take_leg_events();
    lb.clients[target].silent = true;
    let before = video(&lb.clients[viewer].received).len();
    let mut ended_after = None;
    for step in 0..(8 * 20) {
        media(&mut lb, publisher, 0, 30, 800, true);
        lb.advance(Duration::from_millis(50));
        let events = lb.engine.take_leg_events();
        if let Some((id, LegEvent::Ended(why))) = events.first() {
            assert_eq!(*id, leg);
            assert!(why.contains("nothing arrived"), "{why}");
            ended_after = Some(step * 50);
            break;
        }
    }
    let ended_after = ended_after.expect("the leg ends");
    assert!(
        (5_000..=6_000).contains(&ended_after),
        "ended after {ended_after} ms"
    );
    let sent = media(&mut lb, publisher, 2, 30, 800, true);
    let after = video(&lb.clients[viewer].received).len();
    assert!(
        after - before >= sent as usize,
        "the viewer kept getting frames"
    );
    assert_eq!(lb.engine.status()[0].legs.len(), 0);
    assert!(lb.engine.status()[0].publishing);
}

/// A target that cannot take the publisher's video codec is refused at its answer.
#[test]
fn a_target_without_the_publishers_codec_is_refused() {
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    assert!(lb.connect_all(Duration::from_secs(5)), "peers connect");
    media(&mut lb, publisher, 1, 30, 800, true);
    let h264_only = str0m::RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false);
    match lb.relay_with("s", h264_only) {
        Err(SfuError::Codec(why)) => assert!(why.contains("VP8"), "{why}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a target without VP8 was taken"),
    }
    assert_eq!(lb.engine.status()[0].legs.len(), 0);
}

/// Legs end with their publisher, and say so.
#[test]
fn legs_end_with_their_publisher() {
    use super::LegEvent;
    let mut lb = Loopback::new();
    let publisher = lb.publish("s", &[]).expect("publish");
    assert!(lb.connect_all(Duration::from_secs(5)), "peers connect");
    let (_, leg) = lb.relay("s").expect("relay");
    assert!(lb.connect_all(Duration::from_secs(5)), "the leg connects");
    let _ = lb.engine.take_leg_events();
    let id = lb.clients[publisher].session;
    lb.engine.end(lb.now, id).expect("end");
    let events = lb.engine.take_leg_events();
    assert!(
        events.contains(&(leg, LegEvent::Ended("the publisher left".into()))),
        "{events:?}"
    );
    assert!(events.contains(&(id, LegEvent::Ended("ended by whipgate".into()))));
    assert!(matches!(
        lb.engine.relay_offer(lb.now, "s"),
        Err(SfuError::NoPublisher)
    ));
}

/// A pull: the SFU's own receive-only session on an origin becomes the stream's publisher;
/// its viewers get the origin's media, and the pull ends with its last viewer.
#[test]
fn a_pull_serves_viewers_and_ends_with_the_last_one() {
    use super::LegEvent;
    let mut lb = Loopback::new();
    let (origin, pull) = lb.origin("s").expect("pull offer and answer");
    let viewers: Vec<usize> = (0..2).map(|_| lb.play("s").expect("play")).collect();
    assert!(lb.connect_all(Duration::from_secs(5)), "peers connect");
    assert!(
        lb.engine
            .take_leg_events()
            .contains(&(pull, LegEvent::Connected)),
        "the pull reports its connection"
    );
    let sent = media(&mut lb, origin, 3, 30, 1000, true);
    for viewer in &viewers {
        let got = video(&lb.clients[*viewer].received);
        assert!(got.len() as u32 + 5 >= sent, "got {} of {sent}", got.len());
    }
    assert!(matches!(
        lb.publish("s", &[]),
        Err(SfuError::AlreadyPublished)
    ));
    let first = lb.clients[viewers[0]].session;
    lb.engine.end(lb.now, first).expect("end");
    assert!(lb.engine.live_peers().contains(&pull), "one viewer is left");
    let second = lb.clients[viewers[1]].session;
    lb.engine.end(lb.now, second).expect("end");
    let events = lb.engine.take_leg_events();
    assert!(
        events.contains(&(pull, LegEvent::Ended("its last viewer left".into()))),
        "{events:?}"
    );
    assert!(lb.engine.status().is_empty(), "the stream is gone");
}

/// A pull no viewer joined (its viewer gave up waiting, or its offer was refused) ends on
/// its own, so that nobody can keep an origin's session open without watching.
#[test]
fn a_pull_nobody_watches_ends() {
    use super::LegEvent;
    let mut lb = Loopback::new();
    let (origin, pull) = lb.origin("s").expect("pull");
    assert!(lb.connect_all(Duration::from_secs(5)), "the pull connects");
    let _ = lb.engine.take_leg_events();
    let mut ended = None;
    for step in 0..(30 * 20) {
        media(&mut lb, origin, 0, 30, 500, true);
        lb.advance(Duration::from_millis(50));
        if lb
            .engine
            .take_leg_events()
            .contains(&(pull, LegEvent::Ended("no viewer joined the pull".into())))
        {
            ended = Some(step * 50);
            break;
        }
    }
    let ended = ended.expect("the unwatched pull ends");
    assert!((18_000..=21_000).contains(&ended), "after {ended} ms");
}
