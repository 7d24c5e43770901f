//! Who the client is: its `Authorization` header checked by every `[client_auth.NAME]`
//! before routing (routes may match on tier and claims), then the chosen route's own
//! requirement, and the owner check of sessions bound to their subject.

use http::HeaderValue;

use crate::auth::{AuthError, Identity};
use crate::config::Config;
use crate::error::GatewayError;
use crate::kind::EndpointKind;
use crate::routing::Route;
use crate::session::SessionClaims;

#[derive(Debug, Default)]
pub(super) struct Identities {
    /// Authenticators that accepted the credential, and what they say about it.
    pub accepted: Vec<(String, Identity)>,
    refused: Vec<(String, AuthError)>,
}

/// Checks the credential with every authenticator of the table (a handful at most; a
/// request without one costs nothing).
pub(super) fn identify(
    config: &Config,
    authorization: Option<&HeaderValue>,
    now: u64,
) -> Identities {
    let mut identities = Identities::default();
    for (name, auth) in &config.client_auth {
        match auth.authenticate(authorization, now) {
            Ok(identity) => identities.accepted.push((name.clone(), identity)),
            Err(error) => identities.refused.push((name.clone(), error)),
        }
    }
    identities
}

impl Identities {
    /// Lets the request use `route` for `kind` on `stream`, or says why not (401, 403).
    /// The identity, when the route has an authenticator.
    pub fn admit(
        &self,
        route: &Route,
        kind: EndpointKind,
        stream: &str,
    ) -> Result<Option<&Identity>, GatewayError> {
        let Some(name) = &route.auth else {
            return Ok(None);
        };
        if let Some((_, identity)) = self.accepted.iter().find(|(n, _)| n == name) {
            if !identity.may(kind, stream) {
                return Err(AuthError::Forbidden.into());
            }
            return Ok(Some(identity));
        }
        let error = self
            .refused
            .iter()
            .find(|(n, _)| n == name)
            .map_or(AuthError::Missing, |(_, e)| e.clone());
        Err(error.into())
    }
}

/// For a session bound to its subject: the request must carry a credential of that same
/// subject (checked by the route's authenticator, or any when the route has left the table).
pub(super) fn check_owner(
    config: &Config,
    claims: &SessionClaims,
    authorization: Option<&HeaderValue>,
    now: u64,
) -> Result<(), GatewayError> {
    let Some(owner) = &claims.subject else {
        return Ok(());
    };
    let route_auth = config
        .routes
        .by_id(&claims.route)
        .and_then(|route| route.auth.as_ref());
    let mut last = AuthError::Missing;
    for (name, auth) in &config.client_auth {
        if route_auth.is_some_and(|r| r != name) {
            continue;
        }
        match auth.authenticate(authorization, now) {
            Ok(identity) if identity.subject.as_deref() == Some(owner.as_str()) => return Ok(()),
            Ok(_) => {
                return Err(GatewayError::Forbidden(
                    "this session belongs to another client".into(),
                ))
            }
            Err(error) => last = error,
        }
    }
    Err(last.into())
}
