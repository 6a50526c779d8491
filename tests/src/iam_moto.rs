//! A moto server of a test's own that enforces IAM, as AWS does: after the
//! set-up, every request must be signed by an IAM user's key and allowed by
//! that user's policy, or it is refused with `AccessDenied` naming the action.
//!
//! The set-up (an admin user, one user per function with exactly the actions
//! its role in the SAM-transformed template allows, and the table, secret,
//! bucket, legacy queue and bus a deployment has) runs before enforcement is switched on
//! through moto's `/moto-api/reset-auth`. moto checks actions, not resources:
//! every request it authorises names the resource `*`, so the users' policies
//! allow their role's actions on `*`; which resources each role names is held
//! by the template tests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use serde_json::{Value, json};

/// A user's access key.
#[derive(Clone, Debug)]
pub struct AccessKey {
    /// The key id.
    pub id: String,
    /// The secret.
    pub secret: String,
}

/// What a deployment holds on this moto.
#[derive(Clone, Debug)]
pub struct Deployed {
    /// The connections table.
    pub table: String,
    /// The client-credentials secret's name.
    pub secret: String,
    /// The rescue bucket.
    pub bucket: String,
    /// The rescue queue of earlier versions (its URL).
    pub legacy_queue: String,
    /// The refresher's work queue (its URL).
    pub work_queue: String,
    /// The webhook delivery queue (its URL).
    pub webhook_queue: String,
    /// The connection-events bus.
    pub bus: String,
}

/// The server; stopped when dropped.
pub struct IamMoto {
    /// Its URL.
    pub endpoint: String,
    /// The admin's key (every action), for the test's own reads and writes.
    pub admin: AccessKey,
    process: Child,
    http: reqwest::Client,
}

impl Drop for IamMoto {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The text between `<tag>` and `</tag>` in an IAM XML answer.
fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no {tag} in {xml}"))
        + open.len();
    let end = xml[start..].find("</").expect("a closing tag") + start;
    xml[start..end].to_owned()
}

impl IamMoto {
    /// Starts moto (not yet enforcing) on a free loopback port and creates the
    /// admin user.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let root = workspace();
        let process = Command::new(root.join(".venv/bin/python"))
            .arg(root.join("scripts/moto_server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts (make test installs it in .venv)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(tokio::time::Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut moto = Self {
            endpoint,
            admin: AccessKey {
                id: String::new(),
                secret: String::new(),
            },
            process,
            http: reqwest::Client::new(),
        };
        moto.admin = moto
            .user(
                "admin",
                &[json!({"Effect": "Allow", "Action": "*", "Resource": "*"})],
            )
            .await;
        moto
    }

    /// One IAM call, before enforcement (unsigned: a credential scope naming IAM
    /// is all moto needs to route it).
    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let answer = self
            .http
            .post(&self.endpoint)
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .form(&[params, &[("Version", "2010-05-08")]].concat())
            .send()
            .await
            .expect("moto answers");
        let status = answer.status();
        let text = answer.text().await.expect("a body");
        assert!(status.is_success(), "IAM {params:?}: {status} {text}");
        text
    }

    /// A user whose inline policy holds `statements`, and its access key.
    pub async fn user(&self, name: &str, statements: &[Value]) -> AccessKey {
        self.iam(&[("Action", "CreateUser"), ("UserName", name)])
            .await;
        let policy = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", "function"),
            ("PolicyDocument", &policy),
        ])
        .await;
        let created = self
            .iam(&[("Action", "CreateAccessKey"), ("UserName", name)])
            .await;
        AccessKey {
            id: xml_field(&created, "AccessKeyId"),
            secret: xml_field(&created, "SecretAccessKey"),
        }
    }

    /// A user allowed exactly `actions` (on `*`; see the module docs).
    pub async fn user_allowed(&self, name: &str, actions: &[String]) -> AccessKey {
        self.user(
            name,
            &[json!({"Effect": "Allow", "Action": actions, "Resource": "*"})],
        )
        .await
    }

    /// The SDK configuration for `key` on this server.
    pub fn sdk(&self, key: &AccessKey) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                Credentials::new(&key.id, &key.secret, None, None, "iam-moto"),
            ))
            .build()
    }

    /// The table, secret (holding `credentials_json`), bucket, legacy queue and bus of a
    /// deployment, created by the admin.
    pub async fn deploy(&self, credentials_json: &str) -> Deployed {
        let sdk = self.sdk(&self.admin);
        let table = "connections".to_owned();
        connector::outbound::dynamodb::schema::create_table(
            &aws_sdk_dynamodb::Client::new(&sdk),
            &table,
        )
        .await
        .expect("table");
        let secret = "rd-credentials".to_owned();
        aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(&secret)
            .secret_string(credentials_json)
            .send()
            .await
            .expect("secret");
        let bucket = "rescues".to_owned();
        connector::assembly::s3_client(&sdk)
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("bucket");
        let queue = |name: &'static str| {
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            async move {
                sqs.create_queue()
                    .queue_name(name)
                    .send()
                    .await
                    .expect("queue")
                    .queue_url()
                    .expect("a url")
                    .to_owned()
            }
        };
        let legacy_queue = queue("rescues").await;
        let work_queue = queue("refresh-work").await;
        let webhook_queue = queue("webhooks").await;
        let bus = "connection-events".to_owned();
        aws_sdk_eventbridge::Client::new(&sdk)
            .create_event_bus()
            .name(&bus)
            .send()
            .await
            .expect("bus");
        Deployed {
            table,
            secret,
            bucket,
            legacy_queue,
            work_queue,
            webhook_queue,
            bus,
        }
    }

    /// From now on every request must be signed by a user allowed its action.
    pub async fn enforce(&self) {
        let answer = self
            .http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .body("0")
            .send()
            .await
            .expect("moto answers");
        assert!(
            answer.status().is_success(),
            "reset-auth: {}",
            answer.status()
        );
    }
}
