//! Trickle ICE / ICE restart sdpfrags (RFC 8840), which webrtc-sdp cannot parse.
//!
//! A fragment holds session-level `a=` lines (ice-ufrag, ice-pwd, ice-options, group) and
//! `m=` lines each followed by `a=mid`, `a=candidate` and `a=end-of-candidates` lines. The
//! m= line of a fragment need not match its m-section (GStreamer sends `m=audio 9 RTP/AVP 0`
//! for a video mid), so it is kept exactly as sent.

use super::{policy, CandidateClass, Lines, SdpError};

/// A fragment checked and ready to go upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trickle {
    /// The client's bytes less mDNS candidates.
    pub body: String,
    /// Candidates left after dropping mDNS ones.
    pub candidates: usize,
    /// Whether the fragment carries ICE credentials (as an ICE restart does).
    pub has_ice_credentials: bool,
}

/// Checks a fragment and drops `.local` candidates and those of `drop` (a route's policy).
pub fn prepare_trickle(text: &str, drop: &[CandidateClass]) -> Result<Trickle, SdpError> {
    let mut lines = Lines::parse(text).map_err(|e| SdpError::Malformed(e.to_string()))?;
    if lines.iter().all(|line| line.is_blank()) {
        return Err(SdpError::Malformed("empty sdpfrag".into()));
    }
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        match line.kind() {
            None | Some(b'a') => {}
            Some(b'm') => check_m_line(line.value())
                .map_err(|reason| SdpError::Malformed(format!("line {number}: {reason}")))?,
            Some(other) => {
                return Err(SdpError::Malformed(format!(
                    "line {number}: an sdpfrag has only a= and m= lines, not {}=",
                    other as char
                )))
            }
        }
        if line.attribute_name() == Some("candidate") {
            check_candidate(line.attribute_value().unwrap_or(""))
                .map_err(|reason| SdpError::Malformed(format!("line {number}: {reason}")))?;
        }
    }
    policy::drop_candidates(&mut lines, drop);
    let candidates = lines
        .iter()
        .filter(|line| line.attribute_name() == Some("candidate"))
        .count();
    let has_ice_credentials = lines
        .iter()
        .any(|line| matches!(line.attribute_name(), Some("ice-ufrag" | "ice-pwd")));
    Ok(Trickle {
        body: lines.write(),
        candidates,
        has_ice_credentials,
    })
}

/// A backend's fragment on its way to the client (an ICE restart's answer): the route's
/// answer policy applies to it as to a whole answer (mapped addresses, dropped candidates).
pub fn prepare_answer_fragment(
    text: &str,
    answer: &policy::AnswerPolicy,
) -> Result<String, SdpError> {
    let mut lines = Lines::parse(text).map_err(|e| SdpError::Malformed(e.to_string()))?;
    policy::apply_to_answer(&mut lines, answer);
    Ok(lines.write())
}

fn check_m_line(value: &str) -> Result<(), &'static str> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(_media), Some(port), Some(_proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err("m= needs media, port and protocol");
    };
    let port = port.split('/').next().unwrap_or("");
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| "m= port is not a number")
}

/// RFC 8839 §5.1: foundation component transport priority address port "typ" type ...
fn check_candidate(value: &str) -> Result<(), &'static str> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    if fields.len() < 8 {
        return Err("candidate has fewer than 8 fields");
    }
    if fields[1].parse::<u16>().is_err() {
        return Err("candidate component is not a number");
    }
    if fields[3].parse::<u32>().is_err() {
        return Err("candidate priority is not a number");
    }
    if fields[5].parse::<u16>().is_err() {
        return Err("candidate port is not a number");
    }
    if fields[6] != "typ" {
        return Err("candidate lacks typ");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GSTREAMER: &str = "a=ice-ufrag:Ti7b\r\na=ice-pwd:secretsecretsecretsecret\r\n\
        m=audio 9 RTP/AVP 0\r\na=mid:video0\r\n\
        a=candidate:1 1 UDP 2015363327 127.0.0.2 40261 typ host\r\n\
        a=candidate:2 1 TCP 1015021823 127.0.0.2 9 typ host tcptype active\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn gstreamer_fragment_passes_unchanged() {
        let trickle = prepare_trickle(GSTREAMER, &[]).expect("valid");
        assert_eq!(trickle.body, GSTREAMER);
        assert_eq!(trickle.candidates, 2);
        assert!(trickle.has_ice_credentials);
    }

    #[test]
    fn mdns_candidates_are_dropped() {
        let text = GSTREAMER.replace("127.0.0.2 40261", "abc-def.local 40261");
        let trickle = prepare_trickle(&text, &[]).expect("valid");
        assert_eq!(trickle.candidates, 1);
        assert!(!trickle.body.contains(".local"));
    }

    #[test]
    fn rejects_non_fragments() {
        for bad in [
            "",
            "\r\n",
            "v=0\r\n",
            "a=candidate:1 1 UDP x 127.0.0.1 1 typ host\r\n",
            "a=candidate:1 1 UDP 1 127.0.0.1 1 host\r\n",
            "m=audio\r\n",
            "garbage",
        ] {
            assert!(prepare_trickle(bad, &[]).is_err(), "{bad:?}");
        }
    }
}
