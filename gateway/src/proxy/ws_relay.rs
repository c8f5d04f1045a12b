//! An admitted WebSocket session's relay between client and upstream, one handler per event:
//! a client message ([`WsRelay::on_client`]), an upstream message ([`WsRelay::on_upstream`]),
//! a heartbeat tick ([`WsRelay::on_tick`]) and a reconnect attempt ([`WsRelay::on_retry`]).
//!
//! Upstream → client: JSON objects are stamped (routing, `meta.trace_id`) and checked by the
//! isolation guard (foreign routing, or JSON-looking text that is not strict JSON: dropped),
//! events already delivered after a reconnect are dropped (id at `ws_event_id`). Client →
//! upstream: JSON objects get `routing` and `context` replaced with the verified ones; a second
//! hello and JSON-looking text that is not strict JSON end the session (`request.header_invalid`,
//! 4003); binary messages are refused (close 1003) unless the route sets `ws_allow_binary`.
//! Plain text passes unchanged. When the upstream breaks, the client stays connected, its
//! messages are held (bounded) and delivered in order after the reconnect, which greets the
//! upstream again with the last delivered id; past `resume_deadline` the client gets
//! `upstream.unavailable` and close 1011.

use crate::admission::Admitted;
use crate::app::Gateway;
use crate::caps::StreamSlot;
use crate::clock;
use crate::config::route::Captures;
use crate::config::{Rail, Route};
use crate::dedupe::Deduper;
use crate::inject::{client_text, stamp, verified_context, ClientText, Crossing, Stamp, Stamped};
use crate::metrics::Violation;
use crate::outcome::StreamLog;
use crate::presence::{is_snapshot_request, Place};
use crate::proxy::forwarded::Forwarding;
use crate::proxy::reconnect::{credential_end, Reconnect, Refusal};
use crate::proxy::ws_conn::{finish, read_failure, send_message, Active, ClientWs, End, Heartbeat};
use crate::proxy::ws_presence;
use crate::proxy::ws_upstream::{self, event_id, upstream_error, Held, Target, UpstreamWs};
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::request::Parts;
use railgate_policy::{Denial, ErrorCode, RequestContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::Instant as Deadline;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

/// Longest a write to the client may stall before it counts as a slow consumer.
const CLIENT_SEND_STALL: Duration = Duration::from_secs(10);

static SESSIONS: AtomicU64 = AtomicU64::new(1);

type Step = Result<(), End>;

/// A hello that was admitted, with its resume cursor.
pub struct Greeted {
    /// What admission produced.
    pub admitted: Admitted,
    /// The hello's `last_event_id`, checked.
    pub cursor: Option<String>,
    /// The session's place among its tenant's open streams.
    pub slot: StreamSlot,
}

/// The relay of one admitted session.
pub struct WsRelay {
    gw: Arc<Gateway>,
    route: Arc<Route>,
    thread: String,
    /// Where the session is present: its resource and the scope it named.
    place: Place,
    ctx: std::sync::Arc<RequestContext>,
    stamp: Stamp,
    /// The verified context every client message carries upstream.
    context: String,
    target: Result<Target, ErrorCode>,
    upstream: Option<UpstreamWs>,
    reconnect: Reconnect,
    retry_at: Deadline,
    dedupe: Deduper,
    last_id: Option<String>,
    held: Held,
    session: u64,
    heartbeat: Heartbeat,
    /// Held for the session's life: its place among its tenant's open streams.
    _slot: StreamSlot,
    /// The session's access line, written when it ends.
    log: StreamLog,
    /// Counts the session in `connections_active` while it lives.
    _active: Active,
}

impl WsRelay {
    /// The relay of a session whose hello was admitted.
    pub fn new(
        gw: &Arc<Gateway>,
        route: &Arc<Route>,
        caps: &Captures,
        parts: &Parts,
        fwd: &Forwarding,
        greeted: Greeted,
        (log, active): (StreamLog, Active),
    ) -> WsRelay {
        let Greeted {
            admitted,
            cursor,
            slot,
        } = greeted;
        let thread = admitted.thread_id.clone().unwrap_or_default();
        WsRelay {
            place: Place(route.place(&thread, &admitted.ctx)),
            gw: gw.clone(),
            route: route.clone(),
            stamp: Stamp::for_resource(&admitted.ctx, &route.resource, &thread),
            context: verified_context(&admitted.ctx),
            target: Target::new(
                route,
                caps,
                parts,
                &admitted.ctx,
                fwd,
                gw.live().outbound.tls_for(&route.name).clone(),
            ),
            thread,
            ctx: admitted.ctx,
            upstream: None,
            reconnect: Reconnect::new(&gw.metrics, &route.name, Rail::Ws, route.resume_deadline),
            retry_at: Deadline::now(),
            dedupe: Deduper::after(cursor.as_deref()),
            last_id: cursor,
            held: Held::new(
                gw.live().config.ws.held_messages,
                gw.live().config.ws.held_bytes,
            ),
            session: SESSIONS.fetch_add(1, Ordering::Relaxed),
            heartbeat: Heartbeat::new(),
            _slot: slot,
            log,
            _active: active,
        }
    }

    /// Relays until the session ends, then closes the client as the end says.
    pub async fn run(mut self, mut client: ClientWs) {
        let gw = self.gw.clone();
        let presence = gw.live().config.ws.presence;
        let (ptx, mut prx) = mpsc::channel::<String>(64);
        // Boxed, like the closing handshake below: a task keeps room for its largest state for
        // its whole life, and these brief ones (Redis commands in cluster mode) are larger.
        if presence {
            Box::pin(ws_presence::join(
                &gw,
                &self.ctx,
                &self.place,
                self.session,
                ptx,
            ))
            .await;
        }
        let end = self.relay(&mut client, &mut prx).await;
        if presence {
            Box::pin(ws_presence::leave(
                &gw,
                &self.ctx,
                &self.place,
                self.session,
            ))
            .await;
        }
        let (outcome, close_code) = end.describe();
        self.log.ended(&outcome, close_code);
        Box::pin(finish(&mut client, end, &self.ctx.trace_id)).await;
    }

    async fn relay(&mut self, client: &mut ClientWs, presence: &mut mpsc::Receiver<String>) -> End {
        let gw = self.gw.clone();
        let mut ping = tokio::time::interval(gw.live().config.ws.ping_interval);
        ping.tick().await;
        let expiry = tokio::time::sleep_until(credential_end(
            self.ctx.expires_at,
            gw.live().config.auth.leeway_s,
            clock::now(),
        ));
        tokio::pin!(expiry);
        loop {
            let down = self.upstream.is_none();
            let upstream = &mut self.upstream;
            let step = tokio::select! {
                _ = tokio::time::sleep_until(self.retry_at), if down => Event::Retry,
                msg = ws_upstream::next(upstream) => Event::Upstream(msg),
                msg = client.next() => Event::Client(msg),
                Some(text) = presence.recv() => Event::Presence(text),
                _ = ping.tick() => Event::Tick,
                _ = &mut expiry => Event::End(Denial::new(ErrorCode::TokenExpired)),
                _ = gw.draining.cancelled() => Event::End(Denial::new(ErrorCode::Draining)),
            };
            let handled = match step {
                Event::Retry => Box::pin(self.on_retry()).await,
                Event::Upstream(msg) => self.on_upstream(client, msg).await,
                Event::Client(msg) => self.on_client(client, msg).await,
                Event::Presence(text) => self.send_client(client, Message::text(text)).await,
                Event::Tick => self.on_tick(client).await,
                Event::End(d) => Err(End::Deny(d)),
            };
            if let Err(end) = handled {
                return end;
            }
        }
    }

    /// Time to (re)connect the upstream: on success the held messages go first.
    async fn on_retry(&mut self) -> Step {
        let target = self
            .target
            .as_ref()
            .map_err(|c| End::Deny(Denial::new(*c)))?;
        let started = Instant::now();
        match target
            .connect(&self.gw, &self.ctx, self.last_id.as_deref())
            .await
        {
            Ok(mut ws) => {
                self.reconnect.connected();
                let tally = &mut self.log.tally;
                match tally.upstream_connect {
                    None => tally.upstream_connect = Some(started.elapsed()),
                    Some(_) => tally.reconnects += 1,
                }
                self.dedupe.arm();
                while let Some(m) = self.held.pop() {
                    if ws.send(m.clone()).await.is_err() {
                        self.held.unpop(m);
                        break;
                    }
                }
                self.upstream = Some(ws);
                Ok(())
            }
            Err(Refusal::Gone(code)) => Err(End::Deny(Denial::new(code))),
            Err(Refusal::Retry) => {
                self.reconnect.attempt_failed();
                self.schedule_retry()
            }
        }
    }

    /// Forgets a broken upstream connection and schedules the reconnect.
    fn broken(&mut self) -> Step {
        self.upstream = None;
        self.schedule_retry()
    }

    fn schedule_retry(&mut self) -> Step {
        match self.reconnect.next_delay() {
            Some(delay) => {
                self.retry_at = Deadline::now() + delay;
                Ok(())
            }
            None => Err(End::Deny(Denial::new(ErrorCode::UpstreamUnavailable))),
        }
    }

    /// One message (or the end) from the upstream.
    async fn on_upstream(
        &mut self,
        client: &mut ClientWs,
        msg: Option<Result<Message, WsError>>,
    ) -> Step {
        match msg {
            Some(Ok(Message::Text(t))) => self.relay_upstream_text(client, t.as_str()).await,
            Some(Ok(Message::Binary(b))) => self.send_client(client, Message::Binary(b)).await,
            // A terminal refusal from the upstream (bad cursor, auth): pass it on.
            Some(Ok(Message::Close(Some(f)))) if (4000..5000).contains(&u16::from(f.code)) => {
                Err(End::Close(u16::from(f.code), f.reason.as_str().to_owned()))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
            _ => self.broken(),
        }
    }

    /// Upstream → client for one text message.
    async fn relay_upstream_text(&mut self, client: &mut ClientWs, text: &str) -> Step {
        if let Some(code) = upstream_error(text) {
            // The upstream refuses (e.g. a cursor it never issued): answer in our own envelope.
            return Err(End::Deny(Denial::new(code)));
        }
        if let Some(id) = event_id(text, &self.route.ws_event_id) {
            if !self.dedupe.is_new(&id) {
                self.gw
                    .metrics
                    .deduplicated(&self.route.name, Rail::Ws)
                    .inc();
                tracing::debug!(route = %self.route.name, thread_id = %self.thread, id, "message already delivered before the reconnect; dropped");
                return Ok(());
            }
            self.last_id = Some(id);
        }
        let out = match stamp(text, &self.stamp) {
            Stamped::Foreign(crossing) => {
                let (reason, what) = match crossing {
                    Crossing::Tenant => (Violation::ForeignTenant, "a foreign tenant".to_owned()),
                    Crossing::Scope(key) => (Violation::ForeignScope, format!("another {key}")),
                };
                self.violation(reason);
                tracing::warn!(route = %self.route.name, thread_id = %self.thread, "upstream message names {what}; dropped");
                return Ok(());
            }
            Stamped::Malformed => {
                self.violation(Violation::NotStrictJson);
                tracing::warn!(route = %self.route.name, thread_id = %self.thread, "upstream message looks like JSON but is not strict JSON; dropped");
                return Ok(());
            }
            Stamped::Unchanged => text.to_owned(),
            Stamped::Rewritten(s) => s,
        };
        self.send_client(client, Message::text(out)).await?;
        self.gw.metrics.forwarded(&self.route.name, Rail::Ws).inc();
        Ok(())
    }

    /// One message (or the end) from the client.
    async fn on_client(
        &mut self,
        client: &mut ClientWs,
        msg: Option<Result<Message, WsError>>,
    ) -> Step {
        match msg {
            Some(Ok(Message::Pong(_))) => {
                self.heartbeat.last_pong = Instant::now();
                Ok(())
            }
            Some(Ok(Message::Ping(_))) => self.heartbeat.ping(),
            Some(Ok(Message::Close(_))) | None => {
                if let Some(u) = self.upstream.as_mut() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), u.close(None)).await;
                }
                Err(End::PeerClosed)
            }
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => self.forward(client, m).await,
            Some(Ok(Message::Frame(_))) => Ok(()),
            Some(Err(e)) => Err(read_failure(&e)),
        }
    }

    /// Client → upstream, or held while the upstream is away. A presence snapshot request is
    /// answered here instead.
    async fn forward(&mut self, client: &mut ClientWs, m: Message) -> Step {
        if let Message::Text(t) = &m {
            if self.gw.live().config.ws.presence && is_snapshot_request(t.as_str()) {
                let snapshot = self.gw.presence.snapshot_for(
                    self.ctx.tenant_id(),
                    self.ctx.env(),
                    &self.place,
                    self.session,
                );
                return self.send_client(client, Message::text(snapshot)).await;
            }
        }
        // Whatever the upstream already sent — events, or its close after a crash — is handled
        // first, so a message is never written into a connection already known to be dead.
        while let Some(pending) = self.upstream.as_mut().and_then(|u| u.next().now_or_never()) {
            self.on_upstream(client, pending).await?;
        }
        let out = self.for_upstream(m)?;
        self.log.tally.messages_up += 1;
        self.log.tally.bytes_up += out.len() as u64;
        let sent = match self.upstream.as_mut() {
            Some(u) => u.send(out.clone()).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        if self.upstream.is_some() {
            self.broken()?;
        }
        self.held.push(out).map_err(End::Deny)
    }

    fn violation(&self, reason: Violation) {
        self.gw
            .metrics
            .isolation_violations(&self.route.name, reason)
            .inc();
    }

    /// Client → upstream: JSON objects get the verified `routing` and `context`; a second hello,
    /// JSON-looking text that is not strict JSON, and (unless the route allows them) binary
    /// messages are refused.
    fn for_upstream(&self, msg: Message) -> Result<Message, End> {
        let refuse =
            |why: &'static str| End::Deny(Denial::with_message(ErrorCode::HeaderInvalid, why));
        match msg {
            Message::Text(t) => {
                match client_text(t.as_str(), self.stamp.routing(), &self.context) {
                    ClientText::Object(s) => Ok(Message::text(s)),
                    ClientText::Plain => Ok(Message::Text(t)),
                    ClientText::Hello => Err(refuse("the hello was already sent")),
                    ClientText::Malformed => {
                        self.violation(Violation::NotStrictJson);
                        Err(refuse("the message looks like JSON but is not strict JSON"))
                    }
                }
            }
            Message::Binary(_) if !self.route.ws_allow_binary => Err(End::Close(
                1003,
                "binary messages are not accepted on this route".into(),
            )),
            other => Ok(other),
        }
    }

    /// The heartbeat: a client that stopped answering pings is closed; otherwise ping it.
    async fn on_tick(&mut self, client: &mut ClientWs) -> Step {
        if self.heartbeat.last_pong.elapsed() > self.gw.live().config.ws.pong_timeout {
            return Err(End::Close(1001, "heartbeat timeout".into()));
        }
        self.send_client(client, Message::Ping(Default::default()))
            .await
    }

    async fn send_client(&mut self, client: &mut ClientWs, msg: Message) -> Step {
        let counted = matches!(msg, Message::Text(_) | Message::Binary(_));
        let len = msg.len() as u64;
        match tokio::time::timeout(CLIENT_SEND_STALL, send_message(client, msg)).await {
            Ok(Ok(())) => {
                if counted {
                    self.log.tally.events_down += 1;
                    self.log.tally.bytes_down += len;
                }
                Ok(())
            }
            Ok(Err(_)) => Err(End::ClientLeft),
            Err(_) => {
                self.gw
                    .metrics
                    .slow_consumer(&self.route.name, Rail::Ws)
                    .inc();
                Err(End::Deny(Denial::new(ErrorCode::SlowConsumer)))
            }
        }
    }
}

/// What woke the relay.
enum Event {
    Retry,
    Upstream(Option<Result<Message, WsError>>),
    Client(Option<Result<Message, WsError>>),
    Presence(String),
    Tick,
    End(Denial),
}
