//! One upgraded WebSocket: hello, admission, then the relay between client and upstream.
//!
//! Upstream → client: JSON objects are stamped (routing, `meta.trace_id`) and checked by the
//! isolation guard, events already delivered are dropped (id at `ws_event_id`). Client →
//! upstream: JSON objects get `routing` overwritten with the verified context. Binary and
//! non-JSON messages pass unchanged. When the upstream breaks, the client stays connected, its
//! messages are held (bounded) and delivered in order after the reconnect, which re-sends the
//! hello with the last delivered id; past `resume_deadline` the client gets
//! `upstream.unavailable` and close 1011.

use crate::app::{now, Gateway};
use crate::config::route::Captures;
use crate::config::{HelloMode, Route};
use crate::dedupe::Deduper;
use crate::inject::{overwrite_routing, stamp, Stamp, Stamped};
use crate::pipeline::{admit, Admitted};
use crate::presence::{unix_now, Member};
use crate::proxy::headers;
use crate::proxy::upstream::{connect_tcp, jittered};
use crate::server::{record, Outcome};
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::request::Parts;
use http::Uri;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use railgate_policy::context::parse_hello;
use railgate_policy::{Denial, ErrorCode, Field, RequestContext};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type ClientWs = WebSocketStream<TokioIo<Upgraded>>;
type UpstreamWs = WebSocketStream<TcpStream>;

/// Longest a write to the client may stall before it counts as a slow consumer.
const CLIENT_SEND_STALL: Duration = Duration::from_secs(10);
/// More client pings than this within [`PING_WINDOW`] closes the connection.
const PING_FLOOD: u32 = 100;
const PING_WINDOW: Duration = Duration::from_secs(10);

static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Small buffers: memory per idle connection is a headline figure.
pub fn ws_config(max_message: usize) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = 4 * 1024;
    c.write_buffer_size = 0;
    c.max_write_buffer_size = max_message.saturating_mul(2).max(64 * 1024);
    c.max_message_size = Some(max_message);
    c.max_frame_size = Some(max_message);
    c
}

/// An upgraded session before its hello.
pub struct Session {
    gw: Arc<Gateway>,
    route: Route,
    caps: Captures,
    parts: Parts,
    trace: String,
    started: Instant,
}

/// Sends the envelope, then the close frame for its code (each bounded in time).
async fn close_with(ws: &mut ClientWs, denial: &Denial, trace: &str) {
    let json = denial.envelope(trace).to_json();
    let code = denial.code.ws_close_code();
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.send(Message::text(json))).await;
    close_plain(ws, code, denial.code.as_str()).await;
}

async fn close_plain(ws: &mut ClientWs, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.chars().take(123).collect::<String>().into(),
    };
    let _ =
        tokio::time::timeout(Duration::from_secs(2), ws.send(Message::Close(Some(frame)))).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.flush()).await;
}

impl Session {
    /// Prepares a session for the request whose upgrade was accepted.
    pub fn new(
        gw: Arc<Gateway>,
        route: Route,
        caps: Captures,
        parts: Parts,
        trace: String,
    ) -> Session {
        Session {
            gw,
            route,
            caps,
            parts,
            trace,
            started: Instant::now(),
        }
    }

    fn finish(&self, code: &'static str, ctx: Option<&RequestContext>) {
        let out = Outcome {
            route: self.route.name.clone(),
            transport: "ws",
            code,
            tenant: ctx.map(|c| c.tenant_id().to_owned()),
            env: ctx.map(|c| c.env().to_owned()),
            trace_id: ctx
                .map(|c| c.trace_id.clone())
                .unwrap_or_else(|| self.trace.clone()),
            deferred: false,
        };
        record(
            &self.gw,
            &out,
            101,
            "GET",
            self.parts.uri.path(),
            self.started,
        );
    }

