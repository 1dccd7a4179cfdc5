//! App secrets in plaintext: generated, compared in constant time, never printed.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// An app secret. `Debug` prints `AppSecret(**redacted**)`; zeroed on drop.
#[derive(Clone)]
pub struct AppSecret(Zeroizing<String>);

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppSecret(**redacted**)")
    }
}

impl AppSecret {
    /// `sk_` + base64url of 32 random bytes.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut());
        Self(Zeroizing::new(format!("sk_{}", URL_SAFE_NO_PAD.encode(bytes.as_ref()))))
    }

    /// Wraps a secret read back from storage (after [`crate::seal::open`]).
    pub fn from_string(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The secret as text (to show once, or to send to its owner).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's bytes, the HMAC key for tokens and webhook signatures.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Constant-time comparison with a presented secret (the time depends
    /// only on the lengths, never on where the two differ).
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_well_formed() {
        let a = AppSecret::generate();
        let b = AppSecret::generate();
        assert!(a.expose().starts_with("sk_") && a.expose().len() == 46, "{}", a.expose().len());
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.expose()[3..]).expect("base64url").len(), 32);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.as_bytes(), a.expose().as_bytes());
        assert_eq!(a.clone().expose(), a.expose());
    }

    #[test]
    fn matching() {
        let a = AppSecret::generate();
        let b = AppSecret::generate();
        assert!(a.matches(a.expose()));
        assert!(!a.matches(b.expose()) && !a.matches(""));
        assert!(!a.matches(&a.expose()[..45]) && !a.matches(&format!("{} ", a.expose())));
        let s = AppSecret::from_string("sk_plain".into());
        assert!(s.matches("sk_plain") && !s.matches("SK_plain"));
    }

    #[test]
    fn never_printed() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            secret: AppSecret,
        }
        let a = AppSecret::generate();
        let holder = Holder { secret: a.clone() };
        for shown in [format!("{a:?}"), format!("{a:#?}"), format!("{holder:?}"), format!("{holder:#?}")] {
            assert!(!shown.contains(a.expose()) && !shown.contains(&a.expose()[3..20]), "{shown}");
            assert!(shown.contains("AppSecret(**redacted**)"), "{shown}");
        }
    }
}
