//! Reading an SDP offer for its transports, before `rtc` sees it (pure: text
//! in, text out).
//!
//! `rtc` carries one ICE/DTLS transport per peer connection and refuses an
//! offer whose m-lines name more than one (`conflicting ice-ufrag values`).
//! Offers come in three shapes (RFC 8843, RFC 8829 bundle policies), and the
//! node takes all of them:
//!
//! - **one BUNDLE group** (Chromium; webrtcbin `max-compat` and `max-bundle`):
//!   every m-line in the group rides the transport of the BUNDLE-tagged
//!   m-line (the first mid of the group that is not `bundle-only`). The other
//!   m-lines' own ICE credentials, fingerprint and candidates are ignored, as
//!   RFC 8843 §7 says, so they are rewritten to the tagged ones; `bundle-only`
//!   m-lines (port 0) are taken as bundled media (port 9), not as rejected.
//! - **no BUNDLE** with m-lines on separate transports (webrtcbin `balanced`):
//!   each transport (m-lines sharing ICE credentials) becomes its own part,
//!   answered by its own peer connection; the answers are merged back into
//!   one, in the offer's m-line order, each m-line with its transport's
//!   credentials and fingerprint.
//! - m-lines the offerer itself rejected (port 0, not `bundle-only`) are
//!   answered rejected (port 0, `inactive`).
//!
//! Everything else in the offer passes through untouched; an offer that needs
//! none of this is given to `rtc` byte for byte, and its answer returned as is.

use thiserror::Error;

/// Most m-lines in one offer.
pub const MLINES_MAX: usize = 32;

/// Why an offer cannot be taken (never a panic: this is network input).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OfferError {
    /// The offer has no audio, video or application m-line to answer.
    #[error("the offer has no m-line to answer")]
    NoMedia,
    /// Too many m-lines.
    #[error("the offer has {0} m-lines; at most {MLINES_MAX} are taken")]
    TooManyMlines(usize),
    /// An m-line that carries media lacks what its transport needs.
    #[error("m-line {index} (mid {mid}): {reason}")]
    Mline { index: usize, mid: String, reason: String },
    /// A BUNDLE group names a mid no m-line has.
    #[error("a=group:BUNDLE names mid {0}, which no m-line has")]
    UnknownMid(String),
}

/// One transport of an offer: the offer one peer connection answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The offer text for this transport's peer connection.
    pub sdp: String,
    /// The offer's m-line indices this part carries, in order.
    pub mlines: Vec<usize>,
    /// Whether the part is a BUNDLE group (its answer keeps the group line).
    pub bundled: bool,
}

/// An offer split into its transports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One part per transport, in the order of their first m-line.
    pub parts: Vec<Part>,
    /// Every m-line of the offer: its kind line (`m=…`) and mid.
    mlines: Vec<Mline>,
    /// The offer needed no rewriting: its single part is the offer itself.
    untouched: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mline {
    /// `m=<media> <port> <proto> <fmt…>` as offered.
    m: String,
    mid: String,
    /// Rejected by the offerer (port 0, not bundle-only).
    rejected: bool,
}

#[derive(Debug, Clone)]
struct Section {
    lines: Vec<String>,
}

impl Section {
    fn attr(&self, name: &str) -> Option<&str> {
        let prefix = format!("a={name}:");
        self.lines.iter().find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    fn has_flag(&self, name: &str) -> bool {
        let flag = format!("a={name}");
        self.lines.contains(&flag)
    }

    fn port(&self) -> Option<&str> {
        self.lines.first()?.split_whitespace().nth(1)
    }

    fn credentials(&self) -> (Option<&str>, Option<&str>) {
        (self.attr("ice-ufrag"), self.attr("ice-pwd"))
    }
}

/// Splits SDP text into its session part and media sections.
fn sections(sdp: &str) -> (Vec<String>, Vec<Section>) {
    let mut session = Vec::new();
    let mut media: Vec<Section> = Vec::new();
    for line in sdp.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            media.push(Section { lines: vec![line.to_owned()] });
        } else if let Some(m) = media.last_mut() {
            m.lines.push(line.to_owned());
        } else {
            session.push(line.to_owned());
        }
    }
    (session, media)
}

