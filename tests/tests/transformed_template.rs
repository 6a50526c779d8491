//! The template as CloudFormation receives it: `scripts/transform-template.py`
//! runs the SAM translator (the transform `sam validate` and CloudFormation run)
//! over `template.yaml`, and these tests read its output. What the source says
//! proves little if the transform turns it into something else.

use integration_tests::sam_template::{resources_of_type, role_actions, transformed};
use serde_json::Value;

/// (path, method, authoriser, function) for every route of the HTTP API.
fn routes(template: &Value) -> Vec<(String, String, String, String)> {
    let paths = template["Resources"]["HttpApi"]["Properties"]["Body"]["paths"]
        .as_object()
        .expect("the HTTP API's OpenAPI body");
    let mut routes = Vec::new();
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().expect("methods") {
            let security = operation["security"][0]
                .as_object()
                .and_then(|s| s.keys().next().cloned())
                .unwrap_or_default();
            let uri = operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
                .as_str()
                .expect("a Lambda integration");
            let function = uri
                .split("${")
                .find_map(|part| part.strip_suffix(".Arn}/invocations"))
                .expect("the function in the integration URI")
                .to_owned();
            routes.push((path.clone(), method.clone(), security, function));
        }
    }
    routes.sort();
    routes
}

#[test]
fn only_the_browser_routes_are_public_and_each_route_reaches_its_function() {
    let template = transformed();
    // The public routes are the ones a person's browser follows, plus the
    // $default route (every path no other route matches), which reaches the
    // callback function: its fallback answers a page or a JSON 404, and its two
    // caller routes (opening a session, the one-call reconnect) refuse a request
    // without an IAM identity themselves, so no unsigned request reaches the
    // connections API.
    let expected = [
        (
            "$default",
            "x-amazon-apigateway-any-method",
            "NONE",
            "OAuthCallbackFunction",
        ),
        (
            "/connect/sessions",
            "post",
            "AWS_IAM",
            "OAuthCallbackFunction",
        ),
        ("/connect/{session}", "get", "NONE", "OAuthCallbackFunction"),
        (
            "/connect/{session}/done",
            "get",
            "NONE",
            "OAuthCallbackFunction",
        ),
        ("/connections", "get", "AWS_IAM", "ApiProxyFunction"),
        ("/connections/import", "post", "AWS_IAM", "ApiProxyFunction"),
        ("/connections/{id}", "delete", "AWS_IAM", "ApiProxyFunction"),
        ("/connections/{id}", "get", "AWS_IAM", "ApiProxyFunction"),
        ("/connections/{id}", "patch", "AWS_IAM", "ApiProxyFunction"),
        (
            "/connections/{id}/reconnect",
            "post",
            "AWS_IAM",
            "OAuthCallbackFunction",
        ),
        (
            "/connections/{id}/refresh",
            "post",
            "AWS_IAM",
            "ApiProxyFunction",
        ),
        ("/oauth/callback", "get", "NONE", "OAuthCallbackFunction"),
        ("/openapi.json", "get", "NONE", "OAuthCallbackFunction"),
        (
            "/proxy/{connection_id}/{path+}",
            "x-amazon-apigateway-any-method",
            "AWS_IAM",
            "ApiProxyFunction",
        ),
        ("/tenants", "get", "AWS_IAM", "ApiProxyFunction"),
        ("/tenants/{tenant}", "delete", "AWS_IAM", "ApiProxyFunction"),
        ("/tenants/{tenant}", "put", "AWS_IAM", "ApiProxyFunction"),
        ("/webhooks", "get", "AWS_IAM", "ApiProxyFunction"),
        ("/webhooks", "post", "AWS_IAM", "ApiProxyFunction"),
        ("/webhooks/{id}", "delete", "AWS_IAM", "ApiProxyFunction"),
        (
            "/webhooks/{id}/rotate-secret",
            "post",
            "AWS_IAM",
            "ApiProxyFunction",
        ),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(p, m, a, f)| (p.to_string(), m.to_string(), a.to_string(), f.to_string()))
        .collect();
    assert_eq!(routes(&template), expected);
    let scheme = &template["Resources"]["HttpApi"]["Properties"]["Body"]["components"]["securitySchemes"]
        ["AWS_IAM"];
    assert_eq!(scheme["x-amazon-apigateway-authtype"], "awsSigv4");
}

