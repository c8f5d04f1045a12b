//! The event-stream format, as pure code over bytes: an incremental parser exact to the WHATWG
//! rules and a writer whose output parses back to the same events.

pub mod parse;
pub mod write;

pub use parse::{Event, ParseError, Parser};
pub use write::write_event;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
