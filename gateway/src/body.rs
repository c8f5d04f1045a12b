//! The response body type every rail returns, and small constructors.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// Errors a streamed body may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every gateway response.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

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
