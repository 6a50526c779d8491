//! The service's HTTP API, as the CLI calls it: JSON in and out, signed when
//! asked, errors as the API reports them.

use http::Method;
use serde_json::Value;
use url::Url;

use crate::signing::{Signer, SigningError};

/// Why a call did not give an answer to show.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request could not be signed.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// The service could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The base URL.
        url: Url,
        /// What failed.
        reason: String,
    },
    /// The service answered with an error.
    #[error("{status}: {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The API's error code (or `http_error` without a JSON body).
        code: String,
        /// The API's message.
        message: String,
    },
}

/// A client of one deployment (or local run) of the service.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    signer: Option<Signer>,
    tenant: Option<String>,
}

/// The header an operator names the tenant it acts in with.
const TENANT_HEADER: &str = "x-rdconn-tenant";

impl Api {
    /// Calls `base`, signing every request with `signer` when given.
    pub fn new(base: Url, signer: Option<Signer>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
            signer,
            tenant: None,
        }
    }

    /// The same client, acting in `tenant` on every call.
    pub fn in_tenant(mut self, tenant: Option<String>) -> Self {
        self.tenant = tenant;
        self
    }

    /// `method path` with an optional JSON body; the answer's JSON.
    ///
    /// # Errors
    /// [`CallError`] when unsigned, unreachable or refused.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let url = self
            .base
            .join(path_and_query)
            .map_err(|e| self.unreachable(e))?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header("accept", "application/json");
        if let Some(tenant) = &self.tenant {
            // Signed with the rest: API Gateway's SigV4 check covers it.
            request = request.header(TENANT_HEADER, tenant);
        }
        if let Some(host) = url.host_str() {
            let host = match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            };
            request = request.header("host", host);
        }
        let bytes = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                json.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let mut request = request.body(bytes).map_err(|e| self.unreachable(e))?;
        if let Some(signer) = &self.signer {
            signer.sign(&mut request)?;
        }
        let request = reqwest::Request::try_from(request).map_err(|e| self.unreachable(e))?;
        let answer = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| self.unreachable(e))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        let field = |name: &str| json[name].as_str().map(str::to_owned);
        Err(CallError::Refused {
            status: status.as_u16(),
            code: field("code").unwrap_or_else(|| "http_error".to_owned()),
            message: field("message")
                .or_else(|| field("Message"))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned()),
        })
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> CallError {
        CallError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }
}

/// Whether `url` points at this machine (a local run needs no signature).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
