//! SDP handling: line-preserving parse and edit, validation, trickle sdpfrags.
//!
//! Pure: no I/O, no clock. The bytes whipgate forwards are always produced by [`Lines::write`],
//! never by webrtc-sdp's serializer, which is lossy (it drops unknown attributes and rewrites
//! fmtp lines); webrtc-sdp is used only to judge whether an offer is well formed.

mod answer;
mod candidate;
mod frag;
mod grammar;
mod lines;
mod policy;
mod strict;

pub use candidate::CandidateClass;
pub use frag::{prepare_answer_fragment, prepare_trickle, Trickle};
pub use lines::{is_mdns_candidate, Attr, Eol, Line, Lines, SyntaxError};
pub use policy::{
    apply_to_offer as apply_policy, AnswerPolicy, CodecSpec, ExtensionFilter, Policy, Simulcast,
};

use std::borrow::Cow;

use bytestring::ByteString;

use crate::kind::EndpointKind;

/// Why an SDP body was refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not parseable as SDP (400), with the parser's reason.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// Well formed but not acceptable for this endpoint (422).
    #[error("{0}")]
    Unacceptable(String),
}

impl SdpError {
    /// A bounded label for metrics; the messages are built in this module, so their
    /// beginnings are known here.
    pub fn reason(&self) -> &'static str {
        match self {
            SdpError::Malformed(_) => "malformed",
            SdpError::Unacceptable(text) if text.starts_with("backend accepts only") => {
                "no_acceptable_codec"
            }
            SdpError::Unacceptable(text) if text.starts_with("WHIP offer sends no media") => {
                "no_sending_media"
            }
            SdpError::Unacceptable(text) if text.starts_with("WHEP offer") => "not_receive_only",
            SdpError::Unacceptable(text) if text.starts_with("answer") => "bad_answer",
            SdpError::Unacceptable(_) => "unacceptable",
        }
    }
}

/// Media direction of one m-section (RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn of_attr(attr: Attr) -> Option<Self> {
        match attr {
            Attr::SendRecv => Some(Direction::SendRecv),
            Attr::SendOnly => Some(Direction::SendOnly),
            Attr::RecvOnly => Some(Direction::RecvOnly),
            Attr::Inactive => Some(Direction::Inactive),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// What the offer and answer checks need to know of one m-section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSummary {
    pub media: String,
    /// The section's own direction attribute, else the session's, else sendrecv.
    pub direction: Direction,
    /// Port 0 without `a=bundle-only` means the section is rejected or disabled.
    pub active: bool,
    pub mid: Option<String>,
}

/// The m-sections and the first BUNDLE group of a body, found in one pass over its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outline {
    pub media: Vec<MediaSummary>,
    /// The mids of the first `a=group:BUNDLE`, if there is one.
    pub bundle: Option<Vec<String>>,
}

/// A client's offer, checked for its endpoint kind, less its mDNS (`.local`) candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    lines: Lines,
    outline: Outline,
}

/// How hard offers are checked (`[server] sdp_validation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validation {
    /// whipgate's own grammar check of every line it reads or forwards (fast).
    #[default]
    Standard,
    /// The same, and webrtc-sdp's full parse on top (about 5x the CPU per offer).
    Strict,
}

/// Checks a client's offer for `kind` with standard validation.
pub fn prepare_offer(kind: EndpointKind, text: &str) -> Result<Offer, SdpError> {
    prepare_offer_with(kind, text, Validation::Standard)
}

/// Checks a client's offer for `kind`.
pub fn prepare_offer_with(
    kind: EndpointKind,
    text: &str,
    validation: Validation,
) -> Result<Offer, SdpError> {
    prepare_shared_offer(kind, ByteString::from(text), validation)
}

