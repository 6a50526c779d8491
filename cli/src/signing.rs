//! SigV4 for API Gateway's IAM authoriser (`execute-api`), with credentials from
//! the standard AWS chain. The signing itself is the `aws-sigv4` crate's.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// No credentials in the chain.
    #[error("no AWS credentials found (environment, profile, SSO or role): {0}")]
    NoCredentials(String),
    /// No region to sign for.
    #[error("no AWS region to sign for: pass --region or set AWS_REGION")]
    NoRegion,
    /// The request could not be signed.
    #[error("could not sign the request: {0}")]
    Sign(String),
}

/// Signs requests for one region with one set of credentials.
pub struct Signer {
    credentials: Credentials,
    region: String,
}

impl Signer {
    /// Credentials from the standard chain; the region is `region`, else the one
    /// in an execute-api host name, else the AWS configuration's.
    ///
    /// # Errors
    /// [`SigningError`] without credentials or a region.
    pub async fn from_environment(
        region: Option<String>,
        host: Option<&str>,
    ) -> Result<Self, SigningError> {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let region = region
            .or_else(|| host.and_then(region_of_execute_api_host))
            .or_else(|| config.region().map(ToString::to_string))
            .ok_or(SigningError::NoRegion)?;
        let provider = config
            .credentials_provider()
            .ok_or_else(|| SigningError::NoCredentials("no provider".to_owned()))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| SigningError::NoCredentials(e.to_string()))?;
        Ok(Self {
            credentials,
            region,
        })
    }

    /// Adds the SigV4 headers to `request`.
    ///
    /// # Errors
    /// [`SigningError::Sign`] if the request cannot be signed.
    pub fn sign(&self, request: &mut http::Request<Vec<u8>>) -> Result<(), SigningError> {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("execute-api")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SigningError::Sign(e.to_string()))?
            .into();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.uri().to_string(),
            headers.into_iter(),
            SignableBody::Bytes(request.body()),
        )
        .map_err(|e| SigningError::Sign(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| SigningError::Sign(e.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// `abc123.execute-api.eu-west-1.amazonaws.com` → `eu-west-1`.
pub fn region_of_execute_api_host(host: &str) -> Option<String> {
    let mut labels = host.split('.');
    let _api_id = labels.next()?;
    (labels.next()? == "execute-api").then_some(())?;
    labels.next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_execute_api_host() {
        assert_eq!(
            region_of_execute_api_host("a1b2.execute-api.sa-east-1.amazonaws.com").as_deref(),
            Some("sa-east-1")
        );
        assert_eq!(region_of_execute_api_host("connect.example.com"), None);
    }

    #[test]
    fn a_signed_request_carries_sigv4_for_execute_api() {
        let signer = Signer {
            credentials: Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"),
            region: "sa-east-1".to_owned(),
        };
        let mut request = http::Request::builder()
            .method("GET")
            .uri("https://a1b2.execute-api.sa-east-1.amazonaws.com/connections?status=active")
            .header("host", "a1b2.execute-api.sa-east-1.amazonaws.com")
            .body(Vec::new())
            .expect("request");
        signer.sign(&mut request).expect("signed");
        let authorization = request.headers()["authorization"].to_str().expect("ascii");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{authorization}"
        );
        assert!(authorization.contains("/sa-east-1/execute-api/aws4_request"));
        assert!(request.headers().contains_key("x-amz-date"));
        assert!(!authorization.contains("secret"));
    }
}
