//! The rails that relay traffic to the upstream.

pub mod headers;
pub mod http;
pub mod hub;
pub mod sse;
pub mod sse_body;
pub mod upstream;
pub mod ws;
pub mod ws_session;
