//! Trickle/ICE-restart fragments: parse and filter never panic; filtering only removes lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whipgate::sdp::{self, CandidateClass};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(trickle) = sdp::prepare_trickle(text, &[CandidateClass::Tcp, CandidateClass::Ipv6]) {
        assert!(trickle.body.len() <= text.len());
    }
});