fn join(lines: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(&l);
        out.push_str("\r\n");
    }
    out
}

/// Reads an offer's transports (see the module docs).
pub fn plan(offer: &str) -> Result<Plan, OfferError> {
    let (session, media) = sections(offer);
    if media.is_empty() {
        return Err(OfferError::NoMedia);
    }
    if media.len() > MLINES_MAX {
        return Err(OfferError::TooManyMlines(media.len()));
    }
    let mids: Vec<String> =
        media.iter().enumerate().map(|(i, s)| s.attr("mid").map_or_else(|| i.to_string(), str::to_owned)).collect();
    let groups: Vec<Vec<String>> = session
        .iter()
        .filter_map(|l| l.strip_prefix("a=group:BUNDLE"))
        .map(|g| g.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|g| !g.is_empty())
        .collect();
    let index_of = |mid: &str| mids.iter().position(|m| m == mid).ok_or_else(|| OfferError::UnknownMid(mid.into()));
    let mut owner: Vec<Option<usize>> = vec![None; media.len()];
    let mut parts: Vec<(Vec<usize>, bool)> = Vec::new();
    for group in &groups {
        let members: Vec<usize> = group.iter().map(|m| index_of(m)).collect::<Result<_, _>>()?;
        let members: Vec<usize> = members.into_iter().filter(|i| owner[*i].is_none()).collect();
        if members.is_empty() {
            continue;
        }
        for i in &members {
            owner[*i] = Some(parts.len());
        }
        parts.push((members, true));
    }
    let mut mlines = Vec::with_capacity(media.len());
    for (i, s) in media.iter().enumerate() {
        let rejected = s.port() == Some("0") && !s.has_flag("bundle-only") && owner[i].is_none();
        mlines.push(Mline { m: s.lines[0].clone(), mid: mids[i].clone(), rejected });
        if owner[i].is_some() || rejected {
            continue;
        }
        // Outside any BUNDLE group: m-lines sharing ICE credentials share a transport.
        let creds = s.credentials();
        let same = parts.iter().position(|(members, bundled)| {
            !*bundled && members.first().is_some_and(|j| media[*j].credentials() == creds)
        });
        match same {
            Some(p) => {
                parts[p].0.push(i);
                owner[i] = Some(p);
            }
            None => {
                owner[i] = Some(parts.len());
                parts.push((vec![i], false));
            }
        }
    }
    if parts.is_empty() {
        return Err(OfferError::NoMedia);
    }
    // Each transport's own offer.
    let mut out = Vec::with_capacity(parts.len());
    let mut untouched = parts.len() == 1 && parts[0].1 && !mlines.iter().any(|m| m.rejected);
    for (members, bundled) in &parts {
        // The transport's credentials: the first member not bundle-only.
        let tag = members.iter().copied().find(|i| !media[*i].has_flag("bundle-only")).unwrap_or(members[0]);
        let tagged = &media[tag];
        let (ufrag, pwd) = tagged.credentials();
        let (Some(ufrag), Some(pwd)) = (ufrag, pwd) else {
            // Without credentials on the tagged m-line, session-level ones serve.
            let session_creds = session.iter().any(|l| l.starts_with("a=ice-ufrag:"));
            if !session_creds {
                return Err(OfferError::Mline {
                    index: tag,
                    mid: mids[tag].clone(),
                    reason: "no a=ice-ufrag/a=ice-pwd for its transport".into(),
                });
            }
            out.push(Part {
                sdp: rebuild(&session, &media, members, None, &mids),
                mlines: members.clone(),
                bundled: *bundled,
            });
            continue;
        };
        let fingerprint = tagged.attr("fingerprint");
        let transport = Transport { ufrag, pwd, fingerprint };
        let needs_rewrite = members.iter().any(|i| {
            let s = &media[*i];
            s.has_flag("bundle-only")
                || s.credentials() != (Some(ufrag), Some(pwd))
                || (fingerprint.is_some() && s.attr("fingerprint").is_some() && s.attr("fingerprint") != fingerprint)
        });
        if needs_rewrite {
            untouched = false;
        }
        out.push(Part {
            sdp: if untouched { offer.to_owned() } else { rebuild(&session, &media, members, Some(&transport), &mids) },
            mlines: members.clone(),
            bundled: *bundled,
        });
    }
    Ok(Plan { parts: out, mlines, untouched })
}

