//! A minimal WebSocket client for the suites: connect with headers, the hello, and the next
//! message within a deadline.

use crate::client::TIMEOUT;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A client WebSocket.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Connects a WebSocket to `ws://addr{path}` with extra headers. Returns the socket, or the
/// HTTP status and body when the upgrade is refused.
pub async fn ws_connect(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, Bytes)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("ws request");
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            http::HeaderValue::from_str(v).expect("value"),
        );
    }
    match timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .expect("ws connect timeout")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.into_body().map(Bytes::from).unwrap_or_default();
            Err((status, body))
        }
        Err(e) => panic!("ws connect failed: {e}"),
    }
}

/// What a WebSocket delivered next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A close frame: code and reason.
    Close(u16, String),
    /// The connection ended without a close frame.
    Ended,
}

/// The hello context the default chat routes need for `tenant`.
pub fn chat_context(tenant: &str) -> Value {
    serde_json::json!({"tenant_id": tenant, "mode": "lab", "project_id": "p_chat", "app_id": "app-chat"})
}

/// Sends a WebSocket hello with `context`, resuming after `cursor` when given.
pub async fn ws_hello(ws: &mut Ws, context: Value, cursor: Option<&str>) {
    use futures_util::SinkExt;
    let mut hello = serde_json::json!({"type": "hello", "context": context});
    if let Some(c) = cursor {
        hello["last_event_id"] = serde_json::json!(c);
    }
    timeout(
        TIMEOUT,
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            hello.to_string(),
        )),
    )
    .await
    .expect("hello in time")
    .expect("send hello");
}

/// A WebSocket on `path` opened with the bearer `token`, whose hello (the chat context of
/// `tenant`, resuming after `cursor`) is sent.
pub async fn ws_open(
    addr: &str,
    path: &str,
    token: &str,
    tenant: &str,
    cursor: Option<&str>,
) -> Ws {
    let bearer = format!("Bearer {token}");
    let mut ws = ws_connect(addr, path, &[("authorization", bearer.as_str())])
        .await
        .expect("upgrade");
    ws_hello(&mut ws, chat_context(tenant), cursor).await;
    ws
}

/// The next text, binary or close event (pings and pongs are skipped) within [`TIMEOUT`].
pub async fn ws_next(ws: &mut Ws) -> WsEvent {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match timeout(TIMEOUT, ws.next())
            .await
            .expect("no WS message within timeout")
        {
            Some(Ok(Message::Text(t))) => return WsEvent::Text(t.as_str().to_owned()),
            Some(Ok(Message::Binary(b))) => return WsEvent::Binary(b.to_vec()),
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) => WsEvent::Close(u16::from(f.code), f.reason.as_str().to_owned()),
                    None => WsEvent::Close(1005, String::new()),
                }
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return WsEvent::Ended,
        }
    }
}

/// The next text message parsed as JSON (panics on anything else).
pub async fn ws_next_json(ws: &mut Ws) -> Value {
    match ws_next(ws).await {
        WsEvent::Text(t) => {
            serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
        }
        other => panic!("expected a text message, got {other:?}"),
    }
}
