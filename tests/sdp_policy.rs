//! SDP policies on real offers and answers: what each rule changes, that nothing else
//! changes, idempotence, and the lines no policy may ever remove.

mod support;

use proptest::prelude::*;
use whipgate::kind::EndpointKind;
use whipgate::sdp::{self, CandidateClass, CodecSpec, Policy, Simulcast};

fn read(file: &str) -> String {
    support::corpus(file)
}

fn policy(toml_text: &str) -> Policy {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("policy: {e}"))
}

fn rewrite(file: &str, kind: EndpointKind, policy: &Policy) -> Result<String, sdp::SdpError> {
    sdp::prepare_offer(kind, &read(file))
        .expect("corpus offer")
        .rewrite(policy)
        .map(|offer| offer.text())
}

fn m_line(text: &str, media: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(&format!("m={media} ")))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn h264_only_keeps_h264_its_rtx_and_generic_fec() {
    let out = rewrite(
        "chromium-whip-offer-vp8.sdp",
        EndpointKind::Whip,
        &policy("video_codecs = [\"H264\"]"),
    )
    .expect("h264 offered");
    assert_eq!(
        m_line(&out, "video"),
        "m=video 9 UDP/TLS/RTP/SAVPF 102 103 104 107 108 109 114 115 116 117 39 40 118 119 120"
    );
    for gone in [
        "VP8/90000",
        "VP9/90000",
        "AV1/90000",
        "a=fmtp:97 ",
        "a=rtcp-fb:98 ",
        "a=fmtp:46 ",
    ] {
        assert!(!out.contains(gone), "{gone} left");
    }
    assert_eq!(
        m_line(&out, "audio"),
        m_line(&read("chromium-whip-offer-vp8.sdp"), "audio")
    );
}

#[test]
fn allow_list_order_is_preference_order() {
    let out = rewrite(
        "chromium-whip-offer-vp8.sdp",
        EndpointKind::Whip,
        &policy("video_codecs = [\"VP9\", \"VP8\"]\naudio_codecs = [\"PCMU\", \"opus\"]"),
    )
    .expect("offered");
    assert_eq!(
        m_line(&out, "video"),
        "m=video 9 UDP/TLS/RTP/SAVPF 98 99 100 101 96 97 118 119 120"
    );
    // Audio RED (63) carries opus (111), which stays, so RED stays; CN and DTMF stay beside a codec.
    assert_eq!(
        m_line(&out, "audio"),
        "m=audio 57658 UDP/TLS/RTP/SAVPF 0 111 63 13 110 126"
    );
}

#[test]
fn h264_narrowed_by_profile_and_packetization_mode() {
    let out = rewrite(
        "chromium-whip-offer-vp8.sdp",
        EndpointKind::Whip,
        &policy("video_codecs = [{ name = \"H264\", profile_level_id = \"42e01f\", packetization_mode = 1 }]"),
    )
    .expect("offered");
    assert_eq!(
        m_line(&out, "video"),
        "m=video 9 UDP/TLS/RTP/SAVPF 108 109 118 119 120"
    );
    let baseline_any_level = rewrite(
        "chromium-whip-offer-vp8.sdp",
        EndpointKind::Whip,
        &policy("video_codecs = [{ name = \"h264\", profile_level_id = \"42e0\" }]"),
    )
    .expect("offered");
    assert_eq!(
        m_line(&baseline_any_level, "video"),
        "m=video 9 UDP/TLS/RTP/SAVPF 108 109 114 115 118 119 120"
    );
}

#[test]
fn nothing_acceptable_is_a_422_naming_both_sides() {
    let error = rewrite(
        "gstreamer-whip-offer.sdp",
        EndpointKind::Whip,
        &policy("video_codecs = [\"H264\"]"),
    )
    .expect_err("VP8 only");
    assert!(matches!(error, sdp::SdpError::Unacceptable(_)));
    assert_eq!(
        error.to_string(),
        "backend accepts only H264 for video, offer has VP8"
    );
    let error = rewrite(
        "chromium-whip-offer-vp8.sdp",
        EndpointKind::Whip,
        &policy("video_codecs = [\"H265\"]"),
    )
    .expect_err("no H265");
    assert_eq!(
        error.to_string(),
        "backend accepts only H265 for video, offer has VP8, H264, AV1, VP9"
    );
}

