//! The client's side of an upgraded WebSocket: its configuration, writes bounded in time, and the
//! ways a session ends on it.

use crate::respond;
use futures_util::SinkExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use railgate_policy::Denial;
use railgate_policy::ErrorCode;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The client's WebSocket.
pub type ClientWs = WebSocketStream<TokioIo<Upgraded>>;

/// More client pings than this within [`PING_WINDOW`] closes the connection.
const PING_FLOOD: u32 = 100;
const PING_WINDOW: Duration = Duration::from_secs(10);

/// How long a closing write may take.
const CLOSE_WRITE: Duration = Duration::from_secs(2);

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

/// How a session ends.
#[derive(Debug)]
pub enum End {
    /// Refused: the envelope, then its close code.
    Deny(Denial),
    /// A close frame with this code and reason, no envelope.
    Close(u16, String),
    /// The client sent its close frame (or its stream ended): answer it.
    PeerClosed,
    /// The client is gone: nothing to send.
    ClientLeft,
}

impl End {
    /// What the access line says of this end: the outcome, and the close code sent (if any).
    pub fn describe(&self) -> (String, Option<u16>) {
        match self {
            End::Deny(d) => (d.code.as_str().to_owned(), Some(d.code.ws_close_code())),
            End::Close(code, reason) => (reason.clone(), Some(*code)),
            End::PeerClosed => ("client_closed".into(), None),
            End::ClientLeft => ("client_left".into(), None),
        }
    }
}

/// Ends the session on the client's socket as `end` says (each write bounded in time).
pub async fn finish(ws: &mut ClientWs, end: End, trace: &str) {
    match end {
        End::Deny(d) => {
            let close = respond::ws(&d, trace);
            let _ = tokio::time::timeout(CLOSE_WRITE, ws.send(Message::text(close.envelope))).await;
            close_plain(ws, close.code, close.reason).await;
        }
        End::Close(code, reason) => close_plain(ws, code, &reason).await,
        End::PeerClosed => {
            // Sends the reply to the client's close frame, queued by the read.
            let _ = tokio::time::timeout(CLOSE_WRITE, ws.flush()).await;
        }
        End::ClientLeft => {}
    }
}

async fn close_plain(ws: &mut ClientWs, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.chars().take(123).collect::<String>().into(),
    };
    let _ = tokio::time::timeout(CLOSE_WRITE, ws.send(Message::Close(Some(frame)))).await;
    let _ = tokio::time::timeout(CLOSE_WRITE, ws.flush()).await;
}

/// The client's liveness: when it last answered, and how often it pings.
pub struct Heartbeat {
    /// When the client last showed it is alive (a pong or a ping).
    pub last_pong: Instant,
    window_start: Instant,
    pings: u32,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A client that has just connected.
    pub fn new() -> Heartbeat {
        let now = Instant::now();
        Heartbeat {
            last_pong: now,
            window_start: now,
            pings: 0,
        }
    }

    /// A client ping: proof of life, unless there are too many of them.
    pub fn ping(&mut self) -> Result<(), End> {
        self.last_pong = Instant::now();
        if self.window_start.elapsed() > PING_WINDOW {
            self.window_start = Instant::now();
            self.pings = 0;
        }
        self.pings += 1;
        if self.pings > PING_FLOOD {
            return Err(End::Deny(Denial::with_message(
                ErrorCode::RateLimited,
                "ping flood",
            )));
        }
        Ok(())
    }
}

/// How a session ends when reading from the client fails (RFC 6455 §7.4.1 codes).
pub fn read_failure(e: &WsError) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            End::Deny(Denial::new(ErrorCode::TooLarge))
        }
        WsError::Capacity(_) => End::Close(1009, "frame too large".into()),
        WsError::Utf8(_) => End::Close(1007, "invalid UTF-8 in a text message".into()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::ClientLeft,
        WsError::Protocol(_) => End::Close(1002, "protocol error".into()),
        _ => End::ClientLeft,
    }
}

/// Counts a session in `connections_active` until dropped.
pub struct Active(prometheus::IntGauge);

impl Active {
    /// Counts one more session in `gauge`.
    pub fn new(gauge: prometheus::IntGauge) -> Active {
        gauge.inc();
        Active(gauge)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}
