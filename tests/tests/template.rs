//! `template.yaml` declares what the code expects: the table's key schema from
//! `schema.rs`, the callback function's routes with IAM auth on the caller-facing
//! one, and the configuration variables `Config` reads.

use connector::outbound::dynamodb::schema::{
    ATTENTION, ATTENTION_INDEX, DUE_AT, DUE_INDEX, DUE_SHARD, KIND, LIST_INDEX, LIST_SORT,
    PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE,
};
use serde_yaml::Value;

fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
        .expect("template.yaml at the workspace root");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

fn strings(value: &Value) -> Vec<(String, String)> {
    value
        .as_sequence()
        .expect("a list")
        .iter()
        .map(|item| {
            let mapping = item.as_mapping().expect("a mapping");
            let mut fields = mapping
                .values()
                .map(|v| v.as_str().expect("a string").to_owned());
            (
                fields.next().expect("first"),
                fields.next().expect("second"),
            )
        })
        .collect()
}

#[test]
fn the_table_uses_the_schema_the_code_defines() {
    let template = template();
    let table = &template["Resources"]["ConnectionsTable"];
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    let properties = &table["Properties"];
    assert_eq!(
        strings(&properties["KeySchema"]),
        [
            (PARTITION_KEY.to_owned(), "HASH".to_owned()),
            (SORT_KEY.to_owned(), "RANGE".to_owned())
        ]
    );
    assert_eq!(
        strings(&properties["AttributeDefinitions"]),
        [
            (PARTITION_KEY.to_owned(), "S".to_owned()),
            (SORT_KEY.to_owned(), "S".to_owned()),
            (DUE_SHARD.to_owned(), "S".to_owned()),
            (DUE_AT.to_owned(), "N".to_owned()),
            (ATTENTION.to_owned(), "S".to_owned()),
            (KIND.to_owned(), "S".to_owned()),
            (LIST_SORT.to_owned(), "S".to_owned()),
        ]
    );
    let indexes = properties["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("indexes");
    assert_eq!(indexes.len(), 3);
    assert_eq!(indexes[0]["IndexName"], DUE_INDEX);
    assert_eq!(
        strings(&indexes[0]["KeySchema"]),
        [
            (DUE_SHARD.to_owned(), "HASH".to_owned()),
            (DUE_AT.to_owned(), "RANGE".to_owned())
        ]
    );
    assert_eq!(indexes[0]["Projection"]["ProjectionType"], "KEYS_ONLY");
    assert_eq!(indexes[1]["IndexName"], ATTENTION_INDEX);
    assert_eq!(
        strings(&indexes[1]["KeySchema"]),
        [
            (ATTENTION.to_owned(), "HASH".to_owned()),
            (PARTITION_KEY.to_owned(), "RANGE".to_owned())
        ]
    );
    assert_eq!(indexes[1]["Projection"]["ProjectionType"], "KEYS_ONLY");
    assert_eq!(indexes[2]["IndexName"], LIST_INDEX);
    assert_eq!(
        strings(&indexes[2]["KeySchema"]),
        [
            (KIND.to_owned(), "HASH".to_owned()),
            (LIST_SORT.to_owned(), "RANGE".to_owned())
        ]
    );
    assert_eq!(indexes[2]["Projection"]["ProjectionType"], "KEYS_ONLY");
    assert_eq!(
        properties["TimeToLiveSpecification"]["AttributeName"],
        TTL_ATTRIBUTE
    );
    assert_eq!(properties["BillingMode"], "PAY_PER_REQUEST");
}

/// Each `HttpApi` event of a function: (method, path, authorizer), sorted; an
/// event without a path is API Gateway's `$default` route.
fn routes_of(function: &Value) -> Vec<(String, String, String)> {
    let mut routes: Vec<(String, String, String)> = function["Properties"]["Events"]
        .as_mapping()
        .expect("events")
        .values()
        .map(|event| {
            let p = &event["Properties"];
            (
                p["Method"].as_str().unwrap_or("ANY").to_owned(),
                p["Path"].as_str().unwrap_or("$default").to_owned(),
                p["Auth"]["Authorizer"]
                    .as_str()
                    .expect("authorizer")
                    .to_owned(),
            )
        })
        .collect();
    routes.sort();
    routes
}

#[test]
fn the_callback_function_serves_every_route_with_the_right_auth() {
    let template = template();
    let function = &template["Resources"]["OAuthCallbackFunction"];
    assert_eq!(
        function["Metadata"]["BuildProperties"]["Binary"],
        "oauth-callback"
    );
    assert_eq!(
        routes_of(function),
        [
            ("ANY".into(), "$default".into(), "NONE".into()),
            ("GET".into(), "/connect/{session}".into(), "NONE".into()),
            (
                "GET".into(),
                "/connect/{session}/done".into(),
                "NONE".into()
            ),
            ("GET".into(), "/oauth/callback".into(), "NONE".into()),
            ("GET".into(), "/openapi.json".into(), "NONE".into()),
            ("POST".into(), "/connect/sessions".into(), "AWS_IAM".into()),
            (
                "POST".into(),
                "/connections/{id}/reconnect".into(),
                "AWS_IAM".into()
            ),
        ]
    );
    assert_eq!(
        template["Resources"]["HttpApi"]["Properties"]["StageName"],
        "$default"
    );
}

#[test]
fn every_required_variable_is_set_for_the_functions() {
    let template = template();
    let variables = &template["Globals"]["Function"]["Environment"]["Variables"];
    for name in [
        "CONNECTIONS_TABLE",
        "CLIENT_CREDENTIALS_SECRET",
        "PUBLIC_BASE_URL",
        "RDSTATION_API_URL",
        "RDSTATION_MARKETING_AUTHORIZE_URL",
        "RDSTATION_CRM_AUTHORIZE_URL",
        "ALLOWED_RETURN_ORIGINS",
        "ALLOWED_CALLER_ARNS",
        "OPERATOR_ARNS",
        "TENANT_CACHE_SECONDS",
        "TOKEN_CALLS_PER_SECOND",
        "RESCUE_BUCKET",
    ] {
        assert!(
            !variables[name].is_null(),
            "{name} is not set in template.yaml"
        );
    }
}

#[test]
fn the_refresher_runs_on_an_eventbridge_rule_and_may_publish_events() {
    let template = template();
    let function = &template["Resources"]["TokenRefresherFunction"];
    assert_eq!(
        function["Metadata"]["BuildProperties"]["Binary"],
        "token-refresher"
    );
    let schedule = &function["Properties"]["Events"]["Schedule"];
    // A rule (not EventBridge Scheduler) sends the "Scheduled Event" payload.
    assert_eq!(schedule["Type"], "Schedule");
    assert_eq!(
        template["Resources"]["ConnectionEventBus"]["Type"],
        "AWS::Events::EventBus"
    );
    let variables = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert!(!variables["EVENT_BUS_NAME"].is_null());
    let statements = function["Properties"]["Policies"][0]["Statement"]
        .as_sequence()
        .expect("statements");
    let actions: Vec<String> = statements
        .iter()
        .flat_map(|s| match &s["Action"] {
            Value::Sequence(list) => list
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            Value::String(one) => vec![one.clone()],
            _ => Vec::new(),
        })
        .collect();
    for needed in [
        "dynamodb:Query",
        "events:PutEvents",
        "secretsmanager:GetSecretValue",
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
    ] {
        assert!(actions.iter().any(|a| a == needed), "{needed} missing");
    }
    assert!(
        actions.iter().all(|a| !a.ends_with(":*")),
        "least privilege: no wildcards"
    );
}

#[test]
fn rescued_pairs_wait_in_a_private_encrypted_bucket_and_the_old_queue_is_kept() {
    let template = template();
    let resources = &template["Resources"];
    let bucket = &resources["RescueBucket"];
    assert_eq!(bucket["Type"], "AWS::S3::Bucket");
    assert_eq!(bucket["DeletionPolicy"], "Retain");
    let properties = &bucket["Properties"];
    let encryption = &properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert_eq!(
        encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "aws:kms"
    );
    let block = &properties["PublicAccessBlockConfiguration"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[setting], true, "{setting}");
    }
    // What nobody restored goes, but only long after the alarm went off.
    let rule = &properties["LifecycleConfiguration"]["Rules"][0];
    assert_eq!(rule["Prefix"], "rescued/");
    assert!(rule["ExpirationInDays"].as_u64().expect("days") >= 14);
    let policy = resources["RescueBucketPolicy"]["Properties"]["PolicyDocument"].clone();
    let policy = serde_json::to_string(&serde_json::to_value(policy).expect("json")).expect("text");
    assert!(policy.contains("aws:SecureTransport"), "{policy}");
    // The queue of earlier versions may still hold pairs: a deploy never deletes it.
    let queue = &resources["RescueQueue"];
    assert_eq!(queue["Type"], "AWS::SQS::Queue");
    assert_eq!(queue["DeletionPolicy"], "Retain");
    let variables = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert!(!variables["RESCUE_BUCKET"].is_null());
    assert!(variables["LEGACY_RESCUE_QUEUE_URL"].is_null());
    let refresher = &resources["TokenRefresherFunction"]["Properties"]["Environment"]["Variables"];
    assert!(!refresher["LEGACY_RESCUE_QUEUE_URL"].is_null());
}