#[test]
fn simulcast_strip_removes_rids_and_their_extmaps() {
    let original = read("chromium-whip-offer-simulcast.sdp");
    let out = rewrite(
        "chromium-whip-offer-simulcast.sdp",
        EndpointKind::Whip,
        &policy("simulcast = \"strip\""),
    )
    .expect("ok");
    for gone in [
        "a=rid:",
        "a=simulcast:",
        "sdes:rtp-stream-id",
        "sdes:repaired-rtp-stream-id",
    ] {
        assert!(original.contains(gone));
        assert!(!out.contains(gone), "{gone} left");
    }
    assert!(out.contains("urn:ietf:params:rtp-hdrext:sdes:mid"));
    let kept = rewrite(
        "chromium-whip-offer-simulcast.sdp",
        EndpointKind::Whip,
        &policy("simulcast = \"keep\""),
    )
    .expect("ok");
    assert_eq!(kept, original);
}

#[test]
fn header_extensions_allow_and_deny() {
    let deny = rewrite(
        "chromium-whip-offer-vp8.sdp",
        EndpointKind::Whip,
        &policy("header_extensions = { deny = [\"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\"] }"),
    )
    .expect("ok");
    assert!(!deny.contains("abs-send-time"));
    assert!(deny.contains("transport-wide-cc"));
    let allow = rewrite(
        "chromium-whip-offer-vp8.sdp",
        EndpointKind::Whip,
        &policy("header_extensions = { allow = [\"urn:ietf:params:rtp-hdrext:sdes:mid\"] }"),
    )
    .expect("ok");
    let extmaps: Vec<&str> = allow
        .lines()
        .filter(|l| l.starts_with("a=extmap:"))
        .collect();
    assert_eq!(extmaps.len(), 2, "{extmaps:?}");
    assert!(extmaps
        .iter()
        .all(|l| l.ends_with("urn:ietf:params:rtp-hdrext:sdes:mid")));
}

#[test]
fn bandwidth_caps_are_added_after_c_and_lower_existing_ones() {
    let out = rewrite(
        "chromium-whip-offer-vp8.sdp",
        EndpointKind::Whip,
        &policy("max_video_kbps = 2500\nmax_audio_kbps = 64"),
    )
    .expect("ok");
    let lines: Vec<&str> = out.split("\r\n").collect();
    let video = lines
        .iter()
        .position(|l| l.starts_with("m=video"))
        .expect("video");
    assert_eq!(
        &lines[video + 1..video + 4],
        ["c=IN IP4 0.0.0.0", "b=AS:2500", "b=TIAS:2500000"]
    );
    let audio = lines
        .iter()
        .position(|l| l.starts_with("m=audio"))
        .expect("audio");
    assert_eq!(lines[audio + 2], "b=AS:64");
    let lowered = sdp::prepare_offer(EndpointKind::Whip, &out)
        .expect("valid")
        .rewrite(&policy("max_video_kbps = 1000"))
        .expect("ok")
        .text();
    assert!(lowered.contains("b=AS:1000\r\nb=TIAS:1000000\r\n"));
    assert!(!lowered.contains("b=AS:2500"));
    let raised = sdp::prepare_offer(EndpointKind::Whip, &lowered)
        .expect("valid")
        .rewrite(&policy("max_video_kbps = 9000"))
        .expect("ok")
        .text();
    assert_eq!(
        raised, lowered,
        "a cap never raises what the client asked for"
    );
}

#[test]
fn candidate_policy_for_offers_and_trickle() {
    let out = rewrite(
        "chromium-whip-offer-vp8.sdp",
        EndpointKind::Whip,
        &policy("drop_candidates = [\"tcp\"]"),
    )
    .expect("ok");
    let candidates: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert_eq!(candidates.len(), 2);
    assert!(candidates.iter().all(|c| c.contains(" udp ")));

    let fragment = read("gstreamer-trickle-1.sdpfrag");
    let trickle = sdp::prepare_trickle(&fragment, &[CandidateClass::Tcp]).expect("valid");
    assert_eq!(trickle.candidates, 1);
    assert!(trickle.body.contains("a=ice-ufrag:") && trickle.body.contains("a=ice-pwd:"));
    assert!(trickle.body.contains("a=end-of-candidates"));
    let restart = "a=ice-ufrag:R3st\r\na=ice-pwd:restartrestartrestart12\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n";
    assert_eq!(
        sdp::prepare_trickle(restart, &[CandidateClass::Tcp])
            .expect("valid")
            .body,
        restart
    );
}

