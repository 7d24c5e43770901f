//! A backend's answer checked against the offer it answers (RFC 8829 / 9429 rules a client's
//! `setRemoteDescription` would otherwise enforce with a less helpful error).

use super::{Lines, SdpError};

/// Every offered m-line answered in order with the same media and mid; BUNDLE kept.
pub fn check_against_offer(offer: &Lines, answer: &Lines) -> Result<(), SdpError> {
    let bad = |reason: String| Err(SdpError::Unacceptable(reason));
    let offered = sections(offer);
    let answered = sections(answer);
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
    for (index, (o, a)) in offered.iter().zip(&answered).enumerate() {
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
        if o.mid.is_some() && a.mid.is_none() && a.accepted {
            return bad(format!("answer m-line {} has no mid", index + 1));
        }
    }
    let Some(offer_bundle) = bundle(offer) else {
        return Ok(());
    };
    let Some(answer_bundle) = bundle(answer) else {
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
            if a.accepted && offer_bundle.contains(mid) && !answer_bundle.contains(mid) {
                return bad(format!(
                    "answer m-line {} leaves the BUNDLE group",
                    index + 1
                ));
            }
        }
    }
    Ok(())
}

struct Section {
    media: String,
    mid: Option<String>,
    accepted: bool,
}

fn sections(lines: &Lines) -> Vec<Section> {
    lines
        .media_sections()
        .into_iter()
        .map(|range| {
            let m_line = lines.get(range.start);
            let mut fields = m_line
                .map(|l| l.value())
                .unwrap_or("")
                .split_ascii_whitespace();
            let media = fields.next().unwrap_or("").to_owned();
            let port_zero = fields
                .next()
                .is_some_and(|p| p.split('/').next() == Some("0"));
            let mut mid = None;
            let mut bundle_only = false;
            for line in range.filter_map(|i| lines.get(i)) {
                match line.attribute_name() {
                    Some("mid") => mid = line.attribute_value().map(|v| v.trim().to_owned()),
                    Some("bundle-only") => bundle_only = true,
                    _ => {}
                }
            }
            Section {
                media,
                mid,
                accepted: !port_zero || bundle_only,
            }
        })
        .collect()
}

fn bundle(lines: &Lines) -> Option<Vec<String>> {
    lines
        .iter()
        .filter(|l| l.attribute_name() == Some("group"))
        .filter_map(|l| l.attribute_value())
        .find_map(|v| {
            let mut parts = v.split_ascii_whitespace();
            (parts.next() == Some("BUNDLE")).then(|| parts.map(str::to_owned).collect())
        })
}
