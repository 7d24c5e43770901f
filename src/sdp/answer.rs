//! A backend's answer checked against the offer it answers (RFC 8829 / 9429 rules a client's
//! `setRemoteDescription` would otherwise enforce with a less helpful error).

use super::{Outline, SdpError};

/// Every offered m-line answered in order with the same media and mid; BUNDLE kept.
pub fn check_against_offer(offer: &Outline, answer: &Outline) -> Result<(), SdpError> {
    let bad = |reason: String| Err(SdpError::Unacceptable(reason));
    let offered = &offer.media;
    let answered = &answer.media;
    if answered.is_empty() {
        return bad("answer has no m-line".into());
    }
    if offered.len() != answered.len() {
        return bad(format!(
            "answer has {} m-lines for an offer of {}",
            answered.len(),
            offered.len()
        ));
    }
    for (index, (o, a)) in offered.iter().zip(answered).enumerate() {
        if o.media != a.media {
            return bad(format!(
                "answer m-line {} is {} where the offer has {}",
                index + 1,
                a.media,
                o.media
            ));
        }
        if o.mid.is_some() && a.mid.is_some() && o.mid != a.mid {
            return bad(format!("answer m-line {} changes its mid", index + 1));
        }
        if o.mid.is_some() && a.mid.is_none() && a.active {
            return bad(format!("answer m-line {} has no mid", index + 1));
        }
    }
    let Some(offer_bundle) = &offer.bundle else {
        return Ok(());
    };
    let Some(answer_bundle) = &answer.bundle else {
        return bad("answer drops the offer's BUNDLE group".into());
    };
    if answer_bundle.is_empty() {
        return bad("answer's BUNDLE group is empty".into());
    }
    if let Some(stranger) = answer_bundle.iter().find(|mid| !offer_bundle.contains(mid)) {
        return bad(format!(
            "answer bundles mid {stranger}, which the offer did not"
        ));
    }
    for (index, a) in answered.iter().enumerate() {
        if let Some(mid) = &a.mid {
            if a.active && offer_bundle.contains(mid) && !answer_bundle.contains(mid) {
                return bad(format!(
                    "answer m-line {} leaves the BUNDLE group",
                    index + 1
                ));
            }
        }
    }
    Ok(())
}
