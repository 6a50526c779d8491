//! Import: a connection made from a refresh token another system held, without a
//! new consent.
//!
//! The connection is created with one conditional create, marked with the
//! fingerprint of the token it was imported with, and then refreshed once
//! through the refresh protocol: for CRM, whose refresh tokens roll, that spends
//! the token the previous system held, so from then on only this service holds
//! a working pair (the previous system must stop refreshing *before* it calls
//! import); for Marketing it proves the token works. A token RD refuses leaves
//! nothing behind. Importing the same token again finds the mark and answers
//! without calling RD, unless the first import never got to take a CRM token
//! over (then this one tries again, through the same protocol, so the token is
//! still spent at most once).

use std::sync::Arc;

use crate::clock::{Clock, Timestamp};
use crate::domain::{
    Connection, ConnectionId, ConnectionIdError, ConnectionStatus, Product, Tags, TenantId,
    TokenPair,
};
use crate::ports::{ConnectionStore, StoreError};
use crate::secret::{AccessToken, RefreshToken};
use crate::services::refresh_protocol::{
    RefreshEngine, RefreshFailure, RefreshRequest, RefreshTrigger,
};

/// What stands in for the access token of a connection imported without one:
/// stored already expired, so nothing presents it before the import's refresh
/// replaces it (and RD would refuse it, which leads to a refresh all the same).
const NO_ACCESS_TOKEN: &str = "imported-without-access-token";

/// One connection to import.
#[derive(Debug)]
pub struct ImportRequest {
    /// The tenant the connection belongs to.
    pub tenant: TenantId,
    /// The connection's name, as the caller sent it.
    pub connection_id: String,
    /// The product the token belongs to.
    pub product: Product,
    /// The refresh token the previous system held.
    pub refresh_token: RefreshToken,
    /// The access token the previous system held, and when it expires (used
    /// for Marketing until the first refresh; a CRM pair is refreshed before
    /// anything uses it).
    pub access: Option<(AccessToken, Timestamp)>,
    /// The connection's tags.
    pub tags: Tags,
    /// Milliseconds since the epoch by which the import's refresh must be over
    /// (the invocation's deadline less a margin).
    pub finish_by_ms: Option<i64>,
}

/// How an import ended, when it did not fail.
#[derive(Debug)]
pub enum Imported {
    /// Stored and refreshed: this service alone holds the connection's working
    /// pair (CRM), or the token is proven to work (Marketing).
    Created(Connection),
    /// This token was imported to this connection before; RD was not called
    /// for it again.
    AlreadyPresent(Connection),
    /// Stored, but its first refresh did not happen (RD did not answer, the
    /// deployment's token-call cap, too little time): the refresh schedule
    /// retries it, and so does importing the same token again.
    RefreshPending(Connection),
}

impl Imported {
    /// The connection, however the import ended.
    pub fn connection(&self) -> &Connection {
        match self {
            Self::Created(c) | Self::AlreadyPresent(c) | Self::RefreshPending(c) => c,
        }
    }
}

