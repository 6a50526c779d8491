//! An in-process store with the same conditional semantics as the DynamoDB adapter,
//! for `make run` and unit tests. It passes the same contract tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::domain::{ConnectSession, Connection, ConnectionId, SessionId};
use crate::ports::{ConnectionStore, SessionError, SessionStore, StoreError};

/// Connections and sessions in memory, behind one lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    connections: Mutex<HashMap<ConnectionId, Connection>>,
    sessions: Mutex<HashMap<String, ConnectSession>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> StoreError {
    StoreError::Unavailable("memory store lock poisoned".to_owned())
}

#[async_trait]
impl ConnectionStore for MemoryStore {
    async fn get(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        let connections = self.connections.lock().map_err(|_| poisoned())?;
        Ok(connections.get(id).cloned())
    }

    async fn create(&self, connection: &Connection) -> Result<Connection, StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        if let Some(current) = connections.get(&connection.id) {
            return Err(StoreError::Conflict {
                id: connection.id.clone(),
                current: Some(Box::new(current.clone())),
            });
        }
        let stored = Connection {
            version: 1,
            ..connection.clone()
        };
        connections.insert(stored.id.clone(), stored.clone());
        Ok(stored)
    }

    async fn update(&self, connection: &Connection) -> Result<Connection, StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        match connections.get(&connection.id) {
            Some(current) if current.version == connection.version => {
                let stored = Connection {
                    version: connection.version + 1,
                    ..connection.clone()
                };
                connections.insert(stored.id.clone(), stored.clone());
                Ok(stored)
            }
            current => Err(StoreError::Conflict {
                id: connection.id.clone(),
                current: current.cloned().map(Box::new),
            }),
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: &ConnectSession) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().map_err(|_| poisoned())?;
        if sessions.contains_key(session.id.as_str()) {
            return Err(StoreError::Corrupt(
                "connect session id collision".to_owned(),
            ));
        }
        sessions.insert(session.id.as_str().to_owned(), session.clone());
        Ok(())
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<ConnectSession>, StoreError> {
        let sessions = self.sessions.lock().map_err(|_| poisoned())?;
        Ok(sessions.get(id.as_str()).cloned())
    }

    async fn bind_state(
        &self,
        id: &SessionId,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<ConnectSession, SessionError> {
        let mut sessions = self.sessions.lock().map_err(|_| poisoned())?;
        let session = sessions
            .get_mut(id.as_str())
            .filter(|s| s.is_open(now))
            .ok_or(SessionError::Unusable)?;
        session.state_hash = Some(state_hash.to_owned());
        Ok(session.clone())
    }

    async fn complete_session(
        &self,
        id: &SessionId,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<ConnectSession, SessionError> {
        let mut sessions = self.sessions.lock().map_err(|_| poisoned())?;
        let session = sessions
            .get_mut(id.as_str())
            .filter(|s| s.is_open(now) && s.state_hash.as_deref() == Some(state_hash))
            .ok_or(SessionError::Unusable)?;
        session.completed = true;
        Ok(session.clone())
    }
}
