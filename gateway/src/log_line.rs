//! The JSON log line: the same bytes as `tracing_subscriber`'s JSON format (flattened fields, no
//! current span), written by `serde_json` into a buffer of the thread's own and handed to the
//! writer once.
//!
//! The stock format serializes through an adaptor that turns each of `serde_json`'s small writes
//! (a key, a quote, a comma) into a checked `str` push: with an access line per request, that
//! was an eighth of a plain proxied request's CPU. Events the fast path does not cover — one
//! inside a span (a dependency's, at `debug`), one bridged from the `log` crate — go to the
//! stock format, which writes them as before.

use serde::ser::{SerializeMap, Serializer as _};
use std::cell::RefCell;
use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format of every log line.
pub struct Lines {
    stock: Format<Json, SystemTime>,
}

impl Lines {
    /// The format `init_logging` installs.
    pub fn new() -> Lines {
        Lines {
            stock: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false),
        }
    }
}

impl Default for Lines {
    fn default() -> Lines {
        Lines::new()
    }
}

thread_local! {
    /// The line being written and the timestamp's text, kept between lines (the line's room
    /// up to [`KEEP`] bytes).
    static LINE: RefCell<(Vec<u8>, String)> = const { RefCell::new((Vec::new(), String::new())) };
}

/// Most room a thread's line buffer keeps between lines (one huge line does not stay resident).
const KEEP: usize = 16 * 1024;

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let in_span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current())
            .is_some();
        let from_log = event.metadata().fields().field("log.target").is_some();
        if in_span || from_log {
            return self.stock.format_event(ctx, writer, event);
        }
        LINE.with(|cell| {
            let Ok(mut bufs) = cell.try_borrow_mut() else {
                // An event logged while this thread writes one (a `Debug` impl that logs).
                return self.stock.format_event(ctx, writer.by_ref(), event);
            };
            let (line, time) = &mut *bufs;
            line.clear();
            time.clear();
            SystemTime.format_time(&mut Writer::new(time))?;
            let written = write_json(line, time, event);
            let sent = match (written, std::str::from_utf8(line)) {
                (Ok(()), Ok(text)) => writer.write_str(text),
                _ => Err(fmt::Error),
            };
            if line.capacity() > KEEP {
                *line = Vec::new();
            }
            sent?;
            writeln!(writer)
        })
    }
}

/// The event as one JSON object: timestamp, level, its fields in order, target.
fn write_json(line: &mut Vec<u8>, time: &str, event: &Event<'_>) -> Result<(), serde_json::Error> {
    let meta = event.metadata();
    let mut ser = serde_json::Serializer::new(line);
    let mut map = ser.serialize_map(None)?;
    map.serialize_entry("timestamp", time)?;
    map.serialize_entry("level", meta.level().as_str())?;
    let mut fields = tracing_serde::SerdeMapVisitor::new(map);
    event.record(&mut fields);
    let mut map = fields.take_serializer()?;
    map.serialize_entry("target", meta.target())?;
    map.end()
}

#[cfg(test)]
#[path = "log_line_tests.rs"]
mod tests;
