//! The rescue store on S3: rotated pairs whose commit to the table failed wait
//! here, one object per pair, until they are restored. S3 fails independently of
//! DynamoDB (the failure that stopped a commit does not stop its rescue), answers
//! a GET strongly consistently after a PUT has answered, and every instance reads
//! it at once: whether a pair waits for a connection is one GET of a key made from
//! the connection and the pair it replaced. The bucket encrypts with the stack's
//! KMS key and expires what nobody restored (declared in the template).
//!
//! Keys are `rescued/<connection id, base64url>/<spent refresh token
//! fingerprint>.<replaced access token fingerprint>`: the id is encoded so that no
//! id (`..` is a valid one) can be read as a path.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::{ConnectionId, TenantId};
use crate::outbound::aws_error::unavailable;
use crate::outbound::rescue_body::{from_body, to_body};
use crate::ports::{RescueKey, RescuePage, RescueStore, RescuedPair, StoreError};

/// Where every key of the store starts.
const PREFIX: &str = "rescued/";

/// Keys a listing returns per page (S3's own maximum).
const PAGE_SIZE: i32 = 1000;

/// Rescued pairs in an S3 bucket.
#[derive(Clone, Debug)]
pub struct S3RescueStore {
    client: Client,
    bucket: String,
}

impl S3RescueStore {
    /// The store in `bucket`.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// The object key of `key`. The connection is named by its id as displayed
/// (base64url): its name alone for the default tenant's (as before tenants),
/// `tenant/name` for another's.
fn object_key(key: &RescueKey) -> String {
    format!(
        "{PREFIX}{}/{}.{}",
        URL_SAFE_NO_PAD.encode(key.connection_id.to_string()),
        key.spent_refresh_token,
        key.replaced_access_token
    )
}

/// The rescue key an object key names, if it is one of ours.
fn parse_object_key(object_key: &str) -> Option<RescueKey> {
    let rest = object_key.strip_prefix(PREFIX)?;
    let (id, fingerprints) = rest.split_once('/')?;
    let (spent, replaced) = fingerprints.split_once('.')?;
    let id = String::from_utf8(URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
    Some(RescueKey {
        connection_id: match id.split_once('/') {
            Some((tenant, name)) => ConnectionId::parse_in(&TenantId::parse(tenant).ok()?, name),
            None => ConnectionId::in_default_tenant(&id),
        }
        .ok()?,
        spent_refresh_token: spent.to_owned(),
        replaced_access_token: replaced.to_owned(),
    })
}

#[async_trait]
impl RescueStore for S3RescueStore {
    async fn put_rescue(&self, rescue: &RescuedPair) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(object_key(&rescue.key()))
            .content_type("application/json")
            .body(ByteStream::from(to_body(rescue)?.into_bytes()))
            .send()
            .await
            .map_err(|e| unavailable("rescue store", &e))?;
        Ok(())
    }

    async fn find_rescue(&self, key: &RescueKey) -> Result<Option<RescuedPair>, StoreError> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(object_key(key))
            .send()
            .await
        {
            Ok(output) => output,
            // A missing key is a 404 only to a caller allowed s3:ListBucket; without
            // it S3 answers 403, which stays an error: never "no pair waits".
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(unavailable("rescue store", &e)),
        };
        let body = output.body.collect().await.map_err(|e| {
            StoreError::Unavailable(format!("rescue store: reading a rescued pair: {e}"))
        })?;
        let rescue = from_body(&body.into_bytes())?;
        if rescue.key() != *key {
            return Err(StoreError::Corrupt(
                "a stored rescue is not under its own key".to_owned(),
            ));
        }
        Ok(Some(rescue))
    }

    async fn list_rescues(&self, after: Option<&str>) -> Result<RescuePage, StoreError> {
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(PREFIX)
            .max_keys(PAGE_SIZE)
            .set_continuation_token(after.map(str::to_owned))
            .send()
            .await
            .map_err(|e| unavailable("rescue store", &e))?;
        let keys = output
            .contents()
            .iter()
            .filter_map(|object| {
                let key = object.key()?;
                let parsed = parse_object_key(key);
                if parsed.is_none() {
                    tracing::error!(
                        object_key = key,
                        "an object in the rescue store that is not a rescued pair's"
                    );
                }
                parsed
            })
            .collect();
        Ok(RescuePage {
            keys,
            next: output
                .next_continuation_token()
                .filter(|_| output.is_truncated().unwrap_or(false))
                .map(str::to_owned),
        })
    }

    async fn delete_rescue(&self, key: &RescueKey) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(object_key(key))
            .send()
            .await
            .map_err(|e| unavailable("rescue store", &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_round_trip_and_no_id_reads_as_a_path() {
        let acme = TenantId::parse("acme").expect("valid");
        let ids = ["c-1", "..", "tenant:a.b_c"].into_iter().flat_map(|name| {
            [
                ConnectionId::in_default_tenant(name).expect("valid"),
                ConnectionId::parse_in(&acme, name).expect("valid"),
            ]
        });
        for id in ids {
            let key = RescueKey {
                connection_id: id,
                spent_refresh_token: "0123456789abcdef".to_owned(),
                replaced_access_token: "fedcba9876543210".to_owned(),
            };
            let object = object_key(&key);
            assert!(!object.contains(".."), "{object}");
            assert_eq!(object.matches('/').count(), 2, "{object}");
            assert_eq!(parse_object_key(&object), Some(key));
        }
        assert_eq!(parse_object_key("rescued/not base64/a.b"), None);
        assert_eq!(parse_object_key("elsewhere/YQ/a.b"), None);
    }
}