struct Transport<'a> {
    ufrag: &'a str,
    pwd: &'a str,
    fingerprint: Option<&'a str>,
}

/// One part's offer: the session lines (with one BUNDLE group: this part's
/// m-lines), then its m-lines with the transport's credentials.
fn rebuild(
    session: &[String],
    media: &[Section],
    members: &[usize],
    transport: Option<&Transport<'_>>,
    mids: &[String],
) -> String {
    let mut lines: Vec<String> = session.iter().filter(|l| !l.starts_with("a=group:BUNDLE")).cloned().collect();
    // Every part is given to `rtc` as one BUNDLE group: it answers an m-line
    // outside the offer's BUNDLE group with port 0. The merged answer keeps
    // the group only where the offer had it.
    let group: Vec<&str> = members.iter().map(|i| mids[*i].as_str()).collect();
    lines.push(format!("a=group:BUNDLE {}", group.join(" ")));
    let first = members.first().copied();
    for i in members {
        let s = &media[*i];
        let bundle_only = s.has_flag("bundle-only");
        for (n, line) in s.lines.iter().enumerate() {
            if n == 0 {
                // A bundle-only m-line is bundled media, not a rejected one.
                if bundle_only && s.port() == Some("0") {
                    let mut words: Vec<&str> = line.split_whitespace().collect();
                    if words.len() > 1 {
                        words[1] = "9";
                    }
                    lines.push(words.join(" "));
                } else {
                    lines.push(line.clone());
                }
                continue;
            }
            if line == "a=bundle-only" {
                continue;
            }
            let Some(t) = transport else {
                lines.push(line.clone());
                continue;
            };
            // The transport of the part is the tagged m-line's (RFC 8843 §7).
            if line.starts_with("a=ice-ufrag:") {
                lines.push(format!("a=ice-ufrag:{}", t.ufrag));
            } else if line.starts_with("a=ice-pwd:") {
                lines.push(format!("a=ice-pwd:{}", t.pwd));
            } else if line.starts_with("a=fingerprint:") {
                if let Some(f) = t.fingerprint {
                    lines.push(format!("a=fingerprint:{f}"));
                } else {
                    lines.push(line.clone());
                }
            } else if (line.starts_with("a=candidate:") || line == "a=end-of-candidates") && Some(*i) != first {
                // Candidates of a transport that is not used.
            } else {
                lines.push(line.clone());
            }
        }
        // Credentials an m-line left out come from its transport.
        if s.attr("ice-ufrag").is_none()
            && let Some(t) = transport
        {
            lines.push(format!("a=ice-ufrag:{}", t.ufrag));
            lines.push(format!("a=ice-pwd:{}", t.pwd));
        }
    }
    join(lines)
}

impl Plan {
    /// The kinds (`audio`, `video`, …) of the m-lines a part carries.
    pub fn kinds_of(&self, part: usize) -> Vec<&str> {
        self.parts.get(part).map_or_else(Vec::new, |p| {
            p.mlines
                .iter()
                .filter_map(|i| self.mlines.get(*i))
                .map(|m| m.m.get(2..).unwrap_or("").split(' ').next().unwrap_or(""))
                .collect()
        })
    }

    /// Whether the offer needed no rewriting (one part, the offer itself).
    pub fn untouched(&self) -> bool {
        self.untouched
    }

