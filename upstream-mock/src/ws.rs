//! `GET /ws/chat/{id}`: hello (or `?last_event_id=`), replay, live events, client messages.
//!
//! Without `?last_event_id=` or `?hello=skip` the mock waits up to 5 s for the hello, so a
//! cursor sent in the hello is honoured before anything streams.

use crate::api::{error, query_param};
use crate::body::{full, Body};
use crate::levers::ActiveStream;
use crate::sse::{cursor, Cursor};
use crate::App;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_MESSAGE: usize = 1024 * 1024;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answers the upgrade and spawns the session.
pub fn open(app: Arc<App>, id: String, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "mock.not_websocket",
            "Sec-WebSocket-Key is required",
        );
    };
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return error(
            StatusCode::BAD_REQUEST,
            "mock.not_websocket",
            "Upgrade: websocket is required",
        );
    }
    if app.store.thread(&id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "mock.thread_not_found",
            "no such thread",
        );
    }
    let query_cursor = query_param(req.uri().query(), "last_event_id");
    let skip_hello = query_cursor.is_some()
        || query_param(req.uri().query(), "hello").as_deref() == Some("skip");
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_MESSAGE);
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        app.levers.ws_opened.fetch_add(1, Ordering::Relaxed);
        session(&app, &id, ws, query_cursor, skip_hello).await;
    });
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

async fn close(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
}

async fn session(app: &App, id: &str, mut ws: Ws, query_cursor: Option<String>, skip_hello: bool) {
    let mut raw_cursor = query_cursor;
    if !skip_hello {
        match tokio::time::timeout(HELLO_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let hello: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if hello.get("type").and_then(Value::as_str) != Some("hello") {
                    close(&mut ws, 4003, "hello expected").await;
                    return;
                }
                raw_cursor = hello
                    .get("last_event_id")
                    .and_then(Value::as_str)
                    .map(String::from);
            }
            _ => {
                close(&mut ws, 4003, "hello expected").await;
                return;
            }
        }
    }
    let mut last = match cursor(&app.store, id, raw_cursor.as_deref()) {
        Cursor::After(seq) => seq,
        Cursor::Invalid => {
            let env = json!({"error": {"code": "chat.cursor_invalid", "message": "unknown cursor", "http_status": 410, "retryable": false}});
            let _ = ws.send(Message::text(env.to_string())).await;
            close(&mut ws, 4003, "chat.cursor_invalid").await;
            return;
        }
    };
    let limit = app.levers.faults().drop_streams_after_events;
    let Some(mut changes) = app.store.subscribe(id) else {
        return;
    };
    // Counted once subscribed, so "active" means "will see the next publish".
    let _active = ActiveStream::new(&app.levers.streams_active);
    let mut shutdown = app.shutdown.clone();
    let mut sent = 0u64;
    loop {
        changes.borrow_and_update();
        for m in app.store.after(id, last, 256).unwrap_or_default() {
            if limit.is_some_and(|l| sent >= l) {
                break;
            }
            let Ok(text) = std::str::from_utf8(&m.ws) else {
                continue;
            };
            if ws.feed(Message::text(text)).await.is_err() {
                return;
            }
            last = m.seq;
            sent += 1;
        }
        if ws.flush().await.is_err() {
            return;
        }
        if limit.is_some_and(|l| sent >= l) {
            return; // fault: drop the connection without a close frame
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => { close(&mut ws, 1001, "shutting down").await; return }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(t))) => on_client_message(app, id, t.as_str()).await,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

async fn on_client_message(app: &App, id: &str, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if v.get("type").and_then(Value::as_str) != Some("message") {
        return;
    }
    let Some(body) = v.get("text").and_then(Value::as_str) else {
        return;
    };
    let routing = v.get("routing").cloned();
    let _ = app.store.append(id, body.to_owned(), routing).await;
}
