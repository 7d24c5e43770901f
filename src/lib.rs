//! whipgate: a WHIP/WHEP gateway.
//!
//! Pure core: [`sdp`], [`routing`], [`session`], [`frontdoor`], [`auth`], [`turn`],
//! [`ratelimit`]. I/O shell: [`config`] (files), [`backend`] (HTTP client), [`server`]
//! (sockets).

pub mod auth;
pub mod backend;
pub mod config;
pub mod error;
pub mod frontdoor;
pub mod kind;
pub mod metrics;
pub mod ratelimit;
pub mod routing;
pub mod sdp;
pub mod server;
pub mod session;
pub mod turn;