#[test]
fn the_api_function_serves_the_proxy_connections_webhooks_and_tenants_routes_behind_iam() {
    let template = template();
    let function = &template["Resources"]["ApiProxyFunction"];
    assert_eq!(
        function["Metadata"]["BuildProperties"]["Binary"],
        "api-proxy"
    );
    let iam = || "AWS_IAM".to_owned();
    assert_eq!(
        routes_of(function),
        [
            ("ANY".into(), "/proxy/{connection_id}/{path+}".into(), iam()),
            ("DELETE".into(), "/connections/{id}".into(), iam()),
            ("DELETE".into(), "/tenants/{tenant}".into(), iam()),
            ("DELETE".into(), "/webhooks/{id}".into(), iam()),
            ("GET".into(), "/connections".into(), iam()),
            ("GET".into(), "/connections/{id}".into(), iam()),
            ("GET".into(), "/tenants".into(), iam()),
            ("GET".into(), "/webhooks".into(), iam()),
            ("PATCH".into(), "/connections/{id}".into(), iam()),
            ("POST".into(), "/connections/import".into(), iam()),
            ("POST".into(), "/connections/{id}/refresh".into(), iam()),
            ("POST".into(), "/webhooks".into(), iam()),
            ("POST".into(), "/webhooks/{id}/rotate-secret".into(), iam()),
            ("PUT".into(), "/tenants/{tenant}".into(), iam()),
        ]
    );
    // Its timeout (under API Gateway's 30 s) is checked on the transformed template.
}

