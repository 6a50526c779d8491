//! RD Station's error bodies, in every documented shape, and their classification.

use std::time::Duration;

use serde_json::Value;

use crate::domain::TokenCallError;

/// One error RD reported: its type (or RFC 6749 `error` code) and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdError {
    /// `error_type` (Marketing), `error` (RFC 6749/6750) or empty.
    pub code: String,
    /// `error_message`, `error_description`, `message` or empty.
    pub message: String,
}

/// Extracts every error RD put in `body`, whatever its documented shape.
pub fn parse_error_body(body: &[u8]) -> Vec<RdError> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    match value.get("errors") {
        // {"errors":[{...}, ...]}
        Some(Value::Array(items)) => items.iter().for_each(|i| push_error(i, &mut found)),
        // {"errors":{"error_type":...}} or {"errors":{"field":[{...}]}}
        Some(Value::Object(map)) if map.contains_key("error_type") => {
            push_error(&value["errors"], &mut found)
        }
        Some(Value::Object(map)) => map
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .for_each(|i| push_error(i, &mut found)),
        _ => push_error(&value, &mut found),
    }
    found
}

fn push_error(value: &Value, found: &mut Vec<RdError>) {
    let text = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| value.get(*k).and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned()
    };
    let code = text(&["error_type", "error"]);
    let message = text(&["error_message", "error_description", "message"]);
    if !code.is_empty() || !message.is_empty() {
        found.push(RdError { code, message });
    }
}

/// Classifies a non-success answer from the token endpoint.
pub fn classify_token_failure(
    status: u16,
    retry_after_header: Option<&str>,
    body: &[u8],
) -> TokenCallError {
    let errors = parse_error_body(body);
    let detail = describe(&errors);
    let has = |code: &str| errors.iter().any(|e| e.code.eq_ignore_ascii_case(code));
    if status == 429 || has("RATE_LIMIT_EXCEDDED") || has("RATE_LIMIT_EXCEEDED") {
        return TokenCallError::RateLimited {
            retry_after: retry_after(retry_after_header, body),
        };
    }
    if has("EXPIRED_CODE_GRANT") {
        return TokenCallError::ExpiredCode { detail };
    }
    if has("INVALID_REFRESH_TOKEN") || has("invalid_grant") {
        return TokenCallError::InvalidGrant { detail };
    }
    let wrong_credentials = errors.iter().any(|e| {
        e.code.eq_ignore_ascii_case("ACCESS_DENIED")
            && e.message.to_lowercase().contains("credential")
    });
    if has("invalid_client") || wrong_credentials {
        return TokenCallError::InvalidClient { detail };
    }
    if status >= 500 {
        return TokenCallError::Transient {
            ambiguous: true,
            detail: format!("status {status}: {detail}"),
        };
    }
    TokenCallError::Other { status, detail }
}

