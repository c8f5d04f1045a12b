//! An upgraded WebSocket before its relay: wait for the hello, admit it (the same
//! [`crate::admission::admit`] as every rail, now with the hello as a source), record the
//! outcome, then hand over to the relay ([`super::ws_relay`]).

use crate::admission::{admit, spend_ticket, Admission, Caller};
use crate::app::Gateway;
use crate::caps::Connection;
use crate::config::route::Captures;
use crate::config::{Rail, Route};
use crate::outcome::{count, record, Outcome, StreamLog};
use crate::proxy::forwarded::Forwarding;
use crate::proxy::reconnect::cursor;
use crate::proxy::ws_conn::{finish, ws_config, Active, ClientWs, End, Heartbeat, Side};
use crate::proxy::ws_relay::{Greeted, WsRelay};
use futures_util::StreamExt;
use http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use railgate_policy::context::parse_hello;
use railgate_policy::{Denial, ErrorCode};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What the dispatcher hands over with an upgrade it accepted.
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value (`check_upgrade`).
    pub accept: String,
    /// The request's outcome, recorded by the session once its hello is decided.
    pub out: Outcome,
    /// What the upstream learns of who sent the request.
    pub fwd: Forwarding,
    /// The connection's slot: unauthenticated until the hello is admitted.
    pub conn: Arc<Connection>,
}

/// A session's relay, run by the session's task.
type Relay = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// An upgraded session before its hello.
pub struct Session {
    gw: Arc<Gateway>,
    route: Arc<Route>,
    caps: Captures,
    parts: Parts,
    out: Outcome,
    fwd: Forwarding,
    conn: Arc<Connection>,
}

impl Session {
    /// Prepares a session for the request whose upgrade was accepted.
    pub fn new(
        gw: Arc<Gateway>,
        route: Arc<Route>,
        caps: Captures,
        parts: Parts,
        up: Upgrade,
    ) -> Session {
        Session {
            gw,
            route,
            caps,
            parts,
            out: up.out,
            fwd: up.fwd,
            conn: up.conn,
        }
    }

    /// Runs the session to its end. Takes the session boxed: the task keeps its arguments for its
    /// whole life, and the session's parts are freed once the relay starts.
    ///
    /// The task itself holds two boxes: the greeting (upgrade, hello, admission), then the
    /// relay. A value moved on inside one async function keeps its room there until the
    /// function ends, so a session that did both in this task kept the client stream and the
    /// relay twice (16 KiB per session; about 6 now).
    pub async fn run(self: Box<Self>, on_upgrade: OnUpgrade) {
        if let Some(relay) = Box::pin(self.greet(on_upgrade)).await {
            relay.await;
        }
    }

    /// The upgrade and the hello; the relay to run once it is admitted.
    async fn greet(mut self: Box<Self>, on_upgrade: OnUpgrade) -> Option<Relay> {
        let upgraded = on_upgrade.await.ok()?;
        let config = ws_config(self.gw.live().config.ws.max_message_bytes, Side::Client);
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let active = Active::new(self.gw.metrics.active(&self.route.name, Rail::Ws));
        // Boxed here and below: admission (auth, registry) and the upstream handshake are
        // large and brief.
        match Box::pin(self.hello(&mut ws)).await {
            Ok(greeted) => {
                self.out.admitted(&greeted.admitted.ctx);
                count(&self.gw.metrics, &self.out);
                let log = StreamLog::new(self.out.clone(), self.fwd.peer.ip, 101);
                let relay = WsRelay::new(
                    &self.gw,
                    &self.route,
                    &self.caps,
                    &self.parts,
                    &self.fwd,
                    greeted,
                    (log, active),
                );
                // The request's parts point into the connection's read buffer; let it go.
                drop(self);
                Some(Box::pin(relay.run(ws)))
            }
            Err(End::Deny(d)) => {
                self.out.code = Some(d.code);
                record(&self.gw.metrics, &self.out, 101);
                Box::pin(finish(&mut ws, End::Deny(d), self.out.trace_id())).await;
                None
            }
            Err(_) => None,
        }
    }

    /// Waits for the hello and admits it. `Err(End::ClientLeft)`: the client left first.
    async fn hello(&self, ws: &mut ClientWs) -> Result<Greeted, End> {
        let first = self.first_text(ws).await?;
        let hello = parse_hello(first.as_bytes()).map_err(End::Deny)?;
        let caller = Caller {
            headers: &self.parts.headers,
            query: self.parts.uri.query(),
            hello: Some(&hello),
            trace_id: self.out.trace_id(),
        };
        let admission = Admission::for_route(&self.route, &self.caps);
        let admitted = admit(&self.gw.live(), &admission, &caller)
            .await
            .map_err(End::Deny)?;
        self.conn.authenticated();
        let cursor = cursor(hello.last_event_id.as_deref(), "last_event_id").map_err(End::Deny)?;
        let slot = self
            .gw
            .stream_slot(admitted.ctx.tenant_id())
            .map_err(End::Deny)?;
        spend_ticket(&self.gw, &admitted).await.map_err(End::Deny)?;
        Ok(Greeted {
            admitted,
            cursor,
            slot,
        })
    }

    /// The first text message, within the hello timeout counted from the upgrade: control frames
    /// before it neither extend the deadline nor escape the ping-flood limit.
    async fn first_text(&self, ws: &mut ClientWs) -> Result<String, End> {
        let deadline = tokio::time::Instant::now() + self.gw.live().config.ws.hello_timeout;
        let mut heartbeat = Heartbeat::new();
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => {
                    return Err(End::Deny(Denial::with_message(
                        ErrorCode::TokenMissing,
                        "no hello within the hello timeout",
                    )))
                }
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                    return Err(End::ClientLeft)
                }
                Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
                Ok(Some(Ok(Message::Binary(_)))) => {
                    return Err(End::Deny(Denial::with_message(
                        ErrorCode::HeaderInvalid,
                        "the first message must be a JSON hello",
                    )))
                }
                Ok(Some(Ok(Message::Ping(_)))) => heartbeat.ping()?,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}
