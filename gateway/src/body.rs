//! The response body type every rail returns, and small constructors.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// Errors a streamed body may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every gateway response.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Marks a response whose body is a long-lived event stream, which an HTTP/1.1 connection
/// writes itself once hyper has sent the head ([`crate::stream_out`]).
#[derive(Clone, Copy, Debug)]
pub struct Streams;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}
