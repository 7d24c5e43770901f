//! Strict validation (`sdp_validation = "strict"`): an offer judged by webrtc-sdp as well.
//!
//! webrtc-sdp refuses some valid lines outright (an `rtx-time` fmtp before `apt`, `ssltcp`
//! candidates, `extmap` with a direction). Such a line must not cost a publisher its session,
//! so when the parser's complaint is about one line of a kind it is known to misjudge, that
//! line is left out of the copy being validated and the rest is judged again. The forwarded
//! bytes are never affected: this copy exists only to be judged.

use super::{Lines, SdpError};

/// Attributes whose lines webrtc-sdp is known to reject while they are valid.
const MISJUDGED: &[&str] = &[
    "candidate",
    "extmap",
    "fmtp",
    "rtcp-fb",
    "ssrc",
    "ssrc-group",
];

/// Lines that may be set aside before the offer is called malformed anyway.
const MAX_SET_ASIDE: usize = 16;

pub fn well_formed(lines: &Lines) -> Result<(), SdpError> {
    let mut set_aside = vec![false; lines.len()];
    for _ in 0..=MAX_SET_ASIDE {
        // webrtc-sdp numbers lines as `str::lines` does, so keep a map back to ours.
        let mut text = String::new();
        let mut original_index = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            if !set_aside[index] {
                text.push_str(line.text());
                text.push_str("\r\n");
                original_index.push(index);
            }
        }
        let error = match webrtc_sdp::parse_sdp(&text, false) {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let (number, reason) = describe(&error);
        let index = number.and_then(|n| original_index.get(n).copied());
        let line = index.and_then(|i| lines.get(i));
        let misjudged = line
            .and_then(|line| line.attribute_name())
            .is_some_and(|name| MISJUDGED.contains(&name));
        match index {
            Some(i) if misjudged => set_aside[i] = true,
            _ => {
                let context = match (index, line) {
                    (Some(i), Some(line)) => format!("line {} ({}): ", i + 1, label(&line)),
                    _ => String::new(),
                };
                return Err(SdpError::Malformed(format!("{context}{reason}")));
            }
        }
    }
    Err(SdpError::Malformed(format!(
        "more than {MAX_SET_ASIDE} lines the validator cannot read"
    )))
}

/// The line's type and attribute name only: values can carry ICE passwords.
fn label(line: &super::Line<'_>) -> String {
    match (line.kind(), line.attribute_name()) {
        (Some(b'a'), Some(name)) => format!("a={name}"),
        (Some(kind), _) => format!("{}=", kind as char),
        (None, _) => "blank line".to_owned(),
    }
}

fn describe(error: &webrtc_sdp::error::SdpParserError) -> (Option<usize>, String) {
    use webrtc_sdp::error::SdpParserError;
    match error {
        SdpParserError::Line {
            error, line_number, ..
        }
        | SdpParserError::Unsupported {
            error, line_number, ..
        } => (Some(*line_number), error.to_string()),
        SdpParserError::Sequence {
            message,
            line_number,
        } => (Some(*line_number), message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_the_line_but_not_its_value() {
        let text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP7 nonsense-address-here\r\n\
                    a=mid:0\r\na=sendonly\r\n";
        let lines = Lines::parse(text).expect("lines");
        let err = well_formed(&lines).expect_err("bad c=");
        let message = err.to_string();
        assert!(message.contains("line 6 (c=)"), "{message}");
        assert!(!message.contains("nonsense-address-here"), "{message}");
    }
}
