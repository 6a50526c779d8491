//! RD Station's REST API for the proxy: one request out, the whole answer back.
//! No redirects are followed (a redirect could carry the bearer token elsewhere),
//! and the URI is always RD's configured scheme, host and base path plus a
//! checked path.
//!
//! The proxy sits in front of every call a company makes to RD, so this client
//! is hyper's pooled HTTP/1 client itself (the one reqwest is built on), with
//! TLS verified by the platform's verifier as the OAuth client does: the URI is
//! assembled once from parts already checked, without the URL re-parsing,
//! redirect and retry layers a general-purpose client runs on every request.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;
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

/// How long an idle pooled connection to RD is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The HTTP client for RD's API.
#[derive(Clone)]
pub struct RdApiClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    scheme: Scheme,
    authority: Authority,
    /// The base's path without its trailing slash (`""` for a host's root).
    base_path: String,
    timeout: Duration,
    max_answer_bytes: usize,
    user_agent: HeaderValue,
}

impl fmt::Debug for RdApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdApiClient")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .field("timeout", &self.timeout)
            .field("max_answer_bytes", &self.max_answer_bytes)
            .finish_non_exhaustive()
    }
}

impl RdApiClient {
    /// A client for the API at `base` whose calls (connect, request and the whole
    /// answer) end within `timeout` and whose answers are read up to
    /// `max_answer_bytes`.
    ///
    /// # Errors
    /// [`ClientBuildError`] if TLS cannot be initialised or `base` has no scheme
    /// and host a request can be sent to.
    pub fn new(
        base: Url,
        timeout: Duration,
        max_answer_bytes: usize,
    ) -> Result<Self, ClientBuildError> {
        let unusable = |why: &str| ClientBuildError::Base(why.to_owned());
        let origin: Uri = base
            .origin()
            .ascii_serialization()
            .parse()
            .map_err(|_| unusable("its origin is not a URI"))?;
        let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
            return Err(unusable("it has no scheme and host"));
        };
        // The provider is named rather than taken from the process default, so
        // no other crate's choice (or lack of one) can change or break it.
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        // The TLS layer below decides which schemes are allowed.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Ok(Self {
            http,
            scheme: scheme.clone(),
            authority: authority.clone(),
            base_path: base.path().trim_end_matches('/').to_owned(),
            timeout,
            max_answer_bytes,
            user_agent: HeaderValue::from_static(concat!(
                "rdstation-connector/",
                env!("CARGO_PKG_VERSION")
            )),
        })
    }

    /// The request to send: RD's scheme and host (never the caller's), the
    /// checked path under the base path, the caller's filtered headers, the
    /// token.
    fn outgoing(&self, request: &UpstreamRequest) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(request.path.path_and_query_under(&self.base_path))
            .build()
            .map_err(|_| UpstreamError::NotSent("the path is not a URI on RD's API".to_owned()))?;
        let mut bearer =
            HeaderValue::try_from(format!("Bearer {}", request.access_token.expose_secret()))
                .map_err(|_| {
                    UpstreamError::NotSent("the access token is not a header value".to_owned())
                })?;
        bearer.set_sensitive(true);
        let mut headers = request.headers.clone();
        headers.insert(header::AUTHORIZATION, bearer);
        headers
            .entry(header::USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        headers
            .entry(header::ACCEPT)
            .or_insert_with(|| HeaderValue::from_static("*/*"));
        let mut outgoing = Request::new(Full::new(request.body.clone()));
        *outgoing.method_mut() = request.method.clone();
        *outgoing.uri_mut() = uri;
        *outgoing.headers_mut() = headers;
        Ok(outgoing)
    }
}

/// Removes hop-by-hop headers: the fixed ones and any the `Connection` header
/// names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// RD's headers minus hop-by-hop ones, `Set-Cookie` (RD's cookies are not the
/// caller's) and `Content-Length` (the proxy's own answer sets it again). The body
/// passes through as bytes, so `Content-Encoding` stays true and is kept.
pub fn answer_headers(mut from_rd: HeaderMap) -> HeaderMap {
    remove_hop_by_hop(&mut from_rd);
    from_rd.remove(header::SET_COOKIE);
    from_rd.remove(header::CONTENT_LENGTH);
    from_rd
}