#[test]
fn answers_are_mapped_and_checked() {
    let offer = sdp::prepare_offer(EndpointKind::Whip, &read("chromium-whip-offer-vp8.sdp"))
        .expect("offer");
    let answer = read("janus-whip-answer.sdp");
    let mapped = offer
        .accept_answer(
            &answer,
            &policy("answer = { address_map = { \"127.0.0.2\" = \"203.0.113.7\", \"127.0.0.1\" = \"2001:db8::7\" } }"),
        )
        .expect("ok");
    assert!(!mapped.contains("127.0.0.2"));
    assert!(mapped.contains("udp 2015363327 203.0.113.7 "), "{mapped}");
    assert!(mapped.contains("c=IN IP6 2001:db8::7\r\n"));
    let dropped = offer
        .accept_answer(
            &answer,
            &policy("answer = { drop_candidates = [\"loopback\"] }"),
        )
        .expect("ok");
    assert!(!dropped.contains("a=candidate"));

    let two_to_one = answer
        .split("m=video")
        .next()
        .unwrap_or_default()
        .to_owned();
    let error = offer
        .accept_answer(&two_to_one, &Policy::default())
        .expect_err("short");
    assert_eq!(error.to_string(), "answer has 1 m-lines for an offer of 2");
    let swapped_mid = answer.replace("a=mid:1\r\n", "a=mid:7\r\n");
    assert!(offer
        .accept_answer(&swapped_mid, &Policy::default())
        .is_err());
    let unbundled = answer.replace("a=group:BUNDLE 0 1\r\n", "");
    assert_eq!(
        offer
            .accept_answer(&unbundled, &Policy::default())
            .expect_err("bundle")
            .to_string(),
        "answer drops the offer's BUNDLE group"
    );
}

#[test]
fn unknown_and_vendor_lines_survive_a_policy() {
    let original = read("chromium-whip-offer-vp8.sdp")
        .replacen("a=msid-semantic: WMS", "a=x-vendor-flag:on\r\na=msid-semantic: WMS", 1)
        .replacen("a=fmtp:100 profile-id=2", "a=fmtp:100 profile-id=2;x-custom=1;y=2", 1)
        .replacen("a=rtpmap:118 red/90000", "a=rtpmap:127 H265/90000\r\na=fmtp:127 level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST\r\na=rtpmap:118 red/90000", 1)
        .replacen(" 118 119 120\r\n", " 127 118 119 120\r\n", 1);
    let offer = sdp::prepare_offer(EndpointKind::Whip, &original).expect("valid");
    let out = offer
        .rewrite(&policy(
            "video_codecs = [\"H265\", \"VP9\"]\nmax_audio_kbps = 64",
        ))
        .expect("ok")
        .text();
    for kept in [
        "a=x-vendor-flag:on\r\n",
        "a=msid-semantic: WMS 52edaf8f",
        "a=fmtp:100 profile-id=2;x-custom=1;y=2\r\n",
        "a=fmtp:127 level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST\r\n",
        "a=extmap-allow-mixed\r\n",
    ] {
        assert!(out.contains(kept), "{kept:?} lost");
    }
}

/// Lines a policy may change rather than only remove.
fn rewritable(line: &str) -> bool {
    line.starts_with("m=") || line.starts_with("b=")
}

fn untouched_lines_survive_in_order(input: &str, output: &str) -> Result<(), String> {
    let mut source = input.split_inclusive('\n');
    for line in output.split_inclusive('\n') {
        if rewritable(line) {
            continue;
        }
        if !source.any(|candidate| candidate == line) {
            return Err(format!("line {line:?} is not an input line in order"));
        }
    }
    Ok(())
}

fn must_survive(line: &str) -> bool {
    [
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=fingerprint:",
        "a=setup:",
        "a=mid:",
        "a=group:BUNDLE",
    ]
    .iter()
    .any(|prefix| line.starts_with(prefix))
}

fn arbitrary_policy() -> impl Strategy<Value = Policy> {
    let audio = proptest::option::of(proptest::sample::subsequence(
        vec!["opus", "PCMU", "PCMA", "G722"],
        1..=4,
    ));
    let video = proptest::option::of(proptest::sample::subsequence(
        vec!["VP8", "H264", "VP9", "AV1"],
        1..=4,
    ));
    let classes = proptest::option::of(proptest::sample::subsequence(
        vec![
            CandidateClass::Tcp,
            CandidateClass::Ipv6,
            CandidateClass::Private,
            CandidateClass::Loopback,
        ],
        0..=4,
    ));
    (
        audio,
        video,
        proptest::option::of(prop_oneof![Just(Simulcast::Keep), Just(Simulcast::Strip)]),
        proptest::option::of(1u32..10_000),
        proptest::option::of(1u32..512),
        classes,
        any::<bool>(),
    )
        .prop_map(
            |(audio, video, simulcast, video_kbps, audio_kbps, classes, shuffle)| {
                let specs = |names: Vec<&str>| {
                    let mut specs: Vec<CodecSpec> = names
                        .into_iter()
                        .map(|n| CodecSpec::Name(n.into()))
                        .collect();
                    if shuffle {
                        specs.reverse();
                    }
                    specs
                };
                Policy {
                    audio_codecs: audio.map(specs),
                    video_codecs: video.map(specs),
                    simulcast,
                    max_video_kbps: video_kbps,
                    max_audio_kbps: audio_kbps,
                    drop_candidates: classes,
                    ..Policy::default()
                }
            },
        )
}

