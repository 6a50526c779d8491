//! API Gateway HTTP API (payload 2.0) events, as AWS sends them to the Lambda,
//! turned into requests and answered exactly as the functions do
//! (`connector::inbound::apigw`).

use axum::Router;
use serde_json::Value;

/// A POST from a caller signed with SigV4 (the IAM-authorized route).
pub const IAM_AUTHORIZED: &str = include_str!("../fixtures/apigw-v2/iam-authorized.json");
/// A navigation from a person's browser (cookies, `Accept: text/html`).
pub const BROWSER: &str = include_str!("../fixtures/apigw-v2/browser.json");

/// One request to build from a fixture.
#[derive(Clone, Debug)]
pub struct EventRequest<'a> {
    /// The fixture to start from.
    pub fixture: &'a str,
    /// HTTP method.
    pub method: &'a str,
    /// Path, without query.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: &'a str,
    /// Extra or replaced headers (lower-case names).
    pub headers: Vec<(&'a str, &'a str)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// Send the body base64-encoded, as API Gateway does for binary media.
    pub base64: bool,
    /// Cookies (`name=value`) added to the fixture's, in API Gateway's `cookies` list.
    pub cookies: Vec<String>,
    /// The IAM principal the authorizer vouched for, in place of the fixture's.
    pub caller: Option<&'a str>,
}

impl<'a> EventRequest<'a> {
    /// A request from `fixture` with no query, body or extra headers.
    pub fn new(fixture: &'a str, method: &'a str, path: &'a str) -> Self {
        Self {
            fixture,
            method,
            path,
            query: "",
            headers: Vec::new(),
            body: None,
            base64: false,
            cookies: Vec::new(),
            caller: None,
        }
    }

    /// The same request, signed by the IAM principal `arn`.
    pub fn by(mut self, arn: &'a str) -> Self {
        self.caller = Some(arn);
        self
    }

    /// The API Gateway event JSON.
    pub fn event(&self) -> Value {
        use base64::Engine;
        let mut event: Value = serde_json::from_str(self.fixture).expect("fixture is JSON");
        let route_key = format!("{} {}", self.method, self.path);
        event["routeKey"] = route_key.clone().into();
        event["rawPath"] = self.path.into();
        event["rawQueryString"] = self.query.into();
        event["requestContext"]["routeKey"] = route_key.into();
        event["requestContext"]["http"]["method"] = self.method.into();
        event["requestContext"]["http"]["path"] = self.path.into();
        if let Some(arn) = self.caller {
            event["requestContext"]["authorizer"]["iam"]["userArn"] = arn.into();
        }
        for (name, value) in &self.headers {
            event["headers"][*name] = (*value).into();
        }
        if !self.cookies.is_empty() {
            let mut cookies = event["cookies"].as_array().cloned().unwrap_or_default();
            cookies.extend(self.cookies.iter().map(|c| Value::from(c.as_str())));
            event["cookies"] = cookies.into();
        }
        match &self.body {
            Some(body) if self.base64 => {
                event["body"] = base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into();
                event["isBase64Encoded"] = true.into();
            }
            Some(body) => {
                event["body"] = String::from_utf8(body.clone()).expect("utf-8 body").into();
                event["isBase64Encoded"] = false.into();
            }
            None => {
                if let Some(map) = event.as_object_mut() {
                    map.remove("body");
                }
            }
        }
        event
    }
}

/// What the router answered.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: axum::http::HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("body is not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `Location` header.
    pub fn location(&self) -> String {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Location header (status {})", self.status))
            .to_owned()
    }

    /// The JSON error code, asserting the documented error shape.
    pub fn error_code(&self) -> String {
        let json = self.json();
        assert!(json["message"].is_string(), "error without message: {json}");
        json["code"].as_str().expect("error code").to_owned()
    }
}

/// Sends `request` through `router` as the functions' Lambda adapter does, in
/// an invocation without a deadline.
pub async fn send(router: &Router, request: &EventRequest<'_>) -> Answer {
    send_by(router, request, None).await
}

/// Sends `request` through `router` as the functions' Lambda adapter does, in an
/// invocation that ends at `deadline`.
pub async fn send_by(
    router: &Router,
    request: &EventRequest<'_>,
    deadline: Option<connector::inbound::http::InvocationDeadline>,
) -> Answer {
    let event = serde_json::from_value(request.event()).expect("an API Gateway v2 event");
    let answer = answer_of(connector::inbound::apigw::answer(router, event, deadline).await);
    check_described(request, &answer);
    answer
}

/// Panics unless `answer` is one the API description gives for `request`'s
/// operation (see [`crate::openapi::check_answer`]).
pub fn check_described(request: &EventRequest<'_>, answer: &Answer) {
    crate::openapi::check_answer(
        request.method,
        request.path,
        answer.status,
        answer
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        &answer.body,
    );
}

/// What an API Gateway answer says, cookies back among the headers.
pub fn answer_of(answer: aws_lambda_events::apigw::ApiGatewayV2httpResponse) -> Answer {
    use base64::Engine;
    let mut headers = answer.headers;
    for cookie in &answer.cookies {
        headers.append(
            "set-cookie",
            cookie.parse().expect("a cookie is a header value"),
        );
    }
    let body = match answer.body {
        None => Vec::new(),
        Some(aws_lambda_events::encodings::Body::Text(text)) if answer.is_base64_encoded => {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64 body")
        }
        Some(aws_lambda_events::encodings::Body::Text(text)) => text.into_bytes(),
        Some(aws_lambda_events::encodings::Body::Binary(bytes)) => bytes,
        Some(other) => panic!("unexpected body {other:?}"),
    };
    Answer {
        status: u16::try_from(answer.status_code).expect("a status"),
        headers,
        body,
    }
}
