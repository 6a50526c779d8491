//! The Standard Webhooks signature: HMAC-SHA256, keyed with the secret's bytes,
//! over `{webhook-id}.{webhook-timestamp}.{body}`, sent base64-encoded as
//! `v1,<signature>` in `webhook-signature` (several, space-separated, while a
//! rotated-out secret still signs).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::WebhookSecret;

/// `v1,<base64 HMAC>` of one message under `secret`; `None` for a secret that
/// is not `whsec_` and base64.
pub fn sign(
    secret: &WebhookSecret,
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> Option<String> {
    let key = secret.key()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{message_id}.{timestamp}.{body}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Some(format!("v1,{signature}"))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[&WebhookSecret],
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> String {
    secrets
        .iter()
        .filter_map(|secret| sign(secret, message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its
    /// reference libraries' tests).
    #[test]
    fn matches_the_specifications_example() {
        let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn every_signing_secret_signs() {
        let (a, b) = (WebhookSecret::generate(), WebhookSecret::generate());
        let header = signature_header(&[&a, &b], "msg_1", 1, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(Some(parts[0]), sign(&a, "msg_1", 1, "{}").as_deref());
        assert_eq!(Some(parts[1]), sign(&b, "msg_1", 1, "{}").as_deref());
    }
}