/// Why nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The connection name is not valid.
    #[error(transparent)]
    InvalidConnectionId(#[from] ConnectionIdError),
    /// A connection of that id exists that was not imported with this token.
    #[error(
        "connection {0} exists and was not imported with this refresh token; delete it first, or reconnect it"
    )]
    ConnectionExists(ConnectionId),
    /// A connection of that id exists for the other product.
    #[error("connection {id} exists for product {existing}")]
    ProductMismatch {
        /// The connection id.
        id: ConnectionId,
        /// Its product.
        existing: Product,
    },
    /// RD refused the refresh token (revoked, spent, or never valid): a person
    /// must connect the account. Nothing was stored.
    #[error(
        "RD Station refused the refresh token: a person must connect the account; nothing was stored"
    )]
    TokenRefused,
    /// RD refused the deployment's client credentials; nothing was stored and
    /// the token was not spent.
    #[error("RD Station refused the deployment's client credentials; nothing was stored")]
    DeploymentCredentialsRejected,
    /// The connection was deleted while it was being imported.
    #[error("the connection was deleted while it was being imported")]
    DeletedMeanwhile,
    /// The store failed; a connection may have been stored with the token not
    /// yet refreshed: importing the same token again finishes the import.
    #[error("the import could not be completed: {0}")]
    Store(#[from] StoreError),
    /// The refresh could not run (the store or the credentials failed under
    /// it); as [`ImportError::Store`].
    #[error("the import's refresh could not run: {0}")]
    RefreshUnavailable(#[source] RefreshFailure),
}

/// Imports connections. Cheap to clone.
#[derive(Clone)]
pub struct Importer {
    /// Where connections are stored.
    pub connections: Arc<dyn ConnectionStore>,
    /// The refresh protocol the import's one refresh goes through.
    pub engine: RefreshEngine,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Importer {
    /// Imports one connection: see the module docs.
    ///
    /// # Errors
    /// [`ImportError`] when no connection came of it (bar
    /// [`ImportError::Store`] and [`ImportError::RefreshUnavailable`], which
    /// may leave one to finish).
    pub async fn import(&self, request: ImportRequest) -> Result<Imported, ImportError> {
        let id = ConnectionId::parse_in(&request.tenant, &request.connection_id)?;
        let fingerprint = request.refresh_token.fingerprint();
        let now = self.clock.now();
        let (access_token, access_expires_at) = match (request.product, request.access) {
            // A rolling CRM token is taken over before anything uses the pair.
            (Product::Crm, _) | (Product::Marketing, None) => {
                (AccessToken::new(NO_ACCESS_TOKEN), now)
            }
            (Product::Marketing, Some((token, expires_at))) => (token, expires_at),
        };
        let fresh = Connection {
            tags: request.tags,
            imported_from: Some(fingerprint.clone()),
            ..Connection::connected(
                id.clone(),
                request.product,
                TokenPair {
                    access_token,
                    refresh_token: request.refresh_token,
                    // Not known for CRM: the refresh below resets it.
                    access_expires_at,
                },
                now,
            )
        };
        let created = match self.connections.create(&fresh).await {
            Ok(created) => created,
            Err(StoreError::Conflict {
                current: Some(existing),
                ..
            }) => {
                return self
                    .import_again(
                        *existing,
                        request.product,
                        &fingerprint,
                        request.finish_by_ms,
                    )
                    .await;
            }
            Err(StoreError::Conflict { current: None, .. }) => {
                // DynamoDB did not send the item back: read it.
                let existing = self
                    .connections
                    .get(&id)
                    .await?
                    .ok_or(ImportError::DeletedMeanwhile)?;
                return self
                    .import_again(
                        existing,
                        request.product,
                        &fingerprint,
                        request.finish_by_ms,
                    )
                    .await;
            }
            Err(e) => return Err(e.into()),
        };
        self.first_refresh(created, request.finish_by_ms)
            .await
            .map(|outcome| match outcome {
                FirstRefresh::Done(c) => Imported::Created(c),
                FirstRefresh::Pending(c) => Imported::RefreshPending(c),
            })
    }

    /// A connection of the id exists: the same import again, or a refusal.
    async fn import_again(
        &self,
        existing: Connection,
        product: Product,
        fingerprint: &str,
        finish_by_ms: Option<i64>,
    ) -> Result<Imported, ImportError> {
        if existing.product != product {
            return Err(ImportError::ProductMismatch {
                id: existing.id,
                existing: existing.product,
            });
        }
        if existing.imported_from.as_deref() != Some(fingerprint) {
            return Err(ImportError::ConnectionExists(existing.id));
        }
        let not_taken_over = existing.product == Product::Crm
            && existing.status == ConnectionStatus::Active
            && existing.tokens.refresh_token.fingerprint() == fingerprint;
        if !not_taken_over {
            return Ok(Imported::AlreadyPresent(existing));
        }
        // The first import stored the token but did not spend it (or is
        // spending it now): the protocol lets one of us spend it, once.
        self.first_refresh(existing, finish_by_ms)
            .await
            .map(|outcome| match outcome {
                FirstRefresh::Done(c) => Imported::AlreadyPresent(c),
                FirstRefresh::Pending(c) => Imported::RefreshPending(c),
            })
    }

    /// The import's one refresh of `stored`, through the protocol. Presenting
    /// the access token stored with it means a pair another import (or the
    /// schedule) stored meanwhile is taken as it is: RD is not called again.
    async fn first_refresh(
        &self,
        stored: Connection,
        finish_by_ms: Option<i64>,
    ) -> Result<FirstRefresh, ImportError> {
        let request = RefreshRequest {
            trigger: RefreshTrigger::Rejected(stored.tokens.access_token.clone()),
            finish_by_ms,
        };
        match self.engine.refresh(&stored.id, request).await {
            Ok(refreshed) => Ok(FirstRefresh::Done(refreshed.connection().clone())),
            Err(RefreshFailure::NeedsReauth(dead)) => {
                // Nothing worth keeping: the connection never held more than the
                // refused token. Only the state the refusal left is deleted.
                self.connections
                    .delete_at_version(&dead.id, dead.version)
                    .await?;
                Err(ImportError::TokenRefused)
            }
            Err(RefreshFailure::DeploymentCredentialsRejected) => {
                // RD was never asked about the token: it is unspent, and the
                // import is undone so that it can simply be sent again.
                if let Some(current) = self.connections.get(&stored.id).await? {
                    let untouched = current.tokens.refresh_token == stored.tokens.refresh_token
                        && current.status == ConnectionStatus::Active;
                    if untouched {
                        self.connections
                            .delete_at_version(&current.id, current.version)
                            .await?;
                    }
                }
                Err(ImportError::DeploymentCredentialsRejected)
            }
            Err(RefreshFailure::NotFound) => Err(ImportError::DeletedMeanwhile),
            Err(RefreshFailure::PossiblyLost(c)) => Ok(FirstRefresh::Pending(*c)),
            Err(
                RefreshFailure::BackingOff { .. }
                | RefreshFailure::NotProcessed { .. }
                | RefreshFailure::Ambiguous { .. }
                | RefreshFailure::OutOfTime
                | RefreshFailure::Capped { .. }
                | RefreshFailure::HolderFailed,
            ) => match self.connections.get(&stored.id).await? {
                Some(current) => Ok(FirstRefresh::Pending(current)),
                None => Err(ImportError::DeletedMeanwhile),
            },
            Err(e @ (RefreshFailure::Credentials(_) | RefreshFailure::Store(_))) => {
                Err(ImportError::RefreshUnavailable(e))
            }
        }
    }
}

/// How the import's one refresh ended, when it left a connection.
enum FirstRefresh {
    Done(Connection),
    Pending(Connection),
}