const OFFERS: &[(&str, EndpointKind)] = &[
    ("chromium-whip-offer-vp8.sdp", EndpointKind::Whip),
    ("chromium-whip-offer-simulcast.sdp", EndpointKind::Whip),
    ("chromium-whep-offer.sdp", EndpointKind::Whep),
    ("aiortc116-whip-offer.sdp", EndpointKind::Whip),
    ("aiortc116-whep-offer.sdp", EndpointKind::Whep),
    ("aiortc14-whip-offer.sdp", EndpointKind::Whip),
    ("gstreamer-whip-offer.sdp", EndpointKind::Whip),
    ("gstreamer-whip-offer-h264.sdp", EndpointKind::Whip),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn policies_are_lossless_idempotent_and_keep_what_ice_and_dtls_need(
        which in 0..OFFERS.len(),
        policy in arbitrary_policy(),
    ) {
        let (file, kind) = OFFERS[which];
        let input = read(file);
        let offer = sdp::prepare_offer(kind, &input).expect("corpus offer");
        let Ok(once) = offer.rewrite(&policy) else {
            return Ok(());
        };
        let once_text = once.text();
        let twice = once.rewrite(&policy).expect("a rewritten offer stays acceptable").text();
        prop_assert_eq!(&twice, &once_text, "not idempotent");
        if let Err(reason) = untouched_lines_survive_in_order(&input, &once_text) {
            return Err(TestCaseError::fail(reason));
        }
        let before: Vec<&str> = input.lines().filter(|l| must_survive(l)).collect();
        let after: Vec<&str> = once_text.lines().filter(|l| must_survive(l)).collect();
        prop_assert_eq!(before, after);
        prop_assert!(sdp::prepare_offer(kind, &once_text).is_ok(), "the result is still a valid offer");
    }
}

/// The gateway parses bodies in place (`prepare_shared_offer`, `accept_answer_shared`):
/// the same outcome as the copying calls, rewritten by a policy or not.
#[test]
fn bodies_parsed_in_place_give_what_copied_ones_give() {
    let map = "answer = { address_map = { \"127.0.0.1\" = \"198.51.100.1\" } }";
    let mut rewritten_answers = 0;
    for &(offer, answer, kind) in support::OFFER_ANSWER_PAIRS {
        let (offer_text, answer_text) = (read(offer), read(answer));
        let copied = sdp::prepare_offer(kind, &offer_text).expect("offer");
        let shared = sdp::prepare_shared_offer(
            kind,
            bytestring::ByteString::from(offer_text.clone()),
            sdp::Validation::Standard,
        )
        .expect("offer");
        assert_eq!(shared.text(), copied.text(), "{offer}");
        assert!(shared.is_unchanged(), "{offer}");
        for policy in [Policy::default(), policy(map)] {
            let expected = copied
                .accept_answer(&answer_text, &policy)
                .unwrap_or_else(|e| panic!("{answer}: {e}"));
            let got = shared
                .accept_answer_shared(&bytestring::ByteString::from(answer_text.clone()), &policy)
                .unwrap_or_else(|e| panic!("{answer}: {e}"));
            match (&expected, got) {
                (std::borrow::Cow::Borrowed(_), None) => {}
                (std::borrow::Cow::Owned(rewritten), Some(ours)) => {
                    assert_eq!(&ours, rewritten, "{answer}");
                    rewritten_answers += 1;
                }
                (expected, got) => panic!("{answer}: {expected:?} against {got:?}"),
            }
        }
    }
    assert!(rewritten_answers > 0, "no answer had a 127.0.0.1 to map");
}

#[test]
fn answer_policy_touches_only_candidates_and_connection_lines() {
    let map = "answer = { address_map = { \"127.0.0.2\" = \"198.51.100.2\", \"127.0.0.1\" = \"198.51.100.1\" }, drop_candidates = [\"ipv6\"] }";
    for &(offer, answer, kind) in support::OFFER_ANSWER_PAIRS {
        let original = read(answer);
        let accepted = sdp::prepare_offer(kind, &read(offer))
            .expect("offer")
            .accept_answer(&original, &policy(map))
            .unwrap_or_else(|e| panic!("{answer}: {e}"));
        let before: Vec<&str> = original.split_inclusive('\n').collect();
        let after: Vec<&str> = accepted.split_inclusive('\n').collect();
        assert_eq!(
            before.len(),
            after.len(),
            "{answer}: nothing dropped (no IPv6 candidates)"
        );
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert!(
                    b.starts_with("a=candidate:") || b.starts_with("c="),
                    "{answer}: {b:?} -> {a:?}"
                );
                assert!(!a.contains("127.0.0."), "{a:?}");
            }
        }
    }
}