    /// Runs the session to its end.
    pub async fn run(self, on_upgrade: OnUpgrade) {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let config = ws_config(self.gw.config.ws.max_message_bytes);
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let active = self
            .gw
            .metrics
            .connections_active
            .with_label_values(&[&self.route.name, "ws"]);
        active.inc();
        // Boxed here and below: the session task is allocated at the size of its largest
        // state, and admission (auth, registry) and the upstream handshake are large and brief.
        let admitted = match Box::pin(self.hello(&mut ws)).await {
            Ok(a) => a,
            Err(Some(d)) => {
                close_with(&mut ws, &d, &self.trace).await;
                self.finish(d.code.as_str(), None);
                active.dec();
                return;
            }
            Err(None) => {
                active.dec();
                return;
            }
        };
        self.finish("ok", Some(&admitted.0.ctx));
        let (admitted, cursor) = admitted;
        let relay = Relay::new(&self, admitted, cursor);
        // The request's parts point into the connection's read buffer; let it go.
        drop(self);
        relay.run(ws).await;
        active.dec();
    }

    /// Waits for the hello and admits it. `Err(None)`: the client left.
    async fn hello(&self, ws: &mut ClientWs) -> Result<(Admitted, Option<String>), Option<Denial>> {
        let wait = self.gw.config.ws.hello_timeout;
        let first = loop {
            match tokio::time::timeout(wait, ws.next()).await {
                Err(_) => {
                    return Err(Some(Denial::with_message(
                        ErrorCode::TokenMissing,
                        "no hello within the hello timeout",
                    )))
                }
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return Err(None),
                Ok(Some(Ok(Message::Text(t)))) => break t,
                Ok(Some(Ok(Message::Binary(_)))) => {
                    return Err(Some(Denial::with_message(
                        ErrorCode::HeaderInvalid,
                        "the first message must be a JSON hello",
                    )))
                }
                Ok(Some(Ok(_))) => continue,
            }
        };
        let hello = parse_hello(first.as_bytes()).map_err(Some)?;
        let admitted = admit(
            &self.gw,
            &self.route,
            &self.caps,
            &self.parts.headers,
            self.parts.uri.query(),
            Some(&hello),
            &self.trace,
        )
        .await
        .map_err(Some)?;
        let cursor = match hello.last_event_id.as_deref() {
            Some(c) if c.len() > 256 || c.contains(['\0', '\r', '\n']) => {
                return Err(Some(Denial::with_message(
                    ErrorCode::CursorInvalid,
                    "last_event_id is malformed",
                )))
            }
            Some("") | None => None,
            Some(c) => Some(c.to_owned()),
        };
        Ok((admitted, cursor))
    }
}

struct Relay {
    gw: Arc<Gateway>,
    route: Route,
    thread: String,
    ctx: RequestContext,
    stamp: Stamp,
    upstream_uri: String,
    upstream_headers: http::HeaderMap,
    dedupe: Deduper,
    last_id: Option<String>,
    held: VecDeque<Message>,
    session: u64,
}