/// A template value as a function would read it: literals as they are, a
/// parameter's reference as its default, anything else (a resource's name or
/// ARN) as a placeholder.
fn resolved(template: &Value, value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) if o.contains_key("Ref") => {
            let name = o["Ref"].as_str().expect("a name");
            match &template["Parameters"][name]["Default"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => format!("placeholder-{name}"),
            }
        }
        _ => "placeholder".to_owned(),
    }
}

/// Every function's environment, as deployed, is one its configuration accepts,
/// and says the function's real timeout: a timeout no refresh fits in (or one
/// the function was not told) fails here, not on the first 401 in production.
#[test]
fn every_function_starts_with_its_deployed_environment_and_timeout() {
    let template = transformed();
    let functions = resources_of_type(&template, "AWS::Lambda::Function");
    assert_eq!(functions.len(), 4);
    for (name, function) in &functions {
        let props = &function["Properties"];
        let variables = props["Environment"]["Variables"]
            .as_object()
            .expect("variables");
        let env: std::collections::HashMap<String, String> = variables
            .iter()
            .map(|(k, v)| (k.clone(), resolved(&template, v)))
            .collect();
        let timeout = props["Timeout"].as_u64().expect("a timeout");
        assert_eq!(
            env.get("FUNCTION_TIMEOUT_SECONDS").map(String::as_str),
            Some(timeout.to_string().as_str()),
            "{name}: FUNCTION_TIMEOUT_SECONDS is its Timeout"
        );
        let config = connector::config::Config::from_lookup(|key| env.get(key).cloned())
            .unwrap_or_else(|e| panic!("{name} would not start: {e}"));
        let needs = connector::config::refresh_needs(&config.refresh);
        assert!(
            std::time::Duration::from_secs(timeout) > needs,
            "{name}: {timeout} s cannot fit a refresh ({needs:?})"
        );
        if *name == "TokenRefresherFunction" {
            // A run starts a refresh only while a whole lease fits.
            assert!(
                std::time::Duration::from_secs(timeout) > config.refresh.lease() * 2,
                "{name}: room for more than one lease"
            );
        }
    }
}

#[test]
fn each_function_has_only_the_permissions_its_routes_need() {
    let template = transformed();
    let roles = resources_of_type(&template, "AWS::IAM::Role");
    assert_eq!(roles.len(), 4, "one role per function");
    for (role, _) in &roles {
        let actions = role_actions(&template, role);
        for action in &actions {
            assert!(
                !action.contains('*'),
                "{role} allows a wildcard action {action}"
            );
        }
        // No function scans the table: listing is a Query on an index.
        assert!(
            !actions.iter().any(|a| a == "dynamodb:Scan"),
            "{role}: Scan"
        );
        let batch_reads = actions.iter().any(|a| a == "dynamodb:BatchGetItem");
        assert_eq!(
            batch_reads,
            *role == "ApiProxyFunctionRole",
            "{role}: BatchGetItem"
        );
        // The webhook sender only reads the endpoints.
        let sender = *role == "WebhookSenderFunctionRole";
        if sender {
            assert_eq!(
                actions
                    .iter()
                    .filter(|a| a.starts_with("dynamodb:"))
                    .collect::<Vec<_>>(),
                ["dynamodb:GetItem"],
                "{role}"
            );
        }
        // Whole-item puts create connections (the callback, an import by the
        // API function) and sessions, and take the run lock (the refresher).
        let puts = actions.iter().any(|a| a == "dynamodb:PutItem");
        assert_eq!(puts, !sender, "{role}: PutItem");
        let deletes = actions.iter().any(|a| a == "dynamodb:DeleteItem");
        assert_eq!(
            deletes,
            *role != "OAuthCallbackFunctionRole" && !sender,
            "{role}: DeleteItem"
        );
        let rescues = actions.iter().any(|a| a == "s3:GetObject");
        assert_eq!(
            rescues,
            *role != "OAuthCallbackFunctionRole" && !sender,
            "{role}: the rescue store"
        );
        // S3 answers a GET of a missing key 404 only to a caller allowed to list
        // the bucket, 403 otherwise, and a 403 is never "no pair waits". moto
        // answers 404 either way, so the IAM-enforced runs cannot see this one.
        let lists = actions.iter().any(|a| a == "s3:ListBucket");
        assert_eq!(lists, rescues, "{role}: s3:ListBucket");
        // Only the refresher reads the queue of earlier versions and queues
        // work, and only the sender queues deliveries (each on its own queue
        // alone: template.rs checks the statements' resources).
        let queue = actions.iter().any(|a| a.starts_with("sqs:"));
        assert_eq!(
            queue,
            *role == "TokenRefresherFunctionRole" || sender,
            "{role}: the queues"
        );
        assert!(
            actions.iter().any(|a| a == "kms:Decrypt"),
            "{role}: the data key"
        );
    }
}

