//! Session tokens: everything needed to reach a backend session, sealed into the opaque
//! `/session/{token}` path segment, so any replica holding the keys can serve PATCH and DELETE.
//!
//! Pure: the caller passes `now` and the nonce; nothing here reads a clock or a socket.

mod registry;
mod token;

pub use registry::{LiveSession, Reservation, SessionRegistry, Unaccounted};
pub use token::{KeyError, Keyring, SessionClaims, SessionState, TokenError, MIN_SECRET_LEN};