    /// Merges the parts' answers (in part order) into the one answer the
    /// client gets: the offer's m-lines in order, each with its transport's
    /// credentials and fingerprint; rejected m-lines answered port 0.
    pub fn merge(&self, answers: &[String]) -> Result<String, OfferError> {
        if self.untouched && answers.len() == 1 {
            return Ok(answers[0].clone());
        }
        let mut session_out: Vec<String> = Vec::new();
        let mut by_mline: Vec<Option<Vec<String>>> = vec![None; self.mlines.len()];
        let mut groups = Vec::new();
        for (p, (part, answer)) in self.parts.iter().zip(answers).enumerate() {
            let (session, media) = sections(answer);
            let fingerprint = session.iter().find(|l| l.starts_with("a=fingerprint:")).cloned();
            if p == 0 {
                session_out = session
                    .iter()
                    .filter(|l| !l.starts_with("a=group:") && !l.starts_with("a=fingerprint:"))
                    .cloned()
                    .collect();
            }
            let mut answered_mids = Vec::new();
            for (n, section) in media.into_iter().enumerate() {
                // An answer's m-lines follow its offer's, one for one.
                let Some(&index) = part.mlines.get(n) else { break };
                let mut lines = section.lines;
                if let Some(f) = &fingerprint
                    && !lines.iter().any(|l| l.starts_with("a=fingerprint:"))
                {
                    lines.push(f.clone());
                }
                if section_port(&lines) != Some("0") {
                    answered_mids.push(self.mlines[index].mid.clone());
                }
                by_mline[index] = Some(lines);
            }
            if part.bundled && !answered_mids.is_empty() {
                groups.push(format!("a=group:BUNDLE {}", answered_mids.join(" ")));
            }
        }
        session_out.extend(groups);
        let mut out = session_out;
        for (i, m) in self.mlines.iter().enumerate() {
            match by_mline[i].take() {
                Some(lines) => out.extend(lines),
                None => {
                    // Rejected (by the offerer, or missing from an answer).
                    let mut words: Vec<&str> = m.m.split_whitespace().collect();
                    if words.len() < 4 {
                        return Err(OfferError::Mline {
                            index: i,
                            mid: m.mid.clone(),
                            reason: "malformed m= line".into(),
                        });
                    }
                    words[1] = "0";
                    words.truncate(4);
                    out.push(words.join(" "));
                    out.push("c=IN IP4 0.0.0.0".into());
                    out.push(format!("a=mid:{}", m.mid));
                    out.push("a=inactive".into());
                }
            }
        }
        Ok(join(out))
    }
}

