//! API Gateway HTTP API events (payload 2.0) to requests for the routers, and
//! their answers back, done here rather than by `lambda_http`'s conversion.
//!
//! `lambda_http` builds the request's URI by parsing `https://{host}{rawPath}`
//! as a URL, which resolves dot segments (`..`, `%2e%2e`) and turns backslashes
//! into slashes before any route sees the path: `/proxy/A/%2e%2e/B/...` would
//! reach connection `B`. It also panics on a query string holding `"` or `<`.
//! Here the request carries `rawPath` exactly as API Gateway delivered it, so
//! the routes check what the caller sent; a query's characters that a URI may
//! not hold are percent-encoded (what any server decodes them to is unchanged);
//! and an event no request can be built from gets a JSON 400, never a panic.

use std::convert::Infallible;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body as EventBody;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, Uri, header};
use axum::response::IntoResponse;
use base64::Engine;
use http_body_util::BodyExt;
use lambda_http::request::RequestContext;
use lambda_runtime::{LambdaEvent, service_fn};
use tower::ServiceExt;

use super::http::InvocationDeadline;
use super::http::error::ApiError;

/// Serves `router` to the Lambda Runtime API until the environment ends.
///
/// # Errors
/// The runtime's, when it cannot reach the Runtime API.
pub async fn run(router: Router) -> Result<(), lambda_runtime::Error> {
    let router = &router;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            // Lambda gives the invocation's end in ms since the epoch.
            let deadline = i64::try_from(event.context.deadline)
                .ok()
                .filter(|ms| *ms > 0)
                .map(InvocationDeadline);
            Ok::<_, Infallible>(answer(router, event.payload, deadline).await)
        },
    ))
    .await
}

/// Routes one event through `router` (the invocation ending at `deadline`) and
/// returns what API Gateway expects back.
pub async fn answer(
    router: &Router,
    event: ApiGatewayV2httpRequest,
    deadline: Option<InvocationDeadline>,
) -> ApiGatewayV2httpResponse {
    let response = match to_request(event) {
        Ok(mut request) => {
            if let Some(deadline) = deadline {
                request.extensions_mut().insert(deadline);
            }
            match router.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
        Err(refused) => refused.into_response(),
    };
    to_event_response(response).await
}

/// The request an event describes, with its raw path untouched.
///
/// # Errors
/// A JSON 400 when the path, query or body cannot make a request.
pub fn to_request(event: ApiGatewayV2httpRequest) -> Result<Request<Body>, ApiError> {
    let raw_path = event.raw_path.unwrap_or_default();
    let query = event
        .raw_query_string
        .as_deref()
        .filter(|q| !q.is_empty())
        .map(encode_query);
    let path_and_query = match &query {
        Some(query) => format!("{raw_path}?{query}"),
        None => raw_path,
    };
    let uri = path_and_query
        .starts_with('/')
        .then(|| Uri::try_from(path_and_query).ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request("invalid_path", "the request's path is not a valid URI path")
        })?;
    let body = match event.body {
        None => Body::empty(),
        Some(text) if event.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Body::from)
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_body",
                    "the request's body is marked base64 but is not",
                )
            })?,
        Some(text) => Body::from(text),
    };
    let mut request = Request::new(body);
    *request.method_mut() = event.request_context.http.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = event.headers;
    if let Some(cookies) = event.cookies.filter(|c| !c.is_empty()) {
        // API Gateway takes cookies out of the headers; the routes read them there.
        if let Ok(value) = HeaderValue::from_str(&cookies.join("; ")) {
            request.headers_mut().insert(header::COOKIE, value);
        }
    }
    request
        .extensions_mut()
        .insert(RequestContext::ApiGatewayV2(event.request_context));
    Ok(request)
}

/// Percent-encodes the bytes of a raw query string that a URI may not hold
/// (`"`, `<`, `>`, space, non-ASCII and the like); escapes already there stay.
fn encode_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for byte in query.bytes() {
        let allowed = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
                    | b'?'
                    | b'%'
                    | b'['
                    | b']'
            );
        if allowed {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether a body with these headers travels as text: a textual content type
/// and no content encoding. Everything else goes base64-encoded.
fn is_text(response: &Response<Body>) -> bool {
    let headers = response.headers();
    if headers.contains_key(header::CONTENT_ENCODING) {
        return false;
    }
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || [
            "application/json",
            "application/javascript",
            "application/xml",
        ]
        .contains(&essence.as_str())
        || ["+json", "+xml", "+yaml"]
            .iter()
            .any(|suffix| essence.ends_with(suffix))
}

/// The answer API Gateway expects: `Set-Cookie` headers in `cookies`, other
/// repeated headers joined by API Gateway itself, a body as text or base64.
pub async fn to_event_response(response: Response<Body>) -> ApiGatewayV2httpResponse {
    let text = is_text(&response);
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            // Our bodies are in memory; a failure here is ours, and said as JSON.
            tracing::error!(error = %e, "an answer's body could not be read");
            let mut event = ApiGatewayV2httpResponse::default();
            event.status_code = 502;
            event.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            event.body = Some(EventBody::Text(
                r#"{"code":"answer_unreadable","message":"the service could not complete the request; try again later"}"#
                    .to_owned(),
            ));
            return event;
        }
    };
    let mut parts = parts;
    let cookies = parts
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    parts.headers.remove(header::SET_COOKIE);
    let mut event = ApiGatewayV2httpResponse::default();
    event.status_code = i64::from(parts.status.as_u16());
    event.headers = parts.headers;
    event.cookies = cookies;
    if !bytes.is_empty() {
        match String::from_utf8(bytes.to_vec()) {
            Ok(body) if text => event.body = Some(EventBody::Text(body)),
            _ => {
                event.body = Some(EventBody::Text(
                    base64::engine::general_purpose::STANDARD.encode(&bytes),
                ));
                event.is_base64_encoded = true;
            }
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_keeps_its_escapes_and_loses_only_what_a_uri_cannot_hold() {
        assert_eq!(encode_query("a=1&b=%22x%22"), "a=1&b=%22x%22");
        assert_eq!(encode_query("q=\"<x>\" y"), "q=%22%3Cx%3E%22%20y");
        assert_eq!(encode_query("page[number]=2"), "page[number]=2");
        assert_eq!(encode_query("n=ção"), "n=%C3%A7%C3%A3o");
    }
}
