//! A line-preserving model of SDP text (RFC 8866) and of trickle sdpfrags (RFC 8840).
//!
//! Forwarded bytes must be the client's bytes except for lines a policy removes or changes on
//! purpose, so the model keeps every line's text and terminator exactly as received and
//! [`Lines::write`] concatenates them back.

use std::fmt;

/// How one line ended on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eol {
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

/// One `<type>=<value>` line, or a blank line kept for byte fidelity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    text: String,
    eol: Eol,
    /// Byte offset in `text` where an `a=` line's name ends (its `:` or the end); policy
    /// asks for names many times per line, so they are found once.
    name_end: usize,
}

impl Line {
    /// The line's type letter (`v`, `o`, `m`, `a`, ...); `None` for a blank line.
    pub fn kind(&self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        (bytes.len() >= 2 && bytes[1] == b'=').then(|| bytes[0])
    }

    /// Everything after `<type>=`.
    pub fn value(&self) -> &str {
        self.text.get(2..).unwrap_or("")
    }

    /// For an `a=name:value` or `a=flag` line, the attribute name.
    pub fn attribute_name(&self) -> Option<&str> {
        if self.kind() != Some(b'a') {
            return None;
        }
        self.text.get(2..self.name_end)
    }

    /// For an `a=name:value` line, the value after the first colon.
    pub fn attribute_value(&self) -> Option<&str> {
        if self.kind() != Some(b'a') || self.name_end >= self.text.len() {
            return None;
        }
        self.text.get(self.name_end + 1..)
    }

    fn new(text: String, eol: Eol) -> Self {
        let name_end = text
            .bytes()
            .skip(2)
            .position(|b| b == b':')
            .map_or(text.len(), |i| i + 2);
        Self {
            text,
            eol,
            name_end,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
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

/// The lines of an SDP body or sdpfrag, in order, with their terminators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    lines: Vec<Line>,
}

impl Lines {
    /// Splits `text` into lines and checks that each non-blank line is `<letter>=<value>`.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut lines = Vec::with_capacity(text.len() / 24);
        let mut rest = text;
        while !rest.is_empty() {
            let (body, eol, next) = match rest.find('\n') {
                Some(i) if i > 0 && rest.as_bytes()[i - 1] == b'\r' => {
                    (&rest[..i - 1], Eol::CrLf, &rest[i + 1..])
                }
                Some(i) => (&rest[..i], Eol::Lf, &rest[i + 1..]),
                None => (rest, Eol::None, ""),
            };
            let number = lines.len() + 1;
            if body.contains('\r') {
                return Err(SyntaxError {
                    line: number,
                    reason: "stray carriage return",
                });
            }
            let line = Line::new(body.to_owned(), eol);
            if !line.is_blank() && !is_type_letter(&line) {
                return Err(SyntaxError {
                    line: number,
                    reason: "not a <type>=<value> line",
                });
            }
            lines.push(line);
            rest = next;
        }
        Ok(Self { lines })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Line> {
        self.lines.get(index)
    }

    /// Replaces the text of line `index`, keeping its terminator.
    pub fn set_text(&mut self, index: usize, text: String) {
        if let Some(line) = self.lines.get_mut(index) {
            *line = Line::new(text, line.eol);
        }
    }

    /// Inserts a line before `index` with the terminator of its neighbours.
    pub fn insert(&mut self, index: usize, text: String) {
        let eol = self
            .lines
            .get(index.saturating_sub(1))
            .or_else(|| self.lines.first())
            .map_or(Eol::CrLf, |l| {
                if l.eol == Eol::None {
                    Eol::CrLf
                } else {
                    l.eol
                }
            });
        let index = index.min(self.lines.len());
        // A new last line after an unterminated one: that one now needs a terminator.
        if index == self.lines.len() {
            if let Some(last) = self.lines.last_mut() {
                if last.eol == Eol::None {
                    last.eol = eol;
                }
            }
        }
        self.lines.insert(index, Line::new(text, eol));
    }

    /// Removes the lines whose indices are in `indices` (any order, duplicates ignored).
    pub fn remove_indices(&mut self, indices: &[usize]) -> usize {
        if indices.is_empty() {
            return 0;
        }
        let before = self.lines.len();
        let mut doomed = vec![false; before];
        for &index in indices {
            if let Some(flag) = doomed.get_mut(index) {
                *flag = true;
            }
        }
        let mut index = 0;
        self.lines.retain(|_| {
            let keep = !doomed[index];
            index += 1;
            keep
        });
        before - self.lines.len()
    }

    /// Removes every line for which `drop` is true; returns how many went.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&Line) -> bool) -> usize {
        let before = self.lines.len();
        self.lines.retain(|line| !drop(line));
        before - self.lines.len()
    }

    /// Index ranges of the media sections (each starts at its `m=` line).
    pub fn media_sections(&self) -> Vec<std::ops::Range<usize>> {
        let starts: Vec<usize> = self
            .lines
            .iter()
            .enumerate()
            .filter(|(_, line)| line.kind() == Some(b'm'))
            .map(|(i, _)| i)
            .collect();
        starts
            .iter()
            .enumerate()
            .map(|(n, &start)| start..starts.get(n + 1).copied().unwrap_or(self.lines.len()))
            .collect()
    }

    /// Lines before the first `m=` line.
    pub fn session_section(&self) -> std::ops::Range<usize> {
        let end = self
            .lines
            .iter()
            .position(|line| line.kind() == Some(b'm'))
            .unwrap_or(self.lines.len());
        0..end
    }

    /// The exact bytes: every line with its original terminator.
    pub fn write(&self) -> String {
        let mut out = String::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum());
        for line in &self.lines {
            out.push_str(&line.text);
            out.push_str(line.eol.as_str());
        }
        out
    }
}

fn is_type_letter(line: &Line) -> bool {
    line.kind().is_some_and(|k| k.is_ascii_lowercase())
}

/// A candidate whose connection address is an mDNS name (RFC 9725 §4.3.2: drop silently).
pub fn is_mdns_candidate(line: &Line) -> bool {
    line.attribute_name() == Some("candidate")
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
    fn rejects_stray_carriage_return() {
        assert!(Lines::parse("v=0\ra=x\r\n").is_err());
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
        let flags: Vec<bool> = lines.iter().map(is_mdns_candidate).collect();
        assert_eq!(flags, vec![true, false, true]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
