//! The WebSocket rail's upstream connection: where it is, the handshake, and the hello the
//! gateway sends on the client's behalf (`hello = "forward"`) or the cursor it passes in the
//! query (`hello = "consume"`).

use crate::app::Gateway;
use crate::config::route::Captures;
use crate::config::{HelloMode, Route};
use crate::inject::verified_context;
use crate::outbound::{self, UpstreamIo, UpstreamTls, Writes};
use crate::proxy::forwarded::Forwarding;
use crate::proxy::headers;
use crate::proxy::reconnect::{classify, Refusal};
use crate::proxy::upstream::{self, Scheme};
use crate::proxy::ws_conn::{ws_config, Side};
use futures_util::SinkExt;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Uri};
use railgate_policy::{Denial, ErrorCode, RequestContext};
use serde_json::Value;
use std::collections::VecDeque;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The upstream's WebSocket.
pub type UpstreamWs = WebSocketStream<UpstreamIo>;

/// Client headers that belong to the client's own upgrade, never forwarded.
const UPGRADE_HEADERS: &[&str] = &[
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "host",
    "origin",
    "cookie",
];

/// Where and how a session reaches its upstream.
pub struct Target {
    uri: Uri,
    /// The request's headers, kept for reconnects as a list of exactly their number (a map
    /// keeps room to grow: ~2 KiB per session instead of well under 1).
    headers: Box<[(HeaderName, HeaderValue)]>,
    hello: HelloMode,
    tls: UpstreamTls,
}

impl Target {
    /// The upstream of a session on `route`: the URI from the shared builder (WebSocket scheme,
    /// no client query), and the client's headers with hygiene and the verified context.
    pub fn new(
        route: &Route,
        caps: &Captures,
        parts: &Parts,
        ctx: &RequestContext,
        fwd: &Forwarding,
        tls: UpstreamTls,
    ) -> Result<Target, ErrorCode> {
        let uri = upstream::uri(route, caps, parts.uri.path(), None, &[], Scheme::WebSocket)
            .map_err(|d| d.code)?;
        let mut headers = headers::detached(&parts.headers);
        headers::to_upstream(&mut headers, ctx, fwd);
        for h in UPGRADE_HEADERS {
            headers.remove(*h);
        }
        Ok(Target {
            uri,
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            hello: route.hello,
            tls,
        })
    }

    /// Opens the upstream WebSocket and greets it, resuming after `last_id`.
    pub async fn connect(
        &self,
        gw: &Gateway,
        ctx: &RequestContext,
        last_id: Option<&str>,
    ) -> Result<UpstreamWs, Refusal> {
        let gone = Refusal::Gone(ErrorCode::UpstreamUnavailable);
        let mut uri = self.uri.to_string();
        if self.hello == HelloMode::Consume {
            let q = form_urlencoded::Serializer::new(String::new())
                .append_pair("last_event_id", last_id.unwrap_or_default())
                .finish();
            uri = format!("{uri}?{q}");
        }
        let live = gw.live();
        let io = outbound::connect(
            &self.uri,
            &self.tls,
            live.config.limits.upstream_connect_timeout,
            Writes::Many,
        )
        .await
        .map_err(|_| Refusal::Retry)?;
        let mut req = uri.as_str().into_client_request().map_err(|_| gone)?;
        for (k, v) in self.headers.iter() {
            req.headers_mut().append(k, v.clone());
        }
        let config = ws_config(gw.live().config.ws.max_message_bytes, Side::Upstream);
        let handshake = tokio_tungstenite::client_async_with_config(req, io, Some(config));
        let wait = gw.live().config.limits.upstream_response_timeout;
        let mut ws = match tokio::time::timeout(wait, handshake).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(WsError::Http(resp))) => return Err(classify(resp.status().as_u16())),
            _ => return Err(Refusal::Retry),
        };
        if self.hello == HelloMode::Forward {
            let hello = forwarded_hello(ctx, last_id);
            ws.send(Message::text(hello))
                .await
                .map_err(|_| Refusal::Retry)?;
        }
        Ok(ws)
    }
}

/// The hello the upstream gets: the verified context (with the user and the trace id) and the
/// cursor.
fn forwarded_hello(ctx: &RequestContext, last_id: Option<&str>) -> String {
    let cursor = serde_json::to_string(&last_id).unwrap_or_else(|_| "null".into());
    format!(
        "{{\"type\":\"hello\",\"context\":{},\"last_event_id\":{cursor}}}",
        verified_context(ctx)
    )
}

/// The event id of an upstream message at `pointer` (`ws_event_id`), if it has one.
pub fn event_id(text: &str, pointer: &str) -> Option<String> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    match v.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The code of an upstream error envelope `{"error":{"code":...}}` that railgate knows.
pub fn upstream_error(text: &str) -> Option<ErrorCode> {
    if !text.trim_start().starts_with("{\"error\"") {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    v.get("error")?
        .get("code")?
        .as_str()
        .and_then(ErrorCode::from_wire)
}

/// Client messages held while the upstream reconnects, bounded by count and by bytes.
pub struct Held {
    queue: VecDeque<Message>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Held {
    /// An empty hold with these bounds (`ws.held_messages`, `ws.held_bytes`).
    pub fn new(max_messages: usize, max_bytes: usize) -> Held {
        Held {
            queue: VecDeque::new(),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Holds a message; `upstream.unavailable` when either bound would be passed.
    pub fn push(&mut self, m: Message) -> Result<(), Denial> {
        let len = m.len();
        if self.queue.len() >= self.max_messages || self.bytes + len > self.max_bytes {
            return Err(Denial::with_message(
                ErrorCode::UpstreamUnavailable,
                "too many messages held while the upstream reconnects",
            ));
        }
        self.bytes += len;
        self.queue.push_back(m);
        Ok(())
    }

    /// The oldest held message.
    pub fn pop(&mut self) -> Option<Message> {
        let m = self.queue.pop_front()?;
        self.bytes -= m.len();
        Some(m)
    }

    /// Puts back a message `pop` returned (its send failed).
    pub fn unpop(&mut self, m: Message) {
        self.bytes += m.len();
        self.queue.push_front(m);
    }
}

/// The upstream's next message; never ready while there is no upstream.
pub async fn next(
    upstream: &mut Option<UpstreamWs>,
) -> Option<Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>
{
    use futures_util::StreamExt;
    match upstream.as_mut() {
        Some(u) => u.next().await,
        None => std::future::pending().await,
    }
}
