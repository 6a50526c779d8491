//! The API description (`GET /openapi.json`) against what is deployed: it
//! describes exactly the routes the template gives API Gateway, each reaches
//! its handler in the function the template sends it to, and the document
//! served is the one the code generates. (Every answer the suite receives
//! through `apigw` is held to its schema: see `integration_tests::openapi`.)

use std::collections::BTreeSet;

use integration_tests::apigw::{self, EventRequest};
use integration_tests::app::TestApp;
use integration_tests::openapi;
use serde_yaml::Value;

/// The methods API Gateway's `ANY` stands for, as the proxy describes them.
const ANY: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

/// Each routed `HttpApi` event of the template: (method, path as OpenAPI
/// writes it, the function's logical id). `$default` is left out: it routes
/// nothing of its own.
fn template_routes() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
        .expect("template.yaml at the workspace root");
    let template: Value = serde_yaml::from_str(&text).expect("YAML");
    let mut routes = Vec::new();
    for (name, resource) in template["Resources"].as_mapping().expect("resources") {
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for event in events.values() {
            let p = &event["Properties"];
            let (Some("HttpApi"), Some(path)) = (event["Type"].as_str(), p["Path"].as_str()) else {
                continue;
            };
            let path = path.replace("+}", "}");
            let method = p["Method"].as_str().expect("a method").to_ascii_lowercase();
            let methods: Vec<String> = if method == "any" {
                ANY.map(str::to_owned).to_vec()
            } else {
                vec![method]
            };
            for method in methods {
                routes.push((
                    method,
                    path.clone(),
                    name.as_str().expect("a name").to_owned(),
                ));
            }
        }
    }
    routes.sort();
    routes
}

#[test]
fn the_description_gives_exactly_the_routes_api_gateway_routes() {
    let routed: BTreeSet<(String, String)> = template_routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let described: BTreeSet<(String, String)> = openapi::operations().into_iter().collect();
    let undescribed: Vec<_> = routed.difference(&described).collect();
    let unrouted: Vec<_> = described.difference(&routed).collect();
    assert!(
        undescribed.is_empty() && unrouted.is_empty(),
        "routed but not described: {undescribed:?}\ndescribed but not routed: {unrouted:?}"
    );
}

/// `template` with each `{param}` filled in.
fn example_path(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment {
            "{path}" => "platform/contacts",
            s if s.starts_with('{') => "probe",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_described_operation_reaches_its_handler_in_the_function_the_template_names() {
    let app = TestApp::start().await;
    let routes = template_routes();
    assert!(routes.len() > 20, "the template's routes were read");
    for (method, template, function) in routes {
        let router = match function.as_str() {
            "OAuthCallbackFunction" => &app.router,
            "ApiProxyFunction" => &app.api,
            other => panic!("{other} serves no routes the suite knows"),
        };
        let path = example_path(&template);
        let upper = method.to_ascii_uppercase();
        let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, &upper, &path);
        request.body = matches!(upper.as_str(), "POST" | "PUT" | "PATCH").then(|| b"{}".to_vec());
        let answer = apigw::send(router, &request).await;
        // The fallbacks answer these codes; a handler never does.
        let fallback = answer.status == 405
            || (answer.status == 404
                && serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .is_ok_and(|b| b["code"] == "not_found"));
        assert!(
            !fallback,
            "{upper} {path} ({template}, {function}) was answered by the fallback: {} {}",
            answer.status,
            answer.text()
        );
    }
}

#[tokio::test]
async fn the_document_served_is_the_one_the_code_generates() {
    let app = TestApp::start().await;
    let answer = apigw::send(
        &app.router,
        &EventRequest::new(apigw::BROWSER, "GET", "/openapi.json"),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["content-type"].to_str().expect("ascii"),
        "application/json"
    );
    assert_eq!(answer.json(), *openapi::DOCUMENT);
    assert_eq!(answer.json()["openapi"], "3.1.0");
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = std::env::temp_dir().join(integration_tests::moto::unique_name("openapi") + ".json");
    std::fs::write(&file, openapi::DOCUMENT.to_string()).expect("written");
    let checked = std::process::Command::new(root.join(".venv/bin/python"))
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("the validator runs (make test installs it in .venv)");
    let said = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{said}");
    assert!(said.contains("OK"), "{said}");
    let _ = std::fs::remove_file(file);
}
