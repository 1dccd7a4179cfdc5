//! Trickle ICE fragments (RFC 8840 `application/trickle-ice-sdpfrag`), as
//! WHIP/WHEP PATCH bodies carry them (RFC 9725 §4.3): read into the ICE
//! credentials they name, session-wide or per media section, and the
//! restart offer and answer fragment built from them. Pure; malformed input
//! is an error with the line, never a panic.

/// ICE credentials as a fragment or a description names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
}

/// One media section of a fragment (`m=` … its lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub mid: Option<String>,
    pub credentials: Credentials,
}

/// A fragment, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Credentials before the first `m=` line (they apply to every section).
    pub session: Credentials,
    pub sections: Vec<Section>,
    /// Candidate lines (ICE-lite nodes need none: clients check them).
    pub candidates: usize,
}

impl Fragment {
    /// The credentials that apply to a transport carrying `mids`: a
    /// section's own, else the session-wide ones. `None` when the fragment
    /// names no ufrag for it (candidates only).
    pub fn credentials_for(&self, mids: &[String]) -> Option<Credentials> {
        let own = self
            .sections
            .iter()
            .filter(|s| s.mid.as_ref().is_some_and(|m| mids.contains(m)))
            .map(|s| &s.credentials)
            .find(|c| c.ufrag.is_some());
        let c = own.unwrap_or(&self.session);
        c.ufrag
            .is_some()
            .then(|| Credentials { ufrag: c.ufrag.clone(), pwd: c.pwd.clone().or_else(|| self.session.pwd.clone()) })
    }
}

/// Reads a fragment. Lines it does not know are refused (a fragment carries
/// ICE lines only); a candidate line needs its eight fields.
pub fn parse(fragment: &str) -> Result<Fragment, String> {
    let mut f = Fragment::default();
    for line in fragment.lines().map(str::trim_end) {
        let creds = match f.sections.last_mut() {
            Some(s) => &mut s.credentials,
            None => &mut f.session,
        };
        if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
            creds.ufrag = Some(ice_char_token(u, "a=ice-ufrag", 4)?);
        } else if let Some(p) = line.strip_prefix("a=ice-pwd:") {
            creds.pwd = Some(ice_char_token(p, "a=ice-pwd", 22)?);
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            if c.split_whitespace().count() < 8 {
                return Err(format!("malformed candidate line: a=candidate:{c}"));
            }
            f.candidates += 1;
        } else if line.starts_with("m=") {
            f.sections.push(Section::default());
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            match f.sections.last_mut() {
                Some(s) => s.mid = Some(mid.trim().to_owned()),
                None => return Err("a=mid before any m= line".into()),
            }
        } else if !(line.is_empty()
            || line.starts_with("a=end-of-candidates")
            || line.starts_with("a=group:")
            || line.starts_with("a=ice-options:")
            || line == "a=ice-lite")
        {
            return Err(format!("unexpected line in a trickle-ice-sdpfrag: {line}"));
        }
    }
    Ok(f)
}

/// An ice-char token (RFC 8839 §5.4: ALPHA / DIGIT / "+" / "/") of at
/// least `min` and at most 256 characters.
fn ice_char_token(v: &str, what: &str, min: usize) -> Result<String, String> {
    let v = v.trim();
    let ok = (min..=256).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok { Ok(v.to_owned()) } else { Err(format!("{what} must be {min} to 256 ice-chars (ALPHA, DIGIT, + or /)")) }
}

/// The ICE credentials a description (SDP) uses: the first `a=ice-ufrag`
/// and `a=ice-pwd` lines (a transport has one pair).
pub fn credentials_of(sdp: &str) -> Credentials {
    let find = |prefix: &str| sdp.lines().find_map(|l| l.trim_end().strip_prefix(prefix)).map(|v| v.trim().to_owned());
    Credentials { ufrag: find("a=ice-ufrag:"), pwd: find("a=ice-pwd:") }
}

/// The `a=mid` values of a description.
pub fn mids_of(sdp: &str) -> Vec<String> {
    sdp.lines().filter_map(|l| l.trim_end().strip_prefix("a=mid:")).map(|m| m.trim().to_owned()).collect()
}