#[async_trait]
impl RdApi for RdApiClient {
    async fn send(&self, request: &UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let outgoing = self.outgoing(request)?;
        let exchange = async {
            let response = self.http.request(outgoing).await.map_err(|e| {
                // Only a failed connect is known not to have reached RD.
                if e.is_connect() {
                    UpstreamError::NotSent("connect error".to_owned())
                } else {
                    UpstreamError::NoAnswer("request error".to_owned())
                }
            })?;
            let (parts, body) = response.into_parts();
            let limit_bytes = self.max_answer_bytes;
            let body = Limited::new(body, limit_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        UpstreamError::AnswerTooLarge { limit_bytes }
                    } else {
                        UpstreamError::NoAnswer("body error".to_owned())
                    }
                })?
                .to_bytes();
            Ok(UpstreamResponse {
                status: parts.status,
                headers: answer_headers(parts.headers),
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| UpstreamError::NoAnswer("timeout error".to_owned()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn get(path: &str) -> UpstreamRequest {
        UpstreamRequest {
            method: axum::http::Method::GET,
            path: crate::domain::RdPath::parse(path, None).expect("plain"),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            access_token: crate::secret::AccessToken::new("t".to_owned()),
        }
    }

    /// A one-connection HTTP server on loopback: reads one request head, then
    /// writes `answer` (if any) and, if `hold`, keeps the connection open until
    /// the client goes (else closes it). Returns its base URL.
    async fn serve_once(answer: Option<&'static [u8]>, hold: bool) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
            }
            if let Some(answer) = answer {
                socket.write_all(answer).await.expect("write");
            }
            if hold {
                let _ = socket.read(&mut buf).await;
            }
        });
        url.parse().expect("url")
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, X-Hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "rd=1"),
            ("content-length", "12"),
            ("content-type", "application/json"),
            ("x-ratelimit-remaining", "119"),
        ] {
            headers.append(
                axum::http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let kept = answer_headers(headers);
        let mut names: Vec<&str> = kept.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "x-ratelimit-remaining"]);
    }

    #[test]
    fn the_base_path_is_kept_and_the_host_is_the_bases() {
        let client = RdApiClient::new(
            "https://rd.example/api/".parse().expect("url"),
            Duration::from_secs(1),
            1024,
        )
        .expect("client");
        let request = UpstreamRequest {
            method: axum::http::Method::GET,
            path: crate::domain::RdPath::parse("platform/contacts", Some("page=2")).expect("plain"),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            access_token: crate::secret::AccessToken::new("t".to_owned()),
        };
        let outgoing = client.outgoing(&request).expect("request");
        assert_eq!(
            outgoing.uri().to_string(),
            "https://rd.example/api/platform/contacts?page=2"
        );
        assert!(outgoing.headers()[header::AUTHORIZATION].is_sensitive());
    }

    #[tokio::test]
    async fn an_unreachable_rd_is_reported_as_not_sent() {
        // A port nothing listens on: bound, then released.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base: Url = format!("http://{}/", listener.local_addr().expect("addr"))
            .parse()
            .expect("url");
        drop(listener);
        let client = RdApiClient::new(base, Duration::from_secs(5), 1024).expect("client");
        let result = client.send(&get("platform/contacts")).await;
        assert!(
            matches!(result, Err(UpstreamError::NotSent(_))),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_rd_that_never_answers_is_cut_off_at_the_timeout_as_no_answer() {
        let base = serve_once(None, true).await;
        let client = RdApiClient::new(base, Duration::from_secs(10), 1024).expect("client");
        let started = tokio::time::Instant::now();
        let result = client.send(&get("platform/contacts")).await;
        assert!(
            matches!(&result, Err(UpstreamError::NoAnswer(why)) if why == "timeout error"),
            "{result:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_connection_closed_mid_answer_is_no_answer() {
        // The connection closes 93 bytes short of the declared body.
        let base = serve_once(
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial"),
            false,
        )
        .await;
        let client = RdApiClient::new(base, Duration::from_secs(5), 1024).expect("client");
        let result = client.send(&get("platform/contacts")).await;
        assert!(
            matches!(result, Err(UpstreamError::NoAnswer(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_redirect_is_passed_back_not_followed() {
        let base = serve_once(
            Some(b"HTTP/1.1 302 Found\r\nlocation: http://evil.example/steal\r\ncontent-length: 0\r\n\r\n"),
            true,
        )
        .await;
        let client = RdApiClient::new(base, Duration::from_secs(5), 1024).expect("client");
        let answer = client
            .send(&get("platform/contacts"))
            .await
            .expect("answer");
        assert_eq!(answer.status, axum::http::StatusCode::FOUND);
        assert_eq!(
            answer.headers[header::LOCATION],
            "http://evil.example/steal"
        );
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_not_buffered() {
        // 8 bytes allowed; RD declares and starts sending 20.
        let base = serve_once(
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n0123456789abcdefghij"),
            true,
        )
        .await;
        let client = RdApiClient::new(base, Duration::from_secs(5), 8).expect("client");
        let result = client.send(&get("platform/contacts")).await;
        assert!(
            matches!(
                result,
                Err(UpstreamError::AnswerTooLarge { limit_bytes: 8 })
            ),
            "{result:?}"
        );
    }
}
