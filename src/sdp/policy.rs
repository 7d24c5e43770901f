//! Per-route SDP policy: codec allow-lists and preference, simulcast, header extensions,
//! bandwidth caps, candidate filtering and answer address mapping.
//!
//! Every rule edits or removes whole lines of the line model; a line no rule touches leaves
//! whipgate byte for byte, in its original place. Applying a policy twice gives the same
//! bytes as applying it once.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use super::candidate::{replace_field, Candidate, CandidateClass};
use super::{Lines, SdpError};

/// A route's (or a backend's default) SDP policy, as written in routes.toml under `sdp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Audio codecs the backend accepts, most preferred first; absent = all, unchanged.
    pub audio_codecs: Option<Vec<CodecSpec>>,
    /// Video codecs the backend accepts, most preferred first; absent = all, unchanged.
    pub video_codecs: Option<Vec<CodecSpec>>,
    /// `strip` removes rid/simulcast lines and the RTP stream id extmaps they need.
    pub simulcast: Option<Simulcast>,
    /// Header extensions kept (allow) or removed (deny), by URI.
    pub header_extensions: Option<ExtensionFilter>,
    /// Cap written as `b=AS` (kbps) and `b=TIAS` (bps) on every audio m-section.
    pub max_audio_kbps: Option<u32>,
    /// Cap written as `b=AS` (kbps) and `b=TIAS` (bps) on every video m-section.
    pub max_video_kbps: Option<u32>,
    /// Candidate classes dropped from offers and PATCH bodies (`.local` always is).
    pub drop_candidates: Option<Vec<CandidateClass>>,
    /// What is done to the backend's answer.
    pub answer: Option<AnswerPolicy>,
}

/// Keep or strip simulcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Simulcast {
    Keep,
    Strip,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionFilter {
    pub allow: Option<Vec<String>>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerPolicy {
    /// Backend address → address clients can reach (e.g. a NAT 1:1 public address), applied
    /// to candidates and `c=` lines.
    #[serde(default)]
    pub address_map: BTreeMap<IpAddr, IpAddr>,
    /// Candidate classes dropped from answers (after mapping).
    #[serde(default)]
    pub drop_candidates: Vec<CandidateClass>,
}

/// A codec by name, optionally narrowed by H264's profile-level-id and packetization-mode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CodecSpec {
    Name(String),
    Detailed {
        name: String,
        /// Six hex digits, or four (profile_idc and constraint flags, any level).
        profile_level_id: Option<String>,
        packetization_mode: Option<u8>,
    },
}

impl CodecSpec {
    pub fn name(&self) -> &str {
        match self {
            CodecSpec::Name(name) | CodecSpec::Detailed { name, .. } => name,
        }
    }

    fn matches(&self, codec: &Codec<'_>) -> bool {
        if !codec.name.eq_ignore_ascii_case(self.name()) {
            return false;
        }
        let CodecSpec::Detailed {
            profile_level_id,
            packetization_mode,
            ..
        } = self
        else {
            return true;
        };
        let param = |key: &str| {
            codec.fmtp.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
            })
        };
        let profile_ok = profile_level_id.as_ref().is_none_or(|wanted| {
            param("profile-level-id").is_some_and(|have| {
                have.len() >= wanted.len() && have[..wanted.len()].eq_ignore_ascii_case(wanted)
            })
        });
        let mode_ok = packetization_mode.is_none_or(|wanted| {
            param("packetization-mode")
                .unwrap_or("0")
                .parse::<u8>()
                .is_ok_and(|have| have == wanted)
        });
        profile_ok && mode_ok
    }
}

