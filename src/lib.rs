//! whipgate: a WHIP/WHEP gateway.
//!
//! Pure core: [`sdp`], [`routing`], [`session`], [`frontdoor`], [`auth`], [`turn`],
//! [`ratelimit`]. I/O shell: [`config`] (files), [`backend`] (HTTP client), [`server`]
//! (sockets), [`sfu`] (the built-in SFU's UDP socket; its engine is sans-IO).

pub mod auth;
pub mod backend;
pub mod clock;
pub mod config;
pub mod error;
pub mod frontdoor;
pub mod kind;
pub mod metrics;
pub mod ratelimit;
pub mod routing;
pub mod sdp;
pub mod secret;
pub mod server;
pub mod session;
pub mod sfu;
pub mod stream;
pub mod turn;
