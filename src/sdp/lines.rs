//! A line-preserving model of SDP text (RFC 8866) and of trickle sdpfrags (RFC 8840).
//!
//! Forwarded bytes must be the client's bytes except for lines a policy removes or changes on
//! purpose, so the model keeps every line's text and terminator exactly as received and
//! [`Lines::write`] concatenates them back.

use std::fmt;

use bytestring::ByteString;

/// How one line ended on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eol {
    #[default]
    CrLf,
    Lf,
    /// The last line of a body with no terminator.
    None,
}

impl Eol {
    fn as_str(self) -> &'static str {
        match self {
            Eol::CrLf => "\r\n",
            Eol::Lf => "\n",
            Eol::None => "",
        }
    }
}

/// The attribute names whipgate reads, recognised once when a line is parsed, so that the
/// checks after it compare a byte instead of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attr {
    Rtpmap,
    Fmtp,
    RtcpFb,
    Candidate,
    Fingerprint,
    Setup,
    Mid,
    IceUfrag,
    IcePwd,
    Extmap,
    Rid,
    Simulcast,
    Ssrc,
    Group,
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
    RtcpMux,
    RtcpMuxOnly,
    RtcpRsize,
    BundleOnly,
    EndOfCandidates,
    ExtmapAllowMixed,
    /// Any other name, including none (`a=` alone).
    #[default]
    Other,
}

impl Attr {
    fn of(name: &[u8]) -> Self {
        // The length and the first byte leave at most one candidate name; comparing with a
        // fixed-size literal compiles to a few word compares, where a slice of unknown
        // length (one `known` for all arms) called `memcmp` for every attribute line.
        match (name.len(), name.first()) {
            (6, Some(b'r')) if name == b"rtpmap" => Attr::Rtpmap,
            (4, Some(b'f')) if name == b"fmtp" => Attr::Fmtp,
            (7, Some(b'r')) if name == b"rtcp-fb" => Attr::RtcpFb,
            (9, Some(b'c')) if name == b"candidate" => Attr::Candidate,
            (11, Some(b'f')) if name == b"fingerprint" => Attr::Fingerprint,
            (5, Some(b's')) if name == b"setup" => Attr::Setup,
            (3, Some(b'm')) if name == b"mid" => Attr::Mid,
            (9, Some(b'i')) if name == b"ice-ufrag" => Attr::IceUfrag,
            (7, Some(b'i')) if name == b"ice-pwd" => Attr::IcePwd,
            (6, Some(b'e')) if name == b"extmap" => Attr::Extmap,
            (3, Some(b'r')) if name == b"rid" => Attr::Rid,
            (9, Some(b's')) if name == b"simulcast" => Attr::Simulcast,
            (4, Some(b's')) if name == b"ssrc" => Attr::Ssrc,
            (5, Some(b'g')) if name == b"group" => Attr::Group,
            (8, Some(b's')) if name == b"sendrecv" => Attr::SendRecv,
            (8, Some(b's')) if name == b"sendonly" => Attr::SendOnly,
            (8, Some(b'r')) if name == b"recvonly" => Attr::RecvOnly,
            (8, Some(b'r')) if name == b"rtcp-mux" => Attr::RtcpMux,
            (8, Some(b'i')) if name == b"inactive" => Attr::Inactive,
            (13, Some(b'r')) if name == b"rtcp-mux-only" => Attr::RtcpMuxOnly,
            (10, Some(b'r')) if name == b"rtcp-rsize" => Attr::RtcpRsize,
            (11, Some(b'b')) if name == b"bundle-only" => Attr::BundleOnly,
            (17, Some(b'e')) if name == b"end-of-candidates" => Attr::EndOfCandidates,
            (18, Some(b'e')) if name == b"extmap-allow-mixed" => Attr::ExtmapAllowMixed,
            _ => Attr::Other,
        }
    }
}

/// A view of one `<type>=<value>` line (or a blank line kept for byte fidelity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Line<'a> {
    text: &'a str,
    eol: Eol,
    shape: Shape,
}

/// What is known of a line's text without reading it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Shape {
    kind: Option<u8>,
    /// For `a=` lines; `Other` for every other line.
    attr: Attr,
    /// Where an `a=` line's name ends (its `:` or the end of the line).
    name_end: usize,
}

