//! The SFU as several engines (one per thread) on the in-memory network: a stream's
//! viewers on another engine than its publisher's get the same media, keyframes and
//! endings as those beside it; datagrams reach their peer whichever engine's socket the
//! kernel hands them to.

use std::time::Duration;

use super::engine::{home_shard, shard_of};
use super::loopback::{Loopback, Received};
use super::tests::{media, video};
use super::{LegEvent, SfuError};
use str0m::media::MediaKind;

/// Two engines; the stream's home and the other one. The first client's datagrams (the
/// publisher's, or the origin's) reach the other engine's socket, and so on in turn, so
/// that every test sends datagrams through an engine that does not own their peer.
fn two_engines(stream: &str) -> (Loopback, usize, usize) {
    let mut lb = Loopback::sharded(2);
    let home = home_shard(stream, 2);
    lb.socket_offset = 1 - home;
    (lb, home, 1 - home)
}

#[test]
fn viewers_on_either_engine_get_every_frame() {
    let (mut lb, home, other) = two_engines("s");
    let publisher = lb.publish("s", &[]).expect("publish");
    assert_eq!(shard_of(lb.clients[publisher].session), home);
    let mut viewers = Vec::new();
    for shard in [home, other, other, home, other] {
        lb.next_viewer_shard = Some(shard);
        let viewer = lb.play("s").expect("play");
        assert_eq!(shard_of(lb.clients[viewer].session), shard);
        viewers.push(viewer);
    }
    assert!(lb.connect_all(Duration::from_secs(5)), "peers connect");
    let sent = media(&mut lb, publisher, 3, 30, 1500, true);
    for viewer in &viewers {
        let got = video(&lb.clients[*viewer].received);
        assert!(got.len() as u32 + 5 >= sent, "got {} of {sent}", got.len());
        assert!(got[0].keyframe, "a viewer starts on a keyframe");
        let audio = lb.clients[*viewer]
            .received
            .iter()
            .filter(|r| r.kind == MediaKind::Audio)
            .count();
        assert!(audio >= 140, "audio {audio}");
    }
    // Each engine counts its own viewers; together they are all of them.
    let statuses = lb.statuses();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().map(|s| s.viewers).sum::<usize>(), 5);
    assert_eq!(statuses.iter().filter(|s| s.publishing).count(), 1);
}

#[test]
fn a_viewer_on_another_engine_gets_its_keyframe_from_the_publisher() {
    let (mut lb, _, other) = two_engines("s");
    let publisher = lb.publish("s", &[]).expect("publish");
    assert!(lb.connect_all(Duration::from_secs(5)));
    media(&mut lb, publisher, 1, 1000, 1500, true);
    let before = lb.clients[publisher].keyframe_requests;
    lb.next_viewer_shard = Some(other);
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    media(&mut lb, publisher, 1, 1000, 1500, false);
    assert!(video(&lb.clients[viewer].received).is_empty());
    assert!(
        lb.clients[publisher].keyframe_requests > before,
        "the join's PLI crossed engines"
    );
    media(&mut lb, publisher, 1, 30, 1500, true);
    let got = video(&lb.clients[viewer].received);
    assert!(got.len() >= 25 && got[0].keyframe, "got {}", got.len());
    let before = lb.clients[publisher].keyframe_requests;
    lb.request_keyframe(viewer);
    media(&mut lb, publisher, 1, 1000, 1500, false);
    assert!(
        lb.clients[publisher].keyframe_requests > before,
        "the viewer's own PLI"
    );
}

#[test]
fn a_frame_lost_between_engines_resumes_at_a_keyframe() {
    let (mut lb, _, other) = two_engines("s");
    let publisher = lb.publish("s", &[]).expect("publish");
    lb.next_viewer_shard = Some(other);
    let viewer = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    media(&mut lb, publisher, 1, 30, 1500, true);
    let before = video(&lb.clients[viewer].received).len();
    let requests = lb.clients[publisher].keyframe_requests;
    lb.drop_shared_frames = 1;
    media(&mut lb, publisher, 1, 1000, 1500, false);
    let after = video(&lb.clients[viewer].received).len() - before;
    // Audio frames are shared too: one of them may have been the one dropped.
    assert!(
        after <= 1,
        "no delta frame is forwarded after a lost one: {after}"
    );
    if after == 0 {
        assert!(lb.clients[publisher].keyframe_requests > requests);
    }
    media(&mut lb, publisher, 1, 30, 1500, true);
    let resumed: Vec<&Received> = video(&lb.clients[viewer].received)
        .into_iter()
        .skip(before + after)
        .collect();
    assert!(resumed.len() >= 25 && resumed[0].keyframe);
}