fn section_port(lines: &[String]) -> Option<&str> {
    lines.first()?.split_whitespace().nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_BUNDLE: &str = include_str!("../../tests/fixtures/sdp/webrtcbin-play-max-bundle.sdp");
    const MAX_COMPAT: &str = include_str!("../../tests/fixtures/sdp/webrtcbin-publish-max-compat.sdp");
    const BALANCED: &str = include_str!("../../tests/fixtures/sdp/webrtcbin-publish-balanced.sdp");

    fn mlines(sdp: &str) -> Vec<&str> {
        sdp.lines().filter(|l| l.starts_with("m=")).collect()
    }

    fn attrs<'a>(sdp: &'a str, name: &str) -> Vec<&'a str> {
        let prefix = format!("a={name}:");
        sdp.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
    }

    #[test]
    fn a_bundled_offer_with_one_transport_passes_untouched() {
        let plan = plan(MAX_COMPAT).expect("plan");
        assert!(plan.untouched());
        assert_eq!(plan.parts.len(), 1);
        assert_eq!(plan.parts[0].sdp, MAX_COMPAT);
        assert_eq!(plan.kinds_of(0), vec!["video", "audio"]);
        let answer = "v=0\r\nm=video 9 X 96\r\na=mid:video0\r\nm=audio 9 X 111\r\na=mid:audio1\r\n".to_owned();
        assert_eq!(plan.merge(std::slice::from_ref(&answer)).expect("merge"), answer);
    }

    #[test]
    fn bundle_only_m_lines_are_bundled_media_not_rejected() {
        let plan = plan(MAX_BUNDLE).expect("plan");
        assert_eq!(plan.parts.len(), 1);
        let sdp = &plan.parts[0].sdp;
        assert_eq!(mlines(sdp), vec!["m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111"]);
        assert!(!sdp.contains("a=bundle-only"));
        assert_eq!(attrs(sdp, "group"), vec!["BUNDLE video0 audio1"]);
        assert_eq!(plan.kinds_of(0), vec!["video", "audio"]);
    }

    #[test]
    fn separate_transports_become_parts_and_their_answers_merge_in_order() {
        let plan = plan(BALANCED).expect("plan");
        assert_eq!(plan.parts.len(), 2, "video and audio each on their own transport");
        assert_eq!(plan.parts[0].mlines, vec![0]);
        assert_eq!(plan.parts[1].mlines, vec![1]);
        for part in &plan.parts {
            let ufrags = attrs(&part.sdp, "ice-ufrag");
            assert_eq!(ufrags.len(), 1, "one transport per part: {}", part.sdp);
            assert_eq!(attrs(&part.sdp, "group").len(), 1, "rtc answers only m-lines in a BUNDLE group");
        }
        assert_eq!(plan.kinds_of(0), vec!["video"]);
        assert_eq!(plan.kinds_of(1), vec!["audio"]);
        let answer = |mid: &str, m: &str, ufrag: &str, fp: &str| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 {fp}\r\na=ice-lite\r\n\
                 {m}\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:p{ufrag}\r\na=recvonly\r\n"
            )
        };
        let merged = plan
            .merge(&[
                answer("video0", "m=video 9 UDP/TLS/RTP/SAVPF 96", "aaaa", "AA"),
                answer("audio1", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "bbbb", "BB"),
            ])
            .expect("merge");
        assert_eq!(mlines(&merged), vec!["m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111"]);
        assert_eq!(attrs(&merged, "ice-ufrag"), vec!["aaaa", "bbbb"]);
        assert_eq!(attrs(&merged, "fingerprint"), vec!["sha-256 AA", "sha-256 BB"], "each m-line its own fingerprint");
        assert_eq!(merged.matches("a=ice-lite").count(), 1);
        assert!(attrs(&merged, "group").is_empty(), "no BUNDLE in the answer where the offer had none");
        let session_end = merged.find("m=").expect("m-line");
        assert!(!merged[..session_end].contains("a=fingerprint"), "no session-level fingerprint: {merged}");
    }

    #[test]
    fn m_lines_the_offerer_rejected_are_answered_rejected() {
        let offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\na=fingerprint:sha-256 F\r\n\
                     m=audio 0 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:1\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n";
        let plan = plan(offer).expect("plan");
        assert!(!plan.untouched());
        assert_eq!(plan.parts.len(), 1);
        assert_eq!(mlines(&plan.parts[0].sdp), vec!["m=video 9 UDP/TLS/RTP/SAVPF 96"]);
        let merged = plan
            .merge(&["v=0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n".to_owned()])
            .expect("merge");
        assert_eq!(mlines(&merged), vec!["m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 0 UDP/TLS/RTP/SAVPF 111"]);
        assert!(merged.contains("a=mid:1\r\na=inactive"), "{merged}");
        assert_eq!(attrs(&merged, "group"), vec!["BUNDLE 0"]);
    }

    #[test]
    fn bad_offers_are_refused_with_the_m_line_named() {
        assert_eq!(plan("v=0\r\ns=-\r\n"), Err(OfferError::NoMedia));
        assert_eq!(plan(""), Err(OfferError::NoMedia));
        let unknown = "v=0\r\na=group:BUNDLE 0 7\r\nm=video 9 X 96\r\na=mid:0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n";
        assert_eq!(plan(unknown), Err(OfferError::UnknownMid("7".into())));
        let no_creds = "v=0\r\nm=video 9 X 96\r\na=mid:v\r\n";
        match plan(no_creds) {
            Err(OfferError::Mline { index: 0, mid, .. }) => assert_eq!(mid, "v"),
            other => panic!("{other:?}"),
        }
        let many: String = std::iter::once("v=0\r\n".to_owned())
            .chain((0..=MLINES_MAX).map(|i| format!("m=audio 9 X 111\r\na=mid:{i}\r\n")))
            .collect();
        assert_eq!(plan(&many), Err(OfferError::TooManyMlines(MLINES_MAX + 1)));
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = [
            "m=",
            "a=",
            "audio ",
            "video ",
            "0 ",
            "9 ",
            "group:BUNDLE ",
            "mid:",
            "ice-ufrag:",
            "bundle-only",
            "\r\n",
            "x",
            " ",
        ];
        for _ in 0..2000 {
            let mut s = String::from("v=0\r\n");
            for _ in 0..(x % 60) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push_str(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            if let Ok(p) = plan(&s) {
                let answers: Vec<String> = p.parts.iter().map(|part| part.sdp.clone()).collect();
                let _ = p.merge(&answers);
            }
        }
    }
}
