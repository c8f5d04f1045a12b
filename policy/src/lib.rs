//! Pure decision logic of railgate: who a request is, what context it carries, and whether it may
//! touch a thread. No IO, no clock, no async runtime: keys, secrets and `now` are parameters, so
//! every decision is testable in isolation.
//!
//! - [`error`]: every error code and the envelope all transports render.
//! - [`keys`] and [`token`]: JWT verification with algorithm-pinned keys.
//! - [`ticket`]: single-use ticket mint and verify (single use itself is the caller's state).
//! - [`field`] and [`context`]: the request context from headers, token, ticket and WS hello.
//! - [`thread`]: the ownership decision.
//!
//! Reading files, fetching JWKS, caching the registry and remembering used tickets are left to
//! the gateway.

pub mod context;
pub mod error;
pub mod field;
pub mod keys;
mod strict_json;
pub mod thread;
pub mod ticket;
pub mod token;

pub use context::{build as build_context, ContextPolicy, Hello, RequestContext, Sources};
pub use error::{Denial, ErrorCode, ErrorEnvelope};
pub use field::Field;
pub use strict_json::{parse_object as parse_strict_object, StrictJsonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Strict base64url (no padding, no whitespace, canonical trailing bits).
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// base64url without padding.
pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
