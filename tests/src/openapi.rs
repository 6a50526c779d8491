//! The API description as the suite holds answers to it: every answer a test
//! receives through [`crate::apigw`] for a described operation must have a
//! described status, a described media type, and (JSON) a body its schema
//! accepts. Stricter than the published document in one way: an object
//! answered may carry no property its schema does not name.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::{Value, json};

/// The described operations: (method in lower case, path template).
pub fn operations() -> Vec<(String, String)> {
    OPERATIONS.clone()
}

/// [`operations`], read from the document once.
static OPERATIONS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let mut ops = Vec::new();
    if let Some(paths) = DOCUMENT["paths"].as_object() {
        for (path, item) in paths {
            for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
                if METHODS.contains(&method.as_str()) {
                    ops.push((method.clone(), path.clone()));
                }
            }
        }
    }
    ops.sort();
    ops
});

/// The description the service publishes, as JSON.
pub static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    serde_json::to_value(connector::inbound::http::openapi(None)).expect("the document is JSON")
});

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

/// The path template of the operation `method path` resolves to, if any: the
/// template whose segments match, literal segments preferred (as the router
/// prefers `/connections/import` to `/connections/{id}`); a last `{path}`
/// under `/proxy/` takes the rest of the path, as the proxy's route does.
pub fn template_of(method: &str, path: &str) -> Option<String> {
    let method = method.to_ascii_lowercase();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut best: Option<(usize, String)> = None;
    for (op_method, template) in OPERATIONS.iter() {
        if *op_method != method {
            continue;
        }
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        let rest_param = template.starts_with("/proxy/") && parts.len() <= segments.len();
        if !rest_param && parts.len() != segments.len() {
            continue;
        }
        let mut literal = 0;
        let matched = parts.iter().zip(&segments).all(|(part, segment)| {
            if part.starts_with('{') {
                !segment.is_empty()
            } else {
                literal += 1;
                part == segment
            }
        });
        if matched && best.as_ref().is_none_or(|(n, _)| literal > *n) {
            best = Some((literal, template.clone()));
        }
    }
    best.map(|(_, template)| template)
}

/// Panics unless the answer `status`, `content_type`, `body` to `method path`
/// is one the description gives for its operation. Paths no operation
/// describes (answered by the fallback) are not checked.
pub fn check_answer(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) {
    let Some(template) = template_of(method, path) else {
        return;
    };
    let method = method.to_ascii_lowercase();
    let responses = &DOCUMENT["paths"][&template][&method]["responses"];
    let code = status.to_string();
    let response = if responses[&code].is_object() {
        &responses[&code]
    } else {
        &responses["default"]
    };
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, which its description does not give"
    );
    if body.is_empty() {
        return;
    }
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let content = &response["content"];
    let described = if content[&media].is_object() {
        &content[&media]
    } else {
        &content["*/*"]
    };
    assert!(
        described.is_object(),
        "{method} {template} answered {status} as {media:?}, which its description does not give"
    );
    if media != "application/json" || !described["schema"].is_object() {
        return;
    }
    let instance: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!("{method} {template} answered {status} with a body that is not JSON")
    });
    let validator = validator(&described["schema"]);
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} answered {status} with a body its schema refuses:\n{}\nbody: {instance}",
        errors.join("\n")
    );
}

/// A validator for `schema`, its `#/components/...` references resolved in
/// the document; built once a schema.
fn validator(schema: &Value) -> Arc<jsonschema::Validator> {
    static BUILT: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        LazyLock::new(Mutex::default);
    let key = schema.to_string();
    let mut built = BUILT.lock().expect("not poisoned");
    if let Some(v) = built.get(&key) {
        return v.clone();
    }
    let mut components = DOCUMENT["components"].clone();
    if let Some(schemas) = components["schemas"].as_object_mut() {
        let flattened = referenced_from_all_of(schemas);
        for (name, s) in schemas.iter_mut() {
            if !flattened.contains(name) {
                close(s);
            }
        }
    }
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": components,
        "allOf": [schema],
    });
    let v = Arc::new(
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|e| panic!("the description's schema {schema} is not valid: {e}")),
    );
    built.insert(key, v.clone());
    v
}

/// The schemas another one takes in through `allOf` (`#[serde(flatten)]`):
/// closing them would refuse the properties the other one adds.
fn referenced_from_all_of(schemas: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut names = Vec::new();
    for s in schemas.values() {
        for part in s["allOf"].as_array().into_iter().flatten() {
            if let Some(r) = part["$ref"].as_str() {
                names.push(r.trim_start_matches("#/components/schemas/").to_owned());
            }
        }
    }
    names
}

/// `schema`, refusing properties it does not name (`unevaluatedProperties`
/// sees through `allOf`).
fn close(schema: &mut Value) {
    let is_object = schema.get("properties").is_some() || schema.get("allOf").is_some();
    if let (true, Some(map)) = (is_object, schema.as_object_mut()) {
        map.entry("unevaluatedProperties").or_insert(false.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_their_templates() {
        assert_eq!(
            template_of("POST", "/connections/import").as_deref(),
            Some("/connections/import")
        );
        assert_eq!(
            template_of("GET", "/connections/import").as_deref(),
            Some("/connections/{id}")
        );
        assert_eq!(
            template_of("GET", "/proxy/a/platform/contacts/x").as_deref(),
            Some("/proxy/{connection_id}/{path}")
        );
        assert_eq!(template_of("GET", "/nowhere"), None);
    }

    #[test]
    #[should_panic(expected = "refuses")]
    fn an_answer_with_an_undescribed_property_is_refused() {
        check_answer(
            "GET",
            "/webhooks",
            200,
            Some("application/json"),
            br#"{"webhooks": [], "refresh_token": "x"}"#,
        );
    }

    #[test]
    #[should_panic(expected = "does not give")]
    fn an_undescribed_media_type_is_refused() {
        check_answer("GET", "/connections", 200, Some("text/html"), b"<p>");
    }
}
