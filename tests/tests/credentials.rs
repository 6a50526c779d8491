//! Client credentials from Secrets Manager (on moto): read once, cached, re-read on
//! demand, and never printed.

use connector::domain::Product;
use connector::outbound::credentials::SecretsManagerCredentials;
use connector::ports::{CredentialSource, CredentialsError};
use connector::secret::ExposeSecret;
use integration_tests::moto;

#[tokio::test]
async fn reads_once_and_rereads_on_reload() {
    let name = moto::create_secret(
        r#"{"marketing":{"client_id":"mkt-id","client_secret":"mkt-secret-1"},"crm":{"client_id":"crm-id","client_secret":"crm-secret-1"}}"#,
    )
    .await;
    let source = SecretsManagerCredentials::new(moto::secretsmanager().await, &name);
    let crm = source.credentials(Product::Crm).await.expect("read");
    assert_eq!(crm.client_id, "crm-id");
    assert_eq!(crm.client_secret.expose_secret(), "crm-secret-1");
    assert!(!format!("{crm:?}").contains("crm-secret-1"));

    moto::secretsmanager()
        .await
        .put_secret_value()
        .secret_id(&name)
        .secret_string(r#"{"crm":{"client_id":"crm-id","client_secret":"crm-secret-2"}}"#)
        .send()
        .await
        .expect("rotated");
    let cached = source.credentials(Product::Crm).await.expect("cached");
    assert_eq!(
        cached.client_secret.expose_secret(),
        "crm-secret-1",
        "served from the cache"
    );

    source.reload().await.expect("reloaded");
    let fresh = source.credentials(Product::Crm).await.expect("fresh");
    assert_eq!(fresh.client_secret.expose_secret(), "crm-secret-2");
    assert!(matches!(
        source.credentials(Product::Marketing).await,
        Err(CredentialsError::NotConfigured(Product::Marketing))
    ));
}

#[tokio::test]
async fn a_missing_or_malformed_secret_is_a_clear_error() {
    let source = SecretsManagerCredentials::new(moto::secretsmanager().await, "no-such-secret");
    let err = source.credentials(Product::Crm).await.expect_err("missing");
    assert!(matches!(err, CredentialsError::Unavailable(_)), "{err}");

    let name =
        moto::create_secret(r#"{"crm":{"client_id":"id","client_secret":["s3cr3t-in-a-list"]}}"#)
            .await;
    let source = SecretsManagerCredentials::new(moto::secretsmanager().await, &name);
    let err = source
        .credentials(Product::Crm)
        .await
        .expect_err("malformed");
    assert!(matches!(err, CredentialsError::Malformed(_)), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}