/// The client's offer again, with its new ICE credentials: every
/// `a=ice-ufrag`/`a=ice-pwd` line replaced, candidates dropped (an ICE-lite
/// node learns addresses from checks), the origin's session version raised
/// (RFC 3264 §8: a new offer in the same session).
pub fn restart_offer(previous: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(previous.len());
    for line in previous.lines().map(str::trim_end) {
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else if line.starts_with("a=candidate:") || line.starts_with("a=end-of-candidates") {
            continue;
        } else if let Some(o) = line.strip_prefix("o=") {
            let mut f: Vec<String> = o.split(' ').map(str::to_owned).collect();
            if let Some(v) = f.get_mut(2).and_then(|v| v.parse::<u64>().ok().map(|n| (v, n))) {
                *v.0 = v.1.wrapping_add(1).to_string();
            }
            out.push_str("o=");
            out.push_str(&f.join(" "));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The answer fragment to an ICE restart: the node's new credentials for
/// each restarted transport (`answers`, their new local descriptions), with
/// its media sections (`m=`, `a=mid`) and candidates. One transport's
/// credentials are also given session-wide, which is where most WHIP
/// clients look for them.
pub fn restart_answer(answers: &[&str]) -> String {
    let mut out = String::from("a=ice-lite\r\n");
    if let [one] = answers {
        let c = credentials_of(one);
        if let (Some(u), Some(p)) = (c.ufrag, c.pwd) {
            out.push_str(&format!("a=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n"));
        }
    }
    for sdp in answers {
        let c = credentials_of(sdp);
        let mut in_media = false;
        for line in sdp.lines().map(str::trim_end) {
            if line.starts_with("m=") {
                in_media = true;
                out.push_str(line);
                out.push_str("\r\n");
                if answers.len() > 1
                    && let (Some(u), Some(p)) = (&c.ufrag, &c.pwd)
                {
                    out.push_str(&format!("a=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n"));
                }
            } else if in_media
                && (line.starts_with("a=mid:")
                    || line.starts_with("a=candidate:")
                    || line.starts_with("a=end-of-candidates"))
            {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAG: &str = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
                        a=end-of-candidates\r\n";

    #[test]
    fn fragments_are_read_for_credentials_per_section() {
        let f = parse(FRAG).expect("fragment");
        assert_eq!(f.session.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.sections.len(), 1);
        assert_eq!(f.sections[0].mid.as_deref(), Some("0"));
        assert_eq!(f.candidates, 1);
        let c = f.credentials_for(&["0".into()]).expect("credentials");
        assert_eq!(c.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        // A section's own credentials win over the session's.
        let two = parse("a=ice-ufrag:aaaa\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=ice-ufrag:bbbb\r\na=ice-pwd:bbbbbbbbbbbbbbbbbbbbbbbb\r\n").expect("fragment");
        assert_eq!(two.credentials_for(&["v".into()]).and_then(|c| c.ufrag).as_deref(), Some("bbbb"));
        assert_eq!(two.credentials_for(&["a".into()]).and_then(|c| c.ufrag).as_deref(), Some("aaaa"));
        // Candidates only: no credentials.
        let only = parse("a=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\n").expect("fragment");
        assert_eq!(only.credentials_for(&["0".into()]), None);
    }

    #[test]
    fn bad_fragments_are_refused_with_the_line() {
        for (bad, says) in [
            ("a=candidate:1 1 udp\r\n", "malformed candidate"),
            ("a=setup:active\r\n", "unexpected line"),
            ("a=mid:0\r\n", "before any m="),
            ("a=ice-ufrag:ab\r\n", "a=ice-ufrag must be"),
            ("a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n", "a=ice-pwd must be"),
            ("a=ice-ufrag:ab cd ef\r\n", "a=ice-ufrag must be"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_restart_offer_has_the_new_credentials_and_no_candidates() {
        let offer = "v=0\r\no=- 123 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
                     a=ice-ufrag:old1\r\na=ice-pwd:oldoldoldoldoldoldoldold\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\n\
                     a=end-of-candidates\r\n";
        let again = restart_offer(offer, "new1", "newnewnewnewnewnewnewnew");
        assert!(again.contains("o=- 123 3 IN IP4 127.0.0.1\r\n"), "{again}");
        assert!(again.contains("a=ice-ufrag:new1\r\na=ice-pwd:newnewnewnewnewnewnewnew\r\n"), "{again}");
        assert!(!again.contains("old") && !again.contains("candidate"), "{again}");
        assert_eq!(mids_of(&again), vec!["0".to_owned()]);
    }

    #[test]
    fn a_restart_answer_names_the_new_credentials() {
        let answer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                      a=mid:0\r\na=ice-ufrag:NEWU\r\na=ice-pwd:NEWPNEWPNEWPNEWPNEWPNEWP\r\na=sendonly\r\n\
                      a=candidate:1 1 udp 2130706431 127.0.0.1 7000 typ host\r\na=end-of-candidates\r\n";
        let frag = restart_answer(&[answer]);
        assert_eq!(
            frag,
            "a=ice-lite\r\na=ice-ufrag:NEWU\r\na=ice-pwd:NEWPNEWPNEWPNEWPNEWPNEWP\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
             a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 7000 typ host\r\na=end-of-candidates\r\n"
        );
        // What it answers reads back as a fragment.
        let back = parse(&frag).expect("fragment");
        assert_eq!(back.session.ufrag.as_deref(), Some("NEWU"));
    }
}
