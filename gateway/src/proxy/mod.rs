//! The rails that relay traffic to the upstream.

pub mod headers;
pub mod http;
pub mod upstream;
