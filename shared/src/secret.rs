//! Types for values that must never be printed: access tokens, refresh tokens,
//! authorization codes, client secrets, states and browser-binding cookies.
//!
//! Each kind is its own newtype around [`secrecy::SecretString`], so one kind cannot
//! be passed where another is expected. None implements `Display` or `Serialize`;
//! `Debug` prints only the type name. Reading the value takes an explicit,
//! greppable [`ExposeSecret::expose_secret`] call, made only where the value
//! leaves the process for RD Station or the store.

pub use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps a value received from RD Station, a caller or the store.
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// A short, stable, non-reversible fingerprint (first 16 hex digits of
            /// SHA-256) that identifies the value in logs and records without revealing it.
            pub fn fingerprint(&self) -> String {
                fingerprint(self.0.expose_secret())
            }
        }

        impl ExposeSecret<str> for $name {
            fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                // Constant-time comparison is not needed: both sides are ours.
                self.0.expose_secret() == other.0.expose_secret()
            }
        }

        impl Eq for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }
    };
}

secret_type!(
    /// An RD Station OAuth access token (a bearer credential for the API).
    AccessToken
);
secret_type!(
    /// An RD Station OAuth refresh token. CRM refresh tokens are single-use.
    RefreshToken
);
secret_type!(
    /// A one-time authorization code from RD Station's consent redirect.
    AuthCode
);
secret_type!(
    /// The client secret of one of our RD Station apps.
    ClientSecret
);
secret_type!(
    /// The `state` value bound to a connect session; whoever holds it can finish the flow.
    StateToken
);
secret_type!(
    /// The value of the cookie that binds a connect session to the browser that
    /// opened its link; only its hash is stored.
    BrowserBinding
);

secret_type!(
    /// A webhook endpoint's signing secret (`whsec_` and base64 of 24 random
    /// bytes, the Standard Webhooks form): shown once, when it is made.
    WebhookSecret
);

impl WebhookSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        use base64::Engine;
        use rand::RngCore;
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        Self::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// The HMAC key: the bytes the base64 after `whsec_` encodes.
    pub fn key(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let encoded = self.expose_secret().strip_prefix("whsec_")?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
    }
}

/// The first 16 hex digits of the SHA-256 of `value`.
pub fn fingerprint(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let values = [
            format!("{:?}", AccessToken::new("at-very-secret")),
            format!("{:?}", RefreshToken::new("rt-very-secret")),
            format!("{:?}", AuthCode::new("code-very-secret")),
            format!("{:?}", ClientSecret::new("cs-very-secret")),
            format!("{:?}", Some(StateToken::new("st-very-secret"))),
        ];
        for printed in values {
            assert!(!printed.contains("very-secret"), "{printed}");
            assert!(printed.contains("[redacted]"), "{printed}");
        }
    }

    #[test]
    fn fingerprint_is_stable_and_hides_the_value() {
        let token = RefreshToken::new("rt-very-secret");
        assert_eq!(
            token.fingerprint(),
            RefreshToken::new("rt-very-secret").fingerprint()
        );
        assert_ne!(
            token.fingerprint(),
            RefreshToken::new("rt-other").fingerprint()
        );
        assert_eq!(token.fingerprint().len(), 16);
        assert!(!token.fingerprint().contains("secret"));
    }

    #[test]
    fn deserializes_from_a_plain_string() {
        let token: AccessToken = serde_json::from_str("\"abc\"").expect("string");
        assert_eq!(token.expose_secret(), "abc");
    }
}