/// `Retry-After` in seconds, else the body's `remaining_time` (seconds, capped at an
/// hour because RD's unit is unclear).
fn retry_after(header: Option<&str>, body: &[u8]) -> Option<Duration> {
    if let Some(seconds) = header.and_then(|h| h.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("remaining_time")?
        .as_u64()
        .map(|s| Duration::from_secs(s.min(3600)))
}

/// RD's error codes and messages, bounded and stripped of control characters:
/// they come from outside and end up in logs and error messages.
fn describe(errors: &[RdError]) -> String {
    if errors.is_empty() {
        return "no error body".to_owned();
    }
    errors
        .iter()
        .take(5)
        .map(|e| {
            format!("{} {}", sanitise(&e.code, 64), sanitise(&e.message, 200))
                .trim()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// At most `max` characters of `text`, control characters (newlines included)
/// replaced by spaces, so a crafted message cannot forge log lines.
fn sanitise(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(body: &str) -> Vec<String> {
        parse_error_body(body.as_bytes())
            .into_iter()
            .map(|e| e.code)
            .collect()
    }

    #[test]
    fn provider_messages_are_bounded_and_single_line() {
        let long = "x".repeat(5_000);
        let errors = vec![RdError {
            code: "BAD\nCODE".to_owned(),
            message: format!("line one\r\nforged log line {long}"),
        }];
        let text = describe(&errors);
        assert!(!text.contains('\n') && !text.contains('\r'));
        assert!(text.chars().count() < 300, "{}", text.len());
    }

    #[test]
    fn parses_every_documented_shape() {
        assert_eq!(
            codes(r#"{"errors":{"error_type":"UNAUTHORIZED","error_message":"Invalid token."}}"#),
            ["UNAUTHORIZED"]
        );
        assert_eq!(
            codes(r#"{"errors":[{"error_type":"A","error_message":"a"},{"error_type":"B"}]}"#),
            ["A", "B"]
        );
        assert_eq!(
            codes(r#"{"errors":{"email":[{"error_type":"TAKEN","error_message":"taken"}]}}"#),
            ["TAKEN"]
        );
        assert_eq!(
            codes(r#"{"error_type":"EXPIRED_CODE_GRANT","error_message":"expired"}"#),
            ["EXPIRED_CODE_GRANT"]
        );
        assert_eq!(
            codes(r#"{"error":"invalid_grant","error_description":"bad"}"#),
            ["invalid_grant"]
        );
        let gateway = parse_error_body(br#"{"message":"API rate limit exceeded"}"#);
        assert_eq!(gateway[0].message, "API rate limit exceeded");
        assert!(parse_error_body(b"<html>oops</html>").is_empty());
    }

    #[test]
    fn classifies_grant_code_client_and_limits() {
        let invalid_refresh = br#"{"errors":{"error_type":"INVALID_REFRESH_TOKEN","error_message":"The provided refresh token is invalid or was revoked."}}"#;
        assert!(matches!(
            classify_token_failure(401, None, invalid_refresh),
            TokenCallError::InvalidGrant { .. }
        ));
        assert!(matches!(
            classify_token_failure(400, None, br#"{"error":"invalid_grant"}"#),
            TokenCallError::InvalidGrant { .. }
        ));
        assert!(matches!(
            classify_token_failure(
                401,
                None,
                br#"{"errors":{"error_type":"EXPIRED_CODE_GRANT","error_message":"x"}}"#
            ),
            TokenCallError::ExpiredCode { .. }
        ));
        assert!(matches!(
            classify_token_failure(401, None, br#"{"errors":{"error_type":"ACCESS_DENIED","error_message":"Wrong credentials provided."}}"#),
            TokenCallError::InvalidClient { .. }
        ));
        assert!(matches!(
            classify_token_failure(401, None, br#"{"error":"invalid_client"}"#),
            TokenCallError::InvalidClient { .. }
        ));
        assert!(matches!(
            classify_token_failure(400, None, r#"{"errors":{"error_type":"ACCESS_DENIED","error_message":"O parâmetro redirect_uri não contém um valor válido."}}"#.as_bytes()),
            TokenCallError::Other { status: 400, .. }
        ));
    }

    #[test]
    fn rate_limit_reads_header_then_body() {
        match classify_token_failure(429, Some("17"), b"{}") {
            TokenCallError::RateLimited { retry_after } => {
                assert_eq!(retry_after, Some(Duration::from_secs(17)))
            }
            other => panic!("{other:?}"),
        }
        match classify_token_failure(429, None, br#"{"error":"'lead_limiter' rate limit exceeded","max":24,"usage":25,"remaining_time":43067}"#) {
            TokenCallError::RateLimited { retry_after } => {
                assert_eq!(retry_after, Some(Duration::from_secs(3600)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_token_failure(429, None, br#"{"message":"API rate limit exceeded"}"#),
            TokenCallError::RateLimited { retry_after: None }
        ));
    }

    #[test]
    fn server_errors_are_ambiguous() {
        for status in [500, 502, 503, 504] {
            assert!(matches!(
                classify_token_failure(status, None, b""),
                TokenCallError::Transient {
                    ambiguous: true,
                    ..
                }
            ));
        }
    }
}
