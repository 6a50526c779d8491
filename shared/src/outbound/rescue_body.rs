//! A rescued pair as stored outside the table: JSON, built and read only here (and
//! by the adapters that store it), so that only these modules see its tokens in
//! plain text.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::domain::{ConnectionId, TenantId, TokenPair};
use crate::ports::{RescuedPair, StoreError};
use crate::secret::{AccessToken, ExposeSecret, RefreshToken};

#[derive(Serialize, Deserialize)]
struct Body {
    /// Absent for the default tenant's connections (as before tenants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    connection_id: String,
    lease_id: String,
    access_token: String,
    refresh_token: String,
    access_expires_at: i64,
    spent_refresh_token: String,
    replaced_access_token: String,
    rescued_at: i64,
}

/// `r` as the JSON document that is stored.
///
/// # Errors
/// [`StoreError::Corrupt`] if it cannot be serialised.
pub fn to_body(r: &RescuedPair) -> Result<String, StoreError> {
    serde_json::to_string(&Body {
        tenant: (!r.connection_id.tenant().is_default())
            .then(|| r.connection_id.tenant().as_str().to_owned()),
        connection_id: r.connection_id.name().to_owned(),
        lease_id: r.lease_id.clone(),
        access_token: r.tokens.access_token.expose_secret().to_owned(),
        refresh_token: r.tokens.refresh_token.expose_secret().to_owned(),
        access_expires_at: r.tokens.access_expires_at.0,
        spent_refresh_token: r.spent_refresh_token.clone(),
        replaced_access_token: r.replaced_access_token.clone(),
        rescued_at: r.rescued_at.0,
    })
    .map_err(|e| StoreError::Corrupt(format!("rescued pair not serialisable: {e}")))
}

/// The pair a stored document holds.
///
/// # Errors
/// [`StoreError::Corrupt`] (never quoting the text) if it is not a rescued pair.
pub fn from_body(text: &[u8]) -> Result<RescuedPair, StoreError> {
    // The serde error may quote the body: never pass it on.
    let body: Body = serde_json::from_slice(text)
        .map_err(|_| StoreError::Corrupt("a stored rescue is not a rescued pair".to_owned()))?;
    let tenant = match &body.tenant {
        Some(t) => {
            TenantId::parse(t).map_err(|e| StoreError::Corrupt(format!("stored rescue: {e}")))?
        }
        None => TenantId::default_tenant(),
    };
    Ok(RescuedPair {
        connection_id: ConnectionId::parse_in(&tenant, &body.connection_id)
            .map_err(|e| StoreError::Corrupt(format!("stored rescue: {e}")))?,
        lease_id: body.lease_id,
        tokens: TokenPair {
            access_token: AccessToken::new(body.access_token),
            refresh_token: RefreshToken::new(body.refresh_token),
            access_expires_at: Timestamp(body.access_expires_at),
        },
        spent_refresh_token: body.spent_refresh_token,
        replaced_access_token: body.replaced_access_token,
        rescued_at: Timestamp(body.rescued_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_bad_ones_do_not_echo() {
        let r = RescuedPair {
            connection_id: ConnectionId::in_default_tenant("c-1").expect("valid"),
            lease_id: "l".to_owned(),
            tokens: TokenPair {
                access_token: AccessToken::new("at-secret".to_owned()),
                refresh_token: RefreshToken::new("rt-secret".to_owned()),
                access_expires_at: Timestamp(9),
            },
            spent_refresh_token: "fp1".to_owned(),
            replaced_access_token: "fp2".to_owned(),
            rescued_at: Timestamp(5),
        };
        let body = to_body(&r).expect("serialised");
        assert_eq!(from_body(body.as_bytes()).expect("parsed"), r);
        let err = from_body(br#"{"access_token":"at-secret"}"#).expect_err("incomplete");
        assert!(!err.to_string().contains("at-secret"));
    }
}