/// The value under a short-form intrinsic (`!Ref X` → `X`), if `value` is one.
fn intrinsic<'a>(value: &'a Value, tag: &str) -> Option<&'a Value> {
    match value {
        Value::Tagged(t) if t.tag == tag => Some(&t.value),
        _ => None,
    }
}

/// The resources of one CloudFormation type.
fn resources_of<'a>(template: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    template["Resources"]
        .as_mapping()
        .expect("resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(name, r)| (name.as_str().expect("name"), r))
        .collect()
}

#[test]
fn connection_events_and_alarms_reach_a_person() {
    let template = template();
    // The events that ask a person to act are routed to the alarm topic.
    let rule = &template["Resources"]["ConnectionEventsRule"]["Properties"];
    let detail_types: Vec<&str> = rule["EventPattern"]["detail-type"]
        .as_sequence()
        .expect("detail types")
        .iter()
        .map(|d| d.as_str().expect("text"))
        .collect();
    for kind in [
        connector::ports::EventKind::ConnectionNeedsReauth,
        connector::ports::EventKind::ConnectionPossiblyLost,
        connector::ports::EventKind::ConnectionRefreshFailing,
        connector::ports::EventKind::ConnectionExpiring,
        connector::ports::EventKind::DeploymentCredentialsRejected,
    ] {
        assert!(detail_types.contains(&kind.detail_type()), "{kind:?}");
    }
    assert_eq!(
        rule["EventPattern"]["source"][0],
        connector::outbound::events::EVENT_SOURCE
    );
    // Every alarm notifies the topic; the refresher's EMF metrics feed some.
    let alarms = resources_of(&template, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 6, "{}", alarms.len());
    for (name, alarm) in &alarms {
        let actions = alarm["Properties"]["AlarmActions"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} notifies nobody"));
        assert_eq!(
            intrinsic(&actions[0], "Ref").and_then(Value::as_str),
            Some("AlarmTopic"),
            "{name}"
        );
    }
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
        .expect("template");
    let summary = connector::services::scheduled_refresh::RunSummary::default().emf(0);
    for metric in [
        "needs_reauth",
        "possibly_lost",
        "deployment_credential_errors",
    ] {
        assert!(summary[metric].is_u64(), "the run reports {metric}");
        assert!(
            text.contains(&format!("MetricName: {metric}")),
            "{metric} alarmed"
        );
    }
}

