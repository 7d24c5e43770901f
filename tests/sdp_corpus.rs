//! Every real offer, answer and sdpfrag in ../shared/sdp-corpus is accepted, and whatever
//! whipgate forwards of it is byte for byte what the peer sent.

mod support;

use std::path::{Path, PathBuf};

use whipgate::kind::EndpointKind;
use whipgate::sdp;

fn corpus_files(extension: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sdp-corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .{extension} files in {}",
        dir.display()
    );
    files
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn every_offer_is_accepted_and_forwarded_unchanged() {
    let mut checked = 0;
    for path in corpus_files("sdp") {
        let file = name(&path);
        let kind = if file.contains("whip-offer") {
            EndpointKind::Whip
        } else if file.contains("whep-offer") {
            EndpointKind::Whep
        } else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("read");
        for validation in [sdp::Validation::Standard, sdp::Validation::Strict] {
            let forwarded = sdp::prepare_offer_with(kind, &text, validation)
                .unwrap_or_else(|e| {
                    panic!("{file} refused as a {kind} offer ({validation:?}): {e}")
                })
                .text();
            assert_eq!(forwarded, text, "{file} changed on the way through");
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} offers");
}

#[test]
fn offers_of_one_kind_are_refused_at_the_other_endpoint() {
    for (file, kind) in [
        ("chromium-whep-offer.sdp", EndpointKind::Whip),
        ("aiortc116-whep-offer.sdp", EndpointKind::Whip),
        ("chromium-whip-offer-vp8.sdp", EndpointKind::Whep),
        ("gstreamer-whip-offer.sdp", EndpointKind::Whep),
    ] {
        let error = sdp::prepare_offer(kind, &support::corpus(file)).expect_err(file);
        assert!(
            matches!(error, sdp::SdpError::Unacceptable(_)),
            "{file}: {error}"
        );
    }
}

#[test]
fn every_answer_answers_its_offer() {
    for (offer, answer, kind) in support::OFFER_ANSWER_PAIRS {
        let offer = sdp::prepare_offer(*kind, &support::corpus(offer)).expect("offer");
        let text = support::corpus(answer);
        let accepted = offer
            .accept_answer(&text, &sdp::Policy::default())
            .unwrap_or_else(|e| panic!("{answer}: {e}"));
        assert_eq!(accepted, text, "{answer} changed without a policy");
    }
}

#[test]
fn every_sdpfrag_passes_unchanged() {
    for path in corpus_files("sdpfrag") {
        let text = std::fs::read_to_string(&path).expect("read");
        let trickle =
            sdp::prepare_trickle(&text, &[]).unwrap_or_else(|e| panic!("{}: {e}", name(&path)));
        assert_eq!(trickle.body, text);
        assert!(trickle.candidates > 0);
    }
}

#[test]
fn line_model_round_trips_every_file() {
    for path in corpus_files("sdp")
        .into_iter()
        .chain(corpus_files("sdpfrag"))
    {
        let text = std::fs::read_to_string(&path).expect("read");
        let lines = sdp::Lines::parse(&text).expect("parses");
        assert_eq!(lines.write(), text, "{}", name(&path));
    }
}
