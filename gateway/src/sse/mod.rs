//! The event-stream format, as pure code over bytes: an incremental parser exact to the WHATWG
//! rules, a writer whose output parses back to the same events, and the frames the gateway
//! renders (an event for one client's stamp, `resume_cursor`).

pub mod frames;
pub mod parse;
pub mod write;

pub use parse::{Event, ParseError, Parser};
pub use write::write_event;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