#[test]
fn logs_are_kept_for_a_set_time_at_the_level_asked_for() {
    let template = template();
    for function in [
        "OAuthCallbackFunction",
        "ApiProxyFunction",
        "TokenRefresherFunction",
    ] {
        let logging = &template["Resources"][function]["Properties"]["LoggingConfig"];
        let group = intrinsic(&logging["LogGroup"], "Ref")
            .and_then(Value::as_str)
            .expect("a declared log group");
        assert_eq!(
            intrinsic(
                &template["Resources"][group]["Properties"]["RetentionInDays"],
                "Ref"
            )
            .and_then(Value::as_str),
            Some("LogRetentionDays")
        );
        let level = intrinsic(&logging["ApplicationLogLevel"], "FindInMap").expect("a mapping");
        assert_eq!(
            intrinsic(&level[1], "Ref").and_then(Value::as_str),
            Some("LogLevel"),
            "{function}: the Lambda log level follows LogLevel"
        );
        assert_eq!(
            intrinsic(
                &template["Globals"]["Function"]["Environment"]["Variables"]["RUST_LOG"],
                "Ref"
            )
            .and_then(Value::as_str),
            Some("LogLevel"),
            "the functions filter their own lines by LogLevel"
        );
    }
    // Lambda reads a JSON line without a "level" (every EMF metric line) as INFO,
    // and its filter drops what is less severe than its level: at WARN or ERROR
    // the metrics, and every alarm on them, would go silent.
    let levels = template["Mappings"]["LogLevels"]
        .as_mapping()
        .expect("the LogLevels mapping");
    let parameter_values = template["Parameters"]["LogLevel"]["AllowedValues"]
        .as_sequence()
        .expect("LogLevel's values");
    for value in parameter_values {
        let lambda = levels[value]["Lambda"].as_str().expect("a Lambda level");
        assert!(
            ["TRACE", "DEBUG", "INFO"].contains(&lambda),
            "LogLevel {value:?}: Lambda's filter at {lambda} drops the metric lines"
        );
    }
}

#[test]
fn the_refresher_needs_no_reserved_concurrency_and_is_not_retried() {
    let template = template();
    let properties = &template["Resources"]["TokenRefresherFunction"]["Properties"];
    assert!(
        properties["ReservedConcurrentExecutions"].is_null(),
        "new accounts' minimum quota refuses reserved concurrency; the run lock guards overlap"
    );
    let invoke = &properties["EventInvokeConfig"];
    assert_eq!(invoke["MaximumRetryAttempts"], 0);
    assert_eq!(invoke["DestinationConfig"]["OnFailure"]["Type"], "SNS");
}

#[test]
fn the_api_is_throttled_and_logs_requests_without_their_queries() {
    let template = template();
    let api = &template["Resources"]["HttpApi"]["Properties"];
    let routes = &api["DefaultRouteSettings"];
    assert!(!routes["ThrottlingBurstLimit"].is_null() && !routes["ThrottlingRateLimit"].is_null());
    let format = api["AccessLogSettings"]["Format"]
        .as_str()
        .expect("a format");
    let fields: serde_json::Value = serde_json::from_str(format).expect("JSON lines");
    assert!(fields["routeKey"].is_string() && fields["status"].is_string());
    for leak in ["rawQueryString", "queryString", "$context.path"] {
        assert!(!format.contains(leak), "{leak} would log codes and states");
    }
    assert_eq!(
        template["Resources"]["ConnectionsTable"]["Properties"]["DeletionProtectionEnabled"],
        true
    );
}

