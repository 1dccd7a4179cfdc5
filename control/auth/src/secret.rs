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

    pub fn from_string(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The secret as text (to show once, or to send to its owner).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Constant-time comparison with a presented secret.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_redacted_and_compared() {
        let a = AppSecret::generate();
        let b = AppSecret::generate();
        assert!(a.expose().starts_with("sk_") && a.expose().len() == 46);
        assert_ne!(a.expose(), b.expose());
        assert!(a.matches(a.expose()) && !a.matches(b.expose()) && !a.matches(""));
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