impl Policy {
    /// This (backend default) policy with every field the route sets taken from the route.
    pub fn overridden_by(&self, route: &Policy) -> Policy {
        Policy {
            audio_codecs: route
                .audio_codecs
                .clone()
                .or_else(|| self.audio_codecs.clone()),
            video_codecs: route
                .video_codecs
                .clone()
                .or_else(|| self.video_codecs.clone()),
            simulcast: route.simulcast.or(self.simulcast),
            header_extensions: route
                .header_extensions
                .clone()
                .or_else(|| self.header_extensions.clone()),
            max_audio_kbps: route.max_audio_kbps.or(self.max_audio_kbps),
            max_video_kbps: route.max_video_kbps.or(self.max_video_kbps),
            drop_candidates: route
                .drop_candidates
                .clone()
                .or_else(|| self.drop_candidates.clone()),
            answer: route.answer.clone().or_else(|| self.answer.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Checks what serde cannot: non-empty codec lists and names, well-formed H264 params.
    pub fn validate(&self) -> Result<(), String> {
        for (kind, list) in [("audio", &self.audio_codecs), ("video", &self.video_codecs)] {
            let Some(list) = list else { continue };
            if list.is_empty() {
                return Err(format!("{kind}_codecs is empty: no {kind} could be sent"));
            }
            for spec in list {
                if spec.name().is_empty() || spec.name().contains(char::is_whitespace) {
                    return Err(format!(
                        "{kind}_codecs has a bad codec name {:?}",
                        spec.name()
                    ));
                }
                if let CodecSpec::Detailed {
                    profile_level_id: Some(id),
                    ..
                } = spec
                {
                    if !(id.len() == 4 || id.len() == 6)
                        || !id.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(format!("profile_level_id {id:?} is not 4 or 6 hex digits"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Applies `policy` to an offer already checked for its endpoint kind.
pub fn apply_to_offer(lines: &mut Lines, policy: &Policy) -> Result<(), SdpError> {
    // Work from the last section back so that edits do not shift the ranges still to do.
    let sections = lines.media_sections();
    for range in sections.into_iter().rev() {
        apply_to_section(lines, range, policy)?;
    }
    if let Some(filter) = &policy.header_extensions {
        let session = lines.session_section();
        let doomed: Vec<usize> = session
            .filter(|&i| lines.get(i).is_some_and(|l| extmap_denied(&l, filter)))
            .collect();
        lines.remove_indices(&doomed);
    }
    drop_candidates(lines, policy.drop_candidates.as_deref().unwrap_or(&[]));
    Ok(())
}

/// Drops `.local` candidates and those of `classes` (offers, PATCH bodies).
pub fn drop_candidates(lines: &mut Lines, classes: &[CandidateClass]) -> usize {
    lines.remove_where(|line| {
        Candidate::parse(line)
            .is_some_and(|c| c.is(CandidateClass::Mdns) || classes.iter().any(|class| c.is(*class)))
    })
}

/// Maps backend addresses and drops unreachable candidates in an answer.
pub fn apply_to_answer(lines: &mut Lines, policy: &AnswerPolicy) {
    if !policy.address_map.is_empty() {
        for index in 0..lines.len() {
            let Some(line) = lines.get(index) else {
                continue;
            };
            let mapped = match line.kind() {
                Some(b'c') => map_address(line.text(), 2, &policy.address_map),
                Some(b'a') if line.attribute_name() == Some("candidate") => {
                    map_address(line.text(), 4, &policy.address_map)
                }
                _ => None,
            };
            if let Some(text) = mapped {
                lines.set_text(index, text);
            }
        }
    }
    if !policy.drop_candidates.is_empty() {
        lines.remove_where(|line| {
            Candidate::parse(line)
                .is_some_and(|c| policy.drop_candidates.iter().any(|class| c.is(*class)))
        });
    }
}

/// Maps the address in whitespace field `field` of a whole line (`c=IN IP4 A`: 2,
/// `a=candidate:f c t p A ...`: 4); a `c=` line also gets the new address family.
fn map_address(text: &str, field: usize, map: &BTreeMap<IpAddr, IpAddr>) -> Option<String> {
    let current = text.split_ascii_whitespace().nth(field)?;
    let address: IpAddr = current.parse().ok()?;
    let target = map.get(&address)?;
    let mut replaced = replace_field(text, field, &target.to_string())?;
    if text.starts_with("c=") {
        let family = if target.is_ipv4() { "IP4" } else { "IP6" };
        replaced = replace_field(&replaced, 1, family)?;
    }
    Some(replaced)
}

/// A payload type's role in its m-section.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role<'a> {
    Primary(Codec<'a>),
    /// Retransmission of payload type `apt`.
    Rtx(&'a str),
    /// Audio RED naming its payload types, or video RED / FEC protecting whatever is sent.
    Redundancy(Vec<&'a str>),
    /// telephone-event, CN: only meaningful beside a primary codec.
    Auxiliary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Codec<'a> {
    name: &'a str,
    fmtp: &'a str,
}

fn apply_to_section(
    lines: &mut Lines,
    range: std::ops::Range<usize>,
    policy: &Policy,
) -> Result<(), SdpError> {
    let Some(m_line) = lines.get(range.start) else {
        return Ok(());
    };
    let media = m_line
        .value()
        .split_ascii_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    let (codecs, cap) = match media.as_str() {
        "audio" => (policy.audio_codecs.as_deref(), policy.max_audio_kbps),
        "video" => (policy.video_codecs.as_deref(), policy.max_video_kbps),
        _ => (None, None),
    };
    let mut doomed: Vec<usize> = Vec::new();
    if let Some(specs) = codecs {
        filter_codecs(lines, range.clone(), &media, specs, &mut doomed)?;
    }
    for index in range.clone() {
        let Some(line) = lines.get(index) else {
            continue;
        };
        let name = line.attribute_name();
        let uri = if name == Some("extmap") {
            extmap_uri(&line)
        } else {
            None
        };
        let strip_simulcast = policy.simulcast == Some(Simulcast::Strip)
            && (matches!(name, Some("rid" | "simulcast"))
                || uri.is_some_and(|uri| RID_EXTENSIONS.contains(&uri)));
        let denied = uri.is_some_and(|uri| {
            policy
                .header_extensions
                .as_ref()
                .is_some_and(|filter| uri_denied(uri, filter))
        });
        if strip_simulcast || denied {
            doomed.push(index);
        }
    }
    if let Some(kbps) = cap {
        cap_bandwidth(lines, range, kbps, &mut doomed);
    }
    lines.remove_indices(&doomed);
    Ok(())
}

const RID_EXTENSIONS: &[&str] = &[
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
];

fn extmap_uri<'a>(line: &super::Line<'a>) -> Option<&'a str> {
    if line.attribute_name() != Some("extmap") {
        return None;
    }
    line.attribute_value()?.split_ascii_whitespace().nth(1)
}

fn extmap_denied(line: &super::Line<'_>, filter: &ExtensionFilter) -> bool {
    extmap_uri(line).is_some_and(|uri| uri_denied(uri, filter))
}

fn uri_denied(uri: &str, filter: &ExtensionFilter) -> bool {
    filter.deny.iter().any(|d| d == uri)
        || filter
            .allow
            .as_ref()
            .is_some_and(|allow| !allow.iter().any(|a| a == uri))
}

/// Static RTP/AVP payload types (RFC 3551) that need no rtpmap.
fn static_name(pt: &str) -> Option<&'static str> {
    Some(match pt {
        "0" => "PCMU",
        "3" => "GSM",
        "8" => "PCMA",
        "9" => "G722",
        "13" => "CN",
        "18" => "G729",
        "26" => "JPEG",
        "34" => "H263",
        _ => return None,
    })
}

fn filter_codecs(
    lines: &mut Lines,
    range: std::ops::Range<usize>,
    media: &str,
    specs: &[CodecSpec],
    doomed: &mut Vec<usize>,
) -> Result<(), SdpError> {
    let Some(m_line) = lines.get(range.start) else {
        return Ok(());
    };
    let m_text = m_line.text().to_owned();
    let fields: Vec<&str> = m_text.split_ascii_whitespace().collect();
    if fields.len() < 4 {
        return Ok(());
    }
    let port_zero = fields[1].split('/').next() == Some("0");
    let payload_types: Vec<&str> = fields[3..].to_vec();

    // Names and fmtp of each payload type in this section.
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    let mut fmtps: BTreeMap<&str, &str> = BTreeMap::new();
    let mut bundle_only = false;
    for index in range.clone() {
        let Some(line) = lines.get(index) else {
            continue;
        };
        match (line.attribute_name(), line.attribute_value()) {
            (Some("rtpmap"), Some(value)) => {
                if let Some((pt, rest)) = value.split_once(' ') {
                    names.insert(pt, rest.split('/').next().unwrap_or(""));
                }
            }
            (Some("fmtp"), Some(value)) => {
                if let Some((pt, rest)) = value.split_once(' ') {
                    fmtps.insert(pt, rest);
                }
            }
            (Some("bundle-only"), _) => bundle_only = true,
            _ => {}
        }
    }
    let role = |pt: &str| -> Role<'_> {
        let name = names
            .get(pt)
            .copied()
            .or_else(|| static_name(pt))
            .unwrap_or("");
        let fmtp = fmtps.get(pt).copied().unwrap_or("");
        if name.eq_ignore_ascii_case("rtx") {
            let apt = fmtp
                .split(';')
                .find_map(|p| p.trim().strip_prefix("apt="))
                .unwrap_or("");
            Role::Rtx(apt)
        } else if name.eq_ignore_ascii_case("red") {
            Role::Redundancy(
                fmtp.split('/')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .collect(),
            )
        } else if ["ulpfec", "flexfec", "flexfec-03"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            Role::Redundancy(Vec::new())
        } else if ["telephone-event", "CN"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            Role::Auxiliary
        } else {
            Role::Primary(Codec { name, fmtp })
        }
    };

    // Each payload type's role and allow-list rank, computed once.
    let roles: Vec<Role<'_>> = payload_types.iter().map(|pt| role(pt)).collect();
    let ranks: BTreeMap<&str, usize> = payload_types
        .iter()
        .zip(&roles)
        .filter_map(|(pt, role)| match role {
            Role::Primary(codec) => specs
                .iter()
                .position(|spec| spec.matches(codec))
                .map(|rank| (*pt, rank)),
            _ => None,
        })
        .collect();
    if ranks.is_empty() {
        if port_zero && !bundle_only {
            return Ok(());
        }
        let mut offered: Vec<&str> = roles
            .iter()
            .filter_map(|role| match role {
                Role::Primary(codec) if !codec.name.is_empty() => Some(codec.name),
                _ => None,
            })
            .collect();
        offered.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        let wanted: Vec<&str> = specs.iter().map(CodecSpec::name).collect();
        return Err(SdpError::Unacceptable(format!(
            "backend accepts only {} for {media}, offer has {}",
            wanted.join(", "),
            if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            }
        )));
    }
    let kept: Vec<&str> = payload_types
        .iter()
        .zip(&roles)
        .filter(|(pt, role)| match role {
            Role::Primary(_) => ranks.contains_key(*pt),
            Role::Redundancy(refs) => refs.iter().all(|r| ranks.contains_key(r)),
            Role::Auxiliary => true,
            Role::Rtx(_) => false,
        })
        .map(|(pt, _)| *pt)
        .collect();
    // Retransmission follows whatever it repairs, RED and FEC included. Preference: primaries
    // by their place in the allow-list, each rtx beside what it repairs; the stable sort keeps
    // the offer's own order within one rank.
    let mut with_rtx: Vec<(usize, &str)> = payload_types
        .iter()
        .zip(&roles)
        .filter_map(|(pt, role)| {
            let key = match role {
                Role::Rtx(apt) if kept.contains(apt) => ranks.get(apt),
                Role::Rtx(_) => return None,
                _ if kept.contains(pt) => ranks.get(pt),
                _ => return None,
            };
            Some((key.copied().unwrap_or(specs.len()), *pt))
        })
        .collect();
    with_rtx.sort_by_key(|(key, _)| *key);
    let with_rtx: Vec<&str> = with_rtx.into_iter().map(|(_, pt)| pt).collect();

    if with_rtx != payload_types {
        let prefix_end = nth_field_end(&m_text, 2).unwrap_or(m_text.len());
        let rebuilt = format!("{} {}", &m_text[..prefix_end], with_rtx.join(" "));
        let removed: Vec<String> = payload_types
            .iter()
            .filter(|pt| !with_rtx.contains(pt))
            .map(|pt| pt.to_string())
            .collect();
        for index in range.clone() {
            let Some(line) = lines.get(index) else {
                continue;
            };
            if let (Some("rtpmap" | "fmtp" | "rtcp-fb"), Some(value)) =
                (line.attribute_name(), line.attribute_value())
            {
                let pt = value.split_ascii_whitespace().next().unwrap_or("");
                if removed.iter().any(|r| r == pt) {
                    doomed.push(index);
                }
            }
        }
        lines.set_text(range.start, rebuilt);
    }
    Ok(())
}

/// Byte offset just past the `n`th (0-based) whitespace-separated field.
fn nth_field_end(text: &str, n: usize) -> Option<usize> {
    let mut count = 0;
    let mut in_field = false;
    for (offset, c) in text.char_indices() {
        let space = c.is_ascii_whitespace();
        if space && in_field {
            if count == n {
                return Some(offset);
            }
            count += 1;
        }
        in_field = !space;
    }
    (in_field && count == n).then_some(text.len())
}

/// Lowers or adds `b=AS` and `b=TIAS` in one m-section (RFC 8866 order: m i c b k a).
fn cap_bandwidth(
    lines: &mut Lines,
    range: std::ops::Range<usize>,
    kbps: u32,
    doomed: &mut [usize],
) {
    let bps = u64::from(kbps) * 1000;
    let mut has_as = false;
    let mut has_tias = false;
    let mut insert_at = range.start + 1;
    for index in range.clone() {
        let Some(line) = lines.get(index) else {
            continue;
        };
        match line.kind() {
            Some(b'i' | b'c') => insert_at = index + 1,
            Some(b'b') => {
                insert_at = index + 1;
                let value = line.value();
                if let Some(current) = value.strip_prefix("AS:") {
                    has_as = true;
                    if current
                        .trim()
                        .parse::<u64>()
                        .is_ok_and(|c| c > u64::from(kbps))
                    {
                        lines.set_text(index, format!("b=AS:{kbps}"));
                    }
                } else if let Some(current) = value.strip_prefix("TIAS:") {
                    has_tias = true;
                    if current.trim().parse::<u64>().is_ok_and(|c| c > bps) {
                        lines.set_text(index, format!("b=TIAS:{bps}"));
                    }
                }
            }
            _ => {}
        }
    }
    // Insertions shift later indices: fix up the removals already recorded for this section.
    let mut added = Vec::new();
    if !has_tias {
        added.push(format!("b=TIAS:{bps}"));
    }
    if !has_as {
        added.push(format!("b=AS:{kbps}"));
    }
    for text in added {
        lines.insert(insert_at, text);
        for index in doomed.iter_mut() {
            if *index >= insert_at {
                *index += 1;
            }
        }
    }
}