/// The refresher's fan-out as deployed: the scheduled run may queue its shards
/// on the work queue the function consumes through an SQS source whose maximum
/// concurrency is the RefreshWorkers parameter, one message per invocation; the
/// queue hides a message longer than a worker may hold it and sends a message
/// that keeps failing to a dead-letter queue someone hears about.
#[test]
fn the_refresher_hands_shards_to_workers_on_its_own_sqs_source() {
    let template = template();
    let function = &template["Resources"]["TokenRefresherFunction"]["Properties"];
    let variables = &function["Environment"]["Variables"];
    assert_eq!(
        intrinsic(&variables["REFRESH_WORK_QUEUE_URL"], "Ref"),
        Some(&Value::from("RefreshWorkQueue"))
    );
    let work = &function["Events"]["Work"];
    assert_eq!(work["Type"], "SQS");
    assert_eq!(
        intrinsic(&work["Properties"]["Queue"], "GetAtt"),
        Some(&Value::from("RefreshWorkQueue.Arn"))
    );
    assert_eq!(work["Properties"]["BatchSize"], 1);
    assert_eq!(
        intrinsic(
            &work["Properties"]["ScalingConfig"]["MaximumConcurrency"],
            "Ref"
        ),
        Some(&Value::from("RefreshWorkers"))
    );
    let workers = &template["Parameters"]["RefreshWorkers"];
    assert!(
        workers["MinValue"].as_u64().expect("a minimum") >= 2,
        "Lambda's least"
    );
    let queue = &template["Resources"]["RefreshWorkQueue"]["Properties"];
    let timeout = function["Timeout"].as_u64().expect("timeout");
    assert!(queue["VisibilityTimeout"].as_u64().expect("visibility") > timeout);
    assert_eq!(
        intrinsic(&queue["RedrivePolicy"]["deadLetterTargetArn"], "GetAtt"),
        Some(&Value::from("RefreshWorkDeadLetterQueue.Arn"))
    );
    let send = function["Policies"][0]["Statement"]
        .as_sequence()
        .expect("statements")
        .iter()
        .find(|s| s["Action"] == "sqs:SendMessage")
        .expect("the run may queue its shards");
    assert_eq!(
        intrinsic(&send["Resource"], "GetAtt"),
        Some(&Value::from("RefreshWorkQueue.Arn"))
    );
    let alarm = &template["Resources"]["RefreshWorkDeadLetteredAlarm"]["Properties"];
    assert_eq!(alarm["Namespace"], "AWS/SQS");
}

/// Every event on the bus reaches the webhook delivery queue; its deliveries
/// are retried and end on a dead-letter queue an alarm watches; the sender is
/// fed by the queue, reports each failed delivery on its own, and may write
/// only to its own queue.
#[test]
fn every_event_reaches_the_webhook_queue_and_failed_deliveries_are_dead_lettered() {
    let template = template();
    let resources = &template["Resources"];
    let rule = &resources["WebhookEventsRule"]["Properties"];
    assert_eq!(
        rule["EventPattern"]["source"][0],
        connector::outbound::events::EVENT_SOURCE
    );
    assert!(
        rule["EventPattern"]["detail-type"].is_null(),
        "every kind of event"
    );
    assert_eq!(
        intrinsic(&rule["Targets"][0]["Arn"], "GetAtt").and_then(Value::as_str),
        Some("WebhookQueue.Arn")
    );
    let queue = &resources["WebhookQueue"]["Properties"];
    assert_eq!(
        intrinsic(&queue["RedrivePolicy"]["deadLetterTargetArn"], "GetAtt").and_then(Value::as_str),
        Some("WebhookDeadLetterQueue.Arn")
    );
    assert!(
        queue["RedrivePolicy"]["maxReceiveCount"]
            .as_u64()
            .expect("a count")
            >= 5
    );
    let alarm = &resources["WebhookDeadLetteredAlarm"]["Properties"];
    assert_eq!(
        intrinsic(&alarm["Dimensions"][0]["Value"], "GetAtt").and_then(Value::as_str),
        Some("WebhookDeadLetterQueue.QueueName")
    );
    let function = &resources["WebhookSenderFunction"];
    assert_eq!(
        function["Metadata"]["BuildProperties"]["Binary"],
        "webhook-sender"
    );
    let source = &function["Properties"]["Events"]["Deliveries"]["Properties"];
    assert_eq!(
        intrinsic(&source["Queue"], "GetAtt").and_then(Value::as_str),
        Some("WebhookQueue.Arn")
    );
    assert_eq!(
        source["FunctionResponseTypes"][0],
        "ReportBatchItemFailures"
    );
    // Its visibility timeout covers the sender's whole invocation, six times.
    let timeout = function["Properties"]["Timeout"].as_u64().expect("timeout");
    assert!(queue["VisibilityTimeout"].as_u64().expect("visibility") >= 6 * timeout);
    let statements = function["Properties"]["Policies"][0]["Statement"]
        .as_sequence()
        .expect("statements");
    for statement in statements {
        let actions = format!("{:?}", statement["Action"]);
        if actions.contains("sqs:") {
            assert_eq!(
                intrinsic(&statement["Resource"], "GetAtt").and_then(Value::as_str),
                Some("WebhookQueue.Arn"),
                "{actions}"
            );
        }
    }
}
