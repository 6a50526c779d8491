//! RD Station's REST API for the proxy: one request out, the whole answer back.
//! No redirects are followed (a redirect could carry the bearer token elsewhere),
//! and the URL is always RD's configured base plus a checked path.

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use std::time::Duration;
use url::Url;

use super::ClientBuildError;
use crate::ports::{RdApi, UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::secret::ExposeSecret;

/// Headers that describe one hop, not the message: never passed on.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The HTTP client for RD's API.
#[derive(Clone, Debug)]
pub struct RdApiClient {
    http: reqwest::Client,
    base: Url,
}

impl RdApiClient {
    /// A client for the API at `base` whose calls end within `timeout`.
    ///
    /// # Errors
    /// [`ClientBuildError`] if TLS cannot be initialised.
    pub fn new(base: Url, timeout: Duration) -> Result<Self, ClientBuildError> {
        Ok(Self {
            http: super::http_client(timeout)?,
            base,
        })
    }
}

/// RD's headers minus hop-by-hop ones, `Set-Cookie` (RD's cookies are not the
/// caller's) and `Content-Length` (the proxy's own answer sets it again). The body
/// passes through as bytes, so `Content-Encoding` stays true and is kept.
pub fn answer_headers(from_rd: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in from_rd {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || name == header::SET_COOKIE || name == header::CONTENT_LENGTH {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

#[async_trait]
impl RdApi for RdApiClient {
    async fn send(&self, request: &UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let url = request
            .path
            .url_on(&self.base)
            .ok_or_else(|| UpstreamError::NotSent("the path would leave RD's API".to_owned()))?;
        let response = self
            .http
            .request(request.method.clone(), url)
            .headers(request.headers.clone())
            .bearer_auth(request.access_token.expose_secret())
            .body(request.body.clone())
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    UpstreamError::NotSent(describe(&e))
                } else {
                    UpstreamError::NoAnswer(describe(&e))
                }
            })?;
        let status = response.status();
        let headers = answer_headers(response.headers());
        let body: Bytes = response
            .bytes()
            .await
            .map_err(|e| UpstreamError::NoAnswer(describe(&e)))?;
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }
}

/// A transport failure without its URL (which holds the caller's query values).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("{kind} error")
}
