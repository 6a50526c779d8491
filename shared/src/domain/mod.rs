//! Pure types and rules of the service: no I/O and no AWS types.

mod connection;
mod product;
mod session;

pub use connection::{Connection, ConnectionId, ConnectionIdError, ConnectionStatus, TokenPair};
pub use product::{Product, UnknownProduct};
pub use session::{CONNECT_SESSION_TTL_SECONDS, ConnectSession, SessionId, session_nonce};
