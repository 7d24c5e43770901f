//! Offers of either kind through validation, a policy that touches every rule, and the
//! answer check: nothing may panic, and a rewritten offer must rewrite to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whipgate::kind::EndpointKind;
use whipgate::sdp::{self, CandidateClass, CodecSpec, Policy, Simulcast};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let policy = Policy {
        video_codecs: Some(vec![CodecSpec::Name("H264".into()), CodecSpec::Name("VP8".into())]),
        audio_codecs: Some(vec![CodecSpec::Name("opus".into())]),
        simulcast: Some(Simulcast::Strip),
        max_video_kbps: Some(2000),
        drop_candidates: Some(vec![CandidateClass::Tcp, CandidateClass::Private]),
        ..Policy::default()
    };
    for kind in [EndpointKind::Whip, EndpointKind::Whep] {
        let strict = sdp::prepare_offer_with(kind, text, sdp::Validation::Strict);
        let Ok(offer) = sdp::prepare_offer(kind, text) else {
            assert!(strict.is_err(), "strict accepted what standard refused");
            continue;
        };
        let _ = offer.accept_answer(text, &policy);
        if let Ok(once) = offer.rewrite(&policy) {
            let twice = once.rewrite(&policy).map(|o| o.text());
            assert_eq!(twice.ok(), Some(once.text()), "policy not idempotent");
        }
    }
});
