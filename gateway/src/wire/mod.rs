//! The client connection's bytes before hyper reads them: strict request framing
//! ([`head`], [`chunked`]) applied by [`guard::Guarded`], so that every head hyper parses is
//! one it cannot read differently from the upstream, and every refused head is answered with
//! the envelope ([`guard::Refusal`]).

pub mod chunked;
pub mod guard;
pub mod head;

pub use guard::{Guarded, Refusal};
