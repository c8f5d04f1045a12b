//! Serialising events. The output always uses LF line ends and parses back to the same event.

use super::parse::Event;

/// Appends `event` in wire form to `out`. `data` overrides the event's own data (used after
/// stamping). A block with nothing to say writes nothing.
pub fn write_event(event: &Event, data: Option<&str>, out: &mut Vec<u8>) {
    let data = data.or(event.data.as_deref());
    if event.event.is_none() && data.is_none() && event.id.is_none() && event.retry.is_none() {
        return;
    }
    write_fields(event, out);
    if let Some(d) = data {
        for line in d.split('\n') {
            field(out, "data", line);
        }
    }
    out.push(b'\n');
}

/// Appends the `event`, `id` and `retry` lines of `event`.
pub fn write_fields(event: &Event, out: &mut Vec<u8>) {
    if let Some(name) = &event.event {
        field(out, "event", name);
    }
    if let Some(id) = &event.id {
        field(out, "id", id);
    }
    if let Some(ms) = event.retry {
        field(out, "retry", &ms.to_string());
    }
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // Values come from parsed lines or from JSON serialisation, so they hold no CR or LF; strip
    // any anyway so nothing can ever start a new field.
    if value.contains(['\r', '\n']) {
        out.extend(value.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
    } else {
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'\n');
}
