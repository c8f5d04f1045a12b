//! railgate: a reverse-proxy sidecar that makes a chat backend's realtime rails safe.
//!
//! Decisions (tokens, tickets, context, ownership, error codes) live in `railgate-policy`; this
//! crate does the IO around them.
//!
//! - [`env`]: the process environment behind a trait.
//! - [`mint`]: development helpers for `railgate token` and `railgate ticket`.

pub mod env;
pub mod mint;
