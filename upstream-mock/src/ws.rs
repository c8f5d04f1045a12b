//! `GET /ws/chat/{id}`: hello (or `?last_event_id=`), replay, live events, client messages.
//! `GET /ws/echo`: every message back unchanged.
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
/// The echo route carries the conformance suite's largest messages (16 MiB).
const ECHO_MAX_MESSAGE: usize = 20 * 1024 * 1024;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Checks the upgrade shape; `Ok` holds the pending upgrade and the 101 to answer with.
fn accept(
    req: &mut Request<hyper::body::Incoming>,
) -> Result<(hyper::upgrade::OnUpgrade, Response<Body>), Box<Response<Body>>> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "mock.not_websocket",
            "Sec-WebSocket-Key is required",
        )));
    };
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "mock.not_websocket",
            "Upgrade: websocket is required",
        )));
    }
    let on_upgrade = hyper::upgrade::on(req);
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert("sec-websocket-accept", v);
    }
    Ok((on_upgrade, resp))
}

async fn server_ws(on_upgrade: hyper::upgrade::OnUpgrade, max_message: usize) -> Option<Ws> {
    let upgraded = on_upgrade.await.ok()?;
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(max_message);
    config.max_frame_size = Some(max_message);
    Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await)
}

/// Answers the upgrade and spawns the session.
pub fn open(app: Arc<App>, id: String, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
    let (on_upgrade, resp) = match accept(&mut req) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
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
    tokio::spawn(async move {
        let Some(ws) = server_ws(on_upgrade, MAX_MESSAGE).await else {
            return;
        };
        app.levers.ws_opened.fetch_add(1, Ordering::Relaxed);
        session(&app, &id, ws, query_cursor, skip_hello).await;
    });
    resp
}

/// `GET /ws/echo`: sends every text and binary message back unchanged (conformance runs).
pub fn open_echo(mut req: Request<hyper::body::Incoming>) -> Response<Body> {
    let (on_upgrade, resp) = match accept(&mut req) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    tokio::spawn(async move {
        let Some(mut ws) = server_ws(on_upgrade, ECHO_MAX_MESSAGE).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(_) | Message::Binary(_) => msg,
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                return;
            }
        }
        // Sends the reply to the client's close frame, queued by the read.
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.flush()).await;
    });
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
