//! Incremental `text/event-stream` parser (WHATWG HTML §9.2.6, "Interpreting an event stream").
//!
//! Hand-written because the relay needs what no maintained crate gives: every field kept as sent
//! (`id`, `event`, `retry`, and blocks that carry no data but move the last event id), exact
//! handling of a CR and LF split across chunks, and a hard bound on buffered bytes.

use bytes::BytesMut;
use std::sync::Arc;

/// One block of fields up to a blank line, as the relay needs it. The `event` and id texts are
/// shared, not copied: a stream's blocks mostly repeat one event type, and an id is the stream's
/// last event id too (in the parser, the hub and the journal).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `event:` value, when the block set one.
    pub event: Option<Arc<str>>,
    /// The `data:` lines joined by `\n`; `None` when the block had no data line (the browser
    /// dispatches nothing for it, but its `id` still moves the last event id).
    pub data: Option<String>,
    /// `id:` value when the block set one (`Some("")` resets the last event id).
    pub id: Option<Arc<str>>,
    /// `retry:` value when the block set a valid one.
    pub retry: Option<u64>,
    /// The stream's last event id after this block (what a browser would send on reconnect).
    pub last_event_id: Arc<str>,
}

impl Event {
    /// Whether a browser would dispatch this block as an event.
    pub fn dispatches(&self) -> bool {
        self.data.is_some()
    }

    /// The bytes of its texts (data, id, event type), for the bounds that count events' sizes.
    pub fn text_len(&self) -> usize {
        self.data.as_ref().map_or(0, String::len)
            + self.id.as_ref().map_or(0, |t| t.len())
            + self.event.as_ref().map_or(0, |t| t.len())
    }
}

/// The stream broke a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A line or an event grew past the limit.
    TooLarge,
}

/// Incremental parser state.
#[derive(Debug)]
pub struct Parser {
    line: BytesMut,
    after_cr: bool,
    bom_state: BomState,
    event: Option<Arc<str>>,
    /// The last `event:` value seen, handed again when the next block repeats it.
    last_event: Option<Arc<str>>,
    data: String,
    has_data: bool,
    id: Option<Arc<str>>,
    retry: Option<u64>,
    any_field: bool,
    last_event_id: Arc<str>,
    max_event_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BomState {
    /// Still deciding (holding up to two bytes of a possible BOM).
    Pending,
    Done,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Parser {
    /// A parser refusing events (or lines) over `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Parser {
        Parser {
            line: BytesMut::new(),
            after_cr: false,
            bom_state: BomState::Pending,
            event: None,
            last_event: None,
            data: String::new(),
            has_data: false,
            id: None,
            retry: None,
            any_field: false,
            last_event_id: Arc::from(""),
            max_event_bytes,
        }
    }

    /// Starts a new stream (after a reconnect) keeping the last event id.
    pub fn reset_stream(&mut self) {
        let keep = std::mem::take(&mut self.last_event_id);
        *self = Parser::new(self.max_event_bytes);
        self.last_event_id = keep;
    }

    /// The last event id seen so far.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Feeds a chunk; complete blocks are pushed to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Event>) -> Result<(), ParseError> {
        if self.bom_state == BomState::Pending {
            let mut probe = self.line.to_vec();
            probe.extend_from_slice(&chunk[..chunk.len().min(3)]);
            if probe.len() < 3 && BOM.starts_with(&probe) {
                self.line.extend_from_slice(chunk);
                return Ok(());
            }
            let held = self.line.len();
            self.line.clear();
            self.bom_state = BomState::Done;
            if probe.starts_with(BOM) {
                chunk = &chunk[3 - held..];
            } else if held > 0 {
                let prefix = probe[..held].to_vec();
                self.feed_bytes(&prefix, out)?;
            }
        }
        self.feed_bytes(chunk, out)
    }

    fn feed_bytes(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), ParseError> {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest.first() == Some(&b'\n') {
                rest = &rest[1..];
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', rest) {
            let ended_by_cr = rest[pos] == b'\r';
            if self.line.is_empty() {
                // The whole line is in this chunk: read in place, not copied.
                self.process_line(&rest[..pos], out)?;
            } else {
                self.line.extend_from_slice(&rest[..pos]);
                let line = self.line.split();
                self.process_line(&line, out)?;
            }
            rest = &rest[pos + 1..];
            if ended_by_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() + self.data.len() > self.max_event_bytes {
            return Err(ParseError::TooLarge);
        }
        Ok(())
    }

    fn process_line(&mut self, raw: &[u8], out: &mut Vec<Event>) -> Result<(), ParseError> {
        if raw.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if raw[0] == b':' {
            return Ok(());
        }
        // Split on the first colon by bytes (an ASCII colon never falls inside a UTF-8
        // sequence); only a known field's value is read as text.
        let (name, value) = match memchr::memchr(b':', raw) {
            Some(i) => {
                let v = &raw[i + 1..];
                (&raw[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (raw, &b""[..]),
        };
        match name {
            b"event" => {
                let value = text(value);
                let name = match &self.last_event {
                    Some(last) if **last == *value => last.clone(),
                    _ => Arc::from(value),
                };
                self.last_event = Some(name.clone());
                self.event = Some(name);
                self.any_field = true;
            }
            b"data" => {
                let value = text(value);
                self.data.reserve(value.len() + 1);
                self.data.push_str(&value);
                self.data.push('\n');
                self.has_data = true;
                self.any_field = true;
                if self.data.len() > self.max_event_bytes {
                    return Err(ParseError::TooLarge);
                }
            }
            b"id" if memchr::memchr(0, value).is_none() => {
                let id: Arc<str> = Arc::from(text(value));
                self.last_event_id = id.clone();
                self.id = Some(id);
                self.any_field = true;
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Ok(ms) = text(value).parse() {
                    self.retry = Some(ms);
                    self.any_field = true;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        if !self.any_field {
            return;
        }
        let data = if self.has_data {
            let mut d = std::mem::take(&mut self.data);
            d.pop();
            Some(d)
        } else {
            None
        };
        out.push(Event {
            event: self.event.take(),
            data,
            id: self.id.take(),
            retry: self.retry.take(),
            last_event_id: self.last_event_id.clone(),
        });
        self.data.clear();
        self.has_data = false;
        self.any_field = false;
    }
}

/// A field value as text: as it is when it is valid UTF-8 (the usual case, checked by the fast
/// validator), with U+FFFD for invalid sequences otherwise.
fn text(value: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(value) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(value),
    }
}