/// [`prepare_offer_with`] of a request body already checked as UTF-8: the offer's lines
/// share it instead of copying it (an offer is some 6 KB).
pub fn prepare_shared_offer(
    kind: EndpointKind,
    body: ByteString,
    validation: Validation,
) -> Result<Offer, SdpError> {
    let mut lines = parse_sdp(body)?;
    let noticed = grammar::well_formed(&lines)?;
    if validation == Validation::Strict {
        strict::well_formed(&lines)?;
    }
    let outline = outline(&lines);
    check_directions(kind, &outline.media)?;
    if noticed.mdns_candidates {
        lines.remove_where(is_mdns_candidate);
    }
    Ok(Offer { lines, outline })
}

impl Offer {
    /// The offer as one backend's policy wants it; `Unacceptable` when nothing it accepts
    /// remains (e.g. only H264 accepted, VP8 offered).
    pub fn rewrite(&self, policy: &Policy) -> Result<Cow<'_, Offer>, SdpError> {
        if policy.is_empty() {
            return Ok(Cow::Borrowed(self));
        }
        let mut lines = self.lines.clone();
        policy::apply_to_offer(&mut lines, policy)?;
        let outline = outline(&lines);
        Ok(Cow::Owned(Offer { lines, outline }))
    }

    /// The bytes to send upstream.
    pub fn text(&self) -> String {
        self.lines.write()
    }

    /// True when the bytes to send upstream are exactly those the offer was prepared from,
    /// so the caller may forward the body it received instead of a copy.
    pub fn is_unchanged(&self) -> bool {
        self.lines.is_verbatim()
    }

    /// Applies the answer policy to a backend's answer to this offer and checks the result
    /// answers this offer; returns the bytes for the client (`answer` itself when no policy
    /// changed it).
    pub fn accept_answer<'a>(
        &self,
        answer: &'a str,
        policy: &Policy,
    ) -> Result<Cow<'a, str>, SdpError> {
        Ok(match self.check_answer(parse_sdp(answer)?, policy)? {
            None => Cow::Borrowed(answer),
            Some(rewritten) => Cow::Owned(rewritten),
        })
    }

    /// [`Offer::accept_answer`] of an answer already in memory as UTF-8 `Bytes`, parsed
    /// without a copy: `None` when the answer goes to the client as it is.
    pub fn accept_answer_shared(
        &self,
        answer: &ByteString,
        policy: &Policy,
    ) -> Result<Option<String>, SdpError> {
        self.check_answer(parse_sdp(answer.clone())?, policy)
    }

    fn check_answer(&self, mut lines: Lines, policy: &Policy) -> Result<Option<String>, SdpError> {
        if let Some(answer_policy) = &policy.answer {
            policy::apply_to_answer(&mut lines, answer_policy);
        }
        answer::check_against_offer(&self.outline, &outline(&lines))?;
        Ok((!lines.is_verbatim()).then(|| lines.write()))
    }
}

/// Checks a backend's own offer before a client of `kind` sees it (a WHEP counter-offer or
/// a legacy server offer): well formed, sending media the way a WHIP offer would, with the
/// answer policy applied as to any SDP whipgate returns. `Unacceptable` when it is not an
/// offer a player could answer, so that a 406 carrying it counts as an ordinary error.
pub fn check_server_offer<'a>(
    kind: EndpointKind,
    text: &'a str,
    answer_policy: Option<&policy::AnswerPolicy>,
) -> Result<Cow<'a, str>, SdpError> {
    let mut lines = parse_sdp(text)?;
    grammar::well_formed(&lines)?;
    let media = outline(&lines).media;
    let sends = match kind {
        // A server offering media to a player sends it.
        EndpointKind::Whep => EndpointKind::Whip,
        // A server offering to a publisher receives.
        EndpointKind::Whip => EndpointKind::Whep,
    };
    check_directions(sends, &media).map_err(|e| {
        SdpError::Unacceptable(format!(
            "the backend's offer is unusable: {}",
            e.to_string().replace("offer", "its offer")
        ))
    })?;
    if let Some(answer_policy) = answer_policy {
        policy::apply_to_answer(&mut lines, answer_policy);
    }
    Ok(if lines.is_verbatim() {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(lines.write())
    })
}

