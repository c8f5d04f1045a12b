//! The gateway's own SSE frames and an upstream event rendered for one client's stamp. Pure.

use super::parse::Event;
use super::write::write_event;
use crate::inject::{prepare, Prepared, Stamp, Stamped};
use bytes::Bytes;

/// `event: resume_cursor` (no id line): where a resumed stream continues from, and which source
/// serves it (`journal` or `upstream`).
pub fn resume_frame(cursor: &str, source: &str) -> Bytes {
    let data = serde_json::json!({"cursor": cursor, "source": source}).to_string();
    Bytes::from(format!("event: resume_cursor\ndata: {data}\n\n"))
}

/// Renders one event for one stamp; `None` for a foreign or malformed one.
pub fn render(ev: &Event, st: &Stamp) -> Option<Bytes> {
    render_prepared(ev, ev.data.as_deref().map(prepare).as_ref(), st)
}

/// Renders an event whose data was already parsed (once for every client).
pub fn render_prepared(ev: &Event, prepared: Option<&Prepared<'_>>, st: &Stamp) -> Option<Bytes> {
    let capacity = ev
        .data
        .as_ref()
        .map_or(16, |d| d.len() + st.routing().len() + 64);
    let mut out = Vec::with_capacity(capacity);
    match prepared.map(|p| p.stamp(st)) {
        Some(Stamped::Foreign(_) | Stamped::Malformed) => return None,
        Some(Stamped::Rewritten(s)) => write_event(ev, Some(&s), &mut out),
        Some(Stamped::Unchanged) | None => write_event(ev, None, &mut out),
    }
    Some(Bytes::from(out))
}
