//! An operator's list of every tenant's connections: each tenant's pages in
//! turn, by tenant name, each a Query on that tenant's own index partition.

use crate::domain::TenantId;
use crate::ports::{ConnectionStore, ListPage, ListQuery, StoreError};

/// One page over `tenants` (sorted, without repeats). `query.cursor` is one
/// this function handed out (`<tenant>:<that tenant's cursor>`); a page holds
/// one tenant's connections, possibly none, and a cursor while any tenant has
/// more.
///
/// # Errors
/// [`StoreError::InvalidCursor`] for a cursor it did not hand out (or naming a
/// tenant no longer listed), or the store's failure.
pub async fn list_across(
    store: &dyn ConnectionStore,
    tenants: &[TenantId],
    query: &ListQuery,
) -> Result<ListPage, StoreError> {
    let (position, inner) = match query.cursor.as_deref() {
        None => (0, None),
        Some(cursor) => {
            let (tenant, inner) = cursor.split_once(':').ok_or(StoreError::InvalidCursor)?;
            let position = tenants
                .iter()
                .position(|t| t.as_str() == tenant)
                .ok_or(StoreError::InvalidCursor)?;
            (position, Some(inner).filter(|i| !i.is_empty()))
        }
    };
    let Some(tenant) = tenants.get(position) else {
        return Ok(ListPage {
            connections: Vec::new(),
            next_cursor: None,
        });
    };
    let page = store
        .list(&ListQuery {
            tenant: tenant.clone(),
            cursor: inner.map(str::to_owned),
            ..query.clone()
        })
        .await?;
    let next_cursor = match (page.next_cursor, tenants.get(position + 1)) {
        (Some(inner), _) => Some(format!("{tenant}:{inner}")),
        (None, Some(next)) => Some(format!("{next}:")),
        (None, None) => None,
    };
    Ok(ListPage {
        connections: page.connections,
        next_cursor,
    })
}