#[test]
fn functions_are_traced_and_the_refresher_is_neither_retried_nor_reserved() {
    let template = transformed();
    let functions = resources_of_type(&template, "AWS::Lambda::Function");
    assert_eq!(functions.len(), 4);
    for (name, function) in &functions {
        let props = &function["Properties"];
        assert_eq!(props["TracingConfig"]["Mode"], "Active", "{name}");
        assert_eq!(props["Runtime"], "provided.al2023", "{name}");
        assert!(props["ReservedConcurrentExecutions"].is_null(), "{name}");
        let role = props["Role"]["Fn::GetAtt"][0].as_str().expect("role");
        let managed = template["Resources"][role]["Properties"]["ManagedPolicyArns"].to_string();
        assert!(
            managed.contains("Xray"),
            "{name} may not send traces: {managed}"
        );
    }
    let (_, invoke) = resources_of_type(&template, "AWS::Lambda::EventInvokeConfig")
        .pop()
        .expect("the refresher's invoke config");
    assert_eq!(invoke["Properties"]["MaximumRetryAttempts"], 0);
    assert_eq!(
        invoke["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]["Ref"],
        "AlarmTopic"
    );
}

#[test]
fn the_api_alarm_watches_the_share_of_5xx_answers_and_functions_answer_before_the_gateway_gives_up()
{
    let template = transformed();
    let alarm = &template["Resources"]["ApiServerErrorsAlarm"]["Properties"];
    let expression = alarm["Metrics"][0]["Expression"].as_str().expect("math");
    assert!(expression.contains("errors / requests"), "{expression}");
    assert_eq!(alarm["Threshold"], 5);
    for (name, function) in resources_of_type(&template, "AWS::Lambda::Function") {
        let timeout = function["Properties"]["Timeout"].as_u64().expect("timeout");
        if name == "TokenRefresherFunction" {
            assert_eq!(timeout, 300);
        } else if name == "WebhookSenderFunction" {
            // Fed by its queue, not the API (template.rs checks the queue's
            // visibility timeout against it).
            assert!(timeout <= 60, "{name}: {timeout}");
        } else {
            // API Gateway's integration limit is 30 s.
            assert!(timeout < 30, "{name}: {timeout}");
        }
    }
}

#[test]
fn stored_secrets_are_under_the_customer_managed_key() {
    let template = transformed();
    let r = &template["Resources"];
    let key = serde_json::json!({"Fn::If": ["CreateDataKey", {"Fn::GetAtt": ["DataKey", "Arn"]}, {"Ref": "KmsKeyArn"}]});
    assert_eq!(
        r["ConnectionsTable"]["Properties"]["SSESpecification"]["KMSMasterKeyId"],
        key
    );
    assert_eq!(
        r["ConnectionsTable"]["Properties"]["SSESpecification"]["SSEType"],
        "KMS"
    );
    assert_eq!(r["ClientCredentialsSecret"]["Properties"]["KmsKeyId"], key);
    assert_eq!(r["ClientCredentialsSecret"]["DeletionPolicy"], "Retain");
    assert_eq!(r["RescueQueue"]["Properties"]["KmsMasterKeyId"], key);
    assert_eq!(
        r["RescueBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            ["ServerSideEncryptionByDefault"]["KMSMasterKeyID"],
        key
    );
    assert_eq!(r["AlarmTopic"]["Properties"]["KmsMasterKeyId"], key);
    assert_eq!(r["DataKey"]["Properties"]["EnableKeyRotation"], true);
    assert_eq!(r["DataKey"]["Condition"], "CreateDataKey");
}

#[test]
fn outputs_give_a_newcomer_everything_the_first_deploy_needs() {
    let template = transformed();
    let outputs = template["Outputs"].as_object().expect("outputs");
    for name in [
        "ApiUrl",
        "OAuthRedirectUri",
        "ExecuteApiArn",
        "ConnectionsTableName",
        "ClientCredentialsSecretArn",
        "ConnectionEventBusName",
        "RescueBucketName",
        "AlarmTopicArn",
        "DashboardUrl",
    ] {
        assert!(outputs.contains_key(name), "output {name}");
    }
    let api_url = outputs["ApiUrl"]["Value"]["Fn::Sub"].as_str().expect("sub");
    assert!(api_url.contains("${AWS::URLSuffix}"), "{api_url}");
    // Without a custom domain the redirect URI is the API's own URL: no second
    // deploy to learn it.
    let redirect = outputs["OAuthRedirectUri"]["Value"]["Fn::If"][2]["Fn::Sub"]
        .as_str()
        .expect("sub");
    assert_eq!(
        redirect,
        "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/oauth/callback"
    );
    let parameters = template["Parameters"].as_object().expect("parameters");
    for (name, parameter) in parameters {
        // The first `sam deploy --guided` asks nothing it cannot answer.
        assert!(
            !parameter["Default"].is_null(),
            "parameter {name} has no default"
        );
    }
}

/// Every (namespace, metric) an alarm watches, directly or in its metric math.
fn metrics_of(alarm: &Value) -> Vec<(String, String)> {
    let p = &alarm["Properties"];
    let mut found = Vec::new();
    if let (Some(ns), Some(name)) = (p["Namespace"].as_str(), p["MetricName"].as_str()) {
        found.push((ns.to_owned(), name.to_owned()));
    }
    for metric in p["Metrics"].as_array().into_iter().flatten() {
        let m = &metric["MetricStat"]["Metric"];
        if let (Some(ns), Some(name)) = (m["Namespace"].as_str(), m["MetricName"].as_str()) {
            found.push((ns.to_owned(), name.to_owned()));
        }
    }
    found
}

#[test]
fn every_way_a_connection_is_at_risk_has_an_alarm_the_runbook_names() {
    let template = transformed();
    let r = &template["Resources"];
    for (alarm, namespace, metric) in [
        (
            "RescuedPairWaitingAlarm",
            "RdStationConnections/Refresher",
            "rescued_pairs_waiting",
        ),
        (
            "OldestRescuedPairAlarm",
            "RdStationConnections/Refresher",
            "oldest_rescued_pair_age_seconds",
        ),
        ("TableThrottlesAlarm", "AWS/DynamoDB", "ReadThrottleEvents"),
        ("TableThrottlesAlarm", "AWS/DynamoDB", "WriteThrottleEvents"),
        ("TableSystemErrorsAlarm", "AWS/DynamoDB", "SystemErrors"),
        ("ApiFunctionErrorsAlarm", "AWS/Lambda", "Errors"),
        ("ApiFunctionDurationAlarm", "AWS/Lambda", "Duration"),
        (
            "ConnectionEventsUndeliveredAlarm",
            "AWS/Events",
            "FailedInvocations",
        ),
        (
            "ConnectionEventsUndeliveredAlarm",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
        ),
    ] {
        let watched = metrics_of(&r[alarm]);
        assert!(
            watched.contains(&(namespace.to_owned(), metric.to_owned())),
            "{alarm} watches {watched:?}, not {namespace} {metric}"
        );
        assert_eq!(
            r[alarm]["Properties"]["AlarmActions"][0]["Ref"], "AlarmTopic",
            "{alarm}"
        );
    }
    // Every metric of the service's own namespace an alarm names is one the
    // refresher emits.
    let emf = connector::services::scheduled_refresh::RunSummary::default().emf(0);
    let emitted: Vec<&str> = emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|m| m["Name"].as_str())
        .collect();
    let alarms = resources_of_type(&template, "AWS::CloudWatch::Alarm");
    for (name, alarm) in &alarms {
        for (namespace, metric) in metrics_of(alarm) {
            if namespace == "RdStationConnections/Refresher" {
                assert!(
                    emitted.contains(&metric.as_str()),
                    "{name} watches {metric}, which the refresher does not emit"
                );
            }
        }
    }
    // What the alarm topic refuses is kept, and the alarm names the rule by the
    // name the rule is given.
    let rule = &r["ConnectionEventsRule"]["Properties"];
    assert_eq!(
        rule["Targets"][0]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0],
        "ConnectionEventsDeadLetterQueue"
    );
    let failed = &r["ConnectionEventsUndeliveredAlarm"]["Properties"]["Metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| m["Id"] == "failed")
        .expect("the failed-invocations metric")["MetricStat"]["Metric"]["Dimensions"];
    let rule_dimension = failed
        .as_array()
        .expect("dimensions")
        .iter()
        .find(|d| d["Name"] == "RuleName")
        .expect("RuleName");
    assert_eq!(rule_dimension["Value"], rule["Name"]);
    // The README's operations guide says what to do for each alarm.
    let readme = include_str!("../../README.md");
    for (name, _) in &alarms {
        assert!(readme.contains(name), "README: no runbook line for {name}");
    }
}

/// Every (namespace, metric) the code emits as EMF, with the dimension sets it
/// declares: the refresher's run summary, a forwarded proxied request (which
/// carries every proxy metric) and a call to RD's token endpoint.
fn emitted_metrics() -> Vec<(String, String, Value)> {
    use connector::metrics::{
        PROXY_NAMESPACE, ProxiedRequest, TOKEN_CALL_NAMESPACE, document, token_call,
    };
    use std::time::Duration;
    let proxied = ProxiedRequest {
        rd_latency: Some(Duration::from_millis(1)),
        ..ProxiedRequest::default()
    };
    let documents = [
        connector::services::scheduled_refresh::RunSummary::default().emf(0),
        document(PROXY_NAMESPACE, 0, &proxied.metrics()),
        document(
            TOKEN_CALL_NAMESPACE,
            0,
            &token_call(Duration::from_millis(1), false),
        ),
    ];
    let mut emitted = Vec::new();
    for doc in &documents {
        let declared = &doc["_aws"]["CloudWatchMetrics"][0];
        let namespace = declared["Namespace"].as_str().expect("namespace");
        for metric in declared["Metrics"].as_array().expect("metrics") {
            emitted.push((
                namespace.to_owned(),
                metric["Name"].as_str().expect("name").to_owned(),
                declared["Dimensions"].clone(),
            ));
        }
    }
    emitted
}

/// The dashboard's body: a JSON document once `Fn::Sub` has filled in its
/// `${...}` references (which all sit inside JSON strings).
fn dashboard_body(template: &Value) -> Value {
    let dashboards = resources_of_type(template, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1, "one dashboard");
    let body = dashboards[0].1["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("the body is one Fn::Sub string");
    serde_json::from_str(body).expect("the dashboard's body is JSON")
}

#[test]
fn the_dashboard_shows_what_the_code_emits_and_every_alarm() {
    let template = transformed();
    let body = dashboard_body(&template);
    let widgets = body["widgets"].as_array().expect("widgets");
    let emitted = emitted_metrics();
    // Each metric line is [namespace, name, (dimension name, value)*, options?].
    let mut shown = Vec::new();
    for widget in widgets.iter().filter(|w| w["type"] == "metric") {
        let p = &widget["properties"];
        assert!(p["region"].is_string(), "{}: no region", p["title"]);
        for line in p["metrics"].as_array().expect("metric lines") {
            let parts = line.as_array().expect("a metric line");
            let strings: Vec<&str> = parts.iter().filter_map(Value::as_str).collect();
            let namespace = strings[0];
            let name = strings[1];
            let dimensions = &strings[2..];
            assert_eq!(
                dimensions.len() % 2,
                0,
                "{namespace} {name}: {dimensions:?}"
            );
            if namespace.starts_with("RdStationConnections/") {
                let found = emitted
                    .iter()
                    .find(|(ns, n, _)| ns == namespace && n == name)
                    .unwrap_or_else(|| {
                        panic!("the dashboard shows {namespace} {name}, which no code emits")
                    });
                // The code emits every metric without dimensions (the
                // deployment's total); a dimension here would match no data.
                assert_eq!(found.2, serde_json::json!([[]]), "{name}");
                assert!(dimensions.is_empty(), "{namespace} {name}: {dimensions:?}");
            } else {
                assert!(
                    namespace.starts_with("AWS/"),
                    "unknown namespace {namespace}"
                );
            }
            shown.push((namespace.to_owned(), name.to_owned()));
        }
    }
    // What the issue asks an operator to see: connections by status, refresh
    // outcomes, token-call latency, proxy requests, latency and 429s (ours and
    // RD's), the rescue store's depth and age.
    for (namespace, name) in [
        (
            "RdStationConnections/Refresher",
            "connections_needing_reauth",
        ),
        (
            "RdStationConnections/Refresher",
            "connections_possibly_lost",
        ),
        ("RdStationConnections/Refresher", "refreshed"),
        ("RdStationConnections/Refresher", "ambiguous"),
        ("RdStationConnections/Refresher", "needs_reauth"),
        ("RdStationConnections/Refresher", "possibly_lost"),
        ("RdStationConnections/Refresher", "errors"),
        ("RdStationConnections/TokenCalls", "token_call_ms"),
        ("RdStationConnections/TokenCalls", "token_call_failed"),
        ("RdStationConnections/Proxy", "requests"),
        ("RdStationConnections/Proxy", "latency_ms"),
        ("RdStationConnections/Proxy", "rd_latency_ms"),
        ("RdStationConnections/Proxy", "throttled_by_us"),
        ("RdStationConnections/Proxy", "throttled_by_rd"),
        ("RdStationConnections/Proxy", "failed"),
        ("RdStationConnections/Refresher", "rescued_pairs_waiting"),
        (
            "RdStationConnections/Refresher",
            "oldest_rescued_pair_age_seconds",
        ),
    ] {
        assert!(
            shown.contains(&(namespace.to_owned(), name.to_owned())),
            "the dashboard does not show {namespace} {name}"
        );
    }
    // The alarm widget holds every alarm of the template, and only those.
    let alarm_widgets: Vec<&Value> = widgets.iter().filter(|w| w["type"] == "alarm").collect();
    assert_eq!(alarm_widgets.len(), 1, "one alarm-status widget");
    let mut on_dashboard: Vec<String> = alarm_widgets[0]["properties"]["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .map(|arn| {
            let arn = arn.as_str().expect("an ARN");
            arn.strip_prefix("${")
                .and_then(|a| a.strip_suffix(".Arn}"))
                .unwrap_or_else(|| panic!("{arn} is not an alarm of the template"))
                .to_owned()
        })
        .collect();
    on_dashboard.sort();
    let mut alarms: Vec<String> = resources_of_type(&template, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(name, _)| name.to_owned())
        .collect();
    alarms.sort();
    assert_eq!(on_dashboard, alarms);
    // Every custom metric an alarm watches is emitted too.
    for (name, alarm) in resources_of_type(&template, "AWS::CloudWatch::Alarm") {
        for (namespace, metric) in metrics_of(alarm) {
            if namespace.starts_with("RdStationConnections/") {
                assert!(
                    emitted
                        .iter()
                        .any(|(ns, n, _)| *ns == namespace && *n == metric),
                    "{name} watches {namespace} {metric}, which no code emits"
                );
            }
        }
    }
}