/// Checks a client's answer to a backend's offer (its `PATCH application/sdp`): well formed,
/// with at least one m-line, less its mDNS candidates.
pub fn prepare_client_answer(text: &str) -> Result<String, SdpError> {
    let mut lines = parse_sdp(text)?;
    let noticed = grammar::well_formed(&lines)?;
    if outline(&lines).media.is_empty() {
        return Err(SdpError::Unacceptable("answer has no m-line".into()));
    }
    if noticed.mdns_candidates {
        lines.remove_where(is_mdns_candidate);
    }
    Ok(lines.write())
}

fn parse_sdp(text: impl Into<ByteString>) -> Result<Lines, SdpError> {
    let lines = Lines::parse_shared(text.into()).map_err(|e| SdpError::Malformed(e.to_string()))?;
    if lines.get(0).and_then(|line| line.kind()) != Some(b'v') {
        return Err(SdpError::Malformed(
            "line 1: an SDP body starts with v=".into(),
        ));
    }
    Ok(lines)
}

/// The m-sections and BUNDLE group of `lines`, in one pass. A direction attribute in a
/// section wins over the session's; of several, the last wins.
pub fn outline(lines: &Lines) -> Outline {
    struct Open {
        media: String,
        mid: Option<String>,
        own_direction: Option<Direction>,
        port_zero: bool,
        bundle_only: bool,
    }
    let mut session_direction = None;
    let mut sections: Vec<Open> = Vec::new();
    let mut bundle = None;
    // Most lines are neither m= nor one of the few attributes read here: their kind and
    // attribute are known from the parse, and only the lines read below are looked at.
    for (index, (kind, attr)) in lines.kinds().enumerate() {
        let line = || lines.get(index).unwrap_or_default();
        match kind {
            Some(b'm') => {
                let line = line();
                let mut fields = line.value().split_ascii_whitespace();
                let media = fields.next().unwrap_or("").to_owned();
                let port_zero = fields
                    .next()
                    .is_some_and(|port| port.split('/').next() == Some("0"));
                sections.push(Open {
                    media,
                    mid: None,
                    own_direction: None,
                    port_zero,
                    bundle_only: false,
                });
            }
            Some(b'a') => {
                if let Some(direction) = Direction::of_attr(attr) {
                    match sections.last_mut() {
                        Some(open) => open.own_direction = Some(direction),
                        None => session_direction = Some(direction),
                    }
                    continue;
                }
                match (attr, sections.last_mut()) {
                    (Attr::Mid, Some(open)) => {
                        open.mid = line().attribute_value().map(|v| v.trim().to_owned())
                    }
                    (Attr::BundleOnly, Some(open)) => open.bundle_only = true,
                    (Attr::Group, _) if bundle.is_none() => {
                        let mut parts = line()
                            .attribute_value()
                            .unwrap_or("")
                            .split_ascii_whitespace();
                        if parts.next() == Some("BUNDLE") {
                            bundle = Some(parts.map(str::to_owned).collect());
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let media = sections
        .into_iter()
        .map(|open| MediaSummary {
            media: open.media,
            direction: open
                .own_direction
                .or(session_direction)
                .unwrap_or(Direction::SendRecv),
            active: !open.port_zero || open.bundle_only,
            mid: open.mid,
        })
        .collect();
    Outline { media, bundle }
}

fn check_directions(kind: EndpointKind, media: &[MediaSummary]) -> Result<(), SdpError> {
    if media.is_empty() {
        return Err(SdpError::Unacceptable("offer has no m-line".into()));
    }
    // A data channel (m=application) has no direction: it never makes an offer send or
    // receive media, and a player may add one to a receive-only offer.
    let active = || {
        media
            .iter()
            .enumerate()
            .filter(|(_, m)| m.active && m.media != "application")
    };
    match kind {
        EndpointKind::Whip => {
            if active().any(|(_, m)| m.direction.sends()) {
                Ok(())
            } else {
                Err(SdpError::Unacceptable(
                    "WHIP offer sends no media: every m-line is recvonly, inactive or disabled"
                        .into(),
                ))
            }
        }
        EndpointKind::Whep => {
            if let Some((index, m)) = active().find(|(_, m)| m.direction.sends()) {
                return Err(SdpError::Unacceptable(format!(
                    "WHEP offer must be receive-only: m-line {} ({}) is {}",
                    index + 1,
                    m.media,
                    m.direction.as_str()
                )));
            }
            if active().any(|(_, m)| m.direction == Direction::RecvOnly) {
                Ok(())
            } else {
                Err(SdpError::Unacceptable(
                    "WHEP offer receives no media: every m-line is inactive or disabled".into(),
                ))
            }
        }
    }
}

/// Whether `sdp` has an enabled (port not 0) `m={media}` section.
pub fn offers_media(sdp: &str, media: &str) -> bool {
    sdp.lines().any(|line| {
        let mut fields = line.trim_end_matches('\r').split(' ');
        fields.next() == Some(&format!("m={media}"))
            && fields.next().is_some_and(|port| port != "0")
    })
}

/// Whether some `m={media}` section of `sdp` offers `codec` (by its rtpmap encoding name,
/// case-insensitively): a vendor that needs one codec refuses an offer without it up front.
pub fn offers_codec(sdp: &str, media: &str, codec: &str) -> bool {
    let mut in_media = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split(' ');
            // A port of 0 rejects (or disables) the section: it offers nothing.
            in_media = fields.next() == Some(media) && fields.next() != Some("0");
        } else if in_media {
            let Some(rtpmap) = line.strip_prefix("a=rtpmap:") else {
                continue;
            };
            let encoding = rtpmap
                .split_once(' ')
                .and_then(|(_, rest)| rest.split('/').next())
                .unwrap_or("");
            if encoding.eq_ignore_ascii_case(codec) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn offers_codec_looks_in_the_right_media_section() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 h264/90000\r\n";
        assert!(super::offers_codec(sdp, "video", "H264"));
        assert!(super::offers_codec(sdp, "audio", "opus"));
        assert!(!super::offers_codec(sdp, "audio", "H264"));
        assert!(!super::offers_codec(
            "v=0\r\nm=video 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
            "video",
            "H264"
        ));
    }

    use super::*;

    const HEAD: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n";

    fn offer(audio_dir: &str, video_dir: &str) -> String {
        format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n\
             a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r\na=setup:actpass\r\na={audio_dir}\r\n\
             a=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n\
             a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r\na=setup:actpass\r\na={video_dir}\r\n\
             a=rtpmap:96 VP8/90000\r\n"
        )
    }

    #[test]
    fn whip_needs_a_sending_m_line() {
        assert!(prepare_offer(EndpointKind::Whip, &offer("sendonly", "sendonly")).is_ok());
        assert!(prepare_offer(EndpointKind::Whip, &offer("recvonly", "sendrecv")).is_ok());
        let err = prepare_offer(EndpointKind::Whip, &offer("recvonly", "inactive"))
            .expect_err("no sending media");
        assert!(matches!(err, SdpError::Unacceptable(_)));
    }

    /// A voice agent's session: sendrecv audio and a data channel, through the checks and
    /// an audio policy unchanged, and a sendrecv answer taken.
    #[test]
    fn a_two_way_whip_offer_passes_untouched() {
        let talk = format!(
            "{}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n\
             a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r\na=setup:actpass\r\na=sctp-port:5000\r\n",
            offer("sendrecv", "sendrecv")
                .split("m=video")
                .next()
                .expect("audio part")
        );
        let prepared = prepare_offer(EndpointKind::Whip, &talk).expect("two-way offer");
        assert!(prepared.is_unchanged());
        let policy: Policy = toml::from_str("audio_codecs = [\"opus\"]").expect("policy");
        let rewritten = prepared.rewrite(&policy).expect("opus kept");
        assert!(rewritten.text().contains("a=sendrecv"));
        assert!(rewritten.text().contains("m=application"));
        let answer = talk.replace("a=setup:actpass", "a=setup:active");
        assert!(prepared.accept_answer(&answer, &Policy::default()).is_ok());
    }

    #[test]
    fn whep_must_be_receive_only() {
        assert!(prepare_offer(EndpointKind::Whep, &offer("recvonly", "recvonly")).is_ok());
        let err =
            prepare_offer(EndpointKind::Whep, &offer("recvonly", "sendrecv")).expect_err("sends");
        assert_eq!(
            err.to_string(),
            "WHEP offer must be receive-only: m-line 2 (video) is sendrecv"
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for body in ["", "hello", "v=0\r\nthis is not sdp\r\n", "m=audio\r\n"] {
            let err = prepare_offer(EndpointKind::Whip, body).expect_err(body);
            assert!(matches!(err, SdpError::Malformed(_)), "{body:?}: {err}");
        }
    }

    #[test]
    fn drops_mdns_candidates_and_keeps_everything_else() {
        let base = offer("sendonly", "sendonly");
        let with_mdns = base.replacen(
            "a=setup:actpass\r\n",
            "a=setup:actpass\r\na=candidate:1 1 udp 2122260223 e0a1.local 5000 typ host\r\n\
             a=candidate:2 1 udp 2122260223 192.0.2.7 5000 typ host\r\n",
            1,
        );
        let out = prepare_offer(EndpointKind::Whip, &with_mdns)
            .expect("valid")
            .text();
        assert!(!out.contains(".local"));
        assert_eq!(
            out,
            base.replacen(
                "a=setup:actpass\r\n",
                "a=setup:actpass\r\na=candidate:2 1 udp 2122260223 192.0.2.7 5000 typ host\r\n",
                1
            )
        );
    }

    #[test]
    fn unchanged_bodies_are_passed_through_not_copied() {
        let prepared =
            prepare_offer(EndpointKind::Whip, &offer("sendonly", "sendonly")).expect("valid");
        assert!(prepared.is_unchanged());
        let answer = prepared
            .text()
            .replace("a=sendonly", "a=recvonly")
            .replace("a=setup:actpass", "a=setup:active");
        let accepted = prepared
            .accept_answer(&answer, &Policy::default())
            .expect("answers the offer");
        assert!(matches!(accepted, Cow::Borrowed(_)));
        let with_mdns = offer("sendonly", "sendonly").replacen(
            "a=setup:actpass\r\n",
            "a=setup:actpass\r\na=candidate:1 1 udp 2122260223 e0a1.local 5000 typ host\r\n",
            1,
        );
        let cleaned = prepare_offer(EndpointKind::Whip, &with_mdns).expect("valid");
        assert!(!cleaned.is_unchanged());
    }

    #[test]
    fn the_last_direction_in_a_section_wins_over_the_sessions() {
        let text = offer("recvonly", "sendonly")
            .replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n")
            .replace("a=recvonly\r\n", "a=recvonly\r\na=sendrecv\r\n");
        let lines = Lines::parse(&text).expect("valid");
        let directions: Vec<Direction> =
            outline(&lines).media.iter().map(|m| m.direction).collect();
        assert_eq!(directions, [Direction::SendRecv, Direction::SendOnly]);
        let no_own = text.replace("a=sendonly\r\n", "");
        let lines = Lines::parse(&no_own).expect("valid");
        assert_eq!(outline(&lines).media[1].direction, Direction::Inactive);
    }

    #[test]
    fn bundle_only_section_with_port_zero_is_active() {
        let text = offer("sendonly", "sendonly").replace("m=video 9", "m=video 0");
        let lines = Lines::parse(&text).expect("valid");
        assert!(!outline(&lines).media[1].active);
        let text = text.replace("a=mid:1\r\n", "a=mid:1\r\na=bundle-only\r\n");
        let lines = Lines::parse(&text).expect("valid");
        assert!(outline(&lines).media[1].active);
    }
}
