//! The small HTML pages a person sees at the end of a connect flow. Only values from
//! a fixed vocabulary or already-validated ids are placed in them.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Whether the client asked for a page (a browser) rather than JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The pages' only style, allowed by its hash in the Content-Security-Policy.
const STYLE: &str = "body{font-family:sans-serif;max-width:36em;margin:4em auto}";

/// The policy of every HTML answer: nothing loads, nothing frames the page,
/// nothing is submitted; only the one inline style applies.
static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
});

/// A page with a title and one paragraph.
pub fn page(status: StatusCode, title: &str, paragraph: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><h1>{title}</h1><p>{paragraph}</p></body></html>\n",
        title = escape(title),
        paragraph = escape(paragraph),
    );
    (status, Html(html)).into_response()
}

/// Every answer: `nosniff`; HTML answers also the strict policy above.
pub async fn protective_headers(mut response: Response) -> Response {
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if is_html && let Ok(policy) = HeaderValue::from_str(&CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// The error as a page for browsers, or as JSON for everything else.
pub fn error_response(headers: &HeaderMap, error: ApiError) -> Response {
    if wants_html(headers) {
        page(error.status, "Connection not completed", &error.message)
    } else {
        error.into_response()
    }
}

/// A `302 Found` to `location`: what browsers and OAuth providers expect in these
/// flows (axum's `Redirect::to` answers 303).
pub fn found(location: &str) -> Response {
    let mut response = Redirect::to(location).into_response();
    *response.status_mut() = StatusCode::FOUND;
    response
}

/// Marks a response as never to be cached, and its URL (which may hold a code or a
/// state) as never to be sent on as a Referer.
pub fn private(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
