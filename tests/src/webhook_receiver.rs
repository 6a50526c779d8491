//! A webhook receiver as an integrator runs one: HTTPS on loopback, with a
//! certificate from a CA of the test's own (which the sender is told to
//! trust), recording every delivery and answering the status it is set to;
//! and a Standard Webhooks verifier written from the specification, apart
//! from the service's signer.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// One delivery as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    /// The path it was posted to.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: String,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A running receiver.
pub struct Receiver {
    /// `https://localhost:<port>`: the name resolves to loopback.
    pub base: String,
    /// The PEM of the CA its certificate chains to.
    pub ca_pem: String,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<StatusCode>>,
    arrived: Arc<tokio::sync::Notify>,
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else {
                continue;
            };
            // A client that gave up mid-handshake is simply not served.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl Receiver {
    /// A receiver answering 204 to every delivery.
    pub async fn start() -> Self {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "webhook test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = tcp.local_addr().expect("address").port();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let status = Arc::new(Mutex::new(StatusCode::NO_CONTENT));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (log, answer, notify) = (received.clone(), status.clone(), arrived.clone());
        let app = Router::new().route(
            "/{*path}",
            post(
                move |uri: axum::http::Uri, headers: HeaderMap, body: String| async move {
                    log.lock().expect("lock").push(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    notify.notify_waiters();
                    *answer.lock().expect("lock")
                },
            ),
        );
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base: format!("https://localhost:{port}"),
            ca_pem: ca.pem(),
            received,
            status,
            arrived,
        }
    }

    /// Answers `status` to every delivery from now on.
    pub fn answer(&self, status: StatusCode) {
        *self.status.lock().expect("lock") = status;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Resolves once a delivery arrives (or one has since `seen` were counted).
    pub async fn wait_for_more_than(&self, seen: usize) {
        loop {
            let notified = self.arrived.notified();
            if self.received.lock().expect("lock").len() > seen {
                return;
            }
            notified.await;
        }
    }
}

/// Whether `received` carries a valid Standard Webhooks signature under
/// `secret` (`whsec_...`): HMAC-SHA256 over `id.timestamp.body`, any of the
/// space-separated `v1,` signatures matching.
pub fn signed_by(received: &Received, secret: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(
        format!(
            "{}.{}.{}",
            received.header("webhook-id"),
            received.header("webhook-timestamp"),
            received.body
        )
        .as_bytes(),
    );
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    received
        .header("webhook-signature")
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}