#[test]
fn the_publisher_leaving_ends_viewers_on_every_engine() {
    let (mut lb, home, other) = two_engines("s");
    let publisher = lb.publish("s", &[]).expect("publish");
    lb.next_viewer_shard = Some(other);
    let far = lb.play("s").expect("play");
    lb.next_viewer_shard = Some(home);
    let near = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    media(&mut lb, publisher, 1, 30, 1500, true);
    let session = lb.clients[publisher].session;
    lb.end(session).expect("end");
    lb.advance(Duration::from_secs(1));
    assert!(lb.clients[far].closed && lb.clients[near].closed);
    assert!(lb.statuses().is_empty(), "{:?}", lb.statuses());
    // Their DELETEs, late, still succeed on their own engines.
    let (far, near) = (lb.clients[far].session, lb.clients[near].session);
    assert_eq!(lb.end(far), Ok(()));
    assert_eq!(lb.end(near), Ok(()));
    // No publisher anywhere: a viewer is refused on either engine.
    lb.next_viewer_shard = Some(other);
    assert!(matches!(lb.play("s"), Err(SfuError::NoPublisher)));
}

#[test]
fn a_new_viewer_after_the_last_one_left_subscribes_again() {
    let (mut lb, _, other) = two_engines("s");
    let publisher = lb.publish("s", &[]).expect("publish");
    lb.next_viewer_shard = Some(other);
    let first = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    media(&mut lb, publisher, 1, 30, 1500, true);
    let session = lb.clients[first].session;
    lb.end(session).expect("end");
    assert_eq!(
        lb.statuses().len(),
        1,
        "only the publisher's engine holds the stream"
    );
    lb.next_viewer_shard = Some(other);
    let second = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    let sent = media(&mut lb, publisher, 2, 30, 1500, true);
    let got = video(&lb.clients[second].received);
    assert!(got.len() as u32 + 5 >= sent, "got {} of {sent}", got.len());
}

#[test]
fn a_pull_lives_while_any_engine_has_a_viewer() {
    let (mut lb, home, other) = two_engines("s");
    let (origin, pull) = lb.origin("s").expect("pull");
    assert_eq!(shard_of(pull), home);
    lb.next_viewer_shard = Some(other);
    let far = lb.play("s").expect("play");
    assert!(lb.connect_all(Duration::from_secs(5)));
    let sent = media(&mut lb, origin, 2, 30, 1500, true);
    let got = video(&lb.clients[far].received);
    assert!(got.len() as u32 + 5 >= sent, "got {} of {sent}", got.len());
    // Past the unwatched limit, the far viewer still holds the pull.
    for _ in 0..25 {
        media(&mut lb, origin, 1, 30, 1500, true);
    }
    assert!(lb.engine_at(home).live_peers().contains(&pull));
    let _ = lb.engine_at(home).take_leg_events();
    let session = lb.clients[far].session;
    lb.end(session).expect("end");
    let events = lb.engine_at(home).take_leg_events();
    assert!(
        events.contains(&(pull, LegEvent::Ended("its last viewer left".into()))),
        "{events:?}"
    );
}

#[test]
fn home_engines_are_stable_and_in_range() {
    for shards in 1..=8 {
        for name in ["s", "show-1", "a/b", "", "ünïcode"] {
            let home = home_shard(name, shards);
            assert!(home < shards);
            assert_eq!(home, home_shard(name, shards));
        }
    }
    // Names spread: of 64 streams on 4 engines, every engine is some stream's home.
    let homes: std::collections::HashSet<usize> =
        (0..64).map(|i| home_shard(&format!("s{i}"), 4)).collect();
    assert_eq!(homes.len(), 4);
}
