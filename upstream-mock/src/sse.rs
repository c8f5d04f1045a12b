//! `GET /sse/chat/{id}`: replay after `Last-Event-ID`, then live events.

use crate::api::{error, query_param};
use crate::body::{channel, Body};
use crate::levers::ActiveStream;
use crate::store::Store;
use crate::App;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Request, Response, StatusCode};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Events fetched from the store per wake-up (bounds one write).
const BATCH: usize = 256;
/// Comment sent when nothing else was, so idle intermediaries keep the connection.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Where a stream starts: after this seq.
pub enum Cursor {
    /// Replay after this seq.
    After(u64),
    /// The cursor names a seq this thread never issued, or is not a number.
    Invalid,
}

/// Parses a client cursor against the thread's history. Empty means "from now".
pub fn cursor(store: &Store, id: &str, raw: Option<&str>) -> Cursor {
    cursor_at(raw, store.last_seq(id).unwrap_or(0))
}

/// Parses a client cursor against a history whose last seq is `last`.
pub fn cursor_at(raw: Option<&str>, last: u64) -> Cursor {
    match raw.map(str::trim) {
        None | Some("") => Cursor::After(last),
        Some(s) => match s.parse::<u64>() {
            Ok(seq) if seq <= last => Cursor::After(seq),
            _ => Cursor::Invalid,
        },
    }
}

/// Opens an SSE stream.
pub fn open<B>(app: Arc<App>, id: &str, req: &Request<B>) -> Response<Body> {
    if app.store.thread(id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "mock.thread_not_found",
            "no such thread",
        );
    }
    let raw = raw_cursor(req);
    let start = match cursor(&app.store, id, raw.as_deref()) {
        Cursor::After(seq) => seq,
        Cursor::Invalid => return error(StatusCode::GONE, "chat.cursor_invalid", "unknown cursor"),
    };
    app.levers.sse_opened.fetch_add(1, Ordering::Relaxed);
    let (tx, body) = channel(16);
    let limit = app.levers.faults().drop_streams_after_events;
    let thread = id.to_owned();
    tokio::spawn(async move {
        pump(&app, &thread, start, limit, tx).await;
    });
    stream_response(body)
}

/// The client's cursor: `Last-Event-ID`, else `?last_event_id=`.
pub fn raw_cursor<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or_else(|| query_param(req.uri().query(), "last_event_id"))
}

/// A `200 text/event-stream` answer streaming `body`.
pub fn stream_response(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn pump(
    app: &App,
    id: &str,
    mut last: u64,
    limit: Option<u64>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let Some(mut changes) = app.store.subscribe(id) else {
        return;
    };
    // Counted once subscribed, so "active" means "will see the next publish".
    let _active = ActiveStream::new(&app.levers.streams_active);
    let mut shutdown = app.shutdown.clone();
    let mut sent = 0u64;
    loop {
        changes.borrow_and_update();
        let batch = app.store.after(id, last, BATCH).unwrap_or_default();
        if !batch.is_empty() {
            let mut chunk = BytesMut::new();
            for m in &batch {
                if limit.is_some_and(|l| sent >= l) {
                    break;
                }
                chunk.extend_from_slice(&m.sse);
                last = m.seq;
                sent += 1;
            }
            if !chunk.is_empty() && tx.send(chunk.freeze()).await.is_err() {
                return;
            }
            if limit.is_some_and(|l| sent >= l) {
                return; // fault: cut the stream
            }
            continue;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
            // The client left: end now, not at the next keep-alive.
            _ = tx.closed() => return,
            _ = tokio::time::sleep(KEEPALIVE) => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
        }
    }
}