impl Shape {
    fn of(bytes: &[u8]) -> Self {
        let kind = match bytes {
            [kind, b'=', ..] => Some(*kind),
            _ => None,
        };
        if kind != Some(b'a') {
            return Self {
                kind,
                attr: Attr::Other,
                name_end: bytes.len(),
            };
        }
        let name = bytes.get(2..).unwrap_or(b"");
        let name_len = name.iter().position(|&b| b == b':').unwrap_or(name.len());
        Self {
            kind,
            attr: Attr::of(name.get(..name_len).unwrap_or(b"")),
            name_end: 2 + name_len,
        }
    }
}

impl<'a> Line<'a> {
    /// The line's type letter (`v`, `o`, `m`, `a`, ...); `None` for a blank line.
    pub fn kind(&self) -> Option<u8> {
        self.shape.kind
    }

    /// The attribute an `a=` line carries, when whipgate knows its name.
    pub fn attr(&self) -> Attr {
        self.shape.attr
    }

    /// Everything after `<type>=`.
    pub fn value(&self) -> &'a str {
        self.text.get(2..).unwrap_or("")
    }

    /// For an `a=name:value` or `a=flag` line, the attribute name.
    pub fn attribute_name(&self) -> Option<&'a str> {
        if self.shape.kind != Some(b'a') {
            return None;
        }
        self.text.get(2..self.shape.name_end)
    }

    /// For an `a=name:value` line, the value after the first colon.
    pub fn attribute_value(&self) -> Option<&'a str> {
        if self.shape.kind != Some(b'a') || self.shape.name_end >= self.text.len() {
            return None;
        }
        self.text.get(self.shape.name_end + 1..)
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    pub fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }
}

/// A line as the checks read it: its bytes and what the parse learnt of them. Every
/// byte the grammar names is ASCII, so they need no `str` and pay no UTF-8 boundary checks.
#[derive(Debug, Clone, Copy)]
pub struct RawLine<'a> {
    bytes: &'a [u8],
    shape: Shape,
}

impl<'a> RawLine<'a> {
    pub fn kind(&self) -> Option<u8> {
        self.shape.kind
    }

    pub fn attr(&self) -> Attr {
        self.shape.attr
    }

    /// Everything after `<type>=`.
    pub fn value(&self) -> &'a [u8] {
        self.bytes.get(2..).unwrap_or(b"")
    }

    /// For an `a=` line, whether it has no name (`a=` or `a=:value`).
    pub fn has_no_name(&self) -> bool {
        self.shape.name_end <= 2
    }

    /// For an `a=name:value` line, the bytes after the first colon; empty for a flag.
    pub fn attribute_value(&self) -> &'a [u8] {
        self.bytes.get(self.shape.name_end + 1..).unwrap_or(b"")
    }
}

/// Why a body is not SDP at all (before any semantic check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// One-based line number.
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Where a line's text lives: in the shared original body, or (once edited) on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Text {
    Span(usize, usize),
    Owned(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    text: Text,
    eol: Eol,
    shape: Shape,
}

/// The lines of an SDP body or sdpfrag, in order, with their terminators.
///
/// The body is kept once, shared between copies (and with the request body it came in, when
/// parsed with [`Lines::parse_shared`]); lines are spans into it, so parsing and copying
/// (once per backend tried) allocate no string per line. Only edited lines own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    source: ByteString,
    slots: Vec<Slot>,
    /// No line edited, inserted or removed since parsing: the text is still `source`.
    pristine: bool,
}

