//! The cookie that binds a connect session to the browser that opened its link.

use axum::http::{HeaderMap, HeaderValue, header};
use url::Url;

use crate::domain::CONNECT_SESSION_TTL_SECONDS;
use crate::secret::{BrowserBinding, ExposeSecret};

/// The cookie's name.
pub const COOKIE_NAME: &str = "rd_connect_binding";

/// The binding cookie the request carries, if it has a well-formed one.
pub fn from_request(headers: &HeaderMap) -> Option<BrowserBinding> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        // Only values this service issues: 43 base64url characters.
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(BrowserBinding::new)
}

/// The `Set-Cookie` value: HttpOnly, SameSite=Lax (sent on RD's top-level
/// redirect back), Secure when the service is served over https, scoped to the
/// service's path and living as long as a connect session.
pub fn set_cookie(binding: &BrowserBinding, public_base_url: &Url) -> Option<HeaderValue> {
    let path = format!("{}/", public_base_url.path().trim_end_matches('/'));
    let secure = if public_base_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={}; Path={path}; Max-Age={CONNECT_SESSION_TTL_SECONDS}; HttpOnly; SameSite=Lax{secure}",
        binding.expose_secret()
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_its_own_well_formed_cookie() {
        let value = "a".repeat(43);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE_NAME}={value}")).expect("ascii"),
        );
        let found = from_request(&headers).expect("found");
        assert_eq!(found.expose_secret(), value);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("rd_connect_binding=short"),
        );
        assert!(from_request(&headers).is_none());
    }

    #[test]
    fn secure_on_https_and_scoped_to_the_base_path() {
        let binding = BrowserBinding::new("b".repeat(43));
        let https = Url::parse("https://connect.example.com/prod").expect("url");
        let cookie = set_cookie(&binding, &https).expect("value");
        let text = cookie.to_str().expect("ascii");
        for part in [
            "Path=/prod/",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Max-Age=600",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        let http = Url::parse("http://127.0.0.1:8080").expect("url");
        let text = set_cookie(&binding, &http).expect("value");
        assert!(!text.to_str().expect("ascii").contains("Secure"));
        assert!(text.to_str().expect("ascii").contains("Path=/;"));
    }
}
