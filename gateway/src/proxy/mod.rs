//! The rails that relay admitted traffic to the upstream, and what they share.
//!
//! - HTTP: [`http`]. SSE: [`sse`] (entry, each client a [`sse_client`]) → [`sse_hub`] (one
//!   stream's clients, registered in [`sse_hubs`]) ← [`sse_upstream`] (reads and reconnects,
//!   over [`sse_wire`]), delivered through [`sse_queue`] (and, on an ephemeral route,
//!   [`sse_overflow`]) to [`sse_body`]; in cluster mode a shared hub is fed by [`sse_cluster`]
//!   (one upstream stream per thread per cluster).
//! - WebSocket: [`ws`] (before the 101) → [`ws_hello`] → [`ws_relay`] ↔ [`ws_upstream`], on the
//!   client connection of [`ws_conn`]; presence through [`ws_presence`].
//! - Shared: [`upstream`] (the URI builder, TCP connect), [`reconnect`] (backoff, deadline,
//!   status classes, cursor and credential limits), [`headers`] (hygiene both ways), [`forwarded`]
//!   (the peer and the forwarding headers).

pub mod forwarded;
pub mod headers;
pub mod http;
pub mod reconnect;
pub mod sse;
pub mod sse_body;
pub mod sse_client;
pub mod sse_cluster;
pub mod sse_hub;
pub mod sse_hubs;
pub mod sse_overflow;
pub mod sse_placement;
pub mod sse_queue;
pub mod sse_screen;
pub mod sse_upstream;
pub mod sse_wire;
pub mod upstream;
pub mod ws;
pub mod ws_conn;
pub mod ws_hello;
pub mod ws_presence;
pub mod ws_relay;
pub mod ws_upstream;