impl Lines {
    /// Splits `text` into lines and checks that each non-blank line is `<letter>=<value>`.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        Self::parse_shared(ByteString::from(text))
    }

    /// [`Lines::parse`] of a body already in memory as UTF-8 `Bytes`, which the lines share
    /// instead of copying (an offer is some 6 KB).
    pub fn parse_shared(source: ByteString) -> Result<Self, SyntaxError> {
        let text: &str = &source;
        let bytes = text.as_bytes();
        let mut slots = Vec::with_capacity(bytes.len() / 32 + 1);
        let mut start = 0;
        let mut crlf = 0;
        // One vectorised pass over the line feeds; carriage returns are counted apart, and
        // only a body with one that is not the first half of a CRLF takes the slow path.
        for at in memchr::memchr_iter(b'\n', bytes) {
            let (end, eol) = if at > start && bytes[at - 1] == b'\r' {
                crlf += 1;
                (at - 1, Eol::CrLf)
            } else {
                (at, Eol::Lf)
            };
            slots.push(Self::slot(text, start, end, eol, slots.len() + 1)?);
            start = at + 1;
        }
        if start < bytes.len() {
            slots.push(Self::slot(
                text,
                start,
                bytes.len(),
                Eol::None,
                slots.len() + 1,
            )?);
        }
        if memchr::memchr_iter(b'\r', bytes).count() != crlf {
            return Err(SyntaxError {
                line: stray_carriage_return(bytes),
                reason: "stray carriage return",
            });
        }
        Ok(Self {
            source,
            slots,
            pristine: true,
        })
    }

    fn slot(
        text: &str,
        start: usize,
        end: usize,
        eol: Eol,
        number: usize,
    ) -> Result<Slot, SyntaxError> {
        let body = text.as_bytes().get(start..end).unwrap_or(b"");
        let shape = Shape::of(body);
        let typed = shape.kind.is_some_and(|k| k.is_ascii_lowercase());
        if !typed && !text.get(start..end).unwrap_or("").trim().is_empty() {
            return Err(SyntaxError {
                line: number,
                reason: "not a <type>=<value> line",
            });
        }
        Ok(Slot {
            text: Text::Span(start, end),
            eol,
            shape,
        })
    }

    fn view<'a>(&'a self, slot: &'a Slot) -> Line<'a> {
        let text = match &slot.text {
            Text::Span(start, end) => self.source.get(*start..*end).unwrap_or(""),
            Text::Owned(text) => text,
        };
        Line {
            text,
            eol: slot.eol,
            shape: slot.shape,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Line<'_>> {
        self.slots.iter().map(|slot| self.view(slot))
    }

    /// Each line's bytes and shape, for checks that need no `str`.
    pub fn raw(&self) -> impl Iterator<Item = RawLine<'_>> + '_ {
        self.slots.iter().map(|slot| RawLine {
            bytes: match &slot.text {
                Text::Span(start, end) => self.source.as_bytes().get(*start..*end).unwrap_or(b""),
                Text::Owned(text) => text.as_bytes(),
            },
            shape: slot.shape,
        })
    }

    /// Each line's type letter and attribute, for walks that read only a few lines' text.
    pub fn kinds(&self) -> impl Iterator<Item = (Option<u8>, Attr)> + '_ {
        self.slots
            .iter()
            .map(|slot| (slot.shape.kind, slot.shape.attr))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<Line<'_>> {
        self.slots.get(index).map(|slot| self.view(slot))
    }

    /// Replaces the text of line `index`, keeping its terminator.
    pub fn set_text(&mut self, index: usize, text: String) {
        if let Some(slot) = self.slots.get_mut(index) {
            slot.shape = Shape::of(text.as_bytes());
            slot.text = Text::Owned(text.into_boxed_str());
            self.pristine = false;
        }
    }

    /// Inserts a line before `index` with the terminator of its neighbours.
    pub fn insert(&mut self, index: usize, text: String) {
        let eol = self
            .slots
            .get(index.saturating_sub(1))
            .or_else(|| self.slots.first())
            .map_or(Eol::CrLf, |s| {
                if s.eol == Eol::None {
                    Eol::CrLf
                } else {
                    s.eol
                }
            });
        let index = index.min(self.slots.len());
        // A new last line after an unterminated one: that one now needs a terminator.
        if index == self.slots.len() {
            if let Some(last) = self.slots.last_mut() {
                if last.eol == Eol::None {
                    last.eol = eol;
                }
            }
        }
        let slot = Slot {
            shape: Shape::of(text.as_bytes()),
            text: Text::Owned(text.into_boxed_str()),
            eol,
        };
        self.slots.insert(index, slot);
        self.pristine = false;
    }

    /// Removes the lines whose indices are in `indices` (any order, duplicates ignored).
    pub fn remove_indices(&mut self, indices: &[usize]) -> usize {
        if indices.is_empty() {
            return 0;
        }
        let before = self.slots.len();
        let mut doomed = vec![false; before];
        for &index in indices {
            if let Some(flag) = doomed.get_mut(index) {
                *flag = true;
            }
        }
        let mut index = 0;
        self.slots.retain(|_| {
            let keep = !doomed[index];
            index += 1;
            keep
        });
        let removed = before - self.slots.len();
        if removed > 0 {
            self.pristine = false;
        }
        removed
    }

    /// Removes every line for which `drop` is true; returns how many went.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&Line<'_>) -> bool) -> usize {
        let doomed: Vec<usize> = self
            .iter()
            .enumerate()
            .filter(|(_, line)| drop(line))
            .map(|(index, _)| index)
            .collect();
        self.remove_indices(&doomed)
    }

    /// Index ranges of the media sections (each starts at its `m=` line).
    pub fn media_sections(&self) -> Vec<std::ops::Range<usize>> {
        let starts: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.shape.kind == Some(b'm'))
            .map(|(i, _)| i)
            .collect();
        starts
            .iter()
            .enumerate()
            .map(|(n, &start)| start..starts.get(n + 1).copied().unwrap_or(self.slots.len()))
            .collect()
    }

    /// Lines before the first `m=` line.
    pub fn session_section(&self) -> std::ops::Range<usize> {
        let end = self
            .slots
            .iter()
            .position(|slot| slot.shape.kind == Some(b'm'))
            .unwrap_or(self.slots.len());
        0..end
    }

    /// The exact bytes: every line with its original terminator.
    pub fn write(&self) -> String {
        if self.is_verbatim() {
            return String::from(&*self.source);
        }
        let mut out = String::with_capacity(self.source.len() + 64);
        for line in self.iter() {
            out.push_str(line.text);
            out.push_str(line.eol.as_str());
        }
        out
    }

    /// True while no line was edited, inserted or removed: most offers and answers pass
    /// through unchanged, and copying the body whole is far cheaper than line by line.
    pub fn is_verbatim(&self) -> bool {
        self.pristine
    }
}