fn event_id(text: &str, pointer: &str) -> Option<String> {
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
fn upstream_error(text: &str) -> Option<ErrorCode> {
    if !text.trim_start().starts_with("{\"error\"") {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    v.get("error")?
        .get("code")?
        .as_str()
        .and_then(ErrorCode::from_wire)
}

impl Relay {
    fn new(s: &Session, admitted: Admitted, cursor: Option<String>) -> Relay {
        let thread = admitted.thread_id.clone().unwrap_or_default();
        let mut up_headers = headers::detached(&s.parts.headers);
        for h in [
            "sec-websocket-key",
            "sec-websocket-version",
            "sec-websocket-extensions",
            "sec-websocket-protocol",
            "host",
            "origin",
            "cookie",
        ] {
            up_headers.remove(h);
        }
        headers::to_upstream(&mut up_headers, &admitted.ctx, None);
        let path = match &s.route.upstream_path {
            Some(t) => crate::config::Pattern::render(t, &s.caps),
            None => s.parts.uri.path().to_owned(),
        };
        let base = s
            .route
            .upstream
            .trim_end_matches('/')
            .replacen("http://", "ws://", 1);
        Relay {
            gw: s.gw.clone(),
            route: s.route.clone(),
            stamp: Stamp::new(&admitted.ctx, &thread),
            thread,
            ctx: admitted.ctx,
            upstream_uri: format!("{base}{path}"),
            upstream_headers: up_headers,
            dedupe: Deduper::after(cursor.as_deref()),
            last_id: cursor,
            held: VecDeque::new(),
            session: SESSIONS.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn routing_json(&self) -> &str {
        &self.stamp.routing
    }

    async fn connect(&self) -> Result<UpstreamWs, (bool, ErrorCode)> {
        let gw = &self.gw;
        let mut uri = self.upstream_uri.clone();
        if self.route.hello == HelloMode::Consume {
            let cursor = self.last_id.clone().unwrap_or_default();
            let q = form_urlencoded::Serializer::new(String::new())
                .append_pair("last_event_id", &cursor)
                .finish();
            uri = format!("{uri}?{q}");
        }
        let parsed: Uri = uri
            .parse()
            .map_err(|_| (false, ErrorCode::UpstreamUnavailable))?;
        let authority = parsed
            .authority()
            .ok_or((false, ErrorCode::UpstreamUnavailable))?;
        let tcp = connect_tcp(authority, gw.config.limits.upstream_connect_timeout)
            .await
            .map_err(|_| (true, ErrorCode::UpstreamUnavailable))?;
        let mut req = uri
            .as_str()
            .into_client_request()
            .map_err(|_| (false, ErrorCode::UpstreamUnavailable))?;
        for (k, v) in &self.upstream_headers {
            req.headers_mut().append(k, v.clone());
        }
        let config = ws_config(gw.config.ws.max_message_bytes);
        let handshake = tokio_tungstenite::client_async_with_config(req, tcp, Some(config));
        let mut ws =
            match tokio::time::timeout(gw.config.limits.upstream_response_timeout, handshake).await
            {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(WsError::Http(resp))) => {
                    return Err(match resp.status().as_u16() {
                        404 => (false, ErrorCode::ThreadNotFound),
                        410 => (false, ErrorCode::CursorInvalid),
                        408 | 425 | 429 | 500..=599 => (true, ErrorCode::UpstreamUnavailable),
                        _ => (false, ErrorCode::UpstreamUnavailable),
                    })
                }
                _ => return Err((true, ErrorCode::UpstreamUnavailable)),
            };
        if self.route.hello == HelloMode::Forward {
            let mut context = serde_json::Map::new();
            for (f, v) in self.ctx.fields() {
                context.insert(f.key().into(), v.into());
            }
            context.insert("user_id".into(), self.ctx.user_id.as_str().into());
            context.insert("request_id".into(), self.ctx.trace_id.as_str().into());
            let hello = json!({"type": "hello", "context": context, "last_event_id": self.last_id});
            if ws.send(Message::text(hello.to_string())).await.is_err() {
                return Err((true, ErrorCode::UpstreamUnavailable));
            }
        }
        Ok(ws)
    }

    async fn send_client(&self, client: &mut ClientWs, msg: Message) -> Result<(), Option<Denial>> {
        match tokio::time::timeout(CLIENT_SEND_STALL, client.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => {
                self.gw
                    .metrics
                    .slow_consumer_disconnects_total
                    .with_label_values(&[&self.route.name, "ws"])
                    .inc();
                Err(Some(Denial::new(ErrorCode::SlowConsumer)))
            }
        }
    }

    /// Upstream → client for one text message.
    async fn relay_upstream_text(
        &mut self,
        client: &mut ClientWs,
        text: &str,
    ) -> Result<(), Option<Denial>> {
        if let Some(code) = upstream_error(text) {
            // The upstream refuses (e.g. a cursor it never issued): answer in our own envelope.
            return Err(Some(Denial::new(code)));
        }
        if let Some(id) = event_id(text, &self.route.ws_event_id) {
            if !self.dedupe.is_new(&id) {
                return Ok(());
            }
            self.last_id = Some(id);
        }
        let out = match stamp(text, &self.stamp) {
            Stamped::Foreign => {
                self.gw
                    .metrics
                    .isolation_violations_total
                    .with_label_values(&[&self.route.name])
                    .inc();
                tracing::warn!(route = %self.route.name, thread_id = %self.thread, "upstream message names a foreign tenant; dropped");
                return Ok(());
            }
            Stamped::Unchanged => text.to_owned(),
            Stamped::Rewritten(s) => s,
        };
        self.send_client(client, Message::text(out)).await?;
        self.gw
            .metrics
            .events_forwarded_total
            .with_label_values(&[&self.route.name, "ws"])
            .inc();
        Ok(())
    }

    /// Client → upstream: `routing` replaced in JSON objects.
    fn for_upstream(&self, msg: Message) -> Message {
        match msg {
            Message::Text(t) => match overwrite_routing(t.as_str(), self.routing_json()) {
                Some(s) => Message::text(s),
                None => Message::Text(t),
            },
            other => other,
        }
    }

    async fn run(mut self, mut client: ClientWs) {
        let gw = self.gw.clone();
        let (ptx, mut prx) = mpsc::channel::<String>(64);
        if gw.config.ws.presence {
            let member = Member {
                session: self.session,
                actor_id: self.ctx.user_id.clone(),
                surface_id: self.ctx.get(Field::Surface).map(str::to_owned),
                joined_at: unix_now(),
            };
            gw.presence.join(
                self.ctx.tenant_id(),
                self.ctx.env(),
                &self.thread,
                member,
                ptx,
            );
        }
        let end = self.relay(&mut client, &mut prx).await;
        if gw.config.ws.presence {
            gw.presence.leave(
                self.ctx.tenant_id(),
                self.ctx.env(),
                &self.thread,
                self.session,
            );
        }
        match end {
            Some(End::Deny(d)) => close_with(&mut client, &d, &self.ctx.trace_id).await,
            Some(End::Close(code, reason)) => close_plain(&mut client, code, &reason).await,
            Some(End::PeerClosed) => {
                // Sends the reply to the client's close frame, queued by the read.
                let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
            }
            None => {}
        }
    }

    async fn relay(
        &mut self,
        client: &mut ClientWs,
        presence: &mut mpsc::Receiver<String>,
    ) -> Option<End> {
        let gw = self.gw.clone();
        let mut upstream: Option<UpstreamWs> = None;
        let mut down_since: Option<Instant> = Some(Instant::now());
        let mut backoff = Duration::from_millis(50);
        let mut retry_at = tokio::time::Instant::now();
        let mut ping = tokio::time::interval(gw.config.ws.ping_interval);
        ping.tick().await;
        let mut last_pong = Instant::now();
        let mut pings = (Instant::now(), 0u32);
        let remaining = self
            .ctx
            .expires_at
            .saturating_add(gw.config.auth.leeway_s)
            .saturating_sub(now());
        let expiry = tokio::time::sleep(Duration::from_secs(remaining.min(10 * 365 * 24 * 3600)));
        tokio::pin!(expiry);
        let mut ever_connected = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(retry_at), if upstream.is_none() => {
                    match Box::pin(self.connect()).await {
                        Ok(mut ws) => {
                            if ever_connected {
                                gw.metrics.upstream_reconnects_total.with_label_values(&[&self.route.name, "ws", "ok"]).inc();
                            }
                            ever_connected = true;
                            while let Some(m) = self.held.pop_front() {
                                if ws.send(m.clone()).await.is_err() {
                                    self.held.push_front(m);
                                    break;
                                }
                            }
                            upstream = Some(ws);
                            down_since = None;
                            backoff = Duration::from_millis(50);
                        }
                        Err((false, code)) => return Some(End::Deny(Denial::new(code))),
                        Err((true, _)) => {
                            gw.metrics.upstream_reconnects_total.with_label_values(&[&self.route.name, "ws", "failed"]).inc();
                            let since = *down_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= self.route.resume_deadline {
                                gw.metrics.upstream_reconnects_total.with_label_values(&[&self.route.name, "ws", "gave_up"]).inc();
                                return Some(End::Deny(Denial::new(ErrorCode::UpstreamUnavailable)));
                            }
                            retry_at = tokio::time::Instant::now() + jittered(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                }
                msg = async { match upstream.as_mut() { Some(u) => u.next().await, None => std::future::pending().await } } => {
                    match self.on_upstream(client, msg).await {
                        Flow::Go => {}
                        Flow::Stop(end) => return end,
                        Flow::Broken => broken(&mut upstream, &mut down_since, &mut retry_at, backoff),
                    }
                }
                msg = client.next() => {
                    match msg {
                        Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                        Some(Ok(Message::Ping(_))) => {
                            last_pong = Instant::now();
                            if pings.0.elapsed() > PING_WINDOW {
                                pings = (Instant::now(), 0);
                            }
                            pings.1 += 1;
                            if pings.1 > PING_FLOOD {
                                return Some(End::Deny(Denial::with_message(ErrorCode::RateLimited, "ping flood")));
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => {
                            if let Some(u) = upstream.as_mut() {
                                let _ = tokio::time::timeout(Duration::from_secs(1), u.close(None)).await;
                            }
                            return Some(End::PeerClosed);
                        }
                        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                            // Whatever the upstream already sent — events, or its close after a
                            // crash — is handled first, so a message is never written into a
                            // connection already known to be dead.
                            while let Some(pending) = upstream.as_mut().and_then(|u| u.next().now_or_never()) {
                                match self.on_upstream(client, pending).await {
                                    Flow::Go => {}
                                    Flow::Stop(end) => return end,
                                    Flow::Broken => broken(&mut upstream, &mut down_since, &mut retry_at, backoff),
                                }
                            }
                            let out = self.for_upstream(m);
                            let sent = match upstream.as_mut() {
                                Some(u) => u.send(out.clone()).await.is_ok(),
                                None => false,
                            };
                            if !sent {
                                if upstream.is_some() {
                                    broken(&mut upstream, &mut down_since, &mut retry_at, backoff);
                                }
                                if self.held.len() >= gw.config.ws.held_messages {
                                    return Some(End::Deny(Denial::with_message(ErrorCode::UpstreamUnavailable, "too many messages held while the upstream reconnects")));
                                }
                                self.held.push_back(out);
                            }
                        }
                        Some(Ok(Message::Frame(_))) => {}
                        Some(Err(e)) => return read_failure(&e),
                    }
                }
                text = presence.recv() => {
                    if let Some(t) = text {
                        if let Err(e) = self.send_client(client, Message::text(t)).await {
                            return e.map(End::Deny);
                        }
                    }
                }
                _ = ping.tick() => {
                    if last_pong.elapsed() > gw.config.ws.pong_timeout {
                        return Some(End::Close(1001, "heartbeat timeout".into()));
                    }
                    if let Err(e) = self.send_client(client, Message::Ping(Default::default())).await {
                        return e.map(End::Deny);
                    }
                }
                _ = &mut expiry => return Some(End::Deny(Denial::new(ErrorCode::TokenExpired))),
                _ = gw.draining.cancelled() => return Some(End::Deny(Denial::new(ErrorCode::Draining))),
            }
        }
    }
}

enum End {
    Deny(Denial),
    Close(u16, String),
    /// The client sent its close frame (or its stream ended).
    PeerClosed,
}

/// How a session ends when reading from the client fails (RFC 6455 §7.4.1 codes).
fn read_failure(e: &WsError) -> Option<End> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some(End::Deny(Denial::new(ErrorCode::TooLarge)))
        }
        WsError::Capacity(_) => Some(End::Close(1009, "frame too large".into())),
        WsError::Utf8(_) => Some(End::Close(1007, "invalid UTF-8 in a text message".into())),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(End::Close(1002, "protocol error".into())),
        _ => None,
    }
}

/// What one upstream message meant for the session.
enum Flow {
    Go,
    /// The upstream connection is gone: reconnect.
    Broken,
    /// End the session (`None`: the client left).
    Stop(Option<End>),
}

impl Relay {
    async fn on_upstream(
        &mut self,
        client: &mut ClientWs,
        msg: Option<Result<Message, WsError>>,
    ) -> Flow {
        match msg {
            Some(Ok(Message::Text(t))) => {
                match self.relay_upstream_text(client, t.as_str()).await {
                    Ok(()) => Flow::Go,
                    Err(e) => Flow::Stop(e.map(End::Deny)),
                }
            }
            Some(Ok(Message::Binary(b))) => {
                match self.send_client(client, Message::Binary(b)).await {
                    Ok(()) => Flow::Go,
                    Err(e) => Flow::Stop(e.map(End::Deny)),
                }
            }
            // A terminal refusal from the upstream (bad cursor, auth): pass it on.
            Some(Ok(Message::Close(Some(f)))) if (4000..5000).contains(&u16::from(f.code)) => {
                Flow::Stop(Some(End::Close(
                    u16::from(f.code),
                    f.reason.as_str().to_owned(),
                )))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Flow::Go,
            _ => Flow::Broken,
        }
    }
}

/// Forgets a broken upstream connection and schedules the reconnect.
fn broken(
    upstream: &mut Option<UpstreamWs>,
    down_since: &mut Option<Instant>,
    retry_at: &mut tokio::time::Instant,
    backoff: Duration,
) {
    *upstream = None;
    *down_since = Some(Instant::now());
    *retry_at = tokio::time::Instant::now() + jittered(backoff);
}
