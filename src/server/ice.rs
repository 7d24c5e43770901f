//! The ICE servers a client is given: its backend's `Link`s, whipgate's own
//! `[ice_server.NAME]`s, or both, per the route's `ice_policy`; TURN credentials of servers
//! with a shared secret are minted for this session and subject.

use crate::config::{Config, IceCredential, IcePolicy};
use crate::frontdoor::IceServer;
use crate::routing::Route;

pub(super) fn for_session(
    config: &Config,
    route: &Route,
    from_backend: &[IceServer],
    subject: &str,
    now: u64,
) -> Vec<IceServer> {
    let mut servers = match route.ice_policy {
        IcePolicy::Backend | IcePolicy::Merge => from_backend.to_vec(),
        IcePolicy::Replace => Vec::new(),
    };
    if route.ice_policy == IcePolicy::Backend {
        return servers;
    }
    for name in &route.ice_servers {
        let Some(def) = config.ice_servers.get(name) else {
            continue;
        };
        let (username, credential) = match &def.credential {
            IceCredential::None => (None, None),
            IceCredential::Static { username, password } => {
                (Some(username.clone()), Some(password.expose().to_owned()))
            }
            IceCredential::Minted { secret, lifetime } => {
                let minted = crate::turn::mint(secret.expose().as_bytes(), subject, now, *lifetime);
                (Some(minted.username), Some(minted.password))
            }
        };
        for uri in &def.urls {
            if servers.iter().any(|s| s.uri == *uri) {
                continue;
            }
            servers.push(IceServer {
                uri: uri.clone(),
                username: username.clone(),
                credential_type: credential.as_ref().map(|_| "password".to_owned()),
                credential: credential.clone(),
            });
        }
    }
    servers
}
