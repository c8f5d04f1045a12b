//! Header names read or written on every request, made at compile time: a name given as text
//! is parsed (and, when not a standard one, copied) on every lookup or insert.

use http::HeaderName;

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