/// One-based number of the line holding the first carriage return not followed by a line
/// feed (the error path of [`Lines::parse`]).
fn stray_carriage_return(bytes: &[u8]) -> usize {
    let at = bytes
        .iter()
        .enumerate()
        .position(|(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
        .unwrap_or(bytes.len());
    1 + bytes[..at].iter().filter(|&&b| b == b'\n').count()
}

/// A candidate whose connection address is an mDNS name (RFC 9725 §4.3.2: drop silently).
pub fn is_mdns_candidate(line: &Line<'_>) -> bool {
    line.attr() == Attr::Candidate
        && line
            .attribute_value()
            .and_then(|value| value.split_ascii_whitespace().nth(4))
            .is_some_and(is_mdns_name)
}

/// `name.local`, any case, without allocating.
pub(crate) fn is_mdns_name(address: &str) -> bool {
    let bytes = address.as_bytes();
    bytes.len() > 6 && bytes[bytes.len() - 6..].eq_ignore_ascii_case(b".local")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_name_whipgate_reads_is_recognised_and_no_other() {
        let known = [
            ("rtpmap", Attr::Rtpmap),
            ("fmtp", Attr::Fmtp),
            ("rtcp-fb", Attr::RtcpFb),
            ("candidate", Attr::Candidate),
            ("fingerprint", Attr::Fingerprint),
            ("setup", Attr::Setup),
            ("mid", Attr::Mid),
            ("ice-ufrag", Attr::IceUfrag),
            ("ice-pwd", Attr::IcePwd),
            ("extmap", Attr::Extmap),
            ("rid", Attr::Rid),
            ("simulcast", Attr::Simulcast),
            ("ssrc", Attr::Ssrc),
            ("group", Attr::Group),
            ("sendrecv", Attr::SendRecv),
            ("sendonly", Attr::SendOnly),
            ("recvonly", Attr::RecvOnly),
            ("inactive", Attr::Inactive),
            ("rtcp-mux", Attr::RtcpMux),
            ("rtcp-mux-only", Attr::RtcpMuxOnly),
            ("rtcp-rsize", Attr::RtcpRsize),
            ("bundle-only", Attr::BundleOnly),
            ("end-of-candidates", Attr::EndOfCandidates),
            ("extmap-allow-mixed", Attr::ExtmapAllowMixed),
        ];
        for (name, attr) in known {
            assert_eq!(Attr::of(name.as_bytes()), attr, "{name}");
            assert_eq!(
                Attr::of(name.to_uppercase().as_bytes()),
                Attr::Other,
                "{name} is case-sensitive"
            );
        }
        for other in [
            "",
            "msid",
            "rtcp",
            "ice-options",
            "rtcp-xr",
            "mids",
            "candidates",
        ] {
            assert_eq!(Attr::of(other.as_bytes()), Attr::Other, "{other}");
        }
    }

    #[test]
    fn round_trips_mixed_line_endings_byte_for_byte() {
        let text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\ns=-\r\n\r\nt=0 0";
        let lines = Lines::parse(text).expect("valid");
        assert_eq!(lines.write(), text);
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn rejects_a_line_without_type() {
        let err = Lines::parse("v=0\r\nhello\r\n").expect_err("invalid");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn rejects_stray_carriage_return_naming_its_line() {
        assert_eq!(
            Lines::parse("v=0\ra=x\r\n")
                .map(|_| ())
                .expect_err("stray CR")
                .line,
            1
        );
        let err = Lines::parse("v=0\r\na=x\ry\r\ns=-\r\n").expect_err("stray CR");
        assert_eq!((err.line, err.reason), (2, "stray carriage return"));
        assert!(Lines::parse("v=0\r\ns=-\r").is_err());
        assert!(Lines::parse("v=0\r\r\n").is_err());
    }

    #[test]
    fn knows_attributes_by_name_before_and_after_an_edit() {
        let mut lines =
            Lines::parse("v=0\r\na=sendonly\r\na=mid:0\r\na=x-mine:1\r\na=\r\nm=video 9 X 0\r\n")
                .expect("valid");
        let attrs: Vec<Attr> = lines.iter().map(|line| line.attr()).collect();
        assert_eq!(
            attrs,
            [
                Attr::Other,
                Attr::SendOnly,
                Attr::Mid,
                Attr::Other,
                Attr::Other,
                Attr::Other
            ]
        );
        assert!(lines.is_verbatim());
        lines.set_text(1, "a=recvonly".into());
        assert_eq!(lines.get(1).map(|line| line.attr()), Some(Attr::RecvOnly));
        assert!(!lines.is_verbatim());
    }

    #[test]
    fn finds_media_sections() {
        let lines = Lines::parse("v=0\r\ns=-\r\nm=audio 9 X 0\r\na=mid:0\r\nm=video 9 X 0\r\n")
            .expect("valid");
        assert_eq!(lines.session_section(), 0..2);
        assert_eq!(lines.media_sections(), vec![2..4, 4..5]);
    }

    #[test]
    fn recognises_mdns_candidates() {
        let lines = Lines::parse(
            "a=candidate:1 1 udp 2122260223 4f3c-aa.local 53421 typ host\r\n\
             a=candidate:2 1 udp 2122260223 192.0.2.1 53421 typ host\r\n\
             a=candidate:3 1 udp 1 x.LOCAL 1 typ host\r\n",
        )
        .expect("valid");
        let flags: Vec<bool> = lines.iter().map(|line| is_mdns_candidate(&line)).collect();
        assert_eq!(flags, vec![true, false, true]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// The lines of `text` by `str::split`, or `None` when one is neither blank nor
    /// `<letter>=` or a carriage return stands alone.
    fn reference_split(text: &str) -> Option<Vec<(String, Eol)>> {
        let mut lines: Vec<&str> = text.split('\n').collect();
        let last_unterminated = lines.pop().filter(|last| !last.is_empty());
        let mut out = Vec::new();
        for line in lines {
            match line.strip_suffix('\r') {
                Some(body) => out.push((body.to_owned(), Eol::CrLf)),
                None => out.push((line.to_owned(), Eol::Lf)),
            }
        }
        if let Some(last) = last_unterminated {
            out.push((last.to_owned(), Eol::None));
        }
        let valid = out.iter().all(|(line, _)| {
            !line.contains('\r')
                && (line.trim().is_empty()
                    || matches!(line.as_bytes(), [kind, b'=', ..] if kind.is_ascii_lowercase()))
        });
        valid.then_some(out)
    }

    const KNOWN: [&str; 24] = [
        "rtpmap",
        "fmtp",
        "rtcp-fb",
        "candidate",
        "fingerprint",
        "setup",
        "mid",
        "ice-ufrag",
        "ice-pwd",
        "extmap",
        "rid",
        "simulcast",
        "ssrc",
        "group",
        "sendrecv",
        "sendonly",
        "recvonly",
        "inactive",
        "rtcp-mux",
        "rtcp-mux-only",
        "rtcp-rsize",
        "bundle-only",
        "end-of-candidates",
        "extmap-allow-mixed",
    ];

    proptest! {
        /// Names one byte away from a known one (and any short name) are told apart exactly.
        #[test]
        fn attribute_names_are_recognised_exactly(
            pick in 0..KNOWN.len(),
            at in 0usize..18,
            byte in proptest::sample::select(b"abcdefilmnoprstuvxy-:".to_vec()),
            other in "[a-z-]{0,19}",
        ) {
            let mut name = KNOWN[pick].as_bytes().to_vec();
            if let Some(slot) = name.get_mut(at) {
                *slot = byte;
            }
            for candidate in [name.as_slice(), other.as_bytes(), KNOWN[pick].as_bytes()] {
                let expected = KNOWN
                    .iter()
                    .position(|known| known.as_bytes() == candidate)
                    .map_or(Attr::Other, |_| Attr::of(candidate));
                prop_assert_eq!(Attr::of(candidate), expected);
                prop_assert_eq!(
                    Attr::of(candidate) != Attr::Other,
                    KNOWN.iter().any(|known| known.as_bytes() == candidate)
                );
            }
        }

        #[test]
        fn lines_are_split_as_a_plain_split_splits_them(
            pieces in proptest::collection::vec(prop_oneof!["[a-z]=[ -~]{0,20}", Just("\r".to_owned()), Just("\n".to_owned()), Just("\r\n".to_owned()), Just(String::new())], 0..24),
        ) {
            let text: String = pieces.concat();
            let expected = reference_split(&text);
            match Lines::parse(&text) {
                Ok(lines) => {
                    let got: Vec<(String, Eol)> = lines.iter().map(|l| (l.text().to_owned(), l.eol)).collect();
                    prop_assert_eq!(Some(got), expected);
                }
                Err(_) => prop_assert!(expected.is_none()),
            }
        }

        #[test]
        fn parse_then_write_is_the_identity(
            lines in proptest::collection::vec(("[a-z]", "[ -~]{0,40}", prop_oneof!["\r\n", "\n"]), 0..30),
            last in proptest::option::of("[a-z]=[ -~]{0,10}"),
        ) {
            let mut text: String = lines
                .iter()
                .map(|(kind, value, eol)| format!("{kind}={value}{eol}"))
                .collect();
            if let Some(last) = last {
                text.push_str(&last);
            }
            let parsed = Lines::parse(&text).expect("well-formed lines");
            prop_assert_eq!(parsed.write(), text);
        }

        #[test]
        fn an_edited_body_is_written_line_by_line(
            lines in proptest::collection::vec(("[a-z]", "[ -~]{0,20}", prop_oneof!["\r\n", "\n"]), 1..20),
            victim in 0usize..20,
            replace in proptest::bool::ANY,
        ) {
            let text: String = lines
                .iter()
                .map(|(kind, value, eol)| format!("{kind}={value}{eol}"))
                .collect();
            let mut edited = Lines::parse(&text).expect("well-formed lines");
            let victim = victim % lines.len();
            let mut expected: Vec<String> = lines
                .iter()
                .map(|(kind, value, eol)| format!("{kind}={value}{eol}"))
                .collect();
            if replace {
                edited.set_text(victim, "x=edited".into());
                expected[victim] = format!("x=edited{}", lines[victim].2);
            } else {
                edited.remove_indices(&[victim]);
                expected.remove(victim);
            }
            prop_assert_eq!(edited.write(), expected.concat());
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,400}") {
            let _ = Lines::parse(&text);
        }

        #[test]
        fn dropping_mdns_is_idempotent(hosts in proptest::collection::vec("[a-z0-9]{1,8}(\\.local)?", 1..8)) {
            let text: String = hosts
                .iter()
                .enumerate()
                .map(|(i, host)| format!("a=candidate:{i} 1 udp 1 {host} 9 typ host\r\n"))
                .collect();
            let mut once = Lines::parse(&text).expect("valid");
            once.remove_where(is_mdns_candidate);
            let mut twice = once.clone();
            prop_assert_eq!(twice.remove_where(is_mdns_candidate), 0);
            prop_assert_eq!(twice.write(), once.write());
        }
    }
}
